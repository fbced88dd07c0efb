"""What a person at a web page sees when the node they are on loses Redis: a clear sentence, then calls work again
once Redis is back, without reloading the page."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from tests.e2e.conftest import SCALE, OpenPage
from tests.e2e.steps import open_pair, ring

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_a_call_during_a_redis_outage_is_refused_in_words_then_works(
    cluster: Callable[..., Any], redis: Any, open_page: OpenPage
) -> None:
    async with cluster(2, PEERCALL_NODE_LEASE="2") as c:
        a, b = await open_pair(open_page, c.nodes[0])
        redis.stop()
        await a.click("#call")
        await expect(a.locator("#message")).to_have_text(
            "The call with clientB ended: the server cannot place calls for a moment; try again shortly",
            timeout=int(10_000 * SCALE),
        )
        await expect(b.locator("#incoming")).to_be_hidden()
        redis.start()  # empty: the node registers its pages' connections again at its next lease renewal
        assert await asyncio.to_thread(c.nodes[0].wait_log, "registering its 2 connections again", 10)
        for _ in range(50):  # both pages are known to Redis again
            if len(c.redis_keys("peercall:u:*")) == 2:
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{c.nodes[0].http}/readyz")).status_code == 200
        await ring(a, b)
        await b.click("#accept")
        await expect(a.locator("#call-status")).to_have_text("Connected")
