"""What an application sees of the client's own life: `incoming()` across a `break`, URLs it cannot use, and the
`Disconnected` events of a lost server and of `close()`."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import weakref
from typing import Any

import pytest

from peercall.client import (
    Client,
    ClientError,
    Connected,
    ConnectError,
    Disconnected,
    Event,
    PresenceChanged,
    Subscription,
)
from tests.conftest import run_server

from .conftest import WAIT, MakeClient, next_incoming


async def test_a_call_that_rings_after_a_break_reaches_the_next_incoming(sdk: MakeClient, uid: Any) -> None:
    """The docs' answer loop `break`s after a call; a call that rings while the program does other work is handed to
    the next `incoming()`, not lost in the iterator it left."""
    bob, alice, carol = await sdk(uid("bob")), await sdk(uid("alice")), await sdk(uid("carol"))
    first = await alice.call(bob.id)
    async with asyncio.timeout(WAIT):
        async for ringing in bob.incoming():
            assert ringing.peer == alice.id
            await ringing.reject()
            break
    await first.wait_ended()
    second = await carol.call(bob.id)  # rings while nobody iterates
    await asyncio.sleep(0.3)
    async with asyncio.timeout(WAIT):
        async for ringing in bob.incoming():
            assert ringing.peer == carol.id
            await ringing.reject()
            break
    assert (await second.wait_ended()).outcome == "rejected"
    async with bob.incoming() as calls:  # `async with` still ends an iterator early
        calls.close()
        assert [c async for c in calls] == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/ws", "https://example.org/ws", "ftp://x", "ws://"])
def test_a_url_that_is_not_a_websocket_one_is_refused_at_once(url: str) -> None:
    """Not a 10 s wait and an InvalidURI traceback: a ValueError naming ws:// and wss://, before any connection."""
    with pytest.raises(ValueError, match=r"ws://") as refused:
        Client(url, "alice")
    if url.startswith("http"):
        assert "did you mean ws" in str(refused.value), refused.value


async def test_one_disconnected_per_lost_connection_and_a_terminal_one_at_close(uid: Any) -> None:
    """A server that goes away gives one `Disconnected` (with `retry_in`), however many retries follow; `close()`
    gives a terminal one."""
    with run_server() as srv:
        client = Client(srv.ws, uid("dan"), min_delay=0.1, max_delay=0.2)
        await client.connect()
        events = client.events()
        srv.stop(signal.SIGKILL)
    seen: list[Event] = []

    async def keep() -> None:
        async for event in events:
            seen.append(event)

    keeper = asyncio.create_task(keep())
    await asyncio.sleep(1.5)  # several retries
    await client.close()
    await asyncio.wait_for(keeper, WAIT)
    lost = [e for e in seen if isinstance(e, Disconnected)]
    assert len(lost) == 2, lost
    assert lost[0].retry_in is not None and not lost[0].terminal, lost
    assert lost[1].terminal and lost[1].reason == "closed by us", lost


async def test_a_client_whose_first_connect_failed_connects_again_and_stays_connected(uid: Any) -> None:
    """A program that retries `connect()` on the same `Client` while the server is down gets connected once it is
    up, with the `events()` it subscribed to before, and that connection is kept as any other: it comes back after
    the server restarts. After `close()`, `connect()` says to make a new `Client`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"ws://127.0.0.1:{port}/ws", uid("erin"), connect_timeout=0.5, min_delay=0.1, max_delay=0.2)
    events = client.events()
    try:
        for _ in range(2):
            with pytest.raises(ConnectError, match="could not connect"):
                await client.connect()
            gave_up = client.last_disconnect
            assert gave_up is not None and gave_up.terminal, gave_up
            assert gave_up.reason.startswith("gave up connecting after 0.5s: "), gave_up
        with run_server(PEERCALL_PORT=str(port)) as srv:
            async with asyncio.timeout(WAIT):
                welcome = await client.connect()
            assert welcome["type"] == "welcome" and client.connected
            assert not (await next_connected(events)).reconnected
            srv.stop(signal.SIGKILL)
        with run_server(PEERCALL_PORT=str(port)):
            assert (await next_connected(events)).reconnected
            assert client.connected
    finally:
        await client.close()
    with pytest.raises(ClientError, match="make a new Client"):
        await client.connect()


async def next_connected(events: Subscription[Event]) -> Connected:
    """The next `Connected` among `events` (waits at most WAIT seconds)."""
    async with asyncio.timeout(WAIT):
        async for event in events:
            if isinstance(event, Connected):
                return event
    raise AssertionError("the events ended before a Connected")


async def test_a_loop_left_early_unsubscribes_and_a_kept_subscription_goes_on(sdk: MakeClient, uid: Any) -> None:
    """`break` out of `async for event in client.events()` (or `client.incoming()`) leaves nothing subscribed: no
    queue of events nobody reads, however often a program does it. A subscription kept in a variable is read by
    one loop after another, without losing what came in between."""
    alice = await sdk(uid("alice"))
    kept = alice.events()
    left: list[weakref.ref[Any]] = []
    for _ in range(3):
        bob = await sdk(uid("bob"))
        async with asyncio.timeout(WAIT):
            async for event in (events := alice.events()):
                if isinstance(event, PresenceChanged):
                    left.append(weakref.ref(events))
                    break
        del events
        await bob.close()
    ringer = await sdk(uid("carol"))
    await ringer.call(alice.id)
    async with asyncio.timeout(WAIT):
        async for ringing in (calls := alice.incoming()):
            assert ringing.peer == ringer.id
            left.append(weakref.ref(calls))
            break
    del calls
    await ringer.close()  # hangs up the ringing call
    gc.collect()
    assert [ref() for ref in left] == [None] * 4, "a subscription left by `break` is still alive"
    online = []
    for _ in range(3):  # the kept one saw it all: three come and go, and the caller
        async with asyncio.timeout(WAIT):
            async for event in kept:
                if isinstance(event, PresenceChanged):
                    online.append(event.online)
                    break
    assert online == [True, False, True], online


async def test_a_timeout_around_close_is_kept_while_a_call_is_busy(
    sdk: MakeClient, uid: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`close()` waits for the call's frames to be handled; a program (or the CLI's SIGTERM) that cancels it meanwhile
    gets its cancel: `asyncio.timeout(1)` around `close()` raises TimeoutError after a second, as it says."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    call = await alice.call(bob.id)
    busy = asyncio.Event()

    async def slow(frame: dict[str, Any]) -> None:  # a frame whose handling takes long (aiortc gathering, say)
        busy.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(call, "_handle", slow)
    await (await next_incoming(bob)).accept()
    async with asyncio.timeout(WAIT):
        await busy.wait()
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await alice.close()
    assert asyncio.get_running_loop().time() - started < 3
