//! The measuring machinery every scenario shares: one open-loop schedule for all clients,
//! the measured window, delivery counters, latency histograms, and the server-side readings
//! (CPU seconds and RSS of the server processes, Redis CPU) taken at the window's edges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, SubsecRound, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::Plan;
use crate::proc_stats::{RedisWatch, ServerSample, ServerStats};

/// Latency histograms are sharded so receivers rarely wait on one another's flushes.
const HISTOGRAM_SHARDS: usize = 16;
/// A receiver hands its samples over when it holds this many, or every half second.
const SAMPLES_PER_FLUSH: usize = 256;

/// What a run measured; written as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub plan: Plan,
    pub connections_held: usize,
    pub updates_sent: u64,
    /// Each update's receivers, summed: its session's other members that read (slow
    /// consumers are not expected to receive anything).
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub delivery_ratio: f64,
    pub deliveries_per_second: f64,
    pub latency_us: Latency,
    /// The latency distribution, for charts: (percentile, microseconds).
    pub latency_percentiles: Vec<(f64, u64)>,
    /// Deliveries counted per second of the measured window (by scheduled send time).
    pub throughput_per_second: Vec<u64>,
    /// All server processes together (two with multi-instance).
    pub server: Option<ServerStats>,
    /// This tool's own CPU seconds over the window: it shares the machine with the server.
    pub load_generator_cpu_seconds: f64,
    pub deliveries_per_server_cpu_second: Option<f64>,
    pub server_rss_bytes_per_connection: Option<f64>,
    /// Redis's own CPU seconds over the window (`INFO cpu`), when the run uses Redis.
    pub redis_cpu_seconds: Option<f64>,
    /// Redis CPU per location update (each is one PUBLISH plus its location-cache write,
    /// pipelined by the server).
    pub redis_cpu_us_per_publish: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
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

/// The distribution as HdrHistogram plots it: percentiles ever closer to 100.
fn percentiles(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, u64)> = h
        .iter_quantiles(4)
        .map(|v| (v.quantile_iterated_to() * 100.0, h.highest_equivalent(v.value_iterated_to())))
        .take_while(|(p, _)| *p < 99.9999)
        .collect();
    points.push((100.0, h.max()));
    points
}

/// What a run watches besides its own clients.
#[derive(Default)]
pub struct Watched {
    /// Server processes, for CPU seconds and RSS from /proc.
    pub pids: Vec<i32>,
    /// The Redis the servers share, for its CPU seconds.
    pub redis: Option<RedisWatch>,
}

/// The measured window, in wall time (timestamps in messages are wall time).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Window {
    fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.start && t < self.end
    }
}

pub struct Counters {
    sent: AtomicU64,
    expected: AtomicU64,
    deliveries: AtomicU64,
    per_second: Vec<AtomicU64>,
    latency: Vec<Mutex<Histogram<u64>>>,
}

impl Counters {
    fn new(seconds: usize) -> Self {
        Self {
            sent: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            per_second: (0..seconds.max(1)).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..HISTOGRAM_SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    fn latency(&self) -> Result<Histogram<u64>> {
        let mut all = new_histogram();
        for shard in &self.latency {
            all.add(&*shard.lock().unwrap_or_else(|e| e.into_inner()))?;
        }
        Ok(all)
    }

    fn per_second(&self) -> Vec<u64> {
        self.per_second.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// When one client sends, and what it is expected to do.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The client's place in the run (connections are ordered session by session).
    pub index: usize,
    /// Whether it reads what it is sent (slow consumers do not).
    pub reads: bool,
    /// How many clients should receive each of its updates.
    receivers: u64,
    rate_hz: f64,
    /// The run's time zero, and this client's offset from it.
    start: Instant,
    offset_s: f64,
    /// Time zero on the wall clock (what message timestamps use).
    wall_start: DateTime<Utc>,
    pub window: Window,
    /// No sends from here on.
    end: Instant,
}

/// A client's send times, open loop: late ticks fire at once (Burst), and each send is
/// stamped with its scheduled time, not the time it happens, so latency counts any delay.
pub struct Ticker {
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
            counters.expected.fetch_add(self.schedule.receivers, Ordering::Relaxed);
        }
    }
}

/// A receiver's bookkeeping: latencies buffered locally (no allocation per flush) and
/// added to a shared histogram shard now and then.
pub struct Recorder {
    counters: Arc<Counters>,
    window: Window,
    shard: usize,
    samples: Vec<u64>,
    last_flush: Instant,
}

impl Recorder {
    pub fn new(counters: Arc<Counters>, schedule: &Schedule) -> Self {
        Self {
            counters,
            window: schedule.window,
            shard: schedule.index % HISTOGRAM_SHARDS,
            samples: Vec::with_capacity(SAMPLES_PER_FLUSH),
            last_flush: Instant::now(),
        }
    }

