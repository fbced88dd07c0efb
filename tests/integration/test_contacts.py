"""Contacts over real WebSockets against a real server (docs/protocol.md, "Contacts"): requests, blocking, the ring
setting, presence scoped to contacts, the directory, and the operator's rule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, run_server

RING = 1.0  # the ring timeout of these servers: a silent call ends `missed` after it


@pytest.fixture(scope="module")
def contacts_server() -> Iterator[ServerProcess]:
    """Presence to contacts only; everyone may ring (the ring setting is tested per user)."""
    with run_server(
        PEERCALL_DIRECTORY="contacts",
        PEERCALL_CALLS_FROM="everyone",
        PEERCALL_RING_TIMEOUT=str(RING),
        PEERCALL_CONTACT_RATE="1000",
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def guarded_server() -> Iterator[ServerProcess]:
    """Contacts only may ring by default, and the operator's rule refuses calls to ids starting with `vip`."""
    with run_server(
        PEERCALL_DIRECTORY="contacts",
        PEERCALL_CALLS_FROM="contacts",
        PEERCALL_RING_TIMEOUT=str(RING),
        PEERCALL_CALL_POLICY="tests.integration.policy_example:may_call",
    ) as srv:
        yield srv


@pytest.fixture
def on(contacts_server: ServerProcess, connect: Any) -> Any:
    """`await on(user)`: a client of the contacts server."""
    return lambda user: connect(user, contacts_server)


async def befriend(a: Any, b: Any) -> None:
    """Make `a` and `b` contacts: a asks, b accepts; both see the other as a contact."""
    await a.send({"type": "contact-add", "to": b.id})
    await b.expect(type="contacts", incoming=[{"id": a.id, "at": pytest.approx(time.time(), abs=5)}])
    await b.send({"type": "contact-add", "to": a.id})
    for me, other in ((a, b), (b, a)):
        while True:
            frame = await me.expect(type="contacts")
            if other.id in [c["id"] for c in frame["contacts"]]:
                break


async def caller_view(caller: Any, callee: str, *, within: float) -> tuple[list[dict[str, Any]], float]:
    """What `caller` sees of a call to `callee`, up to its call-ended: the frames (ids blanked) and how long."""
    start = time.monotonic()
    await caller.send({"type": "call-request", "to": callee})
    frames = []
    while True:
        frame = await caller.recv(timeout=within)
        if frame["type"] in ("presence", "contacts", "hangup", "call-reject"):
            continue  # the seed protocol's frames follow call-ended: compared as part of it
        frames.append({k: ("K" if k == "callId" else v) for k, v in frame.items()})
        if frame["type"] == "call-ended":
            return frames, time.monotonic() - start


async def test_a_request_is_seen_and_accepted_and_both_see_each_other(on: Any, uid: Any) -> None:
    alice, bob = await on(uid("alice")), await on(uid("bob"))
    assert alice.welcome["directory"] == "contacts" and "contacts" in alice.welcome["features"]
    await alice.nothing(type="contacts", within=0.3)  # nothing to say yet: no contacts frame
    await alice.send({"type": "contact-add", "to": bob.id, "data": {"name": "Bob (work)"}})
    mine = await alice.expect(type="contacts", incoming=[])
    assert [o["id"] for o in mine["outgoing"]] == [bob.id]
    theirs = await bob.expect(type="contacts", outgoing=[])
    assert [i["id"] for i in theirs["incoming"]] == [alice.id]
    await bob.send({"type": "contact-add", "to": alice.id})
    got = await alice.expect(type="contacts", outgoing=[])
    assert got["contacts"] == [
        {"id": bob.id, "name": "Bob (work)", "since": pytest.approx(time.time(), abs=5), "status": "online"}
    ]
    got = await bob.expect(type="contacts", incoming=[])
    assert [(c["id"], c["name"], c["status"]) for c in got["contacts"]] == [(alice.id, None, "online")]


