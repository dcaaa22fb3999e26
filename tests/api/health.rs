//! The four health endpoints.

use serde_json::{Value, json};

use super::helpers::*;

async fn health_endpoints_report_each_dependency(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    for path in ["/health", "/health/live", "/health/ready", "/health/detailed"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"].to_str().unwrap().starts_with("application/json"),
            "{path}"
        );
    }
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let live: Value = app.get("/health/live").await.json().await.unwrap();
    assert_eq!(live["status"], "alive");

    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"]["status"], "up");

    let detailed: Value = app.get("/health/detailed").await.json().await.unwrap();
    let (database, bus) = match backend {
        Backend::Embedded => ("sqlite", "in-process"),
        Backend::Scaled => ("postgres", "redis"),
        Backend::PostgresLocal => ("postgres", "in-process"),
        Backend::SqliteRedis => ("sqlite", "redis"),
        Backend::Clustered => ("postgres", "redis-cluster"),
    };
    assert_eq!(detailed["status"], "healthy");
    assert_eq!(detailed["checks"]["database"]["kind"], database);
    assert_eq!(detailed["checks"]["bus"]["kind"], bus);
    for check in ["database", "bus"] {
        assert_eq!(detailed["checks"][check]["status"], "up", "{detailed}");
        assert!(detailed["checks"][check]["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    }
    assert_eq!(detailed["connections"], 0);
}

async fn detailed_health_counts_open_sockets(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (_ann_ws, _) = app.connect(&ann.token).await;
    let detailed: Value = app.get("/health/detailed").await.json().await.unwrap();
    assert_eq!(detailed["connections"], 1);
}

/// With the database gone, readiness says so (503) while liveness still answers, and REST
/// calls get a 503 in the usual error shape rather than a 500.
async fn a_database_that_does_not_answer_makes_the_server_unready(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let session = app.create_session(json!({})).await;
    app.state.store.close().await;

    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 503);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["checks"]["database"]["status"], "down");

    let response = app.get("/health/detailed").await;
    assert_eq!(response.status(), 503);
    let detailed: Value = response.json().await.unwrap();
    assert_eq!(detailed["status"], "degraded");
    assert_eq!(detailed["checks"]["database"]["status"], "down");
    assert!(detailed["checks"]["database"]["latency_ms"].as_f64().is_some());
    assert_eq!(detailed["checks"]["bus"]["status"], "up");

    assert_eq!(app.get("/health/live").await.status(), 200);
    assert_eq!(app.get("/health").await.status(), 200);

    let response = app.get(&format!("/api/sessions/{}", session.session_id)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "unavailable");
    let response = app.post("/api/sessions", json!({})).await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "unavailable");
}

on_every_backend!(
    health_endpoints_report_each_dependency,
    detailed_health_counts_open_sockets,
    a_database_that_does_not_answer_makes_the_server_unready,
);
