// convoy's web client: the start page (create a trip) and the join link's page (join, share
// your position, see everyone live, chat). Plain browser modules, no build step: the map
// library (Leaflet) is used when the server carries it, otherwise positions are drawn on a
// plain grid. Talks to the same REST API and /ws socket as any other client (README).
//
// This file wires the others together: what the page knows and how server messages change
// it is model.js (pure, unit-tested in web/test/); the REST calls are api.js, what is
// remembered per trip storage.js, the live connection socket.js, our own position
// position.js, the map map.js, and the page's elements page.js.

import { api } from './api.js';
import { createMapView } from './map.js';
import {
  addMessage, applySnapshot, arrivalChanged, batchArrived, createModel, endedText, etaUpdated, locationArrived,
  locationCleared, mapMarks, meetingMark, meetingPointSet, meetingText, participantJoined, participantLeft,
  peopleRows, presenceDiff, presenceState, refreshDelay, setOwnPosition, timeLeft, trailLines, trailsArrived,
} from './model.js';
import {
  $, COLOURS, appendMessage, drawColours, drawMessages, drawPeople, noteMap, pickedColour, setStatus,
  show, showEnded,
} from './page.js';
import { PositionSharing } from './position.js';
import { Connection } from './socket.js';
import { sessionStore } from './storage.js';

const config = JSON.parse($('convoy-config').textContent);
// A still phone repeats its position so it does not fade (well within the TTL).
const RESEND_AFTER_MS = Math.min(10000, (config.location_ttl_seconds * 1000) / 3);

/// What the page knows about the trip (model.js).
/// The socket's batch window (batch_ms): others' moves arrive together at most this late.
const BATCH_MS = 250;
const model = createModel(config.location_ttl_seconds);
/// What the page is doing.
const state = {
  sessionId: null,
  session: null, // the trip as GET /api/sessions/{id} describes it
  store: null, // this trip's localStorage (storage.js)
  creatorToken: null,
  ended: false,
  connection: null, // socket.js, once live
  sharing: null, // position.js, once live
  view: null, // the map (map.js), once live
  refreshTimer: null,
  appsShown: false, // the "Share from an app" panel was filled
  notify: false, // the user asked to be notified of arrivals, and the browser allows it
};

// ---- the start page: create a trip ---------------------------------------------------

function startPage() {
  document.title = 'convoy: share a trip';
  show('start');
  $('start-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('start-button').disabled = true;
    try {
      const name = $('trip-name').value.trim();
      const created = await api('POST', '/api/sessions', {
        ...(name ? { name } : {}),
        expires_in_minutes: Number($('trip-duration').value),
      });
      sessionStore(created.session_id).save('creator', created.creator_token);
      location.assign(`/join/${created.session_id}`);
    } catch (error) {
      setStatus(`Could not start the trip: ${error.message}`, true);
      $('start-button').disabled = false;
    }
  });
  $('trip-name').focus();
}

// ---- the join page -------------------------------------------------------------------

async function joinPage(sessionId) {
  state.sessionId = sessionId;
  state.store = sessionStore(sessionId);
  // A creator may arrive with their token in the fragment (never sent to the server).
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get('creator')) {
    state.store.save('creator', fragment.get('creator'));
    history.replaceState(null, '', location.pathname + location.search);
  }
  state.creatorToken = state.store.load('creator');
  let session;
  try {
    session = await api('GET', `/api/sessions/${encodeURIComponent(sessionId)}`);
  } catch (error) {
    if (error.status === 400 || error.status === 404) {
      return showEnded('This link does not lead to a trip', 'Check the link you were sent.');
    }
    return setStatus(`Could not load the trip: ${error.message}. Reload to try again.`, true);
  }
  state.session = session;
  $('session-name').textContent = session.name || 'Shared trip';
  document.title = `${session.name || 'Shared trip'} · convoy`;
  tickClock();
  setInterval(tickClock, 1000);
  if (!session.is_active) {
    return showEnded('This trip has ended', 'Its time ran out or its creator ended it.');
  }
  $('session-actions').hidden = false;
  $('end-session').hidden = !state.creatorToken;
  wireActions();
  model.me = state.store.load('me');
  if (model.me) startLive();
  else joinForm();
}

