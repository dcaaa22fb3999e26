//! Meeting up: the point a session's group is heading for, and who may set it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{UserId, ValidationError};

/// Who may set, move or clear a session's meeting point (chosen when it is created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeetingPointBy {
    /// Only the creator (with the creator token).
    #[default]
    Creator,
    /// The creator and every participant.
    Anyone,
}

impl MeetingPointBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creator => "creator",
            Self::Anyone => "anyone",
        }
    }

    /// The stored text back; anything else is the default.
    pub fn from_stored(text: &str) -> Self {
        if text == "anyone" { Self::Anyone } else { Self::Creator }
    }
}

/// A meeting point as a client sends it, before validation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeetingPointInput {
    pub lat: f64,
    pub lng: f64,
    /// What to call it ("the north gate"): 1 to 100 characters; absent, it has none.
    #[serde(default)]
    pub name: Option<String>,
    /// Metres, 10 to 1,000: within it a participant has arrived. Default 50.
    #[serde(default)]
    pub radius_m: Option<f64>,
}

/// A session's meeting point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeetingPoint {
    pub lat: f64,
    pub lng: f64,
    pub name: Option<String>,
    pub radius_m: f64,
    /// Who set it: a participant's user id, or the creator's id (the `sub` of the creator
    /// token).
    pub set_by: UserId,
    pub set_at: DateTime<Utc>,
}

impl MeetingPoint {
    pub const MIN_RADIUS_M: f64 = 10.0;
    pub const MAX_RADIUS_M: f64 = 1_000.0;
    pub const DEFAULT_RADIUS_M: f64 = 50.0;
    pub const MAX_NAME_CHARS: usize = 100;

    pub fn parse(
        input: &MeetingPointInput,
        set_by: UserId,
        set_at: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        if !(input.lat.is_finite() && (-90.0..=90.0).contains(&input.lat)) {
            return Err(ValidationError::new("lat", "must be between -90 and 90"));
        }
        if !(input.lng.is_finite() && (-180.0..=180.0).contains(&input.lng)) {
            return Err(ValidationError::new("lng", "must be between -180 and 180"));
        }
        let radius_m = input.radius_m.unwrap_or(Self::DEFAULT_RADIUS_M);
        if !(radius_m.is_finite() && (Self::MIN_RADIUS_M..=Self::MAX_RADIUS_M).contains(&radius_m)) {
            return Err(ValidationError::new("radius_m", "must be between 10 and 1000 metres"));
        }
        let name = match input.name.as_deref() {
            None => None,
            Some(raw) if raw.trim().is_empty() => None,
            Some(raw) => Some(super::name_text("name", raw, Self::MAX_NAME_CHARS)?),
        };
        Ok(Self { lat: input.lat, lng: input.lng, name, radius_m, set_by, set_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(lat: f64, lng: f64, name: Option<&str>, radius_m: Option<f64>) -> MeetingPointInput {
        MeetingPointInput { lat, lng, name: name.map(str::to_owned), radius_m }
    }

    #[test]
    fn a_point_is_checked_and_gets_the_default_radius() {
        let (by, at) = (UserId(uuid::Uuid::nil()), Utc::now());
        let point = MeetingPoint::parse(&input(48.85, 2.35, Some("  North gate "), None), by, at).unwrap();
        assert_eq!((point.name.as_deref(), point.radius_m), (Some("North gate"), 50.0));
        assert_eq!(
            MeetingPoint::parse(&input(48.85, 2.35, Some("  "), Some(10.0)), by, at).unwrap().name,
            None
        );
        for (bad, field) in [
            (input(91.0, 0.0, None, None), "lat"),
            (input(0.0, f64::NAN, None, None), "lng"),
            (input(0.0, 0.0, None, Some(9.9)), "radius_m"),
            (input(0.0, 0.0, None, Some(1000.5)), "radius_m"),
            (input(0.0, 0.0, Some(&"x".repeat(101)), None), "name"),
            (input(0.0, 0.0, Some("a\u{202E}b"), None), "name"),
        ] {
            assert_eq!(MeetingPoint::parse(&bad, by, at).unwrap_err().field, field);
        }
    }
}
