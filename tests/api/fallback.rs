//! The HTTP fallback: locations pushed over REST (one or a buffered batch) and the
//! snapshot pulled with an ETag.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::helpers::*;

fn at(seconds_ago: i64) -> String {
    (Utc::now() - chrono::Duration::seconds(seconds_ago)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn point(lat: f64, seconds_ago: i64) -> Value {
    json!({ "lat": lat, "lng": 2.0, "accuracy": 10.0, "timestamp": at(seconds_ago) })
}

async fn push(app: &TestApp, session_id: &str, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/sessions/{session_id}/locations")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn pull(app: &TestApp, session_id: &str, token: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request =
        app.client.get(app.url(&format!("/api/sessions/{session_id}/state"))).bearer_auth(token);
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_newest_fresh_point_goes_live_exactly_like_a_socket_update() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // One point.
    let pushed = push(&app, &session.session_id, &ann.token, point(10.0, 25)).await;
    assert_eq!(pushed.status(), 200);
    let pushed: Value = pushed.json().await.unwrap();
    assert_eq!((pushed["accepted"].as_u64(), pushed["live"].as_bool()), (Some(1), Some(true)));
    let seen = bob_ws.next_of_type("location_broadcast").await;
    assert_eq!(seen["data"]["user_id"], ann.user_id);
    assert_eq!(seen["data"]["lat"], 10.0);

    // A buffered batch, out of order: only its newest point is broadcast, once.
    let batch = json!({ "locations": [point(11.0, 20), point(13.0, 4), point(12.0, 10)] });
    let pushed: Value = push(&app, &session.session_id, &ann.token, batch).await.json().await.unwrap();
    assert_eq!((pushed["accepted"].as_u64(), pushed["live"].as_bool()), (Some(3), Some(true)));
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 13.0);
    bob_ws.assert_quiet().await;

    // Points older than the live one, or than the TTL (30 s), are accepted and dropped.
    let stale = json!({ "locations": [point(14.0, 8), point(15.0, 120)] });
    let pushed: Value = push(&app, &session.session_id, &ann.token, stale).await.json().await.unwrap();
    assert_eq!((pushed["accepted"].as_u64(), pushed["live"].as_bool()), (Some(2), Some(false)));
    bob_ws.assert_quiet().await;

    // With no live location at all, a point past the TTL still does not go live.
    let cat = app.join(&session.session_id, "Cat").await;
    bob_ws.next_of_type("participant_joined").await;
    let pushed: Value =
        push(&app, &session.session_id, &cat.token, point(16.0, 45)).await.json().await.unwrap();
    assert_eq!((pushed["accepted"].as_u64(), pushed["live"].as_bool()), (Some(1), Some(false)));
    bob_ws.assert_quiet().await;

    // The live location is the one snapshots carry.
    let (_, snapshot) = app.connect(&bob.token).await;
    assert_eq!(snapshot_location(&snapshot, &ann.user_id).unwrap()["lat"], 13.0);
}

#[tokio::test]
async fn bad_pushes_are_refused_and_name_the_problem() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let sid = &session.session_id;

    let bad = json!({ "locations": [point(1.0, 1), { "lat": 91.0, "lng": 0.0, "accuracy": 1.0 }] });
    let refused = push(&app, sid, &ann.token, bad).await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().starts_with("locations[1].lat"), "{body}");
    let too_many = json!({ "locations": vec![point(1.0, 1); 101] });
    assert_eq!(push(&app, sid, &ann.token, too_many).await.status(), 422);
    assert_eq!(push(&app, sid, &ann.token, json!("north")).await.status(), 422);
    bob_ws.assert_quiet().await; // nothing half-applied

    assert_eq!(push(&app, sid, &session.creator_token, point(1.0, 1)).await.status(), 403);
    let other = app.create_session(json!({})).await;
    let stranger = app.join(&other.session_id, "Cat").await;
    assert_eq!(push(&app, sid, &stranger.token, point(1.0, 1)).await.status(), 403);
    assert_eq!(push(&app, &uuid::Uuid::new_v4().to_string(), &ann.token, point(1.0, 1)).await.status(), 404);
    let unauthenticated =
        app.client.post(app.url(&format!("/api/sessions/{sid}/locations"))).json(&point(1.0, 1));
    assert_eq!(unauthenticated.send().await.unwrap().status(), 401);
    assert_eq!(app.remove(sid, &ann.user_id, &ann.token).await, 204);
    assert_eq!(error_code(push(&app, sid, &ann.token, point(1.0, 1)).await).await, "token_revoked");
    app.delete(&format!("/api/sessions/{sid}"), Some(&session.creator_token)).await;
    assert_eq!(push(&app, sid, &bob.token, point(1.0, 1)).await.status(), 410);
}

#[tokio::test]
async fn the_state_is_the_socket_snapshot_and_304_while_unchanged() {
    let app = spawn_app().await;
    let session = app.create_session(json!({ "name": "Poll" })).await;
    let ann = app.join(&session.session_id, "Ann").await;
    let sid = &session.session_id;
    push(&app, sid, &ann.token, point(5.0, 1)).await;

    let first = pull(&app, sid, &ann.token, None).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let state: Value = first.json().await.unwrap();
    let (_, snapshot) = app.connect(&ann.token).await;
    assert_eq!(state, snapshot["data"], "the REST state is the socket's snapshot");

    let again = pull(&app, sid, &ann.token, Some(&etag)).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty());

    // Something changes: a new tag and the new state.
    push(&app, sid, &ann.token, point(6.0, 0)).await;
    let changed = pull(&app, sid, &ann.token, Some(&etag)).await;
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let state: Value = changed.json().await.unwrap();
    assert_eq!(state["locations"][0]["lat"], 6.0);

    assert_eq!(pull(&app, sid, &session.creator_token, None).await.status(), 403);
    app.delete(&format!("/api/sessions/{sid}"), Some(&session.creator_token)).await;
    assert_eq!(pull(&app, sid, &ann.token, None).await.status(), 410);
}
