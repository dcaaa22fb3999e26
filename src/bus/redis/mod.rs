//! The scale-out bus: Redis. Three tasks per instance, never one per socket:
//!
//! - the writer drains a bounded queue of commands (PUBLISH and the location-cache writes)
//!   and sends each batch as one pipeline, so the hot path never waits on Redis: one PUBLISH
//!   per channel per batch, carrying the batch's messages for it in order; the location
//!   cache written at most once a second per session;
//! - the subscriber owns the instance's single pub/sub connection, subscribed to a
//!   session's channel only while this instance has a local socket there; it drops its own
//!   echoes, hands the rest to the hub in order, and reconnects and resubscribes by itself;
//! - the prober pings Redis and drives the circuit breaker: while it is open, publishing and
//!   caching cost nothing (they are skipped) and reads fail at once.
//!
//! A session's positions are published only while another instance holds sockets in it
//! (`listeners`: a roll call on the session's channel says who does).
//!
//! Nothing lost is lost silently: when the subscriber reconnects, every local socket
//! rebuilds its snapshot; when publishing resumes, a `Resync` goes to each session whose
//! messages were dropped, so the other instances' sockets rebuild theirs.
//!
//! Keys: `locations:{session_id}`, a hash of each participant's latest location with its
//! expiry (`[Unix ms, location]`, read on the server's clock; the key expires with the
//! session's other keys), `session_activity:{session_id}` (Unix ms of the newest update)
//! and pub/sub channels `channel:session:{session_id}`, as in seed 000 except that seed's
//! key per location (a SET per update cost Redis three times a hash field's CPU).
//!
//! Local rooms use `channel:room:{room_id}`.
//!
//! Presence: `presence:session:{id}` and `presence:room:{id}` are hashes of
//! `{instance_id}:{phx_ref}` -> meta JSON, written by the instance that holds the
//! connection; `presence_instances` is a sorted set of instance heartbeats (Redis's Unix ms,
//! every probe); `presence_channels:{instance_id}` lists the channels an instance has
//! entries in, so the entries of an instance whose heartbeat stopped can be found, removed
//! and announced as leaves (by whichever instance's HDEL removed each one). Readers ignore
//! entries of instances that stopped. `room_users:{room_id}` counts each user's sockets in
//! a room.

mod conn;
mod keys;
mod listeners;
mod prober;
mod recent;
mod sharded;
mod spaced;
mod subscriber;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::wire::{self, Roll};
use super::{Bus, BusError, BusSettings, Inbound, LocationCache, Messaging, PresenceRegistry, RedisTarget};
use crate::clock::Clock;
use crate::domain::{Location, RoomId, SessionId, UserId, from_millis};
use crate::message::{Channel, Envelope, HubMessage};
use crate::presence::{LocalPresence, PresenceMeta};

use conn::Conn;
use keys::*;
use listeners::Listeners;
use prober::*;
use recent::Recent;
use subscriber::*;
use writer::*;

/// Commands waiting for the writer; past this the breaker's view is that Redis cannot keep up.
const QUEUE_CAPACITY: usize = 65_536;
/// Most commands sent in one pipeline.
const BATCH: usize = 512;
/// How long any single Redis call may take before it counts as a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the pub/sub connection is pinged, and how long its answer may take.
const PUBSUB_KEEPALIVE: Duration = Duration::from_secs(5);
/// Least time between two Resyncs this instance sends to one session.
const RESYNC_SPACING: Duration = Duration::from_secs(10);
/// Expiry of the presence keys, renewed every PRESENCE_REFRESH while entries exist, so
/// keys of a cluster that stopped entirely go away by themselves.
const PRESENCE_TTL_SECS: i64 = 300;
const PRESENCE_REFRESH: Duration = Duration::from_secs(60);
/// A session's last-activity key is written at most this often.
const ACTIVITY_SPACING: Duration = Duration::from_secs(1);
const INSTANCES_KEY: &str = "presence_instances";

pub struct RedisBus {
    instance_id: Uuid,
    presence: Arc<LocalPresence>,
    conn: Conn,
    keys: Keys,
    queue: Queue,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    breaker: Arc<Breaker>,
    out: Outgoing,
    listeners: Arc<Listeners>,
    held_total: ::metrics::Counter,
    /// What this instance cached lately, which Redis may not have yet.
    recent: Recent,
    clock: Clock,
    /// LOCATION_TTL_SECONDS: a position held while its session was quiet is published
    /// later only while the location cache would still have it.
    location_ttl: Duration,
    /// An instance whose last heartbeat is older than this is presumed gone.
    instance_timeout: Duration,
}

