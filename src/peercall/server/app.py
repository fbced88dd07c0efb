"""create_app(settings): the composition root. Wires the hub, the routes and the middleware together."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import PROTOCOL_VERSION, __version__
from ..auth.tokens import AccountsVerifier, AuthError, TokenVerifier
from ..auth.turn import turn_credentials
from ..auth.vapid import vapid_key
from ..broker import open_broker
from ..config import Settings, data_folder
from ..core.social import CallsFrom, Directory
from ..hub.push import PushService, VapidKey
from ..hub.router import Hub
from ..hub.social import Social, load_policy
from ..hub.webhooks import Webhooks
from ..protocol.messages import is_valid_id
from ..protocol.schema import schema
from ..store import Store, open_history
from .accounts import AccountsApi
from .guard import WebGuard
from .heap import HeapTrimmer
from .jsonapi import NO_STORE, error_response
from .metrics import CONTENT_TYPE, registry_for, render
from .push import PushApi
from .session import Sessions, address_group, is_signaling_path
from .webapp import WebApp
from .ws import AsgiTransport

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("peercall.http")


class PeercallApp:
    """The ASGI entry: a WebSocket upgrade that `is_signaling_path` takes for `/ws` goes straight to the ASGI
    transport (server/ws.py), any other upgrade is refused (HTTP 403), and everything else goes to Starlette.

    Normally a `/ws` upgrade never gets here: uvicorn's HTTP protocol hands it to picows first (server/fastws.py),
    after the same `is_signaling_path`. This ASGI path serves `/ws` only with per-message deflate on (picows has no
    compression). It skips Starlette's middleware stack on purpose: CORS does not apply to it, and the transport
    needs uvicorn's own `send` (to see when a slow reader's socket is not writable).
    """

    def __init__(self, http: Starlette, sessions: Sessions) -> None:
        self.http = WebGuard(http, sessions.settings)  # Host check and security headers on every HTTP response
        self.sessions = sessions
        self.ws = AsgiTransport(sessions)
        self.state = http.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            answered = False

            async def sent(message: dict[str, Any]) -> None:
                nonlocal answered
                answered = answered or message["type"] == "http.response.start"
                await send(message)

            try:
                await self.http(scope, receive, sent)
            except Exception:
                # Starlette raises again what its handler (`server_error`) logged and answered 500, for the server
                # to log: the same traceback twice, and past the address's log budget. Only one that nothing
                # answered goes on to the server.
                if not answered:
                    raise
        elif is_signaling_path(scope.get("raw_path") or scope["path"].replace("%", "%25")):
            await self.ws(scope, receive, send)
        else:  # nothing but /ws upgrades: a close before the accept is uvicorn's HTTP 403
            await send({"type": "websocket.close", "code": 1000})


def create_app(settings: Settings) -> PeercallApp:
    """The ASGI app. `app.state.hub` is the hub, `app.state.settings` the settings, `app.state.heap` the C heap's
    trimmer (server/heap.py)."""
    history = open_history(settings.database_url)
    broker = open_broker(
        settings.redis_url or "memory://",
        ring_timeout=settings.ring_timeout,
        resume_grace=settings.resume_grace,
        private=settings.private,
        node_id=settings.node_id,
        lease=settings.node_lease,
        prefix=settings.redis_prefix,
    )
    social = Social(
        history,  # the history's store keeps contacts too (store/base.py: Store)
        directory=Directory(settings.effective_directory),
        default_calls_from=CallsFrom(settings.effective_calls_from),
        private=settings.private,
        rate_per_minute=settings.contact_rate,
        policy=load_policy(settings.call_policy) if settings.call_policy else None,
        clock=time.time,
        shared=broker.shared,
        services=frozenset(settings.reserved_ids),
        store_timeout=settings.store_timeout,
    )
    webhooks = None
    if settings.webhook_urls:
        webhooks = Webhooks(
            settings.webhook_urls,
            settings.webhook_keys(),
            events=settings.webhook_events or None,
            retry_for=settings.webhook_retry_for,
            queue=settings.webhook_queue,
        )
    push: PushService | None = None
    if settings.push:
        secret = settings.vapid_private_key.get_secret_value() if settings.vapid_private_key else None
        try:
            key = VapidKey(vapid_key(secret, data_folder()))
        except ValueError as exc:  # its message names no key material
            where = "PEERCALL_VAPID_PRIVATE_KEY" if secret else str(data_folder() / "vapid.pem")
            raise ValueError(f"{where}: {exc}") from None
        push = PushService(
            history,  # the same store keeps the push subscriptions
            key,
            subject=settings.vapid_subject or _vapid_subject(settings.public_url),
            services=settings.push_services,
            names=_display_names(history) if settings.auth == "accounts" else None,
            shared=broker.shared,
            store_timeout=settings.store_timeout,
        )
    hub = Hub(
        broker,
        history=history,
        presence_interval=settings.presence_interval,
        history_retention=settings.history_retention * 86400,
        social=social,
        display_names=settings.auth != "open",
        webhooks=webhooks,
        push=push,
        store_timeout=settings.store_timeout,
        call_rate=settings.call_rate,
        relay_buffer=settings.effective_relay_buffer,
    )
    fixed_ice = [server.as_json() for server in settings.fixed_ice_servers()]
    # Whether a call can be relayed at all: a TURN server among them (what "Hide my IP address" needs; /healthz)
    has_relay = bool(settings.turn_urls) or any(
        url.lower().startswith(("turn:", "turns:"))
        for server in settings.fixed_ice_servers()
        for url in ([server.urls] if isinstance(server.urls, str) else server.urls)
    )
    turn_secret = settings.turn_secret.get_secret_value() if settings.turn_secret else None
    verifier = TokenVerifier.for_settings(settings)

    async def caller(request: Request) -> str | Response:
        """Who is asking: the token's user in token mode, else `?id=`. A Response when that is not acceptable."""
        asked = request.query_params.get("id")
        if verifier is None:
            if not is_valid_id(asked):
                return error_response(
                    400, "bad-id", "give ?id=<user id> (1-64 ASCII letters, digits, '_', '-', '.' or '@')"
                )
            return asked  # type: ignore[return-value]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise AuthError("send 'Authorization: Bearer <token>'")
            user = (await verifier.check(token.strip())).user
        except AuthError as exc:
            return error_response(401, "unauthorized", str(exc), {"www-authenticate": "Bearer"})
        if asked is not None and asked != user:
            return error_response(403, "forbidden", f"the token is for {user}, not {asked}")
        return user

    async def get_ice_servers(request: Request) -> Response:
        # Token mode: a token first, whatever is configured (static TURN credentials are for users only).
        user = await caller(request) if verifier is not None else request.query_params.get("id", "anonymous")
        if isinstance(user, Response):
            return user
        servers = list(fixed_ice)
        if settings.turn_urls:
            turn: dict[str, object] = {"urls": settings.turn_urls}
            if turn_secret is not None:
                if not is_valid_id(user):
                    user = "anonymous"
                turn["username"], turn["credential"] = turn_credentials(
                    user, turn_secret, settings.turn_ttl, time.time()
                )
            servers.append(turn)
        body: dict[str, object] = {"iceServers": servers, "iceTransportPolicy": settings.ice_transport_policy}
        if turn_secret is not None:
            body["ttl"] = settings.turn_ttl
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def healthz(request: Request) -> Response:
        # What a client needs before it signs in: whether a token is required (or accounts, and whether they take
        # passkeys), whether every call is relayed, and whether any can be (a TURN server).
        body: dict[str, object] = {
            "status": "ok",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "auth": settings.auth,
            "iceTransportPolicy": settings.ice_transport_policy,
            "relay": has_relay,
        }
        if settings.auth != "open":
            body["authExpiry"] = settings.effective_auth_expiry  # whether a token that expires closes the socket
        if settings.auth == "accounts":
            body["passkeys"] = True
        return JSONResponse(body)

    metrics_token = settings.metrics_token.get_secret_value().encode() if settings.metrics_token else None
    counts_public = metrics_token is None and settings.auth == "open" and not settings.private

    def may_see_counts(request: Request) -> bool:
        """Whether this request may read how many users and connections there are (docs/operations.md)."""
        if metrics_token is not None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), metrics_token)
        return counts_public or _is_loopback(request)

    async def readyz(request: Request) -> Response:
        if hub.draining:
            return JSONResponse({"status": "shutting-down"}, status_code=503)
        if not await broker.ping():
            return JSONResponse({"status": "redis-unreachable", "node": broker.node}, status_code=503)
        if not may_see_counts(request):
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "ready", "connections": len(hub), "historyWriteFailures": hub.history_failures})

    async def api_calls(request: Request) -> Response:
        user = await caller(request)
        if isinstance(user, Response):
            return user
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 200:
            return error_response(400, "bad-limit", "limit must be a whole number from 1 to 200")
        try:
            page, cursor = await history.calls_for(user, limit=limit, before=request.query_params.get("before"))
        except ValueError:
            return error_response(400, "bad-cursor", "'before' must be a cursor returned as 'next' by this endpoint")
        except Exception:
            if may_log(request):
                log.exception("could not read the history of %s", user)
            return error_response(
                503, "history-unavailable", "the call history cannot be read right now; try again shortly"
            )
        shown = [r.to_json(viewer=user, devices=verifier is not None) for r in page]  # open mode: anyone may ask
        return JSONResponse({"calls": shown, "next": cursor}, headers=NO_STORE)

    protocol_schema = schema()

    async def get_schema(request: Request) -> Response:
        return JSONResponse(protocol_schema, media_type="application/schema+json")

    async def get_metrics(request: Request) -> Response:
        if not may_see_counts(request):
            if metrics_token is not None:
                return error_response(
                    401,
                    "unauthorized",
                    "send 'Authorization: Bearer <PEERCALL_METRICS_TOKEN>'",
                    {"www-authenticate": "Bearer"},
                )
            return error_response(
                403,
                "forbidden",
                "in private, token or accounts mode /metrics is served to this machine only; set "
                "PEERCALL_METRICS_TOKEN to scrape it from elsewhere",
            )
        return Response(render(metrics_registry), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        # a 500 that someone can cause again and again logs at most the budget of their address (PeercallApp
        # keeps Starlette's second copy of the traceback out of the log)
        if may_log(request):
            log.error("%s %s failed", request.method, request.url.path[:200], exc_info=exc)
        return JSONResponse({"error": {"code": "internal-error", "message": "internal server error"}}, status_code=500)

    sessions = Sessions(hub, settings, verifier)

    def may_log(request: Request) -> bool:
        """Whether a line about this request may be logged now: the LogBudget of its client's address."""
        return sessions.log_budget.allows(address_group(request.client.host) if request.client else "-")

    accounts: AccountsApi | None = None
    if isinstance(verifier, AccountsVerifier):
        # One verifier: its set of revoked sign-ins is the one AccountsApi refreshes.
        accounts = AccountsApi(settings, history, verifier, broker)
        hub.sign_in_of = sessions.sign_in_of  # a sign-out closes the connections of that sign-in only
    hub.may_log = sessions.may_log

    async def push_user(request: Request) -> str | Response:
        """Who asks the push routes: a bearer token's user, else (accounts mode) the sign-in cookie's."""
        if accounts is not None and "authorization" not in request.headers:
            return await accounts.signed_in_user(request)
        return await caller(request)

    push_api = PushApi(push, hub, push_user, may_log=may_log)
    if verifier is not None:
        hub.renew = sessions.renew  # a later `auth` frame renews the connection's token
    metrics_registry = registry_for(hub, sessions)
    index_html = (STATIC_DIR / "index.html").read_text()
    demo_pages = {
        f"/caller{me}.html": demo_page(index_html, me, peer).encode() for me, peer in (("A", "B"), ("B", "A"))
    }

    webapp = WebApp(STATIC_DIR, __version__, settings.embed_origins)  # sw.js, call links, the embed page

    async def get_demo_page(request: Request) -> Response:
        return Response(demo_pages[request.url.path], media_type="text/html; charset=utf-8")

    routes: list[BaseRoute] = [
        *(accounts.routes() if accounts is not None else []),
        *push_api.routes(),
        Route("/ice-servers", get_ice_servers),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/calls", api_calls),
        Route("/protocol/v1/schema.json", get_schema),
        Route("/metrics", get_metrics),
        Route("/callerA.html", get_demo_page),
        Route("/callerB.html", get_demo_page),
        *webapp.routes(),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"),
    ]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=["authorization", "content-type"],
            allow_credentials=False,
        )
    ]

    heap = HeapTrimmer()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await history.open()
        except Exception:
            # Calling works without history; say so loudly and go on.
            log.exception("could not open the call history at %s; calls are not recorded", _safe_url(settings))
        await hub.take_calls()
        await broker.start()
        if verifier is not None:
            await verifier.start()  # a JWKS is fetched now (bounded), and kept fresh
        if accounts is not None:
            await accounts.start()
        heap.start()
        yield
        heap.stop()
        if accounts is not None:
            await accounts.stop()
        if verifier is not None:
            await verifier.stop()
        if sessions.expiries is not None:
            sessions.expiries.stop()
        await hub.drain()
        if push is not None:
            await push.stop()
        await hub.keep_calls()
        await broker.stop()
        if webhooks is not None:
            await webhooks.close()  # after the broker: the calls it ended as the node left are sent too
        await history.close()

    app = Starlette(
        lifespan=lifespan,
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.hub = hub
    app.state.heap = heap
    app.state.settings = settings
    app.state.accounts = accounts
    app.state.push = push
    return PeercallApp(app, sessions)


def _vapid_subject(public_url: str | None) -> str:
    """Who runs the server, for the push services, when PEERCALL_VAPID_SUBJECT is unset."""
    return public_url if public_url is not None and public_url.startswith("https://") else "mailto:admin@localhost"


def _display_names(store: Store) -> Callable[[str], Awaitable[str | None]]:
    async def name(user_id: str) -> str | None:
        user = await store.user(user_id)
        return None if user is None else user.name

    return name


def _is_loopback(request: Request) -> bool:
    """Whether the client (the address a trusted proxy forwarded, if any) is this machine."""
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def _safe_url(settings: Settings) -> str:
    """The database URL without its password, for logs."""
    url = settings.database_url
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def demo_page(index_html: str, me: str, peer: str) -> str:
    """The seed's two-tab demo page of Client `me` ("A" or "B"): the web client with both names preset.

    Made from index.html at startup rather than kept as two more copies of it; every substitution must match,
    so a change to index.html that breaks one fails at startup (and in the tests), not silently.
    """
    mine, theirs = f"client{me}", f"client{peer}"
    substitutions = [
        ("<title>peercall</title>", f"<title>Client {me} \u2013 peercall</title>"),
        ("<body>", f'<body data-id="{mine}" data-peer="{theirs}">'),
        ("<span>peercall</span>", f'<span>peercall</span> <span class="tag">Client {me}</span>'),
        ('maxlength="64" placeholder="e.g. alice"', f'maxlength="64" value="{mine}"'),
        ('class="primary">Connect</button>', 'class="primary">Connect to Server</button>'),
        (
            "Open this page in another tab or on another device.",
            f'Open <a href="caller{peer}.html">Client {peer}</a> in another tab.',
        ),
        ('maxlength="64" placeholder="their name"', f'maxlength="64" value="{theirs}"'),
        ('class="primary" disabled>Call</button>', f'class="primary" disabled>Call Client {peer}</button>'),
        (
            'Two-tab demo: <a href="callerA.html">Client A</a> · <a href="callerB.html">Client B</a>',
            f'Two-tab demo: this is Client {me}; open <a href="caller{peer}.html">Client {peer}</a> in another tab.'
            ' <a href="./">Call anyone</a>',
        ),
    ]
    page = index_html
    for old, new in substitutions:
        if page.count(old) != 1:
            raise RuntimeError(f"index.html no longer has exactly one {old!r}: update demo_page()")
        page = page.replace(old, new)
    return page
