//! The hub: which local connections listen to which channel (a session, or a local chat
//! room). A message is serialized once by whoever publishes it; the hub hands the same
//! bytes to every subscriber's queue (`fanout`) and never waits on a socket; each queue
//! applies the slow-consumer policy (`outbox`) and the viewer's rules (`view`).

mod batch;
mod fanout;
mod outbox;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::bus::Messaging;
use crate::clock::Clock;
use crate::domain::{SessionId, UserId};
use crate::message::{Channel, CloseReason, Frame, Wire, close_code};
use crate::metrics::RealtimeMetrics;

pub use outbox::{DirectWrite, Drained, Outbox};

/// How long a first subscriber waits for the bus to confirm its subscription.
const BUS_SUBSCRIBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
struct Subscriber {
    user_id: UserId,
    outbox: Arc<Outbox>,
}

/// A channel's subscribers, shared: a fan-out takes its own reference and lets the map's
/// lock go before it writes to sockets (a subscribe meanwhile copies the list).
type Subscribers = Arc<Vec<Subscriber>>;

/// Channels to local subscribers. Cheap to share: wrap it in an `Arc`.
pub struct Hub {
    channels: RwLock<HashMap<Channel, Subscribers>>,
    bus: Arc<dyn Messaging>,
    /// Session subscriptions: one per open socket.
    connections: AtomicUsize,
    queue_capacity: usize,
    queue_max_bytes: usize,
    metrics: Arc<RealtimeMetrics>,
    /// What viewers' `min_interval_ms` is measured on.
    clock: Clock,
    /// The ticks of batched delivery.
    batches: batch::Batches,
    /// Per session, per batch window: the latest `location_broadcast` of each sender since
    /// the last tick, for the members who share the session's batch. Each session's under
    /// a lock of its own, held while its batch is written to its members: the map's lock is
    /// held only to find it.
    session_batches: Mutex<HashMap<Channel, Arc<Mutex<SessionBatches>>>>,
    /// This hub, for the tick tasks.
    me: Weak<Hub>,
    /// Set by `close_all` (shutdown): a connection subscribing after it is closed at once.
    closing_all: std::sync::atomic::AtomicBool,
}

/// One session's waiting batches: (window, the latest broadcast of each sender).
type SessionBatches = Vec<(Duration, Vec<(UserId, Frame)>)>;

