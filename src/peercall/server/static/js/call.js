/**
 * One call with one peer: the microphone, the RTCPeerConnection and the call phase machine (this side's view of
 * the call: requesting, incoming, calling, connected, ended; the server's view is the call *state*).
 *
 * Owns the mic tracks, the peer connection and the call's timers; knows nothing of the DOM and nothing of
 * the WebSocket (frames go out through the `send` function it is given, and come in through `handle()`).
 *
 * Negotiation is "perfect negotiation" (MDN; webrtc/samples peer.js): the callee is polite, the caller is
 * impolite; `makingOffer`/`ignoreOffer`, no-argument `setLocalDescription()`. A connection that worked and
 * then breaks restarts ICE (`restartIce()`) as soon as nothing has arrived from the peer for `STALL_RESTART_MS`
 * (audio packets flow all call long, muted too), after `DISCONNECTED_RESTART_MS` of `disconnected`, at once on
 * `failed` or when the network changes, one restart at a time with a backoff; the call keeps its id.
 * Candidates are trickled both ways, and incoming ones wait in a queue until the remote description is set.
 * Nothing ever waits for ICE gathering to complete.
 *
 * Flow: caller `start()` (mic and ICE servers, then `call-request`) → callee `accept()` (mic and ICE servers,
 * then `call-accept`) → caller adds its track, `negotiationneeded` → offer → callee answers →
 * `connectionState` "connected". The ICE servers (and TURN credentials, which expire) are fetched for every
 * call. If no candidate pair succeeds within `iceTimeoutMs` of the offer/answer, the call is hung up with
 * reason `ice-timeout` (or `ice-failed`), and `failure` says why in words (e.g. the relay refused us).
 *
 * Video (camera or screen) rides on one video transceiver, kept once it exists: turning the camera off sends no
 * track and makes the transceiver `recvonly`, turning it on again (or sharing a screen) puts a track back and makes
 * it `sendrecv`. Each change is one renegotiation through the same perfect negotiation, so both sides may toggle at
 * once. The first video track goes in with `addTrack`, never `addTransceiver`: when both sides add one at the same
 * time, the polite side's rollback lets the impolite side's offer take over its transceiver (JSEP), and the call
 * keeps a single video m-line. A screen share replaces the camera's track on that transceiver (`replaceTrack`);
 * when it stops (our button or the browser's own "Stop sharing") the camera comes back if it was on.
 *
 * The call outlives its signaling connection: the WebSocket may drop and come back (`resume()`), and the
 * audio goes on meanwhile. A server that keeps call state has the last word on how a call ended
 * (`serverEnded()`: `outcome` and `endReason`).
 *
 * A server that keeps call state may assign the call id (`call-ringing`) and the roles (`polite` in
 * `call-accept`, e.g. when two people call each other at once); the call adopts both. A plain forwarding
 * server does neither, and then the caller's own call id and the default roles hold.
 * @module call
 */

import * as protocol from "./protocol.js";
import { MessageType, Reason } from "./protocol.js";
import { fetchIceConfig, hasTurn, iceFailureText } from "./ice.js";
import { VOICE, openCamera, openMicrophone, openScreen } from "./media.js";
import { NOTHING_SAID } from "./mediastate.js";

/** @typedef {import("./ice.js").IceConfig} IceConfig */


/**
 * Why a call ended, from this side's point of view.
 * @typedef {"hangup"|"remote-hangup"|"rejected"|"busy"|"declined"|"unavailable"|"peer-offline"|
 *   "no-microphone"|"no-answer"|"failed"|"signaling-lost"|"answered-elsewhere"|"refused"|"no-relay"
 * } EndReason
 */

/**
 * The call phases: this side's view of its call (the server's view, `ringing`/`answered`/`ended`, is the call
 * state). Use these constants, never the strings.
 * @enum {string}
 */
export const CallPhase = Object.freeze({
  REQUESTING: "requesting",
  INCOMING: "incoming",
  CALLING: "calling",
  CONNECTED: "connected",
  ENDED: "ended",
});

/**
 * The phase machine as one table: TRANSITIONS[phase][event] -> next phase. A missing entry is an
 * invalid transition: it is logged and ignored (a late or duplicated frame must not break a call).
 */
const TRANSITIONS = Object.freeze({
  [CallPhase.REQUESTING]: { accepted: CallPhase.CALLING, end: CallPhase.ENDED },
  [CallPhase.INCOMING]: { accept: CallPhase.CALLING, end: CallPhase.ENDED },
  [CallPhase.CALLING]: { connected: CallPhase.CONNECTED, end: CallPhase.ENDED },
  [CallPhase.CONNECTED]: { end: CallPhase.ENDED },
  [CallPhase.ENDED]: {},
});

/** How long a call may ring before the caller gives up (ms). */
export const RING_TIMEOUT_MS = 45_000;
/** How long the offer/answer may take to arrive after the call is accepted (ms). */
export const MEDIA_TIMEOUT_MS = 30_000;
/** How long ICE may take to find a working candidate pair after the offer/answer, or after a restart (ms). */
export const ICE_TIMEOUT_MS = 10_000;
/**
 * How long a connection that once worked may stay `disconnected` before this side restarts ICE (ms). Browsers say
 * `disconnected` a few seconds after the last packet from the peer, and `failed` only some 10 s later: after a
 * network change (a new address) the old candidate pair never comes back, so waiting for `failed` is dead air.
 */
export const DISCONNECTED_RESTART_MS = 3000;
/**
 * How long a connected call may receive nothing before this side restarts ICE (ms). Audio packets come 50 times a
 * second for the whole call (a muted microphone sends silence), so 1.5 s without one means the path broke: a
 * browser only says `disconnected` some 5 s after the last packet. Checked every `STALL_CHECK_MS`.
 */
export const STALL_RESTART_MS = 1500;
export const STALL_CHECK_MS = 250;
/** The least time between two ICE restarts of one outage; it doubles after each restart, up to the max (ms). */
export const RESTART_BACKOFF_MS = 3000;
export const RESTART_BACKOFF_MAX_MS = 24_000;

/** Why a call whose audio worked ended: its path broke, and ICE restarts found no new one in time. */
const LOST_TEXT = "The audio connection was lost and could not be restored (the network may have changed).";

/** How a `hangup` from the other side (or the server on its behalf) ends the call, by its `reason`. */
const HANGUP_REASONS = Object.freeze({
  [Reason.INVITE_TIMEOUT]: "no-answer",
  [Reason.PEER_LOST]: "peer-offline",
  [Reason.ANSWERED_ELSEWHERE]: "answered-elsewhere",
  [Reason.ICE_FAILED]: "failed",
  [Reason.ICE_TIMEOUT]: "failed",
  [Reason.USER_MEDIA_FAILED]: "failed",
});

/** How a server's `call-ended` ends the call, by its `outcome` (`answered`/`cancelled`: by the reason). */
const ENDED_OUTCOMES = Object.freeze({
  busy: "busy",
  rejected: "rejected",
  unavailable: "unavailable",
  missed: "no-answer",
  failed: "failed",
});

