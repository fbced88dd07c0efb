"""The echo test service: a client that answers every call and plays back what it hears, `delay` seconds later.

Call it from a browser to check a microphone and speakers: what you say comes back after about 0.7 s. A peercall
user has at most one call at a time, so the echo serves one caller at a time (others hear "busy"); run several
under different ids for more. Each call is hung up after `max_duration` seconds, so a forgotten tab cannot keep
it busy.

It answers strangers, so it is guarded (docs/security.md): its calls check only the caller's candidates that
`CandidatePolicy.public_service()` allows, at most 20 a call (no probing this machine's other networks through it),
and one caller gets at most `calls_per_minute` calls a minute (further ones are rejected `busy`). It echoes audio
only: it answers a caller's video `inactive` (the caller's page shows its own camera anyway), so no stranger's
video is ever sent to it, decoded or stored.

Imports the SDK's client, candidates and media; must not import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import deque

from . import media
from .call import Call, CallError
from .candidates import SERVICE_MAX_CANDIDATES, CandidatePolicy, parse_networks
from .client import Client
from .signaling import ConnectError, TokenProvider

log = logging.getLogger("peercall.echo")

DEFAULT_ID = "echo"
DEFAULT_DELAY = 0.7
DEFAULT_CALLS_PER_MINUTE = 6
MAX_SILENCE = 10.0
"""Seconds an echo call goes on with no audio from the caller (from the answer, or the last packet) before the echo
hangs up: the echo serves one caller at a time, and a call that sends nothing (an `inactive` m-line) held it for
`max_duration` while everyone else heard busy. A muted microphone still sends packets (of silence)."""
"""Calls one caller may place to the echo in any 60 seconds."""


ALLOWED_PEERS_ENV = "PEERCALL_ECHO_ALLOWED_PEERS"
DENIED_PEERS_ENV = "PEERCALL_ECHO_DENIED_PEERS"


def echo_policy(
    allow: list[str] | None = None,
    deny: list[str] | None = None,
    max_candidates: int = SERVICE_MAX_CANDIDATES,
    env: dict[str, str] | None = None,
) -> CandidatePolicy:
    """The echo's candidate policy from its options (`--allow-peer`, `--deny-peer`) or, for each list not given,
    from `PEERCALL_ECHO_ALLOWED_PEERS` / `PEERCALL_ECHO_DENIED_PEERS` (comma-separated).

    Args:
        allow: ranges given with `--allow-peer` (each may be comma-separated); None or empty: the environment's.
        deny: ranges given with `--deny-peer`; None or empty: the environment's.
        max_candidates: distinct remote candidates a call checks at most.
        env: the environment to read (default `os.environ`).

    Returns:
        `CandidatePolicy.public_service()` with those ranges before the defaults.

    Raises:
        ValueError: a range is malformed (the message names the option or variable, and the value).
    """
    environ = os.environ if env is None else env
    allowed = (
        parse_networks(allow, "--allow-peer")
        if allow
        else parse_networks([environ.get(ALLOWED_PEERS_ENV, "")], ALLOWED_PEERS_ENV)
    )
    denied = (
        parse_networks(deny, "--deny-peer")
        if deny
        else parse_networks([environ.get(DENIED_PEERS_ENV, "")], DENIED_PEERS_ENV)
    )
    return CandidatePolicy.public_service(allowed, denied, max_candidates=max_candidates)


class CallerLimit:
    """At most `per_minute` calls from one caller in any 60 seconds (a sliding window). Pure: time comes in.

    Holds the times of the calls let through in the last minute, per caller; a caller with none is forgotten.

    Args:
        per_minute: calls let through per caller per 60 s.
        window: the window, in seconds.
    """

    def __init__(self, per_minute: int = DEFAULT_CALLS_PER_MINUTE, window: float = 60.0) -> None:
        if per_minute < 1:
            raise ValueError(f"calls per minute: expected at least 1, but got {per_minute}")
        self.per_minute = per_minute
        self.window = window
        self._calls: dict[str, deque[float]] = {}
        self._refused: set[str] = set()

    def admit(self, caller: str, now: float) -> bool | None:
        """Count a call from `caller` at `now` if the caller is under the limit.

        Args:
            caller: the caller's user id.
            now: a monotonic time, in seconds.

        Returns:
            True: let it through (it is counted). False: over the limit, the first refusal since the caller was last
            let through (worth a log line). None: over the limit again (not worth another).
        """
        self._forget(now)
        times = self._calls.setdefault(caller, deque())
        if len(times) < self.per_minute:
            times.append(now)
            self._refused.discard(caller)
            return True
        if caller in self._refused:
            return None
        self._refused.add(caller)
        return False

    def _forget(self, now: float) -> None:
        for caller in list(self._calls):
            times = self._calls[caller]
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._calls[caller]
                self._refused.discard(caller)


async def refuse_call(call: Call) -> None:
    """Reject a ringing call with reason `busy` (the caller is over its calls a minute)."""
    with contextlib.suppress(CallError):
        await call.reject("busy")


async def serve_call(call: Call, delay: float = DEFAULT_DELAY, max_duration: float = 600.0) -> None:
    """Accept one ringing call and echo it until either side hangs up (or `max_duration` passes).

    Args:
        call: a ringing incoming call.
        delay: seconds between hearing and playing back.
        max_duration: hang up after this many seconds.
    """
    echo = media.Echo(delay)
    try:  # no video_in, no video_out: the caller's video is declined
        await call.accept(audio_in=echo.source, audio_out=echo.sink)
    except CallError as exc:
        log.info("could not answer %s: %s", call.peer, exc)
        return
    log.info("echoing %s (call %s)", call.peer, call.id)
    answered = time.monotonic()

    async def heard_nothing() -> None:
        # (a deadline that each packet moves, read when it falls due: no event to wait on per packet)
        while (left := (echo.sink.last_arrival or answered) + MAX_SILENCE - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)

    try:
        async with asyncio.timeout(max_duration):
            ended, silent = asyncio.ensure_future(call.wait_ended()), asyncio.ensure_future(heard_nothing())
            try:
                await asyncio.wait((ended, silent), return_when=asyncio.FIRST_COMPLETED)
            finally:
                silent.cancel()
            if ended.done():
                end = ended.result()
            else:
                ended.cancel()
                log.info("call %s with %s: no audio for %gs: hanging up", call.id, call.peer, MAX_SILENCE)
                end = await call.hangup()
    except TimeoutError:
        log.info("call %s with %s reached %gs: hanging up", call.id, call.peer, max_duration)
        end = await call.hangup()
    log.info("call %s with %s ended: %s", call.id, call.peer, end)


async def run_echo(
    url: str,
    id: str = DEFAULT_ID,
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    password: str | None = None,
    delay: float = DEFAULT_DELAY,
    max_duration: float = 600.0,
    ice_loopback: bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
    ready: asyncio.Event | None = None,
    candidate_policy: CandidatePolicy | None = None,
    calls_per_minute: int = DEFAULT_CALLS_PER_MINUTE,
) -> None:
    """Run the echo service until cancelled (or until the server refuses it for good).

    Args:
        url: the server's WebSocket URL.
        id: the id to answer as.
        token: a token whose `sub` is `id` (servers in token mode).
        token_provider: gives new tokens, to renew ours (see `Client`).
        password: sign in as `id` with it (servers in accounts mode; see `Client`).
        delay: seconds between hearing and playing back.
        max_duration: hang up each call after this many seconds.
        ice_loopback: offer 127.0.0.1 as a candidate; None: `PEERCALL_ICE_LOOPBACK` decides.
        ssl_context: for `wss://` servers with a private certificate.
        connect_timeout: how long to keep trying to reach the server at start.
        ready: set once connected and answering.
        candidate_policy: which of a caller's candidates a call may check; None:
            `CandidatePolicy.public_service()` (loopback, this machine's subnets and global addresses; at most 20).
        calls_per_minute: calls one caller may place in any 60 s; further ones are rejected `busy`.

    Raises:
        ConnectError: the server could not be reached in time, or refused us.
    """
    policy = candidate_policy or CandidatePolicy.public_service()
    limit = CallerLimit(calls_per_minute)
    async with Client(
        url,
        id,
        token,
        token_provider=token_provider,
        password=password,
        ice_loopback=ice_loopback,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
        candidate_policy=policy,
    ) as client:
        log.info("echo service answering as %r on %s (delay %.1fs)", id, url, delay)
        log.info("echo: at most %d calls a minute per caller; caller candidates: %s", calls_per_minute, policy)
        tasks: set[asyncio.Task[None]] = set()
        if ready is not None:
            ready.set()
        try:
            async for call in client.incoming():
                admitted = limit.admit(call.peer, time.monotonic())
                if admitted:
                    log.info("%s is calling", call.peer)
                    work = serve_call(call, delay, max_duration)
                else:
                    if admitted is False:
                        log.warning(
                            "%s called more than %d times in a minute: rejecting as busy", call.peer, limit.per_minute
                        )
                    work = refuse_call(call)
                task = asyncio.create_task(work)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        why = client.last_disconnect.reason if client.last_disconnect else "the connection ended"
        raise ConnectError(f"the echo service stopped: {why}", terminal=True)
