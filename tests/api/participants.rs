//! Joining, listing and leaving: validation, the atomic capacity check, who may remove whom.

use futures_util::future::join_all;
use serde_json::{Value, json};

use super::helpers::*;

async fn joining_returns_a_token_and_the_socket_url(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let response = app
        .post(
            &format!("/api/sessions/{}/join", session.session_id),
            json!({ "display_name": "  Ann  ", "avatar_color": "#00aa11" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let joined: Value = response.json().await.unwrap();
    assert!(joined["user_id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert_eq!(
        joined["websocket_url"],
        format!("ws://localhost:{}/ws/{}", app.addr.port(), session.session_id)
    );
    assert_eq!(joined["websocket_token"].as_str().unwrap().split('.').count(), 3);

    let listed: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    let participants = listed["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 1);
    let ann = &participants[0];
    assert_eq!(ann["user_id"], joined["user_id"]);
    assert_eq!(ann["display_name"], "Ann", "trimmed");
    assert_eq!(ann["avatar_color"], "#00AA11");
    assert_eq!(ann["is_active"], true);
    assert!(ann["last_seen"].as_str().unwrap().ends_with('Z'));
    let keys: Vec<&str> = ann.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "exactly the seed's fields: {keys:?}");

    let plain = app.join(&session.session_id, "Bob").await;
    let listed: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    let bob = listed["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == plain.user_id)
        .unwrap()
        .clone();
    assert_eq!(bob["avatar_color"], "#FF5733", "the default colour");
}

async fn invalid_join_input_is_refused_naming_the_field(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let path = format!("/api/sessions/{}/join", session.session_id);
    let cases = [
        (json!({ "display_name": "" }), "display_name"),
        (json!({ "display_name": "    " }), "display_name"),
        (json!({ "display_name": "a".repeat(101) }), "display_name"),
        (json!({}), "display_name"),
        (json!({ "display_name": "Ann", "avatar_color": "red" }), "avatar_color"),
        (json!({ "display_name": "Ann", "avatar_color": "#12345" }), "avatar_color"),
        (json!({ "display_name": "Ann", "avatar_color": "#GG0000" }), "avatar_color"),
    ];
    for (body, field) in cases {
        let response = app.post(&path, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_input");
        assert!(error["error"]["message"].as_str().unwrap().contains(field), "{body}: {error}");
    }
    assert_eq!(app.post(&path, json!({ "display_name": "é".repeat(100) })).await.status(), 201);
}

async fn concurrent_joins_never_overfill_a_session(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.max_participants_per_session = 3).await;
    let session = app.create_session(json!({})).await;
    let path = format!("/api/sessions/{}/join", session.session_id);
    let responses =
        join_all((0..12).map(|i| app.post(&path, json!({ "display_name": format!("P{i}") })))).await;
    let mut created = 0;
    let mut full = 0;
    for response in responses {
        match response.status().as_u16() {
            201 => created += 1,
            409 => {
                assert_eq!(error_code(response).await, "session_full");
                full += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((created, full), (3, 9));
    let shown: Value = app.get(&format!("/api/sessions/{}", session.session_id)).await.json().await.unwrap();
    assert_eq!(shown["participant_count"], 3);
    let listed: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    let active = listed["participants"].as_array().unwrap().iter().filter(|p| p["is_active"] == true).count();
    assert_eq!(active, 3);

    // Leaving frees a place.
    let listed: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    let first = listed["participants"][0]["user_id"].as_str().unwrap().to_owned();
    let left = app
        .delete(
            &format!("/api/sessions/{}/participants/{first}", session.session_id),
            Some(&session.creator_token),
        )
        .await;
    assert_eq!(left.status(), 204);
    assert_eq!(app.post(&path, json!({ "display_name": "Late" })).await.status(), 201);
    assert_eq!(app.post(&path, json!({ "display_name": "Later" })).await.status(), 409);
}

async fn who_may_remove_whom(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    let other = app.create_session(json!({})).await;
    let ann = app.join(&session.session_id, "Ann").await;
    let bob = app.join(&session.session_id, "Bob").await;
    let stranger = app.join(&other.session_id, "Stranger").await;
    let ann_path = format!("/api/sessions/{}/participants/{}", session.session_id, ann.user_id);

    let response = app.delete(&ann_path, None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "unauthorized");
    let response = app.delete(&ann_path, Some("not-a-token")).await;
    assert_eq!(response.status(), 401);
    for token in [&bob.token, &stranger.token, &other.creator_token] {
        let response = app.delete(&ann_path, Some(token)).await;
        assert_eq!(response.status(), 403);
        assert_eq!(error_code(response).await, "forbidden");
    }
    let count = || async {
        let shown: Value =
            app.get(&format!("/api/sessions/{}", session.session_id)).await.json().await.unwrap();
        shown["participant_count"].as_i64().unwrap()
    };
    assert_eq!(count().await, 2, "the refused attempts removed nobody");
    let unknown = format!("/api/sessions/{}/participants/{}", session.session_id, uuid::Uuid::new_v4());
    let response = app.delete(&unknown, Some(&session.creator_token)).await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");

    assert_eq!(app.delete(&ann_path, Some(&ann.token)).await.status(), 204);
    assert_eq!(count().await, 1);
    assert_eq!(app.delete(&ann_path, Some(&ann.token)).await.status(), 204, "leaving twice is harmless");
    let bob_path = format!("/api/sessions/{}/participants/{}", session.session_id, bob.user_id);
    assert_eq!(app.delete(&bob_path, Some(&session.creator_token)).await.status(), 204);

    let listed: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    assert!(listed["participants"].as_array().unwrap().iter().all(|p| p["is_active"] == false));
}

async fn joining_ended_or_unknown_sessions(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    assert_eq!(
        app.delete(&format!("/api/sessions/{}", session.session_id), Some(&session.creator_token))
            .await
            .status(),
        204
    );
    let response = app
        .post(&format!("/api/sessions/{}/join", session.session_id), json!({ "display_name": "Ann" }))
        .await;
    assert_eq!(response.status(), 410);
    assert_eq!(error_code(response).await, "session_ended");
    let response = app
        .post(&format!("/api/sessions/{}/join", uuid::Uuid::new_v4()), json!({ "display_name": "Ann" }))
        .await;
    assert_eq!(response.status(), 404);
    let response = app.get(&format!("/api/sessions/{}/participants", uuid::Uuid::new_v4())).await;
    assert_eq!(response.status(), 404);
    let again =
        app.delete(&format!("/api/sessions/{}", session.session_id), Some(&session.creator_token)).await;
    assert_eq!(again.status(), 410);
}

on_every_backend!(
    joining_returns_a_token_and_the_socket_url,
    invalid_join_input_is_refused_naming_the_field,
    concurrent_joins_never_overfill_a_session,
    who_may_remove_whom,
    joining_ended_or_unknown_sessions,
);

#[tokio::test]
async fn names_that_pass_for_others_are_refused_and_names_are_stored_composed() {
    let app = spawn_app().await;
    let session = app.create_session(json!({})).await;
    let path = format!("/api/sessions/{}/join", session.session_id);
    // "Ann" with a right-to-left override shows as "Ann" reversed: a spoof of someone else.
    for name in ["nnA\u{202E}", "A\u{200B}nn", "\u{2066}Ann\u{2069}"] {
        let response = app.post(&path, json!({ "display_name": name })).await;
        assert_eq!(response.status(), 422, "{name:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_input");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("display_name:"), "{body}");
    }
    let response = app.post("/api/sessions", json!({ "name": "Trip\u{202E}pirT" })).await;
    assert_eq!(response.status(), 422);

    app.join(&session.session_id, "Zoe\u{308} 🚲").await;
    app.join(&session.session_id, "👨\u{200D}👩\u{200D}👧").await;
    let listed: Value =
        app.get(&format!("/api/sessions/{}/participants", session.session_id)).await.json().await.unwrap();
    let names: Vec<&str> = listed["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Zoë 🚲", "👨\u{200D}👩\u{200D}👧"]);
}
