"""Fixtures for the contract suite: every call-history backend behind one URL, each test on its own data.

PostgreSQL is the session's server from tests/conftest.py (`postgres_server`: Debian's binaries on a free
loopback port, or the one that `PEERCALL_TEST_POSTGRES_URL` names); each test gets a database of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from peercall.store import CallHistory, open_history
from tests.conftest import postgres_database

BACKENDS = ["memory", "sqlite", "sqlite-memory", "postgres"]
DURABLE = ["sqlite", "postgres"]  # the backends whose data outlives a store instance


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
