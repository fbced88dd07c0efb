"""The web guard: DNS rebinding (Host), security headers, what token and private mode keep to themselves
(/ice-servers, /readyz, /metrics), and how a client learns the server's mode (issue 14, items 7, 8 and 10)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import httpx
import jwt
import pytest
import websockets

from tests.conftest import OPEN_DOORS, TIMEOUT, run_server
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
    """An upgrade naming another Host (and that Host as its Origin) is refused 421, and so is an allowed address
    with more than a port after it (`[::1]evil.test` was taken for `::1`); this machine's names pass."""
    with run_server(**TRANSPORTS[transport]) as srv:
        refused = upgrade(srv.port, "evil.test", "http://evil.test")
        assert refused.startswith(b"HTTP/1.1 421"), refused
        assert b"bad-host" in refused and b"PEERCALL_ALLOWED_HOSTS" in refused
        for host in ("[::1]evil.test", f"[::1]:{srv.port}x", "localhost:evil"):
            assert upgrade(srv.port, host).startswith(b"HTTP/1.1 421"), host
        for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", f"[::1]:{srv.port}", socket.gethostname()):
            assert upgrade(srv.port, host).startswith(b"HTTP/1.1 101"), host


def test_a_rebinding_page_cannot_read_the_api() -> None:
    """Every HTTP route refuses a Host that is not allowed, with a JSON body that says which setting to change."""
    with run_server() as srv, httpx.Client(base_url=srv.http) as http:
        for path in ("/api/calls?id=victim", "/ice-servers", "/", "/healthz", "/metrics", "/callerA.html"):
            response = http.get(path, headers={"host": "evil.test:80"})
            assert response.status_code == 421, path
            assert response.json()["error"]["code"] == "bad-host"
        for host in ("[::1]evil.test", "[::1]:80.evil.test", "127.0.0.1:evil"):  # an allowed name, and more
            assert http.get("/healthz", headers={"host": host}).status_code == 421, host
        assert http.get("/healthz", headers={"host": f"[::1]:{srv.port}"}).status_code == 200
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
            assert "connect-src 'self';" in csp, path  # its own origin only, ws: and wss: included (CSP Level 3)
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"


# ---------------------------------------------------------------------------------------------- token mode


def test_token_mode_guards_ice_servers_with_static_turn() -> None:
    """Token mode: /ice-servers wants a token even when TURN URLs have no secret (static credentials)."""
    ice = '[{"urls":"turn:127.0.0.1:3478","username":"static","credential":"hunter2"}]'
    with (
        run_server(
            PEERCALL_AUTH="token",
            PEERCALL_AUTH_SECRET=SECRET,
            PEERCALL_ICE_SERVERS=ice,
            PEERCALL_TURN_URLS="turn:127.0.0.1:3479",
        ) as srv,
        httpx.Client(base_url=srv.http) as http,
    ):
        refused = http.get("/ice-servers")
        assert refused.status_code == 401 and "hunter2" not in refused.text
        allowed = http.get("/ice-servers", headers={"authorization": f"Bearer {token('tess')}"})
        assert allowed.status_code == 200 and "hunter2" in allowed.text


def test_healthz_tells_the_mode() -> None:
    """A client learns the mode (and whether every call is relayed) from /healthz, without a token."""
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=SECRET) as srv:
        body = httpx.get(f"{srv.http}/healthz").json()
    assert (body["auth"], body["iceTransportPolicy"], body["authExpiry"]) == ("token", "all", "ignore")
    with run_server() as srv:
        assert httpx.get(f"{srv.http}/healthz").json()["auth"] == "open"


# ------------------------------------------------------------------------------------ counts: /readyz, /metrics


@pytest.mark.parametrize("mode", ["private", "token"])
def test_counts_stay_on_this_machine(mode: str) -> None:
    """Private or token mode: /readyz gives no counts and /metrics is refused to other machines; loopback sees both."""
    env = (
        {"PEERCALL_PRIVATE": "true"}
        if mode == "private"
        else {"PEERCALL_AUTH": "token", "PEERCALL_AUTH_SECRET": SECRET, **OPEN_DOORS}
    )
    with run_server(**env) as srv, httpx.Client(base_url=srv.http) as http:
        assert http.get("/readyz", headers=ELSEWHERE).json() == {"status": "ready"}
        refused = http.get("/metrics", headers=ELSEWHERE)
        assert refused.status_code == 403 and "PEERCALL_METRICS_TOKEN" in refused.text
        assert "connections" in http.get("/readyz").json()
        assert "peercall_connections" in http.get("/metrics").text