function tickClock() {
  if (!state.session) return;
  const text = state.ended ? 'ended' : timeLeft(Date.parse(state.session.expires_at) - Date.now());
  if ($('time-left').textContent !== text) $('time-left').textContent = text;
}

function joinForm() {
  show('join');
  drawColours(Math.floor(Math.random() * COLOURS.length));
  $('display-name').focus();
  $('join-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const display_name = $('display-name').value.trim();
    const avatar_color = pickedColour();
    $('join-button').disabled = true;
    try {
      const joined = await api('POST', `/api/sessions/${state.sessionId}/join`, { display_name, avatar_color });
      model.me = {
        user_id: joined.user_id, token: joined.websocket_token, tracker_url: joined.tracker_url, display_name, avatar_color,
      };
      state.store.save('me', model.me);
      startLive();
    } catch (error) {
      if (error.status === 410) return showEnded('This trip has ended', error.message);
      setStatus(`Could not join: ${error.message}`, true);
      $('join-button').disabled = false;
    }
  });
}

function joinLink() {
  return `${location.origin}/join/${state.sessionId}`;
}

function wireActions() {
  $('copy-link').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(joinLink());
      setStatus('Link copied: send it to the people you travel with.');
    } catch {
      setStatus(`Copy this link: ${joinLink()}`);
    }
  });
  $('toggle-sharing').addEventListener('click', () => (state.sharing.on ? state.sharing.stop() : state.sharing.start()));
  $('leave').addEventListener('click', leave);
  $('apps').addEventListener('toggle', showAppSetup);
  for (const button of document.querySelectorAll('#apps-setup [data-copy]')) {
    button.addEventListener('click', async () => {
      const field = $(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(field.value);
        setStatus('Address copied: paste it into the app.');
      } catch {
        field.select();
      }
    });
  }
  $('new-tracker').addEventListener('click', newTrackerAddress);
  $('meet-here').addEventListener('click', () => {
    const own = state.sharing?.position;
    if (!own) return setStatus('Your position is not known yet: share it, or drop a pin.', true);
    setMeetingPoint({ lat: own.lat, lng: own.lng });
  });
  $('meet-pick').addEventListener('click', () => {
    setStatus('Tap the map where you will meet.');
    state.view.pick(({ lat, lng }) => setMeetingPoint({ lat, lng }));
  });
  $('meet-clear').addEventListener('click', () => setMeetingPoint(null));
  $('download-gpx').addEventListener('click', downloadGpx);
  $('meet-notify').addEventListener('click', async () => {
    if (!('Notification' in window)) return setStatus('This browser cannot notify.', true);
    state.notify = (await Notification.requestPermission()) === 'granted';
    setStatus(state.notify ? 'You will be notified when someone arrives.' : 'Notifications were not allowed.');
  });
  $('end-session').addEventListener('click', endSession);
  $('chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const content = $('chat-input').value.trim();
    if (!content) return;
    if (state.connection?.send('chat_message', { content })) $('chat-input').value = '';
    else setStatus('Not connected: the message was not sent.', true);
  });
}

// ---- live: socket, position, rendering -----------------------------------------------

/// The "Share from an app" panel, filled the first time it is opened: the links and QR
/// codes come from the tracker URL's own set-up answer (README, "Tracker apps").
async function showAppSetup() {
  if (!$('apps').open || state.appsShown) return;
  if (!model.me?.tracker_url) {
    $('apps-missing').hidden = false;
    return;
  }
  // Same origin as the page, whatever PUBLIC_URL says.
  const path = new URL(model.me.tracker_url).pathname;
  try {
    const setup = await api('GET', `${path}/setup`);
    $('owntracks-link').href = setup.owntracks_url;
    $('owntracks-qr').src = `${path}/qr.svg?for=owntracks`;
    $('traccar-qr').src = `${path}/qr.svg?for=traccar`;
    $('report-every').textContent = setup.report_every_s;
    $('osmand-url').value = setup.osmand_url;
    $('gpslogger-url').value = setup.gpslogger_url;
    $('tracker-url').value = setup.tracker_url;
    $('tracker-qr').src = `${path}/qr.svg?for=url`;
    $('apps-setup').hidden = false;
    state.appsShown = true;
  } catch (error) {
    setStatus(`Could not load the app set-up: ${error.message}`, true);
  }
}

