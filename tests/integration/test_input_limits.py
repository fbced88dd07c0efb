"""Bad input, bounded (issue 14, items 4, 5, 9 and 16), against a real server process: deep JSON and big
call-requests, what an error echoes and how much is logged per address, the HTTP request head before any upgrade
(size, time, connections per address, new connections per second, proxies), and reserved ids in open mode.

The rules of the session layer run over both transports of `/ws` (the `transport` fixture); the HTTP head rules
live in the HTTP protocol that both transports share, and run over both too."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from peercall.protocol.messages import MAX_CALL_DATA, MAX_DEPTH
from tests.conftest import OPEN_DOORS, TIMEOUT, ServerProcess, run_server
from tests.integration.conftest import TRANSPORTS
from tests.integration.test_security import SECRET, closed_with, recv_json, refused_status

SERVICE_TOKEN = "service-token-for-the-echo-0123456789"


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def answer(ws: websockets.ClientConnection) -> dict:
    """The next frame but presence."""
    while (message := await recv_json(ws))["type"] == "presence":
        pass
    return message


# ------------------------------------------------------------------------------ 4: deep JSON, big call-requests


@pytest.fixture(scope="module")
def token_server(transport: str) -> Iterator[ServerProcess]:
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=SECRET, **TRANSPORTS[transport]) as srv:
        yield srv


@pytest.mark.parametrize("where", ["frame", "field"])
async def test_a_deeply_nested_auth_frame_gets_the_auth_refusal(token_server: ServerProcess, where: str) -> None:
    """A first frame nested 5,000 deep gets `unauthorized` and close 4401, never 1011 and a traceback."""
    frame = "[" * 5000 + "]" * 5000
    if where == "field":
        frame = '{"type":"auth","token":"x","extra":' + frame + "}"
    async with websockets.connect(token_server.ws) as ws:
        await ws.send(frame)
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "unauthorized"
        assert (await closed_with(ws))[0] == 4401
    assert "Traceback" not in token_server.log() and "unexpected error" not in token_server.log()


async def test_call_control_data_nested_too_deep_is_refused(ws_server: ServerProcess) -> None:
    """Call control `data` may nest MAX_DEPTH deep; one level more gets `bad-message`, and the socket stays."""
    async with websockets.connect(f"{ws_server.ws}?id=deep-{time.monotonic_ns()}") as ws:
        await answer(ws)
        for kind in ("hangup", "call-request", "call-accept", "call-reject"):
            await ws.send(json.dumps({"type": kind, "to": "nobody-deep", "data": nested(MAX_DEPTH + 1)}))
            error = await answer(ws)
            assert (error["code"], error["ref"]) == ("bad-message", kind), error
            assert f"nested more than {MAX_DEPTH} deep" in error["message"]
        await ws.send(json.dumps({"type": "hangup", "to": "nobody-deep", "data": nested(MAX_DEPTH)}))
        assert (await answer(ws))["code"] == "not-in-call"  # as deep as allowed: the call rules answer


async def test_a_call_request_may_carry_only_a_little_data(ws_server: ServerProcess) -> None:
    """A `call-request` whose `data` is over MAX_CALL_DATA bytes gets `too-large`; up to it, the call rules answer."""
    async with websockets.connect(f"{ws_server.ws}?id=big-{time.monotonic_ns()}") as ws:
        await answer(ws)
        await ws.send(json.dumps({"type": "call-request", "to": "nobody-big", "data": "x" * MAX_CALL_DATA}))
        error = await answer(ws)
        assert (error["code"], error["ref"]) == ("too-large", "call-request"), error
        assert f"at most {MAX_CALL_DATA} bytes" in error["message"]
        await ws.send(json.dumps({"type": "call-request", "to": "nobody-big", "data": "x" * (MAX_CALL_DATA - 100)}))
        assert (await answer(ws))["code"] == "unavailable"


# ------------------------------------------------------------------------------------ 5: echoed input, logs


@pytest.fixture
def own_server(transport: str) -> Iterator[ServerProcess]:
    """A server of the test's own (its log is read), on each transport."""
    with run_server(**TRANSPORTS[transport]) as srv:
        yield srv


async def test_an_unknown_type_is_echoed_truncated(own_server: ServerProcess) -> None:
    """A 60 KB `type` comes back cut to 64 characters in `ref` and the message, and adds little to the log."""
    before = len(own_server.log())
    async with websockets.connect(f"{own_server.ws}?id=echoer") as ws:
        await answer(ws)
        for _ in range(3):
            await ws.send(json.dumps({"type": "x" * 60_000}))
            error = await answer(ws)
            assert error["code"] == "unknown-type"
            assert error["ref"] == "x" * 63 + "…" and len(error["message"]) < 300
    await asyncio.to_thread(own_server.wait_log, "echoer disconnected")
    assert len(own_server.log()) - before < 3000