def test_metrics_token() -> None:
    """With PEERCALL_METRICS_TOKEN, /metrics wants it from everyone, and /readyz gives counts only with it."""
    with run_server(PEERCALL_METRICS_TOKEN="scrape-me") as srv, httpx.Client(base_url=srv.http) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
        assert http.get("/metrics", headers={"authorization": "Bearer scrape-me"}).status_code == 200
        assert http.get("/readyz").json() == {"status": "ready"}
        counted = http.get("/readyz", headers={"authorization": "Bearer scrape-me", **ELSEWHERE}).json()
        assert counted["connections"] == 0


def test_open_mode_counts_stay_public() -> None:
    """Open mode without a metrics token: /readyz and /metrics stay as they were, for anyone."""
    with run_server() as srv, httpx.Client(base_url=srv.http) as http:
        assert "connections" in http.get("/readyz", headers=ELSEWHERE).json()
        assert http.get("/metrics", headers=ELSEWHERE).status_code == 200


# ---------------------------------------------------------------------------------------------- private mode


async def recv_type(ws: websockets.ClientConnection, timeout: float) -> tuple[str, str | None]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout * TIMEOUT))
        if message["type"] not in ("presence", "welcome"):
            return message["type"], message.get("outcome")


async def test_private_mode_busy_and_offline_look_alike() -> None:
    """Private: a stranger calling someone in a call, and someone offline, hears the same frames after the same time."""
    with run_server(PEERCALL_PRIVATE="true", PEERCALL_RING_TIMEOUT="1") as srv:
        async with (
            websockets.connect(f"{srv.ws}?id=pa") as pa,
            websockets.connect(f"{srv.ws}?id=pb") as pb,
            websockets.connect(f"{srv.ws}?id=px") as px,
        ):
            await pa.send('{"type":"call-request","to":"pb"}')
            assert (await recv_type(pb, 5))[0] == "call-request"
            await pb.send('{"type":"call-accept","to":"pa"}')
            assert (await recv_type(pa, 5)) == ("call-ringing", None)
            heard = {}
            for callee in ("pa", "nobody"):
                started = time.monotonic()
                await px.send(f'{{"type":"call-request","to":"{callee}"}}')
                frames = [await recv_type(px, 5) for _ in range(3)]
                heard[callee] = (frames, round(time.monotonic() - started))
            assert heard["pa"] == heard["nobody"]
            assert heard["pa"][0] == [("call-ringing", None), ("call-ended", "missed"), ("hangup", None)]


async def test_private_mode_stranger_cannot_lock_anyone() -> None:
    """Private: after a stranger calls offline pv, a third party's call rings on pv and pv can call out."""
    with run_server(PEERCALL_PRIVATE="true", PEERCALL_RING_TIMEOUT="30") as srv:
        async with websockets.connect(f"{srv.ws}?id=px") as px, websockets.connect(f"{srv.ws}?id=pc") as pc:
            await px.send('{"type":"call-request","to":"pv"}')
            assert (await recv_type(px, 5))[0] == "call-ringing"
            async with websockets.connect(f"{srv.ws}?id=pv") as pv:
                await recv_type_welcome(pv)
                await pc.send('{"type":"call-request","to":"pv"}')
                assert (await recv_type(pc, 5))[0] == "call-ringing"
                assert (await recv_type(pv, 5))[0] == "call-request"  # not busy
                await pv.send('{"type":"call-reject","to":"pc"}')
                await pv.send('{"type":"call-request","to":"pc"}')  # and pv may call out
                kinds = [(await recv_type(pv, 5))[0] for _ in range(2)]
                assert "error" not in kinds and "call-ringing" in kinds, kinds


async def recv_type_welcome(ws: websockets.ClientConnection) -> None:
    while json.loads(await asyncio.wait_for(ws.recv(), 5 * TIMEOUT))["type"] != "welcome":
        pass
