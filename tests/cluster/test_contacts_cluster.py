"""Contacts across a cluster (#15): two real nodes, a real Redis, one store both nodes open (a SQLite file), raw
WebSocket clients. What one node decides about contacts, blocks and the ring setting, the other decides the same;
presence crosses nodes to contacts only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Client

RING = "1"  # seconds: the ring timeout, so that a call nobody answers ends quickly


def shared(tmp_path: Path, **env: str) -> dict[str, str]:
    """The settings of a cluster whose nodes share one store, with presence scoped to contacts."""
    return {
        "PEERCALL_DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "PEERCALL_DIRECTORY": "contacts",
        "PEERCALL_RING_TIMEOUT": RING,
        **env,
    }


async def contacts_of(client: Client, **fields: Any) -> dict[str, Any]:
    """The next `contacts` frame of `client` that has `fields`."""
    return await client.expect(type="contacts", **fields)


async def befriend(a: Client, b: Client) -> None:
    """`a` asks `b`, `b` accepts: contacts (each waits for the frame that says so)."""
    await a.send({"type": "contact-add", "to": b.id})
    frame = await b.expect(type="contacts", timeout=5)
    while a.id not in [r["id"] for r in frame["incoming"]]:
        frame = await b.expect(type="contacts", timeout=5)
    await b.send({"type": "contact-add", "to": a.id})
    for me, other in ((a, b), (b, a)):
        frame = await me.expect(type="contacts", timeout=5)
        while other.id not in [c["id"] for c in frame["contacts"]]:
            frame = await me.expect(type="contacts", timeout=5)


def without_ids(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames as a user compares them: the call ids (new for each call) and free-text messages aside."""
    return [{k: v for k, v in f.items() if k not in ("callId", "message", "to")} for f in frames]


async def call_frames(caller: Client, callee: str, until: str = "call-ended") -> list[dict[str, Any]]:
    """Every frame `caller` gets for a call-request to `callee`, up to `call-ended` (presence aside)."""
    await caller.send({"type": "call-request", "to": callee})
    frames = []
    while True:
        frame = await caller.recv(timeout=5)
        if frame["type"] in ("presence", "contacts"):
            continue
        frames.append(frame)
        if frame["type"] == until:
            return frames


async def test_a_request_made_on_one_node_is_accepted_on_the_other_and_presence_follows(
    cluster: Any, connect: Any, uid: Any, tmp_path: Path
) -> None:
    """alice (node 1) asks bob (node 2), who sees it and accepts; then bob's presence reaches alice across nodes
    and eve, no contact of bob's on bob's own node, sees none of it."""
    async with cluster(2, **shared(tmp_path)) as c:
        alice = await connect(uid("alice"), c.nodes[0])
        bob = await connect(uid("bob"), c.nodes[1])
        eve = await connect(uid("eve"), c.nodes[1])
        assert alice.welcome["online"] == bob.welcome["online"] == eve.welcome["online"] == []
        await alice.send({"type": "contact-add", "to": bob.id})
        incoming = await contacts_of(bob, timeout=5)
        while not incoming["incoming"]:
            incoming = await contacts_of(bob, timeout=5)
        assert [r["id"] for r in incoming["incoming"]] == [alice.id]
        await bob.send({"type": "contact-add", "to": alice.id})
        frame = await contacts_of(alice, timeout=5)
        while not frame["contacts"]:
            frame = await contacts_of(alice, timeout=5)
        assert [(x["id"], x["status"]) for x in frame["contacts"]] == [(bob.id, "online")]
        await bob.close()
        await alice.expect(type="presence", id=bob.id, status="offline")
        bob = await connect(bob.id, c.nodes[1])
        assert bob.welcome["online"] == [alice.id]
        await alice.expect(type="presence", id=bob.id, status="online")
        again = await connect(alice.id, c.nodes[1])  # a second device of alice, on bob's node
        assert again.welcome["online"] == [bob.id]
        await eve.nothing(within=0.5, type="presence")
        await eve.nothing(within=0.1, id=bob.id)


async def test_a_block_on_one_node_makes_calls_from_the_other_look_offline(
    cluster: Any, connect: Any, uid: Any, tmp_path: Path
) -> None:
    """bob blocks mallory on node 1; mallory's calls from node 2 get exactly the frames of a call to bob offline,
    and bob's devices (one on each node) get nothing at all."""
    async with cluster(2, **shared(tmp_path)) as c:
        bob = await connect(uid("bob"), c.nodes[0])
        mallory = await connect(uid("mallory"), c.nodes[1])
        await befriend(bob, mallory)  # a contact: mallory may know whether bob is online
        await bob.send({"type": "block", "to": mallory.id})
        await mallory.expect(type="presence", id=bob.id, status="offline", timeout=5)
        frame = await bob.expect(type="contacts")
        while not frame["blocked"]:
            frame = await bob.expect(type="contacts")
        assert frame["contacts"] == [] and [b["id"] for b in frame["blocked"]] == [mallory.id]
        bob2 = await connect(bob.id, c.nodes[1])
        await bob2.expect(type="contacts")
        await bob.nothing(within=0.3)
        blocked = await call_frames(mallory, bob.id)
        for device in (bob, bob2):
            await device.nothing(within=0.5)
        await bob.close()
        await bob2.close()
        await mallory.nothing(within=0.5, type="presence")  # bob looked offline all along
        offline = await call_frames(mallory, bob.id)
        assert without_ids(blocked) == without_ids(offline)


