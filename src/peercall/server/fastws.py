"""`/ws` on picows, on the same port as the HTTP routes.

Why: a relayed frame cost ~30 µs of CPU under uvicorn's own WebSocket protocol (pure-Python framing, an ASGI
event and a flow-control round per frame), of which peercall's own work is 4-7 µs. picows (PyPI `picows`, Cython,
maintained, MIT) parses and builds frames in C and calls us back synchronously with each one, without a task or a
queue per frame; measured with bench/run.py it is what lets the server keep up with the PeerJS server
(docs/benchmarks.md has the numbers of every stack that was tried).

How: uvicorn's httptools protocol (C parser) still reads every request. When it sees a WebSocket upgrade for
`/ws`, `PeercallHttpProtocol` checks it (origin, token, limits: `SignalingEndpoint.check_upgrade`) and hands the
socket to picows's protocol, feeding it the request it has read; everything else (HTTP routes, static files, other
upgrades) stays uvicorn + Starlette. picows writes the 101 (or the refusal, an HTTP error with a JSON body),
frames and unframes, and answers pings.

What is written here by hand, because picows leaves it to the application or does it at a cost per socket:
reassembling fragmented messages, answering a close frame, bounding what waits for a slow reader, writing the
frames of one read together (`Outbox`: picows writes each frame with its own send(2)), pinging idle sockets and
dropping those whose pong does not come (`Pinger`: one timer, where picows runs a task per socket), and running
the hub's coroutines in frame order without a task per frame (`FastConnection._run`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

import httptools
from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..core.limits import TokenBucket
from ..errors import ProtocolError
from ..protocol import messages
from ..protocol.codes import CloseCode, ErrorCode

if TYPE_CHECKING:
    from .ws import SignalingEndpoint

log = logging.getLogger("peercall.ws")


class _PicowsLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows's log: a broken frame from a client (too large, bad opcode) is the client's fault, not an error of
    the server, so it is logged at INFO. Being a LoggerAdapter (not a Logger) also keeps picows from making a
    child logger per connection, which would cost memory on every idle socket."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level == logging.ERROR and isinstance(msg, str) and msg.startswith(("WS parser error", "on_ws_frame")):
            level = logging.INFO
        super().log(level, msg, *args, **kwargs)


_PICOWS_LOG = _PicowsLog(logging.getLogger("peercall.ws.picows"), None)
logging.getLogger("peercall.ws.picows").setLevel(logging.WARNING)  # not one line per accepted socket

_TEXT, _BINARY, _CONTINUATION = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
_CLOSE, _PING, _PONG = WSMsgType.CLOSE, WSMsgType.PING, WSMsgType.PONG
CLOSE_TIMEOUT = 5.0  # seconds a client may take to answer our close frame before the socket is dropped
_READ_BUFFER = 2048  # picows's initial read buffer per socket (it grows for larger frames); its minimum
_tasks: set[asyncio.Future[None]] = set()


class _Resume:
    """Await a coroutine that was started by hand (`coro.send(None)`) and suspended on `waiting`.

    `FastConnection._run` starts the hub's coroutine synchronously, as Python 3.12's eager tasks do: most finish
    without suspending and need no task at all. One that does suspend is finished by a task awaiting this.
    """

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:  # cancellation: pass it on into the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration:
                    return


class Outbox:
    """The connections that were sent frames and have not been written to yet.

    A write is a send(2) (picows and uvloop both write at once when they can), and on loopback or a busy server
    that syscall is most of the cost of a relayed frame. So frames wait here until the read that caused them has
    been handled (`_WSProtocol.buffer_updated`), or, for frames sent from elsewhere (timers, tasks, Redis), until
    the event loop's turn ends: the frames for one connection then leave in one write (an offer and its first
    candidates, `call-ended` after `hangup`). A lone frame leaves as soon as it would have without this.
    """

    __slots__ = ("_dirty", "_scheduled", "reading")

    def __init__(self) -> None:
        self._dirty: list[FastConnection] = []
        self._scheduled = False
        self.reading = False  # inside `_WSProtocol.buffer_updated`, which flushes when it is done

    def add(self, conn: FastConnection) -> None:
        if not self.reading and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn_ended)
        self._dirty.append(conn)

    def flush(self) -> None:
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for conn in dirty:
                try:
                    conn.flush()
                except Exception:  # one broken transport must not keep the others' frames waiting
                    log.exception("%s (%s): could not write to the socket; closing it", conn.id, conn.cid)
                    conn.close_now(CloseCode.INTERNAL_ERROR, "internal error")

    def _turn_ended(self) -> None:
        self._scheduled = False
        self.flush()


class Pinger:
    """Pings every connection that has sent nothing for `interval` seconds, and drops one whose pong does not
    come within `timeout` (a frozen client, a dead network: its calls then follow the resume rules).

    One timer for all connections, sweeping them every quarter of the shorter of the two: picows's own auto-ping
    is a task per connection, sleeping, and measured at ~2 KB of the ~9 KB an idle connection cost. Any frame
    received (a pong, a candidate) counts as a sign of life.
    """

    __slots__ = ("_handle", "interval", "live", "step", "timeout")

    def __init__(self, live: set[FastConnection], interval: float, timeout: float) -> None:
        self.live, self.interval, self.timeout = live, interval, timeout
        self.step = max(0.02, min(interval, timeout) / 4)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.step, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        now = time.monotonic()
        interval, timeout = self.interval, self.timeout
        for conn in list(self.live):
            if conn.active:  # something arrived since the last sweep
                conn.active = False
                conn.quiet_since, conn.pinged_at = now, None
            elif conn.pinged_at is None:
                if now - conn.quiet_since >= interval:
                    conn.ping()
                    conn.pinged_at = now
            elif now - conn.pinged_at >= timeout:
                conn.lost(timeout)
        if self.live:
            self.start()


class _WSProtocol(WSProtocol):
    """picows's protocol, plus: the frames that one read made the hub send are written when it is handled."""

    __slots__ = ("outbox",)

    def data_received(self, data: bytes) -> None:
        """Never called (uvloop reads into `get_buffer()`), but it must exist: uvloop's `set_protocol()` keeps the
        previous protocol's `data_received` unless the new protocol has one, and that bound method would keep
        uvicorn's whole HTTP protocol object (parser, request scope, headers: ~5 KB) alive for the socket's life."""
        _feed(self, data)

    def buffer_updated(self, nbytes: int) -> None:
        outbox = self.outbox
        outbox.reading = True
        try:
            WSProtocol.buffer_updated(self, nbytes)
        finally:
            outbox.reading = False
            outbox.flush()


