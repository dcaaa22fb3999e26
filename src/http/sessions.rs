//! `/api/sessions`: create, read, join and end sessions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Bearer, ClientIp};
use crate::auth::Role;
use crate::domain::{
    AvatarColor, DisplayName, ExpiresInMinutes, MeetingPointBy, SessionId, SessionName, UserId,
};
use crate::error::ApiError;
use crate::limits::RestAction;
use crate::state::{AppState, EndReason};
use crate::store::{JoinOutcome, NewParticipant, NewSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", post(create).layer(super::body_limit(super::SMALL_BODY_BYTES)))
        .route("/sessions/{session_id}", get(show).delete(end))
        .route("/sessions/{session_id}/join", post(join).layer(super::body_limit(super::SMALL_BODY_BYTES)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    name: Option<String>,
    expires_in_minutes: Option<i64>,
    /// Who may set the meeting point: `creator` (the default) or `anyone` in the session.
    meeting_point_by: Option<MeetingPointBy>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SessionCreated {
    session_id: SessionId,
    join_link: String,
    expires_at: DateTime<Utc>,
    name: Option<String>,
    creator_token: String,
}

#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "sessions",
    request_body = CreateSession,
    responses((status = 201, description = "created", body = SessionCreated), crate::error::ApiErrors)
)]
async fn create(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<impl IntoResponse, ApiError> {
    state.limits.allow_rest(RestAction::CreateSession, ip).map_err(ApiError::rate_limited)?;
    let name = SessionName::parse(body.name)?.into_inner();
    let lifetime = ExpiresInMinutes::parse(body.expires_in_minutes)?;
    let now = state.clock.now();
    let new = NewSession {
        id: SessionId::new_random(),
        name,
        creator_id: uuid::Uuid::new_v4(),
        created_at: now,
        expires_at: lifetime.after(now),
        meeting_point_by: body.meeting_point_by.unwrap_or_default(),
    };
    state.store.create_session(&new).await?;
    tracing::info!(session_id = %new.id, "session created");
    let (creator_token, _) = state.issue_token(new.id, new.creator_id, Role::Creator, 0, new.expires_at);
    let created = SessionCreated {
        session_id: new.id,
        join_link: format!("{}/join/{}", state.public_url, new.id),
        expires_at: new.expires_at,
        name: new.name,
        creator_token,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Serialize, utoipa::ToSchema)]
struct SessionDetails {
    id: SessionId,
    name: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    participant_count: i64,
    is_active: bool,
}

#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}",
    tag = "sessions",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    responses((status = 200, description = "the session", body = SessionDetails), crate::error::ApiErrors)
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
) -> Result<Json<SessionDetails>, ApiError> {
    let session = state.store.session(session_id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    let is_active = session.is_live(state.clock.now());
    Ok(Json(SessionDetails {
        id: session.id,
        name: session.name,
        created_at: session.created_at,
        expires_at: session.expires_at,
        participant_count: if is_active { session.participant_count } else { 0 },
        is_active,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/sessions/{session_id}",
    tag = "sessions",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    security(("bearer" = [])),
    responses((status = 204, description = "ended; everyone connected was told"), crate::error::ApiErrors)
)]
async fn end(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<SessionId>,
    Bearer(claims): Bearer,
) -> Result<StatusCode, ApiError> {
    let creator =
        state.store.session_creator(session_id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    if claims.role != Role::Creator || claims.session_id() != session_id || claims.sub != creator {
        return Err(ApiError::forbidden("only the session's creator_token may end it"));
    }
    if !state.store.end_session(session_id, state.clock.now()).await? {
        return Err(ApiError::session_ended());
    }
    tracing::info!(%session_id, "session ended by its creator");
    state.announce_end(session_id, EndReason::EndedByCreator).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct JoinSession {
    display_name: String,
    avatar_color: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Joined {
    user_id: UserId,
    websocket_token: String,
    /// The socket for this session, `/ws/{session_id}`: append `?token=<websocket_token>`.
    /// The session in the path lets a load balancer keep a session's sockets on one
    /// instance.
    websocket_url: String,
    /// This participant's private URL for tracker apps (OwnTracks, Traccar Client, OsmAnd,
    /// GPSLogger): positions posted there are this participant's. Good as long as the
    /// participant is; keep it secret.
    tracker_url: String,
}

#[utoipa::path(
    post,
    path = "/api/sessions/{session_id}/join",
    tag = "sessions",
    params(("session_id" = String, Path, description = "the session (UUID)")),
    request_body = JoinSession,
    responses((status = 201, description = "joined", body = Joined), crate::error::ApiErrors)
)]
async fn join(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(session_id): ApiPath<SessionId>,
    ApiJson(body): ApiJson<JoinSession>,
) -> Result<impl IntoResponse, ApiError> {
    state.limits.allow_rest(RestAction::Join, ip).map_err(ApiError::rate_limited)?;
    let display_name = DisplayName::parse(&body.display_name)?.into_inner();
    let avatar_color = AvatarColor::parse(body.avatar_color.as_deref())?.into_inner();
    let new = NewParticipant {
        session_id,
        user_id: UserId::new_random(),
        display_name,
        avatar_color,
        joined_at: state.clock.now(),
    };
    let (participant, expires_at) = match state
        .store
        .join(
            &new,
            state.config.max_participants_per_session,
            state.config.max_departed_participants_per_session,
        )
        .await?
    {
        JoinOutcome::Joined { participant, expires_at } => (participant, expires_at),
        JoinOutcome::NoSuchSession => return Err(ApiError::not_found("session")),
        JoinOutcome::SessionEnded => return Err(ApiError::session_ended()),
        JoinOutcome::SessionFull => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "session_full",
                format!("the session already has {} participants", state.config.max_participants_per_session),
            ));
        }
    };
    tracing::info!(%session_id, user_id = %participant.user_id, "participant joined");
    state.announce_join(&participant);
    let websocket_token =
        state.issue_token(session_id, participant.user_id.0, Role::Participant, 0, expires_at).0;
    Ok((
        StatusCode::CREATED,
        Json(Joined {
            user_id: participant.user_id,
            websocket_token,
            websocket_url: websocket_url(&state.public_url, session_id),
            tracker_url: state.tracker_url(session_id, participant.user_id, 0),
        }),
    ))
}

/// `PUBLIC_URL` with its scheme swapped for ws/wss, plus `/ws/{session_id}`: the session in
/// the path lets a load balancer send a session's sockets to one instance, and a client
/// that appends `?token=` (seed 000) keeps working.
fn websocket_url(public_url: &str, session_id: SessionId) -> String {
    let rest = public_url
        .strip_prefix("https://")
        .map(|r| ("wss://", r))
        .or_else(|| public_url.strip_prefix("http://").map(|r| ("ws://", r)));
    match rest {
        Some((scheme, host)) => format!("{scheme}{host}/ws/{session_id}"),
        None => format!("{public_url}/ws/{session_id}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn websocket_url_follows_the_public_scheme_and_names_the_session() {
        let session = crate::domain::SessionId::new_random();
        assert_eq!(
            super::websocket_url("http://localhost:8080", session),
            format!("ws://localhost:8080/ws/{session}")
        );
        assert_eq!(
            super::websocket_url("https://convoy.example/app", session),
            format!("wss://convoy.example/app/ws/{session}")
        );
    }
}
