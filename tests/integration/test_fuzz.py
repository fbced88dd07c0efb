"""Property-based fuzzing of `/ws`: whatever a client sends, the server answers it alone, as documented, and stays up.

One `peercall serve` process serves the whole module (rate limits lifted so that they never answer instead of the
frame under test). On it, alice and bob are in an answered call and trickle `candidate` frames to each other from a
background event loop for as long as the module runs, while hypothesis drives a fuzzing client, `fuzzer`, with
frames of every kind. The oracle is a small model of docs/protocol.md written independently of the server's code:

- a frame with anything wrong gets exactly one `error`, with a code that docs/protocol.md documents and that fits
  what is wrong (several are allowed when the frame has several faults, since the order of checks is not
  documented);
- a frame that happens to be valid gets its documented answer instead (the fuzzer is never in a call, so this is
  `not-in-call`, or for a `call-request`: `unavailable` + `call-ended`, or the busy triple when it calls alice or
  bob). Frames are classified, not filtered: valid frames are generated on purpose.

After each frame the fuzzer sends a probe (an unknown type that names itself), so that the answers can be cut into
one segment per frame: what arrives before probe N is the answer to frame N. Every test ends by checking that alice
and bob got every candidate, in order and stamped with `from`, and nothing else; that the fuzz connection still
answers; and that the server process is alive, answers `/healthz` and logged no traceback.

Frames come from hypothesis (random JSON values; envelopes with fields of wrong types or values; raw unicode text,
near-JSON and bytes; sizes around the message limit; nesting up to 10,000 deep) and from one systematic table
(every field of every client type removed, mistyped or set to each of a list of wrong values). A frame above the
hard limit (close 1009) is tested on a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import string
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
import websockets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from peercall.protocol import messages
from peercall.protocol.errors import shorten
from peercall.protocol.schema import check_server_frame
from tests.conftest import ROOT, TIMEOUT, Client, ServerProcess, run_server
from tests.integration.conftest import TRANSPORTS
from tests.integration.test_ws_stack import not_utf8

FUZZER, ALICE, BOB = "fuzzer", "alice", "bob"
BUSY = frozenset({ALICE, BOB})  # online and in a call: a call-request to them ends `busy` at once
LIMIT = 65536  # PEERCALL_MAX_MESSAGE_SIZE, set explicitly below
HARD = max(4 * LIMIT, 1024 * 1024)  # above this the server closes with 1009
PACE = 0.004  # seconds between two candidates in one direction
REPLY_TIMEOUT = 10.0
TYPES = ("call-request", "call-accept", "call-reject", "offer", "answer", "candidate", "hangup")
SDP_TYPES = {"offer": {"offer"}, "answer": {"answer", "pranswer"}}
ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # docs/protocol.md: "1-64 characters from A-Z a-z 0-9 _ - . @"


def _documented_codes() -> frozenset[str]:
    """The `code`s listed in the Errors table of docs/protocol.md."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = section.split("\n|---|", 1)[1]  # below the table's header
    return frozenset(re.findall(r"^\| `([a-z-]+)` \|", rows, re.MULTILINE))


DOCUMENTED = _documented_codes()
# Examples talk to a live server, so they are slow; one failure is enough (shrinking each costs many exchanges).
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], report_multiple_bugs=False)

# --------------------------------------------------------------------------------------- JSON with raw parts


@dataclass(frozen=True)
class Num:
    """A number written as `text` on the wire (which json.dumps cannot write); `value` is what it means."""

    text: str
    value: int | float


@dataclass(frozen=True)
class Deep:
    """`depth` nested arrays, objects, or both alternately, written without recursion."""

    depth: int
    kind: str

    def text(self) -> str:
        d = self.depth
        if self.kind == "array":
            return "[" * d + "]" * d
        if self.kind == "object":
            return '{"a":' * (d - 1) + "{}" + "}" * (d - 1)
        return '[{"a":' * (d // 2) + "[]" + "}]" * (d // 2)


def dump(value: Any, ascii_only: bool = True) -> str:
    if isinstance(value, Num):
        return value.text
    if isinstance(value, Deep):
        return value.text()
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=ascii_only)}:{dump(v, ascii_only)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _has_surrogates(value: Any) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for s in _strings(value) for c in s)


def _join_pairs(value: Any) -> Any:
    """`value` as a JSON decoder sees it after `ensure_ascii`: escaped surrogate pairs become one character."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, dict):
        return {_join_pairs(k): _join_pairs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_pairs(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- the oracle

MISSING = object()


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Num) else value


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and ID.fullmatch(value) is not None


def _opt_str(d: dict[str, Any], key: str) -> bool:
    return d.get(key) is None or isinstance(d[key], str)


def _data_ok(kind: str, frame: dict[str, Any]) -> bool:
    data = frame.get("data", MISSING)
    if kind in SDP_TYPES:
        return (
            isinstance(data, dict)
            and isinstance(data.get("type"), str)
            and isinstance(data.get("sdp"), str)
            and data["type"] in SDP_TYPES[kind]
        )
    if kind == "candidate":
        if data is None:
            return True  # end of candidates
        if not isinstance(data, dict) or not isinstance(data.get("candidate"), str):
            return False
        index = _plain(data.get("sdpMLineIndex"))
        index_ok = index is None or (isinstance(index, int) and not isinstance(index, bool) and index >= 0)
        return index_ok and _opt_str(data, "sdpMid") and _opt_str(data, "usernameFragment")
    return True


def _answers(frame: Any) -> set[str]:
    if not isinstance(frame, dict):
        return {"bad-message"}
    faults: set[str] = set()
    kind = frame.get("type", MISSING)
    if isinstance(kind, str) and kind in messages.CONTACT_TYPES:
        return set(CONTACT_ANSWERS)
    known = isinstance(kind, str) and kind in TYPES
    if not isinstance(kind, str):
        faults.add("bad-message")
    elif not known:
        faults.add("unknown-type")
    to, call_id, sender = frame.get("to"), frame.get("callId"), frame.get("from")
    if to is not None and not _is_id(to):
        faults.add("bad-message")  # a malformed `to`
    if call_id is not None and not (isinstance(call_id, str) and 1 <= len(call_id) <= 128):
        faults.add("bad-message")
    if sender is not None and not isinstance(sender, str):
        faults.add("bad-message")
    if known and (to is None or to == FUZZER or (sender is not None and sender != FUZZER) or not _data_ok(kind, frame)):
        faults.add("bad-message")  # no `to`, to yourself, a foreign `from`, bad `data`
    if faults:
        return faults
    if kind in CALL_CONTROL and "data" in frame:
        # docs/protocol.md: call control data is at most MAX_CALL_DATA bytes (checked first), and nests at most
        # MAX_DEPTH deep. The frame may be sent with or without \u escapes (with, when it holds a surrogate).
        data = frame["data"]
        longest = len(dump(data).encode())
        shortest = longest if _has_surrogates(data) else len(dump(data, False).encode())
        if shortest > messages.MAX_CALL_DATA:
            return {"too-large"}
        if longest > messages.MAX_CALL_DATA:
            faults.add("too-large")
        if _depth(data) > messages.MAX_DEPTH:
            return faults | {"bad-message"}
    if kind == "call-request":
        return faults | ({"call-busy"} if to in BUSY else {"call-unavailable"})
    return faults | {"not-in-call"}  # the fuzzer never has a call


CONTACT_ANSWERS = frozenset({"contacts", "directory", "bad-message", "too-many", "rate-limited"})
"""What a contact frame may be answered with (docs/protocol.md, "Contacts"): its data is checked by the schema
alone, which this oracle does not repeat, so any of these is taken as documented."""


CALL_CONTROL = frozenset({"call-request", "call-accept", "call-reject", "hangup"})


def _depth(value: Any) -> int:
    """How deep `value` nests arrays and objects (a `Deep` says so itself), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Deep):
            deepest = max(deepest, level - 1 + item.depth)
        elif isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def answers_to(value: Any) -> frozenset[str]:
    """What the server may answer to the JSON `value`, sent by the fuzzer: error codes, or `call-unavailable` /
    `call-busy` for the documented answers to a valid call-request."""
    allowed = _answers(_join_pairs(value))
    if _has_surrogates(_join_pairs(value)):
        allowed.add("bad-json")  # RFC 8259 8.2: a lone surrogate may be refused
    return frozenset(allowed)