async def test_the_ring_setting_is_decided_the_same_on_both_nodes(
    cluster: Any, connect: Any, uid: Any, tmp_path: Path
) -> None:
    """bob, on both nodes, lets only contacts ring him: a stranger's call rings none of his devices from either
    node, and looks like a call nobody answers; a contact's rings both. Set to nobody on the other node, the
    contact's call rings none either."""
    async with cluster(2, **shared(tmp_path)) as c:
        bob = await connect(uid("bob"), c.nodes[0])
        bob2 = await connect(bob.id, c.nodes[1])
        alice = await connect(uid("alice"), c.nodes[1])
        strangers = [await connect(uid("stranger"), node) for node in c.nodes]
        await befriend(alice, bob)
        await bob.send({"type": "settings", "data": {"callsFrom": "contacts"}})
        await bob2.expect(type="contacts", callsFrom="contacts", timeout=5)
        for stranger in strangers:
            frames = await call_frames(stranger, bob.id)
            assert [(f["type"], f.get("outcome")) for f in frames] == [("call-ringing", None), ("call-ended", "missed")]
        for device in (bob, bob2):
            await device.nothing(within=0.3, type="call-request")
        await alice.send({"type": "call-request", "to": bob.id})
        for device in (bob, bob2):
            await device.expect(type="call-request", **{"from": alice.id})
        await alice.send({"type": "hangup", "to": bob.id})
        await alice.expect(type="call-ended")
        await bob2.send({"type": "settings", "data": {"callsFrom": "nobody"}})
        await bob.expect(type="contacts", callsFrom="nobody", timeout=5)
        frames = await call_frames(alice, bob.id)
        assert [(f["type"], f.get("outcome")) for f in frames] == [("call-ringing", None), ("call-ended", "missed")]
        for device in (bob, bob2):
            await device.nothing(within=0.3, type="call-request")


async def _signed_in(node: Any, user: str, name: str | None) -> Client:
    """A client of `node` signed in with a token for `user` carrying display name `name`."""
    import websockets

    from tests.integration.test_security import token

    claims = {} if name is None else {"name": name}
    ws = await websockets.connect(node.ws, additional_headers={"Authorization": f"Bearer {token(user, 600, **claims)}"})
    client = Client(ws, user)
    client.welcome = await client.expect(type="welcome", timeout=5)
    return client


async def test_display_names_cross_nodes(cluster: Any, uid: Any, tmp_path: Path) -> None:
    """alice (node 1, "Alice B") and bob (node 2): bob's presence of alice, and the call-request she makes to him
    (also as it rings on devices of his that connect meanwhile, on either node), carry her name across nodes; when
    another device of hers connects as "Alice Z", bob's contacts frame shows it."""
    from tests.integration.test_security import SECRET

    async with cluster(2, **shared(tmp_path, PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET=SECRET)) as c:
        bob = await _signed_in(c.nodes[1], uid("bob"), "Bob")
        alice = await _signed_in(c.nodes[0], uid("alice"), "Alice B")
        clients = [alice, bob]
        try:
            await befriend(alice, bob)
            await alice.close()
            await bob.expect(type="presence", id=alice.id, status="offline", timeout=5)
            alice = await _signed_in(c.nodes[0], alice.id, "Alice B")
            clients.append(alice)
            came = await bob.expect(type="presence", id=alice.id, status="online", timeout=5)
            assert came["displayName"] == "Alice B"
            await alice.send({"type": "call-request", "to": bob.id})
            request = await bob.expect(type="call-request", timeout=5)
            assert (request["from"], request["displayName"]) == (alice.id, "Alice B")
            # Another device of bob's, on alice's node, rings too, with her name; and one on bob's own node.
            for node in (c.nodes[0], c.nodes[1]):
                device = await _signed_in(node, bob.id, "Bob")
                clients.append(device)
                rung = await device.expect(type="call-request", timeout=5)
                assert (rung["callId"], rung["displayName"]) == (request["callId"], "Alice B")
            await alice.send({"type": "hangup", "to": bob.id})
            await bob.expect(type="call-ended", timeout=5)

            again = await _signed_in(c.nodes[0], alice.id, "Alice Z")
            clients.append(again)
            frame = await bob.expect(type="contacts", timeout=5)
            while frame["contacts"][0].get("displayName") != "Alice Z":
                frame = await bob.expect(type="contacts", timeout=5)
        finally:
            for client in clients:
                await client.close()
