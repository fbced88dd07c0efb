"""A server gone wrong (or an impostor on its address) cannot take the SDK down: a signaling frame nested thousands
deep is ignored like any frame that is not JSON, and an `/ice-servers` answer that trickles, is nested thousands deep
or is larger than 1 MiB gives an empty ICE configuration in bounded time. Each hostile server is written here, on a
real socket on 127.0.0.1 (a real peercall server never sends such things)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from peercall.client import Client, Connected, Disconnected, Event, PresenceChanged, SignalingState, Subscription
from peercall.client.ice import IceConfig, fetch_ice_config
from peercall.protocol.codes import CloseCode
from peercall.protocol.messages import welcome
from tests.conftest import TIMEOUT

DEEP = "[" * 100_000
"""JSON nested 100,000 deep: `json.loads` raises RecursionError on it (not ValueError)."""

CONFIG = {"iceServers": [{"urls": "stun:127.0.0.1:3478"}], "iceTransportPolicy": "relay", "ttl": 60}
"""What the hostile `/ice-servers` answers when it behaves."""

Handler = Callable[[ServerConnection], Awaitable[None]]


def welcome_frame(ws: ServerConnection) -> str:
    """The `welcome` a real server sends (protocol/messages.py), to whoever connected."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path if ws.request else "").query)
    user, device = query.get("id", ["?"])[0], query.get("device", ["d"])[0]
    return json.dumps(welcome(user, device, [], [], [], 30.0, 30.0))


