//! The subscriber on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`), so a message touches
//! only the shard that owns its session. The cluster client keeps a connection to each
//! shard, sends each `SSUBSCRIBE` to the owner of the channel's slot, and resubscribes by
//! itself when a node reconnects or the slots move (MOVED and ASK are its business too).
//!
//! What the client cannot say is what was lost meanwhile. A channel may have lost messages
//! when a node's connection dropped (the client says which node only to itself, so every
//! channel counts), when the server unsubscribed it (its slot moved away) or when it could
//! not be subscribed (its shard was down). Such a channel, once confirmed again,
//! resynchronises: its local sockets at once (at most once per RESYNC_SPACING), and, since
//! its shard may have restarted empty, it counts as dropped, so the prober rewrites this
//! instance's presence there and has the other instances' sockets resynchronise too.
//! Confirmations of channels that lost nothing (the client resubscribes everything when it
//! reloads the slot map) change nothing.
//!
//! Subscribing never holds the messages of healthy shards: each `SSUBSCRIBE` and
//! `SUNSUBSCRIBE` runs as a task of its own, one channel's in the order they were asked
//! for, each once the one before was answered or timed out (sent side by side, a
//! subscription often reached the shard before the unsubscription just before it, and left
//! an instance whose socket had just come back deaf to its session; one that timed out may
//! still arrive late, which the order of their confirmations shows, and the channel is
//! subscribed again), and a channel that could not be subscribed is retried every second.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::conn::cluster_builder;
use super::subscriber::{Subscriber, Subscription, note, wait_noting};
use super::{CALL_TIMEOUT, MAX_BACKOFF, RESYNC_SPACING, call};
use crate::bus::BusEvent;
use crate::message::{Channel, Envelope, HubMessage};

/// How often channels that could not be subscribed are tried again.
const RETRY: Duration = Duration::from_secs(1);
/// `in_flight` is first rid of finished tasks at this size, then at twice what remained.
const PRUNE_IN_FLIGHT: usize = 64;

