"""Display names (the tokens' `name` claim) over raw websockets on one node: in `welcome`, `presence`, forwarded
`call-request`, `directory`, `missed-calls` and `contacts`; changed by a renewal or a new connection; never shown
to a stranger who merely knows the id."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import OPEN_DOORS, SCALE, ServerProcess, run_server
from tests.integration.conftest import TRANSPORTS
from tests.integration.test_security import SECRET, token

XSS = "<img src=x onerror=alert(1)>"


class Peer:
    """A raw client that keeps every frame it got, and waits for the next one of a kind."""

    def __init__(self, ws: websockets.ClientConnection, user: str) -> None:
        self.ws, self.user = ws, user
        self.seen: list[str] = []
        self.welcome: dict[str, Any] = {}
        self.changes: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    async def connect(cls, srv: ServerProcess, user: str, name: str | None, *, header: bool = False) -> Peer:
        claims = {} if name is None else {"name": name}
        signed = token(user, 600, **claims)
        if header:
            ws = await websockets.connect(
                srv.ws, additional_headers={"Authorization": f"Bearer {signed}"}, open_timeout=5 * SCALE
            )
        else:
            ws = await websockets.connect(srv.ws, open_timeout=5 * SCALE)
            await ws.send(json.dumps({"type": "auth", "token": signed}))
        peer = cls(ws, user)
        peer.welcome = await peer.expect("welcome")
        return peer

    async def expect(self, kind: str, timeout: float = 5 * SCALE, **fields: Any) -> dict[str, Any]:
        """The next frame of type `kind` with `fields` (others are skipped, and kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            text = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
            assert isinstance(text, str)
            self.seen.append(text)
            frame = json.loads(text)
            if frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def until(self, kind: str, check: Any) -> dict[str, Any]:
        """The next frame of type `kind` for which `check(frame)` is true."""
        while True:
            frame = await self.expect(kind)
            if check(frame):
                return frame

    async def presence_of(self, user: str) -> dict[str, Any]:
        """The next presence change about `user` (alone or in a batch; the others are kept for later)."""
        while not self.changes.get(user):
            frame = await self.expect("presence")
            for change in frame.get("changes", [frame]):
                self.changes.setdefault(change["id"], []).append(change)
        return dict(self.changes[user].pop(0))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        await self.ws.close()


async def written(srv: ServerProcess, user: str) -> None:
    """Wait until `user`'s history has a call (history writes are asynchronous)."""
    async with httpx.AsyncClient(base_url=srv.http, headers={"Authorization": f"Bearer {token(user)}"}) as http:
        for _ in range(100):
            if (await http.get("/api/calls")).json()["calls"]:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"no call of {user} reached the history")


@pytest.fixture(scope="module")
def everyone(transport: str) -> Iterator[ServerProcess]:
    """Token mode where everyone sees everyone online and anyone may ring anyone."""
    with run_server(PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET=SECRET, **OPEN_DOORS, **TRANSPORTS[transport]) as srv:
        yield srv


@pytest.fixture(scope="module")
def contacts_only() -> Iterator[ServerProcess]:
    """Token mode with its defaults: presence to contacts only, calls from contacts only."""
    with run_server(PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET=SECRET) as srv:
        yield srv


async def test_names_reach_whoever_sees_the_presence_or_gets_the_call(everyone: ServerProcess) -> None:
    """Names come in `welcome`, `presence`, `directory`, the forwarded `call-request` and `missed-calls`, as the
    text the token carried (markup included); a user without one has none; a renewal changes it."""
    alice = await Peer.connect(everyone, "n-alice", "  Alice B ")
    bob = await Peer.connect(everyone, "n-bob", XSS, header=True)
    carol = await Peer.connect(everyone, "n-carol", None)
    try:
        assert bob.welcome["displayNames"] == {"n-alice": "Alice B"}
        assert (await alice.presence_of("n-bob"))["displayName"] == XSS
        assert "displayName" not in await alice.presence_of("n-carol")
        assert carol.welcome["displayNames"] == {"n-alice": "Alice B", "n-bob": XSS}

        await alice.send({"type": "directory", "data": {"q": "n-"}})
        listed = {u["id"]: u.get("displayName") for u in (await alice.expect("directory"))["users"]}
        assert listed == {"n-bob": XSS, "n-carol": None}

        await alice.send({"type": "call-request", "to": "n-bob"})
        request = await bob.expect("call-request")
        assert (request["from"], request["displayName"]) == ("n-alice", "Alice B")
        await alice.send({"type": "hangup", "to": "n-bob"})
        await bob.expect("call-ended")

        await alice.send({"type": "call-request", "to": "n-dave"})  # offline: a missed call for dave
        await alice.expect("call-ended")
        await written(everyone, "n-dave")
        dave = await Peer.connect(everyone, "n-dave", None)
        missed = await dave.expect("missed-calls")
        assert missed["calls"][0]["caller"] == "n-alice" and missed["displayNames"] == {"n-alice": "Alice B"}
        await dave.close()

        await alice.send({"type": "auth", "token": token("n-alice", 600, name="Alice C")})
        await alice.expect("auth-renewed")
        assert (await bob.presence_of("n-alice")).get("displayName") == "Alice C"
        await carol.send({"type": "call-request", "to": "n-bob"})
        assert "displayName" not in await bob.expect("call-request", **{"from": "n-carol"})
    finally:
        for peer in (alice, bob, carol):
            await peer.close()


async def test_contacts_show_names_but_a_stranger_learns_none(contacts_only: ServerProcess) -> None:
    """Contacts and requesters come with their names in `contacts`; the one asked, or called, by a stranger is
    not shown to them; a contact's new name (a new connection) sends their contacts a new `contacts` frame."""
    alice = await Peer.connect(contacts_only, "c-alice", "Alice B")
    bob = await Peer.connect(contacts_only, "c-bob", "Bob")
    await alice.send({"type": "contact-add", "to": "c-bob"})
    await bob.expect("contacts")
    await bob.send({"type": "contact-add", "to": "c-alice"})
    frame = await bob.until("contacts", lambda f: f["contacts"])
    assert [(c["id"], c.get("displayName")) for c in frame["contacts"]] == [("c-alice", "Alice B")]

    stranger = await Peer.connect(contacts_only, "c-mallory", "Mallory")
    await stranger.send({"type": "contact-add", "to": "c-alice"})
    mine = await stranger.expect("contacts")
    assert mine["outgoing"][0]["id"] == "c-alice" and "displayName" not in mine["outgoing"][0]
    asked = await alice.until("contacts", lambda f: f["incoming"])
    assert asked["incoming"] == [{"id": "c-mallory", "at": asked["incoming"][0]["at"], "displayName": "Mallory"}]
    await stranger.send({"type": "call-request", "to": "c-alice"})  # silenced: contacts only
    await stranger.expect("call-ringing")

    await alice.close()
    again = await Peer.connect(contacts_only, "c-alice", "Alice Z")
    await bob.until("contacts", lambda f: f["contacts"][0].get("displayName") == "Alice Z")
    assert again.welcome.get("displayNames") == {"c-bob": "Bob"}
    await stranger.send({"type": "settings", "data": {"callsFrom": None}})
    await stranger.expect("contacts")
    assert not any("Alice" in text for text in stranger.seen), stranger.seen
    for peer in (again, bob, stranger):
        await peer.close()
