"""Shared fixtures: a real `peercall serve` process on a free loopback port, and real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
import websockets
from hypothesis.configuration import set_hypothesis_home_dir

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("PEERCALL_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "peercall-test-artifacts")
"""Where screenshots and failure pages go: outside the checkout (tests never write into it); PEERCALL_TEST_ARTIFACTS
moves it."""
TIMEOUT = 5.0  # seconds to wait for any single event that should happen "at once"

# Hypothesis keeps what it learns (the examples that failed, replayed first on the next run; the constants it found in
# the code) in the user's cache, not in the working directory's `.hypothesis/`: tests never write into the checkout.
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
set_hypothesis_home_dir(_CACHE / "peercall-tests" / "hypothesis")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n N`, as `make test` runs the suite) each worker runs in a loopback-only namespace of its
    own (`scripts/loopback-only --new`), as the whole run does: ports and network changes (tests/netns.py: a veth
    whose address a test removes under a call) are then the worker's alone, and a browser of one worker never sees
    another worker's network. The workers talk to the controller over pipes, which a namespace does not touch."""
    tx = getattr(config.option, "tx", None)
    if tx and os.environ.get("PEERCALL_IN_NETNS") == "1":
        python = shlex.join([str(ROOT / "scripts" / "loopback-only"), "--new", sys.executable])
        config.option.tx = [f"popen//python={python}" if spec == "popen" else spec for spec in tx]


SCALE = float(os.environ.get("PEERCALL_TEST_TIMEOUT_SCALE", "1"))
"""Multiply every timeout by this on slow machines."""

