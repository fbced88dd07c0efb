"""The web guard: DNS rebinding (Host) and the security headers of every response (issue 14, item 8)."""

from __future__ import annotations

import base64
import os
import socket
import time

import httpx
import jwt
import pytest

from tests.conftest import TIMEOUT, run_server
from tests.integration.conftest import TRANSPORTS

SECRET = "web-guard-secret-of-32-bytes-min!"
ELSEWHERE = {"x-forwarded-for": "203.0.113.9"}  # a client on another machine, as a trusted proxy says


def token(user: str) -> str:
    now = time.time()
    return jwt.encode({"sub": user, "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")


def upgrade(port: int, host: str, origin: str | None = None) -> bytes:
    """The HTTP status line (and head) a raw upgrade to /ws naming `host` gets."""
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /ws?id=victim HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if origin is not None:
        head += f"Origin: {origin}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5 * TIMEOUT) as sock:
        sock.sendall((head + "\r\n").encode())
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    return got


# ----------------------------------------------------------------------------------------- DNS rebinding


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_a_rebinding_page_cannot_upgrade(transport: str) -> None:
    """An upgrade naming another Host (and that Host as its Origin) is refused 421; this machine's names pass."""
    with run_server(**TRANSPORTS[transport]) as srv:
        refused = upgrade(srv.port, "evil.test", "http://evil.test")
        assert refused.startswith(b"HTTP/1.1 421"), refused
        assert b"bad-host" in refused and b"PEERCALL_ALLOWED_HOSTS" in refused
        for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", f"[::1]:{srv.port}", socket.gethostname()):
            assert upgrade(srv.port, host).startswith(b"HTTP/1.1 101"), host


def test_a_rebinding_page_cannot_read_the_api() -> None:
    """Every HTTP route refuses a Host that is not allowed, with a JSON body that says which setting to change."""
    with run_server() as srv, httpx.Client(base_url=srv.http) as http:
        for path in ("/api/calls?id=victim", "/ice-servers", "/", "/healthz", "/metrics", "/callerA.html"):
            response = http.get(path, headers={"host": "evil.test:80"})
            assert response.status_code == 421, path
            assert response.json()["error"]["code"] == "bad-host"
        assert http.get("/api/calls?id=victim").status_code == 200


def test_allowed_hosts_setting() -> None:
    """PEERCALL_ALLOWED_HOSTS replaces the defaults (a proxy's public name); `*` allows any Host."""
    with run_server(PEERCALL_ALLOWED_HOSTS="calls.example.org, 127.0.0.1") as srv:
        assert httpx.get(f"{srv.http}/healthz", headers={"host": "Calls.Example.org."}).status_code == 200
        assert httpx.get(f"{srv.http}/healthz", headers={"host": "localhost"}).status_code == 421
        assert upgrade(srv.port, "calls.example.org:443").startswith(b"HTTP/1.1 101")
    with run_server(PEERCALL_ALLOWED_HOSTS="*") as srv:
        assert httpx.get(f"{srv.http}/healthz", headers={"host": "evil.test"}).status_code == 200


# ------------------------------------------------------------------------------------------------ headers


def test_every_response_carries_the_security_headers() -> None:
    """Pages, API answers, errors and refusals all carry CSP, frame-ancestors, nosniff and a referrer policy."""
    with run_server() as srv, httpx.Client(base_url=srv.http) as http:
        for path, status in (
            ("/", 200),
            ("/callerB.html", 200),
            ("/js/main.js", 200),
            ("/api/calls", 400),
            ("/nowhere", 404),
            ("/healthz", 200),
        ):
            response = http.get(path)
            assert response.status_code == status, path
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
