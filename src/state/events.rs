//! What a session hears: joins, leaves and ends, positions, presence, topics and direct
//! messages, each serialized once and handed to the hub (and through it the bus).

use std::time::Duration;

use tungstenite::Utf8Bytes;

use super::AppState;
use crate::domain::{Location, Participant, SessionId, UserId};
use crate::message::{Channel, Envelope, HubMessage, close_code};
use crate::presence::{PresenceMeta, presence_map};
use crate::protocol::native::{LocationBroadcast, ServerMessage};
use crate::store::StoreError;

/// Why a session ended, as `session_ended.reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    EndedByCreator,
    Expired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndedByCreator => "ended_by_creator",
            Self::Expired => "expired",
        }
    }
}

impl AppState {
    pub(super) fn publish(&self, session_id: SessionId, message: HubMessage) {
        self.hub.publish(Envelope { channel: Channel::Session(session_id), message });
    }

    /// Announces a new participant to everyone connected to the session.
    pub fn announce_join(&self, participant: &Participant) {
        let frame = ServerMessage::ParticipantJoined {
            user_id: participant.user_id,
            display_name: &participant.display_name,
            avatar_color: &participant.avatar_color,
        }
        .to_frame();
        self.publish(participant.session_id, HubMessage::Event { frame });
    }

