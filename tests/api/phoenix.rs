//! Phoenix Channels on `/socket/websocket`: the wire protocol frame by frame (V2 arrays,
//! V1 objects), and the official `phoenix` npm client run from Node (tests/phoenix).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::helpers::*;

type Stream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw Phoenix socket: frames as JSON values, in V2 (arrays) or V1 (objects).
struct Raw {
    stream: Stream,
    v2: bool,
}

impl Raw {
    async fn connect(app: &TestApp, token: &str, vsn: Option<&str>) -> Self {
        let vsn_query = vsn.map(|v| format!("&vsn={v}")).unwrap_or_default();
        let url = format!("ws://{}/socket/websocket?token={token}{vsn_query}", app.addr);
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("phoenix handshake");
        Self { stream, v2: vsn == Some("2.0.0") }
    }

    async fn send(
        &mut self,
        join_ref: Option<&str>,
        msg_ref: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) {
        let frame = if self.v2 {
            json!([join_ref, msg_ref, topic, event, payload])
        } else {
            json!({ "topic": topic, "event": event, "payload": payload, "ref": msg_ref, "join_ref": join_ref })
        };
        self.stream.send(Message::text(frame.to_string())).await.unwrap();
    }

    /// The next message as (join_ref, ref, topic, event, payload).
    async fn next(&mut self) -> (Value, Value, String, String, Value) {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("a message in time")
                .expect("open")
                .expect("no error");
            let Message::Text(text) = message else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            return if self.v2 {
                let a = v.as_array().expect("a V2 frame is an array").clone();
                assert_eq!(a.len(), 5, "{v}");
                (
                    a[0].clone(),
                    a[1].clone(),
                    a[2].as_str().unwrap().into(),
                    a[3].as_str().unwrap().into(),
                    a[4].clone(),
                )
            } else {
                (
                    v["join_ref"].clone(),
                    v["ref"].clone(),
                    v["topic"].as_str().unwrap().into(),
                    v["event"].as_str().unwrap().into(),
                    v["payload"].clone(),
                )
            };
        }
    }

    /// The next message with this event, skipping others.
    async fn next_event(&mut self, event: &str) -> (Value, Value, String, String, Value) {
        loop {
            let message = self.next().await;
            if message.3 == event {
                return message;
            }
        }
    }
}

