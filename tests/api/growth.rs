//! Bounded growth: what a participant can make the server keep has a bound in rows or
//! bytes: departed participants per session, chat per room and per minute, room lookups,
//! and each socket's queue.

use convoy::domain::{ChatRoom, SessionId, UserId};
use serde_json::{Value, json};

use super::helpers::*;

async fn a_join_leave_loop_keeps_only_the_latest_leavers(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.max_departed_participants_per_session = 3;
        c.rate_limit_enabled = false;
    })
    .await;
    let (session, [stays]) = app.session_with(["Stays"]).await;
    let mut leavers = Vec::new();
    for i in 0..12 {
        let joined = app.join(&session.session_id, &format!("Loop {i}")).await;
        assert_eq!(app.remove(&session.session_id, &joined.user_id, &joined.token).await, 204);
        leavers.push(joined.user_id);
    }
    app.join(&session.session_id, "Last").await; // the next join prunes
    let listed: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    let participants = listed["participants"].as_array().unwrap();
    let departed: Vec<&str> = participants
        .iter()
        .filter(|p| p["is_active"] == false)
        .map(|p| p["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(departed.len(), 3, "{listed}");
    for user_id in &leavers[9..] {
        assert!(departed.contains(&user_id.as_str()), "the latest leavers are the ones kept");
    }
    assert!(participants.iter().any(|p| p["user_id"] == stays.user_id.as_str()), "the active stay");
    assert_eq!(participants.len(), 5);
}

async fn a_room_keeps_its_newest_messages(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.max_chat_messages_per_room = 50;
        c.rate_limit_enabled = false;
    })
    .await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let (mut ws, _) = app.connect(&ann.token).await;
    for i in 0..60 {
        ws.send_json(json!({ "type": "chat_message", "data": { "content": format!("m{i}") } })).await;
        ws.next_of_type("new_message").await;
    }
    let sid: SessionId = session.session_id.parse().unwrap();
    let kept = app.state.store.messages(ChatRoom::Session(sid), None, 1000).await.unwrap();
    assert_eq!(kept.len(), 50);
    assert_eq!((kept[0].content.as_str(), kept[49].content.as_str()), ("m10", "m59"));
}

on_every_backend!(a_join_leave_loop_keeps_only_the_latest_leavers, a_room_keeps_its_newest_messages);

#[tokio::test]
async fn chat_is_limited_per_minute_and_room_lookups_per_address() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.rate_limit_chat_per_minute = 3;
        c.rate_limit_room_lookups_per_minute = 2;
    })
    .await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut ws, _) = app.connect(&ann.token).await;
    for i in 0..5 {
        ws.send_json(json!({ "type": "chat_message", "data": { "content": format!("m{i}") } })).await;
    }
    ws.send_json(json!({ "type": "ping", "data": {} })).await;
    let mut stored = 0;
    let mut limited = 0;
    loop {
        let message = ws.next_json().await;
        match message["type"].as_str() {
            Some("new_message") => stored += 1,
            Some("error") if message["data"]["code"] == "rate_limited" => limited += 1,
            Some("pong") => break,
            _ => {}
        }
    }
    assert_eq!((stored, limited), (3, 1), "three stored, the client told once");

    for _ in 0..2 {
        assert_eq!(app.get("/api/rooms?lat=48.2&lng=16.4").await.status(), 200);
    }
    let refused = app.post("/api/rooms/join", json!({ "lat": 48.2, "lng": 16.4 })).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await, "rate_limited");
}

#[tokio::test]
async fn a_stalled_socket_is_closed_when_its_queue_passes_its_byte_bound() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.tcp_send_buffer_bytes = Some(8 * 1024);
        c.rate_limit_enabled = false;
        c.ws_queue_capacity = 100_000; // the count alone would allow ~400 MB of these
        c.ws_queue_max_bytes = 64 * 1024;
    })
    .await;
    let session = app.create_session(json!({})).await;
    let session_id: SessionId = session.session_id.parse().unwrap();
    let ann = app.join(&session.session_id, "Ann").await;
    let stalled = app.join(&session.session_id, "Stalled").await;
    let stalled_id: UserId = stalled.user_id.parse().unwrap();

    let _stalled_ws = app.connect_stalled(&stalled.token).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let stalled_connected =
        || app.state.hub.queue_depths(session_id).iter().any(|(user, _)| *user == stalled_id);
    assert!(stalled_connected());

    let everyone = format!("session:{}", session.session_id);
    let payload = "p".repeat(4000);
    for _ in 0..200 {
        ann_ws
            .send_json(json!({ "type": "publish", "data": { "topic": everyone, "payload": payload } }))
            .await;
        // The session topic reaches the sender too: Ann reads hers, as a live client does.
        ann_ws.next_of_type("broadcast").await;
    }
    // 800 KB were published; kernel buffers hold a few KB; the queue may hold 64 KiB.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stalled_connected() {
        assert!(tokio::time::Instant::now() < deadline, "the stalled socket was never closed");
        tokio::task::yield_now().await;
    }
    // The publisher was never affected.
    ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    ann_ws.next_of_type("pong").await;
}
