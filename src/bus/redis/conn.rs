//! The command connection, to a single Redis or to a Redis Cluster, and the pipelines the
//! writer sends over it: on a cluster one per master, side by side. A session's writes and
//! its publish hash to one slot (`Keys`), so what a batch does to one session goes to one
//! master in order, and a shard that is down costs only its own sessions.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo};
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
/// a cluster one per master, each sent by a task of its own so that no shard waits for
/// another. (A pipeline per slot would be valid too, but Redis then reads and answers each
/// on its own: three times the CPU per update, measured.) Which master serves a slot comes
/// from `CLUSTER SLOTS`, read again every SLOT_MAP_AGE and after a failure; a slot not in
/// the map goes in a pipeline of its own, routed by the cluster client. A master's next
/// pipeline waits for its last one (a session's commands stay in order) and is dropped if
/// that one failed; a master that failed is skipped, not sent to, until a backoff has
/// passed (then the next pipeline tries), so a shard that is down costs only its own
/// sessions.
pub(super) struct Pipes {
    cluster: bool,
    pipes: Vec<(Target, Pipeline)>,
    at: HashMap<Target, usize>,
    slots: SlotMap,
    /// Master -> until when it is skipped, and the next backoff.
    down: HashMap<Target, (Instant, Duration)>,
    /// Each master's last pipeline in flight; it answers whether it reached Redis.
    in_flight: HashMap<Target, JoinHandle<bool>>,
    sent: mpsc::UnboundedSender<Sent>,
    settled: mpsc::UnboundedReceiver<Sent>,
}

/// Where a pipeline goes: a master (`host`, `port`), or a slot the map does not know yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Node(String, u16),
    Slot(u16),
}

/// A cluster pipeline's outcome, and the channels that lose messages if it failed.
type Sent = (Target, Vec<Channel>, Result<(), BusError>);

/// What could not be sent.
pub(super) struct Failed {
    /// The sessions and rooms whose messages may be lost: they are owed a Resync.
    pub(super) channels: Vec<Channel>,
    pub(super) error: BusError,
    /// A single Redis: the whole batch failed, the bus is down.
    pub(super) whole: bool,
}

/// The first time a failed master is skipped; doubled on each failure up to MAX_BACKOFF.
const NODE_BACKOFF: Duration = Duration::from_millis(500);
/// How old the slot map may grow before it is read again.
const SLOT_MAP_AGE: Duration = Duration::from_secs(5);
const SLOTS: u16 = 16_384;

