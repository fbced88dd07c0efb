"""Signaling over real WebSockets against a real `peercall serve` process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.conftest import ServerProcess

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


async def test_welcome_lists_who_is_online(connect, uid) -> None:
    """A client is greeted with its id, protocol version and the others online, and others see it arrive."""
    a, b = uid("alice"), uid("bob")
    alice = await connect(a)
    assert alice.welcome["id"] == a and alice.welcome["protocol"] == 1
    bob = await connect(b)
    assert a in bob.welcome["online"] and b not in bob.welcome["online"]
    assert await alice.expect(type="presence", id=b) == {"type": "presence", "id": b, "status": "online"}


async def test_full_seed_flow_is_routed_with_from(connect, uid) -> None:
    """The seed's call flow passes through, each frame stamped with its sender's id and the server's callId."""
    alice, bob = await connect(uid("alice")), await connect(uid("bob"))
    await alice.send({"type": "call-request", "to": bob.id})
    call_id = (await alice.expect(type="call-ringing", to=bob.id))["callId"]
    assert await bob.expect(type="call-request") == {
        "type": "call-request",
        "from": alice.id,
        "to": bob.id,
        "callId": call_id,
    }
    await bob.send({"type": "call-accept", "to": alice.id})
    assert await alice.expect(type="call-accept") == {
        "type": "call-accept",
        "from": bob.id,
        "to": alice.id,
        "callId": call_id,
        "polite": False,
    }
    flow = [
        (alice, bob, {"type": "offer", "to": bob.id, "data": OFFER}),
        (bob, alice, {"type": "answer", "to": alice.id, "data": {"type": "answer", "sdp": "v=0\r\n"}}),
        (alice, bob, {"type": "candidate", "to": bob.id, "data": CANDIDATE}),
        (bob, alice, {"type": "candidate", "to": alice.id, "data": None, "callId": call_id}),
        (alice, bob, {"type": "hangup", "to": bob.id}),
    ]
    for sender, receiver, message in flow:
        await sender.send(message)
        got = await receiver.expect(type=message["type"])
        assert got == {**message, "from": sender.id, "callId": call_id}
    ended = {"type": "call-ended", "callId": call_id, "outcome": "answered", "reason": "user-hangup"}
    assert await alice.expect(type="call-ended") == ended


async def test_call_reject_reaches_the_caller(connect, uid) -> None:
    """A rejection, with its data, reaches the caller."""
    alice, bob = await connect(uid("alice")), await connect(uid("bob"))
    await alice.send({"type": "call-request", "to": bob.id})
    await bob.expect(type="call-request")
    await bob.send({"type": "call-reject", "to": alice.id, "data": {"note": "in a meeting"}})
    assert (await alice.expect(type="call-reject"))["data"] == {"note": "in a meeting"}


async def test_hanging_up_a_call_that_has_just_ended_is_not_an_error(connect, uid) -> None:
    """Both parties hang up at once (found by bench/soak.py): each gets one call-ended and no error; a hang-up or
    reject naming a call that just ended is done already, but naming someone else's ended call is still refused."""
    alice, bob, eve = await connect(uid("alice")), await connect(uid("bob")), await connect(uid("eve"))
    await alice.send({"type": "call-request", "to": bob.id})
    call_id = (await alice.expect(type="call-ringing"))["callId"]
    await bob.expect(type="call-request")
    await bob.send({"type": "call-accept", "to": alice.id, "callId": call_id})
    await alice.expect(type="call-accept")
    both = (
        json.dumps({"type": "hangup", "to": bob.id, "callId": call_id}),
        json.dumps({"type": "hangup", "to": alice.id, "callId": call_id}),
    )
    await asyncio.gather(alice.ws.send(both[0]), bob.ws.send(both[1]))
    for me in (alice, bob):
        assert (await me.expect(type="call-ended"))["callId"] == call_id
    await bob.send({"type": "call-reject", "to": alice.id, "callId": call_id})
    await bob.send({"type": "call-accept", "to": alice.id, "callId": call_id})  # as if it crossed the end
    for me in (alice, bob):
        await me.nothing(type="error")
        await me.nothing(type="call-ended")
    await eve.send({"type": "hangup", "to": alice.id, "callId": call_id})
    assert (await eve.expect(type="error"))["code"] == "not-in-call"


async def test_spoofed_from_is_refused_and_not_forwarded(connect, uid) -> None:
    """A frame claiming another sender is refused; its target receives nothing."""
    mallory, bob, alice = (
        await connect(uid("mallory")),
        await connect(uid("bob")),
        await connect(uid("alice")),
    )
    await mallory.send({"type": "call-request", "to": bob.id, "from": alice.id})
    err = await mallory.expect(type="error")
    assert err["code"] == "bad-message" and alice.id in err["message"]
    await bob.nothing(type="call-request")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad-json"),
        (b"\x00\x01binary", "bad-message"),
        ('{"to":"someone"}', "bad-message"),
        ('{"type":"offer","to":"someone","data":"v=0"}', "bad-message"),
        ('{"type":"launch-missiles","to":"someone"}', "unknown-type"),
        ('{"type":"call-request","to":"nobody-is-here"}', "unavailable"),
        ('{"type":"hangup","to":"nobody-is-here"}', "not-in-call"),
        ("x" * 70_000, "too-large"),
        ('{"type":"hangup","to":"' + "é" * 40_000 + '"}', "too-large"),
    ],
)
async def test_every_error_leaves_the_connection_working(connect, uid, frame: str | bytes, code: str) -> None:
    """Each bad frame gets its error code, and the same connection then routes normally."""
    alice, bob = await connect(uid("alice")), await connect(uid("bob"))
    await alice.send(frame)
    assert (await alice.expect(type="error"))["code"] == code
    await alice.send({"type": "call-request", "to": bob.id})
    assert (await bob.expect(type="call-request"))["from"] == alice.id


