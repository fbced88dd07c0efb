"""Routing decisions of the hub, with in-memory connections instead of sockets."""

from __future__ import annotations

import json
from typing import Any

from peercall.hub.router import Hub


class FakeConnection:
    def __init__(self, client_id: str) -> None:
        self.id = client_id
        self.errors = 0
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def send_text(self, text: str) -> bool:
        if self.closed:
            return False
        self.sent.append(json.loads(text))
        return True

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


async def online(hub: Hub, *ids: str) -> list[FakeConnection]:
    conns = []
    for cid in ids:
        conn = FakeConnection(cid)
        assert hub.claim(conn)
        await hub.join(conn)
        conns.append(conn)
    return conns


async def test_join_greets_and_announces() -> None:
    """A newcomer is welcomed with who is online; the others learn it is online."""
    hub = Hub()
    alice, bob = await online(hub, "alice", "bob")
    assert bob.sent[0] == {"type": "welcome", "id": "bob", "online": ["alice"], "protocol": 1}
    assert alice.sent[-1] == {"type": "presence", "id": "bob", "status": "online"}
    assert bob.types() == ["welcome"]


async def test_forward_reaches_only_the_target() -> None:
    """A frame goes to its `to` alone, stamped with the sender's id."""
    hub = Hub()
    alice, bob, carol = await online(hub, "alice", "bob", "carol")
    before = len(carol.sent)
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    assert bob.sent[-1] == {"type": "call-request", "from": "alice", "to": "bob"}
    assert len(carol.sent) == before
    assert alice.types()[-1] == "presence"


async def test_offline_target_is_unavailable() -> None:
    """Sending to someone who is not connected answers the sender with `unavailable`."""
    hub = Hub()
    (alice,) = await online(hub, "alice")
    await hub.handle(alice, '{"type":"call-request","to":"zed","callId":"k1"}')
    assert alice.sent[-1]["code"] == "unavailable"
    assert alice.sent[-1]["to"] == "zed" and alice.sent[-1]["callId"] == "k1"


async def test_bad_frame_reaches_nobody_else() -> None:
    """A bad frame is answered to its sender only, and counted."""
    hub = Hub()
    alice, bob = await online(hub, "alice", "bob")
    before = len(bob.sent)
    await hub.handle(alice, '{"type":"hangup","to":"bob","from":"carol"}')
    assert alice.sent[-1]["code"] == "bad-message"
    assert len(bob.sent) == before
    assert alice.errors == 1


async def test_second_claim_of_an_id_fails() -> None:
    """An id held by one connection cannot be claimed by another; leaving frees it."""
    hub = Hub()
    (first,) = await online(hub, "alice")
    second = FakeConnection("alice")
    assert not hub.claim(second)
    await hub.leave(second)  # a refused connection leaving must not remove the real one
    assert hub.online() == ["alice"]
    await hub.leave(first)
    assert hub.claim(second)


async def test_leave_announces_offline() -> None:
    """When someone leaves, everyone else is told, and frames to them are `unavailable`."""
    hub = Hub()
    alice, bob = await online(hub, "alice", "bob")
    await hub.leave(bob)
    assert alice.sent[-1] == {"type": "presence", "id": "bob", "status": "offline"}
    await hub.handle(alice, '{"type":"hangup","to":"bob"}')
    assert alice.sent[-1]["code"] == "unavailable"


async def test_close_all_closes_everyone_and_drains() -> None:
    """Shutdown closes every connection with the given code and refuses newcomers."""
    hub = Hub()
    alice, bob = await online(hub, "alice", "bob")
    await hub.close_all(1001, "server shutting down")
    assert alice.closed == bob.closed == (1001, "server shutting down")
    assert hub.draining
