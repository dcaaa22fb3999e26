//! Meeting up: the point a session's group is heading for, and who may set it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Location, UserId, ValidationError};

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
    /// The participant who set it; null when the creator did (with the creator token).
    pub set_by: Option<UserId>,
    pub set_at: DateTime<Utc>,
}

impl MeetingPoint {
    pub const MIN_RADIUS_M: f64 = 10.0;
    pub const MAX_RADIUS_M: f64 = 1_000.0;
    pub const DEFAULT_RADIUS_M: f64 = 50.0;
    pub const MAX_NAME_CHARS: usize = 100;

    pub fn parse(
        input: &MeetingPointInput,
        set_by: Option<UserId>,
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
        // Milliseconds: what every store keeps, so the point compares equal to itself read back.
        let set_at = chrono::SubsecRound::trunc_subsecs(set_at, 3);
        Ok(Self { lat: input.lat, lng: input.lng, name, radius_m, set_by, set_at })
    }
}

/// Where a fix lies for arrivals, its accuracy taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Within the radius, and precise enough to say so: arrived.
    Inside,
    /// Even the nearest point its accuracy allows is beyond 1.5 x the radius: left.
    Outside,
    /// In the ring between, or too vague to tell: changes nothing (no flapping at the edge).
    Between,
}

/// A fix counts as inside only if its accuracy is at most this, or the radius if larger.
pub const ARRIVAL_ACCURACY_M: f64 = 30.0;

impl MeetingPoint {
    /// Metres from the point to `at`, as the crow flies.
    pub fn distance_m(&self, at: &Location) -> f64 {
        super::distance_m(self.lat, self.lng, at.lat, at.lng)
    }

    pub fn placement(&self, at: &Location) -> Placement {
        let distance = self.distance_m(at);
        if distance <= self.radius_m && at.accuracy <= self.radius_m.max(ARRIVAL_ACCURACY_M) {
            Placement::Inside
        } else if distance - at.accuracy > 1.5 * self.radius_m {
            Placement::Outside
        } else {
            Placement::Between
        }
    }
}

/// Fixes less precise than this do not feed the speed an ETA is made from.
pub const PACE_ACCURACY_M: f64 = 50.0;
/// Speeds are measured over at least this many seconds (GPS jitter averages out).
pub const PACE_BASELINE_S: f64 = 5.0;
/// Slower than this (metres per second) is standing still: no ETA.
pub const STILL_MPS: f64 = 0.5;
/// How much a new speed moves the smoothed one.
const SMOOTHING: f64 = 0.5;

/// A participant's recent pace: their speed, smoothed over fixes precise enough to trust.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    /// The fix speeds are measured from: lat, lng, accuracy, time.
    last: Option<(f64, f64, f64, DateTime<Utc>)>,
    speed_mps: Option<f64>,
}

impl Pace {
    /// Takes a fix in: its own speed reading if it has one, else the distance from the
    /// last good fix at least PACE_BASELINE_S before it over the time between them; a move
    /// within the two fixes' accuracies is GPS jitter, not a move (speed 0).
    pub fn observe(&mut self, fix: &Location) {
        if fix.accuracy > PACE_ACCURACY_M {
            return;
        }
        let mut baseline_done = false;
        let measured = fix.speed.map(f64::from).or_else(|| {
            let (lat, lng, accuracy, at) = self.last?;
            let seconds = (fix.timestamp - at).num_milliseconds() as f64 / 1000.0;
            if seconds < PACE_BASELINE_S {
                return None;
            }
            baseline_done = true;
            let moved = super::distance_m(lat, lng, fix.lat, fix.lng);
            Some(if moved < (accuracy + fix.accuracy) / 2.0 { 0.0 } else { moved / seconds })
        });
        if self.last.is_none() || baseline_done || fix.speed.is_some() {
            self.last = Some((fix.lat, fix.lng, fix.accuracy, fix.timestamp));
        }
        if let Some(speed) = measured.filter(|s| s.is_finite() && *s >= 0.0) {
            self.speed_mps = Some(self.speed_mps.map_or(speed, |old| old + SMOOTHING * (speed - old)));
        }
    }

    /// Seconds to cover `distance_m` at this pace: None when still or unknown.
    pub fn eta_s(&self, distance_m: f64) -> Option<u64> {
        let speed = self.speed_mps.filter(|s| *s >= STILL_MPS)?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, >= 0
        Some((distance_m / speed).round() as u64)
    }
}

