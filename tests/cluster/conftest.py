"""Fixtures for the cluster tests: a real redis-server, several `peercall serve` nodes sharing it, and a real
nginx in front of them running deploy/nginx.conf.

- `redis_server` (session): Debian's redis-server on a free 127.0.0.1 port in a temporary directory, or the
  server `PEERCALL_TEST_REDIS_URL` names (the tests FLUSHDB the database numbers 1-15 of that server: point it
  at a Redis of its own). `redis` is the same object for one test: `redis.stop()`, `redis.start()`,
  `redis.restart()`, `redis.kill()` (same port, data gone: it runs with `--save "" --appendonly no`); whatever
  the test did, Redis is running again after it. `redis_url` is the server's `redis://127.0.0.1:PORT`.
- `cluster(n, history=None, **env)`: `with cluster(2) as c:` (or `async with`) starts n nodes `n0`…, each with
  `PEERCALL_REDIS_URL` on a Redis database of their own (flushed first; pub/sub channels are not per database,
  but the tests run one after another), `PEERCALL_NODE_ID=n<i>`, and `env`. `history="postgres"`: all share one
  new database on the session's PostgreSQL (started on first use); otherwise each node has its own SQLite file.
- `nginx(ports)`: `with nginx([c.nodes[0].port, c.nodes[1].port]) as proxy:` runs deploy/nginx.conf, with only
  the node addresses, listen addresses and certificate paths changed, on free loopback ports; TLS with a
  self-signed certificate for 127.0.0.1 (Chromium needs `--ignore-certificate-errors`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest

from tests.conftest import ROOT, TIMEOUT, ServerProcess, create_database, drop_database, free_port, run_server

# The browser fixtures of tests/e2e (Debian's Chromium, pages with a fake microphone), for test_nginx_browser.py.
from tests.e2e.conftest import (  # noqa: F401
    browser,
    chromium_path,
    launch_browser,
    loopback_only,
    open_page,
    playwright,
)

REDIS_ENV = "PEERCALL_TEST_REDIS_URL"
REDIS_BIN = "/usr/bin/redis-server"
NGINX_BIN = "/usr/sbin/nginx"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
OWN_DATABASES = 256  # Redis databases of our own server: one per cluster a session starts (db 0 is left alone)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------- Redis


def redis_command(port: int, *args: str | int, host: str = "127.0.0.1", db: int | None = None) -> Any:
    """Send one command to Redis (RESP over a plain socket) and return its reply; errors raise RuntimeError."""
    commands = ([("SELECT", db)] if db is not None else []) + [args]
    payload = b""
    for command in commands:
        parts = [str(a).encode() for a in command]
        payload += b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        sock.sendall(payload)
        reader = sock.makefile("rb")
        replies = [_read_reply(reader) for _ in commands]
    return replies[-1]


def _read_reply(reader: Any) -> Any:
    line = reader.readline()
    if not line:
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"Redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    raise RuntimeError(f"unexpected reply from Redis: {line!r}")


@dataclass
class RedisServer:
    """A redis-server on 127.0.0.1:`port` that a test may stop and start again on the same port."""

    port: int
    host: str = "127.0.0.1"
    workdir: Path | None = None  # None: an external server (PEERCALL_TEST_REDIS_URL), which we never stop
    databases: int = 16
    proc: subprocess.Popen[bytes] | None = None
    _next_db: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def db_url(self, db: int) -> str:
        return f"{self.url}/{db}"

    def fresh_db(self) -> int:
        """A database number (1…) no earlier cluster of this session used, flushed."""
        with self._lock:
            self._next_db = self._next_db % (self.databases - 1) + 1
            db = self._next_db
        self.command("FLUSHDB", db=db)
        return db

    def command(self, *args: str | int, db: int | None = None) -> Any:
        return redis_command(self.port, *args, host=self.host, db=db)

    def keys(self, db: int, pattern: str = "*") -> list[str]:
        """Every key of database `db` matching `pattern` (SCAN, so safe on a busy server)."""
        found: list[str] = []
        cursor = "0"
        while True:
            cursor, batch = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000, db=db)
            found.extend(batch)
            if cursor == "0":
                return sorted(set(found))

    def ping(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.ping()

    def _own(self, action: str) -> Path:
        if self.workdir is None:
            pytest.fail(f"cannot {action} the Redis that {REDIS_ENV} names; unset it to let the tests run their own")
        return self.workdir

    def start(self, timeout: float = 10) -> None:
        """Start redis-server on the same port again (empty). Returns once it answers PING."""
        workdir = self._own("start")
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [
                REDIS_BIN,
                *("--port", str(self.port), "--bind", self.host, "--dir", str(workdir)),
                *("--save", "", "--appendonly", "no", "--databases", str(self.databases)),
                *("--protected-mode", "no", "--daemonize", "no", "--logfile", ""),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                pytest.fail(f"redis-server did not start on port {self.port}:\n{self.log()}", pytrace=False)
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean shutdown; SIGKILL: a crash). Clients see their connections close."""
        self._own("stop")
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        if self.workdir is None or not (self.workdir / "redis.log").exists():
            return ""
        return (self.workdir / "redis.log").read_text(errors="replace")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port for the whole session, or the one PEERCALL_TEST_REDIS_URL names."""
    if env := os.environ.get(REDIS_ENV):
        m = re.fullmatch(r"redis://(?:[^@/]*@)?([^:/]+)(?::(\d+))?/?\d*", env)
        if not m:
            pytest.fail(f"{REDIS_ENV}={env!r}: expected redis://host:port", pytrace=False)
        server = RedisServer(int(m.group(2) or 6379), host=m.group(1))
        if not server.ping():
            pytest.fail(f"{REDIS_ENV}={env!r} does not answer PING", pytrace=False)
        yield server
        return
    if not os.access(REDIS_BIN, os.X_OK):
        pytest.fail(
            f"{REDIS_BIN} is missing: install Debian's redis-server (scripts/install-system-deps does), "
            f"or set {REDIS_ENV} to a server the tests may flush",
            pytrace=False,
        )
    workdir = Path(tempfile.mkdtemp(prefix="peercall-redis-"))
    server = RedisServer(free_port(), workdir=workdir, databases=OWN_DATABASES)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, for a test that stops or restarts it: running again when the test ends."""
    yield redis_server
    if redis_server.workdir is not None and not redis_server.running:
        redis_server.start()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """`redis://127.0.0.1:PORT` of the session's Redis (append `/<db>`; `cluster` picks a fresh db itself)."""
    return redis_server.url


