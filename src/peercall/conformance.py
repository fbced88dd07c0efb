"""Protocol conformance suite: drives any server that implements docs/protocol.md through every call outcome
with raw WebSocket clients, and says which rules hold.

    peercall conformance ws://127.0.0.1:8080/ws            # all scenarios
    peercall conformance ws://127.0.0.1:8080/ws -k glare   # those whose name contains "glare"
    peercall conformance ws://node1:8080/ws ws://node2:8080/ws ws://node3:8080/ws    # a cluster

Given several URLs (the nodes of one cluster), each scenario spreads its connections over them in turn: the
caller on the first, the callee on the second, a third user or device on the next… and a user who connects
again (another device, a reconnect) on another node than its previous connection, so that every outcome is
exercised across nodes.

The missed-call and resume scenarios wait for the server's ring timeout and resume grace (from `welcome`); they
are skipped, and say so, when those are longer than `--max-wait` seconds. Run the server under test with short
ones (`PEERCALL_RING_TIMEOUT=2 PEERCALL_RESUME_GRACE=2`) to cover them. Each scenario uses ids of its own, so
the suite can run against a server that others use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec
import websockets

from .protocol.schema import check_server_frame

TIMEOUT = 5.0
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


class Failure(AssertionError):
    """A rule of the protocol did not hold."""


class Skip(Exception):
    """The scenario cannot run against this server as configured."""


class Peer:
    """One raw WebSocket connection, with helpers to wait for frames."""

    def __init__(self, ws: websockets.ClientConnection, user: str, welcome: dict[str, Any], where: str = "") -> None:
        self.ws = ws
        self.user = user
        self.welcome = welcome
        self.where = where  # "" with one server; " (on server 2)" when a scenario spreads over several
        self.seen: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def expect(self, type: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:  # noqa: ASYNC109
        """The next frame of `type` with all `fields` (other frames are kept in `seen` and skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(self.ws.recv(), max(left, 0.001))
                check_server_frame(raw)
                message = json.loads(raw)
            except msgspec.ValidationError as exc:
                raise Failure(
                    f"{self.user}{self.where} got a frame that does not match the protocol schema ({exc}): {raw!r}"
                ) from None
            except TimeoutError:
                want = ", ".join(f"{k}={v!r}" for k, v in fields.items())
                raise Failure(
                    f"{self.user}{self.where} got no {type} ({want}) within {timeout}s; saw {self.seen[-5:]}"
                ) from None
            except websockets.ConnectionClosed as exc:
                raise Failure(f"{self.user}{self.where}'s connection closed while waiting for {type}: {exc}") from None
            self.seen.append(message)
            # A presence frame may carry several changes; each is matched as if it came alone.
            for candidate in message.get("changes") or [message] if message.get("type") == "presence" else [message]:
                candidate = {"type": message["type"], **candidate}
                if candidate.get("type") == type and all(candidate.get(k) == v for k, v in fields.items()):
                    return candidate

    async def nothing(self, type: str, within: float = 0.3, **fields: Any) -> None:
        """No frame of `type` (with `fields`) arrives within `within` seconds."""
        with contextlib.suppress(Failure):
            message = await self.expect(type, within, **fields)
            raise Failure(f"{self.user}{self.where} should not have received {message}")

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Context:
    urls: list[str]
    max_wait: float
    prefix: str = field(default_factory=lambda: secrets.token_hex(3))
    peers: list[Peer] = field(default_factory=list)
    turn: int = 0  # how many connections this scenario has opened: the next goes to urls[turn % len(urls)]
    last: dict[str, int] = field(default_factory=dict)  # user -> the index of the URL of its latest connection

    def id(self, name: str) -> str:
        return f"{name}-{self.prefix}"

    def pick(self, user: str) -> int:
        """The next server in turn; a user connecting again goes to another one than its latest connection."""
        index = self.turn % len(self.urls)
        if len(self.urls) > 1 and self.last.get(user) == index:
            index = (index + 1) % len(self.urls)
            self.turn += 1
        self.turn += 1
        self.last[user] = index
        return index

    async def connect(self, name: str, device: str | None = None) -> Peer:
        user = self.id(name)
        query = f"?id={quote(user)}" + (f"&device={quote(device)}" if device else "")
        index = self.pick(user)
        where = f" (on server {index + 1})" if len(self.urls) > 1 else ""
        try:
            ws = await websockets.connect(self.urls[index] + query, open_timeout=TIMEOUT)
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            if not where:
                raise
            raise Failure(f"{user} could not connect to server {index + 1} ({self.urls[index]}): {exc!r}") from None
        try:
            raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
            check_server_frame(raw)
        except TimeoutError:
            await ws.close()
            raise Failure(f"{user}{where} got no welcome within {TIMEOUT}s") from None
        except msgspec.ValidationError as exc:
            await ws.close()
            raise Failure(f"welcome does not match the protocol schema ({exc}){where}: {raw!r}") from None
        except BaseException:
            await ws.close()
            raise
        welcome = json.loads(raw)
        if welcome.get("type") != "welcome" or welcome.get("id") != user:
            await ws.close()
            raise Failure(f"first frame should be a welcome for {user}{where}, got {welcome}")
        peer = Peer(ws, user, welcome, where)
        self.peers.append(peer)
        return peer

    async def call(self, caller: Peer, callee: Peer, *others: Peer) -> str:
        """caller rings callee (and `others`, the callee's other devices); returns the call id."""
        await caller.send({"type": "call-request", "to": callee.user})
        ringing = await caller.expect("call-ringing", to=callee.user)
        call_id = ringing.get("callId")
        if not isinstance(call_id, str) or not call_id:
            raise Failure(f"call-ringing should carry the server's callId: {ringing}")
        for device in (callee, *others):
            request = await device.expect("call-request", callId=call_id)
            check(request.get("from") == caller.user, f"call-request should come from {caller.user}: {request}")
        return call_id

    async def answered(self, caller: Peer, callee: Peer) -> str:
        call_id = await self.call(caller, callee)
        await callee.send({"type": "call-accept", "to": caller.user})
        await caller.expect("call-accept", callId=call_id, **sent_by(callee.user))
        return call_id

    def wait_limit(self, what: str, seconds: float) -> None:
        if seconds > self.max_wait:
            raise Skip(f"the server's {what} is {seconds:g}s (> --max-wait {self.max_wait:g}s)")


def sent_by(user: str) -> dict[str, Any]:
    """The `from` field to expect (a Python keyword, so it cannot be written as `from=user`)."""
    return {"from": user}


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


async def ended(peer: Peer, call_id: str, outcome: str, reason: str | None = None) -> dict[str, Any]:
    message = await peer.expect("call-ended", callId=call_id)
    check(message.get("outcome") == outcome, f"{peer.user}: call should end {outcome}: {message}")
    if reason is not None:
        check(message.get("reason") == reason, f"{peer.user}: call should end for {reason}: {message}")
    return message


# -------------------------------------------------------------------------------------------- scenarios

Scenario = Callable[[Context], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__.replace("_", "-")] = fn
    return fn


@scenario
async def welcome_and_presence(ctx: Context) -> None:
    """welcome lists who is online; others see presence online and offline."""
    alice = await ctx.connect("alice")
    bob = await ctx.connect("bob")
    check(alice.user in bob.welcome.get("online", []), f"bob's welcome should list alice: {bob.welcome}")
    check(bob.welcome.get("protocol") == 1, f"welcome should say protocol 1: {bob.welcome}")
    await alice.expect("presence", id=bob.user, status="online")
    await bob.close()
    await alice.expect("presence", id=bob.user, status="offline")


@scenario
async def protocol_errors(ctx: Context) -> None:
    """Bad frames get their error codes, reach nobody, and the connection keeps working."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    for frame, code in [
        ("{nope", "bad-json"),
        ('{"to":"x"}', "bad-message"),
        (json.dumps({"type": "teleport", "to": bob.user}), "unknown-type"),
        (json.dumps({"type": "hangup", "to": bob.user, "from": "someone-else"}), "bad-message"),
        (json.dumps({"type": "offer", "to": bob.user, "data": "v=0"}), "bad-message"),
        (json.dumps({"type": "offer", "to": bob.user, "data": OFFER}), "not-in-call"),
    ]:
        await alice.send(frame)
        error = await alice.expect("error")
        check(error.get("code") == code, f"{frame[:60]} should get {code}, got {error}")
    await bob.nothing("hangup")
    await bob.nothing("offer", within=0.05)
    await ctx.call(alice, bob)


@scenario
async def answered_then_hangup(ctx: Context) -> None:
    """The seed's flow: ring, accept, offer/answer/candidates with `from` and callId, hangup ends both."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    call_id = await ctx.answered(alice, bob)
    await alice.send({"type": "offer", "to": bob.user, "data": OFFER})
    offer = await bob.expect("offer", callId=call_id)
    check(offer.get("from") == alice.user and offer.get("data") == OFFER, f"offer forwarded as sent: {offer}")
    await bob.send({"type": "answer", "to": alice.user, "data": ANSWER})
    await alice.expect("answer", callId=call_id, data=ANSWER)
    await bob.send({"type": "candidate", "to": alice.user, "data": CANDIDATE})
    await alice.expect("candidate", callId=call_id, data=CANDIDATE)
    await alice.send({"type": "candidate", "to": bob.user, "data": None})
    await bob.expect("candidate", callId=call_id, data=None)
    await alice.send({"type": "hangup", "to": bob.user})
    await ended(alice, call_id, "answered", "user-hangup")
    await ended(bob, call_id, "answered", "user-hangup")
    await bob.expect("hangup", callId=call_id, **sent_by(alice.user))


@scenario
async def rejected(ctx: Context) -> None:
    """The callee declines: the caller gets call-reject and call-ended rejected."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    call_id = await ctx.call(alice, bob)
    await bob.send({"type": "call-reject", "to": alice.user})
    await ended(alice, call_id, "rejected", "user-rejected")
    await alice.expect("call-reject", callId=call_id, **sent_by(bob.user))
    await ended(bob, call_id, "rejected")


@scenario
async def cancelled(ctx: Context) -> None:
    """The caller hangs up while it rings: the callee stops ringing; the call is cancelled."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    call_id = await ctx.call(alice, bob)
    await alice.send({"type": "hangup", "to": bob.user})
    await ended(bob, call_id, "cancelled", "user-hangup")
    await bob.expect("hangup", callId=call_id)
    await ended(alice, call_id, "cancelled")


@scenario
async def missed(ctx: Context) -> None:
    """Nobody answers: at the ring timeout both sides hear missed (invite-timeout)."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    ring = float(alice.welcome.get("ringTimeout", 45))
    ctx.wait_limit("ring timeout", ring)
    started = time.monotonic()
    call_id = await ctx.call(alice, bob)
    await ended(alice, call_id, "missed", "invite-timeout")
    await ended(bob, call_id, "missed", "invite-timeout")
    waited = time.monotonic() - started
    check(waited >= ring * 0.9, f"call ended after {waited:.2f}s, before the ring timeout of {ring}s")


@scenario
async def busy(ctx: Context) -> None:
    """Calling someone who is in a call ends at once as busy; they are not disturbed."""
    alice, bob, carol = await ctx.connect("alice"), await ctx.connect("bob"), await ctx.connect("carol")
    await ctx.answered(bob, carol)
    await alice.send({"type": "call-request", "to": bob.user})
    ringing = await alice.expect("call-ringing")
    await ended(alice, ringing["callId"], "busy", "user-busy")
    await bob.nothing("call-request")


@scenario
async def unavailable(ctx: Context) -> None:
    """Calling someone offline: error unavailable and call-ended unavailable."""
    alice = await ctx.connect("alice")
    await alice.send({"type": "call-request", "to": ctx.id("nobody")})
    error = await alice.expect("error", code="unavailable")
    await ended(alice, error["callId"], "unavailable", "user-unavailable")


@scenario
async def failed(ctx: Context) -> None:
    """A hangup saying ICE failed ends the call as failed."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    call_id = await ctx.answered(alice, bob)
    await alice.send({"type": "hangup", "to": bob.user, "data": {"reason": "ice-failed"}})
    await ended(bob, call_id, "failed", "ice-failed")


@scenario
async def no_media_before_accept(ctx: Context) -> None:
    """No SDP or candidate reaches either side before the callee accepts."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    call_id = await ctx.call(alice, bob)
    await alice.send({"type": "offer", "to": bob.user, "data": OFFER})
    await alice.expect("error", code="not-in-call")
    await bob.send({"type": "candidate", "to": alice.user, "data": CANDIDATE})
    await bob.expect("error", code="not-in-call")
    await bob.nothing("offer")
    await alice.nothing("candidate", within=0.05)
    await alice.send({"type": "hangup", "to": bob.user, "callId": call_id})
    await ended(bob, call_id, "cancelled")


@scenario
async def every_device_rings_first_accept_wins(ctx: Context) -> None:
    """All devices of the callee ring; two accepting at the same moment: exactly one gets the call."""
    for round_ in range(10):
        alice = await ctx.connect("alice")
        bob1, bob2 = await ctx.connect("bob", f"one{round_}"), await ctx.connect("bob", f"two{round_}")
        call_id = await ctx.call(alice, bob1, bob2)
        accept = json.dumps({"type": "call-accept", "to": alice.user})
        await asyncio.gather(bob1.ws.send(accept), bob2.ws.send(accept))
        await alice.expect("call-accept", callId=call_id)
        await alice.nothing("call-accept", within=0.15)
        outcomes = []
        for device in (bob1, bob2):
            with contextlib.suppress(Failure):
                await device.expect("call-ended", timeout=0.3, callId=call_id, reason="answered-elsewhere")
                outcomes.append(device)
        check(len(outcomes) == 1, f"round {round_}: exactly one device should lose, {len(outcomes)} did")
        winner = bob2 if outcomes[0] is bob1 else bob1
        await alice.send({"type": "offer", "to": bob1.user, "data": OFFER})
        await winner.expect("offer", callId=call_id)
        await outcomes[0].nothing("offer", within=0.1)
        await alice.send({"type": "hangup", "to": bob1.user})
        await ended(winner, call_id, "answered")
        for peer in (alice, bob1, bob2):
            await peer.close()
        ctx.peers.clear()


@scenario
async def glare_makes_one_call(ctx: Context) -> None:
    """Two users calling each other at the same moment end up in exactly one call."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    await asyncio.gather(
        alice.send({"type": "call-request", "to": bob.user}), bob.send({"type": "call-request", "to": alice.user})
    )
    a = await alice.expect("call-accept")
    b = await bob.expect("call-accept")
    check(a["callId"] == b["callId"], f"both should be in one call: {a} / {b}")
    check({a.get("polite"), b.get("polite")} == {True, False}, f"exactly one side is polite: {a} / {b}")