async fn speaks_both_serializers(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let topic = format!("location:{sid}");
    let ann = app.join(sid, "Ann").await;
    let bob = app.join(sid, "Bob").await;
    let cat = app.join(sid, "Cat").await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let (mut cat_ws, _) = app.connect(&cat.token).await;

    for vsn in [Some("2.0.0"), Some("1.0.0"), None] {
        let mut socket = Raw::connect(&app, &ann.token, vsn).await;
        // Heartbeats on topic "phoenix".
        socket.send(None, "1", "phoenix", "heartbeat", json!({})).await;
        let (join_ref, msg_ref, t, event, payload) = socket.next().await;
        assert_eq!(
            (join_ref, msg_ref, t.as_str(), event.as_str()),
            (Value::Null, json!("1"), "phoenix", "phx_reply")
        );
        assert_eq!(payload, json!({ "status": "ok", "response": {} }), "{vsn:?}");

        // Join: the reply carries the snapshot, then presence_state.
        socket.send(Some("3"), "3", &topic, "phx_join", json!({})).await;
        let (join_ref, msg_ref, t, event, payload) = socket.next().await;
        assert_eq!(
            (join_ref, msg_ref, t.as_str(), event.as_str()),
            (json!("3"), json!("3"), topic.as_str(), "phx_reply")
        );
        assert_eq!(payload["status"], "ok");
        assert_eq!(payload["response"]["user_id"], ann.user_id);
        let (_, _, _, event, presence) = socket.next().await;
        assert_eq!(event, "presence_state");
        assert!(presence.get(&ann.user_id).is_some(), "{presence}");

        // Pushes are answered; broadcasts arrive as seed 001's location_update.
        let now = chrono::Utc::now().to_rfc3339();
        socket
            .send(
                Some("3"),
                "4",
                &topic,
                "location_update",
                json!({ "lat": 1.5, "lng": 2.5, "accuracy": 3.0, "timestamp": now }),
            )
            .await;
        let (_, msg_ref, _, event, payload) = socket.next_event("phx_reply").await;
        assert_eq!((msg_ref, event.as_str(), &payload["status"]), (json!("4"), "phx_reply", &json!("ok")));
        assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 1.5);
        bob_ws.send_location(9.0, 8.0).await;
        let (join_ref, msg_ref, t, _, payload) = socket.next_event("location_update").await;
        assert_eq!(
            (join_ref, msg_ref, t.as_str()),
            (Value::Null, Value::Null, topic.as_str()),
            "a fastlaned broadcast"
        );
        assert_eq!((payload["user_id"].as_str(), &payload["lat"]), (Some(bob.user_id.as_str()), &json!(9.0)));

        // A second join replaces the first: a new join_ref, the same single presence.
        socket.send(Some("7"), "7", &topic, "phx_join", json!({})).await;
        let (join_ref, _, _, event, _) = socket.next_event("phx_reply").await;
        assert_eq!((join_ref, event.as_str()), (json!("7"), "phx_reply"));
        let presence: Value = app.get(&format!("/api/sessions/{sid}/presence")).await.json().await.unwrap();
        assert_eq!(presence["presences"][&ann.user_id]["metas"].as_array().unwrap().len(), 1, "{presence}");

        // Leave: ok, and no more broadcasts. Cat is the barrier: once Cat has Bob's move,
        // Ann's queue would have it too, ahead of the heartbeat's reply.
        socket.send(Some("7"), "5", &topic, "phx_leave", json!({})).await;
        let (_, msg_ref, _, _, payload) = socket.next_event("phx_reply").await;
        assert_eq!((msg_ref, &payload["status"]), (json!("5"), &json!("ok")));
        bob_ws.send_location(7.0, 7.0).await;
        while cat_ws.next_of_type("location_broadcast").await["data"]["lat"] != 7.0 {}
        socket.send(None, "6", "phoenix", "heartbeat", json!({})).await;
        let (_, msg_ref, _, event, _) = socket.next().await;
        assert_eq!(
            (msg_ref, event.as_str()),
            (json!("6"), "phx_reply"),
            "nothing from the channel after leaving"
        );
    }
}

