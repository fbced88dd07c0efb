#!/usr/bin/env python3
"""Soak: a real peercall server under people-like call traffic for a long time, checking that nothing is lost.

    .venv/bin/python bench/soak.py                       # 1,000 users, one hour, one node, SQLite history
    .venv/bin/python bench/soak.py --duration 60         # the short form CI runs (tests/bench/test_soak.py)
    .venv/bin/python bench/soak.py --json soak.json      # also write the summary as JSON
    .venv/bin/python bench/soak.py --cluster --duration 600   # two nodes, Redis, PostgreSQL: ten minutes with
                                                         # node n2 SIGKILLed at 30% and Redis restarted at 65%

N simulated users (u0000, u0001, …), each one WebSocket with a fixed `device`, idle a random few seconds, then
place a call whose outcome the harness picks, and play both ends of it: answered (offer, answer, candidates and
media-state both ways, a hang-up by either side after a random talk time, now and then a reconnect within the
resume grace -> `call-resumed`, or a drop past it -> the peer is told `peer-lost`, or both hanging up at once),
rejected, missed (rings out), busy (calling someone in a call), cancelled while ringing, a call to someone
offline (users leave and come back now and then). See docs/benchmarks.md, "Soak", for the rules it checks; every
failure prints a line starting `FAIL:` and the exit status is 1.

The server runs from the repo's .venv (`peercall serve`); `--pin` pins it to core 0 and this script to core 1,
as bench/run.py does (not by default: a soak measures correctness and memory, not speed, and on a shared machine
core 0 is where every benchmark's server is). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from run import _accepts as accepts  # bench/run.py: this folder is the script's first import path
from run import free_port
from websockets.asyncio.client import ClientConnection, connect

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVER_CORE, CLIENT_CORE = 0, 1
BIG = "1000000"

# The only `error` frames a legitimate user can get, each documented in docs/protocol.md ("Errors"):
ALLOWED_ERRORS = {
    # a call-request to someone who is not connected; `call-ended` `unavailable` follows
    ("unavailable", "call-request"),
}
# (A `hangup` or `call-reject` naming the sender's call that has just ended gets nothing since 2026-12-04: the
# soak found both parties hanging up at once answered with `not-in-call`.)

STALL = 0.5
"""Seconds: a probe's round trip to the server (a WebSocket ping, answered by the server, read by the soak) slower
than this is a stall of the server or of the soak — they share the machine with whatever else runs on it."""
LAST_INSTANT = 1.0
"""Seconds before a node kill whose decisions may be lost with it: what it had not sent to the other node yet."""
HANGUP_WAIT = 10.0
"""Seconds a settled call's party waits for an answer to its own hang-up (`Soak.told`)."""

OUTCOMES = ("answered", "rejected", "missed", "busy", "cancelled", "unavailable", "failed")
SDP = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" + (
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n" * 12
)


class Failed(Exception):
    """A check failed; the message says which and how (the harness prints it after `FAIL:`)."""


class Broken(Failed):
    """A promise kept even through an outage was broken (a call resumed after a node died): a failure even
    for a call the outage disturbed, never settled away."""


# ------------------------------------------------------------------------------------------------- the server
def pin(core: int) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core)] if taskset and (os.cpu_count() or 1) > 1 else []


def raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 1 << 16))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@dataclass
class Node:
    """One `peercall serve` process."""

    name: str
    env: dict[str, str]
    log: Path
    peercall: str
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    pinned: bool = False

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*(pin(SERVER_CORE) if self.pinned else []), self.peercall, "serve"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        ready = re.compile(r"listening on \S+:(\d+)$", re.M)
        deadline = time.monotonic() + 30
        start = self.log.stat().st_size if self.log.exists() else 0
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if m := ready.search(text, start if len(text) >= start else 0):
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise SystemExit(
            f"soak: {self.name} did not start; its output:\n{self.log.read_text(errors='replace')[-3000:]}"
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Redis:
    """A redis-server as a deployment runs it: AOF on, fsync every second (docs/deploy.md)."""

    dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = self.port or free_port()
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.dir),
        ]
        with (self.dir / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out)
        deadline = time.monotonic() + 15
        while not accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"soak: redis-server did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it writes what the AOF still lacks, then exits
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster, as tests/conftest.py's `postgres_server` makes one (initdb refuses root:
    it runs as the `postgres` user)."""

    root: Path
    bindir: Path = Path()
    port: int = 0

    def _run(self, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, *args], capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"soak: {Path(args[0]).name} failed: {done.stdout}{done.stderr}")

    def start(self) -> str:
        found = sorted(
            (int(m.group(1)), Path(d))
            for d in __import__("glob").glob("/usr/lib/postgresql/*/bin")
            if (m := re.fullmatch(r"/usr/lib/postgresql/(\d+)/bin", d)) and (Path(d) / "pg_ctl").exists()
        )
        if not found:
            raise SystemExit("soak: no PostgreSQL in /usr/lib/postgresql/*/bin; install it or give --postgres-url")
        self.bindir = found[-1][1]
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        data = self.root / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), *"-U postgres --auth=trust --no-sync -E UTF8".split())
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "pg.log"), "-w", "-o", opts, "start"
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu(pid: int) -> float:
    """utime + stime of `pid`, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# -------------------------------------------------------------------------------------------------- the users
