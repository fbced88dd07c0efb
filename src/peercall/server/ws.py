"""`/ws`: the only code that touches signaling sockets.

`SignalingEndpoint` checks who may connect (origin, token, connection limits), enforces per-connection limits
(frame size, message rate, send buffer), and hands every frame to the hub, which decides. Under `peercall serve`
the sockets are served by picows (server/fastws.py: C framing, no task per frame); this module's ASGI endpoint
serves them on other ASGI servers and when per-message deflate is on (picows has no compression). It is a plain
ASGI endpoint rather than Starlette's WebSocket wrapper: the raw `receive`/`send` callables are all it needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..auth.tokens import AuthError, TokenVerifier
from ..config import Settings
from ..core.limits import TokenBucket
from ..errors import ProtocolError
from ..hub.router import Hub
from ..protocol import messages
from ..protocol.codes import CloseCode, ErrorCode

log = logging.getLogger("peercall.ws")

Scope = dict[str, Any]
_closing: set[asyncio.Future[None]] = set()  # close tasks started by send_now, kept from the garbage collector
_CLOSED = (OSError, RuntimeError)  # what sending on a closed socket raises (uvicorn's ClientDisconnected is an OSError)
_OVERFLOWED = "too slow: send buffer overflowed"


class WsConnection:
    """One accepted WebSocket, as the hub sees it.

    Sending never makes the caller wait for a slow reader. While the socket is writable a frame is written at
    once (the common case, no task, no queue). When the reader falls behind, frames wait in a backlog that one
    writer task drains; a backlog above `send_buffer` bytes closes the connection (4420), so a client that never
    reads costs a bounded amount of memory and delays nobody else. Whether the socket is writable is read from
    uvicorn's protocol object (its `writable` event); on another ASGI server every frame goes through the backlog.
    """

    __slots__ = (
        "_backlog",
        "_bytes",
        "_dropped",
        "_limit",
        "_send",
        "_writable",
        "_writer",
        "cid",
        "errors",
        "id",
        "on_drop",
        "open",
        "received",
    )

    def __init__(self, client_id: str, cid: str, send: Any, send_buffer: int) -> None:
        self.id = client_id
        self.cid = cid
        self._send = send
        self._writable: asyncio.Event | None = getattr(getattr(send, "__self__", None), "writable", None)
        self._backlog: collections.deque[str] | None = None  # made when first needed: most connections never lag
        self._bytes = 0
        self._limit = send_buffer
        self._writer: asyncio.Task[None] | None = None
        self._dropped = False  # overflowed: closing, nothing more is sent
        self.open = False  # accepted and not yet closed: only then may frames be sent
        self.errors = 0
        self.received = 0
        self.on_drop: Any = None  # called with a reason when this connection is dropped for misbehaving

    async def send_text(self, text: str) -> bool:
        if not self.open or self._dropped:
            return False
        writable = self._writable
        if self._writer is None and writable is not None and writable.is_set():
            try:
                await self._send({"type": "websocket.send", "text": text})
            except _CLOSED:
                self.open = False
                return False
            return True
        if not self._enqueue(text):
            await self.close(CloseCode.SLOW_CONSUMER, _OVERFLOWED)
            return False
        return True

    def send_now(self, text: str) -> bool:
        """Queue a frame for the writer task (the hub's hot path does not wait for an ASGI send)."""
        if not self.open or self._dropped:
            return False
        if not self._enqueue(text):
            task = asyncio.ensure_future(self.close(CloseCode.SLOW_CONSUMER, _OVERFLOWED))
            _closing.add(task)
            task.add_done_callback(_closing.discard)
            return False
        return True

    def _enqueue(self, text: str) -> bool:
        """Put a frame in the backlog for the writer task (started if need be). False if that overflowed the
        send buffer: the backlog is dropped, nothing more is sent, and the caller closes the connection."""
        if self._backlog is None:
            self._backlog = collections.deque()
        self._backlog.append(text)
        self._bytes += len(text)
        if self._bytes > self._limit:
            log.warning("%s (%s): reads too slowly, %d bytes waiting; disconnecting", self.id, self.cid, self._bytes)
            self._backlog.clear()
            self._bytes = 0
            self._dropped = True
            if self.on_drop is not None:
                self.on_drop("slow-consumer")
            return False
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._drain())
        return True

    @property
    def pending(self) -> int:
        return self._bytes

    async def _drain(self) -> None:
        try:
            while self._backlog and self.open:
                text = self._backlog.popleft()
                self._bytes -= len(text)
                await self._send({"type": "websocket.send", "text": text})
        except _CLOSED:
            self.open = False
        finally:
            self._writer = None
            self._backlog = None  # drained (or closed): give the memory back
            self._bytes = 0

    async def close(self, code: int, reason: str) -> None:
        if not self.open:
            return
        writer = self._writer
        if writer is not None and self._backlog:  # let what is queued (say, the error that explains) go first
            with contextlib.suppress(TimeoutError, *_CLOSED):
                await asyncio.wait_for(asyncio.shield(writer), 1.0)
        self.open = False
        with contextlib.suppress(*_CLOSED):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class Refused(Exception):
    """A handshake that is turned down: HTTP `status` before the upgrade, or `close` code after it."""

    def __init__(self, status: int, close: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.close, self.code, self.message = status, close, code, message


class SignalingEndpoint:
    """ASGI app for `GET /ws?id=<clientId>[&device=<deviceId>]`."""

    def __init__(self, hub: Hub, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self.max_size = settings.max_message_size
        self.verifier = TokenVerifier.for_settings(settings)
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.per_user: collections.Counter[str] = collections.Counter()
        self.hard_limit = max(4 * settings.max_message_size, 1024 * 1024)  # a larger frame closes with 1009
        self.live: set[Any] = set()  # picows connections, from the 101 on (server/fastws.py)
        from .fastws import Outbox, Pinger

        self.outbox = Outbox()
        self.pinger = Pinger(self.live, settings.ping_interval, settings.ping_timeout)
        self._trusted = _trusted_proxies(settings.forwarded_allow_ips)

    def check_upgrade(self, scope: Scope) -> Any:
        """For server/fastws.py: the picows listener for an upgrade to `/ws`, or the HTTP refusal to send."""
        from .fastws import FastConnection, refusal

        peer = _peer(scope)
        headers = scope.get("headers", [])
        if self._trusted is not None and scope.get("client") and scope["client"][0] in self._trusted:
            forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
            if forwarded:
                host, port = self._trusted.get_trusted_client_address(", ".join(forwarded))
                if host:
                    peer = f"{host}:{port}"
        ip = peer.rsplit(":", 1)[0]
        version = [v for k, v in headers if k == b"sec-websocket-version"]
        if version != [b"13"]:  # RFC 6455 4.4 (picows would also take the drafts' 7 and 8)
            response = refusal(426, "bad-version", "only WebSocket version 13 is supported")
            response.response.headers["Sec-WebSocket-Version"] = "13"
            return response
        try:
            user, wanted, device = self._admit(scope, ip)
        except Refused as refused:
            log.info("refused a connection from %s: %s", peer, refused.message)
            self._dropped(refused.code)
            return refusal(refused.status, refused.code, refused.message)
        return FastConnection(self, user, wanted, device, peer)

    async def close_all(self, code: int, reason: str) -> None:
        """Close the picows connections that the hub does not know yet (waiting for their auth frame)."""
        for conn in list(self.live):
            conn.close_now(code, reason)

    def backlog_bytes(self) -> int:
        """Bytes waiting for slow readers, over all connections (a gauge for /metrics)."""
        return sum(getattr(conn, "pending", 0) for conn in self.hub.connections())

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        peer = _peer(scope)
        ip = peer.rsplit(":", 1)[0]
        try:
            user, wanted, device = self._admit(scope, ip)
        except Refused as refused:
            log.info("refused a connection from %s: %s", peer, refused.message)
            self._dropped(refused.code)
            await _deny(scope, send, refused.status, refused.code, refused.message)
            return
        conn = WsConnection(user or wanted or "", self.hub.new_cid(), send, self.settings.send_buffer)
        conn.on_drop = self._dropped
        await send({"type": "websocket.accept"})
        conn.open = True
        _forget_handshake(send)
        self.per_ip[ip] += 1
        try:
            if user is None:  # token mode without an Authorization header: the first frame must be `auth`
                user = await self._first_frame_auth(conn, receive)
                if user is None:
                    return
                conn.id = user
            if self.per_user[user] >= self.settings.max_connections_per_user:
                message = f"{user} already has {self.per_user[user]} connections open"
                log.info("refused %s from %s: %s", user, peer, message)
                await conn.send_text(messages.error(ProtocolError(ErrorCode.RATE_LIMITED, message)))
                await conn.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
                self._dropped("too-many-connections")
                return
            self.per_user[user] += 1
            try:
                await self._session(conn, receive, peer, device)
            finally:
                self.per_user[user] -= 1
                if not self.per_user[user]:
                    del self.per_user[user]
        finally:
            self.per_ip[ip] -= 1
            if not self.per_ip[ip]:
                del self.per_ip[ip]

    def _dropped(self, reason: str) -> None:
        self.hub.stats.dropped[reason] += 1

    def _admit(self, scope: Scope, ip: str) -> tuple[str | None, str | None, str | None]:
        """Check a handshake. Returns (the user, or None while a first-frame token is to come; the id the client
        asked for; its device)."""
        if self.hub.draining:
            raise Refused(503, CloseCode.GOING_AWAY, "shutting-down", "the server is shutting down; reconnect soon")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, headers.get("host", "")):
            raise Refused(403, 1008, "bad-origin", f"origin {origin[:100]} may not connect here")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        client_id = _single(query, "id")
        device = _single(query, "device")
        if "device" in query and not messages.is_valid_id(device):
            raise Refused(400, 1008, "bad-device", _ID_RULE.format(what="device"))
        if self.per_ip[ip] >= self.settings.max_connections_per_ip:
            raise Refused(
                429,
                CloseCode.TOO_MANY_CONNECTIONS,
                "too-many-connections",
                f"{ip} already has {self.per_ip[ip]} connections open",
            )
        if self.verifier is None:
            if not messages.is_valid_id(client_id):
                raise Refused(400, 1008, "bad-id", _ID_RULE.format(what="id"))
            return client_id, client_id, device
        if "id" in query and not messages.is_valid_id(client_id):
            raise Refused(400, 1008, "bad-id", _ID_RULE.format(what="id"))
        authorization = headers.get("authorization")
        if authorization is None:
            return None, client_id, device
        scheme, _, token = authorization.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise AuthError("the Authorization header must be 'Bearer <token>'")
            user = self.verifier.verify(token.strip())
        except AuthError as exc:
            raise Refused(401, CloseCode.UNAUTHORIZED, "unauthorized", str(exc)) from None
        if client_id is not None and client_id != user:
            raise Refused(401, CloseCode.UNAUTHORIZED, "unauthorized", f"the token is for {user}, not {client_id}")
        return user, client_id, device

    def _origin_allowed(self, origin: str, host: str) -> bool:
        allowed = self.settings.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        return not allowed and urlsplit(origin).netloc.lower() == host.lower()

    async def _first_frame_auth(self, conn: WsConnection, receive: Any) -> str | None:
        """Wait for `{"type":"auth","token":…}`; the user id it proves, or None after closing with 4401."""
        assert self.verifier is not None
        timeout = self.settings.auth_timeout
        try:
            async with asyncio.timeout(timeout):
                message = await receive()
        except TimeoutError:
            await self._unauthorized(conn, f"no auth frame within {timeout:g}s")
            return None
        if message["type"] != "websocket.receive":
            return None
        try:
            frame = json.loads(message.get("text") or "null")
            if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(frame.get("token"), str):
                raise AuthError('the first frame must be {"type":"auth","token":"<token>"}')
            user = self.verifier.verify(frame["token"])
        except (AuthError, ValueError) as exc:
            await self._unauthorized(conn, str(exc))
            return None
        wanted = conn.id
        if wanted and wanted != user:
            await self._unauthorized(conn, f"the token is for {user}, not {wanted}")
            return None
        return user

    async def _unauthorized(self, conn: WsConnection, why: str) -> None:
        log.info("refused a connection (%s): %s", conn.cid, why)
        await conn.send_text(messages.error(ProtocolError(ErrorCode.UNAUTHORIZED, why)))
        await conn.close(CloseCode.UNAUTHORIZED, why[:120])
        self._dropped("unauthorized")

    async def _session(self, conn: WsConnection, receive: Any, peer: str, device: str | None) -> None:
        started = time.monotonic()
        code: int = CloseCode.INTERNAL_ERROR
        log.info("%s connected from %s (%s, %d connections)", conn.id, peer, device or conn.cid, len(self.hub) + 1)
        try:
            await self.hub.join(conn, device)
            code = await self._receive_loop(conn, receive)
        except Exception:
            log.exception("%s: unexpected error, closing the connection", conn.id)
            await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            conn.open = False
            await self.hub.leave(conn)
            log.info(
                "%s disconnected (code %s) after %.1fs, %d messages%s",
                conn.id,
                code,
                time.monotonic() - started,
                conn.received,
                f", {conn.errors} errors" if conn.errors else "",
            )

    async def _receive_loop(self, conn: WsConnection, receive: Any) -> int:
        hub, limit, settings = self.hub, self.max_size, self.settings
        clock = time.monotonic
        bucket = TokenBucket(settings.rate_limit, settings.rate_burst, clock())
        dropped = 0
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return int(message.get("code", CloseCode.NORMAL))
            conn.received += 1
            if not bucket.take(clock()):
                dropped += 1
                if dropped > settings.rate_burst:
                    log.warning("%s: kept sending faster than %g frames/s; disconnecting", conn.id, settings.rate_limit)
                    await conn.close(CloseCode.RATE_LIMITED, "too many messages")
                    self._dropped("rate-limited")
                    return CloseCode.RATE_LIMITED
                await hub.reject(conn, ProtocolError(ErrorCode.RATE_LIMITED, "too many frames; this one was dropped"))
                continue
            dropped = 0
            frame = message.get("text")
            if frame is None:
                await hub.reject(
                    conn,
                    ProtocolError(ErrorCode.BAD_MESSAGE, "binary frames are not supported; send JSON text"),
                )
                continue
            # len() counts characters; UTF-8 needs at most 4 bytes each, so most frames skip the encode.
            if len(frame) * 4 > limit and len(frame.encode()) > limit:
                await hub.reject(
                    conn,
                    ProtocolError(ErrorCode.TOO_LARGE, f"frame is larger than the limit of {limit} bytes"),
                )
                continue
            await hub.handle(conn, frame)


_ID_RULE = "the {what} must be 1-64 characters: letters, digits, '_', '-', '.' or '@'"


def _forget_handshake(send: Any) -> None:
    """Let go of the handshake's parsed request and response once the socket is open.

    uvicorn keeps both (header objects, about 4 KB) on its protocol object for the connection's whole life,
    though it only needs them until `websocket.accept`: a fifth of what an idle connection costs. Servers
    other than uvicorn have no such attributes, and nothing happens.
    """
    protocol = getattr(send, "__self__", None)
    for name in ("request", "response"):
        if getattr(protocol, name, None) is not None:
            setattr(protocol, name, None)


def _trusted_proxies(allowed: str) -> Any:
    """uvicorn's own check of X-Forwarded-For (what its proxy-headers middleware does for HTTP), or None."""
    try:
        from uvicorn.middleware.proxy_headers import _TrustedHosts
    except ImportError:  # pragma: no cover - an older or newer uvicorn: the socket's address is used
        return None
    return _TrustedHosts(allowed)


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name, [])
    return values[0] if len(values) == 1 else None


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"


async def _deny(scope: Scope, send: Any, status: int, code: str, message: str) -> None:
    """Refuse the handshake with an HTTP response and a JSON body (ASGI denial response extension), or a bare
    close (HTTP 403) on servers without that extension."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008, "reason": code})
        return
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
