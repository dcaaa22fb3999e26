//! Phoenix Channels' wire formats, pure: the V2 JSON serializer (`vsn=2.0.0`, frames
//! `[join_ref, ref, topic, event, payload]`) and V1 (objects), and how a native hub frame
//! becomes a Phoenix broadcast on a session's channel (`location:{session_id}`), with
//! `join_ref: null` as Phoenix's own fastlane does, so each is serialized once per wire.

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::domain::SessionId;
use crate::message::{Channel, Frame, Wire};

/// The channel topic of a session.
pub fn topic_of(session_id: SessionId) -> String {
    format!("location:{session_id}")
}

/// One Phoenix message in the wire's serializer.
pub fn encode(
    wire: Wire,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &impl Serialize,
) -> Frame {
    #[derive(Serialize)]
    struct V1<'a, P> {
        topic: &'a str,
        event: &'a str,
        payload: &'a P,
        #[serde(rename = "ref")]
        msg_ref: Option<&'a str>,
        join_ref: Option<&'a str>,
    }
    // Serializing these cannot fail: string keys only, no custom serializers that error.
    let text = match wire {
        Wire::PhoenixV1 => serde_json::to_string(&V1 { topic, event, payload, msg_ref, join_ref }),
        _ => serde_json::to_string(&(join_ref, msg_ref, topic, event, payload)),
    };
    Frame::from(text.expect("phoenix messages serialize"))
}

/// A hub frame (`{"type", "data"}`) as a Phoenix broadcast on the session's channel, or
/// None for what Phoenix sockets do not get (local rooms).
pub fn fastlane(wire: Wire, channel: Channel, native: &Frame) -> Option<Frame> {
    #[derive(Deserialize)]
    struct Native<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(borrow)]
        data: &'a RawValue,
    }
    let Channel::Session(session_id) = channel else { return None };
    let Native { kind, data } = serde_json::from_str(native.as_str()).ok()?;
    // Seed 001 names a broadcast position `location_update`, as the client names its own.
    let event = if kind == "location_broadcast" { "location_update" } else { kind };
    Some(encode(wire, None, None, &topic_of(session_id), event, &data))
}

/// `phx_close` on the session's channel: the server closed it.
pub fn channel_closed(wire: Wire, channel: Channel) -> Option<Frame> {
    let Channel::Session(session_id) = channel else { return None };
    Some(encode(wire, None, None, &topic_of(session_id), "phx_close", &json!({})))
}

/// A client message, in either serializer.
pub struct Incoming<'a> {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: &'a RawValue,
}

pub fn decode(wire: Wire, text: &str) -> Result<Incoming<'_>, serde_json::Error> {
    #[derive(Deserialize)]
    struct V1<'a> {
        topic: String,
        event: String,
        #[serde(borrow)]
        payload: &'a RawValue,
        #[serde(rename = "ref")]
        msg_ref: Option<String>,
        join_ref: Option<String>,
    }
    match wire {
        Wire::PhoenixV1 => {
            let m: V1 = serde_json::from_str(text)?;
            Ok(Incoming {
                join_ref: m.join_ref,
                msg_ref: m.msg_ref,
                topic: m.topic,
                event: m.event,
                payload: m.payload,
            })
        }
        _ => {
            let (join_ref, msg_ref, topic, event, payload): (
                Option<String>,
                Option<String>,
                String,
                String,
                &RawValue,
            ) = serde_json::from_str(text)?;
            Ok(Incoming { join_ref, msg_ref, topic, event, payload })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_are_fastlaned_in_both_serializers() {
        let session_id = SessionId::new_random();
        let native = Frame::from(r#"{"type":"location_broadcast","data":{"user_id":"u","lat":1.5}}"#);
        let v2 = fastlane(Wire::PhoenixV2, Channel::Session(session_id), &native).unwrap();
        assert_eq!(
            v2.as_str(),
            format!(r#"[null,null,"location:{session_id}","location_update",{{"user_id":"u","lat":1.5}}]"#)
        );
        let v1: serde_json::Value = serde_json::from_str(
            fastlane(Wire::PhoenixV1, Channel::Session(session_id), &native).unwrap().as_str(),
        )
        .unwrap();
        assert_eq!(v1["event"], "location_update");
        assert_eq!(v1["payload"]["lat"], 1.5);
        assert_eq!(v1["ref"], serde_json::Value::Null);
        let room = Channel::Room("u4pruy".parse().unwrap());
        assert!(fastlane(Wire::PhoenixV2, room, &native).is_none());
    }

    #[test]
    fn reads_both_serializers() {
        let v2 = r#"["1","2","location:x","phx_join",{"a":1}]"#;
        let m = decode(Wire::PhoenixV2, v2).unwrap();
        assert_eq!(
            (m.join_ref.as_deref(), m.msg_ref.as_deref(), m.topic.as_str()),
            (Some("1"), Some("2"), "location:x")
        );
        assert_eq!(m.payload.get(), r#"{"a":1}"#);
        let v1 = r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}"#;
        let m = decode(Wire::PhoenixV1, v1).unwrap();
        assert_eq!((m.event.as_str(), m.msg_ref.as_deref(), m.join_ref), ("heartbeat", Some("7"), None));
        assert!(decode(Wire::PhoenixV2, "[1,2]").is_err());
        assert!(decode(Wire::PhoenixV1, "[]").is_err());
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::json;

        use super::super::decode;
        use crate::domain::{Location, LocationInput, now};
        use crate::message::Wire;
        use crate::test_support::json;

        /// Decoded or refused in either serializer; a decoded location payload goes on to
        /// the location rules, as the socket does.
        fn check(text: &str) {
            for wire in [Wire::PhoenixV1, Wire::PhoenixV2] {
                if let Ok(incoming) = decode(wire, text)
                    && let Ok(input) = serde_json::from_str::<LocationInput>(incoming.payload.get())
                {
                    let _ = Location::parse(&input, now());
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_bytes_are_decoded_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                check(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn any_json_in_a_frame_is_decoded_or_refused(
                payload in json(),
                refs in (prop::option::of(".{0,8}"), prop::option::of(".{0,8}")),
                event in prop::sample::select(&["phx_join", "phx_leave", "location_update", "heartbeat", "ping", "x"][..]),
            ) {
                let (join_ref, msg_ref) = refs;
                check(&json!([join_ref, msg_ref, "location:x", event, payload]).to_string());
                check(&json!({ "topic": "phoenix", "event": event, "payload": payload, "ref": msg_ref, "join_ref": join_ref }).to_string());
                check(&payload.to_string());
            }
        }
    }
}
