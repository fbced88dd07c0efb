"""What a node keeps in Redis, and what it does when Redis refuses: hubs on a real redis-server, driven in-process
with fake connections (tests/contract/conftest.py `FakeConnection`), so that the keys left behind can be counted.

- Redis holds what is live, not every id ever seen (#14 item 11).
- A write Redis refuses (OOM; READONLY after a failover is the same `RedisError` family) is rolled back or
  retried, never leaked (#14 item 12).
- A call's `data` is stored once, apart from the call the Lua scripts decode (#14 item 13).
- The node's one Redis listener never waits for one connection (#14 item 1; tests/cluster/test_slow_reader.py
  shows it with real sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from peercall.broker import open_broker
from peercall.broker import redis as redis_broker
from peercall.broker.redis import _APPLY, _Commands
from peercall.hub import nodeframe
from peercall.hub.router import Hub
from peercall.protocol.messages import MAX_CALL_DATA
from tests.cluster.conftest import RedisServer
from tests.contract.conftest import FakeConnection
from tests.unit.test_front import until

PREFIX = "peercall:"


@pytest.fixture
async def hubs(redis_server: RedisServer) -> AsyncIterator[tuple[int, Callable[..., Awaitable[Hub]]]]:
    """(db, make): `await make()` starts a hub on a fresh Redis database; a second one is another node."""
    db = redis_server.fresh_db()
    made: list[Hub] = []

    async def make(**rules: Any) -> Hub:
        broker = open_broker(redis_server.db_url(db), node_id=f"n{len(made)}", **rules)
        hub = Hub(broker, presence_interval=0.05)
        await broker.start()
        made.append(hub)
        return hub

    try:
        yield db, make
    finally:
        with contextlib.suppress(Exception):
            redis_server.command("CONFIG", "SET", "maxmemory", "0")
        for hub in made:
            await hub.close_all(1001, "test over")
            await hub.broker.stop()


def fields(server: RedisServer, db: int) -> dict[str, int]:
    """Every key of the database, with its size (hash fields, set or zset members; 1 for a string)."""
    sizes: dict[str, int] = {}
    for key in server.keys(db):
        kind = server.command("TYPE", key, db=db)
        size = {"hash": "HLEN", "zset": "ZCARD", "set": "SCARD"}.get(kind)
        sizes[key] = server.command(size, key, db=db) if size else 1
    return sizes


# ------------------------------------------------------------------------------------------- item 11


async def test_redis_keeps_what_is_live_not_every_id_ever_seen(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """1,000 users connect, call an id nobody has, and leave: Redis is left with the one user still online."""
    db, make = hubs
    hub = await make()
    stay = FakeConnection(hub, "stays")
    await hub.join(stay)
    for i in range(1000):
        conn = FakeConnection(hub, f"user{i}")
        await hub.join(conn)
        await hub.handle(conn, json.dumps({"type": "call-request", "to": f"nobody{i}"}))
        await hub.leave(conn)
    sizes = fields(redis_server, db)
    assert sizes[f"{PREFIX}ver"] == 1, "a version for each user and call that is live (one user, no call)"
    assert f"{PREFIX}u:stays" in sizes
    assert not [key for key in sizes if key.startswith(f"{PREFIX}u:") and key != f"{PREFIX}u:stays"]
    assert sizes.get(f"{PREFIX}online") == 1
    assert sizes.pop(f"{PREFIX}seen", 0) <= 1000  # last seen: the newest 1000, by design
    assert sizes.pop(f"{PREFIX}endedat", 0) <= 1000  # the calls that ended lately: the newest 10,000
    for key in [key for key in sizes if key.startswith(f"{PREFIX}ended:")]:  # who may send a call-summary, 1 h
        assert 0 < redis_server.command("TTL", key, db=db) <= 3600
        del sizes[key]
    assert sum(sizes.values()) < 10, sizes


async def test_calls_that_ended_lately_are_kept_as_one_node_keeps_them(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who may send a call's call-summary (`ended:{id}`) had a lifetime (an hour) and no count: a client placing
    calls under ever new ids (open mode) left ~600 keys a second per address in the Redis every node shares. The
    newest are kept, as one node's switchboard keeps them (10,000; 40 here), the others deleted by the
    housekeeping, their index with them; the newest call's parties may still send its summary, the oldest's not."""
    monkeypatch.setattr(redis_broker, "_ENDED_KEPT", 40)
    db, make = hubs
    hub = await make(lease=0.6)  # housekeeping every 0.2 s
    call_ids = []
    for i in range(100):
        conn = FakeConnection(hub, f"user{i}")
        await hub.join(conn)
        await hub.handle(conn, json.dumps({"type": "call-request", "to": f"nobody{i}"}))
        call_ids.append((await conn.wait_for("call-ended"))["callId"])
        await hub.leave(conn)

    def ended() -> list[str]:
        return [key for key in redis_server.keys(db) if key.startswith(f"{PREFIX}ended:")]

    await until(lambda: len(ended()) == 40)
    assert sorted(ended()) == sorted(f"{PREFIX}ended:{call_id}" for call_id in call_ids[-40:])
    assert redis_server.command("ZCARD", f"{PREFIX}endedat", db=db) == 40
    for i, told in ((99, "call-summary-ok"), (0, "error")):
        conn = FakeConnection(hub, f"user{i}")
        await hub.join(conn)
        summary = {"type": "call-summary", "callId": call_ids[i], "data": {"durationSec": 1.0}}
        await hub.handle(conn, json.dumps(summary))
        if told == "error":
            assert (await conn.wait_for("error"))["code"] == "not-in-call"
        else:
            await asyncio.sleep(0.2)
            assert "error" not in conn.types()
        await hub.leave(conn)


