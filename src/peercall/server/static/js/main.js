/**
 * The composition root of the web client: wires the signaling connection, the current call, the call
 * history and the page.
 *
 * Decides which frames belong to which call, answers a second caller with "busy", keeps a call going while
 * the WebSocket reconnects (the audio is peer-to-peer), takes the server's `call-ended` as the truth about
 * how a call ended, keeps the history and the missed-call count, and turns everything into the view that
 * ui.js renders.
 *
 * Page configuration: `<body data-id="clientA" data-peer="clientB">` presets the names (the two-tab demo);
 * `?id=` and `?peer=` do the same on any page; `?processing=off` opens the mic without echo cancellation,
 * noise suppression or auto gain (music, measurements); `#token=<jwt>` gives a token (then removed from the
 * address bar), and the name is the token's `sub`.
 *
 * "Test my audio" places an ordinary call to the server's echo service (id `echo`, when it is online) and
 * measures it (audiocheck.js); the call hangs up by itself and shows in the history like any other.
 *
 * During a call it measures the quality (quality.js) and the levels of both voices (media.js), plays a
 * ringtone while a call rings here (and a ringback tone while ours rings there), lets the user switch the
 * microphone and the speaker, and tells when the other side's connection dropped or their audio is silent.
 * When a call that connected ends, its summary is shown and sent to the server (`call-summary`).
 *
 * For tests and debugging, `window.peercall` exposes `signaling`, `call` (the current or last Call), `pc`
 * (the current call's RTCPeerConnection, or null), `audioCheck` (the current or last AudioCheck), `quality`
 * (the current or last call's QualityMonitor), `ringing` (whether the ringtone plays), `ringtone` and
 * `ringback` (the Tones), `levels` (the meters' levels) and `summaries` (the call-summary frames sent).
 * @module main
 */

import { AudioCheck, ECHO_ID } from "./audiocheck.js";
import { Call, CallPhase, CallSetupError } from "./call.js";
import { fetchIceConfig } from "./ice.js";
import {
  INSECURE_TEXT,
  LevelMeter,
  MicrophoneError,
  RAW,
  RINGBACK,
  RINGTONE,
  Tone,
  canChooseSpeaker,
  listDevices,
  setToneSink,
  unlockAudio,
  VOICE,
} from "./media.js";
import * as protocol from "./protocol.js";
import { ErrorCode, MessageType, Reason } from "./protocol.js";
import { QualityMonitor } from "./quality.js";
import { Signaling, presenceChanges } from "./signaling.js";
import * as ui from "./ui.js";

const params = new URLSearchParams(location.search);
const page = document.body.dataset;
const audio = params.get("processing") === "off" ? RAW : VOICE;
const STORAGE_KEY = "peercall.id";
const DEVICE_KEY = "peercall.device";
const TOKEN_KEY = "peercall.token";
const RELAY_KEY = "peercall.relayOnly";
const MIC_KEY = "peercall.mic";
const SPEAKER_KEY = "peercall.speaker";
/** How often the level meters move (ms). */
const LEVELS_MS = 100;
/** How many calls of the history to show (older ones on request). */
const HISTORY_PAGE = 15;
/** After a reconnect, how long to wait for the server to hand our call back (`call-resumed`), in ms. */
const RESUME_WAIT_MS = 2000;

const signaling = new Signaling();
/** @type {Call|null} the current call, or the last one (then `call.active` is false) */
let call = null;
/** Ids of calls that have ended: frames that still name one of them are ignored. */
const endedCallIds = new Set();
/** What the page shows about the call besides the Call's own state. */
let extra = freshExtra();
/** @type {QualityMonitor|null} the current or last call's quality */
let monitor = null;
/** The level meters of the current call, and their timer. */
const meters = { /** @type {LevelMeter|null} */ mic: null, /** @type {LevelMeter|null} */ remote: null, timer: 0 };
const levels = { mic: 0, remote: 0 };
const ringtone = new Tone(RINGTONE);
const ringback = new Tone(RINGBACK);
/** @type {Notification|null} the notification of the call ringing now */
let notification = null;
/** The `call-summary` frames sent (newest last), and the calls whose summary waits for the server. */
const summaries = { sent: [], /** @type {Map<string, object>} callId -> frame */ pending: new Map() };
/** Our own summary of each call, by call id, shown in the history until the server's record has it. */
const ownQuality = new Map();
/** Why the server cannot be reached, and when the next attempt is (Date.now()), while reconnecting. */
const connection = { reason: /** @type {string|null} */ (null), retryAt: /** @type {number|null} */ (null) };
/** The microphones and speakers, and the ones chosen. */
const devices = {
  /** @type {import("./media.js").DeviceChoice[]} */ inputs: [],
  /** @type {import("./media.js").DeviceChoice[]} */ outputs: [],
  mic: recall(MIC_KEY, localStorage) ?? "",
  speaker: recall(SPEAKER_KEY, localStorage) ?? "",
};

