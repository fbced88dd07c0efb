/**
 * The page: DOM handles (grabbed once, here), rendering of the app state, and user input.
 *
 * Knows nothing of WebSockets or WebRTC: main.js hands it plain data (`render(view)`) and gets user
 * intents back through the handlers given to `bind()`.
 * @module ui
 */

import { CallPhase } from "./call.js";
import { handle, label } from "./names.js";
import { CallsFrom, DirectoryMode } from "./protocol.js";
import { mosWord, qualityLevel } from "./quality.js";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const el = {
  identityForm: /** @type {HTMLFormElement} */ ($("identity-form")),
  myId: /** @type {HTMLInputElement} */ ($("my-id")),
  myIdHint: $("my-id-hint"),
  myIdError: $("my-id-error"),
  relayOnly: /** @type {HTMLInputElement} */ ($("relay-only")),
  relayHint: $("relay-hint"),
  advanced: /** @type {HTMLDetailsElement} */ ($("advanced")),
  token: /** @type {HTMLInputElement} */ ($("token")),
  tokenHint: $("token-hint"),
  connect: /** @type {HTMLButtonElement} */ ($("connect")),
  disconnect: /** @type {HTMLButtonElement} */ ($("disconnect")),
  serverStatus: $("server-status"),
  callForm: /** @type {HTMLFormElement} */ ($("call-form")),
  peerId: /** @type {HTMLInputElement} */ ($("peer-id")),
  call: /** @type {HTMLButtonElement} */ ($("call")),
  videoCall: /** @type {HTMLButtonElement} */ ($("video-call")),
  peerInCall: $("peer-in-call"),
  acceptVideo: /** @type {HTMLButtonElement} */ ($("accept-video")),
  camera: /** @type {HTMLButtonElement} */ ($("camera")),
  screenShare: /** @type {HTMLButtonElement} */ ($("screen-share")),
  cameraSelect: /** @type {HTMLSelectElement} */ ($("camera-select")),
  videoStage: $("video-stage"),
  remoteVideo: /** @type {HTMLVideoElement} */ ($("remote-video")),
  remoteVideoOff: $("remote-video-off"),
  localVideo: /** @type {HTMLVideoElement} */ ($("local-video")),
  fullscreen: /** @type {HTMLButtonElement} */ ($("fullscreen")),
  qualityVideo: $("quality-video"),
  qualityVideoBitrate: $("quality-video-bitrate"),
  incoming: $("incoming"),
  incomingFrom: $("incoming-from"),
  accept: /** @type {HTMLButtonElement} */ ($("accept")),
  reject: /** @type {HTMLButtonElement} */ ($("reject")),
  callCard: $("call-card"),
  callTitle: $("call-title"),
  callStatus: $("call-status"),
  callPeer: $("call-peer"),
  callDetail: $("call-detail"),
  callDetailText: $("call-detail-text"),
  callTimer: $("call-timer"),
  timerBox: /** @type {HTMLElement} */ ($("call-timer").parentElement),
  inCall: $("in-call"),
  micLevel: $("mic-level"),
  remoteLevel: $("remote-level"),
  remoteLevelLabel: $("remote-level-label"),
  peerNote: $("peer-note"),
  quality: /** @type {HTMLButtonElement} */ ($("quality")),
  qualityDetails: $("quality-details"),
  qualityAnnounce: $("quality-announce"),
  qualityRtt: $("quality-rtt"),
  qualityJitter: $("quality-jitter"),
  qualityLoss: $("quality-loss"),
  qualityBitrate: $("quality-bitrate"),
  qualityMos: $("quality-mos"),
  path: $("path"),
  callSummary: $("call-summary"),
  micSelect: /** @type {HTMLSelectElement} */ ($("mic-select")),
  speakerSelect: /** @type {HTMLSelectElement} */ ($("speaker-select")),
  me: $("me"),
  myName: $("my-name"),
  myYou: $("my-you"),
  myInitial: $("my-initial"),
  myStatus: $("my-status"),
  contactFilter: /** @type {HTMLInputElement} */ ($("contact-filter")),
  contactFilterBox: /** @type {HTMLElement} */ ($("contact-filter").parentElement),
  peopleContactsOnly: $("people-contacts-only"),
  contactFilterHint: $("contact-filter-hint"),
  offlineTitle: $("offline-title"),
  offlinePeople: $("offline-people"),
  enableNotifications: /** @type {HTMLButtonElement} */ ($("enable-notifications")),
  connectionBanner: $("connection-banner"),
  connectionReason: $("connection-reason"),
  retryCountdown: $("retry-countdown"),
  retryNow: /** @type {HTMLButtonElement} */ ($("retry-now")),
  insecureWarning: $("insecure-warning"),
  insecureHost: $("insecure-host"),
  mute: /** @type {HTMLButtonElement} */ ($("mute")),
  hangup: /** @type {HTMLButtonElement} */ ($("hangup")),
  message: $("message"),
  online: $("online"),
  onlineEmpty: $("online-empty"),
  onlineOffline: $("online-offline"),
  demoLinks: $("demo-links"),
  remoteAudio: /** @type {HTMLAudioElement} */ ($("remote-audio")),
  historyCard: $("history-card"),
  history: $("history"),
  historyEmpty: $("history-empty"),
  historyMore: /** @type {HTMLButtonElement} */ ($("history-more")),
  missedCount: $("missed-count"),
  testAudio: /** @type {HTMLButtonElement} */ ($("test-audio")),
  testAudioHint: $("test-audio-hint"),
  audioCheck: $("audio-check"),
  audioCheckSummary: $("audio-check-summary"),
  audioCheckProgress: /** @type {HTMLProgressElement} */ ($("audio-check-progress")),
  audioCheckResults: $("audio-check-results"),
  audioCheckNote: $("audio-check-note"),
  audioCheckMic: $("audio-check-mic"),
  audioCheckHeard: $("audio-check-heard"),
  audioCheckRtt: $("audio-check-rtt"),
  audioCheckJitter: $("audio-check-jitter"),
  audioCheckLoss: $("audio-check-loss"),
  audioCheckMos: $("audio-check-mos"),
  audioCheckPath: $("audio-check-path"),
};

const TOKEN_HINT = el.tokenHint?.textContent ?? "";

const baseTitle = document.title;
let durationTimer = 0;
let countdownTimer = 0;
let wasRinging = false;
let wasActive = false;
/** @type {View|null} the last view rendered (the filter and the clock re-render parts of it) */
let lastView = null;

/**
 * @typedef {object} CallView
 * @property {CallPhase} phase this side's view of the call
 * @property {string} peerId
 * @property {"outgoing"|"incoming"} direction
 * @property {string|null} [reason] why it ended
 * @property {string|null} [remoteReason] the reason the peer gave
 * @property {string|null} [detail] what the server said, when it refused the call
 * @property {CallPhase} [previous] the phase before it ended
 * @property {boolean} [muted]
 * @property {boolean} [camera] our camera is on
 * @property {boolean} [screen] we share a screen
 * @property {boolean} [remoteVideo] frames of their video arrive
 * @property {boolean} [canShareScreen] this browser can share a screen
 * @property {{local: string, remote: string, protocol: string}|null} [path]
 * @property {number} [connectedAt] Date.now() when it connected
 * @property {string|null} [outcome] the server's `call-ended` outcome
 * @property {string|null} [endReason] the server's `call-ended` reason
 * @property {string|null} [failure] why the audio could not connect, as a sentence
 * @property {string|null} [mediaFailure] why the microphone could not be opened, in a few words (the call failed)
 * @property {Readonly<{muted: boolean, camera: boolean, screen: boolean}>|null} [peerMedia] what the peer said of
 *   its media (`media-state`), or null until it says anything
 * @property {import("./quality.js").QualitySample|null} [quality] the latest quality reading
 * @property {string|null} [peerNote] a sentence about the other side ("… is muted", "… connection dropped")
 * @property {import("./quality.js").CallSummary|null} [summary] once a call that connected has ended
 * @property {number|null} [duration] seconds the call lasted as the server counted it (answered to ended: its
 *   history record), once the history has it; the summary and the history show this one
 * @property {boolean} [mediaReconnecting] the audio connection is interrupted and being restored
 */

/**
 * One call of the history, as `/api/calls` and `missed-calls` give it.
 * @typedef {object} CallRecord
 * @property {string} callId
 * @property {string} caller
 * @property {string} callee
 * @property {number} ringingAt unix time, seconds
 * @property {number|null} answeredAt
 * @property {number} endedAt
 * @property {string} outcome
 * @property {string} reason
 * @property {number|null} duration seconds
 * @property {string} [screened] "silenced": the callee's ring setting kept it from ringing (the callee's record)
 */

/**
 * @typedef {object} HistoryView
 * @property {string|null} me our id (whose history it is)
 * @property {CallRecord[]} calls newest first
 * @property {boolean} more whether older calls can be loaded
 * @property {string|null} error why the history could not be loaded
 * @property {number} missed missed calls not yet seen
 */

/**
 * The "Test my audio" button and the result of the last test (see audiocheck.js).
 * @typedef {object} AudioCheckView
 * @property {string|null} blocker why a test cannot start now (a sentence), or null
 * @property {{state: string, progress: number, secondsLeft: number|null, durationMs: number,
 *   result: import("./audiocheck.js").AudioCheckResult|null}|null} check the test going on, or the last one
 * @property {string|null} failure why the last test measured nothing, as a sentence
 */

/**
 * @typedef {object} View
 * @property {{state: string, reason?: string|null, retryAt?: number|null, offline?: "device"|"server"|null}} server
 *   `retryAt`: Date.now() of the next reconnect attempt (state "reconnecting"); `offline`: what keeps the page
 *   from the server when it knows (offline.js)
 * @property {string[]} online
 * @property {import("./signaling.js").Person[]} [people] everyone else we know of (online first)
 * @property {string|null} [me] our id while connected
 * @property {string|null} [ownId] our id while connected or reconnecting
 * @property {CallView|null} call the current or last call
 * @property {boolean} [elsewhere] a call of ours goes on on another device (and none here)
 * @property {HistoryView} [history]
 * @property {AudioCheckView} [audioCheck]
 * @property {MediaDevicesView} [mediaDevices]
 * @property {"default"|"granted"|"denied"|"unsupported"} [notifications] the Notification permission
 * @property {import("./contacts.js").ContactsView} [contacts] the contacts, the ring setting, the directory
 */

