"""Video in the SDK: SDK ↔ SDK video calls recorded to files, declined video, and SDK ↔ Chromium video.

Test clips are written into tmp_path with PyAV; recordings are read back with PyAV.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Page

from peercall.client import media, video
from tests.conftest import SCALE, ServerProcess

from .clips import decode, make_clip, read_video, still_moving
from .conftest import WAIT, MakeClient, OpenPage, assert_page_hears, next_incoming, wait_text, wait_until


async def test_sdk_video_both_ways(sdk: MakeClient, uid: Any, tmp_path: Path) -> None:
    """Alice sends a 1 s clip (looped) and records bob's video; bob sends a test pattern and records alice's. Each
    recording holds the other's pictures at the other's size, more frames than the clip has (it loops), and the
    audio flows as before."""
    clip = make_clip(tmp_path / "clip.mp4", 320, 240)
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    heard = media.Capture()
    call = await alice.call(
        bob.id, audio_in=media.Tone(440), audio_out=heard, video_in=clip, video_out=tmp_path / "from-bob.webm"
    )
    ringing = await next_incoming(bob)
    await ringing.accept(
        audio_in=media.Tone(660), video_in=video.TestPattern(160, 120, fps=15), video_out=tmp_path / "from-alice.mp4"
    )
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
        await ringing.wait_connected()
    assert ringing.video_sink is not None and call.video_sink is not None
    async with asyncio.timeout(2 * WAIT):
        await ringing.video_sink.wait_for(45)  # more than the clip's 30: it looped
        await call.video_sink.wait_for(10)
        await heard.wait_for(1.0)
    assert (ringing.video_sink.width, ringing.video_sink.height) == (320, 240)
    assert (call.video_sink.width, call.video_sink.height) == (160, 120)
    await call.hangup()
    async with asyncio.timeout(WAIT):
        await ringing.wait_ended()

    frames, width, height = read_video(tmp_path / "from-alice.mp4")
    assert frames >= 45 and (width, height) == (320, 240)
    assert still_moving(decode(tmp_path / "from-alice.mp4"), 32), "the clip did not loop: its last picture froze"
    frames, width, height = read_video(tmp_path / "from-bob.webm")
    assert frames >= 10 and (width, height) == (160, 120)


async def test_video_declined_by_an_audio_only_answer(sdk: MakeClient, uid: Any, tmp_path: Path) -> None:
    """Bob answers without video: his answer declines alice's video (inactive), and the call goes on with audio."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    call = await alice.call(bob.id, audio_in=media.Tone(440), video_in=video.TestPattern(160, 120))
    ringing = await next_incoming(bob)
    heard = media.Capture()
    await ringing.accept(audio_out=heard)
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
        await heard.wait_for(1.0)
    assert call.pc is not None and call.pc.remoteDescription is not None
    answer = call.pc.remoteDescription.sdp.split("m=video", 1)
    assert len(answer) == 2 and "a=inactive" in answer[1], "bob's answer should decline the video"
    await call.hangup()


# ---- with Chromium ---------------------------------------------------------------------------------------------

PAGE_VIDEO = """
async () => {
  const pc = window.peercall.pc;
  if (!pc) return null;
  const out = { framesDecoded: 0, frameWidth: 0, frameHeight: 0, audioPackets: 0 };
  for (const r of (await pc.getStats()).values()) {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      out.framesDecoded = r.framesDecoded ?? 0;
      out.frameWidth = r.frameWidth ?? 0;
      out.frameHeight = r.frameHeight ?? 0;
    }
    if (r.type === "inbound-rtp" && r.kind === "audio") out.audioPackets = r.packetsReceived;
  }
  return out;
}
"""

