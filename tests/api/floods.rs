//! Floods stay with the flooder: every message kind sent to others has a size limit, and
//! publishes, direct messages and chat are charged by size times recipients against the
//! sender's byte budget, so one member cannot fill the others' queues.

use serde_json::{Value, json};

use super::helpers::*;

fn publish(topic: &str, payload: Value) -> Value {
    json!({ "type": "publish", "data": { "topic": topic, "payload": payload } })
}

/// Waits until everything `ws` sent before was handled: a ping answered by a pong.
async fn barrier(ws: &mut WsClient) -> Vec<Value> {
    ws.send_json(json!({ "type": "ping", "data": {} })).await;
    let mut before = Vec::new();
    loop {
        let message = ws.next_json().await;
        if message["type"] == "pong" {
            return before;
        }
        before.push(message);
    }
}

#[tokio::test]
async fn messages_over_their_kinds_size_limit_are_refused_naming_it() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.max_publish_bytes = 100;
        c.max_direct_message_bytes = 100;
        c.max_chat_message_bytes = 100;
    })
    .await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    let big = "x".repeat(200);
    let everyone = format!("session:{}", session.session_id);
    for message in [
        publish(&everyone, json!(big)),
        json!({ "type": "direct_message", "data": { "target_user": bob.user_id, "payload": big } }),
        json!({ "type": "chat_message", "data": { "content": big } }),
    ] {
        ann_ws.send_json(message.clone()).await;
        let refused = ann_ws.next_json().await;
        assert_eq!(refused["data"]["code"], "message_too_large", "{message}");
        assert!(refused["data"]["message"].as_str().unwrap().contains("at most 100 bytes"), "{refused}");
    }
    // Within the limits, all three go through.
    ann_ws.send_json(publish(&everyone, json!("small"))).await;
    assert_eq!(bob_ws.next_json().await["data"]["payload"], "small");
    assert!(barrier(&mut bob_ws).await.is_empty(), "none of the large ones arrived");

    // The same limit over REST, for a local room's chat.
    let room: Value =
        app.post("/api/rooms/join", json!({ "lat": 48.2, "lng": 16.4 })).await.json().await.unwrap();
    let response = app
        .client
        .post(app.url(&format!("/api/rooms/{}/messages", room["room_id"].as_str().unwrap())))
        .bearer_auth(&ann.token)
        .json(&json!({ "content": big }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(error_code(response).await, "message_too_large");
}

#[tokio::test]
async fn one_members_flood_is_paid_for_by_that_member() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        // Message counts are not what stops this flood: its bytes are.
        c.rate_limit_connection_per_second = 10_000;
        c.rate_limit_user_per_second = 10_000;
        c.rate_limit_user_bytes_per_second = 16 * 1024; // bursts of 32 KiB
        c.ws_queue_capacity = 32;
    })
    .await;
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let flooder = app.join(sid, "Flo").await;
    let quiet = app.join(sid, "Quinn").await;
    let mut readers = Vec::new();
    for name in ["Ann", "Bob", "Cat"] {
        let joined = app.join(sid, name).await;
        readers.push(app.connect(&joined.token).await.0);
    }
    let (mut flood_ws, _) = app.connect(&flooder.token).await;
    let (mut quiet_ws, _) = app.connect(&quiet.token).await;

    // A hundred of the largest publishes allowed (4 KiB), as fast as the socket takes them:
    // 400 KiB to each of four others without a budget.
    let payload = "f".repeat(4000);
    let everyone = format!("session:{sid}");
    for _ in 0..100 {
        flood_ws.send_json(publish(&everyone, json!(payload))).await;
    }
    let told = barrier(&mut flood_ws).await;
    assert!(told.iter().any(|m| m["data"]["code"] == "rate_limited"), "the flooder is told");
    assert!(told.len() < 10, "and not flooded back: {} replies", told.len());

    // The others keep reading, see a handful of the hundred, and the quiet member's
    // position reaches them right behind.
    quiet_ws.send_location(48.2, 16.4).await;
    for reader in &mut readers {
        let mut flooded = 0;
        loop {
            let message = reader.next_json().await;
            match message["type"].as_str() {
                Some("broadcast") => flooded += 1,
                Some("location_broadcast") => break,
                _ => {}
            }
        }
        assert!((1..=10).contains(&flooded), "{flooded} of 100 publishes arrived");
        assert!(barrier(reader).await.is_empty());
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    let refused = metric_sample(&text, r#"convoy_messages_refused_total{reason="over_budget"}"#);
    assert!(refused.is_some_and(|n| n >= 90.0), "{refused:?}");
}
