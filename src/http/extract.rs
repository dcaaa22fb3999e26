//! Extractors whose rejections are `ApiError`s, so malformed JSON, a wrong content type,
//! an oversized body or a bad id in the path get the same JSON error body as everything else.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};

use crate::auth::{Claims, Role};
use crate::domain::{Participant, Session};
use crate::error::ApiError;
use crate::state::AppState;

/// `axum::Json` with JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The client's address: the TCP peer, or, with TRUST_PROXY_HEADERS, the last address in
/// `X-Forwarded-For` (the one the trusted proxy in front appended: earlier entries are
/// whatever the client claimed). Rate limits and logs use it.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.headers, &parts.extensions, state.config.trust_proxy_headers)))
    }
}

/// See `ClientIp` (0.0.0.0 for a request served without connection info).
pub fn client_ip(headers: &HeaderMap, extensions: &Extensions, trust_proxy_headers: bool) -> IpAddr {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
    if !trust_proxy_headers {
        return peer;
    }
    // Only the last entry: if the proxy wrote something unreadable there, the client's own
    // earlier entries must not take its place.
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|entry| entry.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// The session and participant of a participant's token that is still good: a live
/// session (410), an active participant (401 `token_revoked`), a token of a current
/// generation (401 `token_superseded`); 403 for a creator's token. The one check every REST
/// route shares with the socket upgrade (`AppState::active_participant`; the upgrade's
/// `active_member` makes the same check on reads it shares), called after a route has
/// checked its path and query, so their errors come first.
pub async fn active(state: &AppState, claims: &Claims) -> Result<(Session, Participant), ApiError> {
    if claims.role != Role::Participant {
        return Err(ApiError::forbidden("needs a participant's token (join a session to get one)"));
    }
    state.active_participant(claims).await
}

/// The verified claims of an `Authorization: Bearer <token>` header; 401 without one.
pub struct Bearer(pub Claims);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("Authorization header must be 'Bearer <token>'"))?;
        state.tokens.verify(token).map(Bearer).map_err(|err| ApiError::unauthorized(err.to_string()))
    }
}