async def test_presence_goes_to_contacts_only(on: Any, uid: Any) -> None:
    alice, bob = await on(uid("alice")), await on(uid("bob"))
    await befriend(alice, bob)
    stranger = await on(uid("stranger"))
    assert stranger.welcome["online"] == [] and stranger.welcome["recent"] == []
    await alice.nothing(type="presence", id=stranger.id, within=0.5)
    await stranger.close()
    carol = await on(uid("carol"))
    await bob.close()
    assert (await alice.expect(type="presence", id=bob.id))["status"] == "offline"
    await carol.nothing(type="presence", within=0.5)
    again = await on(bob.id)
    assert again.welcome["online"] == [alice.id]
    contacts = await again.expect(type="contacts")
    assert [(c["id"], c["status"]) for c in contacts["contacts"]] == [(alice.id, "online")]


async def test_nobody_can_list_users_in_contacts_mode(on: Any, uid: Any) -> None:
    alice = await on(uid("alice"))
    await alice.send({"type": "directory", "data": {"q": ""}})
    error = await alice.expect(type="error")
    assert error["code"] == "not-allowed" and error["ref"] == "directory"


async def test_declining_is_silent_and_removing_is_mutual(on: Any, uid: Any) -> None:
    alice, bob, carol = await on(uid("alice")), await on(uid("bob")), await on(uid("carol"))
    await alice.send({"type": "contact-add", "to": carol.id})
    await alice.expect(type="contacts", incoming=[])  # her own devices see her request
    await carol.expect(type="contacts", incoming=[{"id": alice.id, "at": pytest.approx(time.time(), abs=5)}])
    await carol.send({"type": "contact-decline", "to": alice.id})
    assert (await carol.expect(type="contacts", incoming=[]))["contacts"] == []
    await alice.nothing(type="contacts", within=0.4)  # alice is not told: her request just waits
    await befriend(alice, bob)
    await bob.send({"type": "contact-remove", "to": alice.id})
    assert (await bob.expect(type="contacts", contacts=[]))["incoming"] == []
    assert (await alice.expect(type="contacts", contacts=[]))["outgoing"][0]["id"] == carol.id


async def test_a_blocked_contact_calls_as_if_the_blocker_were_offline(
    on: Any, uid: Any, contacts_server: ServerProcess
) -> None:
    alice, bob = await on(uid("alice")), await on(uid("bob"))
    await befriend(alice, bob)
    await alice.send({"type": "block", "to": bob.id})
    assert [b["id"] for b in (await alice.expect(type="contacts", contacts=[]))["blocked"]] == [bob.id]
    assert (await bob.expect(type="presence", id=alice.id))["status"] == "offline"  # as if she had left
    blocked, took = await caller_view(bob, alice.id, within=3)
    await alice.nothing(within=0.5)  # no ring, no frame at all
    # The same call to a contact who really is offline:
    carol = await on(uid("carol"))
    await befriend(bob, carol)
    await carol.close()
    await bob.expect(type="presence", id=carol.id, status="offline")
    offline, took_offline = await caller_view(bob, carol.id, within=3)

    def blank(frames: list[dict[str, Any]], who: str) -> list[dict[str, Any]]:
        return [{k: (v.replace(who, "X") if isinstance(v, str) else v) for k, v in f.items()} for f in frames]

    assert blank(offline, carol.id) == blank(blocked, alice.id)
    assert blocked[0]["code"] == "unavailable" and took < 0.5 and took_offline < 0.5
    # His requests vanish, and her history holds nothing of him.
    await bob.send({"type": "contact-remove", "to": alice.id})
    await bob.send({"type": "contact-add", "to": alice.id})
    await alice.nothing(type="contacts", within=0.5)
    async with httpx.AsyncClient() as http:
        hers = (await http.get(f"{contacts_server.http}/api/calls", params={"id": alice.id})).json()["calls"]
    assert hers == []


