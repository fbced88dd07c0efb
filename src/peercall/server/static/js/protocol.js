/**
 * Signaling protocol v1: message type constants, error and close codes, and message builders.
 *
 * Pure data in, data out: no sockets, no DOM, no timers. Mirrors src/peercall/protocol/ on the server
 * (docs/protocol.md is the reference); keep the two in step.
 *
 * A client frame is `{type, to, data?, callId?}`; the server forwards it to `to` with `from` set to the
 * sender's id. Server frames are `welcome`, `presence`, `error` and, from a server that keeps call state,
 * `call-ringing`, `call-ended`, `call-resumed` and `missed-calls`. In token mode the first client frame is
 * `auth`. After a call ended, a client may tell the server what it measured of it: `call-summary` (not routed).
 * A server whose `welcome.features` lists "contacts" also takes the contact frames ({@link CONTACT_FRAMES}, and
 * `directory`) and answers them with `contacts` (and `directory`).
 * @module protocol
 */

/** The protocol version this client speaks (the server says its own in `welcome.protocol`). */
export const PROTOCOL_VERSION = 1;

/** Message `type` values (kebab-case on the wire). */
export const MessageType = Object.freeze({
  CALL_REQUEST: "call-request",
  CALL_ACCEPT: "call-accept",
  CALL_REJECT: "call-reject",
  OFFER: "offer",
  ANSWER: "answer",
  CANDIDATE: "candidate",
  HANGUP: "hangup",
  MEDIA_STATE: "media-state", // {data: {muted, camera, screen}}: what the sender's media does now (mediastate.js)
  // server -> client only
  WELCOME: "welcome",
  PRESENCE: "presence",
  ERROR: "error",
  // sent only by servers that keep call state (a plain forwarding server never sends them); optional for clients
  CALL_RINGING: "call-ringing", // {callId, to}: the server's id for the call we just requested
  CALL_ENDED: "call-ended", // {callId, outcome, reason}: the server ended a call we took part in
  CALL_RESUMED: "call-resumed", // {callId, peer, polite, state}: after a reconnect, our call is still on
  MISSED_CALLS: "missed-calls", // {calls: [record…]}: calls that rang while none of our devices was online
  SILENCED_CALL: "silenced-call", // {call: record}: a call our ring setting silenced has ended (Recent calls)
  // client -> server, first frame only, on a server in token mode
  AUTH: "auth", // {token}: the signed token (JWT) whose `sub` is our id; again later to renew it
  // server -> client: a renewal was accepted
  AUTH_RENEWED: "auth-renewed", // {expiresAt}: the connection's token now expires then (Unix seconds)
  // client -> server, not routed: what we measured of a call, once, after its call-ended
  CALL_SUMMARY: "call-summary", // {callId, data: {durationSec, mos, rttMs, jitterMs, lossPct, bitrateKbps, path}}
  // contacts (servers whose `welcome.features` lists "contacts"): client -> server, each answered by `contacts`
  CONTACT_ADD: "contact-add", // {to, data?: {name}}: ask them, or accept their request
  CONTACT_DECLINE: "contact-decline", // {to}: decline their request (they are not told)
  CONTACT_REMOVE: "contact-remove", // {to}: no longer contacts (both sides), or withdraw our request
  CONTACT_RENAME: "contact-rename", // {to, data: {name|null}}: our own name for a contact
  BLOCK: "block", // {to}
  UNBLOCK: "unblock", // {to}
  SETTINGS: "settings", // {data: {callsFrom}}: who may ring us
  DIRECTORY: "directory", // {data?: {q, after, limit}}: client -> server (PEERCALL_DIRECTORY=all), and its answer
  // server -> client: the whole picture of our contacts, requests, blocks and ring setting
  CONTACTS: "contacts",
});

/** The client frames that change the user's contacts, requests, blocks or ring setting (answered by `contacts`). */
export const CONTACT_FRAMES = Object.freeze([
  MessageType.CONTACT_ADD,
  MessageType.CONTACT_DECLINE,
  MessageType.CONTACT_REMOVE,
  MessageType.CONTACT_RENAME,
  MessageType.BLOCK,
  MessageType.UNBLOCK,
  MessageType.SETTINGS,
]);

/** Who may ring a user (the ring setting, `callsFrom`); `null` on the wire means the server's default. */
export const CallsFrom = Object.freeze({
  EVERYONE: "everyone",
  CONTACTS: "contacts",
  /** Do not disturb. */
  NOBODY: "nobody",
});

