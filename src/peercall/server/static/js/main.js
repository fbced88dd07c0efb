/**
 * The composition root of the web client: makes the modules, wires their events to each other and to the
 * page, and nothing else. It has no state of its own: each concept keeps its state in its module.
 *
 *  - signaling.js: the connection to the server;
 *  - identity.js: the name, the token, this tab's device id, and what the server asks of us;
 *  - account.js: accounts mode: who is signed in, and the signaling tokens of the sign-in (renewed by
 *    signaling.js before they expire); accountpanel.js its part of the page (sign-in screen, account card);
 *  - phone.js: the current call (call.js), which frames belong to it, its resume (resume.js), its quality
 *    (quality.js) and levels, and the audio check (audiocheck.js);
 *  - mediastate.js: what this side says of its media (muted, camera, screen) and what the peer said;
 *  - contacts.js: the contacts, their presence, requests, blocks and the ring setting ("Who may ring me");
 *  - history.js: the call history and the missed-call count; summaries.js: the call summaries;
 *  - notifications.js: the ringtone, the ringback tone and notifications;
 *  - push.js: "Ring this device when peercall is closed" (Web Push), and its checkbox;
 *  - mediadevices.js: the microphone, speaker and camera chosen;
 *  - names.js: the display names the server told (signaling.js feeds it every frame; the page shows them);
 *  - offline.js: the service worker (the app opens without the server) and whether the server can be reached;
 *  - calllink.js: the call link the page was opened with (`?call=`), calllinkpanel.js its part of the page;
 *  - ui.js: the page (DOM only), and contactspanel.js its contacts; `view()` below gathers what they show.
 *
 * Page configuration: `<body data-id="clientA" data-peer="clientB">` presets the names (the two-tab demo);
 * `?id=` and `?peer=` do the same on any page; `?processing=off` opens the mic without echo cancellation,
 * noise suppression or auto gain (music, measurements); `?call=<id>` (where a call link `call/<id>` leads) offers
 * to call that user once connected; `?accept=<callId>` (a push notification's Accept) connects and accepts that
 * call when it rings; `#token=<jwt>` gives a token (then removed from the
 * address bar), and the name is the token's `sub`; `#invite=<token>` (accounts mode) opens the sign-up form (or,
 * signed in already, says the invite is for someone new). Both are read again when they are pasted into the
 * address bar of the open page (`hashchange`).
 *
 * For tests and debugging, `window.peercall` exposes `signaling`, `call` (the current or last Call), `pc`
 * (the current call's RTCPeerConnection, or null), `audioCheck` (the current or last AudioCheck), `quality`
 * (the current or last call's QualityMonitor), `ringing` (whether the ringtone plays), `ringtone` and
 * `ringback` (the Tones), `levels` (the meters' levels), `summaries` (the call-summary frames sent) and
 * `mediaState` (what this side says of its media, and what the peer said).
 * @module main
 */

import { Account, thisBrowser } from "./account.js";
import * as accountPanel from "./accountpanel.js";
import { CallLink } from "./calllink.js";
import * as callLinkPanel from "./calllinkpanel.js";
import { fetchIceConfig } from "./ice.js";
import { Contacts } from "./contacts.js";
import * as contactsPanel from "./contactspanel.js";
import { CallHistory } from "./history.js";
import { Identity } from "./identity.js";
import { MediaDeviceChoice } from "./mediadevices.js";
import { INSECURE_TEXT, RAW, VOICE, unlockAudio } from "./media.js";
import { MediaState } from "./mediastate.js";
import * as names from "./names.js";
import { Notifier } from "./notifications.js";
import { Reachability, registerServiceWorker } from "./offline.js";
import { passkeysSupported, registerPasskey, signInWithPasskey, signUpWithPasskey } from "./passkeys.js";
import { Phone } from "./phone.js";
import { PushRing, bindPushControl } from "./push.js";
import { CALL_CONTROL, MessageType, PEER_FRAMES } from "./protocol.js";
import { Signaling } from "./signaling.js";
import { CallSummaries } from "./summaries.js";
import * as ui from "./ui.js";

/** What this side says of its media in the current call (`mediaState.setLocal({muted, camera, screen})`), and what
 * the peer said (the phone links it to the current call). */
const mediaState = new MediaState();

const params = new URLSearchParams(location.search);
const page = document.body.dataset;
const AUDIO = params.get("processing") === "off" ? RAW : VOICE;

