/**
 * Call quality while a call is connected, from `getStats()` every {@link QUALITY_MS} ms: round trip, jitter,
 * packet loss, bit rate, a MOS estimate (the ITU-T G.107 E-model, here), the path (direct or relayed),
 * and whether the audio from the other side is digital silence (their microphone is muted or sends nothing); in a
 * video call also the video from the other side (size, frame rate, bit rate), and the bandwidth limits that fit
 * the path for the video we send ({@link videoTier}).
 *
 * When the call ends, `summary()` averages what was measured: what the page shows, and what it sends to the
 * server as `call-summary`.
 *
 * The E-model ({@link eModel}) and the pieces of a `getStats()` report it needs live here; the audio check
 * (audiocheck.js) uses them too.
 *
 * Owns one interval timer; knows nothing of the DOM or of the signaling connection.
 * @module quality
 */

/**
 * Opus's packet-loss robustness factor for the E-model (ITU-T G.107 `Bpl`). G.113 lists no value for Opus;
 * codecs with good packet-loss concealment are given 10-25 (G.722 with PLC: 13-21), and browsers send Opus
 * with in-band FEC. We take 15.
 */
export const OPUS_BPL = 15;
/**
 * One-way delay that the codec adds (ms): a 20 ms Opus frame plus its 6.5 ms look-ahead. Capture and playout
 * buffers of the microphone and the speaker are not known to the page and not counted.
 */
export const CODEC_DELAY_MS = 26.5;

/**
 * Estimate the listening quality of a call with the ITU-T G.107 E-model, simplified for Opus:
 *
 *     R = 93.2 − Id(d) − Ie,eff(Ppl)
 *     Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)         d: one-way mouth-to-ear delay in ms, H: step function
 *     Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)  Ppl: packet loss in %, Ie = 0 (Opus: no impairment
 *                                                           of its own at voice bit rates), BurstR = 1 (random
 *                                                           loss), Bpl = {@link OPUS_BPL}
 *     MOS = 1                                   for R ≤ 0
 *         = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R)   for 0 < R < 100
 *         = 4.5                                 for R ≥ 100
 *
 * 93.2 is the default R with no impairment (the other G.107 factors at their defaults: no noise, no echo).
 * A perfect network gives R = 93.2 − small Id ≈ 92, MOS ≈ 4.4 ("excellent"); 1 % loss costs about 6 R;
 * beyond 177 ms one way, delay starts to hurt fast.
 *
 * @param {object} input
 * @param {number} input.delayMs d, the one-way delay in ms (see {@link oneWayDelayMs})
 * @param {number} input.lossPct Ppl, packet loss in percent (0-100)
 * @param {number} [input.bpl] packet-loss robustness (default {@link OPUS_BPL})
 * @param {number} [input.ie] equipment impairment of the codec (default 0)
 * @param {number} [input.burstR] burst ratio (1: random loss)
 * @returns {{r: number, mos: number, id: number, ieEff: number}}
 */
export function eModel({ delayMs, lossPct, bpl = OPUS_BPL, ie = 0, burstR = 1 }) {
  const d = Math.max(0, delayMs);
  const ppl = Math.min(100, Math.max(0, lossPct));
  const id = 0.024 * d + (d > 177.3 ? 0.11 * (d - 177.3) : 0);
  const ieEff = ie + ((95 - ie) * ppl) / (ppl / burstR + bpl);
  const r = 93.2 - id - ieEff;
  return { r, mos: mosFromR(r), id, ieEff };
}

/**
 * The G.107 mapping from the rating R to a mean opinion score (1-4.5).
 * @param {number} r
 * @returns {number}
 */
export function mosFromR(r) {
  if (!(r > 0)) return 1;
  if (r >= 100) return 4.5;
  return Math.min(4.5, Math.max(1, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)));
}

/**
 * A word for a MOS, after the G.107 bands of R (90, 80, 70, 60 ↔ MOS 4.34, 4.03, 3.60, 3.10).
 * @param {number} mos
 * @returns {"excellent"|"good"|"fair"|"poor"|"bad"}
 */
