//! convoy-bench: drives a running convoy the way phones do and measures it end to end.
//!
//! It creates S sessions, joins P participants to each over REST, opens their WebSockets
//! (spread over 127.0.0.x source addresses when asked), and has every participant send a
//! location update R times a second on a fixed schedule (open loop: a slow server cannot
//! slow the senders down) for D seconds after a warm-up. Each update carries its scheduled
//! send time as its `timestamp`; receivers measure latency from that time, so queueing
//! anywhere (sender, server, receiver) counts. With the server's pid it also reads the
//! server's CPU time and RSS from /proc over the measured window.

mod mqtt;
mod proc_stats;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SubsecRound, Utc};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use proc_stats::{ServerSample, ServerStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Preset {
    /// 40 sessions x 50 participants at 1 Hz: 98,000 deliveries a second.
    Fanout,
    /// Connections held with no traffic, for memory per connection.
    Idle,
    /// A few seconds on a few sockets: proves the tool works (CI runs this).
    Smoke,
}

#[derive(Parser, Debug)]
#[command(
    about = "Drive a running convoy like phones do and measure delivery, latency, server CPU and memory"
)]
struct Args {
    /// Scenario; the options below override its numbers.
    #[arg(long, value_enum, default_value = "fanout")]
    preset: Preset,
    /// convoy's base URL. Ignored with --spawn.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Start this convoy binary (embedded SQLite in a temporary folder, rate limits off) on a
    /// free port and measure it; it is stopped at the end.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// The server's pid, for CPU seconds and RSS from /proc (set by --spawn).
    #[arg(long)]
    server_pid: Option<i32>,
    #[arg(long)]
    sessions: Option<usize>,
    #[arg(long)]
    participants: Option<usize>,
    /// Location updates per second per participant (0: connections only).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured, after the warm-up.
    #[arg(long)]
    duration: Option<u64>,
    #[arg(long)]
    warmup: Option<u64>,
    /// Spread sockets over this many source addresses 127.0.0.1.. (each has ~28,000 ports).
    #[arg(long, default_value_t = 1)]
    source_addresses: u8,
    /// Also run the same pattern over MQTT against this broker (host:port, e.g. Mosquitto
    /// on 127.0.0.1:1883) and report it next to convoy. Its CPU and RSS come from
    /// --mqtt-pid, or the running `mosquitto` process.
    #[arg(long)]
    mqtt: Option<String>,
    #[arg(long)]
    mqtt_pid: Option<i32>,
    /// Where the JSON result goes.
    #[arg(long, default_value = "bench-results/result.json")]
    output: PathBuf,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
}

/// The numbers a run uses, after the preset and the options.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    preset: Preset,
    sessions: usize,
    participants: usize,
    rate_hz: f64,
    warmup_s: u64,
    duration_s: u64,
    source_addresses: u8,
}

impl Plan {
    fn from(args: &Args) -> Self {
        let (sessions, participants, rate, warmup, duration) = match args.preset {
            Preset::Fanout => (40, 50, 1.0, 5, 30),
            Preset::Idle => (200, 50, 0.0, 5, 10),
            Preset::Smoke => (2, 5, 2.0, 1, 3),
        };
        Self {
            preset: args.preset,
            sessions: args.sessions.unwrap_or(sessions),
            participants: args.participants.unwrap_or(participants),
            rate_hz: args.rate.unwrap_or(rate),
            warmup_s: args.warmup.unwrap_or(warmup),
            duration_s: args.duration.unwrap_or(duration),
            source_addresses: args.source_addresses.max(1),
        }
    }

    fn connections(&self) -> usize {
        self.sessions * self.participants
    }
}

/// A command's result: convoy's run and, with --mqtt, the reference run.
#[derive(Debug, Serialize)]
struct Output {
    convoy: Report,
    mqtt_reference: Option<Report>,
}

/// What a run measured; written as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    started_at: DateTime<Utc>,
    plan: Plan,
    connections_held: usize,
    updates_sent: u64,
    deliveries_expected: u64,
    deliveries: u64,
    delivery_ratio: f64,
    deliveries_per_second: f64,
    latency_us: Latency,
    /// Deliveries counted per second of the measured window.
    throughput_per_second: Vec<u64>,
    server: Option<ServerStats>,
    /// This tool's own CPU seconds over the window: it shares the machine with the server.
    load_generator_cpu_seconds: f64,
    deliveries_per_server_cpu_second: Option<f64>,
    server_rss_bytes_per_connection: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// A joined participant: which session, and the socket token.
