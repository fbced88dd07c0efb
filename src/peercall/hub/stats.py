"""Plain counters for metrics: bumped on the hot path, read by the /metrics collector at scrape time."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

ANSWER_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs, ending with +Inf, as Prometheus wants them."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass
class Stats:
    messages: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    outcomes: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    dropped: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    relay_dropped: int = 0  # peer frames dropped because their reader lagged (`Hub.relay_buffer`)
    answer_time: Histogram = field(default_factory=lambda: Histogram(ANSWER_BUCKETS))
