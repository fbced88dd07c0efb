"""`Hub.close_user` over every broker: every connection of one user (or of one sign-in of theirs) closes, on every
node, within a second."""

from __future__ import annotations

import asyncio
import time

from peercall.hub.router import Hub

from .conftest import FakeConnection, MakeHub
from .test_broker import nodes_of

BOUND = 1.0  # seconds: the documented bound (docs/security.md, "revocation delay")


class Watched(FakeConnection):
    """A FakeConnection that says when it is closed; `sign_in`: that of its token (the session layer's)."""

    def __init__(self, hub: Hub, user: str, sign_in: str | None = None) -> None:
        super().__init__(hub, user)
        self.closing = asyncio.Event()
        self.sign_in = sign_in

    async def close(self, code: int, reason: str) -> None:
        await super().close(code, reason)
        self.closing.set()


async def join(hub: Hub, user: str, sign_in: str | None = None) -> Watched:
    conn = Watched(hub, user, sign_in)
    await hub.join(conn)
    return conn


def sign_in_of(conn: object) -> str | None:
    assert isinstance(conn, Watched)
    return conn.sign_in


async def test_close_user_closes_every_connection_of_the_user_on_every_node(make_hub: MakeHub) -> None:
    """`close_user` on one node closes each connection of that user, on this node and the others, with the code
    and reason given, within a second; other users' connections stay open."""
    nodes = await nodes_of(make_hub)
    theirs = [await join(nodes[0], "alice"), await join(nodes[0], "alice"), await join(nodes[-1], "alice")]
    others = [await join(nodes[0], "bob"), await join(nodes[-1], "carol")]
    started = time.monotonic()
    nodes[-1].close_user("alice", 4401, "signed out by an administrator")
    async with asyncio.timeout(BOUND):
        for conn in theirs:
            await conn.closing.wait()
    assert time.monotonic() - started < BOUND
    assert [c.closed for c in theirs] == [(4401, "signed out by an administrator")] * 3
    await asyncio.sleep(0.1)  # what would have closed the others has had its chance
    assert [c.closed for c in others] == [None, None]


async def test_close_user_of_nobody_online_does_nothing(make_hub: MakeHub) -> None:
    """Closing a user with no connection is harmless, and later connections of theirs are not affected."""
    nodes = await nodes_of(make_hub)
    nodes[0].close_user("dave", 4401, "signed out")
    await asyncio.sleep(0.1)
    dave = await join(nodes[-1], "dave")
    await asyncio.sleep(0.1)
    assert dave.closed is None and dave.sent[0]["type"] == "welcome"


async def test_closing_one_sign_in_closes_its_connections_only(make_hub: MakeHub) -> None:
    """`close_user` with a sign-in closes, on every node, the user's connections of that sign-in only: the user's
    other sign-ins, and another user's connection of a sign-in of the same id, stay open."""
    nodes = await nodes_of(make_hub)
    for hub in nodes:
        hub.sign_in_of = sign_in_of
    ended = [await join(nodes[0], "alice", "s1"), await join(nodes[-1], "alice", "s1")]
    others = [
        await join(nodes[0], "alice", "s2"),
        await join(nodes[-1], "alice", "s2"),
        await join(nodes[-1], "alice"),  # a token without a sign-in (token mode)
        await join(nodes[-1], "bob", "s1"),
    ]
    started = time.monotonic()
    nodes[0].close_user("alice", 4401, "signed out", sign_in="s1")
    async with asyncio.timeout(BOUND):
        for conn in ended:
            await conn.closing.wait()
    assert time.monotonic() - started < BOUND
    assert [c.closed for c in ended] == [(4401, "signed out")] * 2
    await asyncio.sleep(0.1)  # what would have closed the others has had its chance
    assert [c.closed for c in others] == [None] * 4


async def test_the_call_of_a_user_whose_sign_in_ended_ends_at_once(make_hub: MakeHub) -> None:
    """Alice is signed out (or disabled) in a call with bob: her call cannot resume, so bob is told it ended
    (`peer-lost`) as soon as her connection is gone, not after the resume grace; a connection that merely dropped
    still keeps its call for the grace."""
    nodes = await nodes_of(make_hub, resume_grace=30)
    alice, carol = await join(nodes[0], "alice"), await join(nodes[0], "carol")
    bob, dave = await join(nodes[-1], "bob"), await join(nodes[-1], "dave")
    for caller, callee, node, callee_node in ((alice, bob, nodes[0], nodes[-1]), (carol, dave, nodes[0], nodes[-1])):
        await node.handle(caller, f'{{"type":"call-request","to":"{callee.id}"}}')
        await callee.wait_for("call-request")
        await callee_node.handle(callee, f'{{"type":"call-accept","to":"{caller.id}"}}')
        await caller.wait_for("call-accept")
    nodes[-1].close_user("alice", 4401, "disabled by an administrator")
    await alice.closing.wait()
    await nodes[0].leave(alice)  # as the session layer does once the socket is closed
    await nodes[0].leave(carol)  # a socket that dropped by itself
    ended = await bob.wait_for("call-ended", timeout=BOUND)
    assert (ended["outcome"], ended["reason"]) == ("answered", "peer-lost")
    await asyncio.sleep(0.3)
    assert "call-ended" not in dave.types()  # carol may still come back within the grace
