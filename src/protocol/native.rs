//! The native wire format of `/ws`: JSON text frames `{"type": ..., "data": {...}}`, as
//! seeds 000 and 001 document them. Server messages are serialized here, once per event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::{
    ChatMessage, Estimate, Location, LocationInput, MeetingPoint, MeetingPointBy, MeetingPointInput,
    Participant, RoomId, Trail, UserId,
};
use crate::message::Frame;
use crate::presence::PresenceMap;

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// The first message on every connection: everything needed to draw the session.
    SessionState(SessionState<'a>),
    Pong {},
    ParticipantJoined {
        user_id: UserId,
        display_name: &'a str,
        avatar_color: &'a str,
    },
    ParticipantLeft {
        user_id: UserId,
    },
    LocationBroadcast(LocationBroadcast),
    /// Someone paused sharing: forget their position (they stay present).
    LocationCleared {
        user_id: UserId,
    },
    /// The answer to `share_settings`: what now applies to this connection's positions.
    ShareSettings {
        precision: &'a str,
        paused: bool,
    },
    /// The answer to `view_settings`: what now filters this connection's deliveries.
    ViewSettings {
        min_interval_ms: u64,
        min_distance_m: f64,
    },
    SessionEnded {
        reason: &'a str,
    },
    /// The session's meeting point was set or moved.
    MeetingPointSet(&'a MeetingPoint),
    /// The session's meeting point was cleared.
    MeetingPointCleared {
        /// The participant who cleared it; null for the creator.
        cleared_by: Option<UserId>,
        at: DateTime<Utc>,
    },
    /// A participant's fix put them within the meeting point's radius.
    ParticipantArrived {
        user_id: UserId,
        at: DateTime<Utc>,
    },
    /// A participant who had arrived is now beyond 1.5 x the radius.
    ParticipantDeparted {
        user_id: UserId,
        at: DateTime<Utc>,
    },
    /// The answer to `get_trails`.
    Trails {
        trails: &'a [Trail],
    },
    /// A participant's way to the meeting point, as the crow flies.
    EtaUpdate {
        user_id: UserId,
        #[serde(flatten)]
        estimate: &'a Estimate,
        at: DateTime<Utc>,
    },
    /// A message another participant sent to this user.
    DirectMessage {
        from_user: UserId,
        payload: &'a RawValue,
    },
    /// The answer to `refresh_token`.
    TokenRefreshed {
        token: &'a str,
        expires_at: DateTime<Utc>,
    },
    /// Who is connected: sent after `session_state`, and again on every resynchronisation.
    PresenceState(&'a PresenceMap<'a>),
    /// Connections that came and went since.
    PresenceDiff {
        joins: &'a PresenceMap<'a>,
        leaves: &'a PresenceMap<'a>,
    },
    /// The answer to `subscribe`: the topics now held, by their full names.
    Subscribed {
        topics: &'a [String],
    },
    Unsubscribed {
        topics: &'a [String],
    },
    /// A message published on a topic this connection is on.
    Broadcast {
        topic: &'a str,
        from_user: UserId,
        payload: &'a RawValue,
    },
    /// A chat message, in the session or in the local room: to everyone there, the sender
    /// included (that is the sender's acknowledgement: the message is stored).
    NewMessage(&'a ChatMessage),
    /// The answer to `join_local_chat`.
    RoomJoined {
        room_id: RoomId,
        name: &'a str,
        user_count: usize,
    },
    /// The room's recent messages, oldest first, after `room_joined`.
    MessageHistory {
        room_id: RoomId,
        messages: &'a [ChatMessage],
    },
    /// Someone else entered the local room this socket is in.
    UserJoined {
        room_id: RoomId,
        user_id: UserId,
        display_name: &'a str,
        avatar_color: &'a str,
    },
    /// Someone else's last socket left the local room.
    UserLeft {
        room_id: RoomId,
        user_id: UserId,
    },
    Error {
        code: &'a str,
        message: &'a str,
        /// The refused topic, for topic errors.
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<&'a str>,
    },
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionState<'a> {
    pub session_id: crate::domain::SessionId,
    #[schema(value_type = Option<String>)]
    pub name: Option<&'a str>,
    pub expires_at: DateTime<Utc>,
    /// The participant this connection belongs to.
    pub user_id: UserId,
    #[schema(value_type = Vec<Participant>)]
    pub participants: &'a [Participant],
    pub locations: Vec<LocationBroadcast>,
    /// Where the group is heading (null: nowhere set).
    #[schema(value_type = Option<MeetingPoint>)]
    pub meeting_point: Option<&'a MeetingPoint>,
    /// Who may set it: `creator` or `anyone`.
    pub meeting_point_by: MeetingPointBy,
    /// The participants who have arrived at it.
    pub arrived: Vec<UserId>,
    /// The session chat's latest messages, oldest first.
    #[schema(value_type = Vec<ChatMessage>)]
    pub messages: &'a [ChatMessage],
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LocationBroadcast {
    pub user_id: UserId,
    #[serde(flatten)]
    pub location: Location,
}

impl ServerMessage<'_> {
    pub fn to_frame(&self) -> Frame {
        // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
        Frame::from(serde_json::to_string(self).expect("server messages serialize"))
    }
}

/// How every `location_broadcast` frame begins; its `data` follows, then the closing brace.
const BROADCAST_PREFIX: &str = r#"{"type":"location_broadcast","data":"#;

/// The position a `location_broadcast` frame carries (a frame from another instance).
pub fn broadcast_location(frame: &Frame) -> Result<Location, serde_json::Error> {
    #[derive(Deserialize)]
    struct Broadcast {
        data: Location,
    }
    serde_json::from_str::<Broadcast>(frame.as_str()).map(|broadcast| broadcast.data)
}

/// A `location_batch` made of `location_broadcast` frames: each one's `data` copied as it
/// is, so a batch costs copies, not serializations, however many connections get one.
/// Frames that are not broadcasts (none are given) are left out.
pub fn location_batch<'f>(broadcasts: impl IntoIterator<Item = &'f Frame>) -> Frame {
    const HEAD: &str = r#"{"type":"location_batch","data":{"locations":["#;
    const TAIL: &str = "]}}";
    let mut out = String::with_capacity(256);
    out.push_str(HEAD);
    for frame in broadcasts {
        let Some(data) = frame.as_str().strip_prefix(BROADCAST_PREFIX).and_then(|d| d.strip_suffix('}'))
        else {
            continue;
        };
        if out.len() > HEAD.len() {
            out.push(',');
        }
        out.push_str(data);
    }
    out.push_str(TAIL);
    Frame::from(out)
}

/// What a client may send.
#[derive(Debug)]
pub enum ClientMessage {
    LocationUpdate(LocationInput),
    Ping,
    RefreshToken,
    /// Seed 004's Auth: the token as the first message (on a socket opened without one).
    Auth {
        token: String,
    },
    /// How this connection's positions are shared (fields left out keep their value).
    ShareSettings {
        approximate: Option<bool>,
        paused: Option<bool>,
    },
    /// Which deliveries this connection wants (fields left out keep their value).
    ViewSettings {
        min_interval_ms: Option<u64>,
        min_distance_m: Option<f64>,
    },
    /// To every connection of another participant of the same session.
    DirectMessage {
        target_user: UserId,
        payload: Box<RawValue>,
    },
    Subscribe {
        topics: Vec<String>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    /// Seed 003's Broadcast.
    Publish {
        topic: String,
        payload: Box<RawValue>,
    },
    /// Session chat.
    ChatMessage {
        content: String,
    },
    /// Seed 004's JoinLocalChat: enter the room of the cell this position is in.
    JoinLocalChat {
        lat: f64,
        lng: f64,
    },
    LeaveLocalChat,
    /// Seed 004's Message: chat in the local room.
    RoomMessage {
        content: String,
    },
    /// Sets or moves the session's meeting point (where this participant may).
    SetMeetingPoint(MeetingPointInput),
    ClearMeetingPoint,
    /// Everyone's trail, from `since` on (all of it when absent).
    GetTrails {
        since: Option<DateTime<Utc>>,
    },
}

#[derive(Deserialize)]
struct ContentInput {
    content: String,
}

#[derive(Deserialize)]
struct PositionInput {
    #[serde(alias = "latitude")]
    lat: f64,
    #[serde(alias = "longitude")]
    lng: f64,
}

#[derive(Deserialize)]
struct DirectMessageInput {
    target_user: UserId,
    payload: Box<RawValue>,
}

#[derive(Deserialize)]
struct TopicsInput {
    topics: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareInput {
    precision: Option<String>,
    paused: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewInput {
    min_interval_ms: Option<u64>,
    min_distance_m: Option<f64>,
}

#[derive(Deserialize)]
struct AuthInput {
    token: String,
}

#[derive(Deserialize)]
struct PublishInput {
    topic: String,
    payload: Box<RawValue>,
}

/// Reads `data` as `T`, or says what `kind` needs.
fn data<'a, T: Deserialize<'a>>(
    data: Option<&'a RawValue>,
    kind: &str,
    shape: &str,
) -> Result<T, ProtocolError> {
    let invalid = |detail: String| ProtocolError {
        code: "invalid_message",
        message: format!("{kind} needs data {shape}{detail}"),
    };
    let data = data.ok_or_else(|| invalid(String::new()))?;
    serde_json::from_str(data.get()).map_err(|e| invalid(format!(": {e}")))
}

/// Why a client frame was refused; sent back as an `error` message.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Deserialize)]
struct RawClientMessage<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

pub fn parse_client(text: &str) -> Result<ClientMessage, ProtocolError> {
    let raw: RawClientMessage = serde_json::from_str(text).map_err(|e| ProtocolError {
        code: "invalid_message",
        message: format!("expected {{\"type\": ..., \"data\": {{...}}}}: {e}"),
    })?;
    match raw.kind.as_str() {
        "location_update" => {
            let data = raw.data.ok_or_else(|| ProtocolError {
                code: "invalid_location",
                message: "location_update needs data {lat, lng, accuracy, timestamp}".into(),
            })?;
            serde_json::from_str(data.get()).map(ClientMessage::LocationUpdate).map_err(|e| ProtocolError {
                code: "invalid_location",
                message: format!("location_update data: {e}"),
            })
        }
        "ping" => Ok(ClientMessage::Ping),
        "set_meeting_point" => {
            let input = data(raw.data, "set_meeting_point", "{lat, lng, name, radius_m}")?;
            Ok(ClientMessage::SetMeetingPoint(input))
        }
        "clear_meeting_point" => Ok(ClientMessage::ClearMeetingPoint),
        "get_trails" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct TrailsInput {
                #[serde(default)]
                since: Option<DateTime<Utc>>,
            }
            let input: TrailsInput = match raw.data {
                None => TrailsInput { since: None },
                data => self::data(data, "get_trails", "{since} (RFC 3339, optional)")?,
            };
            Ok(ClientMessage::GetTrails { since: input.since })
        }
        "share_settings" | "ShareSettings" => {
            let input: ShareInput =
                data(raw.data, "share_settings", "{precision: exact|approximate, paused}")?;
            let approximate = match input.precision.as_deref() {
                None => None,
                Some("exact") => Some(false),
                Some("approximate") => Some(true),
                Some(other) => {
                    return Err(ProtocolError {
                        code: "invalid_message",
                        message: format!(
                            "share_settings precision must be exact or approximate, not {other:?}"
                        ),
                    });
                }
            };
            Ok(ClientMessage::ShareSettings { approximate, paused: input.paused })
        }
        "view_settings" | "ViewSettings" => {
            let input: ViewInput = data(raw.data, "view_settings", "{min_interval_ms, min_distance_m}")?;
            if let Some(distance) = input.min_distance_m
                && !(distance.is_finite() && (0.0..=1_000_000.0).contains(&distance))
            {
                return Err(ProtocolError {
                    code: "invalid_message",
                    message: "view_settings min_distance_m must be between 0 and 1000000".into(),
                });
            }
            if input.min_interval_ms.is_some_and(|ms| ms > 3_600_000) {
                return Err(ProtocolError {
                    code: "invalid_message",
                    message: "view_settings min_interval_ms must be between 0 and 3600000".into(),
                });
            }
            Ok(ClientMessage::ViewSettings {
                min_interval_ms: input.min_interval_ms,
                min_distance_m: input.min_distance_m,
            })
        }
        "auth" | "Auth" => {
            let input: AuthInput = data(raw.data, "auth", "{token}")?;
            Ok(ClientMessage::Auth { token: input.token })
        }
        "refresh_token" => Ok(ClientMessage::RefreshToken),
        // Seed 003's names are accepted too: DirectMessage, Subscribe, Unsubscribe, Broadcast.
        "direct_message" | "DirectMessage" => {
            let input: DirectMessageInput = data(raw.data, "direct_message", "{target_user, payload}")?;
            Ok(ClientMessage::DirectMessage { target_user: input.target_user, payload: input.payload })
        }
        "subscribe" | "Subscribe" => {
            let input: TopicsInput = data(raw.data, "subscribe", "{topics: [...]}")?;
            Ok(ClientMessage::Subscribe { topics: input.topics })
        }
        "unsubscribe" | "Unsubscribe" => {
            let input: TopicsInput = data(raw.data, "unsubscribe", "{topics: [...]}")?;
            Ok(ClientMessage::Unsubscribe { topics: input.topics })
        }
        "publish" | "Broadcast" => {
            let input: PublishInput = data(raw.data, "publish", "{topic, payload}")?;
            Ok(ClientMessage::Publish { topic: input.topic, payload: input.payload })
        }
        "chat_message" => {
            let input: ContentInput = data(raw.data, "chat_message", "{content}")?;
            Ok(ClientMessage::ChatMessage { content: input.content })
        }
        // Seed 004's names: JoinLocalChat, Message.
        "join_local_chat" | "JoinLocalChat" => {
            let input: PositionInput = data(raw.data, "join_local_chat", "{lat, lng}")?;
            Ok(ClientMessage::JoinLocalChat { lat: input.lat, lng: input.lng })
        }
        "leave_local_chat" | "LeaveLocalChat" => Ok(ClientMessage::LeaveLocalChat),
        "message" | "Message" => {
            let input: ContentInput = data(raw.data, "message", "{content}")?;
            Ok(ClientMessage::RoomMessage { content: input.content })
        }
        other => Err(ProtocolError {
            code: "unknown_type",
            message: format!(
                "unknown message type {other:?}; expected location_update, ping, refresh_token, direct_message, \
                 subscribe, unsubscribe, publish, chat_message, join_local_chat, leave_local_chat, message, \
                 share_settings, view_settings, set_meeting_point, clear_meeting_point, get_trails or auth"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_carries_each_broadcasts_data_as_it_is() {
        let at = |lat| Location::at(lat, 2.5, 5.0, crate::domain::now());
        let broadcasts = [UserId::new_random(), UserId::new_random()]
            .map(|user_id| LocationBroadcast { user_id, location: at(1.5) });
        let frames = broadcasts.clone().map(|b| ServerMessage::LocationBroadcast(b).to_frame());
        let batch: serde_json::Value = serde_json::from_str(&location_batch(&frames)).unwrap();
        let expected = serde_json::json!({
            "type": "location_batch",
            "data": { "locations": [
                serde_json::to_value(&broadcasts[0]).unwrap(),
                serde_json::to_value(&broadcasts[1]).unwrap(),
            ] }
        });
        assert_eq!(batch, expected);
        let empty: serde_json::Value = serde_json::from_str(&location_batch([])).unwrap();
        assert_eq!(empty["data"]["locations"], serde_json::json!([]));
        // Not a broadcast: left out, the batch stays valid JSON.
        let odd = Frame::from(r#"{"type":"pong","data":{}}"#);
        let batch: serde_json::Value = serde_json::from_str(&location_batch([&odd, &frames[0]])).unwrap();
        assert_eq!(batch["data"]["locations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn parses_the_seed_messages() {
        let update = r#"{"type":"location_update","data":{"lat":37.7749,"lng":-122.4194,"accuracy":5.0,"timestamp":"2025-01-15T10:30:00Z"}}"#;
        match parse_client(update).unwrap() {
            ClientMessage::LocationUpdate(input) => assert_eq!((input.lat, input.lng), (37.7749, -122.4194)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(parse_client(r#"{"type":"ping","data":{}}"#), Ok(ClientMessage::Ping)));
        assert!(matches!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping)));
        // Seed 003's client, unchanged.
        let subscribe = r#"{"type":"Subscribe","data":{"topics":["notifications","updates"]}}"#;
        assert!(
            matches!(parse_client(subscribe), Ok(ClientMessage::Subscribe { topics }) if topics.len() == 2)
        );
        let broadcast = r#"{"type":"Broadcast","data":{"topic":"updates","payload":{"n":1}}}"#;
        assert!(
            matches!(parse_client(broadcast), Ok(ClientMessage::Publish { topic, payload }) if topic == "updates" && payload.get() == r#"{"n":1}"#)
        );
    }

    #[test]
    fn refuses_what_it_cannot_read_with_a_code() {
        for (text, code) in [
            ("not json", "invalid_message"),
            (r#"{"data":{}}"#, "invalid_message"),
            (r#"{"type":"teleport","data":{}}"#, "unknown_type"),
            (r#"{"type":"location_update"}"#, "invalid_location"),
            (r#"{"type":"location_update","data":{"lat":"north"}}"#, "invalid_location"),
            (r#"{"type":"subscribe","data":{"topics":"alerts"}}"#, "invalid_message"),
            (r#"{"type":"publish","data":{"topic":"alerts"}}"#, "invalid_message"),
        ] {
            assert_eq!(parse_client(text).unwrap_err().code, code, "{text}");
        }
    }

    #[test]
    fn serializes_in_the_seed_shape() {
        let user_id = UserId::new_random();
        let pong = ServerMessage::Pong {}.to_frame();
        assert_eq!(pong.as_str(), r#"{"type":"pong","data":{}}"#);
        let left = ServerMessage::ParticipantLeft { user_id }.to_frame();
        let value: serde_json::Value = serde_json::from_str(left.as_str()).unwrap();
        assert_eq!(value["data"]["user_id"], user_id.to_string());
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::json;

        use super::super::{ClientMessage, parse_client};
        use crate::domain::{Location, now};
        use crate::test_support::json;

        /// Every message type a client may send, under each of its names.
        const KINDS: &[&str] = &[
            "location_update",
            "ping",
            "share_settings",
            "ShareSettings",
            "view_settings",
            "ViewSettings",
            "auth",
            "Auth",
            "refresh_token",
            "direct_message",
            "DirectMessage",
            "subscribe",
            "Subscribe",
            "unsubscribe",
            "Unsubscribe",
            "publish",
            "Broadcast",
            "chat_message",
            "join_local_chat",
            "JoinLocalChat",
            "leave_local_chat",
            "LeaveLocalChat",
            "message",
            "Message",
            "set_meeting_point",
            "clear_meeting_point",
            "get_trails",
            "other",
        ];

        /// A message or an error the client can be sent; a location goes on to its rules.
        fn check(text: &str) {
            match parse_client(text) {
                Ok(ClientMessage::LocationUpdate(input)) => {
                    let _ = Location::parse(&input, now());
                }
                Ok(_) => {}
                Err(err) => assert!(!err.code.is_empty() && !err.message.is_empty()),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_bytes_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                check(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn any_json_as_any_message_type_is_parsed_or_refused(
                data in json(),
                kind in prop::sample::select(KINDS),
            ) {
                check(&data.to_string());
                check(&json!({ "type": kind, "data": data }).to_string());
                check(&json!({ "type": kind }).to_string());
            }
        }
    }
}