@dataclass
class Call:
    """One call as the harness placed it, and what each end saw of it."""

    key: str  # the harness's own tag, carried in every frame's data
    kind: str
    caller: User
    callee: User
    t0: float = 0.0
    call_id: str | None = None
    outcome: str | None = None  # what the harness expects the call to end as
    reason: str | None = None
    hung_up_by: str | None = None
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> its call-ended frame
    sent: dict[str, list[Any]] = field(default_factory=dict)  # user -> seqs of the relayed frames it sent
    got: dict[str, list[Any]] = field(default_factory=dict)  # user -> seqs of the relayed frames it received
    relayed: int = 0
    # a busy or unavailable call that reached its callee after all (an outage had ended the callee's own call, or
    # brought it back): what the callee got of it, kept here, out of the callee's own script (`User.read`)
    stray: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class User:
    soak: Soak
    index: int
    id: str
    device: str
    ws: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    welcome: asyncio.Future[dict[str, Any]] | None = None
    state: str = "offline"  # offline, idle, busy (in a scenario, as caller or callee)
    talking: bool = False  # in the talk phase of an answered call: a target for a busy call
    pins: int = 0  # calls to this user in flight whose outcome depends on its state (busy, unavailable)
    unpinned: asyncio.Event = field(default_factory=asyncio.Event)
    missed_reported: set[str] = field(default_factory=set)
    offline_calls: set[str] = field(default_factory=set)  # unanswered calls to it while it was offline
    node: int = 0
    offline_at: float = 0.0
    cut: bool = False  # its connection died with its node (or was refused while Redis was down)
    cut_at: float = 0.0
    connected_wall: float = 0.0  # time.time() of its last welcome (the history's clock)
    # its last frames, both ways, for a failure to show (`Soak.fail`): (monotonic, "<" got or ">" sent, frame)
    trace: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=TRACE))

    async def connect(self) -> None:
        """Open a connection (to a live node) and wait for its `welcome`."""
        loop = asyncio.get_running_loop()
        self.welcome = loop.create_future()
        url = self.soak.url_for(self)
        self.trace.append((time.monotonic(), "*", f"connect {url}"))
        self.ws = await asyncio.wait_for(
            connect(
                f"{url}/ws?id={self.id}&device={self.device}",
                compression=None,
                max_size=1 << 20,
                ping_interval=None,
                open_timeout=10,
            ),
            15,
        )
        self.reader = asyncio.create_task(self.read(self.ws))
        await asyncio.wait_for(asyncio.shield(self.welcome), 10)
        self.connected_wall = time.time()

    async def read(self, ws: ClientConnection) -> None:
        soak = self.soak
        try:
            async for raw in ws:
                soak.frames_in += 1
                assert isinstance(raw, str)
                # Parse only what a check needs: presence frames (most of the traffic with 1,000 users online)
                # are skipped unparsed; the server writes `type` first.
                if raw.startswith('{"type":"presence"'):
                    continue
                frame = json.loads(raw)
                self.trace.append((time.monotonic(), "<", raw))
                kind = frame.get("type")
                if kind == "welcome":
                    if self.welcome is not None and not self.welcome.done():
                        self.welcome.set_result(frame)
                    else:
                        soak.fail(f"{self.id} got a second welcome: {raw[:300]}")
                    continue
                if kind == "missed-calls":
                    self.on_missed_calls(frame)
                    continue
                if kind == "error" and frame.get("code") == "service-unavailable" and soak.in_window():
                    # documented while Redis is down (docs/protocol.md, "Errors"); only inside the outage window
                    soak.unavailable_errors += 1
                    if self.welcome is None or not self.welcome.done():
                        continue  # refused on connecting: close 1013 follows, come_back tries again
                elif kind == "error" and (frame.get("code"), frame.get("ref")) not in ALLOWED_ERRORS:
                    soak.fail(f"{self.id} got an error frame: {raw[:400]}")
                if (stray := soak.stray_call(self, frame)) is not None:
                    stray.stray.append(frame)
                    continue
                try:
                    self.inbox.put_nowait(frame)
                except asyncio.QueueFull:
                    soak.fail(f"{self.id}: 1,000 frames nobody expected; the last: {raw[:300]}")
        except websockets.ConnectionClosed:
            pass
        self.trace.append((time.monotonic(), "*", f"closed {ws.close_code} {ws.close_reason}"))
        if self.ws is ws and self.welcome is not None and self.welcome.done() and not soak.stopping:
            # the server closed it (we never close a socket we still hold)
            if soak.in_window():
                self.cut, self.cut_at, self.talking = True, time.monotonic(), False
                soak.cuts += 1
            else:
                soak.fail(
                    f"{self.id}: the server closed its connection outside any outage: {ws.close_code} {ws.close_reason}"
                )
                self.cut, self.cut_at, self.talking = True, time.monotonic(), False

    def on_missed_calls(self, frame: dict[str, Any]) -> None:
        for rec in frame.get("calls") or []:
            cid = rec.get("callId")
            if cid in self.missed_reported:
                self.soak.fail(f"{self.id}: missed call {cid} reported twice (missed-calls {json.dumps(frame)[:300]})")
            self.missed_reported.add(cid)
            if cid not in self.offline_calls and cid not in self.soak.affected_ids:
                self.soak.fail(
                    f"{self.id}: missed-calls reports {cid}, not an unanswered call made while it was offline"
                )

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws is None:
            raise Failed(f"{self.id} has no connection to send {frame['type']} on")
        self.soak.frames_out += 1
        raw = json.dumps(frame, separators=(",", ":"))
        self.trace.append((time.monotonic(), ">", raw))
        await self.ws.send(raw)

    async def expect(
        self,
        call: Call,
        required: list[str],
        optional: tuple[str, ...] = (),
        timeout: float = 10,  # noqa: ASYNC109
    ) -> dict[str, dict[str, Any]]:
        """Read frames until one of each `required` type came; `optional` ones may come once each (seed frames,
        allowed race errors). Relayed frames (offer…media-state) are taken into `call.got` on the way. Anything
        else, a second frame of a type, a frame of another call, or nothing in time fails."""
        want = Counter(required)
        got: dict[str, dict[str, Any]] = {}
        seen_optional: set[str] = set()
        deadline = time.monotonic() + timeout
        settle = 0.0
        while sum(want.values()) or (settle == 0.0 and optional) or time.monotonic() < settle:
            if not sum(want.values()) and settle == 0.0:
                # the required frames came: give the optional ones (which follow them) a moment to come too
                settle = time.monotonic() + 0.5
            left = (settle or deadline) - time.monotonic()
            try:
                frame = await asyncio.wait_for(self.inbox.get(), max(left, 0.001))
            except TimeoutError:
                if settle:
                    break
                raise Failed(
                    f"{self.id} got no {', '.join(sorted(want.elements()))} within {timeout:g}s "
                    f"in {call.kind} call {call.key} ({call.call_id}); it got {sorted(got)}"
                ) from None
            kind = frame.get("type")
            if kind == "error":
                kind = f"error:{frame.get('code')}"
            self.check_frame(call, frame)
            if kind == "call-ended":
                self.took_ended(call, frame)
            if kind in RELAYED:
                self.take_relayed(call, frame)
                continue
            if want[kind] > 0:
                want[kind] -= 1
                got[kind] = frame
            elif kind in optional and kind not in seen_optional:
                seen_optional.add(kind)
                got[kind] = frame
            else:
                raise Failed(
                    f"{self.id} got an unexpected frame in {call.kind} call {call.key}: {json.dumps(frame)[:400]}"
                )
        return got

    def took_ended(self, call: Call, frame: dict[str, Any]) -> None:
        """This user was told that `call` ended (`frame`, of this call: check_frame passed), whatever the script does
        next: noted at once, so that a call the script then fails on (a raced timer, a frame after it) and the
        settling are not waiting for a call-ended the script has already taken (`Soak.told`)."""
        if call.ended.setdefault(self.id, frame) is not frame:
            raise Failed(f"{self.id}: call {call.call_id} ended twice: {call.ended[self.id]} then {frame}")

    def check_frame(self, call: Call, frame: dict[str, Any]) -> None:
        cid = frame.get("callId")
        if call.call_id is None and cid is not None and frame.get("type") in ("call-ringing", "call-request", "error"):
            call.call_id = cid
        if cid is not None and cid != call.call_id:
            raise Failed(
                f"{self.id} got a frame of another call while in {call.kind} call {call.call_id}: "
                f"{json.dumps(frame)[:400]}"
            )
        if "from" in frame:
            peer = call.callee if self is call.caller else call.caller
            if frame["from"] != peer.id:
                raise Failed(
                    f"{self.id} got a frame from {frame['from']!r}, not its peer {peer.id}: {json.dumps(frame)[:400]}"
                )

    def take_relayed(self, call: Call, frame: dict[str, Any]) -> None:
        data = frame.get("data")
        if frame["type"] == "candidate" and data is None:
            seq: Any = "end"
        elif isinstance(data, dict) and data.get("k") == call.key:
            seq = data.get("seq")
        else:
            raise Failed(f"{self.id} got a {frame['type']} not of call {call.key}: {json.dumps(frame)[:400]}")
        got = call.got.setdefault(self.id, [])
        fault = self.soak.args.fault
        if fault in ("drop-frame", "dup-frame") and not self.soak.fault_done and call.relayed >= 3:
            # a planted fault for tests/bench/test_soak.py: as if the server had lost or doubled this frame
            self.soak.fault_done = True
            if fault == "drop-frame":
                return
            got.append(seq)
        got.append(seq)
        call.relayed += 1


RELAYED = {"offer", "answer", "candidate", "media-state"}
TRACE = 16  # frames kept per user for a failure to show
TRACED_FAILURES = 3  # the first failures show the traces of the users they name


