/**
 * The user's account on a server in accounts mode (`PEERCALL_AUTH=accounts`): the HTTP API of docs/protocol.md,
 * "Accounts". Signs in and up (the invite link's `#invite=<token>`, removed from the address bar at once), signs
 * out, lists and ends sign-ins, lists and changes the sign-in methods (password, passkeys), gets the signaling
 * tokens for `/ws`, and, for administrators, makes invites and manages users.
 *
 * Owns who is signed in (`me`: id, display name, administrator or not) and the sign-in's CSRF value, which every
 * POST and DELETE sends as `X-Peercall-CSRF`; the sign-in itself is an HttpOnly cookie the page never sees.
 * Dispatches `change` when who is signed in changes, and `signedout` when a sign-in ended behind the page's back
 * (a token request answered 401: signed out elsewhere, or disabled). Knows nothing of the DOM or of the socket.
 * @module account
 */

import { ID_RULE, idProblem } from "./protocol.js";
import { recall, remember } from "./storage.js";

const CSRF_HEADER = "X-Peercall-CSRF";
/** Every request to the API gives up after this long (ms). */
const TIMEOUT_MS = 10_000;
/** localStorage: "1" while this browser is signed in as far as the page knows, "0" once it is not. */
const SIGNED_IN_KEY = "peercall.signedIn";
/**
 * Whether this page came from the service worker of an earlier visit (read before this visit registers one): a
 * browser that signed in before this page kept {@link SIGNED_IN_KEY} has no mark, but has been here.
 */
const visitedBefore = Boolean(globalThis.navigator?.serviceWorker?.controller);
/** Users asked for per page of the administrators' list. */
export const USERS_PAGE = 50;

/**
 * Who is signed in.
 * @typedef {{id: string, name: string, admin: boolean, session: string}} Me
 */

/** An answer of the API that is not a success, as a sentence a person can act on. */
export class AccountError extends Error {
  /**
   * @param {number} status the HTTP status (0: no answer)
   * @param {string} code the API's error code (`sign-in-failed`, `too-many-attempts`…), or "network"
   * @param {string} message a sentence for the user
   * @param {number|null} [retryAfter] seconds to wait (429), or null
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/**
 * What to tell the user for an error answer of the API.
 * @param {number} status
 * @param {string} code
 * @param {string} serverMessage the API's own message
 * @param {number|null} retryAfter
 */
export function errorText(status, code, serverMessage, retryAfter) {
  switch (code) {
    case "sign-in-failed":
      return "Wrong user id or password.";
    case "too-many-attempts":
      return `Too many failed attempts: try again in ${retryAfter ?? "a few"} s.`;
    case "disabled":
      return "This account is disabled: ask an administrator.";
    case "https-required":
      return "Signing in needs a secure (https) page: open this server's https:// address.";
    case "no-invite":
      return "This invite link is not valid: it was used, it expired, or it is wrong. Ask for a new one.";
    case "id-taken":
      return "That user id is taken: choose another.";
    case "bad-id":
      return `A user id is ${ID_RULE}.`;
    case "bad-name":
      return "A display name is 1–64 characters of text.";
    case "bad-password":
      return "A password is 8 to 1024 characters.";
    case "unauthorized":
      return "You are not signed in (or your sign-in has ended): sign in again.";
    case "forbidden":
      return "Only an administrator may do this.";
    case "too-many":
      return serverMessage || "There are too many: remove some first.";
    case "wrong-password":
      return "Your current password is not that: type the one you sign in with.";
    case "last-method":
      return "This is your only way to sign in: add another one first.";
    case "self":
      return "You cannot disable your own account.";
    case "csrf":
      return "The server refused the request as coming from another site: reload the page.";
    default:
      return serverMessage || `The server answered ${status}.`;
  }
}

/** The signed-in user and the accounts API. */
export class Account extends EventTarget {
  /** @type {Me|null} */ #me = null;
  /** @type {string} the sign-in's CSRF value ("1" before signing in: any value will do then) */ #csrf = "1";
  #base;

  /** @param {object} [options] @param {string|URL} [options.base] the server's address (default: this page's) */
  constructor({ base } = {}) {
    super();
    this.#base = new URL(base ?? ".", globalThis.location?.href);
  }

  /** @returns {Me|null} who is signed in, or null */
  get me() {
    return this.#me;
  }

