//! Topics on `/ws`: subscribe, unsubscribe and publish (seed 003's Subscribe and Broadcast),
//! limited to the connection's own session and user.

use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::*;

on_both_redis!(topics_reach_subscribers_on_every_instance);

fn subscribe(topics: &[&str]) -> Value {
    json!({ "type": "subscribe", "data": { "topics": topics } })
}

fn publish(topic: &str, payload: Value) -> Value {
    json!({ "type": "publish", "data": { "topic": topic, "payload": payload } })
}

async fn a_named_topic_reaches_its_subscribers_only(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = app.join(sid, "Ann").await;
    let bob = app.join(sid, "Bob").await;
    let cat = app.join(sid, "Cat").await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let (mut cat_ws, _) = app.connect(&cat.token).await;
    let alerts = format!("session:{sid}:alerts");

    // Seed 003's client: a bare name is a topic of the connection's own session.
    bob_ws.send_json(json!({ "type": "Subscribe", "data": { "topics": ["alerts", "updates"] } })).await;
    let subscribed = bob_ws.next_json().await;
    assert_eq!(subscribed["type"], "subscribed");
    assert_eq!(subscribed["data"]["topics"], json!([alerts, format!("session:{sid}:updates")]));
    cat_ws.send_json(subscribe(&[&alerts])).await;
    assert_eq!(cat_ws.next_json().await["data"]["topics"], json!([alerts]));

    let payload = json!({ "text": "storm ahead", "level": 2 });
    ann_ws.send_json(json!({ "type": "Broadcast", "data": { "topic": "alerts", "payload": payload } })).await;
    for ws in [&mut bob_ws, &mut cat_ws] {
        let message = ws.next_json().await;
        assert_eq!(message["type"], "broadcast");
        assert_eq!(message["data"], json!({ "topic": alerts, "from_user": ann.user_id, "payload": payload }));
    }
    ann_ws.assert_quiet().await;

    // Unsubscribed, Cat hears no more; Bob still does.
    cat_ws.send_json(json!({ "type": "unsubscribe", "data": { "topics": ["alerts"] } })).await;
    let unsubscribed = cat_ws.next_json().await;
    assert_eq!(
        (unsubscribed["type"].as_str(), &unsubscribed["data"]["topics"]),
        (Some("unsubscribed"), &json!([alerts]))
    );
    ann_ws.send_json(publish(&alerts, json!("second"))).await;
    assert_eq!(bob_ws.next_json().await["data"]["payload"], "second");
    cat_ws.assert_quiet().await;
}

