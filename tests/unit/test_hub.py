"""The hub performs the switchboard's decisions on connections: in-memory connections, a real event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from peercall.broker.memory import MemoryBroker
from peercall.core.records import CallRecord, Outcome
from peercall.hub.router import Hub
from peercall.store.memory import MemoryHistory


class FakeConnection:
    def __init__(self, hub: Hub, client_id: str) -> None:
        self.id = client_id
        self.cid = hub.new_cid()
        self.errors = 0
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.arrived = asyncio.Event()

    async def send_text(self, text: str) -> bool:
        return self.send_now(text)

    def send_now(self, text: str) -> bool:
        if self.closed:
            return False
        self.sent.append(json.loads(text))
        self.arrived.set()
        return True

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]

    async def wait_for(self, type: str, timeout: float = 2.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.sent:
                    if message["type"] == type:
                        return message
                self.arrived.clear()
                await self.arrived.wait()


async def online(hub: Hub, *ids: str) -> list[FakeConnection]:
    conns = []
    for cid in ids:
        conn = FakeConnection(hub, cid)
        await hub.join(conn)
        conns.append(conn)
    return conns


async def test_join_greets_and_announces() -> None:
    """A newcomer is welcomed with who is online; the others learn it is online."""
    hub = Hub(MemoryBroker())
    alice, bob = await online(hub, "alice", "bob")
    assert bob.sent[0]["type"] == "welcome" and bob.sent[0]["online"] == ["alice"]
    presence = await alice.wait_for("presence")
    assert {"id": "bob", "status": "online"} in presence.get("changes", [presence])


async def test_bad_frame_reaches_nobody_else() -> None:
    """A bad frame is answered to its sender only, and counted."""
    hub = Hub(MemoryBroker())
    alice, bob = await online(hub, "alice", "bob")
    before = len(bob.sent)
    await hub.handle(alice, '{"type":"hangup","to":"bob","from":"carol"}')
    assert alice.sent[-1]["code"] == "bad-message"
    assert len(bob.sent) == before and alice.errors == 1


async def test_ring_timeout_fires_on_the_loop() -> None:
    """The hub's timer ends a ringing call by the ring timeout, without any further frame."""
    hub = Hub(MemoryBroker(ring_timeout=0.05))
    alice, bob = await online(hub, "alice", "bob")
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    ended = await alice.wait_for("call-ended")
    assert ended["outcome"] == "missed"
    assert (await bob.wait_for("call-ended"))["callId"] == ended["callId"]


async def test_leave_starts_grace_and_peer_lost_follows() -> None:
    """A party that leaves is given the grace period, then the other side hears peer-lost."""
    hub = Hub(MemoryBroker(resume_grace=0.05))
    alice, bob = await online(hub, "alice", "bob")
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    await hub.handle(bob, '{"type":"call-accept","to":"alice"}')
    await hub.leave(alice)
    assert "call-ended" not in bob.types()
    assert (await bob.wait_for("call-ended"))["reason"] == "peer-lost"


class BrokenHistory(MemoryHistory):
    async def record(self, rec: CallRecord, *, notified: bool = False) -> None:
        raise OSError("disk full")


async def test_history_failure_is_counted_and_calls_go_on() -> None:
    """A history that cannot be written is logged and counted; calling keeps working."""
    hub = Hub(MemoryBroker(), history=BrokenHistory())
    alice, bob = await online(hub, "alice", "bob")
    for _ in range(2):
        await hub.handle(alice, '{"type":"call-request","to":"bob"}')
        await hub.handle(bob, '{"type":"call-reject","to":"alice"}')
    await hub.drain()
    assert hub.history_failures == 2
    assert [m["outcome"] for m in alice.sent if m["type"] == "call-ended"] == ["rejected", "rejected"]


