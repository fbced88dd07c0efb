"""ICE configuration for the SDK: what `/ice-servers` says, as an aiortc `RTCConfiguration`, and the loopback setting.

Owns the HTTP request for `/ice-servers` (made before every call: TURN credentials expire), the one patch the SDK
makes to aioice, and the two calls that gather and close a peer connection's sockets (`set_local_description`,
`close_peer_connection`: together they mend a leak of aioice's). Imports aiortc/aioice and the standard library
only; must not import the rest of the client (signaling, calls) nor anything of the server.

**Loopback candidates.** aioice leaves 127.0.0.1 out of the host candidates it gathers, so two programs on a machine
with no other network (a container, a CI network namespace) cannot reach each other. With the loopback setting on,
127.0.0.1 is offered too. It is off by default; turn it on with `PEERCALL_ICE_LOOPBACK=1` in the environment, or per
client with `Client(..., ice_loopback=True)`. The setting is scoped: only candidates gathered inside
`loopback_candidates(True)` include 127.0.0.1, so other aiortc users in the same process are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCIceTransportPolicy

log = logging.getLogger("peercall.client")

LOOPBACK_ENV = "PEERCALL_ICE_LOOPBACK"
MAX_ICE_ANSWER = 1 << 20  # bytes of an /ice-servers answer read at most (a server gone wrong could send any size)
"""Environment variable that turns loopback candidates on (`1`, `true`, `yes` or `on`)."""

_TRUE = {"1", "true", "yes", "on"}
_loopback: contextvars.ContextVar[bool] = contextvars.ContextVar("peercall_ice_loopback", default=False)
_original_get_host_addresses = aioice.ice.get_host_addresses


def loopback_from_env() -> bool:
    """Whether `PEERCALL_ICE_LOOPBACK` asks for loopback candidates.

    Returns:
        True if the variable is `1`, `true`, `yes` or `on` (any case).
    """
    return os.environ.get(LOOPBACK_ENV, "").strip().lower() in _TRUE


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    if _loopback.get() and use_ipv4 and "127.0.0.1" not in addresses:
        addresses = [*addresses, "127.0.0.1"]
    return addresses


def _install() -> None:
    """Route aioice's host-address lookup through `_host_addresses` (once per process; a no-op unless enabled)."""
    if aioice.ice.get_host_addresses is not _host_addresses:
        aioice.ice.get_host_addresses = _host_addresses


async def set_local_description(pc: RTCPeerConnection, description: RTCSessionDescription, loopback: bool) -> None:
    """`pc.setLocalDescription(description)`, which gathers the host candidates (127.0.0.1 among them if
    `loopback`); if the peer connection was closed meanwhile (the call ended), the sockets bound late are closed.

    Args:
        pc: the peer connection.
        description: the offer or answer just created.
        loopback: whether to offer 127.0.0.1 (`loopback_candidates`).
    """
    try:
        with loopback_candidates(loopback):
            await pc.setLocalDescription(description)
    finally:
        if pc.signalingState == "closed":
            await _close_late_sockets(pc)


async def close_peer_connection(pc: RTCPeerConnection, wait: float = 10.0) -> None:
    """Close `pc`, and the sockets a gathering under way binds after the close.

    aioice (0.13) binds one socket per host address while it gathers and hands them to its connection only when
    all are bound (and a TURN allocation only when it is done), and aiortc may start a gathering after the close;
    `close()` closes the sockets handed over so far, and the others stay open until the garbage collector finds
    them (a ResourceWarning in whatever runs then). So, if a gathering is under way, a task waits for it (at most
    `wait` seconds: aioice bounds its server queries at 5 s) and closes what it handed over late; the close itself
    does not wait (a hang-up must not). A gathering that starts only after the close is `set_local_description`'s
    to mend.

    Args:
        pc: the peer connection.
        wait: the longest wait for a gathering under way.
    """
    await pc.close()
    await _close_late_sockets(pc)
    if _gathering(pc):
        task = asyncio.ensure_future(_close_after_gathering(pc, wait))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
"""The tasks of `close_peer_connection` still waiting for a gathering (kept from the garbage collector)."""


