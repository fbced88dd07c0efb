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
};

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
 */

/**
 * @typedef {object} View
 * @property {{state: string}} server
 * @property {string[]} online
 * @property {CallView|null} call the current or last call
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
      return { busy: "Busy", rejected: "Rejected", unavailable: "Unavailable" }[call.reason] ?? "Call Ended";
  }
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
      return call.previous === "incoming" ? `Missed call: ${who} hung up before you answered.` : `${who} hung up.`;
    case "rejected":
      return call.remoteReason === "user-media-failed" || call.remoteReason === "no-microphone"
        ? `${who} could not open their microphone.`
        : `${who} declined the call.`;
    case "busy":
      return `${who} is busy in another call.`;
    case "declined":
      return `You declined the call from ${who}.`;
    case "unavailable":
      return `${who} is not online.`;
    case "peer-offline":
      return `${who} went offline.`;
    case "no-answer":
      return `${who} did not answer.`;
    case "failed":
      return `The audio connection with ${who} could not be established or was lost.`;
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
}

/**
 * Preset the inputs (the demo pages' data-id / data-peer, or ?id= / ?peer=).
 * @param {{id?: string|null, peer?: string|null}} values
 */
export function preset({ id, peer }) {
  if (id) el.myId.value = id;
  if (peer) el.peerId.value = peer;
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
export function render({ server, online, call }) {
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
  el.callStatus.dataset.state = call ? (call.state === "ended" ? call.reason ?? "ended" : call.state) : "idle";
  el.callPeer.textContent = !call
    ? ""
    : ringing
      ? `from ${call.peerId}`
      : `${active ? "with" : "last call:"} ${call.peerId}`;
  el.hangup.disabled = !active || ringing;
  const inMedia = call?.state === "calling" || call?.state === "connected";
  el.mute.disabled = !inMedia;
  el.mute.setAttribute("aria-pressed", String(Boolean(inMedia && call.muted)));
  el.mute.textContent = inMedia && call.muted ? "Unmute" : "Mute";
  renderDetail(call);

  document.title = ringing ? `Incoming call from ${call.peerId} – ${baseTitle}` : baseTitle;
}

/** @param {CallView|null} call */
function renderDetail(call) {
  clearInterval(durationTimer);
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