def answers_to_text(text: str) -> frozenset[str]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        # Not JSON. The server validates while it parses, so a frame that shows a wrong type before it stops
        # being JSON (`0:`, `[1,`, `{"type":5,`) has two faults and may be answered with either.
        return frozenset({"bad-json", "bad-message"})
    allowed = set(answers_to(value))
    if re.search(r"NaN|Infinity|\\u[dD][89a-fA-F]", text):
        allowed.add("bad-json")  # Python's json reads these; RFC 8259 JSON has no NaN, and lone surrogates are moot
    return frozenset(allowed)


@dataclass(frozen=True)
class Frame:
    """One frame for the fuzzer to send, and the answers the protocol allows for it."""

    payload: str | bytes
    allowed: frozenset[str]

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 300 else self.payload[:300]
        more = "" if len(self.payload) <= 300 else f"... ({len(self.payload)} in all)"
        return f"Frame({shown!r}{more}, allowed={sorted(self.allowed)})"


def wire(value: Any, ascii_only: bool = False) -> str:
    """`value` as JSON text that can be sent: a surrogate cannot be sent unescaped."""
    return dump(value, ascii_only or _has_surrogates(value))


def json_frame(value: Any, ascii_only: bool = True) -> Frame:
    text = wire(value, ascii_only)
    allowed = frozenset({"too-large"}) if len(text.encode()) > LIMIT else answers_to(value)
    return Frame(text, allowed)


def text_frame(text: str) -> Frame:
    return Frame(text, answers_to_text(text))


def binary_frame(data: bytes) -> Frame:
    return Frame(data, frozenset({"bad-message", "too-large"} if len(data) > LIMIT else {"bad-message"}))


def classify(segment: list[dict[str, Any]]) -> str:
    """Name the answer to one frame: an error code, `call-unavailable`, `call-busy`, or what went wrong."""
    kinds = [m.get("type") for m in segment]
    if kinds == ["error"]:
        return str(segment[0]["code"])
    if kinds in (["contacts"], ["directory"]):
        return str(kinds[0])
    if kinds == ["error", "call-ended"]:
        error, ended = segment
        if (
            error["code"] == "unavailable"
            and (ended["outcome"], ended["reason"]) == ("unavailable", "user-unavailable")
            and error.get("callId") == ended["callId"]
        ):
            return "call-unavailable"
    if kinds == ["call-ringing", "call-reject", "call-ended"]:
        ringing, reject, ended = segment
        if (
            ringing["to"] in BUSY
            and reject["from"] == ringing["to"]
            and reject.get("data") == {"reason": "busy"}
            and (ended["outcome"], ended["reason"]) == ("busy", "user-busy")
            and ringing["callId"] == reject["callId"] == ended["callId"]
        ):
            return "call-busy"
    return f"{len(segment)} frames: {kinds}"


def echoes_ok(error: dict[str, Any], frame: Frame, label: str) -> bool:
    """`ref`, `to` and `callId` in an error repeat what the frame said (callId: or the call's own id)."""
    try:
        value = json.loads(frame.payload) if isinstance(frame.payload, str) else None
    except (ValueError, RecursionError):
        value = None
    sent = value if isinstance(value, dict) else {}
    if "ref" in error and error["ref"] != shorten(str(sent.get("type"))):  # cut to 64 characters with an ellipsis
        return False
    if "to" in error and error["to"] != sent.get("to"):
        return False
    return "callId" not in error or label == "call-unavailable" or error["callId"] == sent.get("callId")


# ---------------------------------------------------------------------------------------------- the harness


def _setup_presence(text: str | bytes) -> bool:
    """A late presence frame about alice or bob arriving (the fuzzer's user is online before them, and no one's
    presence changes afterwards): not caused by the fuzzer, so the listeners skip it."""
    msg = json.loads(text)
    return msg.get("type") == "presence" and FUZZER not in _strings(msg)


@dataclass(frozen=True)
class Mark:
    sent: dict[str, int]
    log: int


