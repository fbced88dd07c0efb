/**
 * Who this page is: the user's name, the token (and the user it names), this tab's device id, what the
 * server asks of us (a token or not; relayed calls only or not), and the user's wish to hide their IP address
 * (relayed calls only).
 *
 * Owns the token, the name and that wish as kept in storage, and the question to `/healthz` that tells the
 * server's mode. The token comes from the address (`#token=<jwt>`, removed from the address bar at once so that it
 * does not stay in the browser history or get shared) or from what this tab used last. Knows nothing of the
 * DOM, the signaling connection or the call.
 * @module identity
 */

import { idProblem, newCallId, tokenClaims } from "./protocol.js";
import { recall, remember } from "./storage.js";

/** localStorage: the name typed last (not for pages that preset it, not in token mode). */
const NAME_KEY = "peercall.id";
/** sessionStorage: this tab's device id. */
const DEVICE_KEY = "peercall.device";
/** sessionStorage: "1" from a page's `pagehide` until the next page of the tab loads (see {@link settleDevice}). */
const LEFT_KEY = "peercall.device.left";
/** sessionStorage: the token this tab used last. */
const TOKEN_KEY = "peercall.token";
/** localStorage: "1" when the user wants relayed calls only ("Hide my IP address"). */
const RELAY_KEY = "peercall.relayOnly";

/**
 * "open" (no token needed), "token" (a token is required), "accounts" (users sign in to the server, which gives
 * the page its tokens: account.js), or "unknown" (not asked yet, or `/healthz` did not answer).
 * @typedef {"open"|"token"|"accounts"|"unknown"} AuthMode
 */

/**
 * What stands in the way of connecting, or the user id to connect as.
 * @typedef {{id: string}|{tokenProblem: string}|{idProblem: string}} SignIn
 */

/** The page's identity: name, token, device id, and the server's auth mode. */
export class Identity {
  /** @type {string|null} */ #token = null;
  /** @type {AuthMode} */ #authMode = "unknown";
  #nameIsPreset;

  /**
   * @param {object} [options]
   * @param {boolean} [options.nameIsPreset] the page presets the name (the two-tab demo): it is not remembered
   */
  constructor({ nameIsPreset = false } = {}) {
    this.#nameIsPreset = nameIsPreset;
    settleDevice();
  }

  /** The token in use, or null. */
  get token() {
    return this.#token;
  }

  /** @returns {AuthMode} */
  get authMode() {
    return this.#authMode;
  }

  /** The token to present to the server (null when the server needs none). */
  get serverToken() {
    return this.#authMode === "open" ? null : this.#token;
  }

  /** The user the token names (its `sub`), if the token is a valid one, else null. */
  get tokenUser() {
    const sub = this.#token ? tokenClaims(this.#token)?.sub : null;
    return typeof sub === "string" && !idProblem(sub) ? sub : null;
  }

  /** The display name the token gives its user (its `name` claim: 1-64 characters), or null. */
  get tokenName() {
    const name = this.#token ? tokenClaims(this.#token)?.name : null;
    return typeof name === "string" && name.length > 0 && name.length <= 64 ? name : null;
  }

  /** The headers that authenticate an HTTP request to the server (`Authorization: Bearer`, in token mode). */
  authHeaders() {
    const token = this.serverToken;
    return token ? { authorization: `Bearer ${token}` } : {};
  }

