// Sharing our own position (web/src/position.js): which `share_settings` the page sends.
// A pause holds for the participant's tracker apps too, so only the user's own "Stop
// sharing" may pause; a browser that cannot share (a laptop showing the app's QR code)
// must not silence the phone's app.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PositionSharing } from '../src/position.js';

/// A browser whose geolocation calls `error` with `code` (or never answers: null).
function browser(code) {
  const PERMISSION_DENIED = 1;
  globalThis.navigator = {
    geolocation: {
      watchPosition(_fixed, failed) {
        if (code !== null) failed({ code, PERMISSION_DENIED, message: 'no' });
        return 7;
      },
      clearWatch() {},
    },
  };
  return PERMISSION_DENIED;
}

function page() {
  const sent = [];
  const position = new PositionSharing({
    send: (type, data) => sent.push([type, data]) > 0,
    userId: 'me',
    resendAfterMs: 10000,
    onSharing() {},
    onPosition() {},
    onProblem() {},
  });
  return { sharing: position, sent };
}

test('a refused permission stops this page without pausing the participant', () => {
  const { sharing, sent } = (browser(1), page());
  sharing.start();
  assert.equal(sharing.on, false);
  assert.match(sharing.problem, /permission was refused/);
  assert.deepEqual(sent, [['share_settings', { paused: false }]]);
  sharing.reconnected();
  assert.equal(sent.length, 1, 'a page that cannot share says nothing on a new connection');
});

test("the user's stop pauses, and a new connection is told so again", () => {
  browser(null);
  const { sharing, sent } = page();
  sharing.start();
  sharing.stop();
  sharing.reconnected();
  assert.deepEqual(sent.map(([, data]) => data.paused), [false, true, true]);
  sharing.start();
  sharing.reconnected();
  assert.deepEqual(sent.map(([, data]) => data.paused), [false, true, true, false], 'heard: not said again');
});

test('a choice made before the socket was open is said once it is', () => {
  browser(null);
  let open = false;
  const { sharing, sent } = page();
  const send = sharing.send;
  sharing.send = (type, data) => open && send(type, data);
  sharing.start();
  assert.deepEqual(sent, [], 'not connected yet');
  open = true;
  sharing.reconnected();
  sharing.reconnected();
  assert.deepEqual(sent, [['share_settings', { paused: false }]]);
});
