// Passkeys (WebAuthn) for accounts mode: each function makes the options -> navigator.credentials -> verify round
// trip with the server (docs/protocol.md, "Accounts"). No page UI here; the pages call these.
//
//   passkeysSupported() -> boolean
//       Whether this browser can use passkeys at all (window.PublicKeyCredential exists).
//   registerPasskey(csrf, name) -> {id, name, transports, created, lastUsed}
//       The signed-in user adds a passkey named `name`; `csrf` is the 'csrf' of GET /api/session.
//   signInWithPasskey() -> the answer of POST /api/session ({id, name, admin, session, csrf, passkeys})
//       Signs in with any passkey of this site the browser offers (no user id asked).
//   signUpWithPasskey(invite, id, name) -> the same answer as signInWithPasskey (signed in at once)
//       Signs up from an invite (the token after '#invite=') with a passkey instead of a password.
//
// Each throws an Error whose message can be shown as it is (a refusal of the server carries its `code` too;
// a cancelled browser prompt has code 'cancelled').

const CSRF_HEADER = 'X-Peercall-CSRF';

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
    throw failure(`the server could not be reached (${err.message})`, 'network');
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    throw failure(error && error.message ? error.message : `the server answered ${response.status}`,
      error && error.code ? error.code : 'http-' + response.status);
  }
  return data;
}

function browserFailure(err, what) {
  if (err && err.name === 'NotAllowedError') return failure(`${what} was cancelled or timed out`, 'cancelled');
  if (err && err.name === 'InvalidStateError') return failure('this passkey is registered already', 'passkey-taken');
  if (err && err.name === 'SecurityError') {
    return failure('passkeys need https (or http://localhost) and this site\'s own address', 'insecure');
  }
  return failure(`${what} failed: ${err && err.message ? err.message : err}`, 'browser');
}

function requireSupport() {
  if (!passkeysSupported()) throw failure('this browser does not support passkeys', 'unsupported');
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
    throw browserFailure(err, 'creating the passkey');
  }
  if (!credential) throw failure('the browser made no passkey', 'browser');
  return attestationJSON(credential);
}

export async function registerPasskey(csrf, name) {
  requireSupport();
  if (!csrf) throw failure('sign in first (registerPasskey needs the csrf of GET /api/session)', 'unauthorized');
  const options = await post('/api/passkeys/options', {}, csrf);
  const passkey = await create(options);
  const answer = await post('/api/passkeys', { passkey, name: name || 'Passkey' }, csrf);
  return answer.passkey;
}

export async function signInWithPasskey() {
  requireSupport();
  const options = await post('/api/session/passkey/options', {});
  let credential;
  try {
    credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
  } catch (err) {
    throw browserFailure(err, 'signing in with a passkey');
  }
  if (!credential) throw failure('the browser offered no passkey', 'browser');
  return post('/api/session/passkey', { passkey: assertionJSON(credential) });
}

export async function signUpWithPasskey(invite, id, name) {
  requireSupport();
  const options = await post('/api/signup/passkey/options', { invite, id, name });
  const passkey = await create(options);
  return post('/api/signup', { invite, id, name, passkey });
}