export function mosWord(mos) {
  if (mos >= 4.3) return "excellent";
  if (mos >= 4.0) return "good";
  if (mos >= 3.6) return "fair";
  if (mos >= 3.1) return "poor";
  return "bad";
}

/**
 * The one-way mouth-to-ear delay the E-model wants, estimated from what the page can see: half the network
 * round trip, plus the time audio waits in our jitter buffer, plus the codec's own delay.
 * @param {{rttMs: number|null, jitterBufferMs: number|null}} measured
 * @returns {number} ms
 */
export function oneWayDelayMs({ rttMs, jitterBufferMs }) {
  return (rttMs ?? 0) / 2 + (jitterBufferMs ?? 0) + CODEC_DELAY_MS;
}

/**
 * The candidate pair carrying the call (the transport's selected pair, else a nominated succeeded one), as
 * {rtt (s), local and remote candidate types, protocol}; null before any pair works.
 * @param {RTCStatsReport} stats
 * @param {any} pair the transport's selected pair, if the report named one
 */
export function describePair(stats, pair) {
  if (!pair) {
    for (const r of stats.values()) {
      if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r;
    }
  }
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {
    rtt: typeof pair.currentRoundTripTime === "number" ? pair.currentRoundTripTime : null,
    local: local?.candidateType ?? null,
    remote: remote?.candidateType ?? null,
    protocol: local?.protocol ?? null,
  };
}

/** How often the statistics are read during a call (ms). */
export const QUALITY_MS = 1000;
/** Loss and bit rate are measured over this much of the recent past (ms), so that they do not flicker. */
export const WINDOW_MS = 5000;
/**
 * Mean power (mean square, full scale = 1) below which received audio counts as digital silence: what a muted
 * (disabled) microphone sends. Opus-coded digital silence measures about 1e-10; a quiet room with noise
 * suppression still measures 1e-8 or more.
 */
export const SILENCE_POWER = 1e-9;
/** Received audio must be digital silence for this long (ms) before the page says "no sound from …". */
export const SILENT_AFTER_MS = 2000;

/**
 * Good, fair or poor, from a MOS: G.107's "satisfied" bands (R ≥ 80 ↔ MOS ≥ 4.03; R ≥ 70 ↔ MOS ≥ 3.6).
 * @param {number|null} mos
 * @returns {"good"|"fair"|"poor"|null}
 */
export function qualityLevel(mos) {
  if (mos === null || !Number.isFinite(mos)) return null;
  if (mos >= 4.0) return "good";
  if (mos >= 3.6) return "fair";
  return "poor";
}

/**
 * The statistics of one `getStats()` report that matter here.
 * @typedef {object} RawStats
 * @property {number} t the report's timestamp (ms)
 * @property {{packetsReceived: number, packetsLost: number, bytesReceived: number, jitter: number|null,
 *   energy: number, duration: number, jitterBufferDelay: number, jitterBufferEmittedCount: number,
 *   audioLevel: number|null}|null} in the inbound audio stream
 * @property {{bytesSent: number, packetsSent: number}|null} out the outbound audio stream
 * @property {{rtt: number|null, local: string|null, remote: string|null, protocol: string|null}|null} pair
 *   the selected candidate pair
 * @property {number|null} remoteRtt `remote-inbound-rtp` roundTripTime (s)
 * @property {{bytesReceived: number, framesDecoded: number, width: number|null, height: number|null,
 *   fps: number|null}|null} video the inbound video stream, once the call has one
 * @property {number|null} videoSendLoss the fraction of our video the peer reports lost (0..1), if we send video;
 *   of the video that loses the most, if we send more than one
 */

/**
 * Read a `getStats()` report.
 * @param {RTCStatsReport} stats
 * @returns {RawStats}
 */
