//! `AppState`: the shared handles (store, bus, hub, tokens, activity) and the operations
//! that touch several of them, so HTTP handlers, sockets and the sweeper share one path.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::activity::Activity;
use crate::admission::Admission;
use crate::auth::{Claims, Role, Tokens};
use crate::bus::Bus;
use crate::config::Config;
use crate::domain::{self, Location, Participant, Session, SessionId, UserId};
use crate::error::ApiError;
use crate::hub::Hub;
use crate::limits::{Limits, MessageKind, Refused};
use crate::message::{Channel, Envelope, HubMessage, close_code};
use crate::metrics::RealtimeMetrics;
use crate::presence::{PresenceMeta, presence_map};
use crate::protocol::native::{LocationBroadcast, ServerMessage};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    /// PUBLIC_URL, or http://localhost:PORT with the bound port; no trailing slash.
    pub public_url: String,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Arc<Hub>,
    pub tokens: Tokens,
    pub activity: Activity,
    /// Cancelled when the server begins shutting down.
    pub shutdown: CancellationToken,
    /// Every socket task, so shutdown can wait for them.
    pub sockets: TaskTracker,
    pub instance_id: Uuid,
    pub started_at: Instant,
    pub metrics: Arc<RealtimeMetrics>,
    pub limits: Limits,
    /// Snapshots rebuilt at once after a bus outage (each reads the store twice).
    pub resync_permits: tokio::sync::Semaphore,
    /// Sockets opened without a token and not yet authenticated: a quarter of
    /// MAX_CONNECTIONS at most, so anonymous handshakes cannot take every place.
    pub pending_auth: Arc<tokio::sync::Semaphore>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    draining: AtomicBool,
    /// The socket caps: per instance, per address, per participant.
    pub admission: Arc<Admission>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

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

/// Why a session ended, as `session_ended.reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    EndedByCreator,
    Expired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndedByCreator => "ended_by_creator",
            Self::Expired => "expired",
        }
    }
}

impl AppState {
    pub fn new(
        config: Config,
        public_url: String,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        tokens: Tokens,
        instance_id: Uuid,
        shutdown: CancellationToken,
    ) -> Self {
        let prometheus = crate::metrics::install();
        let limits = Limits::new(&config);
        let metrics = Arc::new(RealtimeMetrics::new());
        let hub = Arc::new(Hub::new(
            bus.clone(),
            config.ws_queue_capacity,
            config.ws_queue_max_bytes,
            metrics.clone(),
        ));
        let pending_auth = Arc::new(tokio::sync::Semaphore::new((config.max_connections / 4).max(1)));
        let admission = Admission::new(&config);
        Self(Arc::new(Inner {
            config,
            public_url,
            store,
            bus,
            hub,
            tokens,
            activity: Activity::new(),
            shutdown,
            sockets: TaskTracker::new(),
            instance_id,
            started_at: Instant::now(),
            metrics,
            prometheus,
            limits,
            resync_permits: tokio::sync::Semaphore::new(16),
            pending_auth,
            draining: AtomicBool::new(false),
            admission,
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

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
        let expires_at =
            domain::now().checked_add_signed(ttl).map_or(session_expires_at, |t| t.min(session_expires_at));
        (self.tokens.issue(session_id, subject, role, generation, expires_at), expires_at)
    }

    /// The live session and the active participant a participant's token stands for, if
    /// the token's generation is still good (one route to this check: sockets, REST).
    pub async fn active_participant(&self, claims: &Claims) -> Result<(Session, Participant), ApiError> {
        let session = self.store.session(claims.session_id()).await?.ok_or_else(ApiError::session_ended)?;
        if !session.is_live(domain::now()) {
            return Err(ApiError::session_ended());
        }
        let participant = self
            .store
            .participant(session.id, claims.user_id())
            .await?
            .filter(|p| p.is_active)
            .ok_or_else(|| revoked("this token's holder has left the session"))?;
        self.check_generation(&participant, claims)?;
        Ok((session, participant))
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
            && participant.token_rotated_at.is_some_and(|at| domain::now() < at + grace)
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
                        .rotate_tokens(session_id, claims.user_id(), claims.r#gen, domain::now())
                        .await?
                        .ok_or_else(superseded)?
                } else {
                    participant.token_generation // within the grace period
                };
                Ok(self.issue_token(session_id, subject, role, generation, session.expires_at))
            }
            Role::Creator => {
                let session = self.store.session(session_id).await?.ok_or_else(ApiError::session_ended)?;
                if !session.is_live(domain::now()) {
                    return Err(ApiError::session_ended());
                }
                if self.store.session_creator(session_id).await? != Some(subject) {
                    return Err(revoked("this token's holder has left the session"));
                }
                Ok(self.issue_token(session_id, subject, role, 0, session.expires_at))
            }
        }
    }

    /// Refuse new sockets and tell the open ones to close with 1001.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
    }

