"""The web app's routes beside its static files: the service worker, call links and the embeddable call button.

- `/sw.js`: static/sw.js with the app shell's paths and version filled in (`BUILD`), never cached by HTTP, so that
  the browser sees a new version of the server as a new worker (which replaces the cached shell).
- `/call/<id>`: a call link. It sends the browser to the app's page with `?call=<id>` (a relative redirect, so it
  works behind a proxy that serves peercall under a path); the page asks "Call <id>?" once connected (main.js,
  calllink.js). An id that breaks the protocol's id rule gets a 404 page that says so.
- `/embed/call/<id>`: a small page for an `<iframe>` on another site: a "Call <id>" button that opens the call
  link in a new tab. Only this page may be framed, and only by `PEERCALL_EMBED_ORIGINS` (CSP `frame-ancestors`);
  every other response keeps `frame-ancestors 'none'` and `X-Frame-Options: DENY` (server/guard.py).

Imports nothing of the hub or the transports.
"""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..protocol.messages import is_valid_id
from .guard import content_security_policy

SHELL = ("css/*.css", "js/*.js", "icons/*.png", "manifest.webmanifest")
"""What the service worker keeps for offline use, besides the page itself (`./`)."""
NOT_SHELL = frozenset({"js/sw-push.js"})  # the worker's own import: the browser keeps it with the worker
BUILD_LINE = 'const BUILD = { version: "dev", shell: [] }; // filled in by the server (server/webapp.py)'
ID_RULE = "1\u201364 characters: a\u2013z, A\u2013Z, 0\u20139 and _ - . @ (no spaces or accents)"
LOGO = (
    '<svg class="logo" viewBox="0 0 24 24" aria-hidden="true"><rect width="24" height="24" rx="6"/><path d="M8.2 '
    "5.5c.4 0 .8.3.9.7l.7 2.6c.1.4 0 .8-.3 1l-1.2 1a9.6 9.6 0 0 0 4.9 4.9l1-1.2c.3-.3.7-.4 1-.3l2.6.7c.4.1.7.5.7.9V18c0"
    ' .6-.4 1-1 1A13.5 13.5 0 0 1 5 6.5c0-.6.4-1 1-1z"/></svg>'
)


def shell_paths(static_dir: Path) -> list[str]:
    """The app shell, as paths relative to the app's folder: the page first."""
    found = {str(p.relative_to(static_dir)) for pattern in SHELL for p in static_dir.glob(pattern) if p.is_file()}
    return ["./", *sorted(found - NOT_SHELL)]


def service_worker(static_dir: Path, version: str) -> bytes:
    """static/sw.js with `BUILD` filled in: the shell's paths, and `version` plus a hash of the shell's files (so
    that a changed file makes a new worker even when the version stays the same, as in development).

    Raises:
        RuntimeError: sw.js no longer has exactly one `BUILD` line to fill in (caught at startup and in tests).
    """
    source = (static_dir / "sw.js").read_text()
    if source.count(BUILD_LINE) != 1:
        raise RuntimeError("static/sw.js no longer has exactly one BUILD line: update server/webapp.py")
    paths = shell_paths(static_dir)
    digest = hashlib.sha256()
    for path in ["index.html", *paths[1:]]:
        digest.update(path.encode() + b"\0" + (static_dir / path).read_bytes())
    build = {"version": f"{version}-{digest.hexdigest()[:12]}", "shell": paths}
    line = f"const BUILD = {json.dumps(build)}; // filled in by the server (server/webapp.py)"
    return source.replace(BUILD_LINE, line).encode()


def _page(title: str, body: str, up: str, status: int = 200, csp: str | None = None) -> HTMLResponse:
    """A small page of the app's look; `up` leads from its address to the app's folder ("../")."""
    text = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>{html.escape(title)}</title>\n"
        f'<link rel="stylesheet" href="{up}css/peercall.css">\n</head>\n{body}\n</html>\n'
    )
    headers = {"cache-control": "no-cache"}
    if csp is not None:
        headers["content-security-policy"] = csp
    return HTMLResponse(text, status_code=status, headers=headers)


def _not_a_call_link(given: str, up: str) -> HTMLResponse:
    shown = html.escape(given[:80] + ("…" if len(given) > 80 else ""))
    body = (
        '<body class="link-page">\n<main class="card link-card">\n'
        f'<h1 class="brand">{LOGO}<span>peercall</span></h1>\n'
        '<h2 id="link-problem">This call link is not valid</h2>\n'
        f"<p>“{shown}” is not a user id: ids are {ID_RULE}. Ask whoever sent it for their link again.</p>\n"
        f'<p><a class="button primary" href="{up}">Open peercall</a></p>\n</main>\n</body>'
    )
    return _page("Not a call link \u2013 peercall", body, up, status=404)


class WebApp:
    """The routes above, made once at startup (`routes()`)."""

    def __init__(self, static_dir: Path, version: str, embed_origins: list[str]) -> None:
        self.worker = service_worker(static_dir, version)
        self.embed_policy = content_security_policy(" ".join(embed_origins) or "'none'")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/sw.js", self.get_worker),
            Route("/call/{id:str}", self.get_call_link),
            Route("/embed/call/{id:str}", self.get_embed),
        ]

    async def get_worker(self, request: Request) -> Response:
        # no-cache: the browser asks each time whether the worker changed (it also caps its HTTP cache at 24 h).
        return Response(self.worker, media_type="text/javascript", headers={"cache-control": "no-cache"})

    async def get_call_link(self, request: Request) -> Response:
        user = request.path_params["id"]
        if not is_valid_id(user):
            return _not_a_call_link(user, "../")
        return RedirectResponse(f"../?call={quote(user, safe='@')}", status_code=302)

    async def get_embed(self, request: Request) -> Response:
        user = request.path_params["id"]
        if not is_valid_id(user):
            return _not_a_call_link(user, "../../")
        who = html.escape(user)
        body = (
            '<body class="embed-page">\n'
            f'<a id="embed-call" class="button primary embed-call" href="../../call/{quote(user, safe="@")}" '
            f'target="_blank" rel="noopener">{LOGO}<span>Call {who}</span></a>\n'
            '<p class="hint embed-hint">Opens peercall in a new tab.</p>\n</body>'
        )
        return _page(f"Call {user} \u2013 peercall", body, "../../", csp=self.embed_policy)
