"""create_app(settings): the composition root. Wires the hub, the routes and the middleware together."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from .. import PROTOCOL_VERSION, __version__
from ..config import Settings
from ..hub.router import Hub
from .ws import SignalingEndpoint

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("peercall.http")


def create_app(settings: Settings) -> Starlette:
    """The ASGI app. `app.state.hub` is the hub, `app.state.settings` the settings."""
    hub = Hub()
    ice_servers = {"iceServers": [server.as_json() for server in settings.ice_servers]}

    async def get_ice_servers(request: Request) -> Response:
        return JSONResponse(ice_servers, headers={"cache-control": "no-store"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "protocol": PROTOCOL_VERSION})

    async def readyz(request: Request) -> Response:
        if hub.draining:
            return JSONResponse({"status": "shutting-down"}, status_code=503)
        return JSONResponse({"status": "ready", "connections": len(hub)})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": {"code": "internal-error", "message": "internal server error"}}, status_code=500
        )

    routes = [
        WebSocketRoute("/ws", SignalingEndpoint(hub, settings.max_message_size)),
        Route("/ice-servers", get_ice_servers),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static"),
    ]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=["authorization", "content-type"],
        )
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.hub = hub
    app.state.settings = settings
    return app
