/**
 * "Test my audio": a short call to the server's echo service (`peercall serve --with-echo`), measured with
 * `getStats()` while it runs.
 *
 * The test call is an ordinary {@link module:call~Call} (same signaling, same ICE servers, same microphone
 * constraints, and it shows in the history like any other call); this module only watches it. Once the call
 * connects it samples the peer connection's statistics every {@link SAMPLE_MS} ms for `durationMs`, then hangs
 * up and sums up:
 *  - round-trip time: the selected candidate pair's `currentRoundTripTime` (STUN consent checks), or else the
 *    RTCP round trip of `remote-inbound-rtp`;
 *  - jitter and packet loss: the `inbound-rtp` audio stream (`jitter`, `packetsLost`, `packetsReceived`);
 *  - a MOS estimate from those (the E-model of quality.js);
 *  - the path: "direct" (peer to peer: host, srflx or prflx candidates) or "relayed" (a TURN relay on either
 *    side), from the selected pair's candidate types;
 *  - "microphone working": the outbound `media-source` audio carried sound (`totalAudioEnergy`);
 *  - "heard yourself back": the inbound audio carried sound after ours left, and how long after ours it came
 *    back (the echo service's own delay, about 0.7 s, plus the network and the buffers both ways).
 *
 * Knows nothing of the DOM: main.js shows `view()` through ui.js.
 * @module audiocheck
 */

import { CallPhase } from "./call.js";
import { describePair, eModel, mosWord, oneWayDelayMs } from "./quality.js";

/** The id the echo service answers as (`peercall echo`, `peercall serve --with-echo`). */
export const ECHO_ID = "echo";
/** How long the test listens once the call is connected (ms). */
export const CHECK_MS = 7000;
/** How often the statistics are read while the test runs (ms). */
export const SAMPLE_MS = 50;
/** How often listeners hear about progress while the test runs (ms). */
const PROGRESS_MS = 500;
/** A stopped test still reports what it measured if it listened at least this long (ms). */
const MIN_USEFUL_MS = 2000;

/**
 * Mean power (mean square of the samples, full scale = 1) above which audio counts as sound rather than
 * silence: -50 dBFS. Opus-coded digital silence measures about 1e-10; speech 1e-4 to 1e-2.
 */
export const SOUND_POWER = 1e-5;
/** An energy onset is where the power first reaches this fraction of the stream's loudest stretch (-10 dB). */
const ONSET_FRACTION = 0.1;

/**
 * One reading of the statistics that matter here.
 * @typedef {object} Sample
 * @property {number} t the report's timestamp (ms)
 * @property {{energy: number, duration: number}|null} out our microphone (`media-source`)
 * @property {{energy: number, duration: number, packetsReceived: number, packetsLost: number, jitter: number|null,
 *   jitterBufferDelay: number, jitterBufferEmittedCount: number}|null} in the audio we receive (`inbound-rtp`)
 * @property {{rtt: number|null, local: string|null, remote: string|null, protocol: string|null}|null} pair
 *   the selected candidate pair
 * @property {number|null} remoteRtt `remote-inbound-rtp` roundTripTime (s)
 */

/**
 * Read a `getStats()` report.
 * @param {RTCStatsReport} stats
 * @returns {Sample}
 */
export function readStats(stats) {
  /** @type {Sample} */
  const sample = { t: 0, out: null, in: null, pair: null, remoteRtt: null };
  let pair = null;
  for (const r of stats.values()) {
    sample.t = Math.max(sample.t, r.timestamp ?? 0);
    if (r.type === "media-source" && r.kind === "audio") {
      sample.out = { energy: r.totalAudioEnergy ?? 0, duration: r.totalSamplesDuration ?? 0 };
    } else if (r.type === "inbound-rtp" && r.kind === "audio") {
      sample.in = {
        energy: r.totalAudioEnergy ?? 0,
        duration: r.totalSamplesDuration ?? 0,
        packetsReceived: r.packetsReceived ?? 0,
        packetsLost: r.packetsLost ?? 0,
        jitter: typeof r.jitter === "number" ? r.jitter : null,
        jitterBufferDelay: r.jitterBufferDelay ?? 0,
        jitterBufferEmittedCount: r.jitterBufferEmittedCount ?? 0,
      };
    } else if (r.type === "remote-inbound-rtp" && r.kind === "audio" && typeof r.roundTripTime === "number") {
      sample.remoteRtt = r.roundTripTime;
    } else if (r.type === "transport" && r.selectedCandidatePairId) {
      pair = stats.get(r.selectedCandidatePairId) ?? pair;
    }
  }
  sample.pair = describePair(stats, pair);
  return sample;
}