/** Whose presence a user sees (`welcome.directory`): everyone online, or their contacts only. */
export const DirectoryMode = Object.freeze({ ALL: "all", CONTACTS: "contacts" });

/** The `welcome.features` entry of a server that keeps contacts. */
export const CONTACTS_FEATURE = "contacts";

/** The longest name a user may give a contact (characters; the server's MAX_NAME). */
export const MAX_CONTACT_NAME = 64;

/** The most users one `directory` frame may ask for (the server allows 1-200). */
export const DIRECTORY_LIMIT = 50;

/** Call control frames: they change a call's state (glossary). */
export const CALL_CONTROL = Object.freeze([
  MessageType.CALL_REQUEST,
  MessageType.CALL_ACCEPT,
  MessageType.CALL_REJECT,
  MessageType.HANGUP,
]);

/**
 * Negotiation frames: SDP and ICE candidates, forwarded verbatim between the two parties of an answered call
 * (glossary). They change no state.
 */
export const NEGOTIATION = Object.freeze([MessageType.OFFER, MessageType.ANSWER, MessageType.CANDIDATE]);

/**
 * Peer frames: the negotiation frames and `media-state`. Each passes only between the two parties of an answered
 * call and changes no state (glossary).
 */
export const PEER_FRAMES = Object.freeze([...NEGOTIATION, MessageType.MEDIA_STATE]);

/** Types that the server forwards from one client to another: call control and peer frames. */
export const ROUTED_TYPES = Object.freeze([...CALL_CONTROL, ...PEER_FRAMES]);

/** The `code` of an `error` frame. */
export const ErrorCode = Object.freeze({
  BAD_JSON: "bad-json",
  BAD_MESSAGE: "bad-message",
  UNKNOWN_TYPE: "unknown-type",
  TOO_LARGE: "too-large",
  UNAVAILABLE: "unavailable",
  ID_TAKEN: "id-taken",
  // from servers that keep call state
  NOT_IN_CALL: "not-in-call",
  IN_CALL: "in-call",
  RATE_LIMITED: "rate-limited",
  UNAUTHORIZED: "unauthorized",
  /** Several server nodes: the one we are on cannot reach the state they share; nothing was done, retry. */
  SERVICE_UNAVAILABLE: "service-unavailable",
  /** A bounded list is full (500 contacts, 100 requests waiting, 1,000 blocked): remove some first. */
  TOO_MANY: "too-many",
  /** Not allowed on this server (e.g. `directory` while it shows contacts only). */
  NOT_ALLOWED: "not-allowed",
});

/** How a call ended, as the server says in `call-ended` and in the call history. */
export const Outcome = Object.freeze({
  ANSWERED: "answered",
  REJECTED: "rejected",
  CANCELLED: "cancelled",
  MISSED: "missed",
  BUSY: "busy",
  UNAVAILABLE: "unavailable",
  FAILED: "failed",
});

/**
 * `reason` values in `call-reject` / `hangup` data (Matrix's hangup reasons in kebab-case, as the server's
 * call history uses them; `busy` is the seed protocol's). Other clients may send others.
 */
export const Reason = Object.freeze({
  BUSY: "busy",
  USER_BUSY: "user-busy",
  USER_HANGUP: "user-hangup",
  USER_REJECTED: "user-rejected",
  USER_MEDIA_FAILED: "user-media-failed",
  INVITE_TIMEOUT: "invite-timeout",
  ICE_FAILED: "ice-failed",
  ICE_TIMEOUT: "ice-timeout",
  PEER_LOST: "peer-lost",
  ANSWERED_ELSEWHERE: "answered-elsewhere",
  USER_UNAVAILABLE: "user-unavailable",
  UNKNOWN_ERROR: "unknown-error",
});

/** WebSocket close codes with a meaning for the client. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  /** The server cannot reach its shared state (several nodes): reconnect with backoff, maybe to another node. */
  TRY_AGAIN_LATER: 1013,
  /** The token is missing, expired or refused: reconnecting only helps with a new token. */
  UNAUTHORIZED: 4401,
  SLOW_CONSUMER: 4420,
  RATE_LIMITED: 4429,
  TOO_MANY_CONNECTIONS: 4430,
  REPLACED: 4501,
  ID_TAKEN: 4509,
});

/** What a user id may look like: 1-64 ASCII letters, digits, `_`, `-`, `.` or `@` (same rule as the server). */
export const ID_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;

/** The id rule in words, for hints and error messages. */
export const ID_RULE = "1–64 characters: a–z, A–Z, 0–9 and _ - . @ (no spaces or accents)";

