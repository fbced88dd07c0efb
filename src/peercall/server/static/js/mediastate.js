/**
 * Media state: what this side says of its media (microphone muted, camera on, screen shared) and what the peer
 * said of theirs, through `media-state` frames (docs/protocol.md): said, never guessed from the media.
 *
 * One MediaState per page, for the current call (the Phone resets it when a call starts). `setLocal()` changes
 * what this side says; the Phone hands each change to the current call, which sends it once the call is answered
 * (and again after `call-accept` and `call-resumed`). `peerSaid()` takes the peer's frame. Pure state and
 * events: no sockets, no DOM.
 *
 * Events: `localchange` ({state}), `peerchange` ({state, at}: `at` is the `performance.now()` it arrived).
 * @module mediastate
 */

/**
 * @typedef {{muted: boolean, camera: boolean, screen: boolean}} MediaStateData
 */

/** Nothing said: unmuted, camera and screen off (also how a key left out of a frame reads). */
export const NOTHING_SAID = Object.freeze({ muted: false, camera: false, screen: false });

/**
 * The state a `media-state` frame's `data` says: each key that is not `true` (left out, or not a boolean) is false;
 * keys this client does not know are ignored.
 * @param {unknown} data
 * @returns {Readonly<MediaStateData>}
 */
export function parseMediaState(data) {
  const said = data && typeof data === "object" && !Array.isArray(data) ? /** @type {any} */ (data) : {};
  return Object.freeze({ muted: said.muted === true, camera: said.camera === true, screen: said.screen === true });
}

/**
 * @param {MediaStateData} a
 * @param {MediaStateData} b
 */
function same(a, b) {
  return a.muted === b.muted && a.camera === b.camera && a.screen === b.screen;
}

/** What this side says of its media, and what the peer said of theirs, for the current call. */
export class MediaState extends EventTarget {
  /** @type {Readonly<MediaStateData>} */ #local = NOTHING_SAID;
  /** @type {Readonly<MediaStateData>|null} */ #peer = null;
  #peerAt = 0;

  /** What this side says now. */
  get local() {
    return this.#local;
  }

  /** What the peer last said, or null until it said anything (an older client never does). */
  get peer() {
    return this.#peer;
  }

  /** `performance.now()` when the peer's last frame arrived (0: none yet). */
  get peerAt() {
    return this.#peerAt;
  }

  /**
   * Change what this side says: the keys given replace those said before, the others stay.
   * @param {Partial<MediaStateData>} changes e.g. `{muted: true}`, `{camera: true, screen: false}`
   * @returns {boolean} whether anything changed (then `localchange` was sent)
   */
  setLocal(changes) {
    const next = Object.freeze({
      muted: typeof changes?.muted === "boolean" ? changes.muted : this.#local.muted,
      camera: typeof changes?.camera === "boolean" ? changes.camera : this.#local.camera,
      screen: typeof changes?.screen === "boolean" ? changes.screen : this.#local.screen,
    });
    if (same(next, this.#local)) return false;
    this.#local = next;
    this.dispatchEvent(new CustomEvent("localchange", { detail: { state: next } }));
    return true;
  }

  /**
   * The peer's `media-state` arrived.
   * @param {unknown} data its `data`
   */
  peerSaid(data) {
    const state = parseMediaState(data);
    this.#peerAt = performance.now();
    if (this.#peer && same(this.#peer, state)) return;
    this.#peer = state;
    this.dispatchEvent(new CustomEvent("peerchange", { detail: { state, at: this.#peerAt } }));
  }

  /** A new call: nothing said on either side yet. */
  reset() {
    const changed = !same(this.#local, NOTHING_SAID);
    this.#local = NOTHING_SAID;
    this.#peer = null;
    this.#peerAt = 0;
    if (changed) this.dispatchEvent(new CustomEvent("localchange", { detail: { state: NOTHING_SAID } }));
  }
}