SERVICE_TOKEN = "service-token-of-the-test-servers-0123456789"
"""PEERCALL_SERVICE_TOKEN of every test server: a test that plays a service (the echo) takes its reserved id with it."""

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium: the only browser the tests use (never `playwright install`)."""
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
    "--use-fake-device-for-media-stream",  # a fake microphone that beeps
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",  # else no ICE candidates at all in a loopback-only namespace
]


@dataclass
class ServerProcess:
    """A running `peercall serve`; `log()` is everything it printed so far."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, text: str, timeout: float = TIMEOUT) -> bool:
        """Wait until the server has printed `text`. Blocking: from async code, use `asyncio.to_thread`."""
        with self.changed:
            return self.changed.wait_for(lambda: text in self.log(), timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.reader is not None:
                self.reader.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


OPEN_DOORS: dict[str, str] = {"PEERCALL_CALLS_FROM": "everyone", "PEERCALL_DIRECTORY": "all"}
"""For tests of token mode that are about something else than contacts: anyone may ring anyone and everyone
sees everyone online, as in open mode (token mode's defaults are `contacts` for both: tests/integration/
test_contacts.py)."""


@contextlib.contextmanager
def run_server(**env: str | None) -> Iterator[ServerProcess]:
    """Start `peercall serve --port 0` on 127.0.0.1 and wait until its banner names the port.

    `env` adds PEERCALL_* settings; a value of None removes that variable.
    """
    workdir = tempfile.mkdtemp(prefix="peercall-test-")
    full_env: dict[str, str | None] = {
        **os.environ,
        "PEERCALL_DATABASE_URL": f"sqlite:///{workdir}/history.sqlite3",
        "PEERCALL_HOST": "127.0.0.1",
        "PEERCALL_PORT": "0",
        "PEERCALL_ICE_SERVERS": "[]",
        "PEERCALL_SERVICE_TOKEN": SERVICE_TOKEN,
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "peercall", "serve"],
        env={k: v for k, v in full_env.items() if v is not None},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = ServerProcess(proc, 0)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with server.changed:
                server.lines.append(line.rstrip("\n"))
                server.changed.notify_all()
            m = re.search(r"listening on \S+:(\d+)$", line)
            if m and not server.port:
                server.port = int(m.group(1))
                ready.set()
        ready.set()

    server.reader = threading.Thread(target=pump, daemon=True)
    server.reader.start()
    if not ready.wait(20) or not server.port:
        server.stop(signal.SIGKILL)
        raise RuntimeError(f"peercall serve did not start:\n{server.log()}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _data_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """XDG_DATA_HOME is a temporary folder: a default history (ours or a server's) never lands in the user's data."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("xdg-data")
        patch.setenv("XDG_DATA_HOME", str(folder))
        yield folder


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """One server shared by the tests that only need routing (each uses its own unique ids)."""
    with run_server() as srv:
        yield srv


@pytest.fixture
def fresh_server() -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that stop it or read its log."""
    with run_server() as srv:
        yield srv


class Client:
    """A raw WebSocket client speaking protocol v1, with helpers to wait for frames."""

    def __init__(self, ws: websockets.ClientConnection, client_id: str) -> None:
        self.ws = ws
        self.id = client_id
        self.welcome: dict[str, Any] = {}

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(self, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Wait for the next frame that has all `fields` (others, such as presence, are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            # A presence frame may carry several changes; each is matched as if it came alone.
            for one in [{"type": "presence", **c} for c in msg["changes"]] if "changes" in msg else [msg]:
                if all(one.get(k) == v for k, v in fields.items()):
                    return one

    async def nothing(self, within: float = 0.3, **fields: Any) -> None:
        """Assert that no frame with `fields` arrives within `within` seconds."""
        with contextlib.suppress(TimeoutError):
            msg = await self.expect(timeout=within, **fields)
            raise AssertionError(f"{self.id} unexpectedly received {msg}")

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """`await connect("alice")` -> a Client that has received its `welcome` from the session's shared server (or
    from `srv`, when given: then the shared server is not started for it). All are closed at the end."""
    clients: list[Client] = []

    async def _connect(client_id: str, srv: ServerProcess | None = None) -> Client:
        if srv is None:
            srv = request.getfixturevalue("server")
        ws = await websockets.connect(f"{srv.ws}?id={client_id}", open_timeout=TIMEOUT)
        client = Client(ws, client_id)
        clients.append(client)
        client.welcome = await client.expect(type="welcome")
        return client

    yield _connect
    for c in clients:
        await c.close()


_counter = iter(range(1, 10**9))


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> Any:
    """`uid("alice")` -> an id unique to this test, so tests can share one server."""
    stem = re.sub(r"[^A-Za-z0-9]", "", request.node.name)[-20:]
    return lambda name: f"{name}-{stem}-{next(_counter)}"


# ---- PostgreSQL: one real server per session (the history contract tests and the cluster tests share it) ----
#
# A real server of the suite's own (started once per session from Debian's binaries, on 127.0.0.1 and a free
# port, removed at the end), or the one that `PEERCALL_TEST_POSTGRES_URL` names (its user needs CREATEDB).
# Either way each test gets a database of its own. The machine's own PostgreSQL is never touched.

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


def small_socket(port: int) -> socket.socket:
    """A client socket to 127.0.0.1:`port` whose receive buffer (4 KiB) fills after a few frames: a WebSocket client
    on it that stops reading (`transport.pause_reading()`) soon has the server hold frames back for it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


class Proxy:
    """A TCP proxy to a server on loopback, for outages that a stopped server cannot make:
    - `freeze()` (until `thaw()`): nothing is forwarded while every socket stays open, what was sent then waits, and
      nothing comes back, as on a network that drops packets;
    - `eat()`: the server's replies go nowhere (with `requests=True`, what is sent to it too), then `cut()` closes
      every connection: as when a server restarts just after it ran a command and before its reply went out (or
      before the command reached it). New connections pass again;
    - `refuse()` (until `admit()`): new connections are closed at once, as by a server that is down."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.eating = self.eating_requests = self.refusing = False
        self.requests_eaten = bytearray()  # what was sent to the server and went nowhere
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def eat(self, *, requests: bool = False) -> None:
        self.eating, self.eating_requests = True, requests

    def refuse(self) -> None:
        self.refusing = True

    def admit(self) -> None:
        self.refusing = False

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self.eating = self.eating_requests = False

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.thaw()
        self.cut()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self._writers.append(writer)
        await self.flowing.wait()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers.append(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, replies=False),
            self._pipe(up_reader, writer, replies=True),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            if not (self.eating if replies else self.eating_requests):
                writer.write(data)
                await writer.drain()
            elif not replies:
                self.requests_eaten += data
        writer.close()


def free_port() -> int:
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
    port = free_port()
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


async def create_database(admin_dsn: str) -> str:
    """A new, empty database on the server of `admin_dsn`: its `postgresql://…/<name>` URL."""
    name = f"peercall_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return sa.make_url(admin_dsn).set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_dsn: str, url: str) -> None:
    """Drop the database that `create_database` made (connections to it are closed)."""
    name = sa.make_url(url).database
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def postgres_database(admin_dsn: str) -> AsyncIterator[str]:
    """A new, empty database on the session's server, dropped afterwards: `postgresql://…/<name>`."""
    url = await create_database(admin_dsn)
    try:
        yield url
    finally:
        await drop_database(admin_dsn, url)
