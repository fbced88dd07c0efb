"""The hub's behaviour over every broker (memory, and Redis): connections in memory, a real event loop.

The same tests, the same expectations: where the state lives must not show. tests/contract/conftest.py has the
`make_hub` fixture (parametrized over the brokers) and the `FakeConnection`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from peercall.broker import open_broker
from peercall.core.records import CallRecord, Outcome, Reason
from peercall.core.social import Audience, Screen, Screening, View
from peercall.core.switchboard import WELCOME_ONLINE_MAX, Presence, Send
from peercall.hub import nodeframe, router
from peercall.hub.router import Hub
from peercall.hub.social import Social
from peercall.protocol import messages
from peercall.store.memory import MemoryHistory

from .conftest import FakeConnection, MakeHub


async def online(hub: Hub, *users: str) -> list[FakeConnection]:
    conns = []
    for user in users:
        conn = FakeConnection(hub, user)
        await hub.join(conn)
        conns.append(conn)
    return conns


async def test_join_greets_and_announces(make_hub: MakeHub) -> None:
    """A newcomer is welcomed with who is online; the others learn it is online."""
    hub = await make_hub()
    alice, bob = await online(hub, "alice", "bob")
    assert bob.sent[0]["type"] == "welcome" and bob.sent[0]["online"] == ["alice"]
    presence = await alice.wait_for("presence")
    assert {"id": "bob", "status": "online"} in presence.get("changes", [presence])


def hold_connects(hub: Hub) -> asyncio.Event:
    """Have `hub`'s broker hold every connect until the event returned is set (a join that waits on its store)."""
    gate = asyncio.Event()
    connect = hub.broker.connect

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await connect(*args, **kwargs)

    hub.broker.connect = held  # type: ignore[method-assign]
    return gate


async def test_a_join_that_takes_long_keeps_a_bounded_number_of_frames(make_hub: MakeHub) -> None:
    """Frames for a connection whose join waits on its broker (a store that hangs) are kept for after its welcome,
    up to 1,000: then it gets its welcome, those, and a close with 1013 (it comes back with a fresh welcome), and
    what came beyond them is not kept."""
    hub = await make_hub()
    gate = hold_connects(hub)
    late = FakeConnection(hub, "late")
    joining = asyncio.ensure_future(hub.join(late))
    await asyncio.sleep(0)
    for n in range(1_500):  # as frames from other nodes for it would come
        hub.deliver(late.cid, nodeframe.SEND, json.dumps({"type": "presence", "id": f"u{n}", "status": "online"}))
    assert max(len(waiting) for _, waiting in hub._joining.values()) == 1_001
    gate.set()
    await joining
    assert late.types()[0] == "welcome"
    assert [m["id"] for m in late.sent[1:]] == [f"u{n}" for n in range(1_000)]
    assert late.closed == (1013, "joining took too long")
    assert hub._joining == {}


async def test_presence_while_a_connection_is_still_joining_comes_after_what_waited(make_hub: MakeHub) -> None:
    """A presence batch flushed while a connection takes what waited for its welcome (in the node's connections
    already) comes after it: sent at once it overtook an older one, and the page showed a user who had left as
    online."""
    hub = await make_hub()
    gate = hold_connects(hub)

    class Yielding(FakeConnection):
        async def send_text(self, text: str) -> bool:
            await asyncio.sleep(0)  # as a transport that waits for its writer may
            return self.send_now(text)

    late = Yielding(hub, "late")
    joining = asyncio.ensure_future(hub.join(late))
    await asyncio.sleep(0)
    for n in range(50):
        hub.deliver(late.cid, nodeframe.SEND, json.dumps({"type": "presence", "id": f"u{n}", "status": "online"}))
    gate.set()
    await late.wait_for("welcome")
    hub.presence_changed(Presence("u49", "offline", last_seen=1.0))
    hub._flush_presence()
    await joining
    await asyncio.sleep(0.05)
    changes = [c for m in late.sent if m["type"] == "presence" for c in m.get("changes", [m])]
    assert [c["status"] for c in changes if c["id"] == "u49"] == ["online", "offline"], late.sent


