//! What a client holds about its session, loaded fresh: on connect (or channel join) and
//! whenever the bus may have lost messages. Each wire protocol renders it its own way.

use crate::chat;
use crate::domain::{self, ChatMessage, Participant, Session, UserId};
use crate::message::Channel;
use crate::presence::{PresenceMap, PresenceMeta, presence_map};
use crate::state::AppState;
use crate::store::StoreError;

use crate::protocol::native::{LocationBroadcast, SessionState};

pub(crate) struct Snapshot {
    session: Session,
    user_id: UserId,
    /// Active participants only.
    participants: Vec<Participant>,
    locations: Vec<LocationBroadcast>,
    messages: Vec<ChatMessage>,
    presence: Vec<PresenceMeta>,
}

pub(crate) enum Loaded {
    Ready(Snapshot),
    /// The session ended (a missed end closes the socket instead).
    Ended,
    /// The participant left or was removed.
    Left,
    Failed(StoreError),
}

impl Snapshot {
    pub fn session_state(&self) -> SessionState<'_> {
        SessionState {
            session_id: self.session.id,
            name: self.session.name.as_deref(),
            expires_at: self.session.expires_at,
            user_id: self.user_id,
            participants: &self.participants,
            locations: self.locations.clone(),
            meeting_point: self.session.meeting_point.as_deref(),
            meeting_point_by: self.session.meeting_point_by,
            arrived: match self.session.meeting_point {
                Some(_) => {
                    self.participants.iter().filter(|p| p.is_active && p.arrived).map(|p| p.user_id).collect()
                }
                None => Vec::new(),
            },
            messages: &self.messages,
        }
    }

    /// Adds a connection's own entry if the read missed it (it was announced after).
    pub fn include_presence(&mut self, meta: &PresenceMeta) {
        if !self.presence.iter().any(|m| m.phx_ref == meta.phx_ref) {
            self.presence.push(meta.clone());
        }
    }

    pub fn presence(&self) -> PresenceMap<'_> {
        presence_map(&self.presence)
    }
}

/// Re-reads the session and the participant from the store, so a removal or an end that
/// was missed is noticed.
pub(crate) async fn load(state: &AppState, session_id: domain::SessionId, me: &Participant) -> Loaded {
    // Shared with the other sockets of the session loading theirs at the same moment.
    let reads = &state.reads;
    let (current, participants, messages) = match tokio::try_join!(
        reads.session(session_id),
        reads.participants(session_id),
        reads.history(session_id, chat::HISTORY),
    ) {
        Ok(found) => found,
        Err(err) => return Loaded::Failed(err),
    };
    let session = match current.as_ref() {
        Some(current) if current.is_live(state.clock.now()) => current.clone(),
        _ => return Loaded::Ended,
    };
    let active: Vec<Participant> = participants.iter().filter(|p| p.is_active).cloned().collect();
    let messages = messages.to_vec();
    if !active.iter().any(|p| p.user_id == me.user_id) {
        return Loaded::Left;
    }
    // Without the location cache the snapshot still has everyone; positions follow live.
    let locations = state.bus.locations(session_id).await.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "snapshot without locations: the bus is unavailable");
        Vec::new()
    });
    let mut locations: Vec<LocationBroadcast> = locations
        .into_iter()
        .filter(|(user_id, _)| active.iter().any(|p| p.user_id == *user_id))
        .map(|(user_id, location)| LocationBroadcast { user_id, location })
        .collect();
    // A stable order: the same state renders the same bytes (ETags of GET .../state).
    locations.sort_by_key(|l| l.user_id);
    let presence = state.bus.presence(Channel::Session(session_id)).await;
    Loaded::Ready(Snapshot {
        session,
        user_id: me.user_id,
        participants: active,
        locations,
        messages,
        presence,
    })
}