class Harness:
    """The module's server, and an event loop in a thread that runs alice and bob's call and the fuzzer."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()
        self.call_id = ""
        self.sent = {"ab": 0, "ba": 0}  # candidates sent alice->bob, bob->alice
        self.got = {"ab": 0, "ba": 0}  # ...and received, in order
        self.anomalies: list[str] = []
        self.clients: list[Client] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.fuzz: Client | None = None
        self.probes = itertools.count(1)
        self.progress = asyncio.Event()  # set whenever a candidate arrives

    def run(self, coro: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def connect(self, user: str, device: str) -> Client:
        # No keepalive pings from this side: websockets draws their payload from the global `random`, which
        # hypothesis, generating in the other thread, would take for a strategy using `random` (the server's pings
        # keep the connections checked).
        url = f"{self.srv.ws}?id={user}&device={device}"
        ws = await websockets.connect(url, open_timeout=TIMEOUT, ping_interval=None)
        client = Client(ws, user)
        self.clients.append(client)
        client.welcome = await client.expect(type="welcome")
        return client

    # alice and bob ------------------------------------------------------------------------------------

    async def start(self) -> None:
        # The fuzzer's user comes first and stays online through an anchor connection that sends nothing, so
        # that alice and bob never see its presence change, even when a fuzz connection gets closed. Presence
        # may come in batches, late: wait until the anchor has seen both arrive, so that none is still on its
        # way when the fuzz connection opens.
        anchor = await self.connect(FUZZER, "anchor")
        alice = await self.connect(ALICE, "a")
        bob = await self.connect(BOB, "b")
        await self._seen_online(anchor, {ALICE, BOB})
        await alice.send({"type": "call-request", "to": BOB})
        self.call_id = (await alice.expect(type="call-ringing", to=BOB))["callId"]
        await bob.expect(type="call-request", callId=self.call_id)
        await bob.send({"type": "call-accept", "to": ALICE})
        await alice.expect(type="call-accept", callId=self.call_id)
        self.fuzz = await self.connect(FUZZER, "main")
        self.tasks = [
            asyncio.ensure_future(coro)
            for coro in (
                self._talk(alice, BOB, "ab"),
                self._talk(bob, ALICE, "ba"),
                self._listen(bob, ALICE, "ab"),
                self._listen(alice, BOB, "ba"),
                self._listen(anchor, "", ""),
            )
        ]

    @staticmethod
    async def _seen_online(client: Client, users: set[str]) -> None:
        """Read `client`'s frames until presence has said that all of `users` are online (one change a frame, or
        several in `changes`)."""
        waiting = set(users)
        async with asyncio.timeout(TIMEOUT):
            while waiting:
                msg = await client.recv()
                if msg["type"] == "presence":
                    waiting -= {c["id"] for c in msg.get("changes", [msg]) if c["status"] == "online"}

    @staticmethod
    def candidate(direction: str, n: int) -> dict[str, Any] | None:
        if n % 50 == 49:
            return None  # end of candidates, now and then
        return {
            "candidate": f"candidate:{n} 1 udp 2122260223 127.0.0.1 {40000 + n % 20000} typ host",
            "sdpMid": "0",
            "sdpMLineIndex": n % 2,
            "usernameFragment": direction,
        }

    def anomaly(self, what: str) -> None:
        if len(self.anomalies) < 20:
            self.anomalies.append(what)

    async def _talk(self, client: Client, peer: str, direction: str) -> None:
        try:
            for n in itertools.count():
                if self.stopping:
                    return
                frame: dict[str, Any] = {"type": "candidate", "to": peer, "data": self.candidate(direction, n)}
                if n % 2:
                    frame["callId"] = self.call_id
                await client.send(frame)
                self.sent[direction] = n + 1
                await asyncio.sleep(PACE)
        except websockets.ConnectionClosed as exc:
            if not self.stopping:
                self.anomaly(f"{client.id} could not send: {exc!r}")

    async def _listen(self, client: Client, peer: str, direction: str) -> None:
        try:
            async for text in client.ws:
                if _setup_presence(text):
                    continue
                if not direction and json.loads(text).get("type") == "contacts":
                    continue  # the fuzzer's contact frames update every device of its user: this one too
                if not direction:
                    self.anomaly(f"the fuzzer's idle connection received {text[:300]!r}")
                    continue
                n = self.got[direction]
                want = {
                    "type": "candidate",
                    "from": peer,
                    "to": client.id,
                    "callId": self.call_id,
                    "data": self.candidate(direction, n),
                }
                try:
                    check_server_frame(text)
                    ok = json.loads(text) == want
                except msgspec.ValidationError:
                    ok = False
                if ok:
                    self.got[direction] = n + 1
                    self.progress.set()
                else:
                    self.anomaly(f"{client.id} received {text[:300]!r}; expected candidate #{n}: {json.dumps(want)}")
        except websockets.ConnectionClosed:
            pass
        if not self.stopping:
            self.anomaly(f"{client.id}'s connection closed: {client.ws.close_code} {client.ws.close_reason}")

    async def _until(self, done: Callable[[], bool], what: str) -> None:
        deadline = self.loop.time() + TIMEOUT
        while not done():
            self.progress.clear()
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting until {what}: sent {self.sent}, received {self.got}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)

    # the fuzzer ---------------------------------------------------------------------------------------

    async def exchange(self, frames: list[Frame]) -> list[list[dict[str, Any]]]:
        """Send each frame followed by a probe; return what came back for each frame, cut at the probes."""
        if self.fuzz is None or self.fuzz.ws.close_code is not None:
            self.fuzz = await self.connect(FUZZER, "main")  # the last example closed it; start clean
        ws = self.fuzz.ws
        probes: list[str] = []
        segments: list[list[dict[str, Any]]] = [[] for _ in frames]
        i = 0
        try:
            for frame in frames:
                probes.append(f"fuzz-probe-{next(self.probes)}")
                await ws.send(frame.payload)
                await ws.send(json.dumps({"type": probes[-1]}))
            while i < len(frames):
                text = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)
                try:
                    check_server_frame(text)
                except msgspec.ValidationError as exc:
                    raise AssertionError(
                        f"not a valid server frame ({exc}): {text[:500]!r}, after {frames[i]}"
                    ) from None
                msg = json.loads(text)
                if msg.get("type") == "error" and msg.get("code") == "unknown-type" and msg.get("ref") == probes[i]:
                    i += 1
                elif not _setup_presence(text):  # presence of alice and bob (their call, say) is no answer
                    segments[i].append(msg)
        except websockets.ConnectionClosed:
            where = frames[i] if i < len(frames) else "the last probe"
            raise AssertionError(
                f"the fuzz connection was closed ({ws.close_code} {ws.close_reason!r}) after {where}"
            ) from None
        return segments

    def check(self, frames: list[Frame]) -> None:
        """Send `frames`; each must get exactly one answer the protocol allows for it."""
        segments = self.run(self.exchange(frames))
        wrong: list[str] = []
        for frame, segment in zip(frames, segments, strict=True):
            label = classify(segment)
            errors = [m for m in segment if m["type"] == "error"]
            if not all(m["code"] in DOCUMENTED for m in errors):
                wrong.append(f"{frame} was answered with an undocumented code: {segment}")
            elif label not in frame.allowed:
                wrong.append(f"{frame} was answered {segment} ({label})")
            elif not all(echoes_ok(m, frame, label) for m in errors):
                wrong.append(f"{frame}: the error echoes what the frame did not say: {segment}")
        assert not wrong, f"{len(wrong)} of {len(frames)} frames were answered wrongly:\n" + "\n".join(wrong[:20])

    async def hard_limit(self, payload: str | bytes) -> tuple[int | None, list[str]]:
        """Send one oversized frame on a connection of its own; its close code, and any frames it received."""
        client = await self.connect(FUZZER, "big")
        received: list[str] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            await client.ws.send(payload)
            async with asyncio.timeout(REPLY_TIMEOUT):
                async for text in client.ws:
                    received.append(str(text)[:300])
        return client.ws.close_code, received

    # every test ends with this ------------------------------------------------------------------------

    def mark(self) -> Mark:
        return Mark(dict(self.sent), len(self.srv.lines))

    def check_healthy(self, mark: Mark) -> None:
        """alice and bob talked on during the test and got every candidate in order; nothing else reached
        them; the fuzz connection answers; the server is alive, healthy and logged no traceback."""

        async def settle() -> None:
            target = {d: max(n, mark.sent[d] + 1) for d, n in self.sent.items()}
            await self._until(lambda: all(self.got[d] >= target[d] for d in target), f"{target} candidates arrived")
            await self.exchange([])  # reconnects the fuzz connection if the last example closed it
            assert self.fuzz is not None
            await self.fuzz.send({"type": "fuzz-probe-final"})
            while (final := await self.fuzz.recv()).get("type") == "presence":  # alice and bob's, as in exchange()
                pass
            assert final.get("ref") == "fuzz-probe-final", final

        self.run(settle())
        assert not self.anomalies, "\n".join(self.anomalies)
        assert self.srv.proc.poll() is None, self.srv.log()
        assert httpx.get(f"{self.srv.http}/healthz", timeout=TIMEOUT).status_code == 200
        logged = self.srv.lines[mark.log :]
        assert not [line for line in logged if "Traceback" in line or " ERROR " in line], "\n".join(logged)

    def shutdown(self) -> None:
        async def stop() -> None:
            self.stopping = True
            for client in self.clients:
                await client.close()
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=TIMEOUT)
            for task in self.tasks:
                task.cancel()

        try:
            self.run(stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@contextlib.contextmanager
def _harness(transport: str) -> Iterator[Harness]:
    """A server with alice and bob in a call trickling candidates, and the fuzzer online."""
    with run_server(
        PEERCALL_RATE_LIMIT="100000",
        PEERCALL_RATE_BURST="100000",
        PEERCALL_CALL_RATE="100000",  # call-requests per user and minute: the fuzzer sends thousands
        PEERCALL_MAX_MESSAGE_SIZE=str(LIMIT),
        PEERCALL_LOG_LEVEL="warning",  # errors and tracebacks still show; routine lines would be thousands
        PEERCALL_ACCESS_LOG="false",
        **TRANSPORTS[transport],
    ) as srv:
        h = Harness(srv)
        try:
            h.run(h.start())
            yield h
        finally:
            h.shutdown()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """One server for the module (picows), with alice and bob in a call, and the fuzzer online."""
    with _harness("picows") as h:
        yield h


@pytest.fixture(scope="module")
def deflate_harness() -> Iterator[Harness]:
    """The same on the ASGI transport (per-message deflate), for the tests of the session's frame rules."""
    with _harness("deflate") as h:
        yield h


