//! Validated domain types and the rules they carry. No I/O here: everything in this module
//! is pure, so a value that exists has already passed its checks.

mod chat;
mod ids;
mod location;
mod participant;
mod room;
mod session;

pub use chat::{ChatContent, ChatMessage, ChatRoom};
pub use ids::{SessionId, UserId};
pub use location::{APPROXIMATE_ACCURACY_M, Location, LocationInput, MAX_CLOCK_SKEW_SECS, distance_m};
pub use participant::{AvatarColor, DEFAULT_AVATAR_COLOR, DisplayName, Participant};
pub use room::RoomId;
pub use session::{ExpiresInMinutes, Session, SessionName};

use chrono::{DateTime, Utc};

/// An input that broke a rule: which field, and why, in words safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// `raw` trimmed, then 1 to `max` characters with no control characters but `allowed`.
fn bounded_text(
    field: &'static str,
    raw: &str,
    max: usize,
    allowed: &[char],
) -> Result<String, ValidationError> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if chars > max {
        return Err(ValidationError::new(field, format!("must be at most {max} characters")));
    }
    if trimmed.chars().any(|c| c.is_control() && !allowed.contains(&c)) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// The current time, truncated to milliseconds: the precision every store keeps.
pub fn now() -> DateTime<Utc> {
    from_millis(Utc::now().timestamp_millis())
}

/// A timestamp from Unix milliseconds, clamped to chrono's range.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}
