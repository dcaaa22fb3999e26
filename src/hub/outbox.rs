//! One connection's outbound queue and the slow-consumer policy: at most one pending
//! location per sender (a newer one replaces the older in place: locations are state) and
//! at most `capacity` other events, or `max_bytes` of them; a connection past either is
//! closed with 1013 and resynchronises from a snapshot when it reconnects. Events are
//! never dropped silently.
//!
//! Written through: when nothing is queued and the connection's writer is not writing, a
//! frame is written to the socket by whoever delivers it (`DirectWrite`), as a broker's
//! single loop does, instead of queued and its writer task woken for it: one system call
//! per delivery and no wake-up. Only what the socket cannot take at once is queued (a
//! frame cut short is finished by the writer first).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::view::ViewFilter;
use crate::domain::{Location, UserId};
use crate::message::{CloseReason, Frame, Wire, close_code};
use crate::metrics::RealtimeMetrics;
use crate::protocol::native::location_batch;

/// Presence diffs one connection may have queued; past that it gets a fresh
/// `presence_state` (a resync) instead of more diffs: presence is state, and a burst of
/// reconnects must not fill every queue with diffs.
pub(super) const PRESENCE_BURST: usize = 32;

/// Room a drained queue keeps for its items; a burst's room beyond it is given back, so an
/// idle connection does not keep what its snapshot's presence or a wave of joins needed.
const KEPT_ITEMS: usize = 8;

#[derive(Debug)]
enum Item {
    Frame(Frame),
    /// The pending location of this sender, kept in `Queue::locations`.
    Location(UserId),
    /// Positions gathered for one `location_batch` (batched delivery): the latest
    /// `location_broadcast` of each sender. Only the last item can still take more: an
    /// event queued behind a batch seals it, so positions and events keep their order.
    Batch(Vec<(UserId, Frame)>),
}

/// Where a connection's frames can be written without its writer task: its socket.
pub trait DirectWrite: Send + Sync {
    /// Writes `frame` (header and payload) from byte `offset` of it on, without waiting:
    /// None when the rest of it went out, else the offset reached (unchanged when the
    /// socket took nothing, or failed: the writer task meets the failure itself).
    fn try_write(&self, frame: &Frame, offset: usize) -> Option<usize>;
}

/// The socket, while the connection is served.
struct Direct(Arc<dyn DirectWrite>);

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Direct")
    }
}

