"""The sinks' shared behaviour (`TrackSink`), fed by the SDK's own real-time sources, no call needed: a failing
callback does not stop the media, and a sink given another track follows it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from peercall.client.media import Callback, Capture, Pcm, Silence, Tone
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
