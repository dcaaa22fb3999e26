//! The scale-out bus: Redis. Three tasks per instance, never one per socket:
//!
//! - the writer drains a bounded queue of commands (PUBLISH and the location-cache writes)
//!   and sends each batch as one pipeline, so the hot path never waits on Redis;
//! - the subscriber owns the instance's single pub/sub connection, subscribed to a
//!   session's channel only while this instance has a local socket there; it drops its own
//!   echoes, hands the rest to the hub in order, and reconnects and resubscribes by itself;
//! - the prober pings Redis and drives the circuit breaker: while it is open, publishing and
//!   caching cost nothing (they are skipped) and reads fail at once.
//!
//! Nothing lost is lost silently: when the subscriber reconnects, every local socket
//! rebuilds its snapshot; when publishing resumes, a `Resync` goes to each session whose
//! messages were dropped, so the other instances' sockets rebuild theirs.
//!
//! Keys follow seed 000: `locations:{session_id}:{user_id}` (EX = location TTL),
//! `session_participants:{session_id}` (the users with a cached location),
//! `session_activity:{session_id}` (Unix ms of the newest update) and pub/sub channels
//! `channel:session:{session_id}`.
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::wire;
use super::{Bus, BusError, BusEvent, Inbound};
use crate::domain::{Location, RoomId, SessionId, UserId, from_millis};
use crate::message::{Channel, Envelope, HubMessage};
use crate::presence::{LocalPresence, PresenceMeta};

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
/// An instance whose last heartbeat is older than this is presumed gone.
const INSTANCE_TIMEOUT: Duration = Duration::from_secs(15);
/// Expiry of the presence keys, renewed every PRESENCE_REFRESH while entries exist, so
/// keys of a cluster that stopped entirely go away by themselves.
const PRESENCE_TTL_SECS: i64 = 300;
const PRESENCE_REFRESH: Duration = Duration::from_secs(60);
/// A participant's entry in its session's location index is rewritten at least this often.
const INDEX_REFRESH: Duration = Duration::from_secs(30);
/// A session's last-activity key is written at most this often.
const ACTIVITY_SPACING: Duration = Duration::from_secs(1);
const INSTANCES_KEY: &str = "presence_instances";

/// `channel:session:{id}` or `channel:room:{id}`.
fn pubsub_channel(channel: Channel) -> String {
    format!("channel:{}", channel.name())
}

fn location_key(session_id: SessionId, user_id: UserId) -> String {
    format!("locations:{session_id}:{user_id}")
}

fn participants_key(session_id: SessionId) -> String {
    format!("session_participants:{session_id}")
}

fn activity_key(session_id: SessionId) -> String {
    format!("session_activity:{session_id}")
}

fn presence_key(channel: Channel) -> String {
    format!("presence:{}", channel.name())
}

fn presence_channels_key(instance_id: &str) -> String {
    format!("presence_channels:{instance_id}")
}

fn presence_field(instance_id: Uuid, phx_ref: &str) -> String {
    format!("{instance_id}:{phx_ref}")
}

/// Redis's clock in Unix ms, inside a script: heartbeats and their age are measured on one
/// clock, so a host whose clock is off cannot be taken for gone.
const LUA_NOW_MS: &str = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)";

/// Adds ARGV[2] to user ARGV[1]'s socket count in a room, dropping it at zero; renews the
/// key's expiry (ARGV[3] s); returns the new count.
static ROOM_MEMBER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
         if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
         redis.call('EXPIRE', KEYS[1], ARGV[3])
         return n",
    )
});

fn room_members_key(room: RoomId) -> String {
    format!("room_users:{room}")
}

/// ZADD of this instance's heartbeat at Redis's time: 1 if it was not in the set.
static HEARTBEAT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!("{LUA_NOW_MS} return redis.call('ZADD', KEYS[1], now, ARGV[1])"))
});

/// The instances whose heartbeat is older than ARGV[1] ms.
static GONE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{LUA_NOW_MS} return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))"
    ))
});