async fn bad_input_gets_phoenix_errors(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let other = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let topic = format!("location:{sid}");
    let ann = app.join(sid, "Ann").await;
    let mut socket = Raw::connect(&app, &ann.token, Some("2.0.0")).await;

    for (join_topic, reason) in [
        (format!("location:{}", other.session_id), "unauthorized"),
        ("rooms:lobby".into(), "unmatched topic"),
    ] {
        socket.send(Some("1"), "1", &join_topic, "phx_join", json!({})).await;
        let (_, _, t, _, payload) = socket.next().await;
        assert_eq!(t, join_topic);
        assert_eq!(payload, json!({ "status": "error", "response": { "reason": reason } }));
    }
    // Before joining, the channel's events are refused.
    socket.send(Some("2"), "2", &topic, "location_update", json!({})).await;
    assert_eq!(socket.next().await.4["response"]["reason"], "unmatched topic");
    socket.send(Some("3"), "3", &topic, "phx_join", json!({})).await;
    socket.next_event("presence_state").await;
    for (event, payload, needle) in [
        ("location_update", json!({ "lat": 91, "lng": 0, "accuracy": 1 }), "invalid_location"),
        ("location_update", json!("north"), "invalid_location"),
        ("teleport", json!({}), "unknown event"),
    ] {
        socket.send(Some("3"), "9", &topic, event, payload).await;
        let (_, _, _, _, reply) = socket.next_event("phx_reply").await;
        assert_eq!(reply["status"], "error");
        assert!(reply["response"]["reason"].as_str().unwrap().contains(needle), "{reply}");
    }
    socket.stream.send(Message::text("{not json")).await.unwrap();
    let (_, _, t, event, payload) = socket.next().await;
    assert_eq!((t.as_str(), event.as_str()), ("phoenix", "phx_error"));
    assert!(payload["reason"].as_str().unwrap().contains("not a Phoenix message"));
    socket.stream.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(socket.next().await.3, "phx_error");
    // Still served.
    socket.send(None, "10", "phoenix", "heartbeat", json!({})).await;
    assert_eq!(socket.next().await.4["status"], "ok");

    // Handshake refusals are plain HTTP statuses, as for /ws.
    let base = format!("ws://{}/socket/websocket", app.addr);
    assert_eq!(app.handshake_status(&format!("{base}?vsn=2.0.0")).await, 401);
    assert_eq!(app.handshake_status(&format!("{base}?token=forged&vsn=2.0.0")).await, 401);
    assert_eq!(app.handshake_status(&format!("{base}?token={}&vsn=3.0.0", ann.token)).await, 400);
    assert_eq!(app.handshake_status(&format!("{base}?token={}", session.creator_token)).await, 403);
}

async fn session_end_closes_the_channel(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let topic = format!("location:{sid}");
    let ann = app.join(sid, "Ann").await;
    let mut socket = Raw::connect(&app, &ann.token, Some("2.0.0")).await;
    socket.send(Some("1"), "1", &topic, "phx_join", json!({})).await;
    socket.next_event("presence_state").await;
    let ended = app.delete(&format!("/api/sessions/{sid}"), Some(&session.creator_token)).await;
    assert_eq!(ended.status(), 204);
    let (_, _, t, _, payload) = socket.next_event("session_ended").await;
    assert_eq!((t.as_str(), payload), (topic.as_str(), json!({ "reason": "ended_by_creator" })));
    assert_eq!(socket.next().await.3, "phx_close");
    // As Phoenix does, the socket stays (the client would otherwise reconnect and retry);
    // the channel is closed: its events are refused.
    socket.send(None, "2", "phoenix", "heartbeat", json!({})).await;
    assert_eq!(socket.next().await.4["status"], "ok");
    socket
        .send(Some("1"), "3", &topic, "location_update", json!({ "lat": 1, "lng": 1, "accuracy": 1 }))
        .await;
    assert_eq!(socket.next().await.4["response"]["reason"], "unmatched topic");
}

async fn a_removed_participant_is_closed_joined_or_not(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let sid = &session.session_id;
    let topic = format!("location:{sid}");
    let ann = app.join(sid, "Ann").await;
    let mut joined = Raw::connect(&app, &ann.token, Some("2.0.0")).await;
    joined.send(Some("1"), "1", &topic, "phx_join", json!({})).await;
    joined.next_event("presence_state").await;
    let mut idle = Raw::connect(&app, &ann.token, Some("2.0.0")).await;
    idle.send(None, "1", "phoenix", "heartbeat", json!({})).await;
    idle.next().await;

    assert_eq!(app.remove(sid, &ann.user_id, &ann.token).await, 204);
    assert_eq!(joined.next_event("phx_close").await.2, topic);
    for socket in [joined, idle] {
        let closed = WsClient::new(socket.stream).closed().await;
        assert_eq!(closed.map(|f| u16::from(f.code)), Some(1000));
    }
}

