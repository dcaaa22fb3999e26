//! Fan-out: a message handed to every local subscriber of its channel, serialized at most
//! once per wire format however many connections get it; then to the bus.

use super::Hub;
use crate::message::{CloseReason, Envelope, Frame, HubMessage, Wire, close_code};

impl Hub {
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
        let now = self.clock.instant();
        for sub in subscribers {
            let wire = sub.outbox.wire;
            let closes = matches!(envelope.message, HubMessage::Disconnect { .. } | HubMessage::End { .. });
            if sub.outbox.is_muted() && !closes {
                continue;
            }
            match &envelope.message {
                HubMessage::Location { from, location, .. } => {
                    if sub.user_id != *from
                        && let Some(frame) = framed.get(wire)
                    {
                        let opened = sub.outbox.push_location(*from, location, frame, now);
                        if opened && let Some(window) = sub.outbox.batch_window() {
                            self.batches.opened(window, &sub.outbox);
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
