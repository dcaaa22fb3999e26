//! The durable state: sessions, participants and chat messages. `Store` is the one seam between the rest
//! of convoy and SQL; the backend is chosen by the scheme of DATABASE_URL and nothing
//! outside this module knows which one it is.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ChatMessage, ChatRoom, MeetingPoint, MeetingPointBy, Participant, Session, SessionId, ShareSettings,
    TrailPoint, UserId,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Self::Unavailable(err.to_string()),
            // Connection exceptions (08) and operator intervention (57): a shutdown, or a
            // statement cancelled by statement_timeout.
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57")) =>
            {
                Self::Unavailable(err.to_string())
            }
            other => Self::Other(other.to_string()),
        }
    }
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub name: Option<String>,
    pub creator_id: uuid::Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub meeting_point_by: MeetingPointBy,
}

/// A participant to add.
#[derive(Debug, Clone)]
pub struct NewParticipant {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub display_name: String,
    pub avatar_color: String,
    pub joined_at: DateTime<Utc>,
}

impl NewParticipant {
    /// The participant this join makes: active, at token generation 0.
    pub fn joined(&self) -> Participant {
        Participant {
            session_id: self.session_id,
            user_id: self.user_id,
            display_name: self.display_name.clone(),
            avatar_color: self.avatar_color.clone(),
            joined_at: self.joined_at,
            last_seen: self.joined_at,
            is_active: true,
            token_generation: 0,
            token_rotated_at: None,
            share: ShareSettings::default(),
            tracker_generation: 0,
            arrived: false,
        }
    }
}

/// A meeting point as the stores keep it: JSON text.
fn meeting_point_json(point: &MeetingPoint) -> Result<String, StoreError> {
    serde_json::to_string(point).map_err(|e| StoreError::Other(format!("meeting point: {e}")))
}

/// The stored JSON text back.
fn meeting_point_from(text: Option<String>) -> Result<Option<Arc<MeetingPoint>>, StoreError> {
    text.map(|text| {
        serde_json::from_str(&text).map_err(|e| StoreError::Other(format!("bad meeting_point: {e}")))
    })
    .transpose()
}

#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// Joined a session that ends at `expires_at` (the token's expiry).
    Joined {
        participant: Participant,
        expires_at: DateTime<Utc>,
    },
    NoSuchSession,
    SessionEnded,
    SessionFull,
}

/// A chat message to store; the store assigns its id.
#[derive(Debug, Clone)]
pub struct NewChatMessage {
    pub room: ChatRoom,
    pub user_id: UserId,
    pub display_name: String,
    pub avatar_color: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

impl NewChatMessage {
    fn stored(&self, id: i64) -> ChatMessage {
        ChatMessage {
            id,
            room: self.room,
            user_id: self.user_id,
            display_name: self.display_name.clone(),
            avatar_color: self.avatar_color.clone(),
            content: self.content.clone(),
            created_at: self.created_at,
        }
    }
}

/// What `departures_since` found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Departures {
    pub ended: Vec<SessionId>,
    pub left: Vec<(SessionId, UserId)>,
}

/// Activity seen since the last flush, newest time per key.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ActivityBatch {
    pub sessions: Vec<(SessionId, DateTime<Utc>)>,
    pub participants: Vec<(SessionId, UserId, DateTime<Utc>)>,
}

impl ActivityBatch {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.participants.is_empty()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and health output, e.g. "sqlite".
    fn kind(&self) -> &'static str;

    /// Applies the migrations of this backend.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn create_session(&self, new: &NewSession) -> Result<(), StoreError>;

    /// The session with its active participant count, if it exists.
    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError>;

    /// The creator id of a session, for authorizing creator actions.
    async fn session_creator(&self, id: SessionId) -> Result<Option<uuid::Uuid>, StoreError>;

    /// Adds a participant if the session is live and has room, atomically: concurrent
    /// joins can never push a session past `max_participants`. Counts as session activity.
    /// Of those who left, the `max_departed` who left last are kept; older ones are deleted.
    async fn join(
        &self,
        new: &NewParticipant,
        max_participants: u32,
        max_departed: u32,
    ) -> Result<JoinOutcome, StoreError>;

    /// Every participant who ever joined the session, active or not, oldest first.
    async fn participants(&self, session_id: SessionId) -> Result<Vec<Participant>, StoreError>;

