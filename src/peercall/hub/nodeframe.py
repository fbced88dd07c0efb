"""Frames between nodes: how a node hands a frame, or a close, to a connection of another node.

A node frame is `<kind><connection id>\\n<text>`:

- `s` (SEND): send `text` to the connection;
- `r` (RELAY): the same, for a frame that the connection's call party sent (an offer, answer, candidate or
  media-state): dropped if the connection lags (`Hub.relay_buffer`; the sender is told of a dropped offer or answer,
  with a SEND to the connection the reader's route names). A node of the previous version sends such
  frames as SEND, and delivers a RELAY as one (it sends what is not a CLOSE);
- `e` (SEND_CALL_CHANGED): the same, and the receiving node forgets where the connection's peer is (`text` is one
  of `messages.CALL_CHANGED`: the call changed);
- `c` (CLOSE): close the connection; `text` is `"<close code> <reason>"`;
- `v` (STATE), for no connection (its id is empty): what a change of call state made by the sending node left in
  Redis, for the receiving node to apply its next change to without reading it first (broker/redis.py, "What a
  node knows"): the JSON array of `[key, value, version]` of each key that change checked (`encode_state`). It
  goes before the frames of that change, to the node of each connection they are for. A node of the previous
  version finds no connection with an empty id and drops it.
- `o` (OWNER), for no connection: `text` is `"<connection id> <call id> <owner> <caller>"`: the call that rings
  that connection of the receiving node is owned by node `<owner>` (broker/redis.py, "Calls a node owns"), so the
  connection's accept, reject or hangup of it (or its own call to `<caller>`, glare) is asked of that node (ASK)
  rather than made here. Sent ahead of the frame that rings the connection. A node of the previous version drops it
  (no connection has an empty id) and makes those changes itself, as before.
- `x` (ASK), for no connection: `text` is `"<ask id> <connection id> <user>\n<frame>"`: a call frame (its JSON,
  as `protocol.messages.Envelope`) that a connection of the sending node sent, for the receiving node, which owns its
  call, to carry out (and perform its effects); sent only to a node that said it owns the call (OWNER).
- `y` (ASKED), for no connection: `text` is `"<ask id> <outcome>"`, the answer to an ASK, sent after the frames its
  effects sent: `ok`, or `ok <call id> <peer> <peer's connection id>` when it answered the asker's call (the route
  of its peer frames); `redo` or `down` (the owner wrote nothing: it no longer holds that connection, or could not
  reach Redis; the asking node makes the change itself); `err ` and the JSON array `[code, message, ref, to, call
  id]` of the ProtocolError it raised; `doubt` (the change is in doubt: as `SharedStateInDoubt`). An answer that
  does not come within 3 s is not waited for: the asking node makes the change itself, unless it finds it made.
- `a` (EVERYONE), for no connection: `text` is one of the frames for every node below, held for this node by a
  node whose PUBLISH to every node reached fewer nodes than are alive: this one's subscription was down, and it
  gets what it missed once it listens again (broker/redis.py, `_hold_unheard`). A node of the previous version
  drops it (no connection has an empty id).

Several node frames travel in one Pub/Sub message, each as `<length>:<frame>` (`pack`, `unpack`). What goes to
every node is one of:

- a presence change: the JSON array `[user, status, in_call, last_seen, audience, display_name]`
  (`encode_presence`), where `audience` is `[users, hidden]` (`users`: a list, or null for everyone online;
  `hidden`: a list) or null, and `display_name` the user's display name. A change without a display name leaves
  it out, and one without an audience (everyone) and without a display name leaves both out:
  `[user, status, in_call, last_seen]`, the only form a node of the previous version sends or reads;
- a circle change: `C` and the JSON array of the users whose circles changed (`encode_circles`);
- a user to close: `K` and the JSON array `[user, close code, reason]` (`encode_close_user`): every node closes its
  connections of that user (a node of the previous version drops it, with a warning);
- a sign-in to close: `S` and the JSON array `[user, sign-in, close code, reason]` (`encode_close_user` with a
  sign-in): every node closes those of its connections of that user whose latest token came from that sign-in (a
  node of the previous version drops it, with a warning: those connections end at their next token renewal).

`decode_everyone` tells them apart (a presence change starts with `[`).

Pure: strings in, strings out. The hub builds and reads the kinds; the Redis broker carries them.
"""

from __future__ import annotations

from typing import Annotated, Final, NamedTuple

import msgspec

from ..core.social import MAX_BLOCKED, MAX_CONTACTS, Audience
from ..core.switchboard import Presence
from ..protocol.messages import CALL_CHANGED

