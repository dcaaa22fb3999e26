//! Who a token stands for: issuing, checking (one check for sockets and REST: a live
//! session, an active participant, a token of a generation still good) and refreshing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AppState;
use crate::auth::{Claims, Role, TrackerClaims};
use crate::domain::{Participant, Session, SessionId, UserId};
use crate::error::ApiError;
use crate::protocol::tracker::TRACKER_PATH;

/// 401 `token_revoked`.
fn revoked(message: &'static str) -> ApiError {
    ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "token_revoked", message)
}

/// 401 `token_superseded`: the holder is still in, with a newer token.
fn superseded() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "token_superseded",
        "this token was replaced by a refreshed one: use the newest",
    )
}

impl AppState {
    /// Issues a token for the session's `subject` (of token generation `generation`),
    /// expiring after TOKEN_TTL_SECONDS or with the session, whichever comes first.
    pub fn issue_token(
        &self,
        session_id: SessionId,
        subject: Uuid,
        role: Role,
        generation: i64,
        session_expires_at: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let ttl = chrono::Duration::seconds(i64::try_from(self.config.token_ttl_seconds).unwrap_or(i64::MAX));
        let expires_at = self
            .clock
            .now()
            .checked_add_signed(ttl)
            .map_or(session_expires_at, |t| t.min(session_expires_at));
        (self.tokens.issue(session_id, subject, role, generation, expires_at), expires_at)
    }

    /// The live session and the active participant a participant's token stands for, if
    /// the token's generation is still good (REST routes; sockets use `active_member`, the
    /// same check on shared reads).
    pub async fn active_participant(&self, claims: &Claims) -> Result<(Session, Participant), ApiError> {
        let session = self.live_session(claims.session_id()).await?;
        let participant = self.store.participant(session.id, claims.user_id()).await?;
        self.admitted(Some(session), participant, Some(claims))
    }

    /// `active_participant` for a socket's admission: the session and its participants
    /// read through `SharedReads`, so a group connecting together costs two queries, not
    /// two each.
    pub async fn active_member(&self, claims: &Claims) -> Result<(Session, Participant), ApiError> {
        self.member(claims.session_id(), claims.user_id(), Some(claims)).await
    }

    /// The live session and active participant a tracker token stands for (read as
    /// `active_member` does): a tracker URL is good as long as its participant is and it is
    /// their current one, whatever their tokens' generation.
    /// Returns the participant and everyone listed in the session (the same read).
    pub async fn tracker_member(
        &self,
        claims: TrackerClaims,
    ) -> Result<(Participant, Arc<Vec<Participant>>), ApiError> {
        let (_, participant, everyone) = self.member_of(claims.session_id, claims.user_id, None).await?;
        if i64::from(claims.generation) != participant.tracker_generation {
            return Err(revoked("this tracker address was replaced by a new one"));
        }
        Ok((participant, everyone))
    }