  /** @returns {string} the sign-in's CSRF value, for a request made elsewhere (passkeys.js) */
  get csrf() {
    return this.#csrf;
  }

  /**
   * The invite token the page was opened with (`#invite=<token>`), removed from the address bar at once so that
   * it stays out of the history; null if none.
   * @returns {string|null}
   */
  takeInvite() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const invite = fragment.get("invite");
    if (invite === null) return null;
    fragment.delete("invite");
    const rest = fragment.toString();
    try {
      history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
    } catch (err) {
      console.warn("[account] could not remove the invite from the address bar:", err);
    }
    return invite.trim() || null;
  }

  /**
   * Ask the server who is signed in (the cookie of an earlier visit).
   * @returns {Promise<Me|null>}
   */
  async load() {
    try {
      this.#signedIn(await this.#request("GET", "api/session"));
    } catch (err) {
      if (!(err instanceof AccountError) || err.status !== 401) throw err;
      this.#signedIn(null);
    }
    return this.#me;
  }

  /**
   * Go on with the sign-in of an earlier visit, if this browser may have one: {@link load}, unless the page knows
   * that there is none (a first visit, or signed out since), so that a first visit asks nothing that must fail.
   * @returns {Promise<Me|null>}
   */
  async resume() {
    const mark = recall(SIGNED_IN_KEY, localStorage);
    if (mark === "0" || (mark === null && !visitedBefore)) return null;
    return this.load();
  }

