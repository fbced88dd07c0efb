"""Token buckets for abuse limits. Pure: the caller passes the time."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. `take(now)` spends one if there is one."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        tokens = self._tokens + (now - self._at) * self._rate
        self._at = now
        if tokens >= 1.0:
            self._tokens = min(tokens, self._burst) - 1.0
            return True
        self._tokens = tokens
        return False
