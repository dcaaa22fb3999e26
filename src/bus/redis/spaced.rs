//! The location cache's writes, spaced. A session's cached locations are one Redis hash
//! (`locations:{session_id}`, a field per participant), written at most once a SPACING per
//! session: the first update after a quiet SPACING is written at once (a snapshot soon after
//! a join sees it); the updates that follow within it are held, the newest per participant,
//! and written together when it is up. One HSET of a session's fields a second, where a
//! SET per update was before: a snapshot may see a position up to SPACING old, and the
//! live broadcasts that follow it bring the rest. Of two values held for one participant
//! the one with the newer fix wins, whichever came last.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::domain::{SessionId, UserId};

pub(super) const SPACING: Duration = Duration::from_secs(1);

/// Cached values to write, `(user, value)`, for one session.
pub(super) type Fields = Vec<(UserId, String)>;

#[derive(Default)]
pub(super) struct SpacedWrites {
    sessions: HashMap<SessionId, Session>,
    /// When sessions with held values are due, earliest first. An entry whose session was
    /// written or forgotten since is skipped when it comes up.
    due: BinaryHeap<Reverse<(Instant, SessionId)>>,
}

#[derive(Default)]
struct Session {
    written_at: Option<Instant>,
    held: Fields,
    /// The fix time (Unix ms) of each held value, beside `held`.
    fixes: Vec<i64>,
}

impl SpacedWrites {
    /// Holds a participant's value, fixed at `fix_ms`, unless one with a newer fix is held.
    pub(super) fn put(
        &mut self,
        session_id: SessionId,
        user_id: UserId,
        fix_ms: i64,
        value: String,
        now: Instant,
    ) {
        let session = self.sessions.entry(session_id).or_default();
        match session.held.iter().position(|(user, _)| *user == user_id) {
            Some(at) => {
                if fix_ms >= session.fixes[at] {
                    (session.held[at].1, session.fixes[at]) = (value, fix_ms);
                }
            }
            None => {
                session.held.push((user_id, value));
                session.fixes.push(fix_ms);
                if session.held.len() == 1 {
                    let due = session.written_at.map_or(now, |at| (at + SPACING).max(now));
                    self.due.push(Reverse((due, session_id)));
                }
            }
        }
    }

    /// The participant left: nothing of theirs is written any more.
    pub(super) fn forget_user(&mut self, session_id: SessionId, user_id: UserId) {
        if let Some(session) = self.sessions.get_mut(&session_id)
            && let Some(at) = session.held.iter().position(|(user, _)| *user == user_id)
        {
            session.held.remove(at);
            session.fixes.remove(at);
        }
    }

    /// The session ended.
    pub(super) fn forget_session(&mut self, session_id: SessionId) {
        self.sessions.remove(&session_id);
    }

