"""A deadline for the store's work on the signaling path.

A database that stops answering (its packets dropped on the way: no error, no answer) would otherwise hold what
waits on it for ever: a join that reads contacts, a call-request it screens, the history writer. Written by hand:
`asyncio.timeout` is the whole of it, plus a task for callers that run outside any (server/fastws.py drives some
coroutines by hand, and a timeout needs a task, as asyncpg's own do), and no deadline for a store that says it
must not be cancelled (SQLite: its statement runs in a thread, and cancelled it left the file write-locked until
the garbage collector ran, and a `:memory:` database lost; its busy timeout bounds its operations).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from ..store.base import Waits

T = TypeVar("T")


async def within(work: Awaitable[T], seconds: float, store: Waits) -> T:
    """Await an operation of `store` for at most `seconds`, unless the store is not `cancellable` (then as long as
    it takes).

    Raises:
        TimeoutError: it took longer ("the store did not answer within … s"); it was cancelled. (It may have been
            done all the same: a database that answers late may have committed it.)
        Whatever the operation raises.
    """
    if asyncio.current_task() is None:
        return await asyncio.ensure_future(within(work, seconds, store))
    if not store.cancellable:
        return await work
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise TimeoutError(f"the store did not answer within {seconds:g} s") from None
