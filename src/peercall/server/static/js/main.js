/**
 * The composition root of the web client: wires the signaling connection, the current call and the page.
 *
 * Decides which frames belong to which call, answers a second caller with "busy", ends the call when the
 * peer goes offline, and turns everything into the view that ui.js renders.
 *
 * Page configuration: `<body data-id="clientA" data-peer="clientB">` presets the names (the two-tab demo);
 * `?id=` and `?peer=` do the same on any page; `?processing=off` opens the mic without echo cancellation,
 * noise suppression or auto gain (music, measurements).
 *
 * For tests and debugging, `window.peercall` exposes `signaling`, `call` (the current or last Call) and
 * `pc` (the current call's RTCPeerConnection, or null).
 * @module main
 */

import { Call, MicrophoneError, RAW, VOICE } from "./call.js";
import * as protocol from "./protocol.js";
import { ErrorCode, MessageType, Reason } from "./protocol.js";
import { Signaling } from "./signaling.js";
import * as ui from "./ui.js";

const params = new URLSearchParams(location.search);
const page = document.body.dataset;
const audio = params.get("processing") === "off" ? RAW : VOICE;
const STORAGE_KEY = "peercall.id";
const DEVICE_KEY = "peercall.device";

const signaling = new Signaling();
/** @type {Call|null} the current call, or the last one (then `call.active` is false) */
let call = null;
/** Ids of calls that have ended: frames that still name one of them are ignored. */
const endedCallIds = new Set();
/** What the page shows about the call besides the Call's own state. */
let extra = { path: null, connectedAt: 0 };

// ---- view ----------------------------------------------------------------------------------------

function view() {
  return {
    server: { state: signaling.state },
    online: signaling.online,
    call: call && {
      state: call.state,
      peerId: call.peerId,
      direction: call.direction,
      reason: call.reason,
      remoteReason: call.remoteReason,
      detail: call.detail,
      previous: extra.previous,
      muted: call.muted,
      path: extra.path,
      connectedAt: extra.connectedAt,
    },
  };
}

const render = () => ui.render(view());

// ---- calls ---------------------------------------------------------------------------------------

/**
 * Make `options` the current call and follow it.
 * @param {ConstructorParameters<typeof Call>[0]} options
 */
function newCall(options) {
  // A server that keeps call state has its own ring timer (`welcome.ringTimeout`): ours only backs it up.
  const serverRing = Number(signaling.welcome?.ringTimeout);
  const ringTimeoutMs = serverRing > 0 ? (serverRing + 5) * 1000 : undefined;
  const c = new Call({ ...options, audio, ringTimeoutMs, send: (msg) => signaling.send(msg) });
  call = c;
  extra = { path: null, connectedAt: 0, previous: null };
  c.addEventListener("statechange", (event) => {
    if (c !== call) return;
    const { state, previous } = event.detail;
    extra.previous = previous;
    if (state === "connected") {
      extra.connectedAt = Date.now();
      ui.say("");
    }
    if (state === "ended") {
      if (c.callId) endedCallIds.add(c.callId);
      ui.playRemote(null);
      const text = ui.endedText(view().call);
      const bad = ["failed", "signaling-lost", "no-microphone", "unavailable", "refused"].includes(c.reason);
      if (c.reason !== "no-microphone") ui.say(text, bad ? "warning" : "info");
    }
    render();
  });
  c.addEventListener("track", (event) => {
    if (c === call) ui.playRemote(event.detail.stream);
  });
  c.addEventListener("mutechange", render);
  c.addEventListener("path", (event) => {
    if (c !== call) return;
    extra.path = event.detail;
    render();
  });
  render();
  return c;
}

/** @param {string} peerId */
async function startCall(peerId) {
  if (call?.active) return;
  const problem = !peerId
    ? "Enter the name of the person to call."
    : peerId === signaling.id
      ? "That is your own name: enter someone else's."
      : protocol.idProblem(peerId);
  if (problem) {
    ui.rejectPeer(problem);
    return;
  }
  ui.say("");
  const c = newCall({ direction: "outgoing", peerId });
  try {
    await c.start();
  } catch (err) {
    showCallError(err);
  }
}

async function acceptCall() {
  if (call?.state !== "incoming") return;
  ui.say("");
  try {
    await call.accept();
  } catch (err) {
    showCallError(err);
  }
}

/** @param {unknown} err */
function showCallError(err) {
  if (err instanceof MicrophoneError) {
    ui.say(err.message, "error");
  } else {
    console.error("[main] call failed:", err);
    ui.say(`The call failed: ${err?.message ?? err}`, "error");
  }
}

