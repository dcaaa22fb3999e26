//! The multi-instance preset's routing check: each instance holds one Redis pub/sub
//! connection, so `PUBSUB NUMSUB channel:session:{id}` counts the instances subscribed to
//! a session. It must equal the number of instances the run put that session's sockets on:
//! an instance receives only the sessions it has sockets in.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use crate::Plan;
use crate::convoy::Member;

/// Mismatches quoted in the report (the rest are only counted).
const MISMATCHES_QUOTED: usize = 5;

#[derive(Debug, Serialize)]
pub struct RoutingReport {
    pub sessions: usize,
    /// Sessions whose sockets are all on one instance, and split over two.
    pub on_one_instance: usize,
    pub split: usize,
    /// Sessions whose subscriber count equals the instances holding their sockets.
    pub matching: usize,
    pub mismatches: Vec<String>,
}

pub async fn check(redis: &redis::Client, members: &[Member], plan: &Plan) -> Result<RoutingReport> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let mut report =
        RoutingReport { sessions: 0, on_one_instance: 0, split: 0, matching: 0, mismatches: Vec::new() };
    for (session, chunk) in members.chunks(plan.participants).enumerate() {
        let first = session * plan.participants;
        let instances: BTreeSet<usize> = (first..first + chunk.len()).map(|i| plan.instance_of(i)).collect();
        let channel = format!("channel:session:{}", chunk[0].session_id);
        let counts: Vec<(String, usize)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await?;
        let subscribed = counts.first().map_or(0, |(_, n)| *n);
        report.sessions += 1;
        if instances.len() == 1 {
            report.on_one_instance += 1;
        } else {
            report.split += 1;
        }
        if subscribed == instances.len() {
            report.matching += 1;
        } else if report.mismatches.len() < MISMATCHES_QUOTED {
            report
                .mismatches
                .push(format!("{channel}: {subscribed} instances subscribed, sockets on {instances:?}"));
        }
    }
    Ok(report)
}
