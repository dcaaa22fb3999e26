//! What this instance put in the location cache lately. The writer holds a session's cache
//! writes for up to a second (`spaced`) and a pipeline for REDIS_BATCH_DELAY_MS, so Redis
//! may not have them yet; this instance's own reads see them anyway (read-your-writes): a
//! tracker app's offline queue sent in two requests a moment apart must not let its older
//! fixes replace the newer ones, and a snapshot on the instance a position went through
//! has it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::CALL_TIMEOUT;
use super::spaced::SPACING;
use crate::domain::{Location, SessionId, UserId};

/// How long a put is remembered: the writer has sent it by then unless Redis is more than
/// a call's timeout behind (then reads may miss it, as they would without this).
const KEEP: Duration = SPACING.saturating_add(CALL_TIMEOUT).saturating_add(Duration::from_secs(1));

#[derive(Default)]
pub(super) struct Recent {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, HashMap<UserId, Put>>,
    pruned_at: Option<Instant>,
}

struct Put {
    location: Location,
    /// When it leaves the cache (Unix ms).
    until_ms: i64,
    put_at: Instant,
}

impl Recent {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A location was put; of two for one participant the newer fix is kept, as in Redis.
    pub(super) fn put(
        &self,
        session_id: SessionId,
        user_id: UserId,
        location: Location,
        until_ms: i64,
        now: Instant,
    ) {
        self.with(|inner| {
            if inner.pruned_at.is_none_or(|at| now.duration_since(at) >= KEEP) {
                inner.pruned_at = Some(now);
                inner.sessions.retain(|_, puts| {
                    puts.retain(|_, put| now.duration_since(put.put_at) < KEEP);
                    !puts.is_empty()
                });
            }
            let put = Put { location, until_ms, put_at: now };
            match inner.sessions.entry(session_id).or_default().entry(user_id) {
                Entry::Occupied(mut older) if older.get().location.timestamp <= location.timestamp => {
                    older.insert(put);
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(place) => {
                    place.insert(put);
                }
            }
        });
    }

    pub(super) fn remove(&self, session_id: SessionId, user_id: UserId) {
        self.with(|inner| {
            if let Some(puts) = inner.sessions.get_mut(&session_id) {
                puts.remove(&user_id);
            }
        });
    }

    pub(super) fn clear(&self, session_id: SessionId) {
        self.with(|inner| inner.sessions.remove(&session_id));
    }

    /// Lays what was put lately over what Redis returned for the session: a newer fix
    /// replaces an older one, a missing participant is added.
    pub(super) fn overlay(
        &self,
        session_id: SessionId,
        now_ms: i64,
        now: Instant,
        locations: &mut Vec<(UserId, Location)>,
    ) {
        self.with(|inner| {
            let Some(puts) = inner.sessions.get(&session_id) else { return };
            let fresh =
                puts.iter().filter(|(_, put)| now.duration_since(put.put_at) < KEEP && put.until_ms > now_ms);
            for (user_id, put) in fresh {
                match locations.iter_mut().find(|(stored_for, _)| stored_for == user_id) {
                    Some((_, stored)) if stored.timestamp >= put.location.timestamp => {}
                    Some((_, stored)) => *stored = put.location,
                    None => locations.push((*user_id, put.location)),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, Utc};

    #[test]
    fn reads_see_what_redis_may_not_have_yet_newest_fix_first() {
        let recent = Recent::default();
        let (session, ann, bob) = (SessionId::new_random(), UserId::new_random(), UserId::new_random());
        let t0 = Instant::now();
        let fix = Utc::now();
        let at = |lat: f64, ago_s: i64| Location::at(lat, 0.0, 5.0, fix - TimeDelta::seconds(ago_s));
        recent.put(session, ann, at(1.0, 2), i64::MAX, t0);
        recent.put(session, ann, at(9.0, 20), i64::MAX, t0); // an older fix, sent late
        recent.put(session, bob, at(2.0, 0), 1_000, t0); // expires at 1,000 ms

        // Redis has Ann's older position and someone else's.
        let cat = UserId::new_random();
        let mut read = vec![(ann, at(0.5, 30)), (cat, at(3.0, 0))];
        recent.overlay(session, 0, t0, &mut read);
        let mut lats: Vec<(UserId, f64)> = read.iter().map(|(u, l)| (*u, l.lat)).collect();
        lats.sort_by_key(|(u, _)| *u);
        let mut expected = vec![(ann, 1.0), (cat, 3.0), (bob, 2.0)];
        expected.sort_by_key(|(u, _)| *u);
        assert_eq!(lats, expected);

        // Redis caught up with a newer one: it stands. Bob's expired.
        let mut read = vec![(ann, at(5.0, 0))];
        recent.overlay(session, 1_000, t0, &mut read);
        assert_eq!(read.iter().map(|(_, l)| l.lat).collect::<Vec<_>>(), [5.0]);

        // Forgotten when the participant leaves, and after KEEP.
        recent.remove(session, ann);
        let mut read = Vec::new();
        recent.overlay(session, 0, t0, &mut read);
        assert_eq!(read.len(), 1, "only Bob");
        recent.overlay(session, 0, t0 + KEEP, &mut Vec::new());
        let mut read = Vec::new();
        recent.overlay(session, 0, t0 + KEEP, &mut read);
        assert!(read.is_empty());
        recent.put(SessionId::new_random(), ann, at(1.0, 0), i64::MAX, t0 + KEEP);
        assert_eq!(recent.with(|inner| inner.sessions.len()), 1, "pruned");
        recent.clear(session);
    }
}
