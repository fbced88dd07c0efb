"""Video calls between two Chromium pages: the camera on and off mid-call, both sides toggling at once, a screen
share, a call that starts as video, and what the page shows of it.

Chromium's fake camera (`--use-fake-device-for-media-stream`) sends a moving pattern, and with
`--use-fake-ui-for-media-stream` a screen share is granted without a picker and sends a fake screen. What proves
video arrives: the remote `<video>` has a size and `framesDecoded` of the inbound video grows.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import ServerProcess, run_server

from .conftest import SCALE, LaunchBrowser, OpenPage, dump
from .coturn import run_coturn
from .steps import (
    SCREENS,
    SIZES,
    assert_audio_flows,
    check_accessibility,
    connect,
    inbound_sound,
    mic,
    open_pair,
    shoot,
    start_call,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

TURN_SECRET = "e2e-turn-secret"

# In a page: the video of the call as getStats() and the page see it.
VIDEO_STATS = """
async () => {
  const pc = window.peercall.pc;
  if (!pc) return null;
  const out = { framesDecoded: 0, frameWidth: 0, framesSent: 0, transceivers: 0, sending: null,
                element: null };
  for (const r of (await pc.getStats()).values()) {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      out.framesDecoded = r.framesDecoded ?? 0;
      out.frameWidth = r.frameWidth ?? 0;
    }
    if (r.type === "outbound-rtp" && r.kind === "video") out.framesSent += r.framesSent ?? 0;
  }
  const video = pc.getTransceivers().filter((t) => (t.sender.track?.kind ?? t.receiver.track.kind) === "video");
  out.transceivers = video.length;
  const track = video[0]?.sender.track;
  out.sending = track ? { label: track.label, contentHint: track.contentHint, readyState: track.readyState } : null;
  const el = document.getElementById("remote-video");
  out.element = { width: el.videoWidth, height: el.videoHeight };
  return out;
}
"""


async def video_stats(page: Page) -> dict[str, Any]:
    stats = await page.evaluate(VIDEO_STATS)
    assert stats is not None, "the page has no call"
    return stats


async def assert_video_arrives(page: Page, who: str) -> dict[str, Any]:
    """`who`'s page receives video: the remote <video> has a size and decoded frames keep growing."""
    first = await wait_until(
        lambda: video_stats(page),
        lambda s: s["framesDecoded"] > 0 and s["element"]["width"] > 0 and s["element"]["height"] > 0,
        f"{who}'s remote <video> to show frames",
    )
    later = await wait_until(
        lambda: video_stats(page),
        lambda s: s["framesDecoded"] >= first["framesDecoded"] + 10,
        f"{who}'s decoded frames to grow by 10",
        timeout=5 * SCALE,
    )
    await expect(page.locator("#video-stage")).to_have_attribute("data-remote", "on")
    return later


async def frames_in(page: Page, ms: int) -> int:
    """How many video frames `page` decodes over the next `ms` milliseconds."""
    before = (await video_stats(page))["framesDecoded"]
    await asyncio.sleep(ms / 1000)
    return int((await video_stats(page))["framesDecoded"] - before)


async def assert_readable_over_video(page: Page, selector: str) -> None:
    """The text at `selector`, drawn over a video, sits on a dark plate of its own (whatever the picture under it
    shows) and clear of the Full screen button."""
    found = await page.evaluate(
        """(selector) => {
          const label = document.querySelector(selector);
          const box = label.getBoundingClientRect();
          const button = document.getElementById("fullscreen").getBoundingClientRect();
          const [r, g, b, a = 1] = getComputedStyle(label).backgroundColor.match(/[\\d.]+/g).map(Number);
          const overlaps = !(box.right <= button.left || box.left >= button.right || box.bottom <= button.top
                             || box.top >= button.bottom);
          return { plate: { r, g, b, a }, color: getComputedStyle(label).color, overlaps };
        }""",
        selector,
    )
    plate = found["plate"]
    assert plate["a"] >= 0.6 and max(plate["r"], plate["g"], plate["b"]) < 60, f"no dark plate under the text: {found}"
    assert not found["overlaps"], f"the text runs under the Full screen button: {found}"