    /// A delivery of a message scheduled at `sent`, arriving `now`.
    pub fn record(&mut self, sent: DateTime<Utc>, now: DateTime<Utc>) {
        if !self.window.contains(sent) {
            return;
        }
        let micros = (now - sent).num_microseconds().unwrap_or(i64::MAX).max(1) as u64;
        self.samples.push(micros);
        self.counters.deliveries.fetch_add(1, Ordering::Relaxed);
        let buckets = &self.counters.per_second;
        let second = ((sent - self.window.start).num_seconds().max(0) as usize).min(buckets.len() - 1);
        buckets[second].fetch_add(1, Ordering::Relaxed);
        if self.samples.len() >= SAMPLES_PER_FLUSH || self.last_flush.elapsed() > Duration::from_millis(500) {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        let mut histogram = self.counters.latency[self.shard].lock().unwrap_or_else(|e| e.into_inner());
        for micros in self.samples.drain(..) {
            histogram.saturating_record(micros);
        }
        self.last_flush = Instant::now();
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub type Stop = tokio::sync::watch::Receiver<bool>;

/// Runs `client` for each connection on one schedule and measures the window.
pub async fn measure<C, F, Fut>(
    plan: &Plan,
    watched: &Watched,
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
    // the period so the load is smooth, and so is each session's: its members' slots are
    // interleaved with the other sessions', as phones that started at different times
    // report (connections are in session order: all of one session's members, then the
    // next's; slots in that order would bunch a session's updates into a sliver of the
    // period, which flatters everything that gathers a session's updates).
    let per_session = plan.participants.max(1);
    let sessions = connections_held.div_ceil(per_session);
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
    for (index, connection) in connections.into_iter().enumerate() {
        let slot = (index % per_session) * sessions + index / per_session;
        let offset = if plan.rate_hz > 0.0 {
            (slot as f64 / (per_session * sessions) as f64) / plan.rate_hz
        } else {
            0.0
        };
        let schedule = Schedule {
            index,
            reads: !plan.is_slow(index),
            receivers: plan.receivers_of(index),
            rate_hz: plan.rate_hz,
            start,
            offset_s: offset,
            wall_start,
            window,
            end: window_end,
        };
        tasks.push(tokio::spawn(client(connection, schedule, counters.clone(), stopped.clone())));
    }

    let progress = progress_bar(plan, quiet);
    tokio::time::sleep_until(window_start).await;
    let before = ServerSample::take_all(&watched.pids)?;
    let redis_before = redis_cpu(watched.redis.as_ref()).await?;
    let own_before = ServerSample::take(std::process::id() as i32)?;
    let mut peak_rss = before.as_ref().map_or(0, |s| s.rss_bytes);
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_millis(250).min(window_end - Instant::now())).await;
        if let Ok(Some(sample)) = ServerSample::take_all(&watched.pids) {
            peak_rss = peak_rss.max(sample.rss_bytes);
        }
        let elapsed = Instant::now().saturating_duration_since(window_start).as_secs();
        progress.set_position(elapsed);
        progress.set_message(format!("{} deliveries", counters.deliveries.load(Ordering::Relaxed)));
    }
    let after = ServerSample::take_all(&watched.pids)?;
    let redis_after = redis_cpu(watched.redis.as_ref()).await?;
    let own_after = ServerSample::take(std::process::id() as i32)?;
    progress.finish_and_clear();
    // In-flight messages of the window's last second still count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let latency = counters.latency()?;

    let updates_sent = counters.sent.load(Ordering::Relaxed);
    let deliveries = counters.deliveries.load(Ordering::Relaxed);
    let deliveries_expected = counters.expected.load(Ordering::Relaxed);
    let server = match (before, after) {
        (Some(before), Some(after)) => Some(ServerStats::between(&before, &after, peak_rss)),
        _ => None,
    };
    let redis_cpu = redis_before.zip(redis_after).map(|(before, after)| after - before);
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
        latency_percentiles: percentiles(&latency),
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
        redis_cpu_seconds: redis_cpu,
        redis_cpu_us_per_publish: redis_cpu
            .filter(|_| updates_sent > 0)
            .map(|cpu| cpu * 1e6 / updates_sent as f64),
    })
}

async fn redis_cpu(redis: Option<&RedisWatch>) -> Result<Option<f64>> {
    match redis {
        Some(redis) => Ok(Some(redis.cpu_seconds().await?)),
        None => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_climb_to_the_maximum() {
        let mut h = new_histogram();
        for micros in 1..=10_000 {
            h.record(micros).unwrap();
        }
        let points = percentiles(&h);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "{points:?}");
        assert_eq!(points.last(), Some(&(100.0, h.max())));
        let p50 = points.iter().find(|(p, _)| *p >= 50.0).unwrap().1;
        assert!((4_900..=5_100).contains(&p50), "p50 {p50}");
        assert!(percentiles(&new_histogram()).is_empty());
    }
}