async def test_bad_frame_reaches_nobody_else(make_hub: MakeHub) -> None:
    """A bad frame is answered to its sender only, and counted."""
    hub = await make_hub()
    alice, bob = await online(hub, "alice", "bob")
    before = len(bob.sent)
    await hub.handle(alice, '{"type":"hangup","to":"bob","from":"carol"}')
    assert alice.sent[-1]["code"] == "bad-message"
    assert len(bob.sent) == before and alice.errors == 1


async def test_ring_timeout_fires_on_the_loop(make_hub: MakeHub) -> None:
    """The hub's timer ends a ringing call by the ring timeout, without any further frame."""
    hub = await make_hub(ring_timeout=0.05)
    alice, bob = await online(hub, "alice", "bob")
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    ended = await alice.wait_for("call-ended")
    assert ended["outcome"] == "missed"
    assert (await bob.wait_for("call-ended"))["callId"] == ended["callId"]


async def test_leave_starts_grace_and_peer_lost_follows(make_hub: MakeHub) -> None:
    """A party that leaves is given the grace period, then the other side hears peer-lost."""
    hub = await make_hub(resume_grace=0.05)
    alice, bob = await online(hub, "alice", "bob")
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    await hub.handle(bob, '{"type":"call-accept","to":"alice"}')
    await hub.leave(alice)
    assert "call-ended" not in bob.types()
    assert (await bob.wait_for("call-ended"))["reason"] == "peer-lost"


class BrokenHistory(MemoryHistory):
    async def record(self, rec: CallRecord, *, notified: bool = False) -> None:
        raise OSError("disk full")


async def test_history_failure_is_counted_and_calls_go_on(make_hub: MakeHub) -> None:
    """A history that cannot be written is logged and counted; calling keeps working."""
    hub = await make_hub(history=BrokenHistory())
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


async def test_calls_that_end_during_a_history_write_are_written_together_by_the_next(make_hub: MakeHub) -> None:
    """One writer: while a write is under way, the calls that end meanwhile wait and go in one batch; a
    call-summary sent meanwhile is kept once its call's record is there."""
    history = SlowHistory()
    hub = await make_hub(history=history)
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


async def rejected_call(hub: Hub, alice: FakeConnection, bob: FakeConnection) -> str:
    """Alice calls bob, who rejects it: the call's id (its record goes to the history writer)."""
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    await hub.handle(bob, '{"type":"call-reject","to":"alice"}')
    await asyncio.sleep(0)
    return [m["callId"] for m in alice.sent if m["type"] == "call-ended"][-1]


