"""The echo service cannot be used to probe the server's networks: the remote candidates a call checks are bounded
and filtered by address (candidates.py), and one caller's calls to it are bounded (echo.py).

The caller here is a raw WebSocket client that speaks the protocol by hand, as an attacker would, with an offer made
by a throwaway aiortc peer connection plus the candidates it wants checked. What the echo checks is read where
aiortc hands a candidate to aioice (`Connection.add_remote_candidate`); every candidate is on loopback or is
unreachable in the loopback-only namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aioice
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from peercall.client import CandidatePolicy
from peercall.client.candidates import RemoteCandidates, parse_network
from peercall.client.echo import CallerLimit, echo_policy, run_echo
from tests.conftest import Client as RawClient
from tests.conftest import ServerProcess

from .conftest import SCALE, WAIT, MakeClient, next_incoming, run_python, wait_until

Added = list[tuple[str, int]]


@pytest.fixture
def added(monkeypatch: pytest.MonkeyPatch) -> Added:
    """Every remote candidate that aiortc hands to aioice in this process, as (address, port)."""
    seen: Added = []
    original = aioice.Connection.add_remote_candidate

    async def recording(self: aioice.Connection, candidate: aioice.Candidate | None) -> None:
        if candidate is not None:
            seen.append((candidate.host, candidate.port))
        await original(self, candidate)

    monkeypatch.setattr(aioice.Connection, "add_remote_candidate", recording)
    return seen


@pytest.fixture
async def echo(server: ServerProcess, uid: Any) -> AsyncIterator[str]:
    """An echo service with its defaults, in this process; its id."""
    echo_id = uid("echo")
    ready = asyncio.Event()
    service = asyncio.create_task(run_echo(server.ws, echo_id, ice_loopback=True, ready=ready))
    try:
        async with asyncio.timeout(WAIT):
            await ready.wait()
        yield echo_id
    finally:
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service


async def offer_sdp(lines: list[str]) -> str:
    """A valid audio offer (from a throwaway aiortc peer), with `lines` (candidate attributes) appended, and without
    `a=end-of-candidates` (as a browser that trickles sends it: later candidates are still taken)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp.replace("a=end-of-candidates\r\n", "")
    finally:
        await pc.close()
    return sdp + "".join(f"a={line}\r\n" for line in lines)


def candidate(host: str, port: int) -> str:
    """A host candidate attribute for `host:port`."""
    return f"candidate:{port} 1 udp 2130706431 {host} {port} typ host"


async def place_call(mallory: RawClient, callee: str) -> str:
    """Call `callee` and wait until it accepts; the call id."""
    await mallory.send({"type": "call-request", "to": callee})
    ringing = await mallory.expect(type="call-ringing")
    await mallory.expect(type="call-accept", **{"from": callee})
    return str(ringing["callId"])