async def test_camera_on_mid_call_then_off_stops_frames_and_the_peer_sees_it(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """An audio call becomes a video call when A turns the camera on, and back when A turns it off: B's page shows
    the change within 500 ms (A's media-state, and the renegotiation), no more frames arrive, and the audio goes
    on."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await expect(a.locator("#video-stage")).to_be_hidden()
    assert (await video_stats(b))["transceivers"] == 0, "an audio call should have no video transceiver"

    await a.click("#camera")
    await expect(a.locator("#camera")).to_have_attribute("aria-pressed", "true")
    await expect(a.locator("#video-stage")).to_be_visible()
    await expect(a.locator("#video-stage")).to_have_attribute("data-source", "camera")  # our preview, mirrored
    await expect(a.locator("#remote-video-off")).to_have_text("clientB's camera is off")
    await assert_readable_over_video(a, "#remote-video-off")
    stats = await assert_video_arrives(b, "B")
    print(f"B receives A's camera: {dump(stats)}")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-camera", "true")  # A said so (media-state)

    clicked = time.monotonic()
    await a.click("#camera")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-camera", "false", timeout=500)
    await expect(b.locator("#video-stage")).to_be_hidden(timeout=500)
    shown_ms = (time.monotonic() - clicked) * 1000
    print(f"B's page showed A's camera off {shown_ms:.0f} ms after the click")
    await expect(a.locator("#camera")).to_have_attribute("aria-pressed", "false")
    await expect(a.locator("#video-stage")).to_be_hidden()
    await asyncio.sleep(0.3)  # frames already on the way may still be decoded
    assert await frames_in(b, 1000) == 0, "B still decodes frames after A turned the camera off"
    sound = await inbound_sound(b, 800)
    assert sound and sound["packets"] > 25 and sound["power"] > 0, f"B's audio stopped with the video: {dump(sound)}"
    assert (await video_stats(a))["transceivers"] == 1

    # On again: the same transceiver carries it, and frames arrive again.
    await a.click("#camera")
    await assert_video_arrives(b, "B")
    assert (await video_stats(a))["transceivers"] == 1, "turning the camera on again should reuse the transceiver"
    assert (await video_stats(b))["transceivers"] == 1

    # The camera ends by itself (unplugged): the camera is off, and the peer sees it.
    await a.evaluate(
        """() => {
          const track = peercall.call.localVideo.getVideoTracks()[0];
          track.stop();
          track.dispatchEvent(new Event("ended"));
        }"""
    )
    await expect(a.locator("#camera")).to_have_attribute("aria-pressed", "false")
    await expect(b.locator("#video-stage")).to_be_hidden()

    await a.click("#hangup")
    await expect(b.locator("#call-status")).to_have_text("Call Ended")
    assert (await mic(a))["live"] == 0, "the camera (or the microphone) is still on after the call"


async def test_an_offer_the_server_dropped_is_sent_again(fresh_server: ServerProcess, open_page: OpenPage) -> None:
    """The server drops an offer for a peer whose connection lags (`rate-limited`, the peer stays): the page sends
    it again shortly, so turning the camera on still reaches the peer instead of waiting for ever."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await a.evaluate(
        """() => {
          const ws = window.__e2e.sockets.at(-1);
          const send = ws.send.bind(ws);
          window.__dropped = 0;
          ws.send = (text) => {  // the server's side of it: this offer never reaches the peer, and we are told
            const msg = JSON.parse(text);
            if (msg.type !== "offer" || window.__dropped > 0) return send(text);
            window.__dropped += 1;
            const error = { type: "error", code: "rate-limited", ref: "offer", to: msg.to, callId: msg.callId,
                            message: `${msg.to} is not reading fast enough; this offer was dropped` };
            setTimeout(() => ws.dispatchEvent(new MessageEvent("message", { data: JSON.stringify(error) })), 10);
          };
        }"""
    )
    await a.click("#camera")
    await assert_video_arrives(b, "B")
    assert await a.evaluate("window.__dropped") == 1
    await expect(a.locator("#message")).not_to_contain_text("slowing this page down")