async def test_a_blocked_contact_cannot_tell_a_block_from_the_blocker_leaving(on: Any, uid: Any) -> None:
    """Bob blocks alice, carol really leaves: alice is told both the same way (one presence change each, offline
    with a `lastSeen`), and after she reconnects her contacts show both offline with a `lastSeen`: bob's is when he
    blocked her (no `lastSeen` at all was the tell, since every contact who really left has one)."""
    alice, bob, carol = await on(uid("alice")), await on(uid("bob")), await on(uid("carol"))
    await befriend(alice, bob)
    await befriend(alice, carol)

    async def presence_frame(of: str) -> dict[str, Any]:
        while True:  # the frame as sent (`expect` would unpack a batch)
            frame = await alice.recv()
            if frame["type"] == "presence" and of in (frame.get("id"), *(c["id"] for c in frame.get("changes", []))):
                return frame

    await bob.send({"type": "block", "to": alice.id})
    blocked_at = time.time()
    by_block = await presence_frame(bob.id)
    await carol.close()
    by_leaving = await presence_frame(carol.id)
    assert sorted(by_block) == sorted(by_leaving) == ["id", "lastSeen", "status", "type"]
    assert by_block["status"] == by_leaving["status"] == "offline"
    await alice.close()
    again = await on(alice.id)
    shown = {c["id"]: c for c in (await again.expect(type="contacts"))["contacts"]}
    assert sorted(shown[bob.id]) == sorted(shown[carol.id])
    assert shown[bob.id]["status"] == "offline" and shown[bob.id]["lastSeen"] == pytest.approx(blocked_at, abs=5)


async def test_a_blocked_stranger_gets_what_a_call_to_nobody_gets(on: Any, uid: Any, contacts_server: Any) -> None:
    alice, mallory = await on(uid("alice")), await on(uid("mallory"))
    await alice.send({"type": "block", "to": mallory.id})
    await alice.expect(type="contacts", blocked=[{"id": mallory.id, "at": pytest.approx(time.time(), abs=5)}])
    blocked, took = await caller_view(mallory, alice.id, within=RING + 3)
    nobody, took_nobody = await caller_view(mallory, uid("nobody"), within=RING + 3)
    assert [{**f, "to": "X"} for f in blocked] == [{**f, "to": "X"} for f in nobody]
    assert [f["type"] for f in blocked] == ["call-ringing", "call-ended", "hangup"] or blocked[-1][
        "outcome"
    ] == "missed"
    assert abs(took - took_nobody) < 0.4 and took >= RING * 0.9
    await alice.nothing(within=0.3)
    async with httpx.AsyncClient() as http:
        hers = (await http.get(f"{contacts_server.http}/api/calls", params={"id": alice.id})).json()["calls"]
        his = (await http.get(f"{contacts_server.http}/api/calls", params={"id": mallory.id})).json()["calls"]
    assert hers == []  # nothing of a blocked caller reaches the blocker
    assert len(his) == 2 and all("screened" not in c for c in his)
    assert his[0]["outcome"] == his[1]["outcome"] == "missed"


async def test_do_not_disturb_silences_calls_and_the_history_says_so(on: Any, uid: Any, contacts_server: Any) -> None:
    alice, bob = await on(uid("alice")), await on(uid("bob"))
    await befriend(alice, bob)
    await alice.send({"type": "settings", "data": {"callsFrom": "nobody"}})
    assert (await alice.expect(type="contacts", callsFrom="nobody"))["defaultCallsFrom"] == "everyone"
    frames, took = await caller_view(bob, alice.id, within=RING + 3)
    assert [f["type"] for f in frames] == ["call-ringing", "call-ended"]
    ended = frames[-1]
    assert ended["outcome"] == "missed" and took >= RING * 0.9
    await alice.nothing(type="call-request", within=0.2)
    async with httpx.AsyncClient() as http:
        hers = (await http.get(f"{contacts_server.http}/api/calls", params={"id": alice.id})).json()["calls"]
        his = (await http.get(f"{contacts_server.http}/api/calls", params={"id": bob.id})).json()["calls"]
    assert [(c["caller"], c["outcome"], c.get("screened")) for c in hers] == [(bob.id, "missed", "silenced")]
    assert "screened" not in his[0]
    await alice.send({"type": "settings", "data": {"callsFrom": None}})
    await alice.expect(type="contacts", callsFrom=None)
    await bob.send({"type": "call-request", "to": alice.id})
    await alice.expect(type="call-request", **{"from": bob.id})


