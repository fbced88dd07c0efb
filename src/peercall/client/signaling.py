"""The signaling connection of the SDK: one WebSocket to a peercall server, reconnected with backoff.

Owns the socket, the reconnect timer and the `welcome`/presence bookkeeping; knows nothing of calls or of WebRTC.
Every frame the server sends is handed, parsed, to the `on_frame` callback, in order; connection changes go to
`on_state`. It speaks docs/protocol.md: `GET /ws?id=<id>&device=<device>`, a token as `Authorization: Bearer`, and
the close-code ranges (4000-4499: reconnect with backoff; 4500-4999 and 4401: stay away).

**Token renewal.** Given a `token_provider`, it keeps the connection's token alive: `welcome` says when the token
expires (`tokenExpiresAt`); a margin before then (a fifth of the token's lifetime, at least 5 s, at most half) it
asks the provider for a new token and sends it in an `auth` frame, which the server answers with `auth-renewed`.
When the server refuses the token all the same (close 4401, or HTTP 401 on the handshake: it expired while we were
away, the sign-in ended…), it asks the provider once more and reconnects, so that the server hands our call back.

Imports websockets, the standard library and `peercall.protocol.codes` (the server's own code tables, pure data);
must not import aiortc, the rest of the client, or the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import logging
import random
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..protocol.codes import CloseCode
from ..protocol.errors import PeercallError

log = logging.getLogger("peercall.client")

Frame = dict[str, Any]

TokenProvider = Callable[[], str | Awaitable[str]]
"""Something that gives a fresh signaling token when called: a function or a coroutine function (e.g.
`Accounts.token`, or `token_file(path)`). The client calls it before its token expires, and when the server refused
its token (close 4401)."""

TOKEN_WAIT = 15.0
"""How long a token provider may take to give a token, seconds."""
RENEWAL_WAIT = 10.0
"""How long to wait for the server's `auth-renewed` after sending a new token, seconds."""
MIN_MARGIN = 5.0
"""Renew at least this many seconds before the token expires (the server's clock skew allowance is 5 s too)."""
LAST_CHANCE = 3.0
"""How long past its expiry to go on asking the provider for a newer token, seconds. A server that enforces expiry
closes the connection 5 s after it (its clock skew allowance): until then a renewal still keeps the connection, and
after this the client gives up while the connection is still open (`on_token_lost`), so that a call can be hung up
rather than left for the server's resume grace."""


class SignalingState(enum.StrEnum):
    """Where the connection to the server stands (the same words as the web client's `signaling.js`)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"


class ClientError(PeercallError):
    """Base class of every error the SDK raises (a `PeercallError`, as every peercall error is)."""


class ConnectError(ClientError):
    """The client could not connect to the server (or was told not to come back).

    `terminal` is true when trying again as we are cannot help (a bad id, a refused token, a replaced device);
    `status` is the HTTP status or the WebSocket close code, when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None, terminal: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.terminal = terminal


@dataclass(frozen=True)
class StateChange:
    """The connection changed state; `reason` says why in words, `retry_in` when the next attempt is (seconds)."""

    state: SignalingState
    previous: SignalingState
    code: int | None = None
    reason: str = ""
    retry_in: float | None = None
    terminal: bool = False


