//! What tracker apps send, read into positions: OwnTracks in HTTP mode (its JSON messages),
//! the OsmAnd protocol that Traccar Client, OsmAnd and GPSLogger speak (query or form
//! parameters), and Traccar Client's JSON body. One tracker URL serves them all: the request
//! tells them apart (`read`).
//!
//! Units are the apps' own and are turned into convoy's: OwnTracks' `vel` is km/h, the
//! OsmAnd protocol's `speed` knots (`speed_mps`, for GPSLogger's `%SPD`, metres per second),
//! Traccar Client's JSON `speed` metres per second; every `speed` convoy sends is m/s.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::Location;

/// The path tracker URLs start with: `{PUBLIC_URL}/t/{token}`.
pub const TRACKER_PATH: &str = "/t";

/// The accuracy given to a fix whose app did not report one (metres): a phone's GPS fix
/// outdoors is usually better, a network fix worse.
pub const UNKNOWN_ACCURACY_M: f64 = 100.0;

/// Messages a request may carry (an OwnTracks queue posted as one array; the app posts one
/// message a request, and 64 KiB of body hold about 250).
pub const MAX_FIXES: usize = 200;
/// Characters of a refused value echoed in a refusal (which is logged).
const ECHOED_CHARS: usize = 32;

const KNOT_IN_MPS: f64 = 1852.0 / 3600.0;
const KMH_IN_MPS: f64 = 1.0 / 3.6;

/// The app protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    OwnTracks,
    /// Traccar Client 9's JSON body.
    TraccarJson,
    /// Query or form parameters: Traccar Client's older versions, OsmAnd, GPSLogger.
    OsmAnd,
}

impl App {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            App::OwnTracks => "owntracks",
            App::TraccarJson => "traccar_json",
            App::OsmAnd => "osmand",
        }
    }
}

/// What a request reported: the valid fixes, and why the others were refused.
#[derive(Debug, Default)]
pub struct Report {
    pub fixes: Vec<Location>,
    pub refused: Vec<String>,
    /// Messages of other kinds, read and let go (OwnTracks' `transition`, `waypoint`, ...).
    pub ignored: usize,
    /// The request holds no readable position at all (no `lat` and `lon`, or a body of no
    /// known shape), as opposed to a position refused for its values.
    pub unreadable: bool,
}

/// Why one position was not taken.
struct Refusal {
    why: String,
    /// Nothing in the request reads as a position.
    unreadable: bool,
}

impl Refusal {
    fn unreadable(why: impl Into<String>) -> Self {
        Self { why: why.into(), unreadable: true }
    }

    fn invalid(why: impl Into<String>) -> Self {
        Self { why: why.into(), unreadable: false }
    }
}

