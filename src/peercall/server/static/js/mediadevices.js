/**
 * The choice of media devices: which microphone and camera the calls use and which speaker they (and the ringtone)
 * play on, remembered between visits, and the lists to choose from, kept up to date as media devices come and go.
 *
 * Owns the lists, the choices and their storage. Plays on the chosen speaker through the function it is given
 * (the page's audio element) and `setToneSink`; switching the microphone of a call going on is the call's
 * business (and the camera's). Knows nothing of the DOM, the signaling connection or the call.
 *
 * Events: `change` (a list or a choice changed).
 * @module mediadevices
 */

import { canChooseSpeaker, listMediaDevices, setToneSink } from "./media.js";
import { recall, remember } from "./storage.js";

/** localStorage: the microphone chosen (its `deviceId`). */
const MICROPHONE_KEY = "peercall.mic";
/** localStorage: the speaker chosen (its `deviceId`). */
const SPEAKER_KEY = "peercall.speaker";
/** localStorage: the camera chosen (its `deviceId`). */
const CAMERA_KEY = "peercall.camera";

/**
 * The microphones and speakers to choose from, and the ones chosen.
 * @typedef {import("./ui.js").MediaDevicesView} MediaDevicesView
 */

/** The microphone and speaker the user chose. */
export class MediaDeviceChoice extends EventTarget {
  /** @type {import("./media.js").MediaDeviceOption[]} */ #microphones = [];
  /** @type {import("./media.js").MediaDeviceOption[]} */ #speakers = [];
  /** @type {import("./media.js").MediaDeviceOption[]} */ #cameras = [];
  #camera = recall(CAMERA_KEY, localStorage) ?? "";
  #microphone = recall(MICROPHONE_KEY, localStorage) ?? "";
  #speaker = recall(SPEAKER_KEY, localStorage) ?? "";
  #playOn;

  /**
   * @param {object} options
   * @param {(speakerId: string) => Promise<string|null>} options.playOn play the calls on this speaker; resolves
   *   to a sentence if it cannot
   */
  constructor({ playOn }) {
    super();
    this.#playOn = playOn;
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.refresh());
  }

  /** The chosen microphone's `deviceId`, or "" for the system default. */
  get microphone() {
    return this.#microphone;
  }

  /** The chosen camera's `deviceId`, or "" for the system default. */
  get camera() {
    return this.#camera;
  }

  /**
   * The user picked a camera: calls use it from now on.
   * @param {string} cameraId its `deviceId`; "" for the system default
   */
  chooseCamera(cameraId) {
    this.#camera = cameraId;
    remember(CAMERA_KEY, cameraId || null, localStorage);
    this.#changed();
  }

  /**
   * The audio constraints of a call: `base` with the chosen microphone, if any.
   * @param {MediaTrackConstraints} base
   * @returns {MediaTrackConstraints}
   */
  constraints(base) {
    return this.#microphone ? { ...base, deviceId: { ideal: this.#microphone } } : base;
  }

  /**
   * What the page shows.
   * @param {string} [inUse] the `deviceId` of the microphone a call uses now (shown when none was chosen)
   * @param {string} [cameraInUse] the `deviceId` of the camera a call uses now (shown when none was chosen)
   * @returns {MediaDevicesView}
   */
  view(inUse = "", cameraInUse = "") {
    return {
      cameras: this.#cameras,
      camera: this.#camera || cameraInUse,
      microphones: this.#microphones,
      speakers: this.#speakers,
      microphone: this.#microphone || inUse,
      speaker: this.#speaker,
      canChooseSpeaker: canChooseSpeaker(),
    };
  }

  /** List the microphones and speakers again (they changed, or the microphone permission gave them names). */
  async refresh() {
    const found = await listMediaDevices();
    this.#microphones = found.microphones;
    this.#speakers = found.speakers;
    this.#cameras = found.cameras;
    this.#changed();
    // A speaker chosen on an earlier visit can only be used once the page may see the speakers.
    if (this.#speaker && this.#speakers.some((d) => d.id === this.#speaker)) await this.#apply({ quiet: true });
  }

  /**
   * The user picked a microphone: calls use it from now on.
   * @param {string} microphoneId its `deviceId`; "" for the system default
   */
  chooseMicrophone(microphoneId) {
    this.#microphone = microphoneId;
    remember(MICROPHONE_KEY, microphoneId || null, localStorage);
    this.#changed();
  }

  /**
   * The user picked a speaker: the calls and the ringtone play there.
   * @param {string} speakerId its `deviceId`; "" for the system default
   * @returns {Promise<string|null>} why it cannot be used, as a sentence, or null
   */
  async chooseSpeaker(speakerId) {
    this.#speaker = speakerId;
    remember(SPEAKER_KEY, speakerId || null, localStorage);
    const problem = await this.#apply();
    this.#changed();
    return problem;
  }

  /**
   * Play the calls (and the ringtone) on the chosen speaker.
   * @param {{quiet?: boolean}} [options] quiet: a failure is only logged (not the user's doing just now)
   * @returns {Promise<string|null>} the problem, unless quiet
   */
  async #apply({ quiet = false } = {}) {
    if (!canChooseSpeaker()) return null;
    const problem = await this.#playOn(this.#speaker);
    if (!problem) await setToneSink(this.#speaker);
    if (problem && quiet) console.info(`[mediadevices] ${problem}`);
    return quiet ? null : problem;
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
