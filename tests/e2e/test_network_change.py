"""A network change under a call: the address that carries the audio goes away, and the call carries on.

The "network" is a veth pair inside the loopback-only namespace (tests/netns.py): A's browser runs without the
loopback flag, so the veth address is the only one it can use; removing it mid-call (after adding another, as when a
laptop moves from one network to the next) breaks the candidate pair in use. Chromium fires no `online` or
`navigator.connection` event for that here, and says `disconnected` only about 5 s after the removal: the page
notices that nothing arrives any more (`STALL_RESTART_MS`, 1.5 s) and restarts ICE then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Playwright, expect

from tests.conftest import SCALE, ServerProcess
from tests.netns import FIRST, NETWORK_ONLY_FLAGS, SECOND, move_to_second_address, veth_network

from .conftest import OpenPage, dump
from .steps import assert_audio_flows, audio_stats, connect, ring, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

RESUME_S = 3.0  # the audio flows again this soon after the address in use went away (issue #18)


@pytest.fixture
def network(loopback_only: None) -> Iterator[None]:
    """A second network in the namespace, removed after the test."""
    with veth_network():
        yield


@pytest_asyncio.fixture(loop_scope="session")
async def network_only_browser(playwright: Playwright, chromium_path: Path, network: None) -> AsyncIterator[Browser]:
    """A Chromium without `--allow-loopback-in-peer-connection`: its only ICE candidates are the veth's addresses."""
    chromium = await playwright.chromium.launch(
        executable_path=str(chromium_path), headless=True, args=NETWORK_ONLY_FLAGS
    )
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
          // every note the page shows of the other side: on a fast machine "Reconnecting audio…" may be up for
          // less than a poll of the test
          window.__e2e.notes = [];
          const note = document.querySelector("#peer-note");
          new MutationObserver(() => window.__e2e.notes.push(note.hidden ? "" : note.textContent)).observe(note, {
            attributes: true, childList: true, characterData: true, subtree: true,
          });
        }""")

    # A moves to another network: the new address comes, the one in use goes.
    move_to_second_address()
    removed = time.monotonic()
    await wait_until(
        lambda: a.evaluate("window.__e2e.notes"),
        lambda notes: "Reconnecting audio…" in notes,
        "A to say Reconnecting audio…",
        timeout=15 * SCALE,
    )

    received = before["inbound"]["packetsReceived"]
    probed = [0.0]  # when the probe that saw the audio back began: not our polling's latency on a loaded machine

    async def probe() -> dict | None:
        probed[0] = time.monotonic()
        return await audio_stats(a)

    resumed = await wait_until(
        probe,
        lambda s: bool(
            s and s["pair"] and s["pair"]["localAddress"] == SECOND and s["inbound"]["packetsReceived"] > received + 10
        ),
        f"A's audio to flow again over {SECOND}",
        timeout=(RESUME_S + 10) * SCALE,
    )
    back_after = probed[0] - removed
    restarts = {
        name: await page.evaluate(
            "() => (window.peercall.call.timeline.iceRestarts ?? []).map((t) => performance.now() - t)"
        )
        for name, page in (("A", a), ("B", b))
    }
    since_first = max(ago for ages in restarts.values() for ago in ages[:1]) if any(restarts.values()) else None
    assert since_first is not None, f"no side restarted ICE: {dump(resumed)}"
    print(f"audio back {back_after:.2f} s after the address went, {since_first:.0f} ms after the first restart")
    assert back_after < RESUME_S * SCALE, f"audio came back {back_after:.1f} s after the address in use went away"
    assert sum(len(ages) for ages in restarts.values()) <= 4, f"a restart storm: {dump(restarts)}"

    await expect(a.locator("#peer-note")).to_be_hidden()
    await assert_audio_flows(a, "A, after the network change")
    await assert_audio_flows(b, "B, after A's network change")
    for page in (a, b):
        assert await page.evaluate("window.peercall.call.callId") == call_id, "the call id changed"
        assert await page.evaluate("window.peercall.pc === window.__e2e.pcBefore"), "the peer connection was replaced"
        assert await page.evaluate("window.__e2e.phases") == [], "the call changed phase"
        await expect(page.locator("#call-status")).to_have_text("Connected")

    await a.click("#hangup")
    await expect(b.locator("#call-status")).to_have_text("Call Ended")


async def test_a_burst_of_network_events_makes_one_restart_then_one_after_the_backoff(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """Five `online` events at once restart ICE once at once and once more after the 3 s backoff: no storm."""
    a = await open_page(fresh_server.http, "/callerA.html", "A")
    b = await open_page(fresh_server.http, "/callerB.html", "B")
    await connect(a)
    await connect(b)
    await ring(a, b)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await a.evaluate("() => { for (let i = 0; i < 5; i++) window.dispatchEvent(new Event('online')); }")
    restarts = "() => (window.peercall.call.timeline.iceRestarts ?? []).length"
    assert await a.evaluate(restarts) == 1, "the first event should restart ICE at once, and only once"
    await wait_until(lambda: a.evaluate(restarts), lambda n: n >= 2, "the restart put off by the backoff")
    assert await a.evaluate(restarts) == 2
    await assert_audio_flows(a, "A, after its restarts")
    await assert_audio_flows(b, "B, after A's restarts")
    assert await a.evaluate(restarts) == 2, "more restarts than the two the burst asked for"
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(a.locator("#peer-note")).to_be_hidden()


async def test_both_sides_restarting_at_once_keep_one_working_call(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """Both pages restart ICE at the same moment (glare): perfect negotiation settles it, the audio flows both ways."""
    a = await open_page(fresh_server.http, "/callerA.html", "A")
    b = await open_page(fresh_server.http, "/callerB.html", "B")
    await connect(a)
    await connect(b)
    await ring(a, b)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#call-status")).to_have_text("Connected")
    ufrags = """() => { const pc = window.peercall.pc;
      return [pc.signalingState, /a=ice-ufrag:(\\S+)/.exec(pc.currentLocalDescription.sdp)[1],
              /a=ice-ufrag:(\\S+)/.exec(pc.currentRemoteDescription.sdp)[1]]; }"""
    before = {name: await page.evaluate(ufrags) for name, page in (("A", a), ("B", b))}
    call_id = await a.evaluate("window.peercall.call.callId")
    restart = "() => window.peercall.call.restartIce('test: both at once')"
    await asyncio.gather(a.evaluate(restart), b.evaluate(restart))
    for name, page in (("A", a), ("B", b)):
        await wait_until(
            lambda page=page: page.evaluate(ufrags),
            lambda now, name=name: now[0] == "stable" and now[1] != before[name][1] and now[2] != before[name][2],
            f"{name}'s ICE restart to complete (new local and remote credentials)",
        )
    await assert_audio_flows(a, "A, after both restarted")
    await assert_audio_flows(b, "B, after both restarted")
    for page in (a, b):
        assert await page.evaluate("window.peercall.call.callId") == call_id
        await expect(page.locator("#call-status")).to_have_text("Connected")