/// A participant who shares only through a tracker app (OwnTracks here) moves on a Phoenix
/// channel like anyone else, with the app's optional readings.
async fn a_tracker_apps_positions_reach_the_channel(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann, dan]) = app.session_with(["Ann", "Dan"]).await;
    let topic = format!("location:{}", session.session_id);
    let mut socket = Raw::connect(&app, &ann.token, Some("2.0.0")).await;
    socket.send(Some("1"), "1", &topic, "phx_join", json!({})).await;
    assert_eq!(socket.next_event("phx_reply").await.4["status"], "ok");

    let fix = json!({
        "_type": "location", "lat": 48.8606, "lon": 2.3376, "acc": 12, "vel": 36, "batt": 40,
        "tst": chrono::Utc::now().timestamp(),
    });
    let response = app
        .client
        .post(&dan.tracker_url)
        .header("content-type", "application/json")
        .body(fix.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, _, t, _, payload) = socket.next_event("location_update").await;
    assert_eq!(t, topic);
    assert_eq!(
        (payload["user_id"].as_str(), payload["lat"].as_f64()),
        (Some(dan.user_id.as_str()), Some(48.8606))
    );
    assert_eq!((payload["speed"].as_f64(), payload["battery"].as_u64()), (Some(10.0), Some(40)));
}

/// The channel sets and clears the meeting point (in a session that lets anyone), with a
/// reply; every channel and native socket hears `meeting_point_set` / `_cleared`. In a
/// session that does not, the reply is an error naming why.
async fn the_channel_sets_and_clears_the_meeting_point(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let open = app.create_session(json!({ "meeting_point_by": "anyone" })).await;
    let (ann, bob) = (app.join(&open.session_id, "Ann").await, app.join(&open.session_id, "Bob").await);
    let topic = format!("location:{}", open.session_id);
    let mut socket = Raw::connect(&app, &ann.token, Some("2.0.0")).await;
    socket.send(Some("1"), "1", &topic, "phx_join", json!({})).await;
    assert_eq!(socket.next_event("phx_reply").await.4["status"], "ok");
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    socket
        .send(
            Some("1"),
            "2",
            &topic,
            "set_meeting_point",
            json!({ "lat": 48.85, "lng": 2.35, "name": "Gate" }),
        )
        .await;
    // The reply and the broadcast, in whichever order they come (the broadcast goes
    // through the bus).
    let (mut reply, mut broadcast) = (None, None);
    while reply.is_none() || broadcast.is_none() {
        let (_, msg_ref, t, event, payload) = socket.next().await;
        match event.as_str() {
            "phx_reply" => reply = Some((msg_ref, payload)),
            "meeting_point_set" => broadcast = Some((t, payload)),
            _ => {}
        }
    }
    let ((reply_ref, reply), (t, payload)) = (reply.unwrap(), broadcast.unwrap());
    assert_eq!((reply_ref, reply["status"].as_str()), (json!("2"), Some("ok")), "{reply}");
    assert_eq!(reply["response"]["meeting_point"]["name"], "Gate");
    assert_eq!((t, payload["set_by"].as_str()), (topic.clone(), Some(ann.user_id.as_str())));
    assert_eq!(bob_ws.next_of_type("meeting_point_set").await["data"]["lat"], 48.85);

    socket
        .send(
            Some("1"),
            "3",
            &topic,
            "set_meeting_point",
            json!({ "lat": 48.85, "lng": 2.35, "radius_m": 2000 }),
        )
        .await;
    let (_, _, _, _, reply) = socket.next_event("phx_reply").await;
    assert_eq!(reply["status"], "error");
    assert!(reply["response"]["reason"].as_str().unwrap().starts_with("invalid_input: radius_m"), "{reply}");

    socket.send(Some("1"), "4", &topic, "clear_meeting_point", json!({})).await;
    assert_eq!(socket.next_event("phx_reply").await.4["status"], "ok");
    assert_eq!(bob_ws.next_of_type("meeting_point_cleared").await["data"]["cleared_by"], ann.user_id);

    // Where only the creator may, the channel is told so.
    let (session, [carl]) = app.session_with(["Carl"]).await;
    let topic = format!("location:{}", session.session_id);
    let mut socket = Raw::connect(&app, &carl.token, Some("2.0.0")).await;
    socket.send(Some("1"), "1", &topic, "phx_join", json!({})).await;
    assert_eq!(socket.next_event("phx_reply").await.4["status"], "ok");
    socket.send(Some("1"), "2", &topic, "clear_meeting_point", json!({})).await;
    let (_, _, _, _, reply) = socket.next_event("phx_reply").await;
    assert!(reply["response"]["reason"].as_str().unwrap().starts_with("forbidden"), "{reply}");
}

