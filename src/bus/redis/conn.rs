//! The command connection, to a single Redis or to a Redis Cluster, and the pipelines the
//! writer sends over it. A cluster refuses a pipeline whose commands hash to different
//! slots, so there a batch goes as one pipeline per slot, side by side: a session's writes
//! and its publish are one slot (`Keys`), so what a batch does to one session stays in
//! order, and a shard that is down costs only its own slots' pipelines.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, Slot};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{BusError, CALL_TIMEOUT, MAX_BACKOFF, call};
use crate::message::Channel;

#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to the cluster whose seed nodes are `urls`, for commands (pub/sub has a
    /// connection of its own). Fails fast: a shard that cannot be reached fails its own
    /// commands within CALL_TIMEOUT instead of holding the writer through retries.
    pub(super) async fn cluster(urls: &[String]) -> Result<Self, BusError> {
        let client =
            cluster_builder(urls).build().map_err(|e| BusError(format!("bad REDIS_CLUSTER_URLS: {e}")))?;
        let conn = tokio::time::timeout(Duration::from_secs(5), client.get_async_connection())
            .await
            .map_err(|_| BusError("connecting to the redis cluster timed out".into()))?
            .map_err(|e| BusError(format!("connecting to the redis cluster: {e}")))?;
        Ok(Conn::Cluster(conn))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Whether Redis answers. On a cluster, any one master: a shard that is down fails its
    /// own sessions' commands, not the whole bus (the cluster client would send a plain
    /// PING to every master and fail when one of them does), and taking every instance out
    /// of the load balancer for it would not help.
    pub(super) async fn ping(&self) -> redis::RedisResult<()> {
        match self.clone() {
            Conn::Single(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop),
            Conn::Cluster(mut conn) => {
                let anyone = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::OneSucceeded),
                ));
                conn.route_command(redis::cmd("PING"), anyone).await.map(drop)
            }
        }
    }
}

/// The cluster client's settings shared by the command and the pub/sub connection.
/// TCP keepalive finds a shard connection that died silently (no RST) within about 11 s:
/// the client then reconnects and resubscribes.
pub(super) fn cluster_builder(urls: &[String]) -> redis::cluster::ClusterClientBuilder {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true).set_keepalive(keepalive))
        .connection_timeout(CALL_TIMEOUT)
        .response_timeout(CALL_TIMEOUT)
        .retries(1)
        .min_retry_wait(10)
        .max_retry_wait(100)
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What one batch sends: one pipeline on a single Redis, sent and awaited in the writer; on
/// a cluster one per slot, each sent by a task of its own so that no shard waits for
/// another. A slot's next pipeline waits for its last one (a session's commands stay in
/// order) and is dropped if that one failed; a slot that failed is skipped, not sent, until
/// a backoff has passed (then the next pipeline tries), so a shard that is down costs only
/// its own sessions. At most MAX_QUEUED pipelines wait behind a slot's: past that, a slot
/// whose shard answers slower than the batches come is dropped from (and resynchronised).
///
/// (One pipeline per master, routed by address from a CLUSTER SLOTS map of our own, cost
/// Redis 11 % less per update, but the cluster client treats a pipeline to an address it
/// is repairing as a lost topology and reconnects everything, one bad reply failed the
/// master's every session, and a reply that needs ASK or TRYAGAIN made it resend others'
/// commands: a pipeline per slot is what the client routes, redirects and retries
/// correctly.)
pub(super) struct Pipes {
    cluster: bool,
    pipes: Vec<(Slot, Pipeline)>,
    at: HashMap<Slot, usize>,
    /// Slot -> until when it is skipped, and the next backoff.
    down: HashMap<Slot, (Instant, Duration)>,
    /// Each slot's last pipeline in flight (it answers whether it reached Redis), and how
    /// many are chained behind one another there.
    in_flight: HashMap<Slot, (JoinHandle<bool>, usize)>,
    sent: mpsc::UnboundedSender<Sent>,
    settled: mpsc::UnboundedReceiver<Sent>,
}

/// A cluster pipeline's outcome, and the channels that lose messages if it failed.
type Sent = (Slot, Vec<Channel>, Result<(), BusError>);

/// What could not be sent.
pub(super) struct Failed {
    /// The sessions and rooms whose messages may be lost: they are owed a Resync.
    pub(super) channels: Vec<Channel>,
    pub(super) error: BusError,
    /// A single Redis: the whole batch failed, the bus is down.
    pub(super) whole: bool,
}

/// Pipelines that may wait behind a slot's pipeline in flight.
const MAX_QUEUED: usize = 64;
/// The first time a failed slot is skipped; doubled on each failure up to MAX_BACKOFF.
const SLOT_BACKOFF: Duration = Duration::from_millis(500);

impl Pipes {
    pub(super) fn new(cluster: bool) -> Self {
        let (sent, settled) = mpsc::unbounded_channel();
        Self {
            cluster,
            pipes: Vec::new(),
            at: HashMap::new(),
            down: HashMap::new(),
            in_flight: HashMap::new(),
            sent,
            settled,
        }
    }