struct Member {
    session: usize,
    token: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::from(&args);
    let (base, server) = match &args.spawn {
        Some(binary) => {
            let server = proc_stats::Spawned::start(binary, plan.connections()).await?;
            (server.base.clone(), Some(server))
        }
        None => (args.url.trim_end_matches('/').to_owned(), None),
    };
    let pid = args.server_pid.or(server.as_ref().map(|s| s.pid));
    let report = run(&plan, &base, pid, args.quiet).await;
    drop(server);
    let convoy = report?;
    let reference = match &args.mqtt {
        Some(broker) => {
            let pid = args.mqtt_pid.or_else(mqtt::broker_pid);
            Some(mqtt::run(&plan, broker, pid, args.quiet).await?)
        }
        None => None,
    };
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let output = Output { convoy, mqtt_reference: reference };
    std::fs::write(&args.output, serde_json::to_string_pretty(&output)?)?;
    println!("== convoy");
    print_summary(&output.convoy);
    if let Some(reference) = &output.mqtt_reference {
        println!("== MQTT reference ({})", args.mqtt.as_deref().unwrap_or_default());
        print_summary(reference);
        if let (Some(c), Some(m)) =
            (output.convoy.deliveries_per_server_cpu_second, reference.deliveries_per_server_cpu_second)
        {
            println!("== convoy / MQTT deliveries per server CPU-second: {:.2}", c / m);
        }
    }
    eprintln!("result written to {}", args.output.display());
    Ok(())
}

async fn run(plan: &Plan, base: &str, pid: Option<i32>, quiet: bool) -> Result<Report> {
    let started_at = Utc::now();
    let http = reqwest::Client::new();
    let members = join_everyone(&http, base, plan).await?;
    let ws_url = base.replacen("http", "ws", 1);
    let sockets = connect_everyone(&ws_url, &members, plan).await?;
    eprintln!("{} sockets open", sockets.len());
    measure(plan, pid, quiet, started_at, sockets, client).await
}

pub(crate) type Stop = tokio::sync::watch::Receiver<bool>;

/// Runs `client` for each connection on one schedule and measures the window.
pub(crate) async fn measure<C, F, Fut>(
    plan: &Plan,
    pid: Option<i32>,
    quiet: bool,
    started_at: DateTime<Utc>,
    connections: Vec<C>,
    client: F,
) -> Result<Report>
where
    C: Send + 'static,
    F: Fn(C, Schedule, Arc<Counters>, Stop) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let connections_held = connections.len();
    // Everyone starts on one schedule, a second from now; senders are spread evenly over
    // the period so the load is smooth.
    let start = Instant::now() + Duration::from_secs(1);
    let window_start = start + Duration::from_secs(plan.warmup_s);
    let window_end = window_start + Duration::from_secs(plan.duration_s);
    let wall_start = Utc::now() + chrono::Duration::seconds(1);
    let window = Window {
        start: wall_start + chrono::Duration::seconds(plan.warmup_s as i64),
        end: wall_start + chrono::Duration::seconds((plan.warmup_s + plan.duration_s) as i64),
    };
    let counters = Arc::new(Counters::new(plan.duration_s as usize));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(connections_held);
    for (i, connection) in connections.into_iter().enumerate() {
        let offset =
            if plan.rate_hz > 0.0 { (i as f64 / connections_held as f64) / plan.rate_hz } else { 0.0 };
        let schedule =
            Schedule { rate_hz: plan.rate_hz, start, offset_s: offset, wall_start, window, end: window_end };
        tasks.push(tokio::spawn(client(connection, schedule, counters.clone(), stopped.clone())));
    }

    let progress = progress_bar(plan, quiet);
    tokio::time::sleep_until(window_start).await;
    let before = pid.map(ServerSample::take).transpose()?;
    let own_before = ServerSample::take(std::process::id() as i32)?;
    let mut peak_rss = before.as_ref().map_or(0, |s| s.rss_bytes);
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_millis(250).min(window_end - Instant::now())).await;
        if let Some(pid) = pid
            && let Ok(sample) = ServerSample::take(pid)
        {
            peak_rss = peak_rss.max(sample.rss_bytes);
        }
        let elapsed = Instant::now().saturating_duration_since(window_start).as_secs();
        progress.set_position(elapsed);
        progress.set_message(format!("{} deliveries", counters.deliveries.load(Ordering::Relaxed)));
    }
    let after = pid.map(ServerSample::take).transpose()?;
    let own_after = ServerSample::take(std::process::id() as i32)?;
    progress.finish_and_clear();
    // In-flight messages of the window's last second still count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latency = new_histogram();
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    for h in counters.take_histograms() {
        latency.add(&h)?;
    }

    let updates_sent = counters.sent.load(Ordering::Relaxed);
    let deliveries = counters.deliveries.load(Ordering::Relaxed);
    let deliveries_expected = updates_sent * (plan.participants as u64).saturating_sub(1);
    let server = match (before, after) {
        (Some(before), Some(after)) => Some(ServerStats::between(&before, &after, peak_rss)),
        _ => None,
    };
    Ok(Report {
        started_at,
        plan: plan.clone(),
        connections_held,
        updates_sent,
        deliveries_expected,
        deliveries,
        delivery_ratio: if deliveries_expected == 0 {
            1.0
        } else {
            deliveries as f64 / deliveries_expected as f64
        },
        deliveries_per_second: deliveries as f64 / plan.duration_s.max(1) as f64,
        latency_us: Latency::of(&latency),
        throughput_per_second: counters.per_second(),
        load_generator_cpu_seconds: own_after.cpu_seconds - own_before.cpu_seconds,
        deliveries_per_server_cpu_second: server
            .as_ref()
            .filter(|s| s.cpu_seconds > 0.0)
            .map(|s| deliveries as f64 / s.cpu_seconds),
        server_rss_bytes_per_connection: server
            .as_ref()
            .map(|s| s.rss_bytes_end as f64 / connections_held.max(1) as f64),
        server,
    })
}

