"""A client that never reads, in a cluster: the node's one Redis listener delivers the frames of every other node to
all of its connections, so it must never wait for one of them (#14 item 1)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from typing import Any

import httpx
import pytest
import websockets

from tests.cluster.test_cluster_calls import CANDIDATE
from tests.conftest import small_socket

# Node 0 speaks through the ASGI stack (per-message deflate), whose send may wait for the reader; a send buffer
# of 1 MiB, so that the lagger is dropped only once well behind; rate limits out of the way of the flood, and no
# relay buffer: the relayed frames fill the lagger's send buffer as the server's own would.
ENV = {
    "PEERCALL_WS_PER_MESSAGE_DEFLATE": "true",
    "PEERCALL_SEND_BUFFER": str(1024 * 1024),
    "PEERCALL_RELAY_BUFFER": "0",
    "PEERCALL_RATE_LIMIT": "100000",
    "PEERCALL_RATE_BURST": "100000",
    "PEERCALL_PRESENCE_INTERVAL": "0.05",
}


async def recv_json(ws: Any, timeout: float = 5) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until_type(ws: Any, kind: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (msg := await recv_json(ws))["type"] != kind:
            pass
    return msg


async def test_a_client_that_never_reads_never_stalls_what_other_nodes_send(cluster: Any) -> None:
    """A lagger on node 0 stops reading while a peer on node 1 floods it: frames from node 1 to a bystander on
    node 0 keep arriving promptly meanwhile, and the lagger is dropped (4420)."""
    async with cluster(2, **ENV) as c:
        a, b = c.nodes
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few frames
        slow.connect(("127.0.0.1", a.port))
        lagger = await websockets.connect(f"{a.ws}?id=lagger", sock=slow, max_queue=None)
        near = await websockets.connect(f"{a.ws}?id=near")
        talker = await websockets.connect(f"{b.ws}?id=talker")
        far = await websockets.connect(f"{b.ws}?id=far")
        try:
            for ws in (lagger, near, talker, far):
                assert (await recv_json(ws))["type"] == "welcome"
            for caller, callee, names in ((talker, lagger, ("talker", "lagger")), (far, near, ("far", "near"))):
                await caller.send(json.dumps({"type": "call-request", "to": names[1]}))
                await until_type(callee, "call-request")
                await callee.send(json.dumps({"type": "call-accept", "to": names[0]}))
                await until_type(caller, "call-accept")
            lagger.transport.pause_reading()  # from now on the lagger reads nothing: its socket fills, then node 0's
            delays = []
            dropped_at = None
            # Up to 29 MB, past the kernel's socket buffers and then the 1 MiB send buffer; once node 0 says it drops
            # the lagger, no more: the probes go on until its close is done (CLOSE_GRACE later), and ten more.
            deadline, n = time.monotonic() + 30, -1
            while time.monotonic() < deadline:
                n += 1
                if dropped_at is None and n < 400 and "reads too slowly" not in a.log():
                    for m in range(8):  # 9 KB of random bytes each, base64: deflate cannot shrink it much
                        blob = base64.b64encode(os.urandom(9000)).decode()
                        data = {"candidate": f"candidate:{n}.{m} {blob}"}
                        await talker.send(json.dumps({"type": "candidate", "to": "lagger", "data": data}))
                started = time.monotonic()
                probe = {**CANDIDATE, "sdpMLineIndex": n}
                await far.send(json.dumps({"type": "candidate", "to": "near", "data": probe}))
                msg = await until_type(near, "candidate", timeout=10)
                assert msg["data"]["sdpMLineIndex"] == n
                delays.append(time.monotonic() - started)
                if dropped_at is None and "lagger disconnected (code 4420)" in a.log():
                    dropped_at = n
                elif dropped_at is not None and n >= dropped_at + 10:  # a few more after the drop
                    break
            assert dropped_at is not None, "node 0 never dropped the client that stopped reading"
            assert max(delays) < 1.0, delays
        finally:
            for ws in (near, talker, far):
                await ws.close()
            # It reads nothing, so it would never see the server's close frame: a close handshake would wait out
            # websockets' close_timeout (10 s). It just goes away, as such a client does.
            lagger.transport.abort()


async def test_a_party_on_another_node_that_floods_a_lagging_reader_has_its_frames_dropped(cluster: Any) -> None:
    """A party on node 1 relays more than its peer on node 0 reads (the peer stopped): node 0 drops the relayed
    frames once a quarter of the peer's send buffer is held back for it (counted in /metrics; the sender, on
    another node, is told of a dropped offer or answer, not of candidates), instead of dropping the peer as a slow
    reader; the peer gets what came before, in
    order, once it reads again, and the call goes on."""
    env = {k: v for k, v in ENV.items() if k != "PEERCALL_RELAY_BUFFER"}  # the default: 256 KiB of the 1 MiB
    async with cluster(2, **env) as c:
        a, b = c.nodes
        slow = small_socket(a.port)
        reader = await websockets.connect(f"{a.ws}?id=reader", sock=slow, max_queue=None, max_size=None)
        flooder = await websockets.connect(f"{b.ws}?id=flooder")
        try:
            for ws in (reader, flooder):
                assert (await recv_json(ws))["type"] == "welcome"
            await flooder.send(json.dumps({"type": "call-request", "to": "reader"}))
            await until_type(reader, "call-request")
            await reader.send(json.dumps({"type": "call-accept", "to": "flooder"}))
            await until_type(flooder, "call-accept")
            reader.transport.pause_reading()
            for n in range(800):  # 7 MB (5 MB deflated): past the kernel's buffers and the 1 MiB send buffer
                data = {"candidate": f"candidate:{n} {base64.b64encode(os.urandom(6750)).decode()}"}
                await flooder.send(json.dumps({"type": "candidate", "to": "reader", "data": data}))
            async with httpx.AsyncClient() as http:
                for _ in range(100):
                    metrics = (await http.get(f"{a.http}/metrics")).text
                    line = next(x for x in metrics.splitlines() if x.startswith("peercall_relayed_dropped_total "))
                    if float(line.split()[1]) > 0:
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("node 0 never dropped a frame relayed to the reader that stopped")
            assert "reads too slowly" not in a.log() and "reader disconnected" not in a.log()
            # An offer is worth telling its sender (its client sends it again): node 0 does, through node 1
            offer = {"type": "offer", "to": "reader", "data": {"type": "offer", "sdp": "v=0\r\n"}}
            await flooder.send(json.dumps(offer))
            msg = await until_type(flooder, "error")
            assert (msg["code"], msg["ref"], msg["to"]) == ("rate-limited", "offer", "reader"), msg
            assert "reader is not reading fast enough" in msg["message"]
            reader.transport.resume_reading()
            got = []
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = await recv_json(reader, timeout=2)
                    if msg["type"] == "candidate":
                        got.append(int(msg["data"]["candidate"].split()[0].removeprefix("candidate:")))
            # in order, none twice, from the first on; the ones dropped were sent while it lagged (a frame that left
            # its backlog for the socket's buffer may let a later one through)
            assert got[:20] == list(range(20)) and got == sorted(set(got)) and len(got) < 800, got
            await flooder.send(
                json.dumps({"type": "candidate", "to": "reader", "data": {**CANDIDATE, "sdpMLineIndex": 7}})
            )
            msg = await until_type(reader, "candidate")
            assert msg["data"]["sdpMLineIndex"] == 7
        finally:
            for ws in (reader, flooder):
                ws.transport.abort()