/**
 * The power (mean square) of a stream between consecutive samples, with the time each stretch ends.
 * @param {Sample[]} samples
 * @param {"out"|"in"} which
 * @returns {{t: number, power: number}[]}
 */
function powers(samples, which) {
  const result = [];
  for (let i = 1; i < samples.length; i += 1) {
    const a = samples[i - 1][which];
    const b = samples[i][which];
    if (!a || !b) continue;
    const seconds = b.duration - a.duration;
    if (!(seconds > 0)) continue;
    result.push({ t: samples[i].t, power: Math.max(0, b.energy - a.energy) / seconds });
  }
  return result;
}

/**
 * When sound first starts in `series` (at or after `after`): where its power first reaches a tenth of its
 * loudest stretch, if that stretch is sound at all.
 * @param {{t: number, power: number}[]} series
 * @param {number} [after]
 * @returns {{t: number, peak: number}|null}
 */
function onset(series, after = -Infinity) {
  const later = series.filter((p) => p.t >= after);
  const peak = Math.max(0, ...later.map((p) => p.power));
  if (peak < SOUND_POWER) return null;
  const first = later.find((p) => p.power >= peak * ONSET_FRACTION);
  return first ? { t: first.t, peak } : null;
}

/**
 * What a test measured.
 * @typedef {object} AudioCheckResult
 * @property {number} listenedMs how long it listened
 * @property {number|null} rttMs network round trip
 * @property {number|null} jitterMs
 * @property {number} lossPct
 * @property {number} packetsReceived
 * @property {number} packetsLost
 * @property {number|null} jitterBufferMs mean time audio waited in our jitter buffer
 * @property {number} oneWayMs the one-way delay estimate the MOS is based on
 * @property {number} r E-model rating
 * @property {number} mos
 * @property {string} quality the MOS in a word ({@link mosWord})
 * @property {"direct"|"relayed"|null} path
 * @property {{local: string|null, remote: string|null, protocol: string|null}|null} pair
 * @property {boolean} micWorking
 * @property {boolean} heardBack
 * @property {number|null} echoDelayMs from our sound leaving to its echo coming back
 */

/**
 * Sum up the samples of a test.
 * @param {Sample[]} samples in time order
 * @returns {AudioCheckResult|null} null without any inbound audio statistics
 */
export function summarize(samples) {
  const withIn = samples.filter((s) => s.in);
  if (!withIn.length) return null;
  const last = withIn.at(-1);
  const lastPair = samples.findLast((s) => s.pair)?.pair ?? null;
  const remoteRtt = samples.findLast((s) => s.remoteRtt !== null)?.remoteRtt ?? null;
  const rtt = lastPair?.rtt ?? remoteRtt;
  const rttMs = rtt === null ? null : rtt * 1000;
  const { packetsReceived, jitter } = last.in;
  const packetsLost = Math.max(0, last.in.packetsLost);
  const expected = packetsReceived + packetsLost;
  const lossPct = expected > 0 ? (100 * packetsLost) / expected : 0;
  const jitterBufferMs =
    last.in.jitterBufferEmittedCount > 0 ? (1000 * last.in.jitterBufferDelay) / last.in.jitterBufferEmittedCount : null;
  const oneWayMs = oneWayDelayMs({ rttMs, jitterBufferMs });
  const { r, mos } = eModel({ delayMs: oneWayMs, lossPct });

  const outPower = powers(samples, "out");
  const inPower = powers(samples, "in");
  const sent = onset(outPower);
  const micWorking = Boolean(sent);
  // The echo of what we said can only come back after it left; anything before is not ours.
  const back = sent ? onset(inPower, sent.t) : null;
  const heardBack = Boolean(back);
  const relayed = lastPair && (lastPair.local === "relay" || lastPair.remote === "relay");
  return {
    listenedMs: samples.length > 1 ? samples.at(-1).t - samples[0].t : 0,
    rttMs,
    jitterMs: jitter === null ? null : jitter * 1000,
    lossPct,
    packetsReceived,
    packetsLost,
    jitterBufferMs,
    oneWayMs,
    r,
    mos,
    quality: mosWord(mos),
    path: lastPair ? (relayed ? "relayed" : "direct") : null,
    pair: lastPair,
    micWorking,
    heardBack,
    echoDelayMs: sent && back ? back.t - sent.t : null,
  };
}

