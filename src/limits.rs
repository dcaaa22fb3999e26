//! Rate limits, as token buckets (governor): socket messages per connection, per user and
//! per instance; session creation and joins per client IP. A limited socket message is
//! dropped with an `error {code: "rate_limited"}` (at most one such reply per second), and
//! the connection stays open: a burst is never a disconnect.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};

use crate::clock::Clock;

/// A rate limiter per key, counting in the server's clock.
type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, Clock, NoOpMiddleware<Nanos>>;
/// One rate limiter, counting in the server's clock.
type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, Clock, NoOpMiddleware<Nanos>>;

use crate::config::Config;
use crate::domain::UserId;

/// Which limit refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Connection = 0,
    User = 1,
    Instance = 2,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::User => "user",
            Self::Instance => "instance",
        }
    }
}

/// REST actions limited per client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestAction {
    CreateSession,
    Join,
    /// `GET /api/rooms`, `POST /api/rooms/join`: each reads the rooms' presence.
    RoomLookup,
}

/// Messages a participant sends to others, each with its own size limit and charged by
/// size times recipients against the sender's byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// `publish` on a topic: the payload.
    Publish,
    /// `direct_message`: the payload.
    Direct,
    /// A chat message (session or local room): the content.
    Chat,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Direct => "direct_message",
            Self::Chat => "chat message",
        }
    }
}

/// Why a message to others was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Over its kind's size limit, in bytes.
    TooLarge { kind: MessageKind, max: usize, bytes: usize },
    /// Over the sender's byte budget: retry after this long.
    OverBudget(Duration),
    /// Larger, times its recipients, than the budget allows at once: it never fits.
    TooCostly { cost: usize, burst: usize },
}

/// What the sender is told: one wording for the socket's `error` and REST's JSON error.
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { kind, max, bytes } => {
                write!(f, "a {} carries at most {max} bytes; this one has {bytes}", kind.as_str())
            }
            Self::TooCostly { cost, burst } => {
                write!(
                    f,
                    "to everyone here this message costs {cost} bytes of a budget of {burst}: send less"
                )
            }
            Self::OverBudget(_) => {
                write!(
                    f,
                    "too much data sent to others (bytes x recipients per second): this one was dropped"
                )
            }
        }
    }
}

pub struct Limits {
    enabled: bool,
    max_bytes: [usize; 3],
    per_user_bytes: KeyedLimiter<UserId>,
    /// The byte budget's burst: what one message may cost at most.
    bytes_burst: usize,
    connection_quota: Quota,
    per_user: KeyedLimiter<UserId>,
    instance: DirectLimiter,
    create_per_ip: KeyedLimiter<IpAddr>,
    join_per_ip: KeyedLimiter<IpAddr>,
    room_lookups_per_ip: KeyedLimiter<IpAddr>,
    chat_per_user: KeyedLimiter<UserId>,
    /// Meeting point changes: as many a minute as chat messages, a bucket of their own.
    meeting_point_per_user: KeyedLimiter<UserId>,
    /// Trail reads (each reads a whole session's trails): as many, another bucket.
    trails_per_user: KeyedLimiter<UserId>,
    /// Each tracker URL (a participant and a URL generation) has a bucket of its own.
    per_tracker_url: KeyedLimiter<(UserId, u32)>,
    clock: Clock,
}

