/**
 * The phone: this device's calls, one at a time. Holds the current call (or the last one), decides which
 * frames belong to it, answers a second caller with "busy", keeps a call going while the connection to the
 * server is down (resume.js), takes the server's `call-ended` as the truth about how a call ended, measures a
 * call while it is connected (quality.js, and the levels of both voices), and runs "Test my audio" (an ordinary
 * call to the server's echo service, measured by audiocheck.js).
 *
 * Owns the current call, the ids of the calls that ended (frames that still name one are ignored), what the
 * page shows of a call besides the Call's own state (`callView()`), the call's quality monitor and level
 * meters, the audio check, and the call's resume. Links the page's MediaState (mediastate.js) to the current
 * call: what this side says goes out through the call, what the peer says comes in from it. Sends frames through the Signaling it is given; knows nothing
 * of the DOM: the page reacts to its events.
 *
 * Events:
 *  - `change`: something the page shows changed;
 *  - `audiocheckprogress`: only the audio check's progress moved;
 *  - `notice` ({text, kind}): a sentence for the user ("" clears the last one);
 *  - `ended` ({call, kind}): a call ended, or how it ended became clearer: say why (`kind` "info"/"warning");
 *  - `peerproblem` ({text}): the name to call is not one (a sentence for the field);
 *  - `elsewhereended`: our call on another device (`elsewhere`) ended: the history lists it now;
 *  - `remotestream` ({stream}): play the other side's audio (null: stop);
 *  - `remotevideo` ({track}): show the other side's video (null: none; the track may be muted: no frames);
 *  - `localvideo` ({stream, source}): preview what we send, the camera or the screen (null: nothing);
 *  - `microphoneopened`: the microphone permission was given (the media devices now have names);
 *  - `levels` ({microphone, remote}): the levels of both voices, 0..1.
 * @module phone
 */

import { AudioCheck, ECHO_ID } from "./audiocheck.js";
import { Call, CallPhase, CallSetupError } from "./call.js";
import { CallLevels, MediaError, canShareScreen } from "./media.js";
import { MediaState } from "./mediastate.js";
import { label } from "./names.js";
import { ErrorCode, MessageType, PEER_FRAMES, Reason, callReject, hangup, idProblem } from "./protocol.js";
import { QualityMonitor, VIDEO_LIMITS, videoTier } from "./quality.js";
import { Resume } from "./resume.js";
import { presenceChanges } from "./signaling.js";

/** End reasons the page words as a warning, not as plain information. */
const BAD_ENDS = Object.freeze(["failed", "signaling-lost", "unavailable", "refused", "no-relay", "peer-offline"]);

/**
 * What the page shows of a call besides the Call's own state.
 * @returns {{path: object|null, connectedAt: number, previous: CallPhase|null,
 *   quality: import("./quality.js").QualitySample|null, summary: import("./quality.js").CallSummary|null,
 *   peerDropped: boolean, mediaReconnecting: boolean, keepNotice: boolean}}
 */
function freshExtra() {
  return {
    path: null,
    connectedAt: 0,
    previous: null,
    quality: null,
    summary: null,
    peerDropped: false,
    mediaReconnecting: false,
    keepNotice: false, // the notice says something about this call (no camera): connecting does not clear it
  };
}

/** Why we cannot call while a call of ours goes on on another device (the server would refuse it: `in-call`). */
const ELSEWHERE_BLOCKS = "You are in a call on another device: you can call from here once it has ended.";

/** This device's calls, one at a time. */
export class Phone extends EventTarget {
  /** @type {Call|null} the current call, or the last one (then `call.active` is false) */ #call = null;
  /** @type {Set<string>} ids of calls that have ended */ #endedCallIds = new Set();
  #extra = freshExtra();
  /** @type {QualityMonitor|null} the current or last call's quality */ #monitor = null;
  #levels = new CallLevels();
  /** @type {AudioCheck|null} the audio check going on, or the last one */ #audioCheck = null;
  /** a call of ours goes on on another device, as our own presence says (none here: see {@link presence}) */
  #elsewhere = false;
  /** @type {string|null} a call to answer as soon as it rings here (a push notification's Accept) */
  #acceptOnArrival = null;
  #resume;
  #signaling;
  #summaries;
  #history;
  #callOptions;
  #mediaState;