SEND: Final = "s"
RELAY: Final = "r"
SEND_CALL_CHANGED: Final = "e"
CLOSE: Final = "c"
STATE: Final = "v"
EVERYONE: Final = "a"
OWNER: Final = "o"
ASK: Final = "x"
ASKED: Final = "y"


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


def packed(cid: str, kind: str, text: str) -> str:
    """`pack([encode(cid, kind, text)])` in one step: the piece of a message a sender queues per frame (a Pub/Sub
    message is then these pieces joined)."""
    return f"{len(cid) + len(text) + 2}:{kind}{cid}\n{text}"


def unpack(message: str) -> list[str]:
    out, i = [], 0
    while i < len(message):
        colon = message.index(":", i)
        end = colon + 1 + int(message[i:colon])
        out.append(message[colon + 1 : end])
        i = end
    return out


def unpack_decoded(message: str) -> list[tuple[str, str, str]]:
    """`[decode(f) for f in unpack(message)]` in one pass: the (connection id, kind, text) of each frame."""
    out, i, size = [], 0, len(message)
    while i < size:
        colon = message.index(":", i)
        start = colon + 1
        end = start + int(message[i:colon])
        newline = message.index("\n", start, end)
        out.append((message[start + 1 : newline], message[start], message[newline + 1 : end]))
        i = end
    return out


MAX_AUDIENCE: Final = MAX_CONTACTS
"""Users an audience may name: the contacts of a user (Directory.CONTACTS)."""
MAX_HIDDEN: Final = 2 * MAX_BLOCKED
"""Users an audience may hide: those a user blocked and those who blocked them (Directory.ALL)."""
MAX_CIRCLES: Final = 2 * MAX_CONTACTS
"""Users one circle change may name (a change touches a user and the other one; a batch stays well below)."""
CIRCLES: Final = "C"

_Users = Annotated[list[str], msgspec.Meta(max_length=MAX_AUDIENCE)]
_Hidden = Annotated[list[str], msgspec.Meta(max_length=MAX_HIDDEN)]


class _PresenceFrame(msgspec.Struct, array_like=True, frozen=True):
    """A presence change as it travels; a node of the previous version sends the first four fields only."""

    user: str
    status: str
    in_call: bool
    last_seen: float | None
    audience: tuple[_Users | None, _Hidden] | None = None
    display_name: Annotated[str, msgspec.Meta(max_length=64)] | None = None


_presence_decoder = msgspec.json.Decoder(_PresenceFrame)
_circles_decoder = msgspec.json.Decoder(Annotated[list[str], msgspec.Meta(max_length=MAX_CIRCLES)])


class BadNodeFrame(ValueError):
    """What a node sent every node cannot be read (a node of a newer version, or a bug): the receiver drops it."""


def encode_presence(change: Presence) -> str:
    """A presence change for every node. Raises ValueError if its audience names more users than a circle can
    hold (MAX_AUDIENCE, MAX_HIDDEN)."""
    head: list[object] = [change.user, change.status, change.in_call, change.last_seen]
    audience = change.audience
    if audience is None:
        if change.display_name is not None:
            head += [None, change.display_name]
        return msgspec.json.encode(head).decode()
    users = None if audience.users is None else sorted(audience.users)
    if (users is not None and len(users) > MAX_AUDIENCE) or len(audience.hidden) > MAX_HIDDEN:
        raise ValueError(
            f"the audience of {change.user}'s presence names {len(users or ())} users and hides "
            f"{len(audience.hidden)}: at most {MAX_AUDIENCE} and {MAX_HIDDEN}"
        )
    head.append([users, sorted(audience.hidden)])
    if change.display_name is not None:
        head.append(change.display_name)
    return msgspec.json.encode(head).decode()


def decode_presence(text: str) -> Presence:
    """A presence change from `encode_presence` (or from a node of the previous version: no audience).

    Raises:
        BadNodeFrame: it is not one.
    """
    try:
        frame = _presence_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise BadNodeFrame(f"not a presence change: {exc}") from None
    audience = None
    if frame.audience is not None:
        users, hidden = frame.audience
        audience = Audience(None if users is None else frozenset(users), frozenset(hidden))
    return Presence(frame.user, frame.status, frame.in_call, frame.last_seen, audience, frame.display_name)


def encode_circles(users: list[str]) -> str:
    """These users' circles changed, for every node. Raises ValueError for more than MAX_CIRCLES users."""
    if len(users) > MAX_CIRCLES:
        raise ValueError(f"a circle change names {len(users)} users: at most {MAX_CIRCLES}")
    return CIRCLES + msgspec.json.encode(users).decode()


