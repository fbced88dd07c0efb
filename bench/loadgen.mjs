// peercall benchmark load generator: one Node process, many WebSocket clients (its own minimal client over `net`
// sockets by default, see RawSocket; `--client ws`: the `ws` package).
//
//   node bench/loadgen.mjs --proto peercall|peerjs --url ws://127.0.0.1:PORT --scenario pingpong|calls|idle [...]
//
// Prints one JSON line with the results on stdout. Every relayed frame carries a sequence number that the
// receiver checks: a lost, duplicated, reordered, misrouted or unexpected frame fails the run with a message
// starting "FAIL:" on stderr and exit code 1. Everything is bounded in time (--duration, --drain-timeout,
// --setup-timeout) and in count (--pairs, --conns).
//
// `--proto peercall` speaks docs/protocol.md (real call setup: call-request -> call-ringing/call-request ->
// call-accept, then offer/answer/candidate with the server's `from` and `callId` checked); `--proto peerjs`
// speaks the PeerJS server's protocol (OPEN, then OFFER/ANSWER/CANDIDATE/LEAVE with `dst`, received with `src`).

import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(process.env.PEERCALL_BENCH_MODULES || path.join(here, ".work", "loadgen"), "x.js"));
let WebSocket;
try {
  WebSocket = require("ws");
} catch {
  process.stderr.write("FAIL: the `ws` package is not installed; run `python3 bench/run.py --install-only` first\n");
  process.exit(2);
}

// ---------------------------------------------------------------- options
const opts = {
  proto: "peercall",
  url: "",
  url2: "", // cluster: the b side of every pair connects here (another node), the a side to --url
  scenario: "pingpong",
  pairs: 1,
  size: "candidate", // pingpong: candidate (~200 B frames) or sdp (~3 KB offer/answer frames)
  duration: 3, // seconds measured
  warmup: 1, // seconds run before measuring
  drainTimeout: 5, // seconds to wait for frames in flight once sending stops
  setupTimeout: 60, // seconds for connecting and call setup
  conns: 1000, // idle: connections to hold
  baseline: 100, // idle: connections opened before the "before" RSS reading
  hold: 5, // idle: seconds to hold them (server pings run meanwhile)
  inflight: 100, // connection attempts in flight at once
  serverPid: "", // for CPU and RSS readings from /proc; several (cluster: nodes and Redis) comma-separated
  run: Math.random().toString(36).slice(2, 8), // id prefix, unique per run
  maxSamples: 2_000_000, // latency samples kept (a bound on memory)
  users: 1000, // presence: users online (ids u0 … u{users-1}, the ids of --graph)
  joins: 200, // presence: users of them that leave, then join again, measured
  graph: "", // presence: file of contact pairs "uA,uB" (the runner seeds the server's store with the same)
  directory: "contacts", // presence: the server's PEERCALL_DIRECTORY, for checking who gets whose presence
  quiet: 0.5, // presence: seconds without a frame that mean the server is done
  idleWindow: 2, // presence: seconds the server's CPU is read with everyone online and nothing happening
  client: "raw", // raw: this file's own WebSocket client (cheaper per connect and frame); ws: the `ws` package
  candidates: 10, // calls: ICE candidates each side sends per call (at least 1)
};
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  if (!(key in opts)) die(`unknown option ${process.argv[i]}`, 2);
  const value = process.argv[i + 1];
  opts[key] = typeof opts[key] === "number" ? Number(value) : value;
}
if (!opts.url) die("--url is required", 2);
const PEERJS = opts.proto === "peerjs";
const PRESENCE = opts.scenario === "presence";

function die(message, code = 1) {
  process.stderr.write(`FAIL: ${message}\n`);
  process.exit(code);
}

// ---------------------------------------------------------------- measurements
const ticksPerSecond = 100; // USER_HZ on Linux
const serverPids = String(opts.serverPid || "").split(",").filter(Boolean);
function serverCpu() {
  // seconds of CPU (utime + stime) of the server's processes, summed
  let total = 0;
  for (const pid of serverPids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      total += (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
    } catch {
      // gone: counts nothing
    }
  }
  return total;
}
function serverRssKb() {
  let total = 0;
  for (const pid of serverPids) {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    total += Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
  }
  return total;
}
function machineBusy() {
  // seconds of CPU used by anything on the machine (all cores), from /proc/stat
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / ticksPerSecond; // user nice system irq softirq steal
}
class Window {
  // One measured interval: wall time, this process's CPU, the server's CPU.
  start() {
    this.t0 = performance.now();
    this.cpu0 = process.cpuUsage();
    this.srv0 = serverCpu();
    this.busy0 = machineBusy();
  }
  stop() {
    this.seconds = (performance.now() - this.t0) / 1000;
    const cpu = process.cpuUsage(this.cpu0);
    this.clientSeconds = (cpu.user + cpu.system) / 1e6; // CPU seconds, not a share of the wall time
    this.clientCpu = this.clientSeconds / this.seconds;
    const srv = opts.serverPid ? serverCpu() - this.srv0 : 0;
    this.serverSeconds = opts.serverPid ? srv : null;
    this.serverCpu = opts.serverPid ? srv / this.seconds : null;
    // CPU that neither the server nor this load generator used: other processes on the machine (noise)
    this.otherCpu = Math.max(0, (machineBusy() - this.busy0 - srv) / this.seconds - this.clientCpu);
  }
  cpu(ops) {
    // The figures of every row: CPU % of one core (server, client, the rest of the machine), CPU µs per
    // operation (server: all its pids; client: this process), and whether the load generator was the bottleneck.
    // Per-operation CPU is what a busy machine distorts least: other processes take wall time, not our CPU time
    // (the server's µs/op still grows somewhat under contention: caches, and fewer operations per wakeup).
    const server = this.serverCpu === null ? null : round(this.serverCpu * 100);
    const client = round(this.clientCpu * 100);
    return {
      serverUsPerOp: this.serverSeconds === null || !ops ? null : round((this.serverSeconds / ops) * 1e6),
      clientUsPerOp: ops ? round((this.clientSeconds / ops) * 1e6) : null,
      clientCpu: client,
      serverCpu: server,
      otherCpu: round(this.otherCpu * 100),
      clientBound: clientBound(client, server),
    };
  }
}
function clientBound(client, server) {
  // 1 when this row measures the load generator more than the server: it used >= 90% of its core, and more of
  // it than the server used of its own (a server that is itself near 100% is the bottleneck however busy the
  // client is). Same rule in bench/run.py (on the medians) and docs/benchmarks.md.
  return client >= 90 && (server === null || client > server) ? 1 : 0;
}
class Samples {
  constructor(max) {
    this.values = new Float64Array(Math.min(max, 1 << 16));
    this.n = 0;
    this.max = max;
  }
  add(v) {
    if (this.n === this.values.length) {
      if (this.n >= this.max) return;
      const grown = new Float64Array(Math.min(this.max, this.n * 2));
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.n++] = v;
  }
  summary(unit = 1000) {
    // milliseconds in, microseconds (unit 1000) out
    if (!this.n) return { p50: null, p99: null, max: null };
    const sorted = this.values.slice(0, this.n).sort();
    const at = (q) => sorted[Math.min(this.n - 1, Math.floor(q * this.n))] * unit;
    return { p50: round(at(0.5)), p99: round(at(0.99)), max: round(sorted[this.n - 1] * unit) };
  }
}
const round = (x) => Math.round(x * 10) / 10;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- connections
let failed = false;
function fail(message) {
  if (failed) return;
  failed = true;
  die(message);
}

