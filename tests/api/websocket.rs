//! The native socket end to end: snapshot, movement, joins and leaves, bad input.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::helpers::*;

async fn the_whole_flow_create_join_move_late_join_leave_end(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({ "name": "Weekend Trip" })).await;
    let ann = app.join(&session.session_id, "Ann").await;
    let bob = app.join(&session.session_id, "Bob").await;

    let (mut ann_ws, ann_snapshot) = app.connect(&ann.token).await;
    assert_eq!(ann_snapshot["data"]["user_id"], ann.user_id);
    assert_eq!(ann_snapshot["data"]["name"], "Weekend Trip");
    assert_eq!(ann_snapshot["data"]["participants"].as_array().unwrap().len(), 2);
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // Ann moves; Bob sees it in the seed's shape.
    ann_ws.send_location(37.7749, -122.4194).await;
    let seen = bob_ws.next_of_type("location_broadcast").await;
    assert_eq!(seen["data"]["user_id"], ann.user_id);
    assert_eq!(seen["data"]["lat"], 37.7749);
    assert_eq!(seen["data"]["lng"], -122.4194);
    assert_eq!(seen["data"]["accuracy"], 5.0);
    assert!(seen["data"]["timestamp"].as_str().unwrap().ends_with('Z'));

    // A late joiner is announced, and its snapshot already shows Ann where she is.
    let cat = app.join(&session.session_id, "Cat").await;
    let joined = ann_ws.next_of_type("participant_joined").await;
    assert_eq!(
        joined["data"],
        json!({ "user_id": cat.user_id, "display_name": "Cat", "avatar_color": "#FF5733" })
    );
    let (mut cat_ws, cat_snapshot) = app.connect(&cat.token).await;
    let locations = cat_snapshot["data"]["locations"].as_array().unwrap();
    assert_eq!(locations.len(), 1);
    assert_eq!(locations[0]["user_id"], ann.user_id);
    assert_eq!(locations[0]["lat"], 37.7749);

    // Bob leaves: the others hear it and his socket closes.
    assert_eq!(app.remove(&session.session_id, &bob.user_id, &bob.token).await, 204);
    assert_eq!(ann_ws.next_of_type("participant_left").await["data"]["user_id"], bob.user_id);
    assert_eq!(cat_ws.next_of_type("participant_left").await["data"]["user_id"], bob.user_id);
    assert_eq!(bob_ws.closed().await.map(|f| u16::from(f.code)), Some(1000));

    // The creator ends the session: everyone is told why, then closed.
    let response =
        app.delete(&format!("/api/sessions/{}", session.session_id), Some(&session.creator_token)).await;
    assert_eq!(response.status(), 204);
    for ws in [&mut ann_ws, &mut cat_ws] {
        let ended = ws.next_of_type("session_ended").await;
        assert_eq!(ended["data"]["reason"], "ended_by_creator");
        assert_eq!(ws.closed().await.map(|f| u16::from(f.code)), Some(1000));
    }
    let session_now: serde_json::Value =
        app.get(&format!("/api/sessions/{}", session.session_id)).await.json().await.unwrap();
    assert_eq!(session_now["is_active"], false);
}

async fn a_sender_does_not_get_its_own_location_back_and_ping_gets_pong(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_location(1.0, 2.0).await;
    ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(ann_ws.next_json().await, json!({ "type": "pong", "data": {} }));
}

async fn bad_messages_get_an_error_and_the_connection_stays_open(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let cases = [
        ("this is not json".to_owned(), "invalid_message"),
        (json!({ "type": "teleport", "data": {} }).to_string(), "unknown_type"),
        (json!({ "type": "location_update", "data": { "lat": 91.0, "lng": 0.0, "accuracy": 1.0 } }).to_string(), "invalid_location"),
        (json!({ "type": "location_update", "data": { "lat": 0.0, "lng": 181.0, "accuracy": 1.0 } }).to_string(), "invalid_location"),
        (json!({ "type": "location_update", "data": { "lat": 0.0, "lng": 0.0, "accuracy": -3.0 } }).to_string(), "invalid_location"),
        (json!({ "type": "location_update", "data": { "lat": 0.0, "lng": 0.0, "accuracy": 1.0, "timestamp": "noon" } }).to_string(), "invalid_location"),
        (json!({ "type": "location_update", "data": { "lat": 0.0, "lng": 0.0, "accuracy": 1.0, "timestamp": future } }).to_string(), "invalid_location"),
        (json!({ "type": "location_update", "data": { "lat": "north", "lng": 0.0, "accuracy": 1.0 } }).to_string(), "invalid_location"),
        (json!({ "type": "location_update" }).to_string(), "invalid_location"),
    ];
    for (text, code) in cases {
        ann_ws.stream.send(Message::text(text.clone())).await.unwrap();
        let reply = ann_ws.next_json().await;
        assert_eq!(reply["type"], "error", "{text}");
        assert_eq!(reply["data"]["code"], code, "{text}");
        assert!(reply["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ann_ws.stream.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(ann_ws.next_json().await["data"]["code"], "unsupported_frame");

    // Nothing invalid reached Bob, and Ann's connection still works.
    ann_ws.send_location(10.0, 20.0).await;
    let seen = bob_ws.next_json().await;
    assert_eq!(seen["type"], "location_broadcast");
    assert_eq!(seen["data"]["lat"], 10.0);
}

async fn an_oversized_frame_closes_only_that_connection_with_1009(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    let huge = format!("{{\"type\":\"ping\",\"data\":{{\"pad\":\"{}\"}}}}", "x".repeat(70 * 1024));
    ann_ws.stream.send(Message::text(huge)).await.unwrap();
    assert_eq!(ann_ws.closed().await.map(|f| u16::from(f.code)), Some(1009));

    // Bob did not notice: he can still talk and be talked to.
    bob_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(bob_ws.next_json().await["type"], "pong");
    let (mut ann_again, _) = app.connect(&ann.token).await;
    ann_again.send_location(1.0, 1.0).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["user_id"], ann.user_id);
}

async fn the_token_may_come_as_an_access_token_subprotocol_which_is_echoed(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let mut request = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
    let protocol = format!("access_token.{}", ann.token);
    request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (mut stream, response) = tokio_tungstenite::connect_async(request).await.expect("handshake");
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap().to_str().unwrap(), protocol);
    let mut client = WsClient::new({
        use futures_util::StreamExt;
        let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
        assert!(first.to_text().unwrap().contains("session_state"));
        stream
    });
    client.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(client.next_json().await["type"], "pong");
}

async fn a_user_with_two_sockets_gets_broadcasts_on_both(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut phone, _) = app.connect(&bob.token).await;
    let (mut laptop, _) = app.connect(&bob.token).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    ann_ws.send_location(5.0, 6.0).await;
    for ws in [&mut phone, &mut laptop] {
        assert_eq!(ws.next_of_type("location_broadcast").await["data"]["lat"], 5.0);
    }
    // Closing one leaves the other working.
    drop(phone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    ann_ws.send_location(7.0, 8.0).await;
    assert_eq!(laptop.next_of_type("location_broadcast").await["data"]["lat"], 7.0);
}

on_every_backend!(
    the_whole_flow_create_join_move_late_join_leave_end,
    a_sender_does_not_get_its_own_location_back_and_ping_gets_pong,
    bad_messages_get_an_error_and_the_connection_stays_open,
    an_oversized_frame_closes_only_that_connection_with_1009,
    the_token_may_come_as_an_access_token_subprotocol_which_is_echoed,
    a_user_with_two_sockets_gets_broadcasts_on_both,
);
