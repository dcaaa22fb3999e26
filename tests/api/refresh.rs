//! Token lifetime and refresh, over REST and on the socket.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::helpers::*;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn refresh(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/token/refresh"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn a_refreshed_token_keeps_its_claims_and_never_outlives_the_session(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.token_ttl_seconds = 120).await;
    let now = chrono::Utc::now().timestamp();

    // A long session: the token lives TOKEN_TTL_SECONDS.
    let long = app.create_session(json!({})).await;
    let ann = app.join(&long.session_id, "Ann").await;
    let old = claims(&ann.token);
    assert!((now + 115..=now + 125).contains(&old["exp"].as_i64().unwrap()), "{old}");

    app.advance(std::time::Duration::from_secs(10));
    let response = refresh(&app, Some(&ann.token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let new = claims(body["token"].as_str().unwrap());
    for claim in ["sub", "sid", "role"] {
        assert_eq!(new[claim], old[claim], "{claim}");
    }
    let later = new["exp"].as_i64().unwrap() - old["exp"].as_i64().unwrap();
    assert!((10..=11).contains(&later), "issued ten seconds later, expiring {later} s later");
    let expires_at = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires_at.timestamp(), new["exp"].as_i64().unwrap());
    assert_eq!(app.handshake_status(&app.ws_url(body["token"].as_str().unwrap())).await, 101);

    // The creator's token refreshes too.
    let creator = refresh(&app, Some(&long.creator_token)).await;
    assert_eq!(creator.status(), 200);
    assert_eq!(claims(creator.json::<Value>().await.unwrap()["token"].as_str().unwrap())["role"], "creator");

    // A one-minute session: the token ends with it, refreshed or not.
    let short = app.create_session(json!({ "expires_in_minutes": 1 })).await;
    let session_end =
        chrono::DateTime::parse_from_rfc3339(short.body["expires_at"].as_str().unwrap()).unwrap().timestamp();
    let bob = app.join(&short.session_id, "Bob").await;
    assert_eq!(claims(&bob.token)["exp"].as_i64().unwrap(), session_end);
    let body: Value = refresh(&app, Some(&bob.token)).await.json().await.unwrap();
    assert_eq!(claims(body["token"].as_str().unwrap())["exp"].as_i64().unwrap(), session_end);
}

async fn refresh_is_refused_to_those_who_no_longer_belong(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;

    assert_eq!(refresh(&app, None).await.status(), 401);
    assert_eq!(refresh(&app, Some("forged.token.here")).await.status(), 401);

    let path = format!("/api/sessions/{}/participants/{}", session.session_id, bob.user_id);
    assert_eq!(app.delete(&path, Some(&bob.token)).await.status(), 204);
    let response = refresh(&app, Some(&bob.token)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "token_revoked");

    let end =
        app.delete(&format!("/api/sessions/{}", session.session_id), Some(&session.creator_token)).await;
    assert_eq!(end.status(), 204);
    let response = refresh(&app, Some(&ann.token)).await;
    assert_eq!(response.status(), 410);
    assert_eq!(error_code(response).await, "session_ended");
}

async fn refresh_token_on_the_socket_answers_token_refreshed(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut ws, _) = app.connect(&ann.token).await;
    ws.send_json(json!({ "type": "refresh_token", "data": {} })).await;
    let reply = ws.next_of_type("token_refreshed").await;
    let token = reply["data"]["token"].as_str().unwrap();
    assert_eq!(claims(token)["sub"], ann.user_id);
    assert!(reply["data"]["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.handshake_status(&app.ws_url(token)).await, 101);
}

on_every_backend!(
    a_refreshed_token_keeps_its_claims_and_never_outlives_the_session,
    refresh_is_refused_to_those_who_no_longer_belong,
    refresh_token_on_the_socket_answers_token_refreshed,
);
