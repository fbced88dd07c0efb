"""Fixtures for the contract suite: every call-history backend behind one URL, each test on its own data.

PostgreSQL is a real server of the suite's own (started once per session from Debian's binaries, on 127.0.0.1
and a free port, removed at the end), or the one that `PEERCALL_TEST_POSTGRES_URL` names (its user needs
CREATEDB). Either way each test gets a database of its own. The machine's own PostgreSQL is never touched.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from peercall.store import CallHistory, open_history

BACKENDS = ["memory", "sqlite", "sqlite-memory", "postgres"]
DURABLE = ["sqlite", "postgres"]  # the backends whose data outlives a store instance
POSTGRES_ENV = "PEERCALL_TEST_POSTGRES_URL"
PG_START_TIMEOUT = 30  # seconds


def _postgres_bin() -> tuple[Path, int]:
    """The newest Debian PostgreSQL bin directory and its major version; fails the test run if there is none."""
    found = sorted(
        (int(m.group(1)), Path(d))
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if (m := re.fullmatch(r"/usr/lib/postgresql/(\d+)/bin", d)) and (Path(d) / "pg_ctl").exists()
    )
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: install Debian's `postgresql` "
            f"package (scripts/install-system-deps does), or set {POSTGRES_ENV} to a server to use",
            pytrace=False,
        )
    version, bindir = found[-1]
    return bindir, version


def _scratch_dir() -> str | None:
    """Where to put the cluster: tmpfs when there is room (CREATE DATABASE per test is then ~10 ms, not ~200)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize >= 1 << 30:
            return shm
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """An admin DSN (`postgresql://…/postgres`) of a PostgreSQL server that lives for the whole session."""
    if env := os.environ.get(POSTGRES_ENV):
        yield env
        return
    bindir, version = _postgres_bin()
    # initdb refuses to run as root: run the server as the `postgres` user, on a directory it owns.
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="peercall-pg-", dir=_scratch_dir()))
    data, log = root / "data", root / "server.log"
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")

    def run(*args: str | Path) -> None:
        proc = subprocess.run([*as_postgres, *map(str, args)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(
                f"{Path(args[0]).name} failed with exit code {proc.returncode}:\n{proc.stdout}{proc.stderr}"
                f"{server_log}",
                pytrace=False,
            )

    # An ICU en-US cluster (PostgreSQL 15+) sorts text like most real deployments, not bytewise like SQLite.
    icu = ["--locale-provider=icu", "--icu-locale=en-US"] if version >= 15 else []
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    try:
        run(bindir / "initdb", "-D", data, *"-U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8".split(), *icu)
        try:
            run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", str(PG_START_TIMEOUT), "-o", options, "start")
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            if (data / "postmaster.pid").exists():  # also after a start that timed out
                run(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _postgres_database(admin_dsn: str) -> AsyncIterator[str]:
    """A new, empty database on the session's server, dropped afterwards: `postgresql://…/<name>`."""
    name = f"peercall_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield sa.make_url(admin_dsn).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _backend_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "postgres":
        async for url in _postgres_database(request.getfixturevalue("postgres_server")):
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
    async for u in _postgres_database(postgres_server):
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
