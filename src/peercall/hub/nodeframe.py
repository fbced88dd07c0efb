"""Frames between nodes: how a node hands a frame, or a close, to a connection of another node.

A node frame is `<kind><connection id>\\n<text>`:

- `s` (SEND): send `text` to the connection;
- `e` (SEND_CALL_CHANGED): the same, and the receiving node forgets where the connection's peer is (`text` is one
  of `messages.CALL_CHANGED`: the call changed);
- `c` (CLOSE): close the connection; `text` is `"<close code> <reason>"`.

Several node frames travel in one Pub/Sub message, each as `<length>:<frame>` (`pack`, `unpack`). A presence change
for every node travels as the JSON array `[user, status, in_call, last_seen]` (`encode_presence`).

Pure: strings in, strings out. The hub builds and reads the kinds; the Redis broker carries them.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ..core.switchboard import Presence
from ..protocol.messages import CALL_CHANGED

SEND: Final = "s"
SEND_CALL_CHANGED: Final = "e"
CLOSE: Final = "c"


def kind_of(message_type: str) -> str:
    """The kind of node frame that carries a server frame of `message_type`."""
    return SEND_CALL_CHANGED if message_type in CALL_CHANGED else SEND


def encode(cid: str, kind: str, text: str) -> str:
    return f"{kind}{cid}\n{text}"


def decode(frame: str) -> tuple[str, str, str]:
    """(connection id, kind, text) of one node frame."""
    head, _, text = frame.partition("\n")
    return head[1:], head[0], text


def close_text(code: int, reason: str) -> str:
    return f"{code} {reason}"


def parse_close(text: str) -> tuple[int, str]:
    """(close code, reason) of a CLOSE frame's text."""
    code, _, reason = text.partition(" ")
    return int(code), reason


def pack(frames: list[str]) -> str:
    """Several frames in one Pub/Sub message: each as `<length>:<frame>` (a frame may hold any character)."""
    return "".join(f"{len(p)}:{p}" for p in frames)


def unpack(message: str) -> list[str]:
    out, i = [], 0
    while i < len(message):
        colon = message.index(":", i)
        end = colon + 1 + int(message[i:colon])
        out.append(message[colon + 1 : end])
        i = end
    return out


_presence_decoder = msgspec.json.Decoder(tuple[str, str, bool, float | None])


def encode_presence(change: Presence) -> str:
    return msgspec.json.encode([change.user, change.status, change.in_call, change.last_seen]).decode()


def decode_presence(text: str) -> Presence:
    user, status, in_call, last_seen = _presence_decoder.decode(text)
    return Presence(user, status, in_call, last_seen)