# -------------------------------------------------------------------------------------------------- nodes


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a loop of its own, in another thread (works inside a running loop too)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@dataclass
class Cluster:
    """Running nodes n0…n<k>; `nodes[i]` is a tests.conftest.ServerProcess (`.ws`, `.http`, `.log()`, …)."""

    nodes: list[ServerProcess]
    redis: RedisServer
    redis_db: int
    database_url: str | None
    env: dict[str, str | None]
    stack: contextlib.ExitStack

    @property
    def redis_url(self) -> str:
        return self.redis.db_url(self.redis_db)

    @property
    def urls(self) -> list[str]:
        """Every node's ws:// URL, in order (for `peercall conformance URL…`)."""
        return [node.ws for node in self.nodes]

    def redis_keys(self, pattern: str = "*") -> list[str]:
        """The keys the cluster keeps in its Redis database right now."""
        return self.redis.keys(self.redis_db, pattern)

    def node_env(self, index: int, **env: str | None) -> dict[str, str | None]:
        settings: dict[str, str | None] = {"PEERCALL_REDIS_URL": self.redis_url, "PEERCALL_NODE_ID": f"n{index}"}
        if self.database_url is not None:
            settings["PEERCALL_DATABASE_URL"] = self.database_url
        return {**settings, **self.env, **env}

    def start_node(self, index: int | None = None, **env: str | None) -> ServerProcess:
        """Start node `index` again (after `kill`/`stop`; same node id), or a new node at the end."""
        index = len(self.nodes) if index is None else index
        node = self.stack.enter_context(run_server(**self.node_env(index, **env)))
        if index == len(self.nodes):
            self.nodes.append(node)
        else:
            self.nodes[index] = node
        return node

    def kill(self, index: int) -> None:
        """`kill -9` node `index`: it says nothing to anyone, its sockets just close."""
        self.nodes[index].stop(signal.SIGKILL)

    def stop(self, index: int) -> int:
        """SIGTERM node `index` (a graceful shutdown); its exit status."""
        return self.nodes[index].stop()

    def node_of(self, user: str) -> list[int]:
        """The nodes whose log says `user` connected to them (in node order; a user may have several devices)."""
        pattern = re.compile(rf"\b{re.escape(user)} connected from ")
        return [i for i, node in enumerate(self.nodes) if pattern.search(node.log())]

    def logs(self) -> str:
        return "\n".join(f"---- node n{i} ----\n{node.log()}" for i, node in enumerate(self.nodes))


