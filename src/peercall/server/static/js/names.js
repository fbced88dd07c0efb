/**
 * Display names: what the server told us people are called (docs/protocol.md, "Display names"), by user id.
 *
 * Learned from every frame that carries them: `welcome` (`displayNames`), `presence` (`displayName` of an online
 * change), a forwarded `call-request` (the caller's), `directory`, `missed-calls` and `contacts`. A name is text:
 * whoever shows it sets it with `textContent`, never as HTML. No DOM here; the state is this module's own.
 * @module names
 */

const MAX_KNOWN = 5000; // names kept (the oldest learned go first): bounded whatever the server sends
const MAX_LENGTH = 64;

/** @type {Map<string, string>} */
const known = new Map();

/**
 * Remember `id`'s display name (a string of 1-64 characters; anything else is ignored).
 * @param {unknown} id
 * @param {unknown} name
 */
export function learn(id, name) {
  if (typeof id !== "string" || typeof name !== "string" || !name || name.length > MAX_LENGTH) return;
  known.delete(id);
  known.set(id, name);
  if (known.size > MAX_KNOWN) known.delete(known.keys().next().value);
}

/**
 * Learn the display names a server frame carries, whatever its type (frames without any teach nothing).
 * @param {any} frame
 */
export function learnFrom(frame) {
  if (!frame || typeof frame !== "object") return;
  switch (frame.type) {
    case "welcome":
    case "missed-calls":
      learnAll(frame.displayNames);
      break;
    case "presence":
      for (const change of Array.isArray(frame.changes) ? frame.changes : [frame]) {
        if (change?.status === "online") learn(change.id, change.displayName);
      }
      break;
    case "call-request":
      learn(frame.from, frame.displayName);
      break;
    case "directory":
      for (const user of Array.isArray(frame.users) ? frame.users : []) learn(user?.id, user?.displayName);
      break;
    case "contacts":
      for (const list of [frame.contacts, frame.incoming]) {
        for (const entry of Array.isArray(list) ? list : []) learn(entry?.id, entry?.displayName);
      }
      break;
    default:
  }
}

/** @param {unknown} names an object of id -> name */
function learnAll(names) {
  if (!names || typeof names !== "object") return;
  for (const [id, name] of Object.entries(names)) learn(id, name);
}

/**
 * `id`'s display name, or null when the server told none.
 * @param {string} id
 * @returns {string|null}
 */
export function displayName(id) {
  return known.get(id) ?? null;
}

/**
 * How to show a person: their display name, else their id.
 * @param {string} id
 * @returns {string}
 */
export function label(id) {
  return known.get(id) ?? id;
}

/**
 * How a user id is written where it is shown beside a name (People, contacts, the call, tooltips): `@bob`. One
 * form everywhere, so that the id reads as the same thing wherever it appears.
 * @param {string} id
 * @returns {string}
 */
export function handle(id) {
  return `@${id}`;
}

/** Forget every name (another user signs in on this page). */
export function forget() {
  known.clear();
}
