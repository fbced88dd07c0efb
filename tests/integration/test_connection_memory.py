"""What a connection leaves behind once it is gone: nothing. A server runs in this process (the config `serve`
uses) with the cyclic garbage collector off, so whatever is still alive after the sockets close is held by a
reference cycle. Such cycles are freed only by the cyclic GC, and late: the server collects its young generation
every GC_YOUNG allocations (server/run.py), and a connection that lived a few minutes has reached the old ones,
which are seldom collected. The one-hour soak grew ~20 MB per 10 minutes that way (docs/benchmarks.md, Soak).

And what it freed goes back to the system: its socket buffers were on the C heap, whose free middle stays in the
RSS until the server trims the heap (server/heap.py; the soak's residual steps of 1-5 MB)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
import websockets
from picows import WSTransport

from peercall.config import Settings
from peercall.server.app import create_app
from peercall.server.fastws import FastConnection
from peercall.server.heap import HeapTrimmer
from peercall.server.run import uvicorn_config
from peercall.server.session import Session
from peercall.server.ws import AsgiConnection

PER_CONNECTION = (FastConnection, AsgiConnection, Session, WSTransport)


@contextlib.asynccontextmanager
async def in_process(deflate: bool, **limits: Any) -> AsyncIterator[tuple[int, Callable[[], bool], Any]]:
    """A server on a free loopback port in this event loop: (its port, whether it holds no connection, its app)."""
    settings = Settings(
        host="127.0.0.1", port=0, auth="open", database_url="memory://", ws_per_message_deflate=deflate, **limits
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(settings, app))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.01)
    hub = app.state.hub
    try:
        yield server.servers[0].sockets[0].getsockname()[1], lambda: len(hub) == 0 and not app.sessions.live, app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def frame(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


def alive() -> list[str]:
    return sorted(type(o).__name__ for o in gc.get_objects() if isinstance(o, PER_CONNECTION))


@pytest.mark.parametrize("deflate", [False, True], ids=["picows", "deflate"])
async def test_a_closed_connection_is_freed_without_the_cyclic_gc(deflate: bool) -> None:
    """Two users call (answered, an offer, a hang-up); one closes, the other's TCP connection is cut (no close
    handshake). Once the server has let go of both, none of their per-connection objects is left."""
    async with in_process(deflate) as (port, idle, _):
        gc.collect()
        gc.disable()
        try:
            assert alive() == []
            url = f"ws://127.0.0.1:{port}/ws?device=d1&id="
            alice = await websockets.connect(url + "alice", compression="deflate" if deflate else None)
            bob = await websockets.connect(url + "bob", compression="deflate" if deflate else None)
            await frame(alice, "welcome")
            await frame(bob, "welcome")
            assert len(alive()) >= 4  # each: its connection and its session (and on picows, its transport)
            await alice.send(json.dumps({"type": "call-request", "to": "bob"}))
            await frame(bob, "call-request")
            await bob.send(json.dumps({"type": "call-accept", "to": "alice"}))
            await frame(alice, "call-accept")
            await alice.send(json.dumps({"type": "offer", "to": "bob", "data": {"type": "offer", "sdp": "v=0\r\n"}}))
            await frame(bob, "offer")
            await bob.send(json.dumps({"type": "hangup", "to": "alice"}))
            await frame(alice, "call-ended")
            await alice.close()
            bob.transport.abort()
            deadline = time.monotonic() + 10
            while not idle():
                assert time.monotonic() < deadline, "the server still holds a connection"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the tasks that end a connection
            assert alive() == []
        finally:
            gc.enable()


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not HeapTrimmer().available, reason="the C library cannot trim its heap (not glibc)")
async def test_the_heap_freed_by_closed_connections_is_given_back() -> None:
    """A burst of connections, each sending a large frame (its socket's buffers grow on the C heap), comes and goes,
    all but one in ten: the memory of the others is free, but in the middle of the heap, so still part of the RSS.
    The server trims its heap on a timer (server/heap.py, once a minute); a trim gives those pages back."""
    async with in_process(False, max_connections_per_ip=1000, connection_rate=1000.0) as (port, _, app):
        heap = app.state.heap
        assert heap.running, "the server does not trim its heap"
        heap.trim()
        url = f"ws://127.0.0.1:{port}/ws?device=d1&id="
        users = [await websockets.connect(f"{url}u{i}", compression=None) for i in range(400)]
        for ws in users:
            await frame(ws, "welcome")
        sdp = "a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n" * 120  # ~6 KB
        offer = json.dumps({"type": "offer", "to": "nobody", "data": {"type": "offer", "sdp": sdp}})
        kept = users[::10]
        for ws in users:
            await ws.send(offer)
            await frame(ws, "error")  # not in a call
        for ws in users:
            if ws not in kept:
                await ws.close()
        deadline = time.monotonic() + 10
        while len(app.state.hub) > len(kept):
            assert time.monotonic() < deadline, "the server still holds the closed connections"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        before = rss_kb()
        assert heap.trim(), "nothing was given back"
        given = before - rss_kb()
        for ws in kept:
            await ws.close()
        assert given >= 1024, f"a trim gave back {given} kB"