async def test_a_user_gone_and_back_is_never_taken_for_the_state_read_before(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """A version deleted with its user's hash is never handed out again: a change decided on the user as they were
    before they left and came back (the same version, "ABA") is refused and replayed."""
    _, make = hubs
    hub = await make()
    broker: Any = hub.broker
    bob = FakeConnection(hub, "bob")
    await hub.join(bob)
    sb, before = await broker._load({"bob"}, set(), None)  # a change that read bob as he is now
    await hub.leave(bob)
    again = FakeConnection(hub, "bob")
    await hub.join(again)
    commands = _Commands()
    broker._write(commands, sb, before)  # no change: nothing written, bob's key kept
    checks = broker._apply_args(before, commands.gone)
    applied = await broker.redis.eval(_APPLY, 2, f"{PREFIX}ver", f"{PREFIX}clock", *checks)
    assert applied == 0


# ------------------------------------------------------------------------------------------- item 12


async def test_a_connect_while_redis_refuses_writes_is_refused_cleanly(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """Redis out of memory (noeviction): a connect is refused with service-unavailable and 1013, and leaves no
    half-joined connection behind to collect presence frames."""
    _, make = hubs
    hub = await make()
    redis_server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis_server.command("CONFIG", "SET", "maxmemory", "1")
    conn = FakeConnection(hub, "alice")
    await hub.join(conn)
    assert conn.closed is not None and conn.closed[0] == 1013
    assert [m.get("code") for m in conn.sent] == ["service-unavailable"]
    assert hub._joining == {}
    assert len(hub) == 0


async def test_a_disconnect_while_redis_refuses_writes_is_told_when_it_accepts_them_again(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """A disconnect Redis refused (OOM) is queued and retried once Redis accepts writes: no ghost stays online."""
    db, make = hubs
    hub = await make(lease=0.6)
    other = await make(lease=0.6)
    watcher = FakeConnection(other, "watcher")
    await other.join(watcher)
    alice = FakeConnection(hub, "alice")
    await hub.join(alice)
    redis_server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis_server.command("CONFIG", "SET", "maxmemory", "1")
    await hub.leave(alice)  # must not raise
    assert redis_server.command("EXISTS", f"{PREFIX}u:alice", db=db) == 1  # not yet: Redis refused
    redis_server.command("CONFIG", "SET", "maxmemory", "0")
    started = time.monotonic()
    await watcher.wait_for("presence", timeout=5.0, id="alice", status="offline")
    assert time.monotonic() - started < 3.0
    assert redis_server.command("EXISTS", f"{PREFIX}u:alice", db=db) == 0


# ------------------------------------------------------------------------------------------- item 13


async def test_a_calls_data_is_stored_once_apart_from_the_call(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """A call-request's `data` (as large as a call control frame may carry) is kept once in a key of its own, not in
    the call every change decodes; a device of the callee that connects while it rings still gets it whole, and it
    is gone once answered."""
    db, make = hubs
    hub = await make()
    alice, bob = FakeConnection(hub, "alice"), FakeConnection(hub, "bob")
    await hub.join(alice)
    await hub.join(bob)
    data = {"note": "x" * (MAX_CALL_DATA - 20)}
    await hub.handle(alice, json.dumps({"type": "call-request", "to": "bob", "data": data}))
    call_id = (await alice.wait_for("call-ringing"))["callId"]
    assert (await bob.wait_for("call-request"))["data"] == data
    stored = redis_server.command("GET", f"{PREFIX}call:{call_id}", db=db)
    assert len(stored) < 1000 and "data" not in json.loads(stored)["request"]  # the call is small without it
    for _ in range(20):  # what the caller sends again changes nothing stored
        await hub.handle(alice, json.dumps({"type": "call-accept", "to": "bob", "callId": call_id}))
    late = FakeConnection(hub, "bob")
    await hub.join(late, device="phone")
    assert (await late.wait_for("call-request", callId=call_id))["data"] == data
    await hub.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    await alice.wait_for("call-accept", callId=call_id, **{"from": "bob"})
    assert redis_server.command("EXISTS", f"{PREFIX}calldata:{call_id}", db=db) == 0
    assert len(redis_server.command("GET", f"{PREFIX}call:{call_id}", db=db)) < 1000


async def test_a_call_that_ends_leaves_no_data_and_nobody_in_a_call(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """A call cancelled while it rings leaves no `data` behind; one hung up after it was answered takes both of its
    parties out of `incall` (one command for both), and its data, gone at the answer, stays gone."""
    db, make = hubs
    hub = await make()
    alice, bob = FakeConnection(hub, "alice"), FakeConnection(hub, "bob")
    await hub.join(alice)
    await hub.join(bob)
    request = {"type": "call-request", "to": "bob", "data": {"note": "hi"}}
    await hub.handle(alice, json.dumps(request))
    cancelled = (await alice.wait_for("call-ringing"))["callId"]
    assert redis_server.command("EXISTS", f"{PREFIX}calldata:{cancelled}", db=db) == 1
    await hub.handle(alice, json.dumps({"type": "hangup", "to": "bob", "callId": cancelled}))
    await bob.wait_for("call-ended", callId=cancelled)
    assert redis_server.command("EXISTS", f"{PREFIX}calldata:{cancelled}", db=db) == 0
    await hub.handle(alice, json.dumps(request))
    async with asyncio.timeout(2):
        while len(rings := [m for m in alice.sent if m["type"] == "call-ringing"]) < 2:
            alice.arrived.clear()
            await alice.arrived.wait()
    call_id = rings[1]["callId"]
    await hub.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    await alice.wait_for("call-accept", callId=call_id)
    assert sorted(redis_server.command("SMEMBERS", f"{PREFIX}incall", db=db)) == ["alice", "bob"]
    await hub.handle(bob, json.dumps({"type": "hangup", "to": "alice", "callId": call_id}))
    await alice.wait_for("call-ended", callId=call_id)
    assert redis_server.command("SMEMBERS", f"{PREFIX}incall", db=db) == []
    assert redis_server.command("EXISTS", f"{PREFIX}calldata:{call_id}", db=db) == 0
    assert redis_server.command("EXISTS", f"{PREFIX}call:{call_id}", db=db) == 0


# -------------------------------------------------------------------------------------------- item 1


class Stuck(FakeConnection):
    """A connection whose `send_text` never returns once it is stuck (a reader that stopped, a transport whose
    send waits for it); `send_now` still queues, as a bounded send queue does."""

    stuck = False

    async def send_text(self, text: str) -> bool:
        if self.stuck:
            await asyncio.Event().wait()
        return self.send_now(text)


async def test_the_listener_never_waits_for_one_connection(hubs: tuple[int, Callable[..., Awaitable[Hub]]]) -> None:
    """Frames from another node for a connection that cannot take them do not hold up the node's one listener:
    the frames after them, for other connections, arrive."""
    _, make = hubs
    here, there = await make(), await make()
    lagger, near = Stuck(here, "lagger"), FakeConnection(here, "near")
    talker, far = FakeConnection(there, "talker"), FakeConnection(there, "far")
    for hub, conn in ((here, lagger), (here, near), (there, talker), (there, far)):
        await hub.join(conn)
    lagger.stuck = True
    await there.handle(talker, json.dumps({"type": "call-request", "to": "lagger"}))
    await there.handle(far, json.dumps({"type": "call-request", "to": "near"}))
    await near.wait_for("call-request", timeout=3.0, **{"from": "far"})
    assert [m["type"] for m in lagger.sent][-1] == "call-request"


async def test_a_connection_redis_no_longer_has_is_told_to_connect_again(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """Another node reaped this node's connections while its lease could not be renewed (Redis down for longer
    than the lease; found by bench/soak.py --cluster): a frame from such a connection closes it with 1013 (connect
    again), not with 1011 and a KeyError in the log."""
    db, make = hubs
    hub = await make()
    alice, bob = FakeConnection(hub, "alice"), FakeConnection(hub, "bob")
    await hub.join(alice)
    await hub.join(bob)
    # What a reap leaves: alice is gone from Redis, and her key's version with it (`_APPLY`), so that a node that
    # knew her as she was (`_known`) finds out at its compare and set.
    redis_server.command("DEL", f"{PREFIX}u:alice", db=db)
    redis_server.command("HDEL", f"{PREFIX}ver", f"{PREFIX}u:alice", db=db)
    await hub.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    assert alice.closed is not None and alice.closed[0] == 1013, alice.closed
    assert "call-request" not in bob.types()


# ------------------------------------------------------------------------------------- what a node knows


async def _alice_and_bob_on_two_nodes(
    make: Callable[..., Awaitable[Hub]],
) -> tuple[Hub, Hub, FakeConnection, FakeConnection]:
    """Two nodes, alice connected to the first and bob to the second."""
    first, second = await make(), await make()
    alice, bob = FakeConnection(first, "alice"), FakeConnection(second, "bob")
    await first.join(alice)
    await second.join(bob)
    return first, second, alice, bob


async def test_a_call_across_nodes_needs_no_read_after_the_call_request(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """The accept on the callee's node, the caller's first offer and the hangup run on what the call-request and
    the accept left (told with their frames): one compare and set each, no read."""
    _, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    await first.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    ringing = await bob.wait_for("call-request")
    reads = first.broker.ops["read"], second.broker.ops["read"]
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": ringing["callId"]}))
    await alice.wait_for("call-accept")
    offer = {"type": "offer", "to": "bob", "callId": ringing["callId"], "data": {"type": "offer", "sdp": "v=0"}}
    await first.handle(alice, json.dumps(offer))
    await bob.wait_for("offer")
    await first.handle(alice, json.dumps({"type": "hangup", "to": "bob", "callId": ringing["callId"]}))
    await bob.wait_for("call-ended")
    assert (first.broker.ops["read"], second.broker.ops["read"]) == reads
    assert first.broker.ops["retry"] == second.broker.ops["retry"] == 0


async def test_a_peer_frame_whose_route_a_node_knows_crosses_nodes_with_no_coroutine(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """Once a call is answered, each party's node knows where the peer is: a peer frame is forwarded to the other
    node at once, as on one node (`Hub.receive` returns no coroutine to run). A node that does not know the route
    reads it (a coroutine), and knows it afterwards; a frame for someone not in the call is refused as before."""
    _, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    await first.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    call_id = (await bob.wait_for("call-request"))["callId"]
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    await alice.wait_for("call-accept")
    offer = {"type": "offer", "to": "bob", "callId": call_id, "data": {"type": "offer", "sdp": "v=0"}}
    assert first.receive(alice, json.dumps(offer)) is None  # type: ignore[arg-type]
    assert (await bob.wait_for("offer"))["from"] == "alice"
    answer = {"type": "answer", "to": "alice", "callId": call_id, "data": {"type": "answer", "sdp": "v=0"}}
    assert second.receive(bob, json.dumps(answer)) is None  # type: ignore[arg-type]
    await alice.wait_for("answer", **{"from": "bob"})

    second.broker.forget_route(bob.cid)  # type: ignore[attr-defined]
    candidate = {"type": "candidate", "to": "alice", "data": {"candidate": "c1", "sdpMid": "0", "sdpMLineIndex": 0}}
    rest = second.receive(bob, json.dumps(candidate))  # type: ignore[arg-type]
    assert rest is not None  # not known on this node: read
    await rest
    await alice.wait_for("candidate", data=candidate["data"])
    candidate["data"] = {"candidate": "c2", "sdpMid": "0", "sdpMLineIndex": 0}
    assert second.receive(bob, json.dumps(candidate)) is None  # type: ignore[arg-type]  # known now
    await alice.wait_for("candidate", data=candidate["data"])

    stray = {"type": "candidate", "to": "carol", "data": {"candidate": "c3", "sdpMid": "0", "sdpMLineIndex": 0}}
    rest = first.receive(alice, json.dumps(stray))  # type: ignore[arg-type]
    assert rest is not None
    await rest
    assert (await alice.wait_for("error"))["code"] == "not-in-call"
    assert [m["data"]["candidate"] for m in alice.sent if m["type"] == "candidate"] == ["c1", "c2"]


async def test_a_node_that_knows_a_stale_state_reads_and_replays(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a node knows of a call went stale (another node changed it, and did not say): its accept fails its
    compare and set and is replayed on the state read, with the same outcome as if it had read first. (The
    caller's node does not say it owns the call, as a node of the previous version: bob's node accepts itself.)"""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    monkeypatch.setattr(first.broker, "_tell_owner", lambda *_: None)
    await first.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    ringing = await bob.wait_for("call-request")
    # Another node's change that left the call as it was but moved its version (as any change it checked would).
    redis_server.command("HSET", f"{PREFIX}ver", f"{PREFIX}call:{ringing['callId']}", "7", db=db)
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": ringing["callId"]}))
    await alice.wait_for("call-accept")
    assert second.broker.ops["retry"] == 1
    await first.handle(alice, json.dumps({"type": "hangup", "to": "bob", "callId": ringing["callId"]}))
    await bob.wait_for("call-ended")


async def test_a_refusal_on_what_a_node_knows_is_checked_on_what_redis_has(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a node knows says the frame breaks a rule (bob in no call), but it is stale (the node that rang him
    did not say: a node of the previous version): the frame is checked again on the state read, and accepted."""
    _, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    await second.handle(bob, json.dumps({"type": "call-request", "to": "alice"}))  # the second node knows both...
    ringing = await alice.wait_for("call-request")
    await second.handle(bob, json.dumps({"type": "hangup", "to": "alice", "callId": ringing["callId"]}))
    await alice.wait_for("call-ended")  # ... in no call
    monkeypatch.setattr(first.broker, "_tell", lambda *_: None)  # the first node tells nothing of its changes
    monkeypatch.setattr(first.broker, "_tell_owner", lambda *_: None)  # (nor that it owns the call)
    await first.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    ringing = await bob.wait_for("call-request")
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": ringing["callId"]}))
    await alice.wait_for("call-accept")
    assert second.broker.ops["retry"] == 1
    assert "error" not in bob.types()


# `_APPLY` as nodes of the previous version run it: one HGET, EXISTS and HSET or HDEL per key; ARGV[1] the number of
# (key, version) pairs that follow, then the commands.
_APPLY_BEFORE = """
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do
  if (redis.call('HGET', KEYS[1], ARGV[i]) or '0') ~= ARGV[i + 1] then return 0 end
end
local version = tostring(redis.call('INCR', KEYS[2])) .. '00000'
local i = 2 * n + 2
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
for i = 2, 2 * n, 2 do
  if redis.call('EXISTS', ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], version)
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return version
"""


def _versioned(server: RedisServer, db: int) -> tuple[set[str], set[str]]:
    """(the keys `ver` has a version of, the users' and calls' keys that exist)."""
    live = {k for k in server.keys(db) if k.startswith((f"{PREFIX}u:", f"{PREFIX}call:"))}
    return set(server.command("HKEYS", f"{PREFIX}ver", db=db)), live


@pytest.mark.parametrize("old", ["caller's node", "callee's node"])
async def test_nodes_of_the_previous_version_share_the_versions(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]], old: str
) -> None:
    """Rolling upgrade: one of the two nodes applies its changes with the previous `_APPLY` (its ARGV): a call
    across them rings, is answered and ends with no change refused (each checks the versions the other gave),
    and after each step `ver` holds a version for exactly the users and calls that exist."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    broker: Any = (first if old == "caller's node" else second).broker
    new_eval = broker._eval

    async def previous(script: str, numkeys: int, *args: Any) -> Any:
        if script != _APPLY:
            return await new_eval(script, numkeys, *args)
        ver, clock, n, _kept, *rest = args
        keys, versions, commands = rest[:n], rest[n : 2 * n], rest[2 * n :]
        pairs = [x for key_version in zip(keys, versions, strict=True) for x in key_version]
        return await new_eval(_APPLY_BEFORE, numkeys, ver, clock, n, *pairs, *commands)

    broker._eval = previous
    await first.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    ringing = await bob.wait_for("call-request")
    versioned, live = _versioned(redis_server, db)
    assert versioned == live and f"{PREFIX}call:{ringing['callId']}" in live
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": ringing["callId"]}))
    await alice.wait_for("call-accept")
    assert _versioned(redis_server, db)[0] == _versioned(redis_server, db)[1]
    await first.handle(alice, json.dumps({"type": "hangup", "to": "bob", "callId": ringing["callId"]}))
    await bob.wait_for("call-ended")
    versioned, live = _versioned(redis_server, db)
    assert versioned == live == {f"{PREFIX}u:alice", f"{PREFIX}u:bob"}
    await second.leave(bob)
    assert _versioned(redis_server, db) == ({f"{PREFIX}u:alice"}, {f"{PREFIX}u:alice"})
    assert first.broker.ops["retry"] == second.broker.ops["retry"] == 0


async def test_a_state_frame_reaches_no_connection(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """What a node tells another of its change travels for no connection: a hub (as a node of the previous
    version, which knows no STATE kind) hands it to nobody."""
    _, make = hubs
    hub = await make()
    alice = FakeConnection(hub, "alice")
    await hub.join(alice)
    before = list(alice.sent)
    hub.deliver("", "v", '[["peercall:u:alice",["x","[\\"d\\",false]"],"100000"]]')
    assert alice.sent == before


async def test_a_message_for_a_node_that_cannot_be_read_is_dropped_and_the_next_one_is_delivered(
    redis_server: RedisServer, hubs: tuple[int, Callable[..., Awaitable[Hub]]]
) -> None:
    """The node handles what it hears as the subscription reads it: a message on its channel that it cannot read
    (a bug, a node of a newer version) is dropped without stopping the reader, and the frames of the next one reach
    their connection in order, a close last."""
    _, make = hubs
    hub = await make()
    alice = FakeConnection(hub, "alice")
    await hub.join(alice)
    await asyncio.sleep(0.2)  # the listener subscribes
    before = alice.types()
    closed = asyncio.Event()
    close = alice.close

    async def close_and_tell(code: int, reason: str) -> None:
        await close(code, reason)
        closed.set()

    alice.close = close_and_tell  # type: ignore[method-assign]
    channel = f"{PREFIX}to:{hub.broker.address_of(alice.cid)}"  # type: ignore[attr-defined]
    redis_server.command("PUBLISH", channel, "7:no frame")
    frames = [
        nodeframe.encode(alice.cid, nodeframe.SEND, json.dumps({"type": "one"})),
        nodeframe.encode(alice.cid, nodeframe.SEND, json.dumps({"type": "two"})),
        nodeframe.encode(alice.cid, nodeframe.CLOSE, nodeframe.close_text(4001, "bye")),
    ]
    redis_server.command("PUBLISH", channel, nodeframe.pack(frames))
    async with asyncio.timeout(2):
        await closed.wait()
    assert alice.types() == [*before, "one", "two"]
    assert alice.closed == (4001, "bye")


@pytest.mark.parametrize("client", ["lean", "redis-py"])
async def test_frames_for_a_node_that_does_not_listen_are_held_for_a_while_within_a_bound(
    hubs: tuple[int, Callable[..., Awaitable[Hub]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    client: str,
) -> None:
    """Frames for a node whose subscription is down are held for it (tests/cluster/test_failures.py shows them
    delivered once it listens again), but not for ever, and not without a bound: a node that never listens again
    (it died) costs what `_HELD_MAX` allows for `_HELD_FOR` seconds, then nothing, and each loss is logged."""
    from peercall.broker import redis as redis_broker

    caplog.set_level(logging.INFO, logger="peercall.broker")
    monkeypatch.setattr(redis_broker, "_HELD_MAX", 50_000)
    monkeypatch.setattr(redis_broker, "_HELD_FOR", 0.5)
    _, make = hubs
    broker = (await make()).broker
    assert isinstance(broker, redis_broker.RedisBroker)
    if client == "redis-py":  # as with a rediss:// URL, which the lean client does not speak
        broker._pipe = None
    gone = "n9-dead00.1"  # a connection of a node that nobody listens for
    for i in range(200):  # ~1 KB each, one message or a few at a time (a message over the bound is dropped whole)
        broker.send(gone, nodeframe.SEND, json.dumps({"type": "candidate", "n": i, "pad": "x" * 1000}))
        await asyncio.sleep(0.002)
    await until(lambda: bool(broker._held), timeout=2)
    assert 0 < broker._held_size <= 50_000
    assert "messages for node n9-dead00 were lost: too much waits for it" in caplog.text
    await until(lambda: not broker._held, timeout=3)
    assert broker._held_size == 0
    assert "messages for node n9-dead00 were lost: it did not listen for 0.5 s (it has left the cluster)" in caplog.text


def test_an_answered_call_is_told_by_its_json() -> None:
    """The JSON of a stored call says `_ANSWERED` when, and only when, it is answered (what a node that is told of
    a change looks for before it decodes the call to learn a route)."""
    from peercall.broker.redis import _ANSWERED, _encode
    from peercall.core.switchboard import Call, CallState, Party
    from peercall.protocol.messages import Envelope

    call = Call("c1", Party("alice", "d1", "n0-1.1"), "bob", Envelope(type="call-request", to="bob"), 0.0, 45.0)
    assert _ANSWERED not in _encode(call).decode()
    call.state = CallState.ANSWERED
    assert _ANSWERED in _encode(call).decode()
