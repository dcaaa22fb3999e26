//! The subscriber on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`), so a message touches
//! only the shard that owns its session. The cluster client keeps a connection to each
//! shard, sends each `SSUBSCRIBE` to the owner of the channel's slot, and resubscribes by
//! itself when a node reconnects or the slots move (MOVED and ASK are its business too).
//!
//! What the client cannot say is what was lost meanwhile. A channel confirmed more often
//! than this task asked was resubscribed behind its back: messages published in between
//! may be lost, and its shard may have restarted empty. So that channel's local sockets
//! resynchronise, and it counts as dropped: the prober rewrites this instance's presence
//! there and has every other instance's sockets in it resynchronise too. A channel the
//! server unsubscribed (its slot moved away) or that could not be subscribed (its shard was
//! down) is retried every second until it is, then treated the same way.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::cluster_builder;
use super::subscriber::{Subscriber, Subscription, note};
use super::{CALL_TIMEOUT, MAX_BACKOFF, call};
use crate::bus::BusEvent;
use crate::message::{Channel, Envelope, HubMessage};

/// How often channels that could not be subscribed are tried again.
const RETRY: Duration = Duration::from_secs(1);

pub(super) async fn run_sharded_subscriber(
    urls: Vec<String>,
    mut requests: mpsc::UnboundedReceiver<Subscription>,
    subscriber: Subscriber,
    shutdown: CancellationToken,
) {
    let keys = subscriber.keys;
    let breaker = &subscriber.breaker;
    let mut wanted: HashSet<Channel> = HashSet::new();
    let (push_sender, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let mut backoff = Duration::from_millis(100);
    // The cluster client reconnects to each node by itself once it has a connection: this
    // loop only runs until the first one is made.
    let mut conn = loop {
        let client = cluster_builder(&urls)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push_sender.clone())
            .build();
        let error = match client {
            Err(err) => err.to_string(),
            Ok(client) => match tokio::time::timeout(CALL_TIMEOUT * 2, client.get_async_connection()).await {
                Ok(Ok(conn)) => break conn,
                Ok(Err(err)) => err.to_string(),
                Err(_) => "timed out".into(),
            },
        };
        breaker.subscriber_down.store(true, Ordering::Relaxed);
        tracing::debug!(%error, ?backoff, "sharded pub/sub connect failed; retrying");
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
    };
    breaker.subscriber_down.store(false, Ordering::Relaxed);

    // Confirmations asked for and received, per channel: more received than asked is a
    // resubscription by the client.
    let mut asked: HashMap<Channel, u64> = HashMap::new();
    let mut confirmed: HashMap<Channel, u64> = HashMap::new();
    // Wanted but not subscribed: retried every RETRY. Those wanted before the connection
    // was made start here (their sockets may have missed messages: they resynchronise).
    let mut retry: HashSet<Channel> = wanted.clone();
    let mut ticks = tokio::time::interval(RETRY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick(), if !retry.is_empty() => {
                for channel in std::mem::take(&mut retry) {
                    if !wanted.contains(&channel) {
                        continue;
                    }
                    match call(conn.ssubscribe(keys.channel(channel))).await {
                        Ok(()) => {
                            *asked.entry(channel).or_default() += 1;
                            if !resync(&subscriber, channel) {
                                return;
                            }
                        }
                        Err(_) => {
                            retry.insert(channel);
                        }
                    }
                }
            }
            request = requests.recv() => {
                let Some(request) = request else { return };
                match &request {
                    Subscription::Subscribe(channel, _) if !wanted.contains(channel) => {
                        match call(conn.ssubscribe(keys.channel(*channel))).await {
                            Ok(()) => *asked.entry(*channel).or_default() += 1,
                            Err(err) => {
                                tracing::warn!(error = %err, "sharded subscribe failed; retrying every second");
                                retry.insert(*channel);
                            }
                        }
                    }
                    Subscription::Unsubscribe(channel) if wanted.contains(channel) => {
                        asked.remove(channel);
                        confirmed.remove(channel);
                        retry.remove(channel);
                        if let Err(err) = call(conn.sunsubscribe(keys.channel(*channel))).await {
                            tracing::debug!(error = %err, "sharded unsubscribe failed (the shard drops it when the connection goes)");
                        }
                    }
                    _ => {}
                }
                note(&mut wanted, request);
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                match push.kind {
                    PushKind::SMessage => {
                        if let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice()
                            && !subscriber.deliver(&String::from_utf8_lossy(channel), payload)
                        {
                            return;
                        }
                    }
                    PushKind::SSubscribe => {
                        let Some(channel) = pushed_channel(&subscriber, &push) else { continue };
                        if !wanted.contains(&channel) {
                            continue;
                        }
                        let seen = confirmed.entry(channel).or_default();
                        *seen += 1;
                        let asked = asked.entry(channel).or_default();
                        if *seen > *asked {
                            *asked = *seen;
                            tracing::info!(channel = %channel.name(), "resubscribed by the cluster client: resynchronising");
                            if !resync(&subscriber, channel) {
                                return;
                            }
                        }
                    }
                    PushKind::SUnsubscribe => {
                        // Not asked for (this task forgets a channel before it unsubscribes):
                        // the slot moved away. Subscribe again where it lives now.
                        if let Some(channel) = pushed_channel(&subscriber, &push)
                            && wanted.contains(&channel)
                        {
                            tracing::info!(channel = %channel.name(), "unsubscribed by the cluster; subscribing again");
                            retry.insert(channel);
                        }
                    }
                    PushKind::Disconnection => {
                        tracing::warn!("a cluster node's connection was lost; the client reconnects and resubscribes");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The convoy channel a subscribe confirmation or unsubscription names.
fn pushed_channel(subscriber: &Subscriber, push: &PushInfo) -> Option<Channel> {
    match push.data.first() {
        Some(Value::BulkString(name)) => subscriber.keys.parse_channel(&String::from_utf8_lossy(name)),
        _ => None,
    }
}

/// The channel's messages may have been lost: its local sockets resynchronise now, every
/// other instance's once the prober sends the channel's Resync. False once the hub is gone.
fn resync(subscriber: &Subscriber, channel: Channel) -> bool {
    subscriber.breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner()).insert(channel);
    let resync = Envelope { channel, message: HubMessage::Resync };
    subscriber.inbound.send(BusEvent::Deliver(resync)).is_ok()
}
