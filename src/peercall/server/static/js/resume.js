/**
 * Resume: keeping a call going while our connection to the server is down, and picking it back up once the
 * connection is back (the server hands it over with `call-resumed`). The audio is peer-to-peer, so it goes on
 * meanwhile; the call is lost only if the connection does not come back within the server's resume grace, or
 * if, once back, the server does not hand the call back.
 *
 * Owns the two timers of that wait and the note that ICE must restart once the server can carry the offer
 * (the network changed while it was away). Knows nothing of the DOM; ends a call only through
 * `call.signalingLost()`.
 * @module resume
 */

/** After a reconnect, how long to wait for the server to hand our call back (`call-resumed`), in ms. */
export const RESUME_WAIT_MS = 2000;

/** The resume of the current call. */
export class Resume {
  /** ends the call if the connection does not come back within the server's resume grace */ #lostTimer = 0;
  /** ends the call if, once reconnected, the server does not hand it back */ #waitTimer = 0;
  /** restart ICE once signaling is back (the network changed while it was down) */ #restartIce = false;
  #current;
  #connected;

  /**
   * @param {object} options
   * @param {() => import("./call.js").Call|null} options.current the current call
   * @param {() => boolean} options.connected whether the signaling connection is up
   */
  constructor({ current, connected }) {
    this.#current = current;
    this.#connected = connected;
  }

  /** Stop waiting (the call resumed, ended, or another one began). */
  clear() {
    clearTimeout(this.#lostTimer);
    clearTimeout(this.#waitTimer);
    this.#lostTimer = this.#waitTimer = 0;
  }

  /**
   * Our connection to the server dropped during a call. The call goes on for as long as the server would keep
   * it for us: its resume grace.
   * @param {number} graceSec the server's resume grace (`welcome.resumeGrace`)
   */
  keepWhileReconnecting(graceSec) {
    const c = this.#current();
    if (!c?.active || this.#lostTimer) return;
    const graceMs = Math.max(0, graceSec) * 1000;
    this.#lostTimer = setTimeout(() => {
      this.#lostTimer = 0;
      if (c === this.#current() && c.active && !this.#connected()) {
        console.info("[resume] the connection did not come back within the resume grace; the call is lost");
        c.signalingLost();
      }
    }, graceMs + 1000);
  }

  /** We are back: the server's `call-resumed` (or a repeated `call-request`) should come at once. */
  awaitResume() {
    clearTimeout(this.#lostTimer);
    this.#lostTimer = 0;
    const c = this.#current();
    if (!c?.active) return;
    clearTimeout(this.#waitTimer);
    this.#waitTimer = setTimeout(() => {
      this.#waitTimer = 0;
      if (c === this.#current() && c.active) {
        console.info("[resume] reconnected, but the server did not hand our call back: it is over");
        c.signalingLost();
      }
    }, RESUME_WAIT_MS);
  }

  /** The network changed while the server could not carry a new offer: restart ICE once it can. */
  restartIceLater() {
    this.#restartIce = true;
  }

  /**
   * Whether ICE must restart now that the call resumed (and forget it).
   * @returns {boolean}
   */
  takeIceRestart() {
    const pending = this.#restartIce;
    this.#restartIce = false;
    return pending;
  }
}