  /**
   * The token the page starts with: from the address (then removed from it), else the one this tab used last.
   * @returns {string|null}
   */
  takeInitialToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const fromUrl = fragment.get("token");
    if (fromUrl === null) return recall(TOKEN_KEY, sessionStorage);
    fragment.delete("token");
    const rest = fragment.toString();
    replaceAddress(`${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
    const token = fromUrl.trim() || null;
    remember(TOKEN_KEY, token, sessionStorage);
    return token;
  }

  /**
   * Use `text` as our token: the name becomes the token's user.
   * @param {string|null} text
   * @returns {string|null} a problem with the token, as a sentence, or null (then {@link tokenUser} is the name)
   */
  useToken(text) {
    this.#token = text || null;
    if (!this.#token) return null;
    const claims = tokenClaims(this.#token);
    if (!claims) return "That is not a token: a token is three parts separated by dots (a JWT).";
    if (!this.tokenUser) return "The token names no valid user (its “sub”).";
    return null;
  }

  /** The server refused the token: do not offer it again in this tab. */
  forgetToken() {
    remember(TOKEN_KEY, null, sessionStorage);
  }

  /** Whether the user asked for relayed calls only ("Hide my IP address") on an earlier visit. */
  get relayOnly() {
    return recall(RELAY_KEY, localStorage) === "1";
  }

  /**
   * Remember whether the user wants relayed calls only.
   * @param {boolean} relayOnly
   */
  rememberRelayOnly(relayOnly) {
    remember(RELAY_KEY, relayOnly ? "1" : null, localStorage);
  }

  /** The name typed on an earlier visit, or null. */
  savedName() {
    return recall(NAME_KEY, localStorage);
  }

  /**
   * The user asked to connect as `typed` (or as the token's user): who to connect as, or what is in the way.
   * @param {string} typed the name in the form
   * @returns {SignIn}
   */
  signIn(typed) {
    const tokenProblem = this.#token ? this.useToken(this.#token) : null;
    if (tokenProblem) return { tokenProblem };
    if (!this.#token && this.#authMode === "token") {
      return { tokenProblem: "This server requires a token: paste the one you were given under Advanced." };
    }
    const id = this.#token ? this.tokenUser : typed;
    const problem = idProblem(id);
    if (problem) return { idProblem: problem };
    if (!this.#nameIsPreset && !this.#token) remember(NAME_KEY, id, localStorage);
    if (this.#token) remember(TOKEN_KEY, this.#token, sessionStorage);
    return { id };
  }

  /**
   * This tab's device id: kept in sessionStorage, so a reload or a reconnect is recognised as the same device
   * (and takes over its call), while another tab is another device, a duplicated tab included.
   * @returns {string|null} null if storage is disabled (the server then names the connection itself)
   */
  device() {
    try {
      let device = sessionStorage.getItem(DEVICE_KEY);
      if (!device || idProblem(device)) {
        device = `tab-${newCallId().replaceAll("-", "").slice(0, 12)}`;
        sessionStorage.setItem(DEVICE_KEY, device);
      }
      return device;
    } catch {
      return null;
    }
  }

  /** A server in open mode answered our `auth` frame with an error: it needs no token. */
  serverNeedsNoToken() {
    this.#authMode = "open";
  }

  /**
   * Ask the server whether it wants a token, whether it relays every call anyway, and whether it can relay one
   * at all: `/healthz` says it (`auth`, `iceTransportPolicy`, `relay`; docs/protocol.md, "Before connecting"), to
   * anyone, token or not. In accounts mode it may also say that passkeys can be used (`passkeys: true`).
   * `answered` is false when no answer came (no network, the server is down): see offline.js.
   * @returns {Promise<{authMode: AuthMode, relaysAll: boolean, canRelay: boolean, passkeys: boolean,
   *   answered: boolean}>}
   */
  async askServer() {
    let relaysAll = false;
    let canRelay = true; // (a server that does not say: as before it said)
    let passkeys = false;
    let answered = false;
    try {
      const response = await fetch(new URL("healthz", location.href), {
        cache: "no-store",
        signal: AbortSignal.timeout(5000),
      });
      answered = response.status < 500; // a proxy's 502/503/504: the server itself is not there
      const body = response.ok ? await response.json() : null;
      const mode = body?.auth;
      this.#authMode = mode === "token" || mode === "open" || mode === "accounts" ? mode : "unknown";
      relaysAll = body?.iceTransportPolicy === "relay";
      canRelay = body?.relay !== false;
      passkeys = body?.passkeys === true;
    } catch {
      this.#authMode = "unknown";
    }
    return { authMode: this.#authMode, relaysAll, canRelay, passkeys, answered };
  }
}

/**
 * Keep the device id found in sessionStorage only if the previous page of this same tab left it to us; a copy
 * is dropped, so that {@link Identity#device} makes this tab a device of its own. Then mark the storage whenever
 * this page goes away. Runs once, when the page's identity is made (at load, before anything connects).
 *
 * sessionStorage belongs to one tab, but a tab that the user duplicates (and, in some browsers, one opened from
 * it) starts with a copy of it, device id included: two live tabs, one device, and the server retires the older
 * connection for good (close 4501, "replaced by a newer connection"). What tells the two cases apart: a page that
 * loads after a reload or a navigation in the same tab comes after its predecessor's `pagehide`, which sets the
 * mark; a duplicate copies the storage of a page that is still alive and has not set it. `pageshow` clears the
 * mark when a page comes back from the back/forward cache (it did not go after all). Chromium reloads a tab it
 * discarded to save memory without a `pagehide`; `document.wasDiscarded` says so, and the device is kept.
 *
 * Why not the other ways: a BroadcastChannel question ("is anyone using device X?") or a localStorage claim with
 * a heartbeat both wait for another tab to answer, and a background tab that the browser throttles or freezes
 * (Chromium freezes them) may answer late or never: a race, lost exactly when the original tab is idle. The
 * navigation type (`performance.getEntriesByType("navigation")[0].type === "back_forward"`) marks a duplicate in
 * Chromium but also Back in the same tab, and Firefox differs. The mark is synchronous, in the tab's own storage,
 * and the same in Chromium and Firefox (both fire `pagehide` on every unload).
 *
 * The cost: a page killed without `pagehide` (a crash, a browser restored from a session snapshot) comes back as a
 * new device, which is harmless: its old connection is gone, and so is its call.
 */
function settleDevice() {
  try {
    const left = sessionStorage.getItem(LEFT_KEY) === "1";
    sessionStorage.removeItem(LEFT_KEY);
    const discarded = "wasDiscarded" in document && document.wasDiscarded === true;
    if (!left && !discarded && sessionStorage.getItem(DEVICE_KEY)) {
      console.info("[identity] this tab started with another tab's device id (a duplicated tab): taking a new one");
      sessionStorage.removeItem(DEVICE_KEY);
    }
  } catch {
    return; // storage disabled: there is no device id to share (the server names each connection)
  }
  addEventListener("pagehide", () => remember(LEFT_KEY, "1", sessionStorage));
  addEventListener("pageshow", (event) => {
    if (event.persisted) remember(LEFT_KEY, null, sessionStorage);
  });
}

/** @param {string} url */
function replaceAddress(url) {
  try {
    window.history.replaceState(window.history.state, "", url);
  } catch (err) {
    console.warn("[identity] could not remove the token from the address bar:", err);
  }
}