/**
 * Check a user id before connecting (the server refuses a malformed one with HTTP 400, which a
 * browser only sees as a failed connection).
 * @param {string} id
 * @param {string} [field] what the form calls the id, as it reads in a sentence: "name" (open mode's "Your name"),
 *   "user id" (accounts mode's sign-up)
 * @returns {string|null} null if valid, else a sentence saying what is wrong, in the user's terms.
 */
export function idProblem(id, field = "name") {
  if (!id) return `Please enter a ${field}: ${ID_RULE}.`;
  if (id.length > 64) return `That ${field} is ${id.length} characters long; at most 64 are allowed (${ID_RULE}).`;
  if (!ID_PATTERN.test(id)) {
    const bad = [...new Set([...id].filter((ch) => !/[A-Za-z0-9_.@-]/.test(ch)))];
    const shown = bad.map((ch) => (ch === " " ? "spaces" : `“${ch}”`)).join(", ");
    return `“${id}” is not a valid ${field} (${shown} not allowed). Use ${ID_RULE}.`;
  }
  return null;
}

/**
 * Whether a close code is terminal: 4500-4999 means "do not reconnect as you are".
 * 4000-4499 means the client may reconnect (with backoff), as may 1001 (server going away).
 * @param {number} code
 * @returns {boolean}
 */
export function isTerminalClose(code) {
  return code >= 4500 && code <= 4999;
}

/**
 * Whether a close code asks for new credentials before any reconnect (4401): retrying with the same token
 * would only be refused again, so the client waits for the user instead.
 * @param {number} code
 * @returns {boolean}
 */
export function needsNewCredentials(code) {
  return code === CloseCode.UNAUTHORIZED;
}

/**
 * The claims of a JWT, decoded but NOT verified (the server verifies; the page only reads `sub` and `exp`).
 * @param {string} token
 * @returns {{sub?: unknown, exp?: unknown, [claim: string]: unknown}|null} null if it is not a JWT
 */
