"""Closing a call's peer connection closes every socket of it, even one bound after the close (an aioice race that
left a socket open until the garbage collector met it: a ResourceWarning in whatever ran then)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from peercall.client import CallEndedError
from peercall.client.ice import close_peer_connection, set_local_description

from .conftest import WAIT, MakeClient


def open_sockets() -> set[str]:
    """The sockets this process holds open (the targets of /proc/self/fd that are sockets)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


async def test_a_call_closed_while_it_gathers_leaves_no_socket_open() -> None:
    """The peer connection is closed before, while and after setLocalDescription() binds its host socket (the call
    ended at once): once both have returned (and the gathering is over), no socket of its is left open."""
    before = open_sockets()
    for delay in (0.0, 0.0001, 0.001, None):  # None: closed after the gathering, as most calls are
        pc = RTCPeerConnection()
        pc.addTrack(AudioStreamTrack())
        offer = await pc.createOffer()
        # (loopback: a host address to bind, in the tests' loopback-only namespace)
        gathering = asyncio.ensure_future(set_local_description(pc, offer, loopback=True))
        if delay is None:
            await gathering
        else:
            await asyncio.sleep(delay)
        await close_peer_connection(pc)
        await asyncio.gather(gathering, return_exceptions=True)  # (it may fail: the connection is closed)
        for _ in range(50):  # what a gathering under way bound is closed once it is over (in a task: at once)
            if not open_sockets() - before:
                break
            await asyncio.sleep(0.02)
        assert open_sockets() - before == set(), f"a socket left open by a call closed {delay}s into gathering"


async def test_a_peer_that_offers_no_candidates_is_named_in_the_failure(
    sdk: MakeClient, connect: Any, uid: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer whose answer carries no ICE candidate, and that trickles none, fails the call after `setup_timeout`,
    and the error (and a warning) says so, instead of a bare `ice-timeout` that sends a developer to the network."""
    caplog.set_level(logging.WARNING, "peercall.client")
    bob = await connect(uid("bob"))  # a peer of its own making: a raw WebSocket client
    alice = await sdk(uid("alice"), setup_timeout=1.5)
    call = await alice.call(bob.id)
    ringing = await bob.expect(type="call-request")
    await bob.send({"type": "call-accept", "to": alice.id, "callId": ringing["callId"]})
    offer = await bob.expect(type="offer")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(**offer["data"]))
        await pc.setLocalDescription(await pc.createAnswer())
        sdp = "".join(
            line
            for line in pc.localDescription.sdp.splitlines(keepends=True)
            if not line.startswith(("a=candidate:", "a=end-of-candidates"))
        )
    finally:
        await close_peer_connection(pc)
    data = {"type": "answer", "sdp": sdp}
    await bob.send({"type": "answer", "to": alice.id, "callId": ringing["callId"], "data": data})
    with pytest.raises(CallEndedError) as ended:
        async with asyncio.timeout(WAIT):
            await call.wait_connected()
    assert ended.value.end is not None and ended.value.end.reason == "ice-timeout", ended.value
    assert "the peer offered no ICE candidates" in str(ended.value), ended.value
    assert call.hint is not None and "the peer offered no ICE candidates" in call.hint
    assert "the peer offered no ICE candidates" in caplog.text, caplog.text
