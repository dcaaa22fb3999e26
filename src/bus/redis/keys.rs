//! Redis key and channel names, and the Lua scripts that work on them atomically.

use std::sync::LazyLock;

use redis::cluster_routing::Slot;
use uuid::Uuid;

use crate::domain::{RoomId, SessionId};
use crate::message::Channel;

/// How this deployment names its keys and channels. On a single Redis, as convoy always
/// has (instances of older versions on the same Redis keep understanding each other); on a
/// Redis Cluster, every name of a session or room carries its id as a hash tag (`{id}`, the
/// name's first braces), so its channel, cached locations, activity and presence live on
/// the one shard that owns the session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keys {
    pub(super) tagged: bool,
}

impl Keys {
    /// `id` as it appears in names: `{id}` on a cluster.
    fn tag<T: std::fmt::Display>(self, id: T) -> Tag<T> {
        Tag { id, tagged: self.tagged }
    }

    /// `channel:session:{id}` or `channel:room:{id}`.
    pub(super) fn channel(self, channel: Channel) -> String {
        match channel {
            Channel::Session(id) => format!("channel:session:{}", self.tag(id)),
            Channel::Room(id) => format!("channel:room:{}", self.tag(id)),
        }
    }

    /// The convoy channel a pub/sub channel's name stands for.
    pub(super) fn parse_channel(self, name: &str) -> Option<Channel> {
        let name = name.strip_prefix("channel:")?;
        if !self.tagged {
            return Channel::parse(name);
        }
        let (kind, id) = name.split_once(':')?;
        let id = id.strip_prefix('{')?.strip_suffix('}')?;
        Channel::parse(&format!("{kind}:{id}"))
    }

    /// A hash: user id -> `[expires at (Unix ms), location]`, written by `spaced`.
    pub(super) fn locations(self, session_id: SessionId) -> String {
        format!("locations:{}", self.tag(session_id))
    }

    pub(super) fn activity(self, session_id: SessionId) -> String {
        format!("session_activity:{}", self.tag(session_id))
    }

    pub(super) fn presence(self, channel: Channel) -> String {
        match channel {
            Channel::Session(id) => format!("presence:session:{}", self.tag(id)),
            Channel::Room(id) => format!("presence:room:{}", self.tag(id)),
        }
    }

    pub(super) fn presence_channels(self, instance_id: &str) -> String {
        format!("presence_channels:{}", self.tag(instance_id))
    }

    pub(super) fn room_members(self, room: RoomId) -> String {
        format!("room_users:{}", self.tag(room))
    }

    /// The cluster slot every name of the channel hashes to.
    pub(super) fn slot(self, channel: Channel) -> Slot {
        Slot::for_key(self.channel(channel))
    }
}

/// An id written into a name, in braces on a cluster (no String of its own).
struct Tag<T> {
    id: T,
    tagged: bool,
}

impl<T: std::fmt::Display> std::fmt::Display for Tag<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tagged { write!(f, "{{{}}}", self.id) } else { self.id.fmt(f) }
    }
}

pub(super) fn presence_field(instance_id: Uuid, phx_ref: &str) -> String {
    format!("{instance_id}:{phx_ref}")
}

/// Redis's clock in Unix ms, inside a script: heartbeats and their age are measured on one
/// clock, so a host whose clock is off cannot be taken for gone.
pub(super) const LUA_NOW_MS: &str =
    "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)";

/// Adds ARGV[2] to user ARGV[1]'s socket count in a room, dropping it at zero; renews the
/// key's expiry (ARGV[3] s); returns the new count.
pub(super) const ROOM_MEMBER: &str = "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
     if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
     redis.call('EXPIRE', KEYS[1], ARGV[3])
     return n";

/// ZADD of this instance's heartbeat at Redis's time: 1 if it was not in the set.
pub(super) static HEARTBEAT: LazyLock<String> =
    LazyLock::new(|| format!("{LUA_NOW_MS} return redis.call('ZADD', KEYS[1], now, ARGV[1])"));

/// The instances whose heartbeat is older than ARGV[1] ms.
pub(super) static GONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{LUA_NOW_MS} return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))"
    )
});

/// Redis's time, then the heartbeats of the given instances ('' for none), in Unix ms.
pub(super) static BEATS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{LUA_NOW_MS} local beats = {{tostring(now)}}
         for i, id in ipairs(ARGV) do beats[i + 1] = redis.call('ZSCORE', KEYS[1], id) or '' end
         return beats"
    )
});

/// A script on one key, as a plain EVAL (not EVALSHA): a node that restarted with an empty
/// script cache runs it at once, and a cluster with a node down does not need SCRIPT LOAD
/// on every node first. Redis keeps the compiled script by its hash; these run a few
/// times a second at most, never per message.
pub(super) fn eval(script: &str, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key);
    cmd
}

/// Replaces one instance's entries in a channel's presence hash (after an outage, or after
/// other instances took this one for gone): KEYS = the hash; ARGV = field prefix, key TTL,
/// then field/value pairs. One key, so it runs on a cluster too; the instance's channel set
/// is written beside it.
pub(super) const REPLACE_PRESENCE_SCRIPT: &str = r"
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #ARGV[1]) == ARGV[1] then redis.call('HDEL', KEYS[1], field) end
end
if #ARGV > 2 then
  for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_puts_every_name_of_a_session_in_one_slot_and_a_single_redis_keeps_its_names() {
        let session = SessionId::new_random();
        let channel = Channel::Session(session);
        let single = Keys { tagged: false };
        assert_eq!(single.channel(channel), format!("channel:session:{session}"));
        assert_eq!(single.locations(session), format!("locations:{session}"));
        assert_eq!(single.parse_channel(&single.channel(channel)), Some(channel));

        let cluster = Keys { tagged: true };
        assert_eq!(cluster.channel(channel), format!("channel:session:{{{session}}}"));
        let slot = cluster.slot(channel);
        for name in [cluster.locations(session), cluster.activity(session), cluster.presence(channel)] {
            assert_eq!(Slot::for_key(&name), slot, "{name}");
        }
        assert_eq!(cluster.parse_channel(&cluster.channel(channel)), Some(channel));
        let room = Channel::Room("u4pruy".parse::<RoomId>().unwrap());
        assert_eq!(cluster.parse_channel(&cluster.channel(room)), Some(room));
        assert_eq!(cluster.parse_channel(&single.channel(channel)), None);
        assert_eq!(single.parse_channel("elsewhere"), None);
    }
}
