// The official Phoenix JavaScript client (npm `phoenix`) against convoy's
// /socket/websocket, next to a native /ws client in the same session.
//
// Run by tests/api/phoenix.rs, which starts convoy and sets CONVOY_URL (and, for the
// two-instance run, CONVOY_URL_NATIVE: where the native client connects).

import { test } from "node:test";
import assert from "node:assert/strict";
import { Socket, Presence } from "phoenix";
import WebSocket from "ws";

const base = process.env.CONVOY_URL;
const nativeBase = process.env.CONVOY_URL_NATIVE || base;
assert.ok(base, "CONVOY_URL must name a running convoy, e.g. http://127.0.0.1:8080");

const WAIT_MS = 10_000;

async function api(path, { method = "POST", body, token, at = base } = {}) {
  const response = await fetch(`${at}${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Resolves with the first value `check` returns that is not undefined, polling events. */
function waitFor(what, subscribe) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
    subscribe((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** A native /ws client: JSON {type, data} frames. */
function nativeClient(token) {
  const ws = new WebSocket(`${nativeBase.replace(/^http/, "ws")}/ws?token=${token}`);
  const listeners = new Set();
  ws.on("message", (data) => {
    const message = JSON.parse(data.toString());
    for (const listener of listeners) listener(message);
  });
  return {
    ws,
    opened: new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    }),
    next(type, predicate = () => true) {
      return waitFor(`a native ${type}`, (done) => {
        const listener = (message) => {
          if (message.type === type && predicate(message.data)) {
            listeners.delete(listener);
            done(message.data);
          }
        };
        listeners.add(listener);
      });
    },
    send(type, data) {
      ws.send(JSON.stringify({ type, data }));
    },
  };
}

function phoenixSocket(token) {
  const socket = new Socket(`${base.replace(/^http/, "ws")}/socket`, {
    transport: WebSocket,
    params: { token },
  });
  socket.connect();
  return socket;
}

function joined(channel) {
  return new Promise((resolve, reject) => {
    channel
      .join()
      .receive("ok", resolve)
      .receive("error", (reason) => reject(new Error(`join refused: ${JSON.stringify(reason)}`)))
      .receive("timeout", () => reject(new Error("join timed out")));
  });
}

test("a Phoenix client and a /ws client share a session", async () => {
  const created = await api("/api/sessions", { body: { name: "Phoenix trip" } });
  assert.equal(created.status, 201);
  const sid = created.body.session_id;
  const ann = (await api(`/api/sessions/${sid}/join`, { body: { display_name: "Ann" } })).body;
  const bob = (await api(`/api/sessions/${sid}/join`, { body: { display_name: "Bob" } })).body;

  const socket = phoenixSocket(ann.websocket_token);
  const channel = socket.channel(`location:${sid}`, {});
  const presence = new Presence(channel);
  const bothPresent = waitFor("Presence.onSync to list Ann and Bob", (done) => {
    presence.onSync(() => {
      const users = presence.list((id, { metas }) => ({ id, name: metas[0].display_name }));
      if (users.length === 2) done(users);
    });
  });
  const reply = await joined(channel);
  // The join reply carries the snapshot /ws sends as session_state.
  assert.equal(reply.session_id, sid);
  assert.equal(reply.user_id, ann.user_id);
  assert.deepEqual(reply.participants.map((p) => p.display_name).sort(), ["Ann", "Bob"]);

  const bobWs = nativeClient(bob.websocket_token);
  await bobWs.opened;
  const users = await bothPresent;
  assert.deepEqual(users.map((u) => u.name).sort(), ["Ann", "Bob"]);

  // Ann (Phoenix) moves: Bob (/ws) sees it.
  const bobSees = bobWs.next("location_broadcast", (d) => d.user_id === ann.user_id);
  const pushed = await new Promise((resolve, reject) => {
    channel
      .push("location_update", { lat: 48.8584, lng: 2.2945, accuracy: 5, timestamp: new Date().toISOString() })
      .receive("ok", resolve)
      .receive("error", (e) => reject(new Error(JSON.stringify(e))))
      .receive("timeout", () => reject(new Error("push timed out")));
  });
  assert.deepEqual(pushed, {});
  const seen = await bobSees;
  assert.equal(seen.lat, 48.8584);
  assert.equal(seen.lng, 2.2945);

  // Bob (/ws) moves: Ann's channel gets seed 001's location_update.
  const annSees = waitFor("location_update on the channel", (done) =>
    channel.on("location_update", (payload) => {
      if (payload.user_id === bob.user_id) done(payload);
    }),
  );
  bobWs.send("location_update", { lat: 51.5007, lng: -0.1246, accuracy: 8, timestamp: new Date().toISOString() });
  const moved = await annSees;
  assert.equal(moved.lat, 51.5007);
  assert.equal(moved.accuracy, 8);

  // A bad push is refused with a reason, and the channel stays joined.
  const refused = await new Promise((resolve) => {
    channel.push("location_update", { lat: 123 }).receive("error", resolve);
  });
  assert.match(refused.reason, /invalid_location/);
  const pong = await new Promise((resolve) => channel.push("ping", {}).receive("ok", resolve));
  assert.deepEqual(pong, { pong: true });

  // Bob leaves the socket: Presence drops him.
  const onlyAnn = waitFor("Presence to drop Bob", (done) => {
    presence.onSync(() => {
      if (presence.list().length === 1) done(presence.list((id) => id));
    });
  });
  bobWs.ws.close();
  assert.deepEqual(await onlyAnn, [ann.user_id]);

  // The creator ends the session: session_ended, then the channel closes.
  const ended = waitFor("session_ended", (done) => channel.on("session_ended", done));
  const closed = waitFor("the channel to close", (done) => channel.onClose(done));
  const end = await api(`/api/sessions/${sid}`, { method: "DELETE", token: created.body.creator_token });
  assert.equal(end.status, 204);
  assert.deepEqual(await ended, { reason: "ended_by_creator" });
  await closed;
  // As on Phoenix, the channel closed and the socket stays: no reconnect loop.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(socket.isConnected(), true);
  socket.disconnect();
});

test("a join to another session's channel is refused", async () => {
  const mine = (await api("/api/sessions", { body: {} })).body.session_id;
  const other = (await api("/api/sessions", { body: {} })).body.session_id;
  const ann = (await api(`/api/sessions/${mine}/join`, { body: { display_name: "Ann" } })).body;
  const socket = phoenixSocket(ann.websocket_token);
  const channel = socket.channel(`location:${other}`, {});
  const reason = await new Promise((resolve) => channel.join().receive("error", resolve));
  assert.deepEqual(reason, { reason: "unauthorized" });
  channel.leave();
  socket.disconnect();
});
