//! Command line and environment configuration. Every setting has a flag and an environment
//! variable of the same name; the doc comment of a field is its `--help` text.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The shortest JWT secret accepted, in bytes, in every mode.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Parser, Clone)]
#[command(name = "convoy", version, about = "Real-time location sharing server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

// No Debug derive: the struct holds the JWT secret.
#[derive(Args, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// A second address (host:port) for `/metrics` and `/health/detailed`, which are then
    /// no longer served on the main one. Unset: both on the main address.
    #[arg(long, env = "ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Database URL: sqlite://PATH (embedded, created if missing) or postgres://...
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://convoy.db")]
    pub database_url: String,

    /// Most connections in the database pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,

    /// Seconds a PostgreSQL statement may run before it is cancelled (the request gets 503).
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub database_statement_timeout_seconds: u64,

    /// Redis URL (redis://...): share live state and events with other instances. Unset: in-process bus.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// A Redis Cluster's seed nodes, comma-separated redis://host:port (any few of its
    /// nodes; the rest are discovered): used instead of REDIS_URL. Sessions spread over the
    /// shards, each on the one that owns its hash tag, with sharded pub/sub (Redis 7).
    #[arg(long, env = "REDIS_CLUSTER_URLS", value_delimiter = ',')]
    pub redis_cluster_urls: Vec<String>,

    /// Milliseconds the Redis writer waits after a position before sending its pipeline
    /// (anything else goes at once), so more positions share one round trip and one
    /// PUBLISH per session (a third of the Redis
    /// CPU per update at 5; cross-instance deliveries wait that much longer). 0 sends at once.
    #[arg(long, env = "REDIS_BATCH_DELAY_MS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub redis_batch_delay_ms: u64,

    /// Bytes of messages and cached locations the Redis writer may hold while Redis is slow;
    /// past it (or 65,536 commands) new ones are dropped and counted, and sessions that lost
    /// events resynchronise once Redis keeps up.
    #[arg(long, env = "REDIS_QUEUE_MAX_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1024..), |v| v as usize))]
    pub redis_queue_max_bytes: usize,

    /// Seconds after its last Redis heartbeat (sent every second) an instance is taken for
    /// gone: readers skip its presence and sweeps announce its connections' leaves. Shorter
    /// reaps a crashed instance's presence sooner; too short takes a stalled one for gone
    /// (it restores its presence by itself when it is back).
    #[arg(long, env = "PRESENCE_INSTANCE_TIMEOUT_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub presence_instance_timeout_seconds: u64,

    /// Threads that run sockets and requests; 0: one per core. Every thread more costs
    /// wake-ups between threads: on a machine shared with other work, or with one instance
    /// per core behind a load balancer, 1 serves a delivery for less CPU (BENCHMARKS.md).
    #[arg(long, env = "WORKER_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,

    /// Secret for signing the HS256 session tokens, at least 32 bytes; the same on every
    /// instance. Unset: a random 256-bit secret generated once and kept with the data (a
    /// 0600 file beside the SQLite file, or a row in PostgreSQL shared by every instance).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// development or production (production refuses CORS_ALLOWED_ORIGINS=*).
    #[arg(long, env = "APP_ENV", value_enum, default_value = "development")]
    pub app_env: AppEnv,

    /// Public base URL used in join links and WebSocket URLs [default: http://localhost:PORT].
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Browser origins (scheme://host[:port]) allowed to call the REST API and open sockets
    /// from pages of other sites, comma-separated; `*` allows any (refused in production).
    /// Unset: none (convoy's own page, same origin, always works).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Map tiles for the web page, `{z}/{x}/{y}` URL template (mind the tile server's usage
    /// policy). Empty: no tiles, the page draws a plain grid with a scale.
    #[arg(long, env = "TILE_URL", default_value = "https://tile.openstreetmap.org/{z}/{x}/{y}.png")]
    pub tile_url: String,

    /// Attribution shown on the map for the tiles (HTML allowed, as the tile server asks).
    #[arg(
        long,
        env = "TILE_ATTRIBUTION",
        default_value = "&copy; <a href=\"https://www.openstreetmap.org/copyright\">OpenStreetMap</a> contributors"
    )]
    pub tile_attribution: String,

    /// Most active participants one session may have.
    #[arg(long, env = "MAX_PARTICIPANTS_PER_SESSION", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_participants_per_session: u32,

    /// Participants who left that a session keeps listed (the latest leavers); older ones
    /// are deleted at the next join, so a join/leave loop cannot grow a session.
    #[arg(long, env = "MAX_DEPARTED_PARTICIPANTS_PER_SESSION", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub max_departed_participants_per_session: u32,

    /// Chat messages a room keeps (a session's chat, a local room): the newest; each new
    /// message deletes what falls past it.
    #[arg(long, env = "MAX_CHAT_MESSAGES_PER_ROOM", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(50..=10_000_000))]
    pub max_chat_messages_per_room: u32,

    /// Seconds a participant's last location stays visible.
    #[arg(long, env = "LOCATION_TTL_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub location_ttl_seconds: u64,

    /// Seconds without a join or a location update after which a session ends.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_timeout_seconds: u64,

    /// Seconds between two runs of the sweeper that ends expired and idle sessions.
    #[arg(long, env = "SWEEP_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub sweep_interval_seconds: u64,

    /// Hours chat messages (session chat and local rooms) are kept; each sweep deletes older
    /// ones (0: kept until the next sweep).
    #[arg(long, env = "CHAT_RETENTION_HOURS", default_value_t = 168)]
    pub chat_retention_hours: u64,

    /// Hours an ended session is kept, with its participants and its chat, before a sweep
    /// deletes it (0: deleted at the next sweep).
    #[arg(long, env = "SESSION_RETENTION_HOURS", default_value_t = 168)]
    pub session_retention_hours: u64,

    /// Seconds between two looks at the store for sessions that ended and participants who
    /// left (with Redis): their sockets here close even when the bus could not say so.
    #[arg(long, env = "REVOCATION_CHECK_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub revocation_check_seconds: u64,

    /// Seconds between two write-behind flushes of last_seen / last_activity to the database.
    #[arg(long, env = "ACTIVITY_FLUSH_INTERVAL_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub activity_flush_interval_seconds: u64,

    /// Seconds a token is valid; never past its session's end. Refresh with
    /// POST /api/token/refresh or the `refresh_token` socket message.
    #[arg(long, env = "TOKEN_TTL_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..))]
    pub token_ttl_seconds: u64,

    /// Seconds the token a refresh replaced still works (opens sockets; refreshing it again
    /// returns the current token): an answer lost on a bad network must not lock its holder
    /// out. 0: replaced at once.
    #[arg(long, env = "TOKEN_ROTATION_GRACE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub token_rotation_grace_seconds: u64,

    /// Apply the rate limits below (true or false).
    #[arg(long, env = "RATE_LIMIT_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limit_enabled: bool,

    /// Socket messages per second one connection may send (bursts of twice that).
    #[arg(long, env = "RATE_LIMIT_CONNECTION_PER_SECOND", default_value_t = 10)]
    pub rate_limit_connection_per_second: u32,

    /// Socket messages per second one user may send over all their connections (bursts of twice that).
    #[arg(long, env = "RATE_LIMIT_USER_PER_SECOND", default_value_t = 20)]
    pub rate_limit_user_per_second: u32,

    /// Socket messages per second this instance accepts in all (bursts of twice that).
    #[arg(long, env = "RATE_LIMIT_INSTANCE_PER_SECOND", default_value_t = 100_000)]
    pub rate_limit_instance_per_second: u32,

    /// Bytes per second one user may send to others in publishes, direct messages and chat,
    /// each message counted as its size times its recipients on this instance (bursts of
    /// twice that): one member's flood cannot make the others slow consumers.
    #[arg(long, env = "RATE_LIMIT_USER_BYTES_PER_SECOND", default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub rate_limit_user_bytes_per_second: u32,

    /// Chat messages one user may post per minute (socket and REST together).
    #[arg(long, env = "RATE_LIMIT_CHAT_PER_MINUTE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_chat_per_minute: u32,

    /// Room lookups (GET /api/rooms, POST /api/rooms/join) one client IP may make per minute.
    #[arg(long, env = "RATE_LIMIT_ROOM_LOOKUPS_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_room_lookups_per_minute: u32,

    /// Sessions one client IP may create per minute.
    #[arg(long, env = "RATE_LIMIT_SESSIONS_PER_MINUTE", default_value_t = 30)]
    pub rate_limit_sessions_per_minute: u32,

    /// Joins one client IP may make per minute.
    #[arg(long, env = "RATE_LIMIT_JOINS_PER_MINUTE", default_value_t = 120)]
    pub rate_limit_joins_per_minute: u32,

    /// Most open WebSocket connections on this instance; past it the handshake gets 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..), |v| v as usize))]
    pub max_connections: usize,

    /// Most open WebSocket connections from one client address (IPv6: one /64; behind
    /// TRUST_PROXY_HEADERS the forwarded address), sockets still waiting for `auth`
    /// included; past it the handshake gets 429.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,

    /// Most open WebSocket connections of one participant (phone, laptop, reconnects not
    /// yet noticed as dead); past it the handshake gets 429, or an `auth` message 1013.
    #[arg(long, env = "MAX_CONNECTIONS_PER_PARTICIPANT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_participant: u32,

    /// Seconds between two pings the server sends on every socket (at most a day: a
    /// socket's deadlines are instants, which a far larger value would overflow).
    #[arg(long, env = "HEARTBEAT_INTERVAL_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub heartbeat_interval_seconds: u64,

    /// Seconds a socket may stay silent (no message, no pong) before it is closed with 4408.
    #[arg(long, env = "CLIENT_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub client_timeout_seconds: u64,

    /// Largest WebSocket message accepted from a client, in bytes; larger closes with 1009.
    #[arg(long, env = "WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub ws_max_message_bytes: usize,

    /// Largest `publish` payload, in bytes (its JSON as sent).
    #[arg(long, env = "MAX_PUBLISH_BYTES", default_value_t = 4096, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(16..=1_048_576), |v| v as usize))]
    pub max_publish_bytes: usize,

    /// Largest `direct_message` payload, in bytes (its JSON as sent).
    #[arg(long, env = "MAX_DIRECT_MESSAGE_BYTES", default_value_t = 4096, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(16..=1_048_576), |v| v as usize))]
    pub max_direct_message_bytes: usize,

    /// Largest chat message content, in bytes of UTF-8 (and at most 2,000 characters).
    #[arg(long, env = "MAX_CHAT_MESSAGE_BYTES", default_value_t = 4096, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(16..=1_048_576), |v| v as usize))]
    pub max_chat_message_bytes: usize,

    /// Undelivered events (joins, leaves, ...) a connection may queue before it is closed as too slow.
    #[arg(long, env = "WS_QUEUE_CAPACITY", default_value_t = 256, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..), |v| v as usize))]
    pub ws_queue_capacity: usize,

    /// Bytes of undelivered events a connection may queue before it is closed as too slow
    /// (1013), whatever their count.
    #[arg(long, env = "WS_QUEUE_MAX_BYTES", default_value_t = 1024 * 1024, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(65_536..), |v| v as usize))]
    pub ws_queue_max_bytes: usize,

    /// Kernel send buffer per connection, in bytes [default: the kernel's autotuning, up to
    /// net.core.wmem_max]. Bounds the kernel memory a stalled client can pin.
    #[arg(long, env = "TCP_SEND_BUFFER_BYTES")]
    pub tcp_send_buffer_bytes: Option<usize>,

    /// Seconds a socket opened without a token has to send `auth {token}` before it is
    /// closed with 1008.
    #[arg(long, env = "AUTH_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub auth_timeout_seconds: u64,

    /// Trust `X-Forwarded-For` for the client's address (rate limits, logs): only behind a
    /// proxy that sets it. Off: the TCP peer's address.
    #[arg(long, env = "TRUST_PROXY_HEADERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_proxy_headers: bool,

    /// Seconds a REST request may take (reading its body included) before it is answered
    /// with 408. Sockets are not affected once open.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_request_timeout_seconds: u64,

    /// Seconds a client has to send a request's headers (and an idle keep-alive connection
    /// to start its next request) before the connection is closed: slow-loris protection.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub http_header_timeout_seconds: u64,

    /// Most HTTP connections not (yet) upgraded to a socket; past it new connections get a
    /// 503 and are closed.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS", default_value_t = 4096, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..), |v| v as usize))]
    pub max_http_connections: usize,

    /// Most such connections from one TCP peer address (IPv6: one /64); not applied with
    /// TRUST_PROXY_HEADERS, where every connection comes from the proxy.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS_PER_IP", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_http_connections_per_ip: u32,

    /// Seconds a graceful shutdown waits for sockets to close before giving up.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,

    /// Log filter, e.g. info or convoy=debug,tower_http=info.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Which other sites' pages may use the API (CORS_ALLOWED_ORIGINS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    /// Exactly these (none: same origin only).
    List(Vec<String>),
}

