//! The vocabulary every layer speaks: serialized frames and the wires they are written
//! in, close codes and reasons, channels (a session, a local room), and the messages the
//! hub fans out and the bus carries between instances. Depends on nothing in the crate
//! but the domain's ids.

use std::sync::Arc;

use tungstenite::Utf8Bytes;

use crate::domain::{Location, RoomId, SessionId, UserId};

/// A serialized WebSocket text frame, cheap to clone.
pub type Frame = Utf8Bytes;

/// How a connection's frames are written: convoy's own JSON (`/ws`), or the Phoenix
/// Channels serializers (`/socket/websocket`, V1 objects or V2 arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Native,
    PhoenixV1,
    PhoenixV2,
}

/// Close codes convoy uses (RFC 6455, section 7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Application-defined (4000-4999), after HTTP 408: the client stopped answering.
    pub const HEARTBEAT_TIMEOUT: u16 = 4408;
}

/// What a connection listens to: its session (always) and at most one local chat room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Session(SessionId),
    Room(RoomId),
}

impl Channel {
    /// `session:{id}` or `room:{id}`: how the bus names it.
    pub fn name(&self) -> String {
        match self {
            Channel::Session(id) => format!("session:{id}"),
            Channel::Room(id) => format!("room:{id}"),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        if let Some(id) = name.strip_prefix("session:") {
            return id.parse().ok().map(Channel::Session);
        }
        name.strip_prefix("room:").and_then(|id| id.parse().ok()).map(Channel::Room)
    }
}

/// A message for the subscribers of one channel, on this instance or (through the bus) any.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub channel: Channel,
    pub message: HubMessage,
}

#[derive(Debug, Clone)]
pub enum HubMessage {
    /// A participant's new position (`location`, already encoded for clients in `frame`):
    /// state, so a pending older one may be replaced. Not sent back to the sender's own
    /// connections; viewers' `view_settings` are decided on `location`.
    Location { from: UserId, location: Location, frame: Frame },
    /// An event every subscriber must get, in order (joins, leaves, ...).
    Event { frame: Frame },
    /// For one user's connections only (a direct message, or their own user topic).
    Direct { to: UserId, frame: Frame },
    /// For the connections subscribed to one of the session's named topics.
    Topic { topic: Arc<str>, frame: Frame },
    /// A `presence_diff`: an event, but a burst of them is replaced by a resync.
    Presence { frame: Frame },
    /// Close one user's connections: they left or were removed.
    Disconnect { user_id: UserId, code: u16, reason: Frame },
    /// The session is over: every subscriber gets `frame`, then its socket closes.
    End { frame: Frame },
    /// Messages for this session may have been lost between instances: every subscriber
    /// rebuilds its snapshot from the store.
    Resync,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: Frame,
}

impl CloseReason {
    pub fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason: Frame::from_static(reason) }
    }
}
