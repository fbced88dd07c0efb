"""The examples in docs/python-client.md run as written (against a test server, with unique ids)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any

from peercall.client import media, quality, video
from peercall.client.check import sample_path
from tests.conftest import ROOT, ServerProcess

from .clips import make_clip, read_video
from .conftest import SCALE, MakeClient, next_incoming, run_python

DOC = ROOT / "docs" / "python-client.md"


def example(name: str) -> str:
    """The code block that follows `<!-- example: NAME -->` in the doc."""
    found = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"no example {name!r} in {DOC}"
    return found.group(1)


async def run(code: str, cwd: Path, timeout: float = 30 * SCALE) -> tuple[int, str]:
    """Run `code` with this interpreter in `cwd`, loopback candidates on; its status and output."""
    env = {**os.environ, "PEERCALL_ICE_LOOPBACK": "1"}
    return await run_python("-c", code, what="the example", timeout=timeout, cwd=cwd, env=env)


async def test_call_and_answer_examples_talk_to_each_other(server: ServerProcess, uid: Any, tmp_path: Path) -> None:
    """The "place a call" and "answer calls" examples, run as written, make a call and record each other."""
    alice, bob = uid("alice"), uid("bob")

    def adapt(code: str) -> str:
        return (
            code.replace("ws://127.0.0.1:8080/ws", server.ws)
            .replace('"alice"', f'"{alice}"')
            .replace('"bob"', f'"{bob}"')
        )

    shutil.copy(sample_path(), tmp_path / "hello.wav")
    answering = asyncio.create_task(run(adapt(example("answer")), tmp_path))
    try:
        assert await asyncio.to_thread(server.wait_log, f"{bob} connected", 20 * SCALE), server.log()
        status, out = await run(adapt(example("call")), tmp_path)
        assert (status, out.strip()) == (0, "answered (user-hangup)"), out
        status, out = await answering
    finally:
        answering.cancel()
        await asyncio.gather(answering, return_exceptions=True)
    assert status == 0 and out.strip() == f"{alice} hung up: answered (user-hangup)", out
    reply, rate = media.read_wav(tmp_path / "reply.wav")
    assert abs(quality.dominant_frequency(reply[-rate:], rate) - 440) < 5
    heard, rate = media.read_wav(tmp_path / "from-caller.wav")
    speech, speech_rate = media.read_wav(sample_path())
    sent = media.resample(speech[: 2 * speech_rate], speech_rate, rate)
    assert quality.align(sent, heard).correlation > 0.8


async def test_media_example_runs(tmp_path: Path) -> None:
    """The generator-and-callback example builds its source and sink without errors."""
    status, out = await run(example("media"), tmp_path)
    assert status == 0, out


async def test_video_example_records_the_peer(sdk: MakeClient, server: ServerProcess, uid: Any, tmp_path: Path) -> None:
    """The video example, run as written against an SDK client that answers with a test pattern and records: each
    side gets the other's pictures, at their size, and the example says so."""
    bob = await sdk(uid("bob"))
    make_clip(tmp_path / "clip.mp4", 320, 240)
    code = example("video").replace("ws://127.0.0.1:8080/ws", server.ws).replace('"alice"', f'"{uid("alice")}"')
    calling = asyncio.create_task(run(code.replace('"bob"', f'"{bob.id}"'), tmp_path))
    try:
        ringing = await next_incoming(bob)
        pattern = video.TestPattern(160, 120)
        await ringing.accept(video_in=pattern, video_out=video.VideoDiscard())
        status, out = await calling
    finally:
        calling.cancel()
        await asyncio.gather(calling, return_exceptions=True)
    assert status == 0, out
    # 3 s of a call carry up to 90 frames each way; a loaded machine (2 cores, other suites beside) delivers fewer
    found = re.fullmatch(r"(\d+) frames from bob, 160x120", out.strip())
    assert found and int(found.group(1)) >= 10, out
    assert ringing.video_sink is not None and ringing.video_sink.frames >= 10
    assert (ringing.video_sink.width, ringing.video_sink.height) == (320, 240)
    frames, width, height = read_video(tmp_path / "from-bob.webm")
    assert frames >= 10 and (width, height) == (160, 120)
