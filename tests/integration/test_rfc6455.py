"""RFC 6455 on `/ws`, frame by frame, on raw sockets (what the Autobahn|Testsuite protocol cases 2-7 check): reserved
bits (5.2), fragmentation (5.4), control frames (5.5), close codes and reasons (5.5.1, 7.4). Both transports: picows
(server/fastws.py) and the ASGI WebSocket (server/ws.py, where the `websockets` library's parser does the framing)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zlib
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess, run_server
from tests.integration.conftest import TRANSPORTS
from tests.integration.test_ws_stack import Raw, client_frame, head, not_utf8

TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
HANGUP = b'{"type":"hangup","to":"nobody"}'


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A client frame with any bits set: `rsv` is 0x40 (RSV1), 0x20 (RSV2), 0x10 (RSV3) or a sum of them."""
    raw = client_frame(opcode, payload, fin)
    raw = bytes([raw[0] | rsv]) + raw[1:]
    if masked:
        return raw
    n = len(payload)
    size = bytes([n]) if n < 126 else bytes([126]) + struct.pack("!H", n)
    return bytes([raw[0]]) + size + payload


def close(code: int | None = None, reason: bytes = b"") -> bytes:
    return frame(CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


def talk(
    server: ServerProcess, data: bytes, name: str = "rfc", extensions: str = "", count: int = 0
) -> list[tuple[int, bytes]]:
    """Upgrade, send `data` in one write, and return every frame the server sends until it closes the socket, or
    the first `count` (its `welcome` and presence frames left out). A server that hangs fails with a timeout."""
    raw = Raw(server)
    try:
        headers = {"Sec-WebSocket-Extensions": extensions} if extensions else {}
        raw.sock.sendall(head(server, f"/ws?id={name}{os.getpid()}", **headers))
        assert raw.response_head().startswith(b"HTTP/1.1 101")
        raw.frame()  # the welcome
        raw.sock.sendall(data)
        frames: list[tuple[int, bytes]] = []
        while not count or len(frames) < count:
            try:
                got = raw.frame()
                if not (got[0] == TEXT and b'"presence"' in got[1]):
                    frames.append(got)
                if got[0] == CLOSE:  # answer it, as a client does, so that the server closes the socket at once
                    with contextlib.suppress(OSError):
                        raw.sock.sendall(close(1000))
            except (AssertionError, ConnectionResetError):  # AssertionError: "closed"
                break
        return frames
    finally:
        raw.close()


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    """The code of the server's close frame (1005 for an empty one), or None if it sent none."""
    for opcode, payload in frames:
        if opcode == CLOSE:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


async def failed_with(server: ServerProcess, data: bytes, code: int = 1002) -> list[tuple[int, bytes]]:
    """Send `data`; assert the connection is failed with `code`, and that nothing it sent was answered."""
    frames = await asyncio.to_thread(talk, server, data)
    assert close_code(frames) == code, frames
    assert [opcode for opcode, _ in frames] == [CLOSE], frames  # no error reply, no pong: the frame was not processed
    return frames


# ---------------------------------------------------------------------------------------------- 5.2 reserved bits


@pytest.mark.parametrize("rsv", [0x20, 0x10, 0x30, 0x70], ids=["rsv2", "rsv3", "rsv2+3", "rsv1+2+3"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE], ids=["text", "binary", "ping", "pong", "close"])
async def test_a_frame_with_reserved_bits_fails_the_connection(ws_server: ServerProcess, opcode: int, rsv: int) -> None:
    """RSV2 and RSV3 are never negotiated: any frame that sets one (a control frame too) gets 1002, unprocessed
    (Autobahn 3.1-3.7)."""
    payload = struct.pack("!H", 1000) if opcode == CLOSE else HANGUP if opcode == TEXT else b"x"
    await failed_with(ws_server, frame(opcode, payload, rsv=rsv))


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE], ids=["text", "binary", "ping", "pong", "close"])
async def test_rsv1_without_an_extension_fails_the_connection(ws_server: ServerProcess, opcode: int) -> None:
    """RSV1 means a compressed message; without per-message deflate negotiated it is a protocol error."""
    payload = struct.pack("!H", 1000) if opcode == CLOSE else HANGUP if opcode == TEXT else b"x"
    await failed_with(ws_server, frame(opcode, payload, rsv=0x40))