export function tokenClaims(token) {
  const parts = typeof token === "string" ? token.trim().split(".") : [];
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    const base64 = parts[1].replaceAll("-", "+").replaceAll("_", "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/**
 * The `auth` frame: the first frame on a server in token mode.
 * @param {string} token
 * @returns {{type: "auth", token: string}}
 */
export const auth = (token) => ({ type: MessageType.AUTH, token });

/**
 * A fresh call id, unique enough to tell one call from the next between the same two people.
 * @returns {string}
 */
export function newCallId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Build a client -> server frame.
 * @param {string} type one of {@link ROUTED_TYPES}
 * @param {string} to recipient id
 * @param {{data?: unknown, callId?: string}} [extra]
 * @returns {{type: string, to: string, data?: unknown, callId?: string}}
 */
export function message(type, to, { data, callId } = {}) {
  const msg = { type, to };
  if (data !== undefined) msg.data = data;
  if (callId !== undefined) msg.callId = callId;
  return msg;
}

/** @param {string} to @param {string} [callId] */
export const callRequest = (to, callId) => message(MessageType.CALL_REQUEST, to, { callId });

/** @param {string} to @param {string} [callId] */
export const callAccept = (to, callId) => message(MessageType.CALL_ACCEPT, to, { callId });

/**
 * @param {string} to
 * @param {string} [callId]
 * @param {string} [reason] e.g. {@link Reason.BUSY}
 */
export const callReject = (to, callId, reason) =>
  message(MessageType.CALL_REJECT, to, { callId, data: reason ? { reason } : undefined });

/**
 * `offer` or `answer` with an RTCSessionDescriptionInit (`{type, sdp}` only: the server checks the shape).
 * @param {string} to
 * @param {RTCSessionDescription|RTCSessionDescriptionInit} description
 * @param {string} [callId]
 */
export function description(to, description, callId) {
  const { type, sdp } = description;
  return message(type === "offer" ? MessageType.OFFER : MessageType.ANSWER, to, {
    callId,
    data: { type, sdp },
  });
}

/**
 * `candidate` with an RTCIceCandidateInit, or null for end-of-candidates.
 * @param {string} to
 * @param {RTCIceCandidate|null} candidate
 * @param {string} [callId]
 */
export const candidate = (to, candidate, callId) =>
  message(MessageType.CANDIDATE, to, { callId, data: candidate ? candidate.toJSON() : null });

/**
 * `media-state`: what our microphone, camera and screen do now (the whole state; the server refuses anything but
 * booleans for these keys).
 * @param {string} to
 * @param {{muted: boolean, camera: boolean, screen: boolean}} state
 * @param {string} [callId]
 */
export const mediaState = (to, { muted, camera, screen }, callId) =>
  message(MessageType.MEDIA_STATE, to, {
    callId,
    data: { muted: Boolean(muted), camera: Boolean(camera), screen: Boolean(screen) },
  });

/**
 * @param {string} to
 * @param {string} [callId]
 * @param {string} [reason]
 */
export const hangup = (to, callId, reason) =>
  message(MessageType.HANGUP, to, { callId, data: reason ? { reason } : undefined });

/**
 * The problem with a name for a contact, or null: 1-64 characters, not only spaces (none at all is fine: the
 * contact is then shown by their id).
 * @param {string} name
 * @returns {string|null}
 */
export function contactNameProblem(name) {
  const length = [...name].length;
  if (length > MAX_CONTACT_NAME) {
    return `That name is ${length} characters long; at most ${MAX_CONTACT_NAME} are allowed.`;
  }
  if (name && !name.trim()) return "A name cannot be only spaces.";
  return null;
}

/**
 * `contact-add`: ask `to` to be our contact, or accept their request; optionally with our own name for them.
 * @param {string} to
 * @param {string|null} [name]
 */
export const contactAdd = (to, name = null) =>
  message(MessageType.CONTACT_ADD, to, { data: name ? { name } : undefined });

/** @param {string} to the requester */
export const contactDecline = (to) => message(MessageType.CONTACT_DECLINE, to);

/** @param {string} to the contact, or the user we asked */
export const contactRemove = (to) => message(MessageType.CONTACT_REMOVE, to);

/**
 * @param {string} to
 * @param {string|null} name our own name for them (null: none, show their id)
 */
export const contactRename = (to, name) => message(MessageType.CONTACT_RENAME, to, { data: { name } });

/** @param {string} to */
export const block = (to) => message(MessageType.BLOCK, to);

/** @param {string} to */
export const unblock = (to) => message(MessageType.UNBLOCK, to);

/**
 * `settings`: who may ring us.
 * @param {string|null} callsFrom one of {@link CallsFrom}, or null for the server's default
 * @returns {{type: "settings", data: {callsFrom: string|null}}}
 */
export const settings = (callsFrom) => ({ type: MessageType.SETTINGS, data: { callsFrom } });

/**
 * `directory`: a page of who is online (servers with `PEERCALL_DIRECTORY=all`).
 * @param {{q?: string, after?: string|null, limit?: number}} [query] `q`: an id prefix
 * @returns {{type: "directory", data: {q?: string, after?: string, limit: number}}}
 */
export function directory({ q = "", after = null, limit = DIRECTORY_LIMIT } = {}) {
  const data = { limit };
  if (q) data.q = q;
  if (after) data.after = after;
  return { type: MessageType.DIRECTORY, data };
}

/**
 * `call-summary`: what this side measured of a call that ended (sent once, after `call-ended`; the server keeps
 * it with the call's history record). Numbers that are missing, negative or not finite are left out, as is a
 * MOS outside 1-5 and a path other than "direct"/"relayed" (the server would refuse the frame).
 * @param {string} callId
 * @param {{durationSec?: number|null, mos?: number|null, rttMs?: number|null, jitterMs?: number|null,
 *   lossPct?: number|null, bitrateKbps?: number|null, path?: string|null}} summary
 * @returns {{type: "call-summary", callId: string, data: object}}
 */
export function callSummary(callId, summary) {
  const data = {};
  const round = (value, digits) => Number(value.toFixed(digits));
  for (const [key, digits] of [
    ["durationSec", 1],
    ["mos", 2],
    ["rttMs", 1],
    ["jitterMs", 1],
    ["lossPct", 2],
    ["bitrateKbps", 1],
  ]) {
    const value = summary[key];
    if (typeof value === "number" && Number.isFinite(value) && value >= 0) data[key] = round(value, digits);
  }
  if (data.mos !== undefined && (data.mos < 1 || data.mos > 5)) delete data.mos;
  if (data.lossPct !== undefined && data.lossPct > 100) delete data.lossPct;
  if (summary.path === "direct" || summary.path === "relayed") data.path = summary.path;
  return { type: MessageType.CALL_SUMMARY, callId, data };
}

/**
 * Parse one server frame. Never throws.
 * @param {string} text
 * @returns {{type: string, [key: string]: unknown}|null} null if the frame is not a JSON object with a type.
 */
export function parse(text) {
  try {
    const msg = JSON.parse(text);
    return msg && typeof msg === "object" && typeof msg.type === "string" ? msg : null;
  } catch {
    return null;
  }
}
