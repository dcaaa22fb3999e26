//! convoy-bench: drives a running convoy the way phones do and measures it end to end.
//!
//! It creates S sessions, joins P participants to each over REST, opens their WebSockets
//! (spread over 127.0.0.x source addresses when asked), and has every participant send a
//! location update R times a second on a fixed schedule (open loop: a slow server cannot
//! slow the senders down) for D seconds after a warm-up. Each update carries its scheduled
//! send time as its `timestamp`; receivers measure latency from that time, so queueing
//! anywhere (sender, server, receiver) counts. With the server's pid it also reads the
//! server's CPU time and RSS from /proc over the measured window. Presets name the
//! scenarios of BENCHMARKS.md.

mod burst;
mod charts;
mod check;
mod convoy;
mod flood;
mod idle;
mod measure;
mod mqtt;
mod multi;
mod proc_stats;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::convoy::Cluster;
use crate::measure::{Report, Watched, measure};
use crate::proc_stats::{Backends, RedisWatch, Spawned};

/// Participants per session in the presets (convoy's default session limit).
const SESSION_SIZE: usize = 50;
/// File descriptors kept free for everything but the sockets (HTTP pool, files, runtime).
const SPARE_FILES: u64 = 500;
/// The idle preset's target: 19,000 connections on one instance.
const IDLE_TARGET: usize = 19_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Preset {
    /// 40 sessions x 50 participants at 1 Hz: 98,000 deliveries a second.
    Fanout,
    /// As many sessions of 50 at 1 Hz as the file-descriptor limit allows.
    FanoutLarge,
    /// Connections held with no traffic, added in steps: memory per connection.
    Idle,
    /// Everyone joins and connects within one second, then 10 s of fanout traffic.
    Burst,
    /// fanout, with a tenth of the receivers not reading at all.
    SlowConsumer,
    /// fanout over two instances sharing PostgreSQL and Redis.
    MultiInstance,
    /// fanout (49 phones a session) plus one member per session flooding 4 KiB publishes
    /// at 50 a second, with the server's rate limits on: the phones' latency, memory, and
    /// the publishes the byte budget refused.
    Flood,
    /// A few seconds on a few sockets: proves the tool works (CI runs this).
    Smoke,
}

/// Where a session's sockets go when there are several instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Placement {
    Mixed,
    Random,
    Affine,
}

#[derive(Parser, Debug)]
#[command(
    about = "Drive a running convoy like phones do and measure delivery, latency, server CPU and memory"
)]
struct Args {
    /// Scenario; the options below override its numbers.
    #[arg(long, value_enum, default_value = "fanout")]
    preset: Preset,
    /// convoy's base URL; repeat it for several instances. Ignored with --spawn.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// Start this convoy binary (once per instance) on free ports, rate limits off, and
    /// measure it; stopped at the end. Embedded SQLite in a temporary folder unless
    /// --database-url is given.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// The server's pid (repeat for several), for CPU seconds and RSS from /proc (set by
    /// --spawn).
    #[arg(long)]
    server_pid: Vec<i32>,
    /// The database spawned instances use (multi-instance: PostgreSQL; use a database of
    /// its own, the run leaves its sessions there).
    #[arg(long)]
    database_url: Option<String>,
    /// The Redis spawned instances share; its CPU per publish is reported.
    #[arg(long, conflicts_with = "redis_cluster_urls")]
    redis_url: Option<String>,
    /// A Redis Cluster's seed nodes (comma-separated redis://host:port) that spawned
    /// instances share instead: the CPU per publish is summed over all its nodes, and how
    /// the sessions spread over its shards is reported.
    #[arg(long, value_delimiter = ',')]
    redis_cluster_urls: Vec<String>,
    /// Where each session's sockets go with several instances: `mixed` (a quarter of the
    /// sessions on the first instance, a quarter on the last, the rest spread participant
    /// by participant: routing is checked both ways), `random` (each socket on any instance,
    /// as a load balancer without affinity does) or `affine` (a session's sockets on one
    /// instance, as deploy/nginx.conf routes them).
    #[arg(long, value_enum, default_value = "mixed")]
    placement: Placement,
    /// Shorthand for --placement affine.
    #[arg(long)]
    affinity: bool,
    /// Server instances (multi-instance: 2).
    #[arg(long)]
    instances: Option<usize>,
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
    /// The idle preset's steps (connections held at each reading), e.g. 1000,5000,10000.
    #[arg(long, value_delimiter = ',')]
    idle_steps: Option<Vec<usize>>,
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
    /// Ask convoy for batched delivery: each socket gets one `location_batch` per this many
    /// milliseconds (`/ws?batch_ms=`) instead of one `location_broadcast` per position.
    #[arg(long, default_value_t = 0)]
    batch_ms: u64,
    /// Where the JSON result goes; the SVG charts go beside it (*.latency.svg,
    /// *.throughput.svg).
    #[arg(long, default_value = "bench-results/result.json")]
    output: PathBuf,
    /// No progress bar (for logs).
    #[arg(long)]
    quiet: bool,
    /// Exit non-zero, naming the target, when the run falls short of issue 17's delivery
    /// targets (fanout and fanout-large; one message per position needs --mqtt).
    #[arg(long)]
    check: bool,
}