pub(super) async fn run_sharded_subscriber(
    urls: Vec<String>,
    mut requests: mpsc::UnboundedReceiver<Subscription>,
    subscriber: Subscriber,
    shutdown: CancellationToken,
) {
    let mut wanted: HashSet<Channel> = HashSet::new();
    let (push_sender, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let Some(conn) = connect(&urls, push_sender, &mut requests, &mut wanted, &subscriber, &shutdown).await
    else {
        return;
    };
    let mut state = Sharded {
        conn,
        subscriber: &subscriber,
        // Those wanted before the connection was made may have missed messages.
        lost: wanted.clone(),
        retry: wanted.clone(),
        unsubscribing: HashMap::new(),
        overtaken: HashSet::new(),
        in_flight: HashMap::new(),
        prune_at: PRUNE_IN_FLIGHT,
        resynced: HashMap::new(),
        wanted,
    };
    let (done_sender, mut done) = mpsc::unbounded_channel::<(Channel, bool)>();
    let mut ticks = tokio::time::interval(RETRY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick(), if !state.retry.is_empty() => {
                for channel in std::mem::take(&mut state.retry) {
                    if state.wanted.contains(&channel) {
                        state.subscribe(channel, None, &done_sender);
                    }
                }
            }
            Some((channel, subscribed)) = done.recv() => {
                if subscribed && state.wanted.contains(&channel) {
                    subscriber.confirmed(channel);
                } else if state.wanted.contains(&channel) {
                    state.lost.insert(channel);
                    state.retry.insert(channel);
                }
            }
            request = requests.recv() => {
                let Some(request) = request else { return };
                match request {
                    Subscription::Subscribe(channel, ack) if !state.wanted.contains(&channel) => {
                        state.wanted.insert(channel);
                        state.subscribe(channel, Some(ack), &done_sender);
                    }
                    Subscription::Unsubscribe(channel) if state.wanted.contains(&channel) => {
                        state.wanted.remove(&channel);
                        state.forget(channel);
                        *state.unsubscribing.entry(channel).or_default() += 1;
                        let mut conn = state.conn.clone();
                        let name = subscriber.keys.channel(channel);
                        // The shard drops it anyway when the connection goes.
                        state.in_order(channel, move |_| async move { call(conn.sunsubscribe(name)).await.is_ok() });
                    }
                    request => note(&mut state.wanted, request),
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                if !state.pushed(push) {
                    return;
                }
            }
        }
    }
}

/// The first connection to the cluster, retried until it is made (the client reconnects to
/// each node by itself after that). Notes what is wanted meanwhile.
async fn connect(
    urls: &[String],
    push_sender: mpsc::UnboundedSender<PushInfo>,
    requests: &mut mpsc::UnboundedReceiver<Subscription>,
    wanted: &mut HashSet<Channel>,
    subscriber: &Subscriber,
    shutdown: &CancellationToken,
) -> Option<ClusterConnection> {
    let breaker = &subscriber.breaker;
    let mut backoff = Duration::from_millis(100);
    loop {
        let client = cluster_builder(urls)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push_sender.clone())
            .build();
        let error = match client {
            Err(err) => err.to_string(),
            Ok(client) => match tokio::time::timeout(CALL_TIMEOUT * 2, client.get_async_connection()).await {
                Ok(Ok(conn)) => {
                    breaker.subscriber_down.store(false, Ordering::Relaxed);
                    return Some(conn);
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => "timed out".into(),
            },
        };
        breaker.subscriber_down.store(true, Ordering::Relaxed);
        tracing::debug!(%error, ?backoff, "sharded pub/sub connect failed; retrying");
        if !wait_noting(backoff, requests, wanted, shutdown).await {
            return None;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Sharded<'a> {
    conn: ClusterConnection,
    subscriber: &'a Subscriber,
    wanted: HashSet<Channel>,
    /// Wanted channels that may have lost messages: resynchronised when confirmed.
    lost: HashSet<Channel>,
    /// Wanted channels not subscribed: tried again every RETRY.
    retry: HashSet<Channel>,
    /// Unsubscriptions sent whose confirmation has not come back yet.
    unsubscribing: HashMap<Channel, u32>,
    /// Channels subscribed again whose confirmation came before that of the unsubscription
    /// sent before it (possible only when that one timed out and was sent late): when the
    /// unsubscription's comes, the channel is subscribed again.
    overtaken: HashSet<Channel>,
    /// Each channel's latest SSUBSCRIBE or SUNSUBSCRIBE task (its result: answered in time).
    in_flight: HashMap<Channel, JoinHandle<bool>>,
    /// `in_flight` is rid of finished tasks when it grows to this many.
    prune_at: usize,
    /// When each channel's local sockets last resynchronised.
    resynced: HashMap<Channel, Instant>,
}

impl Sharded<'_> {
    /// Sends one SSUBSCRIBE as a task of its own; `done` hears whether it worked (and the
    /// channel's (un)subscription before it was answered in time: if not, the socket may
    /// have taken its snapshot before this one went through, so the channel is subscribed
    /// again and resynchronised), `ack` (the socket waiting to snapshot) as soon as it was
    /// tried.
    fn subscribe(
        &mut self,
        channel: Channel,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
        done: &mpsc::UnboundedSender<(Channel, bool)>,
    ) {
        let mut conn = self.conn.clone();
        let name = self.subscriber.keys.channel(channel);
        let done = done.clone();
        self.in_order(channel, move |before_answered| async move {
            let result = call(conn.ssubscribe(name)).await;
            if let Err(err) = &result {
                tracing::warn!(error = %err, "sharded subscribe failed; retrying every second");
            }
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
            let _ = done.send((channel, result.is_ok() && before_answered));
            result.is_ok()
        });
    }

    /// Runs a channel's (un)subscription as a task of its own once the channel's previous
    /// one was answered or timed out (`call`), so the shard takes them in the order they
    /// were asked for; `command` hears whether the previous one was answered in time.
    fn in_order<C, F>(&mut self, channel: Channel, command: C)
    where
        C: FnOnce(bool) -> F + Send + 'static,
        F: Future<Output = bool> + Send + 'static,
    {
        if self.in_flight.len() >= self.prune_at {
            self.in_flight.retain(|_, task| !task.is_finished());
            self.prune_at = (self.in_flight.len() * 2).max(PRUNE_IN_FLIGHT);
        }
        let previous = self.in_flight.remove(&channel);
        let task = tokio::spawn(async move {
            let answered = match previous {
                Some(previous) => previous.await.unwrap_or(false),
                None => true,
            };
            command(answered).await
        });
        self.in_flight.insert(channel, task);
    }

    fn forget(&mut self, channel: Channel) {
        self.lost.remove(&channel);
        self.retry.remove(&channel);
        self.resynced.remove(&channel);
    }

    /// Acts on what a node pushed; false once the hub is gone.
    fn pushed(&mut self, push: PushInfo) -> bool {
        match push.kind {
            PushKind::SMessage => {
                if let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice() {
                    return self.subscriber.deliver(&String::from_utf8_lossy(channel), payload);
                }
            }
            PushKind::SSubscribe => {
                let Some(channel) = self.channel_of(&push) else { return true };
                if self.unsubscribing.contains_key(&channel) {
                    self.overtaken.insert(channel);
                }
                if self.wanted.contains(&channel) && self.lost.remove(&channel) {
                    self.subscriber.confirmed(channel);
                    return self.resync(channel);
                }
            }
            PushKind::SUnsubscribe => {
                let Some(channel) = self.channel_of(&push) else { return true };
                if let Some(pending) = self.unsubscribing.get_mut(&channel) {
                    *pending -= 1;
                    if *pending == 0 {
                        self.unsubscribing.remove(&channel);
                    }
                    if self.overtaken.remove(&channel) && self.wanted.contains(&channel) {
                        tracing::info!(channel = %channel.name(), "a late unsubscription overtook a subscription; subscribing again");
                        self.lost.insert(channel);
                        self.retry.insert(channel);
                    }
                } else if self.wanted.contains(&channel) {
                    // Not asked for: the slot moved away. Subscribe again where it lives now.
                    tracing::info!(channel = %channel.name(), "unsubscribed by the cluster; subscribing again");
                    self.lost.insert(channel);
                    self.retry.insert(channel);
                }
            }
            PushKind::Disconnection => {
                tracing::warn!(
                    "a cluster node's connection was lost; the client reconnects and resubscribes"
                );
                self.lost.extend(self.wanted.iter().copied());
                // Unsubscriptions on the lost connection are confirmed never.
                self.unsubscribing.clear();
                self.overtaken.clear();
            }
            _ => {}
        }
        true
    }

    /// The convoy channel a subscribe confirmation or unsubscription names.
    fn channel_of(&self, push: &PushInfo) -> Option<Channel> {
        match push.data.first() {
            Some(Value::BulkString(name)) => {
                self.subscriber.keys.parse_channel(&String::from_utf8_lossy(name))
            }
            _ => None,
        }
    }

    /// The channel's messages may have been lost: its local sockets resynchronise now
    /// (unless they did within RESYNC_SPACING), every other instance's once the prober sends
    /// the channel's Resync. False once the hub is gone.
    fn resync(&mut self, channel: Channel) -> bool {
        let breaker = &self.subscriber.breaker;
        breaker.dropped_channels.lock().unwrap_or_else(|e| e.into_inner()).insert(channel);
        let now = Instant::now();
        if self.resynced.get(&channel).is_some_and(|at| now.duration_since(*at) < RESYNC_SPACING) {
            return true;
        }
        self.resynced.insert(channel, now);
        tracing::info!(channel = %channel.name(), "resubscribed after a loss: resynchronising");
        let resync = Envelope { channel, message: HubMessage::Resync };
        self.subscriber.inbound.send(BusEvent::Deliver(resync)).is_ok()
    }
}
