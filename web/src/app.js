// convoy's web client: the start page (create a trip) and the join link's page (join, share
// your position, see everyone live, chat). Plain browser JavaScript, no build step: the map
// library (Leaflet) is used when the server carries it, otherwise positions are drawn on a
// plain grid. Talks to the same REST API and /ws socket as any other client (README).
(() => {
  'use strict';

  const config = JSON.parse(document.getElementById('convoy-config').textContent);
  const $ = (id) => document.getElementById(id);
  const COLOURS = ['#d7263d', '#1b998b', '#2e86de', '#f46036', '#7b2cbf', '#2f4858', '#c2185b', '#6a994e'];
  const SEND_EVERY_MS = 1000; // at most one position a second
  // A still phone repeats its position so it does not fade (well within the TTL).
  const RESEND_AFTER_MS = Math.min(10000, (config.location_ttl_seconds * 1000) / 3);
  const MAX_RETRY_MS = 30000;
  const PING_EVERY_MS = 20000;
  const SILENCE_LIMIT_MS = 45000; // an open socket that heard nothing (not even a pong)

  const state = {
    sessionId: null,
    session: null,
    me: null, // {user_id, token, display_name, avatar_color}
    creatorToken: null,
    participants: new Map(),
    locations: new Map(),
    presence: {},
    messages: new Map(),
    ended: false,
    left: false,
    sharing: false,
    socket: null,
    retries: 0,
    reconnectTimer: null,
    refreshTimer: null,
    watchId: null,
    lastSentAt: 0,
    sendTimer: null,
    ownPosition: null,
    positionProblem: null,
    lastHeardAt: 0,
    lastPingAt: 0,
    view: null,
  };

  // ---- small helpers -------------------------------------------------------------------

  function setStatus(text, isError = false) {
    const status = $('status');
    status.textContent = text;
    status.classList.toggle('error', isError);
  }

  function show(id) {
    for (const section of ['start', 'join', 'live', 'ended']) {
      $(section).hidden = section !== id;
    }
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = data.error || {};
      throw new ApiError(response.status, error.code || 'error', error.message || response.statusText);
    }
    return data;
  }

  function storageKey(kind) {
    return `convoy:${kind}:${state.sessionId}`;
  }

  function load(kind) {
    try {
      return JSON.parse(localStorage.getItem(storageKey(kind)));
    } catch {
      return null;
    }
  }

  function save(kind, value) {
    try {
      if (value === null) localStorage.removeItem(storageKey(kind));
      else localStorage.setItem(storageKey(kind), JSON.stringify(value));
    } catch {
      // Private browsing: the page still works, it just forgets on reload.
    }
  }

  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s ago`;
    const m = Math.round(s / 60);
    return m < 60 ? `${m} min ago` : `${Math.round(m / 60)} h ago`;
  }

  function timeLeft(ms) {
    if (ms <= 0) return 'ended';
    const minutes = Math.ceil(ms / 60000);
    if (minutes < 60) return `${minutes} min left`;
    const h = Math.floor(minutes / 60);
    return `${h} h ${minutes % 60} min left`;
  }

  function joinLink() {
    return `${location.origin}/join/${state.sessionId}`;
  }

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
        state.sessionId = created.session_id;
        save('creator', created.creator_token);
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
    // A creator may arrive with their token in the fragment (never sent to the server).
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.get('creator')) {
      save('creator', fragment.get('creator'));
      history.replaceState(null, '', location.pathname + location.search);
    }
    state.creatorToken = load('creator');
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
    state.me = load('me');
    if (state.me) startLive();
    else joinForm();
  }

  function tickClock() {
    if (!state.session) return;
    const left = Date.parse(state.session.expires_at) - Date.now();
    const text = state.ended ? 'ended' : timeLeft(left);
    if ($('time-left').textContent !== text) $('time-left').textContent = text;
  }

  function joinForm() {
    show('join');
    const colours = $('colours');
    const picked = Math.floor(Math.random() * COLOURS.length);
    COLOURS.forEach((colour, i) => {
      const label = document.createElement('label');
      label.style.background = colour;
      label.title = colour;
      const input = document.createElement('input');
      input.type = 'radio';
      input.name = 'avatar_color';
      input.value = colour;
      input.checked = i === picked;
      input.setAttribute('aria-label', `colour ${i + 1} (${colour})`);
      label.append(input);
      colours.append(label);
    });
    $('display-name').focus();
    $('join-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const display_name = $('display-name').value.trim();
      const avatar_color = (document.querySelector('input[name=avatar_color]:checked') || {}).value || COLOURS[0];
      $('join-button').disabled = true;
      try {
        const joined = await api('POST', `/api/sessions/${state.sessionId}/join`, { display_name, avatar_color });
        state.me = { user_id: joined.user_id, token: joined.websocket_token, display_name, avatar_color };
        save('me', state.me);
        startLive();
      } catch (error) {
        if (error.status === 410) return showEnded('This trip has ended', error.message);
        setStatus(`Could not join: ${error.message}`, true);
        $('join-button').disabled = false;
      }
    });
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
    $('toggle-sharing').addEventListener('click', () => (state.sharing ? stopSharing() : startSharing()));
    $('leave').addEventListener('click', leave);
    $('end-session').addEventListener('click', endSession);
    $('chat-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const content = $('chat-input').value.trim();
      if (!content) return;
      if (send('chat_message', { content })) $('chat-input').value = '';
      else setStatus('Not connected: the message was not sent.', true);
    });
  }

  // ---- live: socket, position, rendering -----------------------------------------------

  function startLive() {
    show('live');
    $('toggle-sharing').hidden = false;
    $('leave').hidden = false;
    // `?view=grid` asks for the plain view (no tiles to download) even with the map library.
    const plain = new URLSearchParams(location.search).get('view') === 'grid';
    state.view = window.L && !plain ? new LeafletView($('map')) : new GridView($('map'));
    noteMap();
    connect();
    startSharing();
    setInterval(() => {
      renderPeople();
      renderMap();
      resendIfStill();
      watchConnection();
    }, 1000);
    // Back online, or back to the tab: try now rather than at the next backoff step.
    const retryNow = () => {
      if (!state.socket && !state.ended && !state.left && document.visibilityState === 'visible') {
        clearTimeout(state.reconnectTimer);
        connect();
      }
    };
    window.addEventListener('online', retryNow);
    document.addEventListener('visibilitychange', retryNow);
  }

  function noteMap(extra) {
    const note = $('map-note');
    let text = '';
    if (!config.map_library) {
      text = `Plain grid view: this server was built without the map library. To get the map, build it with: ${config.build_hint}.`;
    } else if (!config.tile_url) {
      text = 'No map tiles are configured (TILE_URL): positions are shown on a grid.';
    }
    if (extra) text = extra;
    note.textContent = text;
    note.hidden = !text;
  }

  function connect() {
    if (state.ended || state.left || !state.me) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(state.me.token)}`);
    state.socket = socket;
    state.lastHeardAt = Date.now();
    socket.addEventListener('message', (event) => {
      state.lastHeardAt = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      handle(message);
    });
    socket.addEventListener('close', (event) => {
      if (state.socket !== socket) return;
      state.socket = null;
      if (state.ended || state.left) return;
      afterClose(event.code);
    });
  }

  async function afterClose(code) {
    // 1000 is a deliberate close: the session ended or this participant was removed.
    if (code === 1000 || code === 1008) {
      const verdict = await checkStanding();
      if (verdict) return;
    }
    scheduleReconnect();
  }

  /// Whether the session or this participant is gone (and the page now says so).
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
      await api('GET', `/api/sessions/${state.sessionId}/messages?limit=1`, undefined, state.me.token);
      return false;
    } catch (error) {
      if (error.status === 401 && error.code === 'token_superseded') {
        if (adoptNewerToken()) return false;
        stopSharing();
        state.left = true;
        showEnded('This trip continues elsewhere', 'Another tab or device took over this place in the trip.');
        return true;
      }
      if (error.status === 401 && error.code === 'token_revoked') {
        save('me', null);
        state.left = true;
        stopSharing();
        showEnded('You are no longer in this trip', 'You left or were removed. Reload the page to join again.');
        return true;
      }
      if (error.status === 410) {
        ended(null);
        return true;
      }
      if (error.status === 401) {
        // Expired (the page slept through its refresh) or otherwise no longer valid.
        save('me', null);
        state.left = true;
        stopSharing();
        showEnded('Your place in this trip has expired', 'Reload the page to join again.');
        return true;
      }
      return false; // unreachable server: keep trying
    }
  }

  /// Takes the token another tab saved, if it is newer than this page's; whether it did.
  function adoptNewerToken() {
    const saved = load('me');
    if (!saved || saved.user_id !== state.me.user_id || saved.token === state.me.token) return false;
    state.me.token = saved.token;
    return true;
  }

  /// Refreshes the token on the socket two minutes before it expires: the server closes a
  /// socket whose token expired.
  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    let expiresAt;
    try {
      const payload = state.me.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      expiresAt = JSON.parse(atob(payload)).exp * 1000;
    } catch {
      return;
    }
    const delay = Math.min(Math.max(expiresAt - Date.now() - 120000, 1000), 2 ** 31 - 1);
    state.refreshTimer = setTimeout(() => {
      // Another tab may have refreshed already: then its token is the one to keep fresh.
      if (adoptNewerToken()) return scheduleRefresh();
      if (state.socket && state.socket.readyState === WebSocket.OPEN) {
        state.socket.send(JSON.stringify({ type: 'refresh_token', data: {} }));
      }
    }, delay);
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    const delay = Math.min(MAX_RETRY_MS, 1000 * 2 ** state.retries) * (0.5 + Math.random() / 2);
    state.retries += 1;
    setStatus(`Connection lost: reconnecting in ${Math.ceil(delay / 1000)} s…`);
    state.reconnectTimer = setTimeout(async () => {
      if (state.retries > 2 && (await checkStanding())) return;
      connect();
    }, delay);
  }

  /// A connection can die without a close (a phone between networks): ask now and then, and
  /// give up on a socket that has said nothing for a while.
  function watchConnection() {
    const socket = state.socket;
    if (!socket) return;
    const now = Date.now();
    if (socket.readyState === WebSocket.OPEN && now - state.lastPingAt > PING_EVERY_MS) {
      state.lastPingAt = now;
      send('ping', {});
    }
    if (now - state.lastHeardAt > SILENCE_LIMIT_MS) {
      state.socket = null;
      socket.close();
      scheduleReconnect();
    }
  }

  function send(type, data) {
    const socket = state.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify({ type, data }));
    return true;
  }

  function handle({ type, data }) {
    switch (type) {
      case 'session_state':
        // The whole truth, on connect and after any loss: replace what we hold.
        state.retries = 0;
        scheduleRefresh();
        setStatus(state.positionProblem || '', Boolean(state.positionProblem));
        state.participants = new Map(data.participants.map((p) => [p.user_id, p]));
        state.locations = new Map(data.locations.map((l) => [l.user_id, arrived(l, true)]));
        // Our own position is ours to show: the fresh one while sharing, none otherwise.
        state.locations.delete(state.me.user_id);
        if (state.ownPosition && state.sharing) state.locations.set(state.me.user_id, state.ownPosition);
        state.messages = new Map();
        data.messages.forEach(addMessage);
        state.lastSentAt = 0;
        // Rules belong to a connection: a new one starts sharing unless told otherwise.
        if (!state.sharing) send('share_settings', { paused: true });
        sendPosition();
        renderAll();
        break;
      case 'presence_state':
        state.presence = data;
        renderPeople();
        break;
      case 'presence_diff':
        applyPresenceDiff(data);
        renderPeople();
        break;
      case 'location_broadcast':
        state.locations.set(data.user_id, arrived(data));
        renderMap();
        renderPeople();
        break;
      case 'location_cleared':
        // They paused sharing: their marker goes now, not when it would have faded.
        state.locations.delete(data.user_id);
        renderMap();
        renderPeople();
        break;
      case 'participant_joined':
        state.participants.set(data.user_id, data);
        renderPeople();
        break;
      case 'participant_left':
        state.participants.delete(data.user_id);
        state.locations.delete(data.user_id);
        renderPeople();
        renderMap();
        break;
      case 'new_message':
        addMessage(data);
        break;
      case 'session_ended':
        ended(data.reason);
        break;
      case 'error':
        setStatus(data.message, true);
        break;
      case 'token_refreshed':
        state.me.token = data.token;
        save('me', state.me);
        scheduleRefresh();
        break;
      default:
        break;
    }
  }

  /// A position with the time it reached this page (`seen`), which is what fading and "seen N
  /// s ago" go by: the sender's clock may be off. A snapshot's positions are as old as their
  /// timestamps say, within the TTL the server already applied.
  function arrived(location, fromSnapshot = false) {
    const ttl = config.location_ttl_seconds * 1000;
    const age = fromSnapshot ? Math.min(ttl, Math.max(0, Date.now() - Date.parse(location.timestamp))) : 0;
    return { ...location, seen: Date.now() - (Number.isFinite(age) ? age : 0) };
  }

  function applyPresenceDiff({ joins, leaves }) {
    for (const [user, { metas }] of Object.entries(leaves || {})) {
      const gone = new Set(metas.map((m) => m.phx_ref));
      const left = (state.presence[user]?.metas || []).filter((m) => !gone.has(m.phx_ref));
      if (left.length) state.presence[user] = { metas: left };
      else delete state.presence[user];
    }
    for (const [user, { metas }] of Object.entries(joins || {})) {
      const known = state.presence[user]?.metas || [];
      const refs = new Set(known.map((m) => m.phx_ref));
      state.presence[user] = { metas: known.concat(metas.filter((m) => !refs.has(m.phx_ref))) };
    }
  }

  // ---- own position --------------------------------------------------------------------

  function startSharing() {
    state.positionProblem = null;
    if (!('geolocation' in navigator)) {
      state.positionProblem = 'This browser cannot share its position; you can still see the others.';
      setStatus(state.positionProblem, true);
      return;
    }
    if (!state.sharing) send('share_settings', { paused: false });
    state.sharing = true;
    $('toggle-sharing').textContent = 'Stop sharing';
    // No timeout: a phone that stays put gets no new fix, and that is not an error.
    state.watchId = navigator.geolocation.watchPosition(onPosition, onPositionError, {
      enableHighAccuracy: true,
      maximumAge: 5000,
    });
  }

  function stopSharing() {
    if (state.watchId !== null) navigator.geolocation.clearWatch(state.watchId);
    state.watchId = null;
    // Everyone else forgets our position at once, and presence says we paused.
    if (state.sharing) send('share_settings', { paused: true });
    state.sharing = false;
    state.ownPosition = null;
    if (state.me) state.locations.delete(state.me.user_id);
    $('toggle-sharing').textContent = 'Share my position';
    renderMap();
  }

  function onPosition(position) {
    if (state.positionProblem) {
      state.positionProblem = null;
      setStatus('');
    }
    const { latitude, longitude, accuracy } = position.coords;
    state.ownPosition = {
      user_id: state.me.user_id,
      lat: latitude,
      lng: longitude,
      accuracy: Number.isFinite(accuracy) ? accuracy : 0,
      timestamp: new Date().toISOString(),
      seen: Date.now(),
    };
    state.locations.set(state.me.user_id, state.ownPosition);
    sendPosition();
    renderMap();
  }

  function onPositionError(error) {
    const refused = error.code === error.PERMISSION_DENIED;
    const why = refused ? 'permission was refused' : error.message || 'unavailable';
    state.positionProblem = `Your position is not shared (${why}); you can still see the others.`;
    if (refused) stopSharing();
    setStatus(state.positionProblem, true);
  }

  function sendPosition() {
    const own = state.ownPosition;
    if (!own || !state.sharing) return;
    const wait = state.lastSentAt + SEND_EVERY_MS - Date.now();
    if (wait > 0) {
      // Too soon: the newest position goes out when the second is up.
      if (!state.sendTimer) {
        state.sendTimer = setTimeout(() => {
          state.sendTimer = null;
          sendPosition();
        }, wait);
      }
      return;
    }
    const { lat, lng, accuracy, timestamp } = own;
    if (send('location_update', { lat, lng, accuracy, timestamp })) state.lastSentAt = Date.now();
  }

  function resendIfStill() {
    if (state.ownPosition && state.sharing && Date.now() - state.lastSentAt > RESEND_AFTER_MS) {
      state.ownPosition.timestamp = new Date().toISOString();
      state.ownPosition.seen = Date.now();
      sendPosition();
    }
  }

  // ---- leaving and ending --------------------------------------------------------------

  async function leave() {
    if (!confirm('Leave this trip? The others will no longer see you.')) return;
    try {
      await api('DELETE', `/api/sessions/${state.sessionId}/participants/${state.me.user_id}`, undefined, state.me.token);
    } catch (error) {
      const gone = error.code === 'token_revoked' || error.status === 410;
      if (!gone) return setStatus(`Could not leave: ${error.message}`, true);
    }
    state.left = true;
    clearTimeout(state.reconnectTimer);
    save('me', null);
    stopSharing();
    state.socket?.close();
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
    if (!state.socket) ended('ended_by_creator');
  }

  function ended(reason) {
    state.ended = true;
    clearTimeout(state.reconnectTimer);
    stopSharing();
    const socket = state.socket;
    state.socket = null;
    socket?.close();
    save('me', null);
    const why = { ended_by_creator: 'Its creator ended it.', expired: 'Its time ran out.' }[reason] ||
      'It was ended or its time ran out.';
    showEnded('This trip has ended', `${why} Positions are no longer shared.`);
    tickClock();
  }

  function showEnded(title, text) {
    $('ended-title').textContent = title;
    $('ended-text').textContent = text;
    $('session-actions').hidden = true;
    setStatus('');
    show('ended');
  }

  // ---- rendering -----------------------------------------------------------------------

  function addMessage(message) {
    if (state.messages.has(message.id)) return;
    state.messages.set(message.id, message);
    const item = document.createElement('li');
    const who = document.createElement('span');
    who.className = 'who';
    who.style.color = message.avatar_color;
    who.textContent = message.display_name;
    const time = document.createElement('time');
    time.dateTime = message.timestamp;
    time.textContent = new Date(message.timestamp).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = ` ${message.content}`;
    item.append(who, time, text);
    const list = $('messages');
    list.append(item);
    list.scrollTop = list.scrollHeight;
  }

  function renderAll() {
    $('messages').replaceChildren();
    const messages = [...state.messages.values()];
    state.messages = new Map();
    messages.forEach(addMessage);
    renderPeople();
    renderMap();
  }

  function renderPeople() {
    const list = $('people');
    const items = [...state.participants.values()].map((person) => {
      const item = document.createElement('li');
      item.dataset.userId = person.user_id;
      const dot = document.createElement('span');
      const metas = state.presence[person.user_id]?.metas || [];
      const online = metas.length > 0;
      const paused = online && metas.every((meta) => meta.paused);
      dot.className = `dot${online ? '' : ' offline'}`;
      dot.style.background = person.avatar_color;
      const name = document.createElement('span');
      name.textContent = person.display_name + (person.user_id === state.me?.user_id ? ' (you)' : '');
      const seen = document.createElement('span');
      seen.className = 'seen';
      const location = state.locations.get(person.user_id);
      const where = paused ? 'not sharing' : location ? `seen ${ago(Date.now() - location.seen)}` : 'no position yet';
      seen.textContent = `${online ? 'online' : 'offline'} · ${where}`;
      item.append(dot, name, seen);
      return item;
    });
    list.replaceChildren(...items);
  }

  /// Opacity by age: full while fresh, fading in the second half of the TTL, faint after.
  function freshness(location) {
    const ttl = config.location_ttl_seconds * 1000;
    const age = Date.now() - location.seen;
    if (age <= ttl / 2) return 1;
    if (age >= ttl) return 0.25;
    return 1 - 0.75 * ((age - ttl / 2) / (ttl / 2));
  }

  function renderMap() {
    if (!state.view) return;
    const marks = [];
    for (const location of state.locations.values()) {
      const person = state.participants.get(location.user_id) ||
        (location.user_id === state.me?.user_id ? state.me : null);
      if (!person) continue;
      marks.push({
        id: location.user_id,
        lat: location.lat,
        lng: location.lng,
        accuracy: location.accuracy || 0,
        colour: person.avatar_color,
        name: person.display_name,
        opacity: freshness(location),
        title: `${person.display_name}: seen ${ago(Date.now() - location.seen)}`,
      });
    }
    state.view.render(marks);
  }

  // ---- map views -----------------------------------------------------------------------

  /// Leaflet: tiles when configured and reachable, a grid beneath them, a scale.
  class LeafletView {
    constructor(element) {
      const L = window.L;
      this.map = L.map(element, { worldCopyJump: true }).setView([20, 0], 2);
      const Grid = L.GridLayer.extend({
        createTile() {
          const tile = document.createElement('div');
          tile.style.outline = '1px solid rgba(0,0,0,0.12)';
          return tile;
        },
      });
      new Grid().addTo(this.map);
      if (config.tile_url) {
        this.tiles = L.tileLayer(config.tile_url, { maxZoom: 19, attribution: config.tile_attribution });
        this.tiles.once('tileload', () => {
          this.tilesLoaded = true;
        });
        this.tiles.on('tileerror', () => {
          // No tile server at all: stop asking, the grid and the scale still work. (Once
          // tiles have loaded, a failure is a passing network problem: keep them.)
          if (this.tilesLoaded || !this.map.hasLayer(this.tiles)) return;
          this.map.removeLayer(this.tiles);
          noteMap('Map tiles could not be loaded: positions are shown on a grid.');
        });
        this.tiles.addTo(this.map);
      }
      L.control.scale({ imperial: false }).addTo(this.map);
      this.marks = new Map();
      this.follow = true;
      this.map.on('dragstart zoomstart', (event) => {
        if (!this.fitting) this.follow = false;
      });
    }

    render(marks) {
      const L = window.L;
      const seen = new Set();
      for (const mark of marks) {
        seen.add(mark.id);
        let drawn = this.marks.get(mark.id);
        if (!drawn) {
          drawn = {
            accuracy: L.circle([mark.lat, mark.lng], { radius: mark.accuracy, weight: 1, interactive: false }),
            dot: L.circleMarker([mark.lat, mark.lng], { radius: 9, weight: 2, color: '#fff', fillOpacity: 1 }),
          };
          // Leaflet inserts string content as HTML: names go in as text nodes only.
          drawn.label = document.createElement('span');
          drawn.dot.bindTooltip(drawn.label, { permanent: true, direction: 'right', className: 'name', offset: [10, 0] });
          drawn.accuracy.addTo(this.map);
          drawn.dot.addTo(this.map);
          this.marks.set(mark.id, drawn);
        }
        drawn.dot.setLatLng([mark.lat, mark.lng]);
        drawn.dot.setStyle({ fillColor: mark.colour, opacity: mark.opacity, fillOpacity: mark.opacity });
        drawn.label.textContent = mark.name;
        drawn.dot.getTooltip()?.setOpacity(Math.max(0.4, mark.opacity));
        drawn.accuracy.setLatLng([mark.lat, mark.lng]).setRadius(mark.accuracy);
        drawn.accuracy.setStyle({ color: mark.colour, fillColor: mark.colour, opacity: 0.4 * mark.opacity, fillOpacity: 0.1 * mark.opacity });
        drawn.dot.getElement()?.setAttribute('aria-label', mark.title);
      }
      for (const [id, drawn] of this.marks) {
        if (seen.has(id)) continue;
        this.map.removeLayer(drawn.dot);
        this.map.removeLayer(drawn.accuracy);
        this.marks.delete(id);
      }
      if (this.follow && marks.length) this.fit(marks);
    }

    fit(marks) {
      const bounds = window.L.latLngBounds(marks.map((m) => [m.lat, m.lng]));
      this.fitting = true;
      this.map.fitBounds(bounds.pad(0.3), { maxZoom: 16, animate: false });
      this.fitting = false;
    }

    positions() {
      return Object.fromEntries([...this.marks].map(([id, d]) => {
        const at = d.dot.getLatLng();
        return [id, [at.lat, at.lng, d.dot.options.fillOpacity]];
      }));
    }
  }

  /// No map library: an SVG with everyone around their centre, a metric grid and a scale.
  class GridView {
    constructor(element) {
      element.classList.add('grid-map');
      this.element = element;
      this.svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
      element.append(this.svg);
      this.marks = [];
    }

    render(marks) {
      this.marks = marks;
      const svgNs = 'http://www.w3.org/2000/svg';
      const width = this.element.clientWidth || 320;
      const height = this.element.clientHeight || 260;
      this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
      const parts = [];
      const add = (name, attributes, text) => {
        const node = document.createElementNS(svgNs, name);
        for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
        if (text !== undefined) node.textContent = text;
        parts.push(node);
        return node;
      };
      if (!marks.length) {
        add('text', { x: 12, y: 24 }, 'Waiting for positions…');
        this.svg.replaceChildren(...parts);
        return;
      }
      // Metres east and north of the centre of everyone.
      const lat0 = marks.reduce((s, m) => s + m.lat, 0) / marks.length;
      const lng0 = marks.reduce((s, m) => s + m.lng, 0) / marks.length;
      const perDegreeLat = 110540;
      const perDegreeLng = 111320 * Math.cos((lat0 * Math.PI) / 180);
      const points = marks.map((m) => ({ ...m, x: (m.lng - lng0) * perDegreeLng, y: (m.lat - lat0) * perDegreeLat }));
      const extent = Math.max(200, ...points.map((p) => Math.max(Math.abs(p.x), Math.abs(p.y)) + p.accuracy));
      const scale = (Math.min(width, height) / 2 - 30) / extent; // pixels per metre
      const toX = (x) => width / 2 + x * scale;
      const toY = (y) => height / 2 - y * scale;
      // Grid lines every "nice" distance, about five across.
      const step = niceDistance(extent / 2.5);
      for (let d = -Math.ceil(width / 2 / scale / step) * step; d * scale <= width / 2; d += step) {
        add('line', { x1: toX(d), y1: 0, x2: toX(d), y2: height, stroke: '#c9d0d6', 'stroke-width': 1 });
      }
      for (let d = -Math.ceil(height / 2 / scale / step) * step; d * scale <= height / 2; d += step) {
        add('line', { x1: 0, y1: toY(d), x2: width, y2: toY(d), stroke: '#c9d0d6', 'stroke-width': 1 });
      }
      for (const p of points) {
        const group = add('g', { opacity: p.opacity, 'data-user-id': p.id });
        const title = document.createElementNS(svgNs, 'title');
        title.textContent = p.title;
        group.append(title);
        const ring = document.createElementNS(svgNs, 'circle');
        for (const [k, v] of Object.entries({ cx: toX(p.x), cy: toY(p.y), r: Math.max(0, p.accuracy * scale), fill: p.colour, 'fill-opacity': 0.12, stroke: p.colour, 'stroke-opacity': 0.5 })) ring.setAttribute(k, v);
        const dot = document.createElementNS(svgNs, 'circle');
        for (const [k, v] of Object.entries({ cx: toX(p.x), cy: toY(p.y), r: 9, fill: p.colour, stroke: '#fff', 'stroke-width': 2 })) dot.setAttribute(k, v);
        const label = document.createElementNS(svgNs, 'text');
        label.setAttribute('x', toX(p.x) + 13);
        label.setAttribute('y', toY(p.y) + 4);
        label.textContent = p.name;
        group.append(ring, dot, label);
      }
      // The scale: one grid step.
      const barY = height - 14;
      add('line', { x1: 12, y1: barY, x2: 12 + step * scale, y2: barY, stroke: '#1d2327', 'stroke-width': 3 });
      add('text', { x: 12, y: barY - 6 }, step >= 1000 ? `${step / 1000} km` : `${step} m`);
      this.svg.replaceChildren(...parts);
    }

    positions() {
      return Object.fromEntries(this.marks.map((m) => [m.id, [m.lat, m.lng, m.opacity]]));
    }
  }

  function niceDistance(metres) {
    const power = 10 ** Math.floor(Math.log10(metres));
    const scaled = metres / power;
    return (scaled < 1.5 ? 1 : scaled < 3.5 ? 2 : scaled < 7.5 ? 5 : 10) * power;
  }

  // What the end-to-end tests read: where each marker is drawn, and who this page is.
  window.convoyDebug = {
    positions: () => (state.view ? state.view.positions() : {}),
    userId: () => state.me?.user_id,
    mapKind: () => (state.view instanceof LeafletView ? 'leaflet' : state.view ? 'grid' : null),
  };

  // ---- entry ---------------------------------------------------------------------------

  const match = location.pathname.match(/^\/join\/([^/]+)\/?$/);
  if (match) joinPage(decodeURIComponent(match[1]));
  else startPage();
})();