@pytest.fixture(params=list(TRANSPORTS))
def rules_harness(request: pytest.FixtureRequest) -> Harness:
    """`harness` and `deflate_harness` in turn: the frame rules (size, binary, hard limit) hold on both transports."""
    return request.getfixturevalue("harness" if request.param == "picows" else "deflate_harness")  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------- strategies

ID_CHARS = string.ascii_letters + string.digits + "_.@-"
SPECIAL = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\ufeff",
    "\u2028",
    "😀",
    "👩\u200d👩\u200d👧",
    "\U0010ffff",
    "\ud800",  # lone surrogates (sent escaped)
    "\udfff",
    "\ud83d",
    '"',
    "\\",
]
BAD_IDS = [
    "",
    " ",
    "x" * 65,
    "bo b",
    "bob ",
    " bob",
    "bob\n",
    "bob\r\n",
    "\nbob",
    "bob\u200b",
    "bob\x00",
    "\u0430lice",  # Cyrillic a
    "\uff42\uff4f\uff42",  # fullwidth bob
    "b\u202eob",
    "😀",
    "bob/x",
    "alice\t",
    "ALICE?",
]
GOOD_IDS = [ALICE, BOB, FUZZER, "nobody", "carol", "x" * 64, "a", "A.b_c-d@e"]
HUGE = [
    Num("1e400", math.inf),
    Num("-1e400", -math.inf),
    Num("1e-400", 0.0),
    Num("-0", 0),
    Num("-0.0", -0.0),
    Num("0E0", 0.0),
    Num(str(2**200), 2**200),
    Num(str(-(2**200)), -(2**200)),
    Num(str(2**64), 2**64),
    Num("1" + "0" * 400, 10**400),
]
FIELDS = ["type", "to", "from", "callId", "data", "sdp", "candidate", "sdpMid", "sdpMLineIndex", "reason", "polite"]
SDP = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
DATA = [
    {"type": "offer", "sdp": SDP},
    {"type": "answer", "sdp": SDP},
    {"type": "pranswer", "sdp": ""},
    {"type": "rollback", "sdp": SDP},
    {"type": "offer"},
    {"sdp": SDP},
    {"type": "offer", "sdp": 1},
    {"type": ["offer"], "sdp": SDP},
    {"type": "offer", "sdp": SDP, "extra": [1, 2]},
    SDP,
    CANDIDATE,
    {"candidate": ""},
    {"candidate": 1},
    {"candidate": "c", "sdpMLineIndex": -1},
    {"candidate": "c", "sdpMLineIndex": 1.5},
    {"candidate": "c", "sdpMLineIndex": True},
    {"candidate": "c", "sdpMLineIndex": Num("1e400", math.inf)},
    {"candidate": "c", "sdpMLineIndex": Num(str(2**200), 2**200)},
    {"candidate": "c", "sdpMLineIndex": Num("-0", 0)},
    {"candidate": "c", "sdpMid": 0},
    {"candidate": "c", "usernameFragment": []},
    {"reason": "busy"},
    {"reason": "ice-failed"},
    {"reason": 5},
    {"reason": "no-such-reason"},
    {},
    [],
    None,
    0,
]
VALID_DATA = {
    "offer": {"type": "offer", "sdp": SDP},
    "answer": {"type": "answer", "sdp": SDP},
    "candidate": CANDIDATE,
}