CLOSE_USER: Final = "K"
CLOSE_SIGN_IN: Final = "S"
MAX_SIGN_IN: Final = 64
"""Characters of a sign-in id in a close (the server's are 16 hex digits)."""

_User = Annotated[str, msgspec.Meta(max_length=64)]
_Code = Annotated[int, msgspec.Meta(ge=1000, le=4999)]
_Reason = Annotated[str, msgspec.Meta(max_length=123)]


class _CloseUser(msgspec.Struct, array_like=True, frozen=True):
    """Every node is to close its connections of `user`."""

    user: _User
    code: _Code
    reason: _Reason


class _CloseSignIn(msgspec.Struct, array_like=True, frozen=True):
    """Every node is to close its connections of `user` whose latest token came from sign-in `sign_in`."""

    user: _User
    sign_in: Annotated[str, msgspec.Meta(max_length=MAX_SIGN_IN)]
    code: _Code
    reason: _Reason


_close_user_decoder = msgspec.json.Decoder(_CloseUser)
_close_sign_in_decoder = msgspec.json.Decoder(_CloseSignIn)


class Closed(NamedTuple):
    """Connections every node is to close: those of `user`, or (with `sign_in`) those of `user` whose latest token
    came from that sign-in."""

    user: str
    code: int
    reason: str
    sign_in: str | None = None


def encode_close_user(user: str, code: int, reason: str, sign_in: str | None = None) -> str:
    """Every node is to close its connections of `user` (with `sign_in`: those whose latest token came from that
    sign-in) with `code` and `reason` (cut to 123 bytes' worth). Raises ValueError for a sign-in id longer than
    MAX_SIGN_IN."""
    reason = reason.encode()[:123].decode(errors="ignore")
    if sign_in is None:
        return CLOSE_USER + msgspec.json.encode([user, code, reason]).decode()
    if len(sign_in) > MAX_SIGN_IN:
        raise ValueError(f"a sign-in id is at most {MAX_SIGN_IN} characters")
    return CLOSE_SIGN_IN + msgspec.json.encode([user, sign_in, code, reason]).decode()


def decode_everyone(text: str) -> Presence | list[str] | Closed:
    """What a node sent every node: a presence change, the users whose circles changed, or the connections every
    node is to close (of a user, or of one sign-in of theirs).

    Raises:
        BadNodeFrame: it is none of these.
    """
    if text.startswith(CLOSE_USER):
        try:
            close = _close_user_decoder.decode(text[len(CLOSE_USER) :])
        except msgspec.DecodeError as exc:
            raise BadNodeFrame(f"not a user to close: {exc}") from None
        return Closed(close.user, close.code, close.reason)
    if text.startswith(CLOSE_SIGN_IN):
        try:
            ended = _close_sign_in_decoder.decode(text[len(CLOSE_SIGN_IN) :])
        except msgspec.DecodeError as exc:
            raise BadNodeFrame(f"not a sign-in to close: {exc}") from None
        return Closed(ended.user, ended.code, ended.reason, ended.sign_in)
    if text.startswith(CIRCLES):
        try:
            return _circles_decoder.decode(text[len(CIRCLES) :])
        except msgspec.DecodeError as exc:
            raise BadNodeFrame(f"not a circle change: {exc}") from None
    return decode_presence(text)


MAX_STATE_KEYS: Final = 64
"""Keys one STATE frame may name (one change touches a few users and calls)."""
MAX_STATE_FIELDS: Final = 4096
"""Fields of a user's hash one STATE frame may hold (its devices' connections, twice, and its call)."""

StateEntry = tuple[str, str | list[str] | None, str]
"""A key as a change left it: (key, value, version). The value is what the broker's Lua reader returns for it: a
user's hash as its flat list of fields and values, a call's JSON, or None for a key that is gone: with the version of
the change that deleted it (a node of the previous version sends "0", and reads any version of a key gone as "0")."""

_state_decoder = msgspec.json.Decoder(
    Annotated[
        list[tuple[str, Annotated[list[str], msgspec.Meta(max_length=MAX_STATE_FIELDS)] | str | None, str]],
        msgspec.Meta(max_length=MAX_STATE_KEYS),
    ]
)


def encode_state(entries: list[StateEntry]) -> str:
    """The text of a STATE frame."""
    return msgspec.json.encode(entries).decode()


def decode_state(text: str) -> list[StateEntry]:
    """The entries of a STATE frame's text.

    Raises:
        BadNodeFrame: it is not one.
    """
    try:
        return _state_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise BadNodeFrame(f"not a state: {exc}") from None