/// A value as a refusal may quote it: at most ECHOED_CHARS characters.
fn echo(value: &str) -> String {
    let mut cut: String = value.chars().take(ECHOED_CHARS).collect();
    if cut.len() < value.len() {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

/// Reads a request: a JSON body (`body`, when it parsed as JSON) or the parameters (query
/// and form, in that order).
pub fn read(json: Option<&Value>, params: &[(String, String)], now: DateTime<Utc>) -> (App, Report) {
    match json {
        Some(body @ (Value::Array(_) | Value::Object(_))) if is_owntracks(body) => {
            (App::OwnTracks, owntracks(body, now))
        }
        Some(Value::Object(object)) if object.contains_key("location") => {
            (App::TraccarJson, one(traccar_json(object, now)))
        }
        Some(_) if params.iter().all(|(name, _)| name != "lat") => (
            App::TraccarJson,
            one(Err(Refusal::unreadable(
                "expected Traccar Client's {\"location\": {...}} or OwnTracks' JSON",
            ))),
        ),
        _ => (App::OsmAnd, one(osmand(params, now))),
    }
}

fn one(fix: Result<Location, Refusal>) -> Report {
    match fix {
        Ok(fix) => Report { fixes: vec![fix], ..Report::default() },
        Err(Refusal { why, unreadable }) => Report { refused: vec![why], unreadable, ..Report::default() },
    }
}

fn is_owntracks(body: &Value) -> bool {
    match body {
        Value::Object(object) => object.contains_key("_type"),
        Value::Array(items) => items.iter().all(|item| item.get("_type").is_some()),
        _ => false,
    }
}

/// OwnTracks' messages: one object, or an array of them (its offline queue). Each
/// `location` is a fix; other `_type`s are ignored; at most MAX_FIXES are read.
fn owntracks(body: &Value, now: DateTime<Utc>) -> Report {
    let items = match body {
        Value::Array(items) => items.as_slice(),
        one => std::slice::from_ref(one),
    };
    let mut report = Report::default();
    for (i, item) in items.iter().enumerate() {
        if i == MAX_FIXES {
            report.refused.push(format!("more than {MAX_FIXES} messages: the rest were not read"));
            break;
        }
        match item.get("_type").and_then(Value::as_str) {
            Some("location") => {}
            Some("encrypted") => {
                report
                    .refused
                    .push(format!("[{i}] encrypted payloads are not supported: turn encryption off"));
                continue;
            }
            _ => {
                report.ignored += 1;
                continue;
            }
        }
        match owntracks_location(item, now) {
            Ok(fix) => report.fixes.push(fix),
            Err(why) => report.refused.push(format!("[{i}] {why}")),
        }
    }
    report
}

fn owntracks_location(item: &Value, now: DateTime<Utc>) -> Result<Location, String> {
    let number = |name: &str| item.get(name).and_then(Value::as_f64);
    let (Some(lat), Some(lon)) = (number("lat"), number("lon")) else {
        return Err("a location needs numbers lat and lon".into());
    };
    let at = match item.get("tst") {
        None => now,
        Some(tst) => {
            tst.as_i64().and_then(|s| DateTime::from_timestamp(s, 0)).ok_or("tst: must be epoch seconds")?
        }
    };
    let fix = Location::checked(lat, lon, accuracy_or_unknown(number("acc")), at, now)
        .map_err(|e| e.to_string())?;
    // `bs`: 0 unknown, 1 unplugged, 2 charging, 3 full (and plugged in).
    let charging = item.get("bs").and_then(Value::as_i64).and_then(|bs| match bs {
        1 => Some(false),
        2 | 3 => Some(true),
        _ => None,
    });
    Ok(fix.with_readings(
        number("vel").map(|v| v * KMH_IN_MPS),
        number("cog"),
        number("alt"),
        number("batt"),
        charging,
    ))
}

/// Traccar Client 9: `{"location": {"timestamp", "coords": {...}, "battery": {...}}, "device_id"}`.
fn traccar_json(object: &serde_json::Map<String, Value>, now: DateTime<Utc>) -> Result<Location, Refusal> {
    let location = object.get("location").ok_or_else(|| Refusal::unreadable("location: missing"))?;
    let coords = location.get("coords").ok_or_else(|| Refusal::unreadable("location.coords: missing"))?;
    let number = |name: &str| coords.get(name).and_then(Value::as_f64);
    let (Some(lat), Some(lng)) = (number("latitude"), number("longitude")) else {
        return Err(Refusal::unreadable("location.coords: needs numbers latitude and longitude"));
    };
    let at = match location.get("timestamp") {
        None => now,
        Some(Value::String(raw)) => parse_time(raw)
            .ok_or_else(|| Refusal::invalid(format!("location.timestamp: not a date-time: {}", echo(raw))))?,
        Some(Value::Number(n)) => {
            n.as_f64().and_then(epoch).ok_or_else(|| Refusal::invalid("location.timestamp: not a time"))?
        }
        Some(_) => return Err(Refusal::invalid("location.timestamp: not a date-time")),
    };
    let fix = Location::checked(lat, lng, accuracy_or_unknown(number("accuracy")), at, now)
        .map_err(|e| Refusal::invalid(format!("location.coords.{e}")))?;
    let battery = location.get("battery");
    let level = battery.and_then(|b| b.get("level")).and_then(Value::as_f64).map(|l| l * 100.0);
    let charging = battery.and_then(|b| b.get("is_charging")).and_then(Value::as_bool);
    Ok(fix.with_readings(number("speed"), number("heading"), number("altitude"), level, charging))
}

/// An accuracy as reported, or UNKNOWN_ACCURACY_M when there is none or it is negative
/// (iOS reports -1 for "invalid").
fn accuracy_or_unknown(accuracy: Option<f64>) -> f64 {
    accuracy.filter(|a| *a >= 0.0).unwrap_or(UNKNOWN_ACCURACY_M)
}

/// The OsmAnd protocol: `lat`, `lon`, `timestamp` (epoch seconds or milliseconds, or ISO
/// 8601), `speed` (knots), `bearing`, `altitude`, `accuracy`, `batt`, `charge`; GPSLogger's
/// `speed_mps` (m/s) in place of `speed`. `id` and the rest are ignored: the tracker URL
/// says who this is.
fn osmand(params: &[(String, String)], now: DateTime<Utc>) -> Result<Location, Refusal> {
    let text =
        |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty());
    // Optional readings that do not parse are left out, as out-of-range ones are.
    let reading = |name: &str| text(name).and_then(|v| v.parse::<f64>().ok());
    let coordinate = |name: &str| match text(name) {
        None => Err(Refusal::unreadable("expected the parameters lat and lon (OsmAnd protocol)")),
        Some(v) => {
            v.parse::<f64>().map_err(|_| Refusal::unreadable(format!("{name}: not a number: {}", echo(v))))
        }
    };
    // `location=<lat>,<lon>` is what some OsmAnd-protocol devices send instead.
    let (lat, lng) = match (text("lat"), text("lon"), text("location").and_then(|l| l.split_once(','))) {
        (None, None, Some((lat, lon))) => {
            let number = |v: &str| v.trim().parse::<f64>().ok();
            number(lat)
                .zip(number(lon))
                .ok_or_else(|| Refusal::unreadable(format!("location: not <lat>,<lon>: {}", echo(lat))))?
        }
        _ => (coordinate("lat")?, coordinate("lon")?),
    };
    let at = match text("timestamp") {
        None => now,
        Some(raw) => {
            raw.parse::<f64>().ok().and_then(epoch).or_else(|| parse_time(raw)).ok_or_else(|| {
                Refusal::invalid(format!(
                    "timestamp: not epoch seconds, milliseconds or ISO 8601: {}",
                    echo(raw)
                ))
            })?
        }
    };
    let fix = Location::checked(lat, lng, accuracy_or_unknown(reading("accuracy")), at, now)
        .map_err(|e| Refusal::invalid(e.to_string()))?;
    let speed = reading("speed_mps").or_else(|| reading("speed").map(|knots| knots * KNOT_IN_MPS));
    let charging = text("charge").and_then(|c| match c {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    });
    let heading = reading("bearing").or_else(|| reading("heading"));
    Ok(fix.with_readings(speed, heading, reading("altitude"), reading("batt"), charging))
}

/// A two-character tracker id (OwnTracks' `tid`) for each name, unique among them, in
/// order: the initials of the first two words, else the first letter and a later one, or a
/// digit, else two base-36 characters (1,296 of them: past that, ids repeat).
pub fn tracker_ids<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken: std::collections::HashSet<[char; 2]> = std::collections::HashSet::new();
    let mut ids = Vec::new();
    let base36 = |n: usize| {
        char::from_digit(u32::try_from(n % 36).unwrap_or(0), 36).unwrap_or('0').to_ascii_uppercase()
    };
    for (index, name) in names.into_iter().enumerate() {
        let letters: Vec<char> = name
            .chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .flat_map(char::to_uppercase)
            .collect();
        let words: Vec<&[char]> = letters.split(|c| c.is_whitespace()).filter(|w| !w.is_empty()).collect();
        let alnum: Vec<char> = letters.iter().copied().filter(|c| !c.is_whitespace()).collect();
        let first = alnum.first().copied().unwrap_or('X');
        let initials = match words.as_slice() {
            [one, two, ..] => Some([one[0], two[0]]),
            _ => None,
        };
        // Tried in order, lazily: the first free one is taken.
        let mut candidates = initials
            .into_iter()
            .chain(alnum.iter().skip(1).map(|&c| [first, c]))
            .chain(('0'..='9').map(|d| [first, d]))
            .chain((0..36 * 36).map(|n| [base36((index + n) / 36), base36(index + n)]));
        let id = candidates.find(|id| !taken.contains(id)).unwrap_or([first, '0']);
        taken.insert(id);
        ids.push(String::from_iter(id));
    }
    ids
}