chars = st.one_of(st.characters(), st.characters(categories=["Cs"]))  # st.characters() alone has no surrogates
strings = st.one_of(
    st.text(chars, max_size=20),
    st.sampled_from(SPECIAL + BAD_IDS + GOOD_IDS + list(TYPES)),
    st.text(ID_CHARS, min_size=1, max_size=66),
)
numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(HUGE))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, strings),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | strings, inner, max_size=4),
    max_leaves=12,
)
types = st.one_of(st.sampled_from(TYPES), strings, json_values)
BAD_CHARS = " \n\r\t\x0b\x0c\x00\x85\u2028\u200b\u200f\u0430\uff42/:?#%+=&\u00e9\U0001f600\ud800"


def _spoil(valid: str, bad: str, where: str) -> str:
    """`valid` with the character `bad` added at its start, its end, or in its middle."""
    middle = len(valid) // 2
    return {"start": bad + valid, "end": valid + bad, "middle": valid[:middle] + bad + valid[middle:]}[where]


valid_ids = st.one_of(st.sampled_from(GOOD_IDS), st.text(ID_CHARS, min_size=1, max_size=63))
wrong_ids = st.one_of(  # well-typed, wrong value: each has exactly one thing wrong with it
    st.sampled_from([*BAD_IDS, FUZZER]),  # FUZZER: a frame to yourself
    st.builds(
        _spoil,
        valid_ids,
        st.sampled_from(" \n\r\t\x00") | st.sampled_from(BAD_CHARS),  # whitespace: regex anchors, strip()
        st.sampled_from(["start", "end", "middle"]),
    ),
    st.text(ID_CHARS, min_size=65, max_size=70),
)
tos = st.one_of(st.sampled_from(GOOD_IDS), wrong_ids, st.text(ID_CHARS, max_size=66), json_values)
froms = st.one_of(st.sampled_from([FUZZER, ALICE, BOB, "nobody", "", f"{FUZZER}\n", FUZZER.upper()]), strings)
call_ids = st.one_of(
    st.sampled_from(["deadbeefdeadbeef", "x" * 128, "x" * 129, "", "\U0001f600" * 128, "\U0001f600" * 129, "\x00"]),
    st.text(chars, max_size=130),
)
datas = st.one_of(st.sampled_from(DATA), json_values)
envelopes = st.one_of(
    st.fixed_dictionaries(
        {"type": types, "to": tos}, optional={"from": froms, "callId": call_ids, "data": datas, "polite": json_values}
    ),
    st.fixed_dictionaries({}, optional={"type": types, "to": tos, "from": froms, "callId": call_ids, "data": datas}),
)
WRONG_VALUES = {  # per field: well-typed values, most of them wrong
    "type": st.one_of(strings, st.sampled_from(TYPES)),
    "to": st.one_of(wrong_ids, wrong_ids, st.sampled_from(GOOD_IDS)),
    "from": froms,
    "callId": call_ids,
    "data": st.sampled_from(DATA),
}


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame of a random type with one field removed, or set to a wrong value or a value of a wrong type."""
    kind = draw(st.sampled_from(TYPES))
    frame: dict[str, Any] = {"type": kind, "to": draw(st.sampled_from([*GOOD_IDS[3:], ALICE]))}
    if kind in VALID_DATA:
        frame["data"] = VALID_DATA[kind]
    field = draw(st.sampled_from(["type", "to", "to", "from", "callId", "data"]))  # `to` has the most rules
    how = draw(st.sampled_from(["remove", "value", "value", "type"]))
    if how == "remove":
        frame.pop(field, None)
    else:
        frame[field] = draw(WRONG_VALUES[field] if how == "value" else json_values)
    return frame


json_frames = st.builds(json_frame, json_values, st.booleans())
envelope_frames = st.builds(json_frame, st.one_of(envelopes, mutated(), mutated()), st.booleans())
JSONISH = '{}[]":,. -+0123456789eEtrufalsn\\u\x00'
HANDCRAFTED = [
    "",
    " ",
    "null",
    "[]",
    '""',
    "1e400",
    "-0",
    str(2**200),
    "NaN",
    '{"type":"hangup","to":"nobody","data":NaN}',
    '{"type":"hangup","to":"nobody","data":Infinity}',
    '\ufeff{"type":"hangup","to":"nobody"}',
    '{"type":"hangup","to":"nobody"} trailing',
    '{"type":"hangup","to":"nobody"}{}',
    '{"type":"hangup","to":"nobody",}',
    "{'type':'hangup','to':'nobody'}",
    '{"type":"hangup","to":"nobody","data":"a\x01b"}',
    '{"type":"\\ud800","to":"nobody"}',
    '{"type":"hangup","to":"nobody","data":"\\udc00"}',
    '{"type":"hangup","to":"nobody","\\ud800":1}',
    '{"type":"\\ud83d\\ude00","to":"nobody"}',
    '{"type":"hangup","type":"offer","to":"nobody"}',
    '{"type":"hangup","to":"nobody","to":"alice"}',
    ' \r\n\t{"type":"hangup","to":"nobody"}\n',
]
text_frames = st.builds(
    text_frame,
    st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=100),  # text frames cannot carry lone surrogates
        st.text(JSONISH, max_size=60),
        st.builds(lambda value, cut: dump(value)[:cut], envelopes, st.integers(0, 120)),
        st.sampled_from(HANDCRAFTED),
    ),
)
binary_frames = st.builds(
    binary_frame,
    st.one_of(st.binary(max_size=200), st.builds(lambda v: wire(v).encode(), envelopes)),
)


WRONG_TYPES: list[Any] = [None, 0, -1, 1.5, True, False, [], {}, [BOB], {"id": BOB}, *HUGE[:3], HUGE[6]]
WRONG_STRINGS: dict[str, list[Any]] = {
    "type": [
        "",
        "ring",
        "CALL-REQUEST",
        "call_request",
        "call-request ",
        "welcome",
        "error",
        "auth",
        "\u0441all-request",  # Cyrillic es
        "call\u2011request",  # non-breaking hyphen
        "hangup\x00",
        "x" * 10_000,
    ],
    "to": [
        *BAD_IDS,
        FUZZER,
        *(_spoil(BOB, bad, where) for bad in BAD_CHARS for where in ("start", "end", "middle")),
    ],
    "from": [FUZZER, ALICE, BOB, "nobody", "", f"{FUZZER}\n", f" {FUZZER}", FUZZER.upper(), "\uff46uzzer"],
    "callId": ["deadbeefdeadbeef", "x" * 128, "x" * 129, "", "\U0001f600" * 128, "\U0001f600" * 129, "\x00"],
    "data": DATA,
}


def every_field_wrong() -> list[Frame]:
    """For every client type: the valid frame, then each envelope field removed, or set to a value of each wrong
    type, or to each of a list of well-typed but wrong (or borderline valid) values."""
    frames: list[Frame] = []
    for kind in TYPES:
        base: dict[str, Any] = {"type": kind, "to": "nobody"}
        if kind in VALID_DATA:
            base["data"] = VALID_DATA[kind]
        frames.append(json_frame(base))
        for field, values in WRONG_STRINGS.items():
            frames.append(json_frame({k: v for k, v in base.items() if k != field}))
            frames += [json_frame({**base, field: value}) for value in [*WRONG_TYPES, *values]]
    return list({frame.payload: frame for frame in frames}.values())  # each once


# ------------------------------------------------------------------------------------------------- tests


def test_random_json_values_get_one_documented_answer_each(harness: Harness) -> None:
    """Random JSON values (nested lists/objects of strings, numbers, bools, null) get exactly one documented answer."""
    mark = harness.mark()

    @settings(FUZZ, max_examples=300, deadline=None)
    @given(st.lists(json_frames, min_size=1, max_size=10))
    def fuzz(frames: list[Frame]) -> None:
        harness.check(frames)

    fuzz()
    harness.check_healthy(mark)


def test_every_field_of_every_type_set_wrong_gets_one_documented_answer(harness: Harness) -> None:
    """Every client type with each envelope field removed, mistyped or wrong gets exactly one documented answer."""
    mark = harness.mark()
    harness.check(every_field_wrong())
    harness.check_healthy(mark)


def test_envelopes_with_wrong_fields_get_one_documented_answer_each(harness: Harness) -> None:
    """Envelopes with fields of wrong types or values get one documented error; valid ones their documented answer."""
    mark = harness.mark()

    @settings(FUZZ, max_examples=500, deadline=None)
    @given(st.lists(envelope_frames, min_size=1, max_size=10))
    def fuzz(frames: list[Frame]) -> None:
        harness.check(frames)

    fuzz()
    harness.check_healthy(mark)


def test_random_text_and_binary_frames_get_one_documented_error_each(rules_harness: Harness) -> None:
    """Random unicode text, near-JSON, truncated frames and binary frames each get exactly one documented error."""
    harness = rules_harness
    mark = harness.mark()

    @settings(FUZZ, max_examples=300, deadline=None)
    @given(st.lists(st.one_of(text_frames, binary_frames), min_size=1, max_size=10))
    def fuzz(frames: list[Frame]) -> None:
        harness.check(frames)

    fuzz()
    harness.check_healthy(mark)


def _sized(size: int, fill: str, shape: str) -> Frame:
    """A frame of exactly `size` UTF-8 bytes, padded with `fill`: a valid hangup or call-request, unterminated
    JSON, or a valid frame sent as binary."""
    head = {
        "hangup": '{"type":"hangup","to":"nobody","data":"',
        "call-request": '{"type":"call-request","to":"nobody","data":"',
        "bad-json": '{"type":"hangup","to":"nobody","data":"',
        "binary": '{"type":"hangup","to":"nobody","data":"',
    }[shape]
    tail = "" if shape == "bad-json" else '"}'
    room = size - len(head.encode()) - len(tail.encode())
    count = room // len(fill.encode())
    text = head + fill * count + "x" * (room - count * len(fill.encode())) + tail
    assert len(text.encode()) == size
    if shape == "binary":
        return binary_frame(text.encode())
    if size > LIMIT:
        return Frame(text, frozenset({"too-large"}))
    return Frame(text, answers_to_text(text))


def test_frames_around_the_size_limit_are_routed_or_refused_as_too_large(rules_harness: Harness) -> None:
    """Frames up to the size limit get their usual answer; larger ones up to the hard limit get `too-large`."""
    harness = rules_harness
    mark = harness.mark()

    @settings(FUZZ, max_examples=60, deadline=None)
    @given(
        size=st.one_of(
            st.integers(LIMIT - 200, LIMIT + 200), st.sampled_from([LIMIT, LIMIT + 1, 2 * LIMIT, HARD - 1, HARD])
        ),
        fill=st.sampled_from(["x", "é", "€", "😀", "\x00"]),
        shape=st.sampled_from(["hangup", "call-request", "bad-json", "binary"]),
    )
    @example(size=LIMIT, fill="😀", shape="hangup")  # 4 bytes a character: under the limit by bytes, not by len*4
    @example(size=LIMIT + 1, fill="😀", shape="hangup")
    @example(size=LIMIT + 1, fill="x", shape="bad-json")
    @example(size=HARD, fill="x", shape="hangup")  # the largest frame the server reads at all
    def fuzz(size: int, fill: str, shape: str) -> None:
        harness.check([_sized(size, fill, shape)])

    fuzz()
    harness.check_healthy(mark)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_a_frame_over_the_hard_limit_closes_its_connection_with_1009(rules_harness: Harness, binary: bool) -> None:
    """A frame above the hard limit closes its own connection with 1009, and nothing else."""
    harness = rules_harness
    mark = harness.mark()
    frame = _sized(HARD + 1, "x", "hangup").payload
    assert isinstance(frame, str)
    code, received = harness.run(harness.hard_limit(frame.encode() if binary else frame))
    assert (code, received) == (1009, [])
    harness.check_healthy(mark)


def _deep_frame(depth: int, kind: str, where: str) -> Frame:
    deep = Deep(depth, kind)
    frame: Any = {
        "top": deep,
        "type": {"type": deep, "to": "nobody"},
        "to": {"type": "hangup", "to": deep},
        "callId": {"type": "hangup", "to": "nobody", "callId": deep},
        "extra": {"type": "hangup", "to": "nobody", "extra": deep},
        "hangup-data": {"type": "hangup", "to": "nobody", "data": deep},
        "request-data": {"type": "call-request", "to": "nobody", "data": deep},
        "candidate-data": {"type": "candidate", "to": "nobody", "data": deep},
    }[where]
    out = json_frame(frame)
    # docs/protocol.md: outside call control data (which `answers_to` checks) nesting is the frame's own business up
    # to about 1,000 levels, where msgspec refuses it
    if depth >= MAX_DEPTH:
        out = Frame(out.payload, out.allowed | {"bad-message"})
    return out


MAX_DEPTH = 900


def test_deeply_nested_frames_get_one_documented_answer(harness: Harness) -> None:
    """Arrays and objects nested up to 10,000 deep, anywhere in a frame, get one documented answer each."""
    mark = harness.mark()

    @settings(FUZZ, max_examples=60, deadline=None)
    @given(
        depth=st.one_of(st.integers(1, 10_000), st.sampled_from([999, 1000, 1001, 10_000])),
        kind=st.sampled_from(["array", "object", "mixed"]),
        where=st.sampled_from(
            ["top", "type", "to", "callId", "extra", "hangup-data", "request-data", "candidate-data"]
        ),
    )
    @example(depth=10_000, kind="array", where="top")
    @example(depth=10_000, kind="object", where="top")
    @example(depth=10_000, kind="array", where="hangup-data")
    @example(depth=10_000, kind="object", where="extra")
    def fuzz(depth: int, kind: str, where: str) -> None:
        harness.check([_deep_frame(depth, kind, where)])

    fuzz()
    harness.check_healthy(mark)


# ------------------------------------------------------------------------------- control and continuation frames
#
# Raw frames on a connection of their own (the fuzzer's user, device `raw`): random opcodes (the reserved ones too),
# RSV bits, FIN, control frames of any size, close codes and reasons, and fragmented messages with control frames
# between their fragments. The oracle is a small model of RFC 6455 5.2-5.5 and 7.4: the close code the server must
# fail the connection with (or none), and the answers it owes (a pong per ping, an answer per whole message) in order.
# Answers may be cut short only by the close of a failed connection; a sequence that does not fail gets all of them
# and then has its own close echoed.

_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


@dataclass(frozen=True)
class RawFrame:
    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0

    def wire(self) -> bytes:
        from tests.integration.test_ws_stack import client_frame

        data = client_frame(self.opcode, self.payload, self.fin)
        return bytes([data[0] | self.rsv]) + data[1:]


def _model(frames: list[RawFrame]) -> tuple[int | None, bool, list[tuple[str, bytes]], bool]:
    """(the close code the server must send: 1002 or 1007 to fail the connection (-1: either), the client's own to
    echo its close (0 for an empty one), None if the connection stays open; whether it fails; the answers owed
    before that, in order; whether the code is the client's own, echoed: a client may close with 1002 or 1007 too)."""
    owed: list[tuple[str, bytes]] = []
    message: list[Any] | None = None  # [opcode, payload]
    for f in frames:
        if f.opcode == 8 and f.rsv and len(f.payload) > 2 and not_utf8(f.payload[2:]):
            return -1, True, owed, False  # two faults: picows's parser finds the reason's first (1007)
        if f.opcode not in (0, 1, 2, 8, 9, 10) or f.rsv:
            return 1002, True, owed, False
        if f.opcode >= 8:
            if len(f.payload) > 125 or not f.fin:
                return 1002, True, owed, False
            if f.opcode == 9:
                owed.append(("pong", f.payload))
            elif f.opcode == 8:
                if len(f.payload) == 1:
                    return 1002, True, owed, False
                if len(f.payload) >= 2:
                    code = int.from_bytes(f.payload[:2], "big")
                    try:
                        f.payload[2:].decode()
                    except UnicodeDecodeError:  # and if the code is wrong too, 1002 is as right
                        return 1007 if code in _VALID_CLOSE or 3000 <= code < 5000 else -1, True, owed, False
                    if not (code in _VALID_CLOSE or 3000 <= code < 5000):
                        return 1002, True, owed, False
                    return code, message is not None, owed, True  # a clean close: echoed
                return 0, message is not None, owed, True
            continue
        if f.opcode == 0:
            if message is None:
                return 1002, True, owed, False
            message[1] += f.payload
        else:
            if message is not None:
                return 1002, True, owed, False
            message = [f.opcode, f.payload]
        if f.fin:
            kind, payload = message
            message = None
            if kind == 1:
                try:
                    payload.decode()
                except UnicodeDecodeError:
                    return 1007, True, owed, False
            owed.append(("answer", b""))  # one error frame: unknown-type, bad-message or the like
    return None, message is not None, owed, False  # (here: whether a message is left unfinished)


@st.composite
def raw_sequences(draw: st.DrawFn) -> list[RawFrame]:
    """Mostly well-formed steps (whole and fragmented probes, pings and pongs between fragments), with now and
    then a frame with anything wrong: a reserved opcode, RSV bits, no FIN on a control frame, a long control
    frame, a stray continuation, a close with any code and reason."""
    frames: list[RawFrame] = []
    for _ in range(draw(st.integers(1, 6))):
        step = draw(st.sampled_from(["probe", "fragments", "ping", "pong", "binary", "wrong", "close"]))
        payload = draw(st.binary(max_size=125))
        if step == "probe" or step == "fragments":
            text = json.dumps({"type": f"fuzz-raw-{draw(st.integers(0, 10**6))}"}).encode()
            cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4 if step == "fragments" else 0)))
            parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            for i, part in enumerate(parts):
                frames.append(RawFrame(1 if i == 0 else 0, part, fin=i == len(parts) - 1))
                if i < len(parts) - 1 and draw(st.booleans()):
                    frames.append(RawFrame(draw(st.sampled_from([9, 10])), draw(st.binary(max_size=20))))
        elif step == "ping":
            frames.append(RawFrame(9, payload))
        elif step == "pong":
            frames.append(RawFrame(10, payload))
        elif step == "binary":
            frames.append(RawFrame(2, payload, fin=draw(st.booleans())))
        elif step == "close":
            code = draw(
                st.one_of(
                    st.sampled_from(sorted(_VALID_CLOSE | {0, 999, 1004, 1005, 1006, 1015, 3000, 4999, 5000})),
                    st.integers(0, 65535),
                )
            )
            reason = draw(st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=20)))
            frames.append(RawFrame(8, code.to_bytes(2, "big") + reason[:123]))
        else:
            frames.append(
                RawFrame(
                    draw(st.integers(0, 15)),
                    draw(st.binary(max_size=140)),
                    fin=draw(st.booleans()),
                    rsv=draw(st.sampled_from([0, 0x10, 0x20, 0x40])),
                )
            )
    return frames