async def test_rsv_bits_on_a_continuation_fail_the_connection(ws_server: ServerProcess) -> None:
    """A continuation frame with RSV1 (or RSV2/RSV3) gets 1002: RSV1 may only mark a message's first frame."""
    for rsv in (0x40, 0x20, 0x10):
        await failed_with(ws_server, frame(TEXT, HANGUP[:5], fin=False) + frame(CONT, HANGUP[5:], rsv=rsv))


def _deflate(payload: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def talk_deflate(server: ServerProcess, data: bytes, name: str, count: int = 0) -> list[tuple[int, bytes]]:
    return talk(server, data, name, "permessage-deflate; client_max_window_bits", count)


@pytest.fixture(scope="module")
def private_deflate_server() -> Iterator[ServerProcess]:
    """Per-message deflate on, in private mode: no presence frames, which `talk` could not tell from others once
    compressed (the shared `deflate_server` announces the clients of other tests, and of the test before)."""
    with run_server(**TRANSPORTS["deflate"], PEERCALL_PRIVATE="true") as srv:
        yield srv


async def test_with_deflate_rsv1_marks_a_compressed_message_and_nothing_else(
    private_deflate_server: ServerProcess,
) -> None:
    """With per-message deflate negotiated (the ASGI transport), RSV1 on a message's first frame is a compressed
    message and is routed; on a continuation or a control frame it gets 1002."""
    body = _deflate(HANGUP)
    frames = await asyncio.to_thread(talk_deflate, private_deflate_server, frame(TEXT, body, rsv=0x40), "zip1", 1)
    assert frames[0][0] == TEXT, frames  # the (compressed) answer to a routed frame
    split = frame(TEXT, body[:3], fin=False, rsv=0x40) + frame(CONT, body[3:], rsv=0x40)
    frames = await asyncio.to_thread(talk_deflate, private_deflate_server, split, "zip2")
    assert close_code(frames) == 1002 and TEXT not in [op for op, _ in frames], frames
    frames = await asyncio.to_thread(talk_deflate, private_deflate_server, frame(PING, b"x", rsv=0x40), "zip3")
    assert close_code(frames) == 1002 and PONG not in [op for op, _ in frames], frames


async def test_with_deflate_utf8_is_checked_on_the_decompressed_message(private_deflate_server: ServerProcess) -> None:
    """A compressed text message's UTF-8 is its decompressed payload's, checked as its frame is parsed: one that is
    not fails the connection with 1007 though a broken frame follows in the same write, whole or fragmented; one
    that is (the compressed bytes are not UTF-8) is routed."""
    bad = _deflate('{"type":"é'.encode() + b'\xff"}')
    for name, data in (
        ("zip4", frame(TEXT, bad, rsv=0x40) + frame(5, b"x")),
        ("zip5", frame(TEXT, bad[:4], fin=False, rsv=0x40) + frame(CONT, bad[4:]) + frame(PING, b"x" * 126)),
    ):
        frames = await asyncio.to_thread(talk_deflate, private_deflate_server, data, name)
        assert close_code(frames) == 1007 and [op for op, _ in frames] == [CLOSE], frames
    good = _deflate(b'{"type":"hangup","to":"\xc3\xa9"}')
    assert not_utf8(good)
    frames = await asyncio.to_thread(talk_deflate, private_deflate_server, frame(TEXT, good, rsv=0x40), "zip6", 1)
    assert frames[0][0] == TEXT, frames


# ---------------------------------------------------------------------------------------------- 5.2 opcodes, masks


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
async def test_a_reserved_opcode_fails_the_connection(ws_server: ServerProcess, opcode: int) -> None:
    """Opcodes 3-7 and 11-15 are reserved (Autobahn 4.1-4.2)."""
    await failed_with(ws_server, frame(opcode, b"x"))


async def test_an_unmasked_client_frame_fails_the_connection(ws_server: ServerProcess) -> None:
    """Clients must mask every frame (RFC 6455 5.1)."""
    await failed_with(ws_server, frame(TEXT, HANGUP, masked=False))


async def test_a_64_bit_length_with_its_top_bit_set_fails_the_connection(ws_server: ServerProcess) -> None:
    """The most significant bit of a 64-bit length must be 0 (5.2): the connection is failed at once."""
    data = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + os.urandom(4) + b"x" * 10
    frames = await asyncio.to_thread(talk, ws_server, data)
    assert close_code(frames) in (1002, 1009), frames


# ---------------------------------------------------------------------------------------------- 5.4 fragments


async def test_a_ping_inside_a_fragmented_message_is_answered_and_the_message_routed(ws_server: ServerProcess) -> None:
    """Control frames may come between the fragments of a message (5.4; Autobahn 5.6-5.9)."""
    data = frame(TEXT, HANGUP[:7], fin=False) + frame(PING, b"mid") + frame(CONT, HANGUP[7:])
    frames = await asyncio.to_thread(talk, ws_server, data, "rfc", "", 2)
    assert (PONG, b"mid") in frames and any(op == TEXT and b"not-in-call" in p for op, p in frames), frames


@pytest.mark.parametrize(
    "data",
    [
        frame(CONT, b"x"),
        frame(TEXT, b"{", fin=False) + frame(TEXT, b"}"),
        frame(TEXT, b"{", fin=False) + frame(BINARY, b"}"),
    ],
    ids=["continuation-without-start", "text-inside-fragments", "binary-inside-fragments"],
)
async def test_broken_fragmentation_fails_the_connection(ws_server: ServerProcess, data: bytes) -> None:
    """A continuation with no message to continue, or a new message before the last one ended (Autobahn 5.x)."""
    await failed_with(ws_server, data)


@pytest.mark.parametrize(
    "data",
    [
        frame(TEXT, b'{"type":"\xff"}'),
        frame(TEXT, b'{"type":"\xce', fin=False) + frame(CONT, b'\xff"}'),
        frame(TEXT, b'{"type":"\xff"}') + frame(5, b"x"),
        frame(TEXT, b'{"type":"\xce', fin=False) + frame(PING, b"p") + frame(CONT, b'\xff"}') + close(999),
    ],
    ids=["whole", "fragmented", "whole-then-reserved-opcode", "fragmented-then-bad-close-code"],
)
async def test_invalid_utf8_in_a_text_message_closes_with_1007(ws_server: ServerProcess, data: bytes) -> None:
    """Autobahn 6.x. Though a frame after it in the same write is refused by the frame parser (1002): the connection
    fails on its first error (on the ASGI transport, websockets parses the whole read before uvicorn's events)."""
    frames = await asyncio.to_thread(talk, ws_server, data)
    assert close_code(frames) == 1007, frames
    assert [opcode for opcode, _ in frames if opcode != PONG] == [CLOSE], frames  # a ping before it may be answered


# ---------------------------------------------------------------------------------------------- 5.5 control frames


@pytest.mark.parametrize("size", [0, 1, 125])
async def test_a_ping_gets_a_pong_with_its_payload(ws_server: ServerProcess, size: int) -> None:
    """5.5.2, 5.5.3 (Autobahn 2.1-2.3)."""
    payload = os.urandom(size)
    frames = await asyncio.to_thread(talk, ws_server, frame(PING, payload) + close(1000))
    assert frames[0] == (PONG, payload) and close_code(frames) == 1000, frames


async def test_an_unsolicited_pong_is_ignored(ws_server: ServerProcess) -> None:
    """A pong nobody asked for gets no answer and harms nothing (5.5.3; Autobahn 2.7)."""
    frames = await asyncio.to_thread(talk, ws_server, frame(PONG, b"unasked") + frame(TEXT, HANGUP), "rfc", "", 1)
    assert frames[0][0] == TEXT and b"not-in-call" in frames[0][1], frames


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
async def test_a_control_frame_over_125_bytes_fails_the_connection(ws_server: ServerProcess, opcode: int) -> None:
    """5.5 (Autobahn 2.5)."""
    payload = struct.pack("!H", 1000) + b"x" * 124 if opcode == CLOSE else b"x" * 126
    await failed_with(ws_server, frame(opcode, payload))


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
async def test_a_fragmented_control_frame_fails_the_connection(ws_server: ServerProcess, opcode: int) -> None:
    """5.5: control frames must not be fragmented (Autobahn 5.1-5.2)."""
    payload = struct.pack("!H", 1000) if opcode == CLOSE else b"x"
    await failed_with(ws_server, frame(opcode, payload, fin=False) + frame(CONT, b"y"))


# ---------------------------------------------------------------------------------------------- 7.4 close codes

VALID = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID)
async def test_a_valid_close_code_is_echoed(ws_server: ServerProcess, code: int) -> None:
    """7.4.1 and 7.4.2: a defined code, or one of 3000-4999 (Autobahn 7.7)."""
    frames = await asyncio.to_thread(talk, ws_server, close(code, b"bye"))
    assert close_code(frames) == code, frames


