"""`/ws` on picows, on the same port as the HTTP routes.

Why: a relayed frame cost ~30 µs of CPU under uvicorn's own WebSocket protocol (pure-Python framing, an ASGI
event and a flow-control round per frame), of which peercall's own work is 4-7 µs. picows (PyPI `picows`, Cython,
maintained, MIT) parses and builds frames in C and calls us back synchronously with each one, without a task or a
queue per frame; measured with bench/run.py it is what lets the server keep up with the PeerJS server
(docs/benchmarks.md has the numbers of every stack that was tried).

How: every accepted socket's first request head is read once, by `FrontProtocol` (server/front.py). An upgrade
that `is_signaling_path` (server/session.py) takes for `/ws` is admitted by the session layer
(`PicowsTransport.upgrade`) and its socket handed to picows's protocol (`to_picows`), which is fed only the request
line and the three headers that picows checks (parsing all of the head again cost CPU on every connect); everything
else (HTTP routes, static files, other upgrades, which the ASGI app refuses) goes to `PeercallHttpProtocol`,
uvicorn's httptools protocol behind the gate, and so to Starlette. A kept-alive HTTP connection's later requests
stay there (an upgrade to `/ws` among them goes to picows the same way).
picows checks the key and writes the refusal (an HTTP error with a JSON body) or the 101 (which, when nothing came
after the request head, leaves with the `welcome` frame in one write: `_Upgrade`), frames and unframes.

This is a transport: the rules of a connection (admission, rate, size, binary, first-frame auth, its log lines and
counters) are its `Session`'s (server/session.py), which `FastConnection` asks at each step and obeys.

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
import os
import time
from collections.abc import Callable, Coroutine, Generator, Mapping
from http import HTTPStatus
from typing import Any

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
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows's stubs
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..protocol.codes import CloseCode
from .gate import HEAD_LIMIT, Gate
from .session import CLOSE_GRACE, CLOSE_TIMEOUT, Close, Handshake, Refused, Session, Sessions, is_signaling_path

log = logging.getLogger("peercall.ws")


class _PicowsLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows's log: a broken frame from a client (too large, bad opcode) is the client's fault, not an error of
    the server, so it is logged at INFO. Being a LoggerAdapter (not a Logger) also keeps picows from making a
    child logger per connection, which would cost memory on every idle socket."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level == logging.ERROR and isinstance(msg, str) and msg.startswith(("WS parser error", "on_ws_frame")):
            level = logging.INFO
        super().log(level, msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """picows logs two lines at INFO for every socket (accepted, disconnected), which its logger's level
        (WARNING) drops: asked first, so that they cost one look-up and not three calls."""
        if self.logger.isEnabledFor(logging.INFO):
            super().log(logging.INFO, msg, *args, **kwargs)


_PICOWS_LOG = _PicowsLog(logging.getLogger("peercall.ws.picows"), None)
logging.getLogger("peercall.ws.picows").setLevel(logging.WARNING)  # not one line per accepted socket

_TEXT, _BINARY, _CONTINUATION = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
_CLOSE, _PING, _PONG = WSMsgType.CLOSE, WSMsgType.PING, WSMsgType.PONG
_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
"""The close codes below 3000 that a client may send (RFC 6455 7.4.1, and IANA's 1012-1014)."""
_RESERVED_BITS = "reserved bits set; no extension was negotiated"
_INTERNAL_ERROR: int = CloseCode.INTERNAL_ERROR  # read once: an enum's member costs ~0.2 µs on Python 3.11
_READ_BUFFER = 2048  # picows's initial read buffer per socket (it grows for larger frames); its minimum
_tasks: set[asyncio.Future[None]] = set()


class _NoMessage:
    """What a frame that completes no message gives: a control frame, a fragment, or one that closed the socket."""


_NO_MESSAGE = _NoMessage()


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
        payload = os.urandom(4)  # one per sweep, not a getrandom(2) per ping: only a pong that echoes it counts
        for conn in list(self.live):
            if conn.active:  # something arrived since the last sweep
                conn.active = False
                conn.quiet_since, conn.pinged_at = now, None
            elif conn.pinged_at is None:
                if now - conn.quiet_since >= interval:
                    conn.ping(payload)
                    conn.pinged_at = now
            elif now - conn.pinged_at >= timeout:
                conn.lost(timeout)
        if self.live:
            self.start()


class _WSProtocol(WSProtocol):  # type: ignore[misc]  # WSProtocol is untyped (not in picows's stubs)
    """picows's protocol, plus: the frames that one read made the hub send are written when it is handled; and
    nothing after a client's close frame is read.

    The second is RFC 6455 5.5.1 (after its close frame a client sends nothing more, and what it sends anyway is
    ignored), and picows cannot do it: it parses the frame after the one it hands over before handing that one over
    (picows.pyx, `_process_new_data`: "Parsing next frame may cause WSProtocolError. In such case we do not deliver
    current frame to user"), so that a second close frame in the same read (Autobahn 7.1.2), or any broken frame
    after a close, would get its 1002 before the first close is answered. So `buffer_updated` walks the frame headers
    of each read (a few operations per frame: most reads hold one) and gives picows only the bytes up to the end of
    the first close frame.

    The same look-ahead would let a frame that picows refuses as it parses it (a reserved opcode, a fragmented or long
    control frame, no mask, a malformed or huge length; a close frame's code and UTF-8 reason) fail the connection
    before the frames ahead of it in the same read are handed over, though one of those may be the first error (a new
    message inside a fragmented one: 1002; a text message that is not UTF-8: 1007), and RFC 6455 fails a connection
    on the first. So such a frame, when frames come before it in the read, is given to picows in a call of its own
    after them (`_split`): rare (a close frame, a client's broken frames), and no cost to the others.
    """

    __slots__ = ("_head", "_skip", "_stop", "_view", "outbox")
    _head: bytes
    _skip: int
    _stop: int
    _view: memoryview | None
    outbox: Outbox

    def get_buffer(self, size_hint: int) -> memoryview:
        view: memoryview = WSProtocol.get_buffer(self, size_hint)
        self._view = view
        return view

    def data_received(self, data: bytes) -> None:
        """Never called (uvloop reads into `get_buffer()`), but it must exist: uvloop's `set_protocol()` keeps the
        previous protocol's `data_received` unless the new protocol has one, and that bound method would keep
        uvicorn's whole HTTP protocol object (parser, request scope, headers: ~5 KB) alive for the socket's life."""
        _feed(self, data)

    def buffer_updated(self, nbytes: int) -> None:
        view, self._view = self._view, None  # not kept between reads: ~0.3 KB per idle connection
        if self._stop >= 0:  # a close frame came: take only the rest of it
            nbytes = min(nbytes, self._stop)
            self._stop -= nbytes
            if not nbytes:
                return
        else:
            assert view is not None
            count = self._scan(view, nbytes)
            if count < nbytes and self._stop < 0:  # a frame picows may refuse, after others: they go first
                return self._split(view, count, nbytes)
            nbytes = count
        outbox = self.outbox
        outbox.reading = True
        try:
            WSProtocol.buffer_updated(self, nbytes)
        finally:
            outbox.reading = False
            outbox.flush()

    def _scan(self, data: memoryview, n: int) -> int:
        """How many of the `n` bytes just read picows is to parse: all, those up to the end of a close frame, or
        those before a frame that picows may refuse as it parses it, when something comes before that frame (then
        `_stop` stays -1, and the frame is where the next scan starts: `_split`).

        `_skip` is how much of the frame being read is still to come; `_head` the start of a header that the last
        read cut short."""
        pos = self._skip
        while pos < n:
            start = pos
            head = self._head + bytes(data[pos : pos + 14])
            flag = size = head[1] & 0x7F if len(head) > 1 else 0
            need = 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if len(head) > 1 and head[1] & 0x80 else 0)
            if len(head) < need:  # the header goes on in the next read
                self._head, self._skip = head, 0
                return n
            pos += need - len(self._head)
            self._head = b""
            if size >= 126:
                size = int.from_bytes(head[2:4] if size == 126 else head[2:10], "big")
            op = head[0] & 0x0F
            # what picows refuses in `_get_next_frame_impl` (picows.pyx), or may: an opcode that is reserved, a close
            # (its code, its reason's UTF-8), a control frame without FIN or over 125 bytes, no mask, a 16-bit
            # length under 126, a 64-bit one (huge, or under 65536, or over the hard limit: 1009)
            if (op > 2 or flag == 127 or head[1] < 0x80 or (flag == 126 and size < 126)) and start > 0:
                if op < 9 or op > 10 or head[0] < 0x80 or flag > 125 or head[1] < 0x80:  # not a well-formed ping/pong
                    self._head, self._skip = b"", 0
                    return start
            pos += size
            if op == 8:  # a close frame: nothing after it is read
                self._stop = max(0, pos - n)
                return min(pos, n)
        self._skip = pos - n
        return n

    def _split(self, data: memoryview, count: int, n: int) -> None:
        """Give picows the first `count` of the `n` bytes read, then the rest, which starts with a frame it may refuse
        (`_scan`): unless the frames before have failed the connection, or it was closing already; then the rest is
        not read (a second close frame must not follow ours), and the socket is closed (RFC 6455 7.1.7)."""
        rest = bytes(data[count:n])  # picows moves what it has not parsed to the start of its buffer: copied first
        outbox = self.outbox
        outbox.reading = True
        try:
            WSProtocol.buffer_updated(self, count)
            tr = self.transport
            if tr.is_close_frame_sent:
                if not tr.is_disconnected:
                    tr.disconnect()
            else:
                _feed(self, rest)
        finally:
            outbox.reading = False
            outbox.flush()


