"""Video test helpers: short clips written with PyAV (into tmp_path, never the checkout) and recordings read back."""

from __future__ import annotations

import fractions
import itertools
from pathlib import Path
from typing import Any

import av
import numpy as np


def make_clip(path: Path, width: int, height: int, seconds: float = 1.0, fps: int = 30, codec: str = "libx264") -> Path:
    """A short clip (H.264, or `codec`) of a moving grey ramp: every frame differs from the one before."""
    with av.open(str(path), mode="w") as container:
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        ramp = np.linspace(0, 255, width, dtype=np.float64)
        for index in range(round(seconds * fps)):
            row = ((ramp + index * 8) % 256).astype(np.uint8)
            picture = np.stack([np.broadcast_to(row, (height, width))] * 3, axis=-1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts, frame.time_base = index, fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def read_video(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of a recorded file's video stream."""
    frames = decode(path)
    return len(frames), frames[0].shape[1], frames[0].shape[0]


def decode(path: Path) -> list[np.ndarray[Any, Any]]:
    """Every picture of a recorded file's video stream, as grey NumPy arrays."""
    with av.open(str(path)) as container:
        assert container.streams.video, f"{path.name} has no video stream"
        frames = [frame.to_ndarray(format="gray").astype(np.int16) for frame in container.decode(video=0)]
    assert frames, f"{path.name} has no frames"
    return frames


def still_moving(frames: list[np.ndarray[Any, Any]], start: int) -> bool:
    """Whether the pictures from `start` on keep changing (a frozen picture differs only by coding noise)."""
    later = frames[start:]
    changes = [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(later)]
    return bool(changes) and min(changes) > 2.0
