"""Several `peercall serve` nodes sharing one real Redis: calls between users on different nodes behave as on one."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import httpx
import websockets

from tests.conftest import Client

CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
OFFER = {"type": "offer", "sdp": "v=0\r\n"}


async def answered(caller: Client, callee: Client) -> str:
    """Ring `callee` from `caller` and accept: the call id."""
    await caller.send({"type": "call-request", "to": callee.id})
    ringing = await caller.expect(type="call-ringing")
    await callee.expect(type="call-request", **{"from": caller.id})
    await callee.send({"type": "call-accept", "to": caller.id})
    await caller.expect(type="call-accept", **{"from": callee.id})
    return str(ringing["callId"])


async def test_a_call_between_two_nodes_goes_as_on_one(cluster: Any, connect: Any, uid: Any) -> None:
    async with cluster(2) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        assert alice.id in bob.welcome["online"]
        call_id = await answered(alice, bob)
        await alice.send({"type": "offer", "to": bob.id, "data": OFFER})
        offer = await bob.expect(type="offer")
        assert offer == {"type": "offer", "from": alice.id, "to": bob.id, "callId": call_id, "data": OFFER}
        await bob.send({"type": "candidate", "to": alice.id, "data": CANDIDATE})
        assert (await alice.expect(type="candidate"))["data"] == CANDIDATE
        await bob.send({"type": "hangup", "to": alice.id})
        ended = await alice.expect(type="call-ended")
        assert (ended["outcome"], ended["reason"]) == ("answered", "user-hangup")
        await bob.expect(type="call-ended", callId=call_id)
        # Over for both: a late candidate reaches nobody and its sender is told.
        await alice.send({"type": "candidate", "to": bob.id, "data": CANDIDATE})
        error = await alice.expect(type="error")
        assert error["code"] == "not-in-call"
        await bob.nothing(type="candidate")
        assert c.redis_keys("peercall:call:*") == []


async def test_frames_keep_their_order_per_pair_under_load(cluster: Any, connect: Any, uid: Any) -> None:
    """Three pairs across three nodes send 300 candidates each way at once: each side gets all, in order."""
    async with cluster(3, PEERCALL_RATE_LIMIT="100000", PEERCALL_RATE_BURST="100000") as c:
        pairs = []
        for i in range(3):
            a = await connect(uid(f"a{i}"), c.nodes[i])
            b = await connect(uid(f"b{i}"), c.nodes[(i + 1) % 3])
            await answered(a, b)
            pairs.append((a, b))

        async def send_all(sender: Client, to: Client) -> None:
            for n in range(300):
                await sender.send({"type": "candidate", "to": to.id, "data": {**CANDIDATE, "sdpMLineIndex": n}})

        async def receive_all(receiver: Client) -> list[int]:
            got = []
            while len(got) < 300:
                got.append((await receiver.expect(type="candidate"))["data"]["sdpMLineIndex"])
            return got

        jobs = []
        for a, b in pairs:
            jobs += [send_all(a, b), send_all(b, a)]
        received = asyncio.gather(*(receive_all(x) for pair in pairs for x in pair))
        await asyncio.gather(*jobs)
        for got in await received:
            assert got == list(range(300))


async def test_presence_is_the_same_seen_from_every_node(cluster: Any, connect: Any, uid: Any) -> None:
    async with cluster(3) as c:
        users = [await connect(uid(f"u{i}"), c.nodes[i]) for i in range(3)]
        ids = sorted(u.id for u in users)
        watchers = [await connect(uid(f"w{i}"), c.nodes[i]) for i in range(3)]
        for w in watchers:
            assert set(ids) <= set(w.welcome["online"])
        await users[1].close()
        for w in watchers:
            gone = await w.expect(type="presence", id=users[1].id, status="offline")
            assert gone["lastSeen"] > 0
        late = await connect(uid("late"), c.nodes[2])
        assert users[1].id not in late.welcome["online"]
        assert any(r["id"] == users[1].id for r in late.welcome["recent"])


async def test_every_device_rings_and_exactly_one_accept_wins(cluster: Any, connect: Any, uid: Any) -> None:
    """Two devices of one user on two nodes accept the same call at the same moment, twenty times over."""
    async with cluster(3) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = uid("bob")
        phone = await connect(f"{bob}&device=phone", c.nodes[1])
        laptop = await connect(f"{bob}&device=laptop", c.nodes[2])
        phone.id = laptop.id = bob
        for _ in range(20):
            await alice.send({"type": "call-request", "to": bob})
            call_id = (await alice.expect(type="call-ringing"))["callId"]
            for device in (phone, laptop):
                await device.expect(type="call-request", callId=call_id)
            await asyncio.gather(*(d.send({"type": "call-accept", "to": alice.id}) for d in (phone, laptop)))
            await alice.expect(type="call-accept", callId=call_id)
            outcomes = []
            for device in (phone, laptop):
                frame = await _first(device, call_id, ("call-ended", "error"))
                outcomes.append(frame)
            losers = [f for f in outcomes if f is not None]
            # The winner hears nothing more about the call; the other device is told it was answered elsewhere
            # (or, if its accept came after that, that it is not in the call).
            assert len(losers) == 1, outcomes
            loser = losers[0]
            assert loser.get("reason") == "answered-elsewhere" or loser.get("code") == "not-in-call", loser
            await alice.nothing(within=0.1, type="call-accept")
            await alice.send({"type": "hangup", "to": bob})
            await alice.expect(type="call-ended", callId=call_id)
            await asyncio.gather(_drain(phone), _drain(laptop))  # side by side: 0.2 s of quiet each, not 0.4 in all


async def _first(client: Client, call_id: str, types: tuple[str, ...], within: float = 0.5) -> dict[str, Any] | None:
    try:
        while True:
            frame = await client.recv(within)
            if frame.get("type") in types and frame.get("callId") == call_id:
                if frame["type"] == "error" and frame.get("ref") != "call-accept":
                    continue
                return frame
    except TimeoutError:
        return None


async def _drain(client: Client) -> None:
    try:
        while True:
            await client.recv(0.2)
    except TimeoutError:
        return


async def test_a_busy_callee_on_another_node(cluster: Any, connect: Any, uid: Any) -> None:
    async with cluster(3) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        carol = await connect(uid("carol"), c.nodes[2])
        await answered(alice, bob)
        await carol.send({"type": "call-request", "to": bob.id})
        ended = await carol.expect(type="call-ended")
        assert (ended["outcome"], ended["reason"]) == ("busy", "user-busy")
        await bob.nothing(type="call-request")


async def test_history_is_written_once_per_call_whichever_nodes(cluster: Any, connect: Any, uid: Any) -> None:
    """Shared PostgreSQL: one record per call, the same from both nodes, with both parties' summaries."""
    async with cluster(2, history="postgres") as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        call_id = await answered(alice, bob)
        await alice.send({"type": "hangup", "to": bob.id})
        await alice.expect(type="call-ended")
        await bob.expect(type="call-ended")
        summary = {"durationSec": 3.5, "rttMs": 12.0, "path": "direct"}
        await alice.send({"type": "call-summary", "callId": call_id, "data": summary})
        await bob.send({"type": "call-summary", "callId": call_id, "data": summary})
        await alice.nothing(type="error")
        async with httpx.AsyncClient() as http:
            for _ in range(50):
                pages = [(await http.get(f"{node.http}/api/calls", params={"id": alice.id})).json() for node in c.nodes]
                calls = pages[0]["calls"]
                if calls and len(calls[0].get("quality") or {}) == 2:
                    break
                await asyncio.sleep(0.1)
        assert pages[0] == pages[1]
        assert [call["callId"] for call in calls] == [call_id]
        assert set(calls[0]["quality"]) == {alice.id, bob.id}, json.dumps(calls)