const signaling = new Signaling();
const identity = new Identity({ nameIsPreset: Boolean(page.id) });
const account = new Account();
const mediaDevices = new MediaDeviceChoice({ playOn: (speakerId) => ui.setSpeaker(speakerId) });
const notifier = new Notifier();
const pushRing = new PushRing({ authHeaders: () => identity.authHeaders() });
const callHistory = new CallHistory({ user: () => signaling.id, authHeaders: () => identity.authHeaders() });
const contacts = new Contacts({ send: (frame) => signaling.send(frame) });
const summaries = new CallSummaries({ send: (frame) => signaling.isOpen && signaling.send(frame) });
const reachability = new Reachability();
const callLink = new CallLink(params);
const phone = new Phone({
  signaling,
  summaries,
  history: callHistory,
  mediaState,
  callOptions() {
    const me = signaling.id;
    return {
      audio: mediaDevices.constraints(AUDIO),
      cameraId: mediaDevices.camera,
      relayOnly: ui.relayOnly(),
      getIceConfig: () => fetchIceConfig({ id: me, token: identity.serverToken }),
    };
  },
});

// ---- the page --------------------------------------------------------------------------------------

/** @returns {import("./ui.js").View} everything the page shows, gathered from the modules */
function view() {
  const call = phone.call;
  const check = phone.audioCheck;
  return {
    server: {
      state: signaling.state,
      reason: signaling.reconnectReason,
      retryAt: signaling.retryAt,
      offline: reachability.problem,
    },
    online: signaling.online,
    people: signaling.people,
    me: signaling.state === "connected" ? signaling.id : null,
    ownId: signaling.id,
    mediaDevices: mediaDevices.view(phone.microphoneInUse(), phone.cameraInUse()),
    notifications: notifier.permission,
    call: call && { ...phone.callView(call), duration: callHistory.duration(call.callId) },
    elsewhere: phone.elsewhere,
    audioCheck: {
      blocker: phone.audioCheckBlocker(),
      check: check?.view() ?? null,
      failure: check?.state === "failed" ? ui.audioCheckFailure(phone.callView(check.call)) : null,
    },
    history: callHistory.view((record) => summaries.withOwn(record, callHistory.loadedFor)),
    contacts: contacts.view(),
  };
}

function render() {
  const shown = view();
  ui.render(shown);
  contactsPanel.render(shown);
  callLinkPanel.render({
    link: callLink.view(shown.me ?? null),
    me: shown.me ?? null,
    inCall: phone.active || phone.elsewhere,
    connectFirst: identity.authMode === "accounts" ? "Sign in first." : "Connect first: your name, then Connect.",
  });
  notifier.update(phone.ringing());
}

phone.addEventListener("change", render);
phone.addEventListener("elsewhereended", () => callHistory.refreshSoon());
phone.addEventListener("audiocheckprogress", () => ui.renderAudioCheck(view().audioCheck));
phone.addEventListener("notice", ({ detail }) => ui.say(detail.text, detail.kind));
phone.addEventListener("peerproblem", ({ detail }) => ui.rejectPeer(detail.text));
phone.addEventListener("ended", ({ detail }) => ui.say(ui.endedText(phone.callView(detail.call)), detail.kind));
phone.addEventListener("remotestream", ({ detail }) => ui.playRemote(detail.stream));
phone.addEventListener("remotevideo", ({ detail }) => ui.showRemoteVideo(detail.track));
phone.addEventListener("localvideo", ({ detail }) => {
  ui.showLocalVideo(detail.stream, detail.source);
  if (detail.stream) mediaDevices.refresh(); // the camera permission gives the cameras their names
});
phone.addEventListener("levels", ({ detail }) => ui.setLevels(detail.microphone, detail.remote));
phone.addEventListener("microphoneopened", () => mediaDevices.refresh());
callHistory.addEventListener("change", render);
contacts.addEventListener("change", render);
contacts.addEventListener("notice", ({ detail }) => ui.say(detail.text, detail.kind));
mediaDevices.addEventListener("change", render);
reachability.addEventListener("change", render);
reachability.addEventListener("retry", () => askServer());
callLink.addEventListener("change", render);
notifier.addEventListener("accept", () => ui.focusAccept());
// The server keeps a summary with the call's record, just after: load the history again to show it, and the
// other side's (sent at about the same time).
summaries.addEventListener("sent", () => {
  callHistory.refreshAfter(700);
  callHistory.refreshAfter(2500);
});

// ---- the server ------------------------------------------------------------------------------------