def _raw_exchange(srv: ServerProcess, frames: list[RawFrame]) -> None:
    """Send `frames` in one write on a fresh connection and check what comes back against `_model`."""
    from tests.integration.test_ws_stack import Raw, head

    expected, fails, owed, echoed = _model(frames)
    ours = False
    raw = Raw(srv)
    raw.sock.settimeout(REPLY_TIMEOUT)
    got: list[tuple[str, bytes]] = []
    closed_with: int | None = None
    try:
        raw.upgrade(head(srv, f"/ws?id={FUZZER}&device=raw"))
        raw.sock.sendall(b"".join(f.wire() for f in frames))
        while True:
            if expected is None and len(got) == len(owed):  # all answered: now our close
                raw.sock.sendall(RawFrame(8, (1000).to_bytes(2, "big")).wire())
                expected, ours = 1000, True
            try:
                opcode, payload = raw.frame()
            except (AssertionError, ConnectionResetError):  # AssertionError: "closed"
                break
            if opcode == 10:
                got.append(("pong", payload))
            elif opcode == 1:
                msg = json.loads(payload)
                if msg["type"] == "presence":
                    continue
                assert msg["type"] == "error", msg
                got.append(("answer", b""))
            elif opcode == 8:
                closed_with = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                with contextlib.suppress(OSError, AssertionError):  # answer it, as a client does, and see it end
                    raw.sock.sendall(RawFrame(8, (1000).to_bytes(2, "big")).wire())
                    assert raw.read_until_closed() is not None
                break
            else:
                raise AssertionError(f"unexpected opcode {opcode} after {frames}")
    finally:
        raw.close()
    context = f"sent {frames}\ngot {got}, close {closed_with}"
    if expected == 0:  # an empty close: answered with none or 1000
        assert closed_with in (1000, 1005), context
    elif fails and (echoed or ours):  # a close (the client's, or ours) in the middle of a message: websockets fails
        assert closed_with in (expected, 1002), context  # the message (1002), picows echoes the close (any code)
    else:
        assert closed_with in ((1002, 1007) if expected == -1 else (expected,)), context
    # Pongs in the order of their pings, answers in the order of their messages (a pong may overtake an answer: the
    # ASGI transport's protocol writes it before the app has read the message).
    for kind in (("pong",), ("answer",)):
        mine, due = [g for g in got if g[0] in kind], [o for o in owed if o[0] in kind]
        if ours:  # we closed after every answer had come
            assert mine == due, context
        else:  # a failure, or a close in the same write (which ASGI answers at once), may cut them short
            assert mine == due[: len(mine)], context


