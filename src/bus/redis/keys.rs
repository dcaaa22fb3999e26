//! Redis key and channel names, and the Lua scripts that work on them atomically.

use std::sync::LazyLock;

use uuid::Uuid;

use crate::domain::{RoomId, SessionId};
use crate::message::Channel;

/// `channel:session:{id}` or `channel:room:{id}`.
pub(super) fn pubsub_channel(channel: Channel) -> String {
    format!("channel:{}", channel.name())
}

/// A hash: user id -> `[expires at (Unix ms), location]`, written by `spaced`.
pub(super) fn locations_key(session_id: SessionId) -> String {
    format!("locations:{session_id}")
}

pub(super) fn activity_key(session_id: SessionId) -> String {
    format!("session_activity:{session_id}")
}

pub(super) fn presence_key(channel: Channel) -> String {
    format!("presence:{}", channel.name())
}

pub(super) fn presence_channels_key(instance_id: &str) -> String {
    format!("presence_channels:{instance_id}")
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
pub(super) static ROOM_MEMBER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
         if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
         redis.call('EXPIRE', KEYS[1], ARGV[3])
         return n",
    )
});

pub(super) fn room_members_key(room: RoomId) -> String {
    format!("room_users:{room}")
}

/// ZADD of this instance's heartbeat at Redis's time: 1 if it was not in the set.
pub(super) static HEARTBEAT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!("{LUA_NOW_MS} return redis.call('ZADD', KEYS[1], now, ARGV[1])"))
});

/// The instances whose heartbeat is older than ARGV[1] ms.
pub(super) static GONE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{LUA_NOW_MS} return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))"
    ))
});

/// Redis's time, then the heartbeats of the given instances ('' for none), in Unix ms.
pub(super) static BEATS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{LUA_NOW_MS} local beats = {{tostring(now)}}
         for i, id in ipairs(ARGV) do beats[i + 1] = redis.call('ZSCORE', KEYS[1], id) or '' end
         return beats"
    ))
});

/// Replaces one instance's entries in a session's presence hash (after an outage, or after
/// other instances took this one for gone): KEYS = hash, the instance's session set;
/// ARGV = field prefix, key TTL, session id, then field/value pairs.
pub(super) const REPLACE_PRESENCE_SCRIPT: &str = r"
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #ARGV[1]) == ARGV[1] then redis.call('HDEL', KEYS[1], field) end
end
if #ARGV > 3 then
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 0";