signaling.addEventListener("statechange", (event) => {
  const { state, previous, reason, terminal, unauthorized } = event.detail;
  phone.signalingChanged(event.detail);
  if (state !== "connected" && previous === "connected") contacts.disconnected();
  if (state === "connected") {
    reachability.serverAnswered(true);
    callHistory.refresh();
    summaries.flush();
    pushRing.refresh();
  }
  if (state === "disconnected" && unauthorized && identity.authMode === "accounts") {
    if (account.me) ui.say(`${reason} Sign out and in again.`, "error"); // else the sign-in screen says why
  } else if (state === "disconnected" && unauthorized) {
    identity.forgetToken();
    ui.rejectToken(`${reason} Paste a new token, then connect again.`);
  } else if (state === "disconnected" && reason && previous !== "disconnected") {
    ui.say(terminal ? reason : "", terminal ? "error" : "info");
  } else if (state === "reconnecting" && previous !== "reconnecting") {
    ui.say(""); // the banner at the top says why, counts down to the next try, and offers "Retry now"
  } else if (state === "connected" && previous === "reconnecting") {
    ui.note("Reconnected to the server.");
  } else if (state === "connected") {
    ui.say("");
  }
  render();
});
signaling.addEventListener("online", render);
signaling.addEventListener("people", render);
signaling.addEventListener(MessageType.CALL_REQUEST, (event) => phone.callRequest(event.detail));
for (const type of [...CALL_CONTROL.filter((t) => t !== MessageType.CALL_REQUEST), ...PEER_FRAMES]) {
  signaling.addEventListener(type, (event) => phone.callFrame(event.detail));
}
signaling.addEventListener(MessageType.PRESENCE, (event) => {
  phone.presence(event.detail);
  contacts.presence(event.detail);
});
signaling.addEventListener(MessageType.WELCOME, (event) => contacts.welcome(event.detail));
signaling.addEventListener(MessageType.CONTACTS, (event) => contacts.contacts(event.detail));
signaling.addEventListener(MessageType.DIRECTORY, (event) => contacts.directoryPage(event.detail));
signaling.addEventListener(MessageType.CALL_RINGING, (event) => phone.callRinging(event.detail));
signaling.addEventListener(MessageType.CALL_ENDED, (event) => phone.callEnded(event.detail));
signaling.addEventListener(MessageType.CALL_RESUMED, (event) => phone.callResumed(event.detail));
// A call our ring setting silenced rang nowhere; its line in Recent calls shows now, not at the next reload.
signaling.addEventListener(MessageType.SILENCED_CALL, ({ detail }) => {
  if (detail.call && typeof detail.call.callId === "string") callHistory.merge([detail.call]);
});
signaling.addEventListener(MessageType.MISSED_CALLS, (event) => {
  const calls = Array.isArray(event.detail.calls) ? event.detail.calls : [];
  callHistory.addMissed(calls.length);
  const callers = [...new Set(calls.map((record) => record.caller))];
  if (callers.length && !phone.active) {
    ui.say(`Missed calls while you were away: ${callers.map((id) => names.label(id)).join(", ")}.`);
  }
  callHistory.merge(calls);
  callHistory.refresh();
});
signaling.addEventListener(MessageType.ERROR, ({ detail: msg }) => {
  if (msg.ref === MessageType.CALL_SUMMARY) {
    // An older server does not know call-summary, or the call is too old: the summary only helps, never matters.
    console.info(`[main] the server did not keep a call summary: ${msg.code}: ${msg.message}`);
  } else if (contacts.serverError(msg)) {
    // about a contacts frame: it said why
  } else if (phone.serverError(msg)) {
    // about a call: the phone took care of it
  } else if (msg.ref === MessageType.AUTH) {
    // A server in open mode does not know the auth frame: it needs no token, and the connection goes on.
    console.info("[main] the server needs no token:", msg.message);
    identity.serverNeedsNoToken();
  } else {
    ui.say(`The server refused a message: ${msg.message}`, "error");
  }
});

/**
 * The network changed under a call: reconnect now, and let the call restart ICE.
 * @param {string} why
 */
function networkChanged(why) {
  signaling.reconnectNow();
  phone.networkChanged(why);
}
addEventListener("online", () => networkChanged("the browser is online again"));
navigator.connection?.addEventListener?.("change", () => networkChanged("the network connection changed"));

// ---- a push notification's Accept ------------------------------------------------------------------

