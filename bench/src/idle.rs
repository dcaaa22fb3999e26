//! The idle preset: connections held with no traffic, added in steps; the server's RSS is
//! read at each step and memory per connection is the slope of RSS over connections
//! (least squares), so fixed costs (runtime, database cache) do not count.

use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::StreamExt;
use serde::Serialize;

use crate::Plan;
use crate::convoy::{Cluster, Socket};
use crate::proc_stats::ServerSample;

/// How long the server gets to settle after a step before its RSS is read.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub steps: Vec<IdleStep>,
    /// The slope: server memory each further connection costs.
    pub bytes_per_connection: f64,
    /// The intercept: what the server holds with no connections, by the same fit.
    pub fixed_bytes: f64,
}

#[derive(Debug, Serialize)]
pub struct IdleStep {
    pub connections: usize,
    pub rss_bytes: u64,
}

pub async fn run(cluster: &Cluster, plan: &Plan, pids: &[i32]) -> Result<IdleReport> {
    if pids.is_empty() {
        bail!("the idle preset reads the server's memory: give --spawn or --server-pid");
    }
    let mut held: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut steps = Vec::new();
    for &target in &plan.idle_steps {
        let sessions = (target - held.len()).div_ceil(plan.participants);
        let step = Plan { sessions, ..plan.clone() };
        let members = cluster.join_everyone(&step).await?;
        let members = &members[..target - held.len()];
        let sockets = cluster.connect_everyone(members, &step).await?;
        held.extend(sockets.into_iter().map(|socket| tokio::spawn(hold(socket))));
        tokio::time::sleep(SETTLE).await;
        let Some(sample) = ServerSample::take_all(pids)? else { bail!("no server sample") };
        eprintln!("{} connections: server RSS {:.1} MiB", held.len(), sample.rss_bytes as f64 / 1048576.0);
        steps.push(IdleStep { connections: held.len(), rss_bytes: sample.rss_bytes });
    }
    for task in held {
        task.abort();
    }
    let (bytes_per_connection, fixed_bytes) = least_squares(&steps);
    Ok(IdleReport { steps, bytes_per_connection, fixed_bytes })
}

/// Keeps a socket open and answers the server's pings (reading is what answers them).
async fn hold(mut socket: Socket) {
    while let Some(Ok(_)) = socket.ws.next().await {}
}

/// Slope and intercept of RSS over connections.
fn least_squares(steps: &[IdleStep]) -> (f64, f64) {
    let n = steps.len() as f64;
    if steps.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mean_x = steps.iter().map(|s| s.connections as f64).sum::<f64>() / n;
    let mean_y = steps.iter().map(|s| s.rss_bytes as f64).sum::<f64>() / n;
    let covariance: f64 =
        steps.iter().map(|s| (s.connections as f64 - mean_x) * (s.rss_bytes as f64 - mean_y)).sum();
    let variance: f64 = steps.iter().map(|s| (s.connections as f64 - mean_x).powi(2)).sum();
    let slope = covariance / variance;
    (slope, mean_y - slope * mean_x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_the_cost_of_one_more_connection() {
        let steps: Vec<IdleStep> = [1_000, 5_000, 10_000]
            .into_iter()
            .map(|c| IdleStep { connections: c, rss_bytes: 20_000_000 + 3_000 * c as u64 })
            .collect();
        let (slope, intercept) = least_squares(&steps);
        assert!((slope - 3_000.0).abs() < 1e-6, "{slope}");
        assert!((intercept - 20_000_000.0).abs() < 1e-3, "{intercept}");
        assert!(least_squares(&steps[..1]).0.is_nan());
    }
}