async def _close_after_gathering(pc: RTCPeerConnection, wait: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while _gathering(pc):
        if loop.time() > deadline:  # it failed or was cancelled: what it bound is out of reach anyway
            log.debug("ICE gathering did not finish within %gs of closing the call", wait)
            break
        await asyncio.sleep(0.02)
    await _close_late_sockets(pc)


def _gathering(pc: RTCPeerConnection) -> bool:
    """Whether a gathering of `pc`'s candidates is under way."""
    return any(c._local_candidates_start and not c._local_candidates_end for c in _ice_connections(pc))


def _ice_connections(pc: RTCPeerConnection) -> set[aioice.Connection]:
    return {t.receiver.transport.transport.iceGatherer._connection for t in pc.getTransceivers()}


async def _close_late_sockets(pc: RTCPeerConnection) -> None:
    """Close the sockets that the gathering of closed `pc` handed to its ICE connections after they were closed."""
    for connection in _ice_connections(pc):
        protocols, connection._protocols = connection._protocols, []
        for protocol in protocols:
            await protocol.close()


@contextlib.contextmanager
def loopback_candidates(enabled: bool) -> Iterator[None]:
    """Offer 127.0.0.1 among the host candidates gathered inside this block, if `enabled`.

    aiortc gathers in `setLocalDescription()`, so wrap that call. Tasks started inside the block inherit the setting.

    Args:
        enabled: whether to add the loopback address.
    """
    _install()
    token = _loopback.set(enabled)
    try:
        yield
    finally:
        _loopback.reset(token)


@dataclass(frozen=True)
class IceConfig:
    """What `/ice-servers` answered: the servers (W3C `RTCIceServer` shape) and the transport policy."""

    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    transport_policy: str = "all"
    ttl: float | None = None

    def rtc_configuration(self) -> RTCConfiguration:
        """The aiortc configuration for one peer connection.

        Always explicit: an `RTCConfiguration()` without servers would make aiortc use a public STUN server.

        Returns:
            An `RTCConfiguration` with these servers and policy.
        """
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self.ice_servers
            if isinstance(s, dict) and isinstance(s.get("urls"), str | list)
        ]
        policy = RTCIceTransportPolicy.RELAY if self.transport_policy == "relay" else RTCIceTransportPolicy.ALL
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def ice_servers_url(ws_url: str, user: str | None = None) -> str:
    """The `/ice-servers` address next to a signaling address.

    Args:
        ws_url: the server's WebSocket URL, e.g. `ws://host:8080/ws`.
        user: our id, named in the query so that TURN credentials are minted for us.

    Returns:
        e.g. `http://host:8080/ice-servers?id=alice`.
    """
    parts = urllib.parse.urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    base = urllib.parse.urlunsplit((scheme, parts.netloc, parts.path or "/", "", ""))
    url = urllib.parse.urljoin(base, "ice-servers")
    return f"{url}?{urllib.parse.urlencode({'id': user})}" if user else url


async def fetch_ice_config(
    ws_url: str,
    user: str | None = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    http_timeout: float = 5.0,
) -> IceConfig:
    """Fetch the ICE servers and transport policy for one call. Never raises.

    As the web client does: on any failure the call goes ahead with host candidates only (enough on one machine or
    one LAN), and the failure is logged.

    Args:
        ws_url: the server's WebSocket URL.
        user: our id (TURN credentials are minted for it).
        token: sent as `Authorization: Bearer` (servers in token mode require it).
        ssl_context: for `wss` servers with a private certificate.
        http_timeout: seconds to wait for the answer.

    Returns:
        The configuration; empty (no servers, policy `all`) if it could not be fetched.
    """
    url = ice_servers_url(ws_url, user)
    deadline = time.monotonic() + http_timeout  # for the whole answer: urlopen's timeout is per read

    def get() -> Any:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(request, timeout=http_timeout, context=ssl_context) as response:
            body = b""
            while chunk := response.read1(65536):
                body += chunk
                if len(body) > MAX_ICE_ANSWER:
                    raise ValueError(f"the answer is larger than {MAX_ICE_ANSWER} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the answer did not come whole within {http_timeout} s")
            return json.loads(body)

    try:
        body = await asyncio.to_thread(get)
    except Exception as exc:  # (RecursionError: an answer nested thousands deep, from a server gone wrong)
        why = str(exc)[:200] or type(exc).__name__
        log.warning("could not fetch the ICE servers from %s (%s); using none", url, why)
        return IceConfig()
    servers = body.get("iceServers") if isinstance(body, dict) else None
    ttl = body.get("ttl") if isinstance(body, dict) else None
    return IceConfig(
        ice_servers=[s for s in servers if isinstance(s, dict)] if isinstance(servers, list) else [],
        transport_policy="relay" if isinstance(body, dict) and body.get("iceTransportPolicy") == "relay" else "all",
        ttl=float(ttl) if isinstance(ttl, int | float) else None,
    )