const askedToAccept = params.get("accept"); // the call a notification's Accept opened this page for
if (askedToAccept) {
  phone.acceptWhenRings(askedToAccept);
  const clean = new URL(location.href);
  clean.searchParams.delete("accept");
  history.replaceState(null, "", clean);
}
navigator.serviceWorker?.addEventListener("message", ({ data }) => {
  // The Accept of a notification while this page was open (in the background): it rings here, or will.
  if (data?.type === "peercall-accept" && typeof data.callId === "string") phone.acceptWhenRings(data.callId);
});
bindPushControl(pushRing);
pushRing.addEventListener("change", render);

// ---- accounts mode ---------------------------------------------------------------------------------

/** A fresh signaling token of the sign-in, also for the HTTP API (null: the sign-in has ended). */
async function accountToken() {
  const token = await account.newToken();
  if (token) identity.useToken(token);
  return token;
}

/** Signed in: connect with a token of the sign-in, renewed before it expires. */
async function connectAccount() {
  const me = account.me;
  let token = null;
  try {
    token = await accountToken();
  } catch (err) {
    ui.say(`${err instanceof Error ? err.message : err}`, "error");
    return;
  }
  if (!token || !me || account.me !== me) return;
  names.forget(); // what the previous user of this page was told is not this one's
  names.learn(me.id, me.name); // our own name, as others see it
  callHistory.startFor(me.id);
  contacts.startFor(me.id);
  signaling.connect(me.id, { device: identity.device(), token, renew: accountToken });
}

/**
 * Signing out (or signed out): stop using the sign-in first, so that nothing the page still asks with it is
 * refused once it has ended (the history request in flight is dropped, the socket closed, the token forgotten).
 */
function leaveAccount() {
  phone.hangup();
  signaling.disconnect();
  callHistory.stop();
  identity.useToken(null);
}

account.addEventListener("change", ({ detail: { me } }) => {
  if (!me) leaveAccount();
  if (me && account.pendingInvite) {
    accountPanel.showInviteTaken(me, account.pendingInvite); // an invite never replaces a sign-in: the user says
  } else if (me) {
    accountPanel.signedIn(me);
    ui.say("");
    connectAccount();
  } else if (account.pendingInvite) {
    accountPanel.showSignUp(); // signed out from the invite's page: now the invite is theirs to use
  } else {
    accountPanel.showSignIn();
  }
});
account.addEventListener("signedout", () =>
  accountPanel.showSignIn("Your sign-in has ended (signed out elsewhere, or by an administrator): sign in again."),
);

accountPanel.bind({
  signIn(id, password) {
    unlockAudio(); // a click: from now on the ringtone may play
    return account.signIn(id, password);
  },
  signUp(form) {
    unlockAudio();
    return account.signUp(form);
  },
  async signInWithPasskey() {
    unlockAudio();
    await signInWithPasskey();
    await account.load(); // signed in: the account's `change` shows the page and connects
  },
  signUpWithPasskey(form) {
    unlockAudio();
    return account.signUp(form, signUpWithPasskey);
  },
  setInviteAside: () => account.dropInvite(),
  keepSignIn() {
    account.dropInvite();
    const me = account.me;
    if (!me) return;
    accountPanel.signedIn(me);
    if (signaling.state === "disconnected") connectAccount();
  },
  addPasskey: () => registerPasskey(account.csrf, thisBrowser()),
  signOut() {
    leaveAccount();
    return account.signOut();
  },
  signOutEverywhere() {
    leaveAccount();
    return account.signOutEverywhere();
  },
  sessions: () => account.sessions(),
  endSession: (sessionId) => account.endSession(sessionId),
  password: () => account.password(),
  setPassword: (password, current) => account.setPassword(password, current),
  deletePassword: () => account.deletePassword(),
  passkeys: () => account.passkeys(),
  deletePasskey: (id) => account.deletePasskey(id),
  invite: (admin) => account.invite({ admin }),
  users: (after) => account.users(after),
  setDisabled: (id, disabled) => account.setDisabled(id, disabled),
  endUserSessions: (id) => account.endUserSessions(id),
});

/**
 * The server has accounts: go on with the sign-in of an earlier visit, or sign up from an invite link, or sign in.
 * @param {boolean} passkeys the server takes passkeys (passkeys.js handles the button)
 */
async function startAccounts(passkeys) {
  accountPanel.passkeysSupported(passkeys && passkeysSupported()); // the server takes them, and this page can
  account.takeInvite();
  await openAccount();
}