class _Socket:
    """The socket as picows's `connection_made` sees it: its descriptor, and options that cost no syscall.

    picows sets TCP_NODELAY (which uvloop, like asyncio, has set on every TCP socket already) and TCP_QUICKACK (a
    hint that Linux drops again after a few segments; Node's server, PeerJS's, does not set it), then reads four
    options for a log line that is off. Through uvloop's socket object each of those six calls built a
    `socket.socket` and made a syscall: ~7% of a connect's CPU (docs/benchmarks.md, "Scale and endurance")."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    # picows calls setsockopt(level, option, 1) and getsockopt(level, option) and uses no answer but in that log
    # line (an int). A builtin is not bound as a method, and costs a fraction of a Python function's call.
    setsockopt = getsockopt = max


class _Transport:
    """The socket's transport as picows holds it (`WSTransport.underlying_transport`): uvloop's own, whose `write`
    and `get_write_buffer_size` it is given as they are (picows and `FastConnection` call them on every frame),
    while the rest go through here. Only `get_extra_info` differs, and only while picows's `connection_made`
    runs: it is answered a `_Socket`, and no addresses (they go to that log line only)."""

    __slots__ = ("get_extra_info", "get_write_buffer_size", "transport", "write")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.write = transport.write
        self.get_write_buffer_size = transport.get_write_buffer_size
        # until `taken()`: a dict's own `get` (picows asks five times, and a Python method costs a call each)
        early = {"socket": _Socket(transport.get_extra_info("socket").fileno())}
        early["ssl_object"] = transport.get_extra_info("ssl_object")
        self.get_extra_info: Callable[..., Any] = early.get

    def taken(self) -> None:
        """picows has taken the socket: from now on every question goes to the transport."""
        self.get_extra_info = self.transport.get_extra_info

    def writelines(self, data: Any) -> None:
        self.transport.writelines(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()


_HEADERS = [bytes((0x81, n)) for n in range(126)]


def _frame(text: str | bytes) -> bytes:
    """A server's (unmasked, final) text frame: picows builds the same, but one send at a time. Bytes are a frame
    already (a ping or a pong)."""
    if type(text) is bytes:
        return text
    data = text.encode()  # type: ignore[union-attr]
    n = len(data)
    if n < 126:
        return _HEADERS[n] + data
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + data
    return b"\x81\x7f" + n.to_bytes(8, "big") + data


class PicowsTransport:
    """The picows transport of a node: it admits upgrades through the session layer (server/session.py) and keeps
    what its connections share: the `Outbox`, and the `Pinger` with the set of open connections it sweeps."""

    def __init__(self, sessions: Sessions) -> None:
        settings = sessions.settings
        self.sessions = sessions
        self.hard_limit = sessions.hard_limit
        # What picows's auto-ping would use (it is off): read once, as a pydantic model's fields cost ~3x a plain
        # attribute, and an enum member ~as much again on Python 3.11
        self.auto_ping = (
            settings.ping_interval,
            min(settings.ping_timeout, settings.ping_interval),
            WSAutoPingStrategy.PING_WHEN_IDLE,
        )
        self.live: set[FastConnection] = set()
        self.outbox = Outbox()
        self.pinger = Pinger(self.live, settings.ping_interval, settings.ping_timeout)
        self._trusted = _trusted_proxies(settings.forwarded_allow_ips)

    def upgrade(
        self, scope: Mapping[str, Any], version: bytes | None
    ) -> FastConnection | WSUpgradeResponseWithListener:
        """The listener of an upgrade to `/ws`, or the HTTP refusal to send (picows writes either). `version`: the
        request's Sec-WebSocket-Version (None: it has none, or more than one)."""
        peer = _peer(scope)
        headers = scope.get("headers", [])
        if self._trusted is not None and scope.get("client") and scope["client"][0] in self._trusted:
            # What uvicorn's proxy-headers middleware does for the ASGI stack, which this socket never reaches.
            forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
            if forwarded:
                host, port = self._trusted.get_trusted_client_address(", ".join(forwarded))
                if host:
                    peer = f"{host}:{port}"
        if version != b"13":  # RFC 6455 4.4 (picows would also take the drafts' 7 and 8)
            response = refusal(Refused(426, 1002, "bad-version", "only WebSocket version 13 is supported"))
            response.response.headers["Sec-WebSocket-Version"] = "13"
            return response
        try:
            session = self.sessions.admit(Handshake(scope.get("query_string", b""), headers, peer))
        except Refused as refused:
            return refusal(refused)
        return FastConnection(self, session)


