//! Presence, as Phoenix Presence models it: each connection is one entry ("meta") under its
//! user, so a user with two sockets has two metas and stays present until the last one
//! goes. Clients get the whole map once (`presence_state`) and then changes
//! (`presence_diff {joins, leaves}`), both in the shape the `phoenix` package's `Presence`
//! class consumes: `{user_id: {metas: [{phx_ref, ...}]}}`.
//!
//! Each instance knows its own connections (`LocalPresence`); the bus shares them with the
//! other instances (see `Bus::presence`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Participant, UserId};
use crate::message::Channel;

/// One connection of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMeta {
    /// Unique per connection, across instances (Phoenix's name for it).
    pub phx_ref: String,
    pub user_id: UserId,
    pub display_name: String,
    pub avatar_color: String,
    pub online_at: DateTime<Utc>,
    /// The connection shares no position (`share_settings {paused: true}`); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

impl PresenceMeta {
    /// A new connection of `participant`.
    pub fn connect(participant: &Participant, online_at: DateTime<Utc>) -> Self {
        Self {
            phx_ref: uuid::Uuid::new_v4().simple().to_string(),
            user_id: participant.user_id,
            display_name: participant.display_name.clone(),
            avatar_color: participant.avatar_color.clone(),
            online_at,
            paused: false,
        }
    }

    /// The same connection with `paused` changed, under a new `phx_ref` (Phoenix Presence
    /// updates a meta as a leave of the old one and a join of the new one).
    pub fn with_paused(&self, paused: bool) -> Self {
        Self { phx_ref: uuid::Uuid::new_v4().simple().to_string(), paused, ..self.clone() }
    }
}

#[derive(Debug, Serialize)]
pub struct Metas<'a> {
    pub metas: Vec<&'a PresenceMeta>,
}

/// `{user_id: {metas: [...]}}`, users in a stable order.
pub type PresenceMap<'a> = BTreeMap<UserId, Metas<'a>>;

pub fn presence_map<'a>(metas: impl IntoIterator<Item = &'a PresenceMeta>) -> PresenceMap<'a> {
    let mut map = PresenceMap::new();
    for meta in metas {
        map.entry(meta.user_id).or_insert_with(|| Metas { metas: Vec::new() }).metas.push(meta);
    }
    map
}

/// This instance's connections, by channel. The whole truth for a single instance; the
/// Redis bus shares it with the others and rewrites it there after an outage.
#[derive(Debug, Default)]
pub struct LocalPresence {
    channels: Mutex<HashMap<Channel, Vec<PresenceMeta>>>,
}

impl LocalPresence {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Channel, Vec<PresenceMeta>>) -> T) -> T {
        f(&mut self.channels.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn join(&self, channel: Channel, meta: &PresenceMeta) {
        self.with(|map| map.entry(channel).or_default().push(meta.clone()));
    }

    /// Removes one connection; returns whether it was the channel's last one here.
    pub fn leave(&self, channel: Channel, phx_ref: &str) -> bool {
        self.with(|map| {
            let Some(metas) = map.get_mut(&channel) else { return true };
            metas.retain(|m| m.phx_ref != phx_ref);
            let last = metas.is_empty();
            if last {
                map.remove(&channel);
            }
            last
        })
    }

    pub fn list(&self, channel: Channel) -> Vec<PresenceMeta> {
        self.with(|map| map.get(&channel).cloned().unwrap_or_default())
    }

    pub fn channels(&self) -> Vec<Channel> {
        self.with(|map| map.keys().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(user_id: UserId) -> PresenceMeta {
        PresenceMeta {
            paused: false,
            phx_ref: uuid::Uuid::new_v4().simple().to_string(),
            user_id,
            display_name: "Ann".into(),
            avatar_color: "#FF5733".into(),
            online_at: Utc::now(),
        }
    }

    #[test]
    fn two_sockets_are_two_metas_under_one_user() {
        let (ann, bob) = (UserId::new_random(), UserId::new_random());
        let metas = [meta(ann), meta(bob), meta(ann)];
        let map = presence_map(&metas);
        assert_eq!(map.len(), 2);
        assert_eq!(map[&ann].metas.len(), 2);
        let json = serde_json::to_value(&map).unwrap();
        assert_eq!(json[ann.to_string()]["metas"][1]["phx_ref"], metas[2].phx_ref);
    }

    #[test]
    fn the_last_connection_leaving_empties_the_session() {
        let presence = LocalPresence::default();
        let session = Channel::Session(crate::domain::SessionId::new_random());
        let (a, b) = (meta(UserId::new_random()), meta(UserId::new_random()));
        presence.join(session, &a);
        presence.join(session, &b);
        assert!(!presence.leave(session, &a.phx_ref));
        assert_eq!(presence.list(session), vec![b.clone()]);
        assert!(presence.leave(session, &b.phx_ref));
        assert!(presence.channels().is_empty());
    }
}