    /// A new tracker URL for an active participant; the ones before it stop working at once.
    pub async fn replace_tracker_url(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<String, ApiError> {
        let generation = self
            .store
            .replace_tracker(session_id, user_id)
            .await?
            .ok_or_else(|| revoked("this token's holder has left the session"))?;
        Ok(self.tracker_url(session_id, user_id, generation))
    }

    /// A participant's tracker URL of `generation`: `{PUBLIC_URL}/t/{token}`.
    pub fn tracker_url(&self, session_id: SessionId, user_id: UserId, generation: i64) -> String {
        let generation = u32::try_from(generation).unwrap_or(u32::MAX);
        format!(
            "{}{TRACKER_PATH}/{}",
            self.public_url,
            self.tokens.tracker_token(session_id, user_id, generation)
        )
    }

    /// Both reads through `SharedReads`, then `admitted`.
    async fn member(
        &self,
        session_id: SessionId,
        user_id: UserId,
        claims: Option<&Claims>,
    ) -> Result<(Session, Participant), ApiError> {
        let (session, participant, _) = self.member_of(session_id, user_id, claims).await?;
        Ok((session, participant))
    }

    /// `member`, with the session's participants it read.
    async fn member_of(
        &self,
        session_id: SessionId,
        user_id: UserId,
        claims: Option<&Claims>,
    ) -> Result<(Session, Participant, Arc<Vec<Participant>>), ApiError> {
        let (session, participants) =
            tokio::try_join!(self.reads.session(session_id), self.reads.participants(session_id))?;
        let participant = participants.iter().find(|p| p.user_id == user_id).cloned();
        let (session, participant) = self.admitted((*session).clone(), participant, claims)?;
        Ok((session, participant, participants))
    }

    /// The one check behind them: a live session, an active participant, a token of a
    /// generation still good (if the caller has a token with a generation).
    fn admitted(
        &self,
        session: Option<Session>,
        participant: Option<Participant>,
        claims: Option<&Claims>,
    ) -> Result<(Session, Participant), ApiError> {
        let session = session.filter(|s| s.is_live(self.clock.now())).ok_or_else(ApiError::session_ended)?;
        let participant = participant
            .filter(|p| p.is_active)
            .ok_or_else(|| revoked("this token's holder has left the session"))?;
        if let Some(claims) = claims {
            self.check_generation(&participant, claims)?;
        }
        Ok((session, participant))
    }

    /// The session, if it exists and is live; 410 otherwise.
    pub async fn live_session(&self, session_id: SessionId) -> Result<Session, ApiError> {
        let session = self.store.session(session_id).await?.ok_or_else(ApiError::session_ended)?;
        if !session.is_live(self.clock.now()) {
            return Err(ApiError::session_ended());
        }
        Ok(session)
    }

    /// A participant's token is good if it is of their current generation, or of the one
    /// before within TOKEN_ROTATION_GRACE_SECONDS of the refresh that replaced it.
    pub fn check_generation(&self, participant: &Participant, claims: &Claims) -> Result<(), ApiError> {
        if claims.r#gen == participant.token_generation || self.in_rotation_grace(participant, claims) {
            Ok(())
        } else {
            Err(superseded())
        }
    }

    fn in_rotation_grace(&self, participant: &Participant, claims: &Claims) -> bool {
        let grace = chrono::Duration::seconds(self.config.token_rotation_grace_seconds.min(3600) as i64);
        claims.r#gen + 1 == participant.token_generation
            && participant.token_rotated_at.is_some_and(|at| self.clock.now() < at + grace)
    }

    /// A fresh token with the same claims, for a session that is still live and a holder
    /// who still belongs to it (REST and socket refreshes alike). A participant's refresh
    /// moves their tokens to a new generation: the token refreshed no longer opens sockets
    /// once TOKEN_ROTATION_GRACE_SECONDS have passed. Refreshing that token again within
    /// them returns a token of the current generation (its answer may have been lost).
    pub async fn refresh_token(&self, claims: &Claims) -> Result<(String, DateTime<Utc>), ApiError> {
        let (session_id, subject, role) = (claims.session_id(), claims.sub, claims.role);
        match role {
            Role::Participant => {
                let (session, participant) = self.active_participant(claims).await?;
                let generation = if claims.r#gen == participant.token_generation {
                    self.store
                        .rotate_tokens(session_id, claims.user_id(), claims.r#gen, self.clock.now())
                        .await?
                        .ok_or_else(superseded)?
                } else {
                    participant.token_generation // within the grace period
                };
                Ok(self.issue_token(session_id, subject, role, generation, session.expires_at))
            }
            Role::Creator => {
                let session = self.live_session(session_id).await?;
                if self.store.session_creator(session_id).await? != Some(subject) {
                    return Err(revoked("this token's holder has left the session"));
                }
                Ok(self.issue_token(session_id, subject, role, 0, session.expires_at))
            }
        }
    }
}
