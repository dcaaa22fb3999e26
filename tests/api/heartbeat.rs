//! Heartbeats and the connection limit.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::helpers::*;

// The connection's own timers, with no store or bus in them: one backend is enough. They
// run on tokio's clock in real time (a second's heartbeat), as the client's pongs must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ignoring_pings_is_cut_off_and_one_answering_stays() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.heartbeat_interval_seconds = 1;
        c.client_timeout_seconds = 2;
    })
    .await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // Ann keeps reading, so her client answers the server's pings; Bob reads nothing.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, ann_ws.stream.next()).await {
        match message.expect("Ann's socket stays open") {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("Ann was closed: {frame:?}"),
            _ => {}
        }
    }
    assert!(pings >= 2, "the server pinged Ann every second ({pings} pings)");

    // Bob never answered: after the timeout the server closed his socket with 4408.
    assert_eq!(bob_ws.closed().await.map(|f| u16::from(f.code)), Some(4408));
    ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(ann_ws.next_of_type("pong").await["type"], "pong");
}

async fn the_connection_limit_answers_503_and_frees_places(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.max_connections = 2).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (first, _) = app.connect(&ann.token).await;
    let (_second, _) = app.connect(&ann.token).await;
    assert_eq!(app.handshake_status(&app.ws_url(&ann.token)).await, 503);
    // Refused handshakes do not hold a place: once a socket closes, one more fits.
    drop(first);
    let mut status = 0;
    for _ in 0..50 {
        status = app.handshake_status(&app.ws_url(&ann.token)).await;
        if status == 101 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 101);
}

on_every_backend!(the_connection_limit_answers_503_and_frees_places);

// The reader wakes the writer for a pong (no wait of the socket's own): a client's ping on
// an idle connection is answered, each with its own payload.
#[tokio::test]
async fn a_client_ping_is_answered_with_its_payload() {
    use futures_util::SinkExt;
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    for payload in ["first", "second"] {
        ann_ws.stream.send(Message::Ping(payload.as_bytes().to_vec().into())).await.expect("ping sent");
        let pong = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ann_ws.stream.next().await {
                    Some(Ok(Message::Pong(pong))) => return pong.to_vec(),
                    Some(Ok(Message::Text(_))) => continue,
                    other => panic!("expected the pong, got {other:?}"),
                }
            }
        })
        .await
        .expect("the ping was answered");
        assert_eq!(pong, payload.as_bytes());
    }
}
