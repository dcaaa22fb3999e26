//! Graceful shutdown: sockets are closed with 1001 and the server stops, in-process and as
//! the real binary receiving SIGTERM.

use serde_json::json;

use super::helpers::*;

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_returns() {
    let app = spawn_app().await;
    let session = app.create_session(json!({})).await;
    let ann = app.join(&session.session_id, "Ann").await;
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