  /**
   * Sign in with a password.
   * @param {string} id
   * @param {string} password
   * @returns {Promise<Me>} throws an AccountError that says why not
   */
  async signIn(id, password) {
    if (!id) throw new AccountError(400, "bad-id", "Type your user id.");
    if (!password) throw new AccountError(400, "bad-password", "Type your password.");
    this.#signedIn(await this.#request("POST", "api/session", { id, password }));
    return /** @type {Me} */ (this.#me);
  }

  /**
   * Sign up from an invite, and be signed in.
   * @param {{invite: string, id: string, name: string, password: string}} form
   * @returns {Promise<Me>}
   */
  async signUp({ invite, id, name, password }) {
    const problem = idProblem(id);
    if (problem) throw new AccountError(400, "bad-id", problem);
    if (!name.trim()) throw new AccountError(400, "bad-name", "Type the name others see.");
    if (password.length < 8) throw new AccountError(400, "bad-password", "A password is at least 8 characters.");
    this.#signedIn(await this.#request("POST", "api/signup", { invite, id, name: name.trim(), password }));
    return /** @type {Me} */ (this.#me);
  }

  /** Sign out here. */
  async signOut() {
    try {
      await this.#request("DELETE", "api/session");
    } finally {
      this.#signedIn(null);
    }
  }

  /** Sign out everywhere: every sign-in of mine ends, this one too. */
  async signOutEverywhere() {
    try {
      await this.#request("DELETE", "api/sessions");
    } finally {
      this.#signedIn(null);
    }
  }

  /**
   * My sign-ins, the most recently used first.
   * @returns {Promise<{id: string, created: number, lastUsed: number, expires: number, userAgent: string,
   *   current: boolean}[]>}
   */
  async sessions() {
    const body = await this.#request("GET", "api/sessions");
    return Array.isArray(body?.sessions) ? body.sessions : [];
  }

  /**
   * End one of my sign-ins (this one too, if it is).
   * @param {string} sessionId
   */
  async endSession(sessionId) {
    await this.#request("DELETE", `api/sessions/${encodeURIComponent(sessionId)}`);
    if (sessionId === this.#me?.session) this.#signedIn(null);
  }

  /**
   * My password, if I have one.
   * @returns {Promise<{created: number}|null>}
   */
  async password() {
    const body = await this.#request("GET", "api/password");
    return body?.password ?? null;
  }

  /**
   * Add a password (an account with passkeys only), or change it (then `current` is the one it has).
   * @param {string} password the new password
   * @param {string} [current] the current password, when there is one
   */
  async setPassword(password, current = "") {
    if (password.length < 8) throw new AccountError(400, "bad-password", "A password is at least 8 characters.");
    /** @type {{password: string, current?: string}} */
    const body = { password };
    if (current) body.current = current;
    await this.#request("POST", "api/password", body);
  }

  /** Remove my password (I keep signing in with a passkey). */
  async deletePassword() {
    await this.#request("DELETE", "api/password");
  }

  /**
   * My passkeys, oldest first.
   * @returns {Promise<{id: string, name: string, created: number, lastUsed: number|null}[]>}
   */
  async passkeys() {
    const body = await this.#request("GET", "api/passkeys");
    return Array.isArray(body?.passkeys) ? body.passkeys : [];
  }

  /**
   * Delete one of my passkeys.
   * @param {string} id its credential id
   */
  async deletePasskey(id) {
    await this.#request("DELETE", `api/passkeys/${encodeURIComponent(id)}`);
  }

  /**
   * A signaling token of this sign-in, or null if the sign-in has ended (then `signedout` is dispatched).
   * Other failures (the server cannot be reached) throw.
   * @returns {Promise<string|null>}
   */
  async newToken() {
    if (!this.#me) return null;
    try {
      const body = await this.#request("POST", "api/session/token");
      return typeof body?.token === "string" ? body.token : null;
    } catch (err) {
      if (err instanceof AccountError && (err.status === 401 || err.code === "disabled")) {
        this.#signedIn(null);
        this.dispatchEvent(new CustomEvent("signedout", { detail: { reason: err.message } }));
        return null;
      }
      throw err;
    }
  }

  /**
   * Administrators: a new invite link.
   * @param {{admin?: boolean}} [options]
   * @returns {Promise<{link: string, expires: number, admin: boolean}>}
   */
  async invite({ admin = false } = {}) {
    return this.#request("POST", "api/invites", { admin });
  }

  /**
   * Administrators: one page of users, by id.
   * @param {string|null} [after] the `next` of the previous page
   * @returns {Promise<{users: {id: string, name: string, admin: boolean, disabled: boolean, created: number}[],
   *   next: string|null}>}
   */
  async users(after = null) {
    const query = new URLSearchParams({ limit: String(USERS_PAGE) });
    if (after) query.set("after", after);
    const body = await this.#request("GET", `api/users?${query}`);
    return { users: Array.isArray(body?.users) ? body.users : [], next: body?.next ?? null };
  }

  /**
   * Administrators: disable or enable a user (disabling ends their sign-ins).
   * @param {string} id
   * @param {boolean} disabled
   */
  async setDisabled(id, disabled) {
    const body = await this.#request("POST", `api/users/${encodeURIComponent(id)}/${disabled ? "disable" : "enable"}`);
    return body?.user;
  }

  /**
   * Administrators: end every sign-in of a user.
   * @param {string} id
   * @returns {Promise<number>} how many ended
   */
  async endUserSessions(id) {
    const body = await this.#request("DELETE", `api/users/${encodeURIComponent(id)}/sessions`);
    return Number(body?.signedOut ?? 0);
  }

  /** @param {any} body the sign-in answer, or null */
  #signedIn(body) {
    const me =
      body && typeof body.id === "string"
        ? {
            id: body.id,
            name: typeof body.name === "string" && body.name ? body.name : body.id,
            admin: body.admin === true,
            session: String(body.session ?? ""),
          }
        : null;
    this.#csrf = me && typeof body.csrf === "string" ? body.csrf : "1";
    remember(SIGNED_IN_KEY, me ? "1" : "0", localStorage);
    const changed = me?.id !== this.#me?.id || me?.session !== this.#me?.session;
    this.#me = me;
    if (changed) this.dispatchEvent(new CustomEvent("change", { detail: { me } }));
  }

  /**
   * One request to the API: the parsed JSON answer, or an AccountError.
   * @param {"GET"|"POST"|"DELETE"} method
   * @param {string} path
   * @param {object} [body]
   */
  async #request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (method !== "GET") headers[CSRF_HEADER] = this.#csrf;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(new URL(path, this.#base), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (err) {
      console.warn(`[account] ${method} ${path} failed:`, err);
      throw new AccountError(0, "network", "Cannot reach the server: check your connection and try again.");
    }
    const answer = await response.json().catch(() => null);
    if (response.ok) return answer;
    const code = String(answer?.error?.code ?? "");
    const retry = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
    const retryAfter = Number.isFinite(retry) ? retry : null;
    const text = errorText(response.status, code, String(answer?.error?.message ?? ""), retryAfter);
    throw new AccountError(response.status, code || `http-${response.status}`, text, retryAfter);
  }
}
