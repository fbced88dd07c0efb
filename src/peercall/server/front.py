"""The front protocol: what every accepted socket of a node (with `/ws` on picows) speaks until its first request
head has been read.

Why: a connect storm (every client reconnecting after a restart) is mostly `/ws` upgrades, and building uvicorn's
HTTP protocol for each (its parser callbacks, its ASGI scope, two address look-ups, a flow-control object) cost
~12-15% of a connect's CPU before the socket was handed to picows anyway (docs/benchmarks.md, "The WebSocket
stack"). `FrontProtocol` is small (`__slots__`, one httptools parser, one address look-up) and reads the request
head once, in C. What it does with it:
- a WebSocket upgrade that `is_signaling_path` takes for `/ws`: admitted by the session layer and handed to picows
  (`fastws.to_picows`), as `PeercallHttpProtocol` did;
- anything else (HTTP routes, static files, other upgrades, a malformed request): handed, with every byte read so
  far, to the node's `PeercallHttpProtocol` (uvicorn's httptools protocol), which reads it again and serves it
  exactly as it would have from the start; only those requests pay for the head twice.

The gate (server/gate.py) applies here as it does there: the connection's address is counted (and the count is
handed over with the socket), and a head that is too large (HEAD_LIMIT: 431) or too slow (408) is refused here.
Written by hand because no library does this hand-over: uvicorn builds one protocol per socket, and picows's
server takes the whole socket or nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import httptools

from .fastws import PeercallHttpProtocol, PicowsTransport, http_protocol_for, to_picows
from .gate import HEAD_LIMIT, Gate
from .session import Sessions, is_signaling_path

log = logging.getLogger("peercall.http")


class Heads:
    """The sockets of a node whose first request head has not come yet, and when each is given up (the gate's
    `head_timeout`, 408): one timer for them all. A `call_later` per socket cost ~2 µs of each connect (uvloop
    makes a libuv timer for each, and closes it again when the head comes). The timeout is the same for every
    socket, so the order they came in is the order they are due: the timer is set for the first of them."""

    __slots__ = ("_due", "_handle", "_loop", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._due: dict[FrontProtocol, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's, while it is set

    def __len__(self) -> int:
        return len(self._due)

    def add(self, protocol: FrontProtocol) -> None:
        # Python 3.11's get_running_loop() makes a getpid() syscall: asked only when the timer is to be set
        loop = self._loop if self._handle is not None else None
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
            self._handle = loop.call_later(self.timeout, self._expire)
        self._due[protocol] = loop.time() + self.timeout

    def discard(self, protocol: FrontProtocol) -> None:
        self._due.pop(protocol, None)

    def _expire(self) -> None:
        self._handle = None
        due = self._due
        loop = self._loop
        assert loop is not None
        now = loop.time()
        while due:
            protocol, when = next(iter(due.items()))
            if when > now:
                self._handle = loop.call_at(when, self._expire)
                return
            del due[protocol]
            try:
                protocol._timed_out()
            except Exception:  # one broken socket must not keep the others open past their time
                log.exception("could not time out a request head")


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request whose head was refused (the answer is written)."""


