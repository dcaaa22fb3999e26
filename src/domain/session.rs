//! Sessions: a named, time-limited group that participants join.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{SessionId, ValidationError};

/// An optional session name: at most 255 characters after trimming, with the rules of a
/// display name (`name_text`); blank means none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionName(Option<String>);

impl SessionName {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(raw: Option<String>) -> Result<Self, ValidationError> {
        let Some(raw) = raw.filter(|raw| !raw.trim().is_empty()) else { return Ok(Self(None)) };
        super::name_text("name", &raw, Self::MAX_CHARS).map(|name| Self(Some(name)))
    }

    pub fn into_inner(self) -> Option<String> {
        self.0
    }
}

/// How long a new session lives: 1 to 1440 minutes (24 h), 1440 when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiresInMinutes(i64);

impl ExpiresInMinutes {
    pub const MAX: i64 = 24 * 60;
    pub const DEFAULT: Self = Self(Self::MAX);

    pub fn parse(raw: Option<i64>) -> Result<Self, ValidationError> {
        match raw {
            None => Ok(Self::DEFAULT),
            Some(m) if (1..=Self::MAX).contains(&m) => Ok(Self(m)),
            Some(_) => Err(ValidationError::new(
                "expires_in_minutes",
                format!("must be between 1 and {}", Self::MAX),
            )),
        }
    }

    pub fn after(self, start: DateTime<Utc>) -> DateTime<Utc> {
        start + Duration::minutes(self.0)
    }
}

/// A session as stored, with the count of its active participants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    pub id: SessionId,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip)]
    pub last_activity: DateTime<Utc>,
    /// The stored flag: false once the creator or the sweeper ended the session.
    #[serde(skip)]
    pub ended: bool,
    pub participant_count: i64,
    /// Who may set the meeting point.
    pub meeting_point_by: super::MeetingPointBy,
    /// Where the group is heading, if anyone said (shared: every socket's copy of the
    /// session holds a pointer, not the point).
    pub meeting_point: Option<std::sync::Arc<super::MeetingPoint>>,
}

impl Session {
    /// Live means not ended and not past its end time, whether or not the sweeper has run.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.ended && self.expires_at > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_trimmed_and_blank_means_none() {
        assert_eq!(SessionName::parse(Some("  trip ".into())).unwrap().into_inner().as_deref(), Some("trip"));
        assert_eq!(SessionName::parse(Some("   ".into())).unwrap().into_inner(), None);
        assert_eq!(SessionName::parse(None).unwrap().into_inner(), None);
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(SessionName::parse(Some("a\u{0}b".into())).unwrap_err().field, "name");
    }

    #[test]
    fn name_longer_than_255_chars_is_refused() {
        assert!(SessionName::parse(Some("é".repeat(255))).is_ok());
        let err = SessionName::parse(Some("a".repeat(256))).unwrap_err();
        assert_eq!(err.field, "name");
    }

    #[test]
    fn expiry_is_bounded() {
        assert_eq!(ExpiresInMinutes::parse(None).unwrap(), ExpiresInMinutes::DEFAULT);
        assert!(ExpiresInMinutes::parse(Some(1)).is_ok());
        assert!(ExpiresInMinutes::parse(Some(1440)).is_ok());
        for bad in [0, -5, 1441] {
            assert_eq!(ExpiresInMinutes::parse(Some(bad)).unwrap_err().field, "expires_in_minutes");
        }
    }
}
