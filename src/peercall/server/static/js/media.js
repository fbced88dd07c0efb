/**
 * Media devices and sound in the page: opening the microphone, the camera and a screen share (and saying in words
 * why one could not be opened: `mediaFailure()`), the list of microphones, speakers and cameras, one shared Web Audio
 * context, level meters (an AnalyserNode on a stream), the ringtone and the ringback tone (synthesised: no audio
 * files).
 *
 * Owns the AudioContext and the tones' timers; knows nothing of the DOM, the signaling or the call.
 * @module media
 */

/** Audio constraints for a voice call. */
export const VOICE = Object.freeze({ echoCancellation: true, noiseSuppression: true, autoGainControl: true });
/** Audio constraints without any processing (music, measurements). */
export const RAW = Object.freeze({ echoCancellation: false, noiseSuppression: false, autoGainControl: false });

/**
 * What the page opens for a call: the microphone, the camera, or a screen (or window, or tab) to share.
 * @typedef {"microphone"|"camera"|"screen"} CaptureSource
 */

/**
 * Why a source could not be opened: the page was not secure, the user or the browser refused, there is none, it
 * is busy, the browser cannot (screen sharing on most phones), or something else.
 * @typedef {"insecure"|"denied"|"not-found"|"in-use"|"unsupported"|"unknown"} MediaFailureKind
 */

/**
 * A source could not be opened: `message` is a sentence for the user (what happened and what to do), `words` the
 * few words that say why under a call's "Failed".
 */
export class MediaError extends Error {
  /**
   * @param {CaptureSource} source
   * @param {MediaFailureKind} kind
   * @param {string} message
   * @param {unknown} [cause]
   */
  constructor(source, kind, message, cause) {
    super(message, { cause });
    this.name = "MediaError";
    this.source = source;
    this.kind = kind;
  }

  /** Why, in a few words ("microphone access was denied"). */
  get words() {
    return FAILURE_WORDS[this.source][this.kind] ?? FAILURE_WORDS[this.source].unknown;
  }
}

/** The microphone could not be opened; `message` is a sentence for the user. */
export class MicrophoneError extends MediaError {
  /**
   * @param {MediaFailureKind} kind
   * @param {string} message
   * @param {unknown} [cause]
   */
  constructor(kind, message, cause) {
    super("microphone", kind, message, cause);
    this.name = "MicrophoneError";
  }
}

/** Why a page over plain http (not localhost) cannot call, and what to do about it. */
export const INSECURE_TEXT =
  "The microphone needs a secure page (https): this page was opened over plain http from another address, so " +
  "the browser does not allow microphone access here. Whoever runs the server can start it with " +
  "“peercall serve --tls-self-signed”; then open the https:// address it prints.";

/** The few words under "Failed", by source and kind of failure. */
const FAILURE_WORDS = Object.freeze({
  microphone: {
    insecure: "the microphone needs a secure page (https)",
    denied: "microphone access was denied",
    "not-found": "no microphone was found",
    "in-use": "the microphone is in use by another application",
    unknown: "the microphone could not be opened",
  },
  camera: {
    insecure: "the camera needs a secure page (https)",
    denied: "camera access was denied",
    "not-found": "no camera was found",
    "in-use": "the camera is in use by another application",
    unknown: "the camera could not be opened",
  },
  screen: {
    insecure: "screen sharing needs a secure page (https)",
    denied: "screen sharing was cancelled or not allowed",
    "not-found": "there is nothing to share",
    "in-use": "the screen could not be captured",
    unsupported: "this browser cannot share a screen",
    unknown: "the screen could not be shared",
  },
});

