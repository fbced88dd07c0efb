"""Every call outcome lands in the history, and `/api/calls` serves it to the user, paged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from peercall.auth.accounts import b64url
from tests.conftest import ServerProcess, run_server


@pytest.fixture(scope="module")
def quick_server() -> Iterator[ServerProcess]:
    with run_server(PEERCALL_RING_TIMEOUT="0.5", PEERCALL_RESUME_GRACE="0.5") as srv:
        yield srv


async def history(srv: ServerProcess, user: str, want: int, **params: str) -> dict:
    """GET /api/calls for `user`, waiting (briefly) until `want` records are there: writes are asynchronous."""
    async with httpx.AsyncClient(base_url=srv.http) as http:
        for _ in range(50):
            body = (await http.get("/api/calls", params={"id": user, **params})).json()
            if len(body["calls"]) >= want:
                return body
            await asyncio.sleep(0.05)
    raise AssertionError(f"{user} has {body} after 2.5s, wanted {want} calls")


async def test_every_outcome_is_recorded(quick_server: ServerProcess, connect, uid) -> None:
    """answered, rejected, cancelled, missed, busy, unavailable, failed and peer-lost calls all reach /api/calls."""
    a, b, c = uid("alice"), uid("bob"), uid("carol")
    alice = await connect(a, quick_server)
    bob = await connect(b, quick_server)
    carol = await connect(c, quick_server)

    async def ring() -> str:
        await alice.send({"type": "call-request", "to": b})
        call_id = (await alice.expect(type="call-ringing"))["callId"]
        await bob.expect(type="call-request", callId=call_id)
        return call_id

    async def ended(call_id: str) -> None:
        await alice.expect(type="call-ended", callId=call_id)

    expected = []
    call_id = await ring()  # answered
    await bob.send({"type": "call-accept", "to": a})
    await alice.expect(type="call-accept", callId=call_id)
    await alice.send({"type": "hangup", "to": b})
    await ended(call_id)
    expected.append(("answered", "user-hangup", a))
    call_id = await ring()  # rejected
    await bob.send({"type": "call-reject", "to": a})
    await ended(call_id)
    expected.append(("rejected", "user-rejected", b))
    call_id = await ring()  # cancelled
    await alice.send({"type": "hangup", "to": b})
    await ended(call_id)
    expected.append(("cancelled", "user-hangup", a))
    call_id = await ring()  # missed
    await ended(call_id)
    expected.append(("missed", "invite-timeout", None))
    call_id = await ring()  # failed
    await bob.send({"type": "call-accept", "to": a})
    await bob.send({"type": "hangup", "to": a, "data": {"reason": "ice-timeout"}})
    await ended(call_id)
    expected.append(("failed", "ice-timeout", b))
    await carol.send({"type": "call-request", "to": b})  # bob busy with carol
    carol_call = (await carol.expect(type="call-ringing"))["callId"]
    await bob.send({"type": "call-accept", "to": c})
    await carol.expect(type="call-accept", callId=carol_call)
    await alice.send({"type": "call-request", "to": b})
    busy_id = (await alice.expect(type="call-ended", outcome="busy"))["callId"]
    expected.append(("busy", "user-busy", None))
    await carol.close()  # carol drops and never comes back: bob hears peer-lost
    await bob.expect(type="call-ended", callId=carol_call, reason="peer-lost")
    await alice.send({"type": "call-request", "to": uid("nobody")})
    await alice.expect(type="call-ended", outcome="unavailable")
    expected.append(("unavailable", "user-unavailable", None))

    body = await history(quick_server, a, len(expected))
    got = [(r["outcome"], r["reason"], r["hungUpBy"]) for r in reversed(body["calls"])]
    assert got == expected
    assert busy_id in {r["callId"] for r in body["calls"]}
    answered = body["calls"][-1]
    assert answered["duration"] >= 0
    # Open mode: anyone may read the history of any id, so it shows no device id (one takes over a device and its
    # answered call, `?device=`): not the other party's, not even the user's own.
    assert {(r["callerDevice"], r["answeredDevice"]) for r in body["calls"]} == {(None, None)}
    carol_history = await history(quick_server, c, 1)
    assert [(r["outcome"], r["reason"]) for r in carol_history["calls"]] == [("answered", "peer-lost")]


async def test_history_is_paged_newest_first_and_private(quick_server: ServerProcess, connect, uid) -> None:
    """Pages follow each other without gaps, newest first, and a user sees only their own calls."""
    a, b = uid("alice"), uid("bob")
    alice = await connect(a, quick_server)
    for _ in range(5):
        await alice.send({"type": "call-request", "to": b})
        await alice.expect(type="call-ended", outcome="unavailable")
    first = await history(quick_server, a, 2, limit="2")
    assert len(first["calls"]) == 2 and first["next"]
    second = await history(quick_server, a, 2, limit="2", before=first["next"])
    third = await history(quick_server, a, 1, limit="2", before=second["next"])
    ids = [r["callId"] for page in (first, second, third) for r in page["calls"]]
    assert len(set(ids)) == 5 and third["next"] is None
    times = [r["ringingAt"] for page in (first, second, third) for r in page["calls"]]
    assert times == sorted(times, reverse=True)
    other = await history(quick_server, uid("stranger"), 0)
    assert other == {"calls": [], "next": None}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "bad-id"),
        ({"id": "a b"}, "bad-id"),
        ({"id": "a", "limit": "0"}, "bad-limit"),
        ({"id": "a", "limit": "x"}, "bad-limit"),
        ({"id": "a", "before": "garbage!"}, "bad-cursor"),
        # a time of 400 digits (it was a 503 "try again shortly" and a traceback), half a UTF-16 pair in the id
        ({"id": "a", "before": b64url(b"[" + b"9" * 400 + b',"x"]')}, "bad-cursor"),
        ({"id": "a", "before": b64url(b'[1.5,"\\ud800"]')}, "bad-cursor"),
    ],
)
async def test_bad_history_queries_are_400(quick_server: ServerProcess, params: dict, code: str) -> None:
    """A malformed history query gets HTTP 400 with a code that says what was wrong."""
    async with httpx.AsyncClient(base_url=quick_server.http) as http:
        response = await http.get("/api/calls", params=params)
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert "Traceback" not in quick_server.log()


async def test_missed_calls_are_told_on_connect(quick_server: ServerProcess, connect, uid) -> None:
    """Calls that came while a user was offline are reported once, when they connect."""
    a, b = uid("alice"), uid("bob")
    alice = await connect(a, quick_server)
    await alice.send({"type": "call-request", "to": b})
    call_id = (await alice.expect(type="call-ended", outcome="unavailable"))["callId"]
    await history(quick_server, a, 1)
    bob = await connect(b, quick_server)
    missed = await bob.expect(type="missed-calls")
    assert [(r["callId"], r["caller"]) for r in missed["calls"]] == [(call_id, a)]
    await bob.close()
    again = await connect(b, quick_server)
    await again.nothing(type="missed-calls", within=0.5)


async def test_call_summaries_reach_the_history(quick_server: ServerProcess, connect, uid) -> None:
    """Both parties' call-summary frames are kept with the call and shown by /api/calls; strangers are refused."""
    a, b, m = uid("alice"), uid("bob"), uid("mallory")
    alice = await connect(a, quick_server)
    bob = await connect(b, quick_server)
    mallory = await connect(m, quick_server)
    await alice.send({"type": "call-request", "to": b})
    call_id = (await alice.expect(type="call-ringing"))["callId"]
    await bob.expect(type="call-request")
    await alice.send({"type": "call-summary", "callId": call_id, "data": {"mos": 4}})
    assert (await alice.expect(type="error"))["code"] == "not-in-call"  # not before it ended
    await bob.send({"type": "call-accept", "to": a})
    await alice.expect(type="call-accept")
    await bob.send({"type": "hangup", "to": a})
    await alice.expect(type="call-ended", callId=call_id)
    await alice.send({"type": "call-summary", "callId": call_id, "data": {"mos": 4.3, "path": "direct", "x": 1}})
    await bob.send({"type": "call-summary", "callId": call_id, "data": {"lossPct": 0.5, "rttMs": 12}})
    await mallory.send({"type": "call-summary", "callId": call_id, "data": {"mos": 1}})
    assert (await mallory.expect(type="error"))["code"] == "not-in-call"
    await alice.send({"type": "call-summary", "callId": call_id, "data": {"mos": 7}})
    assert (await alice.expect(type="error"))["code"] == "bad-message"
    async with httpx.AsyncClient(base_url=quick_server.http) as http:
        for _ in range(50):
            (record,) = (await http.get("/api/calls", params={"id": a})).json()["calls"]
            if record["quality"] and len(record["quality"]) == 2:
                break
            await asyncio.sleep(0.05)
    assert record["quality"] == {a: {"mos": 4.3, "path": "direct"}, b: {"lossPct": 0.5, "rttMs": 12}}
    # One per party and call: a repeat is refused before it costs a write (a flood of them stalled the store).
    await alice.send({"type": "call-summary", "callId": call_id, "data": {"mos": 1.2}})
    repeat = await alice.expect(type="error")
    assert (repeat["code"], repeat["ref"], repeat["callId"]) == ("not-in-call", "call-summary", call_id)
    assert "already" in repeat["message"]
