"""The lean Redis client (broker/resp.py) says whether a failed command may have run: `NotSent` only when it never
reached Redis, so that the broker holds in doubt exactly the changes Redis may have made."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from peercall.broker import resp
from tests.conftest import free_port

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_a_command_with_no_redis_to_go_to_was_not_sent() -> None:
    pipe = resp.Pipe(f"redis://127.0.0.1:{free_port()}", connect_timeout=1)
    with pytest.raises(resp.NotSent):
        await pipe.execute("INCR", "k")


async def test_a_command_lost_with_its_connection_may_have_run_unless_it_was_never_written(redis_url: str) -> None:
    pipe = resp.Pipe(redis_url)
    try:
        assert await pipe.execute("PING") == "PONG"
        conn = await pipe.connect()
        # BLPOP holds the connection: the INCR written behind it waits for its reply when the connection goes.
        written = asyncio.ensure_future(pipe.execute("BLPOP", "peercall-test:nothing", 5))
        behind = asyncio.ensure_future(pipe.execute("INCR", "peercall-test:n"))
        await asyncio.sleep(0.2)  # both written (one write at the end of the loop's turn)
        unwritten = asyncio.ensure_future(pipe.execute("INCR", "peercall-test:n"))  # queued, then lost at once
        await asyncio.sleep(0)
        conn.fail(RedisConnectionError("cut"))
        for future in (written, behind):
            with pytest.raises(RedisConnectionError) as lost:
                await future
            assert not isinstance(lost.value, resp.NotSent)
        with pytest.raises(resp.NotSent):
            await unwritten
        with pytest.raises(resp.NotSent):  # on a connection known lost
            conn.send(("PING",))
        assert await pipe.execute("PING") == "PONG"  # the next command connects again
    finally:
        await pipe.execute("DEL", "peercall-test:n")
        pipe.close()
