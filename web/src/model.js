// What the page knows about its trip, and the rules that change it: who is in it, where
// they were last seen, who is online (presence), what was said. Pure: no DOM, no timers, no
// network; the time is always passed in as `now` (milliseconds, like Date.now()), so the
// unit tests in web/test/ run it deterministically. main.js feeds it the server's messages
// and draws what it computes.

/// An empty model. `ttlSeconds` is the server's LOCATION_TTL_SECONDS: what fading goes by.
export function createModel(ttlSeconds) {
  return {
    ttlMs: ttlSeconds * 1000,
    me: null, // {user_id, token, display_name, avatar_color}, once joined
    participants: new Map(), // user_id -> participant
    locations: new Map(), // user_id -> location, with `seen` (see arrived)
    presence: {}, // user_id -> {metas: [{phx_ref, paused, ...}]}, as the server sends it
    messages: new Map(), // message id -> chat message, in the order they arrived
    meetingPoint: null, // {lat, lng, name, radius_m, set_by, set_at}, where the group heads
    meetingPointBy: 'creator', // who may set it: 'creator' or 'anyone'
    arrivedAt: new Set(), // user ids who have arrived at it
    etas: new Map(), // user_id -> {distance_m, eta_s}, their way to it
    trails: new Map(), // user_id -> [[lat, lng], ...], oldest first
  };
}

// ---- server messages -------------------------------------------------------------------

/// `session_state`: the whole truth, on connect and after any loss: replaces what we hold.
/// Our own position is ours to show: `ownPosition` (the fresh one while sharing, null
/// otherwise), never the server's copy.
export function applySnapshot(model, data, now, ownPosition) {
  model.participants = new Map(data.participants.map((p) => [p.user_id, p]));
  model.locations = new Map(data.locations.map((l) => [l.user_id, arrived(l, now, model.ttlMs, true)]));
  model.locations.delete(model.me.user_id);
  if (ownPosition) model.locations.set(model.me.user_id, ownPosition);
  model.messages = new Map();
  data.messages.forEach((message) => addMessage(model, message));
  model.meetingPointBy = data.meeting_point_by || 'creator';
  meetingPointSet(model, data.meeting_point || null);
  model.arrivedAt = new Set(data.arrived || []);
}

// ---- meeting up ------------------------------------------------------------------------

/// `meeting_point_set` (null: cleared): a new point starts everyone afresh.
export function meetingPointSet(model, point) {
  if (point?.set_at !== model.meetingPoint?.set_at) {
    model.arrivedAt = new Set();
    model.etas = new Map();
  }
  model.meetingPoint = point;
}

/// `participant_arrived` / `participant_departed`.
export function arrivalChanged(model, userId, arrivedNow) {
  if (arrivedNow) {
    model.arrivedAt.add(userId);
    model.etas.delete(userId);
  } else {
    model.arrivedAt.delete(userId);
  }
}

/// `eta_update`.
export function etaUpdated(model, { user_id, distance_m, eta_s }) {
  model.etas.set(user_id, { distance_m, eta_s });
}

/// Points a trail drawn on the page keeps at most per person (the server keeps 2,000).
export const MAX_TRAIL_POINTS = 2000;
/// A new position extends a trail when it is at least this far from its last point.
const TRAIL_STEP_M = 10;

/// `trails` (the answer to `get_trails`): everyone's path so far, replacing what we drew.
export function trailsArrived(model, trails) {
  model.trails = new Map(trails.map((t) => [t.user_id, t.points.map((p) => [p.lat, p.lng])]));
}

/// A live position extends its person's trail when it moved far enough.
export function extendTrail(model, { user_id, lat, lng }) {
  const trail = model.trails.get(user_id) || [];
  const last = trail[trail.length - 1];
  if (last && metres(last[0], last[1], lat, lng) < TRAIL_STEP_M) return;
  trail.push([lat, lng]);
  if (trail.length > MAX_TRAIL_POINTS) trail.splice(0, trail.length - MAX_TRAIL_POINTS);
  model.trails.set(user_id, trail);
}

/// The trails to draw: each person's, in their colour.
export function trailLines(model) {
  const lines = [];
  for (const [id, points] of model.trails) {
    const person = model.participants.get(id);
    if (person && points.length > 1) lines.push({ id, colour: person.avatar_color, points });
  }
  return lines;
}