/**
 * The microphones, speakers and cameras to choose from, and the ones chosen.
 * @typedef {object} MediaDevicesView
 * @property {import("./media.js").MediaDeviceOption[]} [cameras]
 * @property {string} [camera] the chosen camera's id ("" for the default)
 * @property {import("./media.js").MediaDeviceOption[]} microphones
 * @property {import("./media.js").MediaDeviceOption[]} speakers
 * @property {string} microphone the chosen microphone's id ("" for the default)
 * @property {string} speaker the chosen speaker's id
 * @property {boolean} canChooseSpeaker
 */

/**
 * The text of #call-status for a call (or for no call).
 * @param {CallView|null} call
 * @returns {string}
 */
export function callStatusText(call) {
  if (!call) return "No Call";
  switch (call.phase) {
    // The call states of the original spec (No Call → Requesting → Calling → Connected → Call Ended): the two-tab
    // demo's walk-through (README) and those who learnt it read these words.
    case CallPhase.REQUESTING:
      return "Requesting";
    case CallPhase.INCOMING:
      return "Incoming call";
    case CallPhase.CALLING:
      return "Calling";
    case CallPhase.CONNECTED:
      return "Connected";
    default:
      return endedStatusText(call);
  }
}

/** `#call-status` for an ended call, by the server's outcome when there is one (`call-ended` is the truth). */
const OUTCOME_STATUS = Object.freeze({
  answered: "Call Ended",
  rejected: "Rejected",
  missed: "Missed",
  busy: "Busy",
  cancelled: "Cancelled",
  unavailable: "Unavailable",
  failed: "Failed",
});

/** `#call-status` for an ended call without a server outcome (a plain forwarding server, or not there yet). */
const LOCAL_STATUS = Object.freeze({
  busy: "Busy",
  rejected: "Rejected",
  unavailable: "Unavailable",
  failed: "Failed",
  "no-relay": "Failed",
  "no-microphone": "Failed",
  "peer-offline": "Call lost",
  "signaling-lost": "Call lost",
  "answered-elsewhere": "Answered elsewhere",
});

/**
 * @param {CallView} call an ended call
 * @returns {string}
 */
function endedStatusText(call) {
  const { reason, outcome, endReason } = call;
  if (reason === "failed" || reason === "no-relay" || reason === "no-microphone") return "Failed";
  if (reason === "hangup" || reason === "declined") return "Call Ended"; // this side ended it
  if (endReason === "peer-lost" || reason === "peer-offline" || reason === "signaling-lost") return "Call lost";
  if (endReason === "answered-elsewhere") return "Answered elsewhere";
  // A call that rang here and that we declined on another device (ours is the only "reject" of a callee).
  if (reason === "rejected" && call.direction === "incoming") return "Declined elsewhere";
  // A call the caller gave up on before we answered is one we missed, as Recent calls lists it.
  if (outcome === "cancelled" && call.direction === "incoming") return "Missed";
  // A call of ours nobody answered: "Missed" would read as a call we missed.
  if (outcome === "missed" && call.direction === "outgoing") return "No answer";
  if (outcome && OUTCOME_STATUS[outcome]) return OUTCOME_STATUS[outcome];
  if (reason === "remote-hangup" && call.previous === CallPhase.INCOMING) return "Missed";
  if (reason === "no-answer") return call.direction === "incoming" ? "Missed" : "No answer";
  return LOCAL_STATUS[reason] ?? "Call Ended";
}

/** A failure reason in a few words, for the line under "Failed". */
const FAILURE_WORDS = Object.freeze({
  "ice-timeout": "no audio path was found in time",
  "ice-failed": "the audio connection failed",
  "user-media-failed": "a microphone could not be opened",
  "unknown-error": "an unexpected error",
});

/**
 * The few words under "Failed" that say why, or "".
 * @param {CallView} call
 * @returns {string}
 */
export function failedWords(call) {
  if (call.reason === "no-relay") return "no relay server for a relay-only call";
  if (call.reason === "no-microphone") return call.mediaFailure ?? "the microphone could not be opened";
  if (call.failure?.includes("refused us")) return "the relay server refused us";
  return FAILURE_WORDS[call.endReason ?? call.remoteReason ?? ""] ?? "the audio could not be connected";
}

/**
 * A sentence that says why a call ended.
 * @param {CallView} call
 * @returns {string}
 */
export function endedText(call) {
  const who = label(call.peerId);
  const ringing = call.previous === CallPhase.REQUESTING || call.previous === CallPhase.INCOMING;
  switch (call.reason) {
    case "hangup":
      return ringing ? `You cancelled the call to ${who}.` : `You hung up.`;
    case "remote-hangup":
      return call.previous === CallPhase.INCOMING || call.outcome === "cancelled"
        ? `${who} hung up before you answered.`
        : `${who} hung up.`;
    case "rejected":
      if (call.direction === "incoming") return `You declined the call from ${who} on another device.`;
      return call.remoteReason === "user-media-failed" || call.remoteReason === "no-microphone"
        ? `${who} could not open their microphone.`
        : call.remoteReason === "ice-failed"
          ? `${who} could not take the call: their side could not set up the audio.`
          : `${who} rejected the call.`;
    case "busy":
      return `${who} is busy in another call.`;
    case "declined":
      return `You rejected the call from ${who}.`;
    case "unavailable":
      return `${who} is not online.`;
    case "peer-offline":
      return ringing ? `${who} went offline.` : `${who} went offline: the call was lost.`;
    case "no-answer":
      return call.direction === "incoming" ? `Missed call from ${who}.` : `${who} did not answer.`;
    case "failed":
      if (call.failure) return call.failure;
      switch (call.endReason ?? call.remoteReason) {
        case "ice-timeout":
          return `Could not connect the audio with ${who}: no network path between you was found in time.`;
        case "ice-failed":
          return `The audio connection with ${who} failed.`;
        case "user-media-failed": // said by the peer: this side's own microphone failure ends as "no-microphone"
          return `${who} could not open their microphone.`;
        default:
          return `The audio connection with ${who} could not be established or was lost.`;
      }
    case "no-relay":
      return call.detail ?? "A relay-only call needs a relay (TURN) server, and there is none.";
    case "signaling-lost":
      return `The call with ${who} ended because the connection to the server was lost.`;
    case "answered-elsewhere":
      return `The call from ${who} was answered on another device.`;
    case "refused":
      return call.detail ? `The call with ${who} ended: ${call.detail}` : `The call with ${who} ended.`;
    default:
      return "";
  }
}

/**
 * Why an audio check measured nothing, as a sentence.
 * @param {CallView} call the check's call
 * @returns {string}
 */
export function audioCheckFailure(call) {
  if (call.phase !== CallPhase.ENDED) return "The audio check stopped.";
  switch (call.reason) {
    case "no-microphone":
      return "Your microphone could not be opened, so there was nothing to test.";
    case "hangup":
      return "You ended the test call before it could measure anything.";
    case "busy":
      return "The echo service is busy testing someone else's audio: try again in a minute.";
    case "unavailable":
      return "The echo service has just gone offline.";
    default:
      return endedText(call) || "The test call ended before it could measure anything.";
  }
}

/**
 * Connect the page's controls to the app.
 * @param {object} handlers
 * @param {(id: string) => void} handlers.connect
 * @param {() => void} handlers.disconnect
 * @param {(peerId: string) => void} handlers.call
 * @param {() => void} handlers.accept
 * @param {() => void} handlers.reject
 * @param {() => void} handlers.hangup
 * @param {() => void} handlers.toggleMute
 * @param {(peerId: string) => void} handlers.videoCall call with the camera on
 * @param {() => void} handlers.acceptVideo answer with the camera on
 * @param {() => void} handlers.toggleCamera
 * @param {() => void} handlers.toggleScreen share a screen, or stop
 * @param {(cameraId: string) => void} handlers.chooseCamera a `MediaDeviceInfo.deviceId` ("" for the default)
 * @param {(token: string) => void} handlers.tokenChanged the token field changed
 * @param {(relayOnly: boolean) => void} handlers.relayOnlyChanged
 * @param {(peerId: string) => void} handlers.callBack a history entry was clicked
 * @param {() => void} handlers.historySeen the user looked at the history (focus or click in it)
 * @param {() => void} handlers.moreHistory
 * @param {() => void} handlers.testAudio the user asked for an audio check
 * @param {() => void} handlers.escape Escape was pressed (decline a ringing call, hang up a call)
 * @param {(microphoneId: string) => void} handlers.chooseMicrophone a `MediaDeviceInfo.deviceId`
 * @param {(speakerId: string) => void} handlers.chooseSpeaker a `MediaDeviceInfo.deviceId`
 * @param {() => void} handlers.enableNotifications
 * @param {() => void} handlers.retryNow
 */