let localAddresses = 1; // idle: spread source addresses over 127.0.0.x to get past ~28k ephemeral ports
function connectPath(id, index) {
  // the request target, and which server (cluster: the b side of every pair connects to --url2)
  const base = opts.url2 && index % 2 === 1 ? opts.url2 : opts.url;
  if (PEERJS) return [base, `/peerjs?key=peerjs&id=${id}&token=${index.toString(36)}x${opts.run}`];
  return [base, `/ws?id=${id}&device=d`];
}

// ---------------------------------------------------------------- the raw client (--client raw, the default)
// Written by hand, not with `ws`: measured on this machine (CPU time of this process per operation, against one
// peercall node, 3 tries, medians), a `ws` client costs the load generator ~190 µs per connect (Node's http
// client, a random key and a SHA-1 per handshake, the upgrade's header parsing, a Receiver stream per socket),
// this one ~105 µs; ~200 µs per call of the calls scenario (28 frames received) against ~150 µs; ~14-16 µs per
// frame at 500 pairs against ~12 µs. With `ws` the load generator, not the server, was the bottleneck of the
// idle rows. This one writes a pre-built upgrade
// request over a plain `net` socket, checks the 101 status line and the Sec-WebSocket-Accept header (the key is
// the same for every connection, so its accept is computed once: the server still computes and sends it for
// each), and reads frames with a small parser: text frames (fragmented or not), pings (answered with pongs),
// close (a failure unless we closed). Client frames are masked with a zero key: valid (RFC 6455 5.3 asks for a key, any key) and
// free to apply. `--client ws` runs the same checks over the `ws` package, for comparison.
const WS_KEY = Buffer.from("peercall-bench-k").toString("base64"); // 16 bytes, base64: fixed
const WS_ACCEPT = crypto.createHash("sha1").update(WS_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
const ACCEPT_RE = /\r\nsec-websocket-accept:[ \t]*([^\r\n]*?)[ \t]*\r\n/i;
const EXTENSIONS_RE = /\r\nsec-websocket-extensions:/i;
const OP_TEXT = 0x1;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
const READ_BUFFER = Buffer.allocUnsafe(1 << 16);
let pings = 0; // pings received from the server (and answered), all connections
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]); // masked (zero key), code 1000

function frameBuffer(opcode, n) {
  // A masked (zero key) client frame's buffer for an `n`-byte payload, its head written; returns [buffer, head].
  const head = n < 126 ? 6 : n < 65536 ? 8 : 14;
  const out = Buffer.allocUnsafe(head + n);
  out[0] = 0x80 | opcode;
  if (n < 126) out[1] = 0x80 | n;
  else if (n < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeUInt32BE(0, 2);
    out.writeUInt32BE(n, 6);
  }
  out.writeUInt32BE(0, head - 4); // the masking key: zero, so the payload goes out unchanged
  return [out, head];
}

function clientFrame(opcode, payload) {
  const [out, head] = frameBuffer(opcode, payload.length);
  payload.copy(out, head);
  return out;
}

function textFrame(text) {
  // clientFrame for a string, without an intermediate Buffer
  const [out, head] = frameBuffer(0x1, Buffer.byteLength(text));
  out.write(text, head);
  return out;
}