export function readCallStats(stats) {
  /** @type {RawStats} */
  const raw = { t: 0, in: null, out: null, pair: null, remoteRtt: null, video: null, videoSendLoss: null };
  let pair = null;
  for (const r of stats.values()) {
    raw.t = Math.max(raw.t, r.timestamp ?? 0);
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      raw.in = {
        packetsReceived: r.packetsReceived ?? 0,
        packetsLost: Math.max(0, r.packetsLost ?? 0),
        bytesReceived: r.bytesReceived ?? 0,
        jitter: typeof r.jitter === "number" ? r.jitter : null,
        energy: r.totalAudioEnergy ?? 0,
        duration: r.totalSamplesDuration ?? 0,
        jitterBufferDelay: r.jitterBufferDelay ?? 0,
        jitterBufferEmittedCount: r.jitterBufferEmittedCount ?? 0,
        audioLevel: typeof r.audioLevel === "number" ? r.audioLevel : null,
      };
    } else if (r.type === "inbound-rtp" && r.kind === "video") {
      raw.video = {
        bytesReceived: r.bytesReceived ?? 0,
        framesDecoded: r.framesDecoded ?? 0,
        width: r.frameWidth ?? null,
        height: r.frameHeight ?? null,
        fps: typeof r.framesPerSecond === "number" ? r.framesPerSecond : null,
      };
    } else if (r.type === "remote-inbound-rtp" && r.kind === "video" && typeof r.fractionLost === "number") {
      raw.videoSendLoss = Math.max(raw.videoSendLoss ?? 0, r.fractionLost); // the worst of the videos we send
    } else if (r.type === "outbound-rtp" && r.kind === "audio") {
      raw.out = { bytesSent: r.bytesSent ?? 0, packetsSent: r.packetsSent ?? 0 };
    } else if (r.type === "remote-inbound-rtp" && r.kind === "audio" && typeof r.roundTripTime === "number") {
      raw.remoteRtt = r.roundTripTime;
    } else if (r.type === "transport" && r.selectedCandidatePairId) {
      pair = stats.get(r.selectedCandidatePairId) ?? pair;
    }
  }
  raw.pair = describePair(stats, pair);
  return raw;
}

/**
 * What the page shows of the call's quality right now.
 * @typedef {object} QualitySample
 * @property {number} at Date.now() of the reading
 * @property {number|null} rttMs network round trip
 * @property {number|null} jitterMs inbound jitter
 * @property {number} lossPct inbound packet loss over the last {@link WINDOW_MS}
 * @property {number|null} bitrateKbps inbound audio bit rate (RTP payload) over the last {@link WINDOW_MS}
 * @property {number|null} mos E-model estimate (1-4.5)
 * @property {"good"|"fair"|"poor"|null} level
 * @property {"direct"|"relayed"|null} path
 * @property {{local: string|null, remote: string|null, protocol: string|null}|null} pair
 * @property {boolean} receiving packets from the other side arrived since the last reading
 * @property {boolean} remoteSilent the other side's audio has been digital silence for {@link SILENT_AFTER_MS}
 * @property {{width: number, height: number, fps: number|null, bitrateKbps: number|null}|null} video the video
 *   from the other side, while frames arrive (null when they send none)
 * @property {number|null} videoSendLossPct how much of the video we send is lost on the way (the peer's reports)
 */

/**
 * Work out a {@link QualitySample} from the readings so far (oldest first, the newest last).
 * @param {RawStats[]} raws
 * @returns {QualitySample|null} null until two readings with inbound audio exist
 */