impl Hub {
    /// Each connection's queue holds at most `queue_capacity` events and `queue_max_bytes`
    /// bytes of them (pending locations and snapshots aside: one of each per sender).
    pub fn new(
        bus: Arc<dyn Messaging>,
        queue_capacity: usize,
        queue_max_bytes: usize,
        metrics: Arc<RealtimeMetrics>,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            channels: RwLock::default(),
            bus,
            connections: AtomicUsize::new(0),
            queue_capacity,
            queue_max_bytes,
            metrics,
            clock,
            batches: batch::Batches::default(),
            session_batches: Mutex::default(),
            me: me.clone(),
            closing_all: Default::default(),
        })
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
            if self.closing_all.load(Ordering::Relaxed) {
                outbox.close([], shutting_down());
            }
            let subscribers = Arc::make_mut(channels.entry(channel).or_default());
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

    /// Closes every connection with 1001 after what it has queued (shutdown), and any that
    /// subscribes from now on. Connections watch only their outbox, not a shared signal.
    pub fn close_all(&self) {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        self.closing_all.store(true, Ordering::Relaxed);
        for sub in channels.values().flat_map(|subs| subs.iter()) {
            sub.outbox.close([], shutting_down());
        }
    }

    fn unsubscribe(&self, channel: Channel, outbox_id: u64) {
        {
            let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
            let Some(subscribers) = channels.get_mut(&channel) else { return };
            let subscribers = Arc::make_mut(subscribers);
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
    /// This instance's connections on a channel.
    pub fn subscriber_count(&self, channel: Channel) -> usize {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels.get(&channel).map_or(0, |subs| subs.len())
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

fn shutting_down() -> CloseReason {
    CloseReason::new(close_code::GOING_AWAY, "server shutting down")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::bus::LocalBus;
    use crate::message::{CloseReason, Envelope, Frame, HubMessage, close_code};
    use outbox::PRESENCE_BURST;

    fn frame(s: &str) -> Frame {
        Frame::from(s)
    }

    fn somewhere() -> crate::domain::Location {
        crate::domain::Location::at(1.0, 2.0, 3.0, crate::domain::now())
    }

    fn drained(outbox: &Outbox) -> (Vec<String>, Option<CloseReason>) {
        let mut out = Vec::new();
        let close = outbox.drain(&mut out).close;
        (out.iter().map(|f| f.as_str().to_owned()).collect(), close)
    }

    #[test]
    fn a_newer_location_replaces_the_pending_one_in_place() {
        let outbox = Outbox::new(8, Arc::default());
        let (a, b) = (UserId::new_random(), UserId::new_random());
        outbox.push_location(a, &somewhere(), frame("a1"), Instant::now());
        outbox.push_event(frame("joined"));
        outbox.push_location(b, &somewhere(), frame("b1"), Instant::now());
        for i in 2..1000 {
            outbox.push_location(a, &somewhere(), frame(&format!("a{i}")), Instant::now());
        }
        assert_eq!(outbox.pending(), 3);
        assert_eq!(drained(&outbox), (vec!["a999".into(), "joined".into(), "b1".into()], None));
        assert_eq!(outbox.pending(), 0);
    }

    fn broadcast(from: UserId, lat: f64) -> (crate::domain::Location, Frame) {
        use crate::protocol::native::{LocationBroadcast, ServerMessage};
        let location = crate::domain::Location { lat, ..somewhere() };
        (location, ServerMessage::LocationBroadcast(LocationBroadcast { user_id: from, location }).to_frame())
    }

    /// A hub on the in-process bus, queues of 16 events.
    fn test_hub() -> Arc<Hub> {
        Hub::new(Arc::new(LocalBus::new(Clock::system())), 16, usize::MAX, Arc::default(), Clock::system())
    }

    fn push(outbox: &Outbox, from: UserId, lat: f64) -> bool {
        let (location, frame) = broadcast(from, lat);
        outbox.push_location(from, &location, frame, Instant::now())
    }

    #[test]
    fn a_batch_waits_for_its_tick_and_holds_the_latest_of_each_sender() {
        let outbox = Outbox::new(8, Arc::default());
        outbox.set_batch(Some(std::time::Duration::from_millis(100)));
        let (a, b) = (UserId::new_random(), UserId::new_random());
        assert!(push(&outbox, a, 1.0), "the first position opens a batch");
        assert!(!push(&outbox, b, 2.0), "then the open batch takes them");
        assert!(!push(&outbox, a, 3.0));
        assert_eq!(drained(&outbox), (vec![], None), "not before the tick");
        outbox.release_batch();
        let (frames, _) = drained(&outbox);
        assert_eq!(frames.len(), 1);
        let batch: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(batch["type"], "location_batch");
        let lats: Vec<f64> = batch["data"]["locations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["lat"].as_f64().unwrap())
            .collect();
        assert_eq!(lats, [3.0, 2.0], "a's latest in a's place, then b's");
        assert!(push(&outbox, a, 4.0), "after a batch went out, the next opens one again");
    }

    // tokio's paused clock: the window passes when the test says so.
    #[tokio::test(start_paused = true)]
    async fn the_hub_releases_a_batch_at_its_windows_tick() {
        let hub = test_hub();
        let channel = Channel::Session(SessionId::new_random());
        let (ann, bob) = (UserId::new_random(), UserId::new_random());
        let batched = hub.outbox(Wire::Native);
        batched.set_batch(Some(std::time::Duration::from_millis(100)));
        let bob_sub = hub.subscribe(channel, bob, batched).await;
        let (location, frame) = broadcast(ann, 1.0);
        hub.publish(Envelope { channel, message: HubMessage::Location { from: ann, location, frame } });
        assert_eq!(drained(&bob_sub.outbox), (vec![], None));
        tokio::time::sleep(std::time::Duration::from_millis(101)).await;
        let (frames, _) = drained(&bob_sub.outbox);
        assert_eq!(frames.len(), 1, "released by the tick");
        assert!(frames[0].starts_with("{\"type\":\"location_batch\""), "{frames:?}");
        // A tick with nobody waiting stops its task: a window length once asked for (by
        // anyone, any number of them) costs nothing when nobody uses it.
        assert_eq!(hub.batches.ticking(), 1);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(hub.batches.ticking(), 0);
        let (location, frame) = broadcast(ann, 2.0);
        hub.publish(Envelope { channel, message: HubMessage::Location { from: ann, location, frame } });
        assert_eq!(hub.batches.ticking(), 1, "ticking again for the next batch");
        tokio::time::sleep(std::time::Duration::from_millis(101)).await;
        assert_eq!(drained(&bob_sub.outbox).0.len(), 1);
    }

    fn batch_lats(frame: &str) -> Vec<f64> {
        let batch: serde_json::Value = serde_json::from_str(frame).unwrap();
        assert_eq!(batch["type"], "location_batch", "{batch}");
        batch["data"]["locations"].as_array().unwrap().iter().map(|l| l["lat"].as_f64().unwrap()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sessions_batch_is_built_once_for_its_members_and_events_keep_their_place() {
        let hub = test_hub();
        let channel = Channel::Session(SessionId::new_random());
        let (ann, bob, cat) = (UserId::new_random(), UserId::new_random(), UserId::new_random());
        let window = Some(std::time::Duration::from_millis(100));
        let subscribe = |user, filtered: bool| {
            let hub = hub.clone();
            async move {
                let outbox = hub.outbox(Wire::Native);
                outbox.set_batch(window);
                if filtered {
                    outbox.set_view(std::time::Duration::ZERO, 1.0, std::time::Duration::from_secs(15));
                }
                hub.subscribe(channel, user, outbox).await
            }
        };
        let (ann_sub, bob_sub) = (subscribe(ann, false).await, subscribe(bob, false).await);
        let cat_sub = subscribe(cat, true).await; // view_settings: gathers its own batches
        let move_to = |from, lat| {
            let (location, frame) = broadcast(from, lat);
            hub.publish(Envelope { channel, message: HubMessage::Location { from, location, frame } });
        };
        move_to(ann, 1.0);
        move_to(bob, 2.0);
        move_to(ann, 3.0);
        tokio::time::sleep(std::time::Duration::from_millis(101)).await;
        // The same frame for Ann and Bob: everyone's latest, their own included.
        let (to_ann, to_bob) = (drained(&ann_sub.outbox).0, drained(&bob_sub.outbox).0);
        assert_eq!(to_ann, to_bob);
        assert_eq!(batch_lats(&to_ann[0]), [3.0, 2.0]);
        // Cat's own batch, filtered per position, without Cat's own.
        assert_eq!(batch_lats(&drained(&cat_sub.outbox).0[0]), [3.0, 2.0]);

        // An event: the positions before it go before it, at once.
        move_to(ann, 4.0);
        hub.publish(Envelope { channel, message: HubMessage::Event { frame: frame("cleared") } });
        move_to(ann, 5.0);
        let frames = drained(&bob_sub.outbox).0;
        assert_eq!((batch_lats(&frames[0]), frames[1].as_str()), (vec![4.0], "cleared"));
        assert_eq!(frames.len(), 2, "the position after the event waits for the tick: {frames:?}");
        tokio::time::sleep(std::time::Duration::from_millis(101)).await;
        assert_eq!(batch_lats(&drained(&bob_sub.outbox).0[0]), [5.0]);
        assert!(hub.session_batches.lock().unwrap().is_empty(), "a sent session's batches are forgotten");
    }

    #[test]
    fn batches_sealed_by_events_count_against_a_stalled_readers_bounds() {
        // A reader with view_settings gathers its own batches; each event seals one. The
        // batches count as events: a reader that never drains is closed, not left to grow.
        let outbox = Outbox::new(4, Arc::default());
        outbox.set_batch(Some(std::time::Duration::from_millis(100)));
        outbox.set_view(std::time::Duration::ZERO, 1.0, std::time::Duration::from_secs(15));
        let a = UserId::new_random();
        for lat in [1.0, 2.0] {
            push(&outbox, a, lat);
            outbox.push_event(frame("chat"));
        }
        assert!(!outbox.is_closing(), "2 events and 2 batches: within 4");
        push(&outbox, a, 3.0);
        assert!(outbox.is_closing(), "a fifth item past a capacity of 4");
        assert_eq!(drained(&outbox).1.map(|c| c.code), Some(close_code::TRY_AGAIN_LATER));
    }

    #[test]
    fn leaving_the_sessions_batch_for_a_filtered_one_resynchronises() {
        use futures_util::FutureExt;
        let outbox = Outbox::new(4, Arc::default());
        outbox.set_batch(Some(std::time::Duration::from_millis(100)));
        assert!(outbox.resync_requested().now_or_never().is_none());
        // Positions waiting in the session's batch would not come to it any more.
        outbox.set_view(std::time::Duration::ZERO, 1.0, std::time::Duration::from_secs(15));
        assert!(outbox.resync_requested().now_or_never().is_some(), "a fresh snapshot has them");
        outbox.set_view(std::time::Duration::ZERO, 2.0, std::time::Duration::from_secs(15));
        assert!(outbox.resync_requested().now_or_never().is_none(), "once, not on every change");
    }

    #[test]
    fn an_event_sends_the_batch_before_it_at_once_and_seals_it() {
        let outbox = Outbox::new(8, Arc::default());
        outbox.set_batch(Some(std::time::Duration::from_millis(100)));
        let a = UserId::new_random();
        push(&outbox, a, 1.0);
        outbox.push_event(frame("cleared"));
        push(&outbox, a, 2.0);
        let (frames, _) = drained(&outbox);
        assert_eq!(frames.len(), 3, "batch, event, batch: {frames:?}");
        assert!(frames[0].contains("\"lat\":1.0") && frames[2].contains("\"lat\":2.0"), "{frames:?}");
        assert_eq!(frames[1], "cleared");
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
        outbox.push_location(UserId::new_random(), &somewhere(), frame("late"), Instant::now());
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
        let hub = test_hub();
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
            message: HubMessage::Location { from: ann, location: somewhere(), frame: frame("ann moved") },
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

    /// A socket that takes `room` more bytes, then nothing (a frame's bytes are its text:
    /// no header here).
    #[derive(Default)]
    struct Socket(std::sync::Mutex<(usize, String)>);

    impl outbox::DirectWrite for Socket {
        fn try_write(&self, frame: &Frame, offset: usize) -> Option<usize> {
            let mut socket = self.0.lock().unwrap();
            let rest = &frame.as_str()[offset..];
            let took = rest.len().min(socket.0);
            socket.0 -= took;
            socket.1.push_str(&rest[..took]);
            (took < rest.len()).then_some(offset + took)
        }
    }

    #[test]
    fn deliveries_write_through_only_when_nothing_could_go_after_them() {
        let outbox = Outbox::new(8, Arc::default());
        let socket = Arc::new(Socket::default());
        socket.0.lock().unwrap().0 = 1000;
        outbox.attach(socket.clone());
        let wrote = || socket.0.lock().unwrap().1.clone();
        let ann = UserId::new_random();

        outbox.push_event(frame("before the snapshot"));
        assert_eq!(wrote(), "", "nothing overtakes the snapshot to come");
        outbox.push_snapshot(vec![frame("snapshot")]);
        assert_eq!(drained(&outbox).0, vec!["snapshot", "before the snapshot"]);
        outbox.push_event(frame("while writing"));
        assert_eq!(wrote(), "", "the writer is writing: queued behind what it took");
        assert_eq!(drained(&outbox).0, vec!["while writing"]);
        outbox.written();

        outbox.push_location(ann, &somewhere(), frame("[moved]"), Instant::now());
        outbox.push_event(frame("[said]"));
        assert_eq!(wrote(), "[moved][said]", "written at once, in order");
        assert_eq!(outbox.pending(), 0);

        // The socket takes part of a frame: the writer finishes it before anything else.
        socket.0.lock().unwrap().0 = 4;
        outbox.push_event(frame("[cut short]"));
        outbox.push_location(ann, &somewhere(), frame("[after]"), Instant::now());
        assert_eq!(wrote(), "[moved][said][cut");
        let mut out = Vec::new();
        let drained_now = outbox.drain(&mut out);
        assert_eq!(drained_now.resume_at, 4);
        assert_eq!(out.iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["[cut short]", "[after]"]);
        outbox.written();

        // A full socket takes nothing: queued for the writer, whom the push wakes.
        outbox.push_event(frame("[full]"));
        assert_eq!(drained(&outbox).0, vec!["[full]"]);
        outbox.written();

        socket.0.lock().unwrap().0 = 1000;
        outbox.detach();
        outbox.push_event(frame("[detached]"));
        assert_eq!(drained(&outbox).0, vec!["[detached]"]);
        assert_eq!(wrote(), "[moved][said][cut", "nothing written through once detached");
    }

    #[test]
    fn presence_diffs_written_through_do_not_count_towards_a_resync() {
        use futures_util::FutureExt;
        let outbox = Outbox::new(8, Arc::default());
        let socket = Arc::new(Socket::default());
        socket.0.lock().unwrap().0 = usize::MAX;
        outbox.attach(socket.clone());
        outbox.push_snapshot(vec![frame("snapshot")]);
        drained(&outbox);
        outbox.written();
        for i in 0..3 * PRESENCE_BURST {
            outbox.push_presence(frame(&format!("[diff {i}]")));
        }
        assert!(outbox.resync_requested().now_or_never().is_none(), "a healthy reader is not resynchronised");
        assert!(socket.0.lock().unwrap().1.ends_with(&format!("[diff {}]", 3 * PRESENCE_BURST - 1)));
    }
}
