//! Who else listens to a session. An instance publishes a session's positions only while
//! another instance holds sockets in it: with session-affine routing (deploy/nginx.conf)
//! most sessions live on one instance, and their positions then cost Redis only the
//! location cache's write, once a second per session.
//!
//! The roll call, on the session's channel: an instance whose subscription is confirmed
//! (its first socket there, or again after a reconnect) says `Hello`; every instance
//! subscribed there answers `Here`; one whose last socket there left says `Bye`. Each keeps,
//! for every session it is subscribed to, the other instances it heard from. While it
//! knows of none the session is quiet: positions are not published, the newest of each
//! participant is held instead, and the moment another instance is heard from, what was
//! held is published, so the newcomer's sockets (whose snapshot read the location cache,
//! which may be a second behind) miss nothing.
//!
//! Why nothing is missed: a `Hello` is published after its sender's subscription was
//! confirmed, so whatever an instance publishes after hearing it reaches the newcomer; of
//! two instances subscribing at the same moment, the later `Hello` is published after both
//! subscriptions, so at least one of them hears the other and answers. A roll-call message
//! lost with Redis is said again: the prober follows each Resync it sends to a session
//! this instance listens to with a `Hello`, every subscription confirmed again after a
//! reconnect says `Hello`, and an instance that was taken for gone says it everywhere it
//! listens. Presence is a second witness: an instance with live presence entries in the
//! session when one of this instance's sockets takes a snapshot counts as listening too
//! (so an instance of a version without the roll call is heard of if it was there first;
//! one that arrives later is not: upgrade all instances together). A session this
//! instance is not subscribed to (a tracker app's position arriving where no socket of the
//! session is) is always published.
//!
//! An instance that stopped without its `Bye` is forgotten by the instance that reaps its
//! presence; the others keep publishing for it until their own last socket in the session
//! leaves: publishes nobody reads, never a position lost.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;

use uuid::Uuid;

use crate::bus::wire::Roll;
use crate::domain::{SessionId, UserId};

/// The sessions this instance is subscribed to and who else is.
#[derive(Default)]
pub(super) struct Listeners {
    sessions: Mutex<HashMap<SessionId, Listening>>,
}

#[derive(Default)]
struct Listening {
    /// The other instances subscribed to the session, as last heard.
    others: Vec<Uuid>,
    /// While `others` is empty: the newest unpublished position of each participant.
    held: HashMap<UserId, Held>,
}

struct Held {
    /// When the position was taken (Unix ms): of two, the newer fix is kept.
    fix_ms: i64,
    /// When it leaves the location cache (Unix ms): it is not published after that.
    until_ms: i64,
    payload: Vec<u8>,
}