/** The sentences for the user, by source and kind of failure (`unknown` gets the browser's own words appended). */
const FAILURE_TEXT = Object.freeze({
  microphone: {
    insecure: INSECURE_TEXT,
    denied:
      "Microphone access was denied. To call, allow the microphone for this site: click the icon at the left " +
      "of the address bar, set Microphone to Allow, then try again.",
    "not-found":
      "No microphone was found. Plug in a microphone or a headset (or pick another one under Microphone), " +
      "then try again.",
    "in-use":
      "The microphone could not be started: another application may be using it. Close other calling apps " +
      "(or tabs) that use the microphone, then try again.",
    unknown: "Could not open the microphone",
  },
  camera: {
    insecure: "The camera needs a secure page (https), like the microphone.",
    denied:
      "Camera access was denied. To be seen, allow the camera for this site: click the icon at the left of the " +
      "address bar, set Camera to Allow, then turn the camera on again. The call goes on without video.",
    "not-found": "No camera was found. The call goes on without video.",
    "in-use":
      "The camera could not be started: another application may be using it. Close it, then turn the camera " +
      "on again. The call goes on without video.",
    unknown: "Could not open the camera",
  },
  screen: {
    insecure: "Screen sharing needs a secure page (https), like the microphone.",
    denied: "Nothing is shared: screen sharing was cancelled or not allowed.",
    "not-found": "Nothing is shared: there is no screen, window or tab to share.",
    "in-use": "Nothing is shared: the screen could not be captured. Try again, or share a single window.",
    unsupported: "This browser cannot share a screen (most phones cannot).",
    unknown: "Could not share the screen",
  },
});

/**
 * What a failure to open a source means for the user: the `getUserMedia()` / `getDisplayMedia()` error (a
 * DOMException) turned into a MediaError that says it in words. The call's camera and screen sharing use it too.
 * @param {CaptureSource} source
 * @param {unknown} err what the browser threw (null: the page is not secure, or the browser has no such API)
 * @returns {MediaError} a MicrophoneError for the microphone
 */
export function mediaFailure(source, err) {
  const name = /** @type {any} */ (err)?.name;
  /** @type {MediaFailureKind} */
  let kind = "unknown";
  if (err == null) kind = "insecure";
  else if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") kind = "denied";
  else if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    kind = "not-found";
  } else if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError") kind = "in-use";
  let text = FAILURE_TEXT[source][kind];
  if (kind === "unknown") text = `${text}: ${/** @type {any} */ (err)?.message ?? err}`;
  return source === "microphone" ? new MicrophoneError(kind, text, err) : new MediaError(source, kind, text, err);
}

/**
 * Open the microphone.
 * @param {MediaTrackConstraints} [audio]
 * @returns {Promise<MediaStream>}
 * @throws {MicrophoneError} with a message that says what the user can do about it
 */
export async function openMicrophone(audio = VOICE) {
  if (!globalThis.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw mediaFailure("microphone", null);
  }
  try {
    return await navigator.mediaDevices.getUserMedia({ audio, video: false });
  } catch (err) {
    throw mediaFailure("microphone", err);
  }
}

/** Video constraints of a call's camera: enough for a face, light enough for a phone's uplink. */
export const CAMERA = Object.freeze({ width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } });

/**
 * Open a camera (video only: the call's microphone is opened apart).
 * @param {string} [cameraId] its `MediaDeviceInfo.deviceId`; "" or absent for the system default
 * @returns {Promise<MediaStream>}
 * @throws {MediaError} (source "camera") with a message that says what the user can do about it
 */
export async function openCamera(cameraId = "") {
  if (!globalThis.isSecureContext || !navigator.mediaDevices?.getUserMedia) throw mediaFailure("camera", null);
  const video = cameraId ? { ...CAMERA, deviceId: { exact: cameraId } } : CAMERA;
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: false, video });
  } catch (err) {
    throw mediaFailure("camera", err);
  }
}

/** Whether this browser can share a screen or a window (`getDisplayMedia`; not on most phones). */
export function canShareScreen() {
  return Boolean(globalThis.isSecureContext && navigator.mediaDevices?.getDisplayMedia);
}

/**
 * Ask the user for a screen, a window or a tab to share (video only).
 * @returns {Promise<MediaStream>}
 * @throws {MediaError} (source "screen") with a message for the user (kind "denied" also when they closed the
 *   picker)
 */