impl Config {
    /// Checks what clap cannot: the secret's length, the public URL, the origins.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(secret) = &self.jwt_secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return Err(format!(
                "JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), \
                 or unset to let convoy generate and keep one"
            ));
        }
        if self.client_timeout_seconds <= self.heartbeat_interval_seconds {
            return Err("CLIENT_TIMEOUT_SECONDS must be longer than HEARTBEAT_INTERVAL_SECONDS".into());
        }
        if self.ws_max_message_bytes < 1024 {
            return Err("WS_MAX_MESSAGE_BYTES must be at least 1024".into());
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err("PUBLIC_URL must start with http:// or https://".into());
        }
        self.cors_origins()?;
        if self.redis_url.is_some() && !self.redis_cluster_seeds().is_empty() {
            return Err("set REDIS_URL (one Redis) or REDIS_CLUSTER_URLS (a Redis Cluster), not both".into());
        }
        if let Some(bad) = self
            .redis_cluster_seeds()
            .iter()
            .find(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
        {
            return Err(format!("REDIS_CLUSTER_URLS: {bad} is not a redis:// URL"));
        }
        Ok(())
    }

    /// REDIS_CLUSTER_URLS, trimmed, without empty entries.
    pub fn redis_cluster_seeds(&self) -> Vec<String> {
        self.redis_cluster_urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()).map(String::from).collect()
    }

    /// CORS_ALLOWED_ORIGINS, checked: `Any` for `*`, else the origins, lower-cased.
    pub fn cors_origins(&self) -> Result<CorsOrigins, String> {
        let origins: Vec<String> = self
            .cors_allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        if origins.iter().any(|o| o == "*") {
            if origins.len() > 1 {
                return Err("CORS_ALLOWED_ORIGINS: `*` cannot be combined with origins".into());
            }
            if self.app_env == AppEnv::Production {
                return Err("CORS_ALLOWED_ORIGINS=* is refused in production: list the origins".into());
            }
            return Ok(CorsOrigins::Any);
        }
        for origin in &origins {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            if rest.is_none_or(|host| host.is_empty() || host.contains('/')) {
                return Err(format!(
                    "CORS_ALLOWED_ORIGINS: {origin:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
        }
        Ok(CorsOrigins::List(origins.into_iter().map(|o| o.to_ascii_lowercase()).collect()))
    }

    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    pub fn database_statement_timeout(&self) -> Duration {
        Duration::from_secs(self.database_statement_timeout_seconds)
    }

    pub fn location_ttl(&self) -> Duration {
        Duration::from_secs(self.location_ttl_seconds)
    }

    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["convoy"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").config
    }

    #[test]
    fn a_short_secret_is_refused_in_every_mode() {
        for env in ["development", "production"] {
            for short in ["", "short", &"x".repeat(31)] {
                let config = parse(&["--app-env", env, "--jwt-secret", short]);
                assert!(config.validate().unwrap_err().contains("32 bytes"), "{env} {short:?}");
            }
        }
    }

    #[test]
    fn a_long_secret_or_none_is_accepted() {
        let secret = "x".repeat(32);
        assert!(parse(&["--app-env", "production", "--jwt-secret", &secret]).validate().is_ok());
        assert!(parse(&["--app-env", "production"]).validate().is_ok());
        assert!(parse(&[]).jwt_secret.is_none());
    }

    #[test]
    fn worker_threads_default_to_one_per_core() {
        assert_eq!(parse(&[]).worker_threads, 0);
        assert_eq!(parse(&["--worker-threads", "1"]).worker_threads, 1);
        for bad in ["-1", "1025", "many"] {
            assert!(Cli::try_parse_from(["convoy", "--worker-threads", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn socket_deadlines_are_bounded_so_they_cannot_overflow_an_instant() {
        assert_eq!(parse(&["--heartbeat-interval-seconds", "86400"]).heartbeat_interval_seconds, 86_400);
        for flag in ["--heartbeat-interval-seconds", "--client-timeout-seconds"] {
            for bad in ["0", "86401", "18446744073709551615"] {
                assert!(Cli::try_parse_from(["convoy", flag, bad]).is_err(), "{flag} {bad}");
            }
        }
    }

    #[test]
    fn the_presence_instance_timeout_stays_above_a_few_heartbeats() {
        assert_eq!(parse(&[]).presence_instance_timeout_seconds, 15);
        assert_eq!(parse(&["--presence-instance-timeout-seconds", "3"]).presence_instance_timeout_seconds, 3);
        for bad in ["2", "0", "3601"] {
            let args = ["convoy", "--presence-instance-timeout-seconds", bad];
            assert!(Cli::try_parse_from(args).is_err(), "{bad} s is refused: a second's heartbeat");
        }
    }

    #[test]
    fn cors_origins_are_checked() {
        let origins = |list: &str, env: &str| {
            parse(&["--app-env", env, "--jwt-secret", &"x".repeat(32), "--cors-allowed-origins", list])
                .cors_origins()
        };
        assert_eq!(origins("*", "development"), Ok(CorsOrigins::Any));
        assert!(origins("*", "production").unwrap_err().contains("refused in production"));
        assert!(origins("*,https://a.example", "development").is_err());
        assert_eq!(
            origins("https://A.example, http://b.example:3000", "production"),
            Ok(CorsOrigins::List(vec!["https://a.example".into(), "http://b.example:3000".into()]))
        );
        for bad in ["a.example", "https://a.example/app", "ftp://a.example", "https://"] {
            assert!(origins(bad, "development").is_err(), "{bad}");
        }
        assert_eq!(parse(&[]).cors_origins(), Ok(CorsOrigins::List(vec![])));
    }

    #[test]
    fn one_redis_or_a_cluster_not_both() {
        let seeds = "redis://10.0.0.1:7000, redis://10.0.0.2:7000,";
        let cluster = parse(&["--redis-cluster-urls", seeds]);
        assert!(cluster.validate().is_ok());
        assert_eq!(cluster.redis_cluster_seeds(), ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
        let both = parse(&["--redis-url", "redis://cache:6379", "--redis-cluster-urls", seeds]);
        assert!(both.validate().unwrap_err().contains("not both"));
        let bad = parse(&["--redis-cluster-urls", "10.0.0.1:7000"]);
        assert!(bad.validate().unwrap_err().contains("10.0.0.1:7000 is not a redis:// URL"));
        assert!(parse(&[]).redis_cluster_seeds().is_empty());
    }

    #[test]
    fn public_url_needs_a_scheme() {
        let config = parse(&["--public-url", "example.com"]);
        assert!(config.validate().is_err());
    }
}
