//! The burst preset: every participant joins over REST and opens its socket within one
//! second (open loop: admission i of N is due at i/N s, whatever the server does), timed
//! from its due time to the join's answer and to the socket's snapshot.

use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::Plan;
use crate::convoy::{self, Cluster, Socket};

/// Failures quoted in the report (the rest are only counted).
const ERRORS_QUOTED: usize = 5;

#[derive(Debug, Serialize)]
pub struct BurstReport {
    pub attempted: usize,
    pub admitted: usize,
    pub failed: usize,
    pub errors: Vec<String>,
    /// From due time to the join's answer, milliseconds.
    pub join_ms: Percentiles,
    /// From due time to the socket's first frame (the snapshot), milliseconds.
    pub admitted_ms: Percentiles,
    /// From the first due time until the last socket had its snapshot.
    pub all_admitted_after_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        Self { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), max: h.max() as f64 / 1e3 }
    }
}

/// Admits everyone within a second; returns the report and the sockets (in plan order) for
/// the traffic that follows, or no sockets if anyone failed (the sessions would not be
/// whole, and the traffic's expected deliveries would be wrong).
pub async fn run(cluster: &Cluster, plan: &Plan) -> Result<(BurstReport, Vec<Socket>)> {
    let sessions = cluster.create_sessions(plan.sessions).await?;
    let total = plan.connections();
    let start = Instant::now() + Duration::from_millis(500);
    let tasks: Vec<_> = (0..total)
        .map(|index| {
            let due = start + Duration::from_secs_f64(index as f64 / total as f64);
            let session_id = sessions[index / plan.participants].clone();
            let (cluster, plan) = (cluster.clone(), plan.clone());
            tokio::spawn(async move { convoy::admit_at(&cluster, &plan, index, &session_id, due).await })
        })
        .collect();
    let mut join = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut admitted = join.clone();
    let (mut sockets, mut errors, mut failed, mut last) = (Vec::new(), Vec::new(), 0, 0.0f64);
    for (index, task) in tasks.into_iter().enumerate() {
        match task.await? {
            Ok((socket, joined, done)) => {
                join.saturating_record(joined.as_micros() as u64);
                admitted.saturating_record(done.as_micros() as u64);
                last = last.max(index as f64 / total as f64 + done.as_secs_f64());
                sockets.push(socket);
            }
            Err(err) => {
                failed += 1;
                if errors.len() < ERRORS_QUOTED {
                    errors.push(format!("{err:#}"));
                }
            }
        }
    }
    if failed > 0 {
        sockets.clear();
    }
    let report = BurstReport {
        attempted: total,
        admitted: sockets.len(),
        failed,
        errors,
        join_ms: Percentiles::of(&join),
        admitted_ms: Percentiles::of(&admitted),
        all_admitted_after_s: last,
    };
    Ok((report, sockets))
}
