// The page's model (web/src/model.js): server messages in, what the page draws out, with
// the time passed in. `npm test --prefix web`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addMessage, ago, applySnapshot, arrivalChanged, arrived, batchArrived, createModel, endedText, etaUpdated,
  freshness, locationArrived, locationCleared, mapMarks, meetingMark, meetingPointSet, meetingText, ownPosition,
  participantJoined, participantLeft, peopleRows, presenceDiff, presenceState, refreshDelay, setOwnPosition,
  timeLeft, trailLines, trailsArrived,
} from '../src/model.js';

const NOW = Date.parse('2025-06-01T12:00:00Z');
const TTL_SECONDS = 30;
const ME = { user_id: 'me', token: 't', display_name: 'Ann', avatar_color: '#d7263d' };
const ANN = { user_id: 'me', display_name: 'Ann', avatar_color: '#d7263d' };
const BOB = { user_id: 'bob', display_name: 'Bob', avatar_color: '#1b998b' };
const CAT = { user_id: 'cat', display_name: 'Cat', avatar_color: '#2e86de' };

const iso = (ms) => new Date(ms).toISOString();
const at = (user_id, lat, lng, timestamp = NOW, accuracy = 10) => ({ user_id, lat, lng, accuracy, timestamp: iso(timestamp) });
const message = (id, content) => ({ id, content, display_name: 'Bob', avatar_color: '#1b998b', timestamp: iso(NOW) });
const online = (...refs) => ({ metas: refs.map((phx_ref) => ({ phx_ref, paused: false })) });

function model() {
  const m = createModel(TTL_SECONDS);
  m.me = { ...ME };
  return m;
}

function snapshot(extra = {}) {
  return { participants: [ANN, BOB], locations: [at('bob', 48.86, 2.33)], messages: [], ...extra };
}

test('a snapshot replaces everything held before', () => {
  const m = model();
  participantJoined(m, CAT);
  locationArrived(m, at('cat', 1, 1), NOW);
  addMessage(m, message('old', 'before the loss'));
  applySnapshot(m, snapshot({ messages: [message('m1', 'hello')] }), NOW, null);
  assert.deepEqual([...m.participants.keys()], ['me', 'bob']);
  assert.deepEqual([...m.locations.keys()], ['bob']);
  assert.deepEqual([...m.messages.keys()], ['m1']);
});

test('a snapshot shows our own fresh position while we share, never the server copy', () => {
  const m = model();
  const server = { participants: [ANN, BOB], locations: [at('me', 10, 10), at('bob', 48.86, 2.33)], messages: [] };
  applySnapshot(m, server, NOW, null);
  assert.ok(!m.locations.has('me'), 'not sharing: no own marker');
  const own = ownPosition('me', { latitude: 48.85, longitude: 2.35, accuracy: 15 }, NOW);
  applySnapshot(m, server, NOW, own);
  assert.equal(m.locations.get('me'), own);
});

test('a snapshot position is as old as its timestamp says, at most the TTL; a broadcast is new', () => {
  const ttl = TTL_SECONDS * 1000;
  assert.equal(arrived(at('bob', 0, 0, NOW - 5000), NOW, ttl, true).seen, NOW - 5000);
  assert.equal(arrived(at('bob', 0, 0, NOW - 600000), NOW, ttl, true).seen, NOW - ttl);
  // A sender whose clock is ahead: not from the future.
  assert.equal(arrived(at('bob', 0, 0, NOW + 5000), NOW, ttl, true).seen, NOW);
  assert.equal(arrived({ ...at('bob', 0, 0), timestamp: 'garbage' }, NOW, ttl, true).seen, NOW);
  // A broadcast goes by when it reached the page, whatever the sender's clock said.
  assert.equal(arrived(at('bob', 0, 0, NOW - 600000), NOW, ttl).seen, NOW);
});

test('a broadcast after the snapshot moves the participant', () => {
  const m = model();
  applySnapshot(m, snapshot(), NOW, null);
  locationArrived(m, at('bob', 48.87, 2.32), NOW + 2000);
  const bob = mapMarks(m, NOW + 2000).find((mark) => mark.id === 'bob');
  assert.deepEqual([bob.lat, bob.lng, bob.opacity], [48.87, 2.32, 1]);
  assert.equal(bob.title, 'Bob: seen 0 s ago');
});