@contextlib.contextmanager
def running_cluster(
    redis: RedisServer, n: int = 2, *, postgres_admin: str | None = None, **env: str | None
) -> Iterator[Cluster]:
    """n nodes n0… on a fresh database of `redis`, sharing one store (history and contacts): a new PostgreSQL
    database with `postgres_admin` (an admin DSN), else one SQLite file in a temporary folder. For fixtures of a
    wider scope than a test; tests use `cluster`."""
    with contextlib.ExitStack() as stack:
        if postgres_admin is not None:
            database_url = _in_thread(lambda: create_database(postgres_admin))
            stack.callback(lambda: _in_thread(lambda: drop_database(postgres_admin, database_url)))
        else:  # one SQLite file that every node opens: the nodes of a cluster share their contacts and history
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="peercall-cluster-"))
            database_url = f"sqlite:///{folder}/shared.sqlite3"
        c = Cluster([], redis, redis.fresh_db(), database_url, dict(env), stack)
        # Start the nodes side by side: each takes about a second to import and bind.
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda i: _enter(run_server(**c.node_env(i))), range(n)))
        for cm, node in results:
            if cm is not None:
                stack.push(cm.__exit__)
                c.nodes.append(node)
        for cm, error in results:
            if cm is None:
                raise error
        yield c


class ClusterStarter:
    """What `cluster(...)` returns: use it as `with` (sync tests) or `async with` (async tests)."""

    def __init__(self, cm: contextlib.AbstractContextManager[Cluster]) -> None:
        self.cm = cm
        self.cluster: Cluster | None = None
        self.entered = False

    def __enter__(self) -> Cluster:
        self.cluster = self.cm.__enter__()
        self.entered = True
        return self.cluster

    def __exit__(self, *exc: Any) -> None:
        if self.entered:
            self.entered = False
            self.cm.__exit__(*exc)

    async def __aenter__(self) -> Cluster:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.__exit__, kind, exc, tb)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Callable[..., ClusterStarter]]:
    """`with cluster(3, PEERCALL_RING_TIMEOUT="2") as c:` -> 3 nodes sharing a fresh Redis db (see the module doc).

    If the test failed, each node's log is printed. Anything still running at the end of the test is stopped."""
    started: list[ClusterStarter] = []

    def make(n: int = 2, *, history: str | None = None, **env: str | None) -> ClusterStarter:
        if history not in (None, "postgres"):
            raise ValueError(f"history={history!r}: None (SQLite per node) or 'postgres' (shared)")
        # Fixtures are resolved here, on the test's thread, even when the nodes start in another one.
        admin = request.getfixturevalue("postgres_server") if history == "postgres" else None
        starter = ClusterStarter(running_cluster(redis_server, n, postgres_admin=admin, **env))
        started.append(starter)
        return starter

    yield make
    report = getattr(request.node, "report_call", None)
    for starter in started:
        starter.__exit__(None, None, None)
        if starter.cluster is not None and report is not None and report.failed:
            print(starter.cluster.logs())


def _enter(cm: contextlib.AbstractContextManager[T]) -> tuple[contextlib.AbstractContextManager[T] | None, Any]:
    """(cm, what it yields), or (None, the exception) if entering it failed."""
    try:
        return cm, cm.__enter__()
    except Exception as exc:
        return None, exc


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report on the item, so fixtures can print the nodes' logs when the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# -------------------------------------------------------------------------------------------------- nginx