/// An estimate of a participant's way to the meeting point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Metres left to the edge of the point's circle, as the crow flies.
    pub distance_m: f64,
    /// Seconds at their recent pace; None when still or unknown.
    pub eta_s: Option<u64>,
}

impl Estimate {
    /// Whether `self` is worth telling after `told`: the first one, an ETA that appeared
    /// or went, or one that moved by more than a minute or by more than 10 %.
    pub fn worth_telling(&self, told: Option<&Estimate>) -> bool {
        let Some(told) = told else { return true };
        match (told.eta_s, self.eta_s) {
            (Some(before), Some(now)) => {
                let change = before.abs_diff(now);
                change > 60 || change as f64 > 0.1 * before as f64
            }
            // No pace: told again when the distance moved by more than 10 %.
            (None, None) => (self.distance_m - told.distance_m).abs() > 0.1 * told.distance_m,
            _ => true,
        }
    }
}

/// One point of a participant's trail.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrailPoint {
    pub lat: f64,
    pub lng: f64,
    pub at: DateTime<Utc>,
}

/// A participant's trail, as the API gives it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Trail {
    pub user_id: UserId,
    pub display_name: String,
    /// Oldest first.
    pub points: Vec<TrailPoint>,
}

/// Trails keep a fix when it moved at least this far from the last one kept...
pub const TRAIL_MIN_MOVE_M: f64 = 10.0;
/// ...or this long passed since.
pub const TRAIL_MIN_GAP: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// Past this many points a participant's trail loses every other point older than
/// TRAIL_KEEP_DETAIL (the oldest half of its detail).
pub const MAX_TRAIL_POINTS: u32 = 2_000;
pub const TRAIL_KEEP_DETAIL: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// A trail that cannot be thinned (all of it in the last hour) stops growing here.
pub const TRAIL_HARD_LIMIT: u32 = 2 * MAX_TRAIL_POINTS;
/// Points per trail in an answer (`/trails`, `get_trails`): more are evenly left out, the
/// first and the last kept. The GPX file has them all.
pub const TRAIL_ANSWER_POINTS: usize = 200;

impl Trail {
    /// At most `limit` of its points, evenly spread, the first and the last kept.
    pub fn sampled(mut self, limit: usize) -> Self {
        let n = self.points.len();
        if n > limit && limit >= 2 {
            let step = (n - 1) as f64 / (limit - 1) as f64;
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..n
            let picked =
                (0..limit).map(|i| self.points[((i as f64 * step).round() as usize).min(n - 1)]).collect();
            self.points = picked;
        }
        self
    }
}

impl TrailPoint {
    pub fn of(fix: &Location) -> Self {
        Self { lat: fix.lat, lng: fix.lng, at: fix.timestamp }
    }