    /// The pipeline for commands on `key` (every command's keys share one slot).
    pub(super) fn on(&mut self, key: &str) -> &mut Pipeline {
        if !self.cluster {
            if self.pipes.is_empty() {
                self.pipes.push((SINGLE, redis::pipe()));
            }
            return &mut self.pipes[0].1;
        }
        let slot = Slot::for_key(key);
        let at = *self.at.entry(slot).or_insert_with(|| {
            self.pipes.push((slot, redis::pipe()));
            self.pipes.len() - 1
        });
        &mut self.pipes[at].1
    }

    /// Sends what the batch put in the pipelines. `must_arrive` are the channels whose
    /// messages the batch carries, `slot_of` where each lives. Says what failed: on a single
    /// Redis this batch; on a cluster what this batch skipped and what earlier pipelines
    /// came back with. `recovered` is set when a failing slot answers again.
    pub(super) async fn send(
        &mut self,
        conn: &Conn,
        now: Instant,
        recovered: &AtomicBool,
        must_arrive: &HashSet<Channel>,
        slot_of: impl Fn(Channel) -> Slot,
    ) -> Option<Failed> {
        let pipes = std::mem::take(&mut self.pipes);
        if !self.cluster {
            let (_, pipe) = pipes.into_iter().next().filter(|(_, pipe)| !pipe.is_empty())?;
            let mut conn = conn.clone();
            let error = call(pipe.query_async::<()>(&mut conn)).await.err()?;
            return Some(Failed { channels: must_arrive.iter().copied().collect(), error, whole: true });
        }
        self.at.clear();
        let mut owed: HashMap<Slot, Vec<Channel>> = HashMap::new();
        for channel in must_arrive {
            owed.entry(slot_of(*channel)).or_default().push(*channel);
        }
        let mut failed = Failed {
            channels: Vec::new(),
            error: BusError("a redis cluster shard is down".into()),
            whole: false,
        };
        let mut any = self.settle(now, recovered, &mut failed);
        for (slot, pipe) in pipes {
            if pipe.is_empty() {
                continue;
            }
            let channels = owed.remove(&slot).unwrap_or_default();
            if self.down.get(&slot).is_some_and(|(until, _)| now < *until) {
                failed.channels.extend(channels);
                any = true;
                continue;
            }
            let (before, queued) = match self.in_flight.remove(&slot) {
                Some((task, queued)) if !task.is_finished() => (Some(task), queued + 1),
                Some((task, _)) => (Some(task), 1),
                None => (None, 1),
            };
            if queued > MAX_QUEUED {
                // The shard is alive but slower than the batches: keep the chain, drop this.
                self.in_flight.insert(slot, (before.expect("a chain"), queued - 1));
                failed.channels.extend(channels);
                any = true;
                continue;
            }
            let sent = self.sent.clone();
            let mut conn = conn.clone();
            let task = tokio::spawn(async move {
                let before_failed = match before {
                    Some(before) => !before.await.unwrap_or(false),
                    None => false,
                };
                let result = if before_failed {
                    Err(BusError("an earlier pipeline of this slot failed".into()))
                } else {
                    call(pipe.query_async::<()>(&mut conn)).await
                };
                let reached = result.is_ok();
                let _ = sent.send((slot, channels, result));
                reached
            });
            self.in_flight.insert(slot, (task, queued));
        }
        self.in_flight.retain(|_, (task, _)| !task.is_finished());
        any.then_some(failed)
    }

    /// Waits until every pipeline in flight was sent or failed (a flush), and says what
    /// failed.
    pub(super) async fn drain(&mut self, now: Instant, recovered: &AtomicBool) -> Option<Failed> {
        for (_, (task, _)) in self.in_flight.drain() {
            let _ = task.await;
        }
        let mut failed = Failed {
            channels: Vec::new(),
            error: BusError("a redis cluster shard is down".into()),
            whole: false,
        };
        self.settle(now, recovered, &mut failed).then_some(failed)
    }

    /// Takes in what the pipelines in flight came back with; true if any failed.
    fn settle(&mut self, now: Instant, recovered: &AtomicBool, failed: &mut Failed) -> bool {
        let mut any = false;
        while let Ok((slot, channels, result)) = self.settled.try_recv() {
            if let Err(err) = result {
                self.fail(slot, &err, now);
                failed.channels.extend(channels);
                failed.error = err;
                any = true;
            } else if self.down.remove(&slot).is_some() {
                tracing::info!(?slot, "redis cluster slot reachable again");
                recovered.store(true, Ordering::Relaxed);
            }
        }
        any
    }

    fn fail(&mut self, slot: Slot, err: &BusError, now: Instant) {
        let backoff = self.down.get(&slot).map_or(SLOT_BACKOFF, |(_, next)| *next);
        if !self.down.contains_key(&slot) {
            tracing::warn!(?slot, error = %err, "redis cluster slot unreachable: its sessions' commands are dropped a while");
        }
        self.down.insert(slot, (now + backoff, (backoff * 2).min(MAX_BACKOFF)));
    }
}

/// Where a single Redis's one pipeline is kept (slots mean nothing there).
const SINGLE: Slot = match Slot::new(0) {
    Some(slot) => slot,
    None => unreachable!(),
};