async def test_frame_beyond_hard_limit_closes_with_1009(connect, uid) -> None:
    """A frame over the hard limit (4 x max message size, at least 1 MiB) closes that connection with 1009."""
    alice, bob = await connect(uid("alice")), await connect(uid("bob"))
    with pytest.raises(websockets.ConnectionClosed) as info:
        await alice.send("x" * (2 * 1024 * 1024))
        while True:
            await alice.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await bob.expect(type="presence", id=alice.id, status="offline")


async def test_one_id_on_two_devices(connect, uid, server: ServerProcess) -> None:
    """One id may connect twice: both are welcomed, others see one presence, and a call rings both."""
    a = uid("alice")
    bob = await connect(uid("bob"))
    phone = await connect(a)
    await bob.expect(type="presence", id=a, status="online")
    laptop = await connect(a)
    assert laptop.welcome["device"] != phone.welcome["device"]
    await bob.nothing(type="presence", id=a)
    await bob.send({"type": "call-request", "to": a})
    call_id = (await bob.expect(type="call-ringing"))["callId"]
    for device in (phone, laptop):
        assert (await device.expect(type="call-request"))["callId"] == call_id
    await phone.close()
    await bob.nothing(type="presence", id=a, status="offline")
    await laptop.close()
    await bob.expect(type="presence", id=a, status="offline")


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?id=",
        "?id=a%20b",
        "?id=" + "x" * 65,
        "?id=a&id=b",
        "?id=%C3%A9",
        "?name=a",
        "?id=a&device=b%2Fc",
        "?id=a&device=",
    ],
)
async def test_bad_ids_are_refused_at_the_handshake(server: ServerProcess, query: str) -> None:
    """A missing or malformed id is refused with HTTP 400 and a JSON body saying what an id may be."""
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{server.ws}{query}")
    response = info.value.response
    assert response.status_code == 400
    assert json.loads(response.body)["error"]["code"] == ("bad-device" if "device" in query else "bad-id")


async def test_disconnect_is_announced_and_target_becomes_unavailable(connect, uid) -> None:
    """When a client leaves, the others see it offline and frames to it get `unavailable`."""
    alice, bob = await connect(uid("alice")), await connect(uid("bob"))
    await bob.close()
    await alice.expect(type="presence", id=bob.id, status="offline")
    await alice.send({"type": "call-request", "to": bob.id})
    err = await alice.expect(type="error")
    assert err["code"] == "unavailable" and err["to"] == bob.id and err["ref"] == "call-request"


async def test_garbage_burst_does_not_disturb_others(connect, uid) -> None:
    """One client flooding garbage gets an error per frame while two others exchange 150 frames in order."""
    mallory, alice, bob = (
        await connect(uid("mallory")),
        await connect(uid("alice")),
        await connect(uid("bob")),
    )
    await alice.send({"type": "call-request", "to": bob.id})
    await bob.expect(type="call-request")
    await bob.send({"type": "call-accept", "to": alice.id})
    await alice.expect(type="call-accept")
    garbage = [
        "{",
        "[]",
        "null",
        '{"type":"x"}',
        b"\xff" * 100,
        '{"type":"hangup"}',
        '{"type":"offer","to":"' + alice.id + '","data":{}}',
        '{"type":"hangup","to":"' + bob.id + '","from":"' + alice.id + '"}',
        json.dumps({"type": "offer", "to": bob.id, "data": OFFER}),  # well-formed, but not mallory's call
    ]
    # Under the default burst of 200 tokens (the frame too large costs 69 of them, one per KiB): this test is about
    # garbage, not rate limits.
    count = 120

    async def flood() -> None:
        await mallory.send("x" * 70_000)
        for i in range(count):
            await mallory.send(garbage[i % len(garbage)])

    async def talk() -> None:
        for i in range(count):
            await alice.send({"type": "candidate", "to": bob.id, "data": {**CANDIDATE, "sdpMLineIndex": i}})

    await asyncio.gather(flood(), talk())
    for i in range(count):
        msg = await bob.expect(type="candidate")
        assert msg["from"] == alice.id and msg["data"]["sdpMLineIndex"] == i
    errors = [await mallory.expect(type="error") for _ in range(count + 1)]
    assert {e["code"] for e in errors} == {"bad-json", "bad-message", "unknown-type", "too-large", "not-in-call"}
    await bob.nothing(type="hangup")
    await alice.nothing(type="offer")


async def test_http_endpoints(server: ServerProcess) -> None:
    """Health, readiness, ICE servers and JSON errors over plain HTTP."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        assert (await http.get("/healthz")).json()["status"] == "ok"
        assert (await http.get("/readyz")).json()["status"] == "ready"
        assert (await http.get("/ice-servers")).json() == {"iceServers": [], "iceTransportPolicy": "all"}
        missing = await http.get("/no-such-page")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not-found"
        for page in ("/", "/callerA.html", "/callerB.html"):
            response = await http.get(page)
            assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        demo = (await http.get("/callerA.html")).text
        assert '<body data-id="clientA" data-peer="clientB">' in demo and "Call Client B</button>" in demo
