//! The writer: one task draining a queue bounded in commands and bytes, sending each
//! batch as one pipeline; the hot path never waits on Redis.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::keys::{
    CLEAR_SESSION_SCRIPT, REPLACE_PRESENCE_SCRIPT, activity_key, location_key, participants_key,
    presence_channels_key, presence_field, presence_key, pubsub_channel, room_members_key,
};
use super::prober::Breaker;
use super::{ACTIVITY_SPACING, BATCH, INDEX_REFRESH, PRESENCE_TTL_SECS, call};
use crate::clock::Clock;
use crate::domain::{SessionId, UserId};
use crate::message::Channel;
use crate::presence::LocalPresence;

pub(super) enum Command {
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
    pub(super) fn bytes(&self) -> usize {
        match self {
            Command::Publish { payload, .. } => payload.len(),
            Command::PutLocation { json, .. } => json.len(),
            Command::PresenceJoin { field, json, .. } => field.len() + json.len(),
            Command::PresenceLeave { field, .. } => field.len(),
            _ => 0,
        }
    }

    /// The channel whose clients must resynchronise if this command is lost.
    pub(super) fn must_arrive(&self) -> Option<Channel> {
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
pub(super) struct Queue {
    pub(super) sender: mpsc::Sender<Command>,
    pub(super) bytes: Arc<AtomicUsize>,
    pub(super) max_bytes: usize,
}

impl Queue {
    /// Queues the command, or hands it back when the queue is full in either measure.
    pub(super) fn try_send(&self, command: Command) -> Result<(), Command> {
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
    pub(super) fn taken(&self, commands: &[Command]) {
        self.bytes.fetch_sub(commands.iter().map(Command::bytes).sum(), Ordering::Relaxed);
    }

    pub(super) fn capacity(&self) -> usize {
        self.sender.capacity()
    }
}

/// What the writer needs besides its connection.
pub(super) struct Writer {
    pub(super) instance_id: Uuid,
    pub(super) presence: Arc<LocalPresence>,
    pub(super) key_ttl_secs: u64,
    pub(super) batch_delay: Duration,
    /// What the index and activity spacing is measured on.
    pub(super) clock: Clock,
}

pub(super) async fn run_writer(
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
        let now = writer.clock.instant();
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
        // A batch of only flushes has nothing to send (the redis client refuses an empty
        // pipeline, which would trip the breaker for nothing).
        if !pipe.is_empty()
            && let Err(err) = call(pipe.query_async::<()>(&mut conn)).await
        {
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
pub(super) struct Written {
    pub(super) index: HashMap<(SessionId, UserId), Instant>,
    pub(super) activity: HashMap<SessionId, Instant>,
    /// Index entries are rewritten this often anyway (refreshing the key's expiry, and
    /// healing a key lost on the Redis side without a connection error).
    pub(super) refresh: Duration,
    pub(super) last_prune: Instant,
}

impl Written {
    pub(super) fn new(refresh: Duration) -> Self {
        Self { index: HashMap::new(), activity: HashMap::new(), refresh, last_prune: Instant::now() }
    }

    pub(super) fn index_due(&mut self, session_id: SessionId, user_id: UserId, now: Instant) -> bool {
        due(&mut self.index, (session_id, user_id), now, self.refresh)
    }

    pub(super) fn activity_due(&mut self, session_id: SessionId, now: Instant) -> bool {
        due(&mut self.activity, session_id, now, ACTIVITY_SPACING)
    }

    pub(super) fn forget_user(&mut self, session_id: SessionId, user_id: UserId) {
        self.index.remove(&(session_id, user_id));
    }

    pub(super) fn forget_session(&mut self, session_id: SessionId) {
        self.index.retain(|(s, _), _| *s != session_id);
        self.activity.remove(&session_id);
    }

    pub(super) fn clear(&mut self) {
        self.index.clear();
        self.activity.clear();
    }

    /// Drops what would be due anyway, now and then, so departed users do not accumulate.
    pub(super) fn prune(&mut self, now: Instant) {
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
pub(super) fn due<K: Eq + std::hash::Hash>(
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
