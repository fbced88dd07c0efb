/**
 * Telling the user a call rings: the ringtone while a call rings here, the ringback tone while ours rings
 * there, and a system notification when a call rings while the tab is hidden (if the user allowed them).
 *
 * Owns the two tones, the notification shown, and the Notification permission request. Touches no element of
 * the page (the page reacts to `accept`) and knows nothing of the signaling connection or the call's workings.
 *
 * Events: `accept` (the user clicked the notification of a ringing call: bring the Accept button forward).
 * @module notifications
 */

import { RINGBACK, RINGTONE, Tone } from "./media.js";
import { handle, label } from "./names.js";

/**
 * What rings right now.
 * @typedef {object} Ringing
 * @property {{peerId: string, callId?: string}|null} incoming a call ringing here, or null
 * @property {boolean} outgoing our call rings there (the ringback tone plays)
 */

/** The page's ringtone, ringback tone and notifications. */
export class Notifier extends EventTarget {
  /** The ringtone of an incoming call. */
  ringtone = new Tone(RINGTONE);
  /** What the caller hears while it rings there. */
  ringback = new Tone(RINGBACK);
  /** @type {Notification|null} the notification of the call ringing now */ #notification = null;
  /** @type {Ringing["incoming"]} */ #incoming = null;

  constructor() {
    super();
    document.addEventListener("visibilitychange", () => {
      if (this.#incoming) this.#notify();
    });
  }

  /** Whether the ringtone plays (a call rings here). */
  get ringing() {
    return this.ringtone.playing;
  }

  /** @returns {"default"|"granted"|"denied"|"unsupported"} the Notification permission */
  get permission() {
    return "Notification" in globalThis ? globalThis.Notification.permission : "unsupported";
  }

  /** Ask the user whether we may show notifications (once: only while they have not decided). */
  async requestPermission() {
    if (this.permission !== "default") return;
    try {
      await globalThis.Notification.requestPermission();
    } catch (err) {
      console.warn("[notifications] could not ask for notifications:", err);
    }
  }

  /**
   * Play what fits what rings now, and stop the rest.
   * @param {Ringing} ringing
   */
  update({ incoming, outgoing }) {
    this.#incoming = incoming;
    if (incoming) this.ringtone.start();
    else this.ringtone.stop();
    if (outgoing) this.ringback.start();
    else this.ringback.stop();
    if (incoming) this.#notify();
    else this.#closeNotification();
  }

  /** A call rings while the tab is hidden: show a notification (if the user allowed them). */
  #notify() {
    const call = this.#incoming;
    if (!call || this.#notification || document.visibilityState !== "hidden" || this.permission !== "granted") {
      return;
    }
    try {
      const who = label(call.peerId);
      // A notification's title and body are plain text: a display name shows as it is written.
      const shown = new Notification(`Incoming call from ${who}`, {
        body: who === call.peerId ? "Open peercall to answer." : `${handle(call.peerId)}. Open peercall to answer.`,
        tag: `peercall-call-${call.callId ?? call.peerId}`,
        requireInteraction: true,
      });
      shown.addEventListener("click", () => {
        globalThis.focus();
        shown.close();
        this.dispatchEvent(new Event("accept"));
      });
      this.#notification = shown;
    } catch (err) {
      console.warn("[notifications] could not show a notification:", err);
    }
  }

  #closeNotification() {
    this.#notification?.close();
    this.#notification = null;
  }
}