/// A Phoenix client in the group sees the others' ETAs and arrivals like everyone.
async fn the_channel_hears_etas_and_arrivals(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let point = json!({ "lat": 48.85, "lng": 2.35 });
    let response = app
        .client
        .put(app.url(&format!("/api/sessions/{}/meeting_point", session.session_id)))
        .bearer_auth(&session.creator_token)
        .json(&point)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let topic = format!("location:{}", session.session_id);
    let mut socket = Raw::connect(&app, &bob.token, Some("2.0.0")).await;
    socket.send(Some("1"), "1", &topic, "phx_join", json!({})).await;
    assert_eq!(socket.next_event("phx_reply").await.4["status"], "ok");

    let (mut ann_ws, _) = app.connect(&ann.token).await;
    for (lat, seconds_ago) in [(48.86, 20), (48.85001, 1)] {
        let at = (chrono::Utc::now() - chrono::Duration::seconds(seconds_ago)).to_rfc3339();
        let fix = json!({ "lat": lat, "lng": 2.35, "accuracy": 5, "timestamp": at });
        ann_ws.send_json(json!({ "type": "location_update", "data": fix })).await;
        ann_ws.until_pong().await;
        app.state.meetup_tick().await;
    }
    let (_, _, _, _, eta) = socket.next_event("eta_update").await;
    assert_eq!(eta["user_id"], ann.user_id);
    assert!(eta["distance_m"].as_f64().unwrap() > 1000.0, "{eta}");
    let (_, _, t, _, arrived) = socket.next_event("participant_arrived").await;
    assert_eq!((t, arrived["user_id"].as_str()), (topic, Some(ann.user_id.as_str())));
}

on_every_backend!(
    speaks_both_serializers,
    bad_input_gets_phoenix_errors,
    session_end_closes_the_channel,
    a_removed_participant_is_closed_joined_or_not,
    a_tracker_apps_positions_reach_the_channel,
    the_channel_sets_and_clears_the_meeting_point,
    the_channel_hears_etas_and_arrivals,
);

/// Runs tests/phoenix (the official client, from Node) against `url`, with the native
/// client on `native_url`.
async fn run_node_tests(url: &str, native_url: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/phoenix");
    let output = tokio::process::Command::new("node")
        .arg("--test")
        .current_dir(dir)
        .env("CONVOY_URL", url)
        .env("CONVOY_URL_NATIVE", native_url)
        .output()
        .await
        .expect("node runs (install Node.js and run `npm ci` in tests/phoenix)");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Phoenix client tests failed:\n{report}");
    assert!(report.contains("# pass 2") && report.contains("# fail 0"), "{report}");
}

#[cfg_attr(not(convoy_node_tests), ignore = "needs Node: run `npm ci` in tests/phoenix and set TEST_NODE=1")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phoenix_npm_client_works() {
    let app = spawn_app().await;
    run_node_tests(&app.base, &app.base).await;
}

#[cfg_attr(
    not(all(convoy_node_tests, convoy_scaled_tests)),
    ignore = "needs Node (TEST_NODE=1, `npm ci` in tests/phoenix) and PostgreSQL and Redis"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phoenix_npm_client_works_across_instances() {
    let (a, b) = spawn_pair(|_| {}).await;
    run_node_tests(&a.base, &b.base).await;
}
