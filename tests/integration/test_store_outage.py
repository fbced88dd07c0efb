"""A database that stops answering (not one that refuses: one whose packets go nowhere, as behind a network that
drops them) holds no join, call-request or contact frame for ever: each fails within PEERCALL_STORE_TIMEOUT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
import websockets

from tests.conftest import Proxy, ServerProcess, create_database, drop_database, run_server
from tests.integration.test_security import recv_json

pytestmark = pytest.mark.asyncio(loop_scope="session")


@contextlib.asynccontextmanager
async def database_behind_a_proxy(admin_dsn: str) -> AsyncIterator[tuple[str, Proxy]]:
    """A new PostgreSQL database, and its URL through a `Proxy`."""
    url = await create_database(admin_dsn)
    parsed = sa.make_url(url)
    assert parsed.port is not None
    proxy = Proxy(parsed.port)
    await proxy.start()
    try:
        yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy
    finally:
        proxy.thaw()
        await proxy.close()
        await drop_database(admin_dsn, url)


async def test_a_database_that_stops_answering_holds_no_join_and_no_call_for_ever(postgres_server: str) -> None:
    """With the database gone silent, a user who connects gets their welcome once the store timeout is up
    (without contacts for now), and a call-request is answered `service-unavailable` (its screening could not
    read the store) instead of waiting for ever; both work again once it answers."""
    async with database_behind_a_proxy(postgres_server) as (url, proxy):
        env = {"PEERCALL_DATABASE_URL": url, "PEERCALL_STORE_TIMEOUT": "1.5", "PEERCALL_CALLS_FROM": "everyone"}
        stack = contextlib.ExitStack()
        try:
            # started and stopped from a thread: the proxy runs in this event loop, which must go on meanwhile
            srv = await asyncio.to_thread(stack.enter_context, run_server(**env))
            early = await websockets.connect(f"{srv.ws}?id=early")
            assert (await recv_json(early))["type"] == "welcome"
            proxy.freeze()
            started = time.monotonic()
            async with websockets.connect(f"{srv.ws}?id=late") as late:
                assert (await recv_json(late, timeout=20))["type"] == "welcome"
                waited = time.monotonic() - started
                assert 1.0 < waited < 10, waited
                await late.send(json.dumps({"type": "call-request", "to": "early"}))
                while (msg := await recv_json(late, timeout=20))["type"] != "error":
                    pass
                assert (msg["code"], msg["ref"]) == ("service-unavailable", "call-request"), msg
            assert await asyncio.to_thread(srv.wait_log, "the store did not answer within 1.5 s", 5)
            proxy.thaw()
            await asyncio.sleep(0.5)
            await check_a_call_rings(srv, early)
            await early.close()
        finally:
            proxy.thaw()
            await asyncio.to_thread(stack.close)


async def check_a_call_rings(srv: ServerProcess, callee: websockets.ClientConnection) -> None:
    async with websockets.connect(f"{srv.ws}?id=again") as caller:
        assert (await recv_json(caller, timeout=20))["type"] == "welcome"
        await caller.send(json.dumps({"type": "call-request", "to": "early"}))
        for _ in range(3):  # the pool's connections to the silent database may fail one more time each
            msg = await recv_json(caller, timeout=20)
            if msg["type"] == "call-ringing":
                break
            if msg["type"] == "error":
                await asyncio.sleep(1)
                await caller.send(json.dumps({"type": "call-request", "to": "early"}))
        assert msg["type"] == "call-ringing", msg
        while (await recv_json(callee))["type"] != "call-request":
            pass


async def test_a_sqlite_store_is_never_cut_off_by_the_deadline() -> None:
    """SQLite's operations run in a thread and are bounded by its busy timeout: they are not cancelled at the
    store deadline (cancelled, one left the file write-locked until the garbage collector ran). With a deadline
    no operation could meet, calls are still screened (they ring) and written, one after another."""
    with run_server(PEERCALL_STORE_TIMEOUT="0.000001") as srv:
        async with websockets.connect(f"{srv.ws}?id=sqlcallee") as callee:
            assert (await recv_json(callee))["type"] == "welcome"
            async with websockets.connect(f"{srv.ws}?id=sqlcaller") as caller:
                assert (await recv_json(caller))["type"] == "welcome"
                for _ in range(3):
                    await caller.send(json.dumps({"type": "call-request", "to": "sqlcallee"}))
                    while (msg := await recv_json(caller))["type"] in ("call-reject", "presence"):
                        pass  # (the last call's end, as a seed client knows it)
                    assert msg["type"] == "call-ringing", msg
                    while (await recv_json(callee))["type"] != "call-request":
                        pass
                    await callee.send(json.dumps({"type": "call-reject", "to": "sqlcaller"}))
                    while (await recv_json(caller))["type"] != "call-ended":
                        pass
        assert "the store did not answer" not in srv.log() and "database is locked" not in srv.log()
