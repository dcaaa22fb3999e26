//! `AppState`: the shared handles (store, bus, hub, tokens, activity, limits) every edge
//! and background task works with, and the services on them, by concern: who a token
//! stands for (`access`), what the session hears (`events`), meeting up (`meetup`).

mod access;
mod events;
pub mod meetup;

pub use events::EndReason;
pub use meetup::Setter;

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::activity::Activity;
use crate::admission::Admission;
use crate::auth::Tokens;
use crate::bus::Bus;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::UserId;
use crate::hub::Hub;
use crate::limits::{Limits, MessageKind, Refused};
use crate::message::Channel;
use crate::metrics::RealtimeMetrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    /// PUBLIC_URL, or http://localhost:PORT with the bound port; no trailing slash.
    pub public_url: String,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Arc<Hub>,
    pub tokens: Tokens,
    /// The time every rule reads (idle expiry, token expiry, rate limits); tests move it.
    pub clock: Clock,
    pub activity: Activity,
    /// Cancelled when the server begins shutting down.
    pub shutdown: CancellationToken,
    /// Every socket task, so shutdown can wait for them.
    pub sockets: TaskTracker,
    pub instance_id: Uuid,
    pub started_at: Instant,
    pub metrics: Arc<RealtimeMetrics>,
    pub limits: Limits,
    /// Snapshots rebuilt at once after a bus outage (each reads the store twice).
    pub resync_permits: tokio::sync::Semaphore,
    /// Session and participant reads that sockets arriving together share.
    pub reads: crate::reads::SharedReads,
    /// Sockets opened without a token and not yet authenticated: a quarter of
    /// MAX_CONNECTIONS at most, so anonymous handshakes cannot take every place.
    pub pending_auth: Arc<tokio::sync::Semaphore>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    draining: AtomicBool,
    /// The socket caps: per instance, per address, per participant.
    pub admission: Arc<Admission>,
    /// Positions noted for arrivals and ETAs (`meetup`).
    pub meetups: meetup::Meetups,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: Config,
        public_url: String,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        tokens: Tokens,
        instance_id: Uuid,
        shutdown: CancellationToken,
    ) -> Self {
        let prometheus = crate::metrics::install();
        // One clock for every rule: the one the tokens expire by.
        let clock = tokens.clock().clone();
        let limits = Limits::new(&config, clock.clone());
        let metrics = Arc::new(RealtimeMetrics::new());
        let hub = Hub::new(
            bus.clone(),
            config.ws_queue_capacity,
            config.ws_queue_max_bytes,
            metrics.clone(),
            clock.clone(),
        );
        let pending_auth = Arc::new(tokio::sync::Semaphore::new((config.max_connections / 4).max(1)));
        let admission = Admission::new(&config);
        let reads = crate::reads::SharedReads::new(store.clone());
        Self(Arc::new(Inner {
            config,
            public_url,
            store,
            bus,
            hub,
            tokens,
            clock,
            activity: Activity::new(),
            shutdown,
            sockets: TaskTracker::new(),
            instance_id,
            started_at: Instant::now(),
            metrics,
            prometheus,
            limits,
            resync_permits: tokio::sync::Semaphore::new(16),
            reads,
            pending_auth,
            draining: AtomicBool::new(false),
            admission,
            meetups: meetup::Meetups::default(),
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Refuse new sockets and tell the open ones to close with 1001.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
        self.hub.close_all();
    }

    /// Whether `user_id` may send a message of `kind` and `bytes` to the channel's other
    /// connections on this instance (or, for a direct message, to one user).
    pub fn allow_to_others(
        &self,
        channel: Channel,
        user_id: UserId,
        kind: MessageKind,
        bytes: usize,
    ) -> Result<(), Refused> {
        let recipients = match kind {
            MessageKind::Direct => 1,
            _ => self.hub.subscriber_count(channel).saturating_sub(1),
        };
        self.limits.allow_to_others(user_id, kind, bytes, recipients)
    }
}
