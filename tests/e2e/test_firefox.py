"""Firefox ESR and Chromium call each other through peercall's web client, in both directions.

Firefox is Debian's `firefox-esr`, driven through Marionette (tests/e2e/firefox.py); Chromium is Debian's, driven
by Playwright. Both pages are the two-tab demo (callerA/callerB), each with its browser's fake microphone (Firefox:
a steady 1 kHz tone; Chromium: beeps). What is asserted is what the two people would notice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import ServerProcess

from .conftest import SCALE, OpenFirefox, OpenPage, dump
from .firefox import FirefoxPage
from .steps import INBOUND_SOUND, assert_audio_flows, wait_until
from .test_media_state import CLICK_MUTE, WATCH_NOTE, note_time
from .test_video import VIDEO_STATS

pytestmark = [pytest.mark.browser, pytest.mark.firefox, pytest.mark.asyncio(loop_scope="session")]

PEER_MUTED = "() => document.querySelector('#in-call').dataset.peerMuted ?? null"
TEXT = "(selector) => document.querySelector(selector)?.textContent ?? null"
VISIBLE = "(sel) => { const e = document.querySelector(sel); return Boolean(e && e.getClientRects().length); }"


async def sees(page: Any, who: str, selector: str, text: str) -> None:
    """`who`'s page shows `text` in `selector` (Firefox's page or Chromium's alike)."""
    await wait_until(lambda: page.evaluate(TEXT, selector), lambda t: t == text, f"{who}'s {selector} to read {text!r}")


async def shown(page: Any, who: str, selector: str, visible: bool = True) -> None:
    """`who`'s page shows (or hides) the element `selector`."""
    await wait_until(
        lambda: page.evaluate(VISIBLE, selector),
        lambda v: v is visible,
        f"{who}'s {selector} to be {'shown' if visible else 'hidden'}",
    )


def assert_direct(stats: dict[str, Any], who: str) -> None:
    """The selected pair joins two loopback addresses directly (host; or prflx, Chromium's host address learnt from
    its first check, when Firefox calls Chromium: see the notes on Firefox)."""
    pair = stats["pair"]
    assert pair, f"{who} has no selected candidate pair: {dump(stats)}"
    assert pair["local"] == "host" and pair["remote"] in ("host", "prflx"), f"{who}'s path is not direct: {dump(pair)}"
    assert pair["remoteAddress"] == "127.0.0.1", f"{who}'s path leaves loopback: {dump(pair)}"


