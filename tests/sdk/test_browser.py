"""SDK ↔ Chromium (the project's web client) in both directions: the call connects and audio flows both ways."""

from __future__ import annotations

import asyncio
from typing import Any

from peercall.client import CallPhase, MediaState, PeerMediaChanged, media, quality
from tests.conftest import ServerProcess

from .conftest import WAIT, MakeClient, OpenPage, assert_page_hears, next_incoming, wait_text, wait_until


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


async def test_mute_is_said_both_ways_between_sdk_and_browser(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any
) -> None:
    """The page's Mute reaches the SDK as `peer_media` (a PeerMediaChanged event); the SDK's mute shows on the page
    as "… muted their microphone." at once (not as the silence hint, which waits 2 s); unmute clears both."""
    alice = await sdk(uid("alice"))
    events = alice.events()
    user = uid("bob")
    page = await open_page(server.http, user)
    call = await alice.call(user, audio_in=media.Tone(440))
    await wait_text(page, "#call-status", "Incoming call")
    await page.click("#accept")
    async with asyncio.timeout(WAIT):
        await call.wait_connected()

    await page.click("#mute")
    async with asyncio.timeout(WAIT):
        async for event in events:
            if isinstance(event, PeerMediaChanged) and event.media.muted:
                break
    assert call.peer_media == MediaState(muted=True)
    await page.click("#mute")
    async with asyncio.timeout(WAIT):
        async for event in events:
            if isinstance(event, PeerMediaChanged) and not event.media.muted:
                break

    await call.mute()
    await wait_text(page, "#peer-note", f"{alice.id} muted their microphone.", timeout=1.5)
    await call.mute(False)
    await wait_until(lambda: page.is_hidden("#peer-note"), bool, "the page to clear the note", timeout=1.5)
    await call.hangup()
