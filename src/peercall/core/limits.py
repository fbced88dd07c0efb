"""Token buckets for abuse limits. Pure: the caller passes the time."""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. `take(now, cost)` spends `cost` (one) if there are as many."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        tokens = self._tokens + (now - self._at) * self._rate
        self._at = now
        if tokens >= cost:
            self._tokens = min(tokens, self._burst) - cost
            return True
        self._tokens = tokens
        return False


class KeyedBuckets:
    """A token bucket per key (a client address), for at most `size` keys: the least recently used is forgotten
    first, so that a flood of new keys costs bounded memory (a forgotten key comes back with a full bucket).

    `take(key, now)` spends a token of `key`'s bucket, as `TokenBucket.take`.
    """

    __slots__ = ("_buckets", "_burst", "_rate", "size")

    def __init__(self, rate: float, burst: float, size: int = 10_000) -> None:
        self._rate, self._burst, self.size = rate, burst, size
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> bool:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(self._rate, self._burst, now)
            if len(buckets) > self.size:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        return bucket.take(now)