/// What the writer takes to write.
#[derive(Debug, Default)]
pub struct Drained {
    /// Bytes of the first frame taken that were already written (by a delivery that wrote
    /// it through and was cut short): the writer writes the rest first.
    pub resume_at: usize,
    /// A heartbeat ping is due (`Outbox::ping`): the writer sends one before the frames.
    pub ping: bool,
    /// The close to send after the frames, if one was asked for.
    pub close: Option<CloseReason>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Replies that must go out before everything else, even a snapshot (a channel join's
    /// reply); never replaced.
    first: Vec<Frame>,
    /// The newest snapshot (one or more frames), written before everything but `first`; a
    /// newer one replaces it.
    snapshot: Vec<Frame>,
    /// The session's named topics this connection subscribed to.
    topics: HashSet<Arc<str>>,
    items: VecDeque<Item>,
    /// Looked up on every delivery: foldhash, not SipHash (the keys are server-made ids).
    locations: HashMap<UserId, Frame, foldhash::fast::RandomState>,
    events: usize,
    /// Bytes of the events queued since the last drain.
    event_bytes: usize,
    /// Presence diffs queued since the last drain.
    presence: usize,
    /// Nothing is written until the next snapshot (a channel join is being answered).
    holding: bool,
    close: Option<CloseReason>,
    closed: bool,
    /// The connection's `view_settings`, if it set any: nothing to check otherwise.
    /// Boxed: few connections set one, and every connection's queue would keep its room.
    view: Option<Box<ViewFilter>>,
    /// Batched delivery (`batch_ms`): how long positions are gathered.
    batch_window: Option<Duration>,
    /// Positions are gathered and this connection waits for its window's tick.
    batch_open: bool,
    /// The tick came: what was gathered goes out.
    batch_released: bool,
    /// Deliveries may write through to here (while the connection is served).
    direct: Option<Direct>,
    /// A snapshot was queued: from then on a frame written through cannot overtake it.
    live: bool,
    /// The writer took frames (or a ping) and is writing them: nothing is written through.
    writing: bool,
    /// A frame written through in part, and the bytes of it written.
    partial: Option<(Frame, usize)>,
    /// A heartbeat ping is due.
    ping: bool,
}

impl Queue {
    /// Whether a frame may be written through now (if a socket is attached): nothing queued
    /// or being written could go out after it.
    fn open_for_direct(&self) -> bool {
        self.live
            && !self.writing
            && !self.holding
            && !self.closed
            && self.partial.is_none()
            && self.items.is_empty()
            && self.first.is_empty()
            && self.snapshot.is_empty()
    }
}

/// What `write_through` did with a frame.
enum Through {
    Written,
    /// Written in part: the writer must finish it (and is to be woken).
    Cut,
    /// Not written: queue it.
    Not(Frame),
}

/// One connection's outbound queue. Producers push without waiting; the connection's
/// writer task drains everything pending at once and flushes the socket once.
#[derive(Debug)]
pub struct Outbox {
    /// Unique on this instance.
    pub(super) id: u64,
    pub(super) wire: Wire,
    queue: Mutex<Queue>,
    ready: Notify,
    resync: Notify,
    closing: CancellationToken,
    /// Hub messages other than closes are not delivered (a Phoenix socket with no joined
    /// channel). Replies pushed by the connection itself still go out.
    muted: std::sync::atomic::AtomicBool,
    /// The batch window in milliseconds when this connection takes its session's shared
    /// batches (batched delivery and no `view_settings`), else 0: read on every fan-out
    /// without the queue's lock.
    shared_batch_ms: AtomicU64,
    capacity: usize,
    /// Bytes of undelivered events past which the connection is closed as too slow.
    max_bytes: usize,
    metrics: Arc<RealtimeMetrics>,
}

impl Outbox {
    /// A native outbox bounded by `capacity` events only (tests).
    pub fn new(capacity: usize, metrics: Arc<RealtimeMetrics>) -> Self {
        Self::with_wire(Wire::Native, capacity, usize::MAX, metrics)
    }

