/**
 * ICE configuration: what `/ice-servers` says (STUN/TURN servers with fresh TURN credentials, the transport
 * policy, how long the credentials last), and ICE failures in words.
 *
 * Owns the HTTP request for `/ice-servers` (made before every call: TURN credentials expire), like the SDK's
 * `client/ice.py`. Knows nothing of the DOM, the signaling connection or the call.
 * @module ice
 */

/**
 * What `/ice-servers` said: the servers, the transport policy, and how long TURN credentials last.
 * @typedef {object} IceConfig
 * @property {RTCIceServer[]} iceServers
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] "all" or "relay"
 * @property {number} [ttl] seconds the TURN credentials are valid
 */

/**
 * Fetch the ICE servers (STUN/TURN, with fresh TURN credentials) and the transport policy the server
 * prescribes. Call it before each call: TURN credentials expire. Never throws: on any failure the call goes
 * ahead with host candidates only, which is enough on one machine or one LAN.
 * @param {object} [options]
 * @param {string|URL} [options.url] default: `ice-servers` next to the current page
 * @param {string|null} [options.id] our user id (the server names the TURN credentials after it)
 * @param {string|null} [options.token] sent as `Authorization: Bearer` (token mode)
 * @param {number} [options.timeoutMs]
 * @returns {Promise<IceConfig>}
 */
export async function fetchIceConfig({ url = "ice-servers", id = null, token = null, timeoutMs = 5000 } = {}) {
  try {
    const target = new URL(url, globalThis.location?.href);
    if (id) target.searchParams.set("id", id);
    const response = await fetch(target, {
      cache: "no-store",
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    return {
      iceServers: Array.isArray(body?.iceServers) ? body.iceServers : [],
      iceTransportPolicy: body?.iceTransportPolicy === "relay" ? "relay" : "all",
      ttl: typeof body?.ttl === "number" ? body.ttl : undefined,
    };
  } catch (err) {
    console.warn("[ice] could not fetch ICE servers, using none:", err);
    return { iceServers: [], iceTransportPolicy: "all" };
  }
}

/**
 * Whether any of `servers` is a TURN server (the only kind that can relay).
 * @param {RTCIceServer[]} servers
 * @returns {boolean}
 */
export function hasTurn(servers) {
  return servers.some((server) =>
    [server.urls].flat().some((url) => typeof url === "string" && /^turns?:/i.test(url)),
  );
}

/**
 * A sentence that says why ICE found no path, from the candidate errors seen.
 * @param {{errorCode: number, url: string}[]} errors
 * @param {{relayOnly: boolean, relayCandidates: number}} context
 * @returns {string}
 */
export function iceFailureText(errors, { relayOnly, relayCandidates }) {
  const turnErrors = errors.filter((e) => /^turns?:/i.test(e.url ?? ""));
  if (turnErrors.some((e) => e.errorCode === 401 || e.errorCode === 403)) {
    return "Could not connect the audio: the relay server refused us (its credentials were not accepted).";
  }
  if (relayOnly && relayCandidates === 0 && turnErrors.length) {
    return "Could not connect the audio: the relay server could not be reached.";
  }
  if (relayOnly && relayCandidates === 0) {
    return "Could not connect the audio: the relay server gave us no address to use.";
  }
  return "Could not connect the audio: no network path between you and the other side was found.";
}
