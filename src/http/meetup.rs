//! Meeting up over REST: `PUT` and `DELETE /api/sessions/{session_id}/meeting_point`, with
//! the creator token, or a participant's where the session lets anyone set it; the trails,
//! as JSON and as GPX, with any token of the session.

use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Serialize;

use super::chat::token_of_session;
use super::extract::{ApiJson, ApiPath, ApiQuery, Bearer, active};
use crate::auth::{Claims, Role};
use chrono::{DateTime, Utc};

use crate::domain::{
    MeetingPoint, MeetingPointInput, Session, SessionId, TRAIL_ANSWER_POINTS, Trail, TrailPoint, UserId,
};
use crate::error::ApiError;
use crate::state::{AppState, Setter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{session_id}/meeting_point", put(set).delete(clear))
        .route("/sessions/{session_id}/trails", get(trails))
        .route("/sessions/{session_id}/trails.gpx", get(trails_gpx))
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Since {
    /// RFC 3339: only points from then on.
    since: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Trails {
    trails: Vec<Trail>,
}

/// Everyone's path in the session since they started sharing (thinned, bounded).
#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/trails",
    tag = "meeting up",
    params(("session_id" = String, Path, description = "the session (UUID)"), Since),
    security(("bearer" = [])),
    responses((status = 200, description = "one trail per participant who has one", body = Trails), crate::error::ApiErrors)
)]
async fn trails(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    ApiQuery(Since { since }): ApiQuery<Since>,
    Bearer(claims): Bearer,
) -> Result<Json<Trails>, ApiError> {
    let (_, asker) = setter(&state, &claims, session_id).await?;
    let trails = state.trails(session_id, asker.id(), since, Some(TRAIL_ANSWER_POINTS)).await?;
    Ok(Json(Trails { trails }))
}

/// The trails as a GPX 1.1 file: one track per participant.
#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/trails.gpx",
    tag = "meeting up",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "GPX 1.1", content_type = "application/gpx+xml", body = String),
        crate::error::ApiErrors,
    )
)]
async fn trails_gpx(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
) -> Result<Response, ApiError> {
    let (session, asker) = setter(&state, &claims, session_id).await?;
    let trails = state.trails(session_id, asker.id(), None, None).await?;
    let tracks: Vec<(String, Vec<TrailPoint>)> =
        trails.into_iter().map(|t| (t.display_name, t.points)).collect();
    let document = crate::protocol::gpx::trails_gpx(session.name.as_deref(), &tracks).map_err(|err| {
        tracing::warn!(error = %err, "could not write GPX");
        ApiError::internal()
    })?;
    let disposition = format!("attachment; filename=\"convoy-{session_id}.gpx\"");
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/gpx+xml")),
            (CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| ApiError::internal())?),
        ],
        document,
    )
        .into_response())
}
