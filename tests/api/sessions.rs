//! `POST /api/sessions` and `GET /api/sessions/{id}`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::helpers::*;

/// The object's keys, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time string"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn creating_a_session_returns_the_seed_fields(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let created = app.create_session(json!({ "name": "Weekend Trip", "expires_in_minutes": 90 })).await;
    let body = &created.body;
    assert_eq!(body["name"], "Weekend Trip");
    assert_eq!(
        body["join_link"],
        format!("http://localhost:{}/join/{}", app.addr.port(), created.session_id)
    );
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'), "UTC: {body}");
    let minutes = (time(&body["expires_at"]) - Utc::now()).num_minutes();
    assert!((88..=90).contains(&minutes), "expires in {minutes} min");
    assert!(created.creator_token.split('.').count() == 3, "a JWT");
    assert_eq!(keys(body), ["creator_token", "expires_at", "join_link", "name", "session_id"]);

    let shown: Value = app.get(&format!("/api/sessions/{}", created.session_id)).await.json().await.unwrap();
    assert_eq!(shown["id"], created.session_id);
    assert_eq!(shown["name"], "Weekend Trip");
    assert_eq!(shown["participant_count"], 0);
    assert_eq!(shown["is_active"], true);
    assert_eq!(time(&shown["expires_at"]), time(&body["expires_at"]));
    assert!(time(&shown["created_at"]) <= Utc::now());
    assert!(shown["created_at"].as_str().unwrap().ends_with('Z'), "UTC: {shown}");
    assert_eq!(keys(&shown), ["created_at", "expires_at", "id", "is_active", "name", "participant_count"]);
}

async fn the_lifetime_bounds_themselves_are_accepted(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    for (minutes, range) in [(1, 0..=1), (1440, 1438..=1440)] {
        let created = app.create_session(json!({ "expires_in_minutes": minutes })).await;
        let left = (time(&created.body["expires_at"]) - Utc::now()).num_minutes();
        assert!(range.contains(&left), "asked {minutes}, expires in {left} min");
    }
}

async fn defaults_are_no_name_and_24_hours(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let created = app.create_session(json!({})).await;
    assert_eq!(created.body["name"], Value::Null);
    let minutes = (time(&created.body["expires_at"]) - Utc::now()).num_minutes();
    assert!((1438..=1440).contains(&minutes), "expires in {minutes} min");
}

async fn the_participant_count_follows_joins_and_leaves(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    app.join(&session.session_id, "Bob").await;
    let path = format!("/api/sessions/{}", session.session_id);
    assert_eq!(app.get(&path).await.json::<Value>().await.unwrap()["participant_count"], 2);
    let left = app.delete(&format!("{path}/participants/{}", ann.user_id), Some(&ann.token)).await;
    assert_eq!(left.status(), 204);
    assert_eq!(app.get(&path).await.json::<Value>().await.unwrap()["participant_count"], 1);
}

async fn invalid_session_input_is_refused_naming_the_field(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let cases = [
        (json!({ "expires_in_minutes": 0 }), "expires_in_minutes"),
        (json!({ "expires_in_minutes": 1441 }), "expires_in_minutes"),
        (json!({ "expires_in_minutes": -1 }), "expires_in_minutes"),
        (json!({ "expires_in_minutes": "soon" }), "expires_in_minutes"),
        (json!({ "expires_in_minutes": 1.5 }), "expires_in_minutes"),
        (json!({ "name": "x".repeat(256) }), "name"),
        (json!({ "name": 42 }), "name"),
    ];
    for (body, field) in cases {
        let response = app.post("/api/sessions", body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_input", "{body}");
        assert!(error["error"]["message"].as_str().unwrap().contains(field), "{body}: {error}");
    }
    assert_eq!(app.post("/api/sessions", json!({ "name": "x".repeat(255) })).await.status(), 201);
}

async fn unknown_and_malformed_session_ids(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let unknown = app.get(&format!("/api/sessions/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "not_found");
    for path in ["/api/sessions/not-a-uuid", "/api/sessions/not-a-uuid/participants"] {
        let malformed = app.get(path).await;
        assert_eq!(malformed.status(), 400, "{path}");
        assert_eq!(error_code(malformed).await, "invalid_id");
    }
    let malformed = app.post("/api/sessions/not-a-uuid/join", json!({ "display_name": "Ann" })).await;
    assert_eq!(malformed.status(), 400);
    assert_eq!(error_code(malformed).await, "invalid_id");
}

on_every_backend!(
    creating_a_session_returns_the_seed_fields,
    defaults_are_no_name_and_24_hours,
    the_lifetime_bounds_themselves_are_accepted,
    the_participant_count_follows_joins_and_leaves,
    invalid_session_input_is_refused_naming_the_field,
    unknown_and_malformed_session_ids,
);