export async function openScreen() {
  if (!canShareScreen()) {
    const sorry = FAILURE_TEXT.screen.unsupported;
    throw globalThis.isSecureContext ? new MediaError("screen", "unsupported", sorry) : mediaFailure("screen", null);
  }
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    for (const track of stream.getVideoTracks()) track.contentHint = "detail"; // text stays sharp, frames drop
    return stream;
  } catch (err) {
    throw mediaFailure("screen", err);
  }
}

/** @type {AudioContext|null} */
let shared = null;
/** @type {string} the speaker the tones play on ("" for the system default) */
let sinkId = "";

/**
 * The page's AudioContext, made on first use (null if the browser has no Web Audio).
 * @returns {AudioContext|null}
 */
export function audioContext() {
  if (!shared) {
    const Context = globalThis.AudioContext ?? globalThis.webkitAudioContext;
    if (!Context) return null;
    shared = new Context({ latencyHint: "interactive" });
    if (sinkId && typeof shared.setSinkId === "function") shared.setSinkId(sinkId).catch(() => {});
  }
  return shared;
}

/**
 * Let the page make sound: browsers start an AudioContext only after the user interacted with the page, so
 * call this from a click (e.g. Connect), and the ringtone can then play when a call comes in.
 */
export async function unlockAudio() {
  const context = audioContext();
  if (context && context.state !== "running") {
    try {
      await context.resume();
    } catch (err) {
      console.debug("[media] cannot start the AudioContext yet:", err);
    }
  }
}

/**
 * Play the page's own sounds (the ringtone) on this speaker too, where the browser can.
 * @param {string} speakerId its `MediaDeviceInfo.deviceId`; "" for the system default
 */
export async function setToneSink(speakerId) {
  sinkId = speakerId ?? "";
  if (shared && typeof shared.setSinkId === "function") {
    try {
      await shared.setSinkId(sinkId);
    } catch (err) {
      console.warn("[media] cannot play the ringtone on that speaker:", err);
    }
  }
}

/**
 * RMS of an analyser's current buffer, as a level from 0 (below -60 dBFS) to 1 (full scale).
 * @param {AnalyserNode} analyser
 * @param {Float32Array} buffer
 */
function levelOf(analyser, buffer) {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  for (const v of buffer) sum += v * v;
  const rms = Math.sqrt(sum / buffer.length);
  if (!(rms > 0)) return 0;
  return Math.min(1, Math.max(0, (20 * Math.log10(rms) + 60) / 60));
}

/** How loud a stream is right now: an AnalyserNode on it (nothing is played). */
export class LevelMeter {
  /** @type {MediaStreamAudioSourceNode|null} */ #source = null;
  /** @type {AnalyserNode|null} */ #analyser = null;
  #buffer = new Float32Array(1024);
  #held = 0;

  /**
   * @param {MediaStream} stream a stream with an audio track
   * @param {number} [decay] how much of the held level is left after each `read()` (peak hold that falls)
   */
  constructor(stream, decay = 0.7) {
    this.decay = decay;
    this.stream = stream;
    const context = audioContext();
    if (!context || !stream?.getAudioTracks().length) return;
    try {
      this.#source = context.createMediaStreamSource(stream);
      this.#analyser = context.createAnalyser();
      this.#analyser.fftSize = this.#buffer.length;
      this.#analyser.smoothingTimeConstant = 0;
      this.#source.connect(this.#analyser);
    } catch (err) {
      console.warn("[media] cannot measure the level of a stream:", err);
      this.#source = this.#analyser = null;
    }
  }

