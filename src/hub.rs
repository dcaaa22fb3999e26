//! The hub: which local connections listen to which channel (a session, or a local chat
//! room), and the bounded outbound
//! queue of each connection. A message is serialized once by whoever publishes it; the hub
//! hands the same bytes to every subscriber's queue and never waits on a socket.
//!
//! Slow-consumer policy: a connection's queue keeps at most one pending location per
//! sender (a newer one replaces the older in place) and at most `capacity` other events.
//! Events are never dropped silently: a connection that overflows is closed with 1013 and
//! resynchronises from the snapshot when it reconnects.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::domain::{SessionId, UserId};
use crate::message::{Channel, CloseReason, Envelope, Frame, HubMessage, Wire, close_code};
use crate::metrics::RealtimeMetrics;

/// Presence diffs one connection may have queued; past that it gets a fresh
/// `presence_state` (a resync) instead of more diffs: presence is state, and a burst of
/// reconnects must not fill every queue with diffs.
const PRESENCE_BURST: usize = 32;

/// How long a first subscriber waits for the bus to confirm its subscription.
const BUS_SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug)]
enum Item {
    Frame(Frame),
    /// The pending location of this sender, kept in `Queue::locations`.
    Location(UserId),
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
    locations: HashMap<UserId, Frame>,
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
    view: Option<ViewFilter>,
}

/// A viewer's rules for others' positions (`view_settings`): none sooner than
/// `min_interval` after the last one delivered from the same sender, none closer than
/// `min_distance_m` to it unless `refresh` has passed (so a participant who stays put does
/// not expire on the viewer's map). Decided as positions are queued, so a refused one is
/// never written.
#[derive(Debug)]
struct ViewFilter {
    min_interval: std::time::Duration,
    min_distance_m: f64,
    refresh: std::time::Duration,
    /// Per sender: when and where the last delivered position was.
    last: HashMap<UserId, (std::time::Instant, f64, f64)>,
}

impl ViewFilter {
    fn admits(&mut self, from: UserId, frame: &Frame) -> bool {
        #[derive(serde::Deserialize)]
        struct At {
            lat: f64,
            lng: f64,
        }
        #[derive(serde::Deserialize)]
        struct Broadcast {
            data: At,
        }
        // Only connections with rules pay for reading the position back.
        let Ok(Broadcast { data: At { lat, lng } }) = serde_json::from_str::<Broadcast>(frame.as_str())
        else {
            return true;
        };
        let now = std::time::Instant::now();
        if let Some(&(at, last_lat, last_lng)) = self.last.get(&from) {
            let elapsed = now.duration_since(at);
            let moved = crate::domain::distance_m(last_lat, last_lng, lat, lng);
            if elapsed < self.min_interval || (moved < self.min_distance_m && elapsed < self.refresh) {
                return false;
            }
        }
        self.last.insert(from, (now, lat, lng));
        true
    }
}