// ---- signaling -----------------------------------------------------------------------------------

/** @param {{from: string, callId?: string}} msg */
function onCallRequest(msg) {
  if (call?.active) {
    if (call.peerId === msg.from && call.callId === msg.callId) return; // a duplicate
    if (call.peerId === msg.from && call.state === "requesting") {
      // We are calling each other at once ("glare"). A server that keeps call state joins the two requests
      // into one call and sends us `call-accept` with our role; a plain relay lets both ring out.
      console.info(`[main] ${msg.from} is calling us while we call them; waiting for the server`);
      return;
    }
    // Already in a call: decline quietly, the user is not disturbed.
    console.info(`[main] busy: declined a call from ${msg.from}`);
    signaling.send(protocol.callReject(msg.from, msg.callId, Reason.BUSY));
    return;
  }
  ui.say("");
  newCall({ direction: "incoming", peerId: msg.from, callId: msg.callId });
}

/**
 * A frame for a call: hand it to the current call if it belongs to it.
 * @param {{type: string, from: string, callId?: string}} msg
 */
function onCallMessage(msg) {
  if (belongsToCall(msg, msg.from)) {
    // SDP and candidates only ever follow call-accept, so they never name the call first.
    const media = [MessageType.OFFER, MessageType.ANSWER, MessageType.CANDIDATE].includes(msg.type);
    if (!media) call.adoptCallId(msg.callId);
    if (!media || call.callIdConfirmed) {
      call.handle(msg);
      return;
    }
  }
  if (msg.type === MessageType.OFFER) {
    // The peer thinks a call is still going (it missed our hangup): tell it there is none.
    signaling.send(protocol.hangup(msg.from, msg.callId, Reason.USER_HANGUP));
  }
  console.debug(`[main] ignored ${msg.type} from ${msg.from}: not part of the current call`);
}

/**
 * Whether a frame about the call with `peerId` is about the current call. Until the caller's call id is
 * confirmed (a stateful server assigns its own), any id from that peer is taken as this call's.
 * @param {{callId?: string}} msg
 * @param {string|undefined} peerId
 */
function belongsToCall(msg, peerId) {
  return Boolean(
    call?.active &&
      peerId === call.peerId &&
      !endedCallIds.has(msg.callId) &&
      (msg.callId === undefined ||
        call.callId === undefined ||
        msg.callId === call.callId ||
        !call.callIdConfirmed),
  );
}

/** @param {{code: string, message: string, ref?: string, to?: string, callId?: string}} msg */
function onServerError(msg) {
  const ours = belongsToCall(msg, msg.to);
  switch (msg.code) {
    case ErrorCode.UNAVAILABLE:
      if (!ours) return; // e.g. our "busy" reply to someone who has left since
      call.adoptCallId(msg.callId);
      if (call.state === "requesting" && msg.ref === MessageType.CALL_REQUEST) call.unavailable();
      else call.peerOffline();
      return;
    case ErrorCode.IN_CALL:
      // Our call-request was refused: the server still counts a call of ours (its callId names that one).
      if (call?.active && call.state === "requesting" && msg.to === call.peerId) call.refused(msg.message);
      else console.info(`[main] server: ${msg.message}`);
      return;
    case ErrorCode.NOT_IN_CALL:
      // The server has no such call (any more): e.g. it ended the call while we were away.
      if (ours) call.refused(msg.message);
      else console.info(`[main] server: ${msg.message}`);
      return;
    case ErrorCode.ID_TAKEN:
      return; // the close that follows says it
    default:
      ui.say(`The server refused a message: ${msg.message}`, "error");
  }
}

/** @param {{callId: string, to: string}} msg a stateful server names the call we requested */
function onCallRinging(msg) {
  if (call?.active && call.state === "requesting" && msg.to === call.peerId) call.adoptCallId(msg.callId);
}

/**
 * A stateful server ended a call of ours. It also sends the seed protocol's `hangup`/`call-reject`, which
 * may carry the peer's own reason (e.g. "user-media-failed"); so this ends the call only if that frame has
 * not come half a second later.
 * @param {{callId: string, outcome?: string, reason?: string}} msg
 */
function onCallEnded(msg) {
  const c = call;
  if (!c?.active || msg.callId !== c.callId) return;
  setTimeout(() => {
    if (c === call) c.serverEnded(msg);
  }, 500);
}

/**
 * After a reconnect, a stateful server says our call is still on. Keep it if we still have it (and renew
 * its ICE, since frames sent meanwhile were lost); otherwise end it there too.
 * @param {{callId: string, peer: string, state: string}} msg
 */
