//! The test harness: the real server on a random port with its own SQLite file, a real
//! HTTP client and real WebSocket clients.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use convoy::config::Cli;
use convoy::state::AppState;
use convoy::{App, Config};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TEST_SECRET: &str = "test-secret-that-is-long-enough-for-production-use";

/// How long a test waits for something the server should do promptly. Generous: the
/// machines are shared; this bounds a hang, it does not measure speed.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub backend: Backend,
    pub addr: SocketAddr,
    /// ADMIN_LISTEN's address, when set.
    pub admin: Option<SocketAddr>,
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Cli::try_parse_from(["convoy"]).expect("default config").config;
    config.host = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.database_url = format!("sqlite://{}", dir.join("convoy.db").display());
    config.jwt_secret = Some(TEST_SECRET.into());
    config.public_url = None;
    config.redis_url = None;
    config.max_participants_per_session = 50;
    config.location_ttl_seconds = 30;
    config.session_idle_timeout_seconds = 3600;
    config.sweep_interval_seconds = 60;
    config.activity_flush_interval_seconds = 5;
    config.shutdown_grace_seconds = 5;
    config
}

/// Where a test server keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file + in-process bus: the default set-up.
    Embedded,
    /// PostgreSQL (a fresh schema per test) + Redis, from TEST_POSTGRES_URL and TEST_REDIS_URL.
    Scaled,
    /// PostgreSQL + in-process bus: one instance on a shared database.
    PostgresLocal,
    /// SQLite + Redis: the Redis bus on its own.
    SqliteRedis,
    /// PostgreSQL + a Redis Cluster (sharded pub/sub), from TEST_REDIS_CLUSTER_URLS.
    Clustered,
}

impl Backend {
    pub fn uses_postgres(self) -> bool {
        matches!(self, Self::Scaled | Self::PostgresLocal | Self::Clustered)
    }

    pub fn uses_redis(self) -> bool {
        matches!(self, Self::Scaled | Self::SqliteRedis | Self::Clustered)
    }

    /// The Redis this backend's instances share, if any.
    pub fn redis(self) -> Option<Redis> {
        match self {
            Self::Scaled | Self::SqliteRedis => Some(Redis::Single),
            Self::Clustered => Some(Redis::Cluster),
            Self::Embedded | Self::PostgresLocal => None,
        }
    }
}

/// The two kinds of Redis that instances share: one server (TEST_REDIS_URL) or a Redis
/// Cluster (TEST_REDIS_CLUSTER_URLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redis {
    Single,
    Cluster,
}

impl Redis {
    /// Points the configuration at this Redis.
    pub fn configure(self, config: &mut Config) {
        match self {
            Redis::Single => {
                config.redis_url = Some(scaled_urls().1);
                config.redis_cluster_urls.clear();
            }
            Redis::Cluster => {
                config.redis_url = None;
                config.redis_cluster_urls = cluster_urls();
            }
        }
    }

    /// The backend of instances on PostgreSQL and this Redis.
    pub fn backend(self) -> Backend {
        match self {
            Redis::Single => Backend::Scaled,
            Redis::Cluster => Backend::Clustered,
        }
    }
}

/// A test instance's bus settings: a fresh instance id, no batch delay, the given Redis
/// (the in-process bus without one).
pub fn bus_settings(redis: Option<convoy::bus::RedisTarget>) -> convoy::bus::BusSettings {
    convoy::bus::BusSettings {
        redis,
        instance_id: uuid::Uuid::new_v4(),
        session_key_ttl_secs: 3600,
        batch_delay: Duration::ZERO,
        queue_max_bytes: 64 * 1024 * 1024,
        instance_timeout: Duration::from_secs(15),
        location_ttl: Duration::from_secs(30),
        clock: convoy::clock::Clock::system(),
    }
}

/// The seed nodes of the test Redis Cluster (`.ci/redis-cluster start` prints them).
pub fn cluster_urls() -> Vec<String> {
    std::env::var("TEST_REDIS_CLUSTER_URLS")
        .expect("TEST_REDIS_CLUSTER_URLS must be set for the Redis Cluster tests")
        .split(',')
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect()
}