# The page turns its (fake) camera on the way a page does: a video track added to the call's peer connection;
# the web client's perfect negotiation sends the new offer.
PAGE_ADDS_CAMERA = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
  window.peercall.pc.addTrack(stream.getVideoTracks()[0], stream);
}
"""


async def page_video(page: Page) -> Any:
    return await page.evaluate(PAGE_VIDEO)


async def test_sdk_sends_video_to_chromium(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any, tmp_path: Path
) -> None:
    """An SDK client calls the web client with a video clip: Chromium decodes it at its size, frames keep coming."""
    clip = make_clip(tmp_path / "clip.mp4", 320, 240)
    alice = await sdk(uid("alice"))
    user = uid("bob")
    page = await open_page(server.http, user)
    call = await alice.call(user, audio_in=media.Tone(440), video_in=clip)
    await wait_text(page, "#call-status", "Incoming call")
    await page.click("#accept")
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    first = await wait_until(
        lambda: page_video(page), lambda s: bool(s and s["framesDecoded"] > 10), "Chromium to decode video"
    )
    assert (first["frameWidth"], first["frameHeight"]) == (320, 240)
    await wait_until(
        lambda: page_video(page),
        lambda s: bool(s and s["framesDecoded"] >= first["framesDecoded"] + 30),
        "Chromium's framesDecoded to keep growing",
    )
    await assert_page_hears(page, "the page")
    await call.hangup()


async def test_chromium_turns_camera_on_mid_call(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any, tmp_path: Path
) -> None:
    """The page calls an SDK client (audio only), then turns its camera on: the new offer adds video; the SDK (with
    a video source and sink) answers it, records the camera, sends its own video back (the page decodes it), and
    the audio goes on both ways."""
    bob = await sdk(uid("bob"))
    page = await open_page(server.http, uid("alice"))
    await page.fill("#peer-id", bob.id)
    await page.click("#call")
    ringing = await next_incoming(bob)
    heard = media.Capture()
    await ringing.accept(
        audio_in=media.Tone(440),
        audio_out=heard,
        video_in=video.TestPattern(176, 144),
        video_out=tmp_path / "camera.mp4",
    )
    async with asyncio.timeout(WAIT):
        await ringing.wait_connected()
    await wait_text(page, "#call-status", "Connected")
    assert (await page_video(page))["framesDecoded"] == 0, "video before the page's offer had any"
    await page.evaluate(PAGE_ADDS_CAMERA)
    assert ringing.video_sink is not None
    async with asyncio.timeout(WAIT):
        await ringing.video_sink.wait_for(30)
    assert (ringing.video_sink.width, ringing.video_sink.height) == (320, 240)
    shown = await wait_until(
        lambda: page_video(page), lambda s: bool(s and s["framesDecoded"] > 10), "the page to decode the SDK's video"
    )
    assert (shown["frameWidth"], shown["frameHeight"]) == (176, 144)
    before = heard.duration
    await assert_page_hears(page, "the page")
    assert heard.duration > before + 0.5, "the SDK stopped hearing the page after the camera came on"
    await ringing.hangup()
    await wait_text(page, "#call-status", "Call Ended")
    frames, width, height = read_video(tmp_path / "camera.mp4")
    assert frames >= 30 and (width, height) == (320, 240)


async def test_chromium_camera_declined_by_an_audio_only_sdk(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any
) -> None:
    """The page turns its camera on mid-call with an SDK client that has no video: the SDK declines it and the call
    keeps its audio both ways."""
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
    await page.evaluate(PAGE_ADDS_CAMERA)
    pc = ringing.pc
    assert pc is not None

    def video_declined() -> bool:
        local = pc.localDescription
        return local is not None and "m=video" in local.sdp and "a=inactive" in local.sdp.split("m=video", 1)[1]

    await wait_until(lambda: _value(video_declined()), bool, "the SDK to answer the video inactive")
    before = heard.duration
    await assert_page_hears(page, "the page")
    assert heard.duration > before + 0.5
    await wait_text(page, "#call-status", "Connected")
    await ringing.hangup()


async def _value(value: Any) -> Any:
    return value


# The page turns its camera off as a page may: the track leaves the connection (the m-line stays, recvonly); the
# next "on" adds a new camera track, which takes that m-line again.
PAGE_REMOVES_CAMERA = """
async () => {
  const pc = window.peercall.pc;
  for (const sender of pc.getSenders()) {
    if (sender.track?.kind === "video") {
      sender.track.stop();
      pc.removeTrack(sender);
    }
  }
}
"""


async def test_sdk_caller_follows_the_page_camera_on_off_on(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any, tmp_path: Path
) -> None:
    """The SDK calls the page with video both ways; the polite page turns its camera on, off and on again (three
    offers of its own): the SDK answers each, its recording gets the camera while it is on and none while it is off,
    the page keeps decoding the SDK's video, and the audio goes on."""
    alice = await sdk(uid("alice"))
    user = uid("bob")
    page = await open_page(server.http, user)
    heard = media.Capture()
    call = await alice.call(
        user,
        audio_in=media.Tone(440),
        audio_out=heard,
        video_in=video.TestPattern(320, 240),
        video_out=tmp_path / "camera.mp4",
    )
    await wait_text(page, "#call-status", "Incoming call")
    await page.click("#accept")
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    sink = call.video_sink
    assert sink is not None
    await page.evaluate(PAGE_ADDS_CAMERA)
    async with asyncio.timeout(WAIT):
        await sink.wait_for(20)

    await page.evaluate(PAGE_REMOVES_CAMERA)
    await asyncio.sleep(1.0)  # the offer, the answer, and frames already on their way
    stopped_at = sink.frames
    await asyncio.sleep(1.0)
    assert sink.frames <= stopped_at + 2, f"camera off, yet {sink.frames - stopped_at} frames arrived in 1 s"

    await page.evaluate(PAGE_ADDS_CAMERA)
    async with asyncio.timeout(WAIT):
        await sink.wait_for(sink.frames + 20)
    shown = await wait_until(
        lambda: page_video(page), lambda s: bool(s and s["framesDecoded"] > 30), "the page to decode the SDK's video"
    )
    assert (shown["frameWidth"], shown["frameHeight"]) == (320, 240)
    before = heard.duration
    await assert_page_hears(page, "the page")
    assert heard.duration > before + 0.5
    await call.hangup()
    frames, width, height = read_video(tmp_path / "camera.mp4")
    assert frames >= 40 and (width, height) == (320, 240)


