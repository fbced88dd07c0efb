"""The hub: registry of connected clients, presence, and per-message routing.

No sockets here: a connection is anything with `id`, `send_text()` and `close()` (the WebSocket adapter in
server/ws.py, or a list in the unit tests). `Hub.deliver()` is the seam for multi-node routing: today it only
knows local connections; a broker takes over when the target is not on this node.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..errors import ProtocolError
from ..protocol import messages
from ..protocol.codes import ErrorCode

log = logging.getLogger("peercall.hub")

# Call-control messages are rare and worth an INFO line; SDP and candidates are logged at DEBUG only.
_CALL_CONTROL = frozenset({"call-request", "call-accept", "call-reject", "hangup"})
_LOGGED_ERRORS = 5  # protocol errors logged per connection; the rest are counted


class Connection(Protocol):
    """One client connection, as the hub sees it."""

    id: str
    errors: int

    async def send_text(self, text: str) -> bool:
        """Send one text frame. Returns False (and never raises) if the connection is already gone."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake."""
        ...


class Hub:
    """Routes frames between the clients connected to this node."""

    def __init__(self) -> None:
        self._clients: dict[str, Connection] = {}
        self.draining = False

    def __len__(self) -> int:
        return len(self._clients)

    def online(self, *, exclude: str | None = None) -> list[str]:
        """Ids of everyone online, sorted, without `exclude`."""
        return sorted(cid for cid in self._clients if cid != exclude)

    def claim(self, conn: Connection) -> bool:
        """Take `conn.id` for `conn`. False if another connection holds it. Synchronous, so it cannot race."""
        if conn.id in self._clients:
            return False
        self._clients[conn.id] = conn
        return True

    async def join(self, conn: Connection) -> None:
        """Greet a claimed connection and tell everyone else it is online."""
        await conn.send_text(messages.welcome(conn.id, self.online(exclude=conn.id)))
        await self._broadcast(messages.presence(conn.id, "online"), exclude=conn.id)

    async def leave(self, conn: Connection) -> None:
        """Forget `conn` and tell everyone else it went offline."""
        if self._clients.get(conn.id) is not conn:
            return
        del self._clients[conn.id]
        await self._broadcast(messages.presence(conn.id, "offline"), exclude=conn.id)

    async def handle(self, conn: Connection, frame: str | bytes) -> None:
        """Route one frame from `conn`: forward it, or answer `conn` alone with an `error`."""
        try:
            env = messages.parse(frame, conn.id)
            if not await self.deliver(env.to, messages.forward(env, conn.id)):  # type: ignore[arg-type]
                raise ProtocolError(
                    ErrorCode.UNAVAILABLE,
                    f"{env.to} is not online",
                    ref=env.type,
                    to=env.to,
                    call_id=env.callId,
                )
        except ProtocolError as exc:
            await self.reject(conn, exc)
            return
        if env.type in _CALL_CONTROL:
            log.info("%s -> %s %s", conn.id, env.to, env.type)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s %s (%d chars)", conn.id, env.to, env.type, len(frame))

    async def reject(self, conn: Connection, exc: ProtocolError) -> None:
        """Answer `conn` with an `error` frame, and log the first few of each connection."""
        conn.errors += 1
        if conn.errors <= _LOGGED_ERRORS:
            log.info("%s: %s", conn.id, exc)
            if conn.errors == _LOGGED_ERRORS:
                log.info("%s: further protocol errors on this connection are counted, not logged", conn.id)
        await conn.send_text(messages.error(exc))

    async def deliver(self, to: str, text: str) -> bool:
        """Send `text` to client `to`. False if it is not connected (here)."""
        target = self._clients.get(to)
        if target is None:
            return False
        return await target.send_text(text)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection (graceful shutdown). New connections are refused from now on."""
        self.draining = True
        await asyncio.gather(*(c.close(code, reason) for c in list(self._clients.values())))

    async def _broadcast(self, text: str, *, exclude: str) -> None:
        targets = [c for cid, c in self._clients.items() if cid != exclude]
        if targets:
            await asyncio.gather(*(c.send_text(text) for c in targets))