@scenario
async def resume_after_drop(ctx: Context) -> None:
    """A party that drops and reconnects within the grace period resumes; the other side never hears it end."""
    alice, bob = await ctx.connect("alice", "laptop"), await ctx.connect("bob")
    grace = float(alice.welcome.get("resumeGrace", 20))
    if grace < 0.5:
        raise Skip(f"the server's resume grace is {grace:g}s: too short to reconnect in")
    call_id = await ctx.answered(alice, bob)
    await alice.ws.close()
    await bob.nothing("call-ended", within=min(0.5, grace / 2))
    again = await ctx.connect("alice", "laptop")
    resumed = await again.expect("call-resumed", callId=call_id)
    check(resumed.get("peer") == bob.user and resumed.get("state") == "answered", f"resumed: {resumed}")
    await again.send({"type": "offer", "to": bob.user, "data": OFFER})
    await bob.expect("offer", callId=call_id)
    await bob.send({"type": "hangup", "to": alice.user})
    await ended(again, call_id, "answered", "user-hangup")


@scenario
async def peer_lost_after_grace(ctx: Context) -> None:
    """A party that stays away past the grace period: the other side hears peer-lost."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    grace = float(alice.welcome.get("resumeGrace", 20))
    ctx.wait_limit("resume grace", grace)
    call_id = await ctx.answered(alice, bob)
    await alice.close()
    await ended(bob, call_id, "answered", "peer-lost")


# ------------------------------------------------------------------------------------------------ runner


@dataclass
class Result:
    name: str
    status: str  # "pass", "fail", "skip"
    detail: str = ""
    seconds: float = 0.0


async def run_one(url: str | Sequence[str], name: str, *, max_wait: float = 10.0) -> Result:
    """Run scenario `name` against the server at `url`, or spread over the servers (nodes) at several URLs."""
    ctx = Context([url] if isinstance(url, str) else list(url), max_wait)
    if not ctx.urls:
        raise ValueError("no server URL given")
    started = time.monotonic()
    try:
        await asyncio.wait_for(SCENARIOS[name](ctx), max_wait + 30)
        result = Result(name, "pass")
    except Skip as exc:
        result = Result(name, "skip", str(exc))
    except (Failure, TimeoutError, OSError, websockets.WebSocketException) as exc:
        result = Result(name, "fail", f"{type(exc).__name__}: {exc}")
    finally:
        for peer in ctx.peers:
            with contextlib.suppress(Exception):
                await peer.close()
    result.seconds = time.monotonic() - started
    return result


async def run(url: str | Sequence[str], select: str | None = None, *, max_wait: float = 10.0) -> list[Result]:
    names = [n for n in SCENARIOS if select is None or select in n]
    return [await run_one(url, name, max_wait=max_wait) for name in names]


def main(urls: str | Sequence[str], select: str | None, max_wait: float) -> int:
    urls = [urls] if isinstance(urls, str) else list(urls)
    if len(urls) > 1:
        print(f"spreading each scenario's connections over {len(urls)} servers: {', '.join(urls)}")
    results = asyncio.run(run(urls, select, max_wait=max_wait))
    for r in results:
        doc = (SCENARIOS[r.name].__doc__ or "").strip()
        print(f"{r.status.upper():4}  {r.name:40} {r.seconds:5.2f}s  {doc}")
        if r.detail:
            print(f"      {r.detail}")
    failed = sum(r.status == "fail" for r in results)
    print(
        f"{sum(r.status == 'pass' for r in results)} passed, {failed} failed, "
        f"{sum(r.status == 'skip' for r in results)} skipped"
    )
    return 1 if failed or not results else 0