/**
 * Show what the invite or the sign-in asks for: signed in (the sign-in of an earlier visit, or of another tab), the
 * page, or, with an invite, the news that it is for someone new; else the sign-up form of the invite, or sign in.
 */
async function openAccount() {
  if (account.me) {
    // an invite pasted into the address bar later
    if (account.pendingInvite) accountPanel.showInviteTaken(account.me, account.pendingInvite);
    return;
  }
  let problem = "";
  try {
    if (await account.resume()) return; // signed in: the account's `change` shows what comes next
  } catch (err) {
    problem = err instanceof Error ? err.message : String(err);
  }
  if (account.pendingInvite) accountPanel.showSignUp(problem);
  else accountPanel.showSignIn(problem);
}

// ---- the user --------------------------------------------------------------------------------------

/**
 * Connect as the name typed (or the token's user).
 * @param {string} typed
 */
function connectAs(typed) {
  const signIn = identity.signIn(typed);
  if ("tokenProblem" in signIn) {
    ui.rejectToken(signIn.tokenProblem);
    return;
  }
  if ("idProblem" in signIn) {
    ui.rejectId(signIn.idProblem);
    return;
  }
  if (identity.token) ui.nameFromToken(identity.tokenUser);
  ui.say("");
  if (signIn.id !== signaling.id) names.forget(); // what another user of this page was told is not this one's
  if (identity.token) names.learn(signIn.id, identity.tokenName); // our own name, as others see it
  callHistory.startFor(signIn.id);
  contacts.startFor(signIn.id);
  signaling.connect(signIn.id, { device: identity.device(), token: identity.serverToken });
}

ui.bind({
  connect(typed) {
    unlockAudio(); // a click: from now on the ringtone may play
    connectAs(typed);
  },
  disconnect() {
    phone.hangup();
    signaling.disconnect();
  },
  call(peerId) {
    unlockAudio();
    phone.startCall(calledId(peerId));
  },
  accept() {
    unlockAudio();
    phone.accept();
  },
  videoCall(peerId) {
    unlockAudio();
    phone.startCall(calledId(peerId), { video: true });
  },
  acceptVideo() {
    unlockAudio();
    phone.accept({ video: true });
  },
  toggleCamera: () => phone.toggleCamera(),
  toggleScreen: () => phone.toggleScreen(),
  chooseCamera(cameraId) {
    mediaDevices.chooseCamera(cameraId);
    phone.switchCamera(cameraId);
  },
  reject: () => phone.reject(),
  escape: () => phone.escape(),
  chooseMicrophone(microphoneId) {
    mediaDevices.chooseMicrophone(microphoneId);
    phone.switchMicrophone(microphoneId);
  },
  async chooseSpeaker(speakerId) {
    const problem = await mediaDevices.chooseSpeaker(speakerId);
    if (problem) ui.say(problem, "warning");
  },
  async enableNotifications() {
    await notifier.requestPermission();
    render();
  },
  retryNow() {
    signaling.reconnectNow();
    reachability.retryNow();
  },
  hangup: () => phone.hangup(),
  toggleMute: () => phone.toggleMute(),
  tokenChanged(text) {
    const problem = identity.useToken(text);
    if (!problem) ui.nameFromToken(identity.tokenUser);
    else if (text) console.info(`[main] ${problem}`);
  },
  relayOnlyChanged: (checked) => identity.rememberRelayOnly(checked),
  callBack(peerId) {
    callHistory.seen();
    unlockAudio();
    phone.startCall(peerId);
  },
  historySeen: () => callHistory.seen(),
  moreHistory: () => callHistory.more(),
  testAudio: () => phone.testAudio(),
});

callLinkPanel.bind({
  call(peerId) {
    unlockAudio();
    callLink.done();
    phone.startCall(peerId);
  },
  dismiss: () => callLink.done(),
});

contactsPanel.bind({
  add: (id, name) => contacts.add(id, name),
  accept: (id) => contacts.accept(id),
  decline: (id) => contacts.decline(id),
  remove: (id) => contacts.remove(id),
  rename: (id, name) => contacts.rename(id, name),
  block: (id) => contacts.block(id),
  unblock: (id) => contacts.unblock(id),
  setCallsFrom: (callsFrom) => contacts.setCallsFrom(callsFrom),
  search: (q) => contacts.search(q),
  searchMore: () => contacts.searchMore(),
  call(peerId) {
    unlockAudio();
    phone.startCall(calledId(peerId));
  },
  say: (text, kind) => ui.say(text, kind),
});

