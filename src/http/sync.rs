//! The HTTP fallback (seed 002's sync push and pull, for locations), for clients that
//! cannot keep a socket open: phones in the background push what they buffered, polling
//! viewers pull the snapshot.
//!
//! - `POST /api/sessions/{id}/locations` with one point or `{locations: [...]}`: the newest
//!   valid point younger than LOCATION_TTL_SECONDS (and newer than the live one) becomes the
//!   live location and is broadcast exactly as a socket's `location_update`; the others are
//!   accepted and dropped.
//! - `GET /api/sessions/{id}/state`: the snapshot a socket gets on connect (`session_state`'s
//!   data), with an `ETag`; `If-None-Match` with it answers 304 while nothing changed.

use std::hash::{Hash, Hasher};

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::chat::token_of_session;
use super::extract::{ApiJson, ApiPath, Bearer, active};
use crate::auth::Claims;
use crate::domain::{Location, LocationInput, Participant, SessionId};
use crate::error::ApiError;
use crate::snapshot::{self, Loaded};
use crate::state::AppState;

/// Most points in one push.
pub const MAX_POINTS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{session_id}/locations", post(push))
        .route("/sessions/{session_id}/state", get(pull))
}

/// What a push takes, for the OpenAPI description (`parse_points` reads it).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum PushBody {
    One(LocationInput),
    Batch {
        /// 1 to 100 points.
        locations: Vec<LocationInput>,
    },
}

#[derive(Serialize, utoipa::ToSchema)]
struct Pushed {
    /// Points received (all valid).
    accepted: usize,
    /// Whether one of them became the live location (and was broadcast).
    live: bool,
    /// The live location's time after this push, if there is one.
    live_timestamp: Option<DateTime<Utc>>,
}

/// The token's participant, of this session.
async fn caller(state: &AppState, claims: &Claims, session_id: SessionId) -> Result<Participant, ApiError> {
    token_of_session(state, claims, session_id).await?;
    Ok(active(state, claims).await?.1)
}

#[utoipa::path(
    post,
    path = "/api/sessions/{session_id}/locations",
    tag = "locations",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    request_body = PushBody,
    security(("bearer" = [])),
    responses((status = 200, description = "accepted; whether a point went live", body = Pushed), crate::error::ApiErrors)
)]
async fn push(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Pushed>, ApiError> {
    let me = caller(&state, &claims, session_id).await?;
    state.limits.allow_user_message(me.user_id).map_err(ApiError::rate_limited)?;
    let points = parse_points(body, state.clock.now())?;
    let (live, live_timestamp) = state.share_newest(session_id, me.user_id, &points).await;
    Ok(Json(Pushed { accepted: points.len(), live: live.is_some(), live_timestamp }))
}

/// One point, or `{locations: [...]}` (1 to MAX_POINTS); every point must be valid, and the
/// first that is not is named (`locations[3].lat: ...`).
fn parse_points(body: Value, now: DateTime<Utc>) -> Result<Vec<Location>, ApiError> {
    let invalid = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message);
    let (inputs, batch) = match body {
        Value::Object(mut object) if object.contains_key("locations") => match object.remove("locations") {
            Some(Value::Array(points)) if object.is_empty() => (points, true),
            Some(Value::Array(_)) => {
                return Err(invalid("only `locations` may be given with a batch".into()));
            }
            _ => return Err(invalid("locations: must be an array of points".into())),
        },
        point @ Value::Object(_) => (vec![point], false),
        _ => {
            return Err(invalid(
                "expected a point {lat, lng, accuracy, timestamp} or {locations: [...]}".into(),
            ));
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_POINTS {
        return Err(invalid(format!("locations: must hold 1 to {MAX_POINTS} points")));
    }
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let at = if batch { format!("locations[{i}]") } else { "location".to_owned() };
            let input: LocationInput =
                serde_json::from_value(raw).map_err(|e| invalid(format!("{at}: {e}")))?;
            Location::parse(&input, now).map_err(|e| invalid(format!("{at}.{e}")))
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/state",
    tag = "locations",
    params(("session_id" = String, Path, description = "the session (UUID)"), ("If-None-Match" = Option<String>, Header, description = "an ETag from an earlier answer")),
    security(("bearer" = [])),
    responses((status = 200, description = "the snapshot a socket gets on connect", body = crate::protocol::native::SessionState, headers(("ETag" = String, description = "weak validator of the body"))), (status = 304, description = "unchanged since the ETag given"), crate::error::ApiErrors)
)]
async fn pull(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = caller(&state, &claims, session_id).await?;
    // A snapshot reads the store several times: polling counts like sending a message.
    state.limits.allow_user_message(me.user_id).map_err(ApiError::rate_limited)?;
    let loaded = match snapshot::load(&state, session_id, &me).await {
        Loaded::Ready(snapshot) => snapshot,
        Loaded::Ended => return Err(ApiError::session_ended()),
        Loaded::Left => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_revoked",
                "this participant has left",
            ));
        }
        Loaded::Failed(err) => return Err(err.into()),
    };
    let body = serde_json::to_vec(&loaded.session_state()).map_err(|_| ApiError::internal())?;
    let etag = etag_of(&body);
    let unchanged = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| weak(tag.trim()) == weak(&etag) || tag.trim() == "*");
    let etag = HeaderValue::from_str(&etag).map_err(|_| ApiError::internal())?;
    let cache = HeaderValue::from_static("no-cache");
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag), (CACHE_CONTROL, cache)]).into_response());
    }
    let json = HeaderValue::from_static("application/json");
    Ok(([(ETAG, etag), (CACHE_CONTROL, cache), (axum::http::header::CONTENT_TYPE, json)], body)
        .into_response())
}

/// The tag without its weakness mark: If-None-Match compares weakly (RFC 9110).
fn weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// A weak validator of the body: the same snapshot gives the same tag on every instance
/// running the same build.
fn etag_of(body: &[u8]) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("W/\"{:016x}\"", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn points_come_alone_or_in_batches_and_bad_ones_are_named() {
        let now = crate::domain::now();
        let one = json!({ "lat": 1.0, "lng": 2.0, "accuracy": 5.0 });
        assert_eq!(parse_points(one.clone(), now).unwrap().len(), 1);
        assert_eq!(parse_points(json!({ "locations": [one.clone(), one.clone()] }), now).unwrap().len(), 2);
        let bad = json!({ "locations": [one.clone(), { "lat": 91.0, "lng": 0.0, "accuracy": 1.0 }] });
        let err = parse_points(bad, now).unwrap_err();
        assert!(err.message.starts_with("locations[1].lat"), "{}", err.message);
        assert!(parse_points(json!({ "locations": [] }), now).is_err());
        assert!(parse_points(json!({ "locations": vec![one; MAX_POINTS + 1] }), now).is_err());
        assert!(parse_points(json!([1, 2]), now).is_err());
        assert!(parse_points(json!({ "locations": [], "extra": 1 }), now).is_err());
        assert!(parse_points(json!({ "lat": "x" }), now).unwrap_err().message.starts_with("location:"));
    }

    #[test]
    fn etags_follow_the_body() {
        assert_eq!(etag_of(b"{}"), etag_of(b"{}"));
        assert_ne!(etag_of(b"{}"), etag_of(b"{ }"));
        assert!(etag_of(b"{}").starts_with("W/\""));
    }
}
