//! A position report: where a participant is, how sure the device is, and when.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::ValidationError;

/// How far in the future a client's timestamp may be (phone clocks drift).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// A location as a client sends it, before validation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct LocationInput {
    pub lat: f64,
    pub lng: f64,
    pub accuracy: f64,
    /// RFC 3339; when absent the server's receipt time is used.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Optional readings of the device, each broadcast when given: metres per second,
    /// 0 to 1,000.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Degrees clockwise from true north, 0 to 360.
    #[serde(default)]
    pub heading: Option<f64>,
    /// Metres above sea level, -1,000 to 100,000.
    #[serde(default)]
    pub altitude: Option<f64>,
    /// Battery level in percent, 0 to 100.
    #[serde(default)]
    pub battery: Option<f64>,
    #[serde(default)]
    pub charging: Option<bool>,
}

/// A validated location. `accuracy` is in metres (the wire name is the seeds').
///
/// The device's readings past the seeds' four fields are optional and sent only when known
/// (tracker apps report them; clients that do not know them ignore them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Location {
    pub lat: f64,
    pub lng: f64,
    pub accuracy: f64,
    pub timestamp: DateTime<Utc>,
    /// Ground speed in metres per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
    /// Course over ground in degrees clockwise from true north, 0 to 360.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f32>,
    /// Metres above sea level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f32>,
    /// The device's battery level in percent, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    /// Whether the device is charging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
}

/// `batch_ms`, the opt-in batched delivery of a `/ws` connection: others' positions
/// gathered for this long and sent as one `location_batch`. 0 (the default) sends each as
/// its own `location_broadcast`, as the seeds define it.
pub const MIN_BATCH_MS: u64 = 10;
pub const MAX_BATCH_MS: u64 = 1000;

/// The windows served: a `batch_ms` in range is rounded down to one of them, so one
/// session's members cannot make its positions be gathered for hundreds of windows.
pub const BATCH_WINDOWS_MS: [u64; 7] = [10, 25, 50, 100, 250, 500, 1000];

/// The batching window `batch_ms` asks for: None for 0 (off).
pub fn batch_window(batch_ms: u64) -> Result<Option<std::time::Duration>, ValidationError> {
    match batch_ms {
        0 => Ok(None),
        MIN_BATCH_MS..=MAX_BATCH_MS => {
            let window =
                BATCH_WINDOWS_MS.iter().rev().find(|w| **w <= batch_ms).copied().unwrap_or(MIN_BATCH_MS);
            Ok(Some(std::time::Duration::from_millis(window)))
        }
        _ => Err(ValidationError::new(
            "batch_ms",
            format!("must be 0 (each position on its own) or between {MIN_BATCH_MS} and {MAX_BATCH_MS}"),
        )),
    }
}