test('a location older than the TTL is faint, and fades through the second half of it', () => {
  const ttl = TTL_SECONDS * 1000;
  assert.equal(freshness(NOW, NOW, ttl), 1);
  assert.equal(freshness(NOW - ttl / 2, NOW, ttl), 1);
  assert.equal(freshness(NOW - (3 * ttl) / 4, NOW, ttl), 0.625);
  assert.equal(freshness(NOW - ttl, NOW, ttl), 0.25);
  assert.equal(freshness(NOW - 10 * ttl, NOW, ttl), 0.25);
  const m = model();
  applySnapshot(m, snapshot(), NOW, null);
  const later = NOW + ttl + 1000;
  assert.equal(mapMarks(m, later)[0].opacity, 0.25);
  assert.equal(mapMarks(m, later)[0].title, 'Bob: seen 31 s ago');
});

test('a cleared location leaves the map at once, the person stays in the list', () => {
  const m = model();
  applySnapshot(m, snapshot(), NOW, null);
  presenceState(m, { bob: { metas: [{ phx_ref: 'b1', paused: true }] } });
  locationCleared(m, 'bob');
  assert.deepEqual(mapMarks(m, NOW), []);
  const bob = peopleRows(m, NOW).find((row) => row.userId === 'bob');
  assert.equal(bob.seen, 'online · not sharing');
});

test('someone who left is off the list and off the map', () => {
  const m = model();
  applySnapshot(m, snapshot(), NOW, null);
  participantLeft(m, 'bob');
  assert.deepEqual(peopleRows(m, NOW).map((row) => row.userId), ['me']);
  assert.deepEqual(mapMarks(m, NOW), []);
});

test('only positions of people we can name are drawn, ourselves included before the list has us', () => {
  const m = model();
  applySnapshot(m, { participants: [BOB], locations: [], messages: [] }, NOW, null);
  locationArrived(m, at('stranger', 1, 1), NOW);
  setOwnPosition(m, ownPosition('me', { latitude: 48.85, longitude: 2.35, accuracy: null }, NOW));
  const marks = mapMarks(m, NOW);
  assert.deepEqual(marks.map((mark) => [mark.id, mark.name, mark.colour, mark.accuracy]), [['me', 'Ann', '#d7263d', 0]]);
  setOwnPosition(m, null);
  assert.deepEqual(mapMarks(m, NOW), []);
});

test('a presence diff removes exactly the refs that left and adds joins once', () => {
  const m = model();
  presenceState(m, { me: online('a1'), bob: online('b1', 'b2') });
  presenceDiff(m, { joins: {}, leaves: { bob: online('b1') } });
  assert.deepEqual(m.presence.bob.metas.map((meta) => meta.phx_ref), ['b2']);
  presenceDiff(m, { joins: { bob: online('b2', 'b3'), cat: online('c1') }, leaves: {} });
  assert.deepEqual(m.presence.bob.metas.map((meta) => meta.phx_ref), ['b2', 'b3']);
  assert.deepEqual(m.presence.cat.metas.map((meta) => meta.phx_ref), ['c1']);
  // The last connection gone: offline (no entry left), the others untouched.
  presenceDiff(m, { leaves: { bob: online('b2', 'b3') } });
  assert.ok(!('bob' in m.presence));
  assert.deepEqual(Object.keys(m.presence).sort(), ['cat', 'me']);
});

