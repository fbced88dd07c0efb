"""Revocation across a cluster: `peercall revoke USER` closes every socket of USER on every node (two real nodes,
a real Redis, raw WebSocket clients) within the documented bound, and nobody else's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import websockets

from tests.conftest import SCALE

BOUND = 1.0  # seconds from the command's publish to every socket closed (docs/security.md)


async def closed(ws: websockets.ClientConnection, timeout: float) -> tuple[int, str, float]:
    """(close code, reason, when) of the server's close of `ws`."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason, time.monotonic()


async def test_revoke_closes_the_users_sockets_on_both_nodes(cluster: Any, connect: Any, uid: Any) -> None:
    """alice has a device on each node and bob one on the first: `peercall revoke alice` (run as the operator
    would, with PEERCALL_REDIS_URL) closes both of alice's sockets with 4401 and the reason given, within a
    second, and bob's stays open and working."""
    async with cluster(2) as c:
        alice = uid("alice")
        mine = [await connect(alice, c.nodes[0]), await connect(alice, c.nodes[1])]
        bob = await connect(uid("bob"), c.nodes[0])
        watching = [asyncio.create_task(closed(client.ws, 10 * SCALE)) for client in mine]
        env = {**os.environ, "PEERCALL_REDIS_URL": c.redis_url}
        command = [sys.executable, "-m", "peercall", "revoke", alice, "--reason", "signed out by the operator"]
        done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=30)
        told = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert "told 2 node(s)" in done.stdout
        results = await asyncio.gather(*watching)
        assert [(code, reason) for code, reason, _ in results] == [(4401, "signed out by the operator")] * 2
        assert all(at - told < BOUND * SCALE for _, _, at in results)
        await bob.send({"type": "call-request", "to": "nobody-here"})
        assert (await bob.expect(type="call-ended"))["outcome"] == "unavailable"


def test_revoke_says_what_is_missing() -> None:
    """Without PEERCALL_REDIS_URL, or with a Redis that does not answer, `peercall revoke` says so in one line
    and fails (no hang)."""
    env = {k: v for k, v in os.environ.items() if k != "PEERCALL_REDIS_URL"}
    command = [sys.executable, "-m", "peercall", "revoke", "alice"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "set PEERCALL_REDIS_URL" in done.stderr
    env["PEERCALL_REDIS_URL"] = "redis://127.0.0.1:9/0"  # the discard port: nothing listens
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "could not reach Redis at redis://127.0.0.1:9/0" in done.stderr