/// Metres between two points (haversine on the mean Earth radius).
pub fn distance_m(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lng2 - lng1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// The plausible range of each optional reading of a device: a client's out of it is
/// refused, a tracker app's left out (apps send placeholders such as -1 for "unknown").
const SPEED_MPS: (f64, f64) = (0.0, 1_000.0);
const HEADING_DEG: (f64, f64) = (0.0, 360.0);
const ALTITUDE_M: (f64, f64) = (-1_000.0, 100_000.0);
const BATTERY_PERCENT: (f64, f64) = (0.0, 100.0);

/// The accuracy an approximate position claims: it covers its whole cell (the half
/// diagonal of a geohash-6 cell is at most ~0.7 km).
pub const APPROXIMATE_ACCURACY_M: f64 = 700.0;

impl Location {
    /// The position coarsened to about 1 km (`share_settings {precision: "approximate"}`):
    /// the centre of its geohash-6 cell, the local-room grid (0.61 km north-south by 1.22 km
    /// east-west at the equator), with an accuracy that covers the cell. Everyone in the cell
    /// shows at the same point.
    /// None (nothing to share) if it has no cell: never for a parsed location.
    pub fn approximate(&self) -> Option<Self> {
        let (lat, lng) = super::RoomId::at(self.lat, self.lng).ok()?.centre();
        // Speed, heading and altitude would narrow the cell down: only the battery stays.
        Some(Self {
            battery: self.battery,
            charging: self.charging,
            ..Self::at(lat, lng, self.accuracy.max(APPROXIMATE_ACCURACY_M), self.timestamp)
        })
    }

    /// A position with none of the optional readings.
    pub fn at(lat: f64, lng: f64, accuracy: f64, timestamp: DateTime<Utc>) -> Self {
        Self {
            lat,
            lng,
            accuracy,
            timestamp,
            speed: None,
            heading: None,
            altitude: None,
            battery: None,
            charging: None,
        }
    }

    pub fn parse(input: &LocationInput, now: DateTime<Utc>) -> Result<Self, ValidationError> {
        let timestamp = match &input.timestamp {
            None => now,
            Some(raw) => DateTime::parse_from_rfc3339(raw)
                .map_err(|_| ValidationError::new("timestamp", "must be an RFC 3339 date-time"))?
                .with_timezone(&Utc),
        };
        let location = Self::checked(input.lat, input.lng, input.accuracy, timestamp, now)?;
        // A client's readings are checked, not filtered as tracker apps' placeholders are.
        for (field, value, range) in [
            ("speed", input.speed, SPEED_MPS),
            ("heading", input.heading, HEADING_DEG),
            ("altitude", input.altitude, ALTITUDE_M),
            ("battery", input.battery, BATTERY_PERCENT),
        ] {
            let (low, high) = range;
            if value.is_some_and(|v| !(v.is_finite() && (low..=high).contains(&v))) {
                return Err(ValidationError::new(field, format!("must be between {low} and {high}")));
            }
        }
        Ok(location.with_readings(input.speed, input.heading, input.altitude, input.battery, input.charging))
    }

    /// A position with none of the optional readings, if its parts are valid: coordinates
    /// in range, a finite accuracy >= 0, a time not more than MAX_CLOCK_SKEW_SECS ahead of
    /// `now`.
    pub fn checked(
        lat: f64,
        lng: f64,
        accuracy: f64,
        timestamp: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return Err(ValidationError::new("lat", "must be between -90 and 90"));
        }
        if !(lng.is_finite() && (-180.0..=180.0).contains(&lng)) {
            return Err(ValidationError::new("lng", "must be between -180 and 180"));
        }
        if !(accuracy.is_finite() && accuracy >= 0.0) {
            return Err(ValidationError::new("accuracy", "must be a finite number of metres >= 0"));
        }
        if timestamp > now + Duration::seconds(MAX_CLOCK_SKEW_SECS) {
            return Err(ValidationError::new(
                "timestamp",
                format!("must not be more than {MAX_CLOCK_SKEW_SECS} s in the future"),
            ));
        }
        Ok(Self::at(lat, lng, accuracy, timestamp))
    }

    /// The same position with the device's readings that are plausible (a speed >= 0, a
    /// heading of 0 to 360, an altitude of -1 km to 100 km, a battery of 0 to 100 %);
    /// the others are left out, as apps send placeholders such as -1 for "unknown".
    #[must_use]
    pub fn with_readings(
        mut self,
        speed: Option<f64>,
        heading: Option<f64>,
        altitude: Option<f64>,
        battery: Option<f64>,
        charging: Option<bool>,
    ) -> Self {
        let within = |value: Option<f64>, (low, high): (f64, f64)| {
            #[allow(clippy::cast_possible_truncation)] // in range: an f32 holds it
            value.filter(|v| v.is_finite() && (low..=high).contains(v)).map(|v| v as f32)
        };
        self.speed = within(speed, SPEED_MPS);
        self.heading = within(heading, HEADING_DEG);
        self.altitude = within(altitude, ALTITUDE_M);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=100
        {
            self.battery = within(battery, BATTERY_PERCENT).map(|b| b.round() as u8);
        }
        self.charging = charging;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_readings_are_kept_or_refused_naming_them() {
        let now = Utc::now();
        let with = |speed, battery| LocationInput {
            speed,
            battery,
            charging: Some(true),
            ..input(1.0, 2.0, 5.0, None)
        };
        let kept = Location::parse(&with(Some(1.5), Some(17.4)), now).unwrap();
        assert_eq!((kept.speed, kept.battery, kept.charging), (Some(1.5), Some(17), Some(true)));
        assert_eq!(Location::parse(&with(Some(-1.0), None), now).unwrap_err().field, "speed");
        assert_eq!(Location::parse(&with(None, Some(101.0)), now).unwrap_err().field, "battery");
        assert_eq!(Location::parse(&with(None, Some(f64::NAN)), now).unwrap_err().field, "battery");
    }

    #[test]
    fn a_batch_window_is_rounded_down_to_one_served() {
        let window = |ms| batch_window(ms).map(|w| w.map(|d| d.as_millis()));
        assert_eq!(window(0), Ok(None));
        for (asked, served) in
            [(10, 10), (24, 10), (99, 50), (100, 100), (300, 250), (999, 500), (1000, 1000)]
        {
            assert_eq!(window(asked), Ok(Some(served)), "batch_ms={asked}");
        }
        for bad in [1, 9, 1001, u64::MAX] {
            assert!(window(bad).unwrap_err().to_string().contains("batch_ms"), "batch_ms={bad}");
        }
    }

    #[test]
    fn distances_and_approximations() {
        // One degree of latitude is ~111 km; Paris to London ~344 km.
        assert!((distance_m(0.0, 0.0, 1.0, 0.0) - 111_195.0).abs() < 10.0);
        assert!((distance_m(48.8566, 2.3522, 51.5074, -0.1278) - 343_500.0).abs() < 1_000.0);
        assert_eq!(distance_m(10.0, 20.0, 10.0, 20.0), 0.0);
        let exact = Location::at(48.85661, 2.35222, 5.0, Utc::now());
        let coarse = exact.approximate().unwrap();
        assert!(distance_m(exact.lat, exact.lng, coarse.lat, coarse.lng) <= APPROXIMATE_ACCURACY_M);
        assert_ne!((coarse.lat, coarse.lng), (exact.lat, exact.lng));
        assert_eq!(coarse.accuracy, APPROXIMATE_ACCURACY_M);
        // Nearby points in the same cell become the same point.
        let nearby = Location { lat: 48.85662, lng: 2.35224, ..exact }.approximate().unwrap();
        assert_eq!((nearby.lat, nearby.lng), (coarse.lat, coarse.lng));
    }

    fn input(lat: f64, lng: f64, accuracy: f64, timestamp: Option<&str>) -> LocationInput {
        LocationInput {
            lat,
            lng,
            accuracy,
            timestamp: timestamp.map(str::to_owned),
            speed: None,
            heading: None,
            altitude: None,
            battery: None,
            charging: None,
        }
    }

    #[test]
    fn accepts_the_edges_of_the_globe() {
        let now = Utc::now();
        for (lat, lng) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)] {
            assert!(Location::parse(&input(lat, lng, 0.0, None), now).is_ok());
        }
    }

    #[test]
    fn refuses_out_of_range_and_non_finite_values() {
        let now = Utc::now();
        let cases = [
            (input(90.1, 0.0, 1.0, None), "lat"),
            (input(f64::NAN, 0.0, 1.0, None), "lat"),
            (input(0.0, -180.5, 1.0, None), "lng"),
            (input(0.0, 0.0, -1.0, None), "accuracy"),
            (input(0.0, 0.0, f64::INFINITY, None), "accuracy"),
            (input(0.0, 0.0, 1.0, Some("yesterday")), "timestamp"),
        ];
        for (case, field) in cases {
            assert_eq!(Location::parse(&case, now).unwrap_err().field, field);
        }
    }

    #[test]
    fn refuses_timestamps_far_in_the_future() {
        let now = Utc::now();
        let soon = (now + Duration::seconds(10)).to_rfc3339();
        let far = (now + Duration::hours(2)).to_rfc3339();
        assert!(Location::parse(&input(1.0, 1.0, 1.0, Some(&soon)), now).is_ok());
        assert_eq!(Location::parse(&input(1.0, 1.0, 1.0, Some(&far)), now).unwrap_err().field, "timestamp");
    }
}