export function sampleFrom(raws) {
  const withIn = raws.filter((r) => r.in);
  if (withIn.length < 2) return null;
  const cur = withIn.at(-1);
  const prev = withIn.at(-2);
  const first = withIn.find((r) => cur.t - r.t <= WINDOW_MS) ?? prev;
  const base = first === cur ? prev : first;
  const seconds = (cur.t - base.t) / 1000;

  const received = cur.in.packetsReceived - base.in.packetsReceived;
  const lost = Math.max(0, cur.in.packetsLost - base.in.packetsLost);
  const lossPct = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
  const bitrateKbps = seconds > 0 ? ((cur.in.bytesReceived - base.in.bytesReceived) * 8) / seconds / 1000 : null;

  const rtt = cur.pair?.rtt ?? cur.remoteRtt;
  const rttMs = rtt === null || rtt === undefined ? null : rtt * 1000;
  const jitterMs = cur.in.jitter === null ? null : cur.in.jitter * 1000;
  const emitted = cur.in.jitterBufferEmittedCount - base.in.jitterBufferEmittedCount;
  const jitterBufferMs =
    emitted > 0 ? (1000 * (cur.in.jitterBufferDelay - base.in.jitterBufferDelay)) / emitted : null;
  const { mos } = eModel({ delayMs: oneWayDelayMs({ rttMs, jitterBufferMs }), lossPct });

  // Silence: over the last SILENT_AFTER_MS (at least), packets came but carried no sound.
  const ref = withIn.findLast((r) => cur.t - r.t >= SILENT_AFTER_MS - QUALITY_MS / 4);
  let remoteSilent = false;
  if (ref && ref !== cur) {
    const dur = cur.in.duration - ref.in.duration;
    const packets = cur.in.packetsReceived - ref.in.packetsReceived;
    const power = dur > 0 ? Math.max(0, cur.in.energy - ref.in.energy) / dur : 0;
    remoteSilent = packets > 0 && dur > 0 && power < SILENCE_POWER;
  }
  const relayed = cur.pair && (cur.pair.local === "relay" || cur.pair.remote === "relay");
  return {
    video: videoFrom(raws),
    videoSendLossPct: cur.videoSendLoss === null ? null : 100 * cur.videoSendLoss,
    at: Date.now(),
    rttMs,
    jitterMs,
    lossPct,
    bitrateKbps,
    mos,
    level: qualityLevel(mos),
    path: cur.pair ? (relayed ? "relayed" : "direct") : null,
    pair: cur.pair,
    receiving: cur.in.packetsReceived > prev.in.packetsReceived,
    remoteSilent,
  };
}

/**
 * The video from the other side in the newest reading: its size and frame rate, and its bit rate over the last
 * {@link WINDOW_MS}; null while no frames arrive (their camera is off).
 * @param {RawStats[]} raws oldest first
 */
function videoFrom(raws) {
  const withVideo = raws.filter((r) => r.video);
  const cur = withVideo.at(-1);
  const prev = withVideo.at(-2);
  if (!cur || !prev || cur !== raws.at(-1)) return null;
  if (cur.video.framesDecoded <= prev.video.framesDecoded || !cur.video.width || !cur.video.height) return null;
  const base = withVideo.find((r) => cur.t - r.t <= WINDOW_MS && r !== cur) ?? prev;
  const seconds = (cur.t - base.t) / 1000;
  const bytes = cur.video.bytesReceived - base.video.bytesReceived;
  return {
    width: cur.video.width,
    height: cur.video.height,
    fps: cur.video.fps,
    bitrateKbps: seconds > 0 ? (bytes * 8) / seconds / 1000 : null,
  };
}

/**
 * Bandwidth limits of the video we send, by how the path looks: the full rate on a clean direct path; less
 * through a relay (a TURN server pays for every byte, and adds a hop) or when a few percent is lost; much less
 * when a tenth is lost. The browser's own congestion control still works below these ceilings; the limits only
 * keep it from trying (and losing audio packets on the way) where the path is known to be poor.
 * @enum {{maxBitrate: number, scaleResolutionDownBy: number}}
 */
export const VIDEO_LIMITS = Object.freeze({
  full: Object.freeze({ maxBitrate: 1_500_000, scaleResolutionDownBy: 1 }),
  reduced: Object.freeze({ maxBitrate: 500_000, scaleResolutionDownBy: 2 }),
  low: Object.freeze({ maxBitrate: 200_000, scaleResolutionDownBy: 4 }),
});
/** Loss (%) from which the video is reduced, and from which it is low. */
export const VIDEO_LOSS_REDUCED = 3;
export const VIDEO_LOSS_LOW = 10;

/**
 * Which {@link VIDEO_LIMITS} fit the path now.
 * @param {{path: "direct"|"relayed"|null, lossPct: number, videoSendLossPct?: number|null}} sample the worse of
 *   the audio we receive and the video we send counts
 * @returns {"full"|"reduced"|"low"}
 */
export function videoTier({ path, lossPct, videoSendLossPct = null }) {
  const loss = Math.max(lossPct ?? 0, videoSendLossPct ?? 0);
  if (loss >= VIDEO_LOSS_LOW) return "low";
  if (loss >= VIDEO_LOSS_REDUCED || path === "relayed") return "reduced";
  return "full";
}