export function bind(handlers) {
  el.identityForm.addEventListener("submit", (event) => {
    event.preventDefault();
    handlers.connect(el.myId.value.trim());
  });
  el.myId.addEventListener("input", () => {
    setInvalid(el.myId, false);
    el.myIdError.hidden = true;
  });
  el.disconnect.addEventListener("click", () => handlers.disconnect());
  el.callForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!el.call.disabled && !saidInCall(el.call)) handlers.call(el.peerId.value.trim());
  });
  el.videoCall.addEventListener("click", () => {
    if (!el.videoCall.disabled && !saidInCall(el.videoCall)) handlers.videoCall(el.peerId.value.trim());
  });
  el.acceptVideo.addEventListener("click", () => handlers.acceptVideo());
  el.camera.addEventListener("click", () => handlers.toggleCamera());
  el.screenShare.addEventListener("click", () => handlers.toggleScreen());
  el.cameraSelect.addEventListener("change", () => handlers.chooseCamera(el.cameraSelect.value));
  el.fullscreen.addEventListener("click", () => toggleFullscreen());
  el.remoteVideo.addEventListener("resize", () => {
    // The stage takes the shape of what arrives (a face in portrait, a wide screen share), not a fixed one.
    const { videoWidth: w, videoHeight: h } = el.remoteVideo;
    if (w > 0 && h > 0) el.videoStage.style.setProperty("--video-aspect", `${w} / ${h}`);
  });
  document.addEventListener("fullscreenchange", () => {
    el.fullscreen.setAttribute("aria-pressed", String(document.fullscreenElement === el.videoStage));
  });
  el.peerId.addEventListener("input", () => {
    setInvalid(el.peerId, false);
    if (lastView) renderCallButtons(lastView);
  });
  for (const list of [el.online, el.offlinePeople]) {
    list.addEventListener("click", (event) => {
      const button = /** @type {HTMLButtonElement|null} */ (
        /** @type {HTMLElement} */ (event.target).closest("button[data-peer]")
      );
      if (button && !button.disabled && !saidInCall(button)) {
        el.peerId.value = button.dataset.peer;
        handlers.call(button.dataset.peer);
      }
    });
  }
  el.contactFilter.addEventListener("input", () => {
    if (lastView) renderPeople(lastView);
  });
  el.contactFilter.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      // Enter calls the first person the filter shows (the hint says who).
      event.preventDefault();
      const first = firstMatch();
      if (first && !first.disabled && !saidInCall(first)) {
        el.peerId.value = first.dataset.peer;
        handlers.call(first.dataset.peer);
      }
    } else if (event.key === "ArrowDown") {
      const first = firstMatch();
      if (first) {
        event.preventDefault();
        first.focus();
      }
    }
  });
  for (const list of [el.online, el.offlinePeople]) {
    list.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      const buttons = visiblePeopleButtons();
      const index = buttons.indexOf(/** @type {HTMLButtonElement} */ (document.activeElement));
      if (index < 0) return;
      event.preventDefault();
      const next = index + (event.key === "ArrowDown" ? 1 : -1);
      if (next < 0) el.contactFilter.focus();
      else buttons[Math.min(next, buttons.length - 1)].focus();
    });
  }
  document.addEventListener("input", (event) => {
    if (typesText(/** @type {Element} */ (event.target))) lastTyped = Date.now();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    const target = /** @type {HTMLElement} */ (event.target);
    if (!el.qualityDetails.hidden) {
      toggleQuality(false);
      return;
    }
    if (target === el.contactFilter) {
      if (el.contactFilter.value) return; // clears the search field (an empty one: Escape is the call's)
    } else if (target instanceof HTMLSelectElement || typesText(target)) {
      return; // the field's (an id, a password being typed): it never ends a call
    }
    handlers.escape();
  });
  el.quality.addEventListener("click", () => toggleQuality(el.qualityDetails.hidden));
  el.micSelect.addEventListener("change", () => handlers.chooseMicrophone(el.micSelect.value));
  el.speakerSelect.addEventListener("change", () => handlers.chooseSpeaker(el.speakerSelect.value));
  el.enableNotifications.addEventListener("click", () => handlers.enableNotifications());
  el.retryNow.addEventListener("click", () => handlers.retryNow());
  el.accept.addEventListener("click", () => handlers.accept());
  el.reject.addEventListener("click", () => handlers.reject());
  el.hangup.addEventListener("click", () => handlers.hangup());
  el.mute.addEventListener("click", () => handlers.toggleMute());
  el.token.addEventListener("input", () => {
    setInvalid(el.token, false);
    handlers.tokenChanged(el.token.value.trim());
  });
  el.relayOnly.addEventListener("change", () => {
    if (cannotRelay) el.relayOnly.disabled = !el.relayOnly.checked;
    handlers.relayOnlyChanged(el.relayOnly.checked);
  });
  el.history.addEventListener("click", (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("button[data-peer]");
    if (button && !(/** @type {HTMLButtonElement} */ (button).disabled)) handlers.callBack(button.dataset.peer);
  });
  el.historyCard.addEventListener("focusin", () => handlers.historySeen());
  el.historyCard.addEventListener("pointerdown", () => handlers.historySeen());
  el.historyMore.addEventListener("click", () => handlers.moreHistory());
  el.testAudio.addEventListener("click", () => {
    if (!el.testAudio.disabled) handlers.testAudio();
  });
}

/**
 * Preset the inputs (the demo pages' data-id / data-peer, or ?id= / ?peer=; the token from the URL).
 * @param {{id?: string|null, peer?: string|null, token?: string|null, relayOnly?: boolean}} values
 */
export function preset({ id, peer, token, relayOnly }) {
  if (id) el.myId.value = id;
  if (peer) el.peerId.value = peer;
  if (token) el.token.value = token;
  if (relayOnly !== undefined) el.relayOnly.checked = relayOnly;
}

/** The token in the token field ("" if none). */
export function tokenValue() {
  return el.token.value.trim();
}

/** Whether the user wants relayed audio only (#relay-only). */
export function relayOnly() {
  return el.relayOnly.checked;
}

/**
 * The server said how it authenticates: the two-tab demo (two made-up names) is offered in open mode only.
 * @param {string} authMode "open", "token" or "accounts"
 */
export function serverMode(authMode) {
  el.demoLinks.hidden = authMode !== "open";
  // Where people sign in they know each other by name (a contact's is looked up) or by user id.
  if (authMode === "accounts") el.peerId.placeholder = "a contact's name, or a user id";
}

/** The server relays every call: the "Hide my IP address" box is ticked and cannot be unticked. */
export function serverRelaysAll() {
  el.relayOnly.checked = true;
  el.relayOnly.disabled = true;
  el.relayOnly.closest("label")?.setAttribute("title", "This server relays every call through its TURN server.");
}

/** Set by `serverCannotRelay`: "Hide my IP address", once unticked, cannot be ticked again here. */
let cannotRelay = false;

/**
 * The server has no relay (TURN) server: "Hide my IP address" cannot be had here, and the hint under the box says
 * so before a call fails on it. A box ticked earlier (remembered) stays ticked, and its calls fail saying why:
 * it is not quietly dropped for calls that would show the address it asked to hide.
 */
export function serverCannotRelay() {
  el.relayHint.textContent =
    "This server has no relay (TURN) server: calls connect directly, and the other side can see your IP address.";
  el.relayHint.hidden = false;
  cannotRelay = true;
  el.relayOnly.disabled = !el.relayOnly.checked;
}

/**
 * A token decides who we are: show its user in the name field, which cannot be edited meanwhile.
 * @param {string|null} sub the token's user, or null (no token: the name is typed)
 */
export function nameFromToken(sub) {
  el.myId.readOnly = Boolean(sub);
  if (sub) {
    el.myId.value = sub;
    setInvalid(el.myId, false);
  }
}

/**
 * The server wants a token (token mode): open the Advanced box and say so next to the field.
 * @param {boolean} haveToken
 */
export function tokenRequired(haveToken) {
  el.advanced.open = true;
  el.tokenHint.textContent = haveToken
    ? "This server requires a token; yours is filled in."
    : "This server requires a token: paste the one you were given, then connect.";
}

/**
 * Mark the token field as refused and explain why.
 * @param {string} problem a sentence
 */
export function rejectToken(problem) {
  el.advanced.open = true;
  el.token.disabled = false; // only called while disconnected
  setInvalid(el.token, true);
  el.tokenHint.textContent = TOKEN_HINT;
  say(problem, "error");
  el.token.focus();
}

/**
 * Show a message to the user (replaces the previous one). Empty text clears it.
 * @param {string} text
 * @param {"info"|"error"|"warning"} [kind]
 */
export function say(text, kind = "info") {
  el.message.textContent = text;
  el.message.dataset.kind = kind;
  el.message.hidden = !text;
  // On a small screen the message may be out of sight (e.g. the call was started from People): bring it in.
  if (text && kind !== "info") el.message.scrollIntoView?.({ block: "nearest" });
}

/**
 * Show an information that matters less than a warning or an error on screen: shown only if neither is.
 * (A call that failed while the server was away keeps saying why when the server is back.)
 * @param {string} text
 */
export function note(text) {
  if (el.message.hidden || el.message.dataset.kind === "info") say(text);
}

/**
 * Mark the name field as invalid and explain why (the id is checked before any connection attempt).
 * @param {string} problem
 */
export function rejectId(problem) {
  setInvalid(el.myId, true);
  // Under the field, not in the call card's message: on a phone that is a screen away from what to mend.
  el.myIdError.textContent = problem;
  el.myIdError.hidden = false;
  el.myId.focus();
}

/**
 * Mark the "who to call" field as invalid and explain why.
 * @param {string} problem
 */
export function rejectPeer(problem) {
  setInvalid(el.peerId, true);
  say(problem, "error");
  el.peerId.focus();
}

/**
 * Play the peer's audio.
 * @param {MediaStream|null} stream
 */
export async function playRemote(stream) {
  const audio = el.remoteAudio;
  if (audio.srcObject === stream) return;
  audio.srcObject = stream;
  if (!stream) return;
  try {
    await audio.play();
  } catch (err) {
    if (err?.name !== "NotAllowedError") return;
    say("Your browser blocked the call audio. Click anywhere on the page to hear it.", "warning");
    document.addEventListener(
      "click",
      async () => {
        try {
          await audio.play();
          say("");
        } catch (retryErr) {
          console.warn("[ui] still cannot play the call audio:", retryErr);
        }
      },
      { once: true },
    );
  }
}

/**
 * Show the other side's video (null: none). The `<video>` is muted: the call's sound plays in #remote-audio.
 * @param {MediaStreamTrack|null} track
 */