class SlowHistory(MemoryHistory):
    """Each write waits until the test lets it through, and says what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.go = asyncio.Event()

    async def record_many(self, records: Sequence[tuple[CallRecord, bool]]) -> None:
        self.batches.append([rec.call_id for rec, _ in records])
        await self.go.wait()
        await super().record_many(records)


async def test_calls_that_end_during_a_history_write_are_written_together_by_the_next() -> None:
    """One writer: while a write is under way, the calls that end meanwhile wait and go in one batch; a
    call-summary sent meanwhile is kept once its call's record is there."""
    history = SlowHistory()
    hub = Hub(MemoryBroker(), history=history)
    alice, bob = await online(hub, "alice", "bob")
    for _ in range(4):
        await hub.handle(alice, '{"type":"call-request","to":"bob"}')
        await hub.handle(bob, '{"type":"call-reject","to":"alice"}')
        await asyncio.sleep(0)  # the writer starts on the first call and waits in its write
    ended = [m["callId"] for m in alice.sent if m["type"] == "call-ended"]
    await hub.handle(alice, json.dumps({"type": "call-summary", "callId": ended[-1], "data": {"mos": 4.2}}))
    assert history.batches == [ended[:1]]
    history.go.set()
    await hub.drain()
    assert history.batches == [ended[:1], ended[1:]]
    page, _ = await history.calls_for("alice")
    assert sorted(r.call_id for r in page) == sorted(ended)
    assert next(r for r in page if r.call_id == ended[-1]).quality == {"alice": {"mos": 4.2}}


async def test_history_writes_go_on_after_the_writer_was_cancelled() -> None:
    """A writer cancelled in the middle of a write (shutdown) loses that write only: the calls that ended
    meanwhile and later are written, and a call-summary waiting for the lost one does not wait for ever."""
    history = SlowHistory()
    hub = Hub(MemoryBroker(), history=history)
    alice, bob = await online(hub, "alice", "bob")

    async def one_call() -> str:
        await hub.handle(alice, '{"type":"call-request","to":"bob"}')
        await hub.handle(bob, '{"type":"call-reject","to":"alice"}')
        await asyncio.sleep(0)
        return [m["callId"] for m in alice.sent if m["type"] == "call-ended"][-1]

    first = await one_call()  # the writer takes it and waits in its write
    await hub.handle(alice, json.dumps({"type": "call-summary", "callId": first, "data": {"mos": 3.0}}))
    second = await one_call()  # waits for the next write
    assert hub._writer is not None and history.batches == [[first]]
    hub._writer.cancel()
    await asyncio.sleep(0)
    history.go.set()
    third = await one_call()
    async with asyncio.timeout(2):
        await hub.drain()
    page, _ = await history.calls_for("alice")
    assert sorted(r.call_id for r in page) == sorted([second, third])


async def test_history_records_and_missed_calls_on_connect() -> None:
    """Each ended call is written once; a user who was offline is told of the calls they missed on connect."""
    history = MemoryHistory()
    hub = Hub(MemoryBroker(), history=history)
    (alice,) = await online(hub, "alice")
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')  # bob is offline: unavailable
    await hub.drain()
    (bob,) = await online(hub, "bob")
    missed = await bob.wait_for("missed-calls")
    assert [c["caller"] for c in missed["calls"]] == ["alice"]
    assert missed["calls"][0]["outcome"] == Outcome.UNAVAILABLE.value
    page, _ = await history.calls_for("alice")
    assert [r.outcome for r in page] == [Outcome.UNAVAILABLE]


async def test_close_all_closes_everyone_and_drains() -> None:
    """Shutdown closes every connection with the given code and refuses newcomers."""
    hub = Hub(MemoryBroker())
    alice, bob = await online(hub, "alice", "bob")
    await hub.close_all(1001, "server shutting down")
    assert alice.closed == bob.closed == (1001, "server shutting down")
    assert hub.draining


async def test_presence_storm_is_batched() -> None:
    """Fifty users arriving at once cost each connection a frame or two, not fifty, and nobody is missed."""
    hub = Hub(MemoryBroker(), presence_interval=0.05)
    (watcher,) = await online(hub, "watcher")
    await asyncio.sleep(0.1)
    watcher.sent.clear()
    await online(hub, *[f"user{i}" for i in range(50)])
    batch = await watcher.wait_for("presence")
    frames = [m for m in watcher.sent if m["type"] == "presence"]
    assert len(frames) <= 2
    seen = {c["id"] for m in frames for c in m.get("changes", [m])}
    assert seen == {f"user{i}" for i in range(50)} and batch["changes"][0]["status"] == "online"


async def test_blip_within_the_interval_is_coalesced() -> None:
    """A user who leaves and comes back within one interval is announced by its final state only."""
    hub = Hub(MemoryBroker(), presence_interval=0.05)
    watcher, bob = await online(hub, "watcher", "bob")
    await asyncio.sleep(0.1)
    watcher.sent.clear()
    await hub.leave(bob)
    await online(hub, "bob")
    await asyncio.sleep(0.1)
    assert [m for m in watcher.sent if m["type"] == "presence"] == [
        {"type": "presence", "id": "bob", "status": "online"}
    ]
