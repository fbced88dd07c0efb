"""Fixtures for the contract suites: every call-history backend and every broker behind one URL, each test on its
own data.

PostgreSQL is the session's server from tests/conftest.py (`postgres_server`: Debian's binaries on a free
loopback port, or the one that `PEERCALL_TEST_POSTGRES_URL` names); each test gets a database of its own.
Redis is the cluster tests' server (tests/cluster/conftest.py `redis_server`: Debian's redis-server on a free
loopback port, or the one `PEERCALL_TEST_REDIS_URL` names), started only when a Redis test runs; each test gets
a key prefix of its own, whose keys it deletes when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from peercall.broker import open_broker
from peercall.hub.router import Hub
from peercall.store import CallHistory, open_history
from tests.cluster.conftest import redis_server  # noqa: F401 (a fixture)
from tests.conftest import postgres_database

BACKENDS = ["memory", "sqlite", "sqlite-memory", "postgres"]
DURABLE = ["sqlite", "postgres"]  # the backends whose data outlives a store instance
BROKERS = ["memory", "redis"]


async def _backend_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "postgres":
        async for url in postgres_database(request.getfixturevalue("postgres_server")):
            yield url
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite3'}"
    elif kind == "sqlite-memory":
        yield "sqlite:///:memory:"
    else:
        assert kind == "memory", kind
        yield "memory://"


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A call-history URL on fresh, empty storage, for every backend in turn."""
    async for u in _backend_url(request.param, request, tmp_path):
        yield u


@pytest.fixture(params=DURABLE)
async def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL on fresh storage that outlives a store instance (a SQLite file, a PostgreSQL database)."""
    async for u in _backend_url(request.param, request, tmp_path):
        yield u


@pytest.fixture
async def history(url: str) -> AsyncIterator[CallHistory]:
    """An opened store on `url`, closed after the test."""
    store = open_history(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    """A `postgresql://` URL of a fresh, empty database of this test's own."""
    async for u in postgres_database(postgres_server):
        yield u


@pytest.fixture
def run_sql() -> Callable[[str, str], Awaitable[None]]:
    """`await run_sql(url, statement)`: run one statement on a durable backend's database, bypassing the store."""

    async def run(url: str, statement: str) -> None:
        scheme, _, rest = url.partition("://")
        driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
        engine = create_async_engine(f"{driver[scheme]}://{rest}")
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    return run


# ------------------------------------------------------------------------------------------------- brokers


class FakeConnection:
    """A connection as the hub sees it: what it is sent, in a list."""

    def __init__(self, hub: Hub, user: str) -> None:
        self.id = user
        self.cid = hub.new_cid()
        self.errors = 0
        self.backlog_bytes = 0
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.arrived = asyncio.Event()

    async def send_text(self, text: str) -> bool:
        return self.send_now(text)

    def send_now(self, text: str) -> bool:
        if self.closed:
            return False
        self.sent.append(json.loads(text))
        self.arrived.set()
        return True

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]

    async def wait_for(self, type: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any]:
        """The first frame of `type` (with these `fields`) it got, waiting for it if need be."""
        async with asyncio.timeout(timeout):
            while True:
                for message in self.sent:
                    if message["type"] == type and all(message.get(k) == v for k, v in fields.items()):
                        return message
                self.arrived.clear()
                await self.arrived.wait()


MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture(params=BROKERS)
async def make_hub(request: pytest.FixtureRequest) -> AsyncIterator[MakeHub]:
    """`await make_hub(history=None, presence_interval=0.1, **rules)`: a started hub on a fresh broker of each
    kind (`rules`: ring_timeout, resume_grace, private, call_rate), stopped after the test. With Redis, a second
    hub of the same test is another node of the same cluster."""
    kind = request.param
    url, prefix = "memory://", f"peercall-test-{secrets.token_hex(4)}:"
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        url = server.db_url(0)
    hubs: list[Hub] = []

    async def make(
        history: CallHistory | None = None, presence_interval: float = 0.1, call_rate: int = 30, **rules: Any
    ) -> Hub:
        broker = open_broker(url, prefix=prefix, node_id=f"n{len(hubs)}", **rules)
        hub = Hub(broker, history=history, presence_interval=presence_interval, call_rate=call_rate)
        await broker.start()
        hubs.append(hub)
        return hub

    try:
        yield make
    finally:
        for hub in hubs:
            await hub.close_all(1001, "test over")
            await hub.drain()
            await hub.broker.stop()
        if kind == "redis":
            with contextlib.suppress(Exception):
                keys = server.keys(0, f"{prefix}*")
                if keys:
                    server.command("DEL", *keys, db=0)