function onCallResumed(msg) {
  if (belongsToCall(msg, msg.peer)) {
    call.adoptCallId(msg.callId);
    if (call.state === "connected" && call.pc?.connectionState !== "connected") call.restartIce();
    return;
  }
  console.info(`[main] the server resumed call ${msg.callId} with ${msg.peer}, which we no longer have`);
  signaling.send(protocol.hangup(msg.peer, msg.callId, Reason.USER_HANGUP));
}

signaling.addEventListener("statechange", (event) => {
  const { state, previous, reason, retryIn, terminal } = event.detail;
  if (call?.active && state !== "connected") {
    // Negotiation cannot go on without signaling; a call whose media already flows may carry on.
    if (state === "disconnected" || call.state !== "connected") call.signalingLost();
  }
  if (state === "disconnected" && reason && previous !== "disconnected") {
    ui.say(terminal ? reason : "", terminal ? "error" : "info");
  } else if (state === "reconnecting" && retryIn !== undefined) {
    ui.say(`${reason} Trying again in ${Math.max(1, Math.round(retryIn / 1000))} s…`, "warning");
  } else if (state === "connected" && previous === "reconnecting") {
    ui.say("Reconnected to the server.");
  } else if (state === "connected") {
    ui.say("");
  }
  render();
});
signaling.addEventListener("online", render);
signaling.addEventListener(MessageType.CALL_REQUEST, (event) => onCallRequest(event.detail));
for (const type of [
  MessageType.CALL_ACCEPT,
  MessageType.CALL_REJECT,
  MessageType.OFFER,
  MessageType.ANSWER,
  MessageType.CANDIDATE,
  MessageType.HANGUP,
]) {
  signaling.addEventListener(type, (event) => onCallMessage(event.detail));
}
signaling.addEventListener(MessageType.PRESENCE, (event) => {
  const { id, status } = event.detail;
  if (status === "offline" && call?.active && call.peerId === id) call.peerOffline();
});
signaling.addEventListener(MessageType.ERROR, (event) => onServerError(event.detail));
signaling.addEventListener(MessageType.CALL_RINGING, (event) => onCallRinging(event.detail));
signaling.addEventListener(MessageType.CALL_ENDED, (event) => onCallEnded(event.detail));
signaling.addEventListener(MessageType.CALL_RESUMED, (event) => onCallResumed(event.detail));
signaling.addEventListener(MessageType.MISSED_CALLS, (event) => {
  const callers = [...new Set((event.detail.calls ?? []).map((record) => record.caller))];
  if (callers.length && !call?.active) ui.say(`Missed calls while you were away: ${callers.join(", ")}.`);
});

// ---- user input ----------------------------------------------------------------------------------

ui.bind({
  connect(id) {
    const problem = protocol.idProblem(id);
    if (problem) {
      ui.rejectId(problem);
      return;
    }
    try {
      if (!page.id) localStorage.setItem(STORAGE_KEY, id);
    } catch {
      // storage may be disabled; remembering the name is only a convenience
    }
    ui.say("");
    signaling.connect(id, { device: tabDevice() });
  },
  disconnect() {
    call?.hangup();
    signaling.disconnect();
  },
  call: startCall,
  accept: acceptCall,
  reject() {
    call?.reject();
  },
  hangup() {
    call?.hangup();
  },
  toggleMute() {
    if (call?.active) call.setMuted(!call.muted);
  },
});

/**
 * This tab's device id: kept in sessionStorage, so a reload or a reconnect is recognised as the same device
 * (and takes over its call), while another tab is another device.
 * @returns {string|null}
 */
function tabDevice() {
  try {
    let device = sessionStorage.getItem(DEVICE_KEY);
    if (!device || protocol.idProblem(device)) {
      device = `tab-${protocol.newCallId().replaceAll("-", "").slice(0, 12)}`;
      sessionStorage.setItem(DEVICE_KEY, device);
    }
    return device;
  } catch {
    return null; // storage disabled: the server names the connection itself
  }
}

let rememberedId = null;
try {
  rememberedId = localStorage.getItem(STORAGE_KEY);
} catch {
  // ignore
}
ui.preset({ id: page.id ?? params.get("id") ?? rememberedId, peer: page.peer ?? params.get("peer") });

addEventListener("pagehide", () => {
  call?.hangup();
  signaling.disconnect();
});

render();

/** For tests and debugging in the console. */
globalThis.peercall = {
  signaling,
  /** The current call, or the last one. */
  get call() {
    return call;
  },
  /** The current call's RTCPeerConnection, or null when no call is going on. */
  get pc() {
    return call?.active ? call.pc : null;
  },
};