def test_random_control_and_continuation_frames_follow_rfc_6455(rules_harness: Harness) -> None:
    """Random opcodes, RSV bits, control frames and fragment sequences: the connection fails with the code RFC 6455
    asks (1002, 1007) or closes cleanly, its pings and messages are answered in order until then, and alice and
    bob talk on meanwhile."""
    harness = rules_harness
    mark = harness.mark()

    @settings(FUZZ, max_examples=80, deadline=None)
    @given(raw_sequences())
    # a ping after a message that fails the connection is not answered (the ASGI transport answered it: websockets
    # had queued the pongs of the whole read, and the first ping's event wrote them all)
    @example([RawFrame(9, b"a"), RawFrame(1, b"\x80"), RawFrame(1, b'{"type":"fuzz-raw-1"}'), RawFrame(9, b"b")])
    @example([RawFrame(9, b"a"), RawFrame(9, b"b"), RawFrame(8, (1000).to_bytes(2, "big"))])  # pongs, then the echo
    # a client's own close with 1007 in the middle of a message: echoed, or the message failed (1002), as any code
    @example([RawFrame(2, b"", fin=False), RawFrame(9, b""), RawFrame(8, (1007).to_bytes(2, "big"))])
    # the first error fails the connection, though a later frame of the same read is refused by picows's parser, which
    # reads one frame ahead (here 1007 for the close's reason, where the new message inside the binary one is 1002)
    @example(
        [
            RawFrame(2, b"", fin=False),
            RawFrame(9, b""),
            RawFrame(1, b'{"type": "fuzz-raw-0"}'),
            RawFrame(8, b"\x00\x00\x80"),
        ]
    )
    # a text message that is not UTF-8 (1007), then a frame that websockets's parser refuses in the same read (1002):
    # the ASGI transport checks the UTF-8 as websockets parses the frame, before the next (ws.py, `_Parser`)
    @example([RawFrame(1, b"\x80"), RawFrame(9, b"", fin=False)])
    @example([RawFrame(1, b"\xff", fin=False), RawFrame(9, b"a"), RawFrame(0, b"}"), RawFrame(8, b"\x03\xe7")])
    def fuzz(frames: list[RawFrame]) -> None:
        _raw_exchange(harness.srv, frames)

    fuzz()
    harness.check_healthy(mark)


