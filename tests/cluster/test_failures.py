"""Failures of a cluster: a node killed with `kill -9` (it tells nobody), and Redis stopped or restarted mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from tests.cluster.conftest import redis_command
from tests.cluster.test_cluster_calls import CANDIDATE, OFFER, answered
from tests.conftest import Client, Proxy

LEASE = 2.0  # seconds: a dead node's users are gone within this (+ one renewal period)
FAST = {"PEERCALL_NODE_LEASE": str(LEASE), "PEERCALL_PRESENCE_INTERVAL": "0.05"}


async def history(node: Any, user: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{node.http}/api/calls", params={"id": user})).json()["calls"]


async def test_killed_callee_node_during_a_call_ends_it_for_the_survivor(cluster: Any, connect: Any, uid: Any) -> None:
    async with cluster(2, history="postgres", PEERCALL_RESUME_GRACE="1", **FAST) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        call_id = await answered(alice, bob)
        killed = time.monotonic()
        c.kill(1)
        offline = await alice.expect(timeout=LEASE + 3, type="presence", id=bob.id, status="offline")
        assert offline["lastSeen"] > 0
        ended = await alice.expect(timeout=3, type="call-ended", callId=call_id)
        assert (ended["outcome"], ended["reason"]) == ("answered", "peer-lost")
        assert time.monotonic() - killed < LEASE + LEASE / 3 + 1 + 1.5  # lease + renewal + grace + slack
        await alice.nothing(within=1.0, type="call-ended")  # told once
        assert c.redis_keys("peercall:call:*") == []
        assert c.redis_keys("peercall:n:*") == [k for k in c.redis_keys("peercall:n:*") if "n0-" in k]
        records = await history(c.nodes[0], alice.id)
        assert [(r["callId"], r["reason"]) for r in records] == [(call_id, "peer-lost")]


async def test_ring_timeout_fires_once_when_the_node_that_started_it_dies(cluster: Any, connect: Any, uid: Any) -> None:
    """The caller's node dies while it rings: the callee still hears "missed" at the ring timeout, once."""
    async with cluster(2, history="postgres", PEERCALL_RING_TIMEOUT="3", **FAST) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        await alice.send({"type": "call-request", "to": bob.id})
        call_id = (await alice.expect(type="call-ringing"))["callId"]
        await bob.expect(type="call-request", callId=call_id)
        c.kill(0)
        ended = await bob.expect(timeout=5, type="call-ended", callId=call_id)
        assert (ended["outcome"], ended["reason"]) == ("missed", "invite-timeout")
        await bob.nothing(within=1.5, type="call-ended")
        assert c.redis_keys("peercall:call:*") == []
        records = await history(c.nodes[1], bob.id)
        assert [(r["callId"], r["outcome"]) for r in records] == [(call_id, "missed")]


async def test_a_call_its_node_ended_but_had_not_written_is_written_by_the_node_that_reaps_it(
    cluster: Any, connect: Any, uid: Any
) -> None:
    """A node writes an ended call to the history just after the end: if it dies in between (here its write waits for
    a lock on the history's table), the node that reaps it writes the call, once, and Redis keeps nothing of it."""
    async with cluster(2, history="postgres", **FAST) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        call_id = await answered(alice, bob)
        lock = await asyncpg.connect(c.database_url)
        try:
            async with lock.transaction():
                await lock.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
                await alice.send({"type": "hangup", "to": bob.id})
                await bob.expect(type="call-ended", callId=call_id)
                assert c.redis_keys("peercall:unwritten:*"), "n0's record is not kept while its write waits"
                c.kill(0)
        finally:
            await lock.close()
        for _ in range(int((LEASE + LEASE / 3 + 5) / 0.2)):  # n1 reaps n0 when its lease runs out
            if records := await history(c.nodes[1], bob.id):
                break
            await asyncio.sleep(0.2)
        assert [(r["callId"], r["outcome"], r["hungUpBy"]) for r in records] == [(call_id, "answered", alice.id)]
        assert "had not written 1 ended call(s) to the history: writing them" in c.logs()
        assert c.redis_keys("peercall:unwritten:*") == []


@contextlib.asynccontextmanager
async def node_behind_a_proxy(c: Any, redis: Any) -> AsyncIterator[tuple[Any, Proxy]]:
    """One more node of cluster `c`, whose connections to Redis go through a `Proxy`."""
    proxy = Proxy(redis.port)
    await proxy.start()
    try:
        through = f"redis://127.0.0.1:{proxy.port}/{c.redis_db}"
        yield await asyncio.to_thread(c.start_node, None, PEERCALL_REDIS_URL=through), proxy
    finally:
        await proxy.close()


