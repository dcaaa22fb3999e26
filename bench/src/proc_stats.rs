//! The server's side of a run: CPU time and RSS from /proc, and, with --spawn, the server
//! process itself.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// One reading of /proc/<pid>.
#[derive(Debug, Clone)]
pub struct ServerSample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

impl ServerSample {
    pub fn take(pid: i32) -> Result<Self> {
        let process = procfs::process::Process::new(pid).with_context(|| format!("no process {pid}"))?;
        let stat = process.stat()?;
        let ticks = procfs::ticks_per_second() as f64;
        let rss_kib = process.status()?.vmrss.unwrap_or(0);
        Ok(Self { cpu_seconds: (stat.utime + stat.stime) as f64 / ticks, rss_bytes: rss_kib * 1024 })
    }

    /// The processes together (several instances of a server), or None for none.
    pub fn take_all(pids: &[i32]) -> Result<Option<Self>> {
        let mut all: Option<Self> = None;
        for &pid in pids {
            let one = Self::take(pid)?;
            all = Some(match all {
                Some(sum) => Self {
                    cpu_seconds: sum.cpu_seconds + one.cpu_seconds,
                    rss_bytes: sum.rss_bytes + one.rss_bytes,
                },
                None => one,
            });
        }
        Ok(all)
    }
}

/// The pid of a running process with this name (`comm`), if there is one.
pub fn pid_of(name: &str) -> Option<i32> {
    procfs::process::all_processes()
        .ok()?
        .filter_map(Result::ok)
        .find(|p| p.stat().is_ok_and(|s| s.comm == name))
        .map(|p| p.pid)
}

/// A Redis node's own CPU seconds (user + system, from `INFO cpu`).
async fn redis_cpu_seconds(client: &redis::Client) -> Result<f64> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    let field = |name: &str| {
        info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok())
    };
    match (field("used_cpu_user"), field("used_cpu_sys")) {
        (Some(user), Some(sys)) => Ok(user + sys),
        _ => bail!("Redis INFO cpu without used_cpu_user/used_cpu_sys"),
    }
}

/// The server over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    /// User + system CPU seconds the server used in the window.
    pub cpu_seconds: f64,
    pub rss_bytes_start: u64,
    pub rss_bytes_end: u64,
    pub rss_bytes_peak: u64,
}

impl ServerStats {
    pub fn between(before: &ServerSample, after: &ServerSample, peak: u64) -> Self {
        Self {
            cpu_seconds: after.cpu_seconds - before.cpu_seconds,
            rss_bytes_start: before.rss_bytes,
            rss_bytes_end: after.rss_bytes,
            rss_bytes_peak: peak.max(after.rss_bytes),
        }
    }
}

/// Where a spawned convoy keeps its data: by default embedded SQLite in a temporary
/// folder and no Redis; multi-instance runs give PostgreSQL and Redis.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// A Redis Cluster's seed nodes, used instead of `redis_url`.
    pub redis_cluster_urls: Vec<String>,
}

/// A convoy started for the run: rate limits off (the run joins thousands of participants
/// from one address), on a free port.
pub struct Spawned {
    pub base: String,
    pub pid: i32,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// `rate_limits`: the server's own limits on (but those per client address, which the
    /// tool, on one address, would hit while setting up); off otherwise.
    pub async fn start(
        binary: &Path,
        connections: usize,
        backends: &Backends,
        rate_limits: bool,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let database_url = backends
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
        let mut command = Command::new(binary);
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", database_url)
            .env("RATE_LIMIT_ENABLED", rate_limits.to_string())
            .env("RATE_LIMIT_SESSIONS_PER_MINUTE", "1000000")
            .env("RATE_LIMIT_JOINS_PER_MINUTE", "1000000")
            .env("MAX_CONNECTIONS", (connections + 100).to_string())
            // Every simulated phone connects from 127.0.0.1: the per-address caps that
            // protect a public instance would refuse the load itself.
            .env("MAX_CONNECTIONS_PER_IP", (connections + 100).to_string())
            .env("MAX_HTTP_CONNECTIONS_PER_IP", (connections + 100).to_string())
            .env("MAX_HTTP_CONNECTIONS", (connections + 100).to_string())
            .env("LOG_LEVEL", "warn")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_URLS")
            .stdout(Stdio::null());
        if let Some(redis) = &backends.redis_url {
            command.env("REDIS_URL", redis);
        }
        if !backends.redis_cluster_urls.is_empty() {
            command.env("REDIS_CLUSTER_URLS", backends.redis_cluster_urls.join(","));
        }
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let spawned =
            Self { base: format!("http://127.0.0.1:{port}"), pid: child.id() as i32, child, _dir: dir };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            let ready = client.get(format!("{}/health/ready", spawned.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(spawned);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} did not become ready", binary.display())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Redis the servers share: its nodes, for their CPU seconds (summed), and whether it
/// is a cluster (sessions live on the shard that owns their hash tag).
#[derive(Clone)]
pub struct RedisWatch {
    /// Each node's `host:port` and a client for it (one node for a single Redis).
    pub nodes: Vec<(String, redis::Client)>,
    pub cluster: bool,
}

impl RedisWatch {
    pub fn single(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).context("--redis-url")?;
        Ok(Self { nodes: vec![(url.to_owned(), client)], cluster: false })
    }

    /// Every node of the cluster `seed` belongs to (`CLUSTER NODES`), masters and replicas.
    pub async fn cluster(seed: &str) -> Result<Self> {
        let client = redis::Client::open(seed).context("--redis-cluster-urls")?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let listing: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
        let mut nodes = Vec::new();
        for line in listing.lines() {
            let Some(address) = line.split_whitespace().nth(1) else { continue };
            let address = address.split('@').next().unwrap_or(address).to_owned();
            let client = redis::Client::open(format!("redis://{address}"))?;
            nodes.push((address, client));
        }
        if nodes.is_empty() {
            bail!("CLUSTER NODES on {seed} listed no node");
        }
        Ok(Self { nodes, cluster: true })
    }

    /// User + system CPU seconds (`INFO cpu`), summed over the nodes.
    pub async fn cpu_seconds(&self) -> Result<f64> {
        let mut total = 0.0;
        for (address, client) in &self.nodes {
            total += redis_cpu_seconds(client).await.with_context(|| format!("INFO cpu on {address}"))?;
        }
        Ok(total)
    }
}
