/**
 * The signaling connection: one WebSocket to the peercall server, reconnected with backoff.
 *
 * Owns the socket and its timers; knows nothing of the DOM or of WebRTC. Every server frame is
 * dispatched as an event named after its `type` (`welcome`, `presence`, `call-request`, `offer`, …,
 * `error`), with the parsed frame as `event.detail`; connection changes as `statechange`; the list of
 * other users online as `online`; what is known of everyone else (online, in a call, or offline since when:
 * `welcome`'s `inCall` and `recent`, and presence changes) as `people`. The display names frames carry go to
 * names.js before the frame is dispatched.
 *
 * Reconnect policy by close code (ranges, not lists; see protocol.js):
 *  - 4500-4999: terminal (e.g. 4501 replaced): stay disconnected and say why;
 *  - 4401: the token was refused: stay disconnected until the user gives a new one (the same token would
 *    only be refused again), and say why in the server's words; but with a `renew` source (accounts mode), ask
 *    it for a fresh token and reconnect at once (the call resumes within the resume grace), once: a fresh token
 *    refused too, or none to be had (the sign-in ended), stays disconnected;
 *  - 1001 (server going away), 4000-4499 (e.g. 4429 too fast), any other unexpected close, or a failed
 *    handshake: reconnect with exponential backoff and jitter, until `disconnect()` is called.
 *
 * With a token, the first frame on every new socket is `{"type":"auth","token":…}`. With a `renew` source too,
 * the token is renewed on the live socket before it expires (`welcome`'s `tokenExpiresAt`, then each
 * `auth-renewed`'s `expiresAt`): a minute before, or at half its lifetime when it is short
 * (docs/protocol.md, "Renewing the token on a live connection").
 * @module signaling
 */

import { learnFrom as learnNames } from "./names.js";
import {
  CloseCode,
  ErrorCode,
  MessageType,
  auth,
  idProblem,
  isTerminalClose,
  needsNewCredentials,
  parse,
} from "./protocol.js";

/** People kept in `people` at most: beyond it the offline ones known longest are forgotten (the `directory` frame
 * finds anyone online on a big server). */
const MAX_PEOPLE = 2000;

/** How long a renewal may take to get a fresh token before it is given up (ms). */
const RENEW_TIMEOUT_MS = 10_000;

/**
 * When to renew a token that expires at `expiresAt` (Unix seconds): ms from `now` (ms). A minute before it
 * expires, or, for a token with less than two minutes to live, at half what is left; never sooner than in 1 s.
 * @param {number} expiresAt
 * @param {number} [now]
 */
export function renewDelay(expiresAt, now = Date.now()) {
  const left = expiresAt * 1000 - now;
  const delay = left > 120_000 ? left - 60_000 : left / 2;
  return Math.max(1000, Math.round(delay));
}

/**
 * @typedef {"disconnected"|"connecting"|"connected"|"reconnecting"} SignalingState
 */

/**
 * @typedef {object} StateDetail
 * @property {SignalingState} state
 * @property {SignalingState} previous
 * @property {number} [code] close code of the socket that just closed
 * @property {string} [reason] why we are disconnected / reconnecting, as a sentence
 * @property {number} [retryIn] milliseconds until the next attempt (state "reconnecting")
 * @property {boolean} [terminal] true if the server told us not to come back as we are
 * @property {boolean} [unauthorized] true if the server refused our token (close 4401)
 */

/**
 * What is known of another user.
 * @typedef {object} Person
 * @property {string} id
 * @property {"online"|"offline"} status
 * @property {boolean} inCall online and in an answered call (servers that say so)
 * @property {number|null} lastSeen offline: when they left (Unix seconds), if known
 */

/**
 * The changes a `presence` frame carries: one (`{id, status}`), or several at once (`{changes: [...]}`, which
 * may name ourselves: `#setOnline` leaves us out). A change may also carry `inCall` and `lastSeen`.
 * @param {{id?: unknown, status?: unknown, changes?: unknown}} msg
 * @returns {{id: string, status: string, inCall?: boolean, lastSeen?: number}[]}
 */
