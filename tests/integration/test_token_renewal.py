"""Tokens on live sockets (token mode): renewal with a later `auth` frame, `tokenExpiresAt`, and
PEERCALL_AUTH_EXPIRY=enforce closing a socket whose token expired; over both transports."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.conftest import OPEN_DOORS, SCALE, ServerProcess, run_server
from tests.integration.conftest import TRANSPORTS
from tests.integration.test_security import CANDIDATE, SECRET, closed_with, token

TTL = 2  # seconds: each token lives this long, so a call of ~10 s outlives several of them
LEEWAY = 5  # the verifier's clock skew (auth/tokens.py TokenVerifier.LEEWAY)
EXPIRED = "the token expired; renew it with an auth frame"


@pytest.fixture(scope="module")
def enforcing(transport: str) -> Iterator[ServerProcess]:
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=SECRET,
        PEERCALL_AUTH_EXPIRY="enforce",
        PEERCALL_RESUME_GRACE="30",
        **TRANSPORTS[transport],
    ) as srv:
        yield srv


class Peer:
    """A raw client that signs in with a first-frame token and keeps every frame it has not looked at yet."""

    def __init__(self, ws: websockets.ClientConnection, user: str) -> None:
        self.ws, self.user = ws, user
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(cls, srv: ServerProcess, user: str, device: str, ttl: float = TTL) -> Peer:
        ws = await websockets.connect(f"{srv.ws}?device={device}", open_timeout=5 * SCALE)
        await ws.send(json.dumps({"type": "auth", "token": token(user, ttl)}))
        peer = cls(ws, user)
        peer.welcome = await peer.expect("welcome")
        return peer

    async def expect(self, kind: str, timeout: float = 5 * SCALE, **fields: Any) -> dict[str, Any]:
        """The next frame of type `kind` with `fields` (others are skipped: presence, contacts…)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic())))
            if frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def renew(self, ttl: float = TTL) -> float:
        """Send a new token; the `expiresAt` the server answers with."""
        fresh = token(self.user, ttl)
        await self.send({"type": "auth", "token": fresh})
        return float((await self.expect("auth-renewed"))["expiresAt"])


async def answered_call(srv: ServerProcess, caller: str, callee: str) -> tuple[Peer, Peer, str]:
    a = await Peer.connect(srv, caller, "a-1")
    b = await Peer.connect(srv, callee, "b-1")
    await a.send({"type": "call-request", "to": callee})
    call_id = (await a.expect("call-ringing"))["callId"]
    await b.expect("call-request")
    await b.send({"type": "call-accept", "to": caller})
    await a.expect("call-accept")
    return a, b, call_id


async def test_a_call_outlives_several_token_lifetimes_with_renewals(enforcing: ServerProcess, uid: Any) -> None:
    """Two raw clients with 2 s tokens renew them every second during an answered call: each renewal is answered
    `auth-renewed` with the new `exp`, the call's frames keep flowing both ways, and the call is still there after
    more than the first token's lifetime plus the leeway."""
    a, b, call_id = await answered_call(enforcing, uid("ann"), uid("ben"))
    assert a.welcome["tokenExpiresAt"] >= time.time() and a.welcome["tokenExpiresAt"] <= time.time() + TTL
    first_deadline = a.welcome["tokenExpiresAt"] + LEEWAY
    renewals = 0
    while time.time() < first_deadline + 2:
        for peer in (a, b):
            expires_at = await peer.renew()
            assert time.time() < expires_at <= time.time() + TTL + 1
        renewals += 1
        await a.send({"type": "candidate", "to": b.user, "data": CANDIDATE})
        assert (await b.expect("candidate"))["callId"] == call_id
        await b.send({"type": "candidate", "to": a.user, "data": CANDIDATE})
        assert (await a.expect("candidate"))["callId"] == call_id
        await asyncio.sleep(1)
    assert renewals >= 5
    await a.send({"type": "hangup", "to": b.user})
    ended = await b.expect("call-ended", callId=call_id)
    assert ended["outcome"] == "answered"
    for peer in (a, b):
        await peer.ws.close()


