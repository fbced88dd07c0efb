"""Audio for SDK calls: sources (what we send) and sinks (what we do with what we receive).

A **source** is an aiortc `MediaStreamTrack` of kind audio. The ones here produce 20 ms frames of 48 kHz mono
16-bit PCM, paced in real time: `Silence`, `Tone`, `FileSource` (any file FFmpeg reads, streamed), `Samples` (a
NumPy array), `GeneratorSource` (your own iterator of NumPy arrays) and the echo's. `device()` opens a microphone
through FFmpeg (aiortc's `MediaPlayer`). When a file or a generator ends, silence follows and `finished` is set,
so the call goes on until someone hangs up.

A **sink** consumes the peer's track: `Discard`, `Capture` (keeps the samples in memory, with arrival times),
`Callback` (hands each chunk to your function), `WavRecorder`, and `record()` / `speaker()` for other formats and
devices (aiortc's `MediaRecorder`). Sinks see 48 kHz mono int16 samples, whatever the codec.

`as_source()` and `as_sink()` turn the shorthands that `Client.call()` and `Call.accept()` take (None, a path, a
callable) into these.

Imports aiortc, PyAV, NumPy and the standard library only; must not import signaling, calls or the server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import inspect
import logging
import math
import time
import wave
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaPlayer, MediaRecorder
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger("peercall.client")

SAMPLE_RATE = 48_000
"""The rate of every frame the sources here make and every chunk the sinks here see (Opus's own rate)."""
FRAME_SAMPLES = 960
"""20 ms at 48 kHz: one Opus packet."""
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

Pcm: TypeAlias = npt.NDArray[np.int16]
"""Mono 16-bit samples."""


def to_pcm(samples: npt.ArrayLike) -> Pcm:
    """Mono int16 samples from int16 samples or floats in [-1, 1], mono (n,) or multichannel (n, channels).

    Args:
        samples: the audio.

    Returns:
        A 1-D int16 array (channels averaged, floats scaled and clipped).

    Raises:
        ValueError: the array has more than two dimensions.
    """
    array = np.asarray(samples)
    if array.ndim not in (1, 2):
        raise ValueError(f"expected samples of shape (n,) or (n, channels), got {array.shape}")
    if array.ndim == 1 and array.dtype == np.int16:
        return np.asarray(array, dtype=np.int16)
    values = array.astype(np.float64)
    if array.ndim == 2:
        values = values.mean(axis=1)
    if array.dtype.kind == "f":
        values = values * 32767.0
    return np.asarray(np.clip(np.round(values), -32768, 32767), dtype=np.int16)


def resample(samples: npt.ArrayLike, rate: int, to_rate: int) -> Pcm:
    """Resample mono audio (FFmpeg's libswresample, through PyAV).

    Args:
        samples: mono samples (int16, or floats in [-1, 1]).
        rate: their sample rate.
        to_rate: the rate wanted.

    Returns:
        Mono int16 samples at `to_rate`, delay-compensated (same start, about `len * to_rate / rate` samples).
    """
    pcm = to_pcm(samples)
    if rate == to_rate or pcm.size == 0:
        return pcm.copy()
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)


