//! Direct messages: to every connection of one participant of the same session.

use serde_json::json;

use super::helpers::*;

async fn a_direct_message_reaches_every_device_of_its_target_only(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann, bob, cat]) = app.session_with(["Ann", "Bob", "Cat"]).await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_phone, _) = app.connect(&bob.token).await;
    let (mut bob_laptop, _) = app.connect(&bob.token).await;
    let (mut cat_ws, _) = app.connect(&cat.token).await;

    let payload = json!({ "text": "meet at the gate", "n": [1, 2] });
    ann_ws
        .send_json(
            json!({ "type": "direct_message", "data": { "target_user": bob.user_id, "payload": payload } }),
        )
        .await;
    for ws in [&mut bob_phone, &mut bob_laptop] {
        let message = ws.next_of_type("direct_message").await;
        assert_eq!(message["data"], json!({ "from_user": ann.user_id, "payload": payload }));
    }
    // Seed 003's name works too.
    cat_ws
        .send_json(
            json!({ "type": "DirectMessage", "data": { "target_user": ann.user_id, "payload": "hi" } }),
        )
        .await;
    assert_eq!(ann_ws.next_of_type("direct_message").await["data"]["from_user"], cat.user_id);
    cat_ws.assert_quiet().await;
    bob_phone.assert_quiet().await;
}

async fn direct_messages_to_strangers_are_refused_with_an_error(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let other = app.create_session(json!({})).await;
    let ann = app.join(&session.session_id, "Ann").await;
    let bob = app.join(&session.session_id, "Bob").await;
    let stranger = app.join(&other.session_id, "Stranger").await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut stranger_ws, _) = app.connect(&stranger.token).await;
    assert_eq!(app.remove(&session.session_id, &bob.user_id, &bob.token).await, 204);

    let unknown = uuid::Uuid::new_v4().to_string();
    for target in [unknown.as_str(), stranger.user_id.as_str(), bob.user_id.as_str()] {
        ann_ws
            .send_json(json!({ "type": "direct_message", "data": { "target_user": target, "payload": 1 } }))
            .await;
        let error = ann_ws.next_of_type("error").await;
        assert_eq!(error["data"]["code"], "unknown_target");
        assert!(error["data"]["message"].as_str().unwrap().contains(target));
    }
    for data in [json!({ "target_user": "bob", "payload": 1 }), json!({ "target_user": ann.user_id })] {
        ann_ws.send_json(json!({ "type": "direct_message", "data": data })).await;
        assert_eq!(ann_ws.next_of_type("error").await["data"]["code"], "invalid_message");
    }
    stranger_ws.assert_quiet().await;
    ann_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(ann_ws.next_of_type("pong").await["type"], "pong");
}

on_every_backend!(
    a_direct_message_reaches_every_device_of_its_target_only,
    direct_messages_to_strangers_are_refused_with_an_error,
);