/// The numbers a run uses, after the preset and the options.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    preset: Preset,
    sessions: usize,
    participants: usize,
    rate_hz: f64,
    warmup_s: u64,
    duration_s: u64,
    source_addresses: u8,
    instances: usize,
    placement: Placement,
    /// Every this-many-th participant of a session does not read (slow-consumer).
    slow_every: Option<usize>,
    /// convoy's batched delivery window (0: one message per position).
    batch_ms: u64,
    idle_steps: Vec<usize>,
}

impl Plan {
    fn from(args: &Args) -> Result<Self> {
        let sockets = usable_sockets()?;
        let (sessions, rate, warmup, duration) = match args.preset {
            Preset::Fanout | Preset::SlowConsumer | Preset::MultiInstance | Preset::Flood => (40, 1.0, 5, 30),
            Preset::FanoutLarge => (sockets / SESSION_SIZE, 1.0, 5, 20),
            Preset::Idle => (0, 0.0, 0, 0),
            Preset::Burst => (40, 1.0, 2, 10),
            Preset::Smoke => (2, 2.0, 1, 3),
        };
        let participants = args.participants.unwrap_or(match args.preset {
            Preset::Smoke => 5,
            Preset::Flood => SESSION_SIZE - 1, // the flooder is the 50th
            _ => SESSION_SIZE,
        });
        let idle_steps = match &args.idle_steps {
            Some(steps) => steps.clone(),
            None if args.preset == Preset::Idle => {
                let most = IDLE_TARGET.min(sockets);
                vec![1_000, most / 4, most / 2, most]
            }
            None => Vec::new(),
        };
        if idle_steps.windows(2).any(|w| w[0] >= w[1]) || idle_steps.first() == Some(&0) {
            bail!("--idle-steps must grow: {idle_steps:?}");
        }
        if participants < 2 {
            bail!("--participants must be at least 2: someone has to receive");
        }
        let instances =
            args.instances.unwrap_or(if args.preset == Preset::MultiInstance { 2 } else { 1 }).max(1);
        Ok(Self {
            preset: args.preset,
            sessions: args.sessions.unwrap_or(sessions),
            participants,
            rate_hz: args.rate.unwrap_or(rate),
            warmup_s: args.warmup.unwrap_or(warmup),
            duration_s: args.duration.unwrap_or(duration),
            source_addresses: args.source_addresses.max(1),
            instances,
            placement: if args.affinity { Placement::Affine } else { args.placement },
            slow_every: (args.preset == Preset::SlowConsumer).then_some(10),
            batch_ms: args.batch_ms,
            idle_steps,
        })
    }

    fn connections(&self) -> usize {
        match self.preset {
            Preset::Idle => self.idle_steps.last().copied().unwrap_or(0),
            _ => self.sessions * self.participants,
        }
    }

    /// Whether connection `index` is a slow consumer (never reads).
    pub fn is_slow(&self, index: usize) -> bool {
        self.slow_every.is_some_and(|every| index % self.participants % every == every - 1)
    }

    /// How many connections should receive each update connection `index` sends: the
    /// others of its session that read.
    pub fn receivers_of(&self, index: usize) -> u64 {
        let slow = self.slow_every.map_or(0, |every| self.participants / every);
        let readers = self.participants - slow;
        (readers - usize::from(!self.is_slow(index))) as u64
    }

    /// The instance connection `index` connects to (`Placement`). The same for every run
    /// of the same plan.
    pub fn instance_of(&self, index: usize) -> usize {
        if self.instances <= 1 {
            return 0;
        }
        let session = index / self.participants;
        match self.placement {
            Placement::Mixed => match session % 4 {
                0 => 0,
                1 => self.instances - 1,
                _ => index % self.participants % self.instances,
            },
            Placement::Random => scatter(index) % self.instances,
            Placement::Affine => scatter(session) % self.instances,
        }
    }
}