class RawSocket {
  // What Peer needs of a WebSocket: connect and greet, send text, close, and these callbacks:
  // onopen(), onmessage(text, wireBytes), onclosed(code, reason) (after a close frame or when the socket ends),
  // onerror(err).
  constructor(base, target, localAddress) {
    const url = new URL(base);
    this.open = false;
    this.closing = false;
    this.done = false;
    this.buf = null; // bytes received and not parsed yet
    this.fragments = null; // a fragmented text message being put together
    // `onread`: reads land in one buffer shared by every socket (no Buffer and no stream 'data' event per read);
    // data() copies what it keeps
    const onread = { buffer: READ_BUFFER, callback: (n, buf) => this.data(buf.subarray(0, n), true) };
    const sock = net.connect({ host: url.hostname, port: Number(url.port || 80), localAddress, onread });
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on("connect", () =>
      sock.write(
        `GET ${target} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        "latin1",
      ),
    );
    sock.on("error", (err) => this.onerror(err));
    sock.on("close", () => this.closed(1006, "the connection ended without a close frame"));
  }
  data(chunk, shared = false) {
    // `shared`: `chunk` is READ_BUFFER, overwritten by the next read: whatever is kept past this call is copied
    let buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    if (this.buf) shared = false;
    this.buf = null;
    if (!this.open) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buf.length > 16384) return this.bad("the server's handshake response head is longer than 16 KB");
        this.buf = shared ? Buffer.from(buf) : buf;
        return;
      }
      const head = buf.latin1Slice(0, end + 2);
      if (!head.startsWith("HTTP/1.1 101 ")) return this.bad(`the server refused the upgrade: ${head.split("\r\n")[0]}`);
      const accept = ACCEPT_RE.exec(head);
      if (!accept || accept[1] !== WS_ACCEPT) return this.bad(`wrong Sec-WebSocket-Accept: ${accept ? accept[1] : "none"}`);
      if (EXTENSIONS_RE.test(head)) return this.bad("the server negotiated an extension that was not offered");
      this.open = true;
      this.onopen();
      buf = buf.subarray(end + 4);
    }
    let at = 0;
    while (!this.done && buf.length - at >= 2) {
      const b0 = buf[at];
      const b1 = buf[at + 1];
      if (b1 & 0x80) return this.bad("the server masked a frame");
      if (b0 & 0x70) return this.bad("a frame with RSV bits set (no extension was negotiated)");
      let n = b1 & 0x7f;
      let head = 2;
      if (n === 126) {
        if (buf.length - at < 4) break;
        n = buf.readUInt16BE(at + 2);
        head = 4;
      } else if (n === 127) {
        if (buf.length - at < 10) break;
        if (buf.readUInt32BE(at + 2) !== 0) return this.bad("a frame longer than 4 GB");
        n = buf.readUInt32BE(at + 6);
        head = 10;
      }
      if (buf.length - at < head + n) break;
      const start = at + head;
      at = start + n;
      const opcode = b0 & 0x0f;
      const fin = b0 & 0x80;
      if (opcode === OP_TEXT || opcode === 0) {
        if ((opcode === 0) !== (this.fragments !== null)) return this.bad("a continuation frame out of place");
        if (!fin) {
          (this.fragments ||= []).push(Buffer.from(buf.subarray(start, at)));
          continue;
        }
        let text;
        let wire = n + head;
        if (this.fragments) {
          this.fragments.push(buf.subarray(start, at));
          const whole = Buffer.concat(this.fragments);
          wire = whole.length + 2;
          text = whole.toString();
          this.fragments = null;
        } else text = buf.utf8Slice(start, at);
        this.onmessage(text, wire);
      } else if (opcode === OP_PING) {
        pings++;
        if (!this.closing) this.sock.write(clientFrame(OP_PONG, buf.subarray(start, at)));
      } else if (opcode === OP_PONG) {
        // unsolicited: ignored (RFC 6455 5.5.3)
      } else if (opcode === OP_CLOSE) {
        const code = n >= 2 ? buf.readUInt16BE(start) : 1005;
        if (!this.closing) this.sock.write(CLOSE_FRAME);
        this.sock.end();
        return this.closed(code, buf.utf8Slice(start + Math.min(n, 2), at));
      } else return this.bad(`a frame with opcode ${opcode}`);
    }
    if (at < buf.length && !this.done) this.buf = shared ? Buffer.from(buf.subarray(at)) : buf.subarray(at);
  }
  bad(why) {
    this.sock.destroy();
    this.onerror(new Error(why));
    this.closed(1002, why);
  }
  closed(code, reason) {
    if (this.done) return;
    this.done = true;
    this.open = false;
    this.onclosed(code, reason);
  }
  send(text) {
    this.sock.write(textFrame(text));
  }
  close() {
    if (this.closing || this.done) return;
    this.closing = true;
    if (this.open) this.sock.write(CLOSE_FRAME);
    else this.sock.destroy();
  }
}

class WsSocket {
  // The same interface over the `ws` package (--client ws).
  constructor(base, target, localAddress) {
    const options = { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: 30000 };
    if (localAddress) options.localAddress = localAddress;
    const ws = new WebSocket(base + target, options);
    this.ws = ws;
    this.done = false;
    ws.on("open", () => this.onopen());
    ws.on("ping", () => pings++); // ws answers it
    ws.on("message", (data) => {
      this.onmessage(data.toString(), data.length + (data.length < 126 ? 2 : data.length < 65536 ? 4 : 10));
    });
    ws.on("error", (err) => this.onerror(err));
    ws.on("close", (code, reason) => {
      this.done = true;
      this.onclosed(code, String(reason));
    });
  }
  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }
  send(text) {
    this.ws.send(text);
  }
  close() {
    this.ws.close();
  }
}

const Socket = opts.client === "ws" ? WsSocket : RawSocket;

class Peer {
  // One WebSocket client. Every frame after the greeting goes to `onText(text)` first if set (a scenario's
  // cheap check of the frames it expects: returns true when the frame is exactly what it waits for), else it is
  // parsed and checked here (an `error` frame fails the run) and goes to `onFrame(msg)`.
  constructor(id, index = 0) {
    this.id = id;
    this.index = index;
    this.onFrame = null;
    this.onText = null;
    this.onClose = null; // called once the connection is closed (after close(), or by the server: a failure)
    this.closedOk = false;
    this.rxBytes = 0; // presence: bytes received (WebSocket payload + frame header), frames received
    this.rxFrames = 0;
    this.welcomeBytes = 0;
    this.onPresence = null; // presence: (id, status) for every change received
  }
  get isOpen() {
    return this.sock.open;
  }
  open(waitContacts = false) {
    // waitContacts (presence): resolve only once the `contacts` frame that follows `welcome` has come
    return new Promise((resolve, reject) => {
      const [base, target] = connectPath(this.id, this.index);
      const local = localAddresses > 1 ? `127.0.0.${1 + (this.index % localAddresses)}` : undefined;
      const sock = new Socket(base, target, local);
      this.sock = sock;
      let greeted = false;
      sock.onopen = () => {};
      sock.onmessage = (text, size) => {
        this.rxBytes += size;
        this.rxFrames++;
        rx.bytes += size;
        rx.frames++;
        rx.last = performance.now();
        if (greeted && this.onText && this.onText(text)) {
          rx.quick++;
          return;
        }
        rx.parsed++;
        let msg;
        try {
          msg = JSON.parse(text);
        } catch {
          return fail(`${this.id} received a frame that is not JSON: ${text.slice(0, 200)}`);
        }
        if (!greeted) {
          const want = PEERJS ? "OPEN" : "welcome";
          if (msg.type !== want) return reject(new Error(`${this.id}: first frame ${JSON.stringify(msg).slice(0, 300)}`));
          greeted = true;
          this.welcomeBytes = size;
          return waitContacts ? null : resolve(this);
        }
        if (PEERJS) {
          if (msg.type === "ERROR" || msg.type === "EXPIRE" || msg.type === "ID-TAKEN")
            return fail(`${this.id} received ${JSON.stringify(msg).slice(0, 300)}`);
        } else if (msg.type === "presence") {
          // only the presence scenario gets any (the runner starts the server private for the others)
          if (this.onPresence) {
            if (msg.changes) for (const c of msg.changes) this.onPresence(c.id, c.status);
            else this.onPresence(msg.id, msg.status);
          }
          return;
        } else if (PRESENCE && msg.type === "contacts") {
          if (waitContacts && !this.contacted) {
            this.contacted = true;
            this.contactsBytes = size;
            resolve(this);
          }
          return;
        } else if (msg.type === "error") {
          return fail(`${this.id} received an error frame: ${JSON.stringify(msg).slice(0, 300)}`);
        }
        if (this.onFrame) this.onFrame(msg, text);
        else fail(`${this.id} received an unexpected frame: ${JSON.stringify(msg).slice(0, 300)}`);
      };
      sock.onerror = (err) => {
        if (this.closedOk) return; // e.g. a reset after we closed: the run no longer needs this connection
        if (greeted) fail(`${this.id}: ${err.message}`);
        else reject(err);
      };
      sock.onclosed = (code, reason) => {
        if (!greeted) reject(new Error(`${this.id}: closed ${code} ${reason} before its greeting`));
        else if (!this.closedOk) fail(`${this.id}: the server closed the connection (${code} ${reason})`);
        if (this.onClose) this.onClose();
      };
    });
  }
  send(text) {
    this.sock.send(text);
  }
  close() {
    this.closedOk = true;
    this.sock.close();
  }
}

// every frame any peer received; quick: passed by a quick check (quickCheck), parsed: given the full JSON check
const rx = { bytes: 0, frames: 0, last: 0, quick: 0, parsed: 0 };

async function openAll(peers, label, waitContacts = false) {
  // Opens every peer, `opts.inflight` at a time; resolves with the wall time it took.
  const t0 = performance.now();
  const deadline = t0 + opts.setupTimeout * 1000;
  let next = 0;
  async function worker() {
    while (next < peers.length) {
      const peer = peers[next++];
      if (performance.now() > deadline) throw new Error(`${label}: setup took longer than ${opts.setupTimeout}s`);
      await peer.open(waitContacts);
    }
  }
  const workers = [];
  for (let i = 0; i < Math.min(opts.inflight, peers.length); i++) workers.push(worker());
  await withTimeout(Promise.all(workers), opts.setupTimeout * 1000, `${label}: connecting`);
  return (performance.now() - t0) / 1000;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000}s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------- frames
const CANDIDATE_TAIL =
  ' 1 udp 2122260223 192.168.1.20 50000 typ host generation 0 ufrag Xy1z network-id 1 network-cost 10","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Xy1z"}';
function sdpBody(kind) {
  // A ~3 KB SDP: the repeated lines of a real audio m-section.
  let lines = "";
  for (let i = 0; lines.length < 2800; i++)
    lines += `a=candidate:${i} 1 udp 2122260223 192.168.1.${20 + i} ${50000 + i} typ host generation 0 network-id 1\\r\\n`;
  return ` 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\na=group:BUNDLE 0\\r\\nm=audio 9 UDP/TLS/RTP/SAVPF 111\\r\\nc=IN IP4 0.0.0.0\\r\\na=rtpmap:111 opus/48000/2\\r\\na=setup:${kind === "offer" ? "actpass" : "active"}\\r\\n${lines}","type":"${kind}"}`;
}
const SDP_TAIL = { offer: sdpBody("offer"), answer: sdpBody("answer") };

// Frame = prefix + seq + tail. The sequence number sits where a real client has a number anyway: the candidate's
// foundation, the SDP's session id. `kind`: candidate | offer | answer.
function framePrefix(kind, to) {
  const pjType = kind.toUpperCase();
  if (kind === "candidate")
    return PEERJS
      ? `{"type":"CANDIDATE","dst":"${to}","payload":{"candidate":"candidate:`
      : `{"type":"candidate","to":"${to}","data":{"candidate":"candidate:`;
  return PEERJS
    ? `{"type":"${pjType}","dst":"${to}","payload":{"sdp":"v=0\\r\\no=- `
    : `{"type":"${kind}","to":"${to}","data":{"sdp":"v=0\\r\\no=- `;
}
function frameTail(kind) {
  return (kind === "candidate" ? CANDIDATE_TAIL : SDP_TAIL[kind]) + "}";
}
function seqOf(kind, data) {
  if (!data) return NaN;
  return kind === "candidate" ? parseInt(data.candidate.slice(10), 10) : parseInt(data.sdp.slice(9), 10);
}
function payloadOf(msg) {
  return PEERJS ? msg.payload : msg.data;
}
function typeOf(kind) {
  return PEERJS ? kind.toUpperCase() : kind;
}
function sender(msg) {
  return PEERJS ? msg.src : msg.from;
}

// The cheap check of a relayed frame, for the frames a scenario sends by the thousand (candidates, offers,
// answers). JSON.parse of every frame was the load generator's largest cost per frame; this reads only what the
// checks need, with indexOf: every `"type":"` key in the frame names the expected kind, the sender key
// (`"from":"<id>"`, PeerJS `"src":"<id>"`) and peercall's `"callId":"<id>"` occur exactly once, the sequence
// number is the expected one, and the frame is exactly as long as the last one of its kind and pair that the full
// check passed, plus the digits of the number (so a frame the server mangled or cut is not passed).
// Inside a JSON string every `"` is escaped, so a payload cannot fake these keys. A frame that fails any of this
// (an `error` frame, a lost, duplicated, reordered or misrouted one) goes on to the full parse and the full
// check, which fails the run saying why (or accepts it, if the server merely wrote it differently).
function quickCheck(kind, fromId) {
  const typeKey = `"type":"${typeOf(kind)}"`;
  const fromKey = PEERJS ? `"src":"${fromId}"` : `"from":"${fromId}"`;
  const fromAny = PEERJS ? '"src":"' : '"from":"';
  const mark = kind === "candidate" ? '"candidate":"candidate:' : '"sdp":"v=0\\r\\no=- ';
  let base = -1; // the length of the first frame that passed the full check, less its number's digits
  const once = (text, key) => {
    const at = text.indexOf(key);
    return at >= 0 && text.indexOf(key, at + key.length) < 0;
  };
  return {
    // true when `text` is this kind's frame from `fromId` (in the call whose key is `callKey`: `"callId":"…"`)
    // with number `expect`
    ok(text, expect, callKey) {
      if (base < 0) return false;
      const digits = expect < 10 ? 1 : expect < 100 ? 2 : String(expect).length;
      if (text.length !== base + digits) return false;
      let at = text.indexOf('"type":"');
      if (at < 0) return false;
      for (; at >= 0; at = text.indexOf('"type":"', at + 8)) if (!text.startsWith(typeKey, at)) return false;
      const m = text.indexOf(mark);
      if (m < 0 || text.indexOf(mark, m + mark.length) >= 0) return false;
      if (parseInt(text.slice(m + mark.length, m + mark.length + digits + 1), 10) !== expect) return false;
      if (!once(text, fromAny) || text.indexOf(fromKey) < 0) return false;
      return PEERJS || (once(text, '"callId":"') && text.indexOf(callKey) >= 0);
    },
    // after the full check passed a frame with number `seq`
    learn(text, seq) {
      base = text.length - String(seq).length;
    },
  };
}

// ---------------------------------------------------------------- call setup (peercall only)
function setupCall(a, b) {
  // a calls b, b accepts: resolves with the callId, checked on both sides.
  return new Promise((resolve) => {
    const state = { ringing: null, request: null };
    a.onFrame = (msg) => {
      if (msg.type === "call-ringing" && !state.ringing) state.ringing = msg.callId;
      else if (msg.type === "call-accept" && state.ringing && msg.callId === state.ringing && msg.from === b.id) {
        a.onFrame = null;
        resolve(state.ringing);
      } else fail(`${a.id} during call setup got ${JSON.stringify(msg).slice(0, 300)}`);
    };
    b.onFrame = (msg) => {
      if (msg.type === "call-request" && msg.from === a.id && !state.request) {
        state.request = msg.callId;
        b.onFrame = null;
        b.send(`{"type":"call-accept","to":"${a.id}"}`);
      } else fail(`${b.id} during call setup got ${JSON.stringify(msg).slice(0, 300)}`);
    };
    a.send(`{"type":"call-request","to":"${b.id}"}`);
  });
}

// ---------------------------------------------------------------- pingpong
async function pingpong() {
  const kindA = opts.size === "sdp" ? "offer" : "candidate";
  const kindB = opts.size === "sdp" ? "answer" : "candidate";
  const peers = [];
  for (let i = 0; i < opts.pairs; i++) peers.push(new Peer(`a${i}-${opts.run}`, 2 * i), new Peer(`b${i}-${opts.run}`, 2 * i + 1));
  const connectSeconds = await openAll(peers, "pingpong");
  const pairs = [];
  for (let i = 0; i < opts.pairs; i++) pairs.push({ a: peers[2 * i], b: peers[2 * i + 1], callId: null });
  if (!PEERJS)
    await withTimeout(
      Promise.all(pairs.map(async (p) => (p.callId = await setupCall(p.a, p.b)))),
      opts.setupTimeout * 1000,
      "call setup",
    );

  const latency = new Samples(opts.maxSamples);
  let measuring = false;
  let running = true;
  let delivered = 0; // frames received while measuring
  let inflight = 0;
  let bytesSent = 0;
  let onDrained = null;
  for (const p of pairs) {
    const prefixA = framePrefix(kindA, p.b.id);
    const tailA = frameTail(kindA);
    const prefixB = framePrefix(kindB, p.a.id);
    const tailB = frameTail(kindB);
    p.next = 0; // next seq a sends; b expects p.next - 1 ... checked on arrival
    p.bExpect = 0;
    p.aExpect = 0;
    p.sentAt = 0;
    p.ping = () => {
      const text = prefixA + p.next + tailA;
      bytesSent = text.length;
      p.next++;
      inflight++;
      p.sentAt = performance.now();
      p.a.send(text);
    };
    const check = (msg, text, quick, kind, expect, from, who) => {
      // the full check (the first frame of each side, and any frame the quick check did not pass)
      const seq = seqOf(kind, payloadOf(msg));
      if (msg.type !== typeOf(kind) || sender(msg) !== from.id || (!PEERJS && msg.callId !== p.callId))
        fail(`${who.id} got a frame that is not the ${kind} it waits for: ${JSON.stringify(msg).slice(0, 300)}`);
      else if (seq !== expect)
        fail(
          `${who.id} expected ${kind} #${expect} from ${from.id} and got #${seq}: ` +
            (seq < expect ? "a duplicated or reordered frame" : `${seq - expect} frame(s) lost or reordered`),
        );
      else quick.learn(text, seq);
    };
    const callKey = `"callId":"${p.callId}"`;
    const quickB = quickCheck(kindA, p.a.id); // what b receives
    const quickA = quickCheck(kindB, p.b.id);
    const bGot = () => {
      const now = performance.now();
      const seq = p.bExpect++;
      if (measuring) {
        delivered++;
        latency.add(now - p.sentAt);
      }
      p.sentAt = now;
      p.b.send(prefixB + seq + tailB);
    };
    const aGot = () => {
      const now = performance.now();
      p.aExpect++;
      inflight--;
      if (measuring) {
        delivered++;
        latency.add(now - p.sentAt);
      }
      if (running) p.ping();
      else if (inflight === 0 && onDrained) onDrained();
    };
    p.b.onText = (text) => quickB.ok(text, p.bExpect, callKey) && (bGot(), true);
    p.a.onText = (text) => quickA.ok(text, p.aExpect, callKey) && (aGot(), true);
    p.b.onFrame = (msg, text) => {
      check(msg, text, quickB, kindA, p.bExpect, p.a, p.b);
      bGot();
    };
    p.a.onFrame = (msg, text) => {
      check(msg, text, quickA, kindB, p.aExpect, p.b, p.a);
      aGot();
    };
  }
  for (const p of pairs) p.ping();
  await sleep(opts.warmup * 1000);
  const win = new Window();
  measuring = true;
  win.start();
  await sleep(opts.duration * 1000);
  measuring = false;
  win.stop();
  running = false;
  const frameA = bytesSent;
  await drain(() => inflight, (cb) => (onDrained = cb), () => {
    const stuck = pairs.filter((p) => p.aExpect !== p.next).slice(0, 5);
    return stuck.map((p) => `${p.a.id}->${p.b.id} #${p.aExpect} (b saw ${p.bExpect})`).join(", ");
  });
  for (const p of pairs) if (p.aExpect !== p.next || p.bExpect !== p.next) fail(`pair ${p.a.id}: counts differ`);
  const sent = pairs.reduce((n, p) => n + 2 * p.next, 0);
  closeAll(peers);
  return {
    msgsPerSec: Math.round(delivered / win.seconds),
    ...latency.summary(),
    frames: sent,
    frameBytes: frameA,
    quickChecked: round((100 * rx.quick) / (rx.quick + rx.parsed)), // % of frames received
    connectSeconds: round(connectSeconds),
    ...win.cpu(delivered),
  };
}

async function drain(pending, setCallback, describe) {
  if (pending() === 0) return;
  const done = new Promise((resolve) => setCallback(resolve));
  try {
    await withTimeout(done, opts.drainTimeout * 1000, "draining");
  } catch {
    fail(`${pending()} frame(s) lost: no answer within ${opts.drainTimeout}s after sending stopped; e.g. ${describe()}`);
  }
}

function closeAll(peers) {
  for (const peer of peers) peer.close();
}

// ---------------------------------------------------------------- calls
async function calls() {
  const CANDIDATES = opts.candidates;
  if (!(CANDIDATES >= 1)) die("--candidates must be at least 1", 2);
  const peers = [];
  for (let i = 0; i < opts.pairs; i++) peers.push(new Peer(`ca${i}-${opts.run}`, 2 * i), new Peer(`cb${i}-${opts.run}`, 2 * i + 1));
  await openAll(peers, "calls");
  let running = true;
  let measuring = false;
  let completed = 0;
  let active = 0;
  let onDrained = null;
  const callTime = new Samples(opts.maxSamples);
  const pairs = [];
  for (let i = 0; i < opts.pairs; i++) {
    const a = peers[2 * i];
    const b = peers[2 * i + 1];
    const p = { a, b, calls: 0 };
    pairs.push(p);
    const candA = framePrefix("candidate", b.id);
    const candB = framePrefix("candidate", a.id);
    const tail = frameTail("candidate");
    const offer = framePrefix("offer", b.id) + "0" + frameTail("offer");
    const answer = framePrefix("answer", a.id) + "0" + frameTail("answer");
    const bad = (who, msg) =>
      fail(`${who.id} in call #${p.calls} (step ${who === a ? p.aStep : p.bStep}) got ${JSON.stringify(msg).slice(0, 300)}`);
    const expectCandidate = (who, from, msg, n, text, quick) => {
      const seq = seqOf("candidate", payloadOf(msg));
      const callId = who === a ? p.callId : p.bCallId;
      if (msg.type !== typeOf("candidate") || sender(msg) !== from.id || (!PEERJS && msg.callId !== callId)) bad(who, msg);
      else if (seq !== n)
        fail(
          `${who.id} in call #${p.calls} expected candidate #${n} from ${from.id} and got #${seq}: ` +
            (seq < n ? "a duplicated or reordered frame" : "frame(s) lost or reordered"),
        );
      else quick.learn(text, seq);
    };
    // the cheap checks of the candidates (and b's offer) each side receives: see quickCheck
    const quickA = quickCheck("candidate", b.id);
    const quickB = quickCheck("candidate", a.id);
    const quickOffer = quickCheck("offer", a.id);
    const finished = () => {
      if (!(p.aDone && p.bDone)) return;
      active--;
      if (measuring) {
        completed++;
        callTime.add(performance.now() - p.t0);
      }
      if (running) p.start();
      else if (active === 0 && onDrained) onDrained();
    };
    p.start = () => {
      p.calls++;
      p.aStep = 0;
      p.bStep = 0;
      p.aDone = p.bDone = false;
      p.callId = null;
      p.t0 = performance.now();
      active++;
      if (PEERJS) a.send(`{"type":"OFFER","dst":"${b.id}","payload":{"call":"request","n":${p.calls}}}`);
      else a.send(`{"type":"call-request","to":"${b.id}"}`);
    };
    const aCandidate = (k) => {
      // a got candidate #k - 3 (checked)
      if (k === 2 + CANDIDATES) {
        if (PEERJS) {
          a.send(`{"type":"LEAVE","dst":"${b.id}"}`);
          p.aDone = true;
          finished();
        } else a.send(`{"type":"hangup","to":"${b.id}"}`);
      }
    };
    a.onText = (text) => {
      const k = PEERJS ? p.aStep + 1 : p.aStep;
      if (k < 3 || k >= 3 + CANDIDATES || !quickA.ok(text, k - 3, p.callKey)) return false;
      p.aStep++;
      aCandidate(k);
      return true;
    };
    b.onText = (text) => {
      const s = p.bStep;
      if (s === 1) {
        if (!quickOffer.ok(text, 0, p.bCallKey)) return false;
        p.bStep++;
        bOffer();
        return true;
      }
      if (s < 2 || s >= 2 + CANDIDATES || !quickB.ok(text, s - 2, p.bCallKey)) return false;
      p.bStep++;
      return true;
    };
    const bOffer = () => {
      b.send(answer);
      for (let n = 0; n < CANDIDATES; n++) b.send(candB + n + tail);
    };
    // a: [ringing], accept, answer, 10 candidates, (hangup sent) [call-ended]
    a.onFrame = (msg, text) => {
      const s = p.aStep++;
      if (!PEERJS && s === 0) {
        if (msg.type !== "call-ringing") return bad(a, msg);
        p.callId = msg.callId;
        p.callKey = `"callId":"${msg.callId}"`;
        return;
      }
      const k = PEERJS ? s + 1 : s; // PeerJS has no ringing step
      if (k === 1) {
        if (PEERJS ? msg.type !== "ANSWER" || msg.payload.call !== "accept" : msg.type !== "call-accept" || msg.callId !== p.callId)
          return bad(a, msg);
        a.send(offer);
        for (let n = 0; n < CANDIDATES; n++) a.send(candA + n + tail);
      } else if (k === 2) {
        if (msg.type !== typeOf("answer") || sender(msg) !== b.id) return bad(a, msg);
      } else if (k < 3 + CANDIDATES) {
        expectCandidate(a, b, msg, k - 3, text, quickA);
        aCandidate(k);
      } else if (!PEERJS && k === 3 + CANDIDATES && msg.type === "call-ended" && msg.callId === p.callId) {
        p.aDone = true;
        finished();
      } else bad(a, msg);
    };
    // b: request, offer, 10 candidates, hangup + call-ended (either order)
    b.onFrame = (msg, text) => {
      const s = p.bStep++;
      if (s === 0) {
        if (PEERJS ? msg.type !== "OFFER" || msg.payload.call !== "request" : msg.type !== "call-request" || msg.from !== a.id)
          return bad(b, msg);
        if (!PEERJS) {
          p.bCallId = msg.callId;
          p.bCallKey = `"callId":"${msg.callId}"`;
        }
        b.send(PEERJS ? `{"type":"ANSWER","dst":"${a.id}","payload":{"call":"accept"}}` : `{"type":"call-accept","to":"${a.id}"}`);
      } else if (s === 1) {
        if (msg.type !== typeOf("offer") || sender(msg) !== a.id || seqOf("offer", payloadOf(msg)) !== 0) return bad(b, msg);
        quickOffer.learn(text, 0);
        bOffer();
      } else if (s < 2 + CANDIDATES) {
        expectCandidate(b, a, msg, s - 2, text, quickB);
      } else if (PEERJS) {
        if (s !== 2 + CANDIDATES || msg.type !== "LEAVE" || msg.src !== a.id) return bad(b, msg);
        p.bDone = true;
        finished();
      } else {
        const ok =
          msg.callId === p.bCallId &&
          ((msg.type === "hangup" && msg.from === a.id) || msg.type === "call-ended") &&
          s < 4 + CANDIDATES;
        if (!ok) return bad(b, msg);
        if (s === 3 + CANDIDATES) {
          p.bDone = true;
          finished();
        }
      }
    };
  }
  for (const p of pairs) p.start();
  await sleep(opts.warmup * 1000);
  const win = new Window();
  measuring = true;
  win.start();
  await sleep(opts.duration * 1000);
  measuring = false;
  win.stop();
  running = false;
  await drain(() => active, (cb) => (onDrained = cb), () =>
    pairs.filter((p) => !(p.aDone && p.bDone)).slice(0, 5).map((p) => `${p.a.id} call #${p.calls} a-step ${p.aStep} b-step ${p.bStep}`).join(", "),
  );
  closeAll(peers);
  const t = callTime.summary(1); // milliseconds
  return {
    callsPerSec: round(completed / win.seconds),
    callP50ms: t.p50,
    callP99ms: t.p99,
    callMaxMs: t.max,
    calls: pairs.reduce((n, p) => n + p.calls, 0),
    quickChecked: round((100 * rx.quick) / (rx.quick + rx.parsed)), // % of frames received
    ...win.cpu(completed),
  };
}

// ---------------------------------------------------------------- idle
async function idle() {
  localAddresses = Math.max(1, Math.ceil((opts.conns + opts.baseline) / 20000));
  const base = [];
  for (let i = 0; i < opts.baseline; i++) base.push(new Peer(`w${i}-${opts.run}`, i));
  await openAll(base, "idle baseline");
  await sleep(1000);
  const rssBefore = serverRssKb();
  const peers = [];
  for (let i = 0; i < opts.conns; i++) peers.push(new Peer(`i${i}-${opts.run}`, i));
  const win = new Window();
  const pingsBefore = pings;
  win.start();
  await openAll(peers, "idle");
  win.stop();
  const windowPings = pings - pingsBefore;
  // Hold them open. peercall: the server pings a connection silent for its ping interval (20 s by default: a
  // `--hold` longer than that sees a round) and the client answers (a connection that does not is reaped, and
  // the run fails); PeerJS has no server pings, its clients send HEARTBEAT frames, so send one each.
  if (PEERJS) for (const peer of peers) peer.send('{"type":"HEARTBEAT"}');
  let rssMax = 0;
  const holdEnd = performance.now() + opts.hold * 1000;
  while (performance.now() < holdEnd) {
    await sleep(500);
    rssMax = Math.max(rssMax, serverRssKb());
  }
  const rssAfter = serverRssKb();
  const open = peers.filter((p) => p.isOpen).length;
  if (open !== peers.length) fail(`${peers.length - open} idle connection(s) were closed by the server`);
  closeAll(peers);
  closeAll(base);
  return {
    conns: opts.conns,
    connectPerSec: Math.round(opts.conns / win.seconds),
    rssBeforeMb: round(rssBefore / 1024),
    rssAfterMb: round(rssAfter / 1024),
    kbPerConn: round((rssAfter - rssBefore) / opts.conns),
    kbPerConnPeak: round((rssMax - rssBefore) / opts.conns),
    pings, // answered: peercall pings a connection silent for its ping interval, PeerJS never does
    windowPings, // of them, during the connect window: work in the connects' µs that is not connecting
    ...win.cpu(opts.conns),
  };
}

// ---------------------------------------------------------------- presence
async function quiet(label) {
  // Resolves once no frame has come for opts.quiet seconds (the server has sent everything it had to).
  const deadline = performance.now() + opts.setupTimeout * 1000;
  rx.last = Math.max(rx.last, performance.now());
  while (performance.now() - rx.last < opts.quiet * 1000) {
    if (performance.now() > deadline) fail(`${label}: frames kept coming for ${opts.setupTimeout}s`);
    await sleep(50);
  }
}

function readGraph(n) {
  // contacts[i]: the set of user indexes that are i's contacts, from the runner's pairs file
  const contacts = Array.from({ length: n }, () => new Set());
  if (!opts.graph) return contacts;
  for (const line of fs.readFileSync(opts.graph, "utf8").split("\n")) {
    if (!line) continue;
    const [a, b] = line.split(",").map((id) => Number(id.slice(1)));
    if (a < n && b < n) {
      contacts[a].add(b);
      contacts[b].add(a);
    }
  }
  return contacts;
}

async function presence() {
  // U users online (each with its contacts from --graph), then `joins` of them leave and come back: what the
  // server spends and sends per join, on the joiner's side (welcome, contacts, presence) and everyone else's.
  if (PEERJS) die("the presence scenario is peercall only", 2);
  localAddresses = Math.max(1, Math.ceil(opts.users / 20000));
  const contacts = readGraph(opts.users);
  const everyone = opts.directory === "all";
  let peers = [];
  for (let i = 0; i < opts.users; i++) peers.push(new Peer(`u${i}`, i));
  const t0 = performance.now();
  await openAll(peers, "presence: bringing users online", true);
  const onlineSeconds = (performance.now() - t0) / 1000;
  await quiet("presence: after bringing users online");
  // what the server spends with everyone online and nothing happening (timers, pings, a cluster's polling):
  // taken off the CPU of the leaves and joins, which is read over a longer window than they take
  const idle = new Window();
  idle.start();
  await sleep(opts.idleWindow * 1000);
  idle.stop();
  const idleRate = opts.serverPid ? idle.serverCpu : 0;

  // the joiners: a random sample (spread over both nodes of a cluster)
  const order = [...Array(opts.users).keys()];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const joiners = order.slice(0, Math.min(opts.joins, opts.users));
  const joining = new Set(joiners);

  // who must hear of each joiner: its contacts who stay (directory contacts), or everyone who stays (all)
  const staying = [];
  for (let i = 0; i < opts.users; i++) if (!joining.has(i)) staying.push(i);
  const owed = new Map(staying.map((i) => [i, joiners.filter((j) => everyone || contacts[i].has(j)).length]));
  async function heard(sets, what) {
    // waits until every user who stays has heard of every joiner it should (a quiet spell alone is not enough:
    // on a starved machine a cluster's fan-out can pause longer than --quiet)
    const deadline = performance.now() + opts.setupTimeout * 1000;
    while (staying.some((i) => sets.get(i).size < owed.get(i))) {
      if (performance.now() > deadline) fail(`presence: not every user heard of the ${what} within ${opts.setupTimeout}s`);
      await sleep(20);
    }
  }
  const offline = new Map();
  for (const i of staying) {
    const set = new Set();
    offline.set(i, set);
    peers[i].onPresence = (id, status) => {
      if (status === "offline") set.add(id);
    };
  }

  // leave
  const leave = new Window();
  const leave0 = { ...rx };
  leave.start();
  await Promise.all(
    joiners.map(
      (i) =>
        new Promise((resolve) => {
          peers[i].onClose = resolve;
          peers[i].close();
        }),
    ),
  );
  await heard(offline, "leaves");
  await quiet("presence: after the leaves");
  leave.stop();
  const leaveCpu = opts.serverPid ? (leave.serverCpu - idleRate) * leave.seconds : NaN;

  // join again, recording who sees whom come online
  const seen = new Map(); // index of a user who stayed -> ids it saw come online
  for (let i = 0; i < opts.users; i++) {
    if (joining.has(i)) continue;
    const set = new Set();
    seen.set(i, set);
    peers[i].onPresence = (id, status) => {
      if (status === "online") set.add(id);
    };
  }
  const fresh = joiners.map((i) => new Peer(`u${i}`, i));
  const before = { ...rx };
  const win = new Window();
  win.start();
  const tj = performance.now();
  await openAll(fresh, "presence: joins", true);
  const joinSeconds = (performance.now() - tj) / 1000;
  await heard(seen, "joins");
  await quiet("presence: after the joins");
  win.stop();
  const joinCpu = opts.serverPid ? (win.serverCpu - idleRate) * win.seconds : NaN;

  // every user who stayed saw exactly the joiners it should: its contacts (directory contacts) or all of them
  let expected = 0;
  for (const [i, set] of seen) {
    for (const j of joiners) {
      const should = everyone || contacts[i].has(j);
      if (should) expected++;
      if (should !== set.has(`u${j}`))
        fail(`u${i} ${should ? "did not see" : "saw"} u${j} come online (directory ${opts.directory})`);
    }
  }
  const joinerBytes = fresh.reduce((n, p) => n + p.rxBytes, 0);
  const joinerFrames = fresh.reduce((n, p) => n + p.rxFrames, 0);
  const allBytes = rx.bytes - before.bytes;
  const allFrames = rx.frames - before.frames;
  const welcome = fresh.map((p) => p.welcomeBytes).sort((a, b) => a - b);
  const contactsFrame = fresh.map((p) => p.contactsBytes).sort((a, b) => a - b);
  const n = joiners.length;
  peers = peers.filter((_, i) => !joining.has(i));
  closeAll(peers);
  closeAll(fresh);
  return {
    users: opts.users,
    joins: n,
    avgContacts: round(contacts.reduce((s, c) => s + c.size, 0) / opts.users),
    joinsPerSec: Math.round(n / joinSeconds),
    cpuUsPerJoin: opts.serverPid ? Math.round((joinCpu / n) * 1e6) : null,
    bytesPerJoin: Math.round(allBytes / n),
    toJoinerBytes: Math.round(joinerBytes / n),
    toOthersBytes: Math.round((allBytes - joinerBytes) / n),
    framesPerJoin: round(allFrames / n),
    toJoinerFrames: round(joinerFrames / n),
    presenceChangesPerJoin: round(expected / n),
    welcomeBytes: welcome[welcome.length >> 1],
    contactsBytes: contactsFrame[contactsFrame.length >> 1],
    cpuUsPerLeave: opts.serverPid ? Math.round((leaveCpu / n) * 1e6) : null,
    bytesPerLeave: Math.round((before.bytes - leave0.bytes) / n),
    onlineSeconds: round(onlineSeconds),
    idleServerCpu: opts.serverPid ? round(idleRate * 100) : null,
    ...win.cpu(n),
  };
}

// ---------------------------------------------------------------- main
const scenarios = { pingpong, calls, idle, presence };
if (!(opts.scenario in scenarios)) die(`unknown scenario ${opts.scenario}`, 2);
const hardStop = setTimeout(
  () => die(`the run did not finish within its time bound`),
  ((PRESENCE ? 4 : 1) * opts.setupTimeout + opts.warmup + opts.duration + opts.drainTimeout + opts.hold + 30) * 1000,
);
try {
  const result = await scenarios[opts.scenario]();
  if (!failed) {
    process.stdout.write(JSON.stringify({ scenario: opts.scenario, proto: opts.proto, ...result }) + "\n");
    clearTimeout(hardStop);
    // give close frames a moment, then leave even if some peer does not answer
    setTimeout(() => process.exit(0), 200).unref();
    await sleep(100);
    process.exit(0);
  }
} catch (err) {
  fail(err && err.message ? err.message : String(err));
}