# --------------------------------------------------------------------------------------------------- the soak
class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.users: list[User] = []
        self.nodes: list[Node] = []
        self.failures: list[str] = []
        self.calls: list[Call] = []
        self.outcomes: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.frames_in = 0
        self.frames_out = 0
        self.relayed = 0
        self.reconnects = 0
        self.samples: list[tuple[float, int, float, float]] = []  # (t, rss kB, server cpu s, client cpu s)
        self.stopping = False
        self.started = 0.0
        self.ring = args.ring_timeout
        self.grace = args.resume_grace
        self.fault_done = False
        self.ended_calls = 0
        self.tables_full_at: float | None = None
        self.windows: list[tuple[float, float]] = []  # outages (monotonic start, end of their documented bounds)
        self.unavailable_errors = 0
        self.cuts = 0
        self.affected_ids: set[str] = set()
        self.by_key: dict[str, Call] = {}  # every call placed, by its key
        self.strays: dict[str, Call] = {}  # call id -> a busy or unavailable call that rang its callee after all
        self.affected = 0
        self.lease = args.node_lease
        self.stalls: list[tuple[float, float]] = []  # (monotonic start, end of the timers it may have raced)
        # the probe's wait under way: (since, seconds it should take: 0 for its ping, 0.25 for its sleep), or None
        self.probing: tuple[float, float] | None = None
        self.calls_over = False  # every user's calls ended (after the run): the probe stops
        self.raced = 0
        self.silent: list[tuple[User, Call, float]] = []  # own hang-up unanswered: (user, call, connected since)
        self.worst_stall = 0.0
        self.kill_window: tuple[float, float] | None = None  # (SIGKILL, the dead node's users all cut by then)
        self.node_resumes = 0  # answered calls resumed on the surviving node by a party the kill cut
        self.resume_waits: list[float] = []  # seconds from losing its node to call-resumed
        self.redis_windows: list[tuple[float, float]] = []
        self.late_returns = 0  # the killed node's users that came back only after the lease and the grace

    # -- reporting
    def fail(self, message: str) -> None:
        if len(self.failures) < 200:
            print(f"FAIL: {message}", flush=True)
        if len(self.failures) < TRACED_FAILURES:
            # what the users it names last got and sent (presence skipped): enough to tell a server's fault from
            # the script's, where the logs (at `warning`) say nothing
            by_id = {u.id: u for u in self.users}
            for uid in dict.fromkeys(re.findall(r"\bu\d{4}\b", message)):
                if (u := by_id.get(uid)) is not None:
                    for t, way, raw in u.trace:
                        print(f"  {uid} {t - self.started:7.2f}s {way} {raw[:240]}", flush=True)
        self.failures.append(message)

    def url_for(self, user: User) -> str:
        live = [n for n in self.nodes if n.alive()]
        node = self.nodes[user.node] if self.nodes[user.node].alive() else live[user.index % len(live)]
        return f"ws://127.0.0.1:{node.port}"

    def in_window(self, t: float | None = None, redis_only: bool = False) -> bool:
        t = time.monotonic() if t is None else t
        return any(a <= t <= b for a, b in (self.redis_windows if redis_only else self.windows))

    def stray_call(self, user: User, frame: dict[str, Any]) -> Call | None:
        """The busy or unavailable call `frame` to `user` belongs to, if it is one of those: such a call rang its
        callee after all (which only an outage explains: checked at the end), and what the callee gets of it is
        kept on the call, so that it is not taken for a frame of the callee's own call."""
        cid = frame.get("callId")
        if cid is None:
            return None
        call = self.strays.get(cid)
        if call is None and frame.get("type") == "call-request":
            data = frame.get("data")
            call = self.by_key.get(data.get("k")) if isinstance(data, dict) else None
            if call is None or call.kind not in PINNED:
                return None
            self.strays[cid] = call
        return call if call is not None and call.callee is user else None

    def disturbed(self, call: Call) -> bool:
        """Whether an outage overlapped the call (or cut one of its parties): then the call is `affected`."""
        now = time.monotonic()
        return call.caller.cut or call.callee.cut or any(a <= now and call.t0 <= b for a, b in self.windows)

    def stalled(self, call: Call) -> bool:
        """Whether a stall overlapped the call: a timer of the server's (ring timeout, resume grace) may then have
        won a race that the script, acting seconds before it on its own clock, thought it could not lose."""
        now = time.monotonic()
        return any(a <= now and call.t0 <= b for a, b in self.stalls + self.stalling())

    def stalling(self) -> list[tuple[float, float]]:
        """The stall under way, not recorded yet: the probe's ping out, or its sleep overrun, by more than STALL.
        (What a stall held back can be read, and fail a call, before the probe runs again to record it.)"""
        if self.probing is None:
            return []
        since, takes = self.probing
        if time.monotonic() - since - takes <= STALL:
            return []
        return [(since, time.monotonic() + max(self.ring, self.grace) + self.args.slack)]

    async def settle(self, call: Call, pinned: bool, outage: bool = True) -> None:
        """An outage (or a stall: `outage` False) broke this call's script: each party still connected must be
        told the call ended (within the documented bounds: a lease and a third, plus the ring timeout or the resume
        grace, after the outage began), or, for calls caught by a Redis outage, ends it with a hang-up once Redis
        is back."""
        if outage:
            self.affected += 1
        call.outcome = call.reason = call.hung_up_by = None
        if call.call_id:
            self.affected_ids.add(call.call_id)
        spans = self.windows + self.stalls + self.stalling()
        last = max((b for a, b in spans if a <= time.monotonic()), default=time.monotonic())
        if call.call_id is None:  # a call-request may still be acted on: wait until it would have rung out
            last = max(last, time.monotonic() + self.ring + self.args.slack)
        for u in (call.caller,) if pinned else (call.caller, call.callee):
            if u.cut or u.ws is None:
                continue
            await self.told(u, call, last)
        b = call.callee
        if pinned and call.call_id and not b.cut and b.ws is not None:
            # a busy call whose target's own call the outage ended may have rung it after all (what it got of it is
            # kept on the call: `stray_call`): its pin keeps it out of new calls until this call has ended for it
            # too (bounded by the ring timeout)
            until = time.monotonic() + 1.0
            rung = False
            while time.monotonic() < until and not any(f.get("type") == "call-ended" for f in call.stray):
                if not rung and call.stray:
                    rung, until = True, time.monotonic() + self.ring + self.args.slack
                await asyncio.sleep(0.05)
            ended = [f for f in call.stray if f.get("type") == "call-ended"]
            if len(ended) > 1:
                self.fail(f"{b.id}: call {call.call_id} ended twice: {ended}")
            if ended:
                call.ended.setdefault(b.id, ended[0])

    async def told(self, u: User, call: Call, until: float) -> None:
        if u.id in call.ended:
            # told already, by a call-ended its script did not expect (the reason it is settled: `User.expect`
            # stopped at it); what follows it (a seed hangup, say) is still to be taken
            await self.after_ended(u, call)
            return
        hung_up = False
        while True:
            left = until - time.monotonic()
            try:
                frame = await asyncio.wait_for(u.inbox.get(), max(left, 0.001))
            except TimeoutError:
                if call.call_id is None:
                    return  # it never started (refused while Redis was down)
                if hung_up and u.ws is not None and not u.cut:
                    # The server ignores a hang-up for a call that has just ended (docs/protocol.md): so it had
                    # ended before. Fine if it ended while this user was away; checked against the history's
                    # end time at the end (`check_silent`).
                    self.silent.append((u, call, u.connected_wall))
                    return
                if hung_up or u.ws is None or u.cut:
                    self.fail(
                        f"{u.id} was never told that {call.kind} call {call.call_id} ended (affected by an outage)"
                    )
                    return
                # still under way on the server (Redis kept it): the user hangs up, as a person would
                hung_up = True
                until = time.monotonic() + HANGUP_WAIT
                with contextlib.suppress(websockets.ConnectionClosed, Failed):
                    await u.send(
                        {
                            "type": "hangup",
                            "to": (call.callee if u is call.caller else call.caller).id,
                            "callId": call.call_id,
                        }
                    )
                continue
            cid = frame.get("callId")
            if call.call_id is None and cid and frame.get("type") in ("call-ringing", "call-request", "error"):
                call.call_id = cid
                self.affected_ids.add(cid)
                until = max(until, time.monotonic() + self.ring + self.grace + self.lease * 4 / 3 + self.args.slack)
            if cid is not None and cid != call.call_id:
                self.fail(
                    f"{u.id} got a frame of another call while settling {call.call_id}: {json.dumps(frame)[:300]}"
                )
                continue
            if frame.get("type") == "call-ended" or (hung_up and frame.get("code") == "not-in-call"):
                if frame.get("type") == "call-ended":
                    if u.id in call.ended:
                        self.fail(f"{u.id}: call {call.call_id} ended twice: {call.ended[u.id]} then {frame}")
                    call.ended[u.id] = frame
                await self.after_ended(u, call)
                return

    async def after_ended(self, u: User, call: Call) -> None:
        """What follows a call-ended (the seed clients' hangup or call-reject, the answer to our own hang-up)
        comes at once: take it, so that it is not taken for a frame of the user's next call."""
        with contextlib.suppress(TimeoutError):
            while True:
                late = await asyncio.wait_for(u.inbox.get(), 0.5)
                if late.get("callId") != call.call_id or late.get("type") == "call-ended":
                    self.fail(f"{u.id} got {json.dumps(late)[:300]} after call {call.call_id} ended")

    # -- choosing
    def pick(self, caller: User, want: str) -> User | None:
        users = self.users
        for _ in range(30):
            u = users[self.rng.randrange(len(users))]
            if u is caller:
                continue
            if u.cut:
                continue
            if want == "idle" and u.state == "idle" and not u.pins:
                # (not while a call to it is still in flight or being settled: one call at a time)
                return u
            if want == "talking" and u.talking:
                return u
            if want == "offline" and u.state == "offline" and time.monotonic() - u.offline_at > 1.0:
                # (a second after its close handshake: the server may answer the close before it forgets the user)
                return u
        return None

    # -- the life of one user
    async def live(self, user: User) -> None:
        rng = self.rng
        while not self.stopping:
            await asyncio.sleep(rng.uniform(self.args.idle_min, self.args.idle_max))
            if self.stopping or user.state == "broken":
                break
            if user.cut and user.state == "idle":
                await self.recover(user)
                continue
            if user.state != "idle" or user.pins:
                continue  # (pinned: a call to it is in flight or being settled; it takes no new call till then)
            roll = rng.random()
            if roll < self.args.leave:
                await self.leave(user)
                continue
            kind = rng.choices(KINDS, WEIGHTS)[0]
            want = {"busy": "talking", "unavailable": "offline"}.get(kind, "idle")
            target = self.pick(user, want)
            if target is None:
                continue
            call = Call(key=f"{user.id}.{len(self.calls)}", kind=kind, caller=user, callee=target, t0=time.monotonic())
            self.calls.append(call)
            self.by_key[call.key] = call
            now = time.monotonic()
            user.trace.append((now, "*", f"calls {target.id}: {kind} {call.key}"))
            target.trace.append((now, "*", f"called by {user.id}: {kind} {call.key}"))
            user.state = "busy"
            if want == "idle":
                target.state = "busy"
            else:
                target.pins += 1
                target.unpinned.clear()
            limit = self.ring + 2 * self.grace + self.args.talk_max + 60
            try:
                await asyncio.wait_for(SCENARIOS[kind](self, call), limit)
            except (Failed, TimeoutError, websockets.ConnectionClosed) as exc:
                if self.disturbed(call) and not isinstance(exc, Broken):
                    await self.settle(call, pinned=want != "idle")
                elif self.stalled(call) and not isinstance(exc, websockets.ConnectionClosed):
                    self.raced += 1
                    await self.settle(call, pinned=want != "idle", outage=False)
                else:
                    if isinstance(exc, Failed):
                        self.fail(str(exc))
                    elif isinstance(exc, TimeoutError):
                        self.fail(f"{kind} call {call.key} ({call.call_id}) did not end within {limit:g}s")
                    else:
                        self.fail(f"{kind} call {call.key} ({call.call_id}): a connection closed: {exc!r}")
                    self.quarantine(user, target if want == "idle" else None)
            finally:
                self.kinds[call.kind] += 1
                self.ended_calls += 1
                if self.ended_calls == TABLES_FULL:
                    self.tables_full_at = time.monotonic() - self.started
                if call.outcome:
                    self.outcomes[call.outcome] += 1
                self.relayed += call.relayed
                for p in (user, target):
                    if p.state != "broken" and p.ws is None and not p.cut and (p is user or want == "idle"):
                        # an outage caught it between a drop and its come-back (resume, lost): it recovers
                        # like a user whose node died, instead of going idle without a connection
                        p.cut, p.cut_at, p.talking = True, time.monotonic(), False
                if user.state != "broken":
                    if call.outcome is not None:  # not for a call an outage broke
                        self.check_relayed(call)
                    user.state = "idle"
                if want == "idle":
                    if target.state != "broken":
                        target.state = "idle"
                        target.talking = False
                else:
                    target.pins -= 1
                    if target.pins == 0:
                        target.unpinned.set()
                user.talking = False

    async def recover(self, user: User) -> None:
        """A user whose connection died in an outage comes back (to a live node) once its calls are over: after
        the dead node's lease ran out (a lease and a third at most) and then the resume grace. (Sooner, it would
        resume a call the harness has already settled: right, but not what this script expects.)"""
        await asyncio.sleep(max(0.0, user.cut_at + self.lease * 4 / 3 + self.grace + 2 - time.monotonic()))
        user.ws = None
        while user.pins:
            await asyncio.wait_for(user.unpinned.wait(), 120)
        user.state = "coming"
        while not user.inbox.empty():  # what the dead connection got after its call was settled
            late = user.inbox.get_nowait()
            if late.get("callId") is not None and late.get("callId") not in self.affected_ids:
                self.fail(f"{user.id} got {json.dumps(late)[:300]} on the connection an outage cut")
        await self.come_back(user)
        if self.kill_window and self.kill_window[0] <= user.cut_at <= self.kill_window[1]:
            self.late_returns += 1
        user.cut = False
        user.state = "idle"

    def quarantine(self, *users: User | None) -> None:
        """After a failure, the users of that call take no further part (their state is unknown): one fault
        gives one failure, not a cascade."""
        for u in users:
            if u is None:
                continue
            u.state = "broken"
            u.talking = False
            if u.ws is not None and u.ws.transport is not None:
                u.ws.transport.abort()
            u.ws = None

    async def leave(self, user: User) -> None:
        """The user closes its page for a while (a target for calls to someone offline), then comes back."""
        user.state = "offline"
        user.offline_at = float("inf")  # not a target until its close handshake is over
        ws, user.ws = user.ws, None
        assert ws is not None
        await asyncio.wait_for(ws.close(), 10)
        user.offline_at = time.monotonic()
        await asyncio.sleep(self.rng.uniform(self.args.away_min, self.args.away_max))
        while user.pins:
            await asyncio.wait_for(user.unpinned.wait(), 120)
        user.state = "coming"
        await self.come_back(user)
        user.state = "idle"

    async def come_back(self, user: User) -> dict[str, Any]:
        for attempt in range(60):
            try:
                await user.connect()
                break
            except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed) as exc:
                if user.ws is not None and user.ws.transport is not None:
                    user.ws.transport.abort()
                user.ws = None
                if attempt == 59 or not self.args.cluster:
                    raise Failed(f"{user.id} could not reconnect: {exc!r}") from None
                await asyncio.sleep(0.5)
        self.reconnects += 1
        assert user.welcome is not None
        return user.welcome.result()

    async def drop(self, user: User) -> None:
        """The user's network goes: the socket is cut without a close handshake."""
        ws, user.ws = user.ws, None
        if ws is None or ws.transport is None:
            raise Failed(f"{user.id} has no connection to drop")
        ws.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.wait_closed(), 5)

    # -- checks at the end of a call
    def check_relayed(self, call: Call) -> None:
        for a, b in ((call.caller, call.callee), (call.callee, call.caller)):
            sent, got = call.sent.get(a.id, []), call.got.get(b.id, [])
            if sent != got:
                self.fail(
                    f"{call.kind} call {call.key} ({call.call_id}): {a.id} sent {b.id} {sent}, {b.id} got {got}"
                    " (lost, duplicated or reordered)"
                )