/**
 * What a call was like, all in all (the fields of `call-summary`).
 * @typedef {object} CallSummary
 * @property {number} durationSec
 * @property {number|null} mos the mean of the MOS estimates
 * @property {number|null} rttMs mean
 * @property {number|null} jitterMs mean
 * @property {number|null} lossPct over the whole call
 * @property {number|null} bitrateKbps over the whole call
 * @property {"direct"|"relayed"|null} path the last one
 * @property {"good"|"fair"|"poor"|null} level from the mean MOS
 */

/**
 * Watches one connected call.
 *
 * Events: `sample` (detail: {@link QualitySample}), every {@link QUALITY_MS} ms once two readings exist.
 */
export class QualityMonitor extends EventTarget {
  /** @type {() => RTCPeerConnection|null} */ #pc;
  /** @type {RawStats[]} the last readings (a few windows' worth) */ #raws = [];
  /** @type {RawStats|null} the first reading with inbound audio */ #firstIn = null;
  /** @type {QualitySample|null} */ #last = null;
  #sums = { mos: 0, mosN: 0, rtt: 0, rttN: 0, jitter: 0, jitterN: 0 };
  #timer = 0;
  #reading = false;
  #stopped = false;

  /** @param {() => RTCPeerConnection|null} getPc the call's peer connection (read at every sample) */
  constructor(getPc) {
    super();
    this.#pc = getPc;
  }

  /** The latest sample, or null before the first. */
  get last() {
    return this.#last;
  }

  /** Start reading the statistics (at once, then every {@link QUALITY_MS} ms). */
  start() {
    if (this.#timer || this.#stopped) return;
    this.#timer = setInterval(() => this.#read(), QUALITY_MS);
    this.#read();
  }

  /** Stop for good (the call ended). */
  stop() {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = 0;
  }

  /**
   * Sum the call up.
   * @param {number} durationSec how long the audio was connected
   * @returns {CallSummary}
   */
  summary(durationSec) {
    const s = this.#sums;
    const first = this.#firstIn;
    const last = this.#raws.findLast((r) => r.in) ?? null;
    let lossPct = null;
    let bitrateKbps = null;
    if (first && last && last !== first) {
      const received = last.in.packetsReceived - first.in.packetsReceived;
      const lost = Math.max(0, last.in.packetsLost - first.in.packetsLost);
      lossPct = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
      const seconds = (last.t - first.t) / 1000;
      bitrateKbps = seconds > 0 ? ((last.in.bytesReceived - first.in.bytesReceived) * 8) / seconds / 1000 : null;
    }
    const mos = s.mosN ? s.mos / s.mosN : null;
    return {
      durationSec: Math.max(0, durationSec),
      mos,
      rttMs: s.rttN ? s.rtt / s.rttN : null,
      jitterMs: s.jitterN ? s.jitter / s.jitterN : null,
      lossPct,
      bitrateKbps,
      path: this.#last?.path ?? null,
      level: qualityLevel(mos),
    };
  }

  async #read() {
    const pc = this.#pc();
    if (this.#reading || this.#stopped || !pc || pc.connectionState === "closed") return;
    this.#reading = true;
    try {
      const raw = readCallStats(await pc.getStats());
      if (this.#stopped) return;
      if (raw.in && !this.#firstIn) this.#firstIn = raw;
      this.#raws.push(raw);
      const keep = Math.ceil((WINDOW_MS + SILENT_AFTER_MS) / QUALITY_MS) + 2;
      if (this.#raws.length > keep) this.#raws.splice(0, this.#raws.length - keep);
      const sample = sampleFrom(this.#raws);
      if (!sample) return;
      this.#last = sample;
      const s = this.#sums;
      if (sample.mos !== null && sample.receiving) {
        s.mos += sample.mos;
        s.mosN += 1;
      }
      if (sample.rttMs !== null) {
        s.rtt += sample.rttMs;
        s.rttN += 1;
      }
      if (sample.jitterMs !== null) {
        s.jitter += sample.jitterMs;
        s.jitterN += 1;
      }
      this.dispatchEvent(new CustomEvent("sample", { detail: sample }));
    } catch (err) {
      console.debug("[quality] getStats failed:", err);
    } finally {
      this.#reading = false;
    }
  }
}
