/**
 * The call history (the page's *Recent calls*): the user's records of ended calls, newest first, loaded from
 * `/api/calls` page by page, merged with the `missed-calls` the server tells us about, and the count of missed
 * calls the user has not looked at yet.
 *
 * Owns the records, the paging cursor and the load requests (a newer request wins; another user starts the
 * history over; `stop()` drops the one in flight). Knows nothing of the DOM, the signaling connection or the call.
 *
 * Events: `change` (the records, the error or the missed count changed: `view()` says what to show).
 * @module history
 */

/** How many calls of the history to show (older ones on request). */
export const HISTORY_PAGE = 15;

/**
 * One call of the history, as `/api/calls` and `missed-calls` give it.
 * @typedef {import("./ui.js").CallRecord} CallRecord
 */

/** The call history of the user signed in. */
export class CallHistory extends EventTarget {
  /** @type {CallRecord[]} newest first */ #calls = [];
  /** @type {string|null} the cursor of the next older page */ #next = null;
  /** @type {string|null} why the history could not be loaded */ #error = null;
  #missed = 0;
  /** @type {string|null} whose history #calls is */ #loadedFor = null;
  #request = 0;
  /** @type {AbortController|null} the load in flight */ #inFlight = null;
  #user;
  #authHeaders;

  /**
   * @param {object} options
   * @param {() => string|null} options.user the user signed in (null when none)
   * @param {() => Record<string, string>} options.authHeaders the headers that authenticate a request
   */
  constructor({ user, authHeaders }) {
    super();
    this.#user = user;
    this.#authHeaders = authHeaders;
  }

  /** Whose history is loaded (null before the first load). */
  get loadedFor() {
    return this.#loadedFor;
  }

  /** Missed calls not looked at yet. */
  get missed() {
    return this.#missed;
  }

  /**
   * How long a call lasted as the server counted it (answered to ended), in seconds: null while the call is not in
   * the history, or if it was never answered.
   * @param {string|undefined} callId
   * @returns {number|null}
   */
  duration(callId) {
    return this.#calls.find((record) => record.callId === callId)?.duration ?? null;
  }

  /** Whether older calls can be loaded. */
  get hasMore() {
    return Boolean(this.#next);
  }

  /**
   * What the page shows.
   * @param {(record: CallRecord) => CallRecord} [decorate] adds to each record (e.g. our own call summary)
   * @returns {import("./ui.js").HistoryView}
   */
  view(decorate = (record) => record) {
    return {
      me: this.#loadedFor,
      calls: this.#calls.map(decorate),
      more: this.hasMore,
      error: this.#error,
      missed: this.#missed,
    };
  }

  /**
   * The user is about to connect as `user`: another user's history is dropped.
   * @param {string} user
   */
  startFor(user) {
    if (this.#loadedFor === user) return;
    this.#calls = [];
    this.#next = this.#error = this.#loadedFor = null;
    this.#missed = 0;
    this.#changed();
  }

  /**
   * Count missed calls the user has not seen yet.
   * @param {number} count
   */
  addMissed(count) {
    if (count <= 0) return;
    this.#missed += count;
    this.#changed();
  }

  /** The user looked at the history (or calls someone back from it): nothing missed is unseen any more. */
  seen() {
    if (!this.#missed) return;
    this.#missed = 0;
    this.#changed();
  }

  /**
   * Load the newest calls (or, with `before`, the next older page) from `/api/calls`.
   * @param {{before?: string|null}} [options]
   */
  async refresh({ before = null } = {}) {
    const me = this.#user();
    if (!me) return;
    const request = ++this.#request;
    this.#inFlight?.abort();
    const inFlight = (this.#inFlight = new AbortController());
    const timeout = setTimeout(() => inFlight.abort(new DOMException("timed out", "TimeoutError")), 5000);
    const url = new URL("api/calls", location.href);
    url.searchParams.set("limit", String(HISTORY_PAGE));
    if (before) url.searchParams.set("before", before);
    url.searchParams.set("id", me); // in token mode the token decides, and must match
    try {
      const response = await fetch(url, {
        cache: "no-store",
        headers: this.#authHeaders(),
        signal: inFlight.signal,
      });
      const body = await response.json().catch(() => null);
      if (request !== this.#request || this.#user() !== me) return; // a newer request, another user, or stopped
      if (!response.ok) {
        this.#error = `The call history is not available: ${body?.error?.message ?? `HTTP ${response.status}`}.`;
      } else {
        this.#loaded(me, Array.isArray(body?.calls) ? body.calls : [], body?.next ?? null, before);
      }
    } catch (err) {
      if (request !== this.#request) return; // a newer request, or stopped
      console.warn("[history] could not load the call history:", err);
      this.#error = "The call history could not be loaded.";
    } finally {
      clearTimeout(timeout);
      if (this.#inFlight === inFlight) this.#inFlight = null;
    }
    this.#changed();
  }

  /**
   * The page stops using the API (signing out): the load in flight is dropped (its answer would be refused with
   * the sign-in).
   */
  stop() {
    this.#request++;
    this.#inFlight?.abort();
    this.#inFlight = null;
  }

  /** Load the next older page, if there is one. */
  more() {
    if (this.#next) this.refresh({ before: this.#next });
  }

  /**
   * Load the newest calls after `ms` (e.g. once the server has stored something we just sent it).
   * @param {number} ms
   */
  refreshAfter(ms) {
    setTimeout(() => this.refresh(), ms);
  }

  /**
   * The server writes a call to the history when it ends, just after telling us: load it a moment later,
   * and once more if it is not there yet.
   * @param {string|undefined} callId
   */
  refreshSoon(callId) {
    setTimeout(async () => {
      await this.refresh();
      if (callId && !this.#calls.some((r) => r.callId === callId)) this.refreshAfter(1000);
    }, 300);
  }

  /**
   * Add records (e.g. from `missed-calls`) to the history, newest first, without duplicates.
   * @param {CallRecord[]} records
   */
  merge(records) {
    const me = this.#user();
    if (this.#loadedFor !== me) {
      this.#calls = [];
      this.#loadedFor = me;
    }
    const byId = new Map(this.#calls.map((r) => [r.callId, r]));
    for (const record of records) if (record?.callId) byId.set(record.callId, record);
    this.#calls = [...byId.values()].sort((a, b) => b.ringingAt - a.ringingAt);
    this.#changed();
  }

  /**
   * A page of `/api/calls` arrived.
   * @param {string} me
   * @param {CallRecord[]} calls
   * @param {string|null} next
   * @param {string|null} before
   */
  #loaded(me, calls, next, before) {
    if (this.#loadedFor !== me) this.#calls = [];
    this.#loadedFor = me;
    this.#error = null;
    if (before) {
      this.merge(calls);
      this.#next = next;
      return;
    }
    // The newest page replaces what we had on top, and keeps the older pages the user loaded.
    const oldest = calls.at(-1)?.ringingAt ?? -Infinity;
    const older = next ? this.#calls.filter((r) => r.ringingAt < oldest) : [];
    this.#calls = [...calls, ...older];
    if (!older.length) this.#next = next;
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