async def test_bad_video_arguments_fail_before_anything_rings(sdk: MakeClient, uid: Any, tmp_path: Path) -> None:
    """A missing file, a file without video, an audio track, an unwritable recording or an impossible pattern is
    refused at once with a clear error, and no call starts."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    media.write_wav(tmp_path / "tone.wav", np.zeros(4800, np.int16), 48_000)
    with pytest.raises(OSError, match=r"missing\.mp4"):
        await alice.call(bob.id, video_in=tmp_path / "missing.mp4")
    with pytest.raises(OSError, match=r"tone\.wav has no video stream"):
        await alice.call(bob.id, video_in=tmp_path / "tone.wav")
    with pytest.raises(TypeError, match="expected a video track, got a audio track"):
        await alice.call(bob.id, video_in=media.Tone(440))
    with pytest.raises(OSError, match=r"cannot create .*nowhere"):
        await alice.call(bob.id, video_out=tmp_path / "nowhere" / "out.mp4")
    with pytest.raises(ValueError, match="16x16 to 3840x2160"):
        video.TestPattern(8, 8)
    assert alice.current_call is None
    async with bob.incoming() as calls:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await anext(aiter(calls))


# A second video beside the camera, as a screen shared alongside it would be: a canvas of another size whose colour
# changes every frame (Chromium's one fake camera gives a second stream at the first one's size).
PAGE_ADDS_SCREEN = """
async () => {
  const canvas = Object.assign(document.createElement("canvas"), { width: 640, height: 360 });
  const context = canvas.getContext("2d");
  let n = 0;
  window.__paint = setInterval(() => {
    context.fillStyle = `hsl(${(n++ * 10) % 360}, 80%, 50%)`;
    context.fillRect(0, 0, 640, 360);
  }, 33);
  const stream = canvas.captureStream(30);
  window.__screen = window.peercall.pc.addTrack(stream.getVideoTracks()[0], stream);
}
"""

PAGE_REMOVES_SCREEN = """
async () => {
  clearInterval(window.__paint);
  window.__screen.track.stop();
  window.peercall.pc.removeTrack(window.__screen);
}
"""


# The page applies the next answer `ms` late, as it would on a slow network or a busy machine: meanwhile it goes on
# sending on every m-line the answer stops.
PAGE_DELAYS_NEXT_ANSWER = """
(ms) => {
  const pc = window.peercall.pc;
  const apply = pc.setRemoteDescription.bind(pc);
  pc.setRemoteDescription = async (description) => {
    if (description?.type === "answer") {
      pc.setRemoteDescription = apply;
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
    return apply(description);
  };
}
"""


# The largest fraction of the video it sends that the page is told was lost (the peer's latest receiver reports).
PAGE_VIDEO_SEND_LOSS = """
async () => {
  let lost = 0;
  for (const r of (await window.peercall.pc.getStats()).values()) {
    if (r.type === "remote-inbound-rtp" && r.kind === "video") lost = Math.max(lost, r.fractionLost ?? 0);
  }
  return lost;
}
"""


@pytest.mark.parametrize("answer_delay", [0, 1000], ids=["prompt-answer", "slow-answer"])
async def test_sdk_records_the_newest_video_of_the_page(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any, answer_delay: int
) -> None:
    """The page sends its camera, then a second video beside it (as a shared screen): the SDK's video sink takes
    the newer one; when it ends, the sink goes back to the camera, which the page sends again. Audio goes on.
    Also when the SDK's answer that stops the camera reaches the page late, so that camera packets still arrive
    after the SDK stopped receiving them (slow-answer): the camera comes back all the same."""
    bob = await sdk(uid("bob"))
    page = await open_page(server.http, uid("alice"))
    await page.fill("#peer-id", bob.id)
    await page.click("#call")
    ringing = await next_incoming(bob)
    heard = media.Capture()
    sink = video.VideoDiscard()
    await ringing.accept(audio_in=media.Tone(440), audio_out=heard, video_out=sink)
    await wait_text(page, "#call-status", "Connected")
    await page.evaluate(PAGE_ADDS_CAMERA)
    async with asyncio.timeout(WAIT):
        await sink.wait_for(10)
    assert (sink.width, sink.height) == (320, 240)

    if answer_delay:
        await page.evaluate(PAGE_DELAYS_NEXT_ANSWER, answer_delay)
    await page.evaluate(PAGE_ADDS_SCREEN)
    await wait_until(lambda: _value((sink.width, sink.height)), lambda size: size == (640, 360), "the screen's size")
    async with asyncio.timeout(WAIT):
        await sink.wait_for(sink.frames + 10)

    await page.evaluate(PAGE_REMOVES_SCREEN)
    await wait_until(lambda: _value((sink.width, sink.height)), lambda size: size == (320, 240), "the camera again")
    async with asyncio.timeout(WAIT):
        await sink.wait_for(sink.frames + 10)
    assert (sink.width, sink.height) == (320, 240)
    # Nothing is lost on loopback: the SDK's receiver reports say so (a loss would make the page lower its camera's
    # resolution), through the reports that follow the camera's return (one every 0.5 to 1.5 s).
    for _ in range(25):
        lost = await page.evaluate(PAGE_VIDEO_SEND_LOSS)
        assert lost == 0, f"the SDK reported {lost:.0%} of the page's video lost after the camera came back"
        await asyncio.sleep(0.1 * SCALE)
    before = heard.duration
    await assert_page_hears(page, "the page")
    assert heard.duration > before + 0.5
    await ringing.hangup()


# What the web client's remote <video> element shows (the video call layout).
REMOTE_VIDEO_ELEMENT = """
() => {
  const element = document.querySelector("#remote-video");
  if (!element) return null;
  const stage = document.querySelector("#video-stage");
  return {
    width: element.videoWidth,
    height: element.videoHeight,
    frames: element.getVideoPlaybackQuality().totalVideoFrames,
    shown: Boolean(stage && !stage.hidden),
  };
}
"""


async def test_the_page_shows_the_sdk_video(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any, tmp_path: Path
) -> None:
    """An SDK client calls the web client with a video clip; the callee accepts without its camera: the page's remote
    <video> is shown, at the clip's size, and the frames it shows keep growing."""
    clip = make_clip(tmp_path / "clip.mp4", 320, 240)
    alice = await sdk(uid("alice"))
    user = uid("bob")
    page = await open_page(server.http, user)
    call = await alice.call(user, audio_in=media.Tone(440), video_in=clip)
    await wait_text(page, "#call-status", "Incoming call")
    await page.click("#accept")
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    first = await wait_until(
        lambda: page.evaluate(REMOTE_VIDEO_ELEMENT),
        lambda s: bool(s and s["shown"] and s["frames"] > 10),
        "the page to show the SDK's video",
    )
    assert (first["width"], first["height"]) == (320, 240)
    await wait_until(
        lambda: page.evaluate(REMOTE_VIDEO_ELEMENT),
        lambda s: bool(s and s["frames"] >= first["frames"] + 30),
        "the page's shown frames to keep growing",
    )
    await call.hangup()


async def test_a_video_call_from_the_page_with_camera_off_and_on(
    sdk: MakeClient, open_page: OpenPage, server: ServerProcess, uid: Any
) -> None:
    """The page starts a video call to an SDK client that sends a test pattern and counts what arrives: each sees
    the other's video; the page's Camera button turns its camera off (no more frames reach the SDK) and on again
    (they come back), and the audio goes on throughout."""
    bob = await sdk(uid("bob"))
    page = await open_page(server.http, uid("alice"))
    await page.fill("#peer-id", bob.id)
    await page.click("#video-call")
    ringing = await next_incoming(bob)
    heard = media.Capture()
    sink = video.VideoDiscard()
    await ringing.accept(
        audio_in=media.Tone(440), audio_out=heard, video_in=video.TestPattern(320, 240), video_out=sink
    )
    await wait_text(page, "#call-status", "Connected")
    async with asyncio.timeout(WAIT):
        await sink.wait_for(10)
    await wait_until(
        lambda: page.evaluate(REMOTE_VIDEO_ELEMENT),
        lambda s: bool(s and s["shown"] and s["frames"] > 10 and (s["width"], s["height"]) == (320, 240)),
        "the page to show the SDK's pattern",
    )

    await page.click("#camera")  # off
    await asyncio.sleep(1.0)  # the renegotiation, and frames already on their way
    stopped_at = sink.frames
    await asyncio.sleep(1.0)
    assert sink.frames <= stopped_at + 2, f"camera off, yet {sink.frames - stopped_at} frames arrived in 1 s"

    await page.click("#camera")  # on again
    async with asyncio.timeout(WAIT):
        await sink.wait_for(sink.frames + 10)
    before = heard.duration
    await assert_page_hears(page, "the page")
    assert heard.duration > before + 0.5
    await ringing.hangup()
    await wait_text(page, "#call-status", "Call Ended")