async def test_video_call_shows_both_cameras_and_the_quality_panel_shows_the_video(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A "Video call" starts with A's camera on; B answers with video; each sees the other large and itself small,
    and the quality panel gives the video's resolution, frame rate and bit rate."""
    a, b = await open_pair(open_page, fresh_server)
    await a.click("#video-call")
    await expect(b.locator("#incoming")).to_be_visible()
    await b.click("#accept-video")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await assert_video_arrives(a, "A")
    await assert_video_arrives(b, "B")
    await assert_audio_flows(a, "A")
    for page in (a, b):
        assert (await video_stats(page))["transceivers"] == 1
        await expect(page.locator("#camera")).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("#local-video")).to_be_visible()

    await b.click("#quality")
    await expect(b.locator("#quality-video")).to_have_text(re.compile(r"^\d+\u00d7\d+, \d+ frames/s$"))
    await expect(b.locator("#quality-video-bitrate")).to_have_text(re.compile(r"\d kbit/s$"))
    width = await b.locator("#quality").get_attribute("data-video-width")
    assert width and int(width) > 0
    await b.click("#quality")

    await b.click("#fullscreen")
    await expect(b.locator("#fullscreen")).to_have_attribute("aria-pressed", "true")
    assert await b.evaluate("document.fullscreenElement?.id") == "video-stage"
    await b.click("#fullscreen")
    await expect(b.locator("#fullscreen")).to_have_attribute("aria-pressed", "false")

    for page, name in ((a, "A"), (b, "B")):
        await page.evaluate("document.activeElement?.blur()")
        for path in await shoot(page, f"video-call-{name}"):
            print(f"screenshot: {path}")
    await b.set_viewport_size(SIZES["phone"])  # what a phone shows first: the call (docs/screenshots)
    await b.screenshot(path=SCREENS / "video-call-phone-light-top.png", animations="disabled")
    await check_accessibility(b, "video-call")


