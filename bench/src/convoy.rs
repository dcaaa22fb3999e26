//! convoy's side of a run: sessions created and participants joined over REST, their
//! sockets opened on `/ws` (on one instance or several), and the phone that sends on its
//! schedule and times what it receives.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Plan;
use crate::measure::{Counters, Recorder, Schedule, Stop, Ticker};

/// Joins and socket opens in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 64;
/// A slow consumer's receive buffer: small, so the server's side fills within the run.
const SLOW_RECEIVE_BUFFER_BYTES: u32 = 4 * 1024;

/// A joined participant: which session, and the socket token.
pub struct Member {
    pub session_id: String,
    pub token: String,
}

/// An open `/ws` socket past its snapshot, and whose it is.
pub struct Socket {
    pub ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    /// The participant's user_id (from the snapshot): batches carry its own position too,
    /// which is not counted as a delivery.
    pub user_id: String,
}

/// The servers under test (one, or several sharing PostgreSQL and Redis).
#[derive(Clone)]
pub struct Cluster {
    pub bases: Vec<String>,
    http: reqwest::Client,
}

impl Cluster {
    pub fn new(bases: Vec<String>) -> Self {
        Self { bases, http: reqwest::Client::new() }
    }

    pub async fn create_sessions(&self, count: usize) -> Result<Vec<String>> {
        let created: Vec<Result<String>> = stream::iter(0..count)
            .map(|_| async {
                let url = format!("{}/api/sessions", self.bases[0]);
                let created = post(&self.http, &url, json!({ "expires_in_minutes": 120 })).await?;
                Ok(created["session_id"].as_str().context("session_id")?.to_owned())
            })
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
        created.into_iter().collect()
    }

    pub async fn join(&self, session_id: &str, name: &str) -> Result<Member> {
        let url = format!("{}/api/sessions/{session_id}/join", self.bases[0]);
        let joined = post(&self.http, &url, json!({ "display_name": name })).await?;
        let token = joined["websocket_token"].as_str().context("websocket_token")?.to_owned();
        Ok(Member { session_id: session_id.to_owned(), token })
    }

    /// Creates the plan's sessions and joins everyone, session by session.
    pub async fn join_everyone(&self, plan: &Plan) -> Result<Vec<Member>> {
        let sessions = self.create_sessions(plan.sessions).await?;
        let joins = sessions.iter().flat_map(|id| (0..plan.participants).map(move |p| (id, p)));
        let members: Vec<Result<Member>> = stream::iter(joins)
            .map(|(id, p)| async move { self.join(id, &format!("bench {p}")).await })
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
        members.into_iter().collect()
    }

    /// Opens everyone's socket, in the members' order, each on the instance the plan gives.
    pub async fn connect_everyone(&self, members: &[Member], plan: &Plan) -> Result<Vec<Socket>> {
        let sockets: Vec<Result<Socket>> = stream::iter(members.iter().enumerate())
            .map(|(index, member)| self.connect(index, member, plan))
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
        sockets.into_iter().collect()
    }

    /// Opens one member's socket and waits for its snapshot: from then on it is in its
    /// session.
    pub async fn connect(&self, index: usize, member: &Member, plan: &Plan) -> Result<Socket> {
        let base = &self.bases[plan.instance_of(index)];
        let host = base.trim_start_matches("http://").split('/').next().unwrap_or_default();
        let server: SocketAddr = tokio::net::lookup_host(host).await?.next().context("server address")?;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (index % plan.source_addresses as usize) as u8));
        let socket = TcpSocket::new_v4()?;
        if plan.is_slow(index) {
            socket.set_recv_buffer_size(SLOW_RECEIVE_BUFFER_BYTES)?;
        }
        socket.bind(SocketAddr::new(source, 0))?;
        let tcp = socket.connect(server).await?;
        tcp.set_nodelay(true)?;
        let mut url = format!("{}/ws?token={}", base.replacen("http", "ws", 1), member.token);
        if plan.batch_ms > 0 {
            url.push_str(&format!("&batch_ms={}", plan.batch_ms));
        }
        // Small buffers: thousands of sockets share the machine with the server.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(snapshot)))) => {
                let snapshot: Value = serde_json::from_str(snapshot.as_str())?;
                let user_id =
                    snapshot["data"]["user_id"].as_str().context("the snapshot's user_id")?.to_owned();
                Ok(Socket { ws, user_id })
            }
            other => bail!("no snapshot: {other:?}"),
        }
    }
}