async def trickle(mallory: RawClient, callee: str, call_id: str, lines: list[str]) -> None:
    """Send each candidate attribute as a trickled `candidate` frame."""
    for line in lines:
        data = {"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}
        await mallory.send({"type": "candidate", "to": callee, "callId": call_id, "data": data})


async def offer(mallory: RawClient, callee: str, call_id: str, sdp: str) -> None:
    """Send an offer and wait for the answer."""
    await mallory.send({"type": "offer", "to": callee, "callId": call_id, "data": {"type": "offer", "sdp": sdp}})
    await mallory.expect(type="answer", **{"from": callee})


def handled(added: Added, caplog: pytest.LogCaptureFixture, port: int) -> Callable[[], Awaitable[bool]]:
    """A probe: whether the candidate on `port` was either handed to aioice or dropped (the SDK's debug line)."""

    async def probe() -> bool:
        return any(p == port for _, p in added) or any(f":{port} " in r.getMessage() for r in caplog.records)

    return probe


async def test_a_call_checks_at_most_20_of_the_callers_candidates(
    connect: Any, echo: str, uid: Any, added: Added, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that sends 220 candidates (trickled before the offer, in it, trickled after) gets 20 checked."""
    caplog.set_level(logging.DEBUG, logger="peercall.client")
    before = [candidate("127.0.0.1", 20000 + i) for i in range(60)]
    inside = [candidate("127.0.0.1", 21000 + i) for i in range(100)]
    after = [candidate("127.0.0.1", 22000 + i) for i in range(60)]
    mallory = await connect(uid("mallory"))
    call_id = await place_call(mallory, echo)
    await trickle(mallory, echo, call_id, before)
    await offer(mallory, echo, call_id, await offer_sdp(inside))
    await trickle(mallory, echo, call_id, after)
    await wait_until(handled(added, caplog, 22059), bool, "the last candidate to be handled")
    assert 0 < len(added) <= 20, f"{len(added)} candidates were handed to aioice"
    assert "sent more than 20 candidates; dropping the rest" in caplog.text
    await mallory.send({"type": "hangup", "to": echo, "callId": call_id})
    await mallory.expect(type="call-ended", callId=call_id)


async def test_candidates_waiting_for_the_offer_are_bounded(
    connect: Any, sdk: MakeClient, uid: Any, added: Added, caplog: pytest.LogCaptureFixture
) -> None:
    """Candidates trickled before the remote description wait in a queue no longer than the bound."""
    caplog.set_level(logging.DEBUG, logger="peercall.client")
    bob = await sdk(uid("bob"), candidate_policy=CandidatePolicy(max_candidates=5))
    mallory = await connect(uid("mallory"))
    ringing = asyncio.create_task(next_incoming(bob))
    await mallory.send({"type": "call-request", "to": bob.id})
    call = await ringing
    await call.accept()
    await mallory.expect(type="call-accept", **{"from": bob.id})
    assert call.id is not None
    await trickle(mallory, bob.id, call.id, [candidate("127.0.0.1", 23000 + i) for i in range(50)])
    last = handled(added, caplog, 23049)

    async def settled() -> bool:
        return len(call._pending_candidates) >= 50 or await last()

    await wait_until(settled, bool, "the last candidate to be handled")
    assert len(call._pending_candidates) == 5, "the queue is bounded by max_candidates"
    await offer(mallory, bob.id, call.id, await offer_sdp([]))
    await wait_until(lambda: asyncio.sleep(0, len(added)), lambda n: n == 5, "the queued candidates to be added")
    assert sorted(port for _, port in added) == list(range(23000, 23005))
    await call.hangup()


async def test_denied_addresses_are_never_checked(
    connect: Any, echo: str, uid: Any, added: Added, caplog: pytest.LogCaptureFixture
) -> None:
    """A candidate in a denied range (10.99.0.1, not a local subnet here), or an mDNS name, never reaches aiortc,
    whether trickled or in the offer; an allowed one does."""
    caplog.set_level(logging.DEBUG, logger="peercall.client")
    assert not any(ipaddress.ip_address("10.99.0.1") in net for net in echo_policy_subnets())
    denied = [candidate("10.99.0.1", 24001), candidate("169.254.3.4", 24002), candidate("fd00::1", 24003)]
    mdns = f"candidate:1 1 udp 2130706431 {os.urandom(4).hex()}.local 24004 typ host"
    mallory = await connect(uid("mallory"))
    call_id = await place_call(mallory, echo)
    await trickle(mallory, echo, call_id, [candidate("10.99.0.1", 24010), mdns])
    await offer(mallory, echo, call_id, await offer_sdp([*denied, mdns, candidate("127.0.0.1", 24020)]))
    await trickle(mallory, echo, call_id, [candidate("10.99.0.1", 24011), candidate("127.0.0.1", 24021)])
    await wait_until(handled(added, caplog, 24021), bool, "the last candidate to be handled")
    assert sorted(added) == [("127.0.0.1", 24020), ("127.0.0.1", 24021)]
    assert "the candidate policy denies its address" in caplog.text
    await mallory.send({"type": "hangup", "to": echo, "callId": call_id})
    await mallory.expect(type="call-ended", callId=call_id)


def echo_policy_subnets() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The ranges the echo's default policy allows."""
    return [rule.network for rule in echo_policy(env={}).rules if rule.allow]


async def test_a_caller_gets_six_calls_a_minute(connect: Any, echo: str, uid: Any) -> None:
    """The echo answers one caller's first six calls in a minute and rejects the seventh as busy."""
    mallory = await connect(uid("mallory"))
    for _ in range(6):
        call_id = await place_call(mallory, echo)
        await mallory.send({"type": "hangup", "to": echo, "callId": call_id})
        ended = await mallory.expect(type="call-ended", callId=call_id)
        assert ended["outcome"] == "answered", ended
    await mallory.send({"type": "call-request", "to": echo})
    call_id = (await mallory.expect(type="call-ringing"))["callId"]
    ended = await mallory.expect(type="call-ended", callId=call_id, timeout=WAIT)
    assert (ended["outcome"], ended.get("reason")) == ("busy", "user-busy"), ended
    other = await connect(uid("other"))
    call_id = await place_call(other, echo)  # another caller is not affected
    await other.send({"type": "hangup", "to": echo, "callId": call_id})


def test_the_policy_follows_coturns_model() -> None:
    """Your allowed ranges, then your denied ones, then loopback and local subnets, then reserved ranges; the rest
    (global unicast) is allowed; an IPv4-mapped address is judged as IPv4; mDNS names are dropped."""
    lan = parse_network("192.168.7.0/24")
    policy = CandidatePolicy.public_service(
        allow=[parse_network("10.1.0.0/16")],
        deny=[parse_network("192.168.7.9"), parse_network("8.8.4.0/24")],
        subnets=[lan],
    )
    verdicts = {
        host: policy.allows(host)
        for host in [
            "127.0.0.1", "::1", "192.168.7.20", "192.168.7.9", "192.168.8.1", "10.1.2.3", "10.2.0.1", "172.16.0.1",
            "100.64.0.1", "169.254.1.1", "fe80::1%eth0", "fd00::1", "224.0.0.251", "0.0.0.0", "255.255.255.255",
            "8.8.8.8", "8.8.4.4", "2001:4860::8888", "::ffff:10.9.9.9", "::ffff:8.8.8.8", "abcd.local", "example.com",
        ]
    }  # fmt: skip
    allowed = {host for host, ok in verdicts.items() if ok}
    assert allowed == {"127.0.0.1", "::1", "192.168.7.20", "10.1.2.3", "8.8.8.8", "2001:4860::8888", "::ffff:8.8.8.8"}
    assert CandidatePolicy().allows("10.0.0.1") and CandidatePolicy().allows("abcd.local")
    assert str(policy).startswith("allow 10.1.0.0/16, deny 192.168.7.9/32, deny 8.8.4.0/24, allow 127.0.0.0/8")
    assert str(policy).endswith(
        "deny the 22 private and reserved ranges, else allow; at most 20 a call; mDNS names dropped"
    )


def test_candidates_are_counted_once_and_only_udp() -> None:
    """The same candidate again is not counted twice; TCP and malformed candidates are dropped uncounted."""
    remote = RemoteCandidates(CandidatePolicy(max_candidates=2))
    assert remote.admit(candidate("127.0.0.1", 1)) and remote.admit("a=" + candidate("127.0.0.1", 1))
    assert not remote.admit("candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active")
    assert not remote.admit("candidate:garbage")
    assert remote.admit(candidate("127.0.0.1", 2)) and not remote.admit(candidate("127.0.0.1", 3))
    assert remote.admitted == 2
    sdp = f"v=0\r\na={candidate('127.0.0.1', 2)}\r\na={candidate('127.0.0.1', 4)}\r\na=end-of-candidates\r\n"
    assert remote.filter_sdp(sdp) == f"v=0\r\na={candidate('127.0.0.1', 2)}\r\na=end-of-candidates\r\n"


def test_the_caller_limit_slides_and_logs_once() -> None:
    """Six calls in any 60 s; the first refusal is worth a log line, later ones in the same stretch are not."""
    limit = CallerLimit(6)
    assert [limit.admit("m", t) for t in range(6)] == [True] * 6
    assert (limit.admit("m", 10), limit.admit("m", 20), limit.admit("x", 20)) == (False, None, True)
    assert limit.admit("m", 60.5) is True  # the call at 0 left the window
    assert limit.admit("m", 60.6) is False  # a new stretch of refusals: worth a line again


async def test_bad_ranges_are_refused_at_start(server: ServerProcess) -> None:
    """A malformed range in `--deny-peer`, `$PEERCALL_ECHO_ALLOWED_PEERS` or (for `serve --with-echo`)
    `$PEERCALL_ECHO_DENIED_PEERS` stops the command at once with status 2 and a message naming it."""
    status, out = await run_python(
        "-m", "peercall", "echo", "--url", server.ws, "--deny-peer", "10.0.0.0/33", what="echo", timeout=30 * SCALE
    )
    assert status == 2 and "--deny-peer: expected an address range" in out and "'10.0.0.0/33'" in out, out
    env = {**os.environ, "PEERCALL_ECHO_ALLOWED_PEERS": "10.1.0.0/16, bogus"}
    status, out = await run_python(
        "-m", "peercall", "echo", "--url", server.ws, what="echo", timeout=30 * SCALE, env=env
    )
    assert status == 2 and "PEERCALL_ECHO_ALLOWED_PEERS: expected an address range" in out, out
    env = {**os.environ, "PEERCALL_ECHO_DENIED_PEERS": "nope", "PEERCALL_PORT": "0", "PEERCALL_HOST": "127.0.0.1"}
    status, out = await run_python("-m", "peercall", "serve", "--with-echo", what="serve", timeout=30 * SCALE, env=env)
    assert status == 2 and "PEERCALL_ECHO_DENIED_PEERS: expected an address range" in out, out


# ---- what one caller can make the echo hold (a review's findings) -----------------------------------------------


async def offer_of(tracks: int, *, inactive: bool = False) -> str:
    """A valid offer of `tracks` audio m-lines on which the caller sends (or none, `inactive`)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for _ in range(tracks):
            pc.addTransceiver("audio", "inactive" if inactive else "sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def directions(sdp: str) -> list[str]:
    """The direction of each m-line of `sdp`, in order."""
    found = []
    for section in sdp.split("\nm=")[1:]:
        found.append(next((d for d in ("sendrecv", "sendonly", "recvonly", "inactive") if f"a={d}" in section), "?"))
    return found


async def test_an_offer_of_several_audio_tracks_is_answered_on_the_first_alone(
    connect: Any, echo: str, uid: Any
) -> None:
    """Each audio m-line the echo receives on starts a decoder thread, and the echo plays back the first track only:
    a caller offering four grew it by ~18 MB a second (the others' frames queued, unread) and forty started forty
    threads. The others are answered `inactive`."""
    mallory = await connect(uid("mallory"))
    call_id = await place_call(mallory, echo)
    sdp = await offer_of(4)
    await mallory.send({"type": "offer", "to": echo, "callId": call_id, "data": {"type": "offer", "sdp": sdp}})
    answer = await mallory.expect(type="answer", **{"from": echo})
    assert directions(answer["data"]["sdp"]) == ["recvonly", "inactive", "inactive", "inactive"]
    await mallory.send({"type": "hangup", "to": echo, "callId": call_id})
    await mallory.expect(type="call-ended", callId=call_id)


async def test_an_offer_of_too_many_media_lines_ends_the_call(connect: Any, echo: str, uid: Any) -> None:
    """aiortc keeps a transceiver for each m-line for the call's life, and re-offers add more (fifty a frame):
    beyond MAX_MEDIA_LINES the echo hangs up instead of answering."""
    from peercall.client.call import MAX_MEDIA_LINES

    mallory = await connect(uid("mallory"))
    call_id = await place_call(mallory, echo)
    sdp = await offer_of(MAX_MEDIA_LINES + 1)
    await mallory.send({"type": "offer", "to": echo, "callId": call_id, "data": {"type": "offer", "sdp": sdp}})
    ended = await mallory.expect(type="call-ended", callId=call_id, timeout=WAIT)
    assert (ended["outcome"], ended.get("reason")) == ("answered", "unknown-error"), ended


async def test_unusable_offers_are_logged_a_few_times_then_the_call_ends(
    connect: Any, echo: str, uid: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An offer aiortc cannot take logged a traceback each (300 in 9 s: ~43 kB/s into the server's journal under
    `serve --with-echo`) and the call went on for its ten minutes. Now one line each for the first three, and
    the tenth ends the call."""
    from peercall.client.call import MAX_BAD_DESCRIPTIONS

    caplog.set_level(logging.INFO, logger="peercall.client")
    mallory = await connect(uid("mallory"))
    call_id = await place_call(mallory, echo)
    bad = (await offer_of(1)).replace("a=rtcp-mux\r\n", "")  # (aiortc: "RTCP mux is not enabled")
    for _ in range(MAX_BAD_DESCRIPTIONS):
        await mallory.send({"type": "offer", "to": echo, "callId": call_id, "data": {"type": "offer", "sdp": bad}})
    ended = await mallory.expect(type="call-ended", callId=call_id, timeout=WAIT)
    assert (ended["outcome"], ended.get("reason")) == ("answered", "unknown-error"), ended
    lines = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(lines) == 4 and not any(r.exc_info for r in caplog.records if r.name.startswith("peercall")), lines


async def test_a_caller_who_sends_no_audio_is_hung_up(
    connect: Any, echo: str, uid: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The echo serves one caller at a time: a call that sends nothing (an `inactive` m-line) held it for its ten
    minutes while everyone else heard busy. With no audio for MAX_SILENCE seconds (1 here) the echo hangs up."""
    from peercall.client import echo as echo_module

    monkeypatch.setattr(echo_module, "MAX_SILENCE", 1.0)
    mallory = await connect(uid("mallory"))
    call_id = await place_call(mallory, echo)
    sdp = await offer_of(1, inactive=True)
    await mallory.send({"type": "offer", "to": echo, "callId": call_id, "data": {"type": "offer", "sdp": sdp}})
    await mallory.expect(type="answer", **{"from": echo})
    ended = await mallory.expect(type="call-ended", callId=call_id, timeout=5 * SCALE)
    assert (ended["outcome"], ended.get("reason")) == ("answered", "user-hangup"), ended


def test_an_echo_that_never_plays_back_holds_a_second_at_most() -> None:
    """The echo dropped what it heard only as it played it back: a caller who sends and never receives (sendonly)
    grew it by ~96 KB a second (2 MB at twenty times the packet rate) for the whole call."""
    from peercall.client.media import Echo

    echo = Echo(delay=0.7)
    chunk = np.zeros(960, np.int16)
    for i in range(5_000):  # 100 s of 20 ms chunks, at twice the real rate
        echo.sink.write(chunk, 1000.0 + i * 0.01)
    assert len(echo._chunks) <= 1.3 / 0.01