    pub fn with_wire(wire: Wire, capacity: usize, max_bytes: usize, metrics: Arc<RealtimeMetrics>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            wire,
            queue: Mutex::default(),
            ready: Notify::new(),
            resync: Notify::new(),
            closing: CancellationToken::new(),
            muted: std::sync::atomic::AtomicBool::new(false),
            shared_batch_ms: AtomicU64::new(0),
            capacity,
            max_bytes,
            metrics,
        }
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut queue)
    }

    /// Queues a sender's location (`frame` encodes `location`), replacing its pending one
    /// if the writer is behind. With batched delivery: whether this opened a batch, which
    /// the hub must then have released at its window's next tick.
    pub fn push_location(&self, from: UserId, location: &Location, frame: Frame, now: Instant) -> bool {
        let (mut opened, mut overflowed) = (false, false);
        let queued = self.with_queue(|q| {
            if q.closed {
                return false;
            }
            if let Some(view) = &mut q.view
                && !view.admits(from, location, now)
            {
                return false;
            }
            if q.batch_window.is_some() {
                match self.gather(q, from, frame) {
                    Some(new) => opened = new,
                    None => overflowed = true,
                }
                return false; // the tick wakes the writer
            }
            let frame = match self.write_through(q, frame) {
                Through::Written => return false,
                Through::Cut => return true,
                Through::Not(frame) => frame,
            };
            match q.locations.entry(from) {
                Entry::Occupied(mut pending) => {
                    pending.insert(frame);
                    self.metrics.coalesced.increment(1);
                }
                Entry::Vacant(slot) => {
                    slot.insert(frame);
                    q.items.push_back(Item::Location(from));
                }
            }
            true
        });
        if overflowed {
            self.closed_as_too_slow();
            self.ready.notify_one();
        }
        if queued {
            self.ready.notify_one();
        }
        opened
    }

    /// Adds a position to the open batch (or starts one): whether the connection now waits
    /// for a tick (it did not already), or None if that took the queue past its bounds. A
    /// batch counts as an event, and its positions' bytes as event bytes: batches sealed
    /// by events between them cannot pile up past the queue's bounds.
    fn gather(&self, q: &mut Queue, from: UserId, frame: Frame) -> Option<bool> {
        let new_batch = !matches!(q.items.back(), Some(Item::Batch(_)));
        if let Some(Item::Batch(open)) = q.items.back_mut()
            && let Some((_, older)) = open.iter_mut().find(|(sender, _)| *sender == from)
        {
            *older = frame;
            self.metrics.coalesced.increment(1);
        } else {
            if self.overflows(q, frame.len()) {
                return None;
            }
            q.event_bytes += frame.len();
            if new_batch {
                q.events += 1;
                q.items.push_back(Item::Batch(vec![(from, frame)]));
            } else if let Some(Item::Batch(open)) = q.items.back_mut() {
                open.push((from, frame));
            }
        }
        Some(!std::mem::replace(&mut q.batch_open, true))
    }

    /// The tick of this connection's window came: what it gathered goes out.
    pub(super) fn release_batch(&self) {
        let release = self.with_queue(|q| {
            q.batch_released = q.batch_open;
            q.batch_open
        });
        if release {
            self.ready.notify_one();
        }
    }

    /// Turns on batched delivery (`batch_ms`) for this native connection: others'
    /// positions go out as one `location_batch` per `window`.
    pub fn set_batch(&self, window: Option<Duration>) {
        if self.wire == Wire::Native {
            self.with_queue(|q| {
                q.batch_window = window;
                self.share_batches(q);
            });
        }
    }

    /// Batched and unfiltered: the session's batch, built once, is this connection's too.
    /// With `view_settings` its batches are gathered here, position by position.
    fn share_batches(&self, q: &Queue) {
        let ms = match (&q.view, q.batch_window) {
            (None, Some(window)) => u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            _ => 0,
        };
        self.shared_batch_ms.store(ms, Ordering::Relaxed);
    }

    /// The window of the session batches this connection takes (see `share_batches`).
    pub(super) fn shared_batch(&self) -> Option<Duration> {
        let ms = self.shared_batch_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// The batching window, if this connection asked for batched delivery.
    pub fn batch_window(&self) -> Option<Duration> {
        self.with_queue(|q| q.batch_window)
    }

    /// This connection's `view_settings` (zero: none).
    pub fn view(&self) -> (std::time::Duration, f64) {
        self.with_queue(|q| {
            q.view.as_ref().map_or((std::time::Duration::ZERO, 0.0), |v| (v.min_interval, v.min_distance_m))
        })
    }

    /// Sets this connection's `view_settings` (both zero: no filter at all).
    /// `refresh`: how long a position may be held back for being too close.
    pub fn set_view(
        &self,
        min_interval: std::time::Duration,
        min_distance_m: f64,
        refresh: std::time::Duration,
    ) {
        let left_shared = self.with_queue(|q| {
            let was_shared = self.shared_batch().is_some();
            q.view = ViewFilter::new(min_interval, min_distance_m, refresh).map(Box::new);
            self.share_batches(q);
            was_shared && self.shared_batch().is_none()
        });
        // Positions waiting in the session's batch no longer come to this connection: a
        // fresh snapshot has them.
        if left_shared {
            self.request_resync();
        }
    }

    /// Queues an event; past capacity (in events or in bytes) the connection is closed as
    /// too slow.
    pub fn push_event(&self, frame: Frame) {
        let (overflowed, wake) = self.with_queue(|q| {
            if q.closed {
                return (false, true);
            }
            let frame = match self.write_through(q, frame) {
                Through::Written => return (false, false),
                Through::Cut => return (false, true),
                Through::Not(frame) => frame,
            };
            if self.overflows(q, frame.len()) {
                return (true, true);
            }
            q.event_bytes += frame.len();
            q.items.push_back(Item::Frame(frame));
            q.events += 1;
            (false, true)
        });
        if overflowed {
            self.closed_as_too_slow();
        }
        if wake {
            self.ready.notify_one();
        }
    }

    /// Writes `frame` to the socket at once if it may go now and the socket takes it.
    fn write_through(&self, q: &mut Queue, frame: Frame) -> Through {
        if !q.open_for_direct() {
            return Through::Not(frame);
        }
        let Some(Direct(socket)) = &q.direct else { return Through::Not(frame) };
        let through = match socket.try_write(&frame, 0) {
            None => {
                self.metrics.frames_out.increment(1);
                Through::Written
            }
            Some(0) => return Through::Not(frame),
            Some(written) => {
                q.partial = Some((frame, written));
                Through::Cut
            }
        };
        // Nothing is queued: no presence diffs either (`push_presence` counted this one).
        q.presence = 0;
        through
    }

    /// Lets deliveries write through to `socket` once a snapshot is queued (see the module).
    pub fn attach(&self, socket: Arc<dyn DirectWrite>) {
        self.with_queue(|q| q.direct = Some(Direct(socket)));
    }

    /// Deliveries queue again (the connection is no longer served).
    pub fn detach(&self) {
        self.with_queue(|q| q.direct = None);
    }

    /// A heartbeat ping is due: the writer sends one with what it writes next (at once if
    /// nothing else is waiting). The connection's reader keeps the time, in the timer it
    /// has anyway: a socket holds no timer of its own for pings.
    pub fn ping(&self) {
        self.with_queue(|q| q.ping = true);
        self.ready.notify_one();
    }

    /// Wakes the writer for what the connection itself wants written (a pong).
    pub fn wake_writer(&self) {
        self.ready.notify_one();
    }

    /// The writer wrote what it took: deliveries may write through again. A queue that
    /// stayed empty meanwhile gives back its room: from here on deliveries write through,
    /// so an idle socket keeps none (a writer that falls behind finds the queue filled
    /// again while it writes, and keeps the room).
    pub fn written(&self) {
        self.with_queue(|q| {
            q.writing = false;
            if q.items.is_empty() && q.items.capacity() > 0 {
                q.items = VecDeque::new();
            }
            if q.locations.is_empty() && q.locations.capacity() > 0 {
                q.locations = HashMap::default();
            }
        });
    }

    /// Whether `bytes` more (of an event, or of a batch) would take the queue past its
    /// bounds; if so, it is emptied and set to close as too slow.
    fn overflows(&self, q: &mut Queue, bytes: usize) -> bool {
        if q.events < self.capacity && q.event_bytes.saturating_add(bytes) <= self.max_bytes {
            return false;
        }
        q.first.clear();
        q.snapshot.clear();
        q.items.clear();
        q.locations.clear();
        q.batch_open = false;
        q.close = Some(CloseReason::new(close_code::TRY_AGAIN_LATER, "too slow: reconnect to resynchronise"));
        q.closed = true;
        true
    }

    fn closed_as_too_slow(&self) {
        self.metrics.slow_consumer_closes.increment(1);
        self.closing.cancel();
    }

    /// Queues a presence diff, unless a burst of them is already waiting: then the
    /// connection resynchronises instead (its snapshot carries `presence_state`).
    pub fn push_presence(&self, frame: Frame) {
        let (queue, resync) = self.with_queue(|q| {
            q.presence += 1;
            (q.presence <= PRESENCE_BURST, q.presence == PRESENCE_BURST + 1)
        });
        if queue {
            self.push_event(frame);
        } else if resync {
            self.request_resync();
        }
    }

    /// Queues an event if this connection subscribed to `topic`.
    pub fn push_topic(&self, topic: &str, frame: Frame) {
        if self.with_queue(|q| q.topics.contains(topic)) {
            self.push_event(frame);
        }
    }

    /// Adds named topics, unless that would make more than `max`; returns whether it did.
    pub fn subscribe_topics(&self, topics: &[Arc<str>], max: usize) -> bool {
        self.with_queue(|q| {
            let new = topics.iter().filter(|t| !q.topics.contains(*t)).collect::<HashSet<_>>().len();
            if q.topics.len() + new > max {
                return false;
            }
            q.topics.extend(topics.iter().cloned());
            true
        })
    }

    pub fn unsubscribe_topics(&self, topics: &[Arc<str>]) {
        self.with_queue(|q| topics.iter().for_each(|t| _ = q.topics.remove(t)));
    }

    /// Queues a snapshot ahead of everything pending: it is the newest state, and what is
    /// queued behind it only repeats or follows it. One slot: a newer snapshot replaces a
    /// pending older one.
    pub fn push_snapshot(&self, frames: Vec<Frame>) {
        let queued = self.with_queue(|q| {
            if q.closed {
                return false;
            }
            q.snapshot = frames;
            q.holding = false;
            q.live = true;
            q.presence = 0; // the snapshot carries presence_state: earlier diffs are moot
            true
        });
        if queued {
            self.ready.notify_one();
        }
    }

    /// Queues a reply ahead of the snapshot and everything else.
    pub fn push_first(&self, frame: Frame) {
        let queued = self.with_queue(|q| {
            if q.closed {
                return false;
            }
            q.first.push(frame);
            true
        });
        if queued {
            self.ready.notify_one();
        }
    }

    /// Stops (or resumes) delivery of hub messages other than closes and resyncs.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    pub fn is_muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// Writes nothing more until the next `push_snapshot` (or `release`): what arrives
    /// meanwhile is queued behind that snapshot, as on a fresh connection.
    pub fn hold_until_snapshot(&self) {
        self.with_queue(|q| q.holding = true);
    }

    /// Ends a hold without a snapshot.
    pub fn release(&self) {
        self.with_queue(|q| q.holding = false);
        self.ready.notify_one();
    }

    /// Asks the connection to rebuild its snapshot (see `HubMessage::Resync`).
    pub fn request_resync(&self) {
        self.resync.notify_one();
    }

    pub async fn resync_requested(&self) {
        self.resync.notified().await;
    }

    /// Asks the writer to send `last` after what is pending, then close.
    /// Only the first close counts.
    pub fn close(&self, last: impl IntoIterator<Item = Frame>, reason: CloseReason) {
        let first = self.with_queue(|q| {
            if q.closed {
                return false;
            }
            q.items.extend(last.into_iter().map(Item::Frame));
            q.close = Some(reason);
            q.closed = true;
            true
        });
        if first {
            self.closing.cancel();
            self.ready.notify_one();
        }
    }

    /// Moves every pending frame into `out`, oldest first (a frame written through in part
    /// before them all), and says what else the writer must know. Until `written`, nothing
    /// is written through: the writer is writing.
    pub fn drain(&self, out: &mut Vec<Frame>) -> Drained {
        self.with_queue(|q| {
            q.writing = true;
            let mut drained = Drained { ping: std::mem::take(&mut q.ping), ..Drained::default() };
            if let Some((frame, written)) = q.partial.take() {
                out.push(frame);
                drained.resume_at = written;
            }
            if q.holding && q.close.is_none() {
                return drained;
            }
            // Gathered positions wait for their window unless something else goes now.
            let only_batches = q.first.is_empty()
                && q.snapshot.is_empty()
                && q.close.is_none()
                && q.items.iter().all(|item| matches!(item, Item::Batch(_)));
            if only_batches && !q.batch_released {
                return drained;
            }
            (q.batch_open, q.batch_released) = (false, false);
            out.reserve(q.items.len() + q.first.len() + q.snapshot.len());
            out.append(&mut q.first);
            out.append(&mut q.snapshot);
            for item in q.items.drain(..) {
                match item {
                    Item::Frame(frame) => out.push(frame),
                    Item::Location(from) => out.extend(q.locations.remove(&from)),
                    Item::Batch(locations) => out.push(location_batch(locations.iter().map(|(_, f)| f))),
                }
            }
            // Only well past the kept room: a queue that regularly holds a few more must
            // not reallocate on every drain.
            if q.items.capacity() > 2 * KEPT_ITEMS {
                q.items.shrink_to(KEPT_ITEMS);
            }
            if q.locations.capacity() > 2 * KEPT_ITEMS {
                q.locations.shrink_to(KEPT_ITEMS);
            }
            q.events = 0;
            q.event_bytes = 0;
            q.presence = 0;
            drained.close = q.close.take();
            drained
        })
    }

    /// Frames waiting to be written.
    pub fn pending(&self) -> usize {
        self.with_queue(|q| q.items.len() + q.first.len() + q.snapshot.len())
    }

    /// Resolves when something was queued since the last drain.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Resolves once a close has been asked for (and again on every poll after that).
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closing.cancelled()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }
}