/// Runs each listed `async fn name(redis: Redis)` on two or more instances sharing one
/// PostgreSQL and either kind of Redis: `single_redis::name` and `redis_cluster::name`.
/// Compiled as ignored, with the reason, when the services were not set at build time.
macro_rules! on_both_redis {
    ($($test:ident),+ $(,)?) => {
        mod single_redis {
            $(
                #[cfg_attr(not(convoy_scaled_tests), ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Redis::Single).await;
                }
            )+
        }
        mod redis_cluster {
            $(
                #[cfg_attr(not(convoy_cluster_tests), ignore = "needs PostgreSQL and a Redis Cluster: set TEST_POSTGRES_URL and TEST_REDIS_CLUSTER_URLS (.ci/redis-cluster start)")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Redis::Cluster).await;
                }
            )+
        }
    };
}
pub(crate) use on_both_redis;

/// Runs each listed `async fn name(backend: Backend)` once per combination of store and
/// bus: `embedded::name` (SQLite + in-process), `scaled::name` (PostgreSQL + Redis),
/// `postgres_local::name`, `sqlite_redis::name` and `clustered::name` (PostgreSQL + Redis
/// Cluster). All but the first are compiled as ignored, with the reason, when
/// TEST_POSTGRES_URL / TEST_REDIS_URL (TEST_REDIS_CLUSTER_URLS) were not set at build time.
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Embedded).await;
                }
            )+
        }
        on_every_backend!(@needs_services scaled, Scaled, $($test),+);
        on_every_backend!(@needs_services postgres_local, PostgresLocal, $($test),+);
        on_every_backend!(@needs_services sqlite_redis, SqliteRedis, $($test),+);
        mod clustered {
            $(
                #[cfg_attr(not(convoy_cluster_tests), ignore = "needs PostgreSQL and a Redis Cluster: set TEST_POSTGRES_URL and TEST_REDIS_CLUSTER_URLS (.ci/redis-cluster start)")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Backend::Clustered).await;
                }
            )+
        }
    };
    (@needs_services $module:ident, $backend:ident, $($test:ident),+) => {
        mod $module {
            $(
                #[cfg_attr(not(convoy_scaled_tests), ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::Backend::$backend).await;
                }
            )+
        }
    };
}
pub(crate) use on_every_backend;

/// The PostgreSQL and Redis URLs for scaled tests.
pub fn scaled_urls() -> (String, String) {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set for the PostgreSQL + Redis tests"))
    };
    (get("TEST_POSTGRES_URL"), get("TEST_REDIS_URL"))
}

/// A new, empty schema in the test database, as a DATABASE_URL whose connections use it,
/// so tests (and their sweepers) never see each other's rows.
pub async fn fresh_postgres_schema() -> String {
    use sqlx::Connection;
    let (postgres_url, _) = scaled_urls();
    let schema = format!("convoy_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&postgres_url).await.expect("TEST_POSTGRES_URL reachable");
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.expect("create schema");
    let separator = if postgres_url.contains('?') { '&' } else { '?' };
    format!("{postgres_url}{separator}options=-c%20search_path%3D{schema}")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Embedded, |_| {}).await
}

pub async fn spawn_app_on(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let (dir, mut config) = base_config();
    if backend.uses_postgres() {
        config.database_url = fresh_postgres_schema().await;
    }
    if let Some(redis) = backend.redis() {
        redis.configure(&mut config);
    }
    configure(&mut config);
    start(backend, config, dir).await
}

/// An embedded instance with exactly this configuration (its data wherever the config
/// says, e.g. a folder the test keeps across restarts).
pub async fn spawn_config(config: Config) -> TestApp {
    start(Backend::Embedded, config, tempfile::tempdir().expect("temp dir")).await
}

/// Two instances on one PostgreSQL schema and one Redis: a cluster of two.
pub async fn spawn_pair(configure: impl Fn(&mut Config)) -> (TestApp, TestApp) {
    spawn_pair_on(Redis::Single, configure).await
}