// ---- start -----------------------------------------------------------------------------------------

const startToken = identity.takeInitialToken();
ui.preset({
  id: page.id ?? params.get("id") ?? identity.savedName(),
  peer: page.peer ?? params.get("peer") ?? callLink.peer,
  token: startToken,
  relayOnly: identity.relayOnly,
});
/** @param {string|null} token the token the page was given: check it, and show its user as the name */
function showToken(token) {
  const tokenProblem = identity.useToken(token);
  if (tokenProblem) ui.rejectToken(tokenProblem);
  else ui.nameFromToken(identity.tokenUser);
}
showToken(startToken);

// A link pasted into the address bar of this open page only changes its `#…`: read it as at start.
addEventListener("hashchange", () => {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("token") && identity.authMode !== "accounts") {
    const token = identity.takeInitialToken();
    ui.preset({ token });
    showToken(token);
  }
  if (hash.has("invite") && identity.authMode === "accounts") {
    account.takeInvite();
    openAccount();
  }
});

/**
 * Whom "Who to call" names: a contact, by our name for them or their display name (case aside), if it names
 * exactly one and is not itself a contact's id; else what was typed (an id, or a problem the call explains).
 * People who sign in know each other by name, not by id.
 * @param {string} typed
 * @returns {string}
 */
function calledId(typed) {
  const key = typed.trim().toLocaleLowerCase();
  const all = contacts.view().contacts;
  if (!key || all.some((c) => c.id === typed)) return typed;
  const named = all.filter(
    (c) => c.name?.toLocaleLowerCase() === key || names.displayName(c.id)?.toLocaleLowerCase() === key,
  );
  return named.length === 1 ? named[0].id : typed;
}

/** Ask the server how to sign in (/healthz); with no answer, say so, and ask again later (offline.js). */
async function askServer() {
  const { authMode, relaysAll, canRelay, passkeys, answered } = await identity.askServer();
  reachability.serverAnswered(answered);
  if (!answered) return;
  ui.serverMode(authMode);
  if (relaysAll) ui.serverRelaysAll();
  else if (!canRelay) ui.serverCannotRelay();
  if (authMode === "token") ui.tokenRequired(Boolean(identity.token));
  if (authMode === "accounts") await startAccounts(passkeys);
  // Opened by a notification's Accept with a token at hand (token mode): connect at once, as Connect would.
  if (askedToAccept && authMode === "token" && identity.token && signaling.state === "disconnected") connectAs("");
}
askServer();
if (!page.id) registerServiceWorker(); // not from the two-tab demo pages: the app is index.html
if (!globalThis.isSecureContext) {
  // Plain http from another address than localhost: the browser will not give us a microphone. Say so now.
  ui.showInsecure(location.host);
  console.warn(`[main] ${INSECURE_TEXT}`);
}
mediaDevices.refresh();

// Back to the tab: calls that never rang here (silenced by the ring setting) are in the history by now.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && signaling.state === "connected") callHistory.refresh();
});

// "Last seen 3 min ago" and the like age: show them afresh now and then.
setInterval(() => {
  if (signaling.state === "connected") render();
}, 30_000);

addEventListener("pagehide", () => {
  phone.leave(); // a call that only rings here keeps ringing on our other devices
  signaling.disconnect();
});

render();

/** For tests and debugging in the console. */
globalThis.peercall = {
  signaling,
  /** The current call, or the last one. */
  get call() {
    return phone.call;
  },
  /** The current call's RTCPeerConnection, or null when no call is going on. */
  get pc() {
    return phone.pc;
  },
  /** The audio check going on, or the last one (null before the first). */
  get audioCheck() {
    return phone.audioCheck;
  },
  /** The current or last call's quality monitor (null before the first call connected). */
  get quality() {
    return phone.quality;
  },
  /** Whether the ringtone is playing (a call rings here). */
  get ringing() {
    return notifier.ringing;
  },
  ringtone: notifier.ringtone,
  ringback: notifier.ringback,
  /** The level meters' levels (0..1), as last shown: {microphone, remote}. */
  get levels() {
    return phone.levels;
  },
  /** The contacts, requests, blocks and ring setting, as the page shows them. */
  get contacts() {
    return contacts.view();
  },
  /** The `call-summary` frames sent so far. */
  get summaries() {
    return summaries.sent;
  },
  /** What this side says of its media (`local`) and what the peer said (`peer`, null until it says anything). */
  mediaState,
};