/// A fixed, well-mixed number for `n` (a load balancer's choice, reproducible).
fn scatter(n: usize) -> usize {
    let mut x = (n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as usize
}

/// Sockets this process can open: its file-descriptor limit, less some to spare. The
/// server (on the same machine, same limit) needs as many.
fn usable_sockets() -> Result<usize> {
    let limits = procfs::process::Process::myself()?.limits()?;
    let soft = match limits.max_open_files.soft_limit {
        procfs::process::LimitValue::Value(n) => n,
        procfs::process::LimitValue::Unlimited => 1 << 20,
    };
    Ok(soft.saturating_sub(SPARE_FILES) as usize)
}

/// A command's result: what its preset measured and, with --mqtt, the reference run.
#[derive(Debug, Default, Serialize)]
struct Output {
    #[serde(skip_serializing_if = "Option::is_none")]
    convoy: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_reference: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle: Option<idle::IdleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<burst::BurstReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<multi::RoutingReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flood: Option<flood::FloodReport>,
    /// Sockets the servers closed with 1013 for falling behind (whole run).
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_consumer_closes: Option<u64>,
    /// Location updates the servers replaced in a queue before it was written (a reader
    /// that falls behind gets the newest position of each participant, not every one;
    /// deliveries short of 100 % with no closes are these). Whole run, warm-up included.
    #[serde(skip_serializing_if = "Option::is_none")]
    frames_coalesced: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::from(&args)?;
    if args.mqtt.is_some() && !matches!(plan.preset, Preset::Fanout | Preset::FanoutLarge | Preset::Smoke) {
        bail!("--mqtt runs the fan-out pattern: use it with fanout, fanout-large or smoke");
    }
    let backends = Backends {
        database_url: args.database_url.clone(),
        redis_url: args.redis_url.clone(),
        redis_cluster_urls: args.redis_cluster_urls.clone(),
    };
    if args.spawn.is_some()
        && plan.instances > 1
        && ((backends.redis_url.is_none() && backends.redis_cluster_urls.is_empty())
            || backends.database_url.is_none())
    {
        bail!(
            "several instances share PostgreSQL and Redis: give --database-url and --redis-url (or --redis-cluster-urls)"
        );
    }
    let mut servers = Vec::new();
    if let Some(binary) = &args.spawn {
        for _ in 0..plan.instances {
            let limits_on = plan.preset == Preset::Flood; // the budget is what is measured
            servers.push(Spawned::start(binary, plan.connections(), &backends, limits_on).await?);
        }
    }
    let (bases, pids): (Vec<String>, Vec<i32>) = if servers.is_empty() {
        (args.url.iter().map(|u| u.trim_end_matches('/').to_owned()).collect(), args.server_pid.clone())
    } else {
        (servers.iter().map(|s| s.base.clone()).collect(), servers.iter().map(|s| s.pid).collect())
    };
    if bases.len() < plan.instances {
        bail!("{} instances planned but {} --url given", plan.instances, bases.len());
    }
    let redis = match (&args.redis_url, args.redis_cluster_urls.first()) {
        (Some(url), _) => Some(RedisWatch::single(url)?),
        (None, Some(seed)) => Some(RedisWatch::cluster(seed).await?),
        (None, None) => None,
    };
    let cluster = Cluster::new(bases);
    let watched = Watched { pids: pids.clone(), redis };
    let output = run(&args, &plan, &cluster, &watched).await;
    drop(servers);
    let mut output = output?;
    if let Some(broker) = &args.mqtt {
        let pid = args.mqtt_pid.or_else(|| proc_stats::pid_of("mosquitto"));
        let watched = Watched { pids: pid.into_iter().collect(), redis: None };
        output.mqtt_reference = Some(mqtt::run(&plan, broker, &watched, args.quiet).await?);
    }
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, serde_json::to_string_pretty(&output)?)?;
    print_output(&output, args.mqtt.as_deref());
    if let Some(convoy) = &output.convoy {
        let mut runs = vec![("convoy", convoy)];
        if let Some(reference) = &output.mqtt_reference {
            runs.push(("MQTT reference", reference));
        }
        for chart in charts::draw(&args.output, &runs)? {
            eprintln!("chart written to {}", chart.display());
        }
    }
    eprintln!("result written to {}", args.output.display());
    if args.check {
        let convoy = output.convoy.as_ref().context("--check: no convoy run to check")?;
        let short = check::shortfalls(check::Figures::of(convoy, output.mqtt_reference.as_ref()));
        if !short.is_empty() {
            bail!("short of the targets:\n  {}", short.join("\n  "));
        }
        eprintln!("== check: the targets are met");
    }
    Ok(())
}

