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

The contact scenarios (`-k contacts`) run when the server's welcome lists the `contacts` feature; they follow
what the welcome says (`directory`: `all` or `contacts`), so that a server run either way is checked, and need only
its default ring setting to be `everyone` (open mode's). Across the nodes of a cluster they need the nodes to share
one store (PostgreSQL): contacts live there.
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


class NotReceived(Failure):
    """The frame waited for did not come in time."""


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
        self.contacts: dict[str, Any] | None = None  # the `contacts` frame that followed welcome, if any
        self.backlog: list[str | bytes] = []  # frames read before `contacts` on connecting, not yet expected

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def expect(
        self,
        type: str | tuple[str, ...],
        timeout: float = TIMEOUT,  # noqa: ASYNC109
        **fields: Any,
    ) -> dict[str, Any]:
        """The next frame of `type` (or of one of several) with all `fields` (other frames are kept in `seen` and
        skipped)."""
        types = (type,) if isinstance(type, str) else type
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                raw = self.backlog.pop(0) if self.backlog else await asyncio.wait_for(self.ws.recv(), max(left, 0.001))
                check_server_frame(raw)
                message = json.loads(raw)
            except msgspec.ValidationError as exc:
                raise Failure(
                    f"{self.user}{self.where} got a frame that does not match the protocol schema ({exc}): {raw!r}"
                ) from None
            except TimeoutError:
                want = ", ".join(f"{k}={v!r}" for k, v in fields.items())
                raise NotReceived(
                    f"{self.user}{self.where} got no {type} ({want}) within {timeout}s; saw {self.seen[-5:]}"
                ) from None
            except websockets.ConnectionClosed as exc:
                raise Failure(f"{self.user}{self.where}'s connection closed while waiting for {type}: {exc}") from None
            self.seen.append(message)
            # A presence frame may carry several changes; each is matched as if it came alone.
            for candidate in message.get("changes") or [message] if message.get("type") == "presence" else [message]:
                candidate = {"type": message["type"], **candidate}
                if candidate.get("type") in types and all(candidate.get(k) == v for k, v in fields.items()):
                    return candidate

    async def nothing(self, type: str, within: float = 0.3, **fields: Any) -> None:
        """No frame of `type` (with `fields`) arrives within `within` seconds."""
        try:
            message = await self.expect(type, within, **fields)
        except NotReceived:
            return
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

    async def connect(
        self, name: str, device: str | None = None, *, exact: bool = False, contacts: bool = False
    ) -> Peer:
        """Connect `name` (made unique to this run; `exact`: as it is) and read its welcome; with `contacts` (the
        user has some contact, request, block or ring setting), also the `contacts` frame that must follow it."""
        user = name if exact else self.id(name)
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
        if contacts:
            need_contacts(peer)
            peer.contacts = await peer.expect("contacts")
            early = [m for m in peer.seen if m.get("type") == "presence"]
            check(not early, f"{user}{where}: contacts should come before any presence, after {early}")
            # What came before it (call-resumed, missed-calls) is still to be expected.
            peer.backlog = [json.dumps(m) for m in peer.seen[:-1]]
            peer.seen.clear()
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


def has_contacts(peer: Peer) -> bool:
    """Whether the server says it has contacts (welcome's `features`)."""
    features = peer.welcome.get("features")
    return isinstance(features, list) and "contacts" in features


def directory_of(peer: Peer) -> str:
    """Whose presence the server shows: `all` (also when it does not say) or `contacts`."""
    return "contacts" if peer.welcome.get("directory") == "contacts" else "all"


def ids(entries: Any) -> list[str]:
    """The ids of a `contacts` frame's list."""
    return [e.get("id") for e in entries] if isinstance(entries, list) else []


async def answer(peer: Peer, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a contact frame; the `contacts` frame that answers it: the first that shows it done (one the server
    sent before handling it, e.g. for an earlier change, does not). An error instead fails the scenario."""
    await peer.send(frame)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            message = await peer.expect(("contacts", "error"), max(deadline - time.monotonic(), 0.001))
        except NotReceived:
            raise Failure(f"{peer.user}{peer.where}: no contacts frame showed {json.dumps(frame)[:100]} done") from None
        if message["type"] == "error":
            raise Failure(f"{peer.user}{peer.where}: {json.dumps(frame)[:100]} was refused: {message}")
        if shows_done(frame, message):
            return message


async def told(peer: Peer, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """The first `contacts` frame to `peer` that satisfies `condition` (earlier ones, e.g. for an earlier change,
    are skipped); fails saying `what` was expected."""
    deadline = time.monotonic() + TIMEOUT
    last: dict[str, Any] | None = None
    while True:
        try:
            last = await peer.expect("contacts", max(deadline - time.monotonic(), 0.001))
        except NotReceived:
            raise Failure(f"{peer.user}{peer.where} was not told {what}; last contacts frame: {last}") from None
        if condition(last):
            return last


def shows_done(frame: dict[str, Any], contacts: dict[str, Any]) -> bool:
    """Whether a `contacts` frame shows the contact frame `frame` carried out."""
    kind, user, data = frame.get("type"), frame.get("to"), frame.get("data") or {}
    friends = {c.get("id"): c for c in contacts.get("contacts") or []}
    incoming, outgoing, blocked = (ids(contacts.get(k)) for k in ("incoming", "outgoing", "blocked"))
    if kind == "contact-add":
        return user in friends or user in outgoing
    if kind == "contact-decline":
        return user not in incoming
    if kind == "contact-remove":
        return user not in friends and user not in outgoing
    if kind == "contact-rename":
        return user not in friends or friends[user].get("name") == data.get("name")
    if kind == "block":
        return user in blocked
    if kind == "unblock":
        return user not in blocked
    if kind == "settings":
        return bool(contacts.get("callsFrom") == data.get("callsFrom"))
    return True


async def befriend(a: Peer, b: Peer) -> None:
    """a asks b, b accepts: contacts."""
    await answer(a, {"type": "contact-add", "to": b.user})
    await told(b, lambda m: a.user in ids(m["incoming"]), f"{a.user}'s request")
    await answer(b, {"type": "contact-add", "to": a.user})
    await told(a, lambda m: b.user in ids(m["contacts"]), f"that {b.user} accepted")


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
    if directory_of(alice) == "contacts":  # presence goes to contacts only: make them contacts, and start again
        await befriend(alice, bob)
        await bob.close()
        await alice.expect("presence", id=bob.user, status="offline")
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
async def media_state(ctx: Context) -> None:
    """media-state passes between the parties of an answered call only, with `from` and callId, and is checked."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    call_id = await ctx.call(alice, bob)
    await alice.send({"type": "media-state", "to": bob.user, "data": {"muted": True}})
    await alice.expect("error", code="not-in-call")
    await bob.nothing("media-state", within=0.05)
    await bob.send({"type": "call-accept", "to": alice.user, "callId": call_id})
    await alice.expect("call-accept", callId=call_id)
    state = {"muted": True, "camera": False, "screen": True}
    await alice.send({"type": "media-state", "to": bob.user, "data": state})
    said = await bob.expect("media-state", callId=call_id, data=state)
    check(said.get("from") == alice.user, f"media-state forwarded with from: {said}")
    await bob.send({"type": "media-state", "to": alice.user, "callId": call_id, "data": {}})
    await alice.expect("media-state", callId=call_id, data={}, **sent_by(bob.user))
    for data, code in [({"muted": "yes"}, "bad-message"), (None, "bad-message"), ({"note": "x" * 300}, "too-large")]:
        await alice.send({"type": "media-state", "to": bob.user, "data": data})
        error = await alice.expect("error", ref="media-state")
        check(error.get("code") == code, f"media-state with {str(data)[:40]} should get {code}, got {error}")
    await bob.nothing("media-state", within=0.05)
    await alice.send({"type": "hangup", "to": bob.user})
    await ended(bob, call_id, "answered", "user-hangup")


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
    if directory_of(alice) == "contacts":  # only a caller who sees bob's presence may learn that he is busy
        await befriend(alice, bob)
    await ctx.answered(bob, carol)
    await alice.send({"type": "call-request", "to": bob.user})
    ringing = await alice.expect("call-ringing")
    await ended(alice, ringing["callId"], "busy", "user-busy")
    await bob.nothing("call-request")


@scenario
async def unavailable(ctx: Context) -> None:
    """Calling someone offline: error unavailable and call-ended unavailable."""
    alice = await ctx.connect("alice")
    if directory_of(alice) == "contacts":
        raise Skip("presence goes to contacts only: a call to a stranger is silent (contacts-offline-callee)")
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
            with contextlib.suppress(NotReceived):
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


# ------------------------------------------------------------------------------------------------ contacts


def need_contacts(peer: Peer) -> None:
    if not has_contacts(peer):
        raise Skip("the server's welcome lists no 'contacts' feature")


@scenario
async def contacts_after_welcome(ctx: Context) -> None:
    """A server with contacts says so in welcome; after it, a user with anything to show gets the contacts frame
    before any presence, and a user with nothing gets none."""
    alice = await ctx.connect("alice")
    need_contacts(alice)
    check(alice.welcome.get("directory") in ("all", "contacts"), f"welcome should say its directory: {alice.welcome}")
    await alice.nothing("contacts")  # a new user has nothing: no contacts frame (a seed client's flow)
    first = await answer(alice, {"type": "settings", "data": {"callsFrom": "everyone"}})
    for key in ("contacts", "incoming", "outgoing", "blocked"):
        check(first.get(key) == [], f"a new user's {key} should be empty: {first}")
    check(first.get("directory") == alice.welcome["directory"], f"contacts and welcome disagree: {first}")
    default = alice.welcome.get("defaultCallsFrom")
    check(default in (None, first.get("defaultCallsFrom")), f"contacts and welcome disagree: {first} / {default}")
    again = await ctx.connect("alice", "second", contacts=True)  # a ring setting of one's own: a contacts frame
    check(again.contacts == first, f"every device gets the same contacts: {again.contacts} / {first}")


@scenario
async def contacts_request_and_accept(ctx: Context) -> None:
    """contact-add asks, the other sees it in incoming and accepts with contact-add; names are one's own."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    need_contacts(alice)
    mine = await answer(alice, {"type": "contact-add", "to": bob.user, "data": {"name": "Bob (work)"}})
    check(ids(mine["outgoing"]) == [bob.user] and mine["contacts"] == [], f"alice's request waits: {mine}")
    theirs = await told(bob, lambda m: alice.user in ids(m["incoming"]), "alice's request")
    check(ids(theirs["incoming"]) == [alice.user] and theirs["contacts"] == [], f"bob sees the request: {theirs}")
    theirs = await answer(bob, {"type": "contact-add", "to": alice.user, "data": {"name": "Alice (work)"}})
    check(ids(theirs["contacts"]) == [alice.user] and theirs["incoming"] == [], f"bob accepted: {theirs}")
    check(theirs["contacts"][0].get("name") == "Alice (work)", f"bob's name for alice is kept: {theirs}")
    mine = await told(alice, lambda m: bob.user in ids(m["contacts"]), "that bob accepted")
    check(ids(mine["contacts"]) == [bob.user] and mine["outgoing"] == [], f"alice has bob: {mine}")
    check(mine["contacts"][0].get("name") == "Bob (work)", f"the name alice gave with her request is kept: {mine}")
    check(mine["contacts"][0].get("status") == "online", f"a contact's presence is shown: {mine}")
    mine = await answer(alice, {"type": "contact-rename", "to": bob.user, "data": {"name": "Bobby"}})
    check(mine["contacts"][0].get("name") == "Bobby", f"renamed: {mine}")
    await bob.nothing("contacts")  # alice's name for bob is hers alone
    mine = await answer(alice, {"type": "contact-rename", "to": bob.user, "data": {"name": None}})
    check(mine["contacts"][0].get("name") is None, f"name removed: {mine}")


@scenario
async def contacts_decline_is_silent(ctx: Context) -> None:
    """contact-decline removes the request on the decliner's side only: the requester is not told."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    need_contacts(alice)
    await answer(alice, {"type": "contact-add", "to": bob.user})
    await told(bob, lambda m: alice.user in ids(m["incoming"]), "alice's request")
    theirs = await answer(bob, {"type": "contact-decline", "to": alice.user})
    check(theirs["incoming"] == [] and theirs["contacts"] == [], f"bob declined: {theirs}")
    await alice.nothing("contacts")
    later = await ctx.connect("alice", "later", contacts=True)
    check(ids((later.contacts or {}).get("outgoing")) == [bob.user], f"alice's request still waits: {later.contacts}")


@scenario
async def contacts_remove_is_mutual(ctx: Context) -> None:
    """contact-remove ends the contact on both sides; on a request it withdraws it."""
    alice, bob, carol = await ctx.connect("alice"), await ctx.connect("bob"), await ctx.connect("carol")
    need_contacts(alice)
    await befriend(alice, bob)
    theirs = await answer(bob, {"type": "contact-remove", "to": alice.user})
    check(theirs["contacts"] == [], f"bob removed alice: {theirs}")
    mine = await told(alice, lambda m: bob.user not in ids(m["contacts"]), "that bob removed her")
    check(mine["contacts"] == [] and mine["incoming"] == [], f"alice lost bob too: {mine}")
    await answer(carol, {"type": "contact-add", "to": alice.user})
    mine = await told(alice, lambda m: carol.user in ids(m["incoming"]), "carol's request")
    check(ids(mine["incoming"]) == [carol.user], f"alice sees carol's request: {mine}")
    withdrawn = await answer(carol, {"type": "contact-remove", "to": alice.user})
    check(withdrawn["outgoing"] == [], f"carol withdrew her request: {withdrawn}")
    await told(alice, lambda m: carol.user not in ids(m["incoming"]), "that carol withdrew her request")


@scenario
async def contacts_block_looks_offline(ctx: Context) -> None:
    """After block, a contact's calls end as if the blocker were offline and nothing reaches the blocker; unblock
    restores the contact."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    need_contacts(alice)
    await befriend(alice, bob)
    theirs = await answer(bob, {"type": "block", "to": alice.user})
    check(ids(theirs["blocked"]) == [alice.user] and theirs["contacts"] == [], f"bob blocked alice: {theirs}")
    await alice.send({"type": "call-request", "to": bob.user})
    error = await alice.expect("error", code="unavailable")
    await ended(alice, error["callId"], "unavailable", "user-unavailable")
    await bob.nothing("call-request")
    await bob.nothing("call-ended", within=0.05)
    later = await ctx.connect("alice", "later", contacts=True)
    check(bob.user not in later.welcome.get("online", []), f"bob looks offline to alice: {later.welcome}")
    kept = [c for c in (later.contacts or {}).get("contacts", []) if c.get("id") == bob.user]
    check(len(kept) == 1 and kept[0].get("status") == "offline", f"alice keeps bob, offline: {later.contacts}")
    theirs = await answer(bob, {"type": "unblock", "to": alice.user})
    check(theirs["blocked"] == [] and ids(theirs["contacts"]) == [alice.user], f"unblock restores: {theirs}")
    await ctx.call(alice, bob)


@scenario
async def contacts_block_makes_requests_vanish(ctx: Context) -> None:
    """A blocked user's waiting request vanishes, and their new ones never reach the blocker; they are not told."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    need_contacts(alice)
    await answer(alice, {"type": "contact-add", "to": bob.user})
    await told(bob, lambda m: alice.user in ids(m["incoming"]), "alice's request")
    theirs = await answer(bob, {"type": "block", "to": alice.user})
    check(theirs["incoming"] == [] and ids(theirs["blocked"]) == [alice.user], f"the request vanished: {theirs}")
    await alice.nothing("contacts")
    again = await answer(alice, {"type": "contact-add", "to": bob.user})
    check(ids(again["outgoing"]) == [bob.user], f"alice's request looks as if it waits: {again}")
    await bob.nothing("contacts")
    if directory_of(alice) == "all":  # strangers see each other's presence, but never across a block
        await bob.close()
        await alice.nothing("presence", id=bob.user)


@scenario
async def contacts_ring_setting_nobody(ctx: Context) -> None:
    """callsFrom nobody: a call never rings; the caller sees a call nobody answers (missed at the ring timeout)."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    need_contacts(alice)
    ring = float(alice.welcome.get("ringTimeout", 45))
    ctx.wait_limit("ring timeout", ring)
    await befriend(alice, bob)
    theirs = await answer(bob, {"type": "settings", "data": {"callsFrom": "nobody"}})
    check(theirs.get("callsFrom") == "nobody", f"bob's setting: {theirs}")
    started = time.monotonic()
    await alice.send({"type": "call-request", "to": bob.user})
    ringing = await alice.expect("call-ringing", to=bob.user)
    await bob.nothing("call-request", within=0.5)
    await ended(alice, ringing["callId"], "missed", "invite-timeout")
    waited = time.monotonic() - started
    check(waited >= ring * 0.9, f"the silenced call ended after {waited:.2f}s, before the ring timeout of {ring}s")
    line = (await bob.expect("silenced-call"))["call"]  # its line in bob's Recent calls, nothing more
    check(
        (line.get("callId"), line.get("caller"), line.get("outcome"), line.get("screened"))
        == (ringing["callId"], alice.user, "missed", "silenced"),
        f"bob's silenced-call: {line}",
    )
    await bob.nothing("call-ended", within=0.2)
    theirs = await answer(bob, {"type": "settings", "data": {"callsFrom": None}})
    check(theirs.get("callsFrom") is None, f"back to the default: {theirs}")


@scenario
async def contacts_ring_setting_contacts(ctx: Context) -> None:
    """callsFrom contacts: a contact's call rings; a stranger's never does, and looks like one nobody answers."""
    alice, bob, carol = await ctx.connect("alice"), await ctx.connect("bob"), await ctx.connect("carol")
    need_contacts(alice)
    await befriend(carol, bob)
    theirs = await answer(bob, {"type": "settings", "data": {"callsFrom": "contacts"}})
    check(theirs.get("callsFrom") == "contacts", f"bob's setting: {theirs}")
    call_id = await ctx.call(carol, bob)
    await carol.send({"type": "hangup", "to": bob.user})
    await ended(carol, call_id, "cancelled")
    await alice.send({"type": "call-request", "to": bob.user})
    ringing = await alice.expect("call-ringing", to=bob.user)
    await bob.nothing("call-request", within=0.5)
    await alice.send({"type": "hangup", "to": bob.user, "callId": ringing["callId"]})
    await ended(alice, ringing["callId"], "cancelled")
    await bob.nothing("call-ended", within=0.2)


@scenario
async def contacts_settings_and_bad_frames(ctx: Context) -> None:
    """settings takes everyone/contacts/nobody/null; malformed contact frames get bad-message with their ref."""
    alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
    need_contacts(alice)
    for value in ("everyone", "contacts", "nobody", None):
        mine = await answer(alice, {"type": "settings", "data": {"callsFrom": value}})
        check(mine.get("callsFrom") == value, f"settings {value}: {mine}")
        check(mine.get("defaultCallsFrom") in ("everyone", "contacts", "nobody"), f"the default is shown: {mine}")
    bad: list[dict[str, Any]] = [
        {"type": "settings", "data": {"callsFrom": "friends"}},
        {"type": "contact-add", "to": alice.user},
        {"type": "contact-add", "to": bob.user, "data": {"name": "x" * 65}},
        {"type": "contact-rename", "to": bob.user, "data": {"name": ""}},
        {"type": "block", "to": alice.user},
    ]
    for frame in bad:
        await alice.send(frame)
        error = await alice.expect("error")
        check(
            error.get("code") == "bad-message" and error.get("ref") == frame["type"],
            f"{json.dumps(frame)[:80]} should get bad-message: {error}",
        )
    await bob.nothing("contacts")


@scenario
async def contacts_directory(ctx: Context) -> None:
    """directory pages through who is online in id order (PEERCALL_DIRECTORY=all), leaving out either side of a
    block; with contacts only it is not-allowed."""
    searcher = await ctx.connect("searcher")
    need_contacts(searcher)
    if directory_of(searcher) == "contacts":
        await searcher.send({"type": "directory", "data": {"q": "a"}})
        error = await searcher.expect("error", code="not-allowed")
        check(error.get("ref") == "directory", f"not-allowed names the directory frame: {error}")
        return
    stem = f"dir{ctx.prefix}"
    a, b, c = [await ctx.connect(f"{stem}-{n}", exact=True) for n in ("a", "b", "c")]
    await searcher.send({"type": "directory", "data": {"q": stem, "limit": 2}})
    page = await searcher.expect("directory")
    check(ids(page["users"]) == [a.user, b.user] and page.get("next") == b.user, f"first page: {page}")
    check(all(u.get("inCall") is False for u in page["users"]), f"nobody is in a call: {page}")
    await searcher.send({"type": "directory", "data": {"q": stem, "after": page["next"], "limit": 2}})
    page = await searcher.expect("directory")
    check(ids(page["users"]) == [c.user] and page.get("next") is None, f"last page: {page}")
    await answer(c, {"type": "block", "to": searcher.user})
    await searcher.send({"type": "directory", "data": {"q": stem}})
    page = await searcher.expect("directory")
    check(ids(page["users"]) == [a.user, b.user], f"the blocker is left out: {page}")
    await c.send({"type": "directory", "data": {"q": "searcher"}})
    page = await c.expect("directory")
    check(searcher.user not in ids(page["users"]), f"the blocked is left out: {page}")
    for limit in (0, 201):
        await searcher.send({"type": "directory", "data": {"limit": limit}})
        error = await searcher.expect("error")
        check(error.get("code") == "bad-message", f"limit {limit} should get bad-message: {error}")


@scenario
async def contacts_scoped_presence(ctx: Context) -> None:
    """Presence goes to contacts (PEERCALL_DIRECTORY=contacts) or to everyone online (all), never across a block."""
    alice, carol = await ctx.connect("alice"), await ctx.connect("carol")
    need_contacts(alice)
    if directory_of(alice) == "contacts":
        await befriend(alice, carol)
        bob = await ctx.connect("bob")
        check(alice.user not in bob.welcome.get("online", []), f"a stranger's welcome lists no one: {bob.welcome}")
        await alice.nothing("presence", id=bob.user)
        await carol.close()
        await alice.expect("presence", id=carol.user, status="offline")
        carol = await ctx.connect("carol")
        await alice.expect("presence", id=carol.user, status="online")
        check(alice.user in carol.welcome.get("online", []), f"a contact's welcome lists alice: {carol.welcome}")
        return
    bob = await ctx.connect("bob")
    await alice.expect("presence", id=bob.user, status="online")
    await answer(bob, {"type": "block", "to": alice.user})
    with contextlib.suppress(NotReceived):  # bob may go offline for alice at once: that is how he vanishes
        await alice.expect("presence", timeout=0.5, id=bob.user, status="offline")
    await bob.close()
    await carol.expect("presence", id=bob.user, status="offline")
    await alice.nothing("presence", id=bob.user, within=0.2)
    bob = await ctx.connect("bob")
    await carol.expect("presence", id=bob.user, status="online")
    await alice.nothing("presence", id=bob.user, within=0.05)
    check(alice.user not in bob.welcome.get("online", []), f"the blocker does not see alice: {bob.welcome}")
    later = await ctx.connect("alice", "later")
    check(bob.user not in later.welcome.get("online", []), f"alice does not see the blocker: {later.welcome}")


@scenario
async def contacts_offline_callee(ctx: Context) -> None:
    """A call to someone offline ends unavailable at once if the caller may see their presence (PEERCALL_DIRECTORY=
    all); with presence for contacts only, a call to a stranger looks like one nobody answers, offline or not."""
    alice = await ctx.connect("alice")
    need_contacts(alice)
    if directory_of(alice) == "all":
        await alice.send({"type": "call-request", "to": ctx.id("nobody")})
        error = await alice.expect("error", code="unavailable")
        await ended(alice, error["callId"], "unavailable", "user-unavailable")
        return
    ring = float(alice.welcome.get("ringTimeout", 45))
    ctx.wait_limit("ring timeout", ring)
    started = time.monotonic()
    await alice.send({"type": "call-request", "to": ctx.id("nobody")})
    ringing = await alice.expect("call-ringing")
    await ended(alice, ringing["callId"], "missed", "invite-timeout")
    waited = time.monotonic() - started
    check(waited >= ring * 0.9, f"the call ended after {waited:.2f}s, before the ring timeout of {ring}s")


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
