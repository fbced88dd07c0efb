"""Shared fixtures: a real `peercall serve` process on a free loopback port, and real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT = 5.0  # seconds to wait for any single event that should happen "at once"


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
async def connect(server: ServerProcess) -> AsyncIterator[Any]:
    """`await connect("alice")` -> a Client that has received its `welcome`. All are closed at the end."""
    clients: list[Client] = []

    async def _connect(client_id: str, srv: ServerProcess | None = None) -> Client:
        ws = await websockets.connect(f"{(srv or server).ws}?id={client_id}", open_timeout=TIMEOUT)
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
