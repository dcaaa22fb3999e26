//! No shared secret: without JWT_SECRET each installation generates its own, keeps it with
//! its data (a 0600 file beside the SQLite file, a row in PostgreSQL) and reuses it.

use std::os::unix::fs::PermissionsExt;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::helpers::*;

/// The secret every convoy used before it generated its own; published in its source.
const OLD_BUILT_IN_SECRET: &str = "convoy-development-secret-do-not-use-in-production";

fn forged(session_id: &str, user_id: &str, role: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": user_id, "sid": session_id, "role": role, "iat": now, "exp": now + 600 });
    let key = EncodingKey::from_secret(OLD_BUILT_IN_SECRET.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn without_secret(dir: &std::path::Path) -> convoy::Config {
    let mut config = test_config(dir);
    config.jwt_secret = None;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_installation_has_its_own_secret_and_keeps_it() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_config(without_secret(dir_a.path())).await;
    let b = spawn_config(without_secret(dir_b.path())).await;

    let secret_file = dir_a.path().join("convoy.db.jwt-secret");
    let mode =
        std::fs::metadata(&secret_file).expect("the secret is kept beside the data").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read it");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap().trim().len(), 64, "256 bits, hex");

    let (session, [ann]) = a.session_with(["Ann"]).await;
    assert_eq!(a.handshake_status(&a.ws_url(&ann.token)).await, 101);
    // The same token on another installation: the session id does not matter, the
    // signature is refused first.
    assert_eq!(b.handshake_status(&b.ws_url(&ann.token)).await, 401, "another installation's token");
    let on_b = b.create_session(json!({})).await;
    let path = format!("/api/sessions/{}", on_b.session_id);
    assert_eq!(b.delete(&path, Some(&session.creator_token)).await.status(), 401);

    // Tokens signed with the secret every convoy once shared are refused by both.
    for app in [&a, &b] {
        let bob = app.create_session(json!({})).await;
        let joined = app.join(&bob.session_id, "Bob").await;
        let participant = forged(&bob.session_id, &joined.user_id, "participant");
        assert_eq!(app.handshake_status(&app.ws_url(&participant)).await, 401);
        let creator = forged(&bob.session_id, uuid::Uuid::new_v4().to_string().as_str(), "creator");
        let response = app.delete(&format!("/api/sessions/{}", bob.session_id), Some(&creator)).await;
        assert_eq!(response.status(), 401);
        assert_eq!(error_code(response).await, "unauthorized");
    }

    // A restart on the same data keeps the secret: the token still opens a socket.
    a.stop().await.unwrap();
    let a = spawn_config(without_secret(dir_a.path())).await;
    let (_ws, snapshot) = a.connect(&ann.token).await;
    assert_eq!(snapshot["data"]["user_id"], ann.user_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_secret_takes_precedence_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_config(test_config(dir.path())).await;
    assert!(!dir.path().join("convoy.db.jwt-secret").exists());
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &ann.token,
        &jsonwebtoken::DecodingKey::from_secret(TEST_SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(Algorithm::HS256),
    );
    assert!(claims.is_ok(), "signed with JWT_SECRET");
}

#[tokio::test]
async fn a_short_secret_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.jwt_secret = Some("too-short".into());
    let error = convoy::App::build(config).await.err().expect("refused").to_string();
    assert!(error.contains("at least 32 bytes"), "{error}");
}

#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_postgres_share_the_generated_secret() {
    let (a, b) = spawn_pair(|c| c.jwt_secret = None).await;
    let other = spawn_app_on(Backend::Scaled, |c| c.jwt_secret = None).await;
    let (_, [ann]) = a.session_with(["Ann"]).await;
    let (_ws, snapshot) = b.connect(&ann.token).await;
    assert_eq!(snapshot["data"]["user_id"], ann.user_id.as_str());
    // A database of its own is another installation.
    assert_eq!(other.handshake_status(&other.ws_url(&ann.token)).await, 401);
}
