//! Health endpoints (seed 001): `/health` (up), `/health/live` (the process answers),
//! `/health/ready` (503 when the database does not answer or the server is draining) and
//! `/health/detailed` (each dependency with its status and latency).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

/// `/health/detailed` (dependency errors name hosts): on the main address, or only on
/// ADMIN_LISTEN when that is set.
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/health/detailed", get(detailed))
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "the process answers", body = crate::error::AnyJson))
)]
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "the process serves requests", body = crate::error::AnyJson))
)]
async fn live() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// Times a check, bounded by CHECK_TIMEOUT.
async fn check<E: std::fmt::Display>(probe: impl Future<Output = Result<(), E>>) -> (bool, Value) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, probe).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(Ok(())) => (true, json!({ "status": "up", "latency_ms": latency_ms })),
        Ok(Err(err)) => {
            (false, json!({ "status": "down", "latency_ms": latency_ms, "error": err.to_string() }))
        }
        Err(_) => (false, json!({ "status": "down", "latency_ms": latency_ms, "error": "timed out" })),
    }
}

#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "the database and the bus answer", body = crate::error::AnyJson),
        (status = 503, description = "one does not, or the server is draining", body = crate::error::AnyJson)
    )
)]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    let ((db_up, database), (bus_up, bus)) = tokio::join!(check(state.store.ping()), check(state.bus.ping()));
    let ready = db_up && bus_up;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = if ready { "ready" } else { "not_ready" };
    (status, Json(json!({ "status": word, "checks": { "database": database, "bus": bus } })))
}

#[utoipa::path(
    get,
    path = "/health/detailed",
    tag = "health",
    responses(
        (status = 200, description = "each dependency is up", body = crate::error::AnyJson),
        (status = 503, description = "one is down", body = crate::error::AnyJson)
    )
)]
async fn detailed(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ((db_up, mut database), (bus_up, mut bus)) =
        tokio::join!(check(state.store.ping()), check(state.bus.ping()));
    database["kind"] = json!(state.store.kind());
    bus["kind"] = json!(state.bus.kind());
    let healthy = db_up && bus_up;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "instance_id": state.instance_id,
        "uptime_seconds": state.started_at.elapsed().as_secs(),
        "draining": state.is_draining(),
        "connections": state.hub.connection_count(),
        "checks": { "database": database, "bus": bus },
    });
    (status, Json(body))
}