async fn the_session_topic_reaches_everyone_and_the_user_topic_every_device(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let other = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = app.join(sid, "Ann").await;
    let bob = app.join(sid, "Bob").await;
    let stranger = app.join(&other.session_id, "Stranger").await;
    let (mut ann_phone, _) = app.connect(&ann.token).await;
    let (mut ann_tablet, _) = app.connect(&ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let (mut stranger_ws, _) = app.connect(&stranger.token).await;

    // The session topic: every connection of the session, the sender's included.
    let session_topic = format!("session:{sid}");
    bob_ws.send_json(publish(&session_topic, json!({ "regroup": true }))).await;
    for ws in [&mut ann_phone, &mut ann_tablet, &mut bob_ws] {
        let message = ws.next_of_type("broadcast").await;
        assert_eq!(message["data"]["topic"], session_topic);
        assert_eq!(message["data"]["from_user"], bob.user_id);
    }
    stranger_ws.assert_quiet().await;

    // The user topic: all of one user's devices, nobody else.
    let user_topic = format!("user:{}", ann.user_id);
    ann_phone.send_json(subscribe(&[&user_topic])).await;
    assert_eq!(ann_phone.next_json().await["data"]["topics"], json!([user_topic]));
    ann_phone.send_json(publish(&user_topic, json!({ "draft": "note to self" }))).await;
    for ws in [&mut ann_phone, &mut ann_tablet] {
        let message = ws.next_of_type("broadcast").await;
        assert_eq!(message["data"]["topic"], user_topic);
        assert_eq!(message["data"]["payload"]["draft"], "note to self");
    }
    bob_ws.assert_quiet().await;
}

async fn refused_topics_get_an_error_naming_them_and_keep_the_connection(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let other = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = app.join(sid, "Ann").await;
    let bob = app.join(sid, "Bob").await;
    let stranger = app.join(&other.session_id, "Stranger").await;
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    let (mut stranger_ws, _) = app.connect(&stranger.token).await;

    let foreign_session = format!("session:{}:alerts", other.session_id);
    let foreign_user = format!("user:{}", bob.user_id);
    ann_ws.send_json(subscribe(&[&foreign_session, &foreign_user, "room:u4pruy", "fine", "bad name"])).await;
    for (topic, code) in [
        (foreign_session.as_str(), "forbidden_topic"),
        (foreign_user.as_str(), "forbidden_topic"),
        ("room:u4pruy", "forbidden_topic"),
        ("bad name", "invalid_topic"),
    ] {
        let error = ann_ws.next_json().await;
        assert_eq!(error["type"], "error");
        assert_eq!(
            (error["data"]["code"].as_str(), error["data"]["topic"].as_str()),
            (Some(code), Some(topic))
        );
        assert!(error["data"]["message"].as_str().unwrap().contains(topic), "{error}");
    }
    // What was allowed in the same request was granted.
    assert_eq!(ann_ws.next_json().await["data"]["topics"], json!([format!("session:{sid}:fine")]));

    // Publishing to another session's topic or another user's reaches nobody.
    stranger_ws.send_json(subscribe(&["alerts"])).await;
    stranger_ws.next_of_type("subscribed").await;
    for topic in [&foreign_session, &foreign_user] {
        ann_ws.send_json(publish(topic, json!("sneaky"))).await;
        let error = ann_ws.next_json().await;
        assert_eq!(
            (error["data"]["code"].as_str(), error["data"]["topic"].as_str()),
            (Some("forbidden_topic"), Some(topic.as_str()))
        );
    }
    stranger_ws.assert_quiet().await;

    // The implicit topics cannot be left; malformed requests say what they need.
    ann_ws
        .send_json(json!({ "type": "unsubscribe", "data": { "topics": [format!("session:{sid}")] } }))
        .await;
    assert_eq!(ann_ws.next_json().await["data"]["code"], "implicit_topic");
    assert_eq!(ann_ws.next_json().await["data"]["topics"], json!([]));
    ann_ws.send_json(json!({ "type": "subscribe", "data": { "topics": "alerts" } })).await;
    assert_eq!(ann_ws.next_json().await["data"]["code"], "invalid_message");
    ann_ws.send_json(json!({ "type": "publish", "data": { "topic": "alerts" } })).await;
    assert_eq!(ann_ws.next_json().await["data"]["code"], "invalid_message");

    // A connection holds a bounded number of topics; a request past it changes nothing.
    let names: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    ann_ws.send_json(subscribe(&names)).await;
    assert_eq!(ann_ws.next_json().await["data"]["code"], "invalid_message", "40 in one request");
    ann_ws.send_json(subscribe(&names[..31])).await; // "fine" is the 32nd
    assert_eq!(ann_ws.next_json().await["data"]["topics"].as_array().unwrap().len(), 31);
    ann_ws.send_json(subscribe(&["t31", "t32"])).await;
    assert_eq!(ann_ws.next_json().await["data"]["code"], "too_many_topics");
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    bob_ws.send_json(publish("t31", json!("not for ann"))).await;
    ann_ws.assert_silent(Duration::from_millis(200)).await; // nothing of the refused request held
    bob_ws.send_json(publish("t30", json!("for ann"))).await;
    assert_eq!(ann_ws.next_json().await["data"]["payload"], "for ann");

    // Still connected and served.
    ann_ws.send_json(json!({ "type": "ping" })).await;
    assert_eq!(ann_ws.next_json().await["type"], "pong");
}

on_every_backend!(
    a_named_topic_reaches_its_subscribers_only,
    the_session_topic_reaches_everyone_and_the_user_topic_every_device,
    refused_topics_get_an_error_naming_them_and_keep_the_connection,
);

async fn topics_reach_subscribers_on_every_instance(redis: Redis) {
    let (a, b) = spawn_pair_on(redis, |_| {}).await;
    let session = a.create_session(json!({})).await;
    let sid = &session.session_id;
    let ann = a.join(sid, "Ann").await;
    let bob = a.join(sid, "Bob").await;
    let (mut ann_on_a, _) = a.connect(&ann.token).await;
    let (mut ann_on_b, _) = b.connect(&ann.token).await;
    let (mut bob_on_b, _) = b.connect(&bob.token).await;
    let (mut bob_on_a, _) = a.connect(&bob.token).await;

    bob_on_b.send_json(subscribe(&["alerts"])).await;
    bob_on_b.next_of_type("subscribed").await;
    ann_on_a.send_json(publish("alerts", json!({ "n": 1 }))).await;
    let message = bob_on_b.next_of_type("broadcast").await;
    assert_eq!(message["data"]["topic"], format!("session:{sid}:alerts"));
    assert_eq!(message["data"]["payload"]["n"], 1);
    // Bob's other socket did not subscribe: topics are per connection.
    bob_on_a.assert_silent(Duration::from_millis(300)).await;

    // A user topic spans instances: Ann's socket on B hears what her socket on A published.
    ann_on_b.send_json(publish(&format!("user:{}", ann.user_id), json!("synced"))).await;
    for ws in [&mut ann_on_a, &mut ann_on_b] {
        assert_eq!(ws.next_of_type("broadcast").await["data"]["payload"], "synced");
    }
    bob_on_a.assert_silent(Duration::from_millis(200)).await;
    bob_on_b.assert_silent(Duration::from_millis(100)).await;
}