/**
 * The `reason` a `call-reject` or `hangup` carries, if any.
 * @param {{data?: any}} msg
 * @returns {string|null}
 */
function remoteReason(msg) {
  const reason = msg.data?.reason;
  return typeof reason === "string" ? reason : null;
}

/** A call could not be set up for a reason the user can act on; `message` is a sentence for them. */
export class CallSetupError extends Error {
  /**
   * @param {"no-relay"} kind
   * @param {string} message
   */
  constructor(kind, message) {
    super(message);
    this.name = "CallSetupError";
    this.kind = kind;
  }
}

/**
 * A call with one peer.
 *
 * Events: `phasechange` ({phase, previous, reason?, remoteReason?}), `track` ({stream}: the peer's audio),
 * `connectionstatechange` ({connectionState}; also `"stalled"`: connected, but nothing arrived for
 * `STALL_RESTART_MS`, and ICE is restarting), `mutechange` ({muted}), `path` ({local, remote, protocol}:
 * the candidate types of the selected pair, once connected), `localtrack` ({track, stream}: the microphone
 * was opened, or switched to another one), `videochange` ({camera, screen}: what this side sends changed;
 * `localVideo` is what to preview), `remotevideo` ({track}: the peer's video track arrived, or a negotiation
 * ended, after which the peer may send video or not: `remoteVideoLive`), `peermedia` ({data}: the peer's
 * `media-state`).
 */
export class Call extends EventTarget {
  /** @type {CallPhase} */ #phase;
  /** @type {EndReason|null} */ #reason = null;
  /** @type {string|null} */ #remoteReason = null;
  /** @type {RTCPeerConnection|null} */ #pc = null;
  /** @type {MediaStream|null} */ #local = null;
  /** @type {MediaStream|null} */ #remote = null;
  /** @type {IceConfig|null} */ #ice = null;
  /** performance.now() when #ice was fetched */ #iceFetchedAt = 0;
  /** @type {{errorCode: number, url: string, errorText: string}[]} */ #iceErrors = [];
  #relayCandidates = 0;
  #everConnected = false;
  /** @type {string|null} a sentence saying why the audio could not connect */ #failure = null;
  /** @type {import("./media.js").MediaError|null} the device that could not be opened, ending the call */
  #mediaError = null;
  /** @type {string|null} the server's `call-ended` outcome */ #outcome = null;
  /** @type {string|null} the server's `call-ended` reason */ #endReason = null;
  #relayOnly;
  /** @type {string|null} a sentence from the server, when it refused the call ("refused") */ #detail = null;
  #send;
  #audio;
  #getIceConfig;
  #ringTimeoutMs;
  #iceTimeoutMs;
  #makingOffer = false;
  #ignoreOffer = false;
  #trackAdded = false;
  /** @type {(RTCIceCandidateInit|null)[]} */ #pendingCandidates = [];
  #inbox = Promise.resolve();
  #timer = 0;
  /** a restart of ICE waiting for `disconnected` to last, or for the backoff to pass */ #restartTimer = 0;
  /** performance.now() of the last ICE restart of the current outage */ #restartedAt = -Infinity;
  #restartBackoffMs = RESTART_BACKOFF_MS;
  /** the check for packets from the peer (`#watchPackets`) */ #stallTimer = 0;
  /** our offer or answer sent again after the server dropped it (`descriptionDropped`) */ #redescribeTimer = 0;
  /** how many times in a row it was dropped */ #redescribed = 0;
  #muted = false;
  /** @type {MediaStream|null} our camera, while it is on */ #camera = null;
  /** @type {string} the `deviceId` of the camera to use ("" for the default) */ #cameraId = "";
  /** @type {MediaStream|null} the screen or window we share, while we do */ #screen = null;
  /** @type {MediaStreamTrack|null} the peer's video track, once one arrived */ #remoteVideo = null;
  /** @type {string} the bandwidth limits last put on the video sender (JSON), "" before any */ #videoLimits = "";
  /** @type {import("./mediastate.js").MediaStateData} what this side says of its media (`sayMedia`) */
  #media = NOTHING_SAID;
  /** whether the call is answered on both sides as far as we know: `media-state` may go out */ #answered = false;

  /**
   * @param {object} options
   * @param {"outgoing"|"incoming"} options.direction
   * @param {string} options.peerId
   * @param {string} [options.callId] the caller makes one up; the callee uses the caller's
   * @param {(msg: object) => boolean} options.send sends one client frame; false if it could not
   * @param {MediaTrackConstraints} [options.audio]
   * @param {() => Promise<IceConfig|RTCIceServer[]>} [options.getIceConfig] fetched before the call (and
   *   again before an ICE restart once the TURN credentials are half-way through their lifetime)
   * @param {boolean} [options.relayOnly] use only relayed candidates (hides our IP address from the peer)
   * @param {number} [options.ringTimeoutMs] how long the caller lets it ring before it hangs up
   * @param {number} [options.iceTimeoutMs] how long ICE may take after the offer/answer
   * @param {boolean} [options.video] a video call: the camera is opened with the microphone (`start`/`accept`)
   * @param {string} [options.cameraId] the camera to use ("" for the default)
   */
  constructor({
    direction,
    peerId,
    callId,
    send,
    audio = VOICE,
    getIceConfig = fetchIceConfig,
    relayOnly = false,
    ringTimeoutMs = RING_TIMEOUT_MS,
    iceTimeoutMs = ICE_TIMEOUT_MS,
    video = false,
    cameraId = "",
  }) {
    super();
    this.direction = direction;
    this.peerId = peerId;
    this.callId = callId ?? (direction === "outgoing" ? protocol.newCallId() : undefined);
    /**
     * Whether `callId` is the one the other side and the server use too: always for the callee; for the
     * caller once the server or the peer has named the call (a stateful server assigns its own id).
     */
    this.callIdConfirmed = direction === "incoming";
    /** The callee is polite (it yields on offer collisions), the caller impolite, unless the server says. */
    this.polite = direction === "incoming";
    this.#send = send;
    this.#audio = audio;
    this.#getIceConfig = getIceConfig;
    this.#relayOnly = Boolean(relayOnly);
    this.#ringTimeoutMs = ringTimeoutMs;
    this.#iceTimeoutMs = iceTimeoutMs;
    this.#cameraId = cameraId;
    /** Whether the call starts with the camera on (a "Video call"). */
    this.video = Boolean(video);
    this.#phase = direction === "outgoing" ? CallPhase.REQUESTING : CallPhase.INCOMING;
    /** performance.now() of each milestone, for logs and measurements. */
    this.timeline = { created: performance.now() };
    /** How many times the microphone was switched during the call ({@link Call#switchMicrophone}). */
    this.micSwitches = 0;
  }

