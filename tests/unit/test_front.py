"""The front protocol (server/front.py) with a fake socket: what it does with a first request head that is not
`/ws`, too large, or refused by the gate. (The `/ws` path is covered end to end by tests/integration.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from uvicorn.middleware.proxy_headers import _TrustedHosts

from peercall.server.front import FrontProtocol, Heads
from peercall.server.gate import HEAD_LIMIT, Gate
from peercall.server.session import LogBudget


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.protocol: Any = None

    def get_extra_info(self, name: str) -> Any:
        return ("10.0.0.1", 5000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class FakeHttp:
    """Stands for the node's `PeercallHttpProtocol`: records what it is handed."""

    def __init__(self, *args: Any) -> None:
        self.args, self.data = args, b""
        self.entered: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data


def front(gate: Gate, heads: Heads | None = None) -> tuple[FrontProtocol, FakeTransport, SimpleNamespace]:
    heads = heads if heads is not None else Heads(gate.head_timeout)
    shared = {"__slots__": (), "picows": None, "gate": gate, "heads": heads, "http": FakeHttp}
    cls: Any = type("Front", (FrontProtocol,), shared)
    state = SimpleNamespace(connections=set())
    protocol = cls(None, state, {})
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport, state


def gate(per_address: int = 10, head_timeout: float = 10.0) -> Gate:
    return Gate(per_address, 100.0, head_timeout, _TrustedHosts(""), LogBudget())


async def test_a_request_that_is_not_ws_goes_to_uvicorns_protocol_with_every_byte_and_the_gate_count() -> None:
    g = gate()
    protocol, transport, state = front(g)
    assert g.open["10.0.0.1"] == 1 and protocol in state.connections
    protocol.data_received(b"GET /health HTTP/1.1\r\nHo")
    assert transport.protocol is None  # the head is not whole yet
    protocol.data_received(b"st: x\r\n\r\n")
    http = transport.protocol
    assert isinstance(http, FakeHttp) and http.transport is transport
    assert http.data == b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    assert http.entered == "10.0.0.1" and g.open["10.0.0.1"] == 1  # counted once, by the front
    assert protocol not in state.connections
    protocol.connection_lost(None)  # uvloop may still tell the old protocol: nothing is counted twice
    assert g.open["10.0.0.1"] == 1


async def test_an_upgrade_to_another_path_and_a_malformed_request_go_to_uvicorn_too() -> None:
    for head in (
        b"GET /other HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ):
        protocol, transport, _ = front(gate())
        protocol.data_received(head)
        assert isinstance(transport.protocol, FakeHttp) and transport.protocol.data == head


async def test_a_head_over_the_limit_gets_431_and_leaves_the_gate() -> None:
    g = gate()
    protocol, transport, _ = front(g)
    protocol.data_received(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT)
    assert transport.written.startswith(b"HTTP/1.1 431") and transport.closed and transport.protocol is None
    protocol.connection_lost(None)
    assert "10.0.0.1" not in g.open


async def test_a_refused_connection_gets_the_gates_answer_and_a_silent_one_408() -> None:
    protocol, transport, _ = front(gate(per_address=0))
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    assert transport.written.startswith(b"HTTP/1.1 429") and transport.closed
    protocol, transport, _ = front(gate())
    protocol._timed_out()
    assert transport.written.startswith(b"HTTP/1.1 408") and transport.closed
    protocol.connection_lost(None)
    await asyncio.sleep(0)


async def until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `done()` (polled every 5 ms), at most `timeout` seconds."""
    for _ in range(round(timeout / 0.005)):
        if done():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not done within {timeout} s")


async def test_the_sockets_still_without_a_head_are_timed_out_in_turn_by_one_timer() -> None:
    # Wide margins (deadlines 0.3 s apart, polled): a loaded machine may wake the loop late.
    g = gate(head_timeout=0.5)
    heads = Heads(g.head_timeout)
    first, first_transport, _ = front(g, heads)
    await asyncio.sleep(0.3)
    answered, answered_transport, _ = front(g, heads)
    second, second_transport, _ = front(g, heads)
    assert len(heads) == 3
    answered.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # its head came: no longer timed
    assert len(heads) == 2
    await until(lambda: first_transport.closed)  # the first is due (0.5 s), the second not yet (0.8 s)
    assert first_transport.written.startswith(b"HTTP/1.1 408")
    assert not second_transport.closed and len(heads) == 1
    await until(lambda: second_transport.closed)
    assert second_transport.written.startswith(b"HTTP/1.1 408")
    assert not answered_transport.closed and len(heads) == 0
    for protocol in (first, second):
        protocol.connection_lost(None)
    assert "10.0.0.1" in g.open and g.open["10.0.0.1"] == 1  # the one handed over stays counted
