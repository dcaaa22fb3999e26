//! The in-process bus for a single instance: there are no other instances to publish to,
//! and the location cache is a map in memory with expiry checked on read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::{Bus, BusError, LocationCache, Messaging, PresenceRegistry};
use crate::clock::Clock;
use crate::domain::{Location, RoomId, SessionId, UserId};
use crate::message::{Channel, Envelope};
use crate::presence::{LocalPresence, PresenceMeta};

/// Session -> participant -> (latest location, when it expires).
type Cache = HashMap<SessionId, HashMap<UserId, (Location, Instant)>>;

pub struct LocalBus {
    locations: Mutex<Cache>,
    presence: LocalPresence,
    room_members: Mutex<HashMap<(RoomId, UserId), i64>>,
    /// What cached locations expire by.
    clock: Clock,
}

impl LocalBus {
    pub fn new(clock: Clock) -> Self {
        Self {
            locations: Mutex::default(),
            presence: LocalPresence::default(),
            room_members: Mutex::default(),
            clock,
        }
    }

    fn with_locations<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        let mut guard = self.locations.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl Messaging for LocalBus {
    // One instance: everything was already delivered locally by the hub.
    fn publish(&self, _envelope: &Envelope) {}

    fn subscribe(&self, _channel: Channel) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    fn unsubscribe(&self, _channel: Channel) {}

    // One instance: nobody else can stop without this one knowing.
    async fn flush(&self, _within: Duration) {}
}

#[async_trait]
impl LocationCache for LocalBus {
    async fn put_location(
        &self,
        session_id: SessionId,
        user_id: UserId,
        location: &Location,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let expires = self.clock.instant() + ttl;
        self.with_locations(|map| map.entry(session_id).or_default().insert(user_id, (*location, expires)));
        Ok(())
    }

    async fn locations(&self, session_id: SessionId) -> Result<Vec<(UserId, Location)>, BusError> {
        let now = self.clock.instant();
        Ok(self.with_locations(|map| {
            map.get(&session_id)
                .map(|users| {
                    users
                        .iter()
                        .filter(|(_, (_, expires))| *expires > now)
                        .map(|(user, (location, _))| (*user, *location))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    async fn remove_location(&self, session_id: SessionId, user_id: UserId) -> Result<(), BusError> {
        self.with_locations(|map| {
            if let Some(users) = map.get_mut(&session_id) {
                users.remove(&user_id);
                if users.is_empty() {
                    map.remove(&session_id);
                }
            }
        });
        Ok(())
    }

    async fn clear_session(&self, session_id: SessionId) -> Result<(), BusError> {
        self.with_locations(|map| map.remove(&session_id));
        Ok(())
    }

    async fn purge_expired(&self) -> usize {
        let now = self.clock.instant();
        self.with_locations(|map| {
            let mut purged = 0;
            map.retain(|_, users| {
                let before = users.len();
                users.retain(|_, (_, expires)| *expires > now);
                purged += before - users.len();
                !users.is_empty()
            });
            purged
        })
    }

    // This instance's activity is flushed to the store before the sweeper asks.
    async fn last_activity(
        &self,
        _sessions: &[SessionId],
    ) -> Result<Vec<(SessionId, DateTime<Utc>)>, BusError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl PresenceRegistry for LocalBus {
    fn presence_join(&self, channel: Channel, meta: &PresenceMeta) {
        self.presence.join(channel, meta);
    }

    fn presence_leave(&self, channel: Channel, meta: &PresenceMeta) {
        self.presence.leave(channel, &meta.phx_ref);
    }

    async fn presence(&self, channel: Channel) -> Vec<PresenceMeta> {
        self.presence.list(channel)
    }

    async fn room_member(&self, room: RoomId, user_id: UserId, delta: i64) -> Result<i64, BusError> {
        let mut members = self.room_members.lock().unwrap_or_else(|e| e.into_inner());
        let count = members.entry((room, user_id)).or_default();
        *count += delta;
        let now = *count;
        if now <= 0 {
            members.remove(&(room, user_id));
        }
        Ok(now)
    }

    async fn reap_presence(&self) -> Result<Vec<(Channel, PresenceMeta)>, BusError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Bus for LocalBus {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Location {
        Location::at(1.0, 2.0, 3.0, chrono::Utc::now())
    }

    #[tokio::test]
    async fn locations_expire_after_their_ttl() {
        let bus = LocalBus::new(Clock::system());
        let (session, user) = (SessionId::new_random(), UserId::new_random());
        bus.put_location(session, user, &here(), Duration::from_millis(30)).await.unwrap();
        assert_eq!(bus.locations(session).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(bus.locations(session).await.unwrap().is_empty());
        assert_eq!(bus.purge_expired().await, 1);
        assert_eq!(bus.purge_expired().await, 0);
    }

    #[tokio::test]
    async fn a_newer_location_replaces_the_older_one() {
        let bus = LocalBus::new(Clock::system());
        let (session, user) = (SessionId::new_random(), UserId::new_random());
        bus.put_location(session, user, &here(), Duration::from_secs(30)).await.unwrap();
        let moved = Location { lat: 5.0, ..here() };
        bus.put_location(session, user, &moved, Duration::from_secs(30)).await.unwrap();
        assert_eq!(bus.locations(session).await.unwrap(), vec![(user, moved)]);
        bus.remove_location(session, user).await.unwrap();
        assert!(bus.locations(session).await.unwrap().is_empty());
    }
}
