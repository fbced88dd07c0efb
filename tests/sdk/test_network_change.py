"""ICE restarts between the web client and the SDK: aiortc cannot restart ICE, and the SDK says so by what it does.

A browser's restart offer gets an answer with aiortc's unchanged ICE: the call goes on over the path in use while
that path works (a restart on a spurious network event costs nothing), and fails with a reason once it is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from peercall.client import CallPhase, media
from tests.conftest import SCALE, ServerProcess
from tests.netns import NETWORK_ONLY_FLAGS, move_to_second_address, veth_network

from .conftest import WAIT, MakeClient, OpenPage, assert_page_hears, next_incoming, wait_text, wait_until

LOCAL_UFRAG = """() => { const pc = window.peercall.pc;
  return [pc.signalingState, /a=ice-ufrag:(\\S+)/.exec(pc.currentLocalDescription.sdp)[1]]; }"""


@pytest.mark.parametrize("caller", ["page", "sdk"])
async def test_a_browser_restart_keeps_an_sdk_call_whose_path_works(
    caller: str,
    sdk: MakeClient,
    open_page: OpenPage,
    server: ServerProcess,
    uid: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The page restarts ICE (a network event) in a call with the SDK, whichever called: the SDK answers, says it
    cannot follow, and the audio goes on both ways over the same path."""
    bob = await sdk(uid("bob"))
    alice = uid("alice")
    page = await open_page(server.http, alice)
    heard = media.Capture()
    if caller == "page":
        await page.fill("#peer-id", bob.id)
        await page.click("#call")
        call = await next_incoming(bob)
        await call.accept(audio_in=media.Tone(440), audio_out=heard)
    else:
        call = await bob.call(alice, audio_in=media.Tone(440), audio_out=heard)
        await wait_text(page, "#call-status", "Incoming call")
        await page.click("#accept")
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    await wait_text(page, "#call-status", "Connected")
    await assert_page_hears(page, "the page")
    _, before = await page.evaluate(LOCAL_UFRAG)

    with caplog.at_level(logging.INFO, logger="peercall.client"):
        await page.evaluate("window.dispatchEvent(new Event('online'))")
        await wait_until(
            lambda: page.evaluate(LOCAL_UFRAG), lambda now: now[0] == "stable" and now[1] != before, "the restart"
        )

        async def restarts() -> int:
            return call.peer_ice_restarts

        await wait_until(restarts, bool, "the SDK to get the restart offer")
    assert any("aiortc cannot restart ICE" in r.getMessage() for r in caplog.records), caplog.text

    heard_before = heard.duration
    await assert_page_hears(page, "the page, after its restart")
    async with asyncio.timeout(WAIT):
        await heard.wait_for(heard_before + 1.5)
    assert call.phase is CallPhase.CONNECTED
    await wait_text(page, "#call-status", "Connected")
    end = await call.hangup()
    assert (end.outcome, end.reason) == ("answered", "user-hangup")


@pytest.fixture
async def network_only_page(chromium_path: Path) -> AsyncIterator[Browser]:
    """A second network in the namespace, and a Chromium whose only ICE candidates are on it."""
    with veth_network():
        async with async_playwright() as driver:
            chromium = await driver.chromium.launch(
                executable_path=str(chromium_path), headless=True, args=NETWORK_ONLY_FLAGS
            )
            try:
                yield chromium
            finally:
                await chromium.close()


async def open_on(browser: Browser, base: str, user: str) -> Page:
    """The web client in `browser`, connected as `user`."""
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{base}/?processing=off")
    await page.fill("#my-id", user)
    await page.click("#connect")
    await wait_text(page, "#server-status", "Connected")
    return page


async def test_a_network_change_under_an_sdk_call_ends_it_as_failed(
    sdk: MakeClient, network_only_page: Browser, server: ServerProcess, uid: Any
) -> None:
    """The page's address goes away in a call with the SDK: the page restarts ICE, aiortc cannot follow, and the call
    ends as failed on both sides (not silence forever)."""
    bob = await sdk(uid("bob"))
    page = await open_on(network_only_page, server.http, uid("alice"))
    await page.fill("#peer-id", bob.id)
    await page.click("#call")
    call = await next_incoming(bob)
    await call.accept(audio_in=media.Tone(440), audio_out=media.Capture())
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    await wait_text(page, "#call-status", "Connected")
    await assert_page_hears(page, "the page")

    move_to_second_address()
    await wait_text(page, "#peer-note", "Reconnecting audio…", timeout=15 * SCALE)
    # disconnected after ~5 s, restart 3 s later, then the page's ICE timer (10 s) gives up
    async with asyncio.timeout(25 * SCALE):
        end = await call.wait_ended()
    assert end.outcome == "failed", end
    assert call.peer_ice_restarts >= 1
    await wait_text(page, "#call-status", "Failed")
    await wait_text(
        page, "#message", "The audio connection was lost and could not be restored (the network may have changed)."
    )