@dataclass
class Nginx:
    """nginx running deploy/nginx.conf: https on `port`, the http→https redirect on `http_port`."""

    proc: subprocess.Popen[bytes]
    port: int
    http_port: int
    prefix: Path

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws"

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def render_nginx_conf(
    upstreams: Sequence[str], https_listen: str, http_listen: str, certfile: Path, keyfile: Path
) -> str:
    """deploy/nginx.conf with the node addresses, listen addresses and certificate paths replaced (nothing else).

    Fails loudly if the file no longer has the shape this expects, rather than test some other configuration."""
    conf = NGINX_CONF.read_text()
    block = re.search(r"upstream peercall \{.*?\n\}", conf, re.S)
    assert block, "deploy/nginx.conf has no `upstream peercall { … }`"
    servers = re.findall(r"^ {4}server \S+(.*);$", block.group(0), re.M)
    assert servers, "deploy/nginx.conf's upstream lists no `server host:port …;`"
    options = servers[0]  # e.g. " max_fails=2 fail_timeout=10s"
    upstream = re.sub(r"^ {4}server \S+.*;\n", "", block.group(0), flags=re.M)
    upstream = upstream.replace("\n}", "".join(f"\n    server {u}{options};" for u in upstreams) + "\n}")
    conf = conf.replace(block.group(0), upstream)
    swaps = [
        (r"^(\s*)listen 443 ssl;$", rf"\1listen {https_listen} ssl;"),
        (r"^\s*listen \[::\]:443 ssl;\n", ""),
        (r"^(\s*)listen 80;$", rf"\1listen {http_listen};"),
        (r"^\s*listen \[::\]:80;\n", ""),
        (r"^(\s*)ssl_certificate \S+;$", rf"\1ssl_certificate {certfile};"),
        (r"^(\s*)ssl_certificate_key \S+;$", rf"\1ssl_certificate_key {keyfile};"),
    ]
    for pattern, replacement in swaps:
        conf, count = re.subn(pattern, replacement, conf, flags=re.M)
        assert count == 1, f"deploy/nginx.conf: expected one line matching {pattern!r}, found {count}"
    return conf


NGINX_MAIN = """\
# Written by tests/cluster/conftest.py: a minimal main configuration around deploy/nginx.conf.
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    log_format peercall '$remote_addr "$request" $status upstream=$upstream_addr';
    access_log {prefix}/access.log peercall;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/peercall.conf;
}}
"""


@pytest.fixture(scope="session")
def tls_cert() -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certfile, keyfile)."""
    workdir = Path(tempfile.mkdtemp(prefix="peercall-tls-"))
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    yield cert, key
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def nginx(tls_cert: tuple[Path, Path], request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """`with nginx([port0, port1]) as proxy:` -> Debian's nginx running deploy/nginx.conf in front of those nodes."""
    if not os.access(NGINX_BIN, os.X_OK):
        pytest.fail(f"{NGINX_BIN} is missing: install Debian's nginx (scripts/install-system-deps does)", pytrace=False)

    @contextlib.contextmanager
    def run(ports: Sequence[int]) -> Iterator[Nginx]:
        prefix = Path(tempfile.mkdtemp(prefix="peercall-nginx-"))
        (prefix / "tmp").mkdir()
        port, http_port = free_port(), free_port()
        site = render_nginx_conf(
            [f"127.0.0.1:{p}" for p in ports], f"127.0.0.1:{port}", f"127.0.0.1:{http_port}", *tls_cert
        )
        (prefix / "peercall.conf").write_text(site)
        (prefix / "nginx.conf").write_text(NGINX_MAIN.format(prefix=prefix))
        if os.geteuid() == 0:  # workers run as nobody: let them write their temporary files
            os.chmod(prefix / "tmp", 0o777)
        error_log = open(prefix / "error.log", "ab")
        proc = subprocess.Popen(
            [
                *(NGINX_BIN, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf")),
                *("-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr info;"),
            ],
            stdout=error_log,
            stderr=subprocess.STDOUT,
        )
        error_log.close()
        server = Nginx(proc, port, http_port, prefix)
        try:
            deadline = time.monotonic() + 10
            while not _accepts(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nginx did not start:\n{server.error_log()}", pytrace=False)
                time.sleep(0.02)
            yield server
        finally:
            if proc.poll() is None:
                proc.terminate()  # fast shutdown: open WebSockets are cut, as in a crash of the proxy
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            report = getattr(request.node, "report_call", None)
            if report is not None and report.failed:
                print(f"---- nginx error log ----\n{server.error_log()}\n---- nginx access log ----")
                print(server.access_log())
            shutil.rmtree(prefix, ignore_errors=True)

    yield run


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
