"""The whole deployment in one test: two Chromium pages call each other through a real nginx (deploy/nginx.conf,
TLS) in front of two nodes that share Redis and PostgreSQL, each page on a different node; audio flows.

Runs in the loopback-only namespace like the other browser tests:
`scripts/loopback-only .venv/bin/pytest tests/cluster/test_nginx_browser.py -v`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import SCALE, LaunchBrowser, OpenPage, artifacts_dir
from tests.e2e.steps import assert_audio_flows, connect, ring, wait_until

from .conftest import Cluster

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


def connections(c: Cluster, user: str) -> list[int]:
    """How many times `user` connected to each node so far."""
    pattern = re.compile(rf"\b{re.escape(user)} connected from ")
    return [len(pattern.findall(node.log())) for node in c.nodes]


async def connect_and_locate(c: Cluster, page: Page, user: str) -> int:
    """Click Connect in `page`; the node its WebSocket landed on (read from the nodes' logs)."""
    before = connections(c, user)
    await connect(page)
    after = await wait_until(
        lambda: _async(connections(c, user)), lambda now: now != before, f"a node to log that {user} connected"
    )
    (node,) = [i for i, (was, now) in enumerate(zip(before, after, strict=True)) if now > was]
    return node


async def _async(value: Any) -> Any:
    return value


async def test_call_between_pages_on_different_nodes_through_nginx(
    cluster: Callable[..., Any], nginx: Callable[..., Any], open_page: OpenPage, launch_browser: LaunchBrowser
) -> None:
    """clientA and clientB load the demo through nginx, land on different nodes, call, and hear each other."""
    chromium = await launch_browser("--ignore-certificate-errors")  # nginx's certificate is self-signed
    async with cluster(2, history="postgres") as c:
        with nginx([node.port for node in c.nodes]) as proxy:
            a = await open_page(proxy.https, "/callerA.html", "A", in_browser=chromium)
            b = await open_page(proxy.https, "/callerB.html", "B", in_browser=chromium)
            sockets: list[str] = []
            for page in (a, b):
                page.on("websocket", lambda ws: sockets.append(ws.url))
                assert await page.evaluate("window.isSecureContext") is True
            node_a = await connect_and_locate(c, a, "clientA")
            node_b = await connect_and_locate(c, b, "clientB")
            for _ in range(5):  # whatever the balancing did, put B on the other node: reload and connect again
                if node_b != node_a:
                    break
                await b.reload()
                node_b = await connect_and_locate(c, b, "clientB")
            assert node_a != node_b, f"B stayed on node {node_b} with A:\n{proxy.access_log()}"
            print(f"clientA is on node n{node_a}, clientB on node n{node_b}")
            assert sockets and all(u.startswith(f"wss://127.0.0.1:{proxy.port}/ws?") for u in sockets), sockets

            # Presence crossed the nodes: each sees the other online.
            await expect(a.locator('#online button[data-peer="clientB"]')).to_be_visible()
            await expect(b.locator('#online button[data-peer="clientA"]')).to_be_visible()

            await ring(a, b)
            await b.click("#accept")
            await expect(a.locator("#call-status")).to_have_text("Connected")
            await expect(b.locator("#call-status")).to_have_text("Connected")
            await assert_audio_flows(b, "B")  # A's beeps reach B
            await assert_audio_flows(a, "A")  # and B's reach A
            await a.screenshot(path=artifacts_dir() / "cluster-nginx-call-clientA.png", full_page=True)

            await b.click("#hangup")
            await expect(a.locator("#call-status")).to_have_text("Call Ended")
            await expect(b.locator("#call-status")).to_have_text("Call Ended")
            await expect(a.locator("#message")).to_have_text("clientB hung up.", timeout=int(10_000 * SCALE))
            ended = [n for n in c.nodes if re.search(r"call \S+ clientA -> clientB ended: answered", n.log())]
            assert ended, c.logs()[-4000:]
