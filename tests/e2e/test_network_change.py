"""A network change under a call: the address that carries the audio goes away, and the call carries on.

Chromium ignores every address on `lo` except its own 127.0.0.1 (and that only with
`--allow-loopback-in-peer-connection`), so the "network" here is a veth pair made inside the loopback-only namespace
(both ends stay in it: nothing can leave). A's browser runs without the loopback flag, so the veth address is the
only one it can use; removing it mid-call (after adding another, as when a laptop moves from one network to the
next) breaks the candidate pair in use. Chromium fires no `online` or `navigator.connection` event for that here: the
page notices by the connection going `disconnected`, and restarts ICE `DISCONNECTED_RESTART_MS` (3 s) later.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Playwright, expect

from tests.conftest import CHROMIUM_FLAGS, SCALE, ServerProcess

from .conftest import OpenPage, dump
from .steps import assert_audio_flows, audio_stats, connect, ring, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

LINK, PEER_END = "pcnet0", "pcnet1"
FIRST, SECOND = "10.0.0.2", "10.0.0.3"
DISCONNECTED_RESTART_S = 3.0  # call.js DISCONNECTED_RESTART_MS
RESUME_S = 3.0  # the audio flows again this soon after the restart


def ip(*args: str) -> None:
    """Run `ip ARGS`; fail the test with ip's own words if it cannot."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.fail(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}", pytrace=False)


def disable_ipv6(link: str) -> None:
    """No IPv6 link-local address on the veth: Chromium would gather it as a second way out."""
    Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1\n")


@pytest.fixture
def network(loopback_only: None) -> Iterator[None]:
    """A veth pair inside the loopback-only namespace, with FIRST on one end; removed (with its addresses) after."""
    ip("link", "add", LINK, "type", "veth", "peer", "name", PEER_END)
    try:
        for link in (LINK, PEER_END):
            disable_ipv6(link)
            ip("link", "set", link, "up")
        ip("addr", "add", f"{FIRST}/32", "dev", LINK)
        yield
    finally:
        subprocess.run(["ip", "link", "del", LINK], check=False)


@pytest_asyncio.fixture(loop_scope="session")
async def network_only_browser(playwright: Playwright, chromium_path: Path, network: None) -> AsyncIterator[Browser]:
    """A Chromium without `--allow-loopback-in-peer-connection`: its only ICE candidates are the veth's addresses."""
    flags = [f for f in CHROMIUM_FLAGS if f != "--allow-loopback-in-peer-connection"]
    chromium = await playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=flags)
    try:
        yield chromium
    finally:
        await chromium.close()


async def test_removing_the_address_in_use_restarts_ice_and_keeps_the_call(
    network_only_browser: Browser, fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """The address in use goes away mid-call: "Reconnecting audio…", ICE restarts, audio is back on a new pair."""
    a = await open_page(fresh_server.http, "/callerA.html", "A", in_browser=network_only_browser)
    b = await open_page(fresh_server.http, "/callerB.html", "B")
    await connect(a)
    await connect(b)
    await ring(a, b)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(a, "A")
    before = await audio_stats(a)
    assert before and before["pair"]["localAddress"] == FIRST, f"A's audio should use {FIRST}: {dump(before)}"
    call_id = await a.evaluate("window.peercall.call.callId")
    assert await b.evaluate("window.peercall.call.callId") == call_id
    for page in (a, b):
        await page.evaluate("""() => {
          window.__e2e.pcBefore = window.peercall.pc;
          window.__e2e.phases = [];
          window.peercall.call.addEventListener("phasechange", (e) => window.__e2e.phases.push(e.detail.phase));
        }""")

    # A moves to another network: the new address comes, the one in use goes.
    ip("addr", "add", f"{SECOND}/32", "dev", LINK)
    ip("addr", "del", f"{FIRST}/32", "dev", LINK)
    note = a.locator("#peer-note")
    await expect(note).to_have_text("Reconnecting audio…", timeout=int(15_000 * SCALE))
    noticed = time.monotonic()

    received = before["inbound"]["packetsReceived"]
    resumed = await wait_until(
        lambda: audio_stats(a),
        lambda s: bool(
            s and s["pair"] and s["pair"]["localAddress"] == SECOND and s["inbound"]["packetsReceived"] > received + 10
        ),
        f"A's audio to flow again over {SECOND}",
        timeout=(DISCONNECTED_RESTART_S + RESUME_S + 2) * SCALE,
    )
    back_after = time.monotonic() - noticed
    restarts = {
        name: await page.evaluate(
            "() => (window.peercall.call.timeline.iceRestarts ?? []).map((t) => performance.now() - t)"
        )
        for name, page in (("A", a), ("B", b))
    }
    since_first = max(ago for ages in restarts.values() for ago in ages[:1]) if any(restarts.values()) else None
    assert since_first is not None, f"no side restarted ICE: {dump(resumed)}"
    assert since_first / 1000 < RESUME_S * SCALE, f"audio came back {since_first:.0f} ms after the restart: {restarts}"
    assert back_after < (DISCONNECTED_RESTART_S + RESUME_S) * SCALE, (
        f"audio came back {back_after:.1f} s after the page said Reconnecting audio…"
    )
    assert sum(len(ages) for ages in restarts.values()) <= 4, f"a restart storm: {dump(restarts)}"

    await expect(note).to_be_hidden()
    await assert_audio_flows(a, "A, after the network change")
    await assert_audio_flows(b, "B, after A's network change")
    for page in (a, b):
        assert await page.evaluate("window.peercall.call.callId") == call_id, "the call id changed"
        assert await page.evaluate("window.peercall.pc === window.__e2e.pcBefore"), "the peer connection was replaced"
        assert await page.evaluate("window.__e2e.phases") == [], "the call changed phase"
        await expect(page.locator("#call-status")).to_have_text("Connected")

    await a.click("#hangup")
    await expect(b.locator("#call-status")).to_have_text("Call Ended")
