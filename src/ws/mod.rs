//! The sockets: `GET /ws` (convoy's native protocol) and `GET /socket/websocket` (Phoenix
//! Channels). Token checks happen before the upgrade, so a refused client gets a plain HTTP
//! status; both protocols run on the same connection loop and hub.
//!
//! A socket URL may name its session, for a load balancer to route a session's sockets to
//! one instance (session affinity): in the path, `/ws/{session_id}` (what the join
//! response's `websocket_url` gives, so a client that appends `?token=` to it keeps
//! working), or as `?session=` on either socket. The named session must be the token's.

mod auth_first;
mod connection;
mod native;
mod phoenix;
mod socket;
mod upgrade;

use std::net::IpAddr;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use crate::admission::{ConnectionSlot, Refusal};
use crate::auth::{Claims, Role, TokenError};
use crate::domain::{Participant, Session, SessionId};
use crate::error::ApiError;
use crate::http::{ApiPath, ClientIp};
use crate::state::AppState;
use upgrade::WebSocketUpgrade;

/// The subprotocol prefix that carries a token (seed 003): `access_token.<jwt>`.
const TOKEN_PROTOCOL_PREFIX: &str = "access_token.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/ws/{session_id}", get(upgrade_in))
        .route("/socket/websocket", get(phoenix::upgrade))
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
    /// The session the socket is for (a routing hint, checked against the token).
    session: Option<SessionId>,
    /// Opt-in batched delivery: others' positions gathered for this many milliseconds and
    /// sent as one `location_batch` (0, the default: each as its own `location_broadcast`).
    #[serde(default)]
    batch_ms: u64,
}

/// The token from `?token=` or, failing that, from an `access_token.<jwt>` subprotocol
/// (returned too, so the handshake can echo it).
fn find_token(query: Option<String>, headers: &HeaderMap) -> Option<(String, Option<String>)> {
    if let Some(token) = query.filter(|t| !t.is_empty()) {
        return Some((token, None));
    }
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX).map(|t| (t.to_owned(), Some(p.to_owned()))))
}

async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, ApiError>,
) -> Result<Response, ApiError> {
    upgrade_native(state, ip, query, headers, ws, None).await
}

/// `/ws/{session_id}`: `/ws` for one session's sockets.
async fn upgrade_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(session_id): ApiPath<SessionId>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, ApiError>,
) -> Result<Response, ApiError> {
    upgrade_native(state, ip, query, headers, ws, Some(session_id)).await
}

async fn upgrade_native(
    state: AppState,
    ip: IpAddr,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, ApiError>,
    in_path: Option<SessionId>,
) -> Result<Response, ApiError> {
    let ws = upgrade_requested(&state, &headers, ws)?;
    let Query(query) = query?;
    let named = named_session(in_path, query.session)?;
    let batch = crate::domain::batch_window(query.batch_ms)?;
    let sockets = state.sockets.clone();
    let Some((token, protocol)) = find_token(query.token, &headers) else {
        // No token in the handshake: it must come as the first message (seed 004's Auth).
        // Until then the socket counts against its address.
        let slot = reserve_slot(&state, ip)?;
        let pending = state.pending_auth.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable("too many sockets are waiting to authenticate; retry, or pass the token")
        })?;
        let (response, upgrading) = ws.accept();
        sockets.spawn(auth_first::run(upgrading, state, slot, pending, batch, named));
        return Ok(response);
    };
    let (admitted, slot) = admit(&state, &token, named, ip).await?;
    let mut ws = ws;
    if let Some(protocol) = protocol {
        ws = ws.protocol(&protocol);
    }
    let (response, upgrading) = ws.accept();
    sockets.spawn(native::run(upgrading, state, admitted, batch, slot));
    Ok(response)
}

/// The session a socket URL names, in its path or its query (the two must agree).
fn named_session(
    in_path: Option<SessionId>,
    in_query: Option<SessionId>,
) -> Result<Option<SessionId>, ApiError> {
    match (in_path, in_query) {
        (Some(path), Some(query)) if path != query => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "the path and ?session= name different sessions",
        )),
        (path, query) => Ok(path.or(query)),
    }
}

/// The upgrade, with the message size limits set; 503 while draining, 426 without one.
fn upgrade_requested(
    state: &AppState,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, ApiError>,
) -> Result<WebSocketUpgrade, ApiError> {
    crate::http::cors::check_socket_origin(&state.config, headers)?;
    if state.is_draining() {
        return Err(ApiError::unavailable("the server is shutting down; reconnect to another instance"));
    }
    Ok(ws?.max_message_size(state.config.ws_max_message_bytes))
}

/// Checks a socket's token before the upgrade: a participant's, of a live session, who has
/// not left; and takes its places under the socket caps (the address's first, so a client
/// over its cap costs no database read).
async fn admit(
    state: &AppState,
    token: &str,
    named: Option<SessionId>,
    ip: IpAddr,
) -> Result<(Admitted, ConnectionSlot), ApiError> {
    let mut slot = reserve_slot(state, ip)?;
    let (session, participant, claims) = admit_token(state, token, named).await?;
    slot.bind(participant.user_id).map_err(|refusal| refused(state, refusal))?;
    Ok((Admitted { session, me: participant, claims }, slot))
}

/// A socket's holder, as its token and the store say.
pub(crate) struct Admitted {
    pub session: Session,
    pub me: Participant,
    /// The token's claims: its generation and expiry (the socket closes then).
    pub claims: Claims,
}

/// A place for a socket from `ip`, or the refusal as an HTTP error.
fn reserve_slot(state: &AppState, ip: IpAddr) -> Result<ConnectionSlot, ApiError> {
    state.admission.admit(ip).map_err(|refusal| refused(state, refusal))
}

/// 503 when the instance is full (another instance may have room), 429 when the client
/// holds its share.
fn refused(state: &AppState, refusal: Refusal) -> ApiError {
    let config = &state.config;
    let mut error = match refusal {
        Refusal::Instance => {
            return ApiError::unavailable(format!(
                "this instance holds its maximum of {} sockets",
                config.max_connections
            ));
        }
        Refusal::PerIp => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!("this address holds its maximum of {} sockets", config.max_connections_per_ip),
        ),
        Refusal::PerParticipant => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            refused_participant_message(config.max_connections_per_participant),
        ),
    };
    error.retry_after = Some(RETRY_AFTER_SECS);
    error
}

/// Seconds a client refused by a per-client cap is told to wait: time for its dead sockets
/// to be noticed.
const RETRY_AFTER_SECS: u64 = 10;

fn refused_participant_message(max: u32) -> String {
    format!("this participant holds its maximum of {max} sockets; close one first")
}

/// The token checks: a participant's, of a live session, who has not left.
async fn admit_token(
    state: &AppState,
    token: &str,
    named: Option<SessionId>,
) -> Result<(Session, Participant, Claims), ApiError> {
    let claims = state.tokens.verify(token).map_err(|err| match err {
        TokenError::Expired => ApiError::unauthorized("token expired"),
        TokenError::Invalid => ApiError::unauthorized("invalid token"),
    })?;
    if named.is_some_and(|named| named != claims.session_id()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "session_mismatch",
            "the socket URL names another session than the token's: use the join response's websocket_url",
        ));
    }
    if claims.role != Role::Participant {
        return Err(ApiError::forbidden(
            "a creator token cannot open a socket: join the session for a participant token",
        ));
    }
    let (session, participant) = state.active_member(&claims).await?;
    Ok((session, participant, claims))
}