/// Replaces a leaked tracker address: the old one stops working at once, and the panel
/// shows the new one's set-up.
async function newTrackerAddress() {
  if (!confirm('Get a new tracker address? The old one stops at once: set your apps up again.')) return;
  try {
    const { tracker_url } = await api('POST', `/api/sessions/${state.sessionId}/tracker_url`, undefined, model.me.token);
    model.me = { ...model.me, tracker_url };
    state.store.save('me', model.me);
    state.appsShown = false;
    await showAppSetup();
    setStatus('New tracker address: set your apps up with it.');
  } catch (error) {
    setStatus(`Could not get a new address: ${error.message}`, true);
  }
}

function startLive() {
  show('live');
  $('toggle-sharing').hidden = false;
  $('leave').hidden = false;
  // `?view=grid` asks for the plain view (no tiles to download) even with the map library.
  const plain = new URLSearchParams(location.search).get('view') === 'grid';
  state.view = createMapView($('map'), config, {
    plain,
    onTilesFailed: () => noteMap(config, 'Map tiles could not be loaded: positions are shown on a grid.'),
  });
  noteMap(config);
  state.connection = new Connection({
    address: () => {
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      // The session in the path: a load balancer keeps a session's sockets on one instance.
      // Batched delivery: everyone's moves of a quarter second in one message (README).
      const path = `/ws/${encodeURIComponent(state.sessionId)}`;
      return `${scheme}://${location.host}${path}?token=${encodeURIComponent(model.me.token)}&batch_ms=${BATCH_MS}`;
    },
    onMessage: handle,
    onRetrying: (delay) => setStatus(`Connection lost: reconnecting in ${Math.ceil(delay / 1000)} s…`),
    gone: checkStanding,
  });
  state.sharing = new PositionSharing({
    send: (type, data) => state.connection.send(type, data),
    userId: model.me.user_id,
    resendAfterMs: RESEND_AFTER_MS,
    onSharing: (on) => {
      $('toggle-sharing').textContent = on ? 'Stop sharing' : 'Share my position';
    },
    onPosition: (position) => {
      setOwnPosition(model, position);
      renderMap();
    },
    onProblem: (problem) => setStatus(problem || '', Boolean(problem)),
  });
  state.connection.open();
  state.sharing.start();
  setInterval(() => {
    renderPeople();
    renderMap();
    state.sharing.resendIfStill(Date.now());
    state.connection.watch(Date.now());
  }, 1000);
  // Back online, or back to the tab: try now rather than at the next backoff step.
  const retryNow = () => {
    if (document.visibilityState === 'visible') state.connection.retryNow();
  };
  window.addEventListener('online', retryNow);
  document.addEventListener('visibilitychange', retryNow);
}