# ------------------------------------------------------------------------------------------------- scenarios
async def ring(soak: Soak, call: Call) -> None:
    """The caller calls; it gets call-ringing, the callee call-request."""
    a, b = call.caller, call.callee
    await a.send({"type": "call-request", "to": b.id, "data": {"k": call.key}})
    got = await a.expect(call, ["call-ringing"])
    call.call_id = got["call-ringing"]["callId"]
    req = await b.expect(call, ["call-request"])
    if (req["call-request"].get("data") or {}).get("k") != call.key:
        raise Failed(f"{b.id} got call-request {req} for call {call.key}")


def ended_ok(user: User, call: Call, frame: dict[str, Any]) -> None:
    if call.ended.get(user.id, frame) is not frame:  # (`User.expect` noted it as it took it)
        raise Failed(f"{user.id}: call {call.call_id} ended twice: {call.ended[user.id]} then {frame}")
    call.ended[user.id] = frame
    if frame.get("outcome") != call.outcome or (call.reason and frame.get("reason") != call.reason):
        raise Failed(
            f"{user.id}: {call.kind} call {call.key} ({call.call_id}) ended {frame.get('outcome')}/"
            f"{frame.get('reason')}, expected {call.outcome}/{call.reason}"
        )


async def relay(soak: Soak, call: Call, sender: User, frames: list[tuple[str, Any]]) -> None:
    peer = call.callee if sender is call.caller else call.caller
    sent = call.sent.setdefault(sender.id, [])
    for kind, data in frames:
        if data is None:
            sent.append("end")
        else:
            seq = len(sent)
            data = {**data, "k": call.key, "seq": seq}
            sent.append(seq)
        await sender.send({"type": kind, "to": peer.id, "callId": call.call_id, "data": data})


