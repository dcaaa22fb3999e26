//! The flood preset: fanout's phones, and in every session one more member who floods the
//! session topic with the largest publishes allowed, far past its byte budget, reading and
//! discarding what comes back. What it shows: the phones' location latency next to a quiet
//! fanout run's, the server's memory flat, and how many publishes the budget refused.

use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt, stream};
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::Plan;
use crate::convoy::{Cluster, Member};
use crate::proc_stats::ServerSample;

/// Publishes per second each flooder sends.
const FLOOD_RATE_HZ: u64 = 50;
/// Each publish's payload: the largest a default server takes (MAX_PUBLISH_BYTES 4096,
/// counted as its JSON, quotes included).
const PAYLOAD_BYTES: usize = 4000;

#[derive(Debug, Default, Serialize)]
pub struct FloodReport {
    pub flooders: usize,
    pub publishes_sent: u64,
    /// Refused by the servers for the sender's byte budget (whole run).
    pub publishes_refused: u64,
    /// Refused before that by the per-connection message rate (whole run).
    pub messages_rate_limited: u64,
    /// The servers' RSS before the flood started and when it ended.
    pub rss_bytes_before: u64,
    pub rss_bytes_after: u64,
}

/// Flooders started: stop them with `finish`.
pub struct Flood {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
    rss_bytes_before: u64,
}

/// Joins one flooder per session (after the phones, so it is the session's last member)
/// and starts them.
pub async fn start(cluster: &Cluster, plan: &Plan, members: &[Member], pids: &[i32]) -> Result<Flood> {
    let sessions: Vec<&str> =
        members.iter().step_by(plan.participants).map(|m| m.session_id.as_str()).collect();
    let joined: Vec<Result<Member>> =
        stream::iter(sessions).map(|id| cluster.join(id, "flooder")).buffered(16).collect().await;
    let rss_bytes_before = ServerSample::take_all(pids)?.map_or(0, |s| s.rss_bytes);
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for (index, member) in joined.into_iter().enumerate() {
        let member = member?;
        // Connection indices past the phones': same instance spread rule.
        let socket = cluster.connect(plan.sessions * plan.participants + index, &member, plan).await?;
        tasks.push(tokio::spawn(flooder(socket, member.session_id, stopped.clone())));
    }
    Ok(Flood { stop, tasks, rss_bytes_before })
}

impl Flood {
    pub async fn finish(self, cluster: &Cluster, pids: &[i32]) -> Result<FloodReport> {
        let _ = self.stop.send(true);
        let flooders = self.tasks.len();
        let mut publishes_sent = 0;
        for task in self.tasks {
            publishes_sent += task.await.unwrap_or(0);
        }
        Ok(FloodReport {
            flooders,
            publishes_sent,
            publishes_refused: cluster
                .counter(r#"convoy_messages_refused_total{reason="over_budget"}"#)
                .await?,
            messages_rate_limited: cluster
                .counter(r#"convoy_rate_limited_total{scope="connection"}"#)
                .await?,
            rss_bytes_before: self.rss_bytes_before,
            rss_bytes_after: ServerSample::take_all(pids)?.map_or(0, |s| s.rss_bytes),
        })
    }
}

/// Publishes at FLOOD_RATE_HZ until stopped, reading (and dropping) everything that comes
/// back; returns how many it sent.
async fn flooder(socket: crate::convoy::Socket, session_id: String, mut stop: watch::Receiver<bool>) -> u64 {
    let (mut sink, mut incoming) = socket.ws.split();
    let text = format!(
        r#"{{"type":"publish","data":{{"topic":"session:{session_id}","payload":"{}"}}}}"#,
        "f".repeat(PAYLOAD_BYTES - 2)
    );
    let drain = async { while let Some(Ok(_)) = incoming.next().await {} };
    let send = async {
        let mut sent = 0;
        let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / FLOOD_RATE_HZ));
        loop {
            tokio::select! {
                _ = stop.changed() => return sent,
                _ = ticks.tick() => {}
            }
            if sink.send(Message::text(text.clone())).await.is_err() {
                return sent;
            }
            sent += 1;
        }
    };
    tokio::select! {
        sent = send => sent,
        _ = drain => 0,
    }
}
