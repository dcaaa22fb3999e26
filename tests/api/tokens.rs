//! Token misuse: forged, unsigned, other algorithms, expired, other sessions', wrong roles.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::helpers::*;

fn claims(session_id: &str, sub: &str, role: &str, exp_offset_secs: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "sub": sub, "sid": session_id, "role": role, "iat": now, "exp": now + exp_offset_secs })
}

fn sign(claims: &Value, algorithm: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap()
}

/// `alg: none`: a header and payload with an empty signature.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

async fn forged_unsigned_and_foreign_tokens_are_refused(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let sid = &session.session_id;
    let participant = claims(sid, &ann.user_id, "participant", 600);

    // The handshake refuses each before upgrading.
    for (token, status) in [
        (sign(&participant, Algorithm::HS256, "some-other-secret"), 401),
        (unsigned(&participant), 401),
        (sign(&participant, Algorithm::HS512, TEST_SECRET), 401),
        (sign(&claims(sid, &ann.user_id, "participant", -600), Algorithm::HS256, TEST_SECRET), 401),
        ("garbage".to_owned(), 401),
        (session.creator_token.clone(), 403),
    ] {
        assert_eq!(app.handshake_status(&app.ws_url(&token)).await, status, "{token}");
    }
    // No token at all is not refused at the handshake: it must come as the first message
    // (tests/api/auth_first.rs), with the same checks as above.
    assert_eq!(app.handshake_status(&format!("ws://{}/ws", app.addr)).await, 101, "no token at all");
    // The genuine token still works.
    assert_eq!(app.handshake_status(&app.ws_url(&ann.token)).await, 101);

    // The same forgeries cannot end the session.
    let creator_sub = {
        let payload = session.creator_token.split('.').nth(1).unwrap();
        let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        decoded["sub"].as_str().unwrap().to_owned()
    };
    let creator = claims(sid, &creator_sub, "creator", 600);
    let end = format!("/api/sessions/{sid}");
    for token in [
        sign(&creator, Algorithm::HS256, "some-other-secret"),
        unsigned(&creator),
        sign(&creator, Algorithm::HS384, TEST_SECRET),
        sign(&claims(sid, &creator_sub, "creator", -600), Algorithm::HS256, TEST_SECRET),
    ] {
        assert_eq!(app.delete(&end, Some(&token)).await.status(), 401, "{token}");
    }
    // A participant's token, or a creator token for someone else, may not end it.
    assert_eq!(app.delete(&end, Some(&ann.token)).await.status(), 403);
    let impostor =
        sign(&claims(sid, &uuid::Uuid::new_v4().to_string(), "creator", 600), Algorithm::HS256, TEST_SECRET);
    assert_eq!(app.delete(&end, Some(&impostor)).await.status(), 403);
    let other = app.create_session(json!({})).await;
    assert_eq!(app.delete(&end, Some(&other.creator_token)).await.status(), 403);
    assert_eq!(app.delete(&end, Some(&session.creator_token)).await.status(), 204);
}

/// The handshake status for a token offered as an `access_token.<jwt>` subprotocol.
async fn subprotocol_handshake_status(app: &TestApp, token: &str) -> u16 {
    let mut request = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", format!("access_token.{token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected handshake error {other}"),
    }
}

async fn forged_tokens_are_refused_as_subprotocols_too(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let participant = claims(&session.session_id, &ann.user_id, "participant", 600);
    for token in [
        sign(&participant, Algorithm::HS256, "some-other-secret"),
        unsigned(&participant),
        sign(&participant, Algorithm::HS512, TEST_SECRET),
    ] {
        assert_eq!(subprotocol_handshake_status(&app, &token).await, 401, "{token}");
    }
    assert_eq!(subprotocol_handshake_status(&app, &session.creator_token).await, 403);
    assert_eq!(subprotocol_handshake_status(&app, &ann.token).await, 101);
}

/// Signed with the right secret and algorithm, but not a token the server issued: a
/// missing `exp`, an unknown role, a `sub` that is not a UUID.
async fn well_signed_tokens_of_the_wrong_shape_are_refused(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let sid = &session.session_id;
    let mut no_exp = claims(sid, &ann.user_id, "participant", 600);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_sid = claims(sid, &ann.user_id, "participant", 600);
    no_sid.as_object_mut().unwrap().remove("sid");
    let shapes = [
        no_exp,
        no_sid,
        claims(sid, &ann.user_id, "admin", 600),
        claims(sid, "ann", "participant", 600),
        claims("not-a-session", &ann.user_id, "participant", 600),
    ];
    let ann_path = format!("/api/sessions/{sid}/participants/{}", ann.user_id);
    for shape in shapes {
        let token = sign(&shape, Algorithm::HS256, TEST_SECRET);
        assert_eq!(app.handshake_status(&app.ws_url(&token)).await, 401, "{shape}");
        let response = app.delete(&ann_path, Some(&token)).await;
        assert_eq!(response.status(), 401, "{shape}");
        assert_eq!(error_code(response).await, "unauthorized");
    }
    // None of that removed Ann.
    assert_eq!(app.handshake_status(&app.ws_url(&ann.token)).await, 101);
}

async fn tokens_of_ended_sessions_and_departed_participants_cannot_connect(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;

    assert_eq!(app.remove(&session.session_id, &bob.user_id, &bob.token).await, 204);
    assert_eq!(app.handshake_status(&app.ws_url(&bob.token)).await, 401);

    assert_eq!(
        app.delete(&format!("/api/sessions/{}", session.session_id), Some(&session.creator_token))
            .await
            .status(),
        204
    );
    assert_eq!(app.handshake_status(&app.ws_url(&ann.token)).await, 410);
}

on_every_backend!(
    forged_unsigned_and_foreign_tokens_are_refused,
    forged_tokens_are_refused_as_subprotocols_too,
    well_signed_tokens_of_the_wrong_shape_are_refused,
    tokens_of_ended_sessions_and_departed_participants_cannot_connect,
);