/// Redis's time, then the heartbeats of the given instances ('' for none), in Unix ms.
static BEATS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{LUA_NOW_MS} local beats = {{tostring(now)}}
         for i, id in ipairs(ARGV) do beats[i + 1] = redis.call('ZSCORE', KEYS[1], id) or '' end
         return beats"
    ))
});

/// Replaces one instance's entries in a session's presence hash (after an outage, or after
/// other instances took this one for gone): KEYS = hash, the instance's session set;
/// ARGV = field prefix, key TTL, session id, then field/value pairs.
const REPLACE_PRESENCE_SCRIPT: &str = r"
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #ARGV[1]) == ARGV[1] then redis.call('HDEL', KEYS[1], field) end
end
if #ARGV > 3 then
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 0";

/// Deletes a session's cached locations, its participant set and its activity key.
const CLEAR_SESSION_SCRIPT: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
for _, user in ipairs(members) do redis.call('DEL', ARGV[1] .. user) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return #members";

enum Command {
    /// `must_arrive`: not a location (which the next update replaces anyway).
    Publish {
        channel: Channel,
        payload: Vec<u8>,
        must_arrive: bool,
    },
    PutLocation {
        session_id: SessionId,
        user_id: UserId,
        json: String,
        ttl_secs: u64,
        at_ms: i64,
    },
    RemoveLocation {
        session_id: SessionId,
        user_id: UserId,
    },
    ClearSession {
        session_id: SessionId,
    },
    PresenceJoin {
        channel: Channel,
        field: String,
        json: String,
    },
    PresenceLeave {
        channel: Channel,
        field: String,
        /// This instance's last connection in the session.
        last: bool,
    },
    /// Rewrite this instance's entries in the session from `LocalPresence`, as they are
    /// when the writer gets to it.
    PresenceReplace {
        channel: Channel,
    },
    /// Renew the expiry of every presence key this instance has entries in.
    PresenceRefresh,
    /// Answered once everything queued before it was sent (shutdown waits for it).
    Flush(oneshot::Sender<()>),
}

impl Command {
    /// What the command holds, counted against the queue's byte budget.
    fn bytes(&self) -> usize {
        match self {
            Command::Publish { payload, .. } => payload.len(),
            Command::PutLocation { json, .. } => json.len(),
            Command::PresenceJoin { field, json, .. } => field.len() + json.len(),
            Command::PresenceLeave { field, .. } => field.len(),
            _ => 0,
        }
    }

    /// The channel whose clients must resynchronise if this command is lost.
    fn must_arrive(&self) -> Option<Channel> {
        match self {
            Command::Publish { channel, must_arrive: true, .. }
            | Command::PresenceJoin { channel, .. }
            | Command::PresenceLeave { channel, .. }
            | Command::PresenceReplace { channel } => Some(*channel),
            _ => None,
        }
    }
}

/// The writer's queue, bounded in commands (QUEUE_CAPACITY) and in bytes
/// (REDIS_QUEUE_MAX_BYTES): a Redis slower than this instance cannot grow its memory.
#[derive(Clone)]
struct Queue {
    sender: mpsc::Sender<Command>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Queue {
    /// Queues the command, or hands it back when the queue is full in either measure.
    fn try_send(&self, command: Command) -> Result<(), Command> {
        let size = command.bytes();
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(command);
        }
        self.sender.try_send(command).map_err(|err| {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            err.into_inner()
        })
    }

    /// The writer took these commands off the queue.
    fn taken(&self, commands: &[Command]) {
        self.bytes.fetch_sub(commands.iter().map(Command::bytes).sum(), Ordering::Relaxed);
    }

    fn capacity(&self) -> usize {
        self.sender.capacity()
    }
}

enum Subscription {
    Subscribe(Channel, oneshot::Sender<()>),
    Unsubscribe(Channel),
}

/// The circuit breaker and what health checks report.
#[derive(Default)]
struct Breaker {
    open: AtomicBool,
    subscriber_down: AtomicBool,
    dropped: AtomicU64,
    /// Channels whose messages were dropped; they get a `Resync` once publishing works.
    dropped_channels: Mutex<HashSet<Channel>>,
    last_error: Mutex<Option<String>>,
}