    fn publish(&self, session_id: SessionId, message: HubMessage) {
        self.hub.publish(Envelope { channel: Channel::Session(session_id), message });
    }

    /// Whether `user_id` may send a message of `kind` and `bytes` to the channel's other
    /// connections on this instance (or, for a direct message, to one user).
    pub fn allow_to_others(
        &self,
        channel: Channel,
        user_id: UserId,
        kind: MessageKind,
        bytes: usize,
    ) -> Result<(), Refused> {
        let recipients = match kind {
            MessageKind::Direct => 1,
            _ => self.hub.subscriber_count(channel).saturating_sub(1),
        };
        self.limits.allow_to_others(user_id, kind, bytes, recipients)
    }

    /// Announces a new participant to everyone connected to the session.
    pub fn announce_join(&self, participant: &Participant) {
        let frame = ServerMessage::ParticipantJoined {
            user_id: participant.user_id,
            display_name: &participant.display_name,
            avatar_color: &participant.avatar_color,
        }
        .to_frame();
        self.publish(participant.session_id, HubMessage::Event { frame });
    }

    /// Marks a participant inactive, tells the others, closes their sockets and forgets
    /// their location. Returns whether they were active.
    pub async fn remove_participant(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<bool, StoreError> {
        let was_active = self.store.leave(session_id, user_id, domain::now()).await?;
        if was_active {
            let frame = ServerMessage::ParticipantLeft { user_id }.to_frame();
            self.publish(session_id, HubMessage::Event { frame });
            self.publish(
                session_id,
                HubMessage::Disconnect {
                    user_id,
                    code: close_code::NORMAL,
                    reason: Utf8Bytes::from_static("left the session"),
                },
            );
            if let Err(err) = self.bus.remove_location(session_id, user_id).await {
                tracing::warn!(error = %err, "could not forget a departed participant's location");
            }
        }
        Ok(was_active)
    }

    /// Tells everyone connected that the session is over, closes their sockets and
    /// forgets its locations. The caller has already ended it in the store.
    pub async fn announce_end(&self, session_id: SessionId, reason: EndReason) {
        let frame = ServerMessage::SessionEnded { reason: reason.as_str() }.to_frame();
        self.publish(session_id, HubMessage::End { frame });
        if let Err(err) = self.bus.clear_session(session_id).await {
            tracing::warn!(error = %err, "could not clear an ended session's locations");
        }
    }

    /// Sends a direct message to every connection of `to`, on any instance, if `to` is an
    /// active participant of the session. Returns whether they are.
    pub async fn send_direct(
        &self,
        session_id: SessionId,
        from: UserId,
        to: UserId,
        payload: &serde_json::value::RawValue,
    ) -> Result<bool, StoreError> {
        if !self.store.participant(session_id, to).await?.is_some_and(|p| p.is_active) {
            return Ok(false);
        }
        let frame = ServerMessage::DirectMessage { from_user: from, payload }.to_frame();
        self.publish(session_id, HubMessage::Direct { to, frame });
        Ok(true)
    }

    /// A connection is now present: record it and tell the session (the connection itself
    /// included, as Phoenix does).
    pub fn presence_join(&self, session_id: SessionId, meta: &PresenceMeta) {
        self.bus.presence_join(Channel::Session(session_id), meta);
        self.announce_presence(session_id, std::slice::from_ref(meta), &[]);
    }

    /// A connection closed: forget it and tell the session.
    pub fn presence_leave(&self, session_id: SessionId, meta: &PresenceMeta) {
        self.bus.presence_leave(Channel::Session(session_id), meta);
        self.announce_presence(session_id, &[], std::slice::from_ref(meta));
    }

    /// A connection's meta changed (paused or resumed): the new one joins, the old one
    /// leaves, in one diff, as Phoenix Presence sends an update.
    pub fn presence_update(&self, session_id: SessionId, old: &PresenceMeta, new: &PresenceMeta) {
        self.bus.presence_join(Channel::Session(session_id), new);
        self.bus.presence_leave(Channel::Session(session_id), old);
        self.announce_presence(session_id, std::slice::from_ref(new), std::slice::from_ref(old));
    }

    /// Publishes a `presence_diff`.
    pub fn announce_presence(&self, session_id: SessionId, joins: &[PresenceMeta], leaves: &[PresenceMeta]) {
        let (joins, leaves) = (presence_map(joins), presence_map(leaves));
        let frame = ServerMessage::PresenceDiff { joins: &joins, leaves: &leaves }.to_frame();
        self.publish(session_id, HubMessage::Presence { frame });
    }

    /// Publishes on a topic of the session; `topic` is the full name the message carries.
    pub fn publish_topic(
        &self,
        session_id: SessionId,
        from: UserId,
        target: &crate::domain::topic::Topic,
        topic: &str,
        payload: &serde_json::value::RawValue,
    ) {
        use crate::domain::topic::Topic;
        let frame = ServerMessage::Broadcast { topic, from_user: from, payload }.to_frame();
        let message = match target {
            Topic::Session => HubMessage::Event { frame },
            Topic::User => HubMessage::Direct { to: from, frame },
            Topic::Named(name) => HubMessage::Topic { topic: name.clone(), frame },
        };
        self.publish(session_id, message);
    }

    /// Nothing here waits on SQL.
    /// Forgets a participant's live position everywhere (they paused sharing): the cache
    /// snapshots read, and every connected client's view (`location_cleared`).
    pub async fn clear_location(&self, session_id: SessionId, user_id: UserId) {
        if let Err(err) = self.bus.remove_location(session_id, user_id).await {
            tracing::warn!(error = %err, "could not forget a paused participant's location");
        }
        let frame = ServerMessage::LocationCleared { user_id }.to_frame();
        self.publish(session_id, HubMessage::Event { frame });
    }

    /// The hot path: remember the location, hand it to every subscriber, note activity.
    pub async fn share_location(&self, session_id: SessionId, user_id: UserId, location: Location) {
        // Cached for what is left of its TTL: a point taken 20 s ago is fresh for 10 s more.
        let age = (domain::now() - location.timestamp).to_std().unwrap_or_default();
        let ttl = self.config.location_ttl().saturating_sub(age).max(Duration::from_secs(1));
        if let Err(err) = self.bus.put_location(session_id, user_id, &location, ttl).await {
            // Live delivery matters more than the cache that late joiners read.
            tracing::warn!(error = %err, "could not cache a location; broadcasting anyway");
        }
        let frame = ServerMessage::LocationBroadcast(LocationBroadcast { user_id, location }).to_frame();
        self.publish(session_id, HubMessage::Location { from: user_id, frame });
        self.activity.touch(session_id, user_id, domain::now());
    }
}
