/**
 * The user's contacts: who they are (with the name the user gave each), their presence (online, in a call, or
 * last seen), the requests waiting for an answer either way, the users blocked, the ring setting ("Who may ring
 * me"), and what the server shows of everyone else (`welcome.directory`: everyone online, or contacts only; and,
 * when it lists everyone, the search through the `directory` frame).
 *
 * Owns that state, from `welcome`, `contacts`, `presence` and `directory` frames (docs/protocol.md, "Contacts"),
 * and turns the user's intents into frames (`send`). Each change frame is answered by a `contacts` frame that
 * replaces the whole picture, so nothing here guesses an outcome. Knows nothing of the DOM or of calls.
 *
 * Events: `change` (`view()` says what to show), `notice` ({text, kind}: a sentence for the user).
 * @module contacts
 */

import {
  CONTACTS_FEATURE,
  CONTACT_FRAMES,
  CallsFrom,
  DirectoryMode,
  ErrorCode,
  MessageType,
  block,
  contactAdd,
  contactDecline,
  contactNameProblem,
  contactRemove,
  contactRename,
  directory,
  ID_RULE,
  idProblem,
  settings,
  unblock,
} from "./protocol.js";
import { presenceChanges } from "./signaling.js";

/** At most this many of each list are kept (the server keeps fewer: 500 contacts, 200 requests, 1,000 blocked). */
export const MAX_LIST = 1000;

/** At most this many search results are kept (pages of the `directory` frame, appended). */
export const MAX_RESULTS = 500;

/**
 * One contact, with their presence.
 * @typedef {object} Contact
 * @property {string} id
 * @property {string|null} name the name the user gave them, or null
 * @property {number|null} since when they became contacts (Unix seconds)
 * @property {"online"|"offline"} status
 * @property {boolean} inCall
 * @property {number|null} lastSeen offline: when they left (Unix seconds), if known
 */

/**
 * A request (incoming or outgoing) or a block, with when it was made.
 * @typedef {{id: string, at: number|null}} Dated
 */

/**
 * @typedef {object} DirectorySearch
 * @property {string} q the id prefix searched for
 * @property {{id: string, inCall: boolean}[]} users found so far, in id order
 * @property {string|null} next the `after` of the next page, or null
 * @property {boolean} pending a page was asked for and has not come yet
 */

/**
 * What the page shows of the contacts.
 * @typedef {object} ContactsView
 * @property {boolean} supported the server keeps contacts (`welcome.features`)
 * @property {boolean} loaded a `contacts` frame came since we connected
 * @property {"all"|"contacts"|null} directory whom the server shows us: everyone online, or contacts only
 * @property {boolean} more the server had more users online than `welcome` listed (search with `directory`)
 * @property {Contact[]} contacts online first (by name), then offline (last seen most recently first)
 * @property {Dated[]} incoming requests waiting for our answer, newest first
 * @property {Dated[]} outgoing our requests waiting for theirs, newest first
 * @property {Dated[]} blocked
 * @property {string|null} callsFrom the user's ring setting, or null for the server's default
 * @property {string|null} chosen the setting to show as chosen: the one the user just picked until the server
 *   confirms or refuses it, else `callsFrom`
 * @property {string|null} defaultCallsFrom the server's default
 * @property {string|null} ringing the setting in force (the user's, or else the default; null: not known yet)
 * @property {DirectorySearch|null} search
 */

const CALLS_FROM = new Set(Object.values(CallsFrom));

/**
 * A sentence for an `error` frame about a contacts frame (`ref`), in the user's terms.
 * @param {{code?: string, message?: string, ref?: string}} msg
 * @returns {string}
 */
export function contactErrorText(msg) {
  switch (msg.code) {
    case ErrorCode.TOO_MANY:
      return msg.ref === MessageType.BLOCK
        ? "You have blocked as many users as this server allows: unblock some first."
        : "Your contacts list or your requests are full: remove some contacts or withdraw some requests first.";
    case ErrorCode.NOT_ALLOWED:
      return msg.ref === MessageType.DIRECTORY
        ? "This server does not let anyone search who is online: add contacts by their exact id."
        : `The server does not allow that${msg.message ? `: ${msg.message}` : "."}`;
    case ErrorCode.RATE_LIMITED:
      return "Too many changes to your contacts in a short time: wait a minute, then try again.";
    case ErrorCode.SERVICE_UNAVAILABLE:
      return "Your contacts cannot be reached on the server right now; nothing was changed. Try again shortly.";
    case ErrorCode.BAD_MESSAGE:
      return `The server refused that: ${msg.message ?? "the request was malformed"}.`;
    default:
      return `The server refused that${msg.message ? `: ${msg.message}` : "."}`;
  }
}

