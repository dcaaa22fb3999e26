//! About the server itself: `/metrics` (Prometheus text format) and `/info` (version,
//! instance, uptime, backends and the limits in force).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/info", get(info))
}

/// `/metrics`: on the main address, or only on ADMIN_LISTEN when that is set.
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render())
}

#[utoipa::path(
    get,
    path = "/info",
    tag = "meta",
    responses((status = 200, description = "version, instance, limits", body = crate::error::AnyJson))
)]
async fn info(State(state): State<AppState>) -> Json<Value> {
    let config = &state.config;
    Json(json!({
        "name": "convoy",
        "version": env!("CARGO_PKG_VERSION"),
        "instance_id": state.instance_id,
        "uptime_seconds": state.started_at.elapsed().as_secs(),
        "database": state.store.kind(),
        "bus": state.bus.kind(),
        "connections": state.hub.connection_count(),
        "limits": {
            "max_connections": config.max_connections,
            "max_participants_per_session": config.max_participants_per_session,
            "location_ttl_seconds": config.location_ttl_seconds,
            "session_idle_timeout_seconds": config.session_idle_timeout_seconds,
            "max_session_minutes": crate::domain::ExpiresInMinutes::MAX,
            "heartbeat_interval_seconds": config.heartbeat_interval_seconds,
            "client_timeout_seconds": config.client_timeout_seconds,
            "ws_max_message_bytes": config.ws_max_message_bytes,
            "ws_queue_capacity": config.ws_queue_capacity,
            "max_body_bytes": super::MAX_BODY_BYTES,
            "max_topics_per_connection": crate::domain::topic::MAX_TOPICS_PER_CONNECTION,
            "ws_queue_max_bytes": config.ws_queue_max_bytes,
            "max_connections_per_ip": config.max_connections_per_ip,
            "max_connections_per_participant": config.max_connections_per_participant,
            "max_publish_bytes": config.max_publish_bytes,
            "max_direct_message_bytes": config.max_direct_message_bytes,
            "max_chat_message_bytes": config.max_chat_message_bytes,
            "max_chat_messages_per_room": config.max_chat_messages_per_room,
            "rate_limit_enabled": config.rate_limit_enabled,
            "rate_limit_connection_per_second": config.rate_limit_connection_per_second,
            "rate_limit_user_per_second": config.rate_limit_user_per_second,
            "rate_limit_user_bytes_per_second": config.rate_limit_user_bytes_per_second,
            "rate_limit_chat_per_minute": config.rate_limit_chat_per_minute,
            "token_ttl_seconds": config.token_ttl_seconds,
            "token_rotation_grace_seconds": config.token_rotation_grace_seconds,
            "batch_windows_ms": crate::domain::BATCH_WINDOWS_MS,
        },
    }))
}