async fn run(args: &Args, plan: &Plan, cluster: &Cluster, watched: &Watched) -> Result<Output> {
    let started_at = Utc::now();
    let mut output = Output::default();
    match plan.preset {
        Preset::Idle => output.idle = Some(idle::run(cluster, plan, &watched.pids).await?),
        Preset::Burst => {
            let (burst, sockets) = burst::run(cluster, plan).await?;
            eprintln!("burst: {} of {} admitted", burst.admitted, burst.attempted);
            if !sockets.is_empty() {
                output.convoy =
                    Some(measure(plan, watched, args.quiet, started_at, sockets, convoy::phone).await?);
            }
            output.burst = Some(burst);
        }
        _ => {
            let members = cluster.join_everyone(plan).await?;
            let sockets = cluster.connect_everyone(&members, plan).await?;
            eprintln!("{} sockets open on {} instance(s)", sockets.len(), plan.instances);
            if let Some(redis) = watched.redis.as_ref().filter(|_| plan.instances > 1) {
                output.routing = Some(multi::check(redis, &members, plan).await?);
            }
            let flood = match plan.preset {
                Preset::Flood => Some(flood::start(cluster, plan, &members, &watched.pids).await?),
                _ => None,
            };
            output.convoy =
                Some(measure(plan, watched, args.quiet, started_at, sockets, convoy::phone).await?);
            if let Some(flood) = flood {
                output.flood = Some(flood.finish(cluster, &watched.pids).await?);
            }
            output.slow_consumer_closes =
                Some(cluster.counter("convoy_ws_slow_consumer_closes_total").await?);
            output.frames_coalesced = Some(cluster.counter("convoy_ws_frames_coalesced_total").await?);
        }
    }
    Ok(output)
}

fn print_output(output: &Output, broker: Option<&str>) {
    if let Some(convoy) = &output.convoy {
        println!("== convoy");
        print_summary(convoy);
    }
    if let Some(reference) = &output.mqtt_reference {
        println!("== MQTT reference ({})", broker.unwrap_or_default());
        print_summary(reference);
        let ratio = output.convoy.as_ref().and_then(|c| c.deliveries_per_server_cpu_second);
        if let (Some(c), Some(m)) = (ratio, reference.deliveries_per_server_cpu_second) {
            println!("== convoy / MQTT deliveries per server CPU-second: {:.2}", c / m);
        }
    }
    if let Some(idle) = &output.idle {
        println!("== idle");
        for step in &idle.steps {
            println!(
                "{:>7} connections  server RSS {:.1} MiB",
                step.connections,
                step.rss_bytes as f64 / 1048576.0
            );
        }
        println!(
            "memory per connection {:.0} bytes ({:.1} KiB; slope of RSS over connections), fixed {:.1} MiB",
            idle.bytes_per_connection,
            idle.bytes_per_connection / 1024.0,
            idle.fixed_bytes / 1048576.0
        );
    }
    if let Some(b) = &output.burst {
        println!("== burst: {} of {} admitted within ~1 s ({} failed)", b.admitted, b.attempted, b.failed);
        for error in &b.errors {
            println!("   error: {error}");
        }
        let p = |p: &burst::Percentiles| {
            format!("p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}", p.p50, p.p90, p.p99, p.max)
        };
        println!("join (ms)             {}", p(&b.join_ms));
        println!("join + socket (ms)    {}", p(&b.admitted_ms));
        println!("everyone admitted after {:.2} s", b.all_admitted_after_s);
    }
    if let Some(r) = &output.routing {
        println!(
            "== routing: {} of {} sessions subscribed by exactly the instances holding their sockets ({} on one instance, {} split)",
            r.matching, r.sessions, r.on_one_instance, r.split
        );
        for mismatch in &r.mismatches {
            println!("   {mismatch}");
        }
        if !r.sessions_per_shard.is_empty() {
            let spread: Vec<String> =
                r.sessions_per_shard.iter().map(|(node, n)| format!("{node}: {n}")).collect();
            println!("== sessions per Redis Cluster shard: {}", spread.join(", "));
        }
    }
    if let Some(f) = &output.flood {
        println!(
            "== flood: {} flooders sent {} publishes of 4 KiB: {} refused by the message rate, {} by the byte budget",
            f.flooders, f.publishes_sent, f.messages_rate_limited, f.publishes_refused
        );
        println!(
            "server RSS {:.1} MiB before the flood, {:.1} MiB after",
            f.rss_bytes_before as f64 / 1048576.0,
            f.rss_bytes_after as f64 / 1048576.0
        );
    }
    if let Some(closes) = output.slow_consumer_closes {
        println!("== sockets closed by the server for falling behind (1013): {closes}");
    }
    if let Some(coalesced) = output.frames_coalesced {
        println!("== location updates replaced by a newer one in a queue (whole run): {coalesced}");
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
    if let (Some(cpu), Some(per)) = (r.redis_cpu_seconds, r.redis_cpu_us_per_publish) {
        println!("Redis CPU seconds     {cpu:.2} ({per:.2} us per location update)");
    }
}
