"""A client that never reads, in a cluster: the node's one Redis listener delivers the frames of every other node to
all of its connections, so it must never wait for one of them (#14 item 1)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from typing import Any

import websockets

from tests.cluster.test_cluster_calls import CANDIDATE

# Node 0 speaks through the ASGI stack (per-message deflate), whose send may wait for the reader; a send buffer
# of 1 MiB, so that the lagger is dropped only once well behind; rate limits out of the way of the flood.
ENV = {
    "PEERCALL_WS_PER_MESSAGE_DEFLATE": "true",
    "PEERCALL_SEND_BUFFER": str(1024 * 1024),
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
