//! Chat messages: in a session (its participants' chat) or in a local room (everyone in
//! that cell of the grid).

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::{RoomId, SessionId, UserId, ValidationError};

/// Where a message belongs. On the wire, `room_id` is the session id for session chat and
/// the cell's geohash for a local room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChatRoom {
    Session(SessionId),
    Local(RoomId),
}

impl Serialize for ChatRoom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ChatRoom::Session(id) => id.serialize(serializer),
            ChatRoom::Local(id) => id.serialize(serializer),
        }
    }
}

/// 1 to 2000 characters after trimming; line breaks and tabs allowed, other control
/// characters not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatContent(String);

impl ChatContent {
    pub const MAX_CHARS: usize = 2000;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        super::bounded_text("content", raw, Self::MAX_CHARS, &['\n', '\t', '\r']).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored message, as clients see it: ids are strings, the time is RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChatMessage {
    #[serde(serialize_with = "as_string")]
    #[schema(value_type = String)]
    pub id: i64,
    /// The session id for session chat, the cell's geohash for a local room.
    #[serde(rename = "room_id")]
    #[schema(value_type = String)]
    pub room: ChatRoom,
    pub user_id: UserId,
    pub display_name: String,
    pub avatar_color: String,
    pub content: String,
    #[serde(rename = "timestamp")]
    pub created_at: DateTime<Utc>,
}

fn as_string<S: Serializer>(id: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_trimmed_and_bounded() {
        assert_eq!(ChatContent::parse("  hi there \n").unwrap().as_str(), "hi there");
        assert_eq!(ChatContent::parse("line one\nline two").unwrap().as_str(), "line one\nline two");
        assert!(ChatContent::parse("   ").is_err());
        assert!(ChatContent::parse(&"é".repeat(2000)).is_ok());
        assert!(ChatContent::parse(&"é".repeat(2001)).is_err());
        assert!(ChatContent::parse("bell\u{7}").is_err());
    }

    #[test]
    fn serializes_with_string_ids_and_rfc3339_times() {
        let message = ChatMessage {
            id: 42,
            room: ChatRoom::Local("u4pruy".parse().unwrap()),
            user_id: UserId::new_random(),
            display_name: "Ann".into(),
            avatar_color: "#FF5733".into(),
            content: "hello".into(),
            created_at: DateTime::from_timestamp_millis(1_736_937_000_000).unwrap(),
        };
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(json["id"], "42");
        assert_eq!(json["room_id"], "u4pruy");
        assert_eq!(json["timestamp"], "2025-01-15T10:30:00Z");
    }
}