def read_wav(path: str | Path) -> tuple[Pcm, int]:
    """Read a 16-bit PCM WAV file.

    Args:
        path: the file.

    Returns:
        (mono int16 samples, sample rate).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not 16-bit PCM WAV.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit")
        channels, rate = wav.getnchannels(), wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    return to_pcm(data.reshape(-1, channels)) if channels > 1 else data, rate


def write_wav(path: str | Path, samples: npt.ArrayLike, rate: int) -> None:
    """Write mono samples as a 16-bit PCM WAV file.

    Args:
        path: the file (overwritten).
        samples: mono samples (int16, or floats in [-1, 1]).
        rate: their sample rate.
    """
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(to_pcm(samples).astype("<i2").tobytes())


# ---- sources ----------------------------------------------------------------------------------------------------


class PcmSource(MediaStreamTrack):
    """A paced audio track: 20 ms frames of 48 kHz mono int16, in real time. Subclasses implement `read()`.

    `started_at` is the `time.monotonic()` at which the first frame was handed to the sender, and `finished` is set
    once `read()` has said there is no more (silence follows).
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0
        self.started_at: float | None = None
        self.finished = asyncio.Event()

    async def read(self, count: int) -> Pcm | None:
        """The next `count` samples (fewer are padded with silence), or None when the source has ended.

        Args:
            count: how many samples the next frame needs.

        Returns:
            Mono int16 samples at 48 kHz, or None at the end.
        """
        return np.zeros(count, np.int16)

    async def recv(self) -> av.AudioFrame:
        """The next frame, when it is due (aiortc's sender calls this in a loop).

        Returns:
            A 20 ms `AudioFrame`.

        Raises:
            MediaStreamError: the track was stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = self.started_at = now
        else:
            due = self._start + self._pts / SAMPLE_RATE
            if due > now:
                await asyncio.sleep(due - now)
                if self.readyState != "live":  # stopped while we waited
                    raise MediaStreamError
            elif now - due > 0.2:  # the loop was blocked: start pacing afresh instead of sending a burst
                self._start = now - self._pts / SAMPLE_RATE
        samples: Pcm | None = None
        if not self.finished.is_set():
            samples = await self.read(FRAME_SAMPLES)
            if samples is None:
                self.finished.set()
        if samples is None:
            samples = np.zeros(FRAME_SAMPLES, np.int16)
        elif samples.size < FRAME_SAMPLES:
            samples = np.concatenate([samples, np.zeros(FRAME_SAMPLES - samples.size, np.int16)])
        # Stereo with both channels alike: aiortc's Opus encoder would upmix mono at -3 dB.
        stereo = np.repeat(samples[:FRAME_SAMPLES], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += FRAME_SAMPLES
        return frame


class Mutable(MediaStreamTrack):
    """Sends another audio track, or silence in its place while `muted`: the track goes on being read and paced
    (a file keeps its place in time, as a muted microphone's does), only its samples are not sent.

    Args:
        source: the audio track to send.
    """

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.muted = False

    async def recv(self) -> av.AudioFrame:
        """The source's next frame, or a silent frame of the same shape while muted.

        Raises:
            MediaStreamError: the source or this track was stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.source.recv()
        if not isinstance(frame, av.AudioFrame):
            raise MediaStreamError(f"an audio track gave {type(frame).__name__}")
        if not self.muted:
            return frame
        silent = av.AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=frame.samples)
        for plane in silent.planes:
            plane.update(bytes(plane.buffer_size))
        silent.sample_rate = frame.sample_rate
        silent.pts = frame.pts
        silent.time_base = frame.time_base
        return silent

    def stop(self) -> None:
        super().stop()
        self.source.stop()


class Silence(PcmSource):
    """Digital silence, for as long as the call lasts (the default source)."""


class Tone(PcmSource):
    """A sine tone.

    Args:
        frequency: in Hz.
        amplitude: peak, as a fraction of full scale.
        duration: seconds, or None for as long as the call lasts.
    """

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3, duration: float | None = None) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._left = None if duration is None else round(duration * SAMPLE_RATE)
        self._n = 0

    async def read(self, count: int) -> Pcm | None:
        if self._left is not None:
            if self._left <= 0:
                return None
            count = min(count, self._left)
            self._left -= count
        t = (self._n + np.arange(count)) / SAMPLE_RATE
        self._n += count
        return to_pcm(self.amplitude * np.sin(2 * math.pi * self.frequency * t))


class Samples(PcmSource):
    """Audio already in memory.

    Args:
        samples: mono samples (int16, or floats in [-1, 1]).
        sample_rate: their rate (resampled to 48 kHz if different).
        loop: start over at the end instead of finishing.
    """

    def __init__(self, samples: npt.ArrayLike, sample_rate: int = SAMPLE_RATE, loop: bool = False) -> None:
        super().__init__()
        self.pcm = resample(samples, sample_rate, SAMPLE_RATE)
        self.loop = loop
        self._pos = 0

    async def read(self, count: int) -> Pcm | None:
        if self._pos >= self.pcm.size:
            if not self.loop or self.pcm.size == 0:
                return None
            self._pos = 0
        chunk = self.pcm[self._pos : self._pos + count]
        self._pos += chunk.size
        return chunk