_NOT_UTF8 = RawFrame(1, b"\x80")
_FIRST_ERROR_FIRST = {
    "new-message-then-bad-reason": [RawFrame(2, b"", fin=False), RawFrame(1, b"{}"), RawFrame(8, b"\x00\x00\x80")],
    "stray-continuation-then-bad-reason": [RawFrame(0, b"x"), RawFrame(8, b"\x03\xe8\xff")],
    "reserved-bits-then-bad-reason": [RawFrame(1, b"{}", rsv=0x40), RawFrame(8, b"\x03\xe8\xff")],
    "not-utf8-then-reserved-opcode": [_NOT_UTF8, RawFrame(3, b"")],
    "not-utf8-then-bad-close-code": [_NOT_UTF8, RawFrame(8, (999).to_bytes(2, "big"))],
    "not-utf8-then-long-ping": [_NOT_UTF8, RawFrame(9, b"x" * 126)],
    "not-utf8-then-fragmented-ping": [_NOT_UTF8, RawFrame(9, b"", fin=False)],
    # a character split across the frames (valid), a ping between them, then a byte that is not UTF-8 in the last
    "fragments-not-utf8-then-reserved-opcode": [
        RawFrame(1, b'{"type":"\xc3', fin=False),
        RawFrame(9, b"p"),
        RawFrame(0, b'\xa9\xff"}'),
        RawFrame(3, b""),
    ],
    # the first fragment is not UTF-8, but the message's UTF-8 is checked at its end: the new message is first (1002)
    "fragment-not-utf8-then-new-message": [RawFrame(1, b"\x80", fin=False), RawFrame(1, b"{}"), RawFrame(3, b"")],
    "message-then-bad-reason": [RawFrame(1, b'{"type":"fuzz-raw-2"}'), RawFrame(8, b"\x03\xe8\xff")],
}
"""Two errors in one write, the second one that the transport's frame parser finds (picows's, or websockets's) and
the first one that peercall finds as the frame is handed over (a text message's UTF-8: on the ASGI transport,
checked in the `websockets` parser's `recv_frame`, ws.py's `_Parser`): the connection fails with the first's code."""


@pytest.mark.parametrize("case", list(_FIRST_ERROR_FIRST))
def test_a_connection_fails_on_its_first_error_in_a_read(rules_harness: Harness, case: str) -> None:
    _raw_exchange(rules_harness.srv, _FIRST_ERROR_FIRST[case])