  /**
   * The level now, 0..1, held a little so that short gaps do not make the meter flicker.
   * @returns {number}
   */
  read() {
    if (!this.#analyser) return 0;
    const now = levelOf(this.#analyser, this.#buffer);
    this.#held = Math.max(now, this.#held * this.decay);
    if (this.#held < 0.01) this.#held = 0;
    return this.#held;
  }

  close() {
    try {
      this.#source?.disconnect();
    } catch {
      // already disconnected
    }
    this.#source = this.#analyser = null;
  }
}

/**
 * A repeating tone pattern: each cycle plays `notes` (each a chord of sine waves with a soft attack and decay).
 * @typedef {object} TonePattern
 * @property {number} cycleMs one cycle, pause included
 * @property {number} gain overall loudness (0..1)
 * @property {{at: number, freqs: number[], dur: number}[]} notes start (s), frequencies (Hz), length (s)
 */

/** The ringtone of an incoming call: "ding-dong, ding-dong", every 3 s. */
export const RINGTONE = Object.freeze({
  cycleMs: 3000,
  gain: 0.3,
  notes: [
    { at: 0, freqs: [880, 1760], dur: 0.22 },
    { at: 0.25, freqs: [659.25, 1318.5], dur: 0.3 },
    { at: 0.7, freqs: [880, 1760], dur: 0.22 },
    { at: 0.95, freqs: [659.25, 1318.5], dur: 0.4 },
  ],
});

/** What the caller hears while it rings at the other end: a soft 425 Hz tone, 1 s in every 4 (ETSI ringback). */
export const RINGBACK = Object.freeze({
  cycleMs: 4000,
  gain: 0.12,
  notes: [{ at: 0, freqs: [425], dur: 1 }],
});

/** A tone that repeats until stopped, generated with Web Audio oscillators. */
export class Tone {
  /** @type {GainNode|null} */ #master = null;
  /** @type {AnalyserNode|null} */ #analyser = null;
  #buffer = new Float32Array(512);
  #timer = 0;
  #playing = false;
  /** @type {{osc: OscillatorNode, endsAt: number}[]} the oscillators scheduled and not over yet */ #oscillators = [];

  /** @param {TonePattern} pattern */
  constructor(pattern) {
    this.pattern = pattern;
  }

  /** Whether the tone is on (between `start()` and `stop()`). */
  get playing() {
    return this.#playing;
  }

  /** The state of the AudioContext it plays in ("running" when sound can come out). */
  get contextState() {
    return shared?.state ?? "none";
  }

  /** How loud it is right now, 0..1 (0 in the pauses). */
  level() {
    return this.#analyser ? levelOf(this.#analyser, this.#buffer) : 0;
  }

  /** Start playing (again); does nothing if already playing or if the browser has no Web Audio. */
  start() {
    if (this.#playing) return;
    const context = audioContext();
    if (!context) return;
    this.#playing = true;
    if (context.state !== "running") context.resume().catch(() => {});
    this.#master = context.createGain();
    this.#master.gain.value = this.pattern.gain;
    this.#analyser = context.createAnalyser();
    this.#analyser.fftSize = this.#buffer.length;
    this.#master.connect(this.#analyser);
    this.#analyser.connect(context.destination);
    this.#cycle();
    this.#timer = setInterval(() => this.#cycle(), this.pattern.cycleMs);
  }

  /** Stop at once. */
  stop() {
    if (!this.#playing) return;
    this.#playing = false;
    clearInterval(this.#timer);
    for (const { osc } of this.#oscillators) {
      try {
        osc.stop();
      } catch {
        // not started or already stopped
      }
    }
    this.#oscillators = [];
    this.#master?.disconnect();
    this.#analyser?.disconnect();
    this.#master = this.#analyser = null;
  }

  #cycle() {
    const context = shared;
    if (!context || !this.#master) return;
    const start = context.currentTime + 0.02;
    this.#oscillators = this.#oscillators.filter(({ endsAt }) => endsAt > context.currentTime);
    for (const note of this.pattern.notes) {
      const envelope = context.createGain();
      const t0 = start + note.at;
      const t1 = t0 + note.dur;
      envelope.gain.setValueAtTime(0, t0);
      envelope.gain.linearRampToValueAtTime(1, t0 + 0.012);
      envelope.gain.setTargetAtTime(0, t1 - note.dur * 0.6, note.dur / 5);
      envelope.connect(this.#master);
      note.freqs.forEach((freq, i) => {
        const osc = context.createOscillator();
        osc.type = "sine";
        osc.frequency.value = freq;
        const partial = context.createGain();
        partial.gain.value = i === 0 ? 1 : 0.25; // the overtone, softer
        osc.connect(partial).connect(envelope);
        osc.start(t0);
        osc.stop(t1 + 0.1);
        this.#oscillators.push({ osc, endsAt: t1 + 0.1 });
      });
    }
  }
}

/**
 * A microphone or speaker the user can pick (a media device).
 * @typedef {object} MediaDeviceOption
 * @property {string} id its `MediaDeviceInfo.deviceId` ("" for the system default)
 * @property {string} label a name for people
 */

/**
 * The microphones, speakers and cameras there are. Without the microphone permission browsers give no names (and
 * often one anonymous media device of each kind): those are listed as "Default microphone" / "Default speaker".
 * Cameras are listed as they are (no "default" entry): the call's "Switch camera" goes round them.
 * @returns {Promise<{microphones: MediaDeviceOption[], speakers: MediaDeviceOption[], cameras: MediaDeviceOption[]}>}
 */
export async function listMediaDevices() {
  let all = [];
  try {
    all = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
  } catch (err) {
    console.warn("[media] cannot list the microphones and speakers:", err);
  }
  const pick = (kind, noun) => {
    const found = all.filter((d) => d.kind === kind && d.deviceId !== "");
    const named = (d, i) => d.label || `${noun[0].toUpperCase()}${noun.slice(1)} ${i + 1}`;
    const choices = found.map((d, i) => ({
      id: d.deviceId,
      label: d.deviceId === "default" ? `Default (${named(d, i).replace(/^Default - /, "")})` : named(d, i),
    }));
    if (!choices.some((c) => c.id === "default")) choices.unshift({ id: "", label: `Default ${noun}` });
    return choices;
  };
  return {
    microphones: pick("audioinput", "microphone"),
    speakers: pick("audiooutput", "speaker"),
    cameras: all
      .filter((d) => d.kind === "videoinput" && d.deviceId !== "")
      .map((d, i) => ({ id: d.deviceId, label: d.label || `Camera ${i + 1}` })),
  };
}

/** Whether this browser can send a page's audio to a chosen speaker (`HTMLMediaElement.setSinkId`). */
export function canChooseSpeaker() {
  return typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;
}

/** How often the level meters of a call move (ms). */
export const LEVELS_MS = 100;

/**
 * The levels of a call's two voices, ours (the microphone) and theirs, read every {@link LEVELS_MS} ms while
 * there is something to measure.
 *
 * Events: `levels` (detail: {microphone, remote}, each 0..1).
 */
export class CallLevels extends EventTarget {
  /** @type {LevelMeter|null} */ #microphone = null;
  /** @type {LevelMeter|null} */ #remote = null;
  #timer = 0;
  /** The levels as last read (0..1). */
  last = { microphone: 0, remote: 0 };

  /**
   * Measure our microphone (a new stream replaces the old one, e.g. after a switch).
   * @param {MediaStream} stream
   */
  measureMicrophone(stream) {
    this.#microphone?.close();
    this.#microphone = new LevelMeter(stream);
    this.#start();
  }

  /**
   * Measure the other side's audio.
   * @param {MediaStream} stream
   */
  measureRemote(stream) {
    this.#remote?.close();
    this.#remote = new LevelMeter(stream);
    this.#start();
  }

  /** Stop measuring (the call ended): both levels fall to 0. */
  stop() {
    clearInterval(this.#timer);
    this.#timer = 0;
    this.#microphone?.close();
    this.#remote?.close();
    this.#microphone = this.#remote = null;
    this.#report(0, 0);
  }

  #start() {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#report(this.#microphone?.read() ?? 0, this.#remote?.read() ?? 0), LEVELS_MS);
  }

  /**
   * @param {number} microphone
   * @param {number} remote
   */
  #report(microphone, remote) {
    this.last = { microphone, remote };
    this.dispatchEvent(new CustomEvent("levels", { detail: this.last }));
  }
}