export function presenceChanges(msg) {
  const changes = Array.isArray(msg.changes) ? msg.changes : [msg];
  return changes.filter((c) => c && typeof c.id === "string" && typeof c.status === "string");
}

/** A WebSocket signaling client. */
export class Signaling extends EventTarget {
  /** @type {WebSocket|null} */ #ws = null;
  /** @type {SignalingState} */ #state = "disconnected";
  /** @type {string|null} */ #id = null;
  /** @type {string|null} */ #device = null;
  /** @type {string|null} */ #token = null;
  /** @type {object|null} */ #welcome = null;
  #url;
  #attempt = 0;
  #timer = 0;
  #minDelay;
  #maxDelay;
  #openTimeout;
  /** @type {Set<string>} */ #online = new Set();
  /** @type {Map<string, Person>} everyone else we know of, online or not */ #people = new Map();
  /** @type {string|null} whose view #people is (another name starts it over) */ #peopleOf = null;
  /** @type {object|null} the last error frame, to explain a close that follows it */ #lastError = null;
  /** @type {string|null} why the server cannot be reached, while reconnecting */ #reconnectReason = null;
  /** @type {number|null} Date.now() of the next attempt, while reconnecting */ #retryAt = null;
  /** @type {(() => Promise<string|null>)|null} where fresh tokens come from (accounts mode), or null */ #renew = null;
  #renewTimer = 0;
  /** @type {number|null} when the connection's token expires (Unix seconds), as the server last said */
  #expiresAt = null;
  /** the socket being opened carries a fresh token after a 4401: another 4401 is final */ #retriedAuth = false;

  /**
   * @param {object} [options]
   * @param {string|URL} [options.url] the `/ws` endpoint; default: `ws` next to the current page
   * @param {number} [options.minDelay] first reconnect delay in ms (default 500)
   * @param {number} [options.maxDelay] largest reconnect delay in ms (default 30000)
   * @param {number} [options.openTimeout] ms a socket may take to open before it is given up and another tried
   *   (default 8000, doubling with each attempt in a row up to a minute, so that a network that is only slow gets
   *   there): a socket can stay "connecting" for minutes, or for ever (packets dropped on the way, or a
   *   Content-Security-Policy that blocks the address: Chromium then fires no event at all). 0: never given up
   */
  constructor({ url, minDelay = 500, maxDelay = 30_000, openTimeout = 8_000 } = {}) {
    super();
    const base = new URL(url ?? "ws", globalThis.location?.href);
    if (base.protocol === "http:") base.protocol = "ws:";
    if (base.protocol === "https:") base.protocol = "wss:";
    this.#url = base;
    this.#minDelay = minDelay;
    this.#maxDelay = maxDelay;
    this.#openTimeout = openTimeout;
  }

  /** @returns {SignalingState} */
  get state() {
    return this.#state;
  }

  /** Our own id while connected or reconnecting, else null. */
  get id() {
    return this.#id;
  }

  /** The last `welcome` frame (the server's version, timers…), or null before the first one. */
  get welcome() {
    return this.#welcome;
  }

