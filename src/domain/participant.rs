//! Participants: anonymous people in a session, known by a display name and a colour.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{SessionId, UserId, ValidationError};

pub const DEFAULT_AVATAR_COLOR: &str = "#FF5733";

/// 1 to 100 characters after trimming, NFC-normalized, nothing invisible (`name_text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        super::name_text("display_name", raw, Self::MAX_CHARS).map(Self)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A colour as `#RRGGBB`, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarColor(String);

impl AvatarColor {
    pub fn parse(raw: Option<&str>) -> Result<Self, ValidationError> {
        let Some(raw) = raw else { return Ok(Self(DEFAULT_AVATAR_COLOR.to_owned())) };
        let valid = raw.len() == 7 && raw.starts_with('#') && raw[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(ValidationError::new("avatar_color", "must be a colour like #FF5733"));
        }
        Ok(Self(raw.to_ascii_uppercase()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A participant as stored and as listed by the API.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Participant {
    #[serde(skip)]
    pub session_id: SessionId,
    pub user_id: UserId,
    pub display_name: String,
    pub avatar_color: String,
    #[serde(skip)]
    pub joined_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub is_active: bool,
    /// Which of the participant's tokens is current: a refresh moves it on, and older
    /// tokens no longer open sockets.
    #[serde(skip)]
    pub token_generation: i64,
    /// When the generation last moved on (None: never refreshed).
    #[serde(skip)]
    pub token_rotated_at: Option<DateTime<Utc>>,
    /// The participant's latest `share_settings`, from whichever socket sent them: kept
    /// after that socket closes, and applied to what their tracker apps report.
    #[serde(skip)]
    pub share: ShareSettings,
    /// Which of the participant's tracker URLs is current (replacing one moves it on).
    #[serde(skip)]
    pub tracker_generation: i64,
    /// Whether they have arrived at the session's meeting point.
    #[serde(skip)]
    pub arrived: bool,
}

/// How a participant shares their position (`share_settings`): coarsened to about 1 km,
/// or not at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareSettings {
    pub approximate: bool,
    pub paused: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_name_is_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ann ").unwrap().into_inner(), "Ann");
        assert!(DisplayName::parse(&"ü".repeat(100)).is_ok());
        for bad in ["", "   ", "a\u{0}b"] {
            assert_eq!(DisplayName::parse(bad).unwrap_err().field, "display_name");
        }
        assert!(DisplayName::parse(&"a".repeat(101)).is_err());
    }

    #[test]
    fn display_names_keep_their_emoji_and_lose_their_tricks() {
        for (raw, stored) in [
            ("Zoë 🚲", "Zoë 🚲"),
            ("Zoe\u{308}", "Zoë"), // decomposed: stored composed (NFC)
            ("👨\u{200D}👩\u{200D}👧\u{200D}👦 family", "👨\u{200D}👩\u{200D}👧\u{200D}👦 family"),
            ("👍🏽 ok", "👍🏽 ok"),
            ("🏳️\u{200D}🌈", "🏳️\u{200D}🌈"),
            (
                "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
                "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            ),
            ("مريم", "مريم"),
            ("李雷", "李雷"),
        ] {
            assert_eq!(DisplayName::parse(raw).unwrap().into_inner(), stored, "{raw:?}");
        }
        for bad in [
            "Ann\u{202E}nnA",      // right-to-left override
            "\u{2067}Bob\u{2069}", // isolates
            "Ann\u{200E}",         // left-to-right mark
            "A\u{200B}nn",         // zero-width space
            "An\u{200D}n",         // a joiner between letters
            "🚲\u{200D}",          // a joiner at the end
            "1\u{200D}2",          // digits are emoji only in keycaps
            "\u{FEFF}Ann",         // byte order mark
            "Ann\u{2028}Bob",      // line separator
            "Ann\u{E0041}",        // a tag outside a flag
            "\u{3164}",            // a Hangul filler: a name that shows as nothing
            "Ann\u{2800}",         // the braille blank
            "An\u{034F}n",         // combining grapheme joiner
            "Ann\u{FE0F}",         // a variation selector after a letter
        ] {
            let err = DisplayName::parse(bad).unwrap_err();
            assert_eq!(err.field, "display_name", "{bad:?}");
            assert!(err.message.contains("invisible"), "{bad:?}: {}", err.message);
        }
    }

    #[test]
    fn avatar_color_is_hex_rgb() {
        assert_eq!(AvatarColor::parse(None).unwrap().into_inner(), DEFAULT_AVATAR_COLOR);
        assert_eq!(AvatarColor::parse(Some("#00ff7a")).unwrap().into_inner(), "#00FF7A");
        for bad in ["red", "#FFF", "#GGGGGG", "FF5733F", "#FF57330", "#ÿÿÿ"] {
            assert_eq!(AvatarColor::parse(Some(bad)).unwrap_err().field, "avatar_color");
        }
    }
}