/// How often the set-up links ask an app to report, in seconds: half of
/// LOCATION_TTL_SECONDS (5 to 60), so a participant sharing from an app never fades from the
/// map between two reports (15 s at the default TTL of 30 s).
pub fn report_every(location_ttl: std::time::Duration) -> u64 {
    (location_ttl.as_secs() / 2).clamp(5, 60)
}

/// The set-up a participant's tracker apps are given, all from their tracker URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Setup {
    /// The tracker URL: what every app reports to.
    pub tracker_url: String,
    /// OwnTracks' one-tap set-up link (`owntracks:///config?inline=<base64>`): HTTP mode to
    /// the tracker URL, this participant's `tid`, "move" monitoring every `report_every_s`.
    pub owntracks_url: String,
    /// What Traccar Client's QR scanner reads (Settings, the QR button): the tracker URL as
    /// its server URL, with `id` (its device identifier), high accuracy, `interval`
    /// `report_every_s`, distance 0, buffering on.
    pub traccar_url: String,
    /// OsmAnd's online-tracking web address: the tracker URL with OsmAnd's placeholders.
    pub osmand_url: String,
    /// GPSLogger's "Log to custom URL" address, with GPSLogger's placeholders (GET).
    pub gpslogger_url: String,
    /// The participant's two-letter OwnTracks id, unique in the session.
    pub tid: String,
    /// How often the links ask the apps to report, in seconds.
    pub report_every_s: u64,
}