    /// Marks a participant inactive, tells the others, closes their sockets and forgets
    /// their location. Returns whether they were active.
    pub async fn remove_participant(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<bool, StoreError> {
        let was_active = self.store.leave(session_id, user_id, self.clock.now()).await?;
        if was_active {
            let frame = ServerMessage::ParticipantLeft { user_id }.to_frame();
            self.publish(session_id, HubMessage::Event { frame });
            self.publish(
                session_id,
                HubMessage::Disconnect {
                    user_id,
                    code: close_code::NORMAL,
                    reason: Utf8Bytes::from_static("left the session"),
                },
            );
            if let Err(err) = self.bus.remove_location(session_id, user_id).await {
                tracing::warn!(error = %err, "could not forget a departed participant's location");
            }
        }
        Ok(was_active)
    }

    /// Tells everyone connected that the session is over, closes their sockets and
    /// forgets its locations. The caller has already ended it in the store.
    pub async fn announce_end(&self, session_id: SessionId, reason: EndReason) {
        let frame = ServerMessage::SessionEnded { reason: reason.as_str() }.to_frame();
        self.publish(session_id, HubMessage::End { frame });
        if let Err(err) = self.bus.clear_session(session_id).await {
            tracing::warn!(error = %err, "could not clear an ended session's locations");
        }
    }

    /// Sends a direct message to every connection of `to`, on any instance, if `to` is an
    /// active participant of the session. Returns whether they are.
    pub async fn send_direct(
        &self,
        session_id: SessionId,
        from: UserId,
        to: UserId,
        payload: &serde_json::value::RawValue,
    ) -> Result<bool, StoreError> {
        if !self.store.participant(session_id, to).await?.is_some_and(|p| p.is_active) {
            return Ok(false);
        }
        let frame = ServerMessage::DirectMessage { from_user: from, payload }.to_frame();
        self.publish(session_id, HubMessage::Direct { to, frame });
        Ok(true)
    }

    /// A connection is now present: record it and tell the session (the connection itself
    /// included, as Phoenix does).
    pub fn presence_join(&self, session_id: SessionId, meta: &PresenceMeta) {
        self.bus.presence_join(Channel::Session(session_id), meta);
        self.announce_presence(session_id, std::slice::from_ref(meta), &[]);
    }

    /// A connection closed: forget it and tell the session.
    pub fn presence_leave(&self, session_id: SessionId, meta: &PresenceMeta) {
        self.bus.presence_leave(Channel::Session(session_id), meta);
        self.announce_presence(session_id, &[], std::slice::from_ref(meta));
    }

    /// A connection's meta changed (paused or resumed): the new one joins, the old one
    /// leaves, in one diff, as Phoenix Presence sends an update.
    pub fn presence_update(&self, session_id: SessionId, old: &PresenceMeta, new: &PresenceMeta) {
        self.bus.presence_join(Channel::Session(session_id), new);
        self.bus.presence_leave(Channel::Session(session_id), old);
        self.announce_presence(session_id, std::slice::from_ref(new), std::slice::from_ref(old));
    }

    /// Publishes a `presence_diff`.
    pub fn announce_presence(&self, session_id: SessionId, joins: &[PresenceMeta], leaves: &[PresenceMeta]) {
        let (joins, leaves) = (presence_map(joins), presence_map(leaves));
        let frame = ServerMessage::PresenceDiff { joins: &joins, leaves: &leaves }.to_frame();
        self.publish(session_id, HubMessage::Presence { frame });
    }

    /// Publishes on a topic of the session; `topic` is the full name the message carries.
    pub fn publish_topic(
        &self,
        session_id: SessionId,
        from: UserId,
        target: &crate::domain::topic::Topic,
        topic: &str,
        payload: &serde_json::value::RawValue,
    ) {
        use crate::domain::topic::Topic;
        let frame = ServerMessage::Broadcast { topic, from_user: from, payload }.to_frame();
        let message = match target {
            Topic::Session => HubMessage::Event { frame },
            Topic::User => HubMessage::Direct { to: from, frame },
            Topic::Named(name) => HubMessage::Topic { topic: name.clone(), frame },
        };
        self.publish(session_id, message);
    }

    /// Nothing here waits on SQL.
    /// Forgets a participant's live position everywhere (they paused sharing): the cache
    /// snapshots read, and every connected client's view (`location_cleared`).
    pub async fn clear_location(&self, session_id: SessionId, user_id: UserId) {
        if let Err(err) = self.bus.remove_location(session_id, user_id).await {
            tracing::warn!(error = %err, "could not forget a paused participant's location");
        }
        let frame = ServerMessage::LocationCleared { user_id }.to_frame();
        self.publish(session_id, HubMessage::Event { frame });
    }

    /// Keeps a participant's `share_settings` (the fields given) for their tracker apps,
    /// which follow the latest from any socket, also once it has closed.
    pub async fn keep_share_settings(
        &self,
        session_id: SessionId,
        user_id: UserId,
        approximate: Option<bool>,
        paused: Option<bool>,
    ) -> Result<(), crate::store::StoreError> {
        if approximate.is_none() && paused.is_none() {
            return Ok(());
        }
        self.store.set_share_settings(session_id, user_id, approximate, paused).await
    }

    /// Positions that arrive late or in bulk (the HTTP push, tracker apps' offline queues):
    /// the newest of `fixes` younger than LOCATION_TTL_SECONDS goes live, as a socket's
    /// `location_update` does, if it is newer than the live one; fixes are ordered by their
    /// own time, so an old fix sent late never replaces a newer position. Returns the one
    /// that went live, if any, and the live position's time after this.
    pub async fn share_newest(
        &self,
        session_id: SessionId,
        user_id: UserId,
        fixes: &[Location],
    ) -> (Option<Location>, Option<chrono::DateTime<chrono::Utc>>) {
        let now = self.clock.now();
        let ttl = chrono::Duration::from_std(self.config.location_ttl()).unwrap_or(chrono::Duration::MAX);
        let oldest_live = now.checked_sub_signed(ttl).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let newest = fixes.iter().filter(|p| p.timestamp >= oldest_live).max_by_key(|p| p.timestamp).copied();
        let Some(newest) = newest else {
            return (None, self.live_time(session_id, user_id).await);
        };
        let current = self.live_time(session_id, user_id).await;
        if current.is_some_and(|live| newest.timestamp <= live) {
            return (None, current);
        }
        self.share_location(session_id, user_id, newest).await;
        (Some(newest), Some(newest.timestamp))
    }

    /// When the participant's live position was taken, as the location cache has it.
    async fn live_time(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.bus
            .locations(session_id)
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|(user, _)| *user == user_id))
            .map(|(_, location)| location.timestamp)
    }

    /// The hot path: remember the location, hand it to every subscriber, note activity.
    pub async fn share_location(&self, session_id: SessionId, user_id: UserId, location: Location) {
        // Cached for what is left of its TTL: a point taken 20 s ago is fresh for 10 s more.
        let age = (self.clock.now() - location.timestamp).to_std().unwrap_or_default();
        let ttl = self.config.location_ttl().saturating_sub(age).max(Duration::from_secs(1));
        if let Err(err) = self.bus.put_location(session_id, user_id, &location, ttl).await {
            // Live delivery matters more than the cache that late joiners read.
            tracing::warn!(error = %err, "could not cache a location; broadcasting anyway");
        }
        let frame = ServerMessage::LocationBroadcast(LocationBroadcast { user_id, location }).to_frame();
        self.publish(session_id, HubMessage::Location { from: user_id, location, frame });
        self.activity.touch(session_id, user_id, self.clock.now());
        self.meetups.observe(session_id, user_id, &location);
    }
}