  /** This side's view of the call. @returns {CallPhase} */
  get phase() {
    return this.#phase;
  }
  /** Whether the call is still going (ringing, negotiating or connected). */
  get active() {
    return this.#phase !== CallPhase.ENDED;
  }
  /** @returns {EndReason|null} why the call ended (null while active) */
  get reason() {
    return this.#reason;
  }
  /** The `reason` the peer gave in its `call-reject`/`hangup`, if any. */
  get remoteReason() {
    return this.#remoteReason;
  }
  /** The current RTCPeerConnection (null before the call is accepted; closed after it ended). */
  get pc() {
    return this.#pc;
  }
  /** Our microphone stream (null until opened; its tracks are stopped when the call ends). */
  get localStream() {
    return this.#local;
  }
  /** The peer's audio (null until it arrives). */
  get remoteStream() {
    return this.#remote;
  }
  get muted() {
    return this.#muted;
  }
  /** Whether our camera is on (it is sent unless a screen share takes its place). */
  get camera() {
    return this.#camera !== null;
  }
  /** Whether we share a screen or a window. */
  get screen() {
    return this.#screen !== null;
  }
  /** What we send as video, to preview: the screen share, else the camera, else null. */
  get localVideo() {
    return this.#screen ?? this.#camera;
  }
  /** The `deviceId` of the camera in use (or to be used), "" for the default. */
  get cameraId() {
    return this.#camera?.getVideoTracks()[0]?.getSettings?.().deviceId ?? this.#cameraId;
  }
  /** The peer's video track (null until one arrived; it stays, muted, while they send none). */
  get remoteVideo() {
    return this.#remoteVideo;
  }
  /**
   * Whether the peer sends us video (their camera or screen share is on), as the last negotiation says: their side
   * of the video transceiver sends. Not the track's `muted`: Chrome leaves a track muted for good when a rolled-back
   * transceiver is taken over by the peer's offer, frames or not.
   */
  get remoteVideoLive() {
    const t = this.#remoteVideo;
    const direction = this.#videoTransceiver()?.currentDirection;
    return Boolean(this.active && t?.readyState === "live" && (direction === "sendrecv" || direction === "recvonly"));
  }
  /** "polite" or "impolite": the prefix of this call's log lines. */
  get role() {
    return this.polite ? "polite" : "impolite";
  }
  /** What the server said when it refused the call (reason "refused"), or why the call could not start. */
  get detail() {
    return this.#detail;
  }
  /** The server's `call-ended` outcome ("answered", "missed"…), or null (not ended, or a plain forwarding server). */
  get outcome() {
    return this.#outcome;
  }
  /** The server's `call-ended` reason ("user-hangup", "peer-lost"…), or null. */
  get endReason() {
    return this.#endReason;
  }
  /** Why the audio could not connect, as a sentence (set when the call failed on this side), or null. */
  get failure() {
    return this.#failure;
  }
  /** Why the microphone could not be opened, when that ended the call (reason "no-microphone"), or null. */
  get mediaError() {
    return this.#mediaError;
  }
  /** The ICE transport policy of this call: "relay" when the user or the server wants relayed audio only. */
  get iceTransportPolicy() {
    return this.#relayOnly || this.#ice?.iceTransportPolicy === "relay" ? "relay" : "all";
  }
  /** The ICE candidate errors seen so far ({errorCode, url, errorText}). */
  get iceErrors() {
    return [...this.#iceErrors];
  }

  /**
   * Take the id that the server (or the peer) uses for this call.
   * @param {string} callId
   */
  adoptCallId(callId) {
    if (this.callIdConfirmed || !callId) return;
    if (callId !== this.callId) this.#log(`call id ${callId} (assigned by the server)`);
    this.callId = callId;
    this.callIdConfirmed = true;
  }

  /**
   * What the caller's start and the callee's accept share: open the mic and (in a video call) the camera while
   * the ICE servers are fetched. Resolves true when the call may go on; false if it was hung up meanwhile (the
   * permission prompt was open), the mic then closed again. Rejects with the MicrophoneError if the mic cannot be
   * opened ("no-microphone"; a camera that opened is stopped) or with the relay problem if the ICE servers cannot
   * reach the peer ("no-relay"); `tellPeer(reason)` runs first, with `user-media-failed` or `ice-failed`.
   * @param {string} role "start" or "accept", for the log
   * @param {(reason: string) => void} tellPeer
   * @returns {Promise<boolean>}
   */
  async #openMedia(role, tellPeer) {
    this.#log(`${role}: opening the microphone${this.video ? " and the camera" : ""}, fetching the ICE servers`);
    const [mic, , camera] = await Promise.allSettled([
      openMicrophone(this.#audio),
      this.#fetchIce(),
      this.#openStartCamera(),
    ]);
    if (mic.status === "rejected") {
      if (camera.status === "fulfilled") for (const t of camera.value?.getTracks() ?? []) t.stop();
      this.#mediaError = mic.reason;
      tellPeer(Reason.USER_MEDIA_FAILED);
      this.#end("no-microphone");
      throw mic.reason;
    }
    this.#local = mic.value;
    this.#localTrackEvent();
    this.#startCamera(camera);
    const noRelay = this.#relayProblem();
    if (noRelay && this.active) {
      tellPeer(Reason.ICE_FAILED);
      this.#detail = noRelay.message;
      this.#end("no-relay");
      throw noRelay;
    }
    if (!this.active) {
      this.#stopMicrophone();
      return false;
    }
    return true;
  }

  /**
   * Caller: open the mic, then ring the peer. Rejects with MicrophoneError if the mic cannot be opened
   * (the call then ends with reason "no-microphone" and nothing was sent).
   */
  async start() {
    if (!(await this.#openMedia("start", () => {}))) return;
    if (!this.#sendMsg(protocol.callRequest(this.peerId, this.callId))) {
      this.#end("signaling-lost");
      return;
    }
    this.timeline.requested = performance.now();
    this.#log(`call-request sent to ${this.peerId}`);
    this.#startTimer(this.#ringTimeoutMs, () => this.hangup(Reason.INVITE_TIMEOUT, "no-answer"));
  }

  /**
   * Callee: open the mic, prepare the peer connection, then tell the caller. Rejects with
   * MicrophoneError if the mic cannot be opened (the caller then gets `call-reject` "user-media-failed").
   */
  async accept() {
    if (!this.#transition("accept")) return;
    this.timeline.accepted = performance.now();
    const reject = (reason) => this.#sendMsg(protocol.callReject(this.peerId, this.callId, reason));
    if (!(await this.#openMedia("accept", reject))) return;
    this.#createPeerConnection();
    if (!this.#sendMsg(protocol.callAccept(this.peerId, this.callId))) {
      this.#end("signaling-lost");
      return;
    }
    this.#log(`call-accept sent to ${this.peerId}; waiting for the offer`);
    this.#answered = true;
    this.#sendMedia();
    this.#startTimer(MEDIA_TIMEOUT_MS, () => this.#giveUp());
  }

  /**
   * Callee: decline the ringing call.
   * @param {string} [reason] sent to the caller (default "user-rejected")
   */
  reject(reason = Reason.USER_REJECTED) {
    if (this.#phase !== CallPhase.INCOMING) return;
    this.#sendMsg(protocol.callReject(this.peerId, this.callId, reason));
    this.#end("declined");
  }

  /**
   * Hang up (or cancel while ringing): tell the peer, release everything.
   * @param {string} [wireReason] `reason` sent to the peer (default "user-hangup")
   * @param {EndReason} [reason] how this side records the end (default "hangup")
   */
  hangup(wireReason = Reason.USER_HANGUP, reason = "hangup") {
    if (!this.active) return;
    if (this.#phase === CallPhase.INCOMING) {
      this.reject();
      return;
    }
    this.#sendMsg(protocol.hangup(this.peerId, this.callId, wireReason));
    this.#end(reason);
  }

  /**
   * The peer went offline (presence), or the server says it is no longer reachable. The call is over for
   * us; a `hangup` still goes out, so that a server which keeps call state ends it too.
   */
  peerOffline() {
    if (!this.active) return;
    this.#sendMsg(protocol.hangup(this.peerId, this.callId, Reason.PEER_LOST));
    this.#end("peer-offline");
  }

  /** The server answered our `call-request` with `unavailable`: the peer is not online. */
  unavailable() {
    if (this.active) this.#end("unavailable");
  }

  /**
   * The server refused this call or a frame of it (`in-call`, `not-in-call`): as far as the server is
   * concerned the call does not exist, so nothing is sent.
   * @param {string} message the server's sentence
   */
  refused(message) {
    if (!this.active) return;
    this.#detail = message;
    this.#end("refused");
  }

  /**
   * A server that keeps call state says how the call ended (`call-ended`): the truth about the call. Ends
   * it if it is still going; if this side ended it first, only the outcome is noted.
   * @param {{outcome?: string, reason?: string}} ended
   * @returns {boolean} whether anything changed
   */
  serverEnded({ outcome, reason }) {
    if (this.#outcome !== null) return false;
    this.#outcome = outcome ?? null;
    this.#endReason = reason ?? null;
    this.#log(`call-ended from the server: ${outcome} (${reason})`);
    const refused = this.#iceErrors.some((e) => e.errorCode === 401 || e.errorCode === 403);
    if (outcome === "failed" && !this.#everConnected && refused) {
      // The peer gave up on ICE, and we saw why on our side too: our relay refused us as well.
      this.#failure = iceFailureText(this.#iceErrors, {
        relayOnly: this.iceTransportPolicy === "relay",
        relayCandidates: this.#relayCandidates,
      });
    }
    if (this.active) {
      this.#remoteReason ??= reason ?? null;
      const mine =
        reason === Reason.ANSWERED_ELSEWHERE || reason === Reason.PEER_LOST
          ? HANGUP_REASONS[reason]
          : ENDED_OUTCOMES[outcome] ?? HANGUP_REASONS[reason] ?? "remote-hangup";
      this.#end(mine);
    }
    return true;
  }

  /**
   * The peer's own `call-reject`/`hangup` arrived after the server's `call-ended` already ended the call:
   * keep the peer's reason (e.g. "user-media-failed"), which says more than the server's.
   * @param {{data?: any}} msg
   * @returns {boolean} whether the reason changed
   */
  lateReason(msg) {
    const reason = remoteReason(msg);
    if (this.active || !reason || reason === this.#remoteReason) return false;
    if (this.#remoteReason !== null && this.#remoteReason !== this.#endReason) return false;
    this.#remoteReason = reason;
    return true;
  }

  /**
   * Restart ICE: a new offer with new ICE credentials, gathering again (e.g. after the network changed, or
   * the connection failed). Fetches fresh TURN credentials first if the ones in use are getting old.
   *
   * One restart at a time: a restart asked for within the backoff of the previous one (3 s, doubling up to 24 s
   * until the connection works again) is put off until the backoff has passed, and several asked for meanwhile
   * make one. If both sides restart at once, perfect negotiation lets the impolite side's offer win.
   * @param {string} [why] for the log
   */
  async restartIce(why = "") {
    const pc = this.#pc;
    if (!this.active || !pc || pc.signalingState === "closed") return;
    const wait = this.#restartedAt + this.#restartBackoffMs - performance.now();
    if (wait > 0) {
      if (!this.#restartTimer) {
        this.#log(`restartIce() in ${Math.round(wait)} ms (backoff)${why ? `: ${why}` : ""}`);
        this.#restartTimer = setTimeout(() => {
          this.#restartTimer = 0;
          this.restartIce(why);
        }, wait);
      }
      return;
    }
    clearTimeout(this.#restartTimer);
    this.#restartTimer = 0;
    this.#restartedAt = performance.now();
    this.#restartBackoffMs = Math.min(this.#restartBackoffMs * 2, RESTART_BACKOFF_MAX_MS);
    const ttl = this.#ice?.ttl;
    if (ttl && performance.now() - this.#iceFetchedAt > (ttl * 1000) / 2) {
      await this.#fetchIce();
      if (pc !== this.#pc || !this.active) return;
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.#ice.iceServers });
      } catch (err) {
        console.warn(`[${this.role}] could not renew the ICE servers:`, err);
      }
    }
    this.#log(`restartIce()${why ? `: ${why}` : ""}`);
    this.timeline.iceRestarts = [...(this.timeline.iceRestarts ?? []), performance.now()];
    pc.restartIce();
    if (pc.connectionState !== "connected") this.#startIceTimer();
  }

  /**
   * Our signaling connection came back and the server handed the call over to it (`call-resumed`).
   * Frames sent meanwhile were lost: take up what they would have done.
   * @param {{state?: string, polite?: boolean}} resumed
   */
  resume({ state, polite }) {
    if (!this.active) return;
    this.#log(`resumed (the server says the call is ${state})`);
    if (this.#phase === CallPhase.REQUESTING && state === "answered") {
      // The callee accepted while we were away, and its call-accept was lost.
      this.#onAccepted({ polite });
      return;
    }
    if (state === "answered") this.#sendMedia(); // ours may have been lost while a connection was away
    const pc = this.#pc;
    if (!pc || pc.signalingState === "closed") return;
    if (pc.signalingState === "have-local-offer" && pc.localDescription) {
      this.#log("re-sending our offer (it may have been lost)");
      this.#sendMsg(protocol.description(this.peerId, pc.localDescription, this.callId));
    } else if (["failed", "disconnected"].includes(pc.connectionState) || pc.iceConnectionState === "failed") {
      this.restartIce(`the connection is ${pc.connectionState} after the resume`);
    }
  }

  /**
   * The server dropped our offer or answer (`rate-limited`: the peer's connection lags behind what it is sent):
   * send it again after a pause that doubles each time in a row (0.5 s, then up to 8 s; five tries), while it is
   * still the description the peer lacks. Without it, a renegotiation (a camera, a screen share, an ICE restart)
   * waited for ever, and a call's start until its ICE timer hung up.
   * @param {"offer"|"answer"} kind
   */
  descriptionDropped(kind) {
    if (!this.active) return;
    this.#redescribed += 1;
    if (this.#redescribed > 5) {
      this.#log(`our ${kind} was dropped again; not sending it any more`);
      return;
    }
    clearTimeout(this.#redescribeTimer);
    this.#redescribeTimer = setTimeout(() => {
      const pc = this.#pc;
      if (!this.active || !pc) return;
      const lacking = kind === "offer" ? "have-local-offer" : "stable";
      if (pc.signalingState !== lacking || pc.localDescription?.type !== kind) return; // moved on meanwhile
      this.#log(`re-sending our ${kind} (the server dropped it: the peer's connection lags)`);
      this.#sendMsg(protocol.description(this.peerId, pc.localDescription, this.callId));
    }, 500 * 2 ** (this.#redescribed - 1));
  }

  /**
   * Our signaling connection is gone for good (or did not come back in time), so this call cannot be set up
   * or kept any more.
   */
  signalingLost() {
    if (this.active) this.#end("signaling-lost");
  }

  /**
   * Use another microphone, now and for the rest of the call: open it, hand its track to the audio sender
   * (`replaceTrack`: no renegotiation, the call goes on), then stop the old one. Also when `microphoneId` names the
   * microphone already in use (or the system default), so that a microphone that stopped working can be restarted.
   * Keeps the mute state.
   * @param {string|null} microphoneId its `MediaDeviceInfo.deviceId`; null or "" for the system default
   * @returns {Promise<MediaStreamTrack|null>} the new track, or null if the call is not using a microphone
   * @throws {MicrophoneError} if that microphone cannot be opened (the old one is kept)
   */
  async switchMicrophone(microphoneId) {
    if (!this.active || !this.#local) return null;
    const audio = { ...this.#audio };
    delete audio.deviceId;
    if (microphoneId) audio.deviceId = { exact: microphoneId };
    const stream = await openMicrophone(audio);
    const [track] = stream.getAudioTracks();
    if (!this.active || !this.#local || !track) {
      for (const t of stream.getTracks()) t.stop();
      return null;
    }
    track.enabled = !this.#muted;
    const sender = this.audioSender;
    if (sender) await sender.replaceTrack(track);
    const previous = this.#local;
    this.#local = stream;
    for (const old of previous.getTracks()) old.stop();
    if (microphoneId) audio.deviceId = { ideal: microphoneId };
    this.#audio = audio;
    this.micSwitches += 1;
    const name = track.label || microphoneId || "the default";
    this.#log(`microphone switched to ${name}${sender ? " (replaceTrack)" : ""}`);
    this.dispatchEvent(new CustomEvent("localtrack", { detail: { track, stream: this.#local } }));
    return track;
  }

  /** The RTCRtpSender that sends our audio, once the track was added (null before, or without a call). */
  get audioSender() {
    const pc = this.#pc;
    if (!pc || pc.signalingState === "closed") return null;
    return (
      pc.getSenders().find((sender) => sender.track?.kind === "audio") ??
      pc.getTransceivers().find((t) => t.receiver.track?.kind === "audio" && t.sender)?.sender ??
      null
    );
  }

  /** Whether the audio ever connected in this call. */
  get everConnected() {
    return this.#everConnected;
  }

  /**
   * Mute or unmute the microphone (the track keeps running, it sends silence).
   * @param {boolean} muted
   */
  setMuted(muted) {
    this.#muted = Boolean(muted);
    for (const track of this.#local?.getAudioTracks() ?? []) track.enabled = !this.#muted;
    this.#log(this.#muted ? "muted" : "unmuted");
    this.dispatchEvent(new CustomEvent("mutechange", { detail: { muted: this.#muted } }));
  }

  /**
   * Turn our camera on or off. On: open it (the one chosen, else the default) and send it, unless a screen share
   * is being sent (then it waits behind the share). Off: release it, and send no video unless we share a screen.
   * @param {boolean} on
   * @returns {Promise<void>}
   * @throws {MediaError} if the camera cannot be opened (the call goes on as it was)
   */
  async setCamera(on) {
    if (!this.active) return;
    if (on && !this.#camera) {
      const stream = await openCamera(this.#cameraId);
      if (!this.active || this.#camera) {
        for (const t of stream.getTracks()) t.stop();
        return;
      }
      this.#useCamera(stream);
      this.#log("camera on");
    } else if (!on && this.#camera) {
      for (const t of this.#camera.getTracks()) t.stop();
      this.#camera = null;
      this.#log("camera off");
    } else {
      return;
    }
    this.#videoChanged();
    if (!this.#screen) await this.#sendVideo();
  }

  /**
   * Use another camera, now (if the camera is on) and for the rest of the call: `replaceTrack`, no renegotiation.
   * @param {string} cameraId its `MediaDeviceInfo.deviceId`
   * @throws {MediaError} if that camera cannot be opened (the old one is kept)
   */
  async switchCamera(cameraId) {
    if (!this.active) return;
    if (!this.#camera) {
      this.#cameraId = cameraId;
      return;
    }
    const stream = await openCamera(cameraId);
    if (!this.active || !this.#camera) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    const previous = this.#camera;
    this.#useCamera(stream);
    this.#cameraId = cameraId;
    if (!this.#screen) await this.#sendVideo();
    for (const t of previous.getTracks()) t.stop();
    this.#log(`camera switched to ${stream.getVideoTracks()[0]?.label || cameraId}`);
    this.#videoChanged();
  }

  /**
   * Share a screen or a window (the browser asks which) in place of the camera, or stop sharing (the camera comes
   * back if it is on). The browser's own "Stop sharing" stops it too.
   * @param {boolean} on
   * @throws {MediaError} if nothing can be shared (the call goes on as it was)
   */
  async shareScreen(on) {
    if (!this.active) return;
    if (on && !this.#screen) {
      const stream = await openScreen();
      const [track] = stream.getVideoTracks();
      if (!this.active || this.#screen || !track) {
        for (const t of stream.getTracks()) t.stop();
        return;
      }
      this.#screen = stream;
      track.addEventListener("ended", () => {
        if (this.#screen === stream) this.shareScreen(false);
      });
      this.#log(`sharing ${track.label || "the screen"}`);
    } else if (!on && this.#screen) {
      for (const t of this.#screen.getTracks()) t.stop();
      this.#screen = null;
      this.#log("stopped sharing the screen");
    } else {
      return;
    }
    this.#videoChanged();
    await this.#sendVideo();
  }

  /**
   * Put bandwidth limits on the video we send (the sender's first encoding), e.g. lower when the path is relayed
   * or lossy. A screen share keeps its resolution (text must stay legible): only its bit rate is limited.
   * @param {{maxBitrate: number, scaleResolutionDownBy: number}} limits
   */
  async limitVideo(limits) {
    const sender = this.#videoTransceiver()?.sender;
    if (!this.active || !sender?.track) return;
    const scale = this.#screen ? 1 : limits.scaleResolutionDownBy;
    const key = JSON.stringify([sender.track.id, limits.maxBitrate, scale]);
    if (key === this.#videoLimits) return;
    try {
      const params = sender.getParameters();
      if (!params.encodings?.length) return; // not negotiated yet: the next sample tries again
      params.encodings[0].maxBitrate = limits.maxBitrate;
      params.encodings[0].scaleResolutionDownBy = scale;
      await sender.setParameters(params);
      this.#videoLimits = key;
      this.#log(`video limited to ${Math.round(limits.maxBitrate / 1000)} kbit/s, resolution ÷${scale}`);
    } catch (err) {
      console.warn(`[${this.role}] could not limit the video:`, err);
    }
  }

  /** The transceiver that carries video (ours and the peer's), once there is one. */
  #videoTransceiver() {
    const pc = this.#pc;
    if (!pc || pc.signalingState === "closed") return null;
    return (
      pc.getTransceivers().find((t) => !t.stopped && (t.sender.track?.kind ?? t.receiver.track?.kind) === "video") ??
      null
    );
  }

  /**
   * Send what we should (the screen share, else the camera, else nothing) on the video transceiver, adding it the
   * first time. A change of direction renegotiates (`negotiationneeded`); a change of track does not.
   */
  async #sendVideo() {
    const pc = this.#pc;
    if (!pc || pc.signalingState === "closed" || !this.#trackAdded) return; // #addLocalTrack will add it
    const track = this.localVideo?.getVideoTracks()[0] ?? null;
    const transceiver = this.#videoTransceiver();
    try {
      if (!transceiver) {
        if (!track) return;
        this.#log("adding a video track");
        pc.addTrack(track);
        return;
      }
      if (transceiver.sender.track !== track) await transceiver.sender.replaceTrack(track);
      const direction = track ? "sendrecv" : "recvonly";
      if (pc === this.#pc && this.active && transceiver.direction !== direction) {
        this.#log(`video ${direction}`);
        transceiver.direction = direction;
      }
    } catch (err) {
      console.error(`[${this.role}] could not change the video:`, err);
    }
  }

  #videoChanged() {
    this.dispatchEvent(new CustomEvent("videochange", { detail: { camera: this.camera, screen: this.screen } }));
  }

  /**
   * The camera opened for a video call, at `start()`/`accept()` (null for an audio call).
   * @returns {Promise<MediaStream|null>}
   */
  async #openStartCamera() {
    return this.video ? openCamera(this.#cameraId) : null;
  }

  /**
   * Keep the camera opened at `start()`/`accept()`; if it could not be opened, the call goes on as an audio call
   * and `videoerror` says why.
   * @param {PromiseSettledResult<MediaStream|null>} result
   */
  #startCamera(result) {
    if (result.status === "rejected") {
      this.#log(`no camera: ${result.reason?.message ?? result.reason}`);
      this.dispatchEvent(new CustomEvent("videoerror", { detail: { error: result.reason } }));
      return;
    }
    if (!result.value) return;
    if (!this.active) {
      for (const t of result.value.getTracks()) t.stop();
      return;
    }
    this.#useCamera(result.value);
    this.#videoChanged();
  }

  /**
   * Make `stream` our camera. If it ends by itself (unplugged, or taken away by the system), the camera is off.
   * @param {MediaStream} stream
   */
  #useCamera(stream) {
    this.#camera = stream;
    for (const track of stream.getVideoTracks()) {
      track.addEventListener("ended", () => {
        if (this.#camera !== stream) return;
        this.#log("the camera stopped by itself");
        this.setCamera(false);
      });
    }
  }

  /**
   * What this side says of its media (mediastate.js): kept, and sent to the peer (`media-state`) once the call is
   * answered; from then on at each change, and again after `call-resumed`.
   * @param {import("./mediastate.js").MediaStateData} state
   */
  sayMedia(state) {
    const same =
      state.muted === this.#media.muted && state.camera === this.#media.camera && state.screen === this.#media.screen;
    this.#media = state;
    if (!same) this.#sendMedia();
  }

  /** Send our media state, if the call is answered (before, the server would refuse it with `not-in-call`). */
  #sendMedia() {
    if (!this.active || !this.#answered) return;
    this.#sendMsg(protocol.mediaState(this.peerId, this.#media, this.callId));
    const { muted, camera, screen } = this.#media;
    this.#log(`sent media-state${muted ? " muted" : ""}${camera ? " camera" : ""}${screen ? " screen" : ""}`);
  }
  /**
   * Handle one frame from the peer (already matched to this call by sender and callId). Frames are
   * processed one at a time, in order.
   * @param {{type: string, from: string, data?: any, callId?: string}} msg
   */
  handle(msg) {
    this.#inbox = this.#inbox.then(() => this.#handle(msg)).catch((err) => {
      console.error(`[${this.role}] error while handling ${msg.type}:`, err);
    });
    return this.#inbox;
  }

  /**
   * The candidate types of the selected candidate pair, e.g. {local: "host", remote: "host", protocol: "udp"}.
   * @returns {Promise<{local: string, remote: string, protocol: string}|null>}
   */
  async selectedPath() {
    if (!this.#pc) return null;
    try {
      const stats = await this.#pc.getStats();
      let pair = null;
      for (const report of stats.values()) {
        if (report.type === "transport" && report.selectedCandidatePairId) {
          pair = stats.get(report.selectedCandidatePairId);
          break;
        }
      }
      if (!pair) {
        for (const report of stats.values()) {
          if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") pair = report;
        }
      }
      if (!pair) return null;
      const local = stats.get(pair.localCandidateId);
      const remote = stats.get(pair.remoteCandidateId);
      return {
        local: local?.candidateType ?? "?",
        remote: remote?.candidateType ?? "?",
        protocol: local?.protocol ?? "?",
      };
    } catch (err) {
      console.warn(`[${this.role}] getStats failed:`, err);
      return null;
    }
  }

  async #handle(msg) {
    switch (msg.type) {
      case MessageType.CALL_ACCEPT:
        return this.#onAccepted(msg);
      case MessageType.CALL_REJECT: {
        const reason = (this.#remoteReason = remoteReason(msg));
        this.#log(`call-reject from ${this.peerId}${reason ? ` (${reason})` : ""}`);
        return this.#end(reason === Reason.BUSY || reason === Reason.USER_BUSY ? "busy" : "rejected");
      }
      case MessageType.HANGUP: {
        const reason = (this.#remoteReason = remoteReason(msg));
        this.#log(`hangup from ${this.peerId}${reason ? ` (${reason})` : ""}`);
        return this.#end(HANGUP_REASONS[reason] ?? "remote-hangup");
      }
      case MessageType.OFFER:
      case MessageType.ANSWER:
        return this.#onDescription(msg.data);
      case MessageType.CANDIDATE:
        return this.#onCandidate(msg.data);
      case MessageType.MEDIA_STATE:
        this.dispatchEvent(new CustomEvent("peermedia", { detail: { data: msg.data } }));
        return;
      default:
        this.#log(`ignored ${msg.type}`);
    }
  }

  /**
   * Caller: the callee accepted. As the impolite side (the default), add our track, which starts the
   * negotiation. If the server made us the polite side (both called each other at once), wait for the
   * offer like a callee.
   * @param {{polite?: boolean}} msg
   */
  #onAccepted(msg) {
    if (this.direction !== "outgoing" || !this.#transition("accepted")) return;
    this.timeline.accepted = performance.now();
    if (typeof msg.polite === "boolean") this.polite = msg.polite;
    this.#answered = true;
    this.#sendMedia();
    this.#createPeerConnection();
    if (this.polite) {
      this.#log(`call-accept from ${this.peerId}; the server made us polite: waiting for the offer`);
    } else {
      this.#log(`call-accept from ${this.peerId}; adding the microphone track`);
      this.#addLocalTrack(); // -> negotiationneeded -> offer
    }
    this.#startTimer(MEDIA_TIMEOUT_MS, () => this.#giveUp());
  }

  /** Fetch the ICE configuration for this call (never throws). */
  async #fetchIce() {
    try {
      const config = await this.#getIceConfig();
      this.#ice = Array.isArray(config) ? { iceServers: config, iceTransportPolicy: "all" } : config;
    } catch (err) {
      console.warn(`[${this.role}] could not get the ICE servers:`, err);
      this.#ice = { iceServers: [], iceTransportPolicy: "all" };
    }
    this.#iceFetchedAt = performance.now();
  }

  /** @returns {CallSetupError|null} why a relay-only call cannot be made, if it cannot */
  #relayProblem() {
    if (this.iceTransportPolicy !== "relay" || hasTurn(this.#ice?.iceServers ?? [])) return null;
    return new CallSetupError(
      "no-relay",
      this.#relayOnly
        ? "“Hide my IP address” needs a relay (TURN) server, and this server offers none. " +
          "Untick it to call directly."
        : "This server allows relayed calls only, but offers no relay (TURN) server.",
    );
  }

  /** Give ICE `iceTimeoutMs` to find a working path from now on. */
  #startIceTimer() {
    this.#startTimer(this.#iceTimeoutMs, () => this.#giveUp());
  }

  /** No audio path in time (or the offer never came): hang up with a reason the server records. */
  #giveUp() {
    const pc = this.#pc;
    const failed = pc?.connectionState === "failed" || pc?.iceConnectionState === "failed";
    const refused = this.#iceErrors.some((e) => e.errorCode === 401 || e.errorCode === 403);
    this.#failure = !pc?.remoteDescription
      ? "Could not connect the audio: the call set-up did not complete in time."
      : this.#everConnected && !refused
        ? LOST_TEXT
        : iceFailureText(this.#iceErrors, {
            relayOnly: this.iceTransportPolicy === "relay",
            relayCandidates: this.#relayCandidates,
          });
    this.#log(`giving up: ${this.#failure} (connectionState ${pc?.connectionState ?? "none"})`);
    this.hangup(failed ? Reason.ICE_FAILED : Reason.ICE_TIMEOUT, "failed");
  }

  #createPeerConnection() {
    const iceServers = this.#ice?.iceServers ?? [];
    const iceTransportPolicy = this.iceTransportPolicy;
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy });
    this.#pc = pc;
    const role = this.role;
    this.#log(`created RTCPeerConnection with ${iceServers.length} ICE server(s), policy ${iceTransportPolicy}`);

    pc.addEventListener("negotiationneeded", async () => {
      if (pc !== this.#pc || !this.active) return;
      try {
        this.#makingOffer = true;
        this.#log("negotiationneeded: SLD(offer)");
        await pc.setLocalDescription();
        if (pc !== this.#pc || !this.active) return;
        this.timeline.offerSent ??= performance.now();
        this.#sendMsg(protocol.description(this.peerId, pc.localDescription, this.callId));
        this.#log("sent offer");
      } catch (err) {
        console.error(`[${role}] could not make an offer:`, err);
      } finally {
        this.#makingOffer = false;
      }
    });
    pc.addEventListener("icecandidate", ({ candidate }) => {
      if (pc !== this.#pc || !this.active) return;
      if (candidate?.type === "relay") this.#relayCandidates += 1;
      this.#sendMsg(protocol.candidate(this.peerId, candidate, this.callId));
      if (!candidate) this.#log("end of local candidates");
    });
    pc.addEventListener("icecandidateerror", (event) => {
      // Expected when a STUN server is unreachable (the call goes on with the other candidates); a TURN
      // server that answers 401 refused our credentials, which explains a relay-only call that never connects.
      const { errorCode, url = "", errorText = "" } = event;
      if (pc === this.#pc) this.#iceErrors.push({ errorCode, url, errorText });
      console.info(`[${role}] ICE candidate error ${errorCode} ${url}: ${errorText}`);
    });
    pc.addEventListener("track", (event) => {
      if (pc !== this.#pc) return;
      const { track } = event;
      this.#log(`remote ${track.kind} track`);
      if (track.kind === "video") {
        // It stays for the rest of the call; whether the peer sends on it is `remoteVideoLive` (the audio plays apart).
        this.#remoteVideo = track;
        this.dispatchEvent(new CustomEvent("remotevideo", { detail: { track } }));
        return;
      }
      this.#remote = event.streams[0] ?? new MediaStream([track]);
      this.dispatchEvent(new CustomEvent("track", { detail: { stream: this.#remote } }));
    });
    pc.addEventListener("signalingstatechange", () => {
      this.#log(`signalingState ${pc.signalingState}`);
      // A negotiation ended: the peer may have started or stopped sending video.
      if (pc === this.#pc && pc.signalingState === "stable" && this.#remoteVideo) {
        this.dispatchEvent(new CustomEvent("remotevideo", { detail: { track: this.#remoteVideo } }));
      }
    });
    pc.addEventListener("iceconnectionstatechange", () =>
      this.#log(`iceConnectionState ${pc.iceConnectionState}`),
    );
    pc.addEventListener("connectionstatechange", () => this.#onConnectionState(pc));
  }

  #addLocalTrack() {
    if (this.#trackAdded || !this.#pc || !this.#local) return;
    for (const track of this.#local.getAudioTracks()) this.#pc.addTrack(track, this.#local);
    this.#trackAdded = true;
    const video = this.localVideo?.getVideoTracks()[0];
    if (video) this.#pc.addTrack(video); // callee: reuses the offer's video transceiver if it has one
  }

  /** @param {RTCSessionDescriptionInit} description */
  async #onDescription(description) {
    const pc = this.#pc;
    if (!pc || !this.active || !description) {
      this.#log(`ignored ${description?.type ?? "description"}: no peer connection yet`);
      return;
    }
    const offerCollision =
      description.type === "offer" && (this.#makingOffer || pc.signalingState !== "stable");
    this.#ignoreOffer = !this.polite && offerCollision;
    if (this.#ignoreOffer) {
      this.#log("ignored a colliding offer (impolite)");
      return;
    }
    try {
      this.#log(`SRD(${description.type})${offerCollision ? " with rollback" : ""}`);
      await pc.setRemoteDescription(description);
      this.#redescribed = 0; // the peer hears us again
      if (description.type === "offer") {
        this.timeline.offerReceived ??= performance.now();
        this.#addLocalTrack(); // callee: reuses the transceiver the offer created, so no extra offer
        this.#log("SLD(answer)");
        await pc.setLocalDescription();
        if (pc !== this.#pc || !this.active) return;
        this.#sendMsg(protocol.description(this.peerId, pc.localDescription, this.callId));
        this.#log("sent answer");
      } else {
        this.timeline.answerReceived ??= performance.now();
      }
      if (pc.connectionState !== "connected") this.#startIceTimer();
      await this.#flushCandidates();
    } catch (err) {
      console.error(`[${this.role}] could not apply the remote ${description.type}:`, err);
    }
  }

  /** @param {RTCIceCandidateInit|null} candidate */
  async #onCandidate(candidate) {
    const pc = this.#pc;
    if (!pc || !pc.remoteDescription) {
      this.#pendingCandidates.push(candidate);
      return;
    }
    await this.#addCandidate(pc, candidate);
  }

  async #flushCandidates() {
    const pc = this.#pc;
    const queued = this.#pendingCandidates.splice(0);
    if (queued.length) this.#log(`adding ${queued.length} queued candidate(s)`);
    for (const candidate of queued) await this.#addCandidate(pc, candidate);
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {RTCIceCandidateInit|null} candidate
   */
  async #addCandidate(pc, candidate) {
    try {
      await pc.addIceCandidate(candidate ?? undefined);
    } catch (err) {
      // Expected for candidates of an offer we ignored, and for a late end-of-candidates.
      if (!this.#ignoreOffer && candidate) console.warn(`[${this.role}] addIceCandidate failed:`, err);
    }
  }

  /** @param {RTCPeerConnection} pc */
  #onConnectionState(pc) {
    if (pc !== this.#pc) return;
    const state = pc.connectionState;
    this.#log(`connectionState ${state}`);
    this.dispatchEvent(new CustomEvent("connectionstatechange", { detail: { connectionState: state } }));
    if (!this.active) return;
    if (state === "connected") {
      clearTimeout(this.#timer);
      this.#everConnected = true;
      if (this.#phase === CallPhase.CALLING && this.#transition("connected")) {
        this.timeline.connected = performance.now();
        this.#log(`connected ${Math.round(this.timeline.connected - this.timeline.accepted)} ms after accept`);
      }
      this.#announcePath();
      if (!this.#stallTimer) this.#watchPackets(pc);
    } else if (state === "failed" && !this.#everConnected) {
      // Never connected: no candidate pair works, and a restart would find the same ones.
      this.#giveUp();
    }
    if (this.#everConnected) this.#keepConnected(state);
  }

  /**
   * A connection that worked is interrupted (or works again): restart ICE after `DISCONNECTED_RESTART_MS` of
   * `disconnected`, at once on `failed`, and forget the outage (and its backoff) once connected again.
   * @param {RTCPeerConnectionState} state
   */
  #keepConnected(state) {
    if (state === "connected") {
      clearTimeout(this.#restartTimer);
      this.#restartTimer = 0;
      this.#restartedAt = -Infinity;
      this.#restartBackoffMs = RESTART_BACKOFF_MS;
    } else if (state === "failed") {
      this.restartIce("the connection failed");
    } else if (state === "disconnected" && !this.#restartTimer) {
      this.#restartTimer = setTimeout(() => {
        this.#restartTimer = 0;
        const pc = this.#pc;
        if (this.active && pc && ["disconnected", "failed"].includes(pc.connectionState)) {
          this.restartIce(`disconnected for ${DISCONNECTED_RESTART_MS / 1000} s`);
        }
      }, DISCONNECTED_RESTART_MS);
    }
  }

  /**
   * While the call lasts, count the packets that arrive from the peer every `STALL_CHECK_MS`: when none came for
   * `STALL_RESTART_MS` of a connection that says `connected`, the path broke (a network change) long before the
   * browser will say so; restart ICE now, and say `stalled` until packets come again.
   * @param {RTCPeerConnection} pc
   */
  #watchPackets(pc) {
    let last = -1;
    let lastAt = performance.now();
    let stalled = false;
    let reading = false;
    this.#stallTimer = setInterval(async () => {
      if (pc !== this.#pc || !this.active) {
        clearInterval(this.#stallTimer);
        return;
      }
      if (reading) return;
      reading = true;
      let packets = 0;
      try {
        for (const report of (await pc.getStats()).values()) {
          if (report.type === "inbound-rtp") packets += report.packetsReceived ?? 0;
        }
      } catch {
        return; // closed meanwhile
      } finally {
        reading = false;
      }
      const now = performance.now();
      if (packets !== last) {
        last = packets;
        lastAt = now;
        if (stalled) {
          stalled = false;
          this.#onConnectionState(pc); // say the state the connection is in again
        }
        return;
      }
      if (stalled || packets === 0 || now - lastAt < STALL_RESTART_MS || pc.connectionState !== "connected") return;
      stalled = true;
      this.#log(`nothing from the peer for ${Math.round(now - lastAt)} ms`);
      this.dispatchEvent(new CustomEvent("connectionstatechange", { detail: { connectionState: "stalled" } }));
      this.restartIce(`nothing arrived for ${STALL_RESTART_MS / 1000} s`);
    }, STALL_CHECK_MS);
  }

  /** Tell listeners which candidate pair carries the audio (`path`), once it is known. */
  async #announcePath() {
    const path = await this.selectedPath(); // never throws
    if (path) this.dispatchEvent(new CustomEvent("path", { detail: path }));
  }

  /**
   * @param {string} event
   * @returns {boolean} whether the transition was allowed (and made)
   */
  #transition(event) {
    const previous = this.#phase;
    const next = TRANSITIONS[previous]?.[event];
    if (!next) {
      this.#log(`ignored "${event}": the call is ${previous}`);
      return false;
    }
    this.#phase = next;
    this.dispatchEvent(new CustomEvent("phasechange", { detail: { phase: next, previous } }));
    return true;
  }

  /** @param {EndReason} reason */
  #end(reason) {
    if (!this.active) return;
    this.#reason = reason;
    this.timeline.ended = performance.now();
    this.#log(`ended: ${reason}`);
    clearTimeout(this.#timer);
    clearTimeout(this.#restartTimer);
    clearTimeout(this.#redescribeTimer);
    clearInterval(this.#stallTimer);
    // Nothing more to say to the peer: releasing the camera or the screen share below changes our media state,
    // and a `media-state` now would follow our hangup (or the server's call-ended) and be refused.
    this.#answered = false;
    this.#stopMicrophone();
    if (this.#pc) {
      this.#pc.close();
      this.#log("closed the peer connection");
    }
    this.#pendingCandidates = [];
    const previous = this.#phase;
    this.#phase = CallPhase.ENDED;
    this.dispatchEvent(
      new CustomEvent("phasechange", {
        detail: { phase: CallPhase.ENDED, previous, reason, remoteReason: this.#remoteReason },
      }),
    );
  }

  #localTrackEvent() {
    const [track] = this.#local?.getAudioTracks() ?? [];
    if (track) this.dispatchEvent(new CustomEvent("localtrack", { detail: { track, stream: this.#local } }));
  }

  /** Release the microphone, the camera and the screen share. */
  #stopMicrophone() {
    for (const track of this.#local?.getTracks() ?? []) track.stop();
    const video = this.#camera || this.#screen;
    for (const track of [...(this.#camera?.getTracks() ?? []), ...(this.#screen?.getTracks() ?? [])]) track.stop();
    this.#camera = this.#screen = null;
    if (video) this.#videoChanged();
  }

  /**
   * @param {number} ms
   * @param {() => void} action
   */
  #startTimer(ms, action) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (this.active) action();
    }, ms);
  }

  /** @param {object} msg */
  #sendMsg(msg) {
    return this.#send(msg);
  }

  /** @param {string} text */
  #log(text) {
    console.log(`[${this.role}] ${text}`);
  }
}