fn progress_bar(plan: &Plan, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(plan.duration_s);
    bar.set_style(
        indicatif::ProgressStyle::with_template("measuring {bar:40} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

async fn join_everyone(http: &reqwest::Client, base: &str, plan: &Plan) -> Result<Vec<Member>> {
    let mut sessions = Vec::with_capacity(plan.sessions);
    for _ in 0..plan.sessions {
        let created: Value =
            post(http, &format!("{base}/api/sessions"), json!({ "expires_in_minutes": 120 })).await?;
        sessions.push(created["session_id"].as_str().context("session_id")?.to_owned());
    }
    let joins =
        sessions.iter().enumerate().flat_map(|(s, id)| (0..plan.participants).map(move |p| (s, id, p)));
    let members: Vec<Result<Member>> = stream::iter(joins)
        .map(|(session, id, p)| async move {
            let url = format!("{base}/api/sessions/{id}/join");
            let joined: Value = post(http, &url, json!({ "display_name": format!("bench {p}") })).await?;
            Ok(Member {
                session,
                token: joined["websocket_token"].as_str().context("websocket_token")?.to_owned(),
            })
        })
        .buffer_unordered(32)
        .collect()
        .await;
    members.into_iter().collect()
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

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect_everyone(ws_url: &str, members: &[Member], plan: &Plan) -> Result<Vec<Socket>> {
    let host = ws_url.trim_start_matches("ws://").split('/').next().unwrap_or_default().to_owned();
    let server: SocketAddr = tokio::net::lookup_host(&host).await?.next().context("server address")?;
    let results: Vec<Result<Socket>> = stream::iter(members.iter().enumerate())
        .map(|(i, member)| {
            let url = format!("{ws_url}/ws?token={}", member.token);
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % plan.source_addresses as usize) as u8));
            let _ = member.session;
            async move {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                let tcp = socket.connect(server).await?;
                tcp.set_nodelay(true)?;
                let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
                // The snapshot comes first; the socket is in its session from here on.
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => Ok(ws),
                    other => bail!("no snapshot: {other:?}"),
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The measured window, in wall time (timestamps in messages are wall time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Window {
    fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.start && t < self.end
    }
}

pub(crate) struct Counters {
    sent: AtomicU64,
    deliveries: AtomicU64,
    per_second: Vec<AtomicU64>,
    histograms: std::sync::Mutex<Vec<Histogram<u64>>>,
}

impl Counters {
    fn new(seconds: usize) -> Self {
        Self {
            sent: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            per_second: (0..seconds.max(1)).map(|_| AtomicU64::new(0)).collect(),
            histograms: std::sync::Mutex::default(),
        }
    }

    fn take_histograms(&self) -> Vec<Histogram<u64>> {
        std::mem::take(&mut self.histograms.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn per_second(&self) -> Vec<u64> {
        self.per_second.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// The start of the day of the last timestamp read, so most reads parse only the time.
#[derive(Default)]
struct DayCache {
    date: [u8; 10],
    start: Option<DateTime<Utc>>,
}

/// The `timestamp` of a broadcast this tool sent: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn timestamp_of(text: &str, day: &mut DayCache) -> Option<DateTime<Utc>> {
    const KEY: &str = r#""timestamp":""#;
    let at = text.find(KEY)? + KEY.len();
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

/// When one phone sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    rate_hz: f64,
    /// The run's time zero, and this phone's offset from it.
    start: Instant,
    offset_s: f64,
    /// Time zero on the wall clock (what message timestamps use).
    wall_start: DateTime<Utc>,
    window: Window,
    /// No sends from here on.
    end: Instant,
}

/// A phone's send times, open loop: late ticks fire at once (Burst), and each send is
/// stamped with its scheduled time, not the time it happens, so latency counts any delay.
pub(crate) struct Ticker {
    schedule: Schedule,
    interval: Option<tokio::time::Interval>,
}

impl Ticker {
    pub fn new(schedule: Schedule) -> Self {
        let interval = (schedule.rate_hz > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / schedule.rate_hz);
            let first = schedule.start + Duration::from_secs_f64(schedule.offset_s);
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            tick
        });
        Self { schedule, interval }
    }

    /// The next scheduled send time (to the microsecond, what messages carry), or never.
    pub async fn next(&mut self) -> DateTime<Utc> {
        let Some(interval) = &mut self.interval else { return std::future::pending().await };
        let due = interval.tick().await;
        if due >= self.schedule.end {
            return std::future::pending().await;
        }
        let since = chrono::Duration::from_std(due - self.schedule.start).unwrap_or_default();
        (self.schedule.wall_start + since).trunc_subsecs(6)
    }

    /// Counts a send that went out, if it belongs to the measured window.
    pub fn sent(&self, scheduled: DateTime<Utc>, counters: &Counters) {
        if self.schedule.window.contains(scheduled) {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A receiver's bookkeeping: latency into a local histogram, merged every half second.
pub(crate) struct Recorder {
    counters: Arc<Counters>,
    window: Window,
    histogram: Histogram<u64>,
    last_flush: Instant,
}

impl Recorder {
    pub fn new(counters: Arc<Counters>, window: Window) -> Self {
        Self { counters, window, histogram: new_histogram(), last_flush: Instant::now() }
    }

    /// A delivery of a message scheduled at `sent`, arriving `now`.
    pub fn record(&mut self, sent: DateTime<Utc>, now: DateTime<Utc>) {
        if !self.window.contains(sent) {
            return;
        }
        let micros = (now - sent).num_microseconds().unwrap_or(i64::MAX).max(1) as u64;
        let _ = self.histogram.record(micros.min(60_000_000));
        self.counters.deliveries.fetch_add(1, Ordering::Relaxed);
        let buckets = &self.counters.per_second;
        let second = ((sent - self.window.start).num_seconds().max(0) as usize).min(buckets.len() - 1);
        buckets[second].fetch_add(1, Ordering::Relaxed);
        if self.last_flush.elapsed() > Duration::from_millis(500) {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        let taken = std::mem::replace(&mut self.histogram, new_histogram());
        self.counters.histograms.lock().unwrap_or_else(|e| e.into_inner()).push(taken);
        self.last_flush = Instant::now();
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// One phone on convoy's /ws: sends on its schedule and times what it receives, until
/// told to stop.
async fn client(socket: Socket, schedule: Schedule, counters: Arc<Counters>, mut stop: Stop) {
    let (mut sink, mut stream) = socket.split();
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
        let mut recorder = Recorder::new(counters.clone(), schedule.window);
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
            // parse, just the fields needed (the server writes them in a fixed order).
            let text = text.as_str();
            if !text.starts_with(r#"{"type":"location_broadcast""#) {
                continue;
            }
            if let Some(sent) = timestamp_of(text, &mut day) {
                recorder.record(sent, now);
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

fn print_summary(r: &Report) {
    println!(
        "preset {:?}: {} sessions x {} participants at {} Hz, {} s measured",
        r.plan.preset, r.plan.sessions, r.plan.participants, r.plan.rate_hz, r.plan.duration_s
    );
    println!("connections held      {}", r.connections_held);
    println!("updates sent          {}", r.updates_sent);
    println!(
        "deliveries            {} of {} ({:.4} %)",
        r.deliveries,
        r.deliveries_expected,
        r.delivery_ratio * 100.0
    );
    println!("deliveries per second {:.0}", r.deliveries_per_second);
    let l = &r.latency_us;
    println!(
        "latency (ms)          p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50 as f64 / 1e3,
        l.p90 as f64 / 1e3,
        l.p99 as f64 / 1e3,
        l.p999 as f64 / 1e3,
        l.max as f64 / 1e3
    );
    if let Some(s) = &r.server {
        println!(
            "server CPU seconds    {:.2} ({:.0} % of one core)",
            s.cpu_seconds,
            s.cpu_seconds / r.plan.duration_s.max(1) as f64 * 100.0
        );
        println!(
            "server RSS            {:.1} MiB at the end, {:.1} MiB peak",
            s.rss_bytes_end as f64 / 1048576.0,
            s.rss_bytes_peak as f64 / 1048576.0
        );
    }
    println!(
        "load generator CPU    {:.2} s (it shares the machine with the server)",
        r.load_generator_cpu_seconds
    );
    if let Some(d) = r.deliveries_per_server_cpu_second {
        println!("deliveries per server CPU second {d:.0}");
    }
    if let Some(b) = r.server_rss_bytes_per_connection {
        println!("server RSS per connection {:.0} bytes (whole RSS / connections)", b);
    }
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
}