async def test_without_renewal_the_socket_closes_and_the_call_resumes_on_reconnect(
    enforcing: ServerProcess, uid: Any
) -> None:
    """Under `enforce`, a socket whose token expires unrenewed gets `error` `unauthorized` and close 4401 (its
    token's `exp` plus the leeway); its call is not over: the user reconnects with a new token within the resume
    grace and both sides get `call-resumed`."""
    a, b, call_id = await answered_call(enforcing, uid("cat"), uid("dan"))
    deadline = a.welcome["tokenExpiresAt"] + LEEWAY
    stop = asyncio.Event()

    async def keep_renewing() -> None:  # b renews; a does not
        while not stop.is_set():
            await b.send({"type": "auth", "token": token(b.user, TTL)})
            await asyncio.sleep(0.7)

    renewer = asyncio.create_task(keep_renewing())
    try:
        error = await a.expect("error", timeout=deadline - time.time() + 3 * SCALE)
        assert (error["code"], error["message"]) == ("unauthorized", EXPIRED)
        assert await closed_with(a.ws) == (4401, EXPIRED)
        assert time.time() >= deadline - 0.5
        again = await Peer.connect(enforcing, a.user, "a-1")
        resumed = await again.expect("call-resumed")
        assert resumed["callId"] == call_id
        assert (await b.expect("call-resumed"))["callId"] == call_id
    finally:
        stop.set()
        await renewer
    await again.ws.close()
    await b.ws.close()


async def test_a_renewal_for_another_user_or_a_bad_token_closes_4401(enforcing: ServerProcess, uid: Any) -> None:
    """A renewal must carry a good token for the same `sub`: another user's token, an expired one or a
    malformed frame gets `unauthorized` and close 4401 with the reason."""
    for bad, why in [
        ({"type": "auth", "token": token(uid("eve"), 60)}, "the new token is for"),
        ({"type": "auth", "token": token("x", -60)}, "the renewal was refused: the token has expired"),
        ({"type": "auth", "token": 5}, 'a renewal must be {"type":"auth","token":"<token>"}'),
    ]:
        peer = await Peer.connect(enforcing, uid("fay"), "f-1")
        await peer.send(bad)
        error = await peer.expect("error")
        assert error["code"] == "unauthorized" and why in error["message"], error
        code, reason = await closed_with(peer.ws)
        assert code == 4401 and why[:40] in reason


async def test_the_header_token_is_watched_too(enforcing: ServerProcess, uid: Any) -> None:
    """A client that signs in with the Authorization header gets `tokenExpiresAt`, may renew with an `auth`
    frame, and is closed 4401 when the renewed token expires in turn."""
    user = uid("gil")
    first = token(user, TTL)
    async with websockets.connect(enforcing.ws, additional_headers={"Authorization": f"Bearer {first}"}) as ws:
        peer = Peer(ws, user)
        welcome = await peer.expect("welcome")
        assert welcome["tokenExpiresAt"] <= time.time() + TTL
        expires_at = await peer.renew(ttl=4)
        assert expires_at > welcome["tokenExpiresAt"]
        error = await peer.expect("error", timeout=expires_at + LEEWAY - time.time() + 3 * SCALE)
        assert error["message"] == EXPIRED and time.time() >= expires_at + LEEWAY - 0.5
        assert await closed_with(ws) == (4401, EXPIRED)


async def test_by_default_a_socket_outlives_its_token_and_may_renew_it(uid: Any) -> None:
    """PEERCALL_AUTH_EXPIRY unset (`ignore`): a socket stays open past its token's `exp` + leeway, as before;
    `welcome` still says `tokenExpiresAt`, and a renewal is still answered. In open mode `auth` is unknown."""
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=SECRET) as srv:
        peer = await Peer.connect(srv, uid("hal"), "h-1", ttl=1)
        assert peer.welcome["tokenExpiresAt"] <= time.time() + 1
        await asyncio.sleep(1 + LEEWAY + 0.5)
        assert await peer.renew() > time.time()
        await peer.ws.close()