impl Setup {
    pub fn new(tracker_url: String, tid: String, name: &str, report_every_s: u64) -> Self {
        Self {
            owntracks_url: owntracks_config_link(&tracker_url, &tid, name, report_every_s),
            traccar_url: with_query(
                &tracker_url,
                &[
                    ("id", format!("convoy-{tid}")),
                    ("accuracy", "high".into()),
                    ("interval", report_every_s.to_string()),
                    ("distance", "0".into()),
                    ("buffer", "true".into()),
                ],
            ),
            osmand_url: format!(
                "{tracker_url}?lat={{0}}&lon={{1}}&timestamp={{2}}&accuracy={{3}}&altitude={{4}}&speed_mps={{5}}&bearing={{6}}"
            ),
            gpslogger_url: format!(
                "{tracker_url}?lat=%LAT&lon=%LON&timestamp=%TIMESTAMP&accuracy=%ACC&altitude=%ALT&speed_mps=%SPD&bearing=%DIR&batt=%BATT&charge=%ISCHARGING"
            ),
            tracker_url,
            tid,
            report_every_s,
        }
    }
}

fn with_query(url: &str, params: &[(&str, String)]) -> String {
    format!("{url}?{}", serde_urlencoded::to_string(params).unwrap_or_default())
}

/// OwnTracks' one-tap set-up link (`owntracks:///config?inline=<base64 of a configuration>`):
/// HTTP mode to `tracker_url`, the `tid` given, the participant's name as user, and "move"
/// monitoring every `every_s` seconds: the app's battery-friendly "significant changes"
/// mode reports too rarely for a live map.
pub fn owntracks_config_link(tracker_url: &str, tid: &str, name: &str, every_s: u64) -> String {
    use base64::Engine;
    let configuration = serde_json::json!({
        "_type": "configuration",
        "mode": 3,
        "url": tracker_url,
        "tid": tid,
        "deviceId": "convoy",
        "username": name,
        "auth": false,
        "monitoring": 2,
        "locatorInterval": every_s,
        "pubExtendedData": true,
    });
    let inline = base64::engine::general_purpose::STANDARD.encode(configuration.to_string());
    format!("owntracks:///config?{}", serde_urlencoded::to_string([("inline", inline)]).unwrap_or_default())
}

