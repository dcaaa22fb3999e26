//! Prometheus metrics: the process-wide recorder, every metric's name and help text in one
//! place, and handles resolved once so the hot path does no registry lookup per event.

use std::sync::OnceLock;

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::limits::Scope;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) for broadcasts and HTTP requests: 10 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 5.0,
];

/// Installs the recorder once per process (tests run many servers in one) and returns the
/// handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            describe();
            // Histograms buffer samples until upkeep folds them in; without a scrape they
            // would grow with traffic.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!("convoy_ws_connections", "Open WebSocket connections on this instance");
    describe_counter!("convoy_ws_messages_in_total", "Client messages received, by type");
    describe_counter!("convoy_ws_frames_out_total", "Frames written to sockets");
    describe_counter!(
        "convoy_tracker_requests_total",
        "Tracker app requests, by app (owntracks, traccar_json, osmand) and outcome (received, rate_limited, paused)"
    );
    describe_counter!(
        "convoy_tracker_messages_total",
        "Messages in tracker app requests, by app and outcome (accepted, refused, ignored)"
    );
    describe_histogram!(
        "convoy_broadcast_fanout_seconds",
        Unit::Seconds,
        "Time to hand one event to every local subscriber: written to its socket or queued"
    );
    describe_counter!(
        "convoy_ws_frames_coalesced_total",
        "Pending locations replaced by a newer one before a slow client read them"
    );
    describe_counter!("convoy_ws_slow_consumer_closes_total", "Sockets closed with 1013 for falling behind");
    describe_counter!("convoy_ws_heartbeat_timeouts_total", "Sockets closed with 4408 for silence");
    describe_gauge!("convoy_sessions_active", "Live sessions (whole cluster, as of the last sweep)");
    describe_gauge!(
        "convoy_participants_active",
        "Active participants (whole cluster, as of the last sweep)"
    );
    describe_counter!("convoy_sessions_expired_total", "Sessions this instance's sweeper ended");
    describe_counter!(
        "convoy_rate_limited_total",
        "Requests and socket messages refused by a rate limit, by scope"
    );
    describe_counter!(
        "convoy_messages_refused_total",
        "Publishes, direct messages and chat refused: over their size limit, or over the sender's byte budget"
    );
    describe_counter!(
        "convoy_ws_connections_refused_total",
        "Socket handshakes refused by a cap: instance, per_ip or per_participant"
    );
    describe_counter!(
        "convoy_http_connections_refused_total",
        "TCP connections refused before any request: total or per_ip cap on connections not yet upgraded"
    );
    describe_counter!(
        "convoy_http_header_timeouts_total",
        "Connections closed for not sending their request headers in time"
    );
    describe_counter!("convoy_http_requests_total", "HTTP requests, by method, route and status");
    describe_histogram!(
        "convoy_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request durations, by method and route"
    );
    describe_counter!(
        "convoy_bus_dropped_total",
        "Bus commands dropped while Redis was unavailable or behind"
    );
    describe_counter!("convoy_bus_publish_errors_total", "Failed Redis pipelines");
    describe_counter!(
        "convoy_bus_positions_held_total",
        "Positions not published to Redis: no other instance held sockets in their session"
    );
    describe_counter!("convoy_chat_messages_total", "Chat messages stored (session chat and local rooms)");
}

/// Handles for what the realtime path records.
pub struct RealtimeMetrics {
    pub connections: Gauge,
    pub location_updates_in: Counter,
    pub pings_in: Counter,
    pub invalid_in: Counter,
    pub frames_out: Counter,
    pub fanout_seconds: Histogram,
    pub coalesced: Counter,
    pub slow_consumer_closes: Counter,
    pub heartbeat_timeouts: Counter,
    pub direct_messages_in: Counter,
    pub token_refreshes_in: Counter,
    pub subscribes_in: Counter,
    pub unsubscribes_in: Counter,
    pub publishes_in: Counter,
    pub chat_in: Counter,
    pub room_joins_in: Counter,
    pub room_leaves_in: Counter,
    pub room_messages_in: Counter,
    pub chat_messages: Counter,
    pub channel_joins_in: Counter,
    pub rate_limited: [Counter; 3],
    /// Publishes, direct messages and chat refused for their size, or the sender's budget.
    pub refused_too_large: Counter,
    pub refused_over_budget: Counter,
}

impl RealtimeMetrics {
    pub fn new() -> Self {
        let messages_in = |kind: &'static str| counter!("convoy_ws_messages_in_total", "type" => kind);
        Self {
            connections: gauge!("convoy_ws_connections"),
            location_updates_in: messages_in("location_update"),
            pings_in: messages_in("ping"),
            invalid_in: messages_in("invalid"),
            frames_out: counter!("convoy_ws_frames_out_total"),
            fanout_seconds: histogram!("convoy_broadcast_fanout_seconds"),
            coalesced: counter!("convoy_ws_frames_coalesced_total"),
            slow_consumer_closes: counter!("convoy_ws_slow_consumer_closes_total"),
            heartbeat_timeouts: counter!("convoy_ws_heartbeat_timeouts_total"),
            direct_messages_in: messages_in("direct_message"),
            token_refreshes_in: messages_in("refresh_token"),
            subscribes_in: messages_in("subscribe"),
            unsubscribes_in: messages_in("unsubscribe"),
            publishes_in: messages_in("publish"),
            chat_in: messages_in("chat_message"),
            room_joins_in: messages_in("join_local_chat"),
            room_leaves_in: messages_in("leave_local_chat"),
            room_messages_in: messages_in("message"),
            chat_messages: counter!("convoy_chat_messages_total"),
            channel_joins_in: messages_in("phx_join"),
            rate_limited: [Scope::Connection, Scope::User, Scope::Instance]
                .map(|scope| counter!("convoy_rate_limited_total", "scope" => scope.as_str())),
            refused_too_large: counter!("convoy_messages_refused_total", "reason" => "too_large"),
            refused_over_budget: counter!("convoy_messages_refused_total", "reason" => "over_budget"),
        }
    }
}

impl RealtimeMetrics {
    pub fn rate_limited(&self, scope: Scope) -> &Counter {
        &self.rate_limited[scope as usize]
    }
}

impl Default for RealtimeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RealtimeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeMetrics").finish_non_exhaustive()
    }
}
