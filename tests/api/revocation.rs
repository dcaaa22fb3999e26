//! Revocation that holds: removals and ends reach every instance's sockets even without
//! Redis, a socket closes when its token expires, and a refreshed token replaces the old
//! one for new sockets.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::helpers::*;
use super::proxy::{Proxy, through, upstream};

fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> (u16, String) {
    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or_default()
}

#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_and_ends_reach_an_instance_cut_off_from_redis() {
    let (_, redis_url) = scaled_urls();
    let proxy = Proxy::start(upstream(&redis_url)).await;
    let database_url = fresh_postgres_schema().await;
    let a = spawn_scaled(database_url.clone(), redis_url.clone()).await;
    let b =
        spawn_with_redis(database_url, through(&redis_url, proxy.addr), |c| c.revocation_check_seconds = 1)
            .await;

    let (session, [bob, cat]) = a.session_with(["Bob", "Cat"]).await;
    let (mut bob_ws, _) = b.connect(&bob.token).await;
    let (mut cat_ws, _) = b.connect(&cat.token).await;

    // B no longer hears anything from the other instances.
    proxy.cut();
    assert_eq!(a.remove(&session.session_id, &bob.user_id, &session.creator_token).await, 204);
    let (code, reason) = close_code(bob_ws.closed().await);
    assert_eq!((code, reason.as_str()), (1000, "left the session"));

    let end = a.delete(&format!("/api/sessions/{}", session.session_id), Some(&session.creator_token)).await;
    assert_eq!(end.status(), 204);
    assert_eq!(cat_ws.next_of_type("session_ended").await["type"], "session_ended");
    assert_eq!(close_code(cat_ws.closed().await).0, 1000);
}

/// A participant token of `joined`, signed like the server's but expiring in `secs`.
fn expiring_token(session_id: &str, user_id: &str, secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims =
        json!({ "sub": user_id, "sid": session_id, "role": "participant", "iat": now, "exp": now + secs });
    let key = EncodingKey::from_secret(TEST_SECRET.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

#[tokio::test]
async fn an_open_socket_closes_when_its_token_expires_unless_refreshed() {
    let app = spawn_app().await;
    let (session, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut refreshing, _) = app.connect(&expiring_token(&session.session_id, &ann.user_id, 2)).await;
    let (mut lapsing, _) = app.connect(&expiring_token(&session.session_id, &bob.user_id, 2)).await;

    refreshing.send_json(json!({ "type": "refresh_token", "data": {} })).await;
    let refreshed = refreshing.next_of_type("token_refreshed").await;
    assert!(refreshed["data"]["token"].is_string());

    let (code, reason) = close_code(lapsing.closed().await);
    assert_eq!(code, 1008);
    assert!(reason.contains("token expired"), "{reason}");
    // The same expiry has passed for the refreshed socket: it is still open.
    refreshing.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(refreshing.next_of_type("pong").await["type"], "pong");
}

async fn handshake_error(app: &TestApp, token: &str) -> (u16, String) {
    let request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(app.ws_url(token))
            .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            (response.status().as_u16(), body["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
        Err(other) => panic!("{other}"),
    }
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.client.post(app.url("/api/token/refresh")).bearer_auth(token).send().await.unwrap()
}

async fn a_refreshed_token_no_longer_opens_sockets(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.token_rotation_grace_seconds = 0).await;
    let (session, [ann]) = app.session_with(["Ann"]).await;
    let (mut open_before, _) = app.connect(&ann.token).await;

    let response = refresh(&app, &ann.token).await;
    assert_eq!(response.status(), 200);
    let second = response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert_eq!(handshake_error(&app, &ann.token).await, (401, "token_superseded".into()));
    let again = refresh(&app, &ann.token).await;
    assert_eq!(again.status(), 401, "an old token cannot refresh either");
    assert_eq!(error_code(again).await, "token_superseded");

    // The socket's own refresh rotates too.
    let (mut ws, _) = app.connect(&second).await;
    ws.send_json(json!({ "type": "refresh_token", "data": {} })).await;
    let third = ws.next_of_type("token_refreshed").await["data"]["token"].as_str().unwrap().to_owned();
    assert_eq!(handshake_error(&app, &second).await, (401, "token_superseded".into()));
    assert_eq!(handshake_error(&app, &third).await.0, 101);
    // Sockets already open stay open.
    open_before.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(open_before.next_of_type("pong").await["type"], "pong");
    // Nor can a replaced token remove its holder.
    assert_eq!(app.remove(&session.session_id, &ann.user_id, &second).await, 401);
    assert_eq!(handshake_error(&app, &third).await.0, 101, "still in");
}

async fn an_answer_lost_within_the_grace_period_does_not_lock_the_holder_out(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.token_rotation_grace_seconds = 600).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let token = |response: Value| response["token"].as_str().unwrap().to_owned();

    // The first refresh's answer never arrives; the client tries again with the old token.
    let lost = token(refresh(&app, &ann.token).await.json().await.unwrap());
    let retried = refresh(&app, &ann.token).await;
    assert_eq!(retried.status(), 200);
    let retried = token(retried.json().await.unwrap());
    // Both answers are of the current generation: no second rotation replaced the first.
    for current in [&lost, &retried, &ann.token] {
        assert_eq!(handshake_error(&app, current).await.0, 101);
    }
    // The generation after that ends the old token's grace: it is two behind now.
    let newest = token(refresh(&app, &lost).await.json().await.unwrap());
    assert_eq!(handshake_error(&app, &ann.token).await, (401, "token_superseded".into()));
    assert_eq!(handshake_error(&app, &newest).await.0, 101);
}

on_every_backend!(
    a_refreshed_token_no_longer_opens_sockets,
    an_answer_lost_within_the_grace_period_does_not_lock_the_holder_out
);
