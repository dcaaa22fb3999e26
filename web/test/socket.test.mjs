// The connection's backoff (reconnectDelay in web/src/socket.js, pure; the socket itself
// is driven by tests/browser, which cuts and restores the network).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_RETRY_MS, reconnectDelay } from '../src/socket.js';

test('reconnecting waits 1 s doubling to 30 s', () => {
  const longest = [0, 1, 2, 3, 4, 5, 6, 10].map((retries) => reconnectDelay(retries, 1));
  assert.deepEqual(longest, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(MAX_RETRY_MS, 30000);
});

test('each wait is jittered down to half of it', () => {
  assert.equal(reconnectDelay(0, 0), 500);
  assert.equal(reconnectDelay(3, 0.5), 6000);
  assert.equal(reconnectDelay(20, 0), 15000);
});
