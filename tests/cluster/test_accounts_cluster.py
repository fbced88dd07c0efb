"""Accounts mode on two nodes (one PostgreSQL, one Redis, one signing secret), as docs/deploy.md sets them up: an
invite made through one node introduces its maker and the invitee on every node, an administrator's disable
through one node closes the user's sockets on both within the documented bound (Broker.close_user: a second), and a
sign-out through one node closes the sockets of that sign-in on both as fast, and no other."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from typing import Any

import pytest
import websockets

from tests.conftest import SCALE
from tests.integration.test_accounts import Browser, connect, setup_token

BOUND = 1.0  # seconds from the disable's answer to every socket of the user closed (docs/protocol.md, Accounts)


async def closed(ws: websockets.ClientConnection, timeout: float) -> tuple[int, float]:
    """(close code, when) of the server's close of `ws`."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, time.monotonic()


async def test_invites_and_disabling_reach_every_node(cluster: Any) -> None:
    """ann signs up on n0 and listens on n1; bob signs up through n0 with her invite: her socket on n1 gets the
        `contacts` frame with bob. bob has a socket on each node; ann disables him through n0: both close with 4401
        within a second, and his cookie no longer gets tokens from either node. Enabled and signed in again, he is
    closed on both nodes as fast by the operator's `peercall user disable bob` (given the cluster's Redis)."""
    env = {"PEERCALL_AUTH": "accounts", "PEERCALL_AUTH_SECRET": secrets.token_hex(32)}
    async with cluster(2, history="postgres", **env) as c:
        n0, n1 = c.nodes
        ann, bob = Browser(n0), Browser(n0)
        try:
            await ann.sign_up(setup_token(n0), "ann")
            a = await connect(n1, await ann.token())
            await bob.sign_up(await ann.invite(), "bob")
            assert [x["id"] for x in (await a.expect(type="contacts"))["contacts"]] == ["bob"]

            devices = [await connect(n0, await bob.token()), await connect(n1, await bob.token())]
            watching = [asyncio.create_task(closed(d.ws, 10 * SCALE)) for d in devices]
            assert (await ann.post("/api/users/bob/disable")).status_code == 200
            told = time.monotonic()
            results = await asyncio.gather(*watching)
            assert [code for code, _ in results] == [4401, 4401]
            assert all(at - told < BOUND * SCALE for _, at in results), [at - told for _, at in results]
            on_n1 = Browser(n1)
            on_n1.http.cookies = bob.http.cookies
            assert (await on_n1.post("/api/session/token")).status_code == 401
            await on_n1.http.aclose()

            # The operator's `peercall user disable` on the store, with the cluster's Redis, closes them too.
            assert (await ann.post("/api/users/bob/enable")).status_code == 200
            await bob.signed(await bob.sign_in("bob"))
            devices = [await connect(n0, await bob.token()), await connect(n1, await bob.token())]
            watching = [asyncio.create_task(closed(d.ws, 10 * SCALE)) for d in devices]
            env = {"PEERCALL_DATABASE_URL": c.database_url, "PEERCALL_REDIS_URL": c.redis_url}
            code, out, err = await run_cli_env(env, "user", "disable", "bob")
            told = time.monotonic()
            assert code == 0 and "told 2 node(s)" in out, out + err
            results = await asyncio.gather(*watching)
            assert [code for code, _ in results] == [4401, 4401]
            assert all(at - told < BOUND * SCALE for _, at in results), [at - told for _, at in results]
            await a.close()
        finally:
            await ann.http.aclose()
            await bob.http.aclose()


async def test_a_sign_out_closes_that_sign_ins_sockets_on_every_node(cluster: Any) -> None:
    """ann is signed in on two browsers, each with a socket on each node. Through n0 the first signs the second
    out: the second's sockets close with 4401 within a second on both nodes; the first's stay open and ring."""
    env = {"PEERCALL_AUTH": "accounts", "PEERCALL_AUTH_SECRET": secrets.token_hex(32)}
    async with cluster(2, history="postgres", **env) as c:
        n0, n1 = c.nodes
        ann, other = Browser(n0), Browser(n1)
        try:
            await ann.sign_up(setup_token(n0), "ann")
            await other.signed(await other.sign_in("ann"))
            mine = [await connect(n0, await ann.token()), await connect(n1, await ann.token())]
            theirs = [await connect(n0, await other.token()), await connect(n1, await other.token())]
            watching = [asyncio.create_task(closed(d.ws, 10 * SCALE)) for d in theirs]
            listed = (await ann.http.get("/api/sessions")).json()["sessions"]
            sid = next(s["id"] for s in listed if not s["current"])
            assert (await ann.delete(f"/api/sessions/{sid}")).status_code == 200
            told = time.monotonic()
            results = await asyncio.gather(*watching)
            assert [code for code, _ in results] == [4401, 4401]
            assert all(at - told < BOUND * SCALE for _, at in results), [at - told for _, at in results]
            bob = Browser(n0)
            try:  # ann's own sockets, on both nodes, still ring
                await bob.sign_up(await ann.invite(), "bob")
                b = await connect(n1, await bob.token())
                await b.send({"type": "call-request", "to": "ann"})
                for d in mine:
                    await d.expect(type="call-request")
                await b.close()
            finally:
                await bob.http.aclose()
            for d in mine:
                await d.close()
        finally:
            await ann.http.aclose()
            await other.http.aclose()


async def run_cli_env(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`peercall ARGS` in accounts mode with `env` added: the exit status, standard output and error."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "peercall",
        *args,
        env={**os.environ, "PEERCALL_AUTH": "accounts", **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()