def check_url(url: str) -> str:
    """Refuse, at once, a URL that is not a WebSocket URL (websockets would retry it in vain until the timeout).

    Args:
        url: the server's WebSocket URL.

    Returns:
        `url`, unchanged.

    Raises:
        ValueError: its scheme is not `ws` or `wss` (e.g. the web client's `http://` address), or it has no host.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        ws = "wss" if parts.scheme == "https" else "ws"
        hint = urllib.parse.urlunsplit(parts._replace(scheme=ws, path=parts.path if parts.path.strip("/") else "/ws"))
        raise ValueError(
            f"the server's URL starts with ws:// or wss:// (its WebSocket), not {parts.scheme}://: did you mean {hint}?"
        )
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"the server's URL is ws://host:port/ws or wss://host/ws, not {url!r}")
    return url


def is_terminal_close(code: int) -> bool:
    """Whether a close code tells the client not to reconnect as it is (4500-4999, and 4401 unauthorized).

    Args:
        code: the WebSocket close code.

    Returns:
        True for 4401 and 4500-4999.
    """
    return code == CloseCode.UNAUTHORIZED or 4500 <= code <= 4999


_CLOSE_REASONS: dict[int, str] = {
    CloseCode.GOING_AWAY: "the server is restarting",
    CloseCode.RATE_LIMITED: "the server disconnected us for sending too much too fast",
    CloseCode.SLOW_CONSUMER: "the server disconnected us because we fell behind",
    CloseCode.TOO_MANY_CONNECTIONS: "too many connections of this user are open",
    CloseCode.REPLACED: "the same device connected again elsewhere",
    CloseCode.UNAUTHORIZED: "the server refused our token",
}


class Signaling:
    """A protocol-v1 WebSocket client that stays connected until `close()`.

    Args:
        url: the server's WebSocket URL, e.g. `ws://127.0.0.1:8080/ws` (anything but `ws://` or `wss://` raises
            `ValueError`).
        user: our id (1-64 of `A-Z a-z 0-9 _ - . @`).
        on_frame: called with every frame the server sends, in order, from the reader task.
        on_state: called with every connection change.
        token: a signed token whose `sub` is `user`, sent as `Authorization: Bearer` (token mode).
        token_provider: gives new tokens, to renew ours before it expires and after the server refused it; with
            no `token`, the first one is asked for when connecting.
        device: this device's id, kept across reconnects so that the server hands our call back to us.
        ssl_context: for `wss://` servers (e.g. one that trusts a self-signed certificate).
        min_delay: first reconnect delay, seconds.
        max_delay: largest reconnect delay, seconds.
        on_token_lost: awaited with the reason, `LAST_CHANCE` seconds after our token expired without renewal (no
            provider, or it had no newer token), while the connection is still open.
    """

    def __init__(
        self,
        url: str,
        user: str,
        *,
        on_frame: Callable[[Frame], None],
        on_state: Callable[[StateChange], None],
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        device: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        on_token_lost: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.url = check_url(url)
        self.user = user
        self.device = device
        self.token = token
        """The token we connect (and last renewed) with."""
        self.token_provider = token_provider
        self.token_expires_at: float | None = None
        """When the server says our token expires (Unix seconds: `tokenExpiresAt`, then each `expiresAt` of
        `auth-renewed`), or None if it did not say."""
        self.renewals = 0
        """How many times the server accepted a renewed token on a live connection."""
        self._renewal: asyncio.Task[None] | None = None
        self._renewed: asyncio.Future[float] | None = None
        self._refreshed_since_welcome = False
        self._on_frame = on_frame
        self._on_state = on_state
        self._on_token_lost = on_token_lost
        self._ssl = ssl_context
        self._min_delay = min_delay
        self._max_delay = max_delay
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = SignalingState.DISCONNECTED
        self._attempt = 0
        self._first: asyncio.Future[Frame] | None = None
        self._closing = False
        self._last_error: str | None = None
        self.welcome: Frame | None = None
        """The last `welcome` frame (the server's version and timers), or None before the first one."""

    @property
    def state(self) -> SignalingState:
        """The connection's state."""
        return self._state

    @property
    def is_open(self) -> bool:
        """Whether frames can be sent right now."""
        return self._ws is not None and self._state is SignalingState.CONNECTED

    async def connect(self, retry_for: float = 10.0) -> Frame:
        """Connect, and keep the connection (reconnecting with backoff) until `close()`.

        After it failed (or the server refused us for good), it can be called again: a program that waits for its
        server retries on the same object.

        Args:
            retry_for: how long to keep trying to reach the server for the first time, in seconds.

        Returns:
            The server's `welcome` frame.

        Raises:
            ConnectError: the server refused us for good (bad id or device, bad token, HTTP 4xx), or could not be
                reached within `retry_for`.
        """
        if self._task is not None and not self._task.done():
            raise ClientError(f"{self.user} is already connected or connecting")
        # Again after a failed (or ended) connection: `close()` stopped the reconnects, which this one must make
        # again, and the old attempt's error and backoff say nothing about this one.
        self._closing = False
        self._attempt = 0
        self._last_error = None
        self._refreshed_since_welcome = False
        if self.token is None and self.token_provider is not None:
            self.token = await self._new_token()
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"peercall-signaling-{self.user}")
        try:
            async with asyncio.timeout(retry_for):
                return await asyncio.shield(self._first)
        except TimeoutError:
            error = self._last_error or "no answer"
            await self.close(f"gave up connecting after {retry_for:g}s: {error}")
            raise ConnectError(f"could not connect to {self.url} within {retry_for:g}s: {error}") from None
        except ConnectError:
            await self.close()
            raise

    async def send(self, frame: Frame) -> bool:
        """Send one client frame.

        Args:
            frame: a client frame (`{"type", "to", "data"?, "callId"?}`).

        Returns:
            False if the connection is not open (the frame is dropped, as the web client does).
        """
        ws = self._ws
        if ws is None or self._state is not SignalingState.CONNECTED:
            log.warning("%s: not connected; dropped %s to %s", self.user, frame.get("type"), frame.get("to"))
            return False
        try:
            await ws.send(json.dumps(frame, separators=(",", ":")))
        except ConnectionClosed:
            log.warning("%s: the connection closed; dropped %s", self.user, frame.get("type"))
            return False
        return True

    async def close(self, reason: str = "closed by us") -> None:
        """Close the connection on purpose and stop reconnecting. Idempotent.

        Args:
            reason: why, as the state change says it.
        """
        self._closing = True
        self._stop_renewal()
        task, self._task = self._task, None
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.NORMAL, "bye")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._first is not None and not self._first.done():
            self._first.cancel()
        self._set_state(SignalingState.DISCONNECTED, reason=reason, terminal=True)

    async def drop(self) -> None:
        """Close the socket as a network failure would, and reconnect as after one (for tests and diagnostics)."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()  # no close frame: the server sees the connection lost

    # ---- the connection loop -----------------------------------------------------------------------------------

    def _address(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        query = urllib.parse.parse_qsl(parts.query)
        query = [(k, v) for k, v in query if k not in ("id", "device")] + [("id", self.user)]
        if self.device:
            query.append(("device", self.device))
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    async def _run(self) -> None:
        self._set_state(SignalingState.CONNECTING)
        while True:
            code, reason, terminal = await self._session()
            if self._closing:
                return
            if terminal and code in (401, CloseCode.UNAUTHORIZED) and self.token_provider is not None:
                terminal, reason = await self._refresh_after_refusal(reason)
            if terminal:
                self._fail(ConnectError(reason, status=code, terminal=True))
                self._set_state(SignalingState.DISCONNECTED, code=code, reason=reason, terminal=True)
                return
            delay = self._backoff()
            log.info("%s: %s; reconnecting in %.1fs", self.user, reason, delay)
            self._set_state(SignalingState.RECONNECTING, code=code, reason=reason, retry_in=delay)
            await asyncio.sleep(delay)

    async def _session(self) -> tuple[int | None, str, bool]:
        """One connection, from the handshake to its close: (code, why it ended, whether that is terminal)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await connect(
                self._address(),
                additional_headers=headers,
                ssl=self._ssl if self.url.startswith("wss:") else None,
                open_timeout=10,
                max_size=4 * 1024 * 1024,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            message = _error_message(exc.response.body) or f"HTTP {status}"
            self._last_error = message
            terminal = 400 <= status < 500 and status not in (408, 429)
            return status, f"the server refused the connection: {message}", terminal
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self._last_error = str(exc) or type(exc).__name__
            return None, f"cannot reach the server ({self._last_error})", False
        self._ws = ws
        last_error: Frame | None = None
        try:
            async for text in ws:
                try:
                    frame = json.loads(text)
                except (ValueError, RecursionError):  # (a frame nested thousands deep stopped the reader for good)
                    log.warning("%s: ignored a frame that is not JSON: %.200r", self.user, text)
                    continue
                if not isinstance(frame, dict):
                    continue
                kind = frame.get("type")
                if kind == "welcome":
                    self._attempt = 0
                    self._refreshed_since_welcome = False
                    self.welcome = frame
                    self._token_expiry(frame.get("tokenExpiresAt"), ws)
                    self._set_state(SignalingState.CONNECTED)
                    if self._first is not None and not self._first.done():
                        self._first.set_result(frame)
                elif kind == "auth-renewed":
                    expires = frame.get("expiresAt")
                    if self._renewed is not None and not self._renewed.done() and isinstance(expires, int | float):
                        self._renewed.set_result(float(expires))
                elif kind == "error":
                    last_error = frame
                    log.info("%s: server error %s: %s", self.user, frame.get("code"), frame.get("message"))
                try:
                    self._on_frame(frame)
                except Exception:  # a bug in a handler must not take the connection down
                    log.exception("%s: error while handling a %s frame", self.user, kind)
        except ConnectionClosed:
            pass
        finally:
            self._stop_renewal()
            if self._ws is ws:
                self._ws = None
        code = ws.close_code if ws.close_code is not None else 1006
        why = ws.close_reason or ""
        if last_error is not None and is_terminal_close(code):
            why = str(last_error.get("message") or why)
        text = _CLOSE_REASONS.get(code, "lost the connection to the server")
        reason = f"{text} ({code}{': ' + why if why else ''})"
        self._last_error = reason
        return code, reason, is_terminal_close(code)

    # ---- token renewal ----------------------------------------------------------------------------------------

    async def _new_token(self) -> str:
        """A token from the provider (bounded by TOKEN_WAIT); raises what it raises, or ConnectError."""
        assert self.token_provider is not None
        try:
            async with asyncio.timeout(TOKEN_WAIT):
                got = self.token_provider()
                token = await got if inspect.isawaitable(got) else got
        except TimeoutError:
            raise ConnectError(f"the token provider gave no token within {TOKEN_WAIT:g}s") from None
        if not isinstance(token, str) or not token.strip():
            raise ConnectError(f"the token provider gave no token ({type(token).__name__})", terminal=True)
        return token.strip()

    async def _refresh_after_refusal(self, reason: str) -> tuple[bool, str]:
        """The server refused our token: get another and reconnect with it, once between two `welcome`s.

        Returns:
            (whether the refusal is still terminal, the reason to report).
        """
        if self._refreshed_since_welcome:
            return True, reason
        self._refreshed_since_welcome = True
        try:
            token = await self._new_token()
        except Exception as exc:  # a provider's own error (a file gone, a wrong password) ends it here
            self._last_error = f"{reason}; and no new token: {exc}"
            return True, self._last_error
        if token == self.token:
            return True, f"{reason}; {self.provider_name} has no newer token"
        self.token = token
        log.info("%s: %s; reconnecting with a new token", self.user, reason)
        return False, f"{reason}; reconnecting with a new token"

    def _token_expiry(self, expires: Any, ws: ClientConnection) -> None:
        """Note when the token expires, and renew it before then if we can."""
        self._stop_renewal()
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            self.token_expires_at = None
            return
        self.token_expires_at = float(expires)
        self._renewal = asyncio.get_running_loop().create_task(
            self._renew(float(expires), ws), name=f"peercall-renewal-{self.user}"
        )

    def _stop_renewal(self) -> None:
        task, self._renewal = self._renewal, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    @property
    def provider_name(self) -> str:
        """How messages name the token provider (`the token file …` for `token_file()`)."""
        name = getattr(self.token_provider, "__qualname__", "")
        return name if name.startswith("the ") else "the token provider"

    async def _renew(self, expires: float, ws: ClientConnection) -> None:
        """Renew the token on this connection, a margin before `expires`, and again before each new expiry.

        The margin is a fifth of the token's (remaining) lifetime, at least MIN_MARGIN, at most half of it (so that
        very short tokens are not renewed back to back), and renewals are at least a second apart. Without a
        provider, or when it has nothing newer by `LAST_CHANCE` after the expiry, `on_token_lost` is told.
        """
        try:
            while True:
                if self.token_provider is None:
                    await asyncio.sleep(max(0.0, expires + LAST_CHANCE - time.time()))
                    why = "the token expired, and there is no way to renew it (no token provider)"
                    renewed = None
                else:
                    lifetime = expires - time.time()
                    margin = min(max(MIN_MARGIN, 0.2 * lifetime), 0.5 * lifetime)
                    await asyncio.sleep(max(1.0, expires - margin - time.time()))
                    renewed, why = await self._renew_once(expires, ws)
                if renewed is None:
                    # Gave up: a server that enforces expiry closes the connection (4401) in a moment, and a new
                    # token then (the provider is asked once more) reconnects us.
                    if self._on_token_lost is not None and self._ws is ws:
                        await self._on_token_lost(why)
                    return
                expires = renewed
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not go unnoticed, nor take the connection down
            log.exception("%s: the token renewal failed", self.user)

    async def _renew_once(self, expires: float, ws: ClientConnection) -> tuple[float | None, str]:
        """Send a new token (asking the provider again until it gives a newer one, until `LAST_CHANCE` after
        `expires`): its new expiry, or None and why not."""
        deadline = expires + LAST_CHANCE
        why = f"{self.provider_name} had no newer token"
        while time.time() < deadline:
            retry = min(5.0, max(0.5, (deadline - time.time()) / 4))
            try:
                token = await self._new_token()
            except Exception as exc:
                why = f"{self.provider_name} failed: {exc}"
                log.warning("%s: could not get a new token (%s); trying again in %.1fs", self.user, exc, retry)
                await asyncio.sleep(retry)
                continue
            if token == self.token:
                why = f"{self.provider_name} had no newer token"
                log.info("%s: %s has no newer token yet; asking again in %.1fs", self.user, self.provider_name, retry)
                await asyncio.sleep(retry)
                continue
            self._renewed = asyncio.get_running_loop().create_future()
            try:
                await ws.send(json.dumps({"type": "auth", "token": token}, separators=(",", ":")))
                async with asyncio.timeout(RENEWAL_WAIT):
                    new_expiry = await self._renewed
            except (ConnectionClosed, TimeoutError) as exc:
                log.warning("%s: the token renewal got no answer (%s)", self.user, type(exc).__name__)
                return None, f"the token renewal got no answer ({type(exc).__name__})"
            finally:
                self._renewed = None
            self.token = token
            self.token_expires_at = new_expiry
            self.renewals += 1
            log.info("%s: renewed the token; it now expires in %.0fs", self.user, new_expiry - time.time())
            return new_expiry, ""
        why = f"the token expired and could not be renewed: {why}"
        log.warning("%s: %s", self.user, why)
        return None, why

    def _backoff(self) -> float:
        """Exponential backoff with jitter: uniform in [d/2, d], d = min(max, min * 2^attempt)."""
        ceiling = min(self._max_delay, self._min_delay * 2**self._attempt)
        self._attempt += 1
        return float(ceiling / 2 + random.random() * ceiling / 2)

    def _fail(self, exc: ConnectError) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_exception(exc)

    def _set_state(self, state: SignalingState, **extra: Any) -> None:
        previous = self._state
        self._state = state
        if previous is state and state is not SignalingState.RECONNECTING:
            return
        self._on_state(StateChange(state, previous, **extra))


def _error_message(body: bytes | bytearray | None) -> str | None:
    """The `message` of an HTTP error body `{"error":{"code","message"}}`, if it is one."""
    try:
        error = json.loads(body or b"").get("error", {})
        return f"{error['code']}: {error['message']}"
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
