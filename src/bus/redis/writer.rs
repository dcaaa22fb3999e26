//! The writer: one task draining a queue bounded in commands and bytes, sending each
//! batch as one pipeline (one per slot on a cluster, `conn::Pipes`); the hot path never
//! waits on Redis. What a batch publishes to one channel goes as one PUBLISH (SPUBLISH on a
//! cluster; a bundle, `wire`), after the batch's writes; the location cache is written
//! spaced (`spaced`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::conn::{Conn, Pipes};
use super::keys::{Keys, REPLACE_PRESENCE_SCRIPT, presence_field};
use super::prober::Breaker;
use super::spaced::SpacedWrites;
use super::{ACTIVITY_SPACING, BATCH, PRESENCE_TTL_SECS};
use crate::bus::wire;
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
    /// `value`: what `locations` reads back (the location and when it expires).
    PutLocation {
        session_id: SessionId,
        user_id: UserId,
        value: String,
        /// The fix's own time (Unix ms): of two held values the newer fix is written.
        fix_ms: i64,
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
            Command::PutLocation { value, .. } => value.len(),
            Command::PresenceJoin { field, json, .. } => field.len() + json.len(),
            Command::PresenceLeave { field, .. } => field.len(),
            _ => 0,
        }
    }

    /// A position or its cache write: may wait REDIS_BATCH_DELAY_MS for company.
    fn may_wait(&self) -> bool {
        matches!(self, Command::PutLocation { .. } | Command::Publish { must_arrive: false, .. })
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
    pub(super) keys: Keys,
    pub(super) presence: Arc<LocalPresence>,
    pub(super) key_ttl_secs: u64,
    pub(super) batch_delay: Duration,
    /// What the spacing of activity and cache writes is measured on.
    pub(super) clock: Clock,
}

