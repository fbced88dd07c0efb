"""The SDK's commands as a user runs them: `peercall audio-check`, and `peercall call` with `peercall answer`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from peercall.client import Client, media, quality
from tests.conftest import OPEN_DOORS, ServerProcess

from .clips import make_clip, read_video
from .conftest import SCALE, run_python

MIN_PESQ = 3.0
"""Regression bound for wideband PESQ on loopback (about 4.5 is expected)."""
MAX_DELAY = 0.150
"""Regression bound for the one-way delay on loopback, seconds (about 0.09 is expected)."""


async def peercall(*args: str, timeout: float = 30 * SCALE) -> tuple[int, str]:
    """Run `python -m peercall ARGS` (in this network namespace, with this environment); its status and output."""
    return await run_python("-m", "peercall", *args, what=f"peercall {' '.join(args)}", timeout=timeout)


async def test_audio_check_scores_speech_on_loopback(server: ServerProcess) -> None:
    """`peercall audio-check` reports wideband PESQ >= 3.0, a one-way delay under 150 ms and no loss on loopback."""
    status, out = await peercall("audio-check", "--url", server.ws, "--json")
    assert status == 0, out
    figures = json.loads(out.strip().splitlines()[-1])
    print(
        f"\naudio-check on loopback: PESQ {figures['pesq']:.2f}, one-way delay {figures['delay'] * 1000:.0f} ms, "
        f"loss {figures['loss'] * 100:.2f} % ({figures['packets_lost']}/{figures['packets_received']}), "
        f"jitter {figures['jitter'] * 1000:.1f} ms, correlation {figures['correlation']:.3f}"
    )
    assert figures["pesq"] >= MIN_PESQ, figures
    assert 0 < figures["delay"] < MAX_DELAY, figures
    assert figures["loss"] < 0.01, figures


async def test_call_and_answer_commands(server: ServerProcess, uid: Any, tmp_path: Path) -> None:
    """`peercall answer --auto` takes the call that `peercall call` makes; each records the other's tone."""
    bob, alice = uid("bob"), uid("alice")
    common = ("--url", server.ws, "--ice-loopback")
    answer = asyncio.create_task(
        peercall("answer", *common, "--id", bob, "--auto", "--tone", "660", "--record", str(tmp_path / "bob.wav"))
    )
    try:
        assert await asyncio.to_thread(server.wait_log, f"{bob} connected", 20 * SCALE), server.log()
        status, out = await peercall(
            "call",
            bob,
            *common,
            "--id",
            alice,
            "--tone",
            "440",
            "--duration",
            "1.5",
            "--record",
            str(tmp_path / "a.wav"),
        )
        assert status == 0, out
        assert "call ended: answered (user-hangup)" in out, out
        answer_status, answer_out = await answer
    finally:
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
    assert answer_status == 0, answer_out
    for name, frequency in (("a.wav", 660), ("bob.wav", 440)):
        samples, rate = media.read_wav(tmp_path / name)
        tail = samples[-rate // 2 :]
        assert abs(quality.dominant_frequency(tail, rate) - frequency) < 5, name
        assert quality.rms(tail) > 1000, name


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: Any) -> None:
    """A token can be kept out of `ps`: `--token-file` and `$PEERCALL_TOKEN_FILE` are read (trimmed); an option
    wins over the environment; an unreadable or empty file is a clear error."""
    import argparse

    from peercall.client.cli import token

    def args(**kw: Any) -> argparse.Namespace:
        return argparse.Namespace(**({"token": None, "token_file": None} | kw))

    secret = tmp_path / "token"
    secret.write_text("abc.def.ghi\n")
    monkeypatch.delenv("PEERCALL_TOKEN", raising=False)
    monkeypatch.delenv("PEERCALL_TOKEN_FILE", raising=False)
    assert token(args()) is None
    assert token(args(token_file=str(secret))) == "abc.def.ghi"
    monkeypatch.setenv("PEERCALL_TOKEN", "from-env")
    assert token(args()) == "from-env"
    assert token(args(token="from-option")) == "from-option"
    monkeypatch.setenv("PEERCALL_TOKEN_FILE", str(secret))
    assert token(args()) == "abc.def.ghi"
    with pytest.raises(ValueError, match=r"cannot read the token file .*missing"):
        token(args(token_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(ValueError, match="is empty"):
        token(args(token_file=str(tmp_path / "empty")))


async def test_a_token_file_signs_in(tmp_path: Path) -> None:
    """`peercall call --token-file` signs in to a token-mode server; a token for someone else is refused (status 1,
    as a refused password); no token at all is refused at once, with the options to give (status 2)."""
    from peercall.auth.tokens import mint
    from tests.conftest import run_server

    secret = "s" * 32
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=secret) as guarded:
        good, bad = tmp_path / "good", tmp_path / "bad"
        good.write_text(mint("tokenfile-a", secret))
        bad.write_text(mint("someone-else", secret))
        common = ("nobody-here", "--url", guarded.ws, "--id", "tokenfile-a", "--duration", "1")
        status, out = await peercall("call", *common, "--token-file", str(good))
        assert "tokenfile-a connected" in guarded.log(), (status, out, guarded.log())
        status, out = await peercall("call", *common, "--token-file", str(bad))
        assert status == 1, out
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEERCALL_TOKEN")}
        status, out = await run_python("-m", "peercall", "call", *common, what="call", timeout=10, env=env)
        assert status == 2 and "this server requires a token: give --token, --token-file" in out, out


async def test_answer_prints_what_the_peer_says_of_its_media(server: ServerProcess, uid: Any) -> None:
    """`peercall answer` prints the caller's mute and unmute (their `media-state`) as they happen."""
    bob, alice = uid("bob"), uid("alice")
    answer = asyncio.create_task(peercall("answer", "--url", server.ws, "--ice-loopback", "--id", bob, "--auto"))
    try:
        assert await asyncio.to_thread(server.wait_log, f"{bob} connected", 20 * SCALE), server.log()
        async with Client(server.ws, alice, ice_loopback=True) as caller:
            call = await caller.call(bob, audio_in=media.Tone(440))
            async with asyncio.timeout(20 * SCALE):
                await call.wait_connected()
                await call.mute()
                await call.mute(False)  # the frames arrive in order; the command prints each
                await asyncio.sleep(1.0)  # time to print before the call ends (the command then stops following)
                await call.hangup()
        answer_status, answer_out = await answer
    finally:
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
    assert answer_status == 0, answer_out
    lines = [line.strip() for line in answer_out.splitlines()]
    muted, unmuted = lines.index(f"{alice}: muted"), lines.index(f"{alice}: unmuted")
    assert muted < unmuted, answer_out


async def test_call_and_answer_commands_with_video(server: ServerProcess, uid: Any, tmp_path: Path) -> None:
    """`peercall call --video FILE --record-video OUT` with `peercall answer --video … --record-video …`: each
    recording holds the other's clip at its size, and the commands say how many video frames arrived."""
    bob, alice = uid("bob"), uid("alice")
    common = ("--url", server.ws, "--ice-loopback")
    make_clip(tmp_path / "alice.mp4", 320, 240)
    make_clip(tmp_path / "bob.webm", 176, 144, codec="libvpx")
    answer = asyncio.create_task(
        peercall(
            "answer",
            *common,
            "--id",
            bob,
            "--auto",
            "--video",
            str(tmp_path / "bob.webm"),
            "--record-video",
            str(tmp_path / "from-alice.mkv"),
        )
    )
    try:
        assert await asyncio.to_thread(server.wait_log, f"{bob} connected", 20 * SCALE), server.log()
        status, out = await peercall(
            "call",
            bob,
            *common,
            "--id",
            alice,
            "--duration",
            "2",
            "--video",
            str(tmp_path / "alice.mp4"),
            "--record-video",
            str(tmp_path / "from-bob.mp4"),
        )
        assert status == 0, out
        assert "call ended: answered (user-hangup)" in out and "video frames received" in out, out
        answer_status, answer_out = await answer
    finally:
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
    assert answer_status == 0, answer_out
    assert "video frames received" in answer_out, answer_out
    frames, width, height = read_video(tmp_path / "from-alice.mkv")
    assert frames >= 10 and (width, height) == (320, 240)
    frames, width, height = read_video(tmp_path / "from-bob.mp4")
    assert frames >= 10 and (width, height) == (176, 144)


async def test_call_and_answer_refuse_a_missing_video_file(server: ServerProcess, tmp_path: Path) -> None:
    """A video file that cannot be opened stops `peercall call` and `peercall answer` at once, with exit status 2
    and the file's name."""
    for command in (("call", "bob"), ("answer", "--auto")):
        status, out = await peercall(*command, "--url", server.ws, "--video", str(tmp_path / "nope.mp4"))
        assert status == 2, out
        assert "nope.mp4" in out, out


def test_answer_numbers_its_recordings() -> None:
    """`answer --count N --record in.wav` keeps every call: in.wav, in-2.wav, in-3.wav (each its own file)."""
    from peercall.client.cli import numbered

    assert [numbered("out/in.wav", n) for n in (1, 2, 3)] == ["out/in.wav", "out/in-2.wav", "out/in-3.wav"]
    assert numbered("bob.webm", 2) == "bob-2.webm"


async def test_call_exit_statuses(server: ServerProcess, sdk: Any, uid: Any) -> None:
    """SIGTERM while the call still rings: status 1 (not answered); an http:// URL: one line, status 2, at once."""
    bob = await sdk(uid("bob"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "peercall", "call", bob.id, "--url", server.ws, "--id", uid("alice"), "--ice-loopback"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with bob.incoming() as calls, asyncio.timeout(20 * SCALE):
            ringing = await anext(aiter(calls))
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20 * SCALE):
            out, _ = await proc.communicate()
            await ringing.wait_ended()
    finally:
        if proc.returncode is None:  # (failed: its output says where it was)
            proc.kill()
            print((await proc.communicate())[0].decode())
    assert proc.returncode == 1, out.decode()
    status, text = await peercall("call", "bob", "--url", server.http + "/ws", timeout=10)
    assert status == 2 and text.strip().splitlines() == [
        f"peercall call: the server's URL starts with ws:// or wss:// (its WebSocket), not http://: did you mean "
        f"{server.ws}?"
    ], text


async def test_a_recording_that_got_no_audio_is_an_empty_wav_and_said_so(
    server: ServerProcess, uid: Any, tmp_path: Path
) -> None:
    """`--record` of a call that never connected (the callee is offline, or the server cannot be reached) leaves a
    valid WAV of 0 frames, closed (no garbage-collector noise at exit), and says that nothing was recorded."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"ws://127.0.0.1:{probe.getsockname()[1]}/ws"
    for url, name in ((server.ws, "offline.wav"), (nowhere, "unreachable.wav")):
        wav = tmp_path / name
        status, out = await peercall(
            "call", uid("nobody"), "--url", url, "--id", uid("alice"), "--connect-timeout", "1", "--record", str(wav)
        )
        assert status in (1, 2), out
        assert f"nothing was recorded: {wav} holds no audio" in out, out
        assert "Exception ignored" not in out and "Traceback" not in out, out
        samples, rate = media.read_wav(wav)
        assert samples.size == 0 and rate == media.SAMPLE_RATE, name