@pytest.mark.parametrize("code", INVALID)
async def test_an_invalid_close_code_gets_1002(ws_server: ServerProcess, code: int) -> None:
    """0-999, the codes an endpoint may never send (1004-1006, 1015), unassigned ones (1016-2999) and 5000+ fail the
    connection with 1002; 1006 is never sent (Autobahn 7.9)."""
    await failed_with(ws_server, close(code))


async def test_a_close_without_a_code_is_answered_without_one_or_with_1000(ws_server: ServerProcess) -> None:
    """An empty close frame (Autobahn 7.3.1)."""
    frames = await asyncio.to_thread(talk, ws_server, close())
    assert close_code(frames) in (1000, 1005), frames


async def test_a_close_with_a_one_byte_payload_gets_1002(ws_server: ServerProcess) -> None:
    """A close payload is empty or starts with a two-byte code (5.5.1; Autobahn 7.3.2)."""
    await failed_with(ws_server, frame(CLOSE, b"\x03"))


async def test_a_close_reason_of_123_bytes_is_echoed(ws_server: ServerProcess) -> None:
    """The longest reason that fits a control frame (Autobahn 7.3.4)."""
    frames = await asyncio.to_thread(talk, ws_server, close(1000, b"r" * 123))
    assert close_code(frames) == 1000, frames