/// Two instances on one PostgreSQL schema and one Redis of the given kind.
pub async fn spawn_pair_on(redis: Redis, configure: impl Fn(&mut Config)) -> (TestApp, TestApp) {
    let mut apps = spawn_group(redis, 2, configure).await.into_iter();
    (apps.next().unwrap(), apps.next().unwrap())
}

/// `count` instances on one PostgreSQL schema and one Redis of the given kind.
pub async fn spawn_group(redis: Redis, count: usize, configure: impl Fn(&mut Config)) -> Vec<TestApp> {
    let database_url = fresh_postgres_schema().await;
    let mut apps = Vec::with_capacity(count);
    for _ in 0..count {
        let configure = |config: &mut Config| {
            redis.configure(config);
            configure(config);
        };
        apps.push(spawn_with_database(redis.backend(), Some(database_url.clone()), configure).await);
    }
    apps
}

/// A scaled instance on the given PostgreSQL and Redis URLs (e.g. through a `Proxy`).
pub async fn spawn_scaled(database_url: String, redis_url: String) -> TestApp {
    spawn_with_redis(database_url, redis_url, |_| {}).await
}

/// `spawn_scaled`, configured further.
pub async fn spawn_with_redis(
    database_url: String,
    redis_url: String,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_with_database(Backend::Scaled, Some(database_url), |c| {
        c.redis_url = Some(redis_url);
        configure(c);
    })
    .await
}

async fn spawn_with_database(
    backend: Backend,
    database_url: Option<String>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let (dir, mut config) = base_config();
    if let Some(url) = database_url {
        config.database_url = url;
        config.redis_url = Some(scaled_urls().1);
    }
    configure(&mut config);
    start(backend, config, dir).await
}

/// The test configuration with its own SQLite file in a temporary folder.
fn base_config() -> (tempfile::TempDir, Config) {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        convoy::telemetry::init(&filter, convoy::config::LogFormat::Text);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(dir.path());
    (dir, config)
}

async fn start(backend: Backend, config: Config, dir: tempfile::TempDir) -> TestApp {
    let app = App::build(config).await.expect("app builds");
    let addr = app.local_addr();
    let admin = app.admin_addr();
    let state = app.state();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        backend,
        addr,
        admin,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        state,
        shutdown: Some(tx),
        handle: Some(handle),
        _dir: dir,
    }
}

pub struct Joined {
    pub user_id: String,
    pub token: String,
    /// The participant's private URL for tracker apps.
    pub tracker_url: String,
}

pub struct Created {
    pub session_id: String,
    pub creator_token: String,
    pub body: Value,
}