@pytest.mark.parametrize("caller", ["firefox", "chromium"])
async def test_firefox_and_chromium_call_each_other(
    caller: str, fresh_server: ServerProcess, open_page: OpenPage, open_firefox: OpenFirefox
) -> None:
    """Firefox ESR calls Chromium (and the reverse): both connect, audio flows both ways, the caller's mute shows on
    the other side within half a second (and silences it), and the callee's hangup ends the call on the caller's
    side."""
    firefox_is_a = caller == "firefox"
    ff = await open_firefox(fresh_server.http, "/callerA.html" if firefox_is_a else "/callerB.html", "Firefox")
    cr = await open_page(fresh_server.http, "/callerB.html" if firefox_is_a else "/callerA.html", "Chromium")
    a, b = (ff, cr) if firefox_is_a else (cr, ff)
    names = {id(ff): "Firefox", id(cr): "Chromium"}
    name_a, name_b = names[id(a)], names[id(b)]

    for page, who in ((a, name_a), (b, name_b)):
        await page.click("#connect")
        await sees(page, who, "#server-status", "Connected")
    await shown(a, name_a, '#online button[data-peer="clientB"]')

    await a.click("#call")
    await shown(b, name_b, "#incoming")
    await sees(b, name_b, "#call-status", "Incoming call")
    await b.click("#accept")
    await sees(a, name_a, "#call-status", "Connected")
    await sees(b, name_b, "#call-status", "Connected")

    for page, who in ((ff, "Firefox"), (cr, "Chromium")):
        stats = await assert_audio_flows(page, who)
        assert_direct(stats, who)
        print(f"{who} receives {dump(stats['inbound'])} over {dump(stats['pair'])}")
        await wait_until(
            lambda page=page: page.evaluate("() => document.querySelector('#remote-audio').paused"),
            lambda paused: paused is False,
            f"{who}'s page to play the other side's audio",
        )

    # The caller mutes: the other side is told at once (media-state), and hears silence; unmuting clears it.
    await wait_until(lambda: b.evaluate(PEER_MUTED), lambda v: v == "false", f"{name_b} to know the caller is unmuted")
    await b.evaluate(WATCH_NOTE)
    clicked = await a.evaluate(CLICK_MUTE)
    await sees(b, name_b, "#peer-note", "clientA muted their microphone.")
    shown_ms = await note_time(b, "muted") - clicked
    print(f"{name_b} showed {name_a}'s mute {shown_ms} ms after the click")
    assert shown_ms < 500 * SCALE, f"{name_b} showed the mute {shown_ms} ms after {name_a} clicked"
    assert await b.evaluate(PEER_MUTED) == "true"
    await sees(a, name_a, "#mute", "Unmute")
    quiet = await wait_until(
        lambda: b.evaluate(INBOUND_SOUND, 600),
        lambda s: bool(s and s["packets"] > 15 and s["power"] < 1e-9),
        f"the sound arriving at {name_b} to stop while packets still flow",
    )
    print(f"{name_b} receives, {name_a} muted: {dump(quiet)}")
    unclicked = await a.evaluate(CLICK_MUTE)
    await shown(b, name_b, "#peer-note", visible=False)
    cleared_ms = await note_time(b, "cleared") - unclicked
    assert cleared_ms < 500 * SCALE, f"{name_b} cleared the mute {cleared_ms} ms after {name_a} clicked"
    assert await b.evaluate(PEER_MUTED) == "false"
    await wait_until(
        lambda: b.evaluate(INBOUND_SOUND, 600),
        lambda s: bool(s and s["power"] > 1e-6),
        f"sound at {name_b} again",
    )

    # The callee hangs up: the caller's side ends too.
    await b.click("#hangup")
    await sees(b, name_b, "#call-status", "Call Ended")
    await sees(a, name_a, "#call-status", "Call Ended")
    await sees(a, name_a, "#message", "clientB hung up.")
    assert await ff.evaluate("() => window.peercall.pc") is None, "Firefox kept its peer connection"


async def test_firefox_page_errors_are_caught(server: ServerProcess, open_firefox: OpenFirefox) -> None:
    """The Firefox fixture sees the page's console.error and an uncaught error thrown by the page's own script."""
    ff: FirefoxPage = await open_firefox(server.http, "/callerA.html", "Firefox")
    assert await ff.errors(take=True) == [], "the page logged errors on load"

    await ff.evaluate("() => console.error('deliberate console error')")
    # Signaling.prototype.send called on no Signaling throws inside signaling.js, a script of the page's origin.
    await ff.evaluate("() => { setTimeout(window.peercall.signaling.send, 0); }")

    found = await wait_until(ff.errors, lambda errors: len(errors) >= 2, "Firefox to report both errors", timeout=5)
    assert found[0] == "console.error: deliberate console error", found
    assert found[1].startswith(f"JavaScript error: {ff.origin}/js/signaling.js, line "), found
    assert len(found) == 2, found
    await ff.errors(take=True)  # they were meant


def attribute(selector: str, name: str) -> str:
    """In a page: the attribute `name` of the element `selector` finds (None when absent)."""
    return f"() => document.querySelector({selector!r})?.getAttribute({name!r}) ?? null"


async def has(page: Any, who: str, selector: str, name: str, value: str, timeout: float | None = None) -> None:
    """`who`'s page gives the element `selector` the attribute `name`=`value` (within `timeout` seconds)."""
    await wait_until(
        lambda: page.evaluate(attribute(selector, name)),
        lambda v: v == value,
        f"{who}'s {selector} to have {name}={value!r}",
        **({"timeout": timeout} if timeout is not None else {}),
    )