impl Breaker {
    fn trip(&self, error: impl ToString) {
        let error = error.to_string();
        if !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "redis unreachable: circuit open, cross-instance delivery paused");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    fn reset(&self) {
        if self.open.swap(false, Ordering::Relaxed) {
            tracing::info!("redis reachable again: circuit closed");
        }
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    fn error(&self) -> BusError {
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        BusError(format!("redis unreachable (circuit open): {}", last.unwrap_or_else(|| "unknown".into())))
    }
}

pub struct RedisBus {
    instance_id: Uuid,
    presence: Arc<LocalPresence>,
    conn: ConnectionManager,
    queue: Queue,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    breaker: Arc<Breaker>,
    dropped_total: ::metrics::Counter,
}

impl RedisBus {
    /// `session_key_ttl_secs` is the expiry of the per-session keys, so an abandoned
    /// session's keys go away by themselves.
    /// Connects (failing fast if Redis cannot be reached at start) and starts the writer,
    /// subscriber and prober tasks, which stop when `shutdown` is cancelled. Messages from
    /// other instances arrive on the returned receiver, in order. The writer holds each
    /// pipeline `batch_delay` after its first command, to gather more.
    pub async fn connect(
        url: &str,
        instance_id: Uuid,
        session_key_ttl_secs: u64,
        batch_delay: Duration,
        queue_max_bytes: usize,
        shutdown: CancellationToken,
    ) -> Result<(Self, Inbound), BusError> {
        let client = redis::Client::open(url).map_err(|e| BusError(format!("bad REDIS_URL: {e}")))?;
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

        // The first presence heartbeat, before any connection can be present.
        let mut conn = conn;
        call(HEARTBEAT.key(INSTANCES_KEY).arg(instance_id.to_string()).invoke_async::<i64>(&mut conn))
            .await?;

        let breaker = Arc::new(Breaker::default());
        let (sender, commands) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Queue { sender, bytes: Arc::new(AtomicUsize::new(0)), max_bytes: queue_max_bytes };
        let (subscriptions, subscription_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let presence = Arc::new(LocalPresence::default());
        let writer = Writer {
            instance_id,
            presence: presence.clone(),
            key_ttl_secs: session_key_ttl_secs,
            batch_delay,
        };
        tokio::spawn(run_writer(conn.clone(), commands, queue.clone(), breaker.clone(), writer));
        tokio::spawn(run_subscriber(
            client,
            subscription_rx,
            inbound_tx.clone(),
            instance_id,
            breaker.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(run_prober(
            conn.clone(),
            breaker.clone(),
            queue.clone(),
            instance_id,
            presence.clone(),
            inbound_tx,
            shutdown,
        ));
        let dropped_total = ::metrics::counter!("convoy_bus_dropped_total");
        Ok((Self { instance_id, presence, conn, queue, subscriptions, breaker, dropped_total }, inbound))
    }

    fn enqueue(&self, command: Command) {
        let refused = if self.breaker.is_open() { Some(command) } else { self.queue.try_send(command).err() };
        if let Some(command) = refused {
            self.count_drop(command.must_arrive());
        }
    }

    /// Counts a command Redis will not see; a message that must arrive earns its session a
    /// Resync once publishing works again.
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

    fn check(&self) -> Result<ConnectionManager, BusError> {
        if self.breaker.is_open() { Err(self.breaker.error()) } else { Ok(self.conn.clone()) }
    }

    /// The channel's presence entries written by other instances that are still alive.
    async fn remote_presence(&self, channel: Channel) -> Result<Vec<PresenceMeta>, BusError> {
        let mut conn = self.check()?;
        let entries: HashMap<String, String> =
            call(redis::cmd("HGETALL").arg(presence_key(channel)).query_async(&mut conn)).await?;
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
        let mut invocation = BEATS.key(INSTANCES_KEY);
        for instance in &instances {
            invocation.arg(*instance);
        }
        let beats: Vec<String> = call(invocation.invoke_async(&mut conn)).await?;
        let number = |s: &String| s.parse::<f64>().ok();
        let alive_since = beats.first().and_then(number).unwrap_or(0.0) - INSTANCE_TIMEOUT.as_millis() as f64;
        let alive: HashSet<&str> = instances
            .into_iter()
            .zip(beats.iter().skip(1))
            .filter(|(_, beat)| number(beat).is_some_and(|at| at >= alive_since))
            .map(|(instance, _)| instance)
            .collect();
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
        conn: &mut ConnectionManager,
        instance: &str,
        reaped: &mut Vec<(Channel, PresenceMeta)>,
    ) -> Result<(), BusError> {
        let channels: Vec<String> =
            call(redis::cmd("SMEMBERS").arg(presence_channels_key(instance)).query_async(conn)).await?;
        let prefix = format!("{instance}:");
        for channel in channels.iter().filter_map(|c| Channel::parse(c)) {
            let key = presence_key(channel);
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
        let mut pipe = redis::pipe();
        pipe.del(presence_channels_key(instance)).ignore().zrem(INSTANCES_KEY, instance).ignore();
        call(pipe.query_async::<()>(conn)).await
    }
}

async fn call<T>(future: impl Future<Output = redis::RedisResult<T>>) -> Result<T, BusError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(BusError(err.to_string())),
        Err(_) => Err(BusError("redis call timed out".into())),
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish(&self, envelope: &Envelope) {
        let must_arrive = !matches!(envelope.message, HubMessage::Location { .. });
        if self.breaker.is_open() {
            self.count_drop(must_arrive.then_some(envelope.channel));
            return;
        }
        let payload = wire::encode(self.instance_id, &envelope.message);
        self.enqueue(Command::Publish { channel: envelope.channel, payload, must_arrive });
    }

    fn subscribe(&self, channel: Channel) -> BoxFuture<'static, ()> {
        let (ack, confirmed) = oneshot::channel();
        let _ = self.subscriptions.send(Subscription::Subscribe(channel, ack));
        // Resolves once Redis confirmed, or at once if the subscriber is gone or down.
        confirmed.map(|_| ()).boxed()
    }

    fn unsubscribe(&self, channel: Channel) {
        let _ = self.subscriptions.send(Subscription::Unsubscribe(channel));
    }

    async fn put_location(
        &self,
        session_id: SessionId,
        user_id: UserId,
        location: &Location,
        ttl: Duration,
    ) -> Result<(), BusError> {
        if self.breaker.is_open() {
            self.count_drop(None);
            return Ok(());
        }
        let json = serde_json::to_string(location).map_err(|e| BusError(e.to_string()))?;
        let command = Command::PutLocation {
            session_id,
            user_id,
            json,
            ttl_secs: ttl.as_secs().max(1),
            at_ms: Utc::now().timestamp_millis(),
        };
        self.enqueue(command);
        Ok(())
    }

    async fn locations(&self, session_id: SessionId) -> Result<Vec<(UserId, Location)>, BusError> {
        let mut conn = self.check()?;
        let users: Vec<String> =
            call(redis::cmd("SMEMBERS").arg(participants_key(session_id)).query_async(&mut conn)).await?;
        let users: Vec<UserId> = users.iter().filter_map(|u| u.parse().ok()).collect();
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = users.iter().map(|u| location_key(session_id, *u)).collect();
        let values: Vec<Option<String>> = call(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        Ok(users
            .into_iter()
            .zip(values)
            .filter_map(|(user, value)| Some((user, serde_json::from_str(&value?).ok()?)))
            .collect())
    }

    async fn remove_location(&self, session_id: SessionId, user_id: UserId) -> Result<(), BusError> {
        self.enqueue(Command::RemoveLocation { session_id, user_id });
        Ok(())
    }

    async fn clear_session(&self, session_id: SessionId) -> Result<(), BusError> {
        self.enqueue(Command::ClearSession { session_id });
        Ok(())
    }

    async fn purge_expired(&self) -> usize {
        0 // Redis expires the keys itself (EX).
    }

    async fn last_activity(
        &self,
        sessions: &[SessionId],
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, BusError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.check()?;
        let keys: Vec<String> = sessions.iter().map(|s| activity_key(*s)).collect();
        let values: Vec<Option<i64>> = call(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
        Ok(sessions.iter().zip(values).filter_map(|(s, ms)| Some((*s, from_millis(ms?)))).collect())
    }

    async fn ping(&self) -> Result<(), BusError> {
        let mut conn = self.check()?;
        if self.breaker.subscriber_down.load(Ordering::Relaxed) {
            return Err(BusError("the pub/sub connection is down; reconnecting".into()));
        }
        let _: String = call(redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(())
    }

    async fn room_member(&self, room: RoomId, user_id: UserId, delta: i64) -> Result<i64, BusError> {
        let mut conn = self.check()?;
        let mut script = ROOM_MEMBER.key(room_members_key(room));
        script.arg(user_id.to_string()).arg(delta).arg(PRESENCE_TTL_SECS);
        call(script.invoke_async(&mut conn)).await
    }

    fn presence_join(&self, channel: Channel, meta: &PresenceMeta) {
        self.presence.join(channel, meta);
        match serde_json::to_string(meta) {
            Ok(json) => {
                let field = presence_field(self.instance_id, &meta.phx_ref);
                self.enqueue(Command::PresenceJoin { channel, field, json });
            }
            Err(err) => tracing::error!(error = %err, "presence meta did not serialize"),
        }
    }

    fn presence_leave(&self, channel: Channel, meta: &PresenceMeta) {
        let last = self.presence.leave(channel, &meta.phx_ref);
        let field = presence_field(self.instance_id, &meta.phx_ref);
        self.enqueue(Command::PresenceLeave { channel, field, last });
    }

    async fn presence(&self, channel: Channel) -> Vec<PresenceMeta> {
        let mut metas = self.presence.list(channel);
        match self.remote_presence(channel).await {
            Ok(remote) => metas.extend(remote),
            Err(err) => tracing::warn!(error = %err, "presence from other instances unavailable"),
        }
        metas
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

    async fn reap_presence(&self) -> Result<Vec<(Channel, PresenceMeta)>, BusError> {
        let mut conn = self.check()?;
        let timeout_ms = INSTANCE_TIMEOUT.as_millis() as i64;
        let gone: Vec<String> = call(GONE.key(INSTANCES_KEY).arg(timeout_ms).invoke_async(&mut conn)).await?;
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
        }
        Ok(reaped)
    }
}

/// What the writer needs besides its connection.
struct Writer {
    instance_id: Uuid,
    presence: Arc<LocalPresence>,
    key_ttl_secs: u64,
    batch_delay: Duration,
}

async fn run_writer(
    mut conn: ConnectionManager,
    mut commands: mpsc::Receiver<Command>,
    queue: Queue,
    breaker: Arc<Breaker>,
    writer: Writer,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let key_ttl_secs = writer.key_ttl_secs;
    let key_ttl = i64::try_from(key_ttl_secs).unwrap_or(i64::MAX);
    let instance = writer.instance_id.to_string();
    let channels_key = presence_channels_key(&instance);
    let mut must_arrive = HashSet::new();
    let mut written = Written::new(Duration::from_secs(key_ttl_secs / 2).min(INDEX_REFRESH));
    let mut flushed = Vec::new();
    while commands.recv_many(&mut batch, BATCH).await > 0 {
        let flushing = batch.iter().any(|c| matches!(c, Command::Flush(_)));
        if !writer.batch_delay.is_zero() && batch.len() < BATCH && !flushing {
            tokio::time::sleep(writer.batch_delay).await;
            while batch.len() < BATCH
                && let Ok(command) = commands.try_recv()
            {
                batch.push(command);
            }
        }
        queue.taken(&batch);
        let mut pipe = redis::pipe();
        must_arrive.clear();
        let now = Instant::now();
        written.prune(now);
        for command in batch.drain(..) {
            must_arrive.extend(command.must_arrive());
            match command {
                Command::Publish { channel, payload, .. } => {
                    pipe.publish(pubsub_channel(channel), payload).ignore();
                }
                Command::PutLocation { session_id, user_id, json, ttl_secs, at_ms } => {
                    // The hot path: one SET per update; the session's index and activity
                    // only when they are due (they change far less often than positions).
                    pipe.set_ex(location_key(session_id, user_id), json, ttl_secs).ignore();
                    if written.index_due(session_id, user_id, now) {
                        let set = participants_key(session_id);
                        pipe.sadd(&set, user_id.to_string()).ignore().expire(&set, key_ttl).ignore();
                    }
                    if written.activity_due(session_id, now) {
                        pipe.set_ex(activity_key(session_id), at_ms, key_ttl_secs).ignore();
                    }
                }
                Command::RemoveLocation { session_id, user_id } => {
                    written.forget_user(session_id, user_id);
                    pipe.del(location_key(session_id, user_id))
                        .ignore()
                        .srem(participants_key(session_id), user_id.to_string())
                        .ignore();
                }
                Command::ClearSession { session_id } => {
                    written.forget_session(session_id);
                    pipe.cmd("EVAL")
                        .arg(CLEAR_SESSION_SCRIPT)
                        .arg(3)
                        .arg(participants_key(session_id))
                        .arg(activity_key(session_id))
                        .arg(presence_key(Channel::Session(session_id)))
                        .arg(format!("locations:{session_id}:"))
                        .ignore();
                }
                Command::PresenceJoin { channel, field, json } => {
                    let key = presence_key(channel);
                    pipe.hset(&key, field, json)
                        .ignore()
                        .expire(&key, PRESENCE_TTL_SECS)
                        .ignore()
                        .sadd(&channels_key, channel.name())
                        .ignore()
                        .expire(&channels_key, PRESENCE_TTL_SECS)
                        .ignore();
                }
                Command::PresenceLeave { channel, field, last } => {
                    pipe.hdel(presence_key(channel), field).ignore();
                    if last {
                        pipe.srem(&channels_key, channel.name()).ignore();
                    }
                }
                Command::PresenceRefresh => {
                    for channel in writer.presence.channels() {
                        pipe.expire(presence_key(channel), PRESENCE_TTL_SECS).ignore();
                        if let Channel::Room(room) = channel {
                            pipe.expire(room_members_key(room), PRESENCE_TTL_SECS).ignore();
                        }
                    }
                    pipe.expire(&channels_key, PRESENCE_TTL_SECS).ignore();
                }
                Command::PresenceReplace { channel } => {
                    let script = pipe
                        .cmd("EVAL")
                        .arg(REPLACE_PRESENCE_SCRIPT)
                        .arg(2)
                        .arg(presence_key(channel))
                        .arg(&channels_key)
                        .arg(format!("{instance}:"))
                        .arg(PRESENCE_TTL_SECS)
                        .arg(channel.name());
                    for meta in writer.presence.list(channel) {
                        let json = serde_json::to_string(&meta).unwrap_or_default();
                        script.arg(presence_field(writer.instance_id, &meta.phx_ref)).arg(json);
                    }
                    script.ignore();
                }
                Command::Flush(done) => flushed.push(done),
            }
        }
        if let Err(err) = call(pipe.query_async::<()>(&mut conn)).await {
            breaker.trip(err);
            written.clear(); // what the batch wrote may be missing
            ::metrics::counter!("convoy_bus_publish_errors_total").increment(1);
            // The batch may not have reached Redis: its sessions get a Resync on recovery.
            breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner()).extend(must_arrive.drain());
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// What the writer wrote recently that need not be written on every location update: a
/// participant's entry in its session's index (SADD + EXPIRE) and the session's last
/// activity (read by the sweeper at a resolution of seconds).
struct Written {
    index: HashMap<(SessionId, UserId), Instant>,
    activity: HashMap<SessionId, Instant>,
    /// Index entries are rewritten this often anyway (refreshing the key's expiry, and
    /// healing a key lost on the Redis side without a connection error).
    refresh: Duration,
    last_prune: Instant,
}

impl Written {
    fn new(refresh: Duration) -> Self {
        Self { index: HashMap::new(), activity: HashMap::new(), refresh, last_prune: Instant::now() }
    }

    fn index_due(&mut self, session_id: SessionId, user_id: UserId, now: Instant) -> bool {
        due(&mut self.index, (session_id, user_id), now, self.refresh)
    }

    fn activity_due(&mut self, session_id: SessionId, now: Instant) -> bool {
        due(&mut self.activity, session_id, now, ACTIVITY_SPACING)
    }

    fn forget_user(&mut self, session_id: SessionId, user_id: UserId) {
        self.index.remove(&(session_id, user_id));
    }

    fn forget_session(&mut self, session_id: SessionId) {
        self.index.retain(|(s, _), _| *s != session_id);
        self.activity.remove(&session_id);
    }

    fn clear(&mut self) {
        self.index.clear();
        self.activity.clear();
    }

    /// Drops what would be due anyway, now and then, so departed users do not accumulate.
    fn prune(&mut self, now: Instant) {
        if now.duration_since(self.last_prune) < self.refresh {
            return;
        }
        self.last_prune = now;
        let refresh = self.refresh;
        self.index.retain(|_, at| now.duration_since(*at) < refresh);
        self.activity.retain(|_, at| now.duration_since(*at) < ACTIVITY_SPACING);
    }
}

/// Whether `key` was last written `every` or longer ago (or never); if so, it counts as
/// written now.
fn due<K: Eq + std::hash::Hash>(
    map: &mut HashMap<K, Instant>,
    key: K,
    now: Instant,
    every: Duration,
) -> bool {
    match map.get(&key) {
        Some(at) if now.duration_since(*at) < every => false,
        _ => {
            map.insert(key, now);
            true
        }
    }
}

async fn run_prober(
    mut conn: ConnectionManager,
    breaker: Arc<Breaker>,
    queue: Queue,
    instance_id: Uuid,
    presence: Arc<LocalPresence>,
    inbound: mpsc::UnboundedSender<BusEvent>,
    shutdown: CancellationToken,
) {
    let mut backoff = PROBE_INTERVAL;
    let mut last_resync: HashMap<Channel, Instant> = HashMap::new();
    let mut last_refresh = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        match call(redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(_) => {
                breaker.reset();
                backoff = PROBE_INTERVAL;
                // The heartbeat that keeps this instance's presence alive. Added anew (1)
                // means the others took this instance for gone, removed its entries and
                // announced its sockets as leaves: rewrite them, have those channels'
                // sockets everywhere resynchronise, and this instance's own too.
                let mut beat = HEARTBEAT.key(INSTANCES_KEY);
                beat.arg(instance_id.to_string());
                match call(beat.invoke_async(&mut conn)).await {
                    Ok(1) if !presence.channels().is_empty() => {
                        tracing::warn!("this instance was taken for gone: restoring its presence");
                        breaker
                            .dropped_channels
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(presence.channels());
                        let _ = inbound.send(BusEvent::ResyncAll);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "presence heartbeat failed"),
                }
                if last_refresh.elapsed() >= PRESENCE_REFRESH
                    && queue.try_send(Command::PresenceRefresh).is_ok()
                {
                    last_refresh = Instant::now();
                }
                // Tell the other instances' sockets in sessions we dropped messages for, at
                // most once per RESYNC_SPACING per session (a Redis that keeps failing some
                // commands must not make every socket resnapshot every second).
                let now = Instant::now();
                last_resync.retain(|_, at| now.duration_since(*at) < RESYNC_SPACING);
                let mut dropped = breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner());
                let due: Vec<Channel> =
                    dropped.iter().filter(|s| !last_resync.contains_key(s)).copied().collect();
                for channel in due {
                    // Presence changes may be among what was lost: rewrite ours first.
                    let payload = wire::encode(instance_id, &HubMessage::Resync);
                    if queue.capacity() < 2 {
                        break; // the queue is full: the rest stay for the next round
                    }
                    let replace = Command::PresenceReplace { channel };
                    let resync = Command::Publish { channel, payload, must_arrive: true };
                    if queue.try_send(replace).is_err() || queue.try_send(resync).is_err() {
                        break;
                    }
                    dropped.remove(&channel);
                    last_resync.insert(channel, now);
                }
            }
            Err(err) => {
                breaker.trip(err);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn run_subscriber(
    client: redis::Client,
    mut requests: mpsc::UnboundedReceiver<Subscription>,
    inbound: mpsc::UnboundedSender<BusEvent>,
    instance_id: Uuid,
    breaker: Arc<Breaker>,
    shutdown: CancellationToken,
) {
    let mut wanted: HashSet<Channel> = HashSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(CALL_TIMEOUT * 2, client.get_async_pubsub()) => result,
        };
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                let error = match failed {
                    Ok(Err(err)) => err.to_string(),
                    _ => "timed out".into(),
                };
                breaker.subscriber_down.store(true, Ordering::Relaxed);
                tracing::debug!(%error, ?backoff, "pub/sub connect failed; retrying");
                // Keep track of what is wanted while waiting, and release waiters.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = &mut wait => break,
                        request = requests.recv() => match request {
                            None => return,
                            Some(request) => note(&mut wanted, request),
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if !wanted.is_empty() {
            let channels: Vec<String> = wanted.iter().map(|c| pubsub_channel(*c)).collect();
            if let Err(err) = call(sink.subscribe(&channels)).await {
                tracing::warn!(error = %err, "resubscribing failed; reconnecting");
                breaker.subscriber_down.store(true, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        if breaker.subscriber_down.swap(false, Ordering::Relaxed) {
            tracing::info!(sessions = wanted.len(), "pub/sub reconnected and resubscribed");
        }
        // Sockets that subscribed while there was no connection (at start or during an
        // outage) may have missed messages: they resnapshot.
        if !wanted.is_empty() && inbound.send(BusEvent::ResyncAll).is_err() {
            return;
        }
        backoff = Duration::from_millis(100);
        // A connection that silently died (no RST) would otherwise never be noticed. Its
        // answer queues behind every message in flight, so it gets a generous timeout.
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + PUBSUB_KEEPALIVE, PUBSUB_KEEPALIVE);

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = keepalive.tick() => {
                    let ping = tokio::time::timeout(PUBSUB_KEEPALIVE, sink.ping::<redis::Value>()).await;
                    if let Err(err) = ping.map_err(|_| "timed out".to_owned()).and_then(|r| r.map_err(|e| e.to_string())) {
                        tracing::warn!(error = %err, "pub/sub connection unresponsive; reconnecting");
                        break;
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let result = match &request {
                        Subscription::Subscribe(channel, _) if !wanted.contains(channel) => {
                            call(sink.subscribe(pubsub_channel(*channel))).await
                        }
                        Subscription::Unsubscribe(channel) if wanted.contains(channel) => {
                            call(sink.unsubscribe(pubsub_channel(*channel))).await
                        }
                        _ => Ok(()),
                    };
                    note(&mut wanted, request);
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "pub/sub command failed; reconnecting");
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("pub/sub connection lost; reconnecting");
                        break;
                    };
                    match wire::decode(message.get_channel_name(), message.get_payload_bytes()) {
                        Ok((origin, _)) if origin == instance_id => {} // our own echo
                        Ok((_, envelope)) => {
                            if inbound.send(BusEvent::Deliver(envelope)).is_err() {
                                return;
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "dropping an unreadable bus message"),
                    }
                }
            }
        }
        breaker.subscriber_down.store(true, Ordering::Relaxed);
    }
}

/// Records what a request wants; subscribe acknowledgements are sent here, after the
/// SUBSCRIBE (if any) was confirmed or could not be sent.
fn note(wanted: &mut HashSet<Channel>, request: Subscription) {
    match request {
        Subscription::Subscribe(channel, ack) => {
            wanted.insert(channel);
            let _ = ack.send(());
        }
        Subscription::Unsubscribe(channel) => {
            wanted.remove(&channel);
        }
    }
}
