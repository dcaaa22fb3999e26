//! When Redis or PostgreSQL goes away (a proxy in front of the real server is cut), local
//! delivery goes on, health says what is down, REST answers 503, and everything recovers
//! without a restart.

use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::*;
use super::proxy::{Proxy, through, upstream};

async fn health(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls `path` until `done` holds, for at most 20 s.
async fn eventually(app: &TestApp, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, body) = health(app, path).await;
        if done(status, &body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never reached the expected state");
}

#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_pauses_only_cross_instance_delivery_and_recovers_by_itself() {
    let (_, redis_url) = scaled_urls();
    let proxy = Proxy::start(upstream(&redis_url)).await;
    let database_url = fresh_postgres_schema().await;
    let a = spawn_scaled(database_url.clone(), through(&redis_url, proxy.addr)).await;
    let b = spawn_scaled(database_url, redis_url).await;

    let (session, [ann, bob]) = a.session_with(["Ann", "Bob"]).await;
    let cat = b.join(&session.session_id, "Cat").await;
    let (mut ann_ws, _) = a.connect(&ann.token).await;
    let (mut bob_ws, _) = a.connect(&bob.token).await;
    let (mut cat_ws, _) = b.connect(&cat.token).await;

    proxy.cut();
    // Down, and the circuit breaker open (its prober pings every second): from here on A
    // drops what it would publish instead of queueing it.
    let detailed = eventually(&a, "/health/detailed", |status, body| {
        status == 503
            && body["checks"]["bus"]["status"] == "down"
            && body["checks"]["bus"]["error"].as_str().is_some_and(|e| e.contains("circuit open"))
    })
    .await;
    assert_eq!(detailed["checks"]["bus"]["kind"], "redis");
    assert_eq!(detailed["checks"]["database"]["status"], "up");
    assert_eq!(health(&a, "/health/ready").await.0, 503);

    // Local delivery goes on while Redis is away.
    ann_ws.send_location(1.0, 1.0).await;
    assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], 1.0);
    // A join through A while A cannot publish: its socket on A hears it at once; B's
    // sockets cannot, until A is back.
    let dan = a.join(&session.session_id, "Dan").await;
    assert_eq!(bob_ws.next_of_type("participant_joined").await["data"]["user_id"], dan.user_id);

    proxy.restore();
    eventually(&a, "/health/ready", |status, _| status == 200).await;

    // Nothing was lost silently: A's sockets resynchronise (A missed B's messages while its
    // subscriber was down), and so does Cat on B, whose fresh snapshot has Dan.
    assert_eq!(bob_ws.next_of_type("session_state").await["data"]["user_id"], bob.user_id);
    loop {
        let state = cat_ws.next_of_type("session_state").await;
        let names: Vec<&str> = state["data"]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["display_name"].as_str().unwrap())
            .collect();
        if names.contains(&"Dan") {
            break;
        }
    }

    // Cross-instance delivery resumes both ways without a restart.
    let mut seen = false;
    for i in 0..50 {
        ann_ws.send_location(2.0 + f64::from(i) / 100.0, 2.0).await;
        if let Ok(message) =
            tokio::time::timeout(Duration::from_millis(200), cat_ws.next_of_type("location_broadcast")).await
        {
            assert_eq!(message["data"]["user_id"], ann.user_id);
            seen = true;
            break;
        }
    }
    assert!(seen, "B's client saw A's client again");
    cat_ws.send_location(-3.0, -3.0).await;
    loop {
        let message = bob_ws.next_of_type("location_broadcast").await;
        if message["data"]["user_id"] == cat.user_id {
            break;
        }
    }
}

#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_postgres_keeps_sockets_streaming_and_rest_answers_503() {
    let (_, redis_url) = scaled_urls();
    let database_url = fresh_postgres_schema().await;
    let proxy = Proxy::start(upstream(&database_url)).await;
    let a = spawn_scaled(through(&database_url, proxy.addr), redis_url).await;

    let (session, [ann, bob]) = a.session_with(["Ann", "Bob"]).await;
    let (mut ann_ws, _) = a.connect(&ann.token).await;
    let (mut bob_ws, _) = a.connect(&bob.token).await;

    proxy.cut();
    for i in 0..5 {
        ann_ws.send_location(f64::from(i), 0.0).await;
        assert_eq!(bob_ws.next_of_type("location_broadcast").await["data"]["lat"], f64::from(i));
    }
    for response in [
        a.get(&format!("/api/sessions/{}", session.session_id)).await,
        a.post("/api/sessions", json!({})).await,
        a.post(&format!("/api/sessions/{}/join", session.session_id), json!({ "display_name": "Cat" })).await,
    ] {
        assert_eq!(response.status(), 503);
        assert_eq!(error_code(response).await, "unavailable");
    }
    assert_eq!(health(&a, "/health/ready").await.0, 503);
    assert_eq!(health(&a, "/health/live").await.0, 200);

    proxy.restore();
    eventually(&a, "/health/ready", |status, _| status == 200).await;
    assert_eq!(a.get(&format!("/api/sessions/{}", session.session_id)).await.status(), 200);
    // The sockets never noticed.
    bob_ws.send_location(9.0, 9.0).await;
    assert_eq!(ann_ws.next_of_type("location_broadcast").await["data"]["lat"], 9.0);
}

#[cfg_attr(
    not(convoy_scaled_tests),
    ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_stuck_on_a_lock_is_cancelled_and_answered_503() {
    use sqlx::Connection;
    let app = spawn_app_on(Backend::PostgresLocal, |c| {
        c.database_statement_timeout_seconds = 1;
        c.http_request_timeout_seconds = 60;
    })
    .await;
    let session = app.create_session(json!({})).await;
    // Another client of the database holds the participants table.
    let database_url = app.state.config.database_url.clone();
    let mut locker = sqlx::PgConnection::connect(&database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE participants IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();

    // The join waits for the lock only as long as DATABASE_STATEMENT_TIMEOUT_SECONDS, and
    // the pool's connection is free again afterwards.
    let response = app
        .post(&format!("/api/sessions/{}/join", session.session_id), json!({ "display_name": "Ann" }))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "unavailable");
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    app.join(&session.session_id, "Ann").await;
}
