"""`/ws` on the ASGI WebSocket: the transport used with per-message deflate (picows has no compression) and on
ASGI servers other than `peercall serve`. server/fastws.py (picows) is the other one, and the default.

A transport only: the rules of a connection (admission, rate, size, binary, first-frame auth, its log lines and
counters) are its `Session`'s (server/session.py). This module reads frames with ASGI `receive`, asks the session,
hands what it lets through to the hub, and writes with ASGI `send`. It is a plain ASGI endpoint rather than
Starlette's WebSocket wrapper: the raw callables are all it needs, and uvicorn's own `send` shows whether a slow
reader's socket is writable. It does not import server/fastws.py, nor does that import this.

Every send and close is bounded in time. A frame is written at once while the socket is writable, and otherwise
waits in a bounded backlog that one writer task drains. `close()` returns at once: a task writes the close frame
after the backlog, and aborts the transport if that has not happened within CLOSE_GRACE (a client that never
reads) or the client has not answered it within CLOSE_TIMEOUT. So no one who closes or sends to a connection ever
waits for its reader.

Under `peercall serve`, uvicorn's WebSocket protocol is `PeercallWebSocketProtocol`: uvicorn's own (the `websockets`
library's sans-I/O parser, which already holds to RFC 6455: reserved bits, opcodes, close codes, UTF-8, a second
close) plus the session's rules for the frames that the app never sees. A ping, a pong or a fragment before the
last costs a rate-limit token (`Session.control`); a pong is written only while what waits for the connection stays
within its send buffer; a connection closed for flooding is read no more. Its `websockets` parser is `_Parser`,
which checks a text message's UTF-8 as its frames are parsed, so that the connection fails on its first error.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from ..protocol.codes import CloseCode
from .session import CLOSE_GRACE, CLOSE_TIMEOUT, Close, Handshake, Refused, Session, Sessions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLOSED = (OSError, RuntimeError)  # what sending on a closed socket raises (uvicorn's ClientDisconnected is an OSError)


class AsgiConnection:
    """One accepted WebSocket, as the hub sees it.

    Sending never makes the caller wait for a slow reader. While the socket is writable a frame is written at
    once (the common case, no task, no queue). When the reader falls behind, frames wait in a backlog that one
    writer task drains; a backlog above `send_buffer` bytes closes the connection (4420), so a client that never
    reads costs a bounded amount of memory and delays nobody else. Whether the socket is writable is read from
    uvicorn's protocol object (its `writable` event); on another ASGI server every frame goes through the backlog.
    """

    __slots__ = (
        "_backlog",
        "_closer",
        "_protocol",
        "_send",
        "_writable",
        "_writer",
        "backlog_bytes",
        "cid",
        "closed_with",
        "errors",
        "id",
        "open",
        "session",
    )

    def __init__(self, session: Session, send: Send) -> None:
        self.session = session
        self.id = session.id
        self.cid = session.cid
        self._send = send
        self._protocol = getattr(send, "__self__", None)  # uvicorn's protocol object: `writable`, `transport`
        if isinstance(self._protocol, PeercallWebSocketProtocol):
            self._protocol.peercall = self
        self._writable: asyncio.Event | None = getattr(self._protocol, "writable", None)
        self._backlog: collections.deque[str] | None = None  # made when first needed: most connections never lag
        self.backlog_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self.open = False  # accepted and not closing: only then may frames be sent
        self.closed_with: int | None = None  # the code of our close, once started
        self.errors = 0

    async def send_text(self, text: str) -> bool:
        if not self.open:
            return False
        writable = self._writable
        if self._writer is None and writable is not None and writable.is_set():
            try:  # writable: uvicorn writes it at once, without waiting
                await self._send({"type": "websocket.send", "text": text})
            except _CLOSED:
                self.open = False
                return False
            return True
        return self._enqueue(text)

    def send_now(self, text: str) -> bool:
        """Queue a frame for the writer task (the hub's hot path does not wait for an ASGI send)."""
        if not self.open:
            return False
        return self._enqueue(text)

    @property
    def pending(self) -> int:
        """Bytes waiting: the backlog (UTF-8) and the transport's buffer."""
        transport = getattr(self._protocol, "transport", None)
        return self.backlog_bytes + (transport.get_write_buffer_size() if transport is not None else 0)

    def flooding(self, close: Close) -> None:
        """Close a connection that keeps flooding (4429), and read it no more (see `PeercallWebSocketProtocol`)."""
        self.close_with(close)
        if isinstance(self._protocol, PeercallWebSocketProtocol):
            self._protocol.deafen()

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake, and return at once (see `start_close`)."""
        self.start_close(code, reason)

    def close_with(self, close: Close) -> None:
        """Do what the session decided: its `error` frame, if any, then the close."""
        if close.frame is not None:
            self.send_now(close.frame)
        self.start_close(close.code, close.reason)

    def start_close(self, code: int, reason: str) -> None:
        """Stop sending, and have a task write the close frame after what is queued (say, the error that explains)."""
        if not self.open:
            return
        self.open = False
        self.closed_with = code
        self._closer = asyncio.ensure_future(self._close(code, reason))

    async def closed(self) -> None:
        """Wait until the close frame is written or the transport aborted: at most CLOSE_GRACE."""
        if self._closer is not None:
            await asyncio.shield(self._closer)

    def release(self) -> None:
        """The session is over: uvicorn's protocol lets go of this connection, which holds the protocol; left as a
        cycle, both would wait for the cyclic GC (see `Session.ended`)."""
        if isinstance(self._protocol, PeercallWebSocketProtocol) and self._protocol.peercall is self:
            self._protocol.peercall = None

    def _enqueue(self, text: str) -> bool:
        """Put a frame in the backlog for the writer task (started if need be). False if that overflowed the
        send buffer: the backlog is dropped, nothing more is sent, and the connection closes."""
        if self._backlog is None:
            self._backlog = collections.deque()
        self._backlog.append(text)
        self.backlog_bytes += len(text) if text.isascii() else len(text.encode())
        if self.pending > self.session.send_buffer:
            waiting = self.pending
            self._backlog.clear()
            self.backlog_bytes = 0
            self.close_with(self.session.overflowed(waiting))
            return False
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            while self._backlog:
                text = self._backlog.popleft()
                self.backlog_bytes -= len(text) if text.isascii() else len(text.encode())
                await self._send({"type": "websocket.send", "text": text})
        except _CLOSED:
            self.open = False
        finally:
            self._writer = None
            self._backlog = None  # drained (or closed): give the memory back
            self.backlog_bytes = 0

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                if self._writer is not None:
                    await asyncio.shield(self._writer)
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except TimeoutError:  # the socket took nothing for CLOSE_GRACE: the client does not read
            self._abort()
            return
        except _CLOSED:
            return
        # uvicorn waits for the answer, then closes gracefully, which a client that stopped reading could hold up
        # for good: past CLOSE_TIMEOUT the socket is dropped.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        """Drop the socket now (uvicorn then ends the session with a disconnect). Not possible on a server that
        does not expose its transport: the close is then abandoned."""
        transport = getattr(self._protocol, "transport", None)
        if transport is not None and not getattr(self._protocol, "disconnected", False):
            transport.abort()


class AsgiTransport:
    """The ASGI app of `/ws`: `PeercallApp` hands it the requests that `is_signaling_path` takes for `/ws`."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.hub = sessions.hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        handshake = Handshake(scope.get("query_string", b""), scope.get("headers", []), _peer(scope))
        try:
            session = self.sessions.admit(handshake)
        except Refused as refused:
            await _deny(scope, send, refused)
            return
        conn = AsgiConnection(session, send)
        await send({"type": "websocket.accept"})
        conn.open = True
        _forget_handshake(send)
        session.opened(conn)
        code: int = CloseCode.INTERNAL_ERROR
        try:
            code = await self._serve(conn, session, receive)
        finally:
            session.ended(code, conn.errors)
            await conn.closed()
            conn.release()

    async def _serve(self, conn: AsgiConnection, session: Session, receive: Receive) -> int:
        """The connection's life after the 101: the code it ended with."""
        refusal: Close | None
        if session.deferred is not None:  # the header's token, whose key is to be fetched
            refusal = await session.authenticate(None)
            if refusal is not None:
                conn.close_with(refusal)
                return refusal.code
        elif session.awaiting_auth:
            try:
                async with asyncio.timeout(session.auth_timeout):
                    message = await receive()
            except TimeoutError:
                refusal = session.auth_timed_out()
            else:
                if message["type"] != "websocket.receive":
                    return int(message.get("code", CloseCode.NORMAL))
                refusal = await session.authenticate(message.get("text"))
            if refusal is not None:
                conn.close_with(refusal)
                return refusal.code
        refusal = session.start()
        if refusal is not None:
            conn.close_with(refusal)
            return refusal.code
        try:
            await self.hub.join(conn, session.device, token_expires_at=session.expires_at, display_name=session.name)
            return await self._receive_loop(conn, session, receive)
        except Exception:
            conn.close_with(session.failed())
            return CloseCode.INTERNAL_ERROR
        finally:
            conn.open = False
            await self.hub.leave(conn)

    async def _receive_loop(self, conn: AsgiConnection, session: Session, receive: Receive) -> int:
        hub, inbound = self.hub, session.inbound
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":  # after our close (even an aborted one), its code
                return conn.closed_with or int(message.get("code", CloseCode.NORMAL))
            if not conn.open:  # closing: what the client sends now is not handled
                continue
            text = message.get("text")
            verdict = inbound(text) if text is not None else inbound(None, len(message.get("bytes") or b""))
            if verdict is None:
                await hub.handle(conn, text)  # type: ignore[arg-type]  # inbound() answered a binary frame
            elif isinstance(verdict, Close):
                if verdict.code == CloseCode.RATE_LIMITED:
                    conn.flooding(verdict)
                else:
                    conn.close_with(verdict)
                return verdict.code
            else:
                await hub.reject(conn, verdict)


_TEXT, _CONT = Opcode.TEXT, Opcode.CONT
_utf8 = codecs.getincrementaldecoder("utf-8")
_recv_frame = ServerProtocol.recv_frame  # `super().recv_frame`, without making a super object for every frame


class _Parser(ServerProtocol):
    """The `websockets` server protocol that uvicorn makes, with a text message's UTF-8 checked in `recv_frame`.

    RFC 6455 fails a connection on the first error it finds. `websockets` parses all the frames of a read in
    `receive_data` (`Protocol.parse`) before uvicorn sees any, and a frame it refuses (a reserved opcode, a bad close
    code, a long or fragmented ping: 1002) fails the connection there. uvicorn decodes a text message only later, in
    its events, so a message that is not UTF-8 (1007) before such a frame in the same read was failed with the later
    frame's 1002. `parse` hands each frame to `recv_frame` once it is read and decompressed (permessage-deflate's
    `decode`), before it reads the next: the UnicodeDecodeError raised here is caught by `parse`, which fails the
    connection with 1007 ("<why> at position <n>", as for a close reason) and reads no further. uvicorn then handles
    it as any error of the parser (`data_received`, `parser_exc`): the close frame is written after the pongs that
    websockets queued for the pings before it in the read, and the read's other events are dropped.

    The UTF-8 is the whole message's, checked when its last frame comes, as picows's transport does (a new message
    inside it, or a broken frame, before then is the first error: 1002): a fragmented message's frames go through an
    incremental decoder (a character may be split across them), which keeps its first error for the last frame. A
    whole text message costs a check that it is ASCII (signaling's JSON nearly always is), and a decode if it is not.
    uvicorn decodes the message again for the app (`send_receive_event_to_app`)."""

    utf8: codecs.IncrementalDecoder | None = None  # the text message being received in fragments
    bad: UnicodeDecodeError | None = None  # the first error of its UTF-8

    def recv_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is _TEXT:  # (inside a fragmented message, a new one is websockets's 1002: not checked here)
            if frame.fin:
                data = frame.data
                if not data.isascii() and self.current_size is None:  # type: ignore[union-attr]  # bytes, bytearray
                    data.decode()  # type: ignore[union-attr]  # the UnicodeDecodeError fails the connection: 1007
            elif self.current_size is None:
                self.utf8 = _utf8()
                self._fragment(frame)
        elif opcode is _CONT and self.utf8 is not None:
            self._fragment(frame)
        _recv_frame(self, frame)

    def _fragment(self, frame: Frame) -> None:
        """A frame of a fragmented text message through the decoder; at the last, the message's first error."""
        utf8 = self.utf8
        assert utf8 is not None
        if self.bad is None:
            try:
                utf8.decode(frame.data, frame.fin)
            except UnicodeDecodeError as exc:
                self.bad = exc
        if frame.fin:
            bad, self.utf8, self.bad = self.bad, None, None
            if bad is not None:
                raise bad


class PeercallWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, with the session's rules for the frames the app never sees (see the module's
    docstring). `peercall` is the connection once the app has accepted it; until then uvicorn's rules alone apply."""

    peercall: AsgiConnection | None = None
    deaf = False
    held: list[bytes] | None = None  # what websockets queued after the pong being written (`handle_ping`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's parser, made with its settings (extensions, max size, logger), checks UTF-8 as it parses: the
        # same object, of `_Parser` (a subclass with methods and class defaults only, so the layout is the same)
        self.conn.__class__ = _Parser

    def data_received(self, data: bytes) -> None:
        if not self.deaf:
            super().data_received(data)

    def deafen(self) -> None:
        """Read nothing more; drop the socket once the close frame had CLOSE_GRACE to leave."""
        if not self.deaf:
            self.deaf = True
            self.transport.pause_reading()
            self.loop.call_later(CLOSE_GRACE, self.transport.abort)

    def handle_text(self, event: Frame) -> None:
        if not event.fin:
            self._charge()
        super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        if not event.fin:
            self._charge()
        super().handle_bytes(event)

    def handle_cont(self, event: Frame) -> None:
        if not event.fin:
            self._charge()
        super().handle_cont(event)

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, but a text message that is not UTF-8 fails the connection (1007) without the ERROR and
        traceback that uvicorn logs for it (a line a client could make the server write at will). `_Parser` has
        failed such a message already, as it was parsed; this stays for a `websockets` that would not call its
        `recv_frame`."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.conn.fail(1007, "invalid UTF-8")
                # the pongs websockets queued for pings after this message are not sent: the connection failed here
                self.held = None
                output = [chunk for chunk in self.conn.data_to_send() if chunk[:1] != b"\x8a"]
                self.transport.write(b"".join(output))
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_close(self, event: Frame) -> None:
        """uvicorn's, after what `handle_ping` held back (the echo of this close may be in it)."""
        held, self.held = self.held, None
        if held and not self.close_sent:
            self.transport.write(b"".join(held))
        super().handle_close(event)

    def handle_pong(self, event: Frame) -> None:
        self._charge()  # uvicorn takes only the answer to its own ping as a sign of life
        super().handle_pong(event)

    def handle_ping(self) -> None:
        """websockets has queued a pong for every ping of this read, in order with whatever else it answered (a
        close frame). Each is written at its own ping's event, not before: a message between two pings may fail
        the connection (1007 above, should `_Parser` not have; or 4429), and then the second ping is not answered
        (RFC 6455 7.1.7: a failed connection processes nothing more), so what follows this ping's pong is `held` for
        the next events. A pong costs its ping's token, and is written only if the session lets the ping through and
        the send buffer has room."""
        conn = self.peercall
        if conn is None or self.deaf:
            super().handle_ping()
            return
        chunks = self.conn.data_to_send()
        if self.held:
            chunks = self.held + chunks
        self.held = None
        for i, chunk in enumerate(chunks):
            if chunk[:1] == b"\x8a":
                chunks, self.held = chunks[: i + 1], chunks[i + 1 :] or None
                break
        keep: list[bytes] = []
        for chunk in chunks:
            if chunk[:1] == b"\x8a":  # a pong
                if self._charge() is not None or not conn.open:
                    continue
                waiting = conn.pending + sum(map(len, keep)) + len(chunk)
                if waiting > conn.session.send_buffer:
                    conn.close_with(conn.session.overflowed(waiting))
                    continue
            keep.append(chunk)
        if keep:
            self.transport.write(b"".join(keep))

    def _charge(self) -> object:
        """One frame's token; a connection that keeps flooding is closed and read no more."""
        conn = self.peercall
        if conn is None or not conn.open:
            return None
        verdict = conn.session.control()
        if isinstance(verdict, Close):
            conn.flooding(verdict)
        return verdict


def _forget_handshake(send: Send) -> None:
    """Let go of the handshake's parsed request and response once the socket is open.

    uvicorn keeps both (header objects, about 4 KB) on its protocol object for the connection's whole life,
    though it only needs them until `websocket.accept`: a fifth of what an idle connection costs. Servers
    other than uvicorn have no such attributes, and nothing happens.
    """
    protocol = getattr(send, "__self__", None)
    for name in ("request", "response"):
        if getattr(protocol, name, None) is not None:
            setattr(protocol, name, None)


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


async def _deny(scope: Scope, send: Send, refused: Refused) -> None:
    """Refuse the handshake with an HTTP response and the session's JSON body (ASGI denial response extension), or
    a bare close (HTTP 403) on servers without that extension."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": refused.code})
        return
    body = refused.body()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": refused.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