class _Rechunker:
    """Collects mono chunks of any length and hands them out `count` samples at a time."""

    def __init__(self) -> None:
        self._chunks: collections.deque[Pcm] = collections.deque()
        self.size = 0

    def push(self, chunk: Pcm) -> None:
        if chunk.size:
            self._chunks.append(chunk)
            self.size += chunk.size

    def take(self, count: int) -> Pcm:
        out: list[Pcm] = []
        need = count
        while need and self._chunks:
            head = self._chunks[0]
            if head.size <= need:
                out.append(self._chunks.popleft())
                need -= head.size
            else:
                out.append(head[:need])
                self._chunks[0] = head[need:]
                need = 0
        taken = np.concatenate(out) if out else np.zeros(0, np.int16)
        self.size -= taken.size
        return taken


class FileSource(PcmSource):
    """An audio file (WAV, MP3, Ogg…: anything FFmpeg reads), decoded as it is sent.

    Args:
        path: the file.
        loop: start over at the end instead of finishing.

    Raises:
        OSError: the file cannot be opened (at construction, before any call is made).
    """

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        try:
            self._container: Any = av.open(str(self.path), mode="r")
        except av.FFmpegError as exc:
            raise OSError(f"cannot open {self.path}: {exc}") from exc
        if not self._container.streams.audio:
            self._container.close()
            raise OSError(f"{self.path} has no audio stream")
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._frames = self._container.decode(audio=0)
        self._buffer = _Rechunker()
        self._eof = False
        self._closed = False

    async def read(self, count: int) -> Pcm | None:
        if self._closed:  # never decode from a closed container (FFmpeg would crash)
            return None
        while self._buffer.size < count and not self._eof:
            try:
                frame = next(self._frames)
            except StopIteration:
                if self.loop:
                    self._container.seek(0)
                    self._frames = self._container.decode(audio=0)
                    continue
                self._eof = True
                for out in self._resampler.resample(None):
                    self._buffer.push(out.to_ndarray().reshape(-1).astype(np.int16))
                break
            frame.pts = None  # let the resampler keep its own time (files with gaps must not stall it)
            for out in self._resampler.resample(frame):
                self._buffer.push(out.to_ndarray().reshape(-1).astype(np.int16))
        if self._eof and self._buffer.size == 0:
            return None
        return self._buffer.take(count)

    def stop(self) -> None:
        super().stop()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._container.close()


AudioChunks: TypeAlias = Iterable[npt.ArrayLike] | AsyncIterable[npt.ArrayLike]