impl Listeners {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<SessionId, Listening>) -> T) -> T {
        f(&mut self.sessions.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// This instance subscribes to the session: quiet until another instance is heard from.
    pub(super) fn join(&self, session_id: SessionId) {
        self.with(|sessions| {
            sessions.entry(session_id).or_default();
        });
    }

    /// This instance's last socket in the session left; what it held is not needed (the
    /// location cache has it).
    pub(super) fn leave(&self, session_id: SessionId) {
        self.with(|sessions| sessions.remove(&session_id));
    }

    pub(super) fn is_listening(&self, session_id: SessionId) -> bool {
        self.with(|sessions| sessions.contains_key(&session_id))
    }

    /// The sessions this instance listens to.
    pub(super) fn sessions(&self) -> Vec<SessionId> {
        self.with(|sessions| sessions.keys().copied().collect())
    }

    /// A position: handed to `publish` (under the lock, so a position released at the same
    /// moment cannot overtake it) unless the session is quiet, in which case it is held
    /// until `until_ms()` (unless a newer fix of the same participant is). True if held.
    pub(super) fn publish_or_hold(
        &self,
        session_id: SessionId,
        user_id: UserId,
        fix_ms: i64,
        until_ms: impl FnOnce() -> i64,
        payload: Vec<u8>,
        publish: impl FnOnce(Vec<u8>),
    ) -> bool {
        self.with(|sessions| {
            let Some(session) = sessions.get_mut(&session_id).filter(|s| s.others.is_empty()) else {
                publish(payload);
                return false;
            };
            let held = Held { fix_ms, until_ms: until_ms(), payload };
            match session.held.entry(user_id) {
                Entry::Occupied(mut older) if older.get().fix_ms <= fix_ms => {
                    older.insert(held);
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(place) => {
                    place.insert(held);
                }
            }
            true
        })
    }

    /// `from` said `roll` on the session's channel. Returns whether to answer (a `Hello`
    /// is answered with a `Here`). If the session was quiet, what it held that is still
    /// cached at `now_ms` goes to `release`, before any position published after it (the
    /// lock is held meanwhile).
    pub(super) fn heard(
        &self,
        session_id: SessionId,
        from: Uuid,
        roll: Roll,
        now_ms: i64,
        release: impl FnMut(Vec<u8>),
    ) -> bool {
        self.with(|sessions| {
            let Some(session) = sessions.get_mut(&session_id) else {
                return false; // not subscribed (any more): not ours to answer
            };
            if roll == Roll::Bye {
                session.others.retain(|other| *other != from);
                return false;
            }
            if !session.others.contains(&from) {
                session.others.push(from);
            }
            std::mem::take(&mut session.held)
                .into_values()
                .filter(|held| held.until_ms > now_ms)
                .map(|held| held.payload)
                .for_each(release);
            roll == Roll::Hello
        })
    }

    /// The participant left: nothing of theirs is published later.
    pub(super) fn forget_user(&self, session_id: SessionId, user_id: UserId) {
        self.with(|sessions| {
            if let Some(session) = sessions.get_mut(&session_id) {
                session.held.remove(&user_id);
            }
        });
    }

    /// These instances stopped without saying `Bye`.
    pub(super) fn forget_instances(&self, gone: &[Uuid]) {
        if gone.is_empty() {
            return;
        }
        self.with(|sessions| {
            for session in sessions.values_mut() {
                session.others.retain(|other| !gone.contains(other));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the position was published (not held).
    fn send(listeners: &Listeners, session: SessionId, user: UserId, fix_ms: i64, bytes: &[u8]) -> bool {
        send_until(listeners, session, user, fix_ms, 10_000, bytes)
    }

    fn send_until(
        listeners: &Listeners,
        session: SessionId,
        user: UserId,
        fix_ms: i64,
        until_ms: i64,
        bytes: &[u8],
    ) -> bool {
        let mut published = None;
        let held = listeners.publish_or_hold(
            session,
            user,
            fix_ms,
            || until_ms,
            bytes.to_vec(),
            |p| published = Some(p),
        );
        assert_eq!(held, published.is_none());
        published.is_some_and(|p| p == bytes)
    }

    /// Whether it was answered, and what it released (sorted).
    fn hear(
        listeners: &Listeners,
        session: SessionId,
        from: Uuid,
        roll: Roll,
        now_ms: i64,
    ) -> (bool, Vec<Vec<u8>>) {
        let mut released = Vec::new();
        let answer = listeners.heard(session, from, roll, now_ms, |payload| released.push(payload));
        released.sort();
        (answer, released)
    }

    #[test]
    fn a_session_nobody_else_listens_to_is_quiet_until_someone_says_hello() {
        let listeners = Listeners::default();
        let (session, ann, bob) = (SessionId::new_random(), UserId::new_random(), UserId::new_random());
        let other = Uuid::new_v4();
        // Not subscribed: published.
        assert!(send(&listeners, session, ann, 1, b"a1"));
        listeners.join(session);
        assert!(!send(&listeners, session, ann, 2, b"a2"), "quiet: held");
        assert!(!send(&listeners, session, bob, 2, b"b2"));
        assert!(!send(&listeners, session, ann, 1, b"a-older"), "an older fix does not replace");
        assert!(!send(&listeners, session, ann, 3, b"a3"));

        assert_eq!(
            hear(&listeners, session, other, Roll::Hello, 0),
            (true, vec![b"a3".to_vec(), b"b2".to_vec()])
        );
        assert!(send(&listeners, session, ann, 4, b"a4"), "someone listens: published");
        // Said twice (a Hello again after its reconnect): answered, nothing held to release.
        assert_eq!(hear(&listeners, session, other, Roll::Hello, 0), (true, vec![]));

        assert_eq!(hear(&listeners, session, other, Roll::Bye, 0), (false, vec![]));
        assert!(!send(&listeners, session, ann, 5, b"a5"), "quiet again");
        // A Here (an answer to this instance's Hello) is not answered.
        assert_eq!(hear(&listeners, session, other, Roll::Here, 0), (false, vec![b"a5".to_vec()]));
    }

    #[test]
    fn what_expired_left_or_was_not_subscribed_is_not_released() {
        let listeners = Listeners::default();
        let (session, ann, bob, left) =
            (SessionId::new_random(), UserId::new_random(), UserId::new_random(), UserId::new_random());
        listeners.join(session);
        send_until(&listeners, session, ann, 1, 500, b"stale");
        send_until(&listeners, session, bob, 1, 2_000, b"fresh");
        send_until(&listeners, session, left, 1, 2_000, b"gone");
        listeners.forget_user(session, left);
        assert_eq!(hear(&listeners, session, Uuid::new_v4(), Roll::Here, 1_000).1, vec![b"fresh".to_vec()]);

        // Heard on a session this instance left: ignored, not answered.
        assert_eq!(listeners.sessions(), [session]);
        listeners.leave(session);
        assert_eq!(hear(&listeners, session, Uuid::new_v4(), Roll::Hello, 0), (false, vec![]));
        assert!(!listeners.is_listening(session) && listeners.sessions().is_empty());
    }

    #[test]
    fn an_instance_reaped_as_gone_stops_counting_as_a_listener() {
        let listeners = Listeners::default();
        let (session, ann) = (SessionId::new_random(), UserId::new_random());
        let (gone, alive) = (Uuid::new_v4(), Uuid::new_v4());
        listeners.join(session);
        hear(&listeners, session, gone, Roll::Here, 0);
        listeners.forget_instances(&[gone]);
        assert!(!send(&listeners, session, ann, 1, b"a"));
        hear(&listeners, session, alive, Roll::Here, 0);
        hear(&listeners, session, gone, Roll::Here, 0);
        listeners.forget_instances(&[gone]);
        assert!(send(&listeners, session, ann, 2, b"a2"), "the other one still listens");
    }
}