export function showRemoteVideo(track) {
  const video = el.remoteVideo;
  const current = /** @type {MediaStream|null} */ (video.srcObject)?.getVideoTracks()[0] ?? null;
  if (current === track) return;
  video.srcObject = track ? new MediaStream([track]) : null;
  el.videoStage.style.removeProperty("--video-aspect");
  if (track) video.play().catch((err) => console.debug("[ui] the remote video does not play yet:", err));
}

/**
 * Preview what we send: the camera mirrored (as in a mirror), a screen share as it is.
 * @param {MediaStream|null} stream
 * @param {"camera"|"screen"|null} source
 */
export function showLocalVideo(stream, source) {
  const video = el.localVideo;
  el.videoStage.dataset.source = source ?? "none";
  if (video.srcObject === stream) return;
  video.srcObject = stream;
  if (stream) video.play().catch((err) => console.debug("[ui] the preview does not play yet:", err));
}

/** Full screen for the video (the stage: both videos and the button), or back. */
async function toggleFullscreen() {
  try {
    if (document.fullscreenElement) await document.exitFullscreen();
    else await el.videoStage.requestFullscreen();
  } catch (err) {
    say(`Full screen is not available here: ${err?.message ?? err}`, "warning");
  }
}

/**
 * The video of a call: shown while either side sends video; the other side large, ours small.
 * @param {CallView|null} call
 */
function renderVideo(call) {
  const inMedia = call?.phase === CallPhase.CALLING || call?.phase === CallPhase.CONNECTED;
  const local = Boolean(inMedia && (call.camera || call.screen));
  // The peer's word (media-state) hides their video at once; the negotiation (remoteVideo) says when it flows.
  const said = call?.peerMedia;
  const remote = Boolean(inMedia && call.remoteVideo && (!said || said.camera || said.screen));
  el.videoStage.dataset.remoteSource = remote && said?.screen ? "screen" : remote ? "camera" : "none";
  el.videoStage.hidden = !local && !remote;
  el.videoStage.dataset.local = local ? "on" : "off";
  el.videoStage.dataset.remote = remote ? "on" : "off";
  el.localVideo.hidden = !local;
  const who = call ? label(call.peerId) : "";
  el.remoteVideo.setAttribute("aria-label", `${who}'s video`);
  setText(el.remoteVideoOff, inMedia && !remote && local ? `${who}'s camera is off` : "");
  // Full screen is for the other side's picture: not offered for our own preview alone.
  el.fullscreen.hidden = !remote;
  if (!remote && document.fullscreenElement === el.videoStage) document.exitFullscreen().catch(() => {});
}

/**
 * Whether `node` is a field the user types text into (their keys are theirs there: Enter, Escape).
 * @param {Element|null} node
 */
function typesText(node) {
  if (node instanceof HTMLTextAreaElement || (node instanceof HTMLElement && node.isContentEditable)) return true;
  return node instanceof HTMLInputElement && !NOT_TYPED.has(node.type);
}

/** The `<input>` types that take no typing. */
const NOT_TYPED = new Set(["button", "checkbox", "radio", "submit", "reset", "range", "color", "file", "image"]);

/** How long after the last key typed into the focused field the user counts as typing there (ms). */
const TYPING_MS = 5000;

/** Date.now() of the last input into a text field. */
let lastTyped = 0;

/** Whether the user is typing in the focused field: it takes text, and they typed into one lately. */
function typingNow() {
  return typesText(document.activeElement) && Date.now() - lastTyped < TYPING_MS;
}

/** Put the keyboard focus on Accept (a call rings). */
export function focusAccept() {
  if (!el.accept.disabled) el.accept.focus();
}

/**
 * Play the call on this speaker.
 * @param {string} speakerId its `MediaDeviceInfo.deviceId`; "" for the system default
 * @returns {Promise<string|null>} a sentence if it could not be done
 */
export async function setSpeaker(speakerId) {
  const audio = el.remoteAudio;
  if (typeof audio.setSinkId !== "function") return "This browser always plays calls on its default speaker.";
  try {
    if (audio.sinkId !== speakerId) await audio.setSinkId(speakerId);
    return null;
  } catch (err) {
    console.warn("[ui] cannot play on that speaker:", err);
    return `The call cannot play on that speaker (${err?.message ?? err}); it plays on the default one.`;
  }
}

/**
 * Bring the page in line with the app state.
 * @param {View} view
 */
export function render(view) {
  lastView = view;
  const { server, call, history, audioCheck } = view;
  const connected = server.state === "connected";
  const offline = server.state === "disconnected";
  const active = Boolean(call && call.phase !== CallPhase.ENDED);

  el.serverStatus.textContent = {
    connected: "Connected",
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    disconnected: "Disconnected",
  }[server.state];
  el.serverStatus.dataset.state = server.state;
  el.myId.disabled = !offline;
  el.token.disabled = !offline; // the token is the one we are connected with
  // Only the button that does something now is shown (a greyed-out twin took a whole row on a phone); the focus
  // goes from the one that leaves to the one that comes.
  const handOver = document.activeElement === (offline ? el.disconnect : el.connect);
  el.connect.disabled = !offline;
  el.connect.hidden = !offline;
  el.disconnect.disabled = offline;
  el.disconnect.hidden = offline;
  if (handOver) (offline ? el.connect : el.disconnect).focus({ preventScroll: true });
  el.myIdHint.hidden = !offline;
  if (!offline) el.myIdError.hidden = true;

  renderCallButtons(view);
  renderMe(view);
  renderPeople(view);
  renderConnection(server, active);
  renderNotifications(view.notifications ?? "unsupported", connected);

  const ringing = call?.phase === CallPhase.INCOMING;
  el.incoming.hidden = !ringing;
  el.incomingFrom.textContent = ringing ? label(call.peerId) : "";
  el.incomingFrom.title = ringing && label(call.peerId) !== call.peerId ? handle(call.peerId) : "";
  el.accept.disabled = !ringing;
  el.acceptVideo.disabled = !ringing;
  el.reject.disabled = !ringing;
  // "ended": the last call's outcome is shown (on a phone the call card stays on top, where the user looks).
  const callShown = ringing ? "ringing" : active ? "active" : call ? "ended" : "idle";
  const callMoved = document.body.dataset.call !== callShown;
  document.body.dataset.call = callShown;
  document.body.dataset.ringing = String(ringing);
  document.body.dataset.server = server.state;

  el.callStatus.textContent = callStatusText(call);
  el.callStatus.dataset.state = call ? (call.phase === CallPhase.ENDED ? endedState(call) : call.phase) : "idle";
  el.callPeer.textContent = !call
    ? ""
    : ringing
      ? `from ${label(call.peerId)}`
      : `${active ? "with" : "last call:"} ${label(call.peerId)}`;
  el.callPeer.title = call && label(call.peerId) !== call.peerId ? handle(call.peerId) : "";
  el.hangup.disabled = !active || ringing;
  el.hangup.textContent = call?.phase === CallPhase.REQUESTING ? "Cancel" : "Hang Up";
  const inMedia = call?.phase === CallPhase.CALLING || call?.phase === CallPhase.CONNECTED;
  el.mute.disabled = !inMedia;
  el.mute.setAttribute("aria-pressed", String(Boolean(inMedia && call.muted)));
  el.mute.textContent = inMedia && call.muted ? "Unmute" : "Mute";
  const canVideo = active && !ringing;
  el.camera.disabled = !canVideo;
  el.camera.setAttribute("aria-pressed", String(Boolean(canVideo && call.camera)));
  el.screenShare.disabled = !canVideo || !call.canShareScreen;
  el.screenShare.hidden = Boolean(call && !call.canShareScreen);
  el.screenShare.setAttribute("aria-pressed", String(Boolean(canVideo && call.screen)));
  renderVideo(call);
  renderDetail(call);
  renderInCall(call);
  renderSummary(call);
  if (view.mediaDevices) renderMediaDevices(view.mediaDevices);
  if (history) renderHistory(history, connected && !active);
  if (audioCheck) renderAudioCheck(audioCheck);

  const missed = history?.missed ?? 0;
  document.title = ringing
    ? `Incoming call from ${label(call.peerId)} – ${baseTitle}`
    : missed
      ? `(${missed}) ${baseTitle}`
      : baseTitle;

  // A call rings: Enter answers it. Not while the user types in a field: the rest of what they type (and their
  // Enter) is theirs; the ringing panel and the title say that a call rings, and Tab reaches Accept.
  if (ringing && !wasRinging && !typingNow()) el.accept.focus();
  if (!ringing && wasRinging && call?.phase === CallPhase.CALLING && !el.mute.disabled) el.mute.focus();
  // A call rings, starts or ends: the call card is where the user looks. On a phone it just moved to the top of
  // the page (the stylesheet), but the page stays scrolled where the user tapped (a Call button further down).
  if (callMoved && callShown !== "idle") el.callCard.scrollIntoView({ block: "nearest" });
  // The call ended (hung up, rejected, over): the button that had the focus is gone or disabled, which would drop
  // the focus to the top of the page. It goes to the call card's heading instead: Tab then leads to "Who to call".
  if (wasActive && !active && focusLost()) el.callTitle.focus({ preventScroll: true });
  wasRinging = ringing;
  wasActive = active;
}

/** Whether the keyboard focus is nowhere (on the body), or on a control that is now disabled or hidden. */
function focusLost() {
  const focused = /** @type {HTMLElement|null} */ (document.activeElement);
  if (!focused || focused === document.body) return true;
  // No boxes: it is hidden (display: none, here or in an ancestor), or gone from the page.
  return ("disabled" in focused && Boolean(focused.disabled)) || focused.getClientRects().length === 0;
}

/**
 * `data-state` of #call-status for an ended call (the stylesheet colours it).
 * @param {CallView} call
 */
function endedState(call) {
  const text = callStatusText(call);
  return (
    {
      Failed: "failed",
      "Call lost": "lost",
      Missed: "missed",
      "No answer": "no-answer",
      Busy: "busy",
      Rejected: "rejected",
      Unavailable: "unavailable",
      Cancelled: "cancelled",
      "Answered elsewhere": "answered-elsewhere",
    }[text] ??
    call.reason ??
    "ended"
  );
}

