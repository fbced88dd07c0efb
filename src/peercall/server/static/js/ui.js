/**
 * The page: DOM handles (grabbed once, here), rendering of the app state, and user input.
 *
 * Knows nothing of WebSockets or WebRTC: main.js hands it plain data (`render(view)`) and gets user
 * intents back through the handlers given to `bind()`.
 * @module ui
 */

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const el = {
  identityForm: /** @type {HTMLFormElement} */ ($("identity-form")),
  myId: /** @type {HTMLInputElement} */ ($("my-id")),
  myIdHint: $("my-id-hint"),
  relayOnly: /** @type {HTMLInputElement} */ ($("relay-only")),
  advanced: /** @type {HTMLDetailsElement} */ ($("advanced")),
  token: /** @type {HTMLInputElement} */ ($("token")),
  tokenHint: $("token-hint"),
  connect: /** @type {HTMLButtonElement} */ ($("connect")),
  disconnect: /** @type {HTMLButtonElement} */ ($("disconnect")),
  serverStatus: $("server-status"),
  callForm: /** @type {HTMLFormElement} */ ($("call-form")),
  peerId: /** @type {HTMLInputElement} */ ($("peer-id")),
  call: /** @type {HTMLButtonElement} */ ($("call")),
  incoming: $("incoming"),
  incomingFrom: $("incoming-from"),
  accept: /** @type {HTMLButtonElement} */ ($("accept")),
  reject: /** @type {HTMLButtonElement} */ ($("reject")),
  callStatus: $("call-status"),
  callPeer: $("call-peer"),
  callDetail: $("call-detail"),
  mute: /** @type {HTMLButtonElement} */ ($("mute")),
  hangup: /** @type {HTMLButtonElement} */ ($("hangup")),
  message: $("message"),
  online: $("online"),
  onlineEmpty: $("online-empty"),
  onlineOffline: $("online-offline"),
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

/**
 * @typedef {object} CallView
 * @property {string} state "requesting" | "incoming" | "calling" | "connected" | "ended"
 * @property {string} peerId
 * @property {"outgoing"|"incoming"} direction
 * @property {string|null} [reason] why it ended
 * @property {string|null} [remoteReason] the reason the peer gave
 * @property {string|null} [detail] what the server said, when it refused the call
 * @property {string} [previous] the state before it ended
 * @property {boolean} [muted]
 * @property {{local: string, remote: string, protocol: string}|null} [path]
 * @property {number} [connectedAt] Date.now() when it connected
 * @property {string|null} [outcome] the server's `call-ended` outcome
 * @property {string|null} [endReason] the server's `call-ended` reason
 * @property {string|null} [failure] why the audio could not connect, as a sentence
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
 * @property {{state: string}} server
 * @property {string[]} online
 * @property {CallView|null} call the current or last call
 * @property {HistoryView} [history]
 * @property {AudioCheckView} [audioCheck]
 */

/**
 * The text of #call-status for a call (or for no call).
 * @param {CallView|null} call
 * @returns {string}
 */
export function callStatusText(call) {
  if (!call) return "No Call";
  switch (call.state) {
    case "requesting":
      return "Requesting";
    case "incoming":
      return "Incoming call";
    case "calling":
      return "Calling";
    case "connected":
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

/** `#call-status` for an ended call without a server outcome (a plain relay, or not there yet). */
const LOCAL_STATUS = Object.freeze({
  busy: "Busy",
  rejected: "Rejected",
  unavailable: "Unavailable",
  "no-answer": "Missed",
  failed: "Failed",
  "no-relay": "Failed",
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
  if (reason === "failed" || reason === "no-relay") return "Failed";
  if (reason === "hangup" || reason === "declined") return "Call Ended"; // this side ended it
  if (endReason === "peer-lost" || reason === "peer-offline" || reason === "signaling-lost") return "Call lost";
  if (endReason === "answered-elsewhere") return "Answered elsewhere";
  if (outcome && OUTCOME_STATUS[outcome]) return OUTCOME_STATUS[outcome];
  if (reason === "remote-hangup" && call.previous === "incoming") return "Cancelled";
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
  if (call.failure?.includes("refused us")) return "the relay server refused us";
  return FAILURE_WORDS[call.endReason ?? call.remoteReason ?? ""] ?? "the audio could not be connected";
}

/**
 * A sentence that says why a call ended.
 * @param {CallView} call
 * @returns {string}
 */
export function endedText(call) {
  const who = call.peerId;
  const ringing = call.previous === "requesting" || call.previous === "incoming";
  switch (call.reason) {
    case "hangup":
      return ringing ? `You cancelled the call to ${who}.` : `You hung up.`;
    case "remote-hangup":
      return call.previous === "incoming" || call.outcome === "cancelled"
        ? `Missed call: ${who} hung up before you answered.`
        : `${who} hung up.`;
    case "rejected":
      return call.remoteReason === "user-media-failed" || call.remoteReason === "no-microphone"
        ? `${who} could not open their microphone.`
        : call.remoteReason === "ice-failed"
          ? `${who} could not take the call: their side could not set up the audio.`
          : `${who} declined the call.`;
    case "busy":
      return `${who} is busy in another call.`;
    case "declined":
      return `You declined the call from ${who}.`;
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
        case "user-media-failed":
          return `The call with ${who} failed: a microphone could not be opened.`;
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
 * Connect the page's controls to the app.
 * @param {object} handlers
 * @param {(id: string) => void} handlers.connect
 * @param {() => void} handlers.disconnect
 * @param {(peerId: string) => void} handlers.call
 * @param {() => void} handlers.accept
 * @param {() => void} handlers.reject
 * @param {() => void} handlers.hangup
 * @param {() => void} handlers.toggleMute
 * @param {(token: string) => void} handlers.tokenChanged the token field changed
 * @param {(relayOnly: boolean) => void} handlers.relayOnlyChanged
 * @param {(peerId: string) => void} handlers.callBack a history entry was clicked
 * @param {() => void} handlers.historySeen the user looked at the history (focus or click in it)
 * @param {() => void} handlers.moreHistory
 * @param {() => void} handlers.testAudio the user asked for an audio check
 */
export function bind(handlers) {
  el.identityForm.addEventListener("submit", (event) => {
    event.preventDefault();
    handlers.connect(el.myId.value.trim());
  });
  el.myId.addEventListener("input", () => setInvalid(el.myId, false));
  el.disconnect.addEventListener("click", () => handlers.disconnect());
  el.callForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!el.call.disabled) handlers.call(el.peerId.value.trim());
  });
  el.peerId.addEventListener("input", () => setInvalid(el.peerId, false));
  el.online.addEventListener("click", (event) => {
    const button = /** @type {HTMLElement} */ (event.target).closest("button[data-peer]");
    if (button && !(/** @type {HTMLButtonElement} */ (button).disabled)) {
      el.peerId.value = button.dataset.peer;
      handlers.call(button.dataset.peer);
    }
  });
  el.accept.addEventListener("click", () => handlers.accept());
  el.reject.addEventListener("click", () => handlers.reject());
  el.hangup.addEventListener("click", () => handlers.hangup());
  el.mute.addEventListener("click", () => handlers.toggleMute());
  el.token.addEventListener("input", () => {
    setInvalid(el.token, false);
    handlers.tokenChanged(el.token.value.trim());
  });
  el.relayOnly.addEventListener("change", () => handlers.relayOnlyChanged(el.relayOnly.checked));
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

/** The server relays every call: the "Hide my IP address" box is ticked and cannot be unticked. */
export function serverRelaysAll() {
  el.relayOnly.checked = true;
  el.relayOnly.disabled = true;
  el.relayOnly.closest("label")?.setAttribute("title", "This server relays every call through its TURN server.");
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
}

/**
 * Mark the name field as invalid and explain why (the id is checked before any connection attempt).
 * @param {string} problem
 */
export function rejectId(problem) {
  setInvalid(el.myId, true);
  say(problem, "error");
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
 * Bring the page in line with the app state.
 * @param {View} view
 */
export function render({ server, online, call, history, audioCheck }) {
  const connected = server.state === "connected";
  const offline = server.state === "disconnected";
  const active = Boolean(call && call.state !== "ended");

  el.serverStatus.textContent = {
    connected: "Connected",
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    disconnected: "Disconnected",
  }[server.state];
  el.serverStatus.dataset.state = server.state;
  el.myId.disabled = !offline;
  el.token.disabled = !offline; // the token is the one we are connected with
  el.connect.disabled = !offline;
  el.disconnect.disabled = offline;

  const canCall = connected && !active;
  el.call.disabled = !canCall;
  renderOnline(online, canCall, connected);

  const ringing = call?.state === "incoming";
  el.incoming.hidden = !ringing;
  el.incomingFrom.textContent = ringing ? call.peerId : "";
  el.accept.disabled = !ringing;
  el.reject.disabled = !ringing;

  el.callStatus.textContent = callStatusText(call);
  el.callStatus.dataset.state = call ? (call.state === "ended" ? endedState(call) : call.state) : "idle";
  el.callPeer.textContent = !call
    ? ""
    : ringing
      ? `from ${call.peerId}`
      : `${active ? "with" : "last call:"} ${call.peerId}`;
  el.hangup.disabled = !active || ringing;
  el.hangup.textContent = call?.state === "requesting" ? "Cancel" : "Hang Up";
  const inMedia = call?.state === "calling" || call?.state === "connected";
  el.mute.disabled = !inMedia;
  el.mute.setAttribute("aria-pressed", String(Boolean(inMedia && call.muted)));
  el.mute.textContent = inMedia && call.muted ? "Unmute" : "Mute";
  renderDetail(call);
  if (history) renderHistory(history, canCall);
  if (audioCheck) renderAudioCheck(audioCheck);

  const missed = history?.missed ?? 0;
  document.title = ringing
    ? `Incoming call from ${call.peerId} – ${baseTitle}`
    : missed
      ? `(${missed}) ${baseTitle}`
      : baseTitle;
}

/**
 * `data-state` of #call-status for an ended call (the stylesheet colours it).
 * @param {CallView} call
 */
function endedState(call) {
  const text = callStatusText(call);
  return (
    { Failed: "failed", "Call lost": "lost", Missed: "missed", Busy: "busy", Rejected: "rejected" }[text] ??
    { Unavailable: "unavailable", Cancelled: "cancelled", "Answered elsewhere": "answered-elsewhere" }[text] ??
    call.reason ??
    "ended"
  );
}

/** @param {CallView|null} call */
function renderDetail(call) {
  clearInterval(durationTimer);
  if (call?.state === "ended" && callStatusText(call) === "Failed") {
    el.callDetail.textContent = failedWords(call);
    return;
  }
  if (call?.state !== "connected") {
    el.callDetail.textContent = "";
    return;
  }
  const path = call.path
    ? call.path.local === "relay" || call.path.remote === "relay"
      ? "relayed through a TURN server"
      : "direct connection"
    : "";
  const update = () => {
    const seconds = Math.max(0, Math.floor((Date.now() - (call.connectedAt ?? Date.now())) / 1000));
    const clock = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
    el.callDetail.textContent = [clock, path, call.muted ? "you are muted" : ""].filter(Boolean).join(" · ");
  };
  update();
  durationTimer = setInterval(update, 1000);
}

/**
 * @param {string[]} ids
 * @param {boolean} canCall
 * @param {boolean} connected
 */
function renderOnline(ids, canCall, connected) {
  const existing = new Map([...el.online.children].map((li) => [li.dataset.peer, li]));
  for (const [id, li] of existing) if (!ids.includes(id)) li.remove();
  ids.forEach((id, index) => {
    let li = existing.get(id);
    if (!li) {
      li = document.createElement("li");
      li.dataset.peer = id;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "call-user";
      button.dataset.peer = id;
      button.setAttribute("aria-label", `Call ${id}`);
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.setAttribute("aria-hidden", "true");
      avatar.textContent = id.slice(0, 1).toUpperCase();
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = id;
      const action = document.createElement("span");
      action.className = "action";
      action.setAttribute("aria-hidden", "true");
      action.textContent = "Call";
      button.append(avatar, name, action);
      li.append(button);
    }
    if (el.online.children[index] !== li) el.online.insertBefore(li, el.online.children[index] ?? null);
    li.querySelector("button").disabled = !canCall;
  });
  el.onlineEmpty.hidden = !connected || ids.length > 0;
  el.onlineOffline.hidden = connected;
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
  rejected: "Declined",
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
    record.caller !== me &&
    ["missed", "unavailable", "cancelled"].includes(record.outcome) &&
    !record.answeredAt
  );
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
  const what = missed
    ? "Missed"
    : outgoing && record.outcome === "rejected"
      ? "Rejected"
      : (OUTCOME_WORDS[record.outcome] ?? record.outcome);
  const when = new Date(record.ringingAt * 1000);
  const today = new Date().toDateString() === when.toDateString();
  const time = today
    ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : when.toLocaleDateString([], { month: "short", day: "numeric" });
  const seconds = Math.round(record.duration ?? 0);
  const clock = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  const duration = record.duration != null ? clock : "";
  return { outgoing, peer, missed, what, time, when, duration };
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
    li.querySelector("button").disabled = !canCall;
  });
}

/**
 * @param {CallRecord} record
 * @param {string|null} me
 * @returns {HTMLLIElement}
 */
function makeHistoryEntry(record, me) {
  const { outgoing, peer, missed, what, time, when, duration } = historyText(record, me);
  const li = document.createElement("li");
  li.dataset.callId = record.callId;
  li.dataset.outcome = record.outcome;
  li.dataset.direction = outgoing ? "outgoing" : "incoming";
  if (missed) li.classList.add("missed");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "history-entry";
  button.dataset.peer = peer;
  const label = `${missed ? "Missed call from" : outgoing ? "Call to" : "Call from"} ${peer}, ${what.toLowerCase()}`;
  button.setAttribute("aria-label", `${label}, ${time}${duration ? `, ${duration}` : ""}. Call back`);
  button.title = `Call ${peer} back`;
  const parts = [
    ["dir", outgoing ? "↗" : "↙"],
    ["who", peer],
    ["what", what],
    ["when", time],
    ["len", duration],
  ];
  for (const [name, text] of parts) {
    const span = document.createElement(name === "when" ? "time" : "span");
    span.className = name;
    span.textContent = text;
    if (name === "dir") span.setAttribute("aria-hidden", "true");
    if (name === "when") span.setAttribute("datetime", when.toISOString());
    button.append(span);
  }
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