fn keyed<K: std::hash::Hash + Eq + Clone>(quota: Quota, clock: &Clock) -> KeyedLimiter<K> {
    RateLimiter::dashmap_with_clock(quota, clock.clone())
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// `rate` per second with room for a burst of twice that.
fn per_second(rate: u32) -> Quota {
    Quota::per_second(nonzero(rate)).allow_burst(nonzero(rate.saturating_mul(2)))
}

impl Limits {
    pub fn new(config: &Config, clock: Clock) -> Self {
        Self {
            enabled: config.rate_limit_enabled,
            connection_quota: per_second(config.rate_limit_connection_per_second),
            per_user: keyed(per_second(config.rate_limit_user_per_second), &clock),
            instance: RateLimiter::direct_with_clock(
                per_second(config.rate_limit_instance_per_second),
                clock.clone(),
            ),
            create_per_ip: keyed(Quota::per_minute(nonzero(config.rate_limit_sessions_per_minute)), &clock),
            join_per_ip: keyed(Quota::per_minute(nonzero(config.rate_limit_joins_per_minute)), &clock),
            room_lookups_per_ip: keyed(
                Quota::per_minute(nonzero(config.rate_limit_room_lookups_per_minute)),
                &clock,
            ),
            chat_per_user: keyed(Quota::per_minute(nonzero(config.rate_limit_chat_per_minute)), &clock),
            per_tracker_url: keyed(per_second(config.rate_limit_user_per_second), &clock),
            meeting_point_per_user: keyed(
                Quota::per_minute(nonzero(config.rate_limit_chat_per_minute)),
                &clock,
            ),
            trails_per_user: keyed(Quota::per_minute(nonzero(config.rate_limit_chat_per_minute)), &clock),
            max_bytes: [
                config.max_publish_bytes,
                config.max_direct_message_bytes,
                config.max_chat_message_bytes,
            ],
            per_user_bytes: keyed(per_second(config.rate_limit_user_bytes_per_second), &clock),
            bytes_burst: config.rate_limit_user_bytes_per_second as usize * 2,
            clock,
        }
    }

    /// A new connection's own bucket and reply throttle.
    pub fn connection(&self) -> ConnectionLimiter {
        ConnectionLimiter {
            bucket: self
                .enabled
                .then(|| RateLimiter::direct_with_clock(self.connection_quota, self.clock.clone())),
            last_reply: ReplyThrottle::new(self.clock.clone()),
        }
    }

    /// Whether one more socket message may go through. Checked from the narrowest scope
    /// out, so a flooding connection spends its own bucket, not its user's or everyone's.
    pub fn allow_message(&self, connection: &ConnectionLimiter, user_id: UserId) -> Result<(), Scope> {
        let Some(bucket) = &connection.bucket else { return Ok(()) };
        bucket.check().map_err(|_| Scope::Connection)?;
        self.per_user.check_key(&user_id).map_err(|_| Scope::User)?;
        self.instance.check().map_err(|_| Scope::Instance)
    }

    /// Whether a message sent over REST (a chat post) may go through: it spends the same
    /// per-user and per-instance buckets as socket messages. Ok, or how long to wait.
    pub fn allow_user_message(&self, user_id: UserId) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let wait = |not_until| self.wait(not_until);
        self.per_user.check_key(&user_id).map_err(wait)?;
        self.instance.check().map_err(wait)
    }

    /// Whether `user_id` may change a meeting point once more: each change is a database
    /// write, an event everyone must get, and a fresh start of everyone's arrival.
    pub fn allow_meeting_point(&self, user_id: UserId) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        self.meeting_point_per_user.check_key(&user_id).map_err(|not_until| self.wait(not_until))
    }

    /// Whether `user_id` may read the session's trails once more (REST, GPX or socket).
    pub fn allow_trails(&self, user_id: UserId) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        self.trails_per_user.check_key(&user_id).map_err(|not_until| self.wait(not_until))
    }

    /// Whether one more request to the tracker URL of `user_id` and `generation` may be
    /// read: checked before anything is, so a replaced URL that keeps reporting spends its
    /// own bucket, not its participant's (`allow_user_message` follows once the URL is
    /// known to be current).
    pub fn allow_tracker_url(&self, user_id: UserId, generation: u32) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        self.per_tracker_url.check_key(&(user_id, generation)).map_err(|not_until| self.wait(not_until))
    }

    /// Whether `user_id` may send a message of `kind` and `bytes` to `recipients` others:
    /// within the kind's size limit (always applied), and, with rate limits on, within the
    /// user's byte budget, which it spends at `bytes` x `recipients`. A message that
    /// costs more than a full budget's burst is refused like one over the budget.
    pub fn allow_to_others(
        &self,
        user_id: UserId,
        kind: MessageKind,
        bytes: usize,
        recipients: usize,
    ) -> Result<(), Refused> {
        let max = self.max_bytes[kind as usize];
        if bytes > max {
            return Err(Refused::TooLarge { kind, max, bytes });
        }
        if !self.enabled {
            return Ok(());
        }
        if kind == MessageKind::Chat {
            self.chat_per_user
                .check_key(&user_id)
                .map_err(|not_until| Refused::OverBudget(self.wait(not_until)))?;
        }
        let cost = bytes.max(1).saturating_mul(recipients.max(1));
        let n = NonZeroU32::new(u32::try_from(cost).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match self.per_user_bytes.check_key_n(&user_id, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refused::OverBudget(self.wait(not_until))),
            Err(_insufficient) => Err(Refused::TooCostly { cost, burst: self.bytes_burst }),
        }
    }

    /// Ok, or how long the client should wait.
    pub fn allow_rest(&self, action: RestAction, ip: IpAddr) -> Result<(), Duration> {
        if !self.enabled {
            return Ok(());
        }
        let limiter = match action {
            RestAction::CreateSession => &self.create_per_ip,
            RestAction::Join => &self.join_per_ip,
            RestAction::RoomLookup => &self.room_lookups_per_ip,
        };
        limiter.check_key(&client_key(ip)).map_err(|not_until| self.wait(not_until))
    }

    /// How long until a refused request would pass.
    fn wait(&self, not_until: NotUntil<Nanos>) -> Duration {
        not_until.wait_time_from(governor::clock::Clock::now(&self.clock))
    }

    /// Forgets buckets that are full again (the keyed stores would otherwise only grow).
    pub fn retain_recent(&self) {
        self.per_user.retain_recent();
        self.per_user_bytes.retain_recent();
        self.create_per_ip.retain_recent();
        self.join_per_ip.retain_recent();
        self.room_lookups_per_ip.retain_recent();
        self.chat_per_user.retain_recent();
        self.per_tracker_url.retain_recent();
        self.meeting_point_per_user.retain_recent();
        self.trails_per_user.retain_recent();
    }
}

/// The key a client IP is limited under: the address itself for IPv4, its /64 for IPv6
/// (one subscriber usually holds a whole /64, so per-address keys would be free to evade).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// One connection's bucket, and when it last told its client it was limited.
pub struct ConnectionLimiter {
    bucket: Option<DirectLimiter>,
    last_reply: ReplyThrottle,
}

impl ConnectionLimiter {
    /// Whether to send a `rate_limited` reply now: at most one per second.
    pub fn should_reply(&mut self) -> bool {
        self.last_reply.due()
    }
}

/// At most one reply of a kind per second, on the server's clock: a flooding client is
/// told, not flooded back.
#[derive(Debug)]
pub struct ReplyThrottle {
    last: Option<Instant>,
    clock: Clock,
}

impl ReplyThrottle {
    pub fn new(clock: Clock) -> Self {
        Self { last: None, clock }
    }

    pub fn due(&mut self) -> bool {
        let now = self.clock.instant();
        let due = self.last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            self.last = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap()), v4);
    }
}
