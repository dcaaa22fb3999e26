//! Meeting up over REST: `PUT` and `DELETE /api/sessions/{session_id}/meeting_point`, with
//! the creator token, or a participant's where the session lets anyone set it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use serde::Serialize;

use super::chat::token_of_session;
use super::extract::{ApiJson, ApiPath, Bearer, active};
use crate::auth::{Claims, Role};
use crate::domain::{MeetingPoint, MeetingPointInput, Session, SessionId, UserId};
use crate::error::ApiError;
use crate::state::{AppState, Setter};

pub fn router() -> Router<AppState> {
    Router::new().route("/sessions/{session_id}/meeting_point", put(set).delete(clear))
}

#[derive(Serialize, utoipa::ToSchema)]
struct MeetingPointSet {
    meeting_point: MeetingPoint,
}

/// The live session and who the token stands for: its creator, or an active participant.
async fn setter(
    state: &AppState,
    claims: &Claims,
    session_id: SessionId,
) -> Result<(Session, Setter), ApiError> {
    token_of_session(state, claims, session_id).await?;
    Ok(match claims.role {
        Role::Creator => {
            if state.store.session_creator(session_id).await? != Some(claims.sub) {
                return Err(ApiError::forbidden("not this session's creator token"));
            }
            (state.live_session(session_id).await?, Setter::Creator(UserId(claims.sub)))
        }
        Role::Participant => {
            let (session, me) = active(state, claims).await?;
            (session, Setter::Participant(me.user_id))
        }
    })
}

/// Sets or moves the meeting point; everyone connected gets `meeting_point_set`.
#[utoipa::path(
    put,
    path = "/api/sessions/{session_id}/meeting_point",
    tag = "meeting up",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    request_body = MeetingPointInput,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the meeting point now set", body = MeetingPointSet),
        crate::error::ApiErrors,
    )
)]
async fn set(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
    ApiJson(input): ApiJson<MeetingPointInput>,
) -> Result<Json<MeetingPointSet>, ApiError> {
    let (session, setter) = setter(&state, &claims, session_id).await?;
    let meeting_point = state.set_meeting_point(&session, setter, &input).await?;
    Ok(Json(MeetingPointSet { meeting_point }))
}

/// Clears the meeting point; everyone connected gets `meeting_point_cleared`.
#[utoipa::path(
    delete,
    path = "/api/sessions/{session_id}/meeting_point",
    tag = "meeting up",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    security(("bearer" = [])),
    responses((status = 204, description = "cleared"), crate::error::ApiErrors)
)]
async fn clear(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
) -> Result<StatusCode, ApiError> {
    let (session, setter) = setter(&state, &claims, session_id).await?;
    state.clear_meeting_point(&session, setter).await?;
    Ok(StatusCode::NO_CONTENT)
}
