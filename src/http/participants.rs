//! `/api/sessions/{id}/participants`: list them, and let one leave (or the creator remove one);
//! `/api/sessions/{id}/presence`: who is connected now.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::chat::token_of_session;
use super::extract::{ApiPath, Bearer, active};
use crate::auth::Role;
use crate::domain::{Participant, SessionId, UserId};
use crate::error::ApiError;
use crate::message::Channel;
use crate::presence::{PresenceMap, presence_map};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{session_id}/participants", get(list))
        .route("/sessions/{session_id}/presence", get(presence))
        .route("/sessions/{session_id}/participants/{user_id}", delete(remove))
        .route("/sessions/{session_id}/tracker_url", post(replace_tracker_url))
}

/// `PresenceList`'s shape, for the OpenAPI description.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct PresenceDoc {
    session_id: SessionId,
    /// Users with at least one open socket.
    users: usize,
    /// Open sockets.
    connections: usize,
    /// `{user_id: {metas: [{phx_ref, user_id, display_name, avatar_color, online_at}]}}`
    #[schema(value_type = Object)]
    presences: serde_json::Value,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ParticipantList {
    participants: Vec<Participant>,
}

#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/participants",
    tag = "participants",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    responses((status = 200, description = "everyone who joined, oldest first", body = ParticipantList), crate::error::ApiErrors)
)]
async fn list(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
) -> Result<Json<ParticipantList>, ApiError> {
    if state.store.session(session_id).await?.is_none() {
        return Err(ApiError::not_found("session"));
    }
    let participants = state.store.participants(session_id).await?;
    Ok(Json(ParticipantList { participants }))
}

/// Who is connected now, in Phoenix Presence's shape (one meta per connection), with
/// totals for readers that only want counts.
#[derive(Serialize)]
struct PresenceList<'a> {
    session_id: SessionId,
    users: usize,
    connections: usize,
    presences: PresenceMap<'a>,
}

#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/presence",
    tag = "participants",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    responses((status = 200, description = "who is connected now, in Phoenix Presence's shape", body = PresenceDoc), crate::error::ApiErrors)
)]
async fn presence(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.store.session(session_id).await?.is_none() {
        return Err(ApiError::not_found("session"));
    }
    let metas = state.bus.presence(Channel::Session(session_id)).await;
    let presences = presence_map(&metas);
    let list = PresenceList { session_id, users: presences.len(), connections: metas.len(), presences };
    Ok(Json(serde_json::to_value(&list).map_err(|e| {
        tracing::error!(error = %e, "presence did not serialize");
        ApiError::internal()
    })?))
}

#[utoipa::path(
    delete,
    path = "/api/sessions/{session_id}/participants/{user_id}",
    tag = "participants",
    params(("session_id" = String, Path, description = "the session (UUID)"), ("user_id" = String, Path, description = "the participant (UUID)")),
    security(("bearer" = [])),
    responses((status = 204, description = "removed (or already gone)"), crate::error::ApiErrors)
)]
async fn remove(
    State(state): State<AppState>,
    ApiPath((session_id, user_id)): ApiPath<(SessionId, UserId)>,
    Bearer(claims): Bearer,
) -> Result<StatusCode, ApiError> {
    let session = state.store.session(session_id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    let allowed = claims.session_id() == session_id
        && match claims.role {
            Role::Participant => claims.user_id() == user_id,
            Role::Creator => state.store.session_creator(session_id).await? == Some(claims.sub),
        };
    if !allowed {
        return Err(ApiError::forbidden("needs this participant's token or the session's creator_token"));
    }
    let participant = state
        .store
        .participant(session_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("participant"))?;
    if claims.role == Role::Participant && participant.is_active {
        // A replaced token cannot remove its holder.
        state.check_generation(&participant, &claims)?;
    }
    if !session.is_live(state.clock.now()) {
        return Err(ApiError::session_ended());
    }
    if state.remove_participant(session_id, user_id).await? {
        tracing::info!(%session_id, %user_id, "participant left");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct NewTrackerUrl {
    /// The participant's new tracker URL: the apps must be set up with it again.
    tracker_url: String,
}

/// A new tracker URL for the caller, for when the one they have leaked: their earlier
/// tracker URLs stop working at once (`401 token_revoked`), on every instance.
#[utoipa::path(
    post,
    path = "/api/sessions/{session_id}/tracker_url",
    tag = "trackers",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a new tracker URL; the earlier ones stop working", body = NewTrackerUrl),
        crate::error::ApiErrors,
    )
)]
async fn replace_tracker_url(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
) -> Result<Json<NewTrackerUrl>, ApiError> {
    token_of_session(&state, &claims, session_id).await?;
    let (_, me) = active(&state, &claims).await?;
    state.limits.allow_user_message(me.user_id).map_err(ApiError::rate_limited)?;
    let tracker_url = state.replace_tracker_url(session_id, me.user_id).await?;
    Ok(Json(NewTrackerUrl { tracker_url }))
}