class FastConnection(WSListener):
    """One `/ws` socket: picows's listener, and the connection object the hub sees. Its rules are its `session`'s.

    Sending never waits: a frame is framed at once and written when the event loop's turn ends (`Outbox`),
    together with the others sent to this connection in that turn. While the transport is above its high-water
    mark (the reader lags) frames wait in a backlog that is written when it drains, and a backlog above
    `send_buffer` bytes closes the connection (4420).
    """

    __slots__ = (
        "_backlog",
        "_code",
        "_deaf",
        "_fragments",
        "_handshake",
        "_hub",
        "_out",
        "_outbox",
        "_paused",
        "_picows",
        "_queue",
        "_timer",
        "_tr",
        "_writable",
        "_write",
        "active",
        "backlog_bytes",
        "cid",
        "errors",
        "id",
        "open",
        "ping_payload",
        "pinged_at",
        "quiet_since",
        "session",
    )

    def __init__(self, picows: PicowsTransport, session: Session) -> None:
        self._picows = picows
        self._hub = picows.sessions.hub
        self.session = session
        self.id = session.id
        self.cid = session.cid
        self._tr: WSTransport | None = None
        self._handshake: bytes | None = None  # the 101, when it leaves with the first frames (`_Upgrade`)
        self._out: list[str | bytes] | None = None  # frames written when the loop's turn ends (Outbox)
        self._outbox: Outbox = picows.outbox
        self._backlog: collections.deque[bytes] | None = None  # frames, framed
        self.backlog_bytes = 0
        self._writable = True
        self._queue: collections.deque[Coroutine[Any, Any, Any]] | None = None  # not None while a coroutine runs
        self._fragments: list[Any] | None = None  # [kind, payload, the verdict that dropped a fragment or None]
        self._deaf = False  # closed for flooding: what it sends is no longer read
        self._paused = False  # not read while its token is checked (its identity provider's keys being fetched)
        self._timer: asyncio.TimerHandle | None = None
        self._code = _INTERNAL_ERROR
        self.open = False
        self.errors = 0
        self.active = False  # a frame came since the Pinger last looked
        self.quiet_since = 0.0
        self.pinged_at: float | None = None
        self.ping_payload: bytes | None = None  # of the ping in flight: only a pong that echoes it is a sign of life

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
        return self._hold(_frame(text))

    def _send_control(self, data: bytes) -> None:
        """A ping or a pong (framed): sent like a message, after what is queued, and counted like one."""
        if self._writable and self._backlog is None:
            out = self._out
            if out is None:
                self._out = [data]
                self._outbox.add(self)
            else:
                out.append(data)
        else:
            self._hold(data)

    def _hold(self, data: bytes) -> bool:
        """Keep a frame while the reader lags. Every byte waiting for this connection counts, in bytes: this backlog
        and the transport's buffer. Past `send_buffer` the backlog is dropped and the connection closed (4420)."""
        if self._backlog is None:
            self._backlog = collections.deque()
        self._backlog.append(data)
        self.backlog_bytes += len(data)
        waiting = self.backlog_bytes + self._tr.underlying_transport.get_write_buffer_size()  # type: ignore[union-attr]
        if waiting > self.session.send_buffer:
            self._backlog, self.backlog_bytes = None, 0
            self._close_with(self.session.overflowed(waiting))
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
                if len(out) == 1 and type(out[0]) is str:
                    tr.send(_TEXT, out[0])  # type: ignore[union-attr]  # picows frames it straight into its buffer
                else:
                    self._write(b"".join(map(_frame, out)))

    @property
    def pending(self) -> int:
        """Bytes waiting to be sent: this turn's frames, our backlog and the transport's buffer."""
        tr = self._tr
        waiting = self.backlog_bytes + (sum(len(_frame(x)) for x in self._out) if self._out else 0)
        return waiting + (tr.underlying_transport.get_write_buffer_size() if tr is not None and self.open else 0)

    async def close(self, code: int, reason: str) -> None:
        self.close_now(code, reason)

    def close_now(self, code: int, reason: str) -> None:
        """Start the closing handshake without waiting: the close frame follows what is queued, and the socket is
        dropped if the client has not read it within CLOSE_GRACE, or not answered it within CLOSE_TIMEOUT."""
        if not self.open:
            return
        self.flush()  # what is queued (say, the error that explains) goes first
        self.open = False
        self._code = code
        tr = self._tr
        assert tr is not None
        if self._backlog and not tr.is_close_frame_sent:
            self._write(b"".join(self._backlog))
        self._backlog = None
        self.backlog_bytes = 0
        if not tr.is_close_frame_sent:  # else picows closed it already (a ping timeout, a protocol error)
            tr.send_close(code, reason.encode()[:123])  # type: ignore[arg-type]  # an int is what picows takes
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_GRACE, self._close_stalled)

    def _close_stalled(self) -> None:
        """CLOSE_GRACE after our close frame: a socket that could not even write it (the client reads nothing) is
        aborted, so that its session ends now; any other gets the rest of CLOSE_TIMEOUT to answer it."""
        tr = self._tr
        assert tr is not None
        if self._deaf or tr.underlying_transport.get_write_buffer_size():
            self._timer = None
            tr.disconnect(False)
        else:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT - CLOSE_GRACE, tr.disconnect)

    def ping(self, payload: bytes) -> None:
        """Send a ping whose pong is to echo `payload` (4 bytes)."""
        if self.open:
            self.ping_payload = payload
            self._send_control(b"\x89\x04" + payload)

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
        picows, session = self._picows, self.session
        self._tr = transport
        for handshake in (transport.request, transport.response):  # kept by picows for the socket's life; unused
            if handshake is not None:
                handshake.headers = None  # type: ignore[assignment]
        request = transport.request
        if request is not None:  # and its request line, parsed into three bytes objects (~0.1 KB a socket)
            request.method = request.path = request.version = None  # type: ignore[assignment]
        self._write = transport.underlying_transport.write
        head = self._handshake
        if head is not None:  # the 101 goes first, in the same write as the welcome (`_Upgrade`)
            self._handshake = None
            self._out = [head]
            self._outbox.add(self)
        self.open = True
        self._code = 1006  # until a close frame says otherwise: the socket just went away
        session.opened(self)
        picows.live.add(self)
        self.quiet_since = time.monotonic()
        picows.pinger.start()
        if session.deferred is not None:  # the header's token, whose key is to be fetched
            self._before_join(None)
        elif session.awaiting_auth:
            self._timer = asyncio.get_running_loop().call_later(session.auth_timeout, self._auth_timed_out)
        else:
            self._start()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._picows.live.discard(self)
        self._backlog = self._out = None
        self.backlog_bytes = 0
        if self.session.joined:
            self._run(self._end())
        else:
            self.session.ended(self._code, self.errors)

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self.flush()  # frames queued before the pause go before the backlog that came after it
        backlog = self._backlog
        if backlog and self._tr is not None and self._tr.is_close_frame_sent:  # nothing may follow a close frame
            backlog.clear()
        while backlog and self._writable and self.open:
            data = backlog.popleft()
            self.backlog_bytes -= len(data)
            self._write(data)  # may call pause_writing() again
        if not backlog:
            self._backlog = None
            self.backlog_bytes = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        text: str
        if kind is _TEXT and frame.fin and self._fragments is None:  # the common case: a whole text message
            self.active = True
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                return self._protocol_error(WSCloseCode.PROTOCOL_ERROR, _RESERVED_BITS)
            try:
                text = frame.get_payload_as_utf8_text()
            except UnicodeDecodeError:
                return self._protocol_error(WSCloseCode.INVALID_TEXT, "invalid UTF-8")
        else:
            message = self._other_frame(transport, frame, kind)
            if isinstance(message, _NoMessage):
                return None
            if isinstance(message, int):
                return self._binary(message)
            text = message
        # A message (`text` None: a binary one). Written out here rather than in a method of its own: on the hot path
        # (a relayed offer, answer or candidate) the session's `inbound` is the only call before the hub's.
        if not self.open:
            return None
        session = self.session
        if not session.joined:
            return self._before_join(text)
        verdict = session.inbound(text)
        if verdict is not None:
            if isinstance(verdict, Close):
                return self._flooding(verdict) if verdict.code == CloseCode.RATE_LIMITED else self._close_with(verdict)
            return self._run(self._hub.reject(self, verdict))
        if self._queue is None:  # nothing of this connection is waiting: the hub may do this frame at once
            try:
                rest = self._hub.receive(self, text)
            except Exception:
                return self._failed()
            if rest is not None:
                self._run(rest)
        else:
            self._queue.append(self._hub.handle(self, text))
        return None

    def _other_frame(self, transport: WSTransport, frame: WSFrame, kind: WSMsgType) -> str | _NoMessage | int:
        """Any frame but a whole text message: a control frame, or part of a fragmented message (browsers send
        none, but a client may), gathered up to the hard limit. The message once it is whole (an int: a binary
        one, of so many bytes).

        Every frame costs a token of the session's rate limit (`Session.control`; the last frame of a message pays
        in `Session.inbound`), and a pong is sent the way messages are: so that pings, pongs and fragments neither
        flood nor fill memory for free."""
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._protocol_error(WSCloseCode.PROTOCOL_ERROR, _RESERVED_BITS)
            if kind is _CLOSE:  # the client has closed (nothing after it is read): no answer to ours will come
                transport.disconnect()
            return _NO_MESSAGE
        if kind is _CLOSE:
            self._close_received(transport, frame)
            return _NO_MESSAGE
        if not self.open:  # closing: nothing but the client's close matters now
            return _NO_MESSAGE
        fragments = self._fragments
        verdict = None if kind is not _PING and kind is not _PONG and frame.fin else self.session.control()
        if isinstance(verdict, Close):
            self._flooding(verdict)
            return _NO_MESSAGE
        if kind is _PING:
            if verdict is None:
                self.active = True
                payload = frame.get_payload_as_bytes()
                self._send_control(bytes((0x8A, len(payload))) + payload)
            return _NO_MESSAGE
        if kind is _PONG:  # a sign of life only if it answers the ping in flight: an unsolicited one proves nothing
            if self.ping_payload is not None and frame.get_payload_as_bytes() == self.ping_payload:
                self.active, self.ping_payload = True, None
            return _NO_MESSAGE
        self.active = True
        if kind is _CONTINUATION:
            if fragments is None:
                self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
                return _NO_MESSAGE
            if fragments[2] is None:
                fragments[1] += frame.get_payload_as_bytes()
        else:
            if fragments is not None:
                self._protocol_error(WSCloseCode.PROTOCOL_ERROR, "a new message inside a fragmented one")
                return _NO_MESSAGE
            self._fragments = fragments = [kind, bytearray(frame.get_payload_as_bytes()), None]
        if verdict is not None and fragments[2] is None:  # over the rate: the message is dropped, kept no longer
            fragments[1], fragments[2] = bytearray(), verdict
        if len(fragments[1]) > self._picows.sessions.hard_limit:
            self._protocol_error(WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            return _NO_MESSAGE
        if not frame.fin:
            return _NO_MESSAGE
        kind, payload, dropped = fragments
        self._fragments = None
        if dropped is not None:
            if self.session.joined:
                self._run(self._hub.reject(self, dropped))
            return _NO_MESSAGE
        if kind is _BINARY:
            return len(payload)
        try:
            return str(payload.decode())
        except UnicodeDecodeError:
            self._protocol_error(WSCloseCode.INVALID_TEXT, "invalid UTF-8")
            return _NO_MESSAGE

    def _binary(self, size: int) -> None:
        """A binary message (of `size` bytes): refused (`bad-message`), after it paid its cost in bytes."""
        if not self.open:
            return None
        session = self.session
        if not session.joined:
            return self._before_join(None)
        verdict = session.inbound(None, size)
        if isinstance(verdict, Close):
            return self._flooding(verdict) if verdict.code == CloseCode.RATE_LIMITED else self._close_with(verdict)
        if verdict is not None:
            self._run(self._hub.reject(self, verdict))
        return None

    # ------------------------------------------------------------------------------------------ the session
    def _before_join(self, text: str | None) -> None:
        """A frame before the hub knows this connection: the `auth` frame, or nothing is done with it.

        Checking the token completes at once, unless its key must be fetched first: then the frames that come
        meanwhile wait behind it, in order, and the socket is not read until it is done."""
        session = self.session
        if self._queue is not None:  # the token is being checked: this frame waits for the outcome
            self._queue.append(self._after_auth(text))
            tr = self._tr
            if not self._paused and tr is not None and not tr.is_disconnected:
                self._paused = True
                tr.underlying_transport.pause_reading()
            return None
        if not session.awaiting_auth:
            return None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._run(self._authenticate(text))
        return None

    async def _authenticate(self, text: str | None) -> None:
        session = self.session
        refusal = await session.authenticate(text)
        tr = self._tr
        if self._paused and tr is not None and not tr.is_disconnected:
            self._paused = False
            tr.underlying_transport.resume_reading()
        if not self.open:  # gone while its key was fetched (its end is counted already)
            return
        if refusal is not None:
            return self._close_with(refusal)
        refusal = session.start()
        if refusal is not None:
            return self._close_with(refusal)
        await self._hub.join(self, session.device, token_expires_at=session.expires_at, display_name=session.name)

    async def _after_auth(self, text: str | None) -> None:
        """A frame that came while the token was checked, now that it has been: as any frame of a joined one."""
        session = self.session
        if not self.open or not session.joined:
            return
        verdict = session.inbound(text)
        if verdict is None:
            await self._hub.handle(self, text)  # type: ignore[arg-type]  # inbound() answered a binary one
        elif isinstance(verdict, Close):
            self._flooding(verdict) if verdict.code == CloseCode.RATE_LIMITED else self._close_with(verdict)
        else:
            await self._hub.reject(self, verdict)

    def _start(self) -> None:
        """The user is known: join the hub, unless the session refuses (too many connections of this user)."""
        refusal = self.session.start()
        if refusal is not None:
            return self._close_with(refusal)
        self._run(
            self._hub.join(
                self, self.session.device, token_expires_at=self.session.expires_at, display_name=self.session.name
            )
        )
        return None

    def _auth_timed_out(self) -> None:
        self._timer = None
        if self.open and self.session.awaiting_auth:
            self._close_with(self.session.auth_timed_out())

    async def _end(self) -> None:
        try:
            await self._hub.leave(self)
        finally:
            self.session.ended(self._code, self.errors)

    def _close_with(self, close: Close) -> None:
        if close.frame is not None:
            self.send_now(close.frame)
        self.close_now(close.code, close.reason)

    def _close_received(self, transport: WSTransport, frame: WSFrame) -> None:
        # picows has refused a 1-byte payload and a reason that is not UTF-8, and codes under 3000 that it does not
        # know; not 0, 1006 (which no endpoint may send) nor 5000 and over (RFC 6455 7.4)
        code = int(frame.get_close_code()) if frame.payload_size >= 2 else None  # type: ignore[call-overload]
        if code is not None and not (code in _CLOSE_CODES or 3000 <= code < 5000):
            if self.open:  # the client has closed (nothing after it is read): no answer to our close will come
                self._protocol_error(WSCloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
                transport.disconnect()
                return None
            code = None  # the answer to our close, however bad: the closing handshake is over
        if self.open:  # the client closes: answer with its code, as RFC 6455 asks
            self.flush()  # after what its last frames made us send (say, `call-ended` for its hangup)
            self.open = False
            self._code = code if code is not None else 1005
            transport.send_close(code if code is not None else WSCloseCode.OK)
            if self._timer is not None:  # an auth timer: nothing is to come now
                self._timer.cancel()
                self._timer = None
        transport.disconnect()
        if self._timer is None and transport.underlying_transport.get_write_buffer_size():
            # a graceful close waits for the buffer to drain: a client that stopped reading gets CLOSE_GRACE
            self._timer = asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.disconnect, False)

    def _flooding(self, close: Close) -> None:
        """Close a connection that keeps flooding, and read it no more: its frames would cost CPU until it answers
        the close (which a flooder need not do); the socket is dropped once the close frame had CLOSE_GRACE."""
        self._close_with(close)
        self._deaf = True
        tr = self._tr
        if tr is not None and not tr.is_disconnected:
            tr.underlying_transport.pause_reading()

    def _protocol_error(self, code: WSCloseCode, why: str) -> None:
        number: int = code.value
        log.info("%s (%s): %s; closing with %d", self.id, self.cid, why, number)
        self._fragments = None
        self.close_now(number, why)

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
        """Called inside an `except`: the session logs the traceback, and the connection closes with 1011."""
        self._close_with(self.session.failed())


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing a request whose head was refused (the answer is written)."""


class _Ask:
    """`PeercallHttpProtocol.entered` when the gate is still to be asked (the socket came straight from uvicorn)."""


_ASK = _Ask()


class PeercallHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that gives a `/ws` upgrade to picows (see the module's docstring), and asks
    the node's `Gate` (server/gate.py) about every connection before serving it: its address's caps, the size of
    its request heads and the time they take. Both transports run under it (with per-message deflate, `picows` is
    None and every upgrade goes to uvicorn's WebSocket protocol).

    `picows` and `gate` are set on a subclass made by `protocol_for()`; other upgrades go to uvicorn's WebSocket
    protocol and so to the ASGI app, which refuses them.
    """

    picows: PicowsTransport | None = None
    gate: Gate | None = None
    _tail = b""
    _address: str | None = None  # what the gate counts this connection as, while it does
    _refusal: bytes | None = None  # the gate refused it: the answer to its first bytes
    _head: int | None = None  # bytes of the request head read so far, while one is being read
    _head_timer: asyncio.TimerHandle | None = None  # the head's, then (`_body`) the body's
    _body = False  # a request's head is whole and its body not yet
    entered: str | _Ask | None = _ASK
    """What the gate counts this connection as, when `FrontProtocol` (server/front.py) asked it already."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        gate = self.gate
        if gate is None:
            return
        entered = self.entered
        verdict = gate.enter(self.client[0] if self.client else None) if isinstance(entered, _Ask) else entered
        if isinstance(verdict, bytes):
            self._refusal = verdict
        else:
            self._address = verdict
        self._head = 0
        self._head_timer = self.loop.call_later(gate.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._let_go()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.gate is not None:  # a new request (the first, or the next on a kept-alive connection)
            self._head = 0
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.gate.head_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        if self.gate is not None:
            self._head = None
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            # what the head took, to within its spaces (it may have come in one read with more after it)
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 16
            if size > HEAD_LIMIT:
                self._refuse_head(self.gate.too_large, f"a request head of {size} bytes")
                raise _HeadRefused
            # Its body has as long again (timed from the end of this read: `data_received`). Nothing bounded it, so
            # a body sent a byte every few seconds held the connection and its handler for hours.
            self._body = not self.parser.should_upgrade()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._body:
            self._body = False
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
        super().on_message_complete()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        gate = self.gate
        if gate is None or self.transport.is_closing():
            return
        if self._refusal is not None:
            self._end(self._refusal)
        elif self._head is not None:
            self._refuse_head(gate.timed_out, f"no whole request head within {gate.head_timeout:g}s")
        elif self._body:
            self._body = False
            why = f"no whole request body within {gate.head_timeout:g}s of its head"
            if self.cycle is not None and self.cycle.response_started:  # answered already: only the close is left
                gate.refused_head(self._address, self.client[0] if self.client else None, why)
                self.transport.close()
            else:  # the handler reading it sees the client go (jsonapi.json_object)
                self._refuse_head(gate.body_timed_out, why)

    def _refuse_head(self, answer: bytes, why: str) -> None:
        assert self.gate is not None
        self.gate.refused_head(self._address, self.client[0] if self.client else None, why)
        self._end(answer)

    def _end(self, answer: bytes) -> None:
        self._head = None
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    def _let_go(self) -> None:
        """This connection leaves the gate's count: it closed, or it is now a WebSocket (the session layer's)."""
        self._head = None
        self._body = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._address is not None and self.gate is not None:
            self.gate.leave(self._address)
            self._address = None

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, plus: the gate's refusal and bounds, and keep the bytes that came after the request head
        # (a client may send its first frame before it sees the 101), which uvicorn's handover drops.
        if self._refusal is not None:
            self._end(self._refusal)
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport.is_closing():  # we refused its head, and answered
                return
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
            return
        if self._head is not None and not self.transport.is_closing():  # a head still incomplete after this read
            self._head += len(data)
            if self._head > HEAD_LIMIT:
                assert self.gate is not None
                self._refuse_head(self.gate.too_large, f"a request head over {HEAD_LIMIT} bytes")
        elif self._body and self._head_timer is None and not self.transport.is_closing():
            # a body still incomplete after the read that completed its head (most come whole with it: no timer)
            assert self.gate is not None
            self._head_timer = self.loop.call_later(self.gate.head_timeout, self._head_timed_out)

    def handle_websocket_upgrade(self) -> None:
        self._let_go()
        picows = self.picows
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            url = None
        if picows is None or url is None or not is_signaling_path(self.url):
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        scope = self.scope
        scope["path"], scope["query_string"] = "/ws", url.query or b""
        to_picows(picows, self.transport, scope, self._tail)
        self._tail = b""


class _Upgrade(WSUpgradeResponse):
    """The 101 of an admitted upgrade, which picows does not write itself: its bytes go to the connection, whose
    first write (at the end of the read that brought the request) holds them and the `welcome` frame, where picows
    would write the 101 alone and the welcome with a second send(2).

    Only for a request with nothing after its head: picows parses frames that came with the request in the same
    call, before that write, and the close it may send on a broken one must not precede the 101. Its headers are
    picows's `create_101_response()`'s, written the same way; a plain dict, as nothing reads them but `to_bytes()`.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: FastConnection) -> None:
        self.conn: FastConnection | None = conn
        self.version = b"HTTP/1.1"
        self.status = _SWITCHING_PROTOCOLS
        self.headers = {"Connection": "upgrade", "Upgrade": "websocket"}  # type: ignore[assignment]
        self.body = None

    def to_bytes(self) -> bytearray:
        """What picows writes: nothing (an empty write is no syscall); the connection writes the 101."""
        accept = self.headers["Sec-WebSocket-Accept"]  # set by picows: the request was valid
        # Let go of the connection: picows keeps this response on its transport, which the connection holds, and
        # that cycle would wait for the cyclic GC (see Session.ended).
        conn, self.conn = self.conn, None
        if conn is not None:
            conn._handshake = _SWITCHING + accept.encode() + b"\r\n\r\n"
        return bytearray()