async def test_a_close_reason_that_is_not_utf8_gets_1007(ws_server: ServerProcess) -> None:
    """Autobahn 7.5.1."""
    await failed_with(ws_server, close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), 1007)


async def test_a_second_close_frame_is_ignored(ws_server: ServerProcess) -> None:
    """The first close is echoed; what follows it (a second close, a ping, a text frame) is ignored (Autobahn
    7.1.2-7.1.4)."""
    for tail in (close(1000), frame(PING, b"late"), frame(TEXT, HANGUP), close(1006)):
        frames = await asyncio.to_thread(talk, ws_server, close(1000) + tail)
        assert frames == [(CLOSE, struct.pack("!H", 1000))], frames


async def test_a_close_mid_message_is_echoed(ws_server: ServerProcess) -> None:
    """A close frame between the fragments of a message closes the connection cleanly (Autobahn 7.1.5)."""
    frames = await asyncio.to_thread(talk, ws_server, frame(TEXT, b"{", fin=False) + close(1000) + frame(CONT, b"}"))
    assert close_code(frames) in (1000, 1002), frames  # picows echoes 1000; websockets fails the incomplete message


async def test_the_server_goes_on_after_each_of_these(ws_server: ServerProcess) -> None:
    """After every broken frame above, the server still serves new connections."""

    def fine() -> dict:
        raw = Raw(ws_server)
        try:
            return raw.upgrade(head(ws_server, "/ws?id=stillfine"))
        finally:
            raw.close()

    assert (await asyncio.to_thread(fine))["type"] == "welcome"