pub(super) async fn run_writer(
    conn: Conn,
    mut commands: mpsc::Receiver<Command>,
    queue: Queue,
    breaker: Arc<Breaker>,
    writer: Writer,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let key_ttl_secs = writer.key_ttl_secs;
    let key_ttl = i64::try_from(key_ttl_secs).unwrap_or(i64::MAX);
    let instance = writer.instance_id.to_string();
    let keys = writer.keys;
    let channels_key = keys.presence_channels(&instance);
    let mut pipes = Pipes::new(conn.is_cluster());
    let mut must_arrive = HashSet::new();
    let mut activity = Activity::default();
    let mut spaced = SpacedWrites::default();
    // What this batch publishes, a bundle per channel in the order the channels came up.
    let mut bundles: Vec<(Channel, Vec<u8>)> = Vec::new();
    let mut bundle_of: HashMap<Channel, usize> = HashMap::new();
    let mut flushed = Vec::new();
    let mut pruned_at = writer.clock.instant();
    loop {
        // Wait for commands, or for held cache writes to fall due.
        let received = match spaced.next_due() {
            None => commands.recv_many(&mut batch, BATCH).await,
            Some(due) => {
                let wait = due.saturating_duration_since(writer.clock.instant());
                tokio::select! {
                    biased;
                    received = commands.recv_many(&mut batch, BATCH) => received,
                    () = tokio::time::sleep(wait) => usize::MAX,
                }
            }
        };
        if received == 0 {
            return; // the bus is gone
        }
        let flushing = batch.iter().any(|c| matches!(c, Command::Flush(_)));
        // Positions wait to share a pipeline; anything else (chat, presence, a flush) goes
        // at once.
        if !batch.is_empty()
            && batch.iter().all(Command::may_wait)
            && !writer.batch_delay.is_zero()
            && batch.len() < BATCH
        {
            tokio::time::sleep(writer.batch_delay).await;
            while batch.len() < BATCH
                && let Ok(command) = commands.try_recv()
            {
                batch.push(command);
            }
        }
        queue.taken(&batch);
        must_arrive.clear();
        let now = writer.clock.instant();
        if now.duration_since(pruned_at) >= PRUNE_EVERY {
            pruned_at = now;
            activity.prune(now);
            spaced.prune(now);
        }
        for command in batch.drain(..) {
            must_arrive.extend(command.must_arrive());
            match command {
                Command::Publish { channel, payload, .. } => match bundle_of.get(&channel) {
                    Some(&at) => wire::append(&mut bundles[at].1, &payload),
                    None => {
                        bundle_of.insert(channel, bundles.len());
                        bundles.push((channel, payload));
                    }
                },
                Command::PutLocation { session_id, user_id, value, fix_ms, at_ms } => {
                    // The hot path: held and written with the session's others (`spaced`);
                    // the session's activity only when it is due.
                    spaced.put(session_id, user_id, fix_ms, value, now);
                    if activity.due(session_id, now) {
                        let key = keys.activity(session_id);
                        pipes.on(&key).set_ex(key, at_ms, key_ttl_secs).ignore();
                    }
                }
                Command::RemoveLocation { session_id, user_id } => {
                    spaced.forget_user(session_id, user_id);
                    let key = keys.locations(session_id);
                    pipes.on(&key).hdel(key, user_id.to_string()).ignore();
                }
                Command::ClearSession { session_id } => {
                    spaced.forget_session(session_id);
                    activity.forget(session_id);
                    // One slot on a cluster: the names share the session's hash tag.
                    let names = [
                        keys.locations(session_id),
                        keys.activity(session_id),
                        keys.presence(Channel::Session(session_id)),
                    ];
                    pipes.on(&names[0]).del(&names).ignore();
                }
                Command::PresenceJoin { channel, field, json } => {
                    let key = keys.presence(channel);
                    pipes.on(&key).hset(&key, field, json).ignore().expire(&key, PRESENCE_TTL_SECS).ignore();
                    pipes
                        .on(&channels_key)
                        .sadd(&channels_key, channel.name())
                        .ignore()
                        .expire(&channels_key, PRESENCE_TTL_SECS)
                        .ignore();
                }
                Command::PresenceLeave { channel, field, last } => {
                    let key = keys.presence(channel);
                    pipes.on(&key).hdel(key, field).ignore();
                    if last {
                        pipes.on(&channels_key).srem(&channels_key, channel.name()).ignore();
                    }
                }
                Command::PresenceRefresh => {
                    for channel in writer.presence.channels() {
                        let key = keys.presence(channel);
                        pipes.on(&key).expire(key, PRESENCE_TTL_SECS).ignore();
                        if let Channel::Room(room) = channel {
                            let key = keys.room_members(room);
                            pipes.on(&key).expire(key, PRESENCE_TTL_SECS).ignore();
                        }
                    }
                    pipes.on(&channels_key).expire(&channels_key, PRESENCE_TTL_SECS).ignore();
                }
                Command::PresenceReplace { channel } => {
                    let key = keys.presence(channel);
                    let metas = writer.presence.list(channel);
                    let script = pipes
                        .on(&key)
                        .cmd("EVAL")
                        .arg(REPLACE_PRESENCE_SCRIPT)
                        .arg(1)
                        .arg(&key)
                        .arg(format!("{instance}:"))
                        .arg(PRESENCE_TTL_SECS);
                    for meta in &metas {
                        let json = serde_json::to_string(meta).unwrap_or_default();
                        script.arg(presence_field(writer.instance_id, &meta.phx_ref)).arg(json);
                    }
                    script.ignore();
                    let index = pipes.on(&channels_key);
                    if metas.is_empty() {
                        index.srem(&channels_key, channel.name()).ignore();
                    } else {
                        index.sadd(&channels_key, channel.name()).ignore();
                        index.expire(&channels_key, PRESENCE_TTL_SECS).ignore();
                    }
                }
                Command::Flush(done) => flushed.push(done),
            }
        }
        for (session_id, fields) in spaced.take_due(now, flushing) {
            let key = keys.locations(session_id);
            let fields: Vec<(String, String)> = fields.into_iter().map(|(u, v)| (u.to_string(), v)).collect();
            pipes.on(&key).hset_multiple(&key, &fields).ignore().expire(&key, key_ttl).ignore();
        }
        // Publishes last: a message is read after what the same batch wrote (on a
        // cluster, what it wrote to the same session: the same slot's pipeline).
        bundle_of.clear();
        for (channel, payload) in bundles.drain(..) {
            let name = keys.channel(channel);
            let pipe = pipes.on(&name);
            if keys.tagged {
                pipe.cmd("SPUBLISH").arg(&name).arg(payload).ignore();
            } else {
                pipe.publish(&name, payload).ignore();
            }
        }
        // A batch of only flushes has nothing to send (the redis client refuses an empty
        // pipeline, which would trip the breaker for nothing).
        let slot_of = |channel| keys.slot(channel);
        if let Some(failed) = pipes.send(&conn, now, &breaker.slot_recovered, &must_arrive, slot_of).await {
            activity.clear(); // what the batch wrote may be missing
            ::metrics::counter!("convoy_bus_publish_errors_total").increment(1);
            // What failed may not have reached Redis: its sessions get a Resync on recovery.
            breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner()).extend(failed.channels);
            if failed.whole {
                breaker.trip(failed.error);
            }
        }
        if !flushed.is_empty()
            && let Some(failed) = pipes.drain(now, &breaker.slot_recovered).await
        {
            breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner()).extend(failed.channels);
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// When each session's last activity (read by the sweeper at a resolution of seconds) was
/// last written: it is written at most once an ACTIVITY_SPACING.
#[derive(Default)]
pub(super) struct Activity {
    written: HashMap<SessionId, Instant>,
}

impl Activity {
    /// Whether the session's activity is due; if so, it counts as written now.
    pub(super) fn due(&mut self, session_id: SessionId, now: Instant) -> bool {
        match self.written.get(&session_id) {
            Some(at) if now.duration_since(*at) < ACTIVITY_SPACING => false,
            _ => {
                self.written.insert(session_id, now);
                true
            }
        }
    }

    pub(super) fn forget(&mut self, session_id: SessionId) {
        self.written.remove(&session_id);
    }

    pub(super) fn clear(&mut self) {
        self.written.clear();
    }

    /// Drops what would be due anyway, so ended sessions do not accumulate.
    pub(super) fn prune(&mut self, now: Instant) {
        self.written.retain(|_, at| now.duration_since(*at) < ACTIVITY_SPACING);
    }
}

/// How often the writer forgets what it remembers of sessions that went quiet (ended
/// sessions do not accumulate).
const PRUNE_EVERY: Duration = Duration::from_secs(30);
