"""deploy/nginx.conf, run by Debian's nginx in front of real nodes: WebSockets and HTTP reach every node, no
stickiness, the client's address reaches the nodes (and cannot be forged), a dead node is skipped.

The nodes here are plain single nodes (no Redis): these tests are about the proxy configuration alone; the
calls across nodes behind it are in test_nginx_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets

from tests.conftest import TIMEOUT, ServerProcess, run_server

from .conftest import Nginx

INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


@pytest.fixture
def three_nodes() -> Iterator[list[ServerProcess]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(run_server()) for _ in range(3)]


def get(port: int, path: str, *, tls: bool = True, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=INSECURE)
        if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    )
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


async def open_ws(proxy: Nginx, user: str, **kwargs: Any) -> websockets.ClientConnection:
    ws = await websockets.connect(f"{proxy.wss}?id={user}", ssl=INSECURE, open_timeout=TIMEOUT, **kwargs)
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome" and welcome["id"] == user, welcome
    return ws


def landed_on(nodes: list[ServerProcess], user: str) -> list[int]:
    pattern = re.compile(rf"\b{re.escape(user)} connected from ")
    return [i for i, node in enumerate(nodes) if pattern.search(node.log())]


async def test_websockets_spread_over_every_node(three_nodes: list[ServerProcess], nginx: Callable[..., Any]) -> None:
    """Three WebSockets through nginx land on three different nodes (least_conn, no stickiness), and stay open."""
    with nginx([n.port for n in three_nodes]) as proxy:
        sockets = [await open_ws(proxy, f"user{i}") for i in range(3)]
        try:
            for i in range(3):
                assert await _wait_for(lambda i=i: landed_on(three_nodes, f"user{i}")), proxy.access_log()
            where = [landed_on(three_nodes, f"user{i}")[0] for i in range(3)]
            assert sorted(where) == [0, 1, 2], f"sockets landed on nodes {where}:\n{proxy.access_log()}"
            for ws in sockets:  # still open after the handshake: the server pings, the client answers
                await ws.ping()
        finally:
            for ws in sockets:
                await ws.close()


async def test_the_node_sees_the_client_address_and_it_cannot_be_forged(
    three_nodes: list[ServerProcess], nginx: Callable[..., Any]
) -> None:
    """A client on 127.0.0.2 shows up on the node as 127.0.0.2, even when it sends an X-Forwarded-For of its own."""
    with nginx([n.port for n in three_nodes]) as proxy:
        ws = await open_ws(
            proxy, "carol", local_addr=("127.0.0.2", 0), additional_headers={"X-Forwarded-For": "203.0.113.9"}
        )
        try:
            assert await _wait_for(lambda: landed_on(three_nodes, "carol"))
            log = three_nodes[landed_on(three_nodes, "carol")[0]].log()
            assert re.search(r"\bcarol connected from 127\.0\.0\.2:\d+", log), log[-2000:]
            assert "203.0.113.9" not in log
        finally:
            await ws.close()


async def test_http_reaches_the_nodes_and_plain_http_is_redirected(
    three_nodes: list[ServerProcess], nginx: Callable[..., Any]
) -> None:
    """/healthz and the web client through https; /metrics is not exposed; http:// redirects to https://."""
    with nginx([n.port for n in three_nodes]) as proxy:
        for _ in range(6):
            assert get(proxy.port, "/healthz").status == 200

        def upstreams() -> set[str]:  # nginx writes a line just after it answered: wait for all six
            lines = re.findall(r'"GET /healthz [^"]*" 200 upstream=(\S+)', proxy.access_log())
            return set(lines) if len(lines) == 6 else set()

        assert len(await _wait_for(upstreams)) == 3, f"/healthz did not reach every node:\n{proxy.access_log()}"
        page = get(proxy.port, "/")
        assert page.status == 200 and page.getheader("content-type", "").startswith("text/html")
        assert get(proxy.port, "/metrics").status == 404
        redirect = get(proxy.http_port, "/callerA.html?x=1", tls=False, headers={"Host": "calls.example.org"})
        assert redirect.status == 301
        assert redirect.getheader("location") == "https://calls.example.org/callerA.html?x=1"


async def test_a_dead_node_is_skipped(three_nodes: list[ServerProcess], nginx: Callable[..., Any]) -> None:
    """With one node gone, every new WebSocket and request still succeeds: nginx retries on the next node."""
    with nginx([n.port for n in three_nodes]) as proxy:
        three_nodes[1].stop()
        for i in range(6):
            ws = await open_ws(proxy, f"dave{i}")
            await ws.close()
            assert get(proxy.port, "/healthz").status == 200
        assert all(0 in landed_on(three_nodes, f"dave{i}") or 2 in landed_on(three_nodes, f"dave{i}") for i in range(6))


async def _wait_for(probe: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll `probe()` until it is truthy (the node logs a connection just after the handshake)."""
    deadline = time.monotonic() + timeout
    while True:
        if (value := probe()) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)
