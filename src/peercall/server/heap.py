"""Give the C heap's free pages back to the system now and then (glibc's `malloc_trim`).

Why: a server's C heap (glibc malloc: everything larger than pymalloc's 512-byte blocks, such as picows's 8 KB
write and 2 KB read buffers of each socket, frames carrying SDP, large dict and list tables, SQLite's pages) is
carved from one region that glibc shrinks only from its top. A chunk freed in the middle stays part of the
process's RSS until it is used again; so every new peak of what is allocated at once (a burst of reconnects after
a stall, sockets whose buffers grew) raises RSS for good, although what is in use then falls back. Under
bench/soak.py's 1,000 users RSS rose by steps of 1-5 MB that way, the last of them minutes after the warm-up,
while the heap's bytes in use (`mallinfo2().uordblks`) went down: 7-9 MB of the RSS were free heap. `malloc_trim(0)`
hands back every free page of the heap (madvise), here in ~3 ms; once a minute that keeps RSS close to what is
in use (docs/benchmarks.md, Soak).

On a C library without `malloc_trim` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger("peercall")

TRIM_EVERY = 60.0
"""Seconds between two trims of the C heap."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Trims the C heap every `every` seconds, on the running loop's timer, from `start()` to `stop()`."""

    def __init__(self, every: float = TRIM_EVERY) -> None:
        self.every = every
        self._trim = _malloc_trim()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def available(self) -> bool:
        """Whether this C library can trim its heap (glibc)."""
        return self._trim is not None

    @property
    def running(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        if self._trim is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.every, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def trim(self) -> bool:
        """Give the heap's free pages back now. Returns whether any memory was released."""
        return self._trim is not None and bool(self._trim(0))

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.every, self._tick)
        self.trim()
