//! Validated domain types and the rules they carry. No I/O here: everything in this module
//! is pure, so a value that exists has already passed its checks.

mod chat;
mod ids;
mod location;
mod meetup;
mod participant;
mod room;
mod session;
pub mod topic;

pub use chat::{ChatContent, ChatMessage, ChatRoom};
pub use ids::{SessionId, UserId};
pub use location::{
    APPROXIMATE_ACCURACY_M, BATCH_WINDOWS_MS, Location, LocationInput, MAX_BATCH_MS, MAX_CLOCK_SKEW_SECS,
    MIN_BATCH_MS, batch_window, distance_m,
};
pub use meetup::{
    Estimate, MAX_TRAIL_POINTS, MeetingPoint, MeetingPointBy, MeetingPointInput, Pace, Placement,
    TRAIL_ANSWER_POINTS, TRAIL_HARD_LIMIT, TRAIL_KEEP_DETAIL, Trail, TrailPoint,
};
pub use participant::{AvatarColor, DEFAULT_AVATAR_COLOR, DisplayName, Participant, ShareSettings};
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

/// A name people see (a display name, a session name): NFC-normalized, so one name has one
/// form, and without the invisible characters that make a name pass for another: control
/// characters, bidi overrides and isolates, and zero-width characters other than the
/// joiners and tags inside emoji sequences (family emoji, flags such as Scotland's).
fn name_text(field: &'static str, raw: &str, max: usize) -> Result<String, ValidationError> {
    use unicode_normalization::UnicodeNormalization;
    let normalized: String = raw.nfc().collect();
    let name = bounded_text(field, &normalized, max, &[])?;
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !is_invisible(c) {
            continue;
        }
        let emoji_before = i > 0 && is_emoji(chars[i - 1]);
        let allowed = match c {
            ZERO_WIDTH_JOINER => emoji_before && chars.get(i + 1).is_some_and(|&next| is_emoji(next)),
            // Text or emoji presentation of the emoji before it.
            '\u{FE0E}' | '\u{FE0F}' => emoji_before,
            // Tag sequences: U+1F3F4 followed by tags (subdivision flags).
            _ if unicode_properties::emoji::is_tag_character(c) => {
                i > 0
                    && (chars[i - 1] == '\u{1F3F4}'
                        || unicode_properties::emoji::is_tag_character(chars[i - 1]))
            }
            _ => false,
        };
        if !allowed {
            return Err(ValidationError::new(
                field,
                format!(
                    "must not contain invisible or direction-changing characters (U+{:04X} at character {})",
                    u32::from(c),
                    i + 1
                ),
            ));
        }
    }
    Ok(name)
}

const ZERO_WIDTH_JOINER: char = '\u{200D}';

/// Format characters (bidi controls, zero-width spaces and joiners, tags, the BOM), the
/// line and paragraph separators, and the letters and marks that draw nothing: Hangul
/// fillers, the braille blank, the combining grapheme joiner, Khmer's invisible vowels,
/// Mongolian variation selectors, and variation selectors (allowed after an emoji only).
fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
    ) || matches!(
        c,
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}' | '\u{034F}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'
    )
}

/// Part of an emoji: a pictograph, or a modifier or selector that follows one (not the
/// ASCII digits and signs that are emoji only in keycaps).
fn is_emoji(c: char) -> bool {
    use unicode_properties::UnicodeEmoji;
    !c.is_ascii() && c.is_emoji_char_or_emoji_component() && c != ZERO_WIDTH_JOINER
}

/// The current time, truncated to milliseconds: the precision every store keeps.
pub fn now() -> DateTime<Utc> {
    from_millis(Utc::now().timestamp_millis())
}

/// A timestamp from Unix milliseconds, clamped to chrono's range.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}
