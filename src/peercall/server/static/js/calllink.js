/**
 * Call links: `<app>/call/<id>` (the server sends it on to `<app>/?call=<id>`) opens the app and offers to call
 * that user once connected; and the link others call us with.
 *
 * Owns the call link this page was opened with, and whether it has been used or set aside. Touches no element
 * of the page (calllinkpanel.js shows it) and places no call itself (main.js does, when the user says so).
 *
 * Why the page asks ("Call alice?") instead of ringing at once: opening a link is not a decision to ring
 * someone. Links are opened by accident, by link previews and by other sites (a page may open one in a new tab),
 * and a call that rings on its own would let any page ring anyone from the visitor's account. The click on Call
 * is also the user gesture that lets the page play the ringback tone.
 *
 * Events: `change`.
 * @module calllink
 */

import { idProblem } from "./protocol.js";

/**
 * The address at which others call `id` on this server (its call link).
 * @param {string} id
 * @returns {string}
 */
export function callLinkFor(id) {
  return new URL(`call/${encodeURIComponent(id)}`, new URL(".", location.href)).href;
}

/**
 * What the page shows of the call link it was opened with.
 * @typedef {object} CallLinkView
 * @property {string|null} peer the user to call (null: no link, or set aside)
 * @property {string|null} problem why the link cannot be used (not a valid id; our own link)
 */

/** The call link this page was opened with (`?call=`), until it is used or set aside. */
export class CallLink extends EventTarget {
  /** @type {string|null} */ #peer = null;
  /** @type {string|null} */ #invalid = null;

  /** @param {URLSearchParams} params the page's query */
  constructor(params) {
    super();
    const asked = params.get("call");
    if (asked === null) return;
    const problem = idProblem(asked);
    if (problem) this.#invalid = `This call link is not valid: ${problem}`;
    else this.#peer = asked;
  }

  /** The user the link calls (null: none, or already called or set aside). */
  get peer() {
    return this.#peer;
  }

  /**
   * @param {string|null} me our id while connected
   * @returns {CallLinkView}
   */
  view(me) {
    if (this.#invalid) return { peer: null, problem: this.#invalid };
    if (this.#peer && me === this.#peer) {
      return { peer: null, problem: "This is your own call link: send it to people who want to call you." };
    }
    return { peer: this.#peer, problem: null };
  }

  /** Done with the link (called, or set aside): forget it, and take `?call=` out of the address bar. */
  done() {
    this.#peer = this.#invalid = null;
    const params = new URLSearchParams(location.search);
    if (params.has("call")) {
      params.delete("call");
      const query = params.toString();
      try {
        history.replaceState(history.state, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
      } catch (err) {
        console.warn("[calllink] could not tidy the address bar:", err);
      }
    }
    this.dispatchEvent(new Event("change"));
  }
}
