"""One client must not hurt the others (issue 14 item 2, "Done when"): while it floods pings, floods fragments, or
never reads what it is sent, a bystander pair's round trip stays within twice its idle value and the server's RSS
within 50 MB of its baseline, and the flooder is closed. On both transports, loopback only.

The flooder is a process of its own (a raw socket, `SO_RCVBUF` small, never reading), so that it neither shares this
test's event loop nor its GIL."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import websockets

from tests.conftest import TIMEOUT, ServerProcess, run_server
from tests.integration.conftest import TRANSPORTS
from tests.integration.test_security import CANDIDATE, answered, recv_json, rss_kib

FLOOD_SECONDS = 8.0
"""How long a flooder goes on if the server never closes it (then the test fails)."""

FLOODER = r"""
import json, os, socket, struct, sys, time
port, kind, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])

def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return bytes([(0x80 if fin else 0) | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads: what the server sends piles up
sock.connect(("127.0.0.1", port))
sock.sendall(
    f"GET /ws?id=flooder{os.getpid()} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
)
head = b""
while b"\r\n\r\n" not in head:
    head += sock.recv(1)
assert head.startswith(b"HTTP/1.1 101"), head
if kind == "ping":
    chunk = b"".join(frame(9, os.urandom(125)) for _ in range(500))  # 65 KB of pings, each asking for a 127-byte pong
else:
    sock.sendall(frame(1, b'{"type":"hangup","to":"', fin=False))
    chunk = b"".join(frame(0, b"x", fin=False) for _ in range(5000))  # a message that never ends
sock.settimeout(0.5)
started, sent, closed = time.monotonic(), 0, False
while time.monotonic() - started < seconds:
    try:
        sock.sendall(chunk)
        sent += len(chunk)
    except (TimeoutError, socket.timeout):
        continue
    except OSError:
        closed = True
        break
print(json.dumps({"closed": closed, "seconds": time.monotonic() - started, "sent": sent}), flush=True)
"""


@pytest.fixture
def flood_server(transport: str) -> Iterator[ServerProcess]:
    """A server of the test's own: its RSS and log are the test's alone."""
    with run_server(PEERCALL_SEND_BUFFER="262144", **TRANSPORTS[transport]) as srv:
        yield srv


async def _pair(srv: ServerProcess, a_id: str, b_id: str) -> tuple[websockets.ClientConnection, ...]:
    a = await websockets.connect(f"{srv.ws}?id={a_id}")
    b = await websockets.connect(f"{srv.ws}?id={b_id}")
    for ws in (a, b):
        await recv_json(ws)
    await answered(a, b, a_id, b_id)
    return a, b


async def _round_trip(a: websockets.ClientConnection, b: websockets.ClientConnection, b_id: str, i: int) -> float:
    """A candidate from a to b: seconds until b has it."""
    started = time.monotonic()
    await a.send(json.dumps({"type": "candidate", "to": b_id, "data": {**CANDIDATE, "sdpMLineIndex": i}}))
    while (msg := await recv_json(b))["type"] != "candidate":
        pass
    assert msg["data"]["sdpMLineIndex"] == i
    return time.monotonic() - started


async def _idle(a: websockets.ClientConnection, b: websockets.ClientConnection, b_id: str) -> float:
    samples = []
    for i in range(40):
        samples.append(await _round_trip(a, b, b_id, i))
        await asyncio.sleep(0.03)
    return statistics.median(samples)


def _bound(idle: float) -> float:
    """Twice the idle round trip, with a floor for a loaded, shared CI machine."""
    return max(2 * idle, idle + 0.020)


async def _measure_while(srv: ServerProcess, busy: asyncio.Future[object], a, b, b_id: str) -> tuple[float, int]:
    """Round trips (their median) and the server's largest RSS (KiB) until `busy` is done (at least 15 samples)."""
    samples, peak, i = [], 0, 1000
    while not busy.done() or len(samples) < 15:
        samples.append(await _round_trip(a, b, b_id, i))
        peak = max(peak, rss_kib(srv.proc.pid))
        i += 1
        await asyncio.sleep(0.03)
    return statistics.median(samples), peak


@pytest.mark.parametrize("kind", ["ping", "fragments"])
async def test_a_flood_of_pings_or_fragments_is_closed_and_harms_no_one(
    flood_server: ServerProcess, kind: str, uid
) -> None:
    """A client that floods pings (each asking for a pong it never reads) or the fragments of a message that never
    ends is closed for flooding (4429) within seconds; meanwhile a bystander pair keeps its latency and the server
    its memory."""
    srv = flood_server
    a_id, b_id = uid("a"), uid("b")
    a, b = await _pair(srv, a_id, b_id)
    try:
        idle = await _idle(a, b, b_id)
        baseline = rss_kib(srv.proc.pid)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOODER, str(srv.port), kind, str(FLOOD_SECONDS), stdout=subprocess.PIPE
        )
        busy = asyncio.ensure_future(proc.communicate())
        loaded, peak = await _measure_while(srv, busy, a, b, b_id)
        result = json.loads((await busy)[0])
        assert result["closed"], f"the flooder was never closed: {result}"
        assert result["seconds"] < FLOOD_SECONDS / 2, result
        assert await asyncio.to_thread(srv.wait_log, "frames/s; disconnecting", TIMEOUT)
        assert loaded <= _bound(idle), f"bystander median round trip {loaded * 1000:.1f} ms, idle {idle * 1000:.1f} ms"
        grown = peak - baseline
        assert grown < 50_000, f"the server grew by {grown} KiB"
        print(f"{kind}: idle {idle * 1e3:.2f} ms, flooded {loaded * 1e3:.2f} ms, RSS +{grown} KiB, {result}")
    finally:
        for ws in (a, b):
            await ws.close()


@pytest.fixture
def unlimited_flood_server(transport: str) -> Iterator[ServerProcess]:
    """`flood_server` with the rate limits out of the way: 60 KB frames at the frame rate, which a frame's cost in
    bytes forbids one client since, are what a slow reader must survive (a deployment that raised the limits); no
    relay buffer, so that they fill the reader's send buffer as the server's own frames would."""
    env = {
        "PEERCALL_RATE_LIMIT": "100000",
        "PEERCALL_RATE_BURST": "100000",
        "PEERCALL_SEND_BUFFER": "262144",
        "PEERCALL_RELAY_BUFFER": "0",
    }
    with run_server(**env, **TRANSPORTS[transport]) as srv:
        yield srv


async def test_a_client_that_never_reads_harms_no_one(unlimited_flood_server: ServerProcess, uid) -> None:
    """A callee that never reads (small SO_RCVBUF) while its caller sends it 60 KB offers is closed (4420) once its
    send buffer (bytes, the transport's included) overflows; a bystander pair keeps its latency and the server its
    memory."""
    import socket

    srv = unlimited_flood_server
    a_id, b_id, talker, sleeper = uid("a"), uid("b"), uid("talker"), uid("sleeper")
    a, b = await _pair(srv, a_id, b_id)
    small = socket.socket()
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    small.connect(("127.0.0.1", srv.port))
    sender = await websockets.connect(f"{srv.ws}?id={talker}")
    slow = await websockets.connect(f"{srv.ws}?id={sleeper}", sock=small, max_queue=1)
    try:
        for ws in (sender, slow):
            await recv_json(ws)
        await answered(sender, slow, talker, sleeper)
        slow.transport.pause_reading()
        idle = await _idle(a, b, b_id)
        baseline = rss_kib(srv.proc.pid)
        offer = json.dumps({"type": "offer", "to": sleeper, "data": {"type": "offer", "sdp": os.urandom(30_000).hex()}})

        async def send_offers() -> None:
            for _ in range(150):  # 9 MB (4.5 MB deflated), more than the kernel buffers and the 256 KB send buffer
                await sender.send(offer)
                await asyncio.sleep(0.01)

        busy = asyncio.ensure_future(send_offers())
        loaded, peak = await _measure_while(srv, busy, a, b, b_id)
        await busy
        assert await asyncio.to_thread(srv.wait_log, f"{sleeper} disconnected (code 4420)", TIMEOUT), [
            line for line in srv.log().splitlines() if sleeper in line
        ]
        assert loaded <= _bound(idle), f"bystander median round trip {loaded * 1000:.1f} ms, idle {idle * 1000:.1f} ms"
        grown = peak - baseline
        assert grown < 50_000, f"the server grew by {grown} KiB"
        print(f"never-reads: idle {idle * 1e3:.2f} ms, loaded {loaded * 1e3:.2f} ms, RSS +{grown} KiB")
    finally:
        for ws in (a, b, sender):
            await ws.close()
        # It reads nothing, so it would never see the server's close frame: a close handshake would wait out
        # websockets' close_timeout (10 s). It just goes away, as such a client does.
        slow.transport.abort()
