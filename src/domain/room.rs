//! Local chat rooms: cells of a fixed grid, so people in the same cell share a room. The
//! grid is geohash at precision 6: cells of 0.0055 degrees of latitude by 0.011 of
//! longitude, 0.61 km north-south by 1.22 km east-west at the equator (narrower east-west
//! towards the poles: 0.65 km at 58 degrees north).
//! A room's id is its cell's geohash, e.g. `u4pruy`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Geohash characters per room id.
pub const PRECISION: usize = 6;
const ALPHABET: &[u8] = b"0123456789bcdefghjkmnpqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId([u8; PRECISION]);

impl RoomId {
    /// The room of the cell a valid position is in.
    pub fn at(lat: f64, lng: f64) -> Result<Self, ValidationError> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(ValidationError::new("lat", "must be a number in [-90, 90]"));
        }
        if !(-180.0..=180.0).contains(&lng) {
            return Err(ValidationError::new("lng", "must be a number in [-180, 180]"));
        }
        let hash = geohash::encode(geohash::Coord { x: lng, y: lat }, PRECISION)
            .map_err(|e| ValidationError::new("lat", e.to_string()))?;
        hash.parse().map_err(|_| ValidationError::new("lat", "no cell for this position"))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII from ALPHABET is ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The cell's centre (lat, lng).
    pub fn centre(&self) -> (f64, f64) {
        geohash::decode(self.as_str()).map(|(c, _, _)| (c.y, c.x)).unwrap_or_default()
    }

    /// A readable name: where the cell is.
    pub fn name(&self) -> String {
        let (lat, lng) = self.centre();
        format!("Near {lat:.3}, {lng:.3}")
    }

    /// This cell and the eight around it (fewer at the poles, where the grid's "north"
    /// would wrap to the other pole), this one first.
    pub fn with_neighbours(&self) -> Vec<RoomId> {
        let mut rooms = vec![*self];
        let (lat, _) = self.centre();
        if let Ok(n) = geohash::neighbors(self.as_str()) {
            for hash in [n.n, n.ne, n.e, n.se, n.s, n.sw, n.w, n.nw] {
                if let Ok(room) = hash.parse::<RoomId>()
                    && !rooms.contains(&room)
                    && (room.centre().0 - lat).abs() < 0.01
                {
                    rooms.push(room);
                }
            }
        }
        rooms
    }
}

impl FromStr for RoomId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; PRECISION] = s.as_bytes().try_into().map_err(|_| {
            ValidationError::new("room_id", format!("a room id is {PRECISION} geohash characters"))
        })?;
        if !bytes.iter().all(|b| ALPHABET.contains(b)) {
            return Err(ValidationError::new(
                "room_id",
                "a room id is made of geohash characters (0-9, b-z without a, i, l, o)",
            ));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RoomId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_points_share_a_room_and_distant_ones_do_not() {
        let here = RoomId::at(57.64911, 10.40744).unwrap();
        assert_eq!(here.as_str(), "u4pruy");
        assert_eq!(RoomId::at(57.6495, 10.4080).unwrap(), here, "about 50 m away");
        assert_ne!(RoomId::at(57.6600, 10.4074).unwrap(), here, "about 1.2 km north");
        let around = here.with_neighbours();
        assert_eq!(around.len(), 9);
        assert!(around.contains(&RoomId::at(57.6530, 10.4074).unwrap()), "the cell north");
        let (lat, lng) = here.centre();
        assert!((lat - 57.649).abs() < 0.01 && (lng - 10.407).abs() < 0.01);
    }

    #[test]
    fn no_neighbours_across_a_pole() {
        let top = RoomId::at(89.999, 0.0).unwrap();
        let around = top.with_neighbours();
        assert_eq!(around.len(), 6, "no cells above the top row: {around:?}");
        assert!(around.iter().all(|r| r.centre().0 > 89.9));
    }

    #[test]
    fn refuses_what_is_not_a_cell() {
        assert!(RoomId::at(91.0, 0.0).is_err());
        assert!(RoomId::at(0.0, f64::NAN).is_err());
        for bad in ["", "u4pru", "u4pruyy", "u4prua", "U4PRUY"] {
            assert!(bad.parse::<RoomId>().is_err(), "{bad}");
        }
    }
}
