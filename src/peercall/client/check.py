"""The audio self-test (`peercall audio-check`): a real call between two SDK clients on this machine.

One client calls the other through a peercall server (one it starts itself, on a free loopback port, unless given a
URL), sends a speech sample once the audio flows, and records what arrives on the other side. The recording is
aligned to the sample by cross-correlation and scored with wideband PESQ; the one-way delay is how long after its
first sample was sent the aligned sample came out of the receiver's decoder (one clock: both clients run in this
process); packet loss and jitter come from aiortc's statistics.

Owns the optional server subprocess; imports the rest of the SDK; must not import the server (it runs it as a
separate process, as a user would).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import media, quality
from .call import CallStats
from .client import Client

log = logging.getLogger("peercall.client")

SAMPLE_NAME = "speech-16k.wav"
"""The speech sample shipped with the SDK: 7.4 s, 16 kHz mono 16-bit, made with Debian's espeak-ng 1.51 and sox:
`espeak-ng -v en-us -s 165 -w raw.wav "Hello, this is the peercall audio check. The quick brown fox jumps over the
lazy dog. Can you hear me?" && sox raw.wav -r 16000 -c 1 -b 16 speech-16k.wav norm -3 pad 0.25 0.25`."""


def sample_path() -> Path:
    """The shipped speech sample.

    Returns:
        Its path (inside the installed package).
    """
    return Path(str(importlib.resources.files("peercall.client") / "samples" / SAMPLE_NAME))


@dataclass(frozen=True)
class AudioCheckResult:
    """What `audio_check()` measured.

    Attributes:
        pesq: wideband PESQ (MOS-LQO, 1.0-4.64) of the received speech against the sample.
        delay: one-way delay, seconds: from sending the sample's first frame to decoding it on the other side.
        correlation: normalised cross-correlation of the two at the alignment (1.0 = identical shape).
        packets_sent: RTP packets the caller sent.
        packets_received: RTP packets the callee received.
        packets_lost: RTP packets the callee counted as lost.
        jitter: interarrival jitter at the callee, seconds.
        round_trip_time: from RTCP, seconds (None if no report came).
        duration: seconds of speech sent.
    """

    pesq: float
    delay: float
    correlation: float
    packets_sent: int
    packets_received: int
    packets_lost: int
    jitter: float
    round_trip_time: float | None
    duration: float

    @property
    def loss(self) -> float:
        """The fraction of packets lost."""
        total = self.packets_received + self.packets_lost
        return self.packets_lost / total if total else 0.0

    def report(self) -> str:
        """The figures, one per line, for people.

        Returns:
            Several lines of text.
        """
        rtt = "n/a" if self.round_trip_time is None else f"{self.round_trip_time * 1000:.1f} ms"
        return "\n".join(
            [
                f"PESQ (wideband)   {self.pesq:.2f}   (4.64 is perfect; above 4.0 is excellent)",
                f"one-way delay     {self.delay * 1000:.0f} ms",
                f"packet loss       {self.loss * 100:.2f} % ({self.packets_lost} of "
                f"{self.packets_received + self.packets_lost} packets)",
                f"jitter            {self.jitter * 1000:.1f} ms",
                f"round trip (RTCP) {rtt}",
                f"correlation       {self.correlation:.3f}",
                f"speech sent       {self.duration:.1f} s",
            ]
        )


class _GatedSample(media.PcmSource):
    """Silence until `go()`, then the sample once, then silence; remembers when the sample's first frame left."""

    def __init__(self, pcm: media.Pcm) -> None:
        super().__init__()
        self.pcm = pcm
        self._go = False
        self._pos = 0
        self.sample_sent_at: float | None = None

    def go(self) -> None:
        self._go = True

    async def read(self, count: int) -> media.Pcm | None:
        if not self._go:
            return np.zeros(count, np.int16)
        if self._pos == 0:
            self.sample_sent_at = time.monotonic()
        if self._pos >= self.pcm.size:
            return None
        chunk = self.pcm[self._pos : self._pos + count]
        self._pos += chunk.size
        return chunk