  /**
   * @param {object} options
   * @param {import("./signaling.js").Signaling} options.signaling
   * @param {import("./summaries.js").CallSummaries} options.summaries where a call's summary goes when it ends
   * @param {import("./history.js").CallHistory} options.history told when a call ended or was missed
   * @param {() => Partial<ConstructorParameters<typeof Call>[0]>} options.callOptions what each new call is
   *   made with besides its direction and peer (audio constraints, relay-only, how to get the ICE servers)
   * @param {MediaState} [options.mediaState] what this side says of its media and what the peer said, for the
   *   current call (reset when a call starts)
   */
  constructor({ signaling, summaries, history, callOptions, mediaState = new MediaState() }) {
    super();
    this.#signaling = signaling;
    this.#summaries = summaries;
    this.#history = history;
    this.#callOptions = callOptions;
    this.#mediaState = mediaState;
    mediaState.addEventListener("localchange", ({ detail }) => {
      if (this.#call?.active) this.#call.sayMedia(detail.state);
    });
    mediaState.addEventListener("peerchange", () => this.#changed());
    this.#resume = new Resume({ current: () => this.#call, connected: () => signaling.state === "connected" });
    this.#levels.addEventListener("levels", (event) => this.#emit("levels", event.detail));
  }

  /** The current call, or the last one (null before the first). */
  get call() {
    return this.#call;
  }

  /** Whether a call is going on. */
  get active() {
    return Boolean(this.#call?.active);
  }

  /** Whether a call of ours goes on on another device (and none on this one): we cannot call until it ends. */
  get elsewhere() {
    return this.#elsewhere;
  }

  /** The current call's RTCPeerConnection, or null when no call is going on. */
  get pc() {
    return this.#call?.active ? this.#call.pc : null;
  }

  /** The audio check going on, or the last one (null before the first). */
  get audioCheck() {
    return this.#audioCheck;
  }

  /** The current or last call's quality monitor (null before the first call connected). */
  get quality() {
    return this.#monitor;
  }

  /** What this side says of its media and what the peer said, for the current call. */
  get mediaState() {
    return this.#mediaState;
  }

  /** The levels of both voices (0..1), as last read. */
  get levels() {
    return this.#levels.last;
  }

  /**
   * What the page shows about a call.
   * @param {Call} c
   * @returns {import("./ui.js").CallView}
   */
  callView(c) {
    const mine = c === this.#call ? this.#extra : freshExtra();
    return {
      quality: mine.quality,
      summary: mine.summary,
      mediaReconnecting: mine.mediaReconnecting,
      peerNote: c === this.#call ? this.#peerNote(c) : null,
      peerMedia: c === this.#call && c.active ? this.#mediaState.peer : null,
      phase: c.phase,
      peerId: c.peerId,
      direction: c.direction,
      reason: c.reason,
      remoteReason: c.remoteReason,
      detail: c.detail,
      previous: mine.previous,
      muted: c.muted,
      camera: c.camera,
      screen: c.screen,
      remoteVideo: c.remoteVideoLive,
      canShareScreen: canShareScreen(),
      path: mine.path,
      connectedAt: mine.connectedAt,
      outcome: c.outcome,
      endReason: c.endReason,
      failure: c.failure,
      mediaFailure: c.mediaError?.words ?? null,
    };
  }

  /**
   * What rings now: a call ringing here, and whether ours rings there (not for the audio check).
   * @returns {import("./notifications.js").Ringing}
   */
  ringing() {
    const c = this.#call;
    const incoming = Boolean(c?.active && c.phase === CallPhase.INCOMING);
    const outgoing = Boolean(c?.active && c.phase === CallPhase.REQUESTING && c.callIdConfirmed);
    return {
      incoming: incoming ? { peerId: c.peerId, callId: c.callId } : null,
      outgoing: outgoing && !this.#audioCheck?.running,
    };
  }

  /** The `deviceId` of the camera the current call uses, or "". */
  cameraInUse() {
    return this.#call?.active && this.#call.camera ? this.#call.cameraId : "";
  }

  /** The `deviceId` of the microphone the current call uses, or "". */
  microphoneInUse() {
    const track = this.#call?.active ? this.#call.localStream?.getAudioTracks()[0] : null;
    return track?.getSettings?.().deviceId ?? "";
  }

  // ---- the user's intents ------------------------------------------------------------------------

  /**
   * Call `peerId`.
   * @param {string} peerId
   * @param {{video?: boolean}} [options] video: a video call (the camera is on from the start)
   */
  async startCall(peerId, { video = false } = {}) {
    if (this.#call?.active) return;
    if (this.#elsewhere) {
      this.#notice(ELSEWHERE_BLOCKS, "warning");
      return;
    }
    const problem = !peerId
      ? "Enter the name of the person to call."
      : peerId === this.#signaling.id
        ? "That is your own name: enter someone else's."
        : idProblem(peerId);
    if (problem) {
      this.#emit("peerproblem", { text: problem });
      return;
    }
    this.#notice("");
    const c = this.#newCall({ direction: "outgoing", peerId, video });
    try {
      await c.start();
    } catch (err) {
      this.#callError(err);
    }
  }

  /**
   * Answer call `callId` as soon as it rings here (a push notification's Accept opened or focused this page):
   * at once if it rings already.
   * @param {string} callId
   */
  acceptWhenRings(callId) {
    if (this.#call?.callId === callId && this.#call.phase === CallPhase.INCOMING) {
      this.accept();
      return;
    }
    this.#acceptOnArrival = callId;
  }

  /**
   * Answer the call ringing here.
   * @param {{video?: boolean}} [options] video: with the camera on
   */
  async accept({ video = false } = {}) {
    const c = this.#call;
    if (c?.phase !== CallPhase.INCOMING) return;
    c.video = video;
    this.#notice("");
    try {
      await c.accept();
    } catch (err) {
      this.#callError(err);
    }
  }

  /** Decline the call ringing here. */
  reject() {
    this.#call?.reject();
  }

  /** Hang up (or cancel while it rings there). */
  hangup() {
    this.#call?.hangup();
  }

  /**
   * The page goes away (the tab closes, or navigates elsewhere). A call that only rings here is left alone:
   * declining it would decline it on every device of ours, and the server stops ringing this device when its
   * connection closes, so the call keeps ringing on the others. A call we answered, or placed, is hung up.
   */
  leave() {
    if (this.#call?.phase !== CallPhase.INCOMING) this.#call?.hangup();
  }

  /** Escape declines a ringing call, cancels ours while it rings, and hangs up a call. */
  escape() {
    if (this.#call?.phase === CallPhase.INCOMING) this.#call.reject();
    else if (this.#call?.active) this.#call.hangup();
  }

  /** Mute or unmute the call going on. */
  toggleMute() {
    if (this.#call?.active) this.#call.setMuted(!this.#call.muted);
  }

  /** Turn the camera on or off in the call going on (an audio call becomes a video call, and back). */
  async toggleCamera() {
    const c = this.#call;
    if (!c?.active || c.phase === CallPhase.INCOMING) return;
    await this.#video(() => c.setCamera(!c.camera));
  }

  /** Share a screen or a window in the call going on, or stop sharing. */
  async toggleScreen() {
    const c = this.#call;
    if (!c?.active || c.phase === CallPhase.INCOMING) return;
    await this.#video(() => c.shareScreen(!c.screen));
  }

  /**
   * Use another camera (now, if the camera is on).
   * @param {string} cameraId its `deviceId`
   */
  async switchCamera(cameraId) {
    const c = this.#call;
    if (c?.active) await this.#video(() => c.switchCamera(cameraId));
  }

  /**
   * Change the video; say why if it could not be done (the call goes on).
   * @param {() => Promise<void>} change
   */
  async #video(change) {
    try {
      await change();
      this.#notice("");
    } catch (err) {
      this.#callError(err);
    }
    this.#changed();
  }

  /**
   * Use another microphone at once in the call going on (the same one again restarts it).
   * @param {string} microphoneId its `deviceId`; "" for the system default
   */
  async switchMicrophone(microphoneId) {
    const c = this.#call;
    if (!c?.active || !c.localStream) return;
    try {
      await c.switchMicrophone(microphoneId);
      this.#notice("");
    } catch (err) {
      this.#callError(err);
    }
    this.#changed();
  }

  /**
   * Why "Test my audio" cannot be used right now (a sentence for its tooltip and hint), or null if it can.
   * @returns {string|null}
   */
  audioCheckBlocker() {
    const signaling = this.#signaling;
    if (signaling.state === "disconnected") return "Connect first: the test calls the server's echo service.";
    if (signaling.state !== "connected") return "Waiting for the connection to the server…";
    if (signaling.id === ECHO_ID) return `You are connected as “${ECHO_ID}”, the echo service's own name.`;
    if (!signaling.online.includes(ECHO_ID)) {
      return (
        "No echo service is online on this server, so there is nothing to test against " +
        "(its administrator can start one with “peercall serve --with-echo”)."
      );
    }
    if (this.#call?.active) {
      return this.#audioCheck?.running ? "The audio check is running." : "Finish the current call first.";
    }
    if (this.#elsewhere) return ELSEWHERE_BLOCKS;
    return null;
  }

  /** "Test my audio": call the echo service, measure the call, hang up by itself. */
  async testAudio() {
    if (this.audioCheckBlocker()) return;
    this.#notice("");
    const c = this.#newCall({ direction: "outgoing", peerId: ECHO_ID });
    const check = new AudioCheck(c);
    this.#audioCheck = check;
    check.addEventListener("change", () => {
      if (check !== this.#audioCheck) return;
      // Progress ticks only move the panel; state changes may change the rest of the page too.
      if (check.state === "measuring" && c.phase === CallPhase.CONNECTED) this.#emit("audiocheckprogress");
      else this.#changed();
    });
    this.#changed();
    try {
      await c.start();
    } catch (err) {
      this.#callError(err);
    }
  }

  // ---- the connection to the server ----------------------------------------------------------------

  /**
   * The signaling connection changed (its `statechange`): a call that cannot outlive it ends, and one that can
   * waits for the server to hand it back.
   * @param {{state: string, previous: string}} change
   */
  signalingChanged({ state, previous }) {
    if (this.#elsewhere && (state !== "connected" || previous !== "connected")) {
      // Not known while away (nor an end to tell): once connected again, the server says right after `welcome`
      // if a call of ours still goes on elsewhere.
      this.#elsewhere = false;
      this.#changed();
    }
    const c = this.#call;
    if (c?.active && state !== "connected") {
      if (state === "disconnected") {
        c.signalingLost();
      } else if (!this.#signaling.keepsCallState) {
        // A plain forwarding server forgets calls with the socket: only a call whose media already flows carries on.
        if (c.phase !== CallPhase.CONNECTED) c.signalingLost();
      } else {
        this.#resume.keepWhileReconnecting(Number(this.#signaling.welcome?.resumeGrace ?? 0));
      }
    }
    if (state === "connected" && previous === "reconnecting" && this.#signaling.keepsCallState) {
      this.#resume.awaitResume();
    }
  }

  /**
   * The network changed under a call (the `online` event, or `navigator.connection` says so): our address may
   * be a new one, so restart ICE, now if the server can carry the new offer, else once it is back.
   * @param {string} why
   */
  networkChanged(why) {
    const c = this.#call;
    if (!c?.active || ![CallPhase.CALLING, CallPhase.CONNECTED].includes(c.phase) || !c.pc) return;
    if (this.#signaling.isOpen) c.restartIce(why);
    else this.#resume.restartIceLater();
  }

  // ---- frames from the server ----------------------------------------------------------------------

  /**
   * Someone calls us.
   * @param {{from: string, callId?: string}} msg
   */
  callRequest(msg) {
    const c = this.#call;
    if (c?.active) {
      if (c.peerId === msg.from && c.callId === msg.callId) {
        // A duplicate: the server rings a device again after it reconnected while the call still rings.
        if (c.phase === CallPhase.INCOMING) this.#resume.clear();
        return;
      }
      if (c.peerId === msg.from && c.phase === CallPhase.REQUESTING) {
        // We are calling each other at once ("glare"). A server that keeps call state joins the two requests
        // into one call and sends us `call-accept` with our role; a plain forwarding server lets both ring out.
        console.info(`[phone] ${msg.from} is calling us while we call them; waiting for the server`);
        return;
      }
      // Already in a call: decline quietly, the user is not disturbed.
      console.info(`[phone] busy: declined a call from ${msg.from}`);
      this.#signaling.send(callReject(msg.from, msg.callId, Reason.BUSY));
      return;
    }
    this.#notice("");
    this.#newCall({ direction: "incoming", peerId: msg.from, callId: msg.callId });
    if (this.#acceptOnArrival !== null && this.#acceptOnArrival === msg.callId) {
      this.#acceptOnArrival = null;
      this.accept();
    }
  }

  /**
   * A frame for a call (call control or negotiation): hand it to the current call if it belongs to it.
   * @param {{type: string, from: string, callId?: string}} msg
   */
  callFrame(msg) {
    const c = this.#call;
    if (this.#belongsToCall(msg, msg.from)) {
      // Peer frames only ever follow call-accept, so they never name the call first.
      const negotiation = PEER_FRAMES.includes(msg.type);
      if (!negotiation) c.adoptCallId(msg.callId);
      if (!negotiation || c.callIdConfirmed) {
        c.handle(msg);
        return;
      }
    }
    const late = msg.type === MessageType.CALL_REJECT || msg.type === MessageType.HANGUP;
    if (late && c && !c.active && msg.callId === c.callId && msg.from === c.peerId) {
      // The peer's own reject/hangup after the server's call-ended: it may say more (e.g. no microphone).
      if (c.lateReason(msg)) {
        this.#explainEnd(c);
        this.#changed();
      }
      return;
    }
    if (msg.type === MessageType.OFFER) {
      // The peer thinks a call is still going (it missed our hangup): tell it there is none.
      this.#signaling.send(hangup(msg.from, msg.callId, Reason.USER_HANGUP));
    }
    console.debug(`[phone] ignored ${msg.type} from ${msg.from}: not part of the current call`);
  }

  /**
   * A `presence` frame. Our own change says whether we are in an answered call: on another device, if none is
   * going on here as it comes (the change that ends a call here comes after its `call-ended`; the one that says
   * a call we did not answer goes on, after its `answered-elsewhere`).
   * A server that keeps call state keeps the call while the peer reconnects, and says when it is over
   * (`call-ended`, reason peer-lost): meanwhile the page says that we are waiting for them. Only a plain relay
   * leaves it to us to notice that the peer is gone.
   * @param {object} msg
   */
  presence(msg) {
    const me = this.#signaling.id;
    for (const { id, inCall } of presenceChanges(msg)) {
      if (id === me) this.#setElsewhere(inCall === true && !this.#call?.active);
    }
    if (!this.#call?.active) return;
    for (const { id, status } of presenceChanges(msg)) {
      const c = this.#call;
      if (!c?.active || c.peerId !== id) continue;
      if (!this.#signaling.keepsCallState) {
        if (status === "offline") c.peerOffline();
      } else if (this.#extra.peerDropped !== (status === "offline")) {
        this.#extra.peerDropped = status === "offline";
        this.#changed();
      }
    }
  }

  /**
   * An `error` frame about calls.
   * @param {{code: string, message: string, ref?: string, to?: string, callId?: string}} msg
   * @returns {boolean} whether it was about calls (else the page deals with it)
   */
  serverError(msg) {
    const c = this.#call;
    const ours = this.#belongsToCall(msg, msg.to);
    const requestOfOurs = ours && c.phase === CallPhase.REQUESTING && msg.ref === MessageType.CALL_REQUEST;
    if (msg.ref === MessageType.MEDIA_STATE) {
      // The call ended meanwhile (its call-ended says so), or an older server does not know media-state: the
      // peer then learns of a mute as before, from the silence. Nothing to end, nothing to tell the user.
      console.info(`[phone] the server did not pass on our media-state: ${msg.code}: ${msg.message}`);
      return true;
    }
    switch (msg.code) {
      case ErrorCode.UNAVAILABLE:
        if (!ours) return true; // e.g. our "busy" reply to someone who has left since
        c.adoptCallId(msg.callId);
        if (requestOfOurs) c.unavailable();
        else c.peerOffline();
        return true;
      case ErrorCode.IN_CALL:
        // Our call-request was refused: the server still counts a call of ours (its callId names that one).
        if (c?.active && c.phase === CallPhase.REQUESTING && msg.to === c.peerId) c.refused(msg.message);
        else console.info(`[phone] server: ${msg.message}`);
        return true;
      case ErrorCode.NOT_IN_CALL:
        // The server has no such call (any more): e.g. it ended the call while we were away.
        if (ours) c.refused(msg.message);
        else console.info(`[phone] server: ${msg.message}`);
        return true;
      case ErrorCode.RATE_LIMITED:
        if (requestOfOurs) {
          c.refused(msg.message);
        } else if (ours && (msg.ref === MessageType.OFFER || msg.ref === MessageType.ANSWER)) {
          // The peer's connection lags: the server dropped it rather than the peer. Sent again shortly.
          console.info(`[phone] ${msg.message}; sending it again`);
          c.descriptionDropped(msg.ref);
        } else if (ours && msg.ref === MessageType.CANDIDATE) {
          console.info(`[phone] ${msg.message}`); // one path fewer to try: nothing the user can do about it
        } else {
          this.#notice(`The server is slowing this page down: ${msg.message}.`, "warning");
        }
        return true;
      case ErrorCode.SERVICE_UNAVAILABLE:
        if (requestOfOurs) {
          c.refused("the server cannot place calls for a moment; try again shortly");
        } else {
          // Said so that it holds either way: mostly nothing was done, but an accept or a hang-up that the server's
          // shared state received as it went takes effect once it is back (docs/protocol.md, service-unavailable).
          const text = "The server is briefly unable to handle calls; if nothing happens in a moment, try again.";
          this.#notice(text, "warning");
        }
        return true;
      case ErrorCode.ID_TAKEN:
      case ErrorCode.UNAUTHORIZED:
        return true; // the close that follows says it
      default:
        return false;
    }
  }

  /** @param {{callId: string, to: string}} msg a stateful server names the call we requested */
  callRinging(msg) {
    const c = this.#call;
    if (c?.active && c.phase === CallPhase.REQUESTING && msg.to === c.peerId) {
      c.adoptCallId(msg.callId);
      this.#changed(); // it rings there: the ringback tone starts
    }
  }

  /**
   * A stateful server ended a call of ours: the truth about how it ended. It also sends the seed protocol's
   * `hangup`/`call-reject`, which may carry the peer's own reason (e.g. "user-media-failed"); that one only
   * adds detail (see {@link callFrame}).
   * @param {{callId: string, outcome?: string, reason?: string}} msg
   */
  callEnded(msg) {
    const c = this.#call;
    if (!c || msg.callId !== c.callId) {
      console.debug(`[phone] call-ended for ${msg.callId}, not the current call`);
      return;
    }
    const wasActive = c.active;
    const ringingHere = c.direction === "incoming" && c.phase === CallPhase.INCOMING;
    if (!c.serverEnded(msg)) return;
    if (ringingHere && (msg.outcome === "missed" || msg.outcome === "cancelled")) {
      this.#history.addMissed(1); // a call that rang here and nobody took
    }
    if (!wasActive) this.#explainEnd(c); // we ended it first; the outcome may change the words
    this.#sendSummary(c);
    this.#history.refreshSoon(c.callId);
    this.#changed();
  }

  /**
   * After a reconnect, a stateful server says our call is still on: take it up again (re-send what was lost,
   * restart ICE if the connection suffered). If we no longer have that call, end it there too.
   * @param {{callId: string, peer: string, state: string, polite?: boolean}} msg
   */
  callResumed(msg) {
    const c = this.#call;
    if (this.#belongsToCall(msg, msg.peer)) {
      this.#resume.clear();
      c.adoptCallId(msg.callId);
      console.info(`[phone] call ${msg.callId} with ${msg.peer} resumed (${msg.state})`);
      this.#extra.peerDropped = false;
      c.resume(msg);
      if (this.#resume.takeIceRestart()) c.restartIce("the network changed while the server was away");
      this.#changed();
      return;
    }
    console.info(`[phone] the server resumed call ${msg.callId} with ${msg.peer}, which we no longer have`);
    this.#signaling.send(hangup(msg.peer, msg.callId, Reason.USER_HANGUP));
  }

  // ---- the current call ------------------------------------------------------------------------------

  /**
   * Make a new call the current one and follow it.
   * @param {{direction: "outgoing"|"incoming", peerId: string, callId?: string}} options
   * @returns {Call}
   */
  #newCall(options) {
    // A server that keeps call state has its own ring timer (`welcome.ringTimeout`): ours only backs it up.
    const serverRing = Number(this.#signaling.welcome?.ringTimeout);
    const c = new Call({
      ...options,
      ...this.#callOptions(),
      ringTimeoutMs: serverRing > 0 ? (serverRing + 5) * 1000 : undefined,
      send: (msg) => this.#signaling.send(msg),
    });
    this.#call = c;
    this.#extra = freshExtra();
    this.#mediaState.reset();
    this.#monitor?.stop();
    this.#monitor = null;
    this.#levels.stop();
    this.#resume.clear();
    c.addEventListener("phasechange", (event) => {
      if (c !== this.#call) return;
      const { phase, previous } = event.detail;
      this.#extra.previous = previous;
      if (phase === CallPhase.CONNECTED) {
        this.#extra.connectedAt = Date.now();
        if (!this.#extra.keepNotice) this.#notice("");
        this.#startQuality(c);
      }
      if (phase === CallPhase.ENDED) {
        if (c.callId) this.#endedCallIds.add(c.callId);
        this.#resume.clear();
        this.#emit("remotestream", { stream: null });
        this.#emit("remotevideo", { track: null });
        this.#emit("localvideo", { stream: null, source: null });
        this.#levels.stop();
        this.#finishQuality(c);
        this.#explainEnd(c);
        this.#history.refreshSoon(c.callId);
      }
      this.#changed();
    });
    c.addEventListener("track", (event) => {
      if (c !== this.#call) return;
      this.#emit("remotestream", { stream: event.detail.stream });
      this.#levels.measureRemote(event.detail.stream);
    });
    c.addEventListener("localtrack", (event) => {
      if (c !== this.#call || !c.active) return;
      this.#levels.measureMicrophone(event.detail.stream);
      this.#emit("microphoneopened"); // the microphone permission gives the media devices their names
    });
    c.addEventListener("connectionstatechange", (event) => {
      if (c !== this.#call) return;
      const { connectionState } = event.detail;
      // Once the audio worked, any other state means it is interrupted and ICE is (or will be) restarting.
      const reconnecting = c.active && c.everConnected && connectionState !== "connected";
      if (reconnecting !== this.#extra.mediaReconnecting) {
        this.#extra.mediaReconnecting = reconnecting;
        this.#changed();
      }
    });
    c.addEventListener("mutechange", () => {
      if (c !== this.#call) return;
      this.#mediaState.setLocal({ muted: c.muted }); // -> the call says it
      this.#changed();
    });
    c.addEventListener("peermedia", (event) => {
      if (c === this.#call && c.active) this.#mediaState.peerSaid(event.detail.data);
    });
    c.addEventListener("videochange", () => {
      if (c !== this.#call) return;
      // What the peer sees: the screen share, else the camera (a camera behind a share is not seen).
      this.#mediaState.setLocal({ camera: c.camera && !c.screen, screen: c.screen }); // -> the call says it
      this.#emit("localvideo", { stream: c.localVideo, source: c.screen ? "screen" : c.camera ? "camera" : null });
      this.#changed();
    });
    c.addEventListener("remotevideo", (event) => {
      if (c !== this.#call) return;
      this.#emit("remotevideo", { track: event.detail.track });
      this.#changed();
    });
    c.addEventListener("videoerror", (event) => {
      if (c !== this.#call) return;
      this.#extra.keepNotice = true;
      this.#callError(event.detail.error);
    });
    c.addEventListener("path", (event) => {
      if (c !== this.#call) return;
      this.#extra.path = event.detail;
      this.#changed();
    });
    this.#changed();
    return c;
  }

  /**
   * Whether a frame about the call with `peerId` is about the current call. Until the caller's call id is
   * confirmed (a stateful server assigns its own), any id from that peer is taken as this call's.
   * @param {{callId?: string}} msg
   * @param {string|undefined} peerId
   */
  #belongsToCall(msg, peerId) {
    const c = this.#call;
    return Boolean(
      c?.active &&
        peerId === c.peerId &&
        !this.#endedCallIds.has(msg.callId) &&
        (msg.callId === undefined || c.callId === undefined || msg.callId === c.callId || !c.callIdConfirmed),
    );
  }

  /**
   * A sentence about the other side during a call: their connection dropped (the server keeps the call for them
   * meanwhile), they said they muted their microphone (`media-state`), or the audio from them is silence although
   * they did not say so (a dead microphone; or a peer that says nothing of its media, which may have muted).
   * @param {Call} c
   * @returns {string|null}
   */
  #peerNote(c) {
    if (!c.active) return null;
    const who = label(c.peerId);
    if (this.#extra.peerDropped) return `${who}'s connection dropped — waiting for them…`;
    const said = this.#mediaState.peer;
    if (said?.muted) return `${who} muted their microphone.`;
    if (c.phase === CallPhase.CONNECTED && this.#extra.quality?.remoteSilent) {
      return said
        ? `No sound from ${who}: their microphone may not be working.`
        : `No sound from ${who}: they may have muted their microphone.`;
    }
    return null;
  }

  /** @param {Call} c a call that just connected */
  #startQuality(c) {
    this.#monitor?.stop();
    const m = new QualityMonitor(() => (c.active ? c.pc : null));
    this.#monitor = m;
    m.addEventListener("sample", (event) => {
      if (m !== this.#monitor || c !== this.#call || !c.active) return;
      this.#extra.quality = event.detail;
      c.limitVideo(VIDEO_LIMITS[videoTier(event.detail)]);
      this.#changed();
    });
    m.start();
  }

  /**
   * The call ended: sum it up, show it, and tell the server (once it has said the call ended).
   * @param {Call} c
   */
  #finishQuality(c) {
    const m = this.#monitor;
    if (!m || c !== this.#call) return;
    m.stop();
    if (!c.everConnected || !this.#extra.connectedAt) return;
    const durationSec = (Date.now() - this.#extra.connectedAt) / 1000;
    this.#extra.summary = m.summary(durationSec);
    this.#summaries.keep(c.callId, this.#extra.summary);
    this.#sendSummary(c);
  }

  /**
   * Send the call's `call-summary` once, after the server's `call-ended` (it refuses one before). A plain
   * forwarding server keeps no history: nothing is sent there.
   * @param {Call} c
   */
  #sendSummary(c) {
    const summary = this.#extra.summary;
    if (c !== this.#call || c.active || !summary || c.outcome === null || !c.callIdConfirmed) return;
    if (this.#signaling.keepsCallState) this.#summaries.send(c.callId, summary);
  }

  /**
   * Say why `c` ended (not for a microphone error, which says it, nor for the audio check, whose panel does).
   * @param {Call} c
   */
  #explainEnd(c) {
    if (c.reason === "no-microphone") return;
    if (this.#audioCheck?.call === c) {
      this.#notice("");
      return;
    }
    this.#emit("ended", { call: c, kind: BAD_ENDS.includes(c.reason) ? "warning" : "info" });
  }

  /** @param {unknown} err */
  #callError(err) {
    if (err instanceof MediaError && err.source !== "microphone") {
      this.#notice(err.message, err.kind === "denied" && err.source === "screen" ? "info" : "warning");
    } else if (err instanceof MediaError || err instanceof CallSetupError) {
      this.#notice(err.message, "error");
    } else {
      console.error("[phone] call failed:", err);
      this.#notice(`The call failed: ${err?.message ?? err}`, "error");
    }
  }

  /**
   * @param {string} text
   * @param {"info"|"warning"|"error"} [kind]
   */
  #notice(text, kind = "info") {
    this.#emit("notice", { text, kind });
  }

  #changed() {
    this.#emit("change");
  }

  /** @param {boolean} elsewhere */
  #setElsewhere(elsewhere) {
    if (elsewhere === this.#elsewhere) return;
    this.#elsewhere = elsewhere;
    // Our call on another device ended: the history lists it now.
    if (!elsewhere) this.#emit("elsewhereended");
    this.#changed();
  }

  /**
   * @param {string} type
   * @param {object} [detail]
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
