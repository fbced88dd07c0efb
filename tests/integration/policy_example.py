"""An operator's rule for `PEERCALL_CALL_POLICY=tests.integration.policy_example:may_call` (the contacts tests).

A real one would ask the deployment's own social graph; docs/operations.md shows one that calls an HTTP service.
"""

from __future__ import annotations

import asyncio


async def may_call(caller: str, callee: str) -> bool:
    """Nobody may ring a VIP (an id starting with `vip`); anyone else may be rung."""
    await asyncio.sleep(0)
    return not callee.startswith("vip")