impl Cluster {
    /// A counter without labels from every instance's /metrics, summed.
    pub async fn counter(&self, name: &str) -> Result<u64> {
        let mut total = 0;
        for base in &self.bases {
            let text =
                self.http.get(format!("{base}/metrics")).send().await?.error_for_status()?.text().await?;
            total += text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
        }
        Ok(total)
    }
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value> {
    let response = http.post(url).json(&body).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {body} (start convoy with RATE_LIMIT_ENABLED=false for benchmarks)");
    }
    Ok(body)
}

/// One phone on convoy's /ws: sends on its schedule and times what it receives, until
/// told to stop. A slow consumer sends but never reads.
pub async fn phone(socket: Socket, schedule: Schedule, counters: Arc<Counters>, mut stop: Stop) {
    let Socket { ws, user_id: me } = socket;
    let (mut sink, mut stream) = ws.split();
    let sender = async {
        let mut ticker = Ticker::new(schedule);
        loop {
            let scheduled = ticker.next().await;
            let text = format!(
                r#"{{"type":"location_update","data":{{"lat":48.85,"lng":2.35,"accuracy":5.0,"timestamp":"{}"}}}}"#,
                scheduled.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
            if sink.send(Message::text(text)).await.is_err() {
                return std::future::pending::<()>().await;
            }
            ticker.sent(scheduled, &counters);
        }
    };
    let receiver = async {
        if !schedule.reads {
            let _ = stop.changed().await;
            return;
        }
        let mut recorder = Recorder::new(counters.clone(), &schedule);
        let mut day = DayCache::default();
        loop {
            let message = tokio::select! {
                _ = stop.changed() => break,
                message = stream.next() => message,
            };
            let Some(Ok(message)) = message else { break };
            let Message::Text(text) = message else { continue };
            let now = Utc::now();
            // This runs ~100,000 times a second on the machine the server shares: no JSON
            // parse, just the fields needed (the server writes them in a fixed order). A
            // batch (--batch-ms) carries one timestamp per position.
            let text = text.as_str();
            let single = text.starts_with(r#"{"type":"location_broadcast""#);
            if !single && !text.starts_with(r#"{"type":"location_batch""#) {
                continue;
            }
            if single {
                if let Some((sent, _)) = next_timestamp(text, &mut day) {
                    recorder.record(sent, now);
                }
                continue;
            }
            // A batch is the session's: everyone's position but this phone's own counts.
            let mut rest = text;
            while let Some((user, after)) = next_user(rest) {
                let Some((sent, after)) = next_timestamp(after, &mut day) else { break };
                if user != me {
                    recorder.record(sent, now);
                }
                rest = after;
            }
        }
        recorder.flush();
    };
    // The sender never finishes by itself; the receiver ends when told to stop (or with
    // the socket), flushing its histogram.
    tokio::select! {
        _ = sender => {}
        _ = receiver => {}
    }
}

/// Joins and connects one participant on a schedule of its own (the burst preset):
/// returns its socket and how long the join and the whole admission took from the
/// scheduled time.
pub async fn admit_at(
    cluster: &Cluster,
    plan: &Plan,
    index: usize,
    session_id: &str,
    due: Instant,
) -> Result<(Socket, Duration, Duration)> {
    tokio::time::sleep_until(due).await;
    let member = cluster.join(session_id, &format!("burst {index}")).await?;
    let joined = due.elapsed();
    let socket = cluster.connect(index, &member, plan).await?;
    Ok((socket, joined, due.elapsed()))
}

/// The start of the day of the last timestamp read, so most reads parse only the time.
#[derive(Default)]
struct DayCache {
    date: [u8; 10],
    start: Option<DateTime<Utc>>,
}

/// The first `timestamp` of a position this tool sent (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) in
/// `text`, and the text after it.
fn next_timestamp<'t>(text: &'t str, day: &mut DayCache) -> Option<(DateTime<Utc>, &'t str)> {
    const KEY: &str = r#""timestamp":""#;
    let at = text.find(KEY)? + KEY.len();
    let sent = timestamp_at(text, at, day)?;
    Some((sent, text.get(at + 27..).unwrap_or_default()))
}

/// The next `user_id` in `text`, and the text after it.
fn next_user(text: &str) -> Option<(&str, &str)> {
    const KEY: &str = r#""user_id":""#;
    let at = text.find(KEY)? + KEY.len();
    let end = at + text[at..].find('"')?;
    Some((&text[at..end], &text[end..]))
}

#[cfg(test)]
fn timestamp_of(text: &str, day: &mut DayCache) -> Option<DateTime<Utc>> {
    next_timestamp(text, day).map(|(sent, _)| sent)
}

fn timestamp_at(text: &str, at: usize, day: &mut DayCache) -> Option<DateTime<Utc>> {
    let t = text.as_bytes().get(at..at + 27)?;
    if day.start.is_none() || day.date != t[..10] {
        let date = chrono::NaiveDate::parse_from_str(std::str::from_utf8(&t[..10]).ok()?, "%Y-%m-%d").ok()?;
        day.start = Some(date.and_hms_opt(0, 0, 0)?.and_utc());
        day.date.copy_from_slice(&t[..10]);
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        t.get(range)?.iter().try_fold(0i64, |n, b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
    };
    let micros =
        ((number(11..13)? * 60 + number(14..16)?) * 60 + number(17..19)?) * 1_000_000 + number(20..26)?;
    Some(day.start? + chrono::Duration::microseconds(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_timestamp_it_wrote() {
        let sent = DateTime::parse_from_rfc3339("2026-11-23T13:42:07.123456Z").unwrap().with_timezone(&Utc);
        let text = format!(
            r#"{{"type":"location_broadcast","data":{{"user_id":"u","lat":1.0,"lng":2.0,"accuracy":5.0,"timestamp":"{}"}}}}"#,
            sent.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        let mut day = DayCache::default();
        assert_eq!(timestamp_of(&text, &mut day), Some(sent));
        assert_eq!(timestamp_of(&text, &mut day), Some(sent), "from the cached day");
        assert_eq!(timestamp_of(r#"{"type":"location_broadcast","data":{}}"#, &mut day), None);
        assert_eq!(timestamp_of(r#""timestamp":"2026-11-23T1x:42:07.123456Z""#, &mut day), None);
    }

    #[test]
    fn reads_every_timestamp_of_a_batch() {
        let text = r#"{"type":"location_batch","data":{"locations":[{"user_id":"a","lat":1.0,"lng":2.0,"accuracy":5.0,"timestamp":"2026-11-23T13:42:07.000001Z"},{"user_id":"b","lat":1.0,"lng":2.0,"accuracy":5.0,"timestamp":"2026-11-23T13:42:07.000002Z"}]}}"#;
        let mut day = DayCache::default();
        let (user, rest) = next_user(text).unwrap();
        let (first, rest) = next_timestamp(rest, &mut day).unwrap();
        let (other, rest) = next_user(rest).unwrap();
        let (second, rest) = next_timestamp(rest, &mut day).unwrap();
        assert_eq!((user, other), ("a", "b"));
        assert_eq!((second - first).num_microseconds(), Some(1));
        assert!(next_user(rest).is_none() && next_timestamp(rest, &mut day).is_none());
    }
}
