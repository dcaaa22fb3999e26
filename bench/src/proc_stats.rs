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

/// A convoy started for the run: embedded SQLite in a temporary folder, rate limits off
/// (the run joins thousands of participants from one address), on a free port.
pub struct Spawned {
    pub base: String,
    pub pid: i32,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Spawned {
    pub async fn start(binary: &Path, connections: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("bench.db").display()))
            .env("RATE_LIMIT_ENABLED", "false")
            .env("MAX_CONNECTIONS", (connections + 100).to_string())
            .env("LOG_LEVEL", "warn")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
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