/// One connection's outbound queue. Producers push without waiting; the connection's
/// writer task drains everything pending at once and flushes the socket once.
#[derive(Debug)]
pub struct Outbox {
    /// Unique on this instance.
    id: u64,
    wire: Wire,
    queue: Mutex<Queue>,
    ready: Notify,
    resync: Notify,
    closing: CancellationToken,
    /// Hub messages other than closes are not delivered (a Phoenix socket with no joined
    /// channel). Replies pushed by the connection itself still go out.
    muted: std::sync::atomic::AtomicBool,
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
            capacity,
            max_bytes,
            metrics,
        }
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut queue)
    }

    /// Queues a sender's location, replacing its pending one if the writer is behind.
    pub fn push_location(&self, from: UserId, frame: Frame) {
        let queued = self.with_queue(|q| {
            if q.closed {
                return false;
            }
            if let Some(view) = &mut q.view
                && !view.admits(from, &frame)
            {
                return false;
            }
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
        if queued {
            self.ready.notify_one();
        }
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
        self.with_queue(|q| {
            q.view = (!min_interval.is_zero() || min_distance_m > 0.0).then(|| ViewFilter {
                min_interval,
                min_distance_m,
                refresh,
                last: HashMap::new(),
            });
        });
    }

    /// Queues an event; past capacity (in events or in bytes) the connection is closed as
    /// too slow.
    pub fn push_event(&self, frame: Frame) {
        let (capacity, max_bytes) = (self.capacity, self.max_bytes);
        let overflowed = self.with_queue(|q| {
            if q.closed {
                return false;
            }
            if q.events >= capacity || q.event_bytes.saturating_add(frame.len()) > max_bytes {
                q.first.clear();
                q.snapshot.clear();
                q.items.clear();
                q.locations.clear();
                q.close = Some(CloseReason::new(
                    close_code::TRY_AGAIN_LATER,
                    "too slow: reconnect to resynchronise",
                ));
                q.closed = true;
                return true;
            }
            q.event_bytes += frame.len();
            q.items.push_back(Item::Frame(frame));
            q.events += 1;
            false
        });
        if overflowed {
            self.metrics.slow_consumer_closes.increment(1);
            self.closing.cancel();
        }
        self.ready.notify_one();
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

    /// Moves every pending frame into `out`, oldest first, and returns the close to send
    /// after them, if one was asked for.
    pub fn drain(&self, out: &mut Vec<Frame>) -> Option<CloseReason> {
        self.with_queue(|q| {
            if q.holding && q.close.is_none() {
                return None;
            }
            out.reserve(q.items.len() + q.first.len() + q.snapshot.len());
            out.append(&mut q.first);
            out.append(&mut q.snapshot);
            for item in q.items.drain(..) {
                match item {
                    Item::Frame(frame) => out.push(frame),
                    Item::Location(from) => out.extend(q.locations.remove(&from)),
                }
            }
            q.events = 0;
            q.event_bytes = 0;
            q.presence = 0;
            q.close.take()
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

#[derive(Clone)]
struct Subscriber {
    user_id: UserId,
    outbox: Arc<Outbox>,
}

/// Channels to local subscribers. Cheap to share: wrap it in an `Arc`.
pub struct Hub {
    channels: RwLock<HashMap<Channel, Vec<Subscriber>>>,
    bus: Arc<dyn Bus>,
    /// Session subscriptions: one per open socket.
    connections: AtomicUsize,
    queue_capacity: usize,
    queue_max_bytes: usize,
    metrics: Arc<RealtimeMetrics>,
}

impl Hub {
    /// Each connection's queue holds at most `queue_capacity` events and `queue_max_bytes`
    /// bytes of them (pending locations and snapshots aside: one of each per sender).
    pub fn new(
        bus: Arc<dyn Bus>,
        queue_capacity: usize,
        queue_max_bytes: usize,
        metrics: Arc<RealtimeMetrics>,
    ) -> Self {
        let connections = AtomicUsize::new(0);
        Self { channels: RwLock::default(), bus, connections, queue_capacity, queue_max_bytes, metrics }
    }

    /// A new connection's outbound queue.
    pub fn outbox(&self, wire: Wire) -> Arc<Outbox> {
        Arc::new(Outbox::with_wire(wire, self.queue_capacity, self.queue_max_bytes, self.metrics.clone()))
    }

    /// Registers a connection of `user_id` on the channel; dropping the returned
    /// subscription unregisters it. The first local subscriber of a channel also waits
    /// (briefly) until the bus delivers that channel's messages from other instances.
    pub async fn subscribe(
        self: &Arc<Self>,
        channel: Channel,
        user_id: UserId,
        outbox: Arc<Outbox>,
    ) -> Subscription {
        // The bus hears subscribe and unsubscribe in the order the channel map changed:
        // both are sent under its lock (sending only queues a command).
        let confirmed = {
            let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
            let subscribers = channels.entry(channel).or_default();
            subscribers.push(Subscriber { user_id, outbox: outbox.clone() });
            (subscribers.len() == 1).then(|| self.bus.subscribe(channel))
        };
        if matches!(channel, Channel::Session(_)) {
            self.connections.fetch_add(1, Ordering::Relaxed);
            self.metrics.connections.increment(1.0);
        }
        let subscription = Subscription { hub: self.clone(), channel, outbox };
        if let Some(confirmed) = confirmed
            && tokio::time::timeout(BUS_SUBSCRIBE_WAIT, confirmed).await.is_err()
        {
            tracing::warn!(channel = %channel.name(), "bus subscription not confirmed in time; continuing");
        }
        subscription
    }

    fn unsubscribe(&self, channel: Channel, outbox_id: u64) {
        {
            let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
            let Some(subscribers) = channels.get_mut(&channel) else { return };
            subscribers.retain(|s| s.outbox.id != outbox_id);
            if subscribers.is_empty() {
                channels.remove(&channel);
                self.bus.unsubscribe(channel);
            }
        }
        if matches!(channel, Channel::Session(_)) {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.connections.decrement(1.0);
        }
    }

    /// Delivers to this instance's subscribers, then hands the message to the bus.
    pub fn publish(&self, envelope: Envelope) {
        self.deliver_local(&envelope);
        self.bus.publish(&envelope);
    }

    /// Delivers to this instance's subscribers only (messages from the bus come in here).
    pub fn deliver_local(&self, envelope: &Envelope) {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let Some(subscribers) = channels.get(&envelope.channel) else { return };
        let started = std::time::Instant::now();
        let framed = Framed::new(envelope);
        for sub in subscribers {
            let wire = sub.outbox.wire;
            let closes = matches!(envelope.message, HubMessage::Disconnect { .. } | HubMessage::End { .. });
            if sub.outbox.is_muted() && !closes {
                continue;
            }
            match &envelope.message {
                HubMessage::Location { from, .. } => {
                    if sub.user_id != *from
                        && let Some(frame) = framed.get(wire)
                    {
                        sub.outbox.push_location(*from, frame);
                    }
                }
                HubMessage::Direct { to, .. } if sub.user_id != *to => {}
                HubMessage::Event { .. } | HubMessage::Direct { .. } => {
                    if let Some(frame) = framed.get(wire) {
                        sub.outbox.push_event(frame);
                    }
                }
                HubMessage::Topic { topic, .. } => {
                    if let Some(frame) = framed.get(wire) {
                        sub.outbox.push_topic(topic, frame);
                    }
                }
                HubMessage::Presence { .. } => {
                    if let Some(frame) = framed.get(wire) {
                        sub.outbox.push_presence(frame);
                    }
                }
                HubMessage::Disconnect { user_id, code, reason } => {
                    if sub.user_id == *user_id {
                        // A Phoenix client hears its channel close first.
                        let last = match wire {
                            Wire::Native => None,
                            _ => crate::protocol::phoenix::channel_closed(wire, envelope.channel),
                        };
                        sub.outbox.close(last, CloseReason { code: *code, reason: reason.clone() });
                    }
                }
                HubMessage::Resync => sub.outbox.request_resync(),
                HubMessage::End { .. } if wire == Wire::Native => {
                    let last = framed.get(wire);
                    sub.outbox.close(last, CloseReason::new(close_code::NORMAL, "session ended"));
                }
                HubMessage::End { .. } => {
                    // As Phoenix does: the channel closes, the socket stays (the client
                    // would otherwise reconnect to an ended session again and again).
                    if !sub.outbox.is_muted() {
                        let closed = crate::protocol::phoenix::channel_closed(wire, envelope.channel);
                        for frame in framed.get(wire).into_iter().chain(closed) {
                            sub.outbox.push_event(frame);
                        }
                    }
                    sub.outbox.set_muted(true);
                }
            }
        }
        self.metrics.fanout_seconds.record(started.elapsed());
    }

    /// Every local connection rebuilds its snapshot: this instance may have missed
    /// messages from the others (its bus connection was down).
    pub fn resync_all(&self) {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        for sub in channels.values().flatten() {
            sub.outbox.request_resync();
        }
    }

    /// This instance's connections on a channel.
    pub fn subscriber_count(&self, channel: Channel) -> usize {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels.get(&channel).map_or(0, Vec::len)
    }

    /// Whether `user_id` has a connection on the channel on this instance.
    pub fn is_subscribed(&self, channel: Channel, user_id: UserId) -> bool {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels.get(&channel).is_some_and(|subs| subs.iter().any(|s| s.user_id == user_id))
    }

    /// Open connections on this instance.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Frames queued for each connection of one session, by user (for tests and
    /// diagnostics: shows that queues stay bounded).
    pub fn queue_depths(&self, session_id: SessionId) -> Vec<(UserId, usize)> {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels
            .get(&Channel::Session(session_id))
            .map(|subs| subs.iter().map(|s| (s.user_id, s.outbox.pending())).collect())
            .unwrap_or_default()
    }
}

/// One hub message's frame in each wire format, each serialized at most once however many
/// connections get it.
struct Framed<'a> {
    envelope: &'a Envelope,
    phoenix_v1: std::cell::OnceCell<Option<Frame>>,
    phoenix_v2: std::cell::OnceCell<Option<Frame>>,
}

impl<'a> Framed<'a> {
    fn new(envelope: &'a Envelope) -> Self {
        Self { envelope, phoenix_v1: Default::default(), phoenix_v2: Default::default() }
    }

    /// The frame for `wire`, or None if the message has nothing for that wire.
    fn get(&self, wire: Wire) -> Option<Frame> {
        let native = match &self.envelope.message {
            HubMessage::Location { frame, .. }
            | HubMessage::Event { frame }
            | HubMessage::Direct { frame, .. }
            | HubMessage::Topic { frame, .. }
            | HubMessage::Presence { frame }
            | HubMessage::End { frame } => frame,
            HubMessage::Disconnect { .. } | HubMessage::Resync => return None,
        };
        let cell = match wire {
            Wire::Native => return Some(native.clone()),
            Wire::PhoenixV1 => &self.phoenix_v1,
            Wire::PhoenixV2 => &self.phoenix_v2,
        };
        cell.get_or_init(|| crate::protocol::phoenix::fastlane(wire, self.envelope.channel, native)).clone()
    }
}

/// A connection's place on one channel; unregisters on drop.
pub struct Subscription {
    hub: Arc<Hub>,
    channel: Channel,
    pub outbox: Arc<Outbox>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.channel, self.outbox.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LocalBus;

    fn frame(s: &str) -> Frame {
        Frame::from(s)
    }

    fn drained(outbox: &Outbox) -> (Vec<String>, Option<CloseReason>) {
        let mut out = Vec::new();
        let close = outbox.drain(&mut out);
        (out.iter().map(|f| f.as_str().to_owned()).collect(), close)
    }

    #[test]
    fn a_newer_location_replaces_the_pending_one_in_place() {
        let outbox = Outbox::new(8, Arc::default());
        let (a, b) = (UserId::new_random(), UserId::new_random());
        outbox.push_location(a, frame("a1"));
        outbox.push_event(frame("joined"));
        outbox.push_location(b, frame("b1"));
        for i in 2..1000 {
            outbox.push_location(a, frame(&format!("a{i}")));
        }
        assert_eq!(outbox.pending(), 3);
        assert_eq!(drained(&outbox), (vec!["a999".into(), "joined".into(), "b1".into()], None));
        assert_eq!(outbox.pending(), 0);
    }

    #[test]
    fn event_overflow_closes_instead_of_dropping_silently() {
        let outbox = Outbox::new(3, Arc::default());
        for i in 0..3 {
            outbox.push_event(frame(&i.to_string()));
        }
        assert!(!outbox.is_closing());
        outbox.push_event(frame("one too many"));
        assert!(outbox.is_closing());
        let (frames, close) = drained(&outbox);
        assert!(frames.is_empty());
        assert_eq!(close.map(|c| c.code), Some(close_code::TRY_AGAIN_LATER));
        // Nothing is queued after the close.
        outbox.push_event(frame("late"));
        outbox.push_location(UserId::new_random(), frame("late"));
        assert_eq!(drained(&outbox), (vec![], None));
    }

    #[test]
    fn events_are_bounded_in_bytes_too() {
        let outbox = Outbox::with_wire(Wire::Native, 1000, 100, Arc::default());
        outbox.push_event(frame(&"a".repeat(60)));
        outbox.push_event(frame(&"b".repeat(30)));
        assert!(!outbox.is_closing());
        outbox.push_event(frame(&"c".repeat(20)));
        assert!(outbox.is_closing(), "110 bytes queued, 100 allowed");
        assert_eq!(drained(&outbox).1.map(|c| c.code), Some(close_code::TRY_AGAIN_LATER));
        // A reader that keeps up never gets near the bound.
        let outbox = Outbox::with_wire(Wire::Native, 1000, 100, Arc::default());
        for _ in 0..10 {
            outbox.push_event(frame(&"d".repeat(60)));
            drained(&outbox);
        }
        assert!(!outbox.is_closing());
    }

    #[test]
    fn a_newer_snapshot_replaces_a_pending_one_and_goes_first() {
        let outbox = Outbox::new(8, Arc::default());
        outbox.push_event(frame("joined"));
        outbox.push_snapshot(vec![frame("old snapshot"), frame("old presence")]);
        outbox.push_snapshot(vec![frame("new snapshot"), frame("new presence")]);
        assert_eq!(outbox.pending(), 3);
        assert_eq!(drained(&outbox).0, vec!["new snapshot", "new presence", "joined"]);
    }

    #[tokio::test]
    async fn a_burst_of_presence_diffs_becomes_one_resync() {
        let outbox = Outbox::new(1000, Arc::default());
        for i in 0..100 {
            outbox.push_presence(frame(&i.to_string()));
        }
        assert_eq!(outbox.pending(), PRESENCE_BURST);
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.resync_requested())
            .await
            .expect("a resync was asked for");
        drained(&outbox);
        outbox.push_presence(frame("after"));
        assert_eq!(outbox.pending(), 1, "drained: diffs flow again");
    }

    #[test]
    fn a_hold_keeps_everything_behind_the_next_snapshot() {
        let outbox = Outbox::new(8, Arc::default());
        outbox.hold_until_snapshot();
        outbox.push_event(frame("early event"));
        assert_eq!(drained(&outbox).0, Vec::<String>::new());
        outbox.push_snapshot(vec![frame("reply")]);
        assert_eq!(drained(&outbox).0, vec!["reply", "early event"]);
        outbox.hold_until_snapshot();
        outbox.push_event(frame("refused"));
        outbox.release();
        assert_eq!(drained(&outbox).0, vec!["refused"]);
    }

    #[test]
    fn close_sends_the_last_frame_after_pending_ones() {
        let outbox = Outbox::new(8, Arc::default());
        outbox.push_event(frame("first"));
        outbox.close([frame("bye")], CloseReason::new(close_code::NORMAL, "ended"));
        outbox.close([], CloseReason::new(close_code::GOING_AWAY, "ignored"));
        let (frames, close) = drained(&outbox);
        assert_eq!(frames, vec!["first", "bye"]);
        assert_eq!(close.map(|c| c.code), Some(close_code::NORMAL));
    }

    #[tokio::test]
    async fn the_hub_routes_by_session_and_skips_the_sender() {
        let hub = Arc::new(Hub::new(Arc::new(LocalBus::new()), 16, usize::MAX, Arc::default()));
        let (s1, s2) = (SessionId::new_random(), SessionId::new_random());
        let (ann, bob) = (UserId::new_random(), UserId::new_random());
        let (s1, s2) = (Channel::Session(s1), Channel::Session(s2));
        let ann_sub = hub.subscribe(s1, ann, hub.outbox(Wire::Native)).await;
        let bob_sub = hub.subscribe(s1, bob, hub.outbox(Wire::Native)).await;
        let other = hub.subscribe(s2, UserId::new_random(), hub.outbox(Wire::Native)).await;
        let room = hub.subscribe(Channel::Room("u4pruy".parse().unwrap()), bob, bob_sub.outbox.clone()).await;
        assert_eq!(hub.connection_count(), 3);

        hub.publish(Envelope {
            channel: s1,
            message: HubMessage::Location { from: ann, frame: frame("ann moved") },
        });
        assert_eq!(drained(&bob_sub.outbox).0, vec!["ann moved"]);
        assert_eq!(ann_sub.outbox.pending(), 0);
        assert_eq!(other.outbox.pending(), 0);

        let topic: Arc<str> = Arc::from("alerts");
        assert!(bob_sub.outbox.subscribe_topics(std::slice::from_ref(&topic), 1));
        assert!(!bob_sub.outbox.subscribe_topics(&[Arc::from("another")], 1), "past the limit");
        hub.publish(Envelope {
            channel: s1,
            message: HubMessage::Topic { topic: topic.clone(), frame: frame("alert") },
        });
        assert_eq!(drained(&bob_sub.outbox).0, vec!["alert"]);
        assert_eq!(ann_sub.outbox.pending(), 0, "ann did not subscribe");
        bob_sub.outbox.unsubscribe_topics(std::slice::from_ref(&topic));
        hub.publish(Envelope { channel: s1, message: HubMessage::Topic { topic, frame: frame("again") } });
        assert_eq!(bob_sub.outbox.pending(), 0);

        hub.publish(Envelope {
            channel: s1,
            message: HubMessage::Disconnect {
                user_id: bob,
                code: close_code::NORMAL,
                reason: frame("removed"),
            },
        });
        assert!(bob_sub.outbox.is_closing());
        assert!(!ann_sub.outbox.is_closing());

        hub.publish(Envelope { channel: s1, message: HubMessage::End { frame: frame("ended") } });
        assert_eq!(drained(&ann_sub.outbox).0, vec!["ended"]);

        assert_eq!(hub.connection_count(), 3, "a room is not another connection");
        drop((ann_sub, bob_sub, room));
        assert_eq!(hub.connection_count(), 1);
        assert!(hub.channels.read().unwrap().get(&s1).is_none());
        assert_eq!(hub.channels.read().unwrap().len(), 1);
    }
}