function freshExtra() {
  return {
    path: null,
    connectedAt: 0,
    previous: null,
    /** @type {import("./quality.js").QualitySample|null} */ quality: null,
    /** @type {import("./quality.js").CallSummary|null} */ summary: null,
    peerDropped: false,
    mediaReconnecting: false,
  };
}
/** @type {AudioCheck|null} the audio check going on, or the last one */
let audioCheck = null;

/** The token we connect with, or null. */
let token = null;
/** "open" or "token" once the server has told us (probed at load), else "unknown". */
let authMode = "unknown";

/** The call history: newest first. */
const recent = { calls: [], next: null, error: null, missed: 0, loadedFor: null };
let historyRequest = 0;

/** Reconnect bookkeeping for the current call. */
const resume = {
  /** ends the call if the connection does not come back within the server's resume grace */
  lostTimer: 0,
  /** ends the call if, once reconnected, the server does not hand it back */
  waitTimer: 0,
  /** restart ICE once signaling is back (the network changed while it was down) */
  restartIce: false,
};

// ---- view ----------------------------------------------------------------------------------------

function view() {
  return {
    server: { state: signaling.state, reason: connection.reason, retryAt: connection.retryAt },
    online: signaling.online,
    people: signaling.people,
    me: signaling.state === "connected" ? signaling.id : null,
    devices: { ...devices, mic: devices.mic || micInUse(), canChooseSpeaker: canChooseSpeaker() },
    notifications: notificationPermission(),
    call: call && callView(call),
    audioCheck: {
      blocker: audioCheckBlocker(),
      check: audioCheck?.view() ?? null,
      failure: audioCheck?.state === "failed" ? audioCheckFailure(audioCheck.call) : null,
    },
    history: {
      me: recent.loadedFor,
      calls: recent.calls.map(withOwnQuality),
      more: Boolean(recent.next),
      error: recent.error,
      missed: recent.missed,
    },
  };
}

/**
 * What the page shows about a call.
 * @param {Call} c
 * @returns {import("./ui.js").CallView}
 */
function callView(c) {
  const mine = c === call ? extra : freshExtra();
  return {
    quality: mine.quality,
    summary: mine.summary,
    mediaReconnecting: mine.mediaReconnecting,
    peerNote: c === call ? peerNote(c) : null,
    phase: c.phase,
    peerId: c.peerId,
    direction: c.direction,
    reason: c.reason,
    remoteReason: c.remoteReason,
    detail: c.detail,
    previous: mine.previous,
    muted: c.muted,
    path: mine.path,
    connectedAt: mine.connectedAt,
    outcome: c.outcome,
    endReason: c.endReason,
    failure: c.failure,
  };
}

function render() {
  ui.render(view());
  updateRinging();
}

/**
 * A sentence about the other side during a call: their connection dropped (the server keeps the call for them
 * meanwhile), or the audio from them is silence (muted).
 * @param {Call} c
 * @returns {string|null}
 */
function peerNote(c) {
  if (!c.active) return null;
  if (extra.peerDropped) return `${c.peerId}'s connection dropped — waiting for them…`;
  if (c.phase === CallPhase.CONNECTED && extra.quality?.remoteSilent) {
    return `No sound from ${c.peerId}: they may have muted their microphone.`;
  }
  return null;
}

/**
 * A history record with our own summary of the call added, until the server's record carries it.
 * @param {object} record
 */
function withOwnQuality(record) {
  const mine = ownQuality.get(record.callId);
  const me = recent.loadedFor;
  if (!mine || !me || record.quality?.[me]) return record;
  return { ...record, quality: { ...(record.quality ?? {}), [me]: mine } };
}

/** Whether the server keeps call state (and so resumes calls and sends `call-ended`). */
function statefulServer() {
  return Boolean(signaling.welcome && "resumeGrace" in signaling.welcome);
}

// ---- calls ---------------------------------------------------------------------------------------

/**
 * Make `options` the current call and follow it.
 * @param {ConstructorParameters<typeof Call>[0]} options
 */
