//! `App`: the testable shell. `build` binds, connects and migrates; `run` serves until the
//! shutdown future resolves, then closes sockets with 1001, flushes and returns.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::bus::{self, BusSettings, RedisTarget};
use crate::clock::Clock;
use crate::config::Config;
use crate::serve::{ServeLimits, serve};
use crate::state::AppState;
use crate::{http, revocation, store, sweeper, ws};

/// JWT_SECRET, or the installation's own: generated on first start (256 random bits) and
/// kept by the store, so tokens survive restarts and no two installations share a key.
async fn signing_secret(config: &Config, store: &dyn store::Store) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| anyhow::anyhow!("no randomness for the JWT secret: {e}"))?;
    store.signing_secret(&fresh).await.context("keeping the generated JWT secret")
}

/// How long a shutdown waits for the bus to send what is queued.
const BUS_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct App {
    listener: TcpListener,
    /// ADMIN_LISTEN's, when set.
    admin: Option<TcpListener>,
    state: AppState,
    inbound: Option<bus::Inbound>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        // Before anything takes a metric's handle (the bus does when it connects): a handle
        // taken earlier records nothing.
        crate::metrics::install();
        let store = store::connect(
            &config.database_url,
            config.database_max_connections,
            config.database_statement_timeout(),
        )
        .await
        .context("opening the database")?;
        store.migrate().await.context("migrating the database")?;
        let clock = Clock::system();
        let tokens = Tokens::new(&signing_secret(&config, store.as_ref()).await?, clock.clone());
        let instance_id = uuid::Uuid::new_v4();
        let shutdown = CancellationToken::new();
        let settings = BusSettings {
            redis: redis_target(&config),
            instance_id,
            session_key_ttl_secs: config.session_idle_timeout_seconds,
            batch_delay: Duration::from_millis(config.redis_batch_delay_ms),
            queue_max_bytes: config.redis_queue_max_bytes,
            instance_timeout: Duration::from_secs(config.presence_instance_timeout_seconds),
            location_ttl: config.location_ttl(),
            clock: clock.clone(),
        };
        let (bus, inbound) = bus::connect(settings, shutdown.clone()).await.context("connecting to redis")?;
        let listener = TcpListener::bind(config.bind_addr())
            .await
            .with_context(|| format!("binding {}", config.bind_addr()))?;
        let admin = match config.admin_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.with_context(|| format!("binding ADMIN_LISTEN {addr}"))?)
            }
            None => None,
        };
        let port = listener.local_addr()?.port();
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{port}"))
            .trim_end_matches('/')
            .to_owned();
        let state = AppState::new(config, public_url, store, bus, tokens, instance_id, shutdown);
        Ok(Self { listener, admin, state, inbound })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `/metrics` and `/health/detailed` are served, if ADMIN_LISTEN is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The shared state, for tests that step background work (e.g. `sweeper::sweep_once`).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, admin, state, inbound } = self;
        if let Some(mut inbound) = inbound {
            // Other instances' messages, delivered in order by one task.
            let hub = state.hub.clone();
            tokio::spawn(async move {
                while let Some(event) = inbound.recv().await {
                    match event {
                        bus::BusEvent::Deliver(envelope) => hub.deliver_local(&envelope),
                        bus::BusEvent::ResyncAll => {
                            tracing::info!("bus recovered: every socket resynchronises");
                            hub.resync_all();
                        }
                    }
                }
            });
        }
        tracing::info!(addr = %listener.local_addr()?, public_url = %state.public_url, database = state.store.kind(), bus = state.bus.kind(), "convoy listening");

        let sweeper = tokio::spawn(sweeper::run(state.clone()));
        let revocation = tokio::spawn(revocation::run(state.clone()));
        let meetups = tokio::spawn(crate::state::meetup::run(state.clone()));
        let flusher = {
            let state = state.clone();
            let interval = Duration::from_secs(state.config.activity_flush_interval_seconds);
            tokio::spawn(async move {
                state.activity.run_flusher(state.store.as_ref(), interval, state.shutdown.clone()).await;
            })
        };

        let signal_state = state.clone();
        let router = http::router(state.clone(), ws::router());
        let send_buffer = state.config.tcp_send_buffer_bytes;
        let tap = move |tcp: &tokio::net::TcpStream| {
            // Location frames are small and latency matters: no Nagle delay.
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY");
            }
            if let Some(bytes) = send_buffer
                && let Err(err) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes)
            {
                tracing::debug!(error = %err, "could not set SO_SNDBUF");
            }
        };
        let config = &state.config;
        let limits = ServeLimits {
            header_timeout: Duration::from_secs(config.http_header_timeout_seconds),
            max_pending: config.max_http_connections,
            max_pending_per_ip: config.max_http_connections_per_ip,
            per_ip: !config.trust_proxy_headers,
        };
        let admin = admin.map(|admin| {
            let router = http::admin_router(state.clone());
            let stop = state.shutdown.clone().cancelled_owned();
            tokio::spawn(serve(admin, router, limits, tap, stop))
        });
        serve(listener, router, limits, tap, async move {
            shutdown.await;
            tracing::info!("shutting down: closing sockets");
            signal_state.begin_shutdown();
        })
        .await;

        if let Some(admin) = admin {
            let _ = admin.await;
        }
        // Sockets were told to close with 1001; wait for them, but not forever.
        state.sockets.close();
        let grace = Duration::from_secs(state.config.shutdown_grace_seconds);
        if tokio::time::timeout(grace, state.sockets.wait()).await.is_err() {
            tracing::warn!(open = state.sockets.len(), "sockets still open after the grace period");
        }
        let _ = tokio::join!(sweeper, flusher, revocation, meetups);
        // Last: what the closing sockets recorded, and their goodbyes to other instances.
        if let Err(err) = state.activity.flush(state.store.as_ref()).await {
            tracing::warn!(error = %err, "final activity flush failed");
        }
        state.bus.flush(BUS_FLUSH_TIMEOUT).await;
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The Redis the bus uses, if any (`Config::validate` refused both at once).
fn redis_target(config: &Config) -> Option<RedisTarget> {
    match &config.redis_url {
        Some(url) => Some(RedisTarget::Single(url.clone())),
        None => {
            let seeds = config.redis_cluster_seeds();
            (!seeds.is_empty()).then_some(RedisTarget::Cluster(seeds))
        }
    }
}