  /** The ids of the others online, sorted. */
  get online() {
    return [...this.#online].sort();
  }

  /**
   * Everyone else we know of: those online (in a call or not), by name, then those who went offline, the most
   * recently seen first. Empty while not connected.
   * @returns {Person[]}
   */
  get people() {
    if (this.#state !== "connected") return [];
    const all = [...this.#people.values()].filter((p) => p.id !== this.#id);
    const online = all.filter((p) => p.status === "online").sort((a, b) => a.id.localeCompare(b.id));
    const offline = all
      .filter((p) => p.status !== "online")
      .sort((a, b) => (b.lastSeen ?? 0) - (a.lastSeen ?? 0) || a.id.localeCompare(b.id));
    return [...online, ...offline];
  }

  /**
   * Whether the server keeps call state (and so resumes calls, sends `call-ended` and keeps the history): its
   * `welcome` names a resume grace. A plain forwarding server does none of that.
   */
  get keepsCallState() {
    return Boolean(this.#welcome && "resumeGrace" in this.#welcome);
  }

  /** Why the server cannot be reached, as a sentence, while reconnecting (else null). */
  get reconnectReason() {
    return this.#reconnectReason;
  }

  /** When the next attempt to reconnect is (Date.now()), while reconnecting (else null). */
  get retryAt() {
    return this.#retryAt;
  }

  /** Whether frames can be sent right now. */
  get isOpen() {
    return this.#ws?.readyState === WebSocket.OPEN && this.#state === "connected";
  }

  /** The token sent in the `auth` frame, or null (a server in open mode needs none). */
  get token() {
    return this.#token;
  }

  /**
   * Connect as `id`. Throws (without touching the network) if the id is malformed.
   * @param {string} id
   * @param {object} [options]
   * @param {string|null} [options.device] this device's id, kept across reconnects, so that the server can
   *   hand a call over to the new connection (same characters as an id)
   * @param {string|null} [options.token] a signed token whose `sub` is `id`: sent as the first frame
   * @param {(() => Promise<string|null>)|null} [options.renew] gives a fresh token of the same user (null: none
   *   can be had), to renew the token before it expires and to reconnect after a 4401
   */
  connect(id, { device = null, token = null, renew = null } = {}) {
    const problem = idProblem(id);
    if (problem) throw new TypeError(problem);
    if (this.#state !== "disconnected") this.disconnect();
    this.#id = id;
    this.#device = device && !idProblem(device) ? device : null;
    this.#token = token || null;
    this.#renew = renew;
    this.#retriedAuth = false;
    this.#attempt = 0;
    this.#open("connecting");
  }

  /**
   * Try again at once if we are waiting to reconnect (the user's "Retry now", or the browser says the network is
   * back): the backoff starts over. A socket still opening is given up for a new one (opened on a network that was
   * down, it may hang until its open timeout); one that is open (its welcome on the way) is left to finish.
   */
  reconnectNow() {
    if (this.#state !== "reconnecting") return;
    const ws = this.#ws;
    if (ws) {
      if (ws.readyState === WebSocket.OPEN) return;
      this.#ws = null; // its late events are ignored (they are for a socket that is no longer ours)
      ws.close();
    }
    clearTimeout(this.#timer);
    this.#attempt = 0;
    console.info("[signaling] reconnecting now");
    this.#open("reconnecting");
  }

  /** When the connection's token expires (Unix seconds), as the server last said, or null. */
  get tokenExpiresAt() {
    return this.#expiresAt;
  }

  /** Close the connection on purpose and stop reconnecting. */
  disconnect() {
    clearTimeout(this.#timer);
    clearTimeout(this.#renewTimer);
    this.#renew = null;
    this.#expiresAt = null;
    const ws = this.#ws;
    this.#ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(CloseCode.NORMAL, "bye");
    this.#setOnline([]);
    this.#id = null;
    this.#setState("disconnected", { reason: "You disconnected." });
  }

  /**
   * Send one client frame.
   * @param {object} msg built by protocol.js
   * @returns {boolean} false if the socket is not open (the frame is dropped)
   */
  send(msg) {
    if (!this.isOpen) {
      console.warn("[signaling] not connected; dropped", msg.type, "to", msg.to);
      return false;
    }
    this.#ws.send(JSON.stringify(msg));
    return true;
  }

  /** @param {SignalingState} state */
  #open(state) {
    const url = new URL(this.#url);
    url.searchParams.set("id", this.#id);
    if (this.#device) url.searchParams.set("device", this.#device);
    this.#setState(state);
    this.#lastError = null;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      console.error("[signaling] cannot open", url.href, err);
      this.#closed({ code: 1006, reason: String(err?.message ?? err) });
      return;
    }
    this.#ws = ws;
    const first = this.#openTimeout; // for the first connect and the first retry; doubled for each retry after
    const wait =
      Number.isFinite(first) && first > 0 ? Math.min(first * 2 ** Math.max(0, this.#attempt - 1), 60_000) : 0;
    const giveUp =
      wait > 0
        ? setTimeout(() => {
            // (not open: still connecting, or closed without a word, as Chromium leaves one that the CSP blocked)
            if (ws !== this.#ws || ws.readyState === WebSocket.OPEN) return;
            console.warn(`[signaling] ${url.origin} did not answer within ${wait} ms; trying again`);
            this.#closed({ code: 1006, reason: "no answer" }); // (it lets go of `ws`: a late event is ignored)
            ws.close();
          }, wait)
        : 0;
    ws.addEventListener("open", () => {
      clearTimeout(giveUp);
      if (ws === this.#ws && this.#token) ws.send(JSON.stringify(auth(this.#token)));
    });
    ws.addEventListener("message", (event) => {
      if (ws === this.#ws) this.#receive(event.data);
    });
    ws.addEventListener("close", (event) => {
      clearTimeout(giveUp);
      if (ws === this.#ws) this.#closed(event);
    });
  }

  /** @param {string} text */
  #receive(text) {
    const msg = parse(text);
    if (!msg) {
      console.warn("[signaling] ignored a frame that is not a JSON message:", String(text).slice(0, 200));
      return;
    }
    learnNames(msg); // before anyone shows the people the frame is about
    switch (msg.type) {
      case MessageType.WELCOME:
        this.#attempt = 0;
        this.#retriedAuth = false;
        this.#welcome = msg;
        this.#scheduleRenewal(msg.tokenExpiresAt);
        this.#welcomePeople(msg);
        this.#setOnline(Array.isArray(msg.online) ? msg.online : []);
        this.#setState("connected");
        this.#peopleChanged();
        break;
      case MessageType.PRESENCE: {
        const next = new Set(this.#online);
        for (const change of presenceChanges(msg)) {
          const { id, status } = change;
          if (status === "online") next.add(id);
          else if (status === "offline") next.delete(id);
          this.#updatePerson(change);
        }
        this.#setOnline([...next]);
        this.#peopleChanged();
        break;
      }
      case MessageType.AUTH_RENEWED:
        console.info(`[signaling] token renewed: it expires at ${msg.expiresAt}`);
        this.#scheduleRenewal(msg.expiresAt);
        break;
      case MessageType.ERROR:
        this.#lastError = msg;
        console.warn(`[signaling] server error ${msg.code}: ${msg.message}`);
        break;
      default:
        break;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
  }

  /** @param {{code: number, reason?: string}} event */
  #closed({ code, reason }) {
    this.#ws = null;
    clearTimeout(this.#renewTimer);
    const wasConnected = this.#state === "connected";
    this.#setOnline([]);
    if (needsNewCredentials(code)) {
      const why = this.#lastError?.code === ErrorCode.UNAUTHORIZED ? this.#lastError.message : reason;
      if (this.#renew && !this.#retriedAuth) {
        this.#reconnectWithFreshToken(why);
        return;
      }
      console.warn(`[signaling] closed ${code}: the token was refused (${why}); not reconnecting`);
      this.#id = null;
      this.#setState("disconnected", {
        code,
        reason: `The server refused your token${why ? `: ${why}` : ""}.`,
        terminal: true,
        unauthorized: true,
      });
      return;
    }
    if (isTerminalClose(code)) {
      const why =
        this.#lastError?.code === ErrorCode.ID_TAKEN || code === CloseCode.ID_TAKEN
          ? `The name “${this.#id}” is already connected from another tab or device. ` +
            "Close that one or pick another name."
          : code === CloseCode.REPLACED
            ? "This page was disconnected because the same device connected again elsewhere."
            : `The server closed the connection (${code}${reason ? `: ${reason}` : ""}).`;
      console.warn(`[signaling] closed ${code} ${reason ?? ""}: terminal, not reconnecting`);
      this.#id = null;
      this.#setState("disconnected", { code, reason: why, terminal: true });
      return;
    }
    const delay = this.#backoff();
    const why =
      code === CloseCode.GOING_AWAY
        ? "The server is restarting."
        : code === CloseCode.TRY_AGAIN_LATER
          ? "The server is briefly unavailable."
          : code === CloseCode.RATE_LIMITED
            ? "The server disconnected this page for sending too much too fast."
            : code === CloseCode.TOO_MANY_CONNECTIONS
              ? `Too many connections are open${this.#lastError?.message ? ` (${this.#lastError.message})` : ""}.`
              : code === CloseCode.SLOW_CONSUMER
                ? "The server disconnected this page because it fell behind."
                : wasConnected
                  ? "Lost the connection to the server."
                  : "No connection to the server.";
    console.info(`[signaling] closed ${code} ${reason ?? ""}; reconnecting in ${delay} ms`);
    this.#setState("reconnecting", { code, reason: why, retryIn: delay });
    this.#timer = setTimeout(() => this.#open("reconnecting"), delay);
  }

  /**
   * The token was refused (it expired, or the sign-in ended): ask for a fresh one and reconnect at once; if
   * none can be had, stay disconnected like any refused token.
   * @param {string} why the server's words
   */
  async #reconnectWithFreshToken(why) {
    console.info(`[signaling] the token was refused (${why}); getting a fresh one`);
    this.#retriedAuth = true;
    this.#setState("reconnecting", { code: CloseCode.UNAUTHORIZED, reason: "Signing in again…", retryIn: 0 });
    const renew = this.#renew;
    const token = await this.#fresh();
    if (this.#state !== "reconnecting" || this.#ws || renew !== this.#renew) return; // disconnected meanwhile
    if (token === undefined) {
      // The token could not be fetched (the network?): try again with backoff, like any lost connection.
      const delay = this.#backoff();
      this.#retriedAuth = false;
      const reason = "No connection to the server.";
      this.#setState("reconnecting", { code: CloseCode.UNAUTHORIZED, reason, retryIn: delay });
      this.#timer = setTimeout(() => {
        if (this.#state === "reconnecting" && !this.#ws) this.#reconnectWithFreshToken(why);
      }, delay);
      return;
    }
    if (!token) {
      this.#id = null;
      this.#setState("disconnected", {
        code: CloseCode.UNAUTHORIZED,
        reason: `The server refused your token${why ? `: ${why}` : ""}.`,
        terminal: true,
        unauthorized: true,
      });
      return;
    }
    this.#token = token;
    this.#open("reconnecting");
  }

  /**
   * A fresh token from the renew source: the token, null if none can be had (the sign-in ended), or undefined
   * if getting one failed or took too long (worth another try).
   * @returns {Promise<string|null|undefined>}
   */
  async #fresh() {
    const renew = this.#renew;
    if (!renew) return null;
    let timer = 0;
    try {
      const late = new Promise((resolve) => {
        timer = setTimeout(() => resolve(undefined), RENEW_TIMEOUT_MS);
      });
      const token = await Promise.race([renew(), late]);
      return token === undefined ? undefined : token || null;
    } catch (err) {
      console.warn("[signaling] could not get a fresh token:", err);
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Renew the token on the live socket before `expiresAt` (when there is a renew source).
   * @param {unknown} expiresAt Unix seconds, from `welcome` or `auth-renewed`
   */
  #scheduleRenewal(expiresAt) {
    clearTimeout(this.#renewTimer);
    this.#expiresAt = typeof expiresAt === "number" && Number.isFinite(expiresAt) ? expiresAt : null;
    if (!this.#renew || this.#expiresAt === null) return;
    const ws = this.#ws;
    const delay = renewDelay(this.#expiresAt);
    console.info(`[signaling] renewing the token in ${Math.round(delay / 1000)} s`);
    this.#renewTimer = setTimeout(async () => {
      const token = await this.#fresh();
      if (ws !== this.#ws || !this.isOpen) return;
      if (!token) {
        // No fresh token (e.g. the network hiccupped): try again a little later, while this one still holds.
        if (this.#expiresAt !== null && this.#expiresAt * 1000 > Date.now() + 2000) {
          this.#renewTimer = setTimeout(() => this.#scheduleRenewal(this.#expiresAt), 2000);
        }
        return;
      }
      this.#token = token;
      ws.send(JSON.stringify(auth(token)));
    }, delay);
  }

  /** Exponential backoff with jitter: uniform in [d/2, d], d = min(max, min * 2^attempt). */
  #backoff() {
    const ceiling = Math.min(this.#maxDelay, this.#minDelay * 2 ** this.#attempt);
    this.#attempt += 1;
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  /**
   * Start over from a `welcome`: who is online (and in a call), and who left lately. People we knew of before
   * (an earlier connection) and who are not online now stay, as offline.
   * @param {{online?: unknown, inCall?: unknown, recent?: unknown}} msg
   */
  #welcomePeople(msg) {
    if (this.#peopleOf !== this.#id) {
      this.#people.clear();
      this.#peopleOf = this.#id;
    }
    const online = new Set(Array.isArray(msg.online) ? msg.online.filter((id) => typeof id === "string") : []);
    const inCall = new Set(Array.isArray(msg.inCall) ? msg.inCall : []);
    for (const person of this.#people.values()) {
      if (person.status === "online" && !online.has(person.id)) {
        Object.assign(person, { status: "offline", inCall: false, lastSeen: Date.now() / 1000 });
      }
    }
    for (const entry of Array.isArray(msg.recent) ? msg.recent : []) {
      if (entry && typeof entry.id === "string" && !online.has(entry.id)) {
        this.#updatePerson({ id: entry.id, status: "offline", lastSeen: entry.lastSeen });
      }
    }
    for (const id of online) this.#updatePerson({ id, status: "online", inCall: inCall.has(id) });
  }

  /** @param {{id: string, status: string, inCall?: unknown, lastSeen?: unknown}} change */
  #updatePerson({ id, status, inCall, lastSeen }) {
    if (id === this.#id || (status !== "online" && status !== "offline")) return;
    const seen = typeof lastSeen === "number" && Number.isFinite(lastSeen) ? lastSeen : null;
    this.#people.set(id, {
      id,
      status,
      inCall: status === "online" && inCall === true,
      lastSeen: status === "offline" ? (seen ?? this.#people.get(id)?.lastSeen ?? Date.now() / 1000) : null,
    });
    if (this.#people.size > MAX_PEOPLE) {
      // Bounded: a big server's presence must not grow the page without end. The offline known longest go first.
      for (const [known, person] of this.#people) {
        if (person.status === "offline" && known !== id) {
          this.#people.delete(known);
          break;
        }
      }
    }
  }

  #peopleChanged() {
    this.dispatchEvent(new CustomEvent("people", { detail: this.people }));
  }

  /** @param {string[]} ids */
  #setOnline(ids) {
    const next = new Set(ids.filter((id) => id !== this.#id));
    const same = next.size === this.#online.size && [...next].every((id) => this.#online.has(id));
    this.#online = next;
    if (!same) this.dispatchEvent(new CustomEvent("online", { detail: this.online }));
  }

  /**
   * @param {SignalingState} state
   * @param {Partial<StateDetail>} [extra]
   */
  #setState(state, extra = {}) {
    const previous = this.#state;
    this.#state = state;
    if (previous === state && state !== "reconnecting") return;
    if (state === "reconnecting") {
      this.#reconnectReason = extra.reason ?? this.#reconnectReason;
      if (extra.retryIn !== undefined) this.#retryAt = Date.now() + extra.retryIn;
    } else {
      this.#reconnectReason = this.#retryAt = null;
    }
    this.dispatchEvent(new CustomEvent("statechange", { detail: { state, previous, ...extra } }));
  }
}
