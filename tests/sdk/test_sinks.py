"""The sinks' shared behaviour (`TrackSink`), fed by the SDK's own real-time sources, no call needed: a failing
callback does not stop the media, and a sink given another track follows it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from peercall.client.media import Callback, Capture, Pcm, Silence, Tone
from peercall.client.video import VideoRecorder
from tests.sdk.clips import decode
from tests.sdk.conftest import WAIT


async def test_a_failing_callback_loses_one_chunk_not_the_call_audio(caplog: pytest.LogCaptureFixture) -> None:
    seen = 0

    def fn(samples: Pcm, rate: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 2:
            raise RuntimeError("planted")

    sink = Callback(fn)
    await sink.start(Tone())
    try:
        async with asyncio.timeout(WAIT):
            await sink.wait_for(0.2)  # ten 20-ms chunks: the audio went on past the failure
    finally:
        await sink.stop()
    assert seen >= 10
    assert "Callback: a frame was not handled" in caplog.text and "planted" in caplog.text


async def test_an_audio_sink_given_another_track_follows_it() -> None:
    sink = Capture()
    silence, tone = Silence(), Tone(amplitude=0.5)
    await sink.start(silence)
    try:
        async with asyncio.timeout(WAIT):
            await sink.wait_for(0.1)
            assert not np.any(sink.samples())
            await sink.start(tone)  # the peer's audio moved to another m-line
            assert sink.track is tone
            heard = sink.duration
            await sink.wait_for(heard + 0.1)
    finally:
        await sink.stop()
    assert np.abs(sink.samples()[-960:]).max() > 10_000  # the newest chunk is the tone's


def test_a_recording_keeps_frames_that_arrive_in_the_same_millisecond(tmp_path: Path) -> None:
    """Frames that arrive in a burst (after a stall, several within a millisecond) are all in the recording, in
    their order, not only the first of each millisecond."""
    path = tmp_path / "burst.mp4"
    recorder = VideoRecorder(path)
    arrivals = [0.0, 0.0002, 0.0004, 0.0006, 0.040, 0.0401, 0.080]
    for n, arrival in enumerate(arrivals):
        picture = np.full((120, 160, 3), 30 * n, dtype=np.uint8)  # each a shade lighter: their order shows
        recorder.write(av.VideoFrame.from_ndarray(picture, format="rgb24"), arrival)
    recorder.close()
    frames = decode(path)
    assert len(frames) == len(arrivals)
    shades = [int(frame.mean()) for frame in frames]
    assert shades == sorted(shades), shades
