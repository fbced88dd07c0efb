"""The `/ws` stack (server/fastws.py: picows inside uvicorn's HTTP protocol): HTTP and WebSocket on one port,
upgrade edge cases answered with a clear HTTP error rather than a hang, which paths are `/ws` (on both transports),
and the framing that picows leaves to us (fragmented messages, close handshake, invalid UTF-8). Raw sockets where a
library client would not misbehave."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import threading

import httpx
import pytest
import websockets

from tests.conftest import TIMEOUT, ServerProcess, run_server

KEY = base64.b64encode(os.urandom(16)).decode()


def head(server: ServerProcess, path: str = "/ws?id=raw", method: str = "GET", **headers: str) -> bytes:
    fields = {
        "Host": f"127.0.0.1:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items() if v)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    first = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 65536:
        size = bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", n)
    return first + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Raw:
    """A WebSocket client on a bare socket, blocking with a timeout (run it in a thread)."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        self.buf = b""

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the socket (a hang fails with a timeout)."""
        while chunk := self.sock.recv(65536):
            self.buf += chunk
        return self.buf

    def response_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before the response head: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bytes]:
        first, second = self._need(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        return first & 0x0F, self._need(n)

    def json(self) -> dict:
        """The next text frame but presence (servers that are not private announce other tests' clients)."""
        while True:
            opcode, payload = self.frame()
            if opcode == 1:
                message = json.loads(payload)
                if message["type"] != "presence":
                    return message
            else:
                assert opcode in (9, 10), (opcode, payload)

    def upgrade(self, request: bytes) -> dict:
        """Send an upgrade request (and whatever follows it); expect the 101 and return the welcome."""
        self.sock.sendall(request)
        assert self.response_head().startswith(b"HTTP/1.1 101")
        return self.json()

    def close_frame(self) -> tuple[int, bytes]:
        """Read up to the server's close frame: its code and reason."""
        while True:
            opcode, payload = self.frame()
            if opcode == 8:
                return struct.unpack("!H", payload[:2])[0], payload[2:]

    def close(self) -> None:
        self.sock.close()


async def reply(ws: websockets.ClientConnection) -> dict:
    """The next frame but presence (servers that are not private announce other tests' clients)."""
    while (message := json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))["type"] == "presence":
        pass
    return message


def refused(server: ServerProcess, request: bytes) -> tuple[str, bytes]:
    """Send a request; the status line and body of the answer, which must end with the server closing."""
    raw = Raw(server)
    try:
        raw.sock.sendall(request)
        answer = raw.read_until_closed()
    finally:
        raw.close()
    status, _, rest = answer.partition(b"\r\n")
    return status.decode(), rest.partition(b"\r\n\r\n")[2]


async def test_http_and_websocket_share_one_port(server: ServerProcess) -> None:
    async with httpx.AsyncClient() as http, websockets.connect(f"{server.ws}?id=oneport") as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        assert (await http.get(f"{server.http}/healthz")).json()["status"] == "ok"
        assert (await http.get(f"{server.http}/")).status_code == 200
        await ws.send('{"type":"hangup","to":"nobody"}')
        assert (await reply(ws))["code"] == "not-in-call"


@pytest.mark.parametrize(
    ("why", "change", "status"),
    [
        ("no key", {"Sec-WebSocket-Key": ""}, "400"),
        ("a bad key", {"Sec-WebSocket-Key": "short"}, "400"),
        ("an old version", {"Sec-WebSocket-Version": "8"}, "426"),
        ("no version", {"Sec-WebSocket-Version": ""}, "426"),
        ("a foreign origin", {"Origin": "http://elsewhere.example"}, "403"),
        ("a bad id", {"path": "/ws?id=no%20spaces"}, "400"),
        ("no id", {"path": "/ws"}, "400"),
        ("POST", {"method": "POST"}, "400"),
        ("another path", {"path": "/other"}, "403"),
    ],
)
async def test_a_bad_upgrade_gets_an_http_error_and_the_socket_is_closed(
    server: ServerProcess, why: str, change: dict[str, str], status: str
) -> None:
    path = change.pop("path", "/ws?id=badupgrade")
    method = change.pop("method", "GET")
    line, body = await asyncio.to_thread(refused, server, head(server, path, method, **change))
    assert line.split(" ")[1] == status, (why, line, body)
    if status in ("403", "426") and path.startswith("/ws"):
        assert json.loads(body)["error"]["code"] in ("bad-origin", "bad-version")


@pytest.mark.parametrize("path", ["/%77s", "/%77%73", "//ws", "/ws/", "/./ws", "/x/../ws", "/%2Fws", "/ws?"])
async def test_a_path_that_normalises_to_ws_reaches_ws(ws_server: ServerProcess, path: str) -> None:
    """Percent-decoded and normalised (docs/protocol.md), these paths are `/ws`: the same session rules serve them."""

    def talk() -> dict:
        raw = Raw(ws_server)
        try:
            query = ("&" if "?" in path else "?") + "id=normalised"
            return raw.upgrade(head(ws_server, path + query))
        finally:
            raw.close()

    assert (await asyncio.to_thread(talk))["type"] == "welcome"
    line, body = await asyncio.to_thread(refused, ws_server, head(ws_server, path, Origin="http://elsewhere.example"))
    assert line.split(" ")[1] == "403" and json.loads(body)["error"]["code"] == "bad-origin"