async def next_event(events: Subscription[Event], kind: type[Any]) -> Any:
    """The next event of `kind` (the others are skipped), within TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"the events ended before a {kind.__name__}")


@pytest.fixture
async def ws_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """`await ws_server(handler)` -> the `ws://` URL of a WebSocket server on a free loopback port that runs
    `handler` for each connection; closed at the end of the test."""
    servers = []

    async def start(handler: Handler) -> str:
        server = await serve(handler, "127.0.0.1", 0, close_timeout=1)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_frame_nested_thousands_deep_is_ignored_and_the_connection_goes_on(
    ws_server: Callable[[Handler], Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """After a frame of 100,000 `[` the client still reads the server: the `presence` that follows shows bob
    online, and `directory()` is sent and answered on the same connection, with no `Disconnected` between. (It used
    to kill the client's reader: `state` still said connected, but nothing more was read, no reconnect came, and
    every `send()` was dropped.)"""
    asked: list[dict[str, Any]] = []

    async def hostile(ws: ServerConnection) -> None:
        await ws.send(welcome_frame(ws))
        await ws.send(DEEP)
        await ws.send(json.dumps({"type": "presence", "id": "bob", "status": "online", "displayName": "Bob"}))
        async for text in ws:
            frame = json.loads(text)
            asked.append(frame)
            if frame.get("type") == "directory":
                await ws.send(json.dumps({"type": "directory", "users": [{"id": "bob", "inCall": False}]}))

    url = await ws_server(hostile)
    client = Client(url, "alice", connect_timeout=TIMEOUT)
    events = client.events()
    try:
        with caplog.at_level(logging.WARNING, logger="peercall.client"):
            await client.connect()
            assert (await next_event(events, PresenceChanged)) == PresenceChanged("bob", True)
            assert client.online == {"bob"} and client.display_name("bob") == "Bob"
            async with asyncio.timeout(TIMEOUT):
                page = await client.directory()
        assert [u.id for u in page.users] == ["bob"]
        assert [f["type"] for f in asked] == ["directory"], "the server did not get the client's frame"
        assert client.state is SignalingState.CONNECTED and client.connected
        events.close()
        assert not [e async for e in events if isinstance(e, Disconnected)], "the connection dropped"
        assert "ignored a frame that is not JSON" in caplog.text
    finally:
        await client.close()


async def test_a_server_that_restarts_after_a_deep_frame_is_reconnected_to(
    ws_server: Callable[[Handler], Awaitable[str]],
) -> None:
    """A server that sends a frame nested thousands deep, then restarts (close 1001): the client notices the close
    (`Disconnected`, state `reconnecting`) and connects again (`Connected`, `reconnected`). (With its reader killed
    by the deep frame, the old client never noticed: it said connected to a closed socket for ever.)"""
    connections = 0

    async def hostile(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(welcome_frame(ws))
        if connections == 1:
            await ws.send(DEEP)
            await asyncio.sleep(0.2)  # (the client reads the deep frame before the close)
            await ws.close(CloseCode.GOING_AWAY, "restarting")
            return
        await ws.wait_closed()

    url = await ws_server(hostile)
    client = Client(url, "alice", connect_timeout=TIMEOUT, min_delay=0.05, max_delay=0.1)
    events = client.events()
    try:
        await client.connect()
        lost = await next_event(events, Disconnected)
        assert lost.code == CloseCode.GOING_AWAY and not lost.terminal, lost
        back = await next_event(events, Connected)
        assert back.reconnected and client.state is SignalingState.CONNECTED
        assert connections == 2
    finally:
        events.close()
        await client.close()


# ---- /ice-servers ------------------------------------------------------------------------------------------------


@pytest.fixture
async def ice_server() -> AsyncIterator[str]:
    """A minimal HTTP server on a free loopback port whose `/ice-servers?id=<how>` answers as `how` says:

    - `normal`: CONFIG, as a real server would;
    - `trickle`: CONFIG padded with spaces, four bytes a second (whole after some 30 s), never slow enough for a
      per-read timeout of 1 s;
    - `deep`: 100,000 `[`;
    - `huge`: CONFIG padded to 2 MiB, valid JSON.

    Returns the `ws://` URL it stands for (`fetch_ice_config` derives `/ice-servers` from it). At the end every
    connection is cut, so that a fetch still reading (the old code, on a trickle) ends too.
    """
    writers: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Task[Any]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            target = request.split(b" ", 2)[1].decode()
            how = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("id", ["normal"])[0]
            body = json.dumps(CONFIG).encode()
            if how == "trickle":
                body += b" " * 100
            elif how == "deep":
                body = DEEP.encode()
            elif how == "huge":
                body = json.dumps({**CONFIG, "padding": "x" * (2 << 20)}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            writer.write(f"{head}Connection: close\r\n\r\n".encode())
            if how == "trickle":
                for byte in body:
                    if writer.is_closing():  # the client hung up, or the test is over
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.25)
            else:
                writer.write(body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up (as it should on a trickle, or past 1 MiB)
        finally:
            writers.discard(writer)
            writer.close()
            handlers.discard(asyncio.current_task())

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
    for writer in list(writers):
        writer.transport.abort()
    await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), TIMEOUT)
    server.close()
    await server.wait_closed()


async def test_a_normal_ice_answer_gives_its_servers(ice_server: str) -> None:
    """The hostile server's good answer is read as a real server's: what the tests below get empty is not a server
    that the client cannot read at all."""
    async with asyncio.timeout(TIMEOUT):
        config = await fetch_ice_config(ice_server, "normal", http_timeout=1.0)
    assert config == IceConfig(CONFIG["iceServers"], "relay", 60.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["trickle", "deep", "huge"])
async def test_a_hostile_ice_answer_gives_no_servers_in_bounded_time(
    ice_server: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A call fetches its ICE servers before it rings; an answer that trickles a byte at a time (each within the
    per-read timeout), is nested 100,000 deep, or is larger than 1 MiB makes `fetch_ice_config` give up within
    about `http_timeout`, and return an empty configuration (the call goes on with host candidates), as its
    docstring promises: not hang the call for as long as the server likes, raise RecursionError, or read any
    amount into memory."""
    async with asyncio.timeout(TIMEOUT):
        config = await fetch_ice_config(ice_server, "normal", http_timeout=1.0)
    assert config.ice_servers, "the same server's good answer gives its servers"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="peercall.client"):
        async with asyncio.timeout(4.0):
            config = await fetch_ice_config(ice_server, how, http_timeout=1.0)
    assert config == IceConfig()
    assert time.monotonic() - started < 3.0
    assert "could not fetch the ICE servers" in caplog.text