/**
 * @param {unknown} value
 * @returns {number|null}
 */
const seconds = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

/**
 * The `{id, at}` entries of a list in a `contacts` frame, newest first, bounded.
 * @param {unknown} list
 * @returns {Dated[]}
 */
function datedList(list) {
  if (!Array.isArray(list)) return [];
  return list
    .filter((e) => e && typeof e.id === "string")
    .slice(0, MAX_LIST)
    .map((e) => ({ id: e.id, at: seconds(e.at) }))
    .sort((a, b) => (b.at ?? 0) - (a.at ?? 0));
}

/** The user's contacts, requests, blocks and ring setting, and the presence of their contacts. */
export class Contacts extends EventTarget {
  /** @type {Map<string, Contact>} */ #contacts = new Map();
  /** @type {Dated[]} */ #incoming = [];
  /** @type {Dated[]} */ #outgoing = [];
  /** @type {Dated[]} */ #blocked = [];
  /** @type {string|null} */ #callsFrom = null;
  /**
   * The ring setting the user just picked, until the server's `contacts` frame holds it (or refuses it): the
   * choice shows at once, and a redraw meanwhile does not flip it back.
   * @type {string|null|undefined}
   */
  #picked = undefined;
  /** @type {string|null} */ #defaultCallsFrom = null;
  /** @type {"all"|"contacts"|null} */ #directory = null;
  #supported = false;
  #loaded = false;
  #more = false;
  /** @type {DirectorySearch|null} */ #search = null;
  /** @type {string|null} whose contacts these are */ #user = null;
  /** When the last `welcome` came (Unix seconds, this browser's clock). */
  #welcomedAt = Infinity;
  #send;

  /**
   * @param {object} options
   * @param {(frame: object) => boolean} options.send sends a client frame; false if not connected
   */
  constructor({ send }) {
    super();
    this.#send = send;
  }

  /** Whether the server keeps contacts (and sent us them). */
  get supported() {
    return this.#supported;
  }