@pytest.mark.parametrize("path", ["/%2577s", "/wss", "/ws/x", "/Ws", "/w", "/ws%00", "/api/calls"])
async def test_nothing_but_ws_is_upgraded(ws_server: ServerProcess, path: str) -> None:
    """Any other path (one encoded twice, a longer one, another case) is refused before the upgrade."""
    line, _ = await asyncio.to_thread(refused, ws_server, head(ws_server, f"{path}?id=elsewhere"))
    assert line.split(" ")[1] == "403", (path, line)


async def test_an_encoded_path_is_served_by_the_same_transport_as_ws(server: ServerProcess) -> None:
    """With deflate off, `/%77s` and `//ws` get picows's 101 like `/ws` (not uvicorn's WebSocket stack's)."""

    def names_in_101(path: str) -> list[bytes]:
        raw = Raw(server)
        try:
            raw.sock.sendall(head(server, f"{path}?id=whichstack"))
            lines = raw.response_head().split(b"\r\n")
        finally:
            raw.close()
        assert lines[0].startswith(b"HTTP/1.1 101"), lines
        return sorted(line.split(b":")[0] for line in lines[1:])

    expected = await asyncio.to_thread(names_in_101, "/ws")
    for path in ("/%77s", "//ws", "/ws/"):
        assert await asyncio.to_thread(names_in_101, path) == expected, path


async def test_upgrade_with_keep_alive_in_the_connection_header(server: ServerProcess) -> None:
    """Firefox sends `Connection: keep-alive, Upgrade`."""

    def talk() -> dict:
        raw = Raw(server)
        try:
            return raw.upgrade(head(server, "/ws?id=firefoxish", Connection="keep-alive, Upgrade"))
        finally:
            raw.close()

    assert (await asyncio.to_thread(talk))["type"] == "welcome"


async def test_frames_sent_with_the_request_head_are_not_lost(server: ServerProcess) -> None:
    """A client may send frames before it has seen the 101: they arrive in the same read as the request."""

    def talk() -> list[dict]:
        raw = Raw(server)
        try:
            frames = b"".join(client_frame(1, b'{"type":"hangup","to":"n%d"}' % i) for i in range(3))
            return [raw.upgrade(head(server, "/ws?id=eager") + frames)] + [raw.json() for _ in range(3)]
        finally:
            raw.close()

    got = await asyncio.to_thread(talk)
    assert got[0]["type"] == "welcome"
    assert [(m["code"], m["to"]) for m in got[1:]] == [("not-in-call", f"n{i}") for i in range(3)]


async def test_a_fragmented_message_is_put_together(server: ServerProcess) -> None:
    async with websockets.connect(f"{server.ws}?id=fragments") as ws:
        await ws.recv()
        await ws.send(iter(['{"type":"hang', 'up","to":"some', 'one"}']))
        answer = await reply(ws)
        assert (answer["code"], answer["to"]) == ("not-in-call", "someone")


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([client_frame(1, b'{"type":"\xff"}')], 1007),
        ([client_frame(0, b"{}")], 1002),
        ([client_frame(1, b"{", fin=False), client_frame(1, b"}")], 1002),
    ],
    ids=["invalid-utf8", "continuation-without-start", "new-message-inside-fragments"],
)
async def test_broken_framing_closes_that_connection(server: ServerProcess, frames: list[bytes], code: int) -> None:
    def talk() -> tuple[int, bytes]:
        raw = Raw(server)
        try:
            raw.upgrade(head(server, "/ws?id=brokenframes"))
            raw.sock.sendall(b"".join(frames))
            return raw.close_frame()
        finally:
            raw.close()

    got, _reason = await asyncio.to_thread(talk)
    assert got == code
    async with websockets.connect(f"{server.ws}?id=stillfine") as ws:  # and the server goes on
        assert json.loads(await ws.recv())["type"] == "welcome"


async def test_the_close_handshake_is_answered(server: ServerProcess) -> None:
    def talk() -> tuple[int, bytes]:
        raw = Raw(server)
        try:
            raw.upgrade(head(server, "/ws?id=closer"))
            raw.sock.sendall(client_frame(8, struct.pack("!H", 4000) + b"bye"))
            closing = raw.close_frame()
            assert raw.read_until_closed() == b""  # and then the server closes the socket
            return closing
        finally:
            raw.close()

    code, _reason = await asyncio.to_thread(talk)
    assert code == 4000