/**
 * @typedef {"calling"|"measuring"|"done"|"stopped"|"failed"} AudioCheckState
 *  calling: the echo rings / the call is being set up; measuring: connected, listening; done: measured for the
 *  whole time and hung up; stopped: the call ended early, but long enough to report; failed: no measurements.
 */

/**
 * Watches one call to the echo service, measures it, and hangs it up after `durationMs`.
 *
 * Events: `change` (the state changed or progress was made; `view()` says what to show).
 */
export class AudioCheck extends EventTarget {
  /** @type {AudioCheckState} */ #state = "calling";
  /** @type {Sample[]} */ #samples = [];
  /** @type {AudioCheckResult|null} */ #result = null;
  #call;
  #durationMs;
  /** @type {RTCPeerConnection|null} */ #pc = null;
  #startedAt = 0;
  #sampler = 0;
  #ticker = 0;
  #timer = 0;
  #reading = false;

  /**
   * @param {import("./call.js").Call} call an outgoing call to the echo service, not yet started
   * @param {{durationMs?: number}} [options]
   */
  constructor(call, { durationMs = CHECK_MS } = {}) {
    super();
    this.#call = call;
    this.#durationMs = durationMs;
    call.addEventListener("phasechange", (event) => this.#onCallPhase(event.detail.phase));
  }

  /** The call being measured. */
  get call() {
    return this.#call;
  }
  /** @returns {AudioCheckState} */
  get state() {
    return this.#state;
  }
  /** Whether the test is still going (ringing, connecting or measuring). */
  get running() {
    return this.#state === "calling" || this.#state === "measuring";
  }
  /** Whether the test ran its whole course and hung up by itself. */
  get completed() {
    return this.#state === "done";
  }
  /** @returns {AudioCheckResult|null} */
  get result() {
    return this.#result;
  }

  /** What the page shows. */
  view() {
    const elapsed = this.#state === "measuring" ? performance.now() - this.#startedAt : 0;
    return {
      state: this.#state,
      progress: this.#state === "measuring" ? Math.min(1, elapsed / this.#durationMs) : this.running ? 0 : 1,
      secondsLeft: this.#state === "measuring" ? Math.max(0, Math.ceil((this.#durationMs - elapsed) / 1000)) : null,
      durationMs: this.#durationMs,
      result: this.#result,
    };
  }

  /** @param {CallPhase} phase */
  #onCallPhase(phase) {
    if (phase === CallPhase.CONNECTED && this.#state === "calling") this.#startMeasuring();
    else if (phase === CallPhase.ENDED && this.running) this.#callEnded();
  }

  #startMeasuring() {
    this.#pc = this.#call.pc;
    this.#state = "measuring";
    this.#startedAt = performance.now();
    this.#sampler = setInterval(() => this.#sample(), SAMPLE_MS);
    this.#ticker = setInterval(() => this.#changed(), PROGRESS_MS);
    this.#timer = setTimeout(() => this.#finish(), this.#durationMs);
    this.#sample();
    this.#changed();
  }

  /** Read the statistics once (skipped if the previous reading is still under way). */
  async #sample() {
    const pc = this.#pc;
    if (this.#reading || !pc || pc.connectionState === "closed") return;
    this.#reading = true;
    try {
      this.#samples.push(readStats(await pc.getStats()));
    } catch (err) {
      console.debug("[audiocheck] getStats failed:", err);
    } finally {
      this.#reading = false;
    }
  }

  /** The time is up: read the statistics a last time, then hang up. */
  async #finish() {
    this.#stopTimers();
    if (this.#state !== "measuring") return;
    while (this.#reading) await new Promise((resolve) => setTimeout(resolve, 5));
    await this.#sample();
    if (this.#state !== "measuring") return; // the call ended meanwhile
    this.#result = summarize(this.#samples);
    this.#state = this.#result ? "done" : "failed";
    console.info("[audiocheck] result", this.#result);
    this.#changed();
    this.#call.hangup();
  }

  /** The call ended before the test was over (hung up, refused, failed…). */
  #callEnded() {
    this.#stopTimers();
    const listened = this.#state === "measuring" ? performance.now() - this.#startedAt : 0;
    this.#result = listened >= MIN_USEFUL_MS ? summarize(this.#samples) : null;
    this.#state = this.#result ? "stopped" : "failed";
    this.#changed();
  }

  #stopTimers() {
    clearInterval(this.#sampler);
    clearInterval(this.#ticker);
    clearTimeout(this.#timer);
  }

  #changed() {
    this.dispatchEvent(new CustomEvent("change", { detail: this.view() }));
  }
}