async def video_arrives(page: Any, who: str) -> dict[str, Any]:
    """`who`'s page shows the other side's video: the remote <video> has a size, its decoded frames keep growing,
    and the stage says the remote video is on."""
    first = await wait_until(
        lambda: page.evaluate(VIDEO_STATS),
        lambda s: bool(s and s["framesDecoded"] > 0 and s["element"]["width"] > 0 and s["element"]["height"] > 0),
        f"{who}'s remote <video> to show frames",
    )
    later = await wait_until(
        lambda: page.evaluate(VIDEO_STATS),
        lambda s: s["framesDecoded"] >= first["framesDecoded"] + 10,
        f"{who}'s decoded frames to grow by 10",
        timeout=5 * SCALE,
    )
    await has(page, who, "#video-stage", "data-remote", "on")
    return later


async def test_camera_on_and_off_across_firefox_and_chromium(
    fresh_server: ServerProcess, open_page: OpenPage, open_firefox: OpenFirefox
) -> None:
    """In an audio call between Firefox and Chromium each turns its camera on: the other is told and receives the
    video; Chromium shares its screen and stops: Firefox is told and shows it; each turns its camera off: the other's
    page shows it within half a second and decodes no more frames, while the audio goes on."""
    ff = await open_firefox(fresh_server.http, "/callerA.html", "Firefox", camera=True)
    cr = await open_page(fresh_server.http, "/callerB.html", "Chromium")
    for page, who in ((ff, "Firefox"), (cr, "Chromium")):
        await page.click("#connect")
        await sees(page, who, "#server-status", "Connected")
    await shown(ff, "Firefox", '#online button[data-peer="clientB"]')
    await ff.click("#call")
    await shown(cr, "Chromium", "#incoming")
    await cr.click("#accept")
    await sees(ff, "Firefox", "#call-status", "Connected")
    await sees(cr, "Chromium", "#call-status", "Connected")
    await shown(cr, "Chromium", "#video-stage", visible=False)

    await ff.click("#camera")
    await has(cr, "Chromium", "#in-call", "data-peer-camera", "true")
    print(f"Chromium receives Firefox's camera: {dump(await video_arrives(cr, 'Chromium'))}")
    await cr.click("#camera")
    await has(ff, "Firefox", "#in-call", "data-peer-camera", "true")
    print(f"Firefox receives Chromium's camera: {dump(await video_arrives(ff, 'Firefox'))}")

    # Chromium shares its (fake) screen in place of the camera, then stops: Firefox is told and shows each.
    await cr.click("#screen-share")
    await has(ff, "Firefox", "#in-call", "data-peer-screen", "true")
    await has(ff, "Firefox", "#video-stage", "data-remote-source", "screen")
    await video_arrives(ff, "Firefox")
    await cr.click("#screen-share")
    await has(ff, "Firefox", "#in-call", "data-peer-screen", "false")
    await has(ff, "Firefox", "#video-stage", "data-remote-source", "camera")
    await video_arrives(ff, "Firefox")

    await ff.click("#camera")
    await has(cr, "Chromium", "#in-call", "data-peer-camera", "false", timeout=0.5 * SCALE)
    await has(cr, "Chromium", "#video-stage", "data-remote", "off", timeout=0.5 * SCALE)
    await sees(cr, "Chromium", "#remote-video-off", "clientA's camera is off")
    await cr.click("#camera")
    await has(ff, "Firefox", "#in-call", "data-peer-camera", "false", timeout=0.5 * SCALE)
    await shown(ff, "Firefox", "#video-stage", visible=False)
    await shown(cr, "Chromium", "#video-stage", visible=False)
    await asyncio.sleep(0.3)  # frames already on the way may still be decoded
    for page, who in ((ff, "Firefox"), (cr, "Chromium")):
        before = (await page.evaluate(VIDEO_STATS))["framesDecoded"]
        sound = await page.evaluate(INBOUND_SOUND, 800)
        after = (await page.evaluate(VIDEO_STATS))["framesDecoded"]
        assert after == before, f"{who} still decodes frames after the other camera went off"
        assert sound and sound["packets"] > 25 and sound["power"] > 0, f"{who}'s audio stopped: {dump(sound)}"
        await sees(page, who, "#call-status", "Connected")