async def test_both_sides_turning_the_camera_on_and_off_at_once_keep_one_working_call(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A and B click Camera at the same moment (an offer collision): perfect negotiation leaves one call with one
    video transceiver, video both ways and audio both ways; the same when both turn it off, and on again."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    for round_ in range(2):
        await asyncio.gather(a.click("#camera"), b.click("#camera"))
        await assert_video_arrives(a, "A")
        await assert_video_arrives(b, "B")
        for page in (a, b):
            stats = await video_stats(page)
            assert stats["transceivers"] == 1, f"round {round_}: more than one video transceiver: {dump(stats)}"
        await asyncio.gather(a.click("#camera"), b.click("#camera"))
        for page in (a, b):
            await expect(page.locator("#video-stage")).to_be_hidden()
            await expect(page.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(a, "A")
    await assert_audio_flows(b, "B")
    assert await a.evaluate("peercall.call.callId") == await b.evaluate("peercall.call.callId")


async def test_screen_share_replaces_the_camera_and_the_camera_comes_back(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A shares a screen in place of the camera: B receives it; when sharing stops (the browser's own "Stop
    sharing" ends the track) A's camera is sent again, on the same transceiver."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await a.click("#camera")
    await assert_video_arrives(b, "B")
    camera = (await video_stats(a))["sending"]

    await a.click("#screen-share")
    await expect(a.locator("#screen-share")).to_have_attribute("aria-pressed", "true")
    await expect(a.locator("#video-stage")).to_have_attribute("data-source", "screen")  # not mirrored
    sending = await wait_until(
        lambda: video_stats(a),
        lambda s: s["sending"] and s["sending"]["contentHint"] == "detail",
        "A to send the screen",
    )
    assert sending["sending"]["label"] != camera["label"], f"A still sends the camera: {dump(sending)}"
    await assert_video_arrives(b, "B")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-screen", "true")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-camera", "false")  # what B sees is the screen
    await expect(b.locator("#video-stage")).to_have_attribute("data-remote-source", "screen")

    # The browser's "Stop sharing" ends the screen's track (a real stop() fires no event, so fire it as Chromium does).
    await a.evaluate(
        """() => {
          const track = peercall.call.localVideo.getVideoTracks()[0];
          track.stop();
          track.dispatchEvent(new Event("ended"));
        }"""
    )
    await expect(a.locator("#screen-share")).to_have_attribute("aria-pressed", "false")
    await expect(a.locator("#video-stage")).to_have_attribute("data-source", "camera")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-screen", "false")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-camera", "true")
    back = await wait_until(
        lambda: video_stats(a),
        lambda s: s["sending"] and s["sending"]["label"] == camera["label"],
        "A to send the camera again",
    )
    assert back["transceivers"] == 1
    await assert_video_arrives(b, "B")
    await assert_audio_flows(b, "B")


# In a page: the limits on the video we send (the sender's first encoding).
SENDER_LIMITS = """
() => {
  const pc = window.peercall.pc;
  const sender = pc?.getTransceivers().find((t) => t.sender.track?.kind === "video")?.sender;
  const encoding = sender?.getParameters().encodings?.[0];
  return encoding ? { maxBitrate: encoding.maxBitrate ?? null, scale: encoding.scaleResolutionDownBy ?? null } : null;
}
"""


async def test_the_video_sender_lowers_its_rate_on_a_relayed_or_lossy_path(open_page: OpenPage) -> None:
    """The rule: full rate on a clean direct path, reduced through a relay or at 3 % loss, low at 10 %; and a real
    call through coturn sends its camera at the reduced rate and resolution while a direct one sends at full."""
    with (
        run_coturn(TURN_SECRET) as turn,
        run_server(PEERCALL_TURN_URLS=turn.url, PEERCALL_TURN_SECRET=TURN_SECRET) as server,
    ):
        a, b = await open_pair(open_page, server)
        cases = [
            ({"path": "direct", "lossPct": 0}, "full"),
            ({"path": "direct", "lossPct": 2.9}, "full"),
            ({"path": "relayed", "lossPct": 0}, "reduced"),
            ({"path": "direct", "lossPct": 3}, "reduced"),
            ({"path": "direct", "lossPct": 0, "videoSendLossPct": 4}, "reduced"),
            ({"path": "relayed", "lossPct": 10}, "low"),
            ({"path": None, "lossPct": 0, "videoSendLossPct": 12}, "low"),
        ]
        got = await a.evaluate(
            """async (cases) => {
              const { videoTier } = await import("./js/quality.js");
              return cases.map(([sample]) => videoTier(sample));
            }""",
            cases,
        )
        assert got == [tier for _, tier in cases]
        # Two videos sent (a camera and a screen): the one the peer reports losing more of is what counts.
        loss = await a.evaluate(
            """async () => {
              const { readCallStats } = await import("./js/quality.js");
              const reports = [
                { id: "v1", type: "remote-inbound-rtp", kind: "video", fractionLost: 0.12, timestamp: 1 },
                { id: "v2", type: "remote-inbound-rtp", kind: "video", fractionLost: 0.01, timestamp: 1 },
              ];
              return readCallStats(new Map(reports.map((r) => [r.id, r]))).videoSendLoss;
            }"""
        )
        assert loss == 0.12
        limits = await a.evaluate("async () => (await import('./js/quality.js')).VIDEO_LIMITS")

        # A direct video call: full rate.
        await a.click("#video-call")
        await b.click("#accept")
        await expect(a.locator("#call-status")).to_have_text("Connected")
        await assert_video_arrives(b, "B")
        full = limits["full"]
        await wait_until(
            lambda: a.evaluate(SENDER_LIMITS),
            lambda s: s == {"maxBitrate": full["maxBitrate"], "scale": full["scaleResolutionDownBy"]},
            "A's camera to be sent at the full rate",
        )
        await a.click("#hangup")
        await expect(b.locator("#call-status")).to_have_text("Call Ended")

        # Through the relay ("Hide my IP address"): reduced.
        await a.check("#relay-only")
        await a.click("#video-call")
        await b.click("#accept")
        await expect(a.locator("#call-status")).to_have_text("Connected")
        await assert_video_arrives(b, "B")
        reduced = limits["reduced"]
        await wait_until(
            lambda: a.evaluate(SENDER_LIMITS),
            lambda s: s == {"maxBitrate": reduced["maxBitrate"], "scale": reduced["scaleResolutionDownBy"]},
            "A's camera to be sent at the reduced rate through the relay",
        )
        await expect(a.locator("#quality")).to_have_attribute("data-path", "relayed")


async def test_switching_cameras_mid_call_keeps_the_video_going(
    fresh_server: ServerProcess, open_page: OpenPage, launch_browser: LaunchBrowser
) -> None:
    """With several cameras, picking another one under Camera mid-call sends it at once (same transceiver, no new
    offer), and B keeps receiving video."""
    # Chromium's fake cameras: fake_device_1 sends Y16 (a depth camera), which no encoder takes; 0 and 3 are I420.
    four_cameras = await launch_browser("--use-fake-device-for-media-stream=device-count=4")
    a = await open_page(fresh_server.http, "/callerA.html", "A", in_browser=four_cameras)
    b = await open_page(fresh_server.http, "/callerB.html", "B")
    await connect(a)
    await connect(b)
    await start_call(a, b)
    await a.click("#camera")
    await assert_video_arrives(b, "B")
    options = a.locator("#camera-select option")
    await expect(options).to_have_count(4)
    first = (await video_stats(a))["sending"]["label"]
    assert first == "fake_device_0"
    await expect(options.nth(3)).to_have_text("fake_device_3")  # named, now that the camera permission was given
    other = await options.nth(3).get_attribute("value")
    assert other
    await a.select_option("#camera-select", other)
    switched = await wait_until(
        lambda: video_stats(a),
        lambda s: s["sending"] and s["sending"]["label"] != first,
        "A to send the other camera",
    )
    assert switched["transceivers"] == 1
    await expect(a.locator("#camera-select")).to_have_value(other)
    await assert_video_arrives(b, "B")
    assert await a.evaluate("peercall.call.pc.signalingState") == "stable"


# Runs in a page whose user refuses the camera (and not the microphone).
DENY_CAMERA = """
(() => {
  const devices = navigator.mediaDevices;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    if (constraints?.video) throw new DOMException("Permission denied", "NotAllowedError");
    return original(constraints);
  };
})();
"""


async def test_a_refused_camera_leaves_an_audio_call_and_says_why(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A "Video call" whose camera is refused still connects, as an audio call, and the page says in words why
    there is no video (also after it connected); Camera mid-call says it again, and the call goes on."""
    a, b = await open_pair(open_page, fresh_server)
    await a.context.add_init_script(DENY_CAMERA)
    await a.reload()
    await connect(a)
    await expect(a.locator('#online button[data-peer="clientB"]')).to_be_visible()
    await a.click("#video-call")
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(a.locator("#message")).to_contain_text("Camera access was denied")
    await assert_audio_flows(b, "B")
    await expect(a.locator("#camera")).to_have_attribute("aria-pressed", "false")
    await expect(a.locator("#video-stage")).to_be_hidden()

    await a.click("#camera")
    await expect(a.locator("#message")).to_contain_text("Camera access was denied")
    await expect(a.locator("#camera")).to_have_attribute("aria-pressed", "false")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#call-status")).to_have_text("Connected")
