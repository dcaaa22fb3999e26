//! Chat: a session's own chat and location-based local rooms, both carried by the hub like
//! everything else. A message is stored (committed) before anyone sees it, so the sender's
//! own `new_message` is its acknowledgement. Who is in a local room is presence on the
//! room's channel, so counts and leaves work across instances exactly as sessions do.

use std::collections::HashSet;
use std::sync::Arc;

use crate::domain::{ChatContent, ChatMessage, ChatRoom, Participant, RoomId};
use crate::hub::{Outbox, Subscription};
use crate::message::{Channel, Envelope, HubMessage};
use crate::presence::PresenceMeta;
use crate::protocol::native::ServerMessage;
use crate::state::AppState;
use crate::store::{NewChatMessage, StoreError};

/// Messages a snapshot or a room join carries.
pub const HISTORY: u32 = 50;

/// A connection's place in one local room; leave it with `AppState::exit_room`.
pub struct RoomMembership {
    pub room: RoomId,
    _subscription: Subscription,
}

fn channel_of(room: ChatRoom) -> Channel {
    match room {
        ChatRoom::Session(id) => Channel::Session(id),
        ChatRoom::Local(id) => Channel::Room(id),
    }
}

/// Distinct users among presence metas (one user may have several sockets in a room).
pub fn user_count(metas: &[PresenceMeta]) -> usize {
    metas.iter().map(|m| m.user_id).collect::<HashSet<_>>().len()
}

impl AppState {
    /// Stores a message and hands it to everyone in the room, the author's sockets too.
    pub async fn post_message(
        &self,
        room: ChatRoom,
        author: &Participant,
        content: &ChatContent,
    ) -> Result<ChatMessage, StoreError> {
        let new = NewChatMessage {
            room,
            user_id: author.user_id,
            display_name: author.display_name.clone(),
            avatar_color: author.avatar_color.clone(),
            content: content.as_str().to_owned(),
            created_at: self.clock.now(),
        };
        let message = self.store.add_message(&new, self.config.max_chat_messages_per_room).await?;
        let frame = ServerMessage::NewMessage(&message).to_frame();
        self.hub.publish(Envelope { channel: channel_of(room), message: HubMessage::Event { frame } });
        self.metrics.chat_messages.increment(1);
        if let ChatRoom::Session(session_id) = room {
            self.activity.touch(session_id, author.user_id, new.created_at);
        }
        Ok(message)
    }

    /// How many users are in a local room now, on every instance.
    pub async fn room_user_count(&self, room: RoomId) -> usize {
        user_count(&self.bus.presence(Channel::Room(room)).await)
    }

    /// Puts a connection in a local room: answers `room_joined` and `message_history`,
    /// and tells the others if this is the user's first socket there. A message posted
    /// while this runs may arrive live before the history, or in both: clients merge by id.
    pub async fn enter_room(
        &self,
        room: RoomId,
        me: &Participant,
        presence: &PresenceMeta,
        outbox: &Arc<Outbox>,
    ) -> RoomMembership {
        let channel = Channel::Room(room);
        self.bus.presence_join(channel, presence);
        let first = match self.bus.room_member(room, me.user_id, 1).await {
            Ok(count) => count == 1,
            Err(err) => {
                tracing::warn!(error = %err, "room membership not counted; announcing the join");
                true
            }
        };
        if first {
            // Published before this socket is on the channel: it goes to the others only.
            let frame = ServerMessage::UserJoined {
                room_id: room,
                user_id: me.user_id,
                display_name: &me.display_name,
                avatar_color: &me.avatar_color,
            }
            .to_frame();
            self.hub.publish(Envelope { channel, message: HubMessage::Event { frame } });
        }
        let subscription = self.hub.subscribe(channel, me.user_id, outbox.clone()).await;
        self.describe_room(room, outbox).await;
        RoomMembership { room, _subscription: subscription }
    }

    /// `room_joined` (with the current count) and `message_history` for a socket in the
    /// room: on entering, on entering the same room again, and after a resync.
    pub async fn describe_room(&self, room: RoomId, outbox: &Outbox) {
        let name = room.name();
        let user_count = self.room_user_count(room).await;
        outbox.push_event(ServerMessage::RoomJoined { room_id: room, name: &name, user_count }.to_frame());
        match self.store.messages(ChatRoom::Local(room), None, HISTORY).await {
            Ok(messages) => outbox
                .push_event(ServerMessage::MessageHistory { room_id: room, messages: &messages }.to_frame()),
            Err(err) => {
                tracing::warn!(error = %err, "room history unavailable");
                let message = "the room's history could not be loaded; live messages still arrive";
                outbox.push_event(
                    ServerMessage::Error { code: "unavailable", message, topic: None }.to_frame(),
                );
            }
        }
    }

    /// Takes a connection out of its local room and tells the others if that was the
    /// user's last socket there.
    pub async fn exit_room(&self, membership: RoomMembership, presence: &PresenceMeta) {
        let room = membership.room;
        drop(membership); // off the channel first: the user's own socket hears nothing
        self.bus.presence_leave(Channel::Room(room), presence);
        self.announce_room_leaves(room, std::slice::from_ref(presence)).await;
    }

    /// Counts each of `leaves` (sockets that left the room, or were reaped with a stopped
    /// instance) out of the room, and announces `user_left` for users with none left.
    pub async fn announce_room_leaves(&self, room: RoomId, leaves: &[PresenceMeta]) {
        for meta in leaves {
            match self.bus.room_member(room, meta.user_id, -1).await {
                Ok(count) if count > 0 => continue,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "room membership not counted; announcing the leave");
                }
            }
            let frame = ServerMessage::UserLeft { room_id: room, user_id: meta.user_id }.to_frame();
            self.hub.publish(Envelope { channel: Channel::Room(room), message: HubMessage::Event { frame } });
        }
    }
}