/**
 * "m:ss" (or "h:mm:ss") for a number of seconds.
 * @param {number} seconds
 */
export function clockText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * The line under the call status: how the audio goes (#path) and whether we are muted; or why a call failed.
 * The call timer (#call-timer) ticks beside the status.
 * @param {CallView|null} call
 */
function renderDetail(call) {
  clearInterval(durationTimer);
  const connected = call?.phase === CallPhase.CONNECTED;
  el.timerBox.hidden = !connected;
  if (call?.phase === CallPhase.ENDED && callStatusText(call) === "Failed") {
    setPath(null);
    setText(el.callDetailText, failedWords(call));
    return;
  }
  if (!connected) {
    setPath(null);
    setText(el.callDetailText, "");
    return;
  }
  setPath(call.path ?? null);
  setText(el.callDetailText, call.muted ? `${call.path ? " · " : ""}you are muted` : "");
  const update = () => {
    const seconds = Math.max(0, Math.floor((Date.now() - (call.connectedAt || Date.now())) / 1000));
    setText(el.callTimer, clockText(seconds));
    el.callTimer.dataset.seconds = String(seconds);
  };
  update();
  durationTimer = setInterval(update, 1000);
}

/** @param {{local: string, remote: string, protocol: string}|null} path */
function setPath(path) {
  el.path.hidden = !path;
  if (!path) {
    setText(el.path, "");
    delete el.path.dataset.path;
    el.path.removeAttribute("title");
    return;
  }
  const relayed = path.local === "relay" || path.remote === "relay";
  el.path.dataset.path = relayed ? "relayed" : "direct";
  setText(el.path, relayed ? "Audio relayed through a TURN server" : "Direct connection (peer to peer)");
  el.path.title = relayed
    ? "Your audio goes through the server's relay (TURN): a little slower, and it hides your address."
    : "Your audio goes straight between the two of you " +
      `(${path.local} ↔ ${path.remote}, ${path.protocol.toUpperCase()}).`;
}

/**
 * The panel of a call that has media: level meters, what the other side is doing, the quality.
 * @param {CallView|null} call
 */
function renderInCall(call) {
  const inMedia = call?.phase === CallPhase.CALLING || call?.phase === CallPhase.CONNECTED;
  el.inCall.hidden = !inMedia;
  el.inCall.dataset.state = call?.phase ?? "idle";
  if (!inMedia) {
    setLevels(0, 0);
    toggleQuality(false);
    setText(el.peerNote, "");
    for (const key of ["peerMuted", "peerCamera", "peerScreen"]) delete el.inCall.dataset[key];
    return;
  }
  const who = label(call.peerId);
  setText(el.remoteLevelLabel, who);
  el.remoteLevel.setAttribute("aria-label", `${who}'s voice level`);
  el.micLevel.dataset.muted = String(Boolean(call.muted));
  // What the peer said of its media (for styles and tests): "true"/"false", or "" until it says anything.
  for (const key of /** @type {const} */ (["muted", "camera", "screen"])) {
    el.inCall.dataset[`peer${key[0].toUpperCase()}${key.slice(1)}`] = call.peerMedia ? String(call.peerMedia[key]) : "";
  }
  const note = call.mediaReconnecting ? "Reconnecting audio…" : call.peerNote ?? "";
  setText(el.peerNote, note);
  el.peerNote.hidden = !note;
  renderQuality(call.quality ?? null);
}

/** Words for the three quality levels. */
/**
 * A MOS in words, capitalised: the same word everywhere one MOS is shown (the call, its summary, the history, the
 * audio check: quality.js `mosWord`); the good/fair/poor level only colours it.
 * @param {number} mos
 */
function mosWords(mos) {
  const word = mosWord(mos);
  return `${word[0].toUpperCase()}${word.slice(1)}`;
}

/**
 * "12 ms", "0.4 ms", "—".
 * @param {number|null|undefined} value
 * @param {string} unit
 * @param {number} [digits]
 */
function num(value, unit, digits = 0) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return `${value < 10 && digits === 0 ? value.toFixed(1) : value.toFixed(digits)} ${unit}`;
}

/**
 * The quality indicator (#quality: good/fair/poor, the numbers in its data- attributes and, on demand, in
 * #quality-details).
 * @param {import("./quality.js").QualitySample|null} q
 */
function renderQuality(q) {
  const b = el.quality;
  const keys = ["mos", "rttMs", "jitterMs", "lossPct", "bitrateKbps", "level", "path"];
  keys.push("videoWidth", "videoHeight", "videoFps", "videoBitrateKbps"); // the video from them, while it comes
  if (!q || !q.level) {
    for (const key of keys) setData(b, key, null);
    setText(b, "Measuring the call quality…");
    setText(el.qualityAnnounce, "");
    b.removeAttribute("title");
    return;
  }
  // Screen readers hear when the quality changes (not every second's numbers).
  const before = b.dataset.level;
  if (before && before !== q.level) setText(el.qualityAnnounce, `The call quality is now ${mosWord(q.mos)}.`);
  setData(b, "level", q.level);
  setData(b, "mos", q.mos.toFixed(2));
  setData(b, "rttMs", q.rttMs === null ? null : q.rttMs.toFixed(1));
  setData(b, "jitterMs", q.jitterMs === null ? null : q.jitterMs.toFixed(1));
  setData(b, "lossPct", q.lossPct.toFixed(2));
  setData(b, "bitrateKbps", q.bitrateKbps === null ? null : q.bitrateKbps.toFixed(1));
  setData(b, "path", q.path);
  setText(b, `${mosWords(q.mos)} quality`);
  const numbers =
    `Round trip ${msText(q.rttMs)}, jitter ${msText(q.jitterMs)}, loss ${q.lossPct.toFixed(1)} %, ` +
    `${num(q.bitrateKbps, "kbit/s")}, MOS ${q.mos.toFixed(1)} of 4.5`;
  b.title = `${numbers}. Click for details.`;
  setText(el.qualityRtt, msText(q.rttMs));
  setText(el.qualityJitter, msText(q.jitterMs));
  setText(el.qualityLoss, `${q.lossPct.toFixed(1)} %`);
  setText(el.qualityBitrate, num(q.bitrateKbps, "kbit/s"));
  setText(el.qualityMos, `${q.mos.toFixed(1)} of 4.5`);
  const v = q.video;
  setData(b, "videoWidth", v ? String(v.width) : null);
  setData(b, "videoHeight", v ? String(v.height) : null);
  setData(b, "videoFps", v?.fps == null ? null : v.fps.toFixed(0));
  setData(b, "videoBitrateKbps", v?.bitrateKbps == null ? null : v.bitrateKbps.toFixed(0));
  setText(el.qualityVideo, v ? `${v.width}×${v.height}${v.fps == null ? "" : `, ${v.fps.toFixed(0)} frames/s`}` : "—");
  setText(el.qualityVideoBitrate, v ? num(v.bitrateKbps, "kbit/s") : "—");
  el.qualityLoss.dataset.ok = String(q.lossPct < 2);
  el.qualityMos.dataset.ok = String(q.mos >= 3.6);
}

/** @param {boolean} open */
function toggleQuality(open) {
  el.qualityDetails.hidden = !open;
  el.quality.setAttribute("aria-expanded", String(open));
}

/**
 * The levels of the two meters, 0..1 (called about ten times a second during a call).
 * @param {number} mic our microphone, as sent
 * @param {number} remote the other side's audio, as heard
 */
export function setLevels(mic, remote) {
  for (const [meter, level] of [
    [el.micLevel, mic],
    [el.remoteLevel, remote],
  ]) {
    const value = Math.min(1, Math.max(0, level || 0));
    const text = value.toFixed(2);
    if (meter.dataset.level === text) continue;
    meter.dataset.level = text;
    meter.style.setProperty("--level", text);
    meter.setAttribute("aria-valuenow", String(Math.round(value * 100)));
  }
}

/**
 * After a call that connected: how long it lasted and how it sounded.
 * @param {CallView|null} call
 */
function renderSummary(call) {
  const summary = call?.phase === CallPhase.ENDED ? call.summary : null;
  el.callSummary.hidden = !summary;
  for (const key of ["durationSec", "mos", "level", "path"]) setData(el.callSummary, key, null);
  if (!summary) {
    setText(el.callSummary, "");
    return;
  }
  setData(el.callSummary, "durationSec", summary.durationSec.toFixed(1));
  setData(el.callSummary, "level", summary.level);
  setData(el.callSummary, "mos", summary.mos === null ? null : summary.mos.toFixed(2));
  setData(el.callSummary, "path", summary.path);
  const quality = summary.level
    ? `${mosWord(summary.mos)} quality (${summary.mos.toFixed(1)} of 4.5)`
    : "quality not measured";
  const path = summary.path === "relayed" ? ", relayed" : summary.path === "direct" ? ", direct" : "";
  // The server's count once the history has the call (the same as the history shows), else our own.
  const seconds = call.duration ?? summary.durationSec;
  setText(el.callSummary, `Call with ${label(call.peerId)}: ${clockText(seconds)}, ${quality}${path}.`);
}

/**
 * Whether a call can be placed from this page now: connected, and no call of ours going on, here or on another
 * device (the server would refuse it).
 * @param {View} view
 * @returns {boolean}
 */
export function canCallNow({ server, call, elsewhere }) {
  return server.state === "connected" && !(call && call.phase !== CallPhase.ENDED) && !elsewhere;
}

/**
 * Our own line at the top of People: who we are and how others see us.
 * @param {View} view
 */
function renderMe({ server, me, ownId, call, contacts, elsewhere }) {
  const here = Boolean(call && call.phase !== CallPhase.ENDED && call.phase !== CallPhase.INCOMING);
  const id = me ?? ownId ?? null; // reconnecting: still us
  const name = id ? label(id) : el.myId.value.trim() || "You";
  const status =
    server.state === "connected"
      ? here || elsewhere
        ? "in-call"
        : "online"
      : server.state === "disconnected"
        ? "offline"
        : "away";
  const text = {
    "in-call": elsewhere ? "In a call on another device" : "In a call",
    online:
      contacts?.supported && contacts.ringing === CallsFrom.NOBODY
        ? "Online, do not disturb: calls do not ring"
        : contacts?.supported && contacts.ringing === CallsFrom.CONTACTS
          ? "Online: your contacts can call you"
          : "Online: people can call you",
    offline: "Not connected: connect to call and be called",
    away: server.state === "connecting" ? "Connecting…" : "Reconnecting…",
  }[status];
  setText(el.myName, name);
  el.myName.title = id && name !== id ? handle(id) : "";
  el.myYou.hidden = name === "You";
  setText(el.myInitial, name.slice(0, 1).toUpperCase() || "?");
  el.me.dataset.status = status;
  el.myStatus.dataset.status = status;
  setText(el.myStatus, text);
}

/**
 * "just now", "5 min ago", "3 h ago", "yesterday", "on 3 Mar".
 * @param {number|null} lastSeen Unix seconds
 * @param {number} [now] ms
 */
export function lastSeenText(lastSeen, now = Date.now()) {
  if (lastSeen === null || !Number.isFinite(lastSeen)) return "Offline";
  const seconds = Math.max(0, now / 1000 - lastSeen);
  if (seconds < 60) return "Last seen just now";
  if (seconds < 3600) return `Last seen ${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `Last seen ${Math.floor(seconds / 3600)} h ago`;
  if (seconds < 2 * 86400) return "Last seen yesterday";
  const when = new Date(lastSeen * 1000);
  return `Last seen on ${when.toLocaleDateString([], { month: "short", day: "numeric" })}`;
}

/**
 * Why someone cannot be called now: they are in a call (a call to them could only end busy).
 * @param {string} id
 */
export function inCallText(id) {
  return `${label(id)} is in a call: you can call when it ends.`;
}

/**
 * Mark a call button of someone in a call, or unmark it. Such a button is not `disabled`: it stays in the tab order
 * and says why it does not call. `aria-disabled` makes a screen reader say it is unavailable, its name says "In
 * a call" (the People and Contacts lines) or its description does (the Call button), and its tooltip says why.
 * @param {HTMLButtonElement} button
 * @param {boolean} inCall
 * @param {string} id who the button calls
 */
export function markInCall(button, inCall, id) {
  if (inCall) {
    button.setAttribute("aria-disabled", "true");
    button.title = inCallText(id);
  } else if (isMarkedInCall(button)) {
    button.removeAttribute("aria-disabled");
    button.removeAttribute("title");
  }
}

/** @param {HTMLElement} button */
export function isMarkedInCall(button) {
  return button.getAttribute("aria-disabled") === "true";
}

/**
 * A click on a button of someone in a call: say why nothing happens.
 * @param {HTMLElement} button
 * @returns {boolean} whether the button was marked so (then the click calls nobody)
 */
export function saidInCall(button) {
  if (!isMarkedInCall(button)) return false;
  say(button.title, "info");
  return true;
}

/**
 * The Call and Video call buttons: enabled when we can call, marked when the one typed is shown in a call (the
 * reason under them).
 * @param {View} view
 */
function renderCallButtons(view) {
  const { people } = view;
  const canCall = canCallNow(view);
  const peer = el.peerId.value.trim();
  const busy = canCall && Boolean(people?.some((p) => p.id === peer && p.status === "online" && p.inCall));
  // Why the buttons cannot call, under them: we talk on another device, or the one typed is in a call.
  const why = view.elsewhere ? "You are in a call on another device: you can call once it has ended." : busy ? inCallText(peer) : "";
  for (const button of [el.call, el.videoCall]) {
    button.disabled = !canCall;
    markInCall(button, busy, peer);
    if (why) button.setAttribute("aria-describedby", "peer-in-call");
    else button.removeAttribute("aria-describedby");
  }
  setText(el.peerInCall, why);
  el.peerInCall.hidden = !why;
}

/** @param {import("./signaling.js").Person} person */
function personStatus(person) {
  if (person.status === "online") return person.inCall ? ["in-call", "In a call"] : ["online", "Online"];
  return ["offline", lastSeenText(person.lastSeen)];
}

/**
 * People: those online (#online) and those seen lately (#offline-people), each with a status and a call button,
 * narrowed by the search field (#contact-filter).
 * @param {View} view
 */
function renderPeople(view) {
  const { server, online, people, contacts } = view;
  const connected = server.state === "connected";
  // A server that shows contacts only: they are listed in the Contacts card, not here (reconnecting too: the
  // page keeps what the server said).
  const contactsOnly = contacts?.supported === true && contacts.directory === DirectoryMode.CONTACTS;
  el.peopleContactsOnly.hidden = !contactsOnly;
  el.contactFilterBox.hidden = contactsOnly;
  if (contactsOnly) {
    for (const node of [el.online, el.onlineEmpty, el.onlineOffline, el.offlineTitle, el.offlinePeople]) {
      node.hidden = true;
    }
    el.contactFilterHint.hidden = true;
    return;
  }
  el.online.hidden = false;
  const canCall = canCallNow(view);
  // Servers without presence details only send the online list.
  const plain = (id) => ({ id, status: "online", inCall: false, lastSeen: null });
  const everyone = people?.length ? people : online.map(plain);
  const onlineIds = new Set(online);
  const up = everyone.filter((p) => p.status === "online" && onlineIds.has(p.id));
  for (const id of online) if (!up.some((p) => p.id === id)) up.push(plain(id));
  up.sort((a, b) => a.id.localeCompare(b.id));
  const down = connected ? everyone.filter((p) => p.status !== "online" && !onlineIds.has(p.id)) : [];

  const filter = el.contactFilter.value.trim().toLowerCase();
  const shown = (p) =>
    !filter || p.id.toLowerCase().includes(filter) || label(p.id).toLowerCase().includes(filter);
  renderPersonList(el.online, up, canCall, shown);
  renderPersonList(el.offlinePeople, down, canCall, shown);
  const visibleDown = down.filter(shown).length;
  el.offlinePeople.hidden = visibleDown === 0;
  el.offlineTitle.hidden = visibleDown === 0;
  el.onlineEmpty.hidden = !connected || up.length > 0 || Boolean(filter);
  el.onlineOffline.hidden = connected;
  setText(
    el.onlineOffline,
    server.state === "disconnected"
      ? "Connect to see who is online."
      : "Reconnecting to the server: who is online shows again once it answers.",
  );
  el.contactFilter.disabled = !connected;

  let hint = "";
  if (filter && connected) {
    const first = firstMatch();
    hint = !first
      ? `No one called “${el.contactFilter.value.trim()}” is online or was seen lately.`
      : !canCall
        ? ""
        : isMarkedInCall(first)
          ? inCallText(first.dataset.peer)
          : `Press Enter to call ${label(first.dataset.peer)}.`;
  }
  setText(el.contactFilterHint, hint);
  el.contactFilterHint.hidden = !hint;
}

/** The people buttons the filter shows, in order (online ones first). */
function visiblePeopleButtons() {
  return /** @type {HTMLButtonElement[]} */ (
    [...el.online.children, ...el.offlinePeople.children]
      .filter((li) => !(/** @type {HTMLElement} */ (li).hidden))
      .map((li) => li.querySelector("button"))
      .filter(Boolean)
  );
}

/** The first person the filter shows (online people first), or null. */
function firstMatch() {
  return visiblePeopleButtons()[0] ?? null;
}

/**
 * @param {HTMLElement} list
 * @param {import("./signaling.js").Person[]} people in order
 * @param {boolean} canCall
 * @param {(p: import("./signaling.js").Person) => boolean} shown
 */
function renderPersonList(list, people, canCall, shown) {
  const existing = new Map([...list.children].map((li) => [li.dataset.peer, li]));
  const ids = new Set(people.map((p) => p.id));
  for (const [id, li] of existing) if (!ids.has(id)) li.remove();
  people.forEach((person, index) => {
    let li = existing.get(person.id);
    if (!li) {
      li = makePerson(person.id);
      existing.set(person.id, li);
    }
    const [status, text] = personStatus(person);
    li.dataset.status = status;
    li.hidden = !shown(person);
    const button = li.querySelector("button");
    showWho(li, person.id);
    setText(li.querySelector(".status-text"), text);
    button.disabled = !canCall;
    markInCall(button, canCall && status === "in-call", person.id);
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
  });
}

/**
 * A person's name on their line: the display name (text, never markup) with the id as muted text beside it, or
 * the id alone.
 * @param {HTMLElement} li
 * @param {string} id
 */
function showWho(li, id) {
  const shown = label(id);
  setText(li.querySelector(".name"), shown);
  const idText = li.querySelector(".handle");
  setText(idText, shown === id ? "" : handle(id));
  idText.hidden = shown === id;
  setText(li.querySelector(".avatar-letter"), shown.slice(0, 1).toUpperCase());
}

/** A handset, for call buttons (static markup). */
const PHONE_ICON =
  '<svg viewBox="0 0 24 24"><path d="M8.2 5.5c.4 0 .8.3.9.7l.7 2.6c.1.4 0 .8-.3 1l-1.2 1a9.6 9.6 0 0 0 ' +
  "4.9 4.9l1-1.2c.3-.3.7-.4 1-.3l2.6.7c.4.1.7.5.7.9V18c0 .6-.4 1-1 1A13.5 13.5 0 0 1 5 6.5c0-.6.4-1 1-1z" +
  '"/></svg>';

/**
 * Text for screen readers only.
 * @param {string} text
 */
function hiddenText(text) {
  const span = document.createElement("span");
  span.className = "visually-hidden";
  span.textContent = text;
  return span;
}

/**
 * One person's line: avatar with a status dot, name and status, and a call button (the whole line).
 * @param {string} id
 * @returns {HTMLLIElement}
 */
function makePerson(id) {
  const li = document.createElement("li");
  li.dataset.peer = id;
  li.className = "person";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "call-user";
  button.dataset.peer = id;
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  const letter = document.createElement("span");
  letter.className = "avatar-letter";
  letter.textContent = id.slice(0, 1).toUpperCase();
  avatar.append(letter);
  const dot = document.createElement("span");
  dot.className = "dot";
  avatar.append(dot);
  // The accessible name is the visible text with the verb around it: "Call bob, Online".
  const who = document.createElement("span");
  who.className = "who";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = id;
  const idText = document.createElement("span");
  idText.className = "handle";
  idText.hidden = true;
  const status = document.createElement("span");
  status.className = "status-text";
  who.append(hiddenText("Call "), name, hiddenText(" "), idText, hiddenText(", "), status);
  const action = document.createElement("span");
  action.className = "action";
  action.setAttribute("aria-hidden", "true");
  action.innerHTML = `${PHONE_ICON}<span>Call</span>`;
  button.append(avatar, who, action);
  li.append(button);
  return li;
}

/**
 * The banner while the server cannot be reached: why, a countdown to the next try, and "Retry now". Also before
 * any connection, when the page knows there is none to be had (this device is offline, or the server did not
 * answer: the page may have come from the service worker's cache).
 * @param {View["server"]} server
 * @param {boolean} inCall
 */
function renderConnection(server, inCall) {
  clearInterval(countdownTimer);
  const reconnecting = server.state === "reconnecting";
  const offline = server.state !== "connected" ? (server.offline ?? null) : null;
  el.connectionBanner.hidden = !reconnecting && !offline;
  el.connectionBanner.dataset.offline = offline ?? "";
  if (!reconnecting && !offline) return;
  const reason = reconnecting ? (server.reason ?? "Lost the connection to the server.") : "No connection to the server.";
  setText(el.connectionReason, inCall ? `${reason} Your call goes on meanwhile.` : reason);
  if (!reconnecting) {
    el.retryCountdown.dataset.seconds = "0";
    setText(
      el.retryCountdown,
      offline === "device"
        ? "This device is offline: the page connects when the network is back."
        : "The server does not answer. Trying again…",
    );
    return;
  }
  const tick = () => {
    const ms = (server.retryAt ?? 0) - Date.now();
    const seconds = Math.max(0, Math.ceil(ms / 1000));
    el.retryCountdown.dataset.seconds = String(seconds);
    setText(el.retryCountdown, seconds > 0 ? `Trying again in ${seconds} s…` : "Trying again now…");
  };
  tick();
  countdownTimer = setInterval(tick, 250);
}

/**
 * "Enable notifications", offered (never asked on its own) while the browser has not been asked yet.
 * @param {"default"|"granted"|"denied"|"unsupported"} permission
 * @param {boolean} connected
 */
function renderNotifications(permission, connected) {
  el.enableNotifications.hidden = !(connected && permission === "default");
  el.enableNotifications.title = "Show a notification when someone calls while this tab is in the background";
}

/**
 * The microphone and speaker lists.
 * @param {MediaDevicesView} mediaDevices
 */
function renderMediaDevices({ microphones, speakers, microphone, speaker, canChooseSpeaker, cameras, camera }) {
  fillSelect(el.micSelect, microphones, microphone);
  const cameraChoices = cameras?.length ? cameras : [{ id: "", label: "Default camera" }];
  fillSelect(el.cameraSelect, cameraChoices, camera ?? "");
  fillSelect(el.speakerSelect, speakers, speaker);
  el.speakerSelect.disabled = !canChooseSpeaker;
  el.speakerSelect.title = canChooseSpeaker ? "" : "This browser always plays calls on its default speaker.";
}

/**
 * @param {HTMLSelectElement} select
 * @param {import("./media.js").MediaDeviceOption[]} choices
 * @param {string} chosen
 */
function fillSelect(select, choices, chosen) {
  const signature = JSON.stringify(choices);
  if (select.dataset.choices !== signature) {
    select.dataset.choices = signature;
    select.replaceChildren(
      ...choices.map(({ id, label }) => {
        const option = document.createElement("option");
        option.value = id;
        option.textContent = label;
        return option;
      }),
    );
  }
  const value = choices.some((c) => c.id === chosen) ? chosen : (choices[0]?.id ?? "");
  if (select.value !== value) select.value = value;
}

/**
 * The page was opened over plain http from another address: calls cannot work here; say so at once.
 * @param {string} host
 */
export function showInsecure(host) {
  el.insecureWarning.hidden = false;
  el.insecureHost.textContent = host;
}

/**
 * @param {HTMLInputElement} input
 * @param {boolean} invalid
 */
function setInvalid(input, invalid) {
  if (invalid) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}


const OUTCOME_WORDS = Object.freeze({
  answered: "Answered",
  rejected: "Rejected",
  cancelled: "Cancelled",
  missed: "Missed",
  busy: "Busy",
  unavailable: "Unavailable",
  failed: "Failed",
});

/**
 * Whether `record` is a call to `me` that nobody answered (it rang out, was given up by the caller, or came
 * while we were offline): the calls a phone would list as "missed".
 * @param {CallRecord} record
 * @param {string|null} me
 * @returns {boolean}
 */
export function isMissed(record, me) {
  return (
    record.callee === me &&
    !isSilenced(record, me) &&
    record.caller !== me &&
    ["missed", "unavailable", "cancelled"].includes(record.outcome) &&
    !record.answeredAt
  );
}

/**
 * Whether `record` is a call to `me` that did not ring because of our ring setting ("Who may ring me").
 * @param {CallRecord} record
 * @param {string|null} me
 * @returns {boolean}
 */
export function isSilenced(record, me) {
  return record.screened === "silenced" && record.callee === me && record.caller !== me;
}

/**
 * One line of the history: direction, peer, outcome, time, duration.
 * @param {CallRecord} record
 * @param {string|null} me
 */
function historyText(record, me) {
  const outgoing = record.caller === me;
  const peer = outgoing ? record.callee : record.caller;
  const missed = isMissed(record, me);
  const silenced = isSilenced(record, me);
  const what = silenced
    ? "Silenced (did not ring)"
    : missed
      ? "Missed"
      : outgoing && record.outcome === "missed"
        ? "No answer" // (ours: "Missed" would read as a call we missed)
        : (OUTCOME_WORDS[record.outcome] ?? record.outcome);
  const when = new Date(record.ringingAt * 1000);
  const today = new Date().toDateString() === when.toDateString();
  const time = today
    ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : when.toLocaleDateString([], { month: "short", day: "numeric" });
  // A failed call's answered-to-ended time went mostly to looking for a network path: it shows how long its media
  // was connected, as this side's call-summary said (a call that dropped after talking), and nothing if never.
  const talked = record.outcome === "failed" ? record.quality?.[me]?.durationSec || null : record.duration;
  const duration = talked != null ? clockText(talked) : "";
  return { outgoing, peer, missed, silenced, what, time, when, duration };
}

/**
 * @param {HistoryView} history
 * @param {boolean} canCall
 */
function renderHistory(history, canCall) {
  el.missedCount.textContent = String(history.missed);
  el.missedCount.hidden = history.missed === 0;
  el.missedCount.setAttribute("aria-label", `${history.missed} missed call${history.missed === 1 ? "" : "s"}`);
  el.historyMore.hidden = !history.more;
  el.historyEmpty.hidden = history.calls.length > 0;
  el.historyEmpty.textContent = history.error ?? (history.me ? "No calls yet." : "Connect to see your recent calls.");

  const existing = new Map([...el.history.children].map((li) => [li.dataset.callId, li]));
  const keep = new Set(history.calls.map((record) => record.callId));
  for (const [id, li] of existing) if (!keep.has(id)) li.remove();
  history.calls.forEach((record, index) => {
    let li = existing.get(record.callId);
    if (!li) {
      li = makeHistoryEntry(record, history.me);
      existing.set(record.callId, li);
    }
    if (el.history.children[index] !== li) el.history.insertBefore(li, el.history.children[index] ?? null);
    const button = li.querySelector("button");
    button.disabled = !canCall;
    setText(li.querySelector(".who"), label(button.dataset.peer));
    renderHistoryQuality(li, record, history.me);
  });
  // Its buttons are disabled in a call and while offline: the list itself then takes the focus, so that the
  // keyboard can still scroll it (a long history scrolls within its card).
  if (canCall || history.calls.length === 0) el.history.removeAttribute("tabindex");
  else el.history.tabIndex = 0;
}

/**
 * The quality of a call in the history, from the `call-summary` of each side that sent one.
 * @param {CallRecord & {quality?: Record<string, {mos?: number, rttMs?: number, jitterMs?: number,
 *   lossPct?: number, bitrateKbps?: number, path?: string, durationSec?: number}>|null}} record
 * @param {string|null} me
 * @returns {{level: "good"|"fair"|"poor", word: string, mos: number, text: string}|null}
 */
export function historyQuality(record, me) {
  const sides = Object.entries(record.quality ?? {}).filter(([, q]) => q && typeof q.mos === "number");
  if (!sides.length) return null;
  // The call was as good as its worse side.
  const mos = Math.min(...sides.map(([, q]) => q.mos));
  const level = /** @type {"good"|"fair"|"poor"} */ (qualityLevel(mos));
  const mine = record.quality?.[me ?? ""] ?? sides[0][1];
  const each = sides.map(([user, q]) => `${q.mos.toFixed(1)} ${user === me ? "for you" : `for ${label(user)}`}`).join(", ");
  const details = [
    mine.path === "relayed" ? "relayed" : mine.path === "direct" ? "direct" : null,
    typeof mine.rttMs === "number" ? `round trip ${msText(mine.rttMs)}` : null,
    typeof mine.jitterMs === "number" ? `jitter ${msText(mine.jitterMs)}` : null,
    typeof mine.lossPct === "number" ? `loss ${mine.lossPct.toFixed(1)} %` : null,
    typeof mine.bitrateKbps === "number" ? `${Math.round(mine.bitrateKbps)} kbit/s` : null,
  ].filter(Boolean);
  const more = details.length ? `; ${details.join(", ")}` : "";
  const text = `${mosWords(mos)} quality (MOS ${each} of 4.5)${more}`;
  return { level, word: mosWord(mos), mos, text };
}

/**
 * @param {HTMLLIElement} li
 * @param {CallRecord} record
 * @param {string|null} me
 */
function renderHistoryQuality(li, record, me) {
  const q = historyQuality(record, me);
  const dot = li.querySelector(".q");
  const said = li.querySelector(".q-text");
  const button = li.querySelector("button");
  if (!q) {
    dot.hidden = true;
    delete li.dataset.quality;
    delete li.dataset.mos;
    setText(said, "");
    button.title = `Call ${callBackWho(button.dataset.peer)} back`;
    return;
  }
  dot.hidden = false;
  dot.dataset.level = q.level;
  li.dataset.quality = q.level;
  li.dataset.mos = q.mos.toFixed(2);
  setText(said, `, ${q.word} quality`);
  button.title = `${q.text}.\nClick to call ${callBackWho(button.dataset.peer)} back.`;
}

/**
 * Who a history line calls back, for its tooltip: the display name and the id, or the id.
 * @param {string} id
 */
function callBackWho(id) {
  return label(id) === id ? id : `${label(id)} (${handle(id)})`;
}

/**
 * @param {CallRecord} record
 * @param {string|null} me
 * @returns {HTMLLIElement}
 */
function makeHistoryEntry(record, me) {
  const { outgoing, peer, missed, silenced, what, time, when, duration } = historyText(record, me);
  const li = document.createElement("li");
  li.dataset.callId = record.callId;
  li.dataset.outcome = record.outcome;
  li.dataset.direction = outgoing ? "outgoing" : "incoming";
  if (missed) li.classList.add("missed");
  if (silenced) li.dataset.screened = "silenced";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "history-entry";
  button.dataset.peer = peer;
  button.title = `Call ${callBackWho(peer)} back`;
  // The accessible name is the visible text with words around it: "Missed call from bob, Missed, 12:18, …
  // Call back" (what the eye reads, in the same order).
  const parts = [
    ["dir", outgoing ? "↗" : "↙"],
    ["who", label(peer)],
    ["what", what],
    ["when", time],
    ["len", duration],
  ];
  const lead = silenced ? "Silenced call from" : missed ? "Missed call from" : outgoing ? "Call to" : "Call from";
  button.append(hiddenText(`${lead} `));
  for (const [name, text] of parts) {
    if (name === "len" && !text) continue;
    const span = document.createElement(name === "when" ? "time" : "span");
    span.className = name;
    span.textContent = text;
    if (name === "dir") span.setAttribute("aria-hidden", "true");
    if (name === "when") span.setAttribute("datetime", when.toISOString());
    if (name === "what") {
      const dot = document.createElement("span");
      dot.className = "q";
      dot.hidden = true;
      dot.setAttribute("aria-hidden", "true");
      span.prepend(dot);
      const quality = hiddenText("");
      quality.classList.add("q-text");
      span.append(quality);
    }
    if (name !== "dir" && name !== "who") button.append(hiddenText(", "));
    button.append(span);
  }
  const back = document.createElement("span");
  back.className = "back";
  back.setAttribute("aria-hidden", "true");
  back.innerHTML = PHONE_ICON;
  button.append(hiddenText(". Call back"), back);
  li.append(button);
  return li;
}

// ---- audio check -----------------------------------------------------------------------------------

const TEST_AUDIO_HINT = "Calls the echo service for a few seconds: say something and you should hear it back.";
const TEST_AUDIO_TITLE = "Call the echo service, hear yourself back, and measure your connection";

/**
 * Set `text` unless it is already there (a live region would announce it again).
 * @param {HTMLElement} node
 * @param {string} text
 */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Milliseconds for people: "under 1 ms", "2.4 ms", "12 ms", "—" when unknown.
 * @param {number|null} ms
 */
function msText(ms) {
  if (ms === null || !Number.isFinite(ms)) return "—";
  if (ms < 1) return "under 1 ms"; // Chromium gives the candidate pair's round trip in whole ms
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/**
 * Set or remove a data- attribute.
 * @param {HTMLElement} node
 * @param {string} name camelCase dataset key
 * @param {string|null} value
 */
function setData(node, name, value) {
  if (value === null) delete node.dataset[name];
  else node.dataset[name] = value;
}

/**
 * The overall verdict of a test's result: "ok", "warning" or "bad" (the panel is coloured by it).
 * @param {import("./audiocheck.js").AudioCheckResult} r
 */
function verdict(r) {
  if (!r.micWorking || !r.heardBack || r.mos < 3.1) return "bad";
  if (r.mos < 4.0) return "warning";
  return "ok";
}

/**
 * The sentence that sums a result up (announced to screen readers).
 * @param {import("./audiocheck.js").AudioCheckResult} r
 * @param {boolean} stopped the test ended early
 */
function resultSentence(r, stopped) {
  const early = stopped ? `The test stopped after ${Math.round(r.listenedMs / 1000)} s. ` : "";
  const quality = `call quality ${r.mos.toFixed(1)} of 4.5 (${r.quality})`;
  const path = r.path === "relayed" ? "through a relay server" : r.path === "direct" ? "over a direct connection" : "";
  if (!r.micWorking) {
    return (
      `${early}Your microphone sent only silence: check that it is plugged in, not muted, and the one this ` +
      "browser uses (the site settings in the address bar)."
    );
  }
  if (!r.heardBack) {
    return `${early}Your microphone works, but your voice did not come back from the echo service; ${quality}.`;
  }
  return `${early}Your audio works: ${quality}${path ? `, ${path}` : ""}.`;
}

/**
 * Show the "Test my audio" button (enabled or not, and why) and the last test's panel.
 * @param {AudioCheckView} view
 */
export function renderAudioCheck({ blocker, check, failure }) {
  const running = check?.state === "calling" || check?.state === "measuring";
  el.testAudio.disabled = Boolean(blocker);
  setText(el.testAudio, running ? "Testing…" : "Test my audio");
  el.testAudio.title = blocker ?? TEST_AUDIO_TITLE;
  const hint = running ? "The test call is on: it hangs up by itself." : (blocker ?? TEST_AUDIO_HINT);
  setText(el.testAudioHint, hint);
  el.testAudioHint.dataset.blocked = String(Boolean(blocker) && !running);

  const panel = el.audioCheck;
  panel.hidden = !check;
  if (!check) return;
  panel.dataset.state = check.state;
  panel.setAttribute("aria-busy", String(running));
  el.audioCheckProgress.hidden = check.state !== "measuring";
  el.audioCheckProgress.value = check.progress;
  if (check.secondsLeft === null) el.audioCheckProgress.removeAttribute("aria-valuetext");
  else el.audioCheckProgress.setAttribute("aria-valuetext", `${check.secondsLeft} s left`);

  const r = check.result;
  const summary =
    check.state === "calling"
      ? "Calling the echo service…"
      : check.state === "measuring"
        ? "Listening… Say something: you should hear yourself back after about a second."
        : r
          ? resultSentence(r, check.state === "stopped")
          : (failure ?? "The audio check could not measure anything.");
  setText(el.audioCheckSummary, summary);
  setData(panel, "verdict", running ? null : r ? verdict(r) : "bad");

  el.audioCheckResults.hidden = !r;
  el.audioCheckNote.hidden = !r?.heardBack;
  for (const key of ["rttMs", "jitterMs", "lossPct", "mos", "path", "mic", "heard", "echoDelayMs", "oneWayMs"]) {
    setData(panel, key, null);
  }
  if (!r) return;
  setData(panel, "rttMs", r.rttMs === null ? null : r.rttMs.toFixed(1));
  setData(panel, "jitterMs", r.jitterMs === null ? null : r.jitterMs.toFixed(1));
  setData(panel, "lossPct", r.lossPct.toFixed(2));
  setData(panel, "mos", r.mos.toFixed(2));
  setData(panel, "path", r.path);
  setData(panel, "mic", r.micWorking ? "working" : "silent");
  setData(panel, "heard", r.heardBack ? "yes" : "no");
  setData(panel, "echoDelayMs", r.echoDelayMs === null ? null : String(Math.round(r.echoDelayMs)));
  setData(panel, "oneWayMs", String(Math.round(r.oneWayMs)));

  setText(el.audioCheckMic, r.micWorking ? "Working" : "Silent");
  el.audioCheckMic.dataset.ok = String(r.micWorking);
  setText(
    el.audioCheckHeard,
    r.heardBack
      ? `Yes${r.echoDelayMs === null ? "" : `, after ${(r.echoDelayMs / 1000).toFixed(2)} s`}`
      : "No",
  );
  el.audioCheckHeard.dataset.ok = String(r.heardBack);
  setText(el.audioCheckRtt, msText(r.rttMs));
  setText(el.audioCheckJitter, msText(r.jitterMs));
  const packets = r.packetsReceived + r.packetsLost;
  setText(el.audioCheckLoss, `${r.lossPct.toFixed(1)} % (${r.packetsLost} of ${packets} packets)`);
  el.audioCheckLoss.dataset.ok = String(r.lossPct < 1);
  setText(el.audioCheckMos, `${r.mos.toFixed(1)} of 4.5 · ${r.quality}`);
  el.audioCheckMos.dataset.ok = String(r.mos >= 3.6);
  el.audioCheckMos.title =
    `E-model (ITU-T G.107) estimate: R = ${r.r.toFixed(1)}, from about ${Math.round(r.oneWayMs)} ms one way ` +
    `and ${r.lossPct.toFixed(1)} % loss`;
  const protocol = r.pair?.protocol ? ` · ${r.pair.protocol.toUpperCase()}` : "";
  setText(
    el.audioCheckPath,
    r.path === "relayed" ? `Relayed (TURN)${protocol}` : r.path === "direct" ? `Direct (P2P)${protocol}` : "—",
  );
}
