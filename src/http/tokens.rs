//! `POST /api/token/refresh`: a fresh token with the same claims and a new expiry, for a
//! session that is still live and a holder who still belongs to it.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::extract::Bearer;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/token/refresh", post(refresh).layer(super::body_limit(super::SMALL_BODY_BYTES)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Refreshed {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[utoipa::path(
    post,
    path = "/api/token/refresh",
    tag = "sessions",
    security(("bearer" = [])),
    responses((status = 200, description = "the same claims, a new expiry", body = Refreshed), crate::error::ApiErrors)
)]
async fn refresh(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Json<Refreshed>, ApiError> {
    let (token, expires_at) = state.refresh_token(&claims).await?;
    Ok(Json(Refreshed { token, expires_at }))
}