async def test_metrics_count_redis_round_trips(cluster: Any, connect: Any, uid: Any) -> None:
    async with cluster(2) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        await alice.send({"type": "call-request", "to": "nobody-online"})
        await alice.expect(type="error", code="unavailable")
        await answered(alice, bob)  # bob's accept, asked of alice's node, which owns the call
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{c.nodes[0].http}/metrics")).text
            asks = (await http.get(f"{c.nodes[1].http}/metrics")).text
        assert 'peercall_redis_round_trips_total{kind="transaction"}' in text
        assert "peercall_redis_up 1.0" in text
        assert 'peercall_owner_asks_total{outcome="asked"} 1.0' in asks


async def test_welcome_is_the_first_frame_while_others_come_and_go(cluster: Any, uid: Any) -> None:
    """Presence of people joining elsewhere must not overtake a new connection's welcome.

    The clients read nothing after their first frame: with websockets' default `max_queue` (16 frames) the presence
    frames arriving every 10 ms fill the queue, the client stops reading, never sees the server's close frame and
    waits its `close_timeout` (10 s) on one close in ten, which made this test take 85 s instead of ~15;
    `max_queue=None` keeps them reading."""
    async with cluster(2, PEERCALL_PRESENCE_INTERVAL="0.01") as c:
        stop = asyncio.Event()

        async def churn(name: str) -> None:
            while not stop.is_set():
                async with websockets.connect(f"{c.nodes[1].ws}?id={name}", max_queue=None):
                    pass

        churners = [asyncio.create_task(churn(uid(f"churn{i}"))) for i in range(5)]
        firsts = []
        try:
            for _ in range(100):
                async with websockets.connect(f"{c.nodes[0].ws}?id={uid('joiner')}", max_queue=None) as ws:
                    firsts.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
        finally:
            stop.set()
            await asyncio.gather(*churners, return_exceptions=True)
        assert set(firsts) == {"welcome"}


async def test_a_reconnect_storm_is_queued_not_refused(cluster: Any, uid: Any) -> None:
    """Hundreds of clients connecting to one node at once (after a node restart, say) all get in."""
    async with cluster(2, PEERCALL_MAX_CONNECTIONS_PER_IP="5000") as c:

        async def join(i: int) -> str:
            ws = await websockets.connect(f"{c.nodes[i % 2].ws}?id={uid('storm')}", open_timeout=30)
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            clients.append(ws)
            return str(first.get("type") if first["type"] != "error" else first["code"])

        clients: list[websockets.ClientConnection] = []
        try:
            firsts = await asyncio.gather(*(join(i) for i in range(400)))
            assert collections.Counter(firsts) == {"welcome": 400}
        finally:
            await asyncio.gather(*(ws.close() for ws in clients))
        async with httpx.AsyncClient() as http:
            for _ in range(50):  # all of them gone again, as every node sees it
                text = (await http.get(f"{c.nodes[0].http}/metrics")).text
                if "peercall_users_online 0.0" in text:
                    break
                await asyncio.sleep(0.2)
        assert "peercall_users_online 0.0" in text