test('the people list says who is online, who we are, and when each was last seen', () => {
  const m = model();
  applySnapshot(m, { participants: [ANN, BOB, CAT], locations: [at('bob', 1, 1, NOW - 90000)], messages: [] }, NOW, null);
  presenceState(m, { me: online('a1'), bob: online('b1') });
  assert.deepEqual(peopleRows(m, NOW), [
    { userId: 'me', colour: '#d7263d', name: 'Ann (you)', online: true, seen: 'online · no position yet', arrived: false, meetup: '' },
    // The snapshot's 90 s old position counts as the TTL old (30 s): the server kept it.
    { userId: 'bob', colour: '#1b998b', name: 'Bob', online: true, seen: 'online · seen 30 s ago', arrived: false, meetup: '' },
    { userId: 'cat', colour: '#2e86de', name: 'Cat', online: false, seen: 'offline · no position yet', arrived: false, meetup: '' },
  ]);
  // Paused only when every connection is.
  presenceDiff(m, { joins: { bob: { metas: [{ phx_ref: 'b2', paused: true }] } } });
  assert.match(peopleRows(m, NOW)[1].seen, /seen/);
  presenceDiff(m, { leaves: { bob: online('b1') } });
  assert.equal(peopleRows(m, NOW)[1].seen, 'online · not sharing');
});

test('a chat message already held is not shown twice', () => {
  const m = model();
  assert.equal(addMessage(m, message('m1', 'hello')), true);
  assert.equal(addMessage(m, message('m2', 'there')), true);
  assert.equal(addMessage(m, message('m1', 'hello')), false);
  assert.deepEqual([...m.messages.values()].map((x) => x.content), ['hello', 'there']);
  // Nor within a snapshot.
  applySnapshot(m, snapshot({ messages: [message('m3', 'a'), message('m3', 'a'), message('m4', 'b')] }), NOW, null);
  assert.deepEqual([...m.messages.keys()], ['m3', 'm4']);
});

test('our own position from a fix', () => {
  assert.deepEqual(ownPosition('me', { latitude: 1.5, longitude: 2.5, accuracy: 12 }, NOW), {
    user_id: 'me', lat: 1.5, lng: 2.5, accuracy: 12, timestamp: '2025-06-01T12:00:00.000Z', seen: NOW,
  });
  assert.equal(ownPosition('me', { latitude: 1, longitude: 2, accuracy: NaN }, NOW).accuracy, 0);
});

test('ages and time left read as the page shows them', () => {
  assert.equal(ago(-500), '0 s ago');
  assert.equal(ago(59_400), '59 s ago');
  assert.equal(ago(90_000), '2 min ago');
  assert.equal(ago(3 * 3600_000), '3 h ago');
  assert.equal(timeLeft(0), 'ended');
  assert.equal(timeLeft(1), '1 min left');
  assert.equal(timeLeft(59 * 60_000), '59 min left');
  assert.equal(timeLeft(125 * 60_000), '2 h 5 min left');
});

test('the end of a trip is explained by its reason', () => {
  assert.equal(endedText('ended_by_creator'), 'Its creator ended it. Positions are no longer shared.');
  assert.equal(endedText('expired'), 'Its time ran out. Positions are no longer shared.');
  assert.equal(endedText(null), 'It was ended or its time ran out. Positions are no longer shared.');
});

