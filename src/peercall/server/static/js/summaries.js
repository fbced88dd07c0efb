/**
 * Call summaries: the quality figures this side measured of each call that connected, sent to the server once
 * as `call-summary` (after its `call-ended`: it refuses one before), and shown in the history until the
 * server's record carries them.
 *
 * Owns the frames waiting to be sent (e.g. while the connection is down), the frames sent, and our own summary
 * of each call by call id. Sends through the function it is given; knows nothing of the DOM or of the call.
 *
 * Events: `sent` (detail: the `call-summary` frame just sent).
 * @module summaries
 */

import { callSummary } from "./protocol.js";

/** The summaries of this page's calls. */
export class CallSummaries extends EventTarget {
  /** @type {object[]} the `call-summary` frames sent (newest last) */ #sent = [];
  /** @type {Map<string, object>} callId -> frame, waiting to be sent */ #pending = new Map();
  /** @type {Map<string, object>} callId -> our summary's data, as the history shows it */ #own = new Map();
  #send;

  /**
   * @param {object} options
   * @param {(frame: object) => boolean} options.send sends a frame now; false if it could not
   */
  constructor({ send }) {
    super();
    this.#send = send;
  }

  /** The `call-summary` frames sent so far, oldest first. */
  get sent() {
    return [...this.#sent];
  }

  /**
   * Keep our summary of a call, to show it in the history (if it has a MOS).
   * @param {string|undefined} callId
   * @param {import("./quality.js").CallSummary} summary
   */
  keep(callId, summary) {
    if (callId && summary.mos !== null) this.#own.set(callId, callSummary(callId, summary).data);
  }

  /**
   * Send the summary of a call once (now, or when {@link flush} can).
   * @param {string} callId
   * @param {import("./quality.js").CallSummary} summary
   */
  send(callId, summary) {
    if (this.#pending.has(callId) || this.#sent.some((f) => f.callId === callId)) return;
    this.#pending.set(callId, callSummary(callId, summary)); // takes the fields of the protocol only
    this.flush();
  }

  /** Send the summaries that wait (e.g. for the connection to come back). */
  flush() {
    for (const [callId, frame] of this.#pending) {
      if (!this.#send(frame)) return;
      this.#pending.delete(callId);
      this.#sent.push(frame);
      console.info(`[summaries] sent the summary of call ${callId}:`, frame.data);
      this.dispatchEvent(new CustomEvent("sent", { detail: frame }));
    }
  }

  /**
   * A history record with our own summary of the call added, until the server's record carries it.
   * @param {import("./ui.js").CallRecord & {quality?: Record<string, object>}} record
   * @param {string|null} me whose history it is
   */
  withOwn(record, me) {
    const mine = this.#own.get(record.callId);
    if (!mine || !me || record.quality?.[me]) return record;
    return { ...record, quality: { ...(record.quality ?? {}), [me]: mine } };
  }
}
