//! The command connection, to a single Redis or to a Redis Cluster, and the pipelines the
//! writer sends over it. A cluster refuses a pipeline whose commands hash to different
//! slots, so there a batch goes as one pipeline per slot, side by side: a session's writes
//! and its publish are one slot (`Keys`), so what a batch does to one session stays in
//! order, and a shard that is down costs only its own slots' pipelines.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, Slot};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{BusError, CALL_TIMEOUT, MAX_BACKOFF, call};

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
pub(super) fn cluster_builder(urls: &[String]) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(urls.to_vec())
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

/// What one batch sends: one pipeline on a single Redis; on a cluster one per slot, in the
/// order the slots came up. On a cluster it also remembers which slots just failed: their
/// pipelines are dropped, not sent, until a backoff has passed (then the next one tries),
/// so a shard that is down does not hold every batch for CALL_TIMEOUT.
pub(super) struct Pipes {
    cluster: bool,
    pipes: Vec<(Slot, Pipeline)>,
    at: HashMap<Slot, usize>,
    /// Slot -> until when it is skipped, and the next backoff.
    down: HashMap<Slot, (Instant, Duration)>,
}

/// What a batch could not send.
pub(super) struct Failed {
    /// The slots whose pipelines failed or were skipped; `None` on a single Redis, where
    /// the whole batch failed.
    pub(super) slots: Option<HashSet<Slot>>,
    pub(super) error: BusError,
}

/// The first time a failed slot is skipped; doubled on each failure up to MAX_BACKOFF.
const SLOT_BACKOFF: Duration = Duration::from_millis(500);

impl Pipes {
    pub(super) fn new(cluster: bool) -> Self {
        Self { cluster, pipes: Vec::new(), at: HashMap::new(), down: HashMap::new() }
    }

    /// The pipeline for commands on `key` (every command's keys share one slot).
    pub(super) fn on(&mut self, key: &str) -> &mut Pipeline {
        let slot = if self.cluster { Slot::for_key(key) } else { SINGLE };
        let at = *self.at.entry(slot).or_insert_with(|| {
            self.pipes.push((slot, redis::pipe()));
            self.pipes.len() - 1
        });
        &mut self.pipes[at].1
    }

    /// Sends every pipeline (side by side on a cluster) and says what failed, if anything;
    /// `recovered` is set when a slot that was failing answers again.
    pub(super) async fn send(&mut self, conn: &Conn, now: Instant, recovered: &AtomicBool) -> Option<Failed> {
        let pipes = std::mem::take(&mut self.pipes);
        self.at.clear();
        let mut skipped = HashSet::new();
        let mut sends = Vec::with_capacity(pipes.len());
        for (slot, pipe) in pipes {
            if pipe.is_empty() {
                continue;
            }
            if self.down.get(&slot).is_some_and(|(until, _)| now < *until) {
                skipped.insert(slot);
                continue;
            }
            let mut conn = conn.clone();
            sends.push(async move { (slot, call(pipe.query_async::<()>(&mut conn)).await) });
        }
        let mut error = None;
        for (slot, result) in join_all(sends).await {
            match result {
                Ok(()) => {
                    if self.down.remove(&slot).is_some() {
                        tracing::info!(?slot, "redis cluster slot reachable again");
                        recovered.store(true, Ordering::Relaxed);
                    }
                }
                Err(err) => {
                    let backoff = self.down.get(&slot).map_or(SLOT_BACKOFF, |(_, next)| *next);
                    if self.cluster {
                        if !self.down.contains_key(&slot) {
                            tracing::warn!(?slot, error = %err, "redis cluster slot unreachable: its sessions' commands are dropped a while");
                        }
                        self.down.insert(slot, (now + backoff, (backoff * 2).min(MAX_BACKOFF)));
                    }
                    skipped.insert(slot);
                    error = Some(err);
                }
            }
        }
        if skipped.is_empty() {
            return None;
        }
        let error = error.unwrap_or_else(|| BusError("a redis cluster shard is down".into()));
        Some(Failed { slots: self.cluster.then_some(skipped), error })
    }
}
/// Where a single Redis's one pipeline is kept (slots mean nothing there).
const SINGLE: Slot = match Slot::new(0) {
    Some(slot) => slot,
    None => unreachable!(),
};