async def test_a_history_write_that_never_returns_holds_up_no_later_call(
    make_hub: MakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write to a database that stopped answering fails after `_WRITE_WITHIN` (logged and counted: that call is
    missing from the history) and the writer goes on: the calls that ended meanwhile and later are written."""
    monkeypatch.setattr(router, "_WRITE_WITHIN", 0.3)
    history = SlowHistory()  # its first write waits for `go`, which never comes
    hub = await make_hub(history=history)
    alice, bob = await online(hub, "alice", "bob")

    first = await rejected_call(hub, alice, bob)
    second = await rejected_call(hub, alice, bob)
    assert history.batches == [[first]]
    history.go = FirstOnly(history.go)  # later writes go through at once
    async with asyncio.timeout(5):
        await hub.drain()
    third = await rejected_call(hub, alice, bob)
    async with asyncio.timeout(5):
        await hub.drain()
    page, _ = await history.calls_for("alice")
    assert sorted(r.call_id for r in page) == sorted([second, third])
    assert hub.history_failures == 1


class FirstOnly:
    """An event that the first waiter waits for (never set here), and every later one finds set."""

    def __init__(self, first: asyncio.Event) -> None:
        self.first = first

    async def wait(self) -> bool:
        return True


async def test_history_writes_go_on_after_the_writer_was_cancelled(make_hub: MakeHub) -> None:
    """A writer cancelled in the middle of a write (shutdown) loses that write only: the calls that ended
    meanwhile and later are written, and a call-summary waiting for the lost one does not wait for ever."""
    history = SlowHistory()
    hub = await make_hub(history=history)
    alice, bob = await online(hub, "alice", "bob")

    first = await rejected_call(hub, alice, bob)  # the writer takes it and waits in its write
    await hub.handle(alice, json.dumps({"type": "call-summary", "callId": first, "data": {"mos": 3.0}}))
    second = await rejected_call(hub, alice, bob)  # waits for the next write
    assert hub._writer is not None and history.batches == [[first]]
    hub._writer.cancel()
    await asyncio.sleep(0)
    history.go.set()
    third = await rejected_call(hub, alice, bob)
    async with asyncio.timeout(2):
        await hub.drain()
    page, _ = await history.calls_for("alice")
    assert sorted(r.call_id for r in page) == sorted([second, third])


async def test_history_records_and_missed_calls_on_connect(make_hub: MakeHub) -> None:
    """Each ended call is written once; a user who was offline is told of the calls they missed on connect."""
    history = MemoryHistory()
    hub = await make_hub(history=history)
    (alice,) = await online(hub, "alice")
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')  # bob is offline: unavailable
    await hub.drain()
    (bob,) = await online(hub, "bob")
    missed = await bob.wait_for("missed-calls")
    assert [c["caller"] for c in missed["calls"]] == ["alice"]
    assert missed["calls"][0]["outcome"] == Outcome.UNAVAILABLE.value
    page, _ = await history.calls_for("alice")
    assert [r.outcome for r in page] == [Outcome.UNAVAILABLE]


async def test_a_flood_of_missed_calls_is_told_bounded(make_hub: MakeHub) -> None:
    """60 callers calling an offline user 5 times each: on connect, one frame with the newest 50 and the total,
    where each caller counts 3 times at most; the history keeps all 300 calls."""
    history = MemoryHistory()
    hub = await make_hub(history=history)
    callers = await online(hub, *(f"c{i:02}" for i in range(60)))
    for _ in range(5):
        for caller in callers:
            await hub.handle(caller, '{"type":"call-request","to":"bob"}')
    await hub.drain()
    (bob,) = await online(hub, "bob")
    missed = await bob.wait_for("missed-calls")
    assert missed["total"] == 180
    assert len(missed["calls"]) == 50
    assert len(json.dumps(missed)) < 20_000
    assert len((await history.calls_for("bob", limit=1000))[0]) == 300


async def test_the_history_writer_deletes_calls_older_than_the_retention() -> None:
    """With a retention of one day, the writer deletes the calls that ended over a day ago, and keeps the rest."""
    history = MemoryHistory()
    now = 1_800_000_000.0
    broker = open_broker("memory://")
    hub = Hub(broker, history=history, clock=lambda: now, history_retention=86400)
    await broker.start()
    try:
        old = CallRecord(
            "old",
            "alice",
            "bob",
            "d",
            None,
            now - 3 * 86400,
            None,
            now - 3 * 86400,
            Outcome.MISSED,
            Reason.INVITE_TIMEOUT,
            None,
        )
        await history.record(old)
        (alice,) = await online(hub, "alice")
        await hub.handle(alice, '{"type":"call-request","to":"bob"}')  # bob is offline: a call ends, is written
        await hub.drain()
        page, _ = await history.calls_for("bob")
        assert [r.outcome for r in page] == [Outcome.UNAVAILABLE]
    finally:
        await hub.close_all(1001, "test over")
        await broker.stop()


async def test_close_all_closes_everyone_and_drains(make_hub: MakeHub) -> None:
    """Shutdown closes every connection with the given code and refuses newcomers."""
    hub = await make_hub()
    alice, bob = await online(hub, "alice", "bob")
    await hub.close_all(1001, "server shutting down")
    assert alice.closed == bob.closed == (1001, "server shutting down")
    assert hub.draining


def presence_frames(conn: FakeConnection) -> list[dict[str, Any]]:
    return [m for m in conn.sent if m["type"] == "presence"]


async def told_of(conn: FakeConnection, users: set[str], timeout: float = 3.0) -> None:
    """Wait until `conn` was told the presence of every one of `users`."""
    async with asyncio.timeout(timeout):
        while not users <= {c["id"] for m in presence_frames(conn) for c in m.get("changes", [m])}:
            conn.arrived.clear()
            await conn.arrived.wait()


async def test_presence_storm_is_batched(make_hub: MakeHub) -> None:
    """Fifty users arriving at once cost each connection a frame or two, not fifty, and nobody is missed."""
    hub = await make_hub(presence_interval=0.5)
    (watcher,) = await online(hub, "watcher")
    everyone = {f"user{i}" for i in range(50)}
    await asyncio.gather(*(online(hub, user) for user in sorted(everyone)))
    await told_of(watcher, everyone)
    frames = presence_frames(watcher)
    assert len(frames) <= 2
    assert all(c["status"] == "online" for m in frames for c in m.get("changes", [m]))


async def test_blip_within_the_interval_is_coalesced(make_hub: MakeHub) -> None:
    """A user who leaves and comes back within one interval is announced by its final state only."""
    hub = await make_hub(presence_interval=0.3)
    watcher, bob = await online(hub, "watcher", "bob")
    await told_of(watcher, {"bob"})
    watcher.sent.clear()
    await hub.leave(bob)
    await online(hub, "bob")
    await told_of(watcher, {"bob"})
    await asyncio.sleep(0.4)  # and nothing more in the next interval
    assert presence_frames(watcher) == [{"type": "presence", "id": "bob", "status": "online"}]


async def test_negotiation_frames_pass_between_the_parties_of_an_answered_call_only(make_hub: MakeHub) -> None:
    """offer/answer/candidate reach the other party of an answered call, with `from` and `callId` stamped; before
    the call is answered they get not-in-call and reach nobody."""
    hub = await make_hub()
    alice, bob = await online(hub, "alice", "bob")
    offer = '{"type":"offer","to":"bob","data":{"type":"offer","sdp":"v=0"}}'
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    await hub.handle(alice, offer)
    assert alice.sent[-1]["code"] == "not-in-call" and "offer" not in bob.types()
    await hub.handle(bob, '{"type":"call-accept","to":"alice"}')
    call_id = (await alice.wait_for("call-accept"))["callId"]
    for _ in range(2):  # the second one takes the hot path (Redis: the remembered route)
        await hub.handle(alice, offer)
    await hub.handle(bob, '{"type":"candidate","to":"alice","data":null}')
    assert [m for m in bob.sent if m["type"] == "offer"] == 2 * [
        {"type": "offer", "from": "alice", "to": "bob", "callId": call_id, "data": {"type": "offer", "sdp": "v=0"}}
    ]
    assert await alice.wait_for("candidate") == {
        "type": "candidate", "from": "bob", "to": "alice", "callId": call_id, "data": None
    }  # fmt: skip


async def test_call_summary_from_a_party_is_kept_and_from_anyone_else_refused(make_hub: MakeHub) -> None:
    """After call-ended, a party's call-summary goes with the call's history record; carol's gets not-in-call."""
    history = MemoryHistory()
    hub = await make_hub(history=history)
    alice, bob, carol = await online(hub, "alice", "bob", "carol")
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    await hub.handle(bob, '{"type":"call-reject","to":"alice"}')
    call_id = (await alice.wait_for("call-ended"))["callId"]
    summary = {"type": "call-summary", "callId": call_id, "data": {"mos": 4.5}}
    await hub.handle(carol, json.dumps(summary))
    assert carol.sent[-1]["type"] == "error" and carol.sent[-1]["code"] == "not-in-call"
    await hub.handle(bob, json.dumps(summary))
    await hub.drain()
    page, _ = await history.calls_for("bob")
    assert [r.quality for r in page] == [{"bob": {"mos": 4.5}}]


async def test_call_requests_are_rate_limited_per_user(make_hub: MakeHub) -> None:
    """Past `call_rate` call requests a minute, a request is answered rate-limited and rings nobody."""
    hub = await make_hub(call_rate=2)
    alice, bob = await online(hub, "alice", "bob")
    for _ in range(2):
        await hub.handle(alice, '{"type":"call-request","to":"bob"}')
        await hub.handle(alice, '{"type":"hangup","to":"bob"}')
    await hub.handle(alice, '{"type":"call-request","to":"bob"}')
    assert alice.sent[-1]["type"] == "error" and alice.sent[-1]["code"] == "rate-limited"
    assert bob.types().count("call-request") == 2


class CountingBook(MemoryHistory):
    """A store that counts the circles read from it."""

    reads = 0

    async def circle(self, user: str, *, now: float) -> Any:
        self.reads += 1
        return await super().circle(user, now=now)


async def test_a_call_request_past_the_call_rate_costs_no_store_read(make_hub: MakeHub) -> None:
    """The call rate is charged before a request is screened: a user who sends call-requests to new ids as fast as
    the frame rate allows has the store read for as many as the call rate lets through, not for every one."""
    hub = await make_hub(call_rate=2)
    book = CountingBook()
    hub.social = Social(book, clock=time.time)
    (alice,) = await online(hub, "alice")
    before = book.reads
    for n in range(10):
        await hub.handle(alice, json.dumps({"type": "call-request", "to": f"nobody{n}"}))
    errors = [m["code"] for m in alice.sent if m["type"] == "error"]
    assert errors.count("rate-limited") == 8, errors
    assert book.reads - before == 2  # the two callees' circles (alice's is cached)


async def test_the_same_device_connecting_again_retires_its_older_connection(make_hub: MakeHub) -> None:
    """A second connection of the same device closes the first with 4501; the user stays online."""
    hub = await make_hub()
    (watcher,) = await online(hub, "watcher")
    old, new = FakeConnection(hub, "alice"), FakeConnection(hub, "alice")
    await hub.join(old, "tab-1")
    await hub.join(new, "tab-1")
    assert old.closed == (4501, "replaced by a newer connection")
    assert new.sent[0]["type"] == "welcome" and new.sent[0]["device"] == "tab-1"
    await told_of(watcher, {"alice"})
    assert all(c["status"] == "online" for m in presence_frames(watcher) for c in m.get("changes", [m]))


async def test_private_call_to_someone_offline_holds_nobody(make_hub: MakeHub) -> None:
    """Private: a stranger's call to offline bob rings on, yet bob, once online, can be called and can call out."""
    hub = await make_hub(private=True, ring_timeout=30)
    stranger, carol = await online(hub, "stranger", "carol")
    await hub.handle(stranger, '{"type":"call-request","to":"bob"}')
    await stranger.wait_for("call-ringing")
    (bob,) = await online(hub, "bob")
    await hub.handle(carol, '{"type":"call-request","to":"bob"}')
    await bob.wait_for("call-request", **{"from": "carol"})  # not busy: the stranger's call holds nobody
    await hub.handle(bob, '{"type":"call-reject","to":"carol"}')
    await carol.wait_for("call-ended")
    await hub.handle(bob, '{"type":"call-request","to":"carol"}')
    await carol.wait_for("call-request", **{"from": "bob"})  # bob may call out
    assert "call-request" not in [m["type"] for m in bob.sent if m.get("from") == "stranger"]
    assert "call-ended" not in stranger.types()  # and the stranger still hears it ring


async def test_private_busy_looks_like_no_answer(make_hub: MakeHub) -> None:
    """Private: calling someone in a call rings until the ring timeout and ends missed, as if nobody answered."""
    hub = await make_hub(private=True, ring_timeout=0.3)
    alice, carol, stranger = await online(hub, "alice", "carol", "stranger")
    await hub.handle(alice, '{"type":"call-request","to":"carol"}')
    await carol.wait_for("call-request")
    await hub.handle(carol, '{"type":"call-accept","to":"alice"}')
    await alice.wait_for("call-accept")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hub.handle(stranger, '{"type":"call-request","to":"alice"}')
    ended = await stranger.wait_for("call-ended")
    assert ended["outcome"] == "missed" and loop.time() - started >= 0.25
    assert "call-reject" not in stranger.types()
    assert "call-ended" not in alice.types() and "call-ended" not in carol.types()


# ------------------------------------------------------------------------------------------------ contacts


async def nodes_of(make_hub: MakeHub, **rules: Any) -> list[Hub]:
    """The hubs of one deployment: one node in memory, two nodes of one cluster with Redis."""
    first = await make_hub(**rules)
    return [first, await make_hub(**rules)] if first.broker.shared else [first]


class Told:
    """What a hub's broker told it of presence and circles, recorded (the hub's own handling stays)."""

    def __init__(self, hub: Hub) -> None:
        self.presences: list[Presence] = []
        self.circles: list[list[str]] = []
        self.arrived = asyncio.Event()
        presence_changed, circles_changed = hub.presence_changed, hub.circles_changed

        def on_presence(change: Presence) -> None:
            self.presences.append(change)
            self.arrived.set()
            presence_changed(change)

        def on_circles(users: list[str]) -> None:
            self.circles.append(users)
            self.arrived.set()
            circles_changed(users)

        hub.presence_changed = on_presence  # type: ignore[method-assign]
        hub.circles_changed = on_circles  # type: ignore[method-assign]

    async def until(self, done: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.arrived.clear()
                await self.arrived.wait()


async def test_presences_say_online_in_a_call_and_last_seen(make_hub: MakeHub) -> None:
    """`presences` tells, for any node's users: online, in an answered call, or offline since when (or never seen)."""
    nodes = await nodes_of(make_hub)
    alice, carol = await online(nodes[0], "alice", "carol")
    (bob,) = await online(nodes[-1], "bob")
    await nodes[0].handle(alice, '{"type":"call-request","to":"bob"}')
    await bob.wait_for("call-request")
    await nodes[-1].handle(bob, '{"type":"call-accept","to":"alice"}')
    await alice.wait_for("call-accept")
    before = time.time()
    await nodes[0].leave(carol)
    found = await nodes[-1].broker.presences(["alice", "bob", "carol", "nobody"])
    assert found["alice"] == Presence("alice", "online", in_call=True)
    assert found["bob"] == Presence("bob", "online", in_call=True)
    assert found["nobody"] == Presence("nobody", "offline")
    assert found["carol"].status == "offline" and not found["carol"].in_call
    assert found["carol"].last_seen is not None and before <= found["carol"].last_seen <= time.time()
    assert await nodes[0].broker.presences([]) == {}


async def test_online_page_pages_by_prefix_in_id_order(make_hub: MakeHub) -> None:
    """`online_page` lists users online with a prefix, after a given id, at most `limit`, with who is in a call."""
    nodes = await nodes_of(make_hub)
    conns = await online(nodes[0], "al1", "b", "alice")
    conns += await online(nodes[-1], "al2", "bob", "alf")
    await nodes[0].handle(conns[2], '{"type":"call-request","to":"al2"}')  # alice calls al2 on the other node
    await conns[3].wait_for("call-request")
    await nodes[-1].handle(conns[3], '{"type":"call-accept","to":"alice"}')
    await conns[2].wait_for("call-accept")
    broker = nodes[-1].broker

    async def page(prefix: str, after: str | None, limit: int) -> list[tuple[str, bool]]:
        return [(p.user, p.in_call) for p in await broker.online_page(prefix, after, limit)]

    assert await page("al", None, 2) == [("al1", False), ("al2", True)]
    assert await page("al", "al2", 2) == [("alf", False), ("alice", True)]
    assert await page("al", "alice", 2) == []
    assert await page("b", "a", 10) == [("b", False), ("bob", False)]  # `after` before the prefix: from the prefix
    assert await page("", "alice", 1) == [("b", False)]
    assert await page("zz", None, 5) == [] and await page("", None, 0) == []
    assert all(p.status == "online" for p in await broker.online_page("", None, 50))


async def test_circle_changes_reach_every_node_this_one_too(make_hub: MakeHub) -> None:
    """`circles_changed` on one node is told to the hub of every node, the calling one included."""
    nodes = await nodes_of(make_hub)
    told = [Told(hub) for hub in nodes]
    nodes[-1].broker.circles_changed(["alice", "bob"])
    for t in told:
        await t.until(lambda t=t: bool(t.circles))  # type: ignore[misc]
        assert t.circles == [["alice", "bob"]]


async def test_a_presence_change_reaches_every_node_with_its_audience(make_hub: MakeHub) -> None:
    """A presence change keeps its audience (contacts only; everyone but the hidden; everyone) on every node."""
    nodes = await nodes_of(make_hub)
    told = [Told(hub) for hub in nodes]
    changes = [
        Presence("alice", "online", audience=Audience(frozenset({"bob", "carol"}))),
        Presence("alice", "online", in_call=True, audience=Audience(None, frozenset({"mallory"}))),
        Presence("alice", "offline", last_seen=1_800_000_000.25),
    ]
    for change in changes:
        nodes[0].broker.presence(change)
    for t in told:
        await t.until(lambda t=t: len(t.presences) == 3)  # type: ignore[misc]
        assert t.presences == changes


async def welcome_of(hub: Hub, user: str, view: View | None) -> dict[str, Any]:
    """The welcome a connection of `user` gets for `view` (straight from the broker: the hub's view aside)."""
    effects = await hub.broker.connect(hub.new_cid(), user, None, time.time(), view=view)
    welcome = effects[0]
    assert isinstance(welcome, Send) and welcome.message["type"] == "welcome"
    return welcome.message


async def test_a_welcome_for_contacts_lists_only_the_contacts(make_hub: MakeHub) -> None:
    """With a view of contacts only, `welcome` lists the contacts online, those of them in a call, and those seen
    lately (newest first): nobody else, none hidden, whatever node they are on."""
    nodes = await nodes_of(make_hub)
    conns = await online(nodes[0], "c1", "c2", "gone1", "gone2", "x")
    conns += await online(nodes[-1], "hidden", "stranger")
    c2, gone1, gone2, x = conns[1:5]
    await nodes[0].handle(c2, '{"type":"call-request","to":"x"}')
    await nodes[0].handle(x, '{"type":"call-accept","to":"c2"}')
    await c2.wait_for("call-accept")
    await nodes[0].leave(gone1)
    await nodes[0].leave(gone2)
    view = View(frozenset({"c1", "c2", "gone1", "gone2", "never", "hidden"}) - {"hidden"}, False, frozenset({"hidden"}))
    welcome = await welcome_of(nodes[-1], "me", view)
    assert welcome["online"] == ["c1", "c2"]
    assert welcome["inCall"] == ["c2"]
    assert [r["id"] for r in welcome["recent"]] == ["gone2", "gone1"]
    assert not welcome.get("more")
    gone = (await nodes[0].broker.presences(["gone1"]))["gone1"]
    assert welcome["recent"][1]["lastSeen"] == gone.last_seen


async def test_a_welcome_for_everyone_is_bounded_with_contacts_first(make_hub: MakeHub) -> None:
    """With a view of everyone, `welcome` lists at most WELCOME_ONLINE_MAX online, the contacts first, then the
    others in id order, never the hidden ones, and says `more` when there were more."""
    nodes = await nodes_of(make_hub)
    crowd = [f"u{i:03}" for i in range(WELCOME_ONLINE_MAX + 2)]
    conns = await online(nodes[0], *crowd[::2])
    conns += await online(nodes[-1], *crowd[1::2], "zed", "hidden")
    view = View(frozenset({"zed", "offline-friend"}), True, frozenset({"hidden", "u000"}))
    welcome = await welcome_of(nodes[-1], "me", view)
    assert welcome["online"] == ["zed", *crowd[1:WELCOME_ONLINE_MAX]]
    assert welcome.get("more") is True
    for gone in ("hidden", crowd[-1]):
        await nodes[-1].leave(next(c for c in conns if c.id == gone))
    welcome = await welcome_of(nodes[0], "me2", View(frozenset({"zed"}), True, frozenset({"hidden"})))
    assert welcome["online"][:3] == ["zed", "me", "u000"]
    assert [r["id"] for r in welcome["recent"]] == [crowd[-1]]
    assert welcome.get("more") is True


async def test_the_welcome_for_a_view_is_the_same_on_every_broker(make_hub: MakeHub) -> None:
    """The same state and view give the same welcome lists, in memory and in a cluster (a golden picture)."""
    nodes = await nodes_of(make_hub)
    conns = await online(nodes[0], "ann", "ben", "cat", "dan")
    conns += await online(nodes[-1], "eve", "fay")
    ann, ben = conns[:2]
    await nodes[0].handle(ann, '{"type":"call-request","to":"ben"}')
    await nodes[0].handle(ben, '{"type":"call-accept","to":"ann"}')
    await ann.wait_for("call-accept")
    await nodes[0].leave(conns[3])  # dan
    await nodes[-1].leave(conns[5])  # fay
    pictures = []
    for view in (
        View(frozenset({"ben", "dan", "eve"}), False),
        View(frozenset({"ben", "fay"}), True, frozenset({"cat"})),
    ):
        welcome = await welcome_of(nodes[-1], "me", view)
        recent = [r["id"] for r in welcome["recent"]]
        pictures.append((welcome["online"], welcome["inCall"], recent, bool(welcome.get("more"))))
    assert pictures == [
        (["ben", "eve"], ["ben"], ["dan"], False),
        (["ben", "ann", "eve"], ["ann", "ben"], ["fay", "dan"], False),
    ]


async def test_a_blocked_call_request_looks_offline_and_touches_no_device_of_the_callee(make_hub: MakeHub) -> None:
    """A call-request screened BLOCKED ends for the caller with exactly the frames of a call to someone offline,
    on one node or across two, and nothing reaches the callee's devices."""
    nodes = await nodes_of(make_hub)
    mallory, other = await online(nodes[0], "mallory", "other")
    (bob,) = await online(nodes[-1], "bob")
    await bob.wait_for("welcome")
    await asyncio.sleep(0.3)  # the presence of those who came after bob
    bob.sent.clear()

    async def call(caller: FakeConnection, callee: str, screen: Screen | None) -> list[dict[str, Any]]:
        env = messages.parse(json.dumps({"type": "call-request", "to": callee}), caller.id)
        start = len(caller.sent)
        await nodes[0].perform(await nodes[0].broker.receive(caller.cid, caller.id, env, time.time(), screen=screen))
        await asyncio.sleep(0.2)
        frames = [m for m in caller.sent[start:] if m["type"] != "presence"]
        return [{k: v for k, v in m.items() if k not in ("callId", "message")} for m in frames]

    blocked = await call(mallory, "bob", Screen(True, Screening.BLOCKED))
    offline = await call(other, "nobody-online", None)
    assert blocked == [{**m, "to": "bob"} if "to" in m else m for m in offline]
    assert bob.sent == []
    assert (await nodes[0].broker.presences(["mallory"]))["mallory"].in_call is False


# ---------------------------------------------------------------------------------------------- own presence


def own_in_call(conn: FakeConnection) -> bool | None:
    """What `conn` was last told of its own user's call: in one (True), not (False), nothing yet (None)."""
    told = None
    for m in presence_frames(conn):
        for change in m.get("changes", [m]):
            if change["id"] == conn.id:
                told = change.get("inCall", False)
    return told


async def until_own(conn: FakeConnection, in_call: bool, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while own_in_call(conn) is not in_call:
            conn.arrived.clear()
            await conn.arrived.wait()


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
async def test_a_users_other_devices_are_told_that_the_user_is_in_a_call_and_when_it_ends(
    make_hub: MakeHub, private: bool
) -> None:
    """A device that did not answer, and one that connects mid-call, learn that their user talks on another
    device and when that call ends, on whichever node each is; private mode tells them as well, and nobody else."""
    nodes = await nodes_of(make_hub, private=private)
    alice, laptop, carol = await online(nodes[0], "alice", "bob", "carol")
    (phone,) = await online(nodes[-1], "bob")
    await nodes[0].handle(alice, '{"type":"call-request","to":"bob"}')
    await phone.wait_for("call-request")
    await laptop.wait_for("call-request")
    await nodes[-1].handle(phone, '{"type":"call-accept","to":"alice"}')
    await laptop.wait_for("call-ended", reason="answered-elsewhere")
    await until_own(laptop, True)
    (tablet,) = await online(nodes[0], "bob")  # opened mid-call, on the other node than the phone
    assert tablet.sent[0]["type"] == "welcome"
    assert tablet.sent[1] == {"type": "presence", "id": "bob", "status": "online", "inCall": True}
    await nodes[0].handle(alice, '{"type":"hangup","to":"bob"}')
    await phone.wait_for("call-ended")
    for device in (laptop, tablet):
        await until_own(device, False)
    if private:  # the others were told nothing of alice or bob
        await asyncio.sleep(0.3)
        assert not any(c["id"] in ("alice", "bob") for m in presence_frames(carol) for c in m.get("changes", [m]))
