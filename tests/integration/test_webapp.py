"""The web app's own routes on a real server: /sw.js, call links and the embeddable call button, with their
headers (issue 17, items 3 and 4)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.conftest import run_server

LISTED = ("https://www.example.org", "http://127.0.0.1:8000")


def framing(response: httpx.Response) -> tuple[str, str | None]:
    """The frame-ancestors directive of a response's CSP, and its X-Frame-Options (None: absent)."""
    csp = response.headers["content-security-policy"]
    directive = next(part.strip() for part in csp.split(";") if part.strip().startswith("frame-ancestors"))
    return directive, response.headers.get("x-frame-options")


def test_the_service_worker_is_served_fresh_and_whole() -> None:
    """/sw.js is JavaScript the browser must check every time (no-cache), with its build filled in and the push
    handlers imported; the manifest and icons are served with their types."""
    with run_server() as srv, httpx.Client(base_url=srv.http) as http:
        worker = http.get("/sw.js")
        assert worker.status_code == 200
        assert worker.headers["content-type"].startswith("text/javascript")
        assert worker.headers["cache-control"] == "no-cache"
        assert 'importScripts("js/sw-push.js");' in worker.text
        assert "shell: []" not in worker.text and '"shell": ["./", ' in worker.text
        assert http.get("/js/sw-push.js").status_code == 200
        manifest = http.get("/manifest.webmanifest")
        assert manifest.headers["content-type"] == "application/manifest+json"
        assert manifest.json()["display"] == "standalone"
        for icon in manifest.json()["icons"]:
            png = http.get(f"/{icon['src']}")
            assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG"), icon


def test_a_call_link_leads_to_the_page_and_a_bad_one_says_why() -> None:
    """/call/<id> redirects to ./?call=<id> (relative: works under a proxy's path); an id that breaks the id
    rule gets a 404 page saying the link is not valid, the id shown escaped."""
    with run_server() as srv, httpx.Client(base_url=srv.http) as http:
        for user in ("alice", "bob.smith@example.org", "a-b_c"):
            response = http.get(f"/call/{user}")
            assert response.status_code == 302, user
            assert response.headers["location"] == f"../?call={user}"
        for bad in ("not%20an%20id", "%3Cscript%3E", "x" * 65):
            response = http.get(f"/call/{bad}")
            assert response.status_code == 404, bad
            assert response.headers["content-type"].startswith("text/html")
            assert "This call link is not valid" in response.text
            assert "<script>" not in response.text
            assert framing(response) == ("frame-ancestors 'none'", "DENY")
        assert http.get("/call/").status_code == 404


def test_only_the_embed_page_may_be_framed_and_only_by_listed_sites() -> None:
    """With PEERCALL_EMBED_ORIGINS, /embed/call/<id> names exactly those origins in frame-ancestors and sends no
    X-Frame-Options; every other page still forbids framing. Without the setting no site may frame it."""
    with run_server(PEERCALL_EMBED_ORIGINS=", ".join(LISTED)) as srv, httpx.Client(base_url=srv.http) as http:
        embed = http.get("/embed/call/bob")
        assert embed.status_code == 200
        assert framing(embed) == (f"frame-ancestors {' '.join(LISTED)}", None)
        assert "script-src 'self'" in embed.headers["content-security-policy"]
        assert 'href="../../call/bob"' in embed.text and 'target="_blank"' in embed.text
        assert ">Call bob<" in embed.text
        for path in ("/", "/callerA.html", "/sw.js", "/call/bob", "/healthz", "/embed/call/not%20an%20id"):
            assert framing(http.get(path)) == ("frame-ancestors 'none'", "DENY"), path
    with run_server() as srv, httpx.Client(base_url=srv.http) as http:
        assert framing(http.get("/embed/call/bob")) == ("frame-ancestors 'none'", None)


def test_a_bad_embed_origin_stops_the_server() -> None:
    """A value that is not an origin stops the server at start (status 2), naming the setting."""
    env = {**os.environ, "PEERCALL_EMBED_ORIGINS": "https://example.org/page", "PEERCALL_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "peercall", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "embed_origins" in done.stderr.lower() and "is not a web origin" in done.stderr