impl RedisBus {
    /// Connects (failing fast if Redis cannot be reached at start) and starts the writer,
    /// subscriber and prober tasks, which stop when `shutdown` is cancelled. Messages from
    /// other instances arrive on the returned receiver, in order. The writer holds a
    /// pipeline of positions only `batch_delay` after its first command, to gather more.
    pub async fn connect(
        target: &RedisTarget,
        settings: &BusSettings,
        shutdown: CancellationToken,
    ) -> Result<(Self, Inbound), BusError> {
        let BusSettings {
            instance_id, session_key_ttl_secs, batch_delay, queue_max_bytes, location_ttl, ..
        } = *settings;
        let (mut conn, pubsub) = match target {
            RedisTarget::Single(url) => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| BusError(format!("bad REDIS_URL: {e}")))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CALL_TIMEOUT))
                    .set_response_timeout(Some(CALL_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let conn = tokio::time::timeout(
                    Duration::from_secs(5),
                    ConnectionManager::new_with_config(client.clone(), config),
                )
                .await
                .map_err(|_| BusError("connecting to redis timed out".into()))?
                .map_err(|e| BusError(format!("connecting to redis: {e}")))?;
                (Conn::Single(conn), PubSub::Single(client))
            }
            RedisTarget::Cluster(urls) => (Conn::cluster(urls).await?, PubSub::Sharded(urls.clone())),
        };
        let keys = Keys { tagged: conn.is_cluster() };

        // The first presence heartbeat, before any connection can be present.
        call(eval(&HEARTBEAT, INSTANCES_KEY).arg(instance_id.to_string()).query_async::<i64>(&mut conn))
            .await?;

        let breaker = Arc::new(Breaker::default());
        let (sender, commands) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Queue { sender, bytes: Arc::new(AtomicUsize::new(0)), max_bytes: queue_max_bytes };
        let (subscriptions, subscription_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let presence = Arc::new(LocalPresence::default());
        let writer = Writer {
            instance_id,
            keys,
            presence: presence.clone(),
            key_ttl_secs: session_key_ttl_secs,
            batch_delay,
            clock: settings.clock.clone(),
        };
        tokio::spawn(run_writer(conn.clone(), commands, queue.clone(), breaker.clone(), writer));
        let out = Outgoing {
            queue: queue.clone(),
            breaker: breaker.clone(),
            dropped_total: ::metrics::counter!("convoy_bus_dropped_total"),
        };
        let listeners = Arc::new(Listeners::default());
        let subscriber = Subscriber {
            keys,
            instance_id,
            inbound: inbound_tx.clone(),
            breaker: breaker.clone(),
            out: out.clone(),
            listeners: listeners.clone(),
            clock: settings.clock.clone(),
        };
        match pubsub {
            PubSub::Single(client) => {
                tokio::spawn(run_subscriber(client, subscription_rx, subscriber, shutdown.clone()));
            }
            PubSub::Sharded(urls) => {
                tokio::spawn(sharded::run_sharded_subscriber(
                    urls,
                    subscription_rx,
                    subscriber,
                    shutdown.clone(),
                ));
            }
        }
        tokio::spawn(run_prober(
            conn.clone(),
            breaker.clone(),
            queue.clone(),
            Instance { instance_id, presence: presence.clone(), listeners: listeners.clone() },
            inbound_tx,
            shutdown,
        ));
        let (clock, instance_timeout) = (settings.clock.clone(), settings.instance_timeout);
        let bus = Self {
            instance_id,
            presence,
            conn,
            keys,
            queue,
            subscriptions,
            breaker,
            out,
            listeners,
            held_total: ::metrics::counter!("convoy_bus_positions_held_total"),
            recent: Recent::default(),
            clock,
            instance_timeout,
            location_ttl,
        };
        Ok((bus, inbound))
    }

    fn check(&self) -> Result<Conn, BusError> {
        if self.breaker.is_open() { Err(self.breaker.error()) } else { Ok(self.conn.clone()) }
    }

    /// The channel's presence entries written by other instances that are still alive. An
    /// instance with entries in a session this instance listens to has sockets there: it
    /// counts as listening (`listeners`), whether or not its roll call was heard.
    async fn remote_presence(&self, channel: Channel) -> Result<Vec<PresenceMeta>, BusError> {
        let mut conn = self.check()?;
        let entries: HashMap<String, String> =
            call(redis::cmd("HGETALL").arg(self.keys.presence(channel)).query_async(&mut conn)).await?;
        let own = self.instance_id.to_string();
        let mut instances: Vec<&str> = entries
            .keys()
            .filter_map(|field| field.split_once(':').map(|(instance, _)| instance))
            .filter(|instance| *instance != own)
            .collect();
        instances.sort_unstable();
        instances.dedup();
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = eval(&BEATS, INSTANCES_KEY);
        for instance in &instances {
            invocation.arg(*instance);
        }
        let beats: Vec<String> = call(invocation.query_async(&mut conn)).await?;
        let number = |s: &String| s.parse::<f64>().ok();
        let alive_since =
            beats.first().and_then(number).unwrap_or(0.0) - self.instance_timeout.as_millis() as f64;
        let alive: HashSet<&str> = instances
            .into_iter()
            .zip(beats.iter().skip(1))
            .filter(|(_, beat)| number(beat).is_some_and(|at| at >= alive_since))
            .map(|(instance, _)| instance)
            .collect();
        if let Channel::Session(session_id) = channel {
            for instance in alive.iter().filter_map(|i| i.parse().ok()) {
                heard(&self.listeners, &self.out, &self.clock, session_id, instance, Roll::Here);
            }
        }
        Ok(entries
            .iter()
            .filter(|(field, _)| field.split_once(':').is_some_and(|(instance, _)| alive.contains(instance)))
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect())
    }

    /// Removes one gone instance's entries, adding those this call removed to `reaped` as
    /// it goes (so an error part-way loses none of them).
    async fn reap_instance(
        &self,
        conn: &mut Conn,
        instance: &str,
        reaped: &mut Vec<(Channel, PresenceMeta)>,
    ) -> Result<(), BusError> {
        let channels: Vec<String> =
            call(redis::cmd("SMEMBERS").arg(self.keys.presence_channels(instance)).query_async(conn)).await?;
        let prefix = format!("{instance}:");
        for channel in channels.iter().filter_map(|c| Channel::parse(c)) {
            let key = self.keys.presence(channel);
            let entries: HashMap<String, String> =
                call(redis::cmd("HGETALL").arg(&key).query_async(conn)).await?;
            let theirs: Vec<(String, String)> =
                entries.into_iter().filter(|(field, _)| field.starts_with(&prefix)).collect();
            if theirs.is_empty() {
                continue;
            }
            // One HDEL per field: whoever removes an entry announces it, exactly once.
            let mut pipe = redis::pipe();
            for (field, _) in &theirs {
                pipe.hdel(&key, field);
            }
            let removed: Vec<i64> = call(pipe.query_async(conn)).await?;
            reaped.extend(
                theirs
                    .into_iter()
                    .zip(removed)
                    .filter(|(_, removed)| *removed == 1)
                    .filter_map(|((_, json), _)| Some((channel, serde_json::from_str(&json).ok()?))),
            );
        }
        // Two keys of two slots on a cluster: two calls.
        call(redis::cmd("DEL").arg(self.keys.presence_channels(instance)).query_async::<()>(&mut *conn))
            .await?;
        call(redis::cmd("ZREM").arg(INSTANCES_KEY).arg(instance).query_async::<()>(conn)).await
    }
}

