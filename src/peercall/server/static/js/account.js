/**
 * The user's account on a server in accounts mode (`PEERCALL_AUTH=accounts`): the HTTP API of docs/protocol.md,
 * "Accounts". Signs in and up (the invite link's `#invite=<token>`, removed from the address bar at once), signs
 * out, lists and ends sign-ins, lists and changes the sign-in methods (password, passkeys), gets the signaling
 * tokens for `/ws`, and, for administrators, makes invites and manages users.
 *
 * Owns who is signed in (`me`: id, display name, administrator or not), the sign-in's CSRF value, which every
 * POST and DELETE sends as `X-Peercall-CSRF`, and the invite the page was opened with until it is used or set
 * aside; the sign-in itself is an HttpOnly cookie the page never sees, shared by every tab of the browser. An
 * invite never replaces a sign-in: signing up while the browser is signed in is refused (sign out first).
 * Dispatches `change` when who is signed in changes (also when another tab of this browser signed in), and
 * `signedout` when a sign-in ended behind the page's back (a token request answered 401: signed out elsewhere, or
 * disabled). Knows nothing of the DOM or of the socket.
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
    case "too-many-sign-ins":
      return `This account signed in too often lately: try again in ${retryAfter ?? "a few"} s.`;
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
    case "bad-password": // (its length, or why it is too easy to guess)
      return serverMessage ? `${serverMessage[0].toUpperCase()}${serverMessage.slice(1)}.` : "A password is 8 to 1024 characters.";
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
    case "signed-in":
      return serverMessage || "You are signed in already: sign out first.";
    default:
      return serverMessage || `The server answered ${status}.`;
  }
}

/**
 * What is wrong with a sign-up form, checked on the page before asking the server (the server checks again).
 * @param {{id: string, name: string, password?: string|null}} form `password` null or absent: a passkey instead
 * @returns {AccountError|null}
 */
export function signUpProblem({ id, name, password = null }) {
  const problem = idProblem(id, "user id");
  if (problem) return new AccountError(400, "bad-id", problem);
  if (!name.trim()) return new AccountError(400, "bad-name", "Type the name others see.");
  if (password !== null && password.length < 8) {
    return new AccountError(400, "bad-password", "A password is at least 8 characters.");
  }
  return null;
}

/**
 * A short description of a browser from its user agent string ("Chromium on Linux"), to tell sign-ins and
 * passkeys apart in a list, never to decide anything.
 * @param {string} agent
 */
export function browserName(agent) {
  const os = /Android/.test(agent)
    ? "Android"
    : /iPhone|iPad/.test(agent)
      ? "iOS"
      : /Windows/.test(agent)
        ? "Windows"
        : /Mac OS X|Macintosh/.test(agent)
          ? "macOS"
          : /CrOS/.test(agent)
            ? "ChromeOS"
            : /Linux/.test(agent)
              ? "Linux"
              : "";
  const browser = /Edg\//.test(agent)
    ? "Edge"
    : /Firefox\//.test(agent)
      ? "Firefox"
      : /Chrom(e|ium)\//.test(agent)
        ? "Chromium"
        : /Safari\//.test(agent)
          ? "Safari"
          : "";
  const name = [browser, os].filter(Boolean).join(" on ");
  return name || (agent ? agent.slice(0, 60) : "Unknown browser");
}

/**
 * This browser's name for a new passkey ("Chrome on Linux"): from `navigator.userAgentData` where the browser
 * has it (its brands tell Chrome, Edge or Opera from Chromium), else from the user agent string.
 * @returns {string}
 */
export function thisBrowser() {
  const data = /** @type {any} */ (globalThis.navigator)?.userAgentData;
  if (!data || !Array.isArray(data.brands)) return browserName(globalThis.navigator?.userAgent ?? "");
  const brands = data.brands.map((/** @type {{brand: string}} */ b) => String(b.brand));
  // The brands list a made-up one ("Not A(Brand"), "Chromium", and the browser's own name, if it has another.
  const own = brands.find((b) => b !== "Chromium" && !/not.a.brand/i.test(b.replace(/[^a-z]/gi, " ")));
  const browser = (own ?? (brands.includes("Chromium") ? "Chromium" : "")).replace(/^(Google|Microsoft) /, "");
  const platform = { "Chrome OS": "ChromeOS", "Chromium OS": "ChromeOS" }[data.platform] ?? String(data.platform ?? "");
  const name = [browser, platform].filter(Boolean).join(" on ");
  return name || browserName(globalThis.navigator?.userAgent ?? "");
}

/**
 * Whether this browser may have a sign-in (the page has no other way to know without asking, and asking on a
 * first visit only earns a 401 in the console).
 */
function maybeSignedIn() {
  const mark = recall(SIGNED_IN_KEY, localStorage);
  return mark === "1" || (mark === null && visitedBefore);
}

