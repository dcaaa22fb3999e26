//! The multi-instance preset's routing check: each instance holds one pub/sub connection
//! (on a cluster, one to each shard), so `PUBSUB NUMSUB channel:session:{id}` (on a cluster
//! `PUBSUB SHARDNUMSUB channel:session:{{id}}`, asked of the shard that owns the session)
//! counts the instances subscribed to a session. It must equal the number of instances the
//! run put that session's sockets on: an instance receives only the sessions it has sockets
//! in. On a cluster it also counts the sessions each shard owns: how evenly they spread.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::Plan;
use crate::convoy::Member;
use crate::proc_stats::RedisWatch;

/// Mismatches quoted in the report (the rest are only counted).
const MISMATCHES_QUOTED: usize = 5;

#[derive(Debug, Serialize)]
pub struct RoutingReport {
    pub sessions: usize,
    /// Sessions whose sockets are all on one instance, and split over two or more.
    pub on_one_instance: usize,
    pub split: usize,
    /// Sessions whose subscriber count equals the instances holding their sockets.
    pub matching: usize,
    pub mismatches: Vec<String>,
    /// On a cluster: each master (`host:port`) and the sessions it owns.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sessions_per_shard: BTreeMap<String, usize>,
}

pub async fn check(redis: &RedisWatch, members: &[Member], plan: &Plan) -> Result<RoutingReport> {
    let (_, seed) = redis.nodes.first().context("no Redis node")?;
    let mut conn = seed.get_multiplexed_async_connection().await?;
    let slots = if redis.cluster { Some(SlotOwners::read(&mut conn).await?) } else { None };
    let mut report = RoutingReport {
        sessions: 0,
        on_one_instance: 0,
        split: 0,
        matching: 0,
        mismatches: Vec::new(),
        sessions_per_shard: BTreeMap::new(),
    };
    for (session, chunk) in members.chunks(plan.participants).enumerate() {
        let first = session * plan.participants;
        let instances: BTreeSet<usize> = (first..first + chunk.len()).map(|i| plan.instance_of(i)).collect();
        let session_id = &chunk[0].session_id;
        let subscribed = match &slots {
            None => {
                let channel = format!("channel:session:{session_id}");
                let counts: Vec<(String, usize)> =
                    redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await?;
                counts.first().map_or(0, |(_, n)| *n)
            }
            Some(slots) => {
                let channel = format!("channel:session:{{{session_id}}}");
                let slot: u16 =
                    redis::cmd("CLUSTER").arg("KEYSLOT").arg(&channel).query_async(&mut conn).await?;
                let owner = slots.owner(slot).with_context(|| format!("slot {slot} is not served"))?;
                *report.sessions_per_shard.entry(owner.to_owned()).or_default() += 1;
                let client = redis::Client::open(format!("redis://{owner}"))?;
                let mut shard = client.get_multiplexed_async_connection().await?;
                let counts: Vec<(String, usize)> =
                    redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(&channel).query_async(&mut shard).await?;
                counts.first().map_or(0, |(_, n)| *n)
            }
        };
        report.sessions += 1;
        if instances.len() == 1 {
            report.on_one_instance += 1;
        } else {
            report.split += 1;
        }
        if subscribed == instances.len() {
            report.matching += 1;
        } else if report.mismatches.len() < MISMATCHES_QUOTED {
            report.mismatches.push(format!(
                "session {session_id}: {subscribed} instances subscribed, sockets on {instances:?}"
            ));
        }
    }
    Ok(report)
}

/// Which master serves each slot range (`CLUSTER SLOTS`).
struct SlotOwners(Vec<(u16, u16, String)>);

impl SlotOwners {
    async fn read(conn: &mut redis::aio::MultiplexedConnection) -> Result<Self> {
        let ranges: Vec<(u16, u16, (String, u16))> = {
            let raw: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
            raw.into_iter()
                .map(|range| {
                    let start: u16 = redis::from_redis_value(range.first().context("slot range")?.clone())?;
                    let end: u16 = redis::from_redis_value(range.get(1).context("slot range")?.clone())?;
                    let master: Vec<redis::Value> =
                        redis::from_redis_value(range.get(2).context("master")?.clone())?;
                    let host: String = redis::from_redis_value(master.first().context("host")?.clone())?;
                    let port: u16 = redis::from_redis_value(master.get(1).context("port")?.clone())?;
                    Ok((start, end, (host, port)))
                })
                .collect::<Result<_>>()?
        };
        Ok(Self(
            ranges
                .into_iter()
                .map(|(start, end, (host, port))| (start, end, format!("{host}:{port}")))
                .collect(),
        ))
    }

    fn owner(&self, slot: u16) -> Option<&str> {
        self.0
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, owner)| owner.as_str())
    }
}