/// Where commands for Redis go: the writer's queue, unless the breaker is open. What is
/// refused is counted, and a message that must arrive earns its channel a Resync once
/// publishing works again.
#[derive(Clone)]
struct Outgoing {
    queue: Queue,
    breaker: Arc<Breaker>,
    dropped_total: ::metrics::Counter,
}

impl Outgoing {
    fn send(&self, command: Command) {
        let refused = if self.breaker.is_open() { Some(command) } else { self.queue.try_send(command).err() };
        if let Some(command) = refused {
            self.count_drop(command.must_arrive());
        }
    }

    /// Counts a command Redis will not see.
    fn count_drop(&self, must_arrive: Option<Channel>) {
        let dropped = self.breaker.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped_total.increment(1);
        if dropped.is_multiple_of(10_000) {
            tracing::warn!(dropped = dropped + 1, "redis unavailable or behind: bus commands dropped");
        }
        if let Some(channel) = must_arrive {
            self.breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner()).insert(channel);
        }
    }
}

/// `from` said `roll` on the session's channel (or, as `Here`, was seen in its presence):
/// noted, and what was held while nobody listened goes out. Returns whether to answer.
fn heard(
    listeners: &Listeners,
    out: &Outgoing,
    clock: &Clock,
    session_id: SessionId,
    from: Uuid,
    roll: Roll,
) -> bool {
    let channel = Channel::Session(session_id);
    let now_ms = clock.now().timestamp_millis();
    // Must arrive: a newcomer missing one gets a Resync instead.
    let release = |payload| out.send(Command::Publish { channel, payload, must_arrive: true });
    listeners.heard(session_id, from, roll, now_ms, release)
}