function handle({ type, data }) {
  const now = Date.now();
  switch (type) {
    case 'session_state': {
      // The whole truth, on connect and after any loss: replace what we hold.
      state.connection.connectedAgain();
      scheduleRefresh();
      const problem = state.sharing.problem;
      setStatus(problem || '', Boolean(problem));
      applySnapshot(model, data, now, state.sharing.on ? state.sharing.position : null);
      // Rules belong to a connection: a new one starts sharing unless told otherwise.
      state.sharing.reconnected();
      // Where everyone came from (not in the snapshot, which stays small).
      state.connection.send('get_trails', {});
      renderAll();
      break;
    }
    case 'presence_state':
      presenceState(model, data);
      renderPeople();
      break;
    case 'presence_diff':
      presenceDiff(model, data);
      renderPeople();
      break;
    case 'location_broadcast':
      locationArrived(model, data, now);
      renderMap();
      renderPeople();
      break;
    case 'location_batch':
      batchArrived(model, data, now);
      renderMap();
      renderPeople();
      break;
    case 'location_cleared':
      locationCleared(model, data.user_id);
      renderMap();
      renderPeople();
      break;
    case 'participant_joined':
      participantJoined(model, data);
      renderPeople();
      break;
    case 'participant_left':
      participantLeft(model, data.user_id);
      renderPeople();
      renderMap();
      break;
    case 'meeting_point_set':
    case 'meeting_point_cleared':
      meetingPointSet(model, type === 'meeting_point_set' ? data : null);
      renderAll();
      break;
    case 'participant_arrived':
    case 'participant_departed':
      arrivalChanged(model, data.user_id, type === 'participant_arrived');
      renderPeople();
      if (type === 'participant_arrived') announceArrival(data.user_id);
      break;
    case 'trails':
      trailsArrived(model, data.trails);
      renderMap();
      break;
    case 'eta_update':
      etaUpdated(model, data);
      renderPeople();
      break;
    case 'new_message':
      if (addMessage(model, data)) appendMessage(data);
      break;
    case 'session_ended':
      ended(data.reason);
      break;
    case 'error':
      setStatus(data.message, true);
      break;
    case 'token_refreshed':
      model.me.token = data.token;
      state.store.save('me', model.me);
      scheduleRefresh();
      break;
    default:
      break;
  }
}

/// Whether the session or this participant is gone (and the page now says so): asked by
/// the connection after a deliberate close and before later reconnect attempts.
async function checkStanding() {
  try {
    const session = await api('GET', `/api/sessions/${state.sessionId}`);
    if (!session.is_active) {
      ended(null);
      return true;
    }
    // Another tab of this participant may have refreshed (and so replaced) the token.
    adoptNewerToken();
    // Still in? Asked without refreshing: a refresh would replace the token other tabs use.
    await api('GET', `/api/sessions/${state.sessionId}/messages?limit=1`, undefined, model.me.token);
    return false;
  } catch (error) {
    if (error.status === 401 && error.code === 'token_superseded') {
      if (adoptNewerToken()) return false;
      shutDown();
      showEnded('This trip continues elsewhere', 'Another tab or device took over this place in the trip.');
      return true;
    }
    if (error.status === 401 && error.code === 'token_revoked') {
      state.store.save('me', null);
      shutDown();
      showEnded('You are no longer in this trip', 'You left or were removed. Reload the page to join again.');
      return true;
    }
    if (error.status === 410) {
      ended(null);
      return true;
    }
    if (error.status === 401) {
      // Expired (the page slept through its refresh) or otherwise no longer valid.
      state.store.save('me', null);
      shutDown();
      showEnded('Your place in this trip has expired', 'Reload the page to join again.');
      return true;
    }
    return false; // unreachable server: keep trying
  }
}

/// Takes the token another tab saved, if it is newer than this page's; whether it did.
function adoptNewerToken() {
  const saved = state.store.load('me');
  if (!saved || saved.user_id !== model.me.user_id || saved.token === model.me.token) return false;
  model.me.token = saved.token;
  return true;
}

/// Refreshes the token on the socket two minutes before it expires: the server closes a
/// socket whose token expired.
function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const delay = refreshDelay(model.me.token, Date.now());
  if (delay === null) return;
  state.refreshTimer = setTimeout(() => {
    // Another tab may have refreshed already: then its token is the one to keep fresh.
    if (adoptNewerToken()) return scheduleRefresh();
    state.connection.send('refresh_token', {});
  }, delay);
}

// ---- leaving and ending --------------------------------------------------------------

async function leave() {
  if (!confirm('Leave this trip? The others will no longer see you.')) return;
  try {
    await api('DELETE', `/api/sessions/${state.sessionId}/participants/${model.me.user_id}`, undefined, model.me.token);
  } catch (error) {
    const gone = error.code === 'token_revoked' || error.status === 410;
    if (!gone) return setStatus(`Could not leave: ${error.message}`, true);
  }
  state.store.save('me', null);
  shutDown();
  showEnded('You left this trip', 'Reload the page to join again.');
}

