"""Video for SDK calls: sources (what we send) and sinks (what we do with what the peer sends).

A **video source** is an aiortc `MediaStreamTrack` of kind video, paced in real time: `VideoFileSource` (any file
FFmpeg reads, looped by default) and `TestPattern` (moving colour bars). When a file that does not loop ends, its
last picture stays (`finished` is set), so the call goes on until someone hangs up.

A **video sink** consumes the peer's video track: `VideoDiscard` (counts the frames), `VideoCallback` (hands each
`av.VideoFrame` to your function) and `VideoRecorder` (writes a file: H.264 in `.mp4`/`.mkv`/`.mov`, VP8 in
`.webm`). Every sink keeps `frames`, `width` and `height` of what arrived.

`as_video_source()` and `as_video_sink()` turn the shorthands that `Client.call()` and `Call.accept()` take (None,
a path, a callable) into these; None means no video that way.

Imports aiortc, PyAV, NumPy, the standard library and `media` (the sinks' shared base) only; must not import
signaling, calls or the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .media import TrackSink

log = logging.getLogger("peercall.client")

VIDEO_CLOCK = 90_000
"""The RTP clock of video: the time base of every frame the sources here make."""
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
MAX_FPS = 60.0
"""Sources never send faster than this, whatever a file says."""


# ---- sources ----------------------------------------------------------------------------------------------------


class VideoSource(MediaStreamTrack):
    """A paced video track: one frame every `1 / fps` seconds, in real time. Subclasses implement `read()`.

    `started_at` is the `time.monotonic()` at which the first frame was handed to the sender, and `finished` is set
    once `read()` has said there is no more (the last picture is sent again from then on).

    Args:
        fps: frames a second.
    """

    kind = "video"

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__()
        self.fps = min(MAX_FPS, fps) if fps > 0 else 30.0
        self._start: float | None = None
        self._index = 0
        self._last: av.VideoFrame | None = None
        self.started_at: float | None = None
        self.finished = asyncio.Event()
        self.frames_sent = 0

    async def read(self) -> av.VideoFrame | None:
        """The next picture, or None when the source has ended.

        Returns:
            A video frame (any size and pixel format the encoder can convert), or None at the end.
        """
        return None

    async def recv(self) -> av.VideoFrame:
        """The next frame, when it is due (aiortc's sender calls this in a loop).

        Returns:
            A `VideoFrame` with a 90 kHz timestamp.

        Raises:
            MediaStreamError: the track was stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = self.started_at = now
        else:
            due = self._start + self._index / self.fps
            if due > now:
                await asyncio.sleep(due - now)
                if self.readyState != "live":
                    raise MediaStreamError
            elif now - due > 0.5:  # the loop was blocked: start pacing afresh instead of sending a burst
                self._start = now - self._index / self.fps
        frame: av.VideoFrame | None = None
        if not self.finished.is_set():
            frame = await self.read()
            if frame is None:
                self.finished.set()
        if frame is None:
            frame = self._last if self._last is not None else _black(320, 240)
        self._last = frame
        frame.pts = round(self._index * VIDEO_CLOCK / self.fps)
        frame.time_base = _TIME_BASE
        self._index += 1
        self.frames_sent += 1
        return frame


def _black(width: int, height: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")


class TestPattern(VideoSource):
    """Colour bars that move one step a frame: a test picture that is never still.

    Args:
        width: in pixels (even).
        height: in pixels (even).
        fps: frames a second.
        duration: seconds, or None for as long as the call lasts.
    """

    __test__ = False  # not a pytest class

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, duration: float | None = None) -> None:
        super().__init__(fps)
        if width < 16 or height < 16 or width > 3840 or height > 2160:
            raise ValueError(f"a test pattern is 16x16 to 3840x2160, not {width}x{height}")
        self.width, self.height = width - width % 2, height - height % 2
        self._left = None if duration is None else round(duration * self.fps)
        colours = np.array(
            [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255]],
            np.uint8,
        )
        bar = np.repeat(colours, -(-self.width // len(colours)), axis=0)[: self.width]
        self._row = np.concatenate([bar, bar])  # twice as wide, to roll through
        self._n = 0

    async def read(self) -> av.VideoFrame | None:
        if self._left is not None:
            if self._left <= 0:
                return None
            self._left -= 1
        shift = (self._n * 4) % self.width
        self._n += 1
        row = self._row[shift : shift + self.width]
        picture = np.broadcast_to(row, (self.height, self.width, 3)).copy()
        return av.VideoFrame.from_ndarray(picture, format="rgb24")


class VideoFileSource(VideoSource):
    """A video file (MP4, WebM, MKV…: anything FFmpeg reads), decoded as it is sent, at the file's frame rate.

    Decoding runs on the event loop: a file of very large pictures slows every other task.

    Args:
        path: the file.
        loop: start over at the end (the default) instead of finishing.

    Raises:
        OSError: the file cannot be opened or has no video (at construction, before any call is made).
    """

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        self.path = Path(path)
        try:
            container: Any = av.open(str(self.path), mode="r")
        except av.FFmpegError as exc:
            raise OSError(f"cannot open {self.path}: {exc}") from exc
        if not container.streams.video:
            container.close()
            raise OSError(f"{self.path} has no video stream")
        rate = container.streams.video[0].average_rate
        super().__init__(float(rate) if rate else 30.0)
        self._container = container
        self.loop = loop
        self._frames = container.decode(video=0)
        self._closed = False

    async def read(self) -> av.VideoFrame | None:
        if self._closed:  # never decode from a closed container (FFmpeg would crash)
            return None
        for attempt in range(2):
            try:
                frame: av.VideoFrame = next(self._frames)
                return frame
            except StopIteration:
                if not self.loop or attempt:
                    return None
                self._container.seek(0)
                self._frames = self._container.decode(video=0)
            except av.FFmpegError as exc:
                log.warning("%s: cannot decode (%s): the picture stays", self.path, exc)
                return None
        return None

    def stop(self) -> None:
        super().stop()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._container.close()


# ---- sinks ------------------------------------------------------------------------------------------------------


class VideoSink(TrackSink):
    """Consumes the peer's video track. Subclasses implement `write()` (and `close()` if they hold resources).

    `frames` counts the frames received, `width` and `height` are those of the latest (0 before the first),
    `last_arrival` is its `time.monotonic()`. Given another track, it follows it (`TrackSink.start`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.width = 0
        self.height = 0

    async def wait_for(self, frames: int) -> None:
        """Wait until at least `frames` frames have arrived (bound it with `asyncio.timeout()`).

        Args:
            frames: how many.
        """
        await self._until(lambda: self.frames >= frames)

    def _received(self, frame: Any, arrival: float) -> Iterator[Awaitable[None] | None]:
        if isinstance(frame, av.VideoFrame):
            self.frames += 1
            self.width, self.height = frame.width, frame.height
            self.last_arrival = arrival
            yield self.write(frame, arrival)

    def write(self, frame: av.VideoFrame, arrival: float) -> Awaitable[None] | None:
        """Handle one received frame.

        Args:
            frame: the decoded picture (yuv420p, as aiortc's decoders give it).
            arrival: `time.monotonic()` when it came out of the decoder.
        """
        return None


class VideoDiscard(VideoSink):
    """Receives the video and drops it, counting the frames (aiortc would otherwise queue what nobody reads)."""


class VideoCallback(VideoSink):
    """Hands every frame to your function: `fn(frame)`, a plain function or a coroutine function.

    Args:
        fn: receives an `av.VideoFrame` (`frame.to_ndarray(format="rgb24")` gives a NumPy picture).
    """

    def __init__(self, fn: Callable[[av.VideoFrame], Awaitable[None] | None]) -> None:
        super().__init__()
        self.fn = fn

    def write(self, frame: av.VideoFrame, arrival: float) -> Awaitable[None] | None:
        return self.fn(frame)


_CODECS = {".webm": ("libvpx", {"deadline": "realtime", "cpu-used": "8"})}
_DEFAULT_CODEC = ("libx264", {"preset": "ultrafast", "tune": "zerolatency"})


class VideoRecorder(VideoSink):
    """Writes what arrives to a video file: H.264 (`.mp4`, `.mkv`, `.mov`…) or VP8 (`.webm`), at the size of the
    first frame (later frames of another size are scaled to it), timed as they arrived (to the millisecond: frames of
    a burst a millisecond apart, none dropped). The file is created at once and complete after `stop()`; with no
    frame received it holds no video stream.

    Encoding runs on the event loop (x264's fastest preset: a few milliseconds a frame at 640x480).

    Args:
        path: the file (overwritten); its extension picks the container and the codec.

    Raises:
        OSError: the file cannot be created.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        try:
            self.path.open("wb").close()  # FFmpeg would open the file only at the first frame
            self._container: Any = av.open(str(self.path), mode="w")
        except OSError as exc:
            raise OSError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        except (av.FFmpegError, ValueError) as exc:
            raise OSError(f"cannot create {self.path}: {exc}") from exc
        self._codec = _CODECS.get(self.path.suffix.lower(), _DEFAULT_CODEC)
        self._stream: Any = None
        self._t0: float | None = None
        self._last_pts = -1
        self._closed = False
        self.frames_written = 0

    def write(self, frame: av.VideoFrame, arrival: float) -> None:
        if self._closed:
            return
        if self._t0 is None:
            self._t0 = arrival
        # two frames within a millisecond (a burst after a stall): the second a millisecond later, not dropped
        pts = max(round((arrival - self._t0) * 1000), self._last_pts + 1)
        if self._stream is None:
            name, options = self._codec
            stream = self._container.add_stream(name, rate=30, options=options)
            stream.width, stream.height = frame.width - frame.width % 2, frame.height - frame.height % 2
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
            self._stream = stream
        stream = self._stream
        picture = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
        picture.pts = pts
        picture.time_base = fractions.Fraction(1, 1000)
        self._last_pts = pts
        for packet in stream.encode(picture):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
        except av.FFmpegError as exc:
            log.warning("%s: the end of the video was not written (%s)", self.path, exc)
        finally:
            with contextlib.suppress(Exception):
                self._container.close()


# ---- shorthands --------------------------------------------------------------------------------------------------

VideoIn: TypeAlias = MediaStreamTrack | str | Path | None
"""What a call sends as video: a track, a file name (looped), or None for no video."""
VideoOut: TypeAlias = VideoSink | str | Path | Callable[[av.VideoFrame], Awaitable[None] | None] | None
"""What a call does with the peer's video: a sink, a file name (recorded), a callback, or None to decline it."""


def as_video_source(video_in: VideoIn) -> MediaStreamTrack | None:
    """The track for a `video_in` shorthand.

    Args:
        video_in: a video track (used as is), a file name (`VideoFileSource(path, loop=True)`), or None.

    Returns:
        A video track, or None for no video.

    Raises:
        OSError: a file cannot be opened or has no video.
        TypeError: `video_in` is none of these, or an audio track.
    """
    if video_in is None:
        return None
    if isinstance(video_in, MediaStreamTrack):
        if video_in.kind != "video":
            raise TypeError(f"expected a video track, got a {video_in.kind} track")
        return video_in
    if isinstance(video_in, str | Path):
        return VideoFileSource(video_in)
    raise TypeError(f"expected a video track, a file name or None, got {type(video_in).__name__}")


def as_video_sink(video_out: VideoOut) -> VideoSink | None:
    """The sink for a `video_out` shorthand.

    Args:
        video_out: a video sink (used as is), a file name (`VideoRecorder`), a callable (`fn(frame)`), or None.

    Returns:
        A video sink, or None (the peer's video is declined).

    Raises:
        OSError: a file cannot be created.
        TypeError: `video_out` is none of these.
    """
    if video_out is None:
        return None
    if isinstance(video_out, VideoSink):
        return video_out
    if isinstance(video_out, str | Path):
        return VideoRecorder(video_out)
    if callable(video_out):
        return VideoCallback(video_out)
    raise TypeError(f"expected a video sink, a file name, a callable or None, got {type(video_out).__name__}")
