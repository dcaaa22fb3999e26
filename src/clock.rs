//! Where the server reads the time. In production this is the system clock; a test moves
//! it forward to check a time-based rule (idle expiry, location TTL, token expiry, rate
//! limit refills) at once instead of sleeping until the rule applies.
//!
//! One clock serves both kinds of time the rules need: wall time (`now`, what is stored
//! and compared with stored times) and monotonic time (`instant`, for durations in
//! memory), and it is the rate limiters' clock too, so one `advance` moves all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::nanos::Nanos;

use crate::domain;

#[derive(Debug, Clone)]
pub struct Clock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Where the limiters' relative time starts.
    origin: Instant,
    /// How far `advance` moved this clock, in nanoseconds (always 0 in production).
    ahead_ns: AtomicU64,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Inner { origin: Instant::now(), ahead_ns: AtomicU64::new(0) }))
    }

    fn ahead(&self) -> Duration {
        Duration::from_nanos(self.0.ahead_ns.load(Ordering::Relaxed))
    }

    /// The current time, truncated to milliseconds: the precision every store keeps.
    pub fn now(&self) -> DateTime<Utc> {
        let ahead = i64::try_from(self.ahead().as_millis()).unwrap_or(i64::MAX);
        domain::from_millis(Utc::now().timestamp_millis().saturating_add(ahead))
    }

    /// The current monotonic time, for deadlines held in memory.
    pub fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// Moves this clock (and everything reading it) forward: for tests. Timers already
    /// sleeping on tokio's clock are not woken; the rules that read this clock see the
    /// new time the next time they look.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .ahead_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ahead| Some(ahead.saturating_add(by)));
    }
}

/// The rate limiters count in this clock's time, so `advance` refills their buckets.
impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.origin.elapsed() + self.ahead())
    }
}

impl governor::clock::ReasonablyRealtime for Clock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_wall_monotonic_and_limiter_time_together() {
        let clock = Clock::system();
        let (wall, mono, relative) = (clock.now(), clock.instant(), governor::clock::Clock::now(&clock));
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() - wall >= chrono::Duration::seconds(3600));
        assert!(clock.instant() - mono >= Duration::from_secs(3600));
        let moved: Duration =
            governor::clock::Reference::duration_since(&governor::clock::Clock::now(&clock), relative).into();
        assert!(moved >= Duration::from_secs(3600));
        // Clones share the time: the server's parts all read one clock.
        let other = clock.clone();
        other.advance(Duration::from_secs(60));
        assert!(clock.now() - wall >= chrono::Duration::seconds(3660));
    }
}
