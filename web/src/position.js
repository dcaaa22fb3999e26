// Sharing our own position: the browser's watchPosition, sent as `location_update` at most
// once a second (the newest fix goes out when the second is up), repeated while the phone
// stays still so it does not fade, and paused with `share_settings` when the user stops it.
// A pause holds for the participant's tracker apps too (README, "Tracker apps"), so only
// the user's own "Stop sharing" pauses: a browser that cannot share (no permission, no
// GPS: a laptop showing the app's QR code) just sends nothing.

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
    this.paused = false; // the user stopped sharing
    this.told = false; // the server has heard the page's latest choice
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
    if (!this.on) this.told = this.send('share_settings', { paused: false });
    this.on = true;
    this.paused = false;
    this.onSharing(true);
    // No timeout: a phone that stays put gets no new fix, and that is not an error.
    this.watchId = navigator.geolocation.watchPosition(
      (fix) => this.fixed(fix),
      (error) => this.failed(error),
      { enableHighAccuracy: true, maximumAge: 5000 },
    );
  }

  /// The user stops sharing: everyone else forgets our position at once, presence says we
  /// paused, and the tracker apps' positions are dropped until we share again.
  stop() {
    if (this.on) this.told = this.send('share_settings', { paused: true });
    this.paused = this.paused || this.on;
    this.halt();
  }

  /// This browser stops watching its position (the participant is not paused).
  halt() {
    if (this.watchId !== null) navigator.geolocation.clearWatch(this.watchId);
    this.watchId = null;
    this.on = false;
    this.position = null;
    this.onSharing(false);
    this.onPosition(null);
  }

  /// A new connection: a paused page says so again (a connection starts sharing), a
  /// sharing page whose choice the server has not heard yet (`start` ran before the socket
  /// was open) says that, since the participant's apps follow it too; and our position goes
  /// out at once. A page that cannot share says nothing, and neither does one already
  /// heard, so a tab coming back does not undo a pause made on another device.
  reconnected() {
    this.lastSentAt = 0;
    if (this.paused) this.told = this.send('share_settings', { paused: true });
    else if (this.on && !this.told) this.told = this.send('share_settings', { paused: false });
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
    if (refused) this.halt();
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
