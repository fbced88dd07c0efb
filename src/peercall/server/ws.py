"""`/ws`: the only code that touches signaling sockets.

A plain ASGI endpoint rather than Starlette's WebSocket wrapper: the receive loop is the server's hot path, and
the raw `receive`/`send` callables are all it needs. Everything it decides is delegated to the hub.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from ..errors import ProtocolError
from ..hub.router import Hub
from ..protocol import messages
from ..protocol.codes import CloseCode, ErrorCode

log = logging.getLogger("peercall.ws")

Scope = dict[str, Any]


class WsConnection:
    """One accepted WebSocket, as the hub sees it."""

    __slots__ = ("_send", "cid", "errors", "id", "open", "received")

    def __init__(self, client_id: str, cid: str, send: Any) -> None:
        self.id = client_id
        self.cid = cid
        self._send = send
        self.open = False  # accepted and not yet closed: only then may frames be sent
        self.errors = 0
        self.received = 0

    async def send_text(self, text: str) -> bool:
        if not self.open:
            return False
        try:
            await self._send({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError):  # uvicorn's ClientDisconnected is an OSError
            self.open = False
            return False
        return True

    async def close(self, code: int, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError):
            pass


class SignalingEndpoint:
    """ASGI app for `GET /ws?id=<clientId>`."""

    def __init__(self, hub: Hub, max_message_size: int) -> None:
        self.hub = hub
        self.max_size = max_message_size

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        peer = _peer(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        client_id = _single(query, "id")
        device = _single(query, "device")
        if self.hub.draining:
            await _deny(scope, send, 503, "shutting-down", "the server is shutting down; reconnect in a moment")
            return
        if not messages.is_valid_id(client_id):
            log.info("refused a connection from %s: bad id %r", peer, (client_id or "")[:80])
            await _deny(scope, send, 400, "bad-id", _ID_RULE.format(what="id"))
            return
        if "device" in query and not messages.is_valid_id(device):
            log.info("refused a connection from %s: bad device %r", peer, (device or "")[:80])
            await _deny(scope, send, 400, "bad-device", _ID_RULE.format(what="device"))
            return
        assert client_id is not None
        conn = WsConnection(client_id, self.hub.new_cid(), send)
        await send({"type": "websocket.accept"})
        conn.open = True
        started = time.monotonic()
        code: int = CloseCode.INTERNAL_ERROR
        log.info("%s connected from %s (%s, %d connections)", client_id, peer, device or conn.cid, len(self.hub) + 1)
        try:
            await self.hub.join(conn, device)
            code = await self._receive_loop(conn, receive)
        except Exception:
            log.exception("%s: unexpected error, closing the connection", client_id)
            await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            conn.open = False
            await self.hub.leave(conn)
            log.info(
                "%s disconnected (code %s) after %.1fs, %d messages%s",
                client_id,
                code,
                time.monotonic() - started,
                conn.received,
                f", {conn.errors} errors" if conn.errors else "",
            )

    async def _receive_loop(self, conn: WsConnection, receive: Any) -> int:
        hub, limit = self.hub, self.max_size
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return int(message.get("code", CloseCode.NORMAL))
            conn.received += 1
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