/// Another participant as OwnTracks' Friends view shows them.
pub struct Friend<'a> {
    pub user_id: crate::domain::UserId,
    pub name: &'a str,
    pub tid: &'a str,
    pub location: Option<&'a Location>,
}

/// OwnTracks' answer to a request: a `card` (name, `tid`) for every friend, and the
/// `location` of each who has one, keyed by a `topic` of their own.
pub fn owntracks_answer<'a>(friends: impl IntoIterator<Item = Friend<'a>>) -> Value {
    let mut answer = Vec::new();
    for Friend { user_id, name, tid, location } in friends {
        let topic = format!("owntracks/convoy/{}", user_id.0.simple());
        answer.push(serde_json::json!({ "_type": "card", "name": name, "tid": tid, "topic": topic }));
        let Some(at) = location else { continue };
        // OwnTracks' numbers other than lat and lon are integers.
        #[allow(clippy::cast_possible_truncation)] // rounded, and in range by validation
        let whole = |value: f64| value.round() as i64;
        let mut message = serde_json::json!({
            "_type": "location", "lat": at.lat, "lon": at.lng, "tst": at.timestamp.timestamp(),
            "acc": whole(at.accuracy), "tid": tid, "topic": topic,
        });
        let readings = [
            ("vel", at.speed.map(|mps| f64::from(mps) * 3.6)),
            ("cog", at.heading.map(f64::from)),
            ("alt", at.altitude.map(f64::from)),
            ("batt", at.battery.map(f64::from)),
        ];
        for (name, value) in readings {
            if let Some(value) = value {
                message[name] = serde_json::json!(whole(value));
            }
        }
        answer.push(message);
    }
    Value::Array(answer)
}

/// Epoch seconds, or milliseconds when the number is too large for seconds (after 5138).
fn epoch(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // checked finite; out of range gives None below
    let millis = if value >= 1e11 { value as i64 } else { (value * 1000.0) as i64 };
    DateTime::from_timestamp_millis(millis)
}

