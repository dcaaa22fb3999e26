//! A socket opened without a token authenticates with its first message (seed 004's
//! `Auth`): `auth {token}` within AUTH_TIMEOUT_SECONDS, else 1008.

use std::time::Duration;

use serde_json::json;

use super::helpers::*;

/// A socket on /ws with no token anywhere.
async fn anonymous(app: &TestApp) -> WsClient {
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await.expect("accepted");
    WsClient::new(stream)
}

fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Option<u16> {
    frame.map(|f| u16::from(f.code))
}

#[tokio::test]
async fn the_token_as_first_message_opens_the_session() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    let mut ws = anonymous(&app).await;
    // Anything before the token is answered, and the socket stays open.
    ws.send_location(1.0, 2.0).await;
    let refused = ws.next_json().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["data"]["code"], "unauthenticated");
    bob_ws.assert_quiet().await;

    ws.send_json(json!({ "type": "auth", "data": { "token": ann.token } })).await;
    let snapshot = ws.next_json().await;
    assert_eq!(snapshot["type"], "session_state", "{snapshot}");
    assert_eq!(snapshot["data"]["user_id"], ann.user_id);
    ws.send_location(3.0, 4.0).await;
    let moved = bob_ws.next_of_type("location_broadcast").await;
    assert_eq!(
        (moved["data"]["user_id"].as_str(), moved["data"]["lat"].as_f64()),
        (Some(ann.user_id.as_str()), Some(3.0))
    );
    // A second auth changes nothing.
    ws.send_json(json!({ "type": "auth", "data": { "token": ann.token } })).await;
    assert_eq!(ws.next_of_type("error").await["data"]["code"], "already_authenticated");

    // Seed 004's name works too.
    let mut seed = anonymous(&app).await;
    seed.send_json(json!({ "type": "Auth", "data": { "token": bob.token } })).await;
    assert_eq!(seed.next_json().await["type"], "session_state");
}

#[tokio::test]
async fn a_refused_token_closes_with_1008() {
    let app = spawn_app().await;
    let session = app.create_session(json!({})).await;
    for token in ["garbage".to_owned(), session.creator_token.clone()] {
        let mut ws = anonymous(&app).await;
        ws.send_json(json!({ "type": "auth", "data": { "token": token } })).await;
        assert_eq!(close_code(ws.closed().await), Some(1008), "{token}");
    }
    // A participant who left.
    let ann = app.join(&session.session_id, "Ann").await;
    assert_eq!(app.remove(&session.session_id, &ann.user_id, &ann.token).await, 204);
    let mut ws = anonymous(&app).await;
    ws.send_json(json!({ "type": "auth", "data": { "token": ann.token } })).await;
    assert_eq!(close_code(ws.closed().await), Some(1008));
    // An auth message without its token is one more unauthenticated message, answered.
    let mut ws = anonymous(&app).await;
    ws.send_json(json!({ "type": "auth", "data": {} })).await;
    assert_eq!(ws.next_json().await["data"]["code"], "unauthenticated");
}

#[tokio::test]
async fn sockets_waiting_to_authenticate_have_a_cap_of_their_own() {
    // MAX_CONNECTIONS 8: at most 2 (a quarter) may wait for their auth message.
    let app = spawn_app_on(Backend::Embedded, |c| c.max_connections = 8).await;
    let _first = anonymous(&app).await;
    let _second = anonymous(&app).await;
    assert_eq!(app.handshake_status(&format!("ws://{}/ws", app.addr)).await, 503);
    // Tokens in the handshake still get in.
    let (_, [ann]) = app.session_with(["Ann"]).await;
    assert_eq!(app.handshake_status(&app.ws_url(&ann.token)).await, 101);
    // An authenticated socket frees its waiting place.
    drop(_first);
    let mut ws = anonymous_when_free(&app).await;
    ws.send_json(json!({ "type": "auth", "data": { "token": ann.token } })).await;
    assert_eq!(ws.next_json().await["type"], "session_state");
    assert_eq!(app.handshake_status(&format!("ws://{}/ws", app.addr)).await, 101);
}

/// An anonymous socket, once a waiting place is free again (a dropped client's place is
/// freed when the server notices the close).
async fn anonymous_when_free(app: &TestApp) -> WsClient {
    for _ in 0..50 {
        if let Ok((stream, _)) = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await {
            return WsClient::new(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no waiting place came free");
}

#[tokio::test]
async fn silence_or_persistent_junk_closes_with_1008() {
    let app = spawn_app_on(Backend::Embedded, |c| c.auth_timeout_seconds = 1).await;
    let mut silent = anonymous(&app).await;
    let started = std::time::Instant::now();
    assert_eq!(close_code(silent.closed().await), Some(1008));
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout");

    let app = spawn_app().await;
    let mut junk = anonymous(&app).await;
    for _ in 0..9 {
        junk.send_json(json!({ "type": "ping", "data": {} })).await;
        assert_eq!(junk.next_json().await["data"]["code"], "unauthenticated");
    }
    junk.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(close_code(junk.closed().await), Some(1008));
    // The server is fine, and so are tokens in the query string.
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (_, snapshot) = app.connect(&ann.token).await;
    assert_eq!(snapshot["type"], "session_state");
}