/// Where the subscriber listens: a single Redis's pub/sub connection, or the cluster's
/// shards (sharded pub/sub).
enum PubSub {
    Single(redis::Client),
    Sharded(Vec<String>),
}

async fn call<T>(future: impl Future<Output = redis::RedisResult<T>>) -> Result<T, BusError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(BusError(err.to_string())),
        Err(_) => Err(BusError("redis call timed out".into())),
    }
}

#[async_trait]
impl Messaging for RedisBus {
    fn publish(&self, envelope: &Envelope) {
        let must_arrive = !matches!(envelope.message, HubMessage::Location { .. });
        if self.breaker.is_open() {
            self.out.count_drop(must_arrive.then_some(envelope.channel));
            return;
        }
        let channel = envelope.channel;
        let payload = wire::encode(self.instance_id, &envelope.message);
        let (HubMessage::Location { from, location, .. }, Channel::Session(session_id)) =
            (&envelope.message, channel)
        else {
            return self.out.send(Command::Publish { channel, payload, must_arrive });
        };
        // Held while no other instance listens, until it would leave the cache.
        let fix_ms = location.timestamp.timestamp_millis();
        let until_ms = || {
            let ttl_ms = i64::try_from(self.location_ttl.as_millis()).unwrap_or(i64::MAX);
            fix_ms.saturating_add(ttl_ms).max(self.clock.now().timestamp_millis() + 1_000)
        };
        let publish = |payload| self.out.send(Command::Publish { channel, payload, must_arrive });
        if self.listeners.publish_or_hold(session_id, *from, fix_ms, until_ms, payload, publish) {
            self.held_total.increment(1);
        }
    }

    fn subscribe(&self, channel: Channel) -> BoxFuture<'static, ()> {
        if let Channel::Session(session_id) = channel {
            // Quiet until another instance answers the Hello sent once this is confirmed.
            self.listeners.join(session_id);
        }
        let (ack, confirmed) = oneshot::channel();
        let _ = self.subscriptions.send(Subscription::Subscribe(channel, ack));
        // Resolves once Redis confirmed, or at once if the subscriber is gone or down.
        confirmed.map(|_| ()).boxed()
    }

    fn unsubscribe(&self, channel: Channel) {
        if let Channel::Session(session_id) = channel {
            self.listeners.leave(session_id);
            // Lost, it costs only the others' publishes to a channel nobody here reads.
            let payload = wire::encode_roll(self.instance_id, wire::Roll::Bye);
            self.out.send(Command::Publish { channel, payload, must_arrive: false });
        }
        let _ = self.subscriptions.send(Subscription::Unsubscribe(channel));
    }

    async fn flush(&self, within: Duration) {
        if self.breaker.is_open() {
            return; // nothing would be sent
        }
        let (done, flushed) = oneshot::channel();
        let _ = tokio::time::timeout(within, async {
            if self.queue.sender.send(Command::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        })
        .await;
    }
}

#[async_trait]
impl LocationCache for RedisBus {
    async fn put_location(
        &self,
        session_id: SessionId,
        user_id: UserId,
        location: &Location,
        ttl: Duration,
    ) -> Result<(), BusError> {
        if self.breaker.is_open() {
            self.out.count_drop(None);
            return Ok(());
        }
        let at_ms = self.clock.now().timestamp_millis();
        let until_ms = at_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let value = serde_json::to_string(&(until_ms, location)).map_err(|e| BusError(e.to_string()))?;
        let fix_ms = location.timestamp.timestamp_millis();
        self.recent.put(session_id, user_id, *location, until_ms, self.clock.instant());
        let command = Command::PutLocation { session_id, user_id, value, fix_ms, at_ms };
        self.out.send(command);
        Ok(())
    }

    async fn locations(&self, session_id: SessionId) -> Result<Vec<(UserId, Location)>, BusError> {
        let mut conn = self.check()?;
        let fields: Vec<(String, String)> =
            call(redis::cmd("HGETALL").arg(self.keys.locations(session_id)).query_async(&mut conn)).await?;
        let now_ms = self.clock.now().timestamp_millis();
        let mut locations = fields
            .iter()
            .filter_map(|(user, value)| {
                let (until_ms, location) = serde_json::from_str::<(i64, Location)>(value).ok()?;
                (until_ms > now_ms).then_some((user.parse().ok()?, location))
            })
            .collect();
        self.recent.overlay(session_id, now_ms, self.clock.instant(), &mut locations);
        Ok(locations)
    }