async def test_per_message_deflate_is_served_by_uvicorns_websocket_stack() -> None:
    """picows has no compression: with PEERCALL_WS_PER_MESSAGE_DEFLATE the ASGI endpoint serves /ws."""
    with run_server(PEERCALL_WS_PER_MESSAGE_DEFLATE="true") as srv:
        async with websockets.connect(f"{srv.ws}?id=zipa") as a, websockets.connect(f"{srv.ws}?id=zipb") as b:
            assert [type(e).__name__ for e in a.protocol.extensions] == ["PerMessageDeflate"]
            for ws in (a, b):
                assert json.loads(await ws.recv())["type"] == "welcome"
            await a.send('{"type":"call-request","to":"zipb"}')
            while (msg := json.loads(await asyncio.wait_for(b.recv(), TIMEOUT)))["type"] != "call-request":
                pass
            assert msg["from"] == "zipa"
            await b.send('{"type":"call-accept","to":"zipa"}')
            while (msg := json.loads(await asyncio.wait_for(a.recv(), TIMEOUT)))["type"] != "call-accept":
                pass
            for n in range(20):  # relayed on the hub's hot path, queued for this stack's writer: all, in order
                await a.send(json.dumps({"type": "candidate", "to": "zipb", "data": {"candidate": f"candidate:{n}"}}))
            got = [await reply(b) for _ in range(20)]
            assert [(m["type"], m["from"], m["data"]["candidate"]) for m in got] == [
                ("candidate", "zipa", f"candidate:{n}") for n in range(20)
            ]
        line, _ = await asyncio.to_thread(refused, srv, head(srv, "/ws?id=x", Origin="http://elsewhere.example"))
        assert line.split(" ")[1] == "403"


async def test_a_reader_that_lags_gets_every_frame_in_order_once_it_reads_again() -> None:
    """Frames for a connection whose socket is full wait in its backlog (seen in /metrics) and then arrive, all of
    them and in order, after the ones written before the pause."""
    # The kernel buffers up to ~4 MB of a socket's output (tcp_wmem): send more than that, within the send buffer.
    with run_server(PEERCALL_RATE_LIMIT="100000", PEERCALL_RATE_BURST="100000", PEERCALL_SEND_BUFFER="67108864") as srv:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few frames
        slow.connect(("127.0.0.1", srv.port))
        async with (
            websockets.connect(f"{srv.ws}?id=lagsend") as a,
            websockets.connect(f"{srv.ws}?id=lagread", sock=slow, max_queue=None) as b,
        ):
            for ws in (a, b):
                assert json.loads(await ws.recv())["type"] == "welcome"
            await a.send('{"type":"call-request","to":"lagread"}')
            while json.loads(await asyncio.wait_for(b.recv(), TIMEOUT))["type"] != "call-request":
                pass
            await b.send('{"type":"call-accept","to":"lagsend"}')
            while json.loads(await asyncio.wait_for(a.recv(), TIMEOUT))["type"] != "call-accept":
                pass
            b.transport.pause_reading()  # b reads nothing for now: its socket fills, then the server's buffer
            pad, count = "x" * 12000, 600  # 7 MB
            frames = [
                json.dumps({"type": "candidate", "to": "lagread", "data": {"candidate": f"candidate:{n} {pad}"}})
                for n in range(count)
            ]
            for frame in frames:
                await a.send(frame)
            async with httpx.AsyncClient() as http:
                for _ in range(100):
                    metrics = (await http.get(f"{srv.http}/metrics")).text
                    line = next(x for x in metrics.splitlines() if x.startswith("peercall_send_backlog_bytes "))
                    if float(line.split()[1]) > 0:
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("the server never held frames back for the reader that lags")
            b.transport.resume_reading()
            got = [await reply(b) for _ in range(count)]
            assert [int(m["data"]["candidate"].split()[0][10:]) for m in got] == list(range(count))


async def test_a_hangup_and_a_close_in_one_read_still_get_call_ended_before_the_close(server: ServerProcess) -> None:
    """A client that hangs up and closes at once (one TCP segment) is told the call ended, then the close."""
    async with websockets.connect(f"{server.ws}?id=hangcaller") as caller:
        assert json.loads(await caller.recv())["type"] == "welcome"

        def talk() -> list[tuple[int, bytes]]:
            raw = Raw(server)
            try:
                assert raw.upgrade(head(server, "/ws?id=hangcallee"))["type"] == "welcome"
                ready.set()
                while raw.json()["type"] != "call-request":
                    pass
                raw.sock.sendall(client_frame(1, b'{"type":"call-accept","to":"hangcaller"}'))
                hangup = client_frame(1, b'{"type":"hangup","to":"hangcaller"}')
                raw.sock.sendall(hangup + client_frame(8, struct.pack("!H", 1000)))
                got = []
                while True:
                    opcode, payload = raw.frame()
                    got.append((opcode, payload))
                    if opcode == 8:
                        return got
            finally:
                raw.close()

        ready = threading.Event()
        talking = asyncio.ensure_future(asyncio.to_thread(talk))
        await asyncio.to_thread(ready.wait, TIMEOUT)
        await caller.send('{"type":"call-request","to":"hangcallee"}')
        got = await asyncio.wait_for(talking, TIMEOUT)
    texts = [t for opcode, payload in got if opcode == 1 and (t := json.loads(payload)["type"]) != "presence"]
    assert texts[-1] == "call-ended" and got[-1][0] == 8, got


def not_utf8(data: bytes) -> bool:
    """Whether `data` is not valid UTF-8 (a text message's or a close reason's)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False