  /** @returns {ContactsView} */
  view() {
    const all = [...this.#contacts.values()];
    const label = (c) => (c.name ?? c.id).toLocaleLowerCase();
    const online = all.filter((c) => c.status === "online").sort((a, b) => label(a).localeCompare(label(b)));
    const offline = all
      .filter((c) => c.status !== "online")
      .sort((a, b) => (b.lastSeen ?? 0) - (a.lastSeen ?? 0) || label(a).localeCompare(label(b)));
    return {
      supported: this.#supported,
      loaded: this.#loaded,
      directory: this.#directory,
      more: this.#more,
      contacts: [...online, ...offline],
      incoming: this.#incoming,
      outgoing: this.#outgoing,
      blocked: this.#blocked,
      callsFrom: this.#callsFrom,
      chosen: this.#picked === undefined ? this.#callsFrom : this.#picked,
      defaultCallsFrom: this.#defaultCallsFrom,
      ringing: this.#callsFrom ?? this.#defaultCallsFrom,
      search: this.#search,
    };
  }

  // ---- frames from the server --------------------------------------------------------------------

  /**
   * `welcome`: whether the server keeps contacts, whom it shows us, and whether it listed everyone online.
   * @param {{features?: unknown, directory?: unknown, more?: unknown, online?: unknown, inCall?: unknown,
   *   defaultCallsFrom?: unknown}} msg
   */
  welcome(msg) {
    this.#supported = Array.isArray(msg.features) && msg.features.includes(CONTACTS_FEATURE);
    this.#directory =
      msg.directory === DirectoryMode.ALL || msg.directory === DirectoryMode.CONTACTS ? msg.directory : null;
    this.#more = msg.more === true;
    this.#search = null;
    // A `contacts` frame follows when the user has any contact, request, block or ring setting; none means that
    // all of them are empty (docs/protocol.md). `welcome` says the server's default ring setting.
    this.#contacts = new Map();
    this.#incoming = this.#outgoing = this.#blocked = [];
    this.#callsFrom = null;
    this.#picked = undefined;
    if (CALLS_FROM.has(msg.defaultCallsFrom)) this.#defaultCallsFrom = /** @type {string} */ (msg.defaultCallsFrom);
    this.#loaded = this.#supported;
    this.#welcomedAt = Date.now() / 1000;
    this.#changed();
  }

  /**
   * `contacts`: the whole picture, replacing the previous one.
   * @param {{contacts?: unknown, incoming?: unknown, outgoing?: unknown, blocked?: unknown, callsFrom?: unknown,
   *   defaultCallsFrom?: unknown, directory?: unknown}} msg
   */
  contacts(msg) {
    this.#supported = true;
    this.#loaded = true;
    const next = new Map();
    for (const c of Array.isArray(msg.contacts) ? msg.contacts.slice(0, MAX_LIST) : []) {
      if (!c || typeof c.id !== "string") continue;
      const online = c.status === "online";
      next.set(c.id, {
        id: c.id,
        name: typeof c.name === "string" && c.name ? c.name : null,
        since: seconds(c.since),
        status: online ? "online" : "offline",
        inCall: online && c.inCall === true,
        lastSeen: online ? null : seconds(c.lastSeen),
      });
    }
    // Those we asked who are contacts now: they accepted (the "Asked …" notice is stale from now on).
    const accepted = this.#outgoing.filter((r) => next.has(r.id) && !this.#contacts.has(r.id)).map((r) => r.id);
    this.#contacts = next;
    const before = new Set(this.#incoming.map((r) => r.id));
    this.#incoming = datedList(msg.incoming);
    // A request made while we are here is news (those from before we connected are simply listed).
    const news = this.#incoming.filter((r) => !before.has(r.id) && (r.at ?? 0) >= this.#welcomedAt - 2);
    this.#outgoing = datedList(msg.outgoing);
    this.#blocked = datedList(msg.blocked);
    this.#callsFrom = CALLS_FROM.has(msg.callsFrom) ? /** @type {string} */ (msg.callsFrom) : null;
    if (this.#picked === this.#callsFrom) this.#picked = undefined;
    this.#defaultCallsFrom = CALLS_FROM.has(msg.defaultCallsFrom) ? /** @type {string} */ (msg.defaultCallsFrom) : null;
    if (msg.directory === DirectoryMode.ALL || msg.directory === DirectoryMode.CONTACTS)
      this.#directory = msg.directory;
    this.#changed();
    if (accepted.length) {
      this.#notice(`${accepted.join(", ")} accepted: you are now contacts.`, "info");
    }
    if (news.length) {
      const who = news.map((r) => r.id).join(", ");
      this.#notice(`${who} ${news.length === 1 ? "wants" : "want"} to be your contact: see Contact requests.`, "info");
    }
  }

  /**
   * `presence`: a contact came online, went offline, or started or ended a call.
   * @param {{id?: unknown, status?: unknown, changes?: unknown}} msg
   */
  presence(msg) {
    let changed = false;
    for (const { id, status, inCall, lastSeen } of presenceChanges(msg)) {
      const c = this.#contacts.get(id);
      if (!c || (status !== "online" && status !== "offline")) continue;
      const online = status === "online";
      Object.assign(c, {
        status,
        inCall: online && inCall === true,
        lastSeen: online ? null : (seconds(lastSeen) ?? Date.now() / 1000),
      });
      changed = true;
    }
    if (changed) this.#changed();
  }

  /**
   * `directory`: a page of who is online, the answer to {@link search} or {@link searchMore}.
   * @param {{users?: unknown, next?: unknown}} msg
   */
  directoryPage(msg) {
    if (!this.#search) return;
    const users = (Array.isArray(msg.users) ? msg.users : [])
      .filter((u) => u && typeof u.id === "string")
      .map((u) => ({ id: u.id, inCall: u.inCall === true }));
    const known = new Set(this.#search.users.map((u) => u.id));
    const all = [...this.#search.users, ...users.filter((u) => !known.has(u.id))].slice(0, MAX_RESULTS);
    const next = typeof msg.next === "string" && all.length < MAX_RESULTS ? msg.next : null;
    this.#search = { ...this.#search, users: all, next, pending: false };
    this.#changed();
  }

  /**
   * An `error` frame: if it is about a contacts frame, say why in the user's terms.
   * @param {{code?: string, message?: string, ref?: string}} msg
   * @returns {boolean} whether it was about a contacts frame
   */
  serverError(msg) {
    const ours = CONTACT_FRAMES.includes(msg.ref) || msg.ref === MessageType.DIRECTORY;
    if (!ours) return false;
    if (msg.ref === MessageType.SETTINGS) this.#picked = undefined; // refused: show what the server holds
    if (msg.ref === MessageType.DIRECTORY && this.#search) {
      this.#search = { ...this.#search, pending: false, next: null };
      this.#changed();
    }
    this.#notice(contactErrorText(msg), "error");
    return true;
  }

  /** Disconnected: nothing is known until the next `welcome` and `contacts` (the list stays, as last seen). */
  disconnected() {
    for (const c of this.#contacts.values()) {
      if (c.status === "online") Object.assign(c, { status: "offline", inCall: false, lastSeen: Date.now() / 1000 });
    }
    this.#loaded = false;
    this.#search = null;
    this.#picked = undefined;
    this.#changed();
  }

  /**
   * Another user signs in on this page: forget the previous one's contacts.
   * @param {string} user
   */
  startFor(user) {
    if (this.#user === user) return;
    this.#user = user;
    this.#contacts = new Map();
    this.#incoming = this.#outgoing = this.#blocked = [];
    this.#callsFrom = this.#defaultCallsFrom = null;
    this.#picked = undefined;
    this.#loaded = false;
    this.#search = null;
    this.#changed();
  }

  // ---- what the user does ------------------------------------------------------------------------

  /**
   * Ask `id` to be a contact (or accept their request), with an optional name of our own for them.
   * @param {string} id
   * @param {string} [name]
   * @returns {string|null} why it cannot be done, as a sentence, or null (sent)
   */
  add(id, name = "") {
    if (!id) return "Type the exact user id of the person to add.";
    if (idProblem(id)) return `“${id}” is not a user id (${ID_RULE}).`;
    if (id === this.#user) return "That is you: add someone else.";
    if (this.#contacts.has(id)) return `${id} is already in your contacts.`;
    const nameProblem = contactNameProblem(name.trim());
    if (nameProblem) return nameProblem;
    return this.#sent(
      contactAdd(id, name.trim() || null),
      `Asked ${id} to be your contact. They appear here once they accept.`,
      !this.#isIncoming(id),
    );
  }

  /** @param {string} id a requester */
  accept(id) {
    return this.#sent(contactAdd(id), `You and ${id} are now contacts.`);
  }

  /** @param {string} id a requester */
  decline(id) {
    return this.#sent(contactDecline(id), `Declined ${id}'s request.`);
  }

  /** @param {string} id a contact, or a user we asked (withdraws the request) */
  remove(id) {
    const was = this.#contacts.get(id);
    return this.#sent(contactRemove(id), was ? `Removed ${was.name ?? id} from your contacts.` : null);
  }

  /**
   * @param {string} id a contact
   * @param {string} name our name for them; "" for none (their id is shown)
   * @returns {string|null} why it cannot be done, or null (sent)
   */
  rename(id, name) {
    const problem = contactNameProblem(name.trim());
    if (problem) return problem;
    return this.#sent(contactRename(id, name.trim() || null));
  }

  /** @param {string} id */
  block(id) {
    return this.#sent(
      block(id),
      `Blocked ${id}: their calls and requests no longer reach you. Unblock them under “Blocked”.`,
    );
  }

  /** @param {string} id */
  unblock(id) {
    return this.#sent(unblock(id), `Unblocked ${id}.`);
  }

  /**
   * Who may ring us.
   * @param {string|null} callsFrom one of CallsFrom, or null for the server's default
   */
  setCallsFrom(callsFrom) {
    if (callsFrom !== null && !CALLS_FROM.has(callsFrom)) return `Unknown ring setting “${callsFrom}”.`;
    const problem = this.#sent(settings(callsFrom));
    if (!problem) {
      this.#picked = callsFrom;
      this.#changed();
    }
    return problem;
  }

  /**
   * Search who is online by id prefix (servers that list everyone online).
   * @param {string} q
   */
  search(q) {
    const prefix = q.trim();
    this.#search = { q: prefix, users: [], next: null, pending: true };
    const problem = this.#sent(directory({ q: prefix }));
    if (problem) this.#search = null;
    this.#changed();
    return problem;
  }

  /** The next page of the search. */
  searchMore() {
    const s = this.#search;
    if (!s?.next || s.pending) return null;
    this.#search = { ...s, pending: true };
    this.#changed();
    return this.#sent(directory({ q: s.q, after: s.next }));
  }

  /** Close the search results. */
  clearSearch() {
    if (!this.#search) return;
    this.#search = null;
    this.#changed();
  }

  /** @param {string} id */
  #isIncoming(id) {
    return this.#incoming.some((r) => r.id === id);
  }

  /**
   * @param {object} frame
   * @param {string|null} [done] what to tell the user once sent
   * @param {boolean} [sayDone]
   * @returns {string|null} why it could not be sent, or null
   */
  #sent(frame, done = null, sayDone = true) {
    if (!this.#send(frame)) return "Not connected to the server: connect first.";
    if (done && sayDone) this.#notice(done, "info");
    return null;
  }

  /**
   * @param {string} text
   * @param {"info"|"error"|"warning"} kind
   */
  #notice(text, kind) {
    this.dispatchEvent(new CustomEvent("notice", { detail: { text, kind } }));
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
