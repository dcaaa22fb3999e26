//! Fan-out: a message handed to every local subscriber of its channel, serialized at most
//! once per wire format however many connections get it; then to the bus.

use std::sync::Arc;
use std::time::Duration;

use super::batch::Waiting;
use super::{Hub, Subscriber, Subscribers};
use crate::domain::UserId;
use crate::message::{Channel, CloseReason, Envelope, Frame, HubMessage, Wire, close_code};
use crate::protocol::native::location_batch;

impl Hub {
    /// Delivers to this instance's subscribers, then hands the message to the bus.
    pub fn publish(&self, envelope: Envelope) {
        self.deliver_local(&envelope);
        self.bus.publish(&envelope);
    }

    /// Delivers to this instance's subscribers only (messages from the bus come in here).
    pub fn deliver_local(&self, envelope: &Envelope) {
        // The map's lock is not held while frames are written to sockets.
        let Some(subscribers) = self.subscribers(envelope.channel) else { return };
        let started = std::time::Instant::now();
        let framed = Framed::new(envelope);
        let now = self.clock.instant();
        let is_location = matches!(envelope.message, HubMessage::Location { .. });
        if !is_location {
            // Positions gathered before this message go before it.
            self.send_session_batches(envelope.channel, None, &subscribers);
        }
        // The batch windows of members sharing the session's batch (usually one, or none).
        let mut shared_windows: Vec<Duration> = Vec::new();
        for sub in subscribers.iter() {
            let wire = sub.outbox.wire;
            let closes = matches!(envelope.message, HubMessage::Disconnect { .. } | HubMessage::End { .. });
            if sub.outbox.is_muted() && !closes {
                continue;
            }
            match &envelope.message {
                HubMessage::Location { .. } if let Some(window) = sub.outbox.shared_batch() => {
                    if !shared_windows.contains(&window) {
                        shared_windows.push(window);
                    }
                }
                HubMessage::Location { from, location, .. } => {
                    if sub.user_id != *from
                        && let Some(frame) = framed.get(wire)
                    {
                        let opened = sub.outbox.push_location(*from, location, frame, now);
                        if opened && let Some(window) = sub.outbox.batch_window() {
                            let waiting = Waiting::Connection(std::sync::Arc::downgrade(&sub.outbox));
                            self.batches.opened(window, waiting, &self.me);
                        }
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
        if let (HubMessage::Location { from, frame, .. }, false) =
            (&envelope.message, shared_windows.is_empty())
        {
            for window in shared_windows {
                self.gather_session_batch(envelope.channel, window, *from, frame);
            }
        }
        self.metrics.fanout_seconds.record(started.elapsed());
    }

    /// Adds a position to the session's shared batch of `window` (replacing the sender's
    /// older one); the first of a batch asks for the window's next tick.
    fn gather_session_batch(&self, channel: Channel, window: Duration, from: UserId, frame: &Frame) {
        let opened = {
            let session = self
                .session_batches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(channel)
                .or_default()
                .clone();
            let mut windows = session.lock().unwrap_or_else(|e| e.into_inner());
            let entries = match windows.iter().position(|(w, _)| *w == window) {
                Some(at) => &mut windows[at].1,
                None => {
                    windows.push((window, Vec::new()));
                    &mut windows.last_mut().expect("just pushed").1
                }
            };
            let opened = entries.is_empty();
            match entries.iter_mut().find(|(sender, _)| *sender == from) {
                Some((_, older)) => *older = frame.clone(),
                None => entries.push((from, frame.clone())),
            }
            opened
        };
        if opened {
            self.batches.opened(window, Waiting::Session(channel), &self.me);
        }
    }

    /// The tick of `window`: the session's batch goes to its members who share it.
    pub(super) fn release_session_batch(&self, channel: Channel, window: Duration) {
        let subscribers = self.subscribers(channel).unwrap_or_default();
        self.send_session_batches(channel, Some(window), &subscribers);
    }

    /// The channel's local subscribers as they are now.
    fn subscribers(&self, channel: Channel) -> Option<Subscribers> {
        self.channels.read().unwrap_or_else(|e| e.into_inner()).get(&channel).cloned()
    }

    /// Builds the session's batch of `only` window (of every window when None: before any
    /// other message on the channel, the batches waiting go first) once and queues it for
    /// every member sharing it. The session's lock is held until every member has it: an
    /// event flushing the same session meanwhile waits, so no member gets the event before
    /// the batch; other sessions do not wait.
    fn send_session_batches(&self, channel: Channel, only: Option<Duration>, subscribers: &[Subscriber]) {
        let Some(session) =
            self.session_batches.lock().unwrap_or_else(|e| e.into_inner()).get(&channel).cloned()
        else {
            return;
        };
        {
            let mut windows = session.lock().unwrap_or_else(|e| e.into_inner());
            let mut at = 0;
            while at < windows.len() {
                let window = windows[at].0;
                if only.is_some_and(|only| only != window) {
                    at += 1;
                    continue;
                }
                let (_, entries) = windows.swap_remove(at);
                if entries.is_empty() {
                    continue;
                }
                let frame = location_batch(entries.iter().map(|(_, frame)| frame));
                for sub in subscribers {
                    if sub.outbox.shared_batch() == Some(window) && !sub.outbox.is_muted() {
                        sub.outbox.push_event(frame.clone());
                    }
                }
            }
        }
        drop(session);
        // Forgotten once empty and held by nobody: a reference is only taken under the
        // map's lock, held here.
        let mut batches = self.session_batches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = batches.get(&channel)
            && Arc::strong_count(session) == 1
            && session.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
        {
            batches.remove(&channel);
        }
    }

    /// Every local connection rebuilds its snapshot: this instance may have missed
    /// messages from the others (its bus connection was down).
    pub fn resync_all(&self) {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        for sub in channels.values().flat_map(|subs| subs.iter()) {
            sub.outbox.request_resync();
        }
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
