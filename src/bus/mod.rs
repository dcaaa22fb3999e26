//! The bus: what instances share while it is in flight or short-lived, in three roles.
//! `Messaging` carries hub messages between instances (the hub holds only this role);
//! `LocationCache` keeps each participant's latest location for LOCATION_TTL_SECONDS;
//! `PresenceRegistry` knows who is connected on every instance. `Bus` is all three plus a
//! health check. The in-process implementation serves a single instance, Redis (one server,
//! or a Redis Cluster with sharded pub/sub) several; the rest of convoy does not know which one it talks to, and both pass the same
//! conformance suite (tests/api/bus_conformance.rs).

mod local;
mod redis;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;
use crate::domain::{Location, RoomId, SessionId, UserId};
use crate::message::{Channel, Envelope};
use crate::presence::PresenceMeta;

pub use local::LocalBus;
pub use redis::RedisBus;

/// What the bus hands to this instance's hub.
#[derive(Debug)]
pub enum BusEvent {
    /// A message from another instance, in the order the bus received them.
    Deliver(Envelope),
    /// This instance's bus connection was down and messages may be lost: every local
    /// connection must rebuild its snapshot.
    ResyncAll,
}

pub type Inbound = mpsc::UnboundedReceiver<BusEvent>;

/// How a bus is set up. The in-process bus reads only the clock.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// REDIS_URL or REDIS_CLUSTER_URLS: Redis when set, the in-process bus otherwise.
    pub redis: Option<RedisTarget>,
    pub instance_id: Uuid,
    /// The expiry of the per-session keys, so an abandoned session's keys go away by themselves.
    pub session_key_ttl_secs: u64,
    /// How long the writer holds a pipeline after its first command, to gather more.
    pub batch_delay: Duration,
    /// REDIS_QUEUE_MAX_BYTES: what may wait for Redis before messages are dropped.
    pub queue_max_bytes: usize,
    /// PRESENCE_INSTANCE_TIMEOUT_SECONDS: an instance silent this long is taken for gone.
    pub instance_timeout: Duration,
    /// LOCATION_TTL_SECONDS: how long a position is cached.
    pub location_ttl: Duration,
    /// The server's clock: cached locations expire by it (on Redis too: each value carries
    /// its expiry, stamped by the writing instance's clock and checked by the reader's, so
    /// instances' clocks must agree to well within LOCATION_TTL_SECONDS) and activity is
    /// stamped with it.
    pub clock: Clock,
}

/// Where the Redis bus connects.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// REDIS_URL: one Redis server.
    Single(String),
    /// REDIS_CLUSTER_URLS: a Redis Cluster's seed nodes.
    Cluster(Vec<String>),
}

/// The in-process bus, or Redis when `redis` is set. The receiver carries messages from
/// other instances (none for the in-process bus).
pub async fn connect(
    settings: BusSettings,
    shutdown: CancellationToken,
) -> Result<(Arc<dyn Bus>, Option<Inbound>), BusError> {
    match &settings.redis {
        None => Ok((Arc::new(LocalBus::new(settings.clock)), None)),
        Some(target) => {
            let (bus, inbound) = RedisBus::connect(target, &settings, shutdown).await?;
            Ok((Arc::new(bus), Some(inbound)))
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bus unavailable: {0}")]
pub struct BusError(pub String);

/// Carries hub messages between instances: what the hub uses.
#[async_trait]
pub trait Messaging: Send + Sync + 'static {
    /// Hands a message, already delivered to this instance's sockets, to the other
    /// instances. Never blocks: a bus that talks to a server queues the message.
    fn publish(&self, envelope: &Envelope);

    /// This instance now has a local subscriber on the channel: start receiving its
    /// messages from other instances. The future resolves once they are being received
    /// (or the bus is down), so a snapshot read after it misses nothing.
    fn subscribe(&self, channel: Channel) -> BoxFuture<'static, ()>;

    /// This instance's last local subscriber on the channel left.
    fn unsubscribe(&self, channel: Channel);

    /// Sends what is queued for other instances and waits until it was sent (or `within`
    /// passed): the last step of a graceful shutdown, so goodbyes are not lost.
    async fn flush(&self, within: Duration);
}

/// Each participant's latest location for LOCATION_TTL_SECONDS, and the activity that
/// came with it: what snapshots, the location path and the sweeper use.
#[async_trait]
pub trait LocationCache: Send + Sync + 'static {
    /// Stores a participant's latest location; it disappears after `ttl`.
    async fn put_location(
        &self,
        session_id: SessionId,
        user_id: UserId,
        location: &Location,
        ttl: Duration,
    ) -> Result<(), BusError>;

    /// The unexpired locations of a session.
    async fn locations(&self, session_id: SessionId) -> Result<Vec<(UserId, Location)>, BusError>;

    /// Forgets one participant's location (they left).
    async fn remove_location(&self, session_id: SessionId, user_id: UserId) -> Result<(), BusError>;

    /// Forgets everything about a session (it ended).
    async fn clear_session(&self, session_id: SessionId) -> Result<(), BusError>;

    /// Drops expired entries that nobody read; returns how many. Redis skips expired
    /// values when read and drops a session's hash with it: nothing to do there.
    async fn purge_expired(&self) -> usize;

    /// The newest activity any instance saw in these sessions, where the bus knows it.
    /// The sweeper reads it before ending idle sessions, so activity another instance has
    /// not written to the store yet still counts.
    async fn last_activity(
        &self,
        sessions: &[SessionId],
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, BusError>;
}

/// Who is connected where, on every instance: what presence and local rooms use.
#[async_trait]
pub trait PresenceRegistry: Send + Sync + 'static {
    /// A connection on this instance is now present on the channel (its session, or a
    /// room). Never blocks.
    fn presence_join(&self, channel: Channel, meta: &PresenceMeta);

    /// That connection closed or left the channel. Never blocks.
    fn presence_leave(&self, channel: Channel, meta: &PresenceMeta);

    /// Every connection present on the channel on every live instance: the best view
    /// available (this instance's own when the others cannot be reached).
    async fn presence(&self, channel: Channel) -> Vec<PresenceMeta>;

    /// Counts one user's sockets in a local room across instances, atomically: adds
    /// `delta` and returns the new count, so exactly one socket sees it go 0 -> 1 (it
    /// announces `user_joined`) and one sees 1 -> 0 (`user_left`).
    async fn room_member(&self, room: RoomId, user_id: UserId, delta: i64) -> Result<i64, BusError>;

    /// Removes the presence of instances that stopped without saying goodbye and returns
    /// it, each entry to exactly one caller, which announces the leaves.
    async fn reap_presence(&self) -> Result<Vec<(Channel, PresenceMeta)>, BusError>;
}

/// A whole bus: every role, plus what health checks ask. `AppState` holds the whole; the
/// hub holds only `Messaging`.
#[async_trait]
pub trait Bus: Messaging + LocationCache + PresenceRegistry {
    /// A short name for health output, e.g. "in-process".
    fn kind(&self) -> &'static str;

    /// Whether the bus can currently reach what it depends on.
    async fn ping(&self) -> Result<(), BusError>;
}
