"""Audio measurements: level, dominant frequency, alignment by cross-correlation, and wideband PESQ.

Pure functions over NumPy arrays: no I/O, no event loop, no clock. `pesq_wb` needs PyPI's `pesq` (the `sdk` extra).
Imports NumPy, the SDK's `media` (resampling) and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .media import resample, to_pcm

PESQ_RATE = 16_000
"""Wideband PESQ (ITU-T P.862.2) scores 16 kHz signals."""


def rms(samples: npt.ArrayLike) -> float:
    """The root-mean-square level.

    Args:
        samples: int16 samples or floats.

    Returns:
        The RMS in the samples' own units (0 for no samples).
    """
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def dominant_frequency(samples: npt.ArrayLike, rate: int) -> float:
    """The frequency of the strongest spectral peak (DC excluded).

    Args:
        samples: mono samples.
        rate: their sample rate.

    Returns:
        Hz (0 for fewer than two samples).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 2:
        return 0.0
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(x.size)))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate / x.size)


@dataclass(frozen=True)
class Alignment:
    """Where `reference` starts in `degraded` (`lag`, in samples) and how alike they are there (`correlation`)."""

    lag: int
    correlation: float


def align(reference: npt.ArrayLike, degraded: npt.ArrayLike, max_lag: int | None = None) -> Alignment:
    """Find where `reference` starts inside `degraded`, by FFT cross-correlation (degraded lags, never leads).

    Args:
        reference: what was sent.
        degraded: what was received (it starts at or before the reference's first sample).
        max_lag: the largest lag to consider, in samples (default: all).

    Returns:
        The lag with the highest cross-correlation, and the normalised correlation there (1 = identical shape).
    """
    ref = np.asarray(reference, dtype=np.float64)
    deg = np.asarray(degraded, dtype=np.float64)
    if ref.size == 0 or deg.size == 0:
        return Alignment(0, 0.0)
    size = 1 << int(np.ceil(np.log2(ref.size + deg.size)))
    xc = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    last = deg.size - 1 if max_lag is None else min(deg.size - 1, max_lag)
    lag = int(np.argmax(xc[: last + 1]))
    window = deg[lag : lag + ref.size]
    denominator = float(np.linalg.norm(ref[: window.size]) * np.linalg.norm(window))
    return Alignment(lag, float(xc[lag] / denominator) if denominator else 0.0)


def pesq_wb(reference: npt.ArrayLike, degraded: npt.ArrayLike, rate: int = PESQ_RATE) -> float:
    """Wideband PESQ (MOS-LQO, about 1.0 to 4.64) of `degraded` against `reference`, both already aligned.

    Args:
        reference: the clean signal.
        degraded: the same length of what was received, aligned to it.
        rate: their sample rate (resampled to 16 kHz if different).

    Returns:
        The score.

    Raises:
        ImportError: PyPI's `pesq` is not installed (`pip install 'peercall[sdk]'`).
        ValueError: PESQ could not score them (e.g. no speech in the reference).
    """
    from pesq import pesq  # type: ignore[import-untyped]

    ref = resample(reference, rate, PESQ_RATE)
    deg = resample(degraded, rate, PESQ_RATE)
    size = min(ref.size, deg.size)
    try:
        return float(pesq(PESQ_RATE, ref[:size], deg[:size], "wb"))
    except Exception as exc:  # the pesq package raises its own error types
        raise ValueError(f"PESQ could not score the signals: {exc}") from exc


def aligned_segment(degraded: npt.ArrayLike, lag: int, size: int) -> npt.NDArray[np.int16]:
    """`size` samples of `degraded` from `lag` on, padded with silence if it is too short.

    Args:
        degraded: the received signal.
        lag: where the reference starts in it.
        size: the reference's length.

    Returns:
        int16 samples, exactly `size` of them.
    """
    pcm = to_pcm(degraded)[lag : lag + size]
    return np.concatenate([pcm, np.zeros(size - pcm.size, np.int16)]) if pcm.size < size else pcm
