// Sharing our own position: the browser's watchPosition, sent as `location_update` at most
// once a second (the newest fix goes out when the second is up), repeated while the phone
// stays still so it does not fade, and paused with `share_settings` when we stop.

import { ownPosition } from './model.js';

const SEND_EVERY_MS = 1000; // at most one position a second

export class PositionSharing {
  /// `send(type, data)`: over the socket, whether it went. `userId`: ours.
  /// `resendAfterMs`: how long a still phone waits before repeating its position.
  /// `onSharing(on)`: sharing started or stopped. `onPosition(position)`: our position to
  /// show (null: none). `onProblem(text)`: why the position is not shared (null: it is again).
  constructor({ send, userId, resendAfterMs, onSharing, onPosition, onProblem }) {
    Object.assign(this, { send, userId, resendAfterMs, onSharing, onPosition, onProblem });
    this.on = false;
    this.position = null; // our newest position while sharing
    this.problem = null; // what the page says about it, if something is wrong
    this.watchId = null;
    this.lastSentAt = 0;
    this.sendTimer = null;
  }

  start() {
    this.problem = null;
    if (!('geolocation' in navigator)) {
      this.problem = 'This browser cannot share its position; you can still see the others.';
      this.onProblem(this.problem);
      return;
    }
    if (!this.on) this.send('share_settings', { paused: false });
    this.on = true;
    this.onSharing(true);
    // No timeout: a phone that stays put gets no new fix, and that is not an error.
    this.watchId = navigator.geolocation.watchPosition(
      (fix) => this.fixed(fix),
      (error) => this.failed(error),
      { enableHighAccuracy: true, maximumAge: 5000 },
    );
  }

  stop() {
    if (this.watchId !== null) navigator.geolocation.clearWatch(this.watchId);
    this.watchId = null;
    // Everyone else forgets our position at once, and presence says we paused.
    if (this.on) this.send('share_settings', { paused: true });
    this.on = false;
    this.position = null;
    this.onSharing(false);
    this.onPosition(null);
  }

  /// A new connection: its rules start from sharing, so a paused page says so again, and
  /// our position goes out at once.
  reconnected() {
    this.lastSentAt = 0;
    if (!this.on) this.send('share_settings', { paused: true });
    this.sendPosition();
  }

  /// Called every second: a still phone repeats its position (well within the TTL).
  resendIfStill(now) {
    if (this.position && this.on && now - this.lastSentAt > this.resendAfterMs) {
      this.position = { ...this.position, timestamp: new Date(now).toISOString(), seen: now };
      this.onPosition(this.position);
      this.sendPosition();
    }
  }

  fixed(fix) {
    if (this.problem) {
      this.problem = null;
      this.onProblem(null);
    }
    this.position = ownPosition(this.userId, fix.coords, Date.now());
    this.onPosition(this.position);
    this.sendPosition();
  }

  failed(error) {
    const refused = error.code === error.PERMISSION_DENIED;
    const why = refused ? 'permission was refused' : error.message || 'unavailable';
    this.problem = `Your position is not shared (${why}); you can still see the others.`;
    if (refused) this.stop();
    this.onProblem(this.problem);
  }

  sendPosition() {
    const own = this.position;
    if (!own || !this.on) return;
    const wait = this.lastSentAt + SEND_EVERY_MS - Date.now();
    if (wait > 0) {
      // Too soon: the newest position goes out when the second is up.
      if (!this.sendTimer) {
        this.sendTimer = setTimeout(() => {
          this.sendTimer = null;
          this.sendPosition();
        }, wait);
      }
      return;
    }
    const { lat, lng, accuracy, timestamp } = own;
    if (this.send('location_update', { lat, lng, accuracy, timestamp })) this.lastSentAt = Date.now();
  }
}