async def test_protocol_errors_are_logged_a_few_per_address_however_often_it_reconnects(
    own_server: ServerProcess,
) -> None:
    """Reconnecting does not reset the log budget: past it, one line says the address's errors are only counted."""
    for i in range(12):
        async with websockets.connect(f"{own_server.ws}?id=noisy{i}") as ws:
            await answer(ws)
            for _ in range(5):
                await ws.send('{"type":"ring"}')
                assert (await answer(ws))["code"] == "unknown-type"
    assert await asyncio.to_thread(
        own_server.wait_log, "further protocol errors from 127.0.0.1 are counted, not logged"
    )
    logged = own_server.log().count("unknown message type 'ring'")
    assert 5 <= logged <= 20, logged  # 60 errors were made


# -------------------------------------------------------------------------------- 9: HTTP before the upgrade


class Conn:
    """A bare TCP connection to the server."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)

    def answer(self) -> bytes:
        """Everything the server sends until it closes the socket (a hang fails with a timeout)."""
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        finally:
            self.sock.close()
        return data

    def close(self) -> None:
        self.sock.close()


GET = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def gated_server(transport: str) -> Iterator[ServerProcess]:
    """Tight HTTP limits, and no trusted proxy: loopback is an ordinary client."""
    with run_server(
        PEERCALL_HEAD_TIMEOUT="0.5",
        PEERCALL_MAX_CONNECTIONS_PER_IP="4",
        PEERCALL_FORWARDED_ALLOW_IPS="192.0.2.1",
        **TRANSPORTS[transport],
    ) as srv:
        yield srv


def test_an_oversized_request_head_gets_431(gated_server: ServerProcess) -> None:
    """A request head over 16 KB gets 431 and a close, whether it comes at once or in pieces."""
    big = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    conn = Conn(gated_server)
    conn.sock.sendall(big)
    assert conn.answer().startswith(b"HTTP/1.1 431")
    conn = Conn(gated_server)
    try:
        conn.sock.sendall(big[:10_000])
        time.sleep(0.05)
        conn.sock.sendall(big[10_000:20_000])
    except OSError:
        pass
    assert conn.answer().startswith(b"HTTP/1.1 431")


def test_a_slow_or_silent_request_head_is_closed(gated_server: ServerProcess) -> None:
    """A head still incomplete after PEERCALL_HEAD_TIMEOUT (slowloris), or never begun, gets 408 and a close."""
    slow = Conn(gated_server)
    started = time.monotonic()
    for byte in GET[:20]:
        try:
            slow.sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.05)
    assert slow.answer().startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 3
    silent = Conn(gated_server)
    assert silent.answer().startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("path", ["/api/session", "/healthz"])
def test_a_body_that_never_comes_whole_is_closed(transport: str, path: str) -> None:
    """A whole head that announces a body, then a byte of it now and then (slowloris on the body): the connection
    is closed PEERCALL_HEAD_TIMEOUT after the head, with 408 `body-timeout` where a handler was reading the body
    (an accounts sign-in, which needs no sign-in itself); a route that answered without reading it is only closed.
    It was held for as long as the bytes kept coming: hours, on every JSON route."""
    with run_server(
        PEERCALL_AUTH="accounts", PEERCALL_HEAD_TIMEOUT="0.5", **OPEN_DOORS, **TRANSPORTS[transport]
    ) as srv:
        conn = Conn(srv)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "X-Peercall-CSRF: 1\r\nContent-Length: 1000\r\n\r\n"
        )
        conn.sock.sendall(head.encode() + b'{"id"')
        started = time.monotonic()
        for byte in b':"someone","password":"' + b"x" * 40:
            try:
                conn.sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        reply = conn.answer()
        assert time.monotonic() - started < 3, "the body was waited for as long as it kept coming"
        if path == "/api/session":
            assert reply.startswith(b"HTTP/1.1 408") and b'"body-timeout"' in reply, reply
        else:
            assert reply.startswith(b"HTTP/1.1 405"), reply  # its answer came before the body, and the close after
        assert "Traceback" not in srv.log()
        whole = Conn(srv)  # a body that does come whole is served as ever (a sign-in with no id: bad-request)
        whole.sock.sendall(head.replace("1000", "2").encode() + b"{}")
        assert whole.sock.recv(65536).startswith(b"HTTP/1.1 400" if path == "/api/session" else b"HTTP/1.1 405")
        whole.close()


def test_plain_http_connections_are_capped_per_address(gated_server: ServerProcess) -> None:
    """Past PEERCALL_MAX_CONNECTIONS_PER_IP open connections of one address, the next gets 429 until one closes."""
    held = [Conn(gated_server) for _ in range(4)]
    time.sleep(0.1)
    try:
        extra = Conn(gated_server)
        extra.sock.sendall(GET)
        reply = extra.answer()
        assert reply.startswith(b"HTTP/1.1 429") and b"too-many-connections" in reply
        held.pop().close()
        time.sleep(0.2)
        ok = Conn(gated_server)
        ok.sock.sendall(GET)
        assert ok.answer().startswith(b"HTTP/1.1 200")
    finally:
        for conn in held:
            conn.close()


def test_new_connections_are_rate_limited_per_address(transport: str) -> None:
    """More new connections a second than PEERCALL_CONNECTION_RATE allows (after a burst) get 429."""
    with run_server(
        PEERCALL_CONNECTION_RATE="2", PEERCALL_FORWARDED_ALLOW_IPS="192.0.2.1", **TRANSPORTS[transport]
    ) as srv:
        statuses = []
        for _ in range(30):
            conn = Conn(srv)
            conn.sock.sendall(GET)
            statuses.append(conn.answer()[:12])
        assert b"HTTP/1.1 200" in statuses and b"HTTP/1.1 429" in statuses, statuses
        assert statuses.count(b"HTTP/1.1 200") <= 2 * 5 + 3  # the burst, and what refills meanwhile


async def test_behind_a_trusted_proxy_the_ws_cap_counts_forwarded_addresses(transport: str) -> None:
    """From a trusted proxy (loopback by default) the /ws per-address cap counts X-Forwarded-For, IPv6 by /64."""
    with run_server(PEERCALL_MAX_CONNECTIONS_PER_IP="2", **TRANSPORTS[transport]) as srv:
        held = []
        try:
            for i, client in enumerate(["2001:db8:1:2::1", "2001:db8:1:2::2"]):
                held.append(
                    await websockets.connect(f"{srv.ws}?id=v6-{i}", additional_headers={"X-Forwarded-For": client})
                )
            status, body = await refused_status(
                f"{srv.ws}?id=v6-x", additional_headers={"X-Forwarded-For": "2001:db8:1:2:ffff::9"}
            )
            assert (status, body["error"]["code"]) == (429, "too-many-connections")
            async with websockets.connect(
                f"{srv.ws}?id=v6-other", additional_headers={"X-Forwarded-For": "2001:db8:1:3::1"}
            ) as ws:
                assert (await answer(ws))["type"] == "welcome"  # another /64
            async with websockets.connect(
                f"{srv.ws}?id=v4", additional_headers={"X-Forwarded-For": "198.51.100.7"}
            ) as ws:
                assert (await answer(ws))["type"] == "welcome"
        finally:
            for ws in held:
                await ws.close()


# ---------------------------------------------------------------------------------------- 16: reserved ids


@pytest.fixture(scope="module")
def reserved_server(transport: str) -> Iterator[ServerProcess]:
    with run_server(
        PEERCALL_SERVICE_TOKEN=SERVICE_TOKEN, PEERCALL_RESERVED_IDS="echo,support", **TRANSPORTS[transport]
    ) as srv:
        yield srv


@pytest.mark.parametrize("user", ["echo", "support"])
async def test_a_reserved_id_is_refused_in_open_mode(reserved_server: ServerProcess, user: str) -> None:
    """In open mode nobody may take a reserved id (HTTP 403 `reserved-id`), not even with a wrong service token."""
    status, body = await refused_status(f"{reserved_server.ws}?id={user}")
    assert (status, body["error"]["code"]) == (403, "reserved-id")
    assert f"'{user}' is reserved" in body["error"]["message"]
    status, body = await refused_status(
        f"{reserved_server.ws}?id={user}", additional_headers={"Authorization": "Bearer not-the-token"}
    )
    assert (status, body["error"]["code"]) == (403, "reserved-id")


async def test_the_service_token_takes_a_reserved_id(reserved_server: ServerProcess) -> None:
    """The service started with the server (it has the per-process service token) connects as `echo`."""
    async with websockets.connect(
        f"{reserved_server.ws}?id=echo", additional_headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}
    ) as ws:
        assert (await answer(ws))["id"] == "echo"
    async with websockets.connect(f"{reserved_server.ws}?id=Echo") as ws:  # ids are case-sensitive
        assert (await answer(ws))["id"] == "Echo"


async def test_echo_is_reserved_by_default(ws_server: ServerProcess) -> None:
    """Without any setting, `echo` is reserved in open mode."""
    status, body = await refused_status(f"{ws_server.ws}?id=echo")
    assert (status, body["error"]["code"]) == (403, "reserved-id")


async def test_a_failure_someone_can_repeat_logs_its_traceback_once_and_within_their_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request that fails (a bug: 500 `internal-error`) logged its traceback twice, Starlette's handler's and
    the server's, for every request: a failure one client can repeat was a log flood. Now once, and at most the
    address's budget a minute (20 lines, then one saying the rest are counted)."""
    from starlette.routing import Route

    from tests.integration.test_connection_memory import in_process

    async def bug(request: object) -> None:
        raise RuntimeError("a bug that a request can reach")

    async with in_process(deflate=False) as (port, _, app):
        app.http.app.router.routes.insert(0, Route("/bug", bug))  # WebGuard -> the Starlette app
        caplog.clear()
        caplog.set_level(logging.INFO)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
            for _ in range(30):
                answer = await http.get("/bug")
                assert (answer.status_code, answer.json()["error"]["code"]) == (500, "internal-error")
            assert (await http.get("/healthz")).status_code == 200  # and the server goes on
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 20 and all(r.getMessage() == "GET /bug failed" for r in tracebacks)
    assert "further protocol errors from 127.0.0.1 are counted, not logged" in caplog.text