/// ISO 8601 / RFC 3339 with an offset or Z, or `yyyy-MM-dd HH:mm:ss` taken as UTC (as
/// Traccar's OsmAnd decoder reads it).
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S").ok().map(|t| t.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn params(query: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(query).unwrap()
    }

    #[test]
    fn owntracks_locations_are_fixes_and_other_types_are_let_go() {
        let body = json!([
            {"_type": "location", "lat": 48.85, "lon": 2.35, "tst": 1_799_999_000, "acc": 12, "vel": 36, "cog": 90, "alt": 35, "batt": 80, "bs": 2, "tid": "JJ"},
            {"_type": "transition", "event": "enter"},
            {"_type": "location", "lat": 91, "lon": 2.35},
        ]);
        let (app, report) = read(Some(&body), &[], now());
        assert_eq!(app, App::OwnTracks);
        assert_eq!(report.ignored, 1);
        assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
        let fix = report.fixes[0];
        assert_eq!((fix.lat, fix.lng, fix.accuracy), (48.85, 2.35, 12.0));
        assert_eq!(fix.timestamp.timestamp(), 1_799_999_000);
        assert_eq!(
            (fix.speed, fix.heading, fix.altitude, fix.battery, fix.charging),
            (Some(10.0), Some(90.0), Some(35.0), Some(80), Some(true))
        );
    }

    #[test]
    fn osmand_parameters_take_every_time_format_and_knots() {
        for (timestamp, seconds) in [
            ("1799999000", 1_799_999_000),
            ("1799999000000", 1_799_999_000),
            ("2027-01-15T07:43:20Z", 1_799_999_000),
        ] {
            let query = format!(
                "id=abc&lat=48.85&lon=2.35&timestamp={timestamp}&speed=10&bearing=-1&accuracy=5&batt=55&charge=false"
            );
            let (app, report) = read(None, &params(&query), now());
            assert_eq!(app, App::OsmAnd);
            let fix = report.fixes[0];
            assert_eq!(fix.timestamp.timestamp(), seconds, "{timestamp}");
            assert!((f64::from(fix.speed.unwrap()) - 5.144).abs() < 0.01);
            assert_eq!((fix.heading, fix.battery, fix.charging), (None, Some(55), Some(false)));
        }
        // Readings that do not parse are left out; a negative accuracy is "unknown".
        let (_, report) =
            read(None, &params("lat=48.85&lon=2.35&speed_mps=3&bearing=abc&accuracy=-1"), now());
        assert_eq!((report.fixes[0].speed, report.fixes[0].heading), (Some(3.0), None));
        assert_eq!(report.fixes[0].accuracy, UNKNOWN_ACCURACY_M);
        for (bad, unreadable) in [
            ("lat=abc&lon=2", true),
            ("lon=2", true),
            ("lat=48&lon=200", false),
            ("lat=1&lon=2&timestamp=yesterday", false),
        ] {
            let (_, report) = read(None, &params(bad), now());
            assert!(report.fixes.is_empty() && report.refused.len() == 1, "{bad}: {report:?}");
            assert_eq!(report.unreadable, unreadable, "{bad}");
        }
        // Other devices' forms: `location=<lat>,<lon>`, `heading`, a plain UTC date-time.
        let (_, report) =
            read(None, &params("location=48.85,2.35&heading=90&timestamp=2027-01-15%2007:43:20"), now());
        let fix = report.fixes[0];
        assert_eq!((fix.lat, fix.lng, fix.heading), (48.85, 2.35, Some(90.0)));
        assert_eq!(fix.timestamp.timestamp(), 1_799_999_000);
        let (_, report) = read(None, &params("location=north"), now());
        assert!(report.unreadable, "{report:?}");
        // A refusal quotes at most a few characters of what it refuses (it is logged).
        let (_, report) = read(None, &params(&format!("lat={}&lon=2", "7x".repeat(1_000))), now());
        assert!(report.refused[0].len() < 100, "{}", report.refused[0]);
    }

    #[test]
    fn traccar_client_json_is_read_with_its_units() {
        let body = json!({"location": {"timestamp": "2027-01-15T07:43:20.000Z", "coords": {"latitude": 48.85, "longitude": 2.35, "accuracy": 7, "speed": 4.5, "heading": 270, "altitude": 40}, "battery": {"level": 0.42, "is_charging": true}}, "device_id": "123456"});
        let (app, report) = read(Some(&body), &[], now());
        assert_eq!(app, App::TraccarJson);
        let fix = report.fixes[0];
        assert_eq!(
            (fix.speed, fix.heading, fix.battery, fix.charging),
            (Some(4.5), Some(270.0), Some(42), Some(true))
        );
        let (_, report) = read(Some(&json!({"location": {"coords": {}}})), &[], now());
        assert!(report.fixes.is_empty() && report.refused.len() == 1);
        let (_, report) = read(Some(&json!(42)), &[], now());
        assert!(report.fixes.is_empty() && report.refused.len() == 1);
    }

    #[test]
    fn tracker_ids_are_initials_made_unique() {
        let ids = tracker_ids(["Ann Lee", "Anna Lund", "bob", "Bo", "Zoë", "李雷", "", "!!"]);
        assert_eq!(ids[..6], ["AL", "AN", "BO", "B0", "ZO", "李雷"]);
        assert!(ids.iter().all(|id| id.chars().count() == 2), "{ids:?}");
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        let many = tracker_ids(std::iter::repeat_n("Al", 200));
        assert_eq!(many.iter().collect::<std::collections::HashSet<_>>().len(), 200);
    }

    #[test]
    fn the_owntracks_link_carries_http_mode_and_the_url() {
        use base64::Engine;
        let link = owntracks_config_link("https://convoy.example/t/abc", "AL", "Ann", 15);
        let query = link.strip_prefix("owntracks:///config?").unwrap();
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        let inline = &params.iter().find(|(k, _)| k == "inline").unwrap().1;
        let json: Value =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(inline).unwrap())
                .unwrap();
        assert_eq!((json["_type"].as_str(), json["mode"].as_i64()), (Some("configuration"), Some(3)));
        assert_eq!(
            (json["url"].as_str(), json["tid"].as_str()),
            (Some("https://convoy.example/t/abc"), Some("AL"))
        );
        assert_eq!(json["locatorInterval"].as_u64(), Some(15));
        assert!(!query.contains('+') && !query.contains('/'), "percent-encoded: {query}");
    }

    /// Traccar Client's scanner takes the server URL from the scheme, host and path, and its
    /// settings from the query (`id`, `accuracy`, `interval`, `distance`, `buffer`, ...).
    #[test]
    fn the_traccar_link_is_the_tracker_url_with_the_apps_settings() {
        let setup = Setup::new("https://convoy.example/t/abc".into(), "AL".into(), "Ann", 15);
        let (url, query) = setup.traccar_url.split_once('?').unwrap();
        assert_eq!(url, "https://convoy.example/t/abc");
        let params: std::collections::HashMap<String, String> = serde_urlencoded::from_str(query).unwrap();
        let wanted = [
            ("id", "convoy-AL"),
            ("accuracy", "high"),
            ("interval", "15"),
            ("distance", "0"),
            ("buffer", "true"),
        ];
        for (key, value) in wanted {
            assert_eq!(params.get(key).map(String::as_str), Some(value), "{key} in {query}");
        }
        assert!(setup.osmand_url.starts_with("https://convoy.example/t/abc?lat={0}&lon={1}&"));
        assert!(setup.gpslogger_url.starts_with("https://convoy.example/t/abc?lat=%LAT&lon=%LON&"));
        assert_eq!((report_every(Duration::from_secs(30)), report_every(Duration::from_secs(2))), (15, 5));
    }

    #[test]
    fn the_owntracks_answer_has_a_card_for_each_and_a_location_for_those_with_one() {
        let at = Location { speed: Some(10.0), ..Location::at(48.5, 2.25, 12.4, now()) };
        let (ann, bob) = (
            crate::domain::UserId(uuid::Uuid::from_u128(1)),
            crate::domain::UserId(uuid::Uuid::from_u128(2)),
        );
        let answer = owntracks_answer([
            Friend { user_id: ann, name: "Ann", tid: "AN", location: Some(&at) },
            Friend { user_id: bob, name: "Bob", tid: "BO", location: None },
        ]);
        let types: Vec<_> = answer.as_array().unwrap().iter().map(|m| m["_type"].as_str().unwrap()).collect();
        assert_eq!(types, ["card", "location", "card"]);
        let location = &answer[1];
        assert_eq!(
            (location["acc"].as_i64(), location["vel"].as_i64(), location["tid"].as_str()),
            (Some(12), Some(36), Some("AN"))
        );
        assert_eq!(location["topic"], answer[0]["topic"]);
    }

    #[test]
    fn an_array_past_the_limit_is_read_up_to_it() {
        let one = json!({"_type": "location", "lat": 1.0, "lon": 2.0, "tst": 1_799_999_000});
        let (_, report) = read(Some(&Value::Array(vec![one; MAX_FIXES + 3])), &[], now());
        assert_eq!(report.fixes.len(), MAX_FIXES);
        assert_eq!(report.refused.len(), 1);
    }
}