class FrontProtocol(asyncio.Protocol):
    """One accepted socket, until its first request head is read (see the module's docstring).

    `picows`, `gate` and `http` (the `PeercallHttpProtocol` class of the node, for everything but `/ws`) are set on
    a subclass made by `protocol_for()`.
    """

    __slots__ = (
        "_address",
        "_args",
        "_complete",
        "_data",
        "_headers",
        "_parser",
        "_peer",
        "_refusal",
        "_url",
        "transport",
    )
    picows: PicowsTransport
    gate: Gate
    heads: Heads
    http: type[PeercallHttpProtocol]

    def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> None:
        self._args = (config, server_state, app_state)  # uvicorn's, for the HTTP protocol of a request that is not /ws
        self._address: str | None = None  # what the gate counts this connection as, while it does
        self._refusal: bytes | None = None  # the gate refused it: the answer to its first bytes
        self._data = b""  # what was read so far (at most HEAD_LIMIT bytes and the last read)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._peer: tuple[str, int] | None = None
        self._parser: httptools.HttpRequestParser | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport
        peer = transport.get_extra_info("peername")  # uvicorn asks getsockname too: nothing here needs it
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
        gate = self.gate
        verdict = gate.enter(self._peer[0] if self._peer else None)
        if isinstance(verdict, bytes):
            self._refusal = verdict
        else:
            self._address = verdict
        self.heads.add(self)
        self._parser = httptools.HttpRequestParser(self)
        self._args[1].connections.add(self)  # uvicorn's shutdown closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self._let_go()
        self._parser = None

    def shutdown(self) -> None:
        """uvicorn's server is shutting down: no request has been read yet, so nothing is cut short."""
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return self._end(self._refusal)
        parser = self._parser
        if parser is None:
            return None
        self._data = self._data + data if self._data else data
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._complete and self._websocket() and is_signaling_path(self._url):
                offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
                return self._upgrade(data[offset:])
            return self._hand_over()
        except _Refused:
            return None
        except httptools.HttpParserError:
            if self.transport is not None and self.transport.is_closing():  # refused in a callback, and answered
                return None
            return self._hand_over()  # which answers 400, as it always did
        if self._complete:
            return self._hand_over()
        if len(self._data) > HEAD_LIMIT:
            return self._refuse(self.gate.too_large, f"a request head over {HEAD_LIMIT} bytes")
        return None

    # httptools's callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # as uvicorn reads them: names in lower case, values without the trailing spaces llhttp keeps
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self._complete = True
        if len(self._data) <= HEAD_LIMIT:  # all that was read is within the limit, so is the head
            return
        # what the head took, to within its spaces, as `PeercallHttpProtocol` counts it
        size = len(self._url) + sum(len(name) + len(value) + 4 for name, value in self._headers) + 16
        if size > HEAD_LIMIT:
            self._refuse(self.gate.too_large, f"a request head of {size} bytes")
            raise _Refused

    def _websocket(self) -> bool:
        """uvicorn's test of an upgrade: `Connection` has the `upgrade` token and `Upgrade` is `websocket`."""
        connection: list[bytes] = []
        upgrade = None
        for name, value in self._headers:
            if name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
            elif name == b"upgrade":
                upgrade = value.lower()
        return upgrade == b"websocket" and b"upgrade" in connection

    def _upgrade(self, tail: bytes) -> None:
        assert self.transport is not None and self._parser is not None
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            return self._hand_over()  # uvicorn's protocol answers it, as it always did
        self._let_go()  # the session layer counts it from now on
        scope = {
            "type": "websocket",
            "method": self._parser.get_method().decode("ascii"),
            "path": "/ws",
            "query_string": url.query or b"",
            "headers": self._headers,
            "client": self._peer,
        }
        self._parser = None
        to_picows(self.picows, self.transport, scope, tail)

    def _hand_over(self) -> None:
        """Not /ws: uvicorn's protocol (the node's `PeercallHttpProtocol`) takes the socket and what it sent."""
        self.heads.discard(self)
        transport, data = self.transport, self._data
        assert transport is not None
        self._args[1].connections.discard(self)
        self._parser, self._data = None, b""
        protocol = self.http(*self._args)
        protocol.entered = self._address  # counted already: the gate is asked once per connection
        self._address = None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(data)

    def _timed_out(self) -> None:
        """No whole request head within the gate's `head_timeout` (`Heads`)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._refusal is not None:
            self._end(self._refusal)
        else:
            self._refuse(self.gate.timed_out, f"no whole request head within {self.gate.head_timeout:g}s")

    def _refuse(self, answer: bytes, why: str) -> None:
        self.gate.refused_head(self._address, self._peer[0] if self._peer else None, why)
        self._end(answer)

    def _end(self, answer: bytes) -> None:
        self._parser = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(answer)
            transport.close()

    def _let_go(self) -> None:
        """This connection leaves the gate's count (it closed, or it is now a WebSocket) and uvicorn's."""
        self.heads.discard(self)
        self._args[1].connections.discard(self)
        if self._address is not None:
            self.gate.leave(self._address)
            self._address = None


def protocol_for(sessions: Sessions, fast_ws: bool = True) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's `http=`: with `/ws` on picows (`fast_ws`), `FrontProtocol` in front of
    `PeercallHttpProtocol`; with per-message deflate, `PeercallHttpProtocol` alone (every upgrade goes to uvicorn's
    WebSocket protocol and the ASGI transport)."""
    http = http_protocol_for(sessions, fast_ws)
    if not fast_ws:
        return http
    assert http.picows is not None and http.gate is not None
    shared = {
        "__slots__": (),
        "picows": http.picows,
        "gate": http.gate,
        "heads": Heads(http.gate.head_timeout),
        "http": http,
    }
    return type("FrontProtocol", (FrontProtocol,), shared)
