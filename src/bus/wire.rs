//! The bytes of hub messages on the Redis bus. The frames inside are already serialized
//! for clients, so an instance that receives them only copies them into its sockets' queues.
//!
//! A publish carries one or more messages of its channel, in order (the writer bundles what
//! one pipeline sends to a channel into one PUBLISH):
//! version (1 byte) | origin instance id (16) | then per message: length of the rest of the
//! record (4, big-endian) | kind (1) | user id (16) | close code (2, big-endian) | frame
//! (UTF-8, the rest of the record). The session or room is the pub/sub channel's (its
//! name is the Redis bus's business: `keys.rs`).
//! A topic message (kind 6) uses the close-code field for the topic's length and puts the
//! topic's name (UTF-8) before the frame. A location (kind 0) is carried by its frame
//! alone: the receiving instance reads the position back from it once.
//! Kinds 8, 9 and 10 are the roll call (`Roll`: who else listens to a session, see
//! `redis/listeners.rs`), for the bus itself, not the hub; their user, code and frame are
//! empty.
//! Instances of versions that write different bytes do not understand each other: the
//! version byte makes a receiver log and drop what it cannot read.

use tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::domain::UserId;
use crate::message::{Channel, Envelope, HubMessage};
use crate::protocol::native::broadcast_location;

const VERSION: u8 = 2;
/// Version and origin: what a bundle starts with, once.
const PREFIX: usize = 1 + 16;
/// A record's length, kind, user and code.
const RECORD_HEADER: usize = 4 + 1 + 16 + 2;

/// One message as a publish of its own; `append` adds more of the same channel to it.
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
    let topic_name = &topic_name[..usize::from(code).min(topic_name.len())];
    record(origin, kind, user, code, topic_name, frame.as_bytes())
}

/// A publish of one record.
fn record(origin: Uuid, kind: u8, user: Uuid, code: u16, topic_name: &[u8], frame: &[u8]) -> Vec<u8> {
    let record = RECORD_HEADER - 4 + topic_name.len() + frame.len();
    let mut out = Vec::with_capacity(PREFIX + 4 + record);
    out.push(VERSION);
    out.extend_from_slice(origin.as_bytes());
    // Frames are bounded far below 4 GiB (WS_MAX_MESSAGE_BYTES and the chat limits).
    out.extend_from_slice(&u32::try_from(record).unwrap_or(u32::MAX).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(topic_name);
    out.extend_from_slice(frame);
    out
}

/// The roll call on a session's channel: who else listens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roll {
    /// The sender's subscription was just confirmed: who else is here?
    Hello,
    /// The answer to a `Hello`: the sender is subscribed too.
    Here,
    /// The sender's last socket in the session left.
    Bye,
}

/// A roll-call message as a publish of its own (`append` adds it to a bundle like any other).
pub fn encode_roll(origin: Uuid, roll: Roll) -> Vec<u8> {
    let kind = match roll {
        Roll::Hello => 8,
        Roll::Here => 9,
        Roll::Bye => 10,
    };
    record(origin, kind, Uuid::nil(), 0, &[], &[])
}

/// Adds the messages of `more` (from `encode`, same origin, same channel) after those of
/// `bundle`.
pub fn append(bundle: &mut Vec<u8>, more: &[u8]) {
    bundle.extend_from_slice(more.get(PREFIX..).unwrap_or_default());
}

/// The instance that sent these bytes, read without decoding the rest (an instance skips
/// its own echoes before paying for them).
pub fn origin(bytes: &[u8]) -> Option<Uuid> {
    if bytes.len() < PREFIX || bytes[0] != VERSION {
        return None;
    }
    Uuid::from_slice(&bytes[1..PREFIX]).ok()
}

/// One record of a bundle: a message for the hub, or the roll call for the bus.
#[derive(Debug)]
pub enum Record {
    Message(Envelope),
    Roll(Roll),
}

/// A bundle's records in order, each decoded or why it could not be (a bad record does not
/// cost the others theirs).
pub type Decoded = Vec<Result<Record, String>>;

/// The origin instance and the messages published to `channel`, or why the bytes are not a
/// bus message at all.
pub fn decode(channel: Channel, bytes: &[u8]) -> Result<(Uuid, Decoded), String> {
    let origin = origin(bytes).ok_or("unknown bus message version or truncated header")?;
    let mut rest = &bytes[PREFIX..];
    let mut envelopes = Vec::with_capacity(1);
    while !rest.is_empty() {
        let (len, after) = rest.split_first_chunk::<4>().ok_or("truncated record length")?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|e| e.to_string())?;
        if len < RECORD_HEADER - 4 || after.len() < len {
            return Err("truncated record".into());
        }
        let (record, after) = after.split_at(len);
        rest = after;
        envelopes.push(decode_record(record).map(|record| match record {
            Ok(message) => Record::Message(Envelope { channel, message }),
            Err(roll) => Record::Roll(roll),
        }));
    }
    if envelopes.is_empty() {
        return Err("a bus message without records".into());
    }
    Ok((origin, envelopes))
}

