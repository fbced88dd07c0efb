"""SDK ↔ Chromium (the project's web client) in both directions: the call connects and audio flows both ways."""

from __future__ import annotations

import asyncio
from typing import Any

from peercall.client import CallPhase, media, quality
from tests.conftest import ServerProcess

from .conftest import WAIT, MakeClient, OpenPage, assert_page_hears, next_incoming, wait_text


def assert_not_silent(capture: media.Capture, who: str) -> None:
    """What `capture` got from the browser's fake microphone (periodic beeps) is sound, not silence."""
    samples = capture.samples()
    peak = int(abs(samples.astype(int)).max()) if samples.size else 0
    assert peak > 1000 and quality.rms(samples) > 100, f"{who} hears silence (peak {peak})"


async def test_browser_calls_sdk(sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any) -> None:
    """The web client calls an SDK client, which accepts: both hear the other; the SDK hangs up, the page says so."""
    bob = await sdk(uid("bob"))
    page = await open_page(server.http, uid("alice"))
    await page.fill("#peer-id", bob.id)
    await page.click("#call")
    ringing = await next_incoming(bob)
    heard = media.Capture()
    await ringing.accept(audio_in=media.Tone(440), audio_out=heard)
    async with asyncio.timeout(WAIT):
        await ringing.wait_connected()
    await wait_text(page, "#call-status", "Connected")
    await assert_page_hears(page, "the page")
    async with asyncio.timeout(WAIT):
        await heard.wait_for(1.5)
    assert_not_silent(heard, "the SDK")

    end = await ringing.hangup()
    assert (end.outcome, end.reason) == ("answered", "user-hangup")
    await wait_text(page, "#call-status", "Call Ended")


async def test_sdk_calls_browser(sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any) -> None:
    """An SDK client calls the web client, which accepts: both hear the other; the page hangs up, the SDK learns it."""
    alice = await sdk(uid("alice"))
    user = uid("bob")
    page = await open_page(server.http, user)
    heard = media.Capture()
    call = await alice.call(user, audio_in=media.Tone(440), audio_out=heard)
    await wait_text(page, "#call-status", "Incoming call")
    await page.click("#accept")
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    assert call.polite is False  # the SDK is the caller: it made the offer
    await wait_text(page, "#call-status", "Connected")
    await assert_page_hears(page, "the page")
    async with asyncio.timeout(WAIT):
        await heard.wait_for(1.5)
    assert_not_silent(heard, "the SDK")

    await page.click("#hangup")
    async with asyncio.timeout(WAIT):
        end = await call.wait_ended()
    assert (end.outcome, end.reason) == ("answered", "user-hangup")
    assert call.phase is CallPhase.ENDED