_HEADERS = [bytes((0x81, n)) for n in range(126)]


def _frame(text: str) -> bytes:
    """A server's (unmasked, final) text frame: picows builds the same, but one send at a time."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return _HEADERS[n] + data
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + data
    return b"\x81\x7f" + n.to_bytes(8, "big") + data


class FastConnection(WSListener):
    """One `/ws` socket: picows's listener, and the connection object the hub sees.

    Sending never waits: a frame is framed at once and written when the event loop's turn ends (`Outbox`),
    together with the others sent to this connection in that turn. While the transport is above its high-water
    mark (the reader lags) frames wait in a backlog that is written when it drains, and a backlog above
    `send_buffer` bytes closes the connection (4420).
    """

    __slots__ = (
        "_backlog",
        "_bucket",
        "_bytes",
        "_code",
        "_device",
        "_endpoint",
        "_fragments",
        "_ip",
        "_joined",
        "_limited",
        "_out",
        "_outbox",
        "_peer",
        "_queue",
        "_started",
        "_timer",
        "_tr",
        "_user",
        "_writable",
        "_write",
        "active",
        "cid",
        "errors",
        "id",
        "on_drop",
        "open",
        "pinged_at",
        "quiet_since",
        "received",
    )

    def __init__(
        self, endpoint: SignalingEndpoint, user: str | None, wanted: str | None, device: str | None, peer: str
    ) -> None:
        self._endpoint = endpoint
        self.id = user or wanted or ""
        self.cid = endpoint.hub.new_cid()
        self._user = user
        self._device = device
        self._peer = peer
        self._ip = peer.rsplit(":", 1)[0]
        self._tr: WSTransport | None = None
        self._out: list[str] | None = None  # frames written when the loop's turn ends (Outbox)
        self._outbox: Outbox = endpoint.outbox
        self._backlog: collections.deque[str] | None = None
        self._bytes = 0
        self._writable = True
        self._queue: collections.deque[Coroutine[Any, Any, Any]] | None = None  # not None while a coroutine runs
        self._fragments: list[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._bucket: TokenBucket | None = None
        self._limited = 0
        self._joined = False
        self._code: int = CloseCode.INTERNAL_ERROR
        self._started = 0.0
        self.open = False
        self.errors = 0
        self.received = 0
        self.active = False  # a frame came since the Pinger last looked
        self.quiet_since = 0.0
        self.pinged_at: float | None = None
        self.on_drop: Any = endpoint._dropped

    # ------------------------------------------------------------------------------------------ the hub's side
    async def send_text(self, text: str) -> bool:
        return self.send_now(text)

    def send_now(self, text: str) -> bool:
        if not self.open:
            return False
        if self._writable and self._backlog is None:
            out = self._out
            if out is None:
                self._out = [text]
                self._outbox.add(self)
            else:
                out.append(text)
            return True
        if self._backlog is None:
            self._backlog = collections.deque()
        self._backlog.append(text)
        self._bytes += len(text)
        if self._bytes > self._endpoint.settings.send_buffer:
            log.warning("%s (%s): reads too slowly, %d bytes waiting; disconnecting", self.id, self.cid, self._bytes)
            self._backlog = None
            self._bytes = 0
            self.close_now(CloseCode.SLOW_CONSUMER, "too slow: send buffer overflowed")
            self.on_drop("slow-consumer")
            return False
        return True

    def flush(self) -> None:
        """Write the frames sent during this turn of the event loop, in one write."""
        out = self._out
        if out is not None:
            self._out = None
            # picows closes by itself on some protocol errors: nothing may follow its close frame
            tr = self._tr
            if self.open and not tr.is_close_frame_sent:  # type: ignore[union-attr]
                if len(out) == 1:
                    tr.send(_TEXT, out[0])  # type: ignore[union-attr]  # picows frames it straight into its buffer
                else:
                    self._write(b"".join(map(_frame, out)))

    @property
    def pending(self) -> int:
        """Bytes waiting to be sent: this turn's frames, our backlog and the transport's buffer."""
        tr = self._tr
        waiting = self._bytes + (sum(map(len, self._out)) if self._out else 0)
        return waiting + (tr.underlying_transport.get_write_buffer_size() if tr is not None and self.open else 0)

    async def close(self, code: int, reason: str) -> None:
        self.close_now(code, reason)

    def close_now(self, code: int, reason: str) -> None:
        if not self.open:
            return
        self.flush()  # what is queued (say, the error that explains) goes first
        self.open = False
        self._code = code
        tr = self._tr
        assert tr is not None
        if self._backlog and not tr.is_close_frame_sent:
            self._write(b"".join(map(_frame, self._backlog)))
        self._backlog = None
        self._bytes = 0
        if not tr.is_close_frame_sent:  # else picows closed it already (a ping timeout, a protocol error)
            tr.send_close(code, reason.encode()[:123])
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, tr.disconnect)

    def ping(self) -> None:
        if self.open:
            self._tr.send_ping()  # type: ignore[union-attr]

    def lost(self, timeout: float) -> None:
        """No pong within `timeout`: say why, and drop the socket at once (a frozen peer answers no close)."""
        log.info("%s (%s): no pong within %gs; dropping the connection", self.id, self.cid, timeout)
        tr = self._tr
        self.close_now(CloseCode.GOING_AWAY, f"no pong within {timeout:g}s")
        if tr is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(0.01, tr.underlying_transport.abort)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown calls this on every connection it tracks."""
        self.close_now(CloseCode.GOING_AWAY, "server shutting down")

    # ------------------------------------------------------------------------------------------ picows's side
    def on_ws_connected(self, transport: WSTransport) -> None:
        endpoint = self._endpoint
        self._tr = transport
        for handshake in (transport.request, transport.response):  # kept by picows for the socket's life; unused
            if handshake is not None:
                handshake.headers = None
        self._write = transport.underlying_transport.write
        self.open = True
        self._code = 1006  # until a close frame says otherwise: the socket just went away
        self._started = time.monotonic()
        endpoint.per_ip[self._ip] += 1
        endpoint.live.add(self)
        self.quiet_since = self._started
        endpoint.pinger.start()
        if self._user is None:  # token mode without an Authorization header: the first frame must be `auth`
            timeout = endpoint.settings.auth_timeout
            self._timer = asyncio.get_running_loop().call_later(timeout, self._auth_timed_out, timeout)
        else:
            self._start()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        endpoint = self._endpoint
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        endpoint.live.discard(self)
        endpoint.per_ip[self._ip] -= 1
        if not endpoint.per_ip[self._ip]:
            del endpoint.per_ip[self._ip]
        self._backlog = self._out = None
        self._bytes = 0
        if self._joined:
            self._run(self._end())

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self.flush()  # frames queued before the pause go before the backlog that came after it
        backlog = self._backlog
        if backlog and self._tr is not None and self._tr.is_close_frame_sent:  # nothing may follow a close frame
            backlog.clear()
        while backlog and self._writable and self.open:
            text = backlog.popleft()
            self._bytes -= len(text)
            self._write(_frame(text))  # may call pause_writing() again
        if not backlog:
            self._backlog = None
            self._bytes = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.active = True
        kind = frame.msg_type
        if kind is _TEXT and frame.fin and self._fragments is None:
            if frame.rsv1:
                return self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "no extension was negotiated")
            try:
                text = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                return self._protocol_error(WSCloseCode.INVALID_TEXT, "invalid UTF-8")
            return self._message(text)
        if kind is _CLOSE:
            return self._close_received(transport, frame)
        if kind is _PING or kind is _PONG:  # picows answers pings; a pong answers the Pinger's ping
            return None
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            return self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "no extension was negotiated")
        # A fragmented message (browsers do not send them, but a client may): gather its frames up to the limit.
        if kind is _CONTINUATION:
            if self._fragments is None:
                return self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
            self._fragments[1] += frame.get_payload_as_bytes()
        else:
            if self._fragments is not None:
                return self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "a new message inside a fragmented one")
            self._fragments = [kind, bytearray(frame.get_payload_as_bytes())]
        if len(self._fragments[1]) > self._endpoint.hard_limit:
            return self._protocol_error(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
        if not frame.fin:
            return None
        kind, payload = self._fragments
        self._fragments = None
        if kind is _BINARY:
            return self._message(None)
        try:
            return self._message(payload.decode())
        except UnicodeDecodeError:
            return self._protocol_error(WSCloseCode.INVALID_TEXT, "invalid UTF-8")

    # ------------------------------------------------------------------------------------------ the session
    def _message(self, text: str | None) -> None:
        if not self.open:
            return
        endpoint = self._endpoint
        if self._user is None:
            return self._first_frame(text)
        if not self._joined:
            return None
        self.received += 1
        settings = endpoint.settings
        if not self._bucket.take(time.monotonic()):  # type: ignore[union-attr]
            self._limited += 1
            if self._limited > settings.rate_burst:
                log.warning("%s: kept sending faster than %g frames/s; disconnecting", self.id, settings.rate_limit)
                self.close_now(CloseCode.RATE_LIMITED, "too many messages")
                endpoint._dropped("rate-limited")
                return None
            dropped = ProtocolError(ErrorCode.RATE_LIMITED, "too many frames; this one was dropped")
            return self._run(endpoint.hub.reject(self, dropped))
        self._limited = 0
        if text is None:
            return self._run(
                endpoint.hub.reject(
                    self, ProtocolError(ErrorCode.BAD_MESSAGE, "binary frames are not supported; send JSON text")
                )
            )
        limit = endpoint.max_size
        # len() counts characters; UTF-8 needs at most 4 bytes each, so most frames skip the encode.
        if len(text) * 4 > limit and len(text.encode()) > limit:
            return self._run(
                endpoint.hub.reject(
                    self, ProtocolError(ErrorCode.TOO_LARGE, f"frame is larger than the limit of {limit} bytes")
                )
            )
        if self._queue is None:  # nothing of this connection is waiting: the hub may do this frame at once
            try:
                rest = endpoint.hub.receive(self, text)
            except Exception:
                return self._failed()
            if rest is not None:
                self._run(rest)
        else:
            self._queue.append(endpoint.hub.handle(self, text))

    def _start(self) -> None:
        """The user is known: check the per-user limit, then join the hub."""
        endpoint = self._endpoint
        user = self._user
        assert user is not None
        self.id = user
        if endpoint.per_user[user] >= endpoint.settings.max_connections_per_user:
            message = f"{user} already has {endpoint.per_user[user]} connections open"
            log.info("refused %s from %s: %s", user, self._peer, message)
            self.send_now(messages.error(ProtocolError(ErrorCode.RATE_LIMITED, message)))
            self.close_now(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
            endpoint._dropped("too-many-connections")
            return
        endpoint.per_user[user] += 1
        settings = endpoint.settings
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst, time.monotonic())
        self._joined = True
        count = len(endpoint.hub) + 1
        log.info("%s connected from %s (%s, %d connections)", user, self._peer, self._device or self.cid, count)
        self._run(endpoint.hub.join(self, self._device))

    async def _end(self) -> None:
        endpoint = self._endpoint
        user = self._user
        try:
            await endpoint.hub.leave(self)
        finally:
            assert user is not None
            endpoint.per_user[user] -= 1
            if not endpoint.per_user[user]:
                del endpoint.per_user[user]
            log.info(
                "%s disconnected (code %s) after %.1fs, %d messages%s",
                self.id,
                self._code,
                time.monotonic() - self._started,
                self.received,
                f", {self.errors} errors" if self.errors else "",
            )

    def _first_frame(self, text: str | None) -> None:
        """`{"type":"auth","token":…}` proves who this is (token mode without an Authorization header)."""
        from ..auth.tokens import AuthError

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        verifier = self._endpoint.verifier
        assert verifier is not None
        try:
            user = verifier.verify(_auth_token(text))
        except (AuthError, ValueError) as exc:
            return self._unauthorized(str(exc))
        if self.id and self.id != user:
            return self._unauthorized(f"the token is for {user}, not {self.id}")
        self._user = user
        self._start()

    def _auth_timed_out(self, timeout: float) -> None:
        self._timer = None
        if self._user is None:
            self._unauthorized(f"no auth frame within {timeout:g}s")

    def _unauthorized(self, why: str) -> None:
        log.info("refused a connection (%s): %s", self.cid, why)
        self.send_now(messages.error(ProtocolError(ErrorCode.UNAUTHORIZED, why)))
        self.close_now(CloseCode.UNAUTHORIZED, why[:120])
        self._endpoint._dropped("unauthorized")

    def _close_received(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.open:  # the client closes: answer with its code, as RFC 6455 asks
            self.flush()  # after what its last frames made us send (say, `call-ended` for its hangup)
            self.open = False
            code = frame.get_close_code() if frame.payload_size >= 2 else None
            self._code = int(code) if code is not None else 1005
            transport.send_close(code if code is not None else WSCloseCode.OK)
        transport.disconnect()

    def _protocol_error(self, code: WSCloseCode, why: str) -> None:
        log.info("%s (%s): %s; closing with %d", self.id, self.cid, why, int(code))
        self._fragments = None
        self.close_now(int(code), why)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run the hub's coroutines of this connection one after the other, in the order its frames came.

        Started at once; one that suspends is finished by a task, and those that come meanwhile wait behind it.
        """
        if self._queue is not None:
            self._queue.append(coro)
            return
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception:
            return self._failed()
        self._queue = collections.deque()
        task = asyncio.ensure_future(self._finish(coro, waiting))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    async def _finish(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        queue = self._queue
        assert queue is not None
        try:
            await _Resume(coro, waiting)
            while queue:
                await queue.popleft()
        except Exception:
            self._failed()
            while queue:
                queue.popleft().close()
        finally:
            self._queue = None

    def _failed(self) -> None:
        log.exception("%s: unexpected error, closing the connection", self.id)
        self.close_now(CloseCode.INTERNAL_ERROR, "internal error")


def _auth_token(text: str | None) -> str:
    import json

    from ..auth.tokens import AuthError

    frame = json.loads(text or "null")
    if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(frame.get("token"), str):
        raise AuthError('the first frame must be {"type":"auth","token":"<token>"}')
    return frame["token"]


class PeercallHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that gives a `/ws` upgrade to picows (see the module's docstring).

    `signaling` is set on a subclass made by `protocol_for()`; other upgrades go to uvicorn's WebSocket
    protocol and so to Starlette, as before.
    """

    signaling: SignalingEndpoint | None = None
    _tail = b""

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, plus: keep the bytes that came after the request head (a client may send its first frame
        # before it sees the 101), which uvicorn's handover drops.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
                self._tail = data[offset:]
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def handle_websocket_upgrade(self) -> None:
        signaling = self.signaling
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            url = None
        if signaling is None or url is None or url.path != b"/ws":
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        scope = self.scope
        scope["path"], scope["query_string"] = "/ws", url.query or b""
        head = [scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in scope["headers"]:
            if name == b"connection":  # uvicorn found its `upgrade` token; picows wants no other ("keep-alive")
                value = b"Upgrade"
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        answer = signaling.check_upgrade(scope)
        settings = signaling.settings
        protocol = _WSProtocol(
            None,
            None,
            False,
            lambda request: answer,
            _PICOWS_LOG,
            True,  # disconnect on an exception in our callbacks (they catch their own; this is the last resort)
            None,  # no handshake timeout: uvicorn has read the whole request head already
            False,  # no auto-ping task per socket: the endpoint's Pinger pings them all
            settings.ping_interval,
            min(settings.ping_timeout, settings.ping_interval),
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # answer pings
            signaling.hard_limit,  # a larger frame closes the socket with 1009
            None,
            _READ_BUFFER,
        )
        protocol.outbox = signaling.outbox
        transport = self.transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        # uvloop picks its read callbacks (plain or buffered protocol) when reading starts: restart it.
        transport.pause_reading()
        transport.resume_reading()
        _feed(protocol, b"".join(head) + self._tail)
        self._tail = b""


def _feed(protocol: _WSProtocol, data: bytes) -> None:
    """Give picows bytes already read from its socket, through its buffered-protocol interface."""
    view = memoryview(data)
    while view and not protocol.transport.is_disconnected:
        buffer = protocol.get_buffer(-1)
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def protocol_for(signaling: SignalingEndpoint) -> type[PeercallHttpProtocol]:
    """The HTTP protocol class for uvicorn's `http=`: httptools, with `/ws` on picows."""
    return type("PeercallHttpProtocol", (PeercallHttpProtocol,), {"signaling": signaling})


def refusal(status: int, code: str, message: str) -> WSUpgradeResponseWithListener:
    import json

    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    response = WSUpgradeResponse.create_error_response(status, body, {"Content-Type": "application/json"})
    return WSUpgradeResponseWithListener(response, None)
