"""A deadline for the store's work on the signaling path.

A database that stops answering (its packets dropped on the way: no error, no answer) would otherwise hold what
waits on it for ever: a join that reads contacts, a call-request it screens, the history writer. Written by hand:
`asyncio.timeout` is the whole of it, plus a task for callers that run outside any (server/fastws.py drives some
coroutines by hand, and a timeout needs a task, as asyncpg's own do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(work: Awaitable[T], seconds: float) -> T:
    """Await a store operation for at most `seconds`.

    Raises:
        TimeoutError: it took longer ("the store did not answer within … s"); it was cancelled.
        Whatever the operation raises.
    """
    if asyncio.current_task() is None:
        return await asyncio.ensure_future(within(work, seconds))
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise TimeoutError(f"the store did not answer within {seconds:g} s") from None