test('the token is refreshed two minutes before it expires', () => {
  const token = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.s`;
  const exp = NOW / 1000 + 3600;
  assert.equal(refreshDelay(token({ exp, sub: 'me' }), NOW), 3600_000 - 120_000);
  assert.equal(refreshDelay(token({ exp: NOW / 1000 + 60 }), NOW), 1000, 'at least a second away');
  assert.equal(refreshDelay(token({ exp: NOW / 1000 + 1e9 }), NOW), 2 ** 31 - 1, 'what a timer can wait');
  assert.equal(refreshDelay('not a token', NOW), null);
});

test('a location batch moves each sender in it, as single broadcasts would', () => {
  const m = model();
  applySnapshot(m, snapshot({ participants: [ANN, BOB, CAT] }), NOW);
  batchArrived(m, { locations: [at('bob', 1, 2), at('cat', 3, 4), at('me', 9, 9)] }, NOW + 1000);
  assert.deepEqual([m.locations.get('bob').lat, m.locations.get('cat').lat], [1, 3]);
  assert.equal(m.locations.get('me'), undefined, 'our own position is not taken from the batch');
  assert.deepEqual([m.locations.get('bob').seen, m.locations.get('cat').seen], [NOW + 1000, NOW + 1000]);
});

// ---- meeting up ------------------------------------------------------------------------

const POINT = { lat: 48.85, lng: 2.35, name: 'Gate', radius_m: 50, set_by: 'me', set_at: iso(NOW) };

test('a snapshot brings the meeting point and who arrived; a new point starts afresh', () => {
  const m = model();
  participantJoined(m, CAT);
  applySnapshot(m, snapshot({ meeting_point: POINT, meeting_point_by: 'anyone', arrived: ['bob'] }), NOW, null);
  assert.equal(meetingText(m), 'Meeting at Gate (within 50 m)');
  assert.equal(m.meetingPointBy, 'anyone');
  assert.deepEqual([...m.arrivedAt], ['bob']);
  assert.deepEqual(meetingMark(m), { id: 'meeting-point', lat: 48.85, lng: 2.35, accuracy: 50, colour: '#1d2327', name: '⚑ Gate', opacity: 1, title: '⚑ Gate' });
  etaUpdated(m, { user_id: 'me', distance_m: 900, eta_s: 600 });
  meetingPointSet(m, POINT); // the same point again: nothing lost
  assert.equal(m.etas.size, 1);
  meetingPointSet(m, { ...POINT, set_at: iso(NOW + 1000) });
  assert.deepEqual([m.arrivedAt.size, m.etas.size], [0, 0]);
  meetingPointSet(m, null);
  assert.equal(meetingText(m), null);
  assert.equal(meetingMark(m), null);
});

test('with a meeting point, the list has who arrived first, then the nearest by ETA', () => {
  const m = model();
  applySnapshot(m, snapshot({ participants: [ANN, BOB, CAT], meeting_point: POINT }), NOW, null);
  etaUpdated(m, { user_id: 'me', distance_m: 1500, eta_s: 1200 });
  etaUpdated(m, { user_id: 'cat', distance_m: 400, eta_s: 300 });
  arrivalChanged(m, 'bob', true);
  const rows = peopleRows(m, NOW);
  assert.deepEqual(rows.map((r) => r.userId), ['bob', 'cat', 'me']);
  assert.deepEqual(rows.map((r) => r.meetup), [
    '✓ arrived', 'about 5 min, 400 m away as the crow flies', 'about 20 min, 1.5 km away as the crow flies',
  ]);
  etaUpdated(m, { user_id: 'cat', distance_m: 400, eta_s: null });
  arrivalChanged(m, 'bob', false);
  assert.deepEqual(peopleRows(m, NOW).map((r) => r.userId), ['me', 'bob', 'cat'], 'unknown ETAs last');
  assert.equal(peopleRows(m, NOW)[2].meetup, '400 m away as the crow flies');
});

test('a low battery shows, unless charging', () => {
  const m = model();
  applySnapshot(m, snapshot({ locations: [{ ...at('bob', 48.86, 2.33), battery: 12 }] }), NOW, null);
  assert.match(peopleRows(m, NOW)[1].seen, /battery 12 %$/);
  locationArrived(m, { ...at('bob', 48.86, 2.33), battery: 12, charging: true }, NOW);
  assert.doesNotMatch(peopleRows(m, NOW)[1].seen, /battery/);
  locationArrived(m, { ...at('bob', 48.86, 2.33), battery: 40 }, NOW);
  assert.doesNotMatch(peopleRows(m, NOW)[1].seen, /battery/);
});

test('trails come from get_trails and grow with live positions that moved 10 m', () => {
  const m = model();
  applySnapshot(m, snapshot(), NOW, null);
  trailsArrived(m, [{ user_id: 'bob', points: [{ lat: 48.0, lng: 2.0 }, { lat: 48.001, lng: 2.0 }] }]);
  locationArrived(m, at('bob', 48.00105, 2.0), NOW); // 6 m on: no new point
  locationArrived(m, at('bob', 48.002, 2.0), NOW);
  assert.deepEqual(m.trails.get('bob'), [[48.0, 2.0], [48.001, 2.0], [48.002, 2.0]]);
  locationArrived(m, at('cat', 1, 1), NOW);
  locationArrived(m, at('cat', 1.01, 1), NOW); // a trail, but not in the list: no line
  assert.deepEqual(trailLines(m).map((l) => [l.id, l.colour, l.points.length]), [['bob', '#1b998b', 3]]);
});
