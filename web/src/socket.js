// The live connection to /ws: one socket at a time, JSON messages `{type, data}` both ways,
// reconnected after a loss with exponential backoff, and given up when it has been silent
// too long. What the messages mean is main.js's business; whether to keep trying is asked of
// it too (`gone`).

export const MAX_RETRY_MS = 30000;
export const PING_EVERY_MS = 20000;
export const SILENCE_LIMIT_MS = 45000; // an open socket that heard nothing (not even a pong)

/// The wait before reconnect attempt `retries` (0 first): 1 s doubling to 30 s, times a
/// jitter factor between 0.5 and 1 (`random` in [0, 1), Math.random()'s).
export function reconnectDelay(retries, random) {
  return Math.min(MAX_RETRY_MS, 1000 * 2 ** retries) * (0.5 + random / 2);
}

export class Connection {
  /// `address()`: the socket's URL, asked at each attempt (the token may have changed).
  /// `onMessage(message)`: each parsed message. `onRetrying(delayMs)`: a reconnect is
  /// scheduled. `gone()`: whether the session or this participant is gone (a promise; then
  /// the page says so and nothing is retried).
  constructor({ address, onMessage, onRetrying, gone }) {
    Object.assign(this, { address, onMessage, onRetrying, gone });
    this.socket = null;
    this.stopped = false;
    this.retries = 0;
    this.reconnectTimer = null;
    this.lastHeardAt = 0;
    this.lastPingAt = 0;
  }

  /// Whether a socket is open or opening (none between a loss and the next attempt).
  get connected() {
    return this.socket !== null;
  }

  open() {
    if (this.stopped) return;
    const socket = new WebSocket(this.address());
    this.socket = socket;
    this.lastHeardAt = Date.now();
    socket.addEventListener('message', (event) => {
      this.lastHeardAt = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      this.afterClose(event.code);
    });
  }

  /// Sends if the socket is open; whether it did.
  send(type, data) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify({ type, data }));
    return true;
  }

  /// The server's snapshot arrived: the connection works, the next loss starts at 1 s.
  connectedAgain() {
    this.retries = 0;
  }

  /// Back online, or back to the tab: try now rather than at the next backoff step.
  retryNow() {
    if (this.socket || this.stopped) return;
    clearTimeout(this.reconnectTimer);
    this.open();
  }

  /// For good: the session ended or we left.
  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }

  /// A connection can die without a close (a phone between networks): ask now and then, and
  /// give up on a socket that has said nothing for a while. Called every second.
  watch(now) {
    const socket = this.socket;
    if (!socket) return;
    if (socket.readyState === WebSocket.OPEN && now - this.lastPingAt > PING_EVERY_MS) {
      this.lastPingAt = now;
      this.send('ping', {});
    }
    if (now - this.lastHeardAt > SILENCE_LIMIT_MS) {
      this.socket = null;
      socket.close();
      this.scheduleReconnect();
    }
  }

  async afterClose(code) {
    // 1000 is a deliberate close: the session ended or this participant was removed.
    if (code === 1000 || code === 1008) {
      if (await this.gone()) return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    clearTimeout(this.reconnectTimer);
    const delay = reconnectDelay(this.retries, Math.random());
    this.retries += 1;
    this.onRetrying(delay);
    this.reconnectTimer = setTimeout(async () => {
      if (this.retries > 2 && (await this.gone())) return;
      this.open();
    }, delay);
  }
}