impl TestApp {
    /// Moves the server's clock forward: what reads it (idle expiry, cached locations on
    /// the in-process bus, token expiry, rate limits) sees `by` pass at once. Timers already
    /// sleeping (heartbeats, a socket's token expiry) and Redis's own clock do not move.
    pub fn advance(&self, by: Duration) {
        self.state.clock.advance(by);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(&body).send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.delete(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    /// DELETE of a participant (a leave, or the creator removing them); the status.
    pub async fn remove(&self, session_id: &str, user_id: &str, token: &str) -> u16 {
        let path = format!("/api/sessions/{session_id}/participants/{user_id}");
        self.delete(&path, Some(token)).await.status().as_u16()
    }

    pub async fn create_session(&self, body: Value) -> Created {
        let response = self.post("/api/sessions", body).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        Created {
            session_id: body["session_id"].as_str().unwrap().to_owned(),
            creator_token: body["creator_token"].as_str().unwrap().to_owned(),
            body,
        }
    }

    /// A new session (default settings) with these participants joined, in order: the
    /// preamble most tests share.
    pub async fn session_with<const N: usize>(&self, names: [&str; N]) -> (Created, [Joined; N]) {
        let session = self.create_session(json!({})).await;
        let mut joined = Vec::with_capacity(N);
        for name in names {
            joined.push(self.join(&session.session_id, name).await);
        }
        let Ok(joined) = joined.try_into() else { unreachable!("N joins were made") };
        (session, joined)
    }

    pub async fn join(&self, session_id: &str, display_name: &str) -> Joined {
        let response = self
            .post(&format!("/api/sessions/{session_id}/join"), json!({ "display_name": display_name }))
            .await;
        assert_eq!(response.status(), 201, "join {display_name}");
        let body: Value = response.json().await.unwrap();
        Joined {
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            token: body["websocket_token"].as_str().unwrap().to_owned(),
            tracker_url: body["tracker_url"].as_str().unwrap().to_owned(),
        }
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={}", self.addr, token)
    }

    /// Connects and reads the snapshot, which is always the first message.
    pub async fn connect(&self, token: &str) -> (WsClient, Value) {
        let mut client = self.try_connect(token).await.expect("websocket handshake");
        let snapshot = client.next_json().await;
        assert_eq!(snapshot["type"], "session_state", "first message is the snapshot");
        (client, snapshot)
    }

    pub async fn try_connect(&self, token: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        self.try_connect_url(&self.ws_url(token)).await
    }

    /// Connects to a socket URL of the test's making (extra parameters) and reads the snapshot.
    pub async fn connect_url(&self, url: &str) -> (WsClient, Value) {
        let mut client = self.try_connect_url(url).await.expect("websocket handshake");
        let snapshot = client.next_json().await;
        assert_eq!(snapshot["type"], "session_state", "first message is the snapshot");
        (client, snapshot)
    }

    async fn try_connect_url(&self, url: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(WsClient::new(stream))
    }

    /// A socket that never reads past its handshake, with a tiny receive buffer: the
    /// server's writes to it block after a few kilobytes (a phone in a dead spot).
    pub async fn connect_stalled(&self, token: &str) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        let request = self.ws_url(token).into_client_request().unwrap();
        let (stream, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await.expect("handshake");
        stream
    }

    /// The HTTP status a refused handshake got.
    pub async fn handshake_status(&self, url: &str) -> u16 {
        let request = url.into_client_request().unwrap();
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(other) => panic!("unexpected handshake error {other}"),
        }
    }

    /// Runs the same graceful shutdown a SIGTERM does and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), handle).await.expect("stops in time").expect("no panic")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Whether `presence_state` and `presence_diff` are returned; tests of other features
    /// skip them (they arrive whenever anyone connects or disconnects).
    pub presence: bool,
}

impl WsClient {
    pub fn new(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { stream, presence: false }
    }

    /// From now on, presence messages are returned like any other.
    pub fn with_presence(mut self) -> Self {
        self.presence = true;
        self
    }

    fn skips(&self, message: &Value) -> bool {
        !self.presence && matches!(message["type"].as_str(), Some("presence_state" | "presence_diff"))
    }

    pub async fn send_json(&mut self, value: Value) {
        self.stream.send(Message::text(value.to_string())).await.expect("send");
    }

    pub async fn send_location(&mut self, lat: f64, lng: f64) {
        self.send_json(json!({
            "type": "location_update",
            "data": { "lat": lat, "lng": lng, "accuracy": 5.0, "timestamp": chrono::Utc::now().to_rfc3339() }
        }))
        .await;
    }

    /// The next text message as JSON, skipping control frames; panics on close or timeout.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a message in time")
                .expect("stream open")
                .expect("no socket error");
            match message {
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(text.as_str()).expect("JSON text");
                    if !self.skips(&message) {
                        return message;
                    }
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message of the given type, skipping others.
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.next_json().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Reads until the server closes; returns its close frame. Panics on timeout.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            let next = tokio::time::timeout(WAIT, self.stream.next()).await.expect("closed in time");
            match next {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads until `quiet` passes with no message; returns the JSON messages read.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut messages = Vec::new();
        while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, self.stream.next()).await {
            if let Message::Text(text) = message {
                let message: Value = serde_json::from_str(text.as_str()).expect("JSON text");
                if !self.skips(&message) {
                    messages.push(message);
                }
            }
        }
        messages
    }