    /// Whether `fix` goes on a trail whose last point is `self`: newer, and moved or later.
    pub fn is_followed_by(&self, fix: &Location) -> bool {
        fix.timestamp > self.at
            && (super::distance_m(self.lat, self.lng, fix.lat, fix.lng) >= TRAIL_MIN_MOVE_M
                || fix.timestamp - self.at >= TRAIL_MIN_GAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(lat: f64, lng: f64, name: Option<&str>, radius_m: Option<f64>) -> MeetingPointInput {
        MeetingPointInput { lat, lng, name: name.map(str::to_owned), radius_m }
    }

    fn fix(lat: f64, lng: f64, accuracy: f64, seconds: i64) -> Location {
        Location::at(lat, lng, accuracy, DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap())
    }

    /// 0.001 degree of latitude is 111.2 m.
    fn point(radius_m: f64) -> MeetingPoint {
        let input = MeetingPointInput { lat: 48.0, lng: 2.0, name: None, radius_m: Some(radius_m) };
        MeetingPoint::parse(&input, None, Utc::now()).unwrap()
    }

    #[test]
    fn arrival_has_hysteresis_and_takes_accuracy_into_account() {
        let gate = point(50.0);
        assert_eq!(gate.placement(&fix(48.0004, 2.0, 10.0, 0)), Placement::Inside); // 44 m
        assert_eq!(gate.placement(&fix(48.0004, 2.0, 80.0, 0)), Placement::Between, "too vague");
        assert_eq!(gate.placement(&fix(48.0006, 2.0, 5.0, 0)), Placement::Between, "67 m: the ring");
        assert_eq!(gate.placement(&fix(48.0007, 2.0, 5.0, 0)), Placement::Between, "78 m - 5 m < 75 m");
        assert_eq!(gate.placement(&fix(48.0008, 2.0, 5.0, 0)), Placement::Outside); // 89 m - 5
        assert_eq!(gate.placement(&fix(48.0008, 2.0, 20.0, 0)), Placement::Between, "could be 69 m");
        // A small radius still lets a phone's usual 20-30 m fix arrive.
        assert_eq!(point(10.0).placement(&fix(48.00005, 2.0, 25.0, 0)), Placement::Inside);
    }

    #[test]
    fn the_pace_is_smoothed_from_good_fixes_and_still_means_no_eta() {
        let mut pace = Pace::default();
        assert_eq!(pace.eta_s(1000.0), None, "unknown");
        pace.observe(&fix(48.0, 2.0, 10.0, 0));
        pace.observe(&fix(48.001, 2.0, 10.0, 100)); // 111 m in 100 s
        assert_eq!(pace.eta_s(1112.0), Some(1000));
        pace.observe(&fix(49.0, 2.0, 500.0, 110)); // a poor fix: ignored
        assert_eq!(pace.eta_s(1112.0), Some(1000));
        pace.observe(&Location { speed: Some(3.336), ..fix(48.002, 2.0, 10.0, 200) }); // its own speed
        assert_eq!(pace.eta_s(1112.0), Some(500), "smoothed: (1.112 + 3.336) / 2");
        for t in [300, 400, 500, 600] {
            pace.observe(&fix(48.002, 2.0, 10.0, t));
        }
        assert_eq!(pace.eta_s(1112.0), None, "standing still");
    }

    /// A phone lying still reports fixes a few metres apart every second: that is not a
    /// walk to the meeting point.
    #[test]
    fn gps_jitter_is_not_a_pace() {
        let mut pace = Pace::default();
        for t in 0..60 {
            let north = if t % 2 == 0 { 0.0 } else { 0.00007 }; // 8 m back and forth
            pace.observe(&fix(48.0 + north, 2.0, 12.0, t));
        }
        assert_eq!(pace.eta_s(1000.0), None);
    }

    #[test]
    fn an_estimate_is_told_when_it_moves_by_a_minute_or_a_tenth() {
        let at = |eta_s| Estimate { distance_m: 1000.0, eta_s };
        assert!(at(Some(600)).worth_telling(None));
        assert!(!at(Some(650)).worth_telling(Some(&at(Some(600)))));
        assert!(at(Some(661)).worth_telling(Some(&at(Some(600)))));
        assert!(at(Some(80)).worth_telling(Some(&at(Some(100)))), "a tenth of a short one");
        assert!(at(None).worth_telling(Some(&at(Some(100)))));
        assert!(!at(None).worth_telling(Some(&at(None))));
        let far = Estimate { distance_m: 1200.0, eta_s: None };
        assert!(far.worth_telling(Some(&at(None))), "no pace, but 20 % further");
    }

    #[test]
    fn an_answer_samples_a_long_trail_keeping_its_ends() {
        let points: Vec<_> =
            (0..1000).map(|i| TrailPoint::of(&fix(48.0 + f64::from(i) / 1e4, 2.0, 5.0, i.into()))).collect();
        let trail =
            Trail { user_id: UserId(uuid::Uuid::nil()), display_name: "Ann".into(), points: points.clone() };
        let sampled = trail.sampled(200);
        assert_eq!(sampled.points.len(), 200);
        assert_eq!((sampled.points[0], sampled.points[199]), (points[0], points[999]));
        assert!(sampled.points.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn a_trail_keeps_a_fix_that_moved_10_m_or_came_30_s_later() {
        let last = TrailPoint::of(&fix(48.0, 2.0, 5.0, 0));
        assert!(!last.is_followed_by(&fix(48.00005, 2.0, 5.0, 10)), "6 m, 10 s");
        assert!(last.is_followed_by(&fix(48.0001, 2.0, 5.0, 10)), "11 m");
        assert!(last.is_followed_by(&fix(48.0, 2.0, 5.0, 30)), "30 s");
        assert!(!last.is_followed_by(&fix(48.01, 2.0, 5.0, -5)), "older");
    }

    #[test]
    fn a_point_is_checked_and_gets_the_default_radius() {
        let (by, at) = (Some(UserId(uuid::Uuid::nil())), Utc::now());
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