async def received(user: User, call: Call, count: int, timeout: float = 10) -> None:  # noqa: ASYNC109
    """Wait until `user` got `count` relayed frames in this call (taking them from its inbox)."""
    deadline = time.monotonic() + timeout
    while len(call.got.get(user.id, [])) < count:
        left = deadline - time.monotonic()
        try:
            frame = await asyncio.wait_for(user.inbox.get(), max(left, 0.001))
        except TimeoutError:
            raise Failed(
                f"{user.id} got {len(call.got.get(user.id, []))} of {count} relayed frames within {timeout:g}s in "
                f"{call.kind} call {call.key} ({call.call_id}): {call.got.get(user.id)}"
            ) from None
        user.check_frame(call, frame)
        if frame.get("type") == "call-ended":
            user.took_ended(call, frame)
        if frame.get("type") not in RELAYED:
            raise Failed(f"{user.id} got an unexpected frame in {call.kind} call {call.key}: {json.dumps(frame)[:400]}")
        user.take_relayed(call, frame)


def candidates(rng: random.Random, n: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for i in range(n):
        port = rng.randrange(1024, 65535)
        out.append(
            (
                "candidate",
                {
                    "candidate": f"candidate:{i} 1 udp 2122260223 192.168.1.{i + 2} {port} typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                    "usernameFragment": "Xy1z",
                },
            )
        )
    return out


def media_state(rng: random.Random) -> tuple[str, Any]:
    return ("media-state", {"muted": rng.random() < 0.3, "camera": False, "screen": False})


async def exchange(soak: Soak, call: Call, first: bool) -> None:
    """Both ends send candidates and a media-state at once (and, after an accept, the offer and the answer),
    and each waits for all of the other's."""
    rng = soak.rng
    a, b = call.caller, call.callee
    if first:
        await relay(soak, call, a, [("offer", {"type": "offer", "sdp": SDP})])
        await received(b, call, len(call.sent[a.id]))
        await relay(soak, call, b, [("answer", {"type": "answer", "sdp": SDP})])
        await received(a, call, len(call.sent[b.id]))
    fa = [*candidates(rng, rng.randint(1, 4)), media_state(rng)]
    fb = [*candidates(rng, rng.randint(1, 4)), media_state(rng)]
    if first:
        fa.append(("candidate", None))
        fb.append(("candidate", None))
    await asyncio.gather(relay(soak, call, a, fa), relay(soak, call, b, fb))
    await asyncio.gather(received(a, call, len(call.sent[b.id])), received(b, call, len(call.sent[a.id])))


async def answered(soak: Soak, call: Call) -> None:
    rng = soak.rng
    a, b = call.caller, call.callee
    await ring(soak, call)
    await b.send({"type": "call-accept", "to": a.id, "callId": call.call_id})
    got = await a.expect(call, ["call-accept"])
    if got["call-accept"].get("polite") is not False:
        raise Failed(f"{a.id}: the caller's call-accept should say polite false: {got}")
    await exchange(soak, call, first=True)
    variant = rng.choices(["plain", "resume", "lost", "crossing", "failed"], [70, 12, 6, 6, 6])[0]
    call.kind = f"answered/{variant}"
    a.talking = b.talking = True
    talk = rng.uniform(soak.args.talk_min, soak.args.talk_max)
    await talking(soak, call, talk / 2)
    if variant == "resume":
        who = rng.choice([a, b])
        other = b if who is a else a
        a.talking = b.talking = False
        for u in (a, b):
            while u.pins:
                await asyncio.wait_for(u.unpinned.wait(), 30)
        await soak.drop(who)
        await asyncio.sleep(rng.uniform(0.1, soak.grace * 0.5))
        await soak.come_back(who)
        role = "caller" if who is a else "callee"
        mine = await who.expect(call, ["call-resumed"])
        theirs = await other.expect(call, ["call-resumed"])
        r = mine["call-resumed"]
        if r.get("state") != "answered" or r.get("role") != role or r.get("peer") != other.id:
            raise Failed(f"{who.id}: call-resumed {r} (expected answered, role {role}, peer {other.id})")
        if theirs["call-resumed"].get("peer") != who.id:
            raise Failed(f"{other.id}: call-resumed {theirs['call-resumed']}")
        await exchange(soak, call, first=False)
        a.talking = b.talking = True
    await talking(soak, call, talk / 2)
    # wait until nobody is calling them to find them busy (bounded: a busy call ends at once)
    for u in (a, b):
        while u.pins:
            await asyncio.wait_for(u.unpinned.wait(), 30)
    a.talking = b.talking = False
    if variant == "lost":
        who = rng.choice([a, b])
        other = b if who is a else a
        call.outcome, call.reason, call.hung_up_by = "answered", "peer-lost", None
        t0 = time.monotonic()
        await soak.drop(who)
        got = await other.expect(call, ["call-ended"], ("hangup",), timeout=soak.grace + 10)
        waited = time.monotonic() - t0
        ended_ok(other, call, got["call-ended"])
        if waited < soak.grace * 0.9 or waited > soak.grace + soak.args.slack:
            raise Failed(
                f"{other.id} was told peer-lost {waited:.2f}s after {who.id} dropped; "
                f"the resume grace is {soak.grace:g}s"
            )
        await asyncio.sleep(rng.uniform(0, 1))
        await soak.come_back(who)
        return
    if variant == "crossing":
        call.outcome, call.reason = "answered", "user-hangup"
        await asyncio.gather(
            a.send({"type": "hangup", "to": b.id, "callId": call.call_id}),
            b.send({"type": "hangup", "to": a.id, "callId": call.call_id}),
        )
        ga, gb = await asyncio.gather(
            a.expect(call, ["call-ended"], ("hangup",)),
            b.expect(call, ["call-ended"], ("hangup",)),
        )
        ended_ok(a, call, ga["call-ended"])
        ended_ok(b, call, gb["call-ended"])
        call.hung_up_by = "?"  # either
        return
    who = rng.choice([a, b])
    other = b if who is a else a
    if variant == "failed":
        call.outcome, call.reason = "failed", "ice-failed"
        await who.send({"type": "hangup", "to": other.id, "callId": call.call_id, "data": {"reason": "ice-failed"}})
    else:
        call.outcome, call.reason = "answered", "user-hangup"
        await who.send({"type": "hangup", "to": other.id, "callId": call.call_id})
    call.hung_up_by = who.id
    g1 = await who.expect(call, ["call-ended"])
    g2 = await other.expect(call, ["call-ended", "hangup"])
    ended_ok(who, call, g1["call-ended"])
    ended_ok(other, call, g2["call-ended"])


async def talking(soak: Soak, call: Call, seconds: float) -> None:
    """The talk phase of an answered call. If the node of exactly one party dies meanwhile, that party comes
    straight back to the surviving node, as a browser does (with backoff), for `--resume-share` of such calls:
    it must get `call-resumed` within the resume grace of losing its node, its peer `call-resumed` too and
    never `call-ended` (docs/deploy.md, "A node dies"); the call then goes on. The other calls break, and the
    cut party comes back only after the lease and the grace (`Soak.recover`)."""
    end = time.monotonic() + seconds
    tried = False
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.25))
        cut = [u for u in (call.caller, call.callee) if u.cut]
        kill = soak.kill_window
        if tried or len(cut) != 1 or kill is None or not kill[0] <= cut[0].cut_at <= kill[1] or soak.stopping:
            continue
        tried = True
        if soak.rng.random() >= soak.args.resume_share or soak.in_window(redis_only=True):
            return  # this one comes back later: the call breaks and is settled
        who = cut[0]
        other = call.callee if who is call.caller else call.caller
        role = "caller" if who is call.caller else "callee"
        who.ws = None
        try:
            await soak.come_back(who)  # to the live node; a refused attempt is retried after 0.5 s
            mine = await who.expect(
                call, ["call-resumed"], timeout=max(0.1, who.cut_at + soak.grace - time.monotonic())
            )
            theirs = await other.expect(call, ["call-resumed"], timeout=soak.args.slack)
        except Failed as exc:
            raise Broken(
                f"after its node died, {who.id} did not resume {call.kind} call {call.call_id}: {exc}"
            ) from None
        waited = time.monotonic() - who.cut_at
        r = mine["call-resumed"]
        if r.get("state") != "answered" or r.get("role") != role or r.get("peer") != other.id:
            raise Broken(f"{who.id}: call-resumed {r} after its node died (expected answered, role {role})")
        if theirs["call-resumed"].get("peer") != who.id:
            raise Broken(f"{other.id}: call-resumed {theirs['call-resumed']} after {who.id}'s node died")
        who.cut = False
        soak.node_resumes += 1
        soak.resume_waits.append(waited)
        await exchange(soak, call, first=False)
        call.caller.talking = call.callee.talking = True