/// kind | user | code | (topic) | frame, its length already checked: a hub message, or
/// (`Err` inside) the roll call.
fn decode_record(record: &[u8]) -> Result<Result<HubMessage, Roll>, String> {
    let kind = record[0];
    let user = UserId(Uuid::from_slice(&record[1..17]).map_err(|e| e.to_string())?);
    let code = u16::from_be_bytes([record[17], record[18]]);
    let mut rest = &record[19..];
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
    Ok(Ok(match kind {
        8 => return Ok(Err(Roll::Hello)),
        9 => return Ok(Err(Roll::Here)),
        10 => return Ok(Err(Roll::Bye)),
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
    }))
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
        let location = crate::domain::Location::at(48.85, 2.35, 5.0, crate::domain::now());
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
        let channel = Channel::Session(session_id);
        for message in &messages {
            let (got_origin, envelopes) = decode(channel, &encode(origin, message)).unwrap();
            assert_eq!(got_origin, origin);
            assert_eq!(envelopes.len(), 1);
            let Ok(Record::Message(envelope)) = &envelopes[0] else { panic!("{:?}", envelopes[0]) };
            assert_eq!(envelope.channel, Channel::Session(session_id));
            assert_eq!(format!("{:?}", envelope.message), format!("{message:?}"));
        }
        // All of them in one publish, in order, the roll call among them.
        let mut bundle = encode(origin, &messages[0]);
        for message in &messages[1..] {
            append(&mut bundle, &encode(origin, message));
        }
        for roll in [Roll::Hello, Roll::Here, Roll::Bye] {
            append(&mut bundle, &encode_roll(origin, roll));
        }
        let (got_origin, records) = decode(channel, &bundle).unwrap();
        assert_eq!(got_origin, origin);
        let got: Vec<String> = records
            .iter()
            .map(|record| match record.as_ref().unwrap() {
                Record::Message(envelope) => format!("{:?}", envelope.message),
                Record::Roll(roll) => format!("{roll:?}"),
            })
            .collect();
        let mut sent: Vec<String> = messages.iter().map(|m| format!("{m:?}")).collect();
        sent.extend(["Hello", "Here", "Bye"].map(String::from));
        assert_eq!(got, sent);
        // A roll call alone.
        let (_, records) = decode(channel, &encode_roll(origin, Roll::Bye)).unwrap();
        assert!(matches!(records[..], [Ok(Record::Roll(Roll::Bye))]));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let channel = Channel::Session(SessionId::new_random());
        assert!(decode(channel, b"").is_err());
        assert!(decode(channel, &[9; 40]).is_err());
        let event = encode(Uuid::nil(), &HubMessage::Event { frame: "x".into() });
        let mut bad_utf8 = event.clone();
        *bad_utf8.last_mut().unwrap() = 0xff;
        let only_bad = |bytes: &[u8]| decode(channel, bytes).unwrap().1.remove(0).unwrap_err();
        assert!(only_bad(&bad_utf8).contains("utf-8"));
        // A bad record costs only itself: the bundle's other messages arrive.
        let mut mixed = bad_utf8.clone();
        append(&mut mixed, &event);
        let (_, decoded) = decode(channel, &mixed).unwrap();
        assert!(decoded[0].is_err() && decoded[1].is_ok());
        // A record longer than what follows, a bundle cut inside a record, a bare prefix.
        let mut too_long = event.clone();
        too_long[PREFIX + 3] += 1;
        assert!(decode(channel, &too_long).unwrap_err().contains("truncated"));
        let mut cut = event.clone();
        append(&mut cut, &event);
        cut.pop();
        assert!(decode(channel, &cut).unwrap_err().contains("truncated"));
        assert!(decode(channel, &event[..PREFIX]).unwrap_err().contains("without records"));
        // A location whose frame carries no position is not a location.
        let mut no_position = encode(Uuid::nil(), &HubMessage::Event { frame: "{\"data\":{}}".into() });
        no_position[PREFIX + 4] = 0;
        assert!(only_bad(&no_position).contains("without a position"));
    }
}
