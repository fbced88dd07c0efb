"""An in-process call history (`memory://`): for tests and for servers that need no history across restarts.

Owns a dict of records. Nothing is persisted: each instance starts empty and forgets everything when dropped.
No method awaits while it reads or changes state, so every method is atomic on the event loop.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

from ..core.records import CallRecord
from .base import (
    MISSED_PER_CALLER,
    MISSED_SHOWN,
    PRUNE_BATCH,
    UNANSWERED_OUTCOMES,
    check_limit,
    decode_cursor,
    encode_cursor,
)


def _order(rec: CallRecord) -> tuple[float, str]:
    return (rec.ringing_at, rec.call_id)


class MemoryHistory:
    """`CallHistory` in a dict, keyed by call_id."""

    def __init__(self) -> None:
        self._calls: dict[str, CallRecord] = {}
        self._taken: set[str] = set()
        self._waiting: collections.Counter[tuple[str, str]] = collections.Counter()  # (callee, caller) -> not taken

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the records stay until the instance is dropped."""

    async def record(self, rec: CallRecord, *, notified: bool = False) -> None:
        if rec.call_id in self._calls:
            return
        if not notified and rec.outcome in UNANSWERED_OUTCOMES:
            notified = self._waiting[rec.callee, rec.caller] >= MISSED_PER_CALLER
            if not notified:
                self._waiting[rec.callee, rec.caller] += 1
        self._calls[rec.call_id] = rec
        if notified:
            self._taken.add(rec.call_id)

    async def record_many(self, records: Sequence[tuple[CallRecord, bool]]) -> None:
        for rec, notified in records:
            await self.record(rec, notified=notified)

    async def calls_for(
        self, user: str, *, limit: int = 50, before: str | None = None
    ) -> tuple[list[CallRecord], str | None]:
        check_limit(limit)
        after = None if before is None else decode_cursor(before)
        mine = sorted(
            (r for r in self._calls.values() if user in (r.caller, r.callee) and (after is None or _order(r) < after)),
            key=_order,
            reverse=True,
        )
        page = mine[:limit]
        return page, encode_cursor(page[-1]) if len(mine) > limit else None

    async def add_quality(self, call_id: str, user: str, summary: dict[str, Any]) -> bool:
        rec = self._calls.get(call_id)
        if rec is None:
            return False
        self._calls[call_id] = dataclasses.replace(rec, quality={**(rec.quality or {}), user: dict(summary)})
        return True

    async def take_missed(self, user: str, *, limit: int = MISSED_SHOWN) -> tuple[list[CallRecord], int]:
        check_limit(limit)
        fresh = sorted(
            (
                r
                for r in self._calls.values()
                if r.callee == user and r.outcome in UNANSWERED_OUTCOMES and r.call_id not in self._taken
            ),
            key=_order,
        )
        self._taken.update(r.call_id for r in fresh)
        for rec in fresh:
            self._waiting[user, rec.caller] -= 1
        return fresh[-limit:], len(fresh)

    async def delete_ended_before(self, cutoff: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        old = sorted((r for r in self._calls.values() if r.ended_at < cutoff), key=lambda r: r.ended_at)[:limit]
        for rec in old:
            del self._calls[rec.call_id]
            if rec.call_id in self._taken:
                self._taken.discard(rec.call_id)
            elif rec.outcome in UNANSWERED_OUTCOMES:
                self._waiting[rec.callee, rec.caller] -= 1
        return len(old)
