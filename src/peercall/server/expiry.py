"""The watch on token expiry (`PEERCALL_AUTH_EXPIRY=enforce`): one loop timer for all of a node's connections.

A connection's deadline is its token's `exp` plus the verifier's leeway; a renewal (a later `auth` frame) moves it.
Deadlines wait in one heap, and one timer is armed for the earliest: when it fires, every connection whose deadline
has passed (and that was not renewed meanwhile: a renewal leaves its old entry behind, skipped when it comes up) is
handed to `expired`, and the timer is armed for the next. No task or timer per connection; the heap is rebuilt from
the live connections when stale entries outnumber them, so it stays within twice their number.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Collection
from typing import Protocol


class Watched(Protocol):
    """What the watch needs of a session: its deadline (None: not watched) and whether it is still open."""

    @property
    def deadline(self) -> float | None: ...

    @property
    def watched(self) -> bool: ...


class ExpiryWatch:
    """Calls `expired(sessions)` with the sessions whose deadline (Unix time) has passed, within `slack` seconds."""

    def __init__(
        self, expired: Callable[[list[Watched]], None], live: Collection[Watched], *, slack: float = 0.05
    ) -> None:
        self._expired = expired
        self._live = live
        self._slack = slack
        self._heap: list[tuple[float, int, Watched]] = []
        self._serial = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, session: Watched) -> None:
        """Watch `session` until its `deadline` (again, after a renewal)."""
        deadline = session.deadline
        if deadline is None:
            return
        heapq.heappush(self._heap, (deadline, next(self._serial), session))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [(s.deadline, next(self._serial), s) for s in self._live if s.watched and s.deadline]
            heapq.heapify(self._heap)
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed_at = None
        self._heap.clear()

    def _arm(self) -> None:
        if not self._heap:
            return
        first = self._heap[0][0]
        if self._armed_at is not None and self._armed_at <= first:
            return  # fires first, and re-arms for what is left
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._armed_at = first
        self._timer = loop.call_at(loop.time() + max(0.0, first - time.time()) + self._slack, self._fire)

    def _fire(self) -> None:
        self._timer = self._armed_at = None
        now = time.time()
        heap, due = self._heap, []
        while heap and heap[0][0] <= now:
            deadline, _, session = heapq.heappop(heap)
            if session.watched and session.deadline == deadline:  # else renewed since, or gone
                due.append(session)
        if due:
            self._expired(due)
        self._arm()