/// Metres between two points (haversine), for trail steps.
function metres(lat1, lng1, lat2, lng2) {
  const rad = Math.PI / 180;
  const a = Math.sin(((lat2 - lat1) * rad) / 2) ** 2 +
    Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lng2 - lng1) * rad) / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.min(1, Math.sqrt(a)));
}

/// What the page says of the meeting point (null: none set).
export function meetingText(model) {
  const point = model.meetingPoint;
  if (!point) return null;
  return `Meeting at ${point.name || 'the pin'} (within ${Math.round(point.radius_m)} m)`;
}

/// The meeting point as a map mark: a black dot with its radius as the circle.
export function meetingMark(model) {
  const point = model.meetingPoint;
  if (!point) return null;
  const name = `⚑ ${point.name || 'Meeting point'}`;
  return { id: 'meeting-point', lat: point.lat, lng: point.lng, accuracy: point.radius_m, colour: '#1d2327', name, opacity: 1, title: name };
}

export function distanceText(metres) {
  return metres < 1000 ? `${Math.round(metres)} m` : `${(metres / 1000).toFixed(1)} km`;
}

export function durationText(seconds) {
  const minutes = Math.round(seconds / 60);
  if (minutes < 1) return 'under a minute';
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/// A position with the time it reached this page (`seen`), which is what fading and "seen N
/// s ago" go by: the sender's clock may be off. A snapshot's positions are as old as their
/// timestamps say, within the TTL the server already applied.
export function arrived(location, now, ttlMs, fromSnapshot = false) {
  const age = fromSnapshot ? Math.min(ttlMs, Math.max(0, now - Date.parse(location.timestamp))) : 0;
  return { ...location, seen: now - (Number.isFinite(age) ? age : 0) };
}

/// `location_broadcast`: someone moved (or stood still and said so again).
export function locationArrived(model, location, now) {
  model.locations.set(location.user_id, arrived(location, now, model.ttlMs));
  extendTrail(model, location);
}

/// `location_batch` (batched delivery, `batch_ms`): each position as if it came alone.
/// The batch is the session's, our own position included: ours comes from the device.
export function batchArrived(model, batch, now) {
  for (const location of batch.locations) {
    if (location.user_id !== model.me?.user_id) locationArrived(model, location, now);
  }
}

/// `location_cleared`: they paused sharing: their marker goes now, not when it would have
/// faded.
export function locationCleared(model, userId) {
  model.locations.delete(userId);
}

/// `participant_joined`.
export function participantJoined(model, participant) {
  model.participants.set(participant.user_id, participant);
}

/// `participant_left`: out of the list and off the map.
export function participantLeft(model, userId) {
  model.participants.delete(userId);
  model.locations.delete(userId);
}

/// `presence_state`: everyone's connections, replacing what we hold.
export function presenceState(model, presence) {
  model.presence = presence;
}

/// `presence_diff`: connections that left (by `phx_ref`), then those that joined (a ref
/// already known is not added twice). Someone with no connection left is offline.
export function presenceDiff(model, { joins, leaves }) {
  const presence = model.presence;
  for (const [user, { metas }] of Object.entries(leaves || {})) {
    const gone = new Set(metas.map((m) => m.phx_ref));
    const left = (presence[user]?.metas || []).filter((m) => !gone.has(m.phx_ref));
    if (left.length) presence[user] = { metas: left };
    else delete presence[user];
  }
  for (const [user, { metas }] of Object.entries(joins || {})) {
    const known = presence[user]?.metas || [];
    const refs = new Set(known.map((m) => m.phx_ref));
    presence[user] = { metas: known.concat(metas.filter((m) => !refs.has(m.phx_ref))) };
  }
}

/// `new_message` (and each message of a snapshot): whether it is new; a message already
/// held (same id) is not shown twice.
export function addMessage(model, message) {
  if (model.messages.has(message.id)) return false;
  model.messages.set(message.id, message);
  return true;
}

// ---- our own position ------------------------------------------------------------------

/// Our position from the browser's fix, as the model and the server want it.
export function ownPosition(userId, { latitude, longitude, accuracy }, now) {
  return {
    user_id: userId,
    lat: latitude,
    lng: longitude,
    accuracy: Number.isFinite(accuracy) ? accuracy : 0,
    timestamp: new Date(now).toISOString(),
    seen: now,
  };
}

/// Shows our own position (null: none, we stopped sharing).
export function setOwnPosition(model, position) {
  if (!model.me) return;
  if (position) model.locations.set(model.me.user_id, position);
  else model.locations.delete(model.me.user_id);
}

// ---- what the page draws ---------------------------------------------------------------

/// The people list: everyone in the trip, in the order they came, with whether they are
/// online (any connection), what we know of their position and a low battery; with a
/// meeting point, those who arrived first, then by ETA ("as the crow flies").
export function peopleRows(model, now) {
  const rows = [...model.participants.values()].map((person, order) => {
    const metas = model.presence[person.user_id]?.metas || [];
    const online = metas.length > 0;
    const paused = online && metas.every((meta) => meta.paused);
    const location = model.locations.get(person.user_id);
    const where = paused ? 'not sharing' : location ? `seen ${ago(now - location.seen)}` : 'no position yet';
    const battery = location && Number.isFinite(location.battery) && location.battery < 20 && !location.charging
      ? ` · battery ${location.battery} %` : '';
    const arrivedThere = model.meetingPoint !== null && model.arrivedAt.has(person.user_id);
    const eta = model.meetingPoint && !arrivedThere ? model.etas.get(person.user_id) : undefined;
    let meetup = '';
    if (arrivedThere) meetup = '✓ arrived';
    else if (eta) {
      const away = `${distanceText(eta.distance_m)} away as the crow flies`;
      meetup = eta.eta_s === null ? away : `about ${durationText(eta.eta_s)}, ${away}`;
    }
    return {
      userId: person.user_id,
      colour: person.avatar_color,
      name: person.display_name + (person.user_id === model.me?.user_id ? ' (you)' : ''),
      online,
      seen: `${online ? 'online' : 'offline'} · ${where}${battery}`,
      arrived: arrivedThere,
      meetup,
      rank: [arrivedThere ? 0 : 1, eta?.eta_s ?? Infinity, order],
    };
  });
  if (model.meetingPoint) {
    rows.sort((a, b) => {
      const i = a.rank.findIndex((v, k) => v !== b.rank[k]);
      return i < 0 ? 0 : a.rank[i] - b.rank[i];
    });
  }
  return rows.map(({ rank, ...row }) => row);
}

/// The map's markers: one per known position of someone we can name (ourselves included
/// before the participant list has us), faded by age.
export function mapMarks(model, now) {
  const marks = [];
  for (const location of model.locations.values()) {
    const person = model.participants.get(location.user_id) ||
      (location.user_id === model.me?.user_id ? model.me : null);
    if (!person) continue;
    marks.push({
      id: location.user_id,
      lat: location.lat,
      lng: location.lng,
      accuracy: location.accuracy || 0,
      colour: person.avatar_color,
      name: person.display_name,
      opacity: freshness(location.seen, now, model.ttlMs),
      title: `${person.display_name}: seen ${ago(now - location.seen)}`,
    });
  }
  return marks;
}

/// Opacity by age: full while fresh, fading in the second half of the TTL, faint after.
export function freshness(seen, now, ttlMs) {
  const age = now - seen;
  if (age <= ttlMs / 2) return 1;
  if (age >= ttlMs) return 0.25;
  return 1 - 0.75 * ((age - ttlMs / 2) / (ttlMs / 2));
}

export function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.round(s / 60);
  return m < 60 ? `${m} min ago` : `${Math.round(m / 60)} h ago`;
}

export function timeLeft(ms) {
  if (ms <= 0) return 'ended';
  const minutes = Math.ceil(ms / 60000);
  if (minutes < 60) return `${minutes} min left`;
  const h = Math.floor(minutes / 60);
  return `${h} h ${minutes % 60} min left`;
}

/// What the page says when the trip ended, by `session_ended`'s reason (null: unknown).
export function endedText(reason) {
  const why = { ended_by_creator: 'Its creator ended it.', expired: 'Its time ran out.' }[reason] ||
    'It was ended or its time ran out.';
  return `${why} Positions are no longer shared.`;
}

/// When to refresh our token: two minutes before it expires (the server closes a socket
/// whose token expired), at least a second from now, at most what a timer can wait; null
/// for a token we cannot read.
export function refreshDelay(token, now) {
  let expiresAt;
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    expiresAt = JSON.parse(atob(payload)).exp * 1000;
  } catch {
    return null;
  }
  return Math.min(Math.max(expiresAt - now - 120000, 1000), 2 ** 31 - 1);
}
