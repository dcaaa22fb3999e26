//! Graceful shutdown: sockets are closed with 1001 and the server stops, in-process and as
//! the real binary receiving SIGTERM.

use serde_json::json;

use super::helpers::*;

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_returns() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let addr = app.addr;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(ann_ws.closed().await.map(|f| u16::from(f.code)), Some(1001));
    stopping.await.unwrap().expect("clean stop");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[cfg(unix)]
#[tokio::test]
async fn the_binary_exits_0_on_sigterm_after_closing_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("c.db").display());
    let server = Binary::start(&database_url).await;
    let created = server.post("/api/sessions", json!({})).await;
    let sid = created["session_id"].as_str().unwrap();
    assert_eq!(created["join_link"], format!("http://localhost:{}/join/{sid}", server.port));
    let joined = server.post(&format!("/api/sessions/{sid}/join"), json!({ "display_name": "Ann" })).await;
    let mut ws = server.connect(joined["websocket_token"].as_str().unwrap()).await;

    server.signal("-TERM");
    assert_eq!(ws.closed().await.map(|f| u16::from(f.code)), Some(1001));
    assert_eq!(server.wait().await.code(), Some(0));
}

#[cfg(unix)]
#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_instance_sends_what_it_queued_for_the_others() {
    let database_url = fresh_postgres_schema().await;
    let (_, redis_url) = scaled_urls();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The stopping instance holds every Redis pipeline for a second: what it queued just
    // before SIGTERM is still in its writer when it begins to stop.
    let env = [("REDIS_URL", redis_url.as_str()), ("REDIS_BATCH_DELAY_MS", "1000")];
    let stopping = Binary::start_with(&database_url, port, &env).await;
    let staying = spawn_scaled(database_url, redis_url.clone()).await;

    let (_, [ann, bob]) = staying.session_with(["Ann", "Bob"]).await;
    let (bob_ws, _) = staying.connect(&bob.token).await;
    let mut bob_ws = bob_ws.with_presence();
    let mut ann_ws = stopping.connect(&ann.token).await;
    // Ann's arrival crosses over (after the writer's second).
    loop {
        let diff = bob_ws.next_of_type("presence_diff").await;
        if diff["data"]["joins"].get(&ann.user_id).is_some() {
            break;
        }
    }
    ann_ws.send_location(48.2, 16.4).await;
    ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    ann_ws.next_of_type("pong").await; // the update was handled, so it is queued
    stopping.signal("-TERM");
    assert_eq!(ann_ws.closed().await.map(|f| u16::from(f.code)), Some(1001));
    assert_eq!(stopping.wait().await.code(), Some(0));

    // Both the last position and the goodbye reached the other instance.
    let moved = bob_ws.next_of_type("location_broadcast").await;
    assert_eq!(moved["data"]["user_id"], ann.user_id.as_str());
    loop {
        let diff = bob_ws.next_of_type("presence_diff").await;
        if diff["data"]["leaves"].get(&ann.user_id).is_some() {
            break;
        }
    }
}