/// The slot a key hashes to (its hash tag's, when it has one), as Redis Cluster computes it.
fn slot_of(key: &str) -> u16 {
    let key = key.as_bytes();
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// Which master serves each slot range, as `CLUSTER SLOTS` last said.
#[derive(Default)]
struct SlotMap {
    ranges: Vec<(u16, u16, String, u16)>,
    read_at: Option<Instant>,
}

impl SlotMap {
    fn target(&self, slot: u16) -> Target {
        self.ranges
            .iter()
            .find(|(start, end, ..)| (*start..=*end).contains(&slot))
            .map_or(Target::Slot(slot), |(_, _, host, port)| Target::Node(host.clone(), *port))
    }

    fn due(&self, now: Instant) -> bool {
        self.read_at.is_none_or(|at| now.duration_since(at) >= SLOT_MAP_AGE)
    }

    async fn read(&mut self, conn: &Conn, now: Instant) {
        let Conn::Cluster(conn) = conn else { return };
        self.read_at = Some(now);
        let mut conn = conn.clone();
        let asked = conn.route_command(
            redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        );
        match call(asked).await.and_then(|value| parse_slots(value).map_err(|e| BusError(e.to_string()))) {
            Ok(ranges) => self.ranges = ranges,
            Err(err) => {
                tracing::debug!(error = %err, "CLUSTER SLOTS failed; pipelines go per slot meanwhile");
            }
        }
    }
}

/// `CLUSTER SLOTS`: `[start, end, [host, port, ...], replicas...]` per range.
fn parse_slots(value: Value) -> redis::RedisResult<Vec<(u16, u16, String, u16)>> {
    let ranges: Vec<Vec<Value>> = redis::from_redis_value(value)?;
    let mut parsed = Vec::with_capacity(ranges.len());
    for range in ranges {
        let [start, end, master, ..] = range.as_slice() else { continue };
        let master: Vec<Value> = redis::from_redis_value(master.clone())?;
        let [host, port, ..] = master.as_slice() else { continue };
        parsed.push((
            redis::from_redis_value(start.clone())?,
            redis::from_redis_value(end.clone())?,
            redis::from_redis_value(host.clone())?,
            redis::from_redis_value(port.clone())?,
        ));
    }
    Ok(parsed)
}

impl Pipes {
    pub(super) fn new(cluster: bool) -> Self {
        let (sent, settled) = mpsc::unbounded_channel();
        Self {
            cluster,
            pipes: Vec::new(),
            at: HashMap::new(),
            slots: SlotMap::default(),
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
                self.pipes.push((Target::Slot(0), redis::pipe()));
            }
            return &mut self.pipes[0].1;
        }
        let target = self.slots.target(slot_of(key));
        let at = match self.at.get(&target) {
            Some(at) => *at,
            None => {
                self.pipes.push((target.clone(), redis::pipe()));
                self.at.insert(target, self.pipes.len() - 1);
                self.pipes.len() - 1
            }
        };
        &mut self.pipes[at].1
    }

    /// Sends what the batch put in the pipelines. `must_arrive` are the channels whose
    /// messages the batch carries, `key_of` a name of each (for its slot). Says what failed:
    /// on a single Redis this batch; on a cluster what this batch skipped and what earlier
    /// pipelines came back with. `recovered` is set when a failing master answers again.
    pub(super) async fn send(
        &mut self,
        conn: &Conn,
        now: Instant,
        recovered: &AtomicBool,
        must_arrive: &HashSet<Channel>,
        key_of: impl Fn(Channel) -> String,
    ) -> Option<Failed> {
        let pipes = std::mem::take(&mut self.pipes);
        if !self.cluster {
            let (_, pipe) = pipes.into_iter().next().filter(|(_, pipe)| !pipe.is_empty())?;
            let mut conn = conn.clone();
            let error = call(pipe.query_async::<()>(&mut conn)).await.err()?;
            return Some(Failed { channels: must_arrive.iter().copied().collect(), error, whole: true });
        }
        self.at.clear();
        let mut owed: HashMap<Target, Vec<Channel>> = HashMap::new();
        for channel in must_arrive {
            owed.entry(self.slots.target(slot_of(&key_of(*channel)))).or_default().push(*channel);
        }
        let mut failed = Failed {
            channels: Vec::new(),
            error: BusError("a redis cluster shard is down".into()),
            whole: false,
        };
        let mut any = false;
        while let Ok((target, channels, result)) = self.settled.try_recv() {
            if let Err(err) = result {
                self.fail(target, &err, now);
                failed.channels.extend(channels);
                failed.error = err;
                any = true;
            } else if self.down.remove(&target).is_some() {
                tracing::info!(?target, "redis cluster shard reachable again");
                recovered.store(true, Ordering::Relaxed);
            }
        }
        for (target, pipe) in pipes {
            if pipe.is_empty() {
                continue;
            }
            let channels = owed.remove(&target).unwrap_or_default();
            if self.down.get(&target).is_some_and(|(until, _)| now < *until) {
                failed.channels.extend(channels);
                any = true;
                continue;
            }
            let before = self.in_flight.remove(&target);
            let sent = self.sent.clone();
            let conn = conn.clone();
            let to = target.clone();
            let task = tokio::spawn(async move {
                let before_failed = match before {
                    Some(before) => !before.await.unwrap_or(false),
                    None => false,
                };
                let result = if before_failed {
                    Err(BusError("an earlier pipeline to this shard failed".into()))
                } else {
                    send_to(conn, &to, pipe).await
                };
                let reached = result.is_ok();
                let _ = sent.send((to, channels, result));
                reached
            });
            self.in_flight.insert(target, task);
        }
        self.in_flight.retain(|_, task| !task.is_finished());
        if any || self.slots.due(now) {
            self.slots.read(conn, now).await;
        }
        any.then_some(failed)
    }

    /// Waits until every pipeline in flight was sent or failed (a flush).
    pub(super) async fn drain(&mut self) {
        for (_, task) in self.in_flight.drain() {
            let _ = task.await;
        }
    }

    fn fail(&mut self, target: Target, err: &BusError, now: Instant) {
        let backoff = self.down.get(&target).map_or(NODE_BACKOFF, |(_, next)| *next);
        if !self.down.contains_key(&target) {
            tracing::warn!(?target, error = %err, "redis cluster shard unreachable: its sessions' commands are dropped a while");
        }
        self.down.insert(target, (now + backoff, (backoff * 2).min(MAX_BACKOFF)));
    }
}

/// One pipeline to a master (every reply checked: a slot that moved answers MOVED), or to
/// wherever the cluster client routes an unmapped slot.
async fn send_to(conn: Conn, target: &Target, pipe: Pipeline) -> Result<(), BusError> {
    let Conn::Cluster(mut conn) = conn else { unreachable!("a single Redis sends inline") };
    match target {
        Target::Slot(_) => call(pipe.query_async::<()>(&mut conn)).await,
        Target::Node(host, port) => {
            let count = pipe.cmd_iter().count();
            let route = SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port };
            let replies = call(conn.route_pipeline(pipe, 0, count, route)).await?;
            match replies.into_iter().find_map(|reply| match reply {
                Value::ServerError(err) => Some(err),
                _ => None,
            }) {
                Some(err) => Err(BusError(format!("{err:?}"))),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters_own() {
        // As `CLUSTER KEYSLOT` answers (Redis 7.0).
        for (key, slot) in [
            ("foo", 12182),
            ("somekey", 11058),
            ("{user1000}.following", 3443),
            ("a{}b", 13694),
            ("{}", 15257),
        ] {
            assert_eq!(slot_of(key), slot, "{key}");
        }
        assert_eq!(slot_of("channel:session:{abc}"), slot_of("locations:{abc}"));
    }

    #[test]
    fn the_slot_map_names_each_slots_master() {
        let int = |n| Value::Int(n);
        let node = |port| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![int(0), int(5460), node(7001)]),
            Value::Array(vec![int(5461), int(16383), node(7002), node(7004)]),
        ]);
        let slots = SlotMap { ranges: parse_slots(reply).unwrap(), read_at: None };
        assert_eq!(slots.target(5460), Target::Node("127.0.0.1".into(), 7001));
        assert_eq!(slots.target(5461), Target::Node("127.0.0.1".into(), 7002));
        assert_eq!(SlotMap::default().target(7), Target::Slot(7));
    }
}