    /// When the next held values are due, if any are held.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the held values that are due at `now` (all of them when `everything`), each
    /// session's counted as written now.
    pub(super) fn take_due(&mut self, now: Instant, everything: bool) -> Vec<(SessionId, Fields)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, session_id))) = self.due.peek().copied() {
            if at > now && !everything {
                break;
            }
            self.due.pop();
            if let Some(session) = self.sessions.get_mut(&session_id)
                && !session.held.is_empty()
            {
                session.written_at = Some(now);
                session.fixes.clear();
                out.push((session_id, std::mem::take(&mut session.held)));
            }
        }
        out
    }

    /// Forgets sessions with nothing held that were last written longer than SPACING ago
    /// (their next value is written at once anyway).
    pub(super) fn prune(&mut self, now: Instant) {
        self.sessions.retain(|_, session| {
            !session.held.is_empty() || session.written_at.is_some_and(|at| now.duration_since(at) < SPACING)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(taken: &[(SessionId, Fields)]) -> Vec<(SessionId, Vec<(UserId, &str)>)> {
        taken.iter().map(|(s, fields)| (*s, fields.iter().map(|(u, v)| (*u, v.as_str())).collect())).collect()
    }

    #[test]
    fn the_first_update_goes_at_once_the_rest_of_the_second_together() {
        let mut writes = SpacedWrites::default();
        let t0 = Instant::now();
        let (session, ann, bob) = (SessionId::new_random(), UserId::new_random(), UserId::new_random());
        writes.put(session, ann, 0, "a1".into(), t0);
        assert_eq!(users(&writes.take_due(t0, false)), [(session, vec![(ann, "a1")])]);

        let t1 = t0 + Duration::from_millis(300);
        writes.put(session, bob, 0, "b1".into(), t1);
        writes.put(session, ann, 0, "a2".into(), t1);
        writes.put(session, bob, 0, "b2".into(), t1 + Duration::from_millis(10));
        assert!(writes.take_due(t1 + Duration::from_millis(10), false).is_empty(), "held within the second");
        assert_eq!(writes.next_due(), Some(t0 + SPACING));
        let t2 = t0 + SPACING;
        assert_eq!(
            users(&writes.take_due(t2, false)),
            [(session, vec![(bob, "b2"), (ann, "a2")])],
            "newest each"
        );
        assert_eq!(writes.next_due(), None);

        // Quiet for a second: the next one goes at once again.
        writes.put(session, ann, 0, "a3".into(), t2 + SPACING);
        assert_eq!(users(&writes.take_due(t2 + SPACING, false)), [(session, vec![(ann, "a3")])]);
    }

    #[test]
    fn an_older_fix_arriving_later_does_not_replace_a_newer_one() {
        let mut writes = SpacedWrites::default();
        let t0 = Instant::now();
        let (session, ann) = (SessionId::new_random(), UserId::new_random());
        writes.put(session, ann, 100, "first".into(), t0);
        writes.take_due(t0, false);
        writes.put(session, ann, 300, "newest".into(), t0);
        writes.put(session, ann, 200, "buffered".into(), t0); // from an offline queue
        assert_eq!(users(&writes.take_due(t0 + SPACING, false)), [(session, vec![(ann, "newest")])]);
    }

    #[test]
    fn sessions_are_spaced_apart_and_a_flush_takes_everything() {
        let mut writes = SpacedWrites::default();
        let t0 = Instant::now();
        let (one, two, ann) = (SessionId::new_random(), SessionId::new_random(), UserId::new_random());
        writes.put(one, ann, 0, "1".into(), t0);
        writes.take_due(t0, false);
        writes.put(one, ann, 0, "2".into(), t0);
        writes.put(two, ann, 0, "x".into(), t0 + Duration::from_millis(500));
        assert_eq!(
            users(&writes.take_due(t0 + Duration::from_millis(500), false)),
            [(two, vec![(ann, "x")])]
        );
        assert_eq!(users(&writes.take_due(t0 + Duration::from_millis(501), true)), [(one, vec![(ann, "2")])]);
    }

    #[test]
    fn what_was_forgotten_is_not_written() {
        let mut writes = SpacedWrites::default();
        let t0 = Instant::now();
        let (session, ann, bob) = (SessionId::new_random(), UserId::new_random(), UserId::new_random());
        writes.put(session, ann, 0, "a".into(), t0);
        writes.put(session, bob, 0, "b".into(), t0);
        writes.forget_user(session, ann);
        assert_eq!(users(&writes.take_due(t0, false)), [(session, vec![(bob, "b")])]);
        writes.put(session, bob, 0, "b2".into(), t0);
        writes.forget_session(session);
        assert!(writes.take_due(t0 + SPACING, true).is_empty());
        assert_eq!(writes.next_due(), None);
    }

    #[test]
    fn quiet_sessions_are_pruned_held_ones_kept() {
        let mut writes = SpacedWrites::default();
        let t0 = Instant::now();
        let (quiet, busy, ann) = (SessionId::new_random(), SessionId::new_random(), UserId::new_random());
        writes.put(quiet, ann, 0, "q".into(), t0);
        writes.put(busy, ann, 0, "b".into(), t0);
        writes.take_due(t0, false);
        writes.put(busy, ann, 0, "b2".into(), t0 + Duration::from_millis(100));
        writes.prune(t0 + SPACING);
        assert_eq!(writes.sessions.len(), 1);
        assert!(writes.sessions.contains_key(&busy));
    }
}