class GeneratorSource(PcmSource):
    """Audio from your own (async) iterator of mono chunks of any length.

    Args:
        chunks: yields NumPy arrays: int16 samples, or floats in [-1, 1]; mono, or (n, channels).
        sample_rate: the rate of those samples (resampled to 48 kHz if different).
    """

    def __init__(self, chunks: AudioChunks, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self._sync = iter(chunks) if isinstance(chunks, Iterable) else None
        self._async = aiter(chunks) if self._sync is None and isinstance(chunks, AsyncIterable) else None
        self._buffer = _Rechunker()
        self._eof = False

    async def read(self, count: int) -> Pcm | None:
        while self._buffer.size < count and not self._eof:
            try:
                if self._sync is not None:
                    chunk = next(self._sync)
                elif self._async is not None:
                    chunk = await anext(self._async)
                else:
                    raise StopIteration
            except (StopIteration, StopAsyncIteration):
                self._eof = True
                break
            self._buffer.push(resample(chunk, self.sample_rate, SAMPLE_RATE))
        if self._eof and self._buffer.size == 0:
            return None
        return self._buffer.take(count)


def device(name: str = "default", format: str = "pulse", options: dict[str, str] | None = None) -> MediaStreamTrack:
    """A microphone, opened through FFmpeg (aiortc's `MediaPlayer`).

    Args:
        name: the device, e.g. `default` (PulseAudio/PipeWire) or `hw:0` (ALSA).
        format: FFmpeg's input format: `pulse`, `alsa`, `avfoundation` (macOS), `dshow` (Windows).
        options: FFmpeg options, e.g. `{"sample_rate": "48000"}`.

    Returns:
        The microphone's audio track (stopping it releases the device).

    Raises:
        OSError: FFmpeg cannot open the device.
        ValueError: the device has no audio.
    """
    try:
        player = MediaPlayer(name, format=format, options=options)
    except av.FFmpegError as exc:
        raise OSError(f"cannot open the audio device {name!r} ({format}): {exc}") from exc
    if player.audio is None:
        raise ValueError(f"the device {name!r} ({format}) has no audio")
    return player.audio


# ---- sinks ------------------------------------------------------------------------------------------------------


class TrackSink:
    """What every sink of a remote track shares, audio and video (video.py's `VideoSink` is one too): one task
    that reads the track and hands what arrives to `_received()`, a waiter woken at each frame, `stop()`.

    `frames` counts what was handed on, `last_arrival` is the `time.monotonic()` of the latest.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._track: MediaStreamTrack | None = None
        self.frames = 0
        self.last_arrival: float | None = None
        self._changed = asyncio.Event()

    @property
    def track(self) -> MediaStreamTrack | None:
        """The track being consumed, or None."""
        return self._track

    async def start(self, track: MediaStreamTrack) -> None:
        """Consume `track`. A sink serves one track at a time: given another, it leaves the one it consumed for
        the new one (the peer's media moved to another m-line) and goes on counting and writing.

        Args:
            track: the remote track.
        """
        if track is self._track:
            return
        previous, self._task, self._track = self._task, None, track
        if previous is not None:
            previous.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        self._task = asyncio.create_task(self._consume(track), name=f"peercall-{type(self).__name__}")

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                for result in self._received(frame, time.monotonic()):
                    if inspect.isawaitable(result):
                        await result
            except Exception:  # one bad frame (or a failing callback) must not stop the call's media
                log.exception("%s: a frame was not handled", type(self).__name__)
            self._changed.set()

    def _received(self, frame: Any, arrival: float) -> Iterator[Awaitable[None] | None]:
        """Count `frame` and hand it on: what each `write()` returned, awaited before the next is made."""
        return iter(())

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._changed.clear()
            await self._changed.wait()

    async def stop(self) -> None:
        """Stop consuming and release what the sink holds (close files). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.close()

    def close(self) -> None:
        """Release resources (called by `stop()`; must be idempotent)."""


class Sink(TrackSink):
    """Consumes the peer's audio track. Subclasses implement `write()` (and `close()` if they hold resources).

    `frames` counts the chunks received, `last_arrival` is the `time.monotonic()` of the latest.
    """

    def __init__(self) -> None:
        super().__init__()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self.received = 0
        """Samples received so far."""

    @property
    def duration(self) -> float:
        """Seconds of audio received so far."""
        return self.received / SAMPLE_RATE

    async def wait_for(self, seconds: float) -> None:
        """Wait until at least `seconds` of audio have been received (bound it with `asyncio.timeout()`).

        Args:
            seconds: how much audio.
        """
        await self._until(lambda: self.duration >= seconds)

    def _received(self, frame: Any, arrival: float) -> Iterator[Awaitable[None] | None]:
        if isinstance(frame, av.AudioFrame):
            for samples in self._mono(frame):
                self.frames += 1
                self.received += samples.size
                self.last_arrival = arrival
                yield self.write(samples, arrival)

    def _mono(self, frame: av.AudioFrame) -> list[Pcm]:
        """48 kHz mono int16 chunks of `frame` (what aiortc's Opus decoder gives, s16 stereo, is averaged as is)."""
        if frame.format.name == "s16" and frame.layout.name == "stereo" and frame.sample_rate == SAMPLE_RATE:
            pairs = frame.to_ndarray().reshape(-1, 2).astype(np.int32)
            return [((pairs[:, 0] + pairs[:, 1]) // 2).astype(np.int16)]
        return [out.to_ndarray().reshape(-1).astype(np.int16) for out in self._resampler.resample(frame)]

    def write(self, samples: Pcm, arrival: float) -> Awaitable[None] | None:
        """Handle one chunk of received audio.

        Args:
            samples: mono int16 samples at 48 kHz.
            arrival: `time.monotonic()` when the frame came out of the decoder.
        """
        return None


class Discard(Sink):
    """Receives and drops the audio (the default sink: aiortc queues frames nobody reads)."""


class Capture(Sink):
    """Keeps what arrives in memory, with the arrival time of every chunk.

    Args:
        max_seconds: keep at most this much (the oldest is dropped), or None for everything.
    """

    def __init__(self, max_seconds: float | None = None) -> None:
        super().__init__()
        self._chunks: collections.deque[Pcm] = collections.deque()
        self.arrivals: collections.deque[tuple[int, float]] = collections.deque()
        """(index of the chunk's first sample, arrival time) for every chunk kept."""
        self._total = 0
        self._dropped = 0
        self._max = None if max_seconds is None else round(max_seconds * SAMPLE_RATE)

    def write(self, samples: Pcm, arrival: float) -> None:
        self._chunks.append(samples)
        self.arrivals.append((self._total, arrival))
        self._total += samples.size
        while self._max is not None and self._total - self._dropped > self._max and len(self._chunks) > 1:
            self._dropped += self._chunks.popleft().size
            self.arrivals.popleft()

    def samples(self) -> Pcm:
        """Everything kept, as one array.

        Returns:
            Mono int16 samples at 48 kHz.
        """
        return np.concatenate(list(self._chunks)) if self._chunks else np.zeros(0, np.int16)

    def arrival_of(self, index: int) -> float | None:
        """When the chunk holding sample `index` (counted from the first one kept) arrived.

        Args:
            index: a sample index into `samples()`.

        Returns:
            Its chunk's `time.monotonic()` arrival, or None if out of range.
        """
        absolute = index + self._dropped
        found: float | None = None
        for start, arrival in self.arrivals:
            if start > absolute:
                break
            found = arrival
        return found if 0 <= index < self._total - self._dropped else None


class Callback(Sink):
    """Hands every chunk to your function: `fn(samples, sample_rate)`, a plain function or a coroutine function.

    Args:
        fn: receives mono int16 samples and 48000.
    """

    def __init__(self, fn: Callable[[Pcm, int], Awaitable[None] | None]) -> None:
        super().__init__()
        self.fn = fn

    def write(self, samples: Pcm, arrival: float) -> Awaitable[None] | None:
        return self.fn(samples, SAMPLE_RATE)


class WavRecorder(Sink):
    """Writes what arrives to a 16-bit mono 48 kHz WAV file (created at once, complete after `stop()`). When no
    audio arrived (the call ended before it came), it is a valid WAV of 0 frames (`frames` is 0).

    Args:
        path: the file (overwritten).

    Raises:
        OSError: the file cannot be created.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._wav: wave.Wave_write | None = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)

    def write(self, samples: Pcm, arrival: float) -> None:
        if self._wav is not None:
            self._wav.writeframes(samples.astype("<i2").tobytes())

    def close(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()


class RecorderSink(Sink):
    """aiortc's `MediaRecorder`: any format FFmpeg writes (`.ogg`, `.mp3`…), or an output device.

    Args:
        target: a file name, or a device name with `format`.
        format: FFmpeg's output format (e.g. `pulse`, `alsa`), or None to guess from the file name.
        options: FFmpeg options.
    """

    def __init__(self, target: str | Path, format: str | None = None, options: dict[str, str] | None = None) -> None:
        super().__init__()
        try:
            self._recorder: MediaRecorder | None = MediaRecorder(str(target), format=format, options=options)
        except av.FFmpegError as exc:
            raise OSError(f"cannot open {target} for writing: {exc}") from exc
        self._started = False

    async def start(self, track: MediaStreamTrack) -> None:
        if self._recorder is not None and not self._started:
            self._started = True
            self._recorder.addTrack(track)
            await self._recorder.start()

    async def stop(self) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            await recorder.stop()


def record(path: str | Path) -> Sink:
    """A sink that records to a file: WAV (16-bit mono 48 kHz) by our own writer, other formats by FFmpeg.

    Args:
        path: the file; its extension picks the format.

    Returns:
        A `WavRecorder` or a `RecorderSink`.

    Raises:
        OSError: the file cannot be created.
    """
    return WavRecorder(path) if str(path).lower().endswith(".wav") else RecorderSink(path)


def speaker(name: str = "default", format: str = "pulse") -> Sink:
    """Play what arrives on an output device, through FFmpeg.

    Args:
        name: the device, e.g. `default` (PulseAudio) or `hw:0` (ALSA).
        format: FFmpeg's output format: `pulse` or `alsa`.

    Returns:
        A sink.

    Raises:
        OSError: FFmpeg cannot open the device.
    """
    return RecorderSink(name, format=format)


# ---- echo --------------------------------------------------------------------------------------------------------


_ECHO_CHUNKS_MAX = 2_000  # chunks an echo holds at most (~40 s of 20 ms packets; the time bound comes first)


class Echo:
    """Plays back what it receives after `delay` seconds: connect `sink` to the peer's audio and send `source`.

    Args:
        delay: seconds between hearing and playing back.
    """

    def __init__(self, delay: float = 0.7) -> None:
        self.delay = delay
        self._chunks: collections.deque[tuple[float, Pcm]] = collections.deque()
        echo = self

        class _Source(PcmSource):
            async def read(self, count: int) -> Pcm | None:
                return echo._take(count)

        class _Sink(Sink):
            def write(self, samples: Pcm, arrival: float) -> None:
                chunks = echo._chunks
                chunks.append((arrival, samples))
                # What is older than it will ever be played goes now, not only as it is played (`_take`): a caller
                # who sends and never receives (sendonly) grew this by ~96 KB a second, or 2 MB at 20x the
                # packet rate, for as long as the call lasted.
                stale = arrival - echo.delay - 0.5
                while chunks[0][0] < stale or len(chunks) > _ECHO_CHUNKS_MAX:
                    chunks.popleft()

        self.source: PcmSource = _Source()
        self.sink: Sink = _Sink()

    def _take(self, count: int) -> Pcm:
        ripe = time.monotonic() - self.delay
        while self._chunks and self._chunks[0][0] < ripe - 0.5:  # fell behind (a stall): catch up
            self._chunks.popleft()
        out: list[Pcm] = []
        need = count
        while need and self._chunks and self._chunks[0][0] <= ripe:
            arrival, head = self._chunks[0]
            if head.size <= need:
                self._chunks.popleft()
                out.append(head)
                need -= head.size
            else:
                out.append(head[:need])
                self._chunks[0] = (arrival, head[need:])
                need = 0
        return np.concatenate(out) if out else np.zeros(count, np.int16)


# ---- shorthands --------------------------------------------------------------------------------------------------

AudioIn: TypeAlias = MediaStreamTrack | str | Path | AudioChunks | None
"""What a call sends: a track, a file name, an iterator of NumPy chunks (48 kHz), or None for silence."""
AudioOut: TypeAlias = Sink | str | Path | Callable[[Pcm, int], Awaitable[None] | None] | None
"""What a call does with what it receives: a sink, a file name, a callback, or None to discard it."""


def as_source(audio_in: AudioIn) -> MediaStreamTrack:
    """The track for an `audio_in` shorthand.

    Args:
        audio_in: a track (used as is), a file name, an iterator of chunks at 48 kHz, or None (silence).

    Returns:
        An audio track.

    Raises:
        OSError: a file cannot be opened.
        TypeError: `audio_in` is none of these.
    """
    if audio_in is None:
        return Silence()
    if isinstance(audio_in, MediaStreamTrack):
        if audio_in.kind != "audio":
            raise TypeError(f"expected an audio track, got a {audio_in.kind} track")
        return audio_in
    if isinstance(audio_in, str | Path):
        return FileSource(audio_in)
    if isinstance(audio_in, Iterable | AsyncIterable):
        return GeneratorSource(audio_in)
    raise TypeError(f"expected a track, a file name, an iterator of samples or None, got {type(audio_in).__name__}")


def as_sink(audio_out: AudioOut) -> Sink:
    """The sink for an `audio_out` shorthand.

    Args:
        audio_out: a sink (used as is), a file name (recorded), a callable (`fn(samples, rate)`), or None (dropped).

    Returns:
        A sink.

    Raises:
        OSError: a file cannot be created.
        TypeError: `audio_out` is none of these.
    """
    if audio_out is None:
        return Discard()
    if isinstance(audio_out, Sink):
        return audio_out
    if isinstance(audio_out, str | Path):
        return record(audio_out)
    if callable(audio_out):
        return Callback(audio_out)
    raise TypeError(f"expected a sink, a file name, a callable or None, got {type(audio_out).__name__}")
