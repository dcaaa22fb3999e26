//! Extractors whose rejections are `ApiError`s, so malformed JSON, a wrong content type,
//! an oversized body or a bad id in the path get the same JSON error body as everything else.

use axum::extract::{FromRequest, FromRequestParts};

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::auth::Claims;
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