async def rejected(soak: Soak, call: Call) -> None:
    a, b = call.caller, call.callee
    await ring(soak, call)
    await asyncio.sleep(soak.rng.uniform(0.2, 2))
    call.outcome, call.reason, call.hung_up_by = "rejected", "user-rejected", b.id
    await b.send({"type": "call-reject", "to": a.id, "callId": call.call_id})
    ga = await a.expect(call, ["call-reject", "call-ended"])
    gb = await b.expect(call, ["call-ended"])
    ended_ok(a, call, ga["call-ended"])
    ended_ok(b, call, gb["call-ended"])


async def missed(soak: Soak, call: Call) -> None:
    a, b = call.caller, call.callee
    call.outcome, call.reason = "missed", "invite-timeout"
    t0 = time.monotonic()
    await ring(soak, call)
    ga = await a.expect(call, ["call-ended", "hangup"], timeout=soak.ring + 10)
    waited = time.monotonic() - t0
    gb = await b.expect(call, ["call-ended", "hangup"])
    ended_ok(a, call, ga["call-ended"])
    ended_ok(b, call, gb["call-ended"])
    if waited < soak.ring * 0.9 or waited > soak.ring + soak.args.slack:
        raise Failed(f"missed call {call.call_id} ended after {waited:.2f}s; the ring timeout is {soak.ring:g}s")


async def cancelled(soak: Soak, call: Call) -> None:
    a, b = call.caller, call.callee
    await ring(soak, call)
    await asyncio.sleep(soak.rng.uniform(0.1, min(2.0, soak.ring / 2)))
    call.outcome, call.reason, call.hung_up_by = "cancelled", "user-hangup", a.id
    await a.send({"type": "hangup", "to": b.id, "callId": call.call_id})
    ga = await a.expect(call, ["call-ended"])
    gb = await b.expect(call, ["call-ended", "hangup"])
    ended_ok(a, call, ga["call-ended"])
    ended_ok(b, call, gb["call-ended"])


async def busy(soak: Soak, call: Call) -> None:
    a, b = call.caller, call.callee
    call.outcome, call.reason = "busy", "user-busy"
    await a.send({"type": "call-request", "to": b.id, "data": {"k": call.key}})
    ga = await a.expect(call, ["call-ringing", "call-reject", "call-ended"])
    ended_ok(a, call, ga["call-ended"])
    call.ended[b.id] = {"outcome": "busy"}  # the busy user is not disturbed: nothing reaches it


async def unavailable(soak: Soak, call: Call) -> None:
    a, b = call.caller, call.callee
    call.outcome, call.reason = "unavailable", "user-unavailable"
    await a.send({"type": "call-request", "to": b.id, "data": {"k": call.key}})
    ga = await a.expect(call, ["error:unavailable", "call-ended"])
    ended_ok(a, call, ga["call-ended"])
    assert call.call_id is not None
    b.offline_calls.add(call.call_id)
    call.ended[b.id] = {"outcome": "unavailable"}


SCENARIOS = {
    "answered": answered,
    "rejected": rejected,
    "missed": missed,
    "cancelled": cancelled,
    "busy": busy,
    "unavailable": unavailable,
}
KINDS = list(SCENARIOS)
PINNED = {"busy", "unavailable"}  # the kinds whose callee takes no part: its own state decides the outcome
WEIGHTS = [45, 12, 8, 12, 10, 10]


# ------------------------------------------------------------------------------------------------- Redis
# What may stay in Redis after every user left and every node stopped (the key list in broker/redis.py):
# `ended:{id}` (who may send a call's call-summary, for an hour) and their index `endedat`, `seen` (the 1,000
# users seen last), `clock` (the counter versions come from). Anything else is state that outlived what it described.
REDIS_LASTING = re.compile(r"^peercall:(ended:.+|endedat|seen|clock)$")


async def redis_leftovers(soak: Soak, port: int) -> list[str]:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(count=1000)]
    finally:
        await client.aclose()
    left = sorted(k for k in keys if not REDIS_LASTING.match(k))
    if left:
        soak.fail(f"Redis: {len(left)} keys left after every user left and the nodes stopped: {left[:20]}")
    return left


# ------------------------------------------------------------------------------------------------ the history
async def read_history(url: str, users: list[str]) -> dict[str, list[Any]]:
    """Every user's calls through the store's own API (`calls_for`, paged), by user."""
    sys.path.insert(0, str(ROOT / "src"))
    from peercall.store import open_history

    history = open_history(url)
    await history.open()
    out: dict[str, list[Any]] = {}
    try:
        for user in users:
            records: list[Any] = []
            before = None
            while True:
                page, before = await history.calls_for(user, limit=200, before=before)
                records.extend(page)
                if before is None:
                    break
            out[user] = records
    finally:
        await history.close()
    return out


def check_history(soak: Soak, by_user: dict[str, list[Any]]) -> int:
    """Each call the harness placed is in the history exactly once, with its outcome and parties, and in each
    party's own list once; nothing else is there."""
    expected = {c.call_id: c for c in soak.calls if c.call_id}
    seen: dict[str, Any] = {}
    for user, records in by_user.items():
        ids = Counter(r.call_id for r in records)
        for cid, n in ids.items():
            if n > 1:
                soak.fail(f"history: call {cid} is {n} times in {user}'s calls")
        for rec in records:
            seen[rec.call_id] = rec
    # calls an outage broke before the soak learned their id: matched by their parties, once each
    unnamed = Counter((c.caller.id, c.callee.id) for c in soak.calls if c.call_id is None)
    for cid, rec in seen.items():
        call = expected.get(cid)
        if call is None:
            if unnamed[(rec.caller, rec.callee)] > 0:
                unnamed[(rec.caller, rec.callee)] -= 1
                continue
            soak.fail(f"history: a call the soak did not place: {rec}")
            continue
    for cid, call in expected.items():
        rec = seen.get(cid)
        if rec is None:
            soak.fail(f"history: {call.kind} call {call.key} ({cid}, {call.caller.id} -> {call.callee.id}) is missing")
            continue
        for user in (call.caller.id, call.callee.id):
            if cid not in {r.call_id for r in by_user.get(user, [])}:
                soak.fail(f"history: call {cid} is not in {user}'s calls")
        want = (call.caller.id, call.callee.id, call.outcome, call.reason)
        have = (rec.caller, rec.callee, str(rec.outcome), str(rec.reason))
        if call.outcome and want != have:
            soak.fail(f"history: {call.kind} call {cid}: recorded {have}, expected {want}")
        if call.hung_up_by not in (None, "?") and rec.hung_up_by != call.hung_up_by:
            soak.fail(f"history: {call.kind} call {cid}: hung up by {rec.hung_up_by}, expected {call.hung_up_by}")
    return len(seen)


def check_silent(soak: Soak, by_user: dict[str, list[Any]]) -> None:
    """A party whose own hang-up of a broken call went unanswered (the call had ended already) must have been away
    when it ended: connected since before its end, the server should have told it."""
    ended = {r.call_id: r.ended_at for records in by_user.values() for r in records}
    to_mono = time.monotonic() - time.time()
    for u, call, since in soak.silent:
        at = ended.get(call.call_id)
        if at is not None and soak.in_window(at + to_mono):
            continue  # ended inside an outage's bounds: a frame to a node that is gone may be lost (documented)
        if at is not None and at > since + 0.5:
            soak.fail(
                f"{u.id} was connected (since {since:.1f}) when {call.kind} call {call.call_id} ended ({at:.1f}), "
                "and was never told"
            )


# ---------------------------------------------------------------------------------------------------- running
def server_env(args: argparse.Namespace, database_url: str) -> dict[str, str]:
    return {
        "PEERCALL_HOST": "127.0.0.1",
        "PEERCALL_PORT": "0",
        "PEERCALL_AUTH": "open",
        "PEERCALL_RATE_LIMIT": BIG,
        "PEERCALL_RATE_BURST": BIG,
        "PEERCALL_CALL_RATE": BIG,
        "PEERCALL_CONNECTION_RATE": BIG,
        "PEERCALL_MAX_CONNECTIONS_PER_IP": BIG,
        "PEERCALL_ACCESS_LOG": "false",
        "PEERCALL_LOG_LEVEL": "warning",
        "PEERCALL_DATABASE_URL": database_url,
        "PEERCALL_ICE_SERVERS": "[]",
        "PEERCALL_RING_TIMEOUT": str(args.ring_timeout),
        "PEERCALL_RESUME_GRACE": str(args.resume_grace),
        "PYTHONUNBUFFERED": "1",
    }