    /// Asserts that nothing (but skipped presence) is queued for this native socket: a ping
    /// answered by a pong is the barrier, since everything queued before the ping is
    /// written before the pong. Exact when what must not arrive was already handled by
    /// the server (its sender saw an answer, or another socket got it); on one instance.
    pub async fn assert_quiet(&mut self) {
        self.send_json(json!({ "type": "ping", "data": {} })).await;
        let message = self.next_json().await;
        assert_eq!(message["type"], "pong", "expected nothing before the pong, got {message}");
    }

    /// Everything (but skipped presence) queued for this native socket before a ping sent
    /// now: the pong is the barrier, as in `assert_quiet`. What the server did for
    /// messages sent on this socket, or handled before another socket's barrier, is here.
    pub async fn until_pong(&mut self) -> Vec<Value> {
        self.send_json(json!({ "type": "ping", "data": {} })).await;
        let mut before = Vec::new();
        loop {
            let message = self.next_json().await;
            if message["type"] == "pong" {
                return before;
            }
            before.push(message);
        }
    }

    /// Asserts nothing but control frames arrive within `window` (for what crosses
    /// instances, or follows a closed socket: no barrier covers those).
    pub async fn assert_silent(&mut self, window: Duration) {
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            if let Message::Text(text) = message {
                let message: Value = serde_json::from_str(text.as_str()).expect("JSON text");
                assert!(self.skips(&message), "expected silence, got {text}");
            }
        }
    }
}

/// The JSON error body's code, asserting the shape `{"error": {"code", "message"}}`.
/// `user_id`'s entry in a `session_state` snapshot's locations, if it has one.
pub fn snapshot_location(snapshot: &Value, user_id: &str) -> Option<Value> {
    snapshot["data"]["locations"]
        .as_array()
        .expect("locations")
        .iter()
        .find(|l| l["user_id"] == user_id)
        .cloned()
}

pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["error"]["message"].is_string(), "error has a message: {body}");
    body["error"]["code"].as_str().expect("error has a code").to_owned()
}

/// The value of the first sample in a `/metrics` text of `series` (a name, or a name with
/// some of its labels): `convoy_ws_connections` is not `convoy_ws_connections_refused_total`.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with([' ', '{', ','])))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The real `convoy` binary, started on a free port with a given DATABASE_URL.
pub struct Binary {
    pub port: u16,
    pub base: String,
    pub client: reqwest::Client,
    child: Option<std::process::Child>,
}

impl Drop for Binary {
    /// A failed test must not leave the server running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Binary {
    /// Starts the binary and waits until `/health/ready` answers 200.
    pub async fn start(database_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(database_url, port).await
    }

    pub async fn start_on(database_url: &str, port: u16) -> Self {
        Self::start_with(database_url, port, &[]).await
    }

    /// Started with these environment variables as well (e.g. REDIS_URL).
    pub async fn start_with(database_url: &str, port: u16, env: &[(&str, &str)]) -> Self {
        Self::start_logging(database_url, port, env, std::process::Stdio::null()).await
    }

    /// `start_with`, its log (standard output) going to `log`.
    pub async fn start_logging(
        database_url: &str,
        port: u16,
        env: &[(&str, &str)],
        log: std::process::Stdio,
    ) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_convoy"))
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", database_url)
            .env("JWT_SECRET", TEST_SECRET)
            .env("LOG_LEVEL", "warn")
            .env_remove("APP_ENV")
            .env_remove("PUBLIC_URL")
            .env_remove("REDIS_URL")
            .envs(env.iter().copied())
            .stdout(log)
            .spawn()
            .expect("binary starts");
        let server = Self {
            port,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            child: Some(child),
        };
        for _ in 0..100 {
            if server
                .client
                .get(format!("{}/health/ready", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the binary never answered /health/ready");
    }

    /// POSTs JSON and returns the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Connects a socket and reads past the snapshot.
    pub async fn connect(&self, token: &str) -> WsClient {
        let url = format!("ws://127.0.0.1:{}/ws?token={token}", self.port);
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("websocket handshake");
        let mut ws = WsClient::new(stream);
        assert_eq!(ws.next_json().await["type"], "session_state");
        ws
    }

    /// Sends a signal (`-TERM`, `-KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sent = std::process::Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success());
    }

    pub async fn wait(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap()
    }
}