    async fn remove_location(&self, session_id: SessionId, user_id: UserId) -> Result<(), BusError> {
        self.listeners.forget_user(session_id, user_id);
        self.recent.remove(session_id, user_id);
        self.out.send(Command::RemoveLocation { session_id, user_id });
        Ok(())
    }

    async fn clear_session(&self, session_id: SessionId) -> Result<(), BusError> {
        self.recent.clear(session_id);
        self.out.send(Command::ClearSession { session_id });
        Ok(())
    }

    async fn purge_expired(&self) -> usize {
        // Expired fields are skipped when read; a session's hash goes when it ends, or
        // expires with its other keys, and holds one field per participant at most.
        0
    }

    async fn last_activity(
        &self,
        sessions: &[SessionId],
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, BusError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.check()?;
        // One MGET; the cluster client splits it by slot.
        let keys: Vec<String> = sessions.iter().map(|s| self.keys.activity(*s)).collect();
        let values: Vec<Option<i64>> = call(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        Ok(sessions.iter().zip(values).filter_map(|(s, ms)| Some((*s, from_millis(ms?)))).collect())
    }
}

#[async_trait]
impl PresenceRegistry for RedisBus {
    fn presence_join(&self, channel: Channel, meta: &PresenceMeta) {
        self.presence.join(channel, meta);
        match serde_json::to_string(meta) {
            Ok(json) => {
                let field = presence_field(self.instance_id, &meta.phx_ref);
                self.out.send(Command::PresenceJoin { channel, field, json });
            }
            Err(err) => tracing::error!(error = %err, "presence meta did not serialize"),
        }
    }

    fn presence_leave(&self, channel: Channel, meta: &PresenceMeta) {
        let last = self.presence.leave(channel, &meta.phx_ref);
        let field = presence_field(self.instance_id, &meta.phx_ref);
        self.out.send(Command::PresenceLeave { channel, field, last });
    }

    async fn presence(&self, channel: Channel) -> Vec<PresenceMeta> {
        let mut metas = self.presence.list(channel);
        match self.remote_presence(channel).await {
            Ok(remote) => metas.extend(remote),
            Err(err) => tracing::warn!(error = %err, "presence from other instances unavailable"),
        }
        metas
    }

    async fn room_member(&self, room: RoomId, user_id: UserId, delta: i64) -> Result<i64, BusError> {
        let mut conn = self.check()?;
        let mut script = eval(ROOM_MEMBER, &self.keys.room_members(room));
        script.arg(user_id.to_string()).arg(delta).arg(PRESENCE_TTL_SECS);
        call(script.query_async(&mut conn)).await
    }

    async fn reap_presence(&self) -> Result<Vec<(Channel, PresenceMeta)>, BusError> {
        let mut conn = self.check()?;
        let timeout_ms = i64::try_from(self.instance_timeout.as_millis()).unwrap_or(i64::MAX);
        let gone: Vec<String> =
            call(eval(&GONE, INSTANCES_KEY).arg(timeout_ms).query_async(&mut conn)).await?;
        let own = self.instance_id.to_string();
        let mut reaped = Vec::new();
        for instance in gone.iter().filter(|i| **i != own) {
            tracing::info!(%instance, "an instance stopped without leaving: reaping its presence");
            if let Err(err) = self.reap_instance(&mut conn, instance, &mut reaped).await {
                if reaped.is_empty() {
                    return Err(err);
                }
                // What was removed so far is still announced; the rest waits for the next sweep.
                tracing::warn!(error = %err, "reaping stopped part-way");
                break;
            }
            // Reaped for good (removed from the heartbeats: back, it says Hello again).
            if let Ok(gone) = instance.parse() {
                self.listeners.forget_instances(&[gone]);
            }
        }
        Ok(reaped)
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn kind(&self) -> &'static str {
        if self.keys.tagged { "redis-cluster" } else { "redis" }
    }

    async fn ping(&self) -> Result<(), BusError> {
        let conn = self.check()?;
        if self.breaker.subscriber_down.load(Ordering::Relaxed) {
            return Err(BusError("the pub/sub connection is down; reconnecting".into()));
        }
        call(conn.ping()).await
    }
}
