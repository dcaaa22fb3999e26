//! A viewer's `view_settings`: which of the others' positions its connection is sent.

use std::collections::HashMap;

use crate::domain::{Location, UserId, distance_m};

/// A viewer's rules for others' positions (`view_settings`): none sooner than
/// `min_interval` after the last one delivered from the same sender, none closer than
/// `min_distance_m` to it unless `refresh` has passed (so a participant who stays put does
/// not expire on the viewer's map). Decided as positions are queued, so a refused one is
/// never written.
#[derive(Debug)]
pub(super) struct ViewFilter {
    pub min_interval: std::time::Duration,
    pub min_distance_m: f64,
    refresh: std::time::Duration,
    /// Per sender: when and where the last delivered position was.
    last: HashMap<UserId, (std::time::Instant, f64, f64)>,
}

impl ViewFilter {
    /// A filter, or None for rules that let everything through.
    pub fn new(
        min_interval: std::time::Duration,
        min_distance_m: f64,
        refresh: std::time::Duration,
    ) -> Option<Self> {
        (!min_interval.is_zero() || min_distance_m > 0.0).then(|| Self {
            min_interval,
            min_distance_m,
            refresh,
            last: HashMap::new(),
        })
    }

    /// Whether `from`'s position goes to this viewer; if so, it is remembered.
    pub fn admits(&mut self, from: UserId, location: &Location, now: std::time::Instant) -> bool {
        let Location { lat, lng, .. } = *location;
        if let Some(&(at, last_lat, last_lng)) = self.last.get(&from) {
            let elapsed = now.duration_since(at);
            let moved = distance_m(last_lat, last_lng, lat, lng);
            if elapsed < self.min_interval || (moved < self.min_distance_m && elapsed < self.refresh) {
                return false;
            }
        }
        self.last.insert(from, (now, lat, lng));
        true
    }
}
