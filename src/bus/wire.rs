//! The bytes of a hub message on the Redis bus. The frame inside is already serialized for
//! clients, so an instance that receives it only copies it into its sockets' queues.
//!
//! Layout: version (1 byte) | origin instance id (16) | kind (1) | user id (16) |
//! close code (2, big-endian) | frame (UTF-8, the rest). The session or room is the
//! pub/sub channel's (`channel:session:{id}`, `channel:room:{id}`).
//! A topic message (kind 6) uses the close-code field for the topic's length and puts the
//! topic's name (UTF-8) before the frame. A location (kind 0) is carried by its frame
//! alone: the receiving instance reads the position back from it once.

use tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::domain::UserId;
use crate::message::{Channel, Envelope, HubMessage};
use crate::protocol::native::broadcast_location;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 16 + 1 + 16 + 2;
const CHANNEL_PREFIX: &str = "channel:";

pub fn encode(origin: Uuid, message: &HubMessage) -> Vec<u8> {
    static EMPTY: Utf8Bytes = Utf8Bytes::from_static("");
    let mut topic_name: &[u8] = &[];
    let (kind, user, code, frame) = match message {
        HubMessage::Presence { frame } => (7, Uuid::nil(), 0, frame),
        HubMessage::Topic { topic, frame } => {
            topic_name = topic.as_bytes();
            // Topic names are validated short (far below 64 KiB).
            (6, Uuid::nil(), u16::try_from(topic_name.len()).unwrap_or(u16::MAX), frame)
        }
        HubMessage::Location { from, frame, .. } => (0u8, from.0, 0u16, frame),
        HubMessage::Resync => (4, Uuid::nil(), 0, &EMPTY),
        HubMessage::Direct { to, frame } => (5, to.0, 0, frame),
        HubMessage::Event { frame } => (1, Uuid::nil(), 0, frame),
        HubMessage::Disconnect { user_id, code, reason } => (2, user_id.0, *code, reason),
        HubMessage::End { frame } => (3, Uuid::nil(), 0, frame),
    };
    let mut out = Vec::with_capacity(HEADER + topic_name.len() + frame.len());
    out.push(VERSION);
    out.extend_from_slice(origin.as_bytes());
    out.push(kind);
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&topic_name[..usize::from(code).min(topic_name.len())]);
    out.extend_from_slice(frame.as_bytes());
    out
}

/// The instance that sent these bytes, read without decoding the rest (an instance skips
/// its own echoes before paying for them).
pub fn origin(bytes: &[u8]) -> Option<Uuid> {
    if bytes.len() < HEADER || bytes[0] != VERSION {
        return None;
    }
    Uuid::from_slice(&bytes[1..17]).ok()
}

/// The origin instance and the envelope, or why the bytes are not a bus message.
pub fn decode(channel: &str, bytes: &[u8]) -> Result<(Uuid, Envelope), String> {
    let channel = channel
        .strip_prefix(CHANNEL_PREFIX)
        .and_then(Channel::parse)
        .ok_or_else(|| format!("not a convoy channel: {channel}"))?;
    if bytes.len() < HEADER || bytes[0] != VERSION {
        return Err("unknown bus message version or truncated header".into());
    }
    let uuid_at = |at: usize| Uuid::from_slice(&bytes[at..at + 16]).map_err(|e| e.to_string());
    let origin = uuid_at(1)?;
    let user = UserId(uuid_at(18)?);
    let code = u16::from_be_bytes([bytes[34], bytes[35]]);
    let kind = bytes[17];
    let mut rest = &bytes[HEADER..];
    let topic = if kind == 6 {
        let len = usize::from(code);
        if rest.len() < len {
            return Err("truncated topic name".into());
        }
        let (name, after) = rest.split_at(len);
        rest = after;
        Some(std::str::from_utf8(name).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let frame = Utf8Bytes::try_from(rest.to_vec()).map_err(|e| e.to_string())?;
    let message = match kind {
        0 => HubMessage::Location {
            from: user,
            location: broadcast_location(&frame)
                .map_err(|e| format!("a location without a position: {e}"))?,
            frame,
        },
        1 => HubMessage::Event { frame },
        2 => HubMessage::Disconnect { user_id: user, code, reason: frame },
        3 => HubMessage::End { frame },
        4 => HubMessage::Resync,
        5 => HubMessage::Direct { to: user, frame },
        6 => HubMessage::Topic { topic: topic.unwrap_or_default().into(), frame },
        7 => HubMessage::Presence { frame },
        other => return Err(format!("unknown bus message kind {other}")),
    };
    Ok((origin, Envelope { channel, message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SessionId;
    use crate::protocol::native::{LocationBroadcast, ServerMessage};

    #[test]
    fn every_kind_round_trips() {
        let origin = Uuid::new_v4();
        let session_id = SessionId::new_random();
        let user = UserId::new_random();
        let frame = Utf8Bytes::from("{\"type\":\"x\",\"data\":{\"é\":1}}");
        let location =
            crate::domain::Location { lat: 48.85, lng: 2.35, accuracy: 5.0, timestamp: crate::domain::now() };
        let broadcast = LocationBroadcast { user_id: user, location };
        let messages = [
            HubMessage::Location {
                from: user,
                location,
                frame: ServerMessage::LocationBroadcast(broadcast).to_frame(),
            },
            HubMessage::Event { frame: frame.clone() },
            HubMessage::Disconnect { user_id: user, code: 1000, reason: Utf8Bytes::from("left") },
            HubMessage::End { frame },
            HubMessage::Resync,
            HubMessage::Direct { to: user, frame: Utf8Bytes::from("{}") },
            HubMessage::Topic { topic: "alerts.é".into(), frame: Utf8Bytes::from("{\"a\":1}") },
            HubMessage::Presence { frame: Utf8Bytes::from("{}") },
        ];
        for message in messages {
            let bytes = encode(origin, &message);
            let (got_origin, envelope) = decode(&format!("channel:session:{session_id}"), &bytes).unwrap();
            assert_eq!(got_origin, origin);
            assert_eq!(envelope.channel, Channel::Session(session_id));
            assert_eq!(format!("{:?}", envelope.message), format!("{message:?}"));
        }
    }

    #[test]
    fn room_channels_decode_too() {
        let bytes = encode(Uuid::nil(), &HubMessage::Event { frame: "x".into() });
        let (_, envelope) = decode("channel:room:u4pruy", &bytes).unwrap();
        assert_eq!(envelope.channel, Channel::Room("u4pruy".parse().unwrap()));
        assert!(decode("channel:room:nope", &bytes).is_err());
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let channel = format!("channel:session:{}", SessionId::new_random());
        assert!(decode(&channel, b"").is_err());
        assert!(decode(&channel, &[9; 40]).is_err());
        assert!(decode("elsewhere", &encode(Uuid::nil(), &HubMessage::Event { frame: "x".into() })).is_err());
        let mut bad_utf8 = encode(Uuid::nil(), &HubMessage::Event { frame: "x".into() });
        bad_utf8.push(0xff);
        assert!(decode(&channel, &bad_utf8).is_err());
        // A location whose frame carries no position is not a location.
        let mut no_position = encode(Uuid::nil(), &HubMessage::Event { frame: "{\"data\":{}}".into() });
        no_position[17] = 0;
        assert!(decode(&channel, &no_position).unwrap_err().contains("without a position"));
    }
}