/** The signed-in user and the accounts API. */
export class Account extends EventTarget {
  /** @type {Me|null} */ #me = null;
  /** @type {string} the sign-in's CSRF value ("1" before signing in: any value will do then) */ #csrf = "1";
  /** @type {string|null} the invite the page was opened with, until it is used or set aside */ #invite = null;
  #base;

  /** @param {object} [options] @param {string|URL} [options.base] the server's address (default: this page's) */
  constructor({ base } = {}) {
    super();
    this.#base = new URL(base ?? ".", globalThis.location?.href);
    // Another tab of this browser signed in (the cookie is the browser's): this page is signed in too now.
    globalThis.addEventListener?.("storage", (event) => {
      if (event.key !== SIGNED_IN_KEY || event.newValue !== "1" || this.#me) return;
      this.load().catch((err) => console.warn("[account] could not learn who signed in in another tab:", err));
    });
  }

  /** @returns {Me|null} who is signed in, or null */
  get me() {
    return this.#me;
  }

  /** @returns {string} the sign-in's CSRF value, for a request made elsewhere (passkeys.js) */
  get csrf() {
    return this.#csrf;
  }

  /** @returns {string|null} the invite the page was opened with (for {@link signUp}), until used or set aside */
  get pendingInvite() {
    return this.#invite;
  }

  /**
   * Take the invite token of the address (`#invite=<token>`, at start or pasted into the address bar later),
   * removed from the address bar at once so that it stays out of the history: it becomes {@link pendingInvite}.
   * @returns {string|null} the token, or null if the address has none (then {@link pendingInvite} is unchanged)
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
    this.#invite = invite.trim() || null;
    return this.#invite;
  }

  /** Set the invite aside (the user signs in instead, or goes on with the sign-in they have). */
  dropInvite() {
    this.#invite = null;
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
    return maybeSignedIn() ? this.load() : null;
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
   * Sign up from {@link pendingInvite}, and be signed in: with a password, or with a passkey (`withPasskey`, which
   * makes one and signs up with it: passkeys.js). Refused if this browser is signed in already (in another tab,
   * perhaps): then the page is signed in as that (`change`), and the error says so.
   * @param {{id: string, name: string, password?: string}} form
   * @param {((invite: string, id: string, name: string) => Promise<any>)|null} [withPasskey] signs up with a
   *   passkey and returns the answer of `POST /api/signup`
   * @returns {Promise<Me>} throws an AccountError that says why not
   */
  async signUp({ id, name, password }, withPasskey = null) {
    const problem = signUpProblem({ id, name, password: withPasskey ? null : (password ?? "") });
    if (problem) throw problem;
    const invite = this.#invite;
    if (!invite) throw new AccountError(400, "no-invite", errorText(400, "no-invite", "", null));
    const other = await this.#signedInAlready();
    if (other) {
      const text = `You are signed in as ${other.name} already: sign out first to use this invite.`;
      throw new AccountError(409, "signed-in", text);
    }
    const body = withPasskey
      ? await withPasskey(invite, id, name.trim())
      : await this.#request("POST", "api/signup", { invite, id, name: name.trim(), password });
    this.#invite = null;
    this.#signedIn(body);
    return /** @type {Me} */ (this.#me);
  }

  /**
   * Whether this browser is signed in after all (in another tab since this page looked): then the page is too.
   * @returns {Promise<Me|null>}
   */
  async #signedInAlready() {
    if (this.#me) return this.#me;
    if (!maybeSignedIn()) return null;
    return this.load();
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
    let text = errorText(response.status, code, String(answer?.error?.message ?? ""), retryAfter);
    if (code === "csrf" && method !== "GET") text = (await this.#changedElsewhere()) ?? text;
    throw new AccountError(response.status, code || `http-${response.status}`, text, retryAfter);
  }

  /**
   * After a refusal for the CSRF value: whether the browser's sign-in changed under this page (signed in or out
   * in another tab: the cookie is the browser's, the CSRF value this page's), as a sentence; null if not.
   * @returns {Promise<string|null>}
   */
  async #changedElsewhere() {
    const mine = this.#me;
    if (!mine) return null;
    let now = null;
    try {
      const response = await fetch(new URL("api/session", this.#base), {
        credentials: "same-origin",
        cache: "no-store",
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      if (response.status === 401) return "You signed out in another tab: reload the page.";
      now = response.ok ? await response.json() : null;
    } catch {
      return null;
    }
    if (!now || typeof now.id !== "string" || String(now.session ?? "") === mine.session) return null;
    if (now.id === mine.id) return "You signed in again in another tab: reload the page.";
    const name = typeof now.name === "string" && now.name ? now.name : now.id;
    return `You signed in as ${name} in another tab: reload the page.`;
  }
}