function newCall(options) {
  // A server that keeps call state has its own ring timer (`welcome.ringTimeout`): ours only backs it up.
  const serverRing = Number(signaling.welcome?.ringTimeout);
  const ringTimeoutMs = serverRing > 0 ? (serverRing + 5) * 1000 : undefined;
  const me = signaling.id;
  const c = new Call({
    ...options,
    audio: devices.mic ? { ...audio, deviceId: { ideal: devices.mic } } : audio,
    ringTimeoutMs,
    relayOnly: ui.relayOnly(),
    getIceConfig: () => fetchIceConfig({ id: me, token: authMode === "open" ? null : token }),
    send: (msg) => signaling.send(msg),
  });
  call = c;
  extra = freshExtra();
  monitor?.stop();
  monitor = null;
  stopMeters();
  clearResume();
  c.addEventListener("phasechange", (event) => {
    if (c !== call) return;
    const { phase, previous } = event.detail;
    extra.previous = previous;
    if (phase === CallPhase.CONNECTED) {
      extra.connectedAt = Date.now();
      ui.say("");
      startQuality(c);
    }
    if (phase === CallPhase.ENDED) {
      if (c.callId) endedCallIds.add(c.callId);
      clearResume();
      ui.playRemote(null);
      stopMeters();
      finishQuality(c);
      explainEnd(c);
      refreshHistorySoon(c.callId);
    }
    render();
  });
  c.addEventListener("track", (event) => {
    if (c !== call) return;
    ui.playRemote(event.detail.stream);
    meters.remote?.close();
    meters.remote = new LevelMeter(event.detail.stream);
    startMeters();
  });
  c.addEventListener("localtrack", (event) => {
    if (c !== call || !c.active) return;
    meters.mic?.close();
    meters.mic = new LevelMeter(event.detail.stream);
    startMeters();
    refreshDevices(); // the microphone permission gives the devices their names
  });
  c.addEventListener("connectionstatechange", (event) => {
    if (c !== call) return;
    const { connectionState } = event.detail;
    const reconnecting = c.active && c.everConnected && ["disconnected", "failed"].includes(connectionState);
    if (reconnecting !== extra.mediaReconnecting) {
      extra.mediaReconnecting = reconnecting;
      render();
    }
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

// ---- during a call: levels, quality, summary, tones --------------------------------------------------

function startMeters() {
  if (meters.timer) return;
  meters.timer = setInterval(() => {
    levels.mic = meters.mic?.read() ?? 0;
    levels.remote = meters.remote?.read() ?? 0;
    ui.setLevels(levels.mic, levels.remote);
  }, LEVELS_MS);
}

function stopMeters() {
  clearInterval(meters.timer);
  meters.timer = 0;
  meters.mic?.close();
  meters.remote?.close();
  meters.mic = meters.remote = null;
  levels.mic = levels.remote = 0;
  ui.setLevels(0, 0);
}

/** @param {Call} c a call that just connected */
function startQuality(c) {
  monitor?.stop();
  const m = new QualityMonitor(() => (c.active ? c.pc : null));
  monitor = m;
  m.addEventListener("sample", (event) => {
    if (m !== monitor || c !== call || !c.active) return;
    extra.quality = event.detail;
    render();
  });
  m.start();
}

/**
 * The call ended: sum it up, show it, and tell the server (once it has said the call ended).
 * @param {Call} c
 */
function finishQuality(c) {
  const m = monitor;
  if (!m || c !== call) return;
  m.stop();
  if (!c.everConnected || !extra.connectedAt) return;
  const durationSec = (Date.now() - extra.connectedAt) / 1000;
  extra.summary = m.summary(durationSec);
  if (c.callId && extra.summary.mos !== null) {
    ownQuality.set(c.callId, protocol.callSummary(c.callId, extra.summary).data);
  }
  sendSummary(c);
}

/**
 * Send the call's `call-summary` once, after the server's `call-ended` (it refuses one before). A plain relay
 * keeps no history: nothing is sent there.
 * @param {Call} c
 */
function sendSummary(c) {
  if (c !== call || c.active || !extra.summary || c.outcome === null || !c.callIdConfirmed || !statefulServer()) {
    return;
  }
  if (summaries.pending.has(c.callId) || summaries.sent.some((f) => f.callId === c.callId)) return;
  const frame = protocol.callSummary(c.callId, extra.summary); // takes the fields of the protocol only
  summaries.pending.set(c.callId, frame);
  flushSummaries();
}

/** Send the summaries that wait (e.g. for the connection to come back). */
function flushSummaries() {
  for (const [callId, frame] of summaries.pending) {
    if (!signaling.isOpen || !signaling.send(frame)) return;
    summaries.pending.delete(callId);
    summaries.sent.push(frame);
    console.info(`[main] sent the summary of call ${callId}:`, frame.data);
    // The server keeps it with the call's record, just after: load the history again to show it, and the other
    // side's (sent at about the same time).
    setTimeout(refreshHistory, 700);
    setTimeout(refreshHistory, 2500);
  }
}

/** The ringtone plays while a call rings here, the ringback tone while ours rings there. */
function updateRinging() {
  const incoming = Boolean(call?.active && call.phase === CallPhase.INCOMING);
  const outgoing = Boolean(call?.active && call.phase === CallPhase.REQUESTING && call.callIdConfirmed);
  if (incoming) ringtone.start();
  else ringtone.stop();
  if (outgoing && !audioCheck?.running) ringback.start();
  else ringback.stop();
  document.body.dataset.ringing = String(incoming);
  if (incoming) notifyIncoming();
  else closeNotification();
}

/** @returns {"default"|"granted"|"denied"|"unsupported"} */
function notificationPermission() {
  return "Notification" in globalThis ? globalThis.Notification.permission : "unsupported";
}

/** A call rings while the tab is hidden: show a notification (if the user allowed them). */
function notifyIncoming() {
  if (notification || document.visibilityState !== "hidden" || notificationPermission() !== "granted") return;
  const c = call;
  try {
    const shown = new Notification(`Incoming call from ${c.peerId}`, {
      body: "Open peercall to answer.",
      tag: `peercall-call-${c.callId ?? c.peerId}`,
      requireInteraction: true,
    });
    shown.addEventListener("click", () => {
      globalThis.focus();
      shown.close();
      ui.focusAccept();
    });
    notification = shown;
  } catch (err) {
    console.warn("[main] could not show a notification:", err);
  }
}

function closeNotification() {
  notification?.close();
  notification = null;
}

document.addEventListener("visibilitychange", () => {
  if (call?.active && call.phase === CallPhase.INCOMING) notifyIncoming();
});

// ---- devices -------------------------------------------------------------------------------------

async function refreshDevices() {
  const found = await listDevices();
  devices.inputs = found.inputs;
  devices.outputs = found.outputs;
  render();
  // A speaker chosen on an earlier visit can only be used once the page may see the devices.
  if (devices.speaker && devices.outputs.some((d) => d.id === devices.speaker)) await applySpeaker({ quiet: true });
}

/** The microphone the current call uses (its deviceId), or "". */
function micInUse() {
  const track = call?.active ? call.localStream?.getAudioTracks()[0] : null;
  return track?.getSettings?.().deviceId ?? "";
}

/**
 * The user picked a microphone: use it from now on, and at once in the call going on (the same one again
 * restarts it).
 * @param {string} deviceId
 */
async function chooseMicrophone(deviceId) {
  devices.mic = deviceId;
  remember(MIC_KEY, deviceId || null, localStorage);
  if (!call?.active || !call.localStream) {
    render();
    return;
  }
  try {
    await call.switchMicrophone(deviceId);
    ui.say("");
  } catch (err) {
    showCallError(err);
  }
  render();
}

/**
 * The user picked a speaker: the call and the ringtone play there.
 * @param {string} deviceId
 */
async function chooseSpeaker(deviceId) {
  devices.speaker = deviceId;
  remember(SPEAKER_KEY, deviceId || null, localStorage);
  await applySpeaker();
  render();
}

/**
 * Play the call (and the ringtone) on the chosen speaker.
 * @param {{quiet?: boolean}} [options] quiet: a failure is only logged (not the user's doing just now)
 */
async function applySpeaker({ quiet = false } = {}) {
  if (!canChooseSpeaker()) return;
  const problem = await ui.setSpeaker(devices.speaker);
  if (problem && !quiet) ui.say(problem, "warning");
  else if (problem) console.info(`[main] ${problem}`);
  if (!problem) await setToneSink(devices.speaker);
}

navigator.mediaDevices?.addEventListener?.("devicechange", refreshDevices);

/**
 * Say why `c` ended in #message.
 * @param {Call} c
 */
function explainEnd(c) {
  if (c.reason === "no-microphone") return; // the microphone error says it
  if (audioCheck?.call === c) {
    ui.say(""); // the audio check's panel says how it went
    return;
  }
  const text = ui.endedText(view().call);
  const bad = ["failed", "signaling-lost", "unavailable", "refused", "no-relay", "peer-offline"].includes(c.reason);
  ui.say(text, bad ? "warning" : "info");
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
  if (call?.phase !== CallPhase.INCOMING) return;
  ui.say("");
  try {
    await call.accept();
  } catch (err) {
    showCallError(err);
  }
}

/** @param {unknown} err */
function showCallError(err) {
  if (err instanceof MicrophoneError || err instanceof CallSetupError) {
    ui.say(err.message, "error");
  } else {
    console.error("[main] call failed:", err);
    ui.say(`The call failed: ${err?.message ?? err}`, "error");
  }
}

// ---- audio check ---------------------------------------------------------------------------------

/**
 * Why "Test my audio" cannot be used right now (a sentence for its tooltip and hint), or null if it can.
 * @returns {string|null}
 */
function audioCheckBlocker() {
  if (signaling.state === "disconnected") return "Connect first: the test calls the server's echo service.";
  if (signaling.state !== "connected") return "Waiting for the connection to the server…";
  if (signaling.id === ECHO_ID) return `You are connected as “${ECHO_ID}”, the echo service's own name.`;
  if (!signaling.online.includes(ECHO_ID)) {
    return (
      "No echo service is online on this server, so there is nothing to test against " +
      "(its administrator can start one with “peercall serve --with-echo”)."
    );
  }
  if (call?.active) return audioCheck?.running ? "The audio check is running." : "Finish the current call first.";
  return null;
}

/**
 * Why an audio check measured nothing, as a sentence.
 * @param {Call} c its call
 * @returns {string}
 */
function audioCheckFailure(c) {
  if (c.active) return "The audio check stopped.";
  switch (c.reason) {
    case "no-microphone":
      return "Your microphone could not be opened, so there was nothing to test.";
    case "hangup":
      return "You ended the test call before it could measure anything.";
    case "busy":
      return "The echo service is busy testing someone else's audio: try again in a minute.";
    case "unavailable":
      return "The echo service has just gone offline.";
    default:
      return ui.endedText(callView(c)) || "The test call ended before it could measure anything.";
  }
}

/** "Test my audio": call the echo service, measure the call, hang up by itself. */
async function testAudio() {
  if (audioCheckBlocker()) return;
  ui.say("");
  const c = newCall({ direction: "outgoing", peerId: ECHO_ID });
  const check = new AudioCheck(c);
  audioCheck = check;
  check.addEventListener("change", () => {
    if (check !== audioCheck) return;
    // Progress ticks only move the panel; state changes may change the rest of the page too.
    if (check.state === "measuring" && c.phase === CallPhase.CONNECTED) ui.renderAudioCheck(view().audioCheck);
    else render();
  });
  render();
  try {
    await c.start();
  } catch (err) {
    showCallError(err);
  }
}

// ---- signaling -----------------------------------------------------------------------------------

/** @param {{from: string, callId?: string}} msg */
function onCallRequest(msg) {
  if (call?.active) {
    if (call.peerId === msg.from && call.callId === msg.callId) {
      // A duplicate: the server rings a device again after it reconnected while the call still rings.
      if (call.phase === CallPhase.INCOMING) clearResume();
      return;
    }
    if (call.peerId === msg.from && call.phase === CallPhase.REQUESTING) {
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
  const late = msg.type === MessageType.CALL_REJECT || msg.type === MessageType.HANGUP;
  if (late && call && !call.active && msg.callId === call.callId && msg.from === call.peerId) {
    // The peer's own reject/hangup after the server's call-ended: it may say more (e.g. no microphone).
    if (call.lateReason(msg)) {
      explainEnd(call);
      render();
    }
    return;
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
  if (msg.ref === MessageType.CALL_SUMMARY) {
    // An older server does not know call-summary, or the call is too old: the summary only helps, never matters.
    console.info(`[main] the server did not keep a call summary: ${msg.code}: ${msg.message}`);
    return;
  }
  const ours = belongsToCall(msg, msg.to);
  switch (msg.code) {
    case ErrorCode.UNAVAILABLE:
      if (!ours) return; // e.g. our "busy" reply to someone who has left since
      call.adoptCallId(msg.callId);
      if (call.phase === CallPhase.REQUESTING && msg.ref === MessageType.CALL_REQUEST) call.unavailable();
      else call.peerOffline();
      return;
    case ErrorCode.IN_CALL:
      // Our call-request was refused: the server still counts a call of ours (its callId names that one).
      if (call?.active && call.phase === CallPhase.REQUESTING && msg.to === call.peerId) call.refused(msg.message);
      else console.info(`[main] server: ${msg.message}`);
      return;
    case ErrorCode.NOT_IN_CALL:
      // The server has no such call (any more): e.g. it ended the call while we were away.
      if (ours) call.refused(msg.message);
      else console.info(`[main] server: ${msg.message}`);
      return;
    case ErrorCode.RATE_LIMITED:
      if (ours && call.phase === CallPhase.REQUESTING && msg.ref === MessageType.CALL_REQUEST) {
        call.refused(msg.message);
      } else {
        ui.say(`The server is slowing this page down: ${msg.message}.`, "warning");
      }
      return;
    case ErrorCode.SERVICE_UNAVAILABLE:
      if (ours && call.phase === CallPhase.REQUESTING && msg.ref === MessageType.CALL_REQUEST) {
        call.refused("the server cannot place calls for a moment; try again shortly");
      } else {
        ui.say("The server is briefly unable to handle calls; nothing was lost, try again in a moment.", "warning");
      }
      return;
    case ErrorCode.ID_TAKEN:
    case ErrorCode.UNAUTHORIZED:
      return; // the close that follows says it
    default:
      if (msg.ref === MessageType.AUTH) {
        // A server in open mode does not know the auth frame: it needs no token, and the session goes on.
        console.info("[main] the server needs no token:", msg.message);
        authMode = "open";
        return;
      }
      ui.say(`The server refused a message: ${msg.message}`, "error");
  }
}

/** @param {{callId: string, to: string}} msg a stateful server names the call we requested */
function onCallRinging(msg) {
  if (call?.active && call.phase === CallPhase.REQUESTING && msg.to === call.peerId) {
    call.adoptCallId(msg.callId);
    render(); // it rings there: the ringback tone starts
  }
}

/**
 * A stateful server ended a call of ours: the truth about how it ended. It also sends the seed protocol's
 * `hangup`/`call-reject`, which may carry the peer's own reason (e.g. "user-media-failed"); that one only
 * adds detail (see onCallMessage).
 * @param {{callId: string, outcome?: string, reason?: string}} msg
 */
function onCallEnded(msg) {
  const c = call;
  if (!c || msg.callId !== c.callId) {
    console.debug(`[main] call-ended for ${msg.callId}, not the current call`);
    return;
  }
  const wasActive = c.active;
  const ringingHere = c.direction === "incoming" && c.phase === CallPhase.INCOMING;
  if (!c.serverEnded(msg)) return;
  if (ringingHere && (msg.outcome === "missed" || msg.outcome === "cancelled")) {
    recent.missed += 1; // a call that rang here and nobody took
  }
  if (!wasActive) explainEnd(c); // we ended it first; the outcome may change the words
  sendSummary(c);
  refreshHistorySoon(c.callId);
  render();
}

/**
 * After a reconnect, a stateful server says our call is still on: take it up again (re-send what was lost,
 * restart ICE if the connection suffered). If we no longer have that call, end it there too.
 * @param {{callId: string, peer: string, state: string, polite?: boolean}} msg
 */
function onCallResumed(msg) {
  if (belongsToCall(msg, msg.peer)) {
    clearResume();
    call.adoptCallId(msg.callId);
    console.info(`[main] call ${msg.callId} with ${msg.peer} resumed (${msg.state})`);
    extra.peerDropped = false;
    call.resume(msg);
    if (restartPending()) call.restartIce("the network changed while the server was away");
    render();
    return;
  }
  console.info(`[main] the server resumed call ${msg.callId} with ${msg.peer}, which we no longer have`);
  signaling.send(protocol.hangup(msg.peer, msg.callId, Reason.USER_HANGUP));
}

function restartPending() {
  const pending = resume.restartIce;
  resume.restartIce = false;
  return pending;
}

function clearResume() {
  clearTimeout(resume.lostTimer);
  clearTimeout(resume.waitTimer);
  resume.lostTimer = resume.waitTimer = 0;
}

/**
 * Our connection to the server dropped during a call. The call goes on (the audio is peer-to-peer) for as
 * long as the server would keep it for us: its resume grace.
 */
function keepCallWhileReconnecting() {
  if (!call?.active || resume.lostTimer) return;
  const graceMs = Math.max(0, Number(signaling.welcome?.resumeGrace ?? 0)) * 1000;
  const c = call;
  resume.lostTimer = setTimeout(() => {
    resume.lostTimer = 0;
    if (c === call && c.active && signaling.state !== "connected") {
      console.info("[main] the connection did not come back within the resume grace; the call is lost");
      c.signalingLost();
    }
  }, graceMs + 1000);
}

/** We are back: the server's `call-resumed` (or a repeated `call-request`) should come at once. */
function awaitResume() {
  clearTimeout(resume.lostTimer);
  resume.lostTimer = 0;
  if (!call?.active) return;
  const c = call;
  clearTimeout(resume.waitTimer);
  resume.waitTimer = setTimeout(() => {
    resume.waitTimer = 0;
    if (c === call && c.active) {
      console.info("[main] reconnected, but the server did not hand our call back: it is over");
      c.signalingLost();
    }
  }, RESUME_WAIT_MS);
}

signaling.addEventListener("statechange", (event) => {
  const { state, previous, reason, retryIn, terminal, unauthorized } = event.detail;
  if (state === "reconnecting") {
    connection.reason = reason ?? connection.reason;
    if (retryIn !== undefined) connection.retryAt = Date.now() + retryIn;
  } else {
    connection.reason = connection.retryAt = null;
  }
  if (call?.active && state !== "connected") {
    if (state === "disconnected") {
      call.signalingLost();
    } else if (!statefulServer()) {
      // A plain relay forgets calls with the socket: only a call whose media already flows carries on.
      if (call.phase !== CallPhase.CONNECTED) call.signalingLost();
    } else {
      keepCallWhileReconnecting();
    }
  }
  if (state === "connected") {
    if (previous === "reconnecting" && statefulServer()) awaitResume();
    refreshHistory();
    flushSummaries();
  }
  if (state === "disconnected" && unauthorized) {
    forgetToken();
    ui.rejectToken(`${reason} Paste a new token, then connect again.`);
  } else if (state === "disconnected" && reason && previous !== "disconnected") {
    ui.say(terminal ? reason : "", terminal ? "error" : "info");
  } else if (state === "reconnecting" && previous !== "reconnecting") {
    ui.say(""); // the banner at the top says why, counts down to the next try, and offers "Retry now"
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
  // A server that keeps call state keeps the call while the peer reconnects, and says when it is over
  // (`call-ended`, reason peer-lost): meanwhile the page says that we are waiting for them. Only a plain relay
  // leaves it to us to notice that the peer is gone.
  if (!call?.active) return;
  for (const { id, status } of presenceChanges(event.detail)) {
    if (!call?.active || call.peerId !== id) continue;
    if (!statefulServer()) {
      if (status === "offline") call.peerOffline();
    } else if (extra.peerDropped !== (status === "offline")) {
      extra.peerDropped = status === "offline";
      render();
    }
  }
});
signaling.addEventListener("people", render);
signaling.addEventListener(MessageType.ERROR, (event) => onServerError(event.detail));
signaling.addEventListener(MessageType.CALL_RINGING, (event) => onCallRinging(event.detail));
signaling.addEventListener(MessageType.CALL_ENDED, (event) => onCallEnded(event.detail));
signaling.addEventListener(MessageType.CALL_RESUMED, (event) => onCallResumed(event.detail));
signaling.addEventListener(MessageType.MISSED_CALLS, (event) => {
  const calls = Array.isArray(event.detail.calls) ? event.detail.calls : [];
  recent.missed += calls.length;
  const callers = [...new Set(calls.map((record) => record.caller))];
  if (callers.length && !call?.active) ui.say(`Missed calls while you were away: ${callers.join(", ")}.`);
  mergeHistory(calls);
  refreshHistory();
  render();
});

// ---- network changes -----------------------------------------------------------------------------

/**
 * The network changed under a call (the `online` event, or `navigator.connection` says so): our address may
 * be a new one, so restart ICE, now if the server can carry the new offer, else once it is back.
 * @param {string} why
 */
function networkChanged(why) {
  signaling.reconnectNow();
  if (!call?.active || ![CallPhase.CALLING, CallPhase.CONNECTED].includes(call.phase) || !call.pc) return;
  if (signaling.isOpen) call.restartIce(why);
  else resume.restartIce = true;
}

addEventListener("online", () => networkChanged("the browser is online again"));
navigator.connection?.addEventListener?.("change", () => networkChanged("the network connection changed"));

// ---- history ------------------------------------------------------------------------------------

/**
 * Load the newest calls (or, with `before`, the next older page) from `/api/calls`.
 * @param {{before?: string|null}} [options]
 */
async function refreshHistory({ before = null } = {}) {
  const me = signaling.id;
  if (!me) return;
  const request = ++historyRequest;
  const url = new URL("api/calls", location.href);
  url.searchParams.set("limit", String(HISTORY_PAGE));
  if (before) url.searchParams.set("before", before);
  url.searchParams.set("id", me); // in token mode the token decides, and must match
  try {
    const response = await fetch(url, {
      cache: "no-store",
      headers: token && authMode !== "open" ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(5000),
    });
    const body = await response.json().catch(() => null);
    if (request !== historyRequest || signaling.id !== me) return; // a newer request or another user
    if (!response.ok) {
      recent.error = `The call history is not available: ${body?.error?.message ?? `HTTP ${response.status}`}.`;
    } else {
      const calls = Array.isArray(body?.calls) ? body.calls : [];
      if (recent.loadedFor !== me) recent.calls = [];
      recent.loadedFor = me;
      recent.error = null;
      if (before) {
        mergeHistory(calls);
        recent.next = body?.next ?? null;
      } else {
        // The newest page replaces what we had on top, and keeps the older pages the user loaded.
        const oldest = calls.at(-1)?.ringingAt ?? -Infinity;
        const older = body?.next ? recent.calls.filter((r) => r.ringingAt < oldest) : [];
        recent.calls = [...calls, ...older];
        if (!older.length) recent.next = body?.next ?? null;
      }
    }
  } catch (err) {
    if (request !== historyRequest) return;
    console.warn("[main] could not load the call history:", err);
    recent.error = "The call history could not be loaded.";
  }
  render();
}

/**
 * Add records (e.g. from `missed-calls`) to the history, newest first, without duplicates.
 * @param {object[]} records
 */
function mergeHistory(records) {
  const me = signaling.id;
  if (recent.loadedFor !== me) {
    recent.calls = [];
    recent.loadedFor = me;
  }
  const byId = new Map(recent.calls.map((r) => [r.callId, r]));
  for (const record of records) if (record?.callId) byId.set(record.callId, record);
  recent.calls = [...byId.values()].sort((a, b) => b.ringingAt - a.ringingAt);
}

/**
 * The server writes a call to the history when it ends, just after telling us: load it a moment later,
 * and once more if it is not there yet.
 * @param {string|undefined} callId
 */
function refreshHistorySoon(callId) {
  setTimeout(async () => {
    await refreshHistory();
    if (callId && !recent.calls.some((r) => r.callId === callId)) setTimeout(refreshHistory, 1000);
  }, 300);
}

// ---- auth ----------------------------------------------------------------------------------------

/**
 * The token from the address (`#token=…`, removed from the address bar at once so that it does not stay
 * in the browser history or get shared), else the one this tab used last.
 * @returns {string|null}
 */
function initialToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl !== null) {
    fragment.delete("token");
    const rest = fragment.toString();
    replaceAddress(`${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
    remember(TOKEN_KEY, fromUrl.trim() || null, sessionStorage);
    return fromUrl.trim() || null;
  }
  return recall(TOKEN_KEY, sessionStorage);
}

/** @param {string} url */
function replaceAddress(url) {
  try {
    window.history.replaceState(window.history.state, "", url);
  } catch (err) {
    console.warn("[main] could not remove the token from the address bar:", err);
  }
}

/**
 * Use `text` as our token: the name becomes the token's user.
 * @param {string|null} text
 * @returns {string|null} a problem with the token, as a sentence, or null
 */
function useToken(text) {
  token = text || null;
  if (!token) {
    ui.nameFromToken(null);
    return null;
  }
  const claims = protocol.tokenClaims(token);
  const sub = typeof claims?.sub === "string" ? claims.sub : null;
  if (!claims) return "That is not a token: a token is three parts separated by dots (a JWT).";
  if (!sub || protocol.idProblem(sub)) return "The token names no valid user (its “sub”).";
  ui.nameFromToken(sub);
  return null;
}

function forgetToken() {
  remember(TOKEN_KEY, null, sessionStorage);
}

/**
 * Ask the server whether it wants a token (in token mode, `/ice-servers` answers 401 to a stranger), and
 * whether it relays every call anyway (then the "Hide my IP address" box is ticked for good).
 */
async function probeServer() {
  try {
    const response = await fetch(new URL("ice-servers", location.href), {
      cache: "no-store",
      signal: AbortSignal.timeout(5000),
    });
    authMode = response.status === 401 ? "token" : response.ok ? "open" : "unknown";
    const body = response.ok ? await response.json() : null;
    if (body?.iceTransportPolicy === "relay") ui.serverRelaysAll();
  } catch {
    authMode = "unknown";
  }
  if (authMode === "token") ui.tokenRequired(Boolean(token));
}

// ---- user input ----------------------------------------------------------------------------------

ui.bind({
  connect(typed) {
    unlockAudio(); // a click: from now on the ringtone may play
    const problem = token ? useToken(token) : null;
    if (problem) {
      ui.rejectToken(problem);
      return;
    }
    if (!token && authMode === "token") {
      ui.rejectToken("This server requires a token: paste the one you were given under Advanced.");
      return;
    }
    const id = token ? protocol.tokenClaims(token).sub : typed;
    const idProblem = protocol.idProblem(id);
    if (idProblem) {
      ui.rejectId(idProblem);
      return;
    }
    if (!page.id && !token) remember(STORAGE_KEY, id, localStorage);
    if (token) remember(TOKEN_KEY, token, sessionStorage);
    ui.say("");
    if (recent.loadedFor !== id) {
      Object.assign(recent, { calls: [], next: null, error: null, loadedFor: null, missed: 0 });
    }
    signaling.connect(id, { device: tabDevice(), token: authMode === "open" ? null : token });
  },
  disconnect() {
    call?.hangup();
    signaling.disconnect();
  },
  call(peerId) {
    unlockAudio();
    startCall(peerId);
  },
  accept() {
    unlockAudio();
    acceptCall();
  },
  reject() {
    call?.reject();
  },
  escape() {
    // Escape declines a ringing call, cancels ours while it rings, and hangs up a call.
    if (call?.phase === CallPhase.INCOMING) call.reject();
    else if (call?.active) call.hangup();
  },
  chooseMicrophone,
  chooseSpeaker,
  async enableNotifications() {
    if (notificationPermission() !== "default") return;
    try {
      await globalThis.Notification.requestPermission();
    } catch (err) {
      console.warn("[main] could not ask for notifications:", err);
    }
    render();
  },
  retryNow() {
    signaling.reconnectNow();
  },
  hangup() {
    call?.hangup();
  },
  toggleMute() {
    if (call?.active) call.setMuted(!call.muted);
  },
  tokenChanged(text) {
    const problem = useToken(text);
    if (problem && text) console.info(`[main] ${problem}`);
  },
  relayOnlyChanged(checked) {
    remember(RELAY_KEY, checked ? "1" : null, localStorage);
  },
  callBack(peerId) {
    recent.missed = 0;
    unlockAudio();
    startCall(peerId);
  },
  historySeen() {
    if (!recent.missed) return;
    recent.missed = 0;
    render();
  },
  moreHistory() {
    if (recent.next) refreshHistory({ before: recent.next });
  },
  testAudio,
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

/**
 * Store (or, with null, remove) a value; storage may be disabled, and remembering is only a convenience.
 * @param {string} key
 * @param {string|null} value
 * @param {Storage} storage
 */
function remember(key, value, storage) {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // ignore
  }
}

/**
 * @param {string} key
 * @param {Storage} storage
 * @returns {string|null}
 */
function recall(key, storage) {
  try {
    return storage.getItem(key);
  } catch {
    return null;
  }
}

const startToken = initialToken();
ui.preset({
  id: page.id ?? params.get("id") ?? recall(STORAGE_KEY, localStorage),
  peer: page.peer ?? params.get("peer"),
  token: startToken,
  relayOnly: recall(RELAY_KEY, localStorage) === "1",
});
const tokenProblem = useToken(startToken);
if (tokenProblem) ui.rejectToken(tokenProblem);
probeServer();
if (!globalThis.isSecureContext) {
  // Plain http from another address than localhost: the browser will not give us a microphone. Say so now.
  ui.showInsecure(location.host);
  console.warn(`[main] ${INSECURE_TEXT}`);
}
refreshDevices();

// "Last seen 3 min ago" and the like age: show them afresh now and then.
setInterval(() => {
  if (signaling.state === "connected") render();
}, 30_000);

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
  /** The audio check going on, or the last one (null before the first). */
  get audioCheck() {
    return audioCheck;
  },
  /** The current or last call's quality monitor (null before the first call connected). */
  get quality() {
    return monitor;
  },
  /** Whether the ringtone is playing (a call rings here). */
  get ringing() {
    return ringtone.playing;
  },
  ringtone,
  ringback,
  /** The level meters' levels (0..1), as last shown. */
  levels,
  /** The `call-summary` frames sent so far. */
  get summaries() {
    return [...summaries.sent];
  },
};
