"""A lean Redis client for the broker's hot commands: one connection, every command pipelined.

Why by hand: redis-py (which the broker keeps for everything else) spends more Python per command than the rest of
a call's transition (a connection taken from the pool and given back, a health check, a timeout context, response
callbacks), and writes each command with its own syscall; on loopback, and on a core shared with Redis, that write
is the single most expensive line of a call (measured: docs/deploy.md, "Sizing"). Here the commands issued
in one turn of the event loop leave in one write, and replies are matched to them in order, as the RESP protocol
guarantees on one connection. Parsing is hiredis's (`hiredis.Reader`), packing too (`hiredis.pack_command`); what is
left by hand is the queue of waiting replies and the reconnect. No library does that well for asyncio today
(redis-py's pipelines are explicit objects, one write per `execute`, and still go through the pool).

Semantics: commands go out in the order they were issued and are answered in that order. A lost connection fails
every command waiting on it with redis-py's `ConnectionError`; a connection that answers nothing for `timeout`
seconds while commands wait is closed, failing them with redis-py's `TimeoutError`; the next command connects
again. Replies that are errors raise redis-py's `ResponseError`. So callers handle them as redis-py's. A command
that never left (no connection, or it was lost before the command was written) fails with `NotSent`, a
`ConnectionError` that says Redis cannot have run it; any other failure leaves that open.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_WAITING = 50_000
"""Commands waiting for their reply on the connection at most; beyond, a command fails at once as if Redis could
not be reached (each client connection has at most one event under way, so only a very large node gets near)."""


class NotSent(RedisConnectionError):
    """The command was never written to Redis: Redis cannot have run it."""


class Connection(asyncio.Protocol):
    """One connection: commands queued during a turn of the loop, written at its end; replies in order.
    `send(args)`: a command, the future of its reply; `lost`: why it is gone, once it is (`closed` then done)."""

    def __init__(self, timeout: float, on_message: Callable[[str, str], None] | None = None) -> None:
        self._timeout = timeout
        self._on_message = on_message
        self._reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.lost: Exception | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()  # done once it is lost
        self._replies = 0  # replies read so far, for the watchdog
        self._seen = -1
        self._waited = False  # commands waited at the last look
        self._stalls = 0  # looks in a row that found commands waiting since the one before, and no reply
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)
        self._watchdog = self._loop.call_later(self._timeout / 2, self._watch)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise NotSent(str(self.lost)) from self.lost
        if len(self._waiting) >= MAX_WAITING:
            raise NotSent(f"{MAX_WAITING} Redis commands waiting for a reply")
        future = self._loop.create_future()
        self._waiting.append(future)
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(hiredis.pack_command(args))
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.lost is None and self._transport is not None:
            self._transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        reader.feed(data)
        on_message = self._on_message
        while (reply := reader.gets()) is not False:
            self._replies += 1
            if on_message is not None and type(reply) is list and reply[0] == "message":
                on_message(reply[1], reply[2])  # Pub/Sub: a message on a channel subscribed to, not a reply
                continue
            if not waiting:  # a reply to nothing: the stream is out of step
                self.fail(RedisConnectionError("Redis sent a reply that no command asked for"))
                return
            future = waiting.popleft()
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _watch(self) -> None:
        """Close the connection if commands waited at each of the last three looks (every timeout/2), with no
        reply at all in between: one waited at least `timeout` for it."""
        if self.lost is not None:
            return
        if self._waiting and self._waited and self._replies == self._seen:
            self._stalls += 1
            if self._stalls >= 2:
                self.fail(RedisTimeoutError(f"Redis did not answer within {self._timeout}s"))
                return
        else:
            self._stalls = 0
            self._seen = self._replies
        self._waited = bool(self._waiting)
        self._watchdog = self._loop.call_later(self._timeout / 2, self._watch)

    def fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        if not self.closed.done():
            self.closed.set_result(None)
        if self._watchdog is not None:
            self._watchdog.cancel()
        written = len(self._waiting) - len(self._out)  # the last ones queued were never written (`_flush`)
        self._out = []
        while self._waiting:
            future = self._waiting.popleft()
            written -= 1
            if not future.done():
                future.set_exception(self.lost if written >= 0 else NotSent(str(self.lost)))
                future.exception()  # retrieved: a caller that was cancelled meanwhile leaves no warning
        if self._transport is not None:
            self._transport.close()


class Pipe:
    """Redis commands, pipelined on one connection (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        on_message: Callable[[str, str], None] | None = None,
    ) -> None:
        """Raises ValueError for a URL this client does not speak (TLS): use redis-py for it. `on_message`: for a
        connection that subscribes (`connect`), called with each message's channel and data."""
        self._on_message = on_message
        options = parse_url(url)
        if options.get("connection_class") not in (None,) and "path" not in options:
            raise ValueError("only redis:// and unix:// URLs")
        self._host, self._port = options.get("host", "localhost"), int(options.get("port", 6379))
        self._path: str | None = options.get("path")
        self._db = int(options.get("db", 0))
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._timeout, self._connect_timeout = timeout, connect_timeout
        self._conn: Connection | None = None
        self._connecting: asyncio.Task[Connection] | None = None
        self._shas: dict[str, str] = {}

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply. Raises redis-py's ConnectionError (`NotSent` if it never left), TimeoutError
        or ResponseError."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            try:
                conn = await self._connect()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise NotSent(str(exc)) from exc
        return await conn.send(args)

    async def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send the commands together, in order; their replies (the first error raises, after all were read)."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        futures = [conn.send(command) for command in commands]
        return [await future for future in futures]

    async def evalsha(self, script: str, numkeys: int, *args: Any) -> Any:
        """EVALSHA of `script`, loading it with EVAL when Redis does not have it (first use, or Redis restarted)."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        try:
            return await self.execute("EVALSHA", sha, numkeys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", script, numkeys, *args)

    async def connect(self) -> Connection:
        """The connection commands go on now (connected if need be): to subscribe on it, and to know when it is
        lost (its `lost`; its commands then fail), since `execute` would connect again without a word."""
        conn = self._conn
        if conn is None or conn.lost is not None:
            conn = await self._connect()
        return conn

    async def _connect(self) -> Connection:
        # In a task of its own, shared by every command that waits for it (and so that its timeout has a task,
        # whoever awaits: the hub may run events outside any, server/fastws.py).
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                protocol = functools.partial(Connection, self._timeout, self._on_message)
                if self._path is not None:
                    _, conn = await loop.create_unix_connection(protocol, self._path)
                else:
                    _, conn = await loop.create_connection(protocol, self._host, self._port)
                hello = []
                if self._password is not None:
                    auth = (self._username, self._password) if self._username else (self._password,)
                    hello.append(conn.send(("AUTH", *auth)))
                if self._db:
                    hello.append(conn.send(("SELECT", self._db)))
                try:
                    await asyncio.gather(*hello)
                except BaseException:
                    conn.fail(RedisConnectionError("could not say hello to Redis"))
                    raise
        except TimeoutError as exc:
            raise RedisTimeoutError(f"could not connect to Redis within {self._connect_timeout}s") from exc
        except OSError as exc:
            raise RedisConnectionError(f"could not connect to Redis: {exc}") from exc
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.fail(RedisConnectionError("closed"))
            self._conn = None