async function endSession() {
  if (!confirm('End this trip for everyone?')) return;
  try {
    await api('DELETE', `/api/sessions/${state.sessionId}`, undefined, state.creatorToken);
  } catch (error) {
    if (error.status !== 410) return setStatus(`Could not end the trip: ${error.message}`, true);
  }
  // Everyone connected is told by the server; a creator without a socket is told here.
  if (!state.connection?.connected) ended('ended_by_creator');
}

function ended(reason) {
  state.ended = true;
  shutDown();
  state.store.save('me', null);
  showEnded('This trip has ended', endedText(reason));
  tickClock();
}

/// Nothing more to do live: stop sharing (while the socket can still say so, so the others'
/// maps drop us at once), then close the socket for good.
function shutDown() {
  state.sharing?.stop();
  state.connection?.stop();
}

// ---- rendering -----------------------------------------------------------------------

function renderAll() {
  drawMessages([...model.messages.values()]);
  renderPeople();
  renderMap();
  renderMeeting();
}

function renderPeople() {
  drawPeople(peopleRows(model, Date.now()));
}

function renderMap() {
  state.view?.renderTrails(trailLines(model));
  const meeting = meetingMark(model);
  if (state.view) state.view.render(meeting ? [meeting, ...mapMarks(model, Date.now())] : mapMarks(model, Date.now()));
}

/// The meeting point's text and the buttons this page may use: the creator, or anyone
/// where the session lets them.
function renderMeeting() {
  $('meet-text').textContent = meetingText(model) || 'No meeting point yet.';
  const may = Boolean(state.creatorToken) || model.meetingPointBy === 'anyone';
  $('meet-here').hidden = !may;
  $('meet-pick').hidden = !may || !state.view?.pick;
  $('meet-clear').hidden = !may || !model.meetingPoint;
}

/// Sets (a point) or clears (null) the meeting point: with the creator token over REST, else
/// on the socket (a session that lets anyone).
async function setMeetingPoint(point) {
  try {
    if (state.creatorToken) {
      const path = `/api/sessions/${state.sessionId}/meeting_point`;
      if (point) await api('PUT', path, point, state.creatorToken);
      else await api('DELETE', path, undefined, state.creatorToken);
    } else if (!state.connection.send(point ? 'set_meeting_point' : 'clear_meeting_point', point || {})) {
      setStatus('Not connected: the meeting point was not changed.', true);
    }
  } catch (error) {
    setStatus(`Could not change the meeting point: ${error.message}`, true);
  }
}

/// Everyone's trails as a GPX file (the token goes in a header, so not a plain link).
async function downloadGpx() {
  try {
    const response = await fetch(`/api/sessions/${state.sessionId}/trails.gpx`, {
      headers: { Authorization: `Bearer ${model.me.token}` },
    });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    const link = document.createElement('a');
    link.href = URL.createObjectURL(await response.blob());
    link.download = `convoy-${state.sessionId}.gpx`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) {
    setStatus(`Could not download the trails: ${error.message}`, true);
  }
}

/// Someone arrived: said on the page, and by the browser if the user asked for that.
function announceArrival(userId) {
  const name = model.participants.get(userId)?.display_name || 'Someone';
  const text = `${name} has arrived at the meeting point.`;
  setStatus(text);
  if (state.notify && 'Notification' in window && Notification.permission === 'granted') {
    new Notification('convoy', { body: text, tag: `arrived-${userId}` });
  }
}

// What the end-to-end tests read: where each marker is drawn, and who this page is.
window.convoyDebug = {
  positions: () => (state.view ? state.view.positions() : {}),
  userId: () => model.me?.user_id,
  mapKind: () => (state.view ? state.view.kind : null),
  trails: () => Object.fromEntries(model.trails),
};

// ---- entry ---------------------------------------------------------------------------

const match = location.pathname.match(/^\/join\/([^/]+)\/?$/);
if (match) joinPage(decodeURIComponent(match[1]));
else startPage();