_SWITCHING_PROTOCOLS = HTTPStatus.SWITCHING_PROTOCOLS  # read once: an enum member costs ~0.2 µs on Python 3.11
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "


_PICOWS_CHECKS = frozenset((b"upgrade", b"sec-websocket-version", b"sec-websocket-key"))


def to_picows(picows: PicowsTransport, transport: asyncio.Transport, scope: Mapping[str, Any], tail: bytes) -> None:
    """Admit an upgrade to `/ws` through the session layer and hand its socket to picows's protocol, which writes
    the refusal or the 101 (or has it written with the first frames: `_Upgrade`) and reads the frames; `tail` is
    what the client sent after its request head."""
    # picows reads the request again (its parser, its headers object): give it only the lines it checks, as
    # the client sent them (the first of each), so that it answers as it would have. Connection: uvicorn found
    # its `upgrade` token; picows wants no other ("keep-alive").
    head = [scope["method"].encode(), b" /ws HTTP/1.1\r\nConnection: Upgrade\r\n"]
    wanted = {b"upgrade", b"sec-websocket-version", b"sec-websocket-key"}
    version: bytes | None = None
    versions = 0
    for name, value in scope["headers"]:
        if name in _PICOWS_CHECKS:
            if name == b"sec-websocket-version":
                versions += 1
                version = value if versions == 1 else None
            if name in wanted:
                wanted.discard(name)
                head += [name, b": ", value, b"\r\n"]
    head.append(b"\r\n")
    answer: FastConnection | WSUpgradeResponseWithListener = picows.upgrade(scope, version)
    if not tail and isinstance(answer, FastConnection):
        answer = WSUpgradeResponseWithListener(_Upgrade(answer), answer)
    protocol = _WSProtocol(
        None,
        None,
        False,
        lambda request: answer,
        _PICOWS_LOG,
        True,  # disconnect on an exception in our callbacks (they catch their own; this is the last resort)
        None,  # no handshake timeout: the whole request head was read already
        False,  # no auto-ping task per socket: the transport's Pinger pings them all (so the next three are unused)
        *picows.auto_ping,
        False,  # FastConnection answers pings: picows would write each pong at once, unbounded and uncounted
        picows.hard_limit,  # a larger frame closes the socket with 1009
        None,
        _READ_BUFFER,
    )
    request = b"".join(head)
    protocol.outbox = picows.outbox
    protocol._head, protocol._skip, protocol._stop = b"", len(request), -1  # frames start after the request
    # uvloop picks its read callbacks (plain or buffered protocol) when reading starts: its set_protocol()
    # restarts reading for that.
    transport.set_protocol(protocol)
    handed = _Transport(transport)
    protocol.connection_made(handed)
    handed.taken()
    _feed(protocol, request + tail)


