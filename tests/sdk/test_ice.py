"""Closing a call's peer connection closes every socket of it, even one bound after the close (an aioice race that
left a socket open until the garbage collector met it: a ResourceWarning in whatever ran then)."""

from __future__ import annotations

import asyncio
import os

from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from peercall.client.ice import close_peer_connection, set_local_description


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
