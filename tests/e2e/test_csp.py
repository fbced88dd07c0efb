"""The web client works under its own Content-Security-Policy: no page fires a `securitypolicyviolation`."""

from __future__ import annotations

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