async def probe(soak: Soak) -> None:
    """Watch for stalls: every 0.25 s a WebSocket ping to the first node, answered by the server and read by the
    soak. A round trip slower than STALL means one of them stopped for a while (on a machine shared with other
    work); the calls that overlap it and the longest timer after it are settled (each party still connected is
    told, once; the history has the call once) rather than held to the script's expected outcome, and counted.
    On a quiet machine there are none."""
    bound = max(soak.ring, soak.grace) + soak.args.slack
    ws: ClientConnection | None = None
    drain: asyncio.Task[None] | None = None

    async def drained(ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:  # presence and the like: read, so that the pongs are read too
                pass

    while not soak.calls_over:  # (calls go on after the run's duration until each has ended)
        node = soak.nodes[0]
        soak.probing = None
        try:
            if ws is None:
                if not node.alive():
                    await asyncio.sleep(1)
                    continue
                ws = await asyncio.wait_for(
                    connect(f"ws://127.0.0.1:{node.port}/ws?id=soak-probe", compression=None, ping_interval=None), 15
                )
                drain = asyncio.create_task(drained(ws))
            t = time.monotonic()
            soak.probing = (t, 0.0)
            await asyncio.wait_for(await ws.ping(), 30)
            rtt = time.monotonic() - t
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed):
            soak.probing = None
            if drain is not None:
                drain.cancel()
            ws = drain = None
            await asyncio.sleep(1)
            continue
        if rtt > STALL:
            soak.stalls.append((t, time.monotonic() + bound))
            soak.worst_stall = max(soak.worst_stall, rtt)
        t = time.monotonic()
        soak.probing = (t, 0.25)
        await asyncio.sleep(0.25)
        late = time.monotonic() - t - 0.25  # the soak itself stopped (its loop, or the process)
        if late > STALL:
            soak.stalls.append((t, time.monotonic() + bound))
            soak.worst_stall = max(soak.worst_stall, late)
    soak.probing = None
    if ws is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    if drain is not None:
        drain.cancel()


async def sample(soak: Soak, t_end: float) -> None:
    interval = soak.args.sample_every
    c0 = self_cpu()
    while not soak.stopping:
        node = soak.nodes[0]
        if node.alive():
            with contextlib.suppress(OSError, ValueError, IndexError):
                soak.samples.append(
                    (time.monotonic() - soak.started, proc_rss_kb(node.pid), proc_cpu(node.pid), self_cpu() - c0)
                )
        await asyncio.sleep(interval)


# The server keeps the last 10,000 ended calls (core/switchboard.py `_ENDED_KEPT`, who may still send a
# call-summary; hub/router.py, which were written): its memory grows until that many calls have ended.
TABLES_FULL = 10_000


def rss_rule(soak: Soak, duration: float) -> tuple[float, int, int]:
    """Warm-up is the first 10% of the run, at least 30 s, and at least until 10,000 calls have ended (the
    server's bounded tables of ended calls are full then). Baseline: the median of the first three samples after
    it. Fails if any later sample is more than 5% above the baseline. Returns (warm-up s, baseline kB, max kB)."""
    warm = max(0.1 * duration, 30.0, soak.tables_full_at or 0.0)
    after = [rss for t, rss, _, _ in soak.samples if t >= warm]
    if len(after) < 4:
        soak.fail(f"RSS: only {len(after)} samples after the warm-up of {warm:g}s; run longer")
        return warm, 0, 0
    base = int(statistics.median(after[:3]))
    top = max(after[3:])
    if top > base * 1.05:
        soak.fail(f"RSS grew after warm-up: {base:,} kB -> {top:,} kB (+{(top / base - 1) * 100:.1f}%, limit 5%)")
    return warm, base, top


def print_rss(soak: Soak, duration: float) -> None:
    step = 60.0 if duration >= 600 else max(duration / 10, soak.args.sample_every)
    if not soak.samples:
        return
    print(f"\n  {'t':>7}  {'RSS MB':>8}  {'server CPU':>10}  {'soak CPU':>8}")
    nxt = 0.0
    prev = soak.samples[0][0], soak.samples[0][2], soak.samples[0][3]
    for t, rss, scpu, ccpu in soak.samples[1:]:
        if t + 1e-9 >= nxt:
            dt = max(t - prev[0], 1e-9)
            print(
                f"  {t:7.0f}  {rss / 1024:8.1f}  {(scpu - prev[1]) / dt * 100:9.0f}%  "
                f"{(ccpu - prev[2]) / dt * 100:7.0f}%"
            )
            prev = (t, scpu, ccpu)
            nxt = t + step