async def test_bad_contact_frames_get_clear_errors(on: Any, uid: Any) -> None:
    alice = await on(uid("alice"))
    cases = [
        ({"type": "contact-add", "to": alice.id}, "bad-message"),
        ({"type": "contact-add", "to": "bob", "data": {"name": ""}}, "bad-message"),
        ({"type": "contact-rename", "to": "bob", "data": {"name": "x" * 65}}, "bad-message"),
        ({"type": "settings", "data": {"callsFrom": "friends"}}, "bad-message"),
        ({"type": "block"}, "bad-message"),
        ({"type": "settings"}, "bad-message"),
    ]
    for frame, code in cases:
        await alice.send(frame)
        assert (await alice.expect(type="error"))["code"] == code, frame


async def test_requests_waiting_are_bounded(on: Any, uid: Any) -> None:
    alice = await on(uid("alice"))
    for i in range(100):
        await alice.send({"type": "contact-add", "to": f"{alice.id}-x{i}"})
    await alice.send({"type": "contact-add", "to": f"{alice.id}-x100"})
    error = await alice.expect(type="error", timeout=20)
    assert error["code"] == "too-many" and error["to"] == f"{alice.id}-x100"


async def test_the_directory_pages_through_who_is_online(server: ServerProcess, connect: Any, uid: Any) -> None:
    """In the default open mode (`all`), the directory frame pages by id prefix."""
    stem = uid("dir")
    users = [await connect(f"{stem}-{i}") for i in range(5)]
    me = users[0]
    assert me.welcome["directory"] == "all"
    await me.send({"type": "directory", "data": {"q": stem, "limit": 2}})
    page = await me.expect(type="directory")
    assert [u["id"] for u in page["users"]] == [f"{stem}-1"] and page["next"] == f"{stem}-1"
    await me.send({"type": "directory", "data": {"q": stem, "after": page["next"], "limit": 10}})
    page = await me.expect(type="directory")
    assert [u["id"] for u in page["users"]] == [f"{stem}-{i}" for i in (2, 3, 4)] and page["next"] is None


async def test_contacts_only_and_the_operators_rule(guarded_server: ServerProcess, connect: Any, uid: Any) -> None:
    alice, stranger = await connect(uid("alice"), guarded_server), await connect(uid("stranger"), guarded_server)
    frames, took = await caller_view(stranger, alice.id, within=RING + 3)
    assert next(f for f in frames if f["type"] == "call-ended")["outcome"] == "missed" and took >= RING * 0.9
    await alice.nothing(type="call-request", within=0.2)
    await befriend(alice, stranger)
    await stranger.send({"type": "call-request", "to": alice.id})
    await alice.expect(type="call-request", **{"from": stranger.id})
    await stranger.send({"type": "hangup", "to": alice.id})
    vip = await connect(f"vip{uid('x')}", guarded_server)
    await befriend(vip, alice)
    frames, took = await caller_view(alice, vip.id, within=RING + 3)
    assert next(f for f in frames if f["type"] == "call-ended")["outcome"] == "missed"
    await vip.nothing(type="call-request", within=0.2)
    async with httpx.AsyncClient() as http:
        theirs = (await http.get(f"{guarded_server.http}/api/calls", params={"id": vip.id})).json()["calls"]
    assert theirs == []  # the operator refused it: the callee never hears of it


@pytest.mark.parametrize("n", [1])
async def test_every_device_of_a_user_sees_the_same_contacts(on: Any, uid: Any, n: int) -> None:
    alice = uid("alice")
    phone, laptop = await on(alice), await on(alice)
    await phone.send({"type": "contact-add", "to": "someone-else", "data": {"name": "S"}})
    for device in (phone, laptop):
        frame = await device.expect(type="contacts", incoming=[])
        if not frame["outgoing"]:
            frame = await device.expect(type="contacts", incoming=[])
        assert [o["id"] for o in frame["outgoing"]] == ["someone-else"]
    await asyncio.sleep(0)
