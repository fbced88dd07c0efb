"""Run the app under uvicorn, with a startup banner and a graceful shutdown that says "going away" (1001)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import socket
import sys
import time
import urllib.parse
from pathlib import Path

import uvicorn

from .. import PROTOCOL_VERSION, __version__
from ..config import Settings, data_folder
from ..hub.router import Hub
from ..protocol.codes import CloseCode
from .accounts import AccountsApi
from .app import PeercallApp, _safe_url, create_app
from .front import protocol_for
from .guard import allowed_hosts
from .session import Sessions, is_signaling_path
from .ws import PeercallWebSocketProtocol

log = logging.getLogger("peercall")

LOG_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


GC_YOUNG = 10_000
"""Allocations that start a collection of the youngest generation (Python's default: 700)."""


def tune_gc() -> None:
    """Once the server is up: what startup allocated (modules, the app, its tables) is frozen out of the cyclic
    collector's scans, and the youngest generation is collected every `GC_YOUNG` allocations instead of 700.

    Why: in a py-spy profile of a 10,000-connection connect storm, collections were ~9% of the server's CPU (most
    of a connect's objects live as long as its socket, so each survived into collection after collection).

    The cost: the older generations are collected seldom (under bench/soak.py's 1,000 users: the youngest about once
    a minute, the middle one and the oldest not once in 7 minutes), so what lived a while and then dies in a
    reference cycle stays for as long. A connection therefore breaks its cycles as it ends (`Session.ended`,
    `_Upgrade.to_bytes`, `AsgiConnection.release`; tests/integration/test_connection_memory.py): refcounting frees
    it with its socket.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


class PeercallServer(uvicorn.Server):
    """uvicorn's server, plus: a banner once the port is bound, and 1001 to every client on shutdown.

    uvicorn's own shutdown closes WebSockets with 1012 (service restart) and only then tells the app; we close
    them first ourselves, so clients see 1001 "going away" and the hub refuses new ones meanwhile, and wait for
    every session to end (on either transport: uvicorn does not track picows's sockets).
    """

    def __init__(self, config: uvicorn.Config, settings: Settings, hub: Hub) -> None:
        super().__init__(config)
        self.settings = settings
        self.hub = hub
        self.tls_names: list[str] = []
        self.sessions: Sessions | None = None
        self.accounts: AccountsApi | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            tune_gc()
            port = self.servers[0].sockets[0].getsockname()[1]
            print(banner(self.settings, port, self.tls_names), flush=True)
            accounts = self.accounts
            if accounts is not None:
                scheme = "https" if self.settings.tls else "http"
                link = accounts.setup_link(f"{scheme}://localhost:{port}")
                if link is not None:  # printed once: only its hash is kept
                    print(
                        "  SET-UP        nobody has an account yet: open this link (once, within a day) to make the "
                        f"first administrator\n                {link}",
                        flush=True,
                    )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        count = len(self.hub)
        if count:
            log.info("closing %d connection(s) with 1001 going away", count)
        try:
            async with asyncio.timeout(self.settings.shutdown_timeout):
                await self.hub.close_all(CloseCode.GOING_AWAY, "server shutting down")
                sessions = self.sessions
                if sessions is not None:  # and those still waiting for their auth frame
                    await sessions.close_all(CloseCode.GOING_AWAY, "server shutting down")
                    while sessions.live:  # noqa: ASYNC110 - only at shutdown; an Event would cost every socket
                        await asyncio.sleep(0.02)
        except TimeoutError:
            log.warning("some connections did not close within %.1fs", self.settings.shutdown_timeout)
        await super().shutdown(sockets)


def banner(settings: Settings, port: int, tls_names: list[str] | None = None) -> str:
    host = settings.host
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    http, ws = ("https", "wss") if settings.tls else ("http", "ws")
    base = f"{http}://{shown}:{port}"
    urls = [
        u
        for server in settings.fixed_ice_servers()
        for u in ([server.urls] if isinstance(server.urls, str) else server.urls)
    ]
    urls += settings.turn_urls
    ice = ", ".join(urls) or "none (host candidates only: fine on one machine or one LAN)"
    if settings.turn_secret is not None:
        ice += f" (TURN credentials minted per user, valid {settings.turn_ttl}s)"
    if settings.ice_transport_policy == "relay":
        ice += "; relay only"
    if settings.turn_secret is not None and settings.auth == "open":
        ice += "\n                WARNING: auth is open, so anyone who reaches this server gets TURN credentials"
    auth = {
        "open": "open: anyone may connect under any id (use PEERCALL_AUTH=token on an untrusted network)",
        "token": "token: a signed JWT is required (sub = user id)",
        "accounts": "accounts: users sign in (invites, passkeys, passwords); `peercall user` and `peercall invite` "
        "manage them",
    }[settings.auth]
    lines = [
        f"peercall {__version__} (signaling protocol v{PROTOCOL_VERSION}) listening on {host}:{port}",
        f"  web client    {base}/",
        f"  two-tab demo  {base}/callerA.html and {base}/callerB.html",
        f"  signaling     {ws}://{shown}:{port}/ws?id=<your-id>",
        f"  ICE servers   {ice}",
        f"  auth          {auth}",
        f"  calls         ring {settings.ring_timeout:g}s, resume grace {settings.resume_grace:g}s, "
        f"history in {_safe_url(settings)}",
    ]
    if settings.webhook_urls:
        hosts = ", ".join(dict.fromkeys(_origin(url) for url in settings.webhook_urls))
        kinds = ", ".join(settings.webhook_events) or "every call event"
        lines.append(f"  webhooks      {kinds} to {hosts} (signed; retried {settings.webhook_retry_for:g}s)")
    allowed = allowed_hosts(settings)
    if allowed is None:
        hosts = "any Host header (PEERCALL_ALLOWED_HOSTS=*)"
    else:
        named = sorted(allowed, key=lambda n: (":" in n, n[:1].isdigit(), n))
        hosts = ", ".join(named[:6]) + (f" and {len(named) - 6} more" if len(named) > 6 else "")
        hosts += "\n                (any other name gets 421: add yours to PEERCALL_ALLOWED_HOSTS)"
    lines.append(f"  answers for   {hosts}")
    lines += [f"  note          {note}" for note in limit_notes(settings)]
    lan = [n for n in (tls_names or []) if n not in ("localhost", "127.0.0.1", "::1")]
    if lan and host in ("0.0.0.0", "::"):
        lines.append("  on your LAN   " + "  ".join(f"https://{'[' + n + ']' if ':' in n else n}:{port}/" for n in lan))
        lines.append("                (self-signed: the browser asks once to accept the certificate)")
    elif host in ("0.0.0.0", "::") and not settings.tls:
        lines.append("  note          browsers allow the microphone only on https or localhost; for a LAN call")
        lines.append("                run `peercall serve --tls-self-signed`")
    return "\n".join(lines)


_CALL_START_TOKENS = 30
"""What a call's start costs in rate tokens, about: an offer of a few KB (one token a KiB), its answer's side of
the candidates (one each), media-state."""


def limit_notes(settings: Settings) -> list[str]:
    """Warnings about rate limits that would refuse what calls need, or let a client send more than they mean to."""
    notes = []
    burst = settings.rate_burst
    if burst < _CALL_START_TOKENS:
        notes.append(
            f"PEERCALL_RATE_BURST={burst} is below what a call's start takes (~{_CALL_START_TOKENS} frames' worth: "
            "an offer costs a token a KiB): calls may fail to connect"
        )
    if settings.max_message_size >= burst * 1024:  # a frame costs 1 + its whole KiB, at most the burst
        notes.append(
            f"PEERCALL_MAX_MESSAGE_SIZE={settings.max_message_size} is above what the rate burst pays for: a frame "
            f"costs a token a KiB, but at most the burst ({burst}), so frames of {burst} KiB or more cost less "
            "than their size"
        )
    return notes


def _origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: what the banner shows of a webhook URL (its path or user may be secret)."""
    parts = urllib.parse.urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port is not None else "")


_WEBSOCKET_LINE = re.compile(r'"WebSocket (\S+)"')


class _QuietWebSocketLines(logging.Filter):
    """Drop uvicorn's per-WebSocket lines of `/ws` (whatever spelling of it `is_signaling_path` takes): peercall.ws
    logs each connection once, with its id and outcome. Its lines about other paths (refused: 403) stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in ("connection open", "connection closed"):
            return False
        line = _WEBSOCKET_LINE.search(message)
        return line is None or not is_signaling_path(line.group(1))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and `callId` when the line is about a call."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            entry["callId"] = call_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)
    if fmt == "json":
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    logging.getLogger("uvicorn.error").addFilter(_QuietWebSocketLines())


def uvicorn_config(
    settings: Settings, app: PeercallApp, *, certfile: Path | None = None, keyfile: Path | None = None
) -> uvicorn.Config:
    """How uvicorn serves `app` (`serve`'s, and the in-process servers' of tests)."""
    # /ws is served by picows (server/fastws.py) behind a front protocol that reads each first request head
    # (server/front.py; the rest goes to uvicorn's httptools protocol); with per-message deflate,
    # which picows does not do, by uvicorn's own WebSocket protocol and the ASGI transport (server/ws.py).
    fast_ws = not settings.ws_per_message_deflate
    return uvicorn.Config(
        app,
        http=protocol_for(app.sessions, fast_ws),
        loop="uvloop",
        host=settings.host,
        port=settings.port,
        ws=PeercallWebSocketProtocol,  # uvicorn's websockets-sansio, with the session's limits on every frame
        ws_max_size=app.sessions.hard_limit,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        lifespan="on",
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.shutdown_timeout,  # type: ignore[arg-type]  # a float works
        server_header=False,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM. Returns the process exit code."""
    configure_logging(settings.log_level, settings.log_format)
    settings.log_history_choice()
    settings.log_weak_secrets()
    try:
        app = create_app(settings)
    except ValueError as exc:  # a setting only the composition can check (a key, the call policy)
        print(f"peercall: invalid settings: {exc}", file=sys.stderr)
        return 2
    tls_names: list[str] = []
    certfile, keyfile = settings.certfile, settings.keyfile
    if settings.tls_self_signed:
        from .tls import self_signed

        certfile, keyfile, tls_names = self_signed(data_folder() / "tls")
        log.info("serving https with a self-signed certificate (%s)", certfile)
    config = uvicorn_config(settings, app, certfile=certfile, keyfile=keyfile)
    server = PeercallServer(config, settings, app.state.hub)
    server.tls_names = tls_names
    server.sessions = app.sessions
    server.accounts = app.state.accounts
    try:
        server.run()
    except KeyboardInterrupt:
        # Ctrl+C: uvicorn shut down cleanly, then raised the SIGINT it caught again (as it does SIGTERM, which ends
        # the process), and Python's handler made it a KeyboardInterrupt. Its traceback would follow the log of a
        # clean shutdown as if something broke; 130 is what a shell says of a program it interrupted.
        return 130
    return 0 if server.started else 1