def _feed(protocol: _WSProtocol, data: bytes) -> None:
    """Give picows bytes already read from its socket, through its buffered-protocol interface."""
    view = memoryview(data)
    while view and not protocol.transport.is_disconnected:
        buffer = protocol.get_buffer(-1)
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def http_protocol_for(sessions: Sessions, fast_ws: bool = True) -> type[PeercallHttpProtocol]:
    """The node's HTTP protocol class: httptools behind the node's `Gate`, with `/ws` on picows (`fast_ws`) or,
    with per-message deflate, on uvicorn's WebSocket protocol and the ASGI transport. uvicorn's `http=` is
    server/front.py's `protocol_for`, which puts `FrontProtocol` before it when `fast_ws`."""
    settings = sessions.settings
    gate = Gate(
        settings.max_connections_per_ip,
        settings.connection_rate,
        settings.head_timeout,
        _trusted_proxies(settings.forwarded_allow_ips),
        sessions.log_budget,
    )
    picows = PicowsTransport(sessions) if fast_ws else None
    return type("PeercallHttpProtocol", (PeercallHttpProtocol,), {"picows": picows, "gate": gate})


def refusal(refused: Refused) -> WSUpgradeResponseWithListener:
    """An upgrade turned down: the HTTP error picows writes instead of the 101, with the session's JSON body."""
    response = WSUpgradeResponse.create_error_response(
        refused.status, refused.body(), {"Content-Type": "application/json"}
    )
    return WSUpgradeResponseWithListener(response, None)


def _trusted_proxies(allowed: str) -> Any:
    """uvicorn's own check of X-Forwarded-For (what its proxy-headers middleware does for HTTP), or None."""
    try:
        from uvicorn.middleware.proxy_headers import _TrustedHosts
    except ImportError:  # pragma: no cover - an older or newer uvicorn: the socket's address is used
        return None
    return _TrustedHosts(allowed)


def _peer(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