async def run(args: argparse.Namespace) -> int:
    if args.pin and (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {CLIENT_CORE})
    raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix="peercall-soak-"))
    db = tmp / "h.sqlite3"
    database_url = f"sqlite:///{db}"
    soak = Soak(args)
    redis: Redis | None = None
    postgres: Postgres | None = None
    if args.cluster:
        if args.postgres_url:
            database_url = args.postgres_url
        else:
            postgres = Postgres(Path(tempfile.mkdtemp(prefix="peercall-soak-pg-")))  # its own: postgres owns it
            database_url = postgres.start()
        redis = Redis(tmp)
        redis.start()
        env = {
            **server_env(args, database_url),
            "PEERCALL_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "PEERCALL_NODE_LEASE": str(args.node_lease),
        }
        for name in ("n1", "n2"):
            soak.nodes.append(Node(name, {**env, "PEERCALL_NODE_ID": name}, tmp / f"{name}.log", args.peercall))
        where = f"two nodes, Redis (AOF) on {redis.port}, history {database_url}"
    else:
        soak.nodes.append(
            Node("peercall", server_env(args, database_url), tmp / "server.log", args.peercall, pinned=args.pin)
        )
        where = f"one node (history {db})"
    node = soak.nodes[0]
    print(f"soak: {args.users:,} users for {args.duration:g}s against {where}; logs in {tmp}", flush=True)
    for n in soak.nodes:
        n.start()
    soak.users = [User(soak, i, f"u{i:04d}", f"d{i:04d}", node=i % len(soak.nodes)) for i in range(args.users)]
    sem = asyncio.Semaphore(50)

    async def first_connect(u: User) -> None:
        async with sem:
            await u.connect()
            u.state = "idle"

    t0 = time.monotonic()
    await asyncio.gather(*(first_connect(u) for u in soak.users))
    print(f"soak: {args.users:,} users connected in {time.monotonic() - t0:.1f}s", flush=True)
    soak.started = time.monotonic()
    cpu0_server, cpu0_client = proc_cpu(node.pid), self_cpu()
    sampler = asyncio.create_task(sample(soak, soak.started + args.duration))
    prober = asyncio.create_task(probe(soak))
    lives = [asyncio.create_task(soak.live(u)) for u in soak.users]
    next_report = 60.0
    outage = args.node_lease * 4 / 3 + max(args.ring_timeout, args.resume_grace) + args.slack
    events = []
    if args.cluster and args.kill_at is not None:
        events.append((args.kill_at * args.duration, "kill"))
    if args.cluster and args.redis_restart_at is not None:
        events.append((args.redis_restart_at * args.duration, "redis"))
    events.sort()
    restart_n2_at: float | None = None
    while time.monotonic() - soak.started < args.duration:
        await asyncio.sleep(1)
        el = time.monotonic() - soak.started
        if events and el >= events[0][0]:
            what = events.pop(0)[1]
            now = time.monotonic()
            if what == "kill":
                print(f"soak: {el:5.0f}s SIGKILL node n2", flush=True)
                # from a second before: what n2 decided in its last instant and had not sent yet (a call it ended,
                # to a party on n1) is lost with it (docs/deploy.md, "A node dies")
                soak.windows.append((now - LAST_INSTANT, now + outage))
                soak.kill_window = (now, now + 5)
                soak.nodes[1].kill()
                restart_n2_at = el + 2 * args.node_lease
            else:
                assert redis is not None
                print(f"soak: {el:5.0f}s restarting Redis", flush=True)
                soak.windows.append((now, now + 3 + outage + 15))  # down ~3 s, the nodes back within ~6 s
                soak.redis_windows.append(soak.windows[-1])
                await asyncio.to_thread(redis.stop)
                await asyncio.sleep(2)
                await asyncio.to_thread(redis.start)
        if restart_n2_at is not None and el >= restart_n2_at:
            print(f"soak: {el:5.0f}s node n2 starts again", flush=True)
            restart_n2_at = None
            await asyncio.to_thread(soak.nodes[1].start)
        if el >= next_report:
            print(
                f"soak: {el:5.0f}s {len(soak.calls):,} calls, {sum(soak.outcomes.values()):,} ended, "
                f"{len(soak.failures)} failures",
                flush=True,
            )
            next_report += 60
        if not node.alive():
            soak.fail(f"the server exited with {node.proc.returncode if node.proc else '?'}")
            break
    soak.stopping = True
    # every call under way ends (each one is bounded), then nothing may be left in any inbox
    done, pending = await asyncio.wait(lives, timeout=args.ring_timeout + 2 * args.resume_grace + args.talk_max + 90)
    for task in pending:
        task.cancel()
        soak.fail("a user's call did not end after the run (see above)")
    for task in done:
        if task.exception() is not None:
            soak.fail(f"a user's loop raised {task.exception()!r}")
    soak.calls_over = True
    active = time.monotonic() - soak.started
    cpu_server, cpu_client = proc_cpu(node.pid) - cpu0_server, self_cpu() - cpu0_client
    sampler.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(prober, 35)
    await asyncio.sleep(1)
    for u in soak.users:
        while u.state != "broken" and not u.inbox.empty():
            soak.fail(f"{u.id} got a frame after its calls ended: {json.dumps(u.inbox.get_nowait())[:300]}")
    for u in soak.users:
        if u.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(u.ws.close(), 5)
    for n in soak.nodes:
        rc = n.stop()
        if rc not in (0, None, -signal.SIGTERM):  # uvicorn re-raises the SIGTERM it handled, once it has drained
            soak.fail(f"{n.name} exited with {rc} on SIGTERM; see {n.log}")
    leftovers: list[str] = []
    if redis is not None:
        leftovers = await redis_leftovers(soak, redis.port)
        redis.stop()
    if args.fault == "history":
        # a planted fault for tests/bench/test_soak.py: a record lost, another written twice (under a new id)
        with sqlite3.connect(db) as con:
            rows = con.execute("SELECT call_id FROM calls ORDER BY call_id LIMIT 2").fetchall()
            con.execute("DELETE FROM calls WHERE call_id = ?", rows[0])
            con.execute(
                "INSERT INTO calls SELECT ?||'x', caller, callee, caller_device, answered_device, ringing_at, "
                "answered_at, ended_at, outcome, reason, hung_up_by, missed_taken, quality, screened "
                "FROM calls WHERE call_id = ?",
                (rows[1][0], rows[1][0]),
            )
    for call in soak.calls:
        if call.stray and call.call_id is not None and call.call_id not in soak.affected_ids:
            soak.fail(f"{call.kind} call {call.call_id} reached {call.callee.id} outside any outage: {call.stray[0]}")
    by_user = await read_history(database_url, [u.id for u in soak.users])
    recorded = check_history(soak, by_user)
    check_silent(soak, by_user)
    if postgres is not None:
        postgres.stop()
        shutil.rmtree(postgres.root, ignore_errors=True)
    warm, base, top = rss_rule(soak, args.duration) if args.rss_check else (0.0, 0, 0)

    print_rss(soak, args.duration)
    ended = sum(soak.outcomes.values())
    print(
        f"\nsoak: {args.users:,} users, {active:.0f}s, {len(soak.calls):,} calls placed, {ended:,} ended, "
        f"{recorded:,} in the history, {soak.reconnects:,} reconnects"
    )
    print("calls by outcome: " + ", ".join(f"{o} {soak.outcomes[o]:,}" for o in OUTCOMES))
    print("calls by kind: " + ", ".join(f"{k} {n:,}" for k, n in sorted(soak.kinds.items())))
    print(
        f"frames: {soak.relayed:,} relayed (offer/answer/candidate/media-state) checked, "
        f"{soak.frames_out:,} sent, {soak.frames_in:,} received by the soak"
    )
    print(
        f"CPU: server {cpu_server / active * 100:.0f}% of a core, soak client {cpu_client / active * 100:.0f}%"
        f"{' (client-bound!)' if cpu_client / active > 0.95 else ''}"
    )
    print(
        f"RSS: warm-up {warm:.0f}s, baseline {base / 1024:.1f} MB, highest after {top / 1024:.1f} MB "
        f"({(top / base - 1) * 100 if base else 0:+.1f}%, limit +5%)"
    )
    if args.cluster:
        print(
            f"outages: {soak.affected:,} calls affected (settled), {soak.cuts:,} connections cut, "
            f"{soak.unavailable_errors:,} service-unavailable errors inside the windows, "
            f"{len(leftovers)} keys left in Redis"
        )
        waits = sorted(soak.resume_waits)
        print(
            f"node kill: {soak.node_resumes} answered calls resumed on the surviving node"
            + (f" ({waits[0]:.1f}-{waits[-1]:.1f}s after losing their node, grace {soak.grace:g}s)" if waits else "")
            + f", {soak.late_returns} users came back only after the lease and the grace"
        )
    print(
        f"stalls: {len(soak.stalls)} probe round trips or soak pauses over {STALL:g}s (worst {soak.worst_stall:.1f}s), "
        f"{soak.raced:,} calls raced by them (settled: told once each, in the history once)"
    )
    summary = {
        "users": args.users,
        "duration": active,
        "calls": len(soak.calls),
        "ended": ended,
        "history": recorded,
        "outcomes": dict(soak.outcomes),
        "kinds": dict(soak.kinds),
        "relayed": soak.relayed,
        "framesSent": soak.frames_out,
        "framesReceived": soak.frames_in,
        "reconnects": soak.reconnects,
        "serverCpu": cpu_server / active,
        "clientCpu": cpu_client / active,
        "rss": {
            "warmup": warm,
            "baselineKb": base,
            "maxKb": top,
            "samples": [(round(t, 1), r) for t, r, _, _ in soak.samples],
        },
        "stalls": len(soak.stalls),
        "worstStall": soak.worst_stall,
        "raced": soak.raced,
        "affected": soak.affected,
        "cuts": soak.cuts,
        "serviceUnavailable": soak.unavailable_errors,
        "redisLeftovers": leftovers,
        "nodeResumes": soak.node_resumes,
        "resumeWaits": soak.resume_waits,
        "lateReturns": soak.late_returns,
        "failures": soak.failures,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))  # noqa: ASYNC240  # once, at the end
    if soak.failures:
        print(f"soak: FAILED, {len(soak.failures)} failures")
        return 1
    print("soak: OK")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--duration", type=float, default=3600, help="seconds of calls (default 3600)")
    p.add_argument("--ring-timeout", type=float, default=6.0, help="the server's PEERCALL_RING_TIMEOUT")
    p.add_argument("--resume-grace", type=float, default=4.0, help="the server's PEERCALL_RESUME_GRACE")
    p.add_argument("--idle-min", type=float, default=2.0)
    p.add_argument("--idle-max", type=float, default=10.0)
    p.add_argument("--talk-min", type=float, default=1.0)
    p.add_argument("--talk-max", type=float, default=20.0)
    p.add_argument("--away-min", type=float, default=3.0)
    p.add_argument("--away-max", type=float, default=20.0)
    p.add_argument("--leave", type=float, default=0.06, help="chance that an idle user leaves for a while")
    p.add_argument("--slack", type=float, default=5.0, help="seconds a timer may fire late")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--no-rss-check", dest="rss_check", action="store_false", help="do not apply the RSS rule")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--fault", choices=["history", "drop-frame", "dup-frame"], help="plant a fault (tests the checks)")
    p.add_argument(
        "--pin", action="store_true", help="pin the server to core 0 and the soak to core 1, as bench/run.py"
    )
    p.add_argument("--cluster", action="store_true", help="two nodes, a Redis (AOF) and a PostgreSQL history")
    p.add_argument("--postgres-url", help="--cluster: this PostgreSQL (an empty database) instead of a new one")
    p.add_argument("--node-lease", type=float, default=10.0, help="--cluster: the nodes' PEERCALL_NODE_LEASE")
    p.add_argument(
        "--kill-at", type=float, default=0.3, help="--cluster: SIGKILL node n2 at this fraction of the run (0.3)"
    )
    p.add_argument(
        "--redis-restart-at", type=float, default=0.65, help="--cluster: restart Redis at this fraction (0.65)"
    )
    p.add_argument(
        "--resume-share",
        type=float,
        default=0.5,
        help="--cluster: share of the answered calls a kill cuts one party of whose party comes straight back",
    )
    p.add_argument("--peercall", default=str(Path(sys.executable).parent / "peercall"))
    args = p.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
