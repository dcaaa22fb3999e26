//! Topic names (the grammar `/ws` speaks) and who may use them. A connection may use its own session's
//! topics and its own user topic, nothing else:
//!
//! - `session:{session_id}`: the session itself. Every connection of the session is on it
//!   (it carries locations, joins and leaves); publishing reaches every participant.
//! - `session:{session_id}:{name}`: a named topic of the session; only the connections that
//!   subscribed get what is published there. A bare `{name}` (seed 003's `notifications`)
//!   means the same topic of the connection's own session.
//! - `user:{user_id}`: the user's own topic, on every connection of that user (all their
//!   devices). Others reach a user with `direct_message`, not here.
//!
//! A name is 1 to 64 characters of `A-Z a-z 0-9 _ . -`.

use std::sync::Arc;

use crate::domain::{SessionId, UserId};

/// Named topics one connection may hold at once.
pub const MAX_TOPICS_PER_CONNECTION: usize = 32;
/// Longest topic name (the part after `session:{id}:`).
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    Session,
    Named(Arc<str>),
    User,
}

/// Why a topic was refused: `code` is `invalid_topic` or `forbidden_topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    pub code: &'static str,
    pub message: String,
    pub topic: String,
}

/// The topics of one connection: which session and user it speaks for.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub session_id: SessionId,
    pub user_id: UserId,
}

impl Scope {
    /// Reads a topic name a client sent and checks that this connection may use it.
    pub fn authorize(&self, raw: &str) -> Result<Topic, TopicError> {
        let shown = shorten(raw);
        let refuse = |code, why: String| TopicError {
            code,
            message: format!("topic {shown:?}{why}"),
            topic: shown.clone(),
        };
        let invalid = |why: &str| refuse("invalid_topic", format!(": {why}"));
        let forbidden = |what: &str| {
            refuse(
                "forbidden_topic",
                format!(" is {what}: a participant may use its own session's and user's topics only"),
            )
        };
        if let Some(rest) = raw.strip_prefix("session:") {
            let (id, name) = match rest.split_once(':') {
                Some((id, name)) => (id, Some(name)),
                None => (rest, None),
            };
            let Ok(session_id) = id.parse::<SessionId>() else {
                return Err(invalid("no session id after 'session:'"));
            };
            if session_id != self.session_id {
                return Err(forbidden("another session's"));
            }
            return match name {
                None => Ok(Topic::Session),
                Some(name) => named(name).map_err(|why| invalid(&why)),
            };
        }
        if let Some(id) = raw.strip_prefix("user:") {
            return match id.parse::<UserId>() {
                Ok(user_id) if user_id == self.user_id => Ok(Topic::User),
                Ok(_) => Err(forbidden("another user's")),
                Err(_) => Err(invalid("no user id after 'user:'")),
            };
        }
        if raw.contains(':') {
            return Err(forbidden("not a session or user topic"));
        }
        named(raw).map_err(|why| invalid(&why))
    }

    /// The full name, as messages on the topic carry it.
    pub fn canonical(&self, topic: &Topic) -> String {
        match topic {
            Topic::Session => format!("session:{}", self.session_id),
            Topic::Named(name) => format!("session:{}:{name}", self.session_id),
            Topic::User => format!("user:{}", self.user_id),
        }
    }
}

/// A topic name as errors quote it: at most 100 characters, so a huge name cannot make
/// a huge reply.
fn shorten(raw: &str) -> String {
    match raw.char_indices().nth(100) {
        Some((at, _)) => format!("{}...", &raw[..at]),
        None => raw.to_owned(),
    }
}

fn named(name: &str) -> Result<Topic, String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!("a topic name has 1 to {MAX_NAME_CHARS} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err("a topic name has only letters, digits, '_', '.' and '-'".into());
    }
    Ok(Topic::Named(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_session_and_user_topics_only() {
        let scope = Scope { session_id: SessionId::new_random(), user_id: UserId::new_random() };
        let (sid, uid) = (scope.session_id, scope.user_id);
        assert_eq!(scope.authorize(&format!("session:{sid}")), Ok(Topic::Session));
        assert_eq!(scope.authorize(&format!("session:{sid}:alerts")), Ok(Topic::Named("alerts".into())));
        assert_eq!(scope.authorize("alerts"), Ok(Topic::Named("alerts".into())));
        assert_eq!(scope.authorize(&format!("user:{uid}")), Ok(Topic::User));
        assert_eq!(scope.canonical(&Topic::Named("alerts".into())), format!("session:{sid}:alerts"));

        let other_session = format!("session:{}:alerts", SessionId::new_random());
        let other_user = format!("user:{}", UserId::new_random());
        for (raw, code) in [
            (other_session.as_str(), "forbidden_topic"),
            (other_user.as_str(), "forbidden_topic"),
            ("room:abc", "forbidden_topic"),
            ("session:nope", "invalid_topic"),
            ("user:nope", "invalid_topic"),
            ("", "invalid_topic"),
            ("has space", "invalid_topic"),
            (&"x".repeat(65), "invalid_topic"),
        ] {
            let err = scope.authorize(raw).unwrap_err();
            assert_eq!((err.code, err.topic.as_str()), (code, raw));
            assert!(err.message.contains(raw), "{err:?}");
        }
        // A huge name is quoted shortened.
        let err = scope.authorize(&"y".repeat(60_000)).unwrap_err();
        assert!(err.topic.len() < 110 && err.message.len() < 200, "{err:?}");
    }
}