async def reply_lost(proxy: Proxy, sender: Client, frame: dict[str, Any], done: Callable[[], bool]) -> None:
    """Send `frame`; Redis does it (`done` says so) but its reply never reaches the node: the connection goes."""
    proxy.eat()
    await sender.send(frame)
    for _ in range(500):
        if done():
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"Redis did not do the {frame['type']}")
    proxy.cut()


IN_DOUBT = "if Redis did it, it takes effect when Redis is back"


async def ringing(caller: Client, callee: Client) -> str:
    """`caller` calls `callee`, whose phone rings: the call id."""
    await caller.send({"type": "call-request", "to": callee.id})
    call_id = str((await caller.expect(type="call-ringing"))["callId"])
    await callee.expect(type="call-request", callId=call_id)
    return call_id


def logged(node: Any, line: str) -> Callable[[], Awaitable[bool]]:
    """For `until`: whether `node`'s log has `line`."""

    async def check() -> bool:
        return line in node.log()

    return check


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 5.0) -> Any:
    """What `check` returns once it is truthy (polled every 0.1 s for `within` s); else fail, saying `what`."""
    for _ in range(int(within / 0.1)):
        if found := await check():
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} (not within {within:g} s)")


async def test_a_call_that_redis_ended_as_its_connection_went_is_told_and_written(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    """Redis ends a call (the callee's call-reject) and its connection to the node goes before the reply comes back
    (the soak saw it as Redis restarted): the callee is told it may have been done, and once Redis is back the node
    finds that it was and tells both parties `call-ended` and writes the history, as if the reply had come. Before,
    the caller's phone rang on for ever, the history lacked the call and Redis kept its record."""
    async with cluster(1, **FAST) as c, node_behind_a_proxy(c, redis) as (node, proxy):
        alice = await connect(uid("alice"), node)
        bob = await connect(uid("bob"), node)
        call_id = await ringing(alice, bob)
        reject = {"type": "call-reject", "to": alice.id, "callId": call_id}
        await reply_lost(proxy, bob, reject, lambda: not c.redis_keys(f"peercall:call:{call_id}"))
        error = await bob.expect(type="error", ref="call-reject")
        assert error["code"] == "service-unavailable" and IN_DOUBT in error["message"]
        for party in (alice, bob):
            ended = await party.expect(timeout=LEASE + 5, type="call-ended", callId=call_id)
            assert (ended["outcome"], ended["reason"]) == ("rejected", "user-rejected")
        await alice.nothing(within=0.5, type="call-ended")  # told once
        records = await until(lambda: history(node, alice.id), "the call is in the history")
        assert [(r["callId"], r["outcome"]) for r in records] == [(call_id, "rejected")]
        await until(lambda: asyncio.to_thread(lambda: not c.redis_keys("peercall:unwritten:*")), "Redis let go")
        assert "before the connection to it went: carrying it out now" in node.log()


async def test_a_call_that_redis_answered_as_its_connection_went_goes_on(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    """The same for an accept: once Redis is back, the caller hears the `call-accept` and the call goes on (before,
    the caller rang on for ever while Redis had the call answered, and the callee waited for an offer)."""
    async with cluster(1, **FAST) as c, node_behind_a_proxy(c, redis) as (node, proxy):
        alice = await connect(uid("alice"), node)
        bob = await connect(uid("bob"), node)
        call_id = await ringing(alice, bob)

        def answered_in_redis() -> bool:
            value = redis_command(redis.port, "GET", f"peercall:call:{call_id}", db=c.redis_db)
            return value is not None and '"state":"answered"' in value

        await reply_lost(proxy, bob, {"type": "call-accept", "to": alice.id, "callId": call_id}, answered_in_redis)
        error = await bob.expect(type="error", ref="call-accept")
        assert error["code"] == "service-unavailable" and IN_DOUBT in error["message"]
        await alice.expect(timeout=LEASE + 5, type="call-accept", callId=call_id, **{"from": bob.id})
        await alice.send({"type": "offer", "to": bob.id, "data": OFFER})
        assert (await bob.expect(timeout=5, type="offer"))["callId"] == call_id
        await alice.send({"type": "hangup", "to": bob.id, "callId": call_id})
        ended = await bob.expect(type="call-ended", callId=call_id)
        assert ended["outcome"] == "answered"


async def test_a_call_that_redis_placed_as_its_connection_went_is_undone(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    """A call-request that Redis placed as the connection went: its caller was told nothing was done, so the node
    ends the call once Redis is back; nobody rang, and the caller can call again at once (before, the caller was
    in that call until the ring timeout, and the callee had a missed call that never rang)."""
    async with cluster(1, PEERCALL_RING_TIMEOUT="60", **FAST) as c, node_behind_a_proxy(c, redis) as (node, proxy):
        alice = await connect(uid("alice"), node)
        bob = await connect(uid("bob"), node)
        placed: list[str] = []

        def placed_in_redis() -> bool:
            placed.extend(key.rpartition(":")[2] for key in c.redis_keys("peercall:call:*"))
            return bool(placed)

        await reply_lost(proxy, alice, {"type": "call-request", "to": bob.id}, placed_in_redis)
        error = await alice.expect(type="error", ref="call-request")
        assert error["code"] == "service-unavailable" and "nothing was done" in error["message"]
        await until(logged(node, f"Redis placed call {placed[0]}"), "the node took the call back", LEASE + 5)
        await bob.nothing(within=0.5, callId=placed[0])  # it never rang, and nothing says it ended either
        assert c.redis_keys("peercall:call:*") == []
        assert await _call_rings(alice, bob.id, within=3)
        rung = await bob.expect(type="call-request", **{"from": alice.id})
        await alice.send({"type": "hangup", "to": bob.id, "callId": rung["callId"]})
        await bob.expect(type="call-ended", callId=rung["callId"])
        records = await until(lambda: history(node, bob.id), "the second call is in the history")
        assert [r["callId"] for r in records] == [rung["callId"]]  # the call taken back is in no one's history


async def test_a_change_that_never_reached_redis_is_not_carried_out(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    """The other side of the doubt: the connection goes before Redis gets the callee's call-reject. Once Redis is
    back the node finds that the call still rings and carries nothing out (the callee was told it may have been
    done): the call rings on, and the reject, sent again, ends it once."""
    async with cluster(1, **FAST) as c, node_behind_a_proxy(c, redis) as (node, proxy):
        alice = await connect(uid("alice"), node)
        bob = await connect(uid("bob"), node)
        call_id = await ringing(alice, bob)
        proxy.eat(requests=True)
        reject = {"type": "call-reject", "to": alice.id, "callId": call_id}
        await bob.send(reject)
        for _ in range(500):  # its script went nowhere (the node's own timer and lease commands may have too)
            if b"EVALSHA" in proxy.requests_eaten:
                break
            await asyncio.sleep(0.01)
        proxy.cut()
        error = await bob.expect(type="error", ref="call-reject")
        assert error["code"] == "service-unavailable" and IN_DOUBT in error["message"]
        # settled at the next round of the housekeeping (every LEASE / 3 s)
        await until(logged(node, "Redis had not made a change in doubt"), "the change was settled", LEASE + 5)
        await alice.nothing(within=0.3, type="call-ended")
        assert c.redis_keys(f"peercall:call:{call_id}"), "the call should still ring"
        await bob.send(reject)
        for party in (alice, bob):
            ended = await party.expect(type="call-ended", callId=call_id)
            assert (ended["outcome"], ended["reason"]) == ("rejected", "user-rejected")
        await alice.nothing(within=1.0, type="call-ended")  # told once
        records = await until(lambda: history(node, alice.id), "the call is in the history")
        assert [(r["callId"], r["outcome"]) for r in records] == [(call_id, "rejected")]


async def test_killed_caller_node_while_ringing_stops_the_ringing(cluster: Any, connect: Any, uid: Any) -> None:
    async with cluster(2, PEERCALL_RESUME_GRACE="0", **FAST) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        await alice.send({"type": "call-request", "to": bob.id})
        call_id = (await alice.expect(type="call-ringing"))["callId"]
        await bob.expect(type="call-request", callId=call_id)
        c.kill(0)
        ended = await bob.expect(timeout=LEASE + 3, type="call-ended", callId=call_id)
        assert (ended["outcome"], ended["reason"]) == ("cancelled", "peer-lost")
        await bob.expect(timeout=2, type="presence", id=alice.id, status="offline")
        assert c.redis_keys("peercall:call:*") == []


async def test_a_restarted_redis_is_rejoined_and_new_calls_work(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    async with cluster(2, **FAST) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        redis.stop()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{c.nodes[0].http}/readyz")).status_code == 503
            # Asking for something that needs the shared state gets a clear, retryable error.
            await alice.send({"type": "call-request", "to": bob.id})
            error = await alice.expect(type="error", ref="call-request")
            assert error["code"] == "service-unavailable"
            redis.start()  # empty: it keeps nothing on disk
            for _ in range(100):
                if [(await http.get(f"{n.http}/readyz")).status_code for n in c.nodes] == [200, 200]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the nodes did not become ready again")
        # Both nodes told Redis again who is connected to them: users connected before the outage can call.
        assert await _call_rings(alice, bob.id, within=LEASE + 2)
        await bob.expect(type="call-request", **{"from": alice.id})
        carol = await connect(uid("carol"), c.nodes[1])
        assert {alice.id, bob.id} <= set(carol.welcome["online"])


async def test_frames_for_a_node_that_subscribes_again_reach_its_users(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    """A node's subscription is cut (Redis dropped it, or a blip of its connection) while its other connections to
    Redis keep working: the frames other nodes send it meanwhile reach its users once it has subscribed again, in
    order, instead of being lost (the caller heard ringing, the callee never rang, and the call ended missed)."""
    async with cluster(2, **FAST) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        assert redis.command("CLIENT", "KILL", "TYPE", "pubsub") >= 2  # both nodes' subscriptions
        await alice.send({"type": "call-request", "to": bob.id})
        call_id = (await alice.expect(type="call-ringing"))["callId"]
        await bob.expect(timeout=5, type="call-request", callId=call_id, **{"from": alice.id})
        await alice.send({"type": "hangup", "to": bob.id})
        ended = await bob.expect(timeout=5, type="call-ended", callId=call_id)
        assert ended["outcome"] == "cancelled"
        # the operator reads why frames came late, and that it was mended
        assert "lost its subscription (ConnectionError" in c.logs() and "listening again" in c.logs()


async def test_presence_a_node_missed_while_it_did_not_listen_reaches_its_users(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    """A node cannot reach Redis for a moment (its subscription neither): a user who comes online on another node
    meanwhile is shown online to its users once it listens again (the node that published the change held it for
    the one that did not hear it). Before, presence sent to every node was lost for that node: the newcomer stayed
    missing for its users until their next change."""
    # A lease long enough that no node takes the deaf one for dead meanwhile, however slow the machine.
    async with cluster(1, **{**FAST, "PEERCALL_NODE_LEASE": "6"}) as c, node_behind_a_proxy(c, redis) as (deaf, proxy):
        bob = await connect(uid("bob"), deaf)
        alice = await connect(uid("alice"), c.nodes[0])
        publisher = await asyncio.to_thread(c.start_node)  # it knows the nodes alive as it starts
        proxy.refuse()
        proxy.cut()
        carol = await connect(uid("carol"), publisher)
        await alice.expect(type="presence", id=carol.id, status="online")  # published: the deaf node missed it
        proxy.admit()
        await bob.expect(timeout=10, type="presence", id=carol.id, status="online")


async def _call_rings(caller: Client, callee: str, within: float) -> bool:
    """Send call-requests until one rings (True), or `within` seconds pass (False)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await caller.send({"type": "call-request", "to": callee})
        while True:
            frame = await caller.recv()
            if frame["type"] == "call-ringing":
                return True
            if frame["type"] == "error" and frame.get("ref") == "call-request":
                break
        await asyncio.sleep(0.2)
    return False


async def test_calls_on_one_node_keep_their_media_path_while_redis_is_down(
    cluster: Any, redis: Any, connect: Any, uid: Any
) -> None:
    async with cluster(2, **FAST) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[0])
        call_id = await answered(alice, bob)
        await alice.send({"type": "candidate", "to": bob.id, "data": CANDIDATE})
        await bob.expect(type="candidate")
        await bob.send({"type": "candidate", "to": alice.id, "data": CANDIDATE})
        await alice.expect(type="candidate")
        redis.stop()
        for sender, receiver in ((alice, bob), (bob, alice)):
            await sender.send({"type": "candidate", "to": receiver.id, "data": CANDIDATE})
            got = await receiver.expect(type="candidate")
            assert got["callId"] == call_id
        # A new connection is told why and closed with 1013 (try again later), to retry with backoff.
        async with websockets.connect(f"{c.nodes[0].ws}?id={uid('carol')}") as carol:
            error = json.loads(await asyncio.wait_for(carol.recv(), 5))
            assert (error["type"], error["code"]) == ("error", "service-unavailable")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(carol.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
