// Passkeys (WebAuthn) for accounts mode: each function makes the options -> navigator.credentials -> verify round
// trip with the server (docs/protocol.md, "Accounts"). No page UI here; the pages call these.
//
//   passkeysSupported() -> boolean
//       Whether this browser can use passkeys at all (window.PublicKeyCredential exists).
//   registerPasskey(csrf, name) -> {id, name, transports, created, lastUsed}
//       The signed-in user adds a passkey named `name` (default: this browser, "Chrome on Linux"); `csrf` is the
//       'csrf' of GET /api/session.
//   signInWithPasskey() -> the answer of POST /api/session ({id, name, admin, session, csrf, passkeys})
//       Signs in with any passkey of this site the browser offers (no user id asked).
//   signUpWithPasskey(invite, id, name) -> the same answer as signInWithPasskey (signed in at once)
//       Signs up from an invite (the token after '#invite=') with a passkey instead of a password.
//
// Each throws an Error whose message is a sentence to show as it is (a refusal of the server carries its `code`
// too; a browser prompt cancelled, or with no passkey to offer, has code 'cancelled').

import { errorText, thisBrowser } from './account.js';

const CSRF_HEADER = 'X-Peercall-CSRF';

/** The server's refusals in the user's words, where account.js has none that fits passkeys. */
const REFUSALS = {
  'passkey-taken': 'This passkey is added to your account already.',
  'bad-challenge': 'The passkey request expired: try again.',
};
/** The server's refusals that account.js words (for the password forms too). */
const WORDED = new Set(['too-many-attempts', 'too-many-sign-ins', 'disabled', 'https-required', 'no-invite',
  'id-taken', 'bad-id', 'bad-name', 'unauthorized', 'forbidden', 'too-many', 'last-method', 'csrf']);

/** `text` as a sentence: a capital first, a full stop last. */
function sentence(text) {
  const trimmed = String(text).trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function toBase64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64url(text) {
  const padded = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const raw = atob(padded);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes.buffer;
}

function failure(message, code) {
  const error = new Error(message);
  error.code = code;
  return error;
}

async function post(path, body, csrf) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', [CSRF_HEADER]: csrf || '1' },
      body: JSON.stringify(body || {}),
    });
  } catch (err) {
    console.warn(`[passkeys] POST ${path} failed:`, err);
    throw failure('Cannot reach the server: check your connection and try again.', 'network');
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const code = error.code ? String(error.code) : 'http-' + response.status;
    const said = error.message ? String(error.message) : '';
    const retry = Number.parseInt(response.headers.get('retry-after') || '', 10);
    const text = REFUSALS[code] ||
      (WORDED.has(code) ? errorText(response.status, code, said, Number.isFinite(retry) ? retry : null) : '') ||
      sentence(said || `The server answered ${response.status}`);
    throw failure(text, code);
  }
  return data;
}

// What the browser's refusal means, in the user's words. `making`: creating a passkey (true) or using one (false).
// NotAllowedError is all a page learns when the user cancels, when the prompt times out, and (signing in) when this
// device has no passkey for the site: the browser does not tell them apart, so the words cover them all.
function browserFailure(err, making) {
  const name = err && err.name;
  if (name === 'NotAllowedError') {
    return making
      ? failure('No passkey was made: the request was cancelled or timed out.', 'cancelled')
      : failure('No passkey was used: none is saved for this site on this device, or the request was cancelled.',
        'cancelled');
  }
  if (name === 'InvalidStateError') {
    return failure('This device has one of your passkeys already: you can sign in with it.', 'passkey-taken');
  }
  if (name === 'SecurityError') {
    return failure('Passkeys need https (or http://localhost) and this site\'s own address.', 'insecure');
  }
  const what = making ? 'Making the passkey' : 'Signing in with a passkey';
  return failure(`${what} failed: ${sentence(err && err.message ? err.message : err)}`, 'browser');
}

function requireSupport() {
  if (!passkeysSupported()) throw failure('This browser cannot use passkeys.', 'unsupported');
}

export function passkeysSupported() {
  // A passkey belongs to a domain name (its RP id): a page opened by IP address (http://127.0.0.1, a LAN address)
  // cannot use one, so the browser refuses; say so before a button is offered.
  const host = typeof location !== 'undefined' ? location.hostname : '';
  const byAddress = /^[\d.]+$/.test(host) || host.includes(':') || host.startsWith('[');
  return typeof window !== 'undefined' && typeof window.PublicKeyCredential === 'function' &&
    !!navigator.credentials && window.isSecureContext && !byAddress;
}

function creationOptions(json) {
  return {
    ...json,
    challenge: fromBase64url(json.challenge),
    user: { ...json.user, id: fromBase64url(json.user.id) },
    excludeCredentials: (json.excludeCredentials || []).map((c) => ({ ...c, id: fromBase64url(c.id) })),
  };
}

function requestOptions(json) {
  return {
    ...json,
    challenge: fromBase64url(json.challenge),
    allowCredentials: (json.allowCredentials || []).map((c) => ({ ...c, id: fromBase64url(c.id) })),
  };
}

function attestationJSON(credential) {
  const response = credential.response;
  return {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: toBase64url(response.clientDataJSON),
      attestationObject: toBase64url(response.attestationObject),
      transports: typeof response.getTransports === 'function' ? response.getTransports() : [],
    },
    clientExtensionResults: credential.getClientExtensionResults(),
    authenticatorAttachment: credential.authenticatorAttachment || undefined,
  };
}

function assertionJSON(credential) {
  const response = credential.response;
  return {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: toBase64url(response.clientDataJSON),
      authenticatorData: toBase64url(response.authenticatorData),
      signature: toBase64url(response.signature),
      userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
    },
    clientExtensionResults: credential.getClientExtensionResults(),
    authenticatorAttachment: credential.authenticatorAttachment || undefined,
  };
}

async function create(options) {
  let credential;
  try {
    credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
  } catch (err) {
    throw browserFailure(err, true);
  }
  if (!credential) throw failure('The browser made no passkey.', 'browser');
  return attestationJSON(credential);
}

export async function registerPasskey(csrf, name) {
  requireSupport();
  if (!csrf) throw failure('Sign in first.', 'unauthorized');
  const options = await post('/api/passkeys/options', {}, csrf);
  const passkey = await create(options);
  const answer = await post('/api/passkeys', { passkey, name: name || thisBrowser() || 'Passkey' }, csrf);
  return answer.passkey;
}

export async function signInWithPasskey() {
  requireSupport();
  const options = await post('/api/session/passkey/options', {});
  let credential;
  try {
    credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
  } catch (err) {
    throw browserFailure(err, false);
  }
  if (!credential) throw failure('The browser offered no passkey.', 'browser');
  return post('/api/session/passkey', { passkey: assertionJSON(credential) });
}

export async function signUpWithPasskey(invite, id, name) {
  requireSupport();
  const options = await post('/api/signup/passkey/options', { invite, id, name });
  const passkey = await create(options);
  return post('/api/signup', { invite, id, name, passkey, passkeyName: thisBrowser() || 'Passkey' });
}