    async fn participant(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<Option<Participant>, StoreError>;

    /// Marks a participant inactive. Returns whether they were active.
    async fn leave(
        &self,
        session_id: SessionId,
        user_id: UserId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Ends a live session and marks its participants inactive. Returns whether this call
    /// ended it (false if it had already ended).
    async fn end_session(&self, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Writes batched activity: last_seen / last_activity only ever move forward.
    async fn record_activity(&self, batch: &ActivityBatch) -> Result<(), StoreError>;

    /// Live sessions with no recorded activity since `idle_since`: candidates for idle expiry.
    async fn idle_sessions(&self, idle_since: DateTime<Utc>) -> Result<Vec<SessionId>, StoreError>;

    /// Ends every live session that expired at `now` or saw no activity since `idle_since`,
    /// returning the ids this call ended. Safe to run on several instances at once: each
    /// session is returned to exactly one caller.
    async fn expire_sessions(
        &self,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
    ) -> Result<Vec<SessionId>, StoreError>;

    /// Stores a chat message durably (committed before this returns) and returns it with
    /// its id. Ids grow: a later message has a larger id. The room keeps its newest `keep`
    /// messages; older ones are deleted in the same transaction.
    async fn add_message(&self, new: &NewChatMessage, keep: u32) -> Result<ChatMessage, StoreError>;

    /// Up to `limit` messages of the room with an id below `before` (the newest when
    /// None), oldest first.
    async fn messages(
        &self,
        room: ChatRoom,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError>;

    /// Deletes chat messages written before `before`; returns how many.
    async fn delete_messages_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Deletes sessions that ended before `before`, with their participants and chat;
    /// returns how many sessions.
    async fn delete_sessions_ended_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Sessions that ended, and participants who left, after `since`: every instance
    /// re-checks these, so a removal closes sockets even when the bus could not tell them.
    async fn departures_since(&self, since: DateTime<Utc>) -> Result<Departures, StoreError>;

    /// Moves an active participant's tokens on from generation `current` (a refresh, at
    /// `at`): returns the new generation, or None if they left or `current` is not theirs
    /// (an older token, or a concurrent refresh won).
    async fn rotate_tokens(
        &self,
        session_id: SessionId,
        user_id: UserId,
        current: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError>;

    /// Sets (or, with None, clears) a live session's meeting point, and marks every
    /// participant as not arrived: whether the session was live.
    async fn set_meeting_point(
        &self,
        id: SessionId,
        point: Option<&MeetingPoint>,
    ) -> Result<bool, StoreError>;

    /// The meeting points of these sessions (those that have one and are live).
    async fn meeting_points(
        &self,
        ids: &[SessionId],
    ) -> Result<Vec<(SessionId, Arc<MeetingPoint>)>, StoreError>;

    /// Marks an active participant as arrived or not at the point set at `point_set_at`, if
    /// they were not already and that point is still the session's: whether this call
    /// changed it (so one caller, on one instance, announces each change).
    async fn set_arrived(
        &self,
        session_id: SessionId,
        user_id: UserId,
        arrived: bool,
        point_set_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Adds points to participants' trails (of live sessions).
    async fn add_trail_points(&self, points: &[(SessionId, UserId, TrailPoint)]) -> Result<(), StoreError>;

    /// How many points a participant's trail holds.
    async fn trail_len(&self, session_id: SessionId, user_id: UserId) -> Result<u32, StoreError>;

    /// Drops every other point of a participant's trail older than `before` (the oldest
    /// half of its detail): how many went.
    async fn thin_trail(
        &self,
        session_id: SessionId,
        user_id: UserId,
        before: DateTime<Utc>,
    ) -> Result<u32, StoreError>;

    /// A session's trails from `since` on, by participant, oldest point first.
    async fn trails(
        &self,
        session_id: SessionId,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(UserId, TrailPoint)>, StoreError>;

    /// Keeps a participant's latest share settings (what their tracker apps' positions
    /// follow, whichever socket set them): the fields given, the others as they were.
    async fn set_share_settings(
        &self,
        session_id: SessionId,
        user_id: UserId,
        approximate: Option<bool>,
        paused: Option<bool>,
    ) -> Result<(), StoreError>;

    /// Moves an active participant's tracker URL on to a new generation (the older URLs
    /// stop working): returns the new generation, or None if they are not active.
    async fn replace_tracker(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<Option<i64>, StoreError>;

    /// The installation's token signing secret: `fresh` is kept if none is kept yet, and
    /// the kept one is returned, so restarts and every instance on this data share it.
    async fn signing_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Live sessions and their active participants, for the gauges in `/metrics`.
    async fn live_counts(&self) -> Result<(i64, i64), StoreError>;

    /// Closes the connection pool.
    async fn close(&self);
}

/// Opens the store DATABASE_URL names, by its scheme. `statement_timeout` bounds every
/// PostgreSQL statement (SQLite has its busy timeout).
pub async fn connect(
    database_url: &str,
    max_connections: u32,
    statement_timeout: std::time::Duration,
) -> anyhow::Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(database_url, max_connections).await?))
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(database_url, max_connections, statement_timeout).await?))
    } else {
        anyhow::bail!("DATABASE_URL must start with sqlite: or postgres://")
    }
}
