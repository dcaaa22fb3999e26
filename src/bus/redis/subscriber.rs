//! The subscriber on a single Redis: the instance's one pub/sub connection, subscribed to a
//! channel only while this instance has a local socket there; reconnects and resubscribes
//! by itself. (On a cluster, `sharded`.)

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::keys::Keys;
use super::listeners::Listeners;
use super::prober::Breaker;
use super::writer::Command;
use super::{CALL_TIMEOUT, MAX_BACKOFF, Outgoing, PUBSUB_KEEPALIVE, call, heard};
use crate::bus::BusEvent;
use crate::bus::wire::{self, Record, Roll};
use crate::clock::Clock;
use crate::message::Channel;

pub(super) enum Subscription {
    Subscribe(Channel, oneshot::Sender<()>),
    Unsubscribe(Channel),
}

/// What either subscriber hands messages on with.
pub(super) struct Subscriber {
    pub(super) keys: Keys,
    pub(super) instance_id: Uuid,
    pub(super) inbound: mpsc::UnboundedSender<BusEvent>,
    pub(super) breaker: Arc<Breaker>,
    /// Where the roll call's answers and released positions are sent.
    pub(super) out: Outgoing,
    pub(super) listeners: Arc<Listeners>,
    /// Decides which held positions have expired.
    pub(super) clock: Clock,
}

impl Subscriber {
    /// Hands a published message to the hub unless it is this instance's own echo; false
    /// once the hub is gone.
    pub(super) fn deliver(&self, channel_name: &str, payload: &[u8]) -> bool {
        if wire::origin(payload) == Some(self.instance_id) {
            return true; // our own echo
        }
        let Some(channel) = self.keys.parse_channel(channel_name) else {
            tracing::warn!(channel = channel_name, "dropping a message of a channel that is not convoy's");
            return true;
        };
        match wire::decode(channel, payload) {
            Ok((origin, decoded)) => {
                for record in decoded {
                    match record {
                        Ok(Record::Message(envelope)) => {
                            if self.inbound.send(BusEvent::Deliver(envelope)).is_err() {
                                return false;
                            }
                        }
                        Ok(Record::Roll(roll)) => self.heard(channel, origin, roll),
                        Err(err) => tracing::warn!(error = %err, "dropping an unreadable bus message"),
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "dropping an unreadable bus message"),
        }
        true
    }

    /// Another instance said `roll` on the channel (`listeners`): a Hello is answered, and
    /// what was held while nobody listened goes out.
    fn heard(&self, channel: Channel, from: Uuid, roll: Roll) {
        let Channel::Session(session_id) = channel else { return };
        if heard(&self.listeners, &self.out, &self.clock, session_id, from, roll) {
            self.say(channel, Roll::Here);
        }
    }

    /// The subscription to the channel was confirmed (again): where this instance listens
    /// to a session, it asks who else does.
    pub(super) fn confirmed(&self, channel: Channel) {
        if let Channel::Session(session_id) = channel
            && self.listeners.is_listening(session_id)
        {
            self.say(channel, Roll::Hello);
        }
    }

    fn say(&self, channel: Channel, roll: Roll) {
        let payload = wire::encode_roll(self.instance_id, roll);
        self.out.send(Command::Publish { channel, payload, must_arrive: true });
    }
}

pub(super) async fn run_subscriber(
    client: redis::Client,
    mut requests: mpsc::UnboundedReceiver<Subscription>,
    subscriber: Subscriber,
    shutdown: CancellationToken,
) {
    let Subscriber { keys, ref inbound, ref breaker, .. } = subscriber;
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
                if !wait_noting(backoff, &mut requests, &mut wanted, &shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if !wanted.is_empty() {
            let channels: Vec<String> = wanted.iter().map(|c| keys.channel(*c)).collect();
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
        for channel in &wanted {
            subscriber.confirmed(*channel);
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
                            let result = call(sink.subscribe(keys.channel(*channel))).await;
                            if result.is_ok() {
                                subscriber.confirmed(*channel);
                            }
                            result
                        }
                        Subscription::Unsubscribe(channel) if wanted.contains(channel) => {
                            call(sink.unsubscribe(keys.channel(*channel))).await
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
                    if !subscriber.deliver(message.get_channel_name(), message.get_payload_bytes()) {
                        return;
                    }
                }
            }
        }
        breaker.subscriber_down.store(true, Ordering::Relaxed);
    }
}

/// Waits `backoff` before connecting again, keeping track of what is wanted meanwhile and
/// releasing the sockets that wait on a subscription; false when it is time to stop.
pub(super) async fn wait_noting(
    backoff: Duration,
    requests: &mut mpsc::UnboundedReceiver<Subscription>,
    wanted: &mut HashSet<Channel>,
    shutdown: &CancellationToken,
) -> bool {
    let wait = tokio::time::sleep(backoff);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = &mut wait => return true,
            request = requests.recv() => match request {
                None => return false,
                Some(request) => note(wanted, request),
            },
        }
    }
}

/// Records what a request wants; subscribe acknowledgements are sent here, after the
/// SUBSCRIBE (if any) was confirmed or could not be sent.
pub(super) fn note(wanted: &mut HashSet<Channel>, request: Subscription) {
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
