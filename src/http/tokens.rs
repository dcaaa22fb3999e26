//! `POST /api/token/refresh`: a fresh token with the same claims and a new expiry, for a
//! session that is still live and a holder who still belongs to it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::extract::Bearer;
use crate::auth::Role;
use crate::domain;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/token/refresh", post(refresh))
}

#[derive(Serialize)]
pub struct Refreshed {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

async fn refresh(State(state): State<AppState>, Bearer(claims): Bearer) -> Result<Json<Refreshed>, ApiError> {
    let session_id = claims.session_id();
    let session = state.store.session(session_id).await?.ok_or_else(ApiError::session_ended)?;
    if !session.is_live(domain::now()) {
        return Err(ApiError::session_ended());
    }
    let still_belongs = match claims.role {
        Role::Participant => {
            state.store.participant(session_id, claims.user_id()).await?.is_some_and(|p| p.is_active)
        }
        Role::Creator => state.store.session_creator(session_id).await? == Some(claims.sub),
    };
    if !still_belongs {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_revoked",
            "this token's holder has left the session",
        ));
    }
    let (token, expires_at) = state.issue_token(session_id, claims.sub, claims.role, session.expires_at);
    Ok(Json(Refreshed { token, expires_at }))
}
