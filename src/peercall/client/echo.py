"""The echo test service: a client that answers every call and plays back what it hears, `delay` seconds later.

Call it from a browser to check a microphone and speakers: what you say comes back after about 0.7 s. A peercall
user has at most one call at a time, so the echo serves one caller at a time (others hear "busy"); run several
under different ids for more. Each call is hung up after `max_duration` seconds, so a forgotten tab cannot keep
it busy.

Imports the SDK's client and media; must not import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from . import media
from .call import Call, CallError
from .client import Client
from .signaling import ConnectError

log = logging.getLogger("peercall.echo")

DEFAULT_ID = "echo"
DEFAULT_DELAY = 0.7


async def serve_call(call: Call, delay: float = DEFAULT_DELAY, max_duration: float = 600.0) -> None:
    """Accept one ringing call and echo it until either side hangs up (or `max_duration` passes).

    Args:
        call: a ringing incoming call.
        delay: seconds between hearing and playing back.
        max_duration: hang up after this many seconds.
    """
    echo = media.Echo(delay)
    try:
        await call.accept(audio_in=echo.source, audio_out=echo.sink)
    except CallError as exc:
        log.info("could not answer %s: %s", call.peer, exc)
        return
    log.info("echoing %s (call %s)", call.peer, call.id)
    try:
        async with asyncio.timeout(max_duration):
            end = await call.wait_ended()
    except TimeoutError:
        log.info("call %s with %s reached %gs: hanging up", call.id, call.peer, max_duration)
        end = await call.hangup()
    log.info("call %s with %s ended: %s", call.id, call.peer, end)


async def run_echo(
    url: str,
    id: str = DEFAULT_ID,
    *,
    token: str | None = None,
    delay: float = DEFAULT_DELAY,
    max_duration: float = 600.0,
    ice_loopback: bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the echo service until cancelled (or until the server refuses it for good).

    Args:
        url: the server's WebSocket URL.
        id: the id to answer as.
        token: a token whose `sub` is `id` (servers in token mode).
        delay: seconds between hearing and playing back.
        max_duration: hang up each call after this many seconds.
        ice_loopback: offer 127.0.0.1 as a candidate; None: `PEERCALL_ICE_LOOPBACK` decides.
        ssl_context: for `wss://` servers with a private certificate.
        connect_timeout: how long to keep trying to reach the server at start.
        ready: set once connected and answering.

    Raises:
        ConnectError: the server could not be reached in time, or refused us.
    """
    async with Client(
        url, id, token, ice_loopback=ice_loopback, ssl_context=ssl_context, connect_timeout=connect_timeout
    ) as client:
        log.info("echo service answering as %r on %s (delay %.1fs)", id, url, delay)
        tasks: set[asyncio.Task[None]] = set()
        if ready is not None:
            ready.set()
        try:
            async for call in client.incoming():
                log.info("%s is calling", call.peer)
                task = asyncio.create_task(serve_call(call, delay, max_duration))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        why = client.last_disconnect.reason if client.last_disconnect else "the connection ended"
        raise ConnectError(f"the echo service stopped: {why}", terminal=True)