@contextlib.asynccontextmanager
async def local_server(start_within: float = 20.0) -> AsyncIterator[str]:
    """Run `peercall serve` on a free loopback port, with no ICE servers and an in-memory history.

    Args:
        start_within: how long to wait for it to start, seconds.

    Yields:
        Its WebSocket URL.

    Raises:
        RuntimeError: it did not start.
    """
    env = {
        **os.environ,
        "PEERCALL_HOST": "127.0.0.1",
        "PEERCALL_PORT": "0",
        "PEERCALL_ICE_SERVERS": "[]",
        "PEERCALL_DATABASE_URL": "memory://",
        "PEERCALL_ACCESS_LOG": "false",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("PEERCALL_AUTH", "PEERCALL_TURN_SECRET", "PEERCALL_TURN_URLS", "PEERCALL_STUN_URLS"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "peercall",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    port = 0
    try:
        async with asyncio.timeout(start_within):
            while not port:
                line = (await stdout.readline()).decode(errors="replace")
                if not line:
                    break
                lines.append(line.rstrip())
                match = re.search(r"listening on \S+:(\d+)$", line.strip())
                if match:
                    port = int(match.group(1))
    except TimeoutError:
        pass
    if not port:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError("peercall serve did not start:\n" + "\n".join(lines[-20:]))

    async def drain() -> None:
        while await stdout.readline():
            pass

    drainer = asyncio.create_task(drain())
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(10):  # (not wait_for: it can drop a cancel on Python 3.11)
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await drainer


async def audio_check(
    url: str | None = None,
    *,
    sample: Path | None = None,
    token_a: str | None = None,
    token_b: str | None = None,
    ice_loopback: bool = True,
    record_dir: Path | None = None,
    patience: float = 20.0,
) -> AudioCheckResult:
    """Call between two clients on this machine, send speech, and measure what arrives.

    Args:
        url: a server's WebSocket URL; None starts one on a free loopback port for the test.
        sample: a 16-bit WAV of speech (default: the shipped one).
        token_a: the caller's token, for a server in token mode (the caller's id must be its `sub`).
        token_b: the callee's token, likewise.
        ice_loopback: offer 127.0.0.1 as a candidate (on by default: both ends are on this machine).
        record_dir: if given, write `sent.wav` and `received.wav` there.
        patience: seconds allowed for connecting the call, and for the audio to arrive.

    Returns:
        The figures.

    Raises:
        ConnectError: the server cannot be reached.
        CallEndedError: the call did not connect.
        TimeoutError: the audio did not arrive in time.
        ImportError: PyPI's `pesq` is missing.
    """
    if url is None:
        async with local_server() as local:
            return await audio_check(
                local,
                sample=sample,
                ice_loopback=ice_loopback,
                record_dir=record_dir,
                patience=patience,
            )
    speech, rate = media.read_wav(sample or sample_path())
    source = _GatedSample(media.resample(speech, rate, media.SAMPLE_RATE))
    capture = media.Capture()
    suffix = secrets.token_hex(3)
    caller_id, callee_id = f"audio-check-a-{suffix}", f"audio-check-b-{suffix}"
    async with (
        Client(url, callee_id, token_b, ice_loopback=ice_loopback) as callee,
        Client(url, caller_id, token_a, ice_loopback=ice_loopback) as caller,
    ):
        incoming = callee.incoming()

        async def answer() -> None:
            async for ringing in incoming:
                await ringing.accept(audio_out=capture)
                return

        answering = asyncio.create_task(answer())
        try:
            call = await caller.call(callee_id, audio_in=source)
            async with asyncio.timeout(patience):
                await call.wait_connected()
                await answering
                await capture.wait_for(0.2)  # audio flows: now send the speech
            source.go()
            async with asyncio.timeout(patience + source.pcm.size / media.SAMPLE_RATE):
                await source.finished.wait()
            await asyncio.sleep(0.5)  # the tail: let the last packets arrive
            received = (callee.current_call and await callee.current_call.stats()) or CallStats()
            sent = await call.stats()
            await call.hangup()
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            incoming.close()
    return _measure(speech, rate, source, capture, sent, received, record_dir)


def _measure(
    speech: media.Pcm,
    rate: int,
    source: _GatedSample,
    capture: media.Capture,
    sent: CallStats,
    received: CallStats,
    record_dir: Path | None,
) -> AudioCheckResult:
    recording = capture.samples()
    reference = media.resample(speech, rate, quality.PESQ_RATE)
    degraded = media.resample(recording, media.SAMPLE_RATE, quality.PESQ_RATE)
    found = quality.align(reference, degraded)
    segment = quality.aligned_segment(degraded, found.lag, reference.size)
    score = quality.pesq_wb(reference, segment, quality.PESQ_RATE)
    start = found.lag * media.SAMPLE_RATE // quality.PESQ_RATE  # where the speech begins in the 48 kHz capture
    arrival = capture.arrival_of(start)
    chunk_start = max((s for s, _ in capture.arrivals if s <= start), default=start)
    if arrival is None or source.sample_sent_at is None:
        raise ValueError("the speech was not found in the recording")
    delay = arrival + (start - chunk_start) / media.SAMPLE_RATE - source.sample_sent_at
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
        media.write_wav(record_dir / "sent.wav", reference, quality.PESQ_RATE)
        media.write_wav(record_dir / "received.wav", segment, quality.PESQ_RATE)
    return AudioCheckResult(
        pesq=score,
        delay=delay,
        correlation=found.correlation,
        packets_sent=sent.packets_sent,
        packets_received=received.packets_received,
        packets_lost=received.packets_lost,
        jitter=received.jitter,
        round_trip_time=sent.round_trip_time,
        duration=speech.size / rate,
    )
