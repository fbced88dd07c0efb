"""Protocol v1 messages: parse and validate what a client sends, build what the server sends.

Pure functions over bytes and str, no I/O. docs/protocol.md is the reference; keep the two in step.

Client frames are decoded once, into a loose envelope whose `data` stays raw: SDP and candidates are checked for
type and shape and then forwarded verbatim, never re-serialised. msgspec does both the JSON decoding and the
validation in C, which keeps the per-message cost low (this is the server's hot path).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

from .. import PROTOCOL_VERSION, __version__
from .codes import ErrorCode
from .errors import ProtocolError, shorten

ID_RE: Final = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
"""A user id: 1-64 ASCII letters, digits, `_`, `-`, `.` or `@`."""

# `$(?!\n)`: Python's `$` also matches before a final newline (msgspec uses re.search); ECMA's does not.
UserId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.@-]{1,64}$(?!\n)")]
CallId = Annotated[str, Meta(min_length=1, max_length=128)]

# The types a client may send. Each maps to the shape its `data` must have (None: anything, or nothing).
ROUTED_TYPES: Final = (
    "call-request",
    "call-accept",
    "call-reject",
    "offer",
    "answer",
    "candidate",
    "hangup",
    "media-state",
)


CONTACT_TYPES: Final = (
    "contact-add",
    "contact-decline",
    "contact-remove",
    "contact-rename",
    "block",
    "unblock",
    "settings",
    "directory",
)
"""Frames about contacts (docs/protocol.md, "Contacts"): they stay on the server, which answers with `contacts` (or
`directory`). All but `settings` and `directory` name the other user in `to`."""

CLIENT_TYPES: Final = (*ROUTED_TYPES, "call-summary", *CONTACT_TYPES)
"""Everything a client may send after `auth`: the routed types, `call-summary` and the contact frames, which stay
on the server."""

NEGOTIATION: Final = frozenset({"offer", "answer", "candidate"})
"""The negotiation frames: SDP and ICE candidates, forwarded verbatim between the two parties of an answered call.
They change no call state (the hot path). static/js/protocol.js has the same set."""

PEER_FRAMES: Final = NEGOTIATION | {"media-state"}
"""The peer frames: the negotiation frames and `media-state` (what a party says of its microphone, camera and
screen). Each passes only between the two parties of an answered call, is forwarded verbatim and changes no call
state: one route, the hot path. static/js/protocol.js has the same set."""

CALL_CHANGED: Final = frozenset({"call-ended", "call-resumed"})
"""Server frames that tell a connection its call changed: whatever was known of where its peer is, is stale."""


_is_id: Final = ID_RE.fullmatch
T = TypeVar("T")


def is_valid_id(value: str | None) -> bool:
    """Whether `value` is a well-formed user id."""
    return value is not None and ID_RE.fullmatch(value) is not None


def is_plain_text(text: str) -> bool:
    """Whether `text`, a name shown to other people (a display name, whether a token's `name` claim or an account's;
    a passkey's label), has no character of Unicode category C: controls, and the format characters that change
    how what is around them reads (the bidi override U+202E and isolates U+2066-2069 can make a name show
    reversed, or an `@id` next to it look like another), zero-width ones, surrogates, private use and unassigned;
    but for the zero-width non-joiner and joiner (U+200C, U+200D), which names in Persian and Indic scripts need,
    and emoji sequences (a family: man, joiner, woman, joiner, girl), and which turn nothing around. One rule for
    every way a name comes in; the length is the caller's."""
    return not any(unicodedata.category(ch)[0] == "C" and ch not in _JOINERS for ch in text)


_JOINERS = frozenset("\u200c\u200d")


class Envelope(msgspec.Struct):
    """What every client frame is decoded into first. Unknown fields are dropped, not forwarded."""

    type: str
    to: str | None = None  # a UserId, checked by parse(): msgspec's pattern check costs 4x ID_RE's
    callId: CallId | None = None
    data: Raw | UnsetType = UNSET
    from_: str | None = msgspec.field(default=None, name="from")


class SessionDescription(msgspec.Struct):
    """`data` of `offer` and `answer`: an RTCSessionDescriptionInit."""

    type: str
    sdp: str


class IceCandidate(msgspec.Struct):
    """`data` of `candidate`: an RTCIceCandidateInit (or `null` for end-of-candidates)."""

    candidate: str
    sdpMid: str | None = None
    sdpMLineIndex: Annotated[int, Meta(ge=0)] | None = None
    usernameFragment: str | None = None


class MediaState(msgspec.Struct, forbid_unknown_fields=False):
    """`data` of `media-state`: the sender's whole media state. A key left out is false; keys this server does
    not know are forwarded as sent (a receiver ignores them)."""

    muted: bool = False
    camera: bool = False
    screen: bool = False


MAX_MEDIA_STATE: Final = 256
"""Bytes of `data` that a `media-state` may carry; more gets `too-large`. Three booleans take 46."""


NonNegative = Annotated[float, Meta(ge=0)]


class CallSummary(msgspec.Struct, omit_defaults=True):
    """`data` of `call-summary`: what a client measured of a call that ended. Unknown fields are dropped."""

    durationSec: NonNegative | None = None
    mos: Annotated[float, Meta(ge=1, le=5)] | None = None
    rttMs: NonNegative | None = None
    jitterMs: NonNegative | None = None
    lossPct: Annotated[float, Meta(ge=0, le=100)] | None = None
    bitrateKbps: NonNegative | None = None
    path: Literal["direct", "relayed"] | None = None


ContactName = Annotated[str, Meta(min_length=1, max_length=64)]
IdPrefix = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.@-]{0,64}$(?!\n)")]


class ContactAdd(msgspec.Struct, forbid_unknown_fields=False):
    """`data` of `contact-add` (optional): the name to give the contact."""

    name: ContactName | None = None


class ContactRename(msgspec.Struct):
    """`data` of `contact-rename`: the name, or null for none."""

    name: ContactName | None


class Settings(msgspec.Struct):
    """`data` of `settings`: the ring setting, or null for the server's default."""

    callsFrom: Literal["everyone", "contacts", "nobody"] | None


class DirectoryQuery(msgspec.Struct):
    """`data` of `directory` (optional): an id prefix, where the previous page ended, and a page size."""

    q: IdPrefix = ""
    after: UserId | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50


class Forwarded(msgspec.Struct, omit_defaults=True):
    """A client frame as the server forwards it (its wire shape): `from` is always the sender's own id."""

    type: str
    from_: str = msgspec.field(name="from")
    to: str = ""
    callId: str | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    polite: bool | UnsetType = UNSET
    displayName: str | UnsetType = UNSET


_envelope = msgspec.json.Decoder(Envelope)
_data_decoders: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    "offer": msgspec.json.Decoder(SessionDescription),
    "answer": msgspec.json.Decoder(SessionDescription),
    "candidate": msgspec.json.Decoder(IceCandidate | None),
    "media-state": msgspec.json.Decoder(MediaState),
    "call-summary": msgspec.json.Decoder(CallSummary),
    "contact-add": msgspec.json.Decoder(ContactAdd),
    "contact-rename": msgspec.json.Decoder(ContactRename),
    "settings": msgspec.json.Decoder(Settings),
    "directory": msgspec.json.Decoder(DirectoryQuery),
}
_DATA_OPTIONAL: Final = frozenset({"contact-add", "directory"})
_NO_PEER: Final = frozenset({"settings", "directory"})
_sdp_types: Final = {"offer": ("offer",), "answer": ("answer", "pranswer")}
_encode = msgspec.json.Encoder().encode


def parse(frame: str | bytes, sender: str) -> Envelope:
    """Decode and validate one client frame from `sender`.

    Returns:
        The envelope, ready to be forwarded to `envelope.to`.

    Raises:
        ProtocolError: `bad-json`, `bad-message` or `unknown-type`, with a message that says what was expected.
    """
    try:
        env = _envelope.decode(frame)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"invalid message: {_quoting(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "invalid message: nested too deeply") from None

    kind = env.type
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {shorten(kind)!r}; a client may send {', '.join(ROUTED_TYPES)}, call-summary, "
            "or a contact frame (contact-add, block, settings, directory, …)",
            ref=kind,
        )
    if env.to is not None and _is_id(env.to) is None:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"invalid message: 'to' must be a user id (1-64 ASCII letters, digits, '_', '-', '.' or '@'), "
            f"not {env.to[:64]!r} - at `$.to`",
            ref=kind,
        )
    if kind == "call-summary":
        if env.callId is None:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "call-summary needs the 'callId' of the call", ref=kind)
        _check_data(env, _data_decoders[kind])
        return env
    if kind in _NO_PEER:
        _check_from(env, sender)
        if env.data is not UNSET or kind not in _DATA_OPTIONAL:
            _check_data(env, _data_decoders[kind])
        return env
    if env.to is None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{kind} needs a 'to' field naming the recipient", ref=kind)
    if env.to == sender:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"cannot send {kind} to yourself", ref=kind, to=env.to)
    _check_from(env, sender)
    if kind in _CALL_CONTROL:
        check_call_data(env)
    elif kind == "media-state" and env.data is not UNSET and len(env.data) > MAX_MEDIA_STATE:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"media-state carries {len(env.data)} bytes of data; it carries at most {MAX_MEDIA_STATE} bytes",
            ref=kind,
            to=env.to,
        )
    decoder = _data_decoders.get(kind)
    if decoder is not None and (env.data is not UNSET or kind not in _DATA_OPTIONAL):
        _check_data(env, decoder)
    return env


def data_of(env: Envelope, kind: type[T]) -> T | None:
    """The `data` of a contact frame already through `parse`, decoded as `kind` (None when it has none)."""
    if env.data is UNSET:
        return None
    return msgspec.json.decode(env.data, type=kind)


def _check_from(env: Envelope, sender: str) -> None:
    if env.from_ is not None and env.from_ != sender:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"'from' is set by the server: you are {sender!r}, not {env.from_[:64]!r}",
            ref=env.type,
            to=env.to,
        )


def _check_data(env: Envelope, decoder: msgspec.json.Decoder[Any]) -> None:
    kind = env.type
    if env.data is UNSET:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{kind} needs a 'data' field", ref=kind, to=env.to)
    try:
        value = decoder.decode(env.data)
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"invalid 'data' for {kind}: nested too deeply", ref=kind) from None
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"invalid 'data' for {kind}: {_quoting(exc)}", ref=kind, to=env.to
        ) from None
    allowed = _sdp_types.get(kind)
    if allowed is not None and value.type not in allowed:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"'data.type' of {kind} must be {' or '.join(map(repr, allowed))}, not {value.type[:32]!r}",
            ref=kind,
            to=env.to,
        )


# ---------------------------------------------------------------------------- bounds of what a frame carries

MAX_DEPTH: Final = 32
"""How deep the `data` of a call control frame, and the auth frame, may nest arrays and objects; deeper gets
`bad-message` (the auth frame: `unauthorized`). Explicit, so that it does not depend on the Python version (whose
recursion limit stops decoders at about 1,000), and far below what Redis's Lua `cjson` decodes (1,000): a call's
request is stored with the call in Redis, a few levels below its top. Call control data is a little metadata (a
reason, a display name); 32 leaves room for any of it."""
MAX_CALL_DATA: Final = 4096
"""Bytes of `data` that a call control frame may carry; more gets `too-large`. A call-request's data is stored
with the call (in Redis, with several nodes) and sent again to each device that rings, so it is kept small."""

# Negotiation frames are not checked: their `data` is decoded by msgspec into a fixed shape (strings and an int),
# so their depth is that of the shape plus what unknown members carry, which is forwarded verbatim to the other
# party of an answered call only and never stored. Counting brackets in every offer would cost about as much as
# parsing it (docs/security.md has the figures).
_CALL_CONTROL: Final = frozenset({"call-request", "call-accept", "call-reject", "hangup"})
_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_LONG_QUOTE: Final = re.compile(r"'([^']{65,})'")


def nested_deeper_than(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON `text` nests arrays and objects more than `limit` deep, brackets in strings aside.

    Linear and without recursion, so it answers for any depth before a decoder is given the text. Most frames
    have fewer brackets than `limit` in all and are answered by two counts.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    # The brackets alone, then `limit` rounds of taking out the innermost pairs: a well-formed text of depth d is
    # empty after d rounds. Each round is one str.replace, so this stays in C whatever the text.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).replace("{", "[").replace("}", "]")
    for _ in range(limit):
        brackets = brackets.replace("[]", "")
        if not brackets:
            return False
    return True


def check_call_data(env: Envelope) -> None:
    """A call control frame's `data`: at most MAX_CALL_DATA bytes (`too-large`), MAX_DEPTH deep (`bad-message`)."""
    if env.data is UNSET:
        return
    data = bytes(env.data)
    kind = env.type
    size = len(data)
    if size <= MAX_DEPTH:  # too short to nest deeper (the common case: no data, or a reason)
        return
    if size > MAX_CALL_DATA:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"{kind} carries {size} bytes of data; call control frames carry at most {MAX_CALL_DATA} bytes",
            ref=kind,
            to=env.to,
        )
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and nested_deeper_than(data.decode()):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"invalid 'data' for {kind}: nested more than {MAX_DEPTH} deep", ref=kind, to=env.to
        )


def _quoting(exc: Exception) -> str:
    """A decoder's message, with any long value it quotes (msgspec quotes a bad enum value whole) shortened."""
    return _LONG_QUOTE.sub(lambda m: repr(shorten(m.group(1))), str(exc))


def forward(
    env: Envelope,
    sender: str,
    call_id: str | None = None,
    polite: bool | None = None,
    display_name: str | None = None,
) -> str:
    """The text frame that `env.to` receives: the sender's frame with `from` stamped by the server, and the
    server's `callId` (or, without one, the client's own); a `call-request` with the caller's `displayName`."""
    call = call_id if call_id is not None else env.callId
    out = Forwarded(
        env.type,
        sender,
        env.to or "",
        UNSET if call is None else call,
        env.data,
        UNSET if polite is None else polite,
        UNSET if display_name is None else display_name,
    )
    return _encode(out).decode()


def summary(env: Envelope) -> dict[str, Any]:
    """The fields a `call-summary` (already through `parse`) reported, without the ones it left out."""
    assert env.data is not UNSET
    reported = msgspec.structs.asdict(msgspec.json.decode(env.data, type=CallSummary))
    return {key: value for key, value in reported.items() if value is not None}


def encode(message: dict[str, Any]) -> str:
    """A server-built frame as text."""
    return _encode(message).decode()


# ----------------------------------------------------------------------------------------- server frames
# Every frame the server itself builds comes from one of these (docs/protocol.md, "Server to client"). The ones
# the switchboard decides return a dict (the `message` of a `Send` effect; `encode()` makes it text), the ones
# the hub sends at once return text. Key order is part of the wire format: keep it.


def welcome(
    user: str,
    device: str,
    online: list[str],
    in_call: list[str],
    last_seen: list[dict[str, object]],
    ring_timeout: float,
    resume_grace: float,
    *,
    directory: str = "all",
    more: bool = False,
) -> dict[str, Any]:
    """The first frame on every accepted connection: who this is, who is online, in a call or seen lately (the
    wire field `recent`: `{"id","lastSeen"}`, newest first), and the server's versions and timers. `directory`:
    whose presence this user is told (`all` or `contacts`); `more`: `online` was cut (docs/protocol.md)."""
    frame = {
        "type": "welcome",
        "id": user,
        "device": device,
        "online": online,
        "inCall": in_call,
        "recent": last_seen,
        "protocol": PROTOCOL_VERSION,
        "version": __version__,
        "ringTimeout": ring_timeout,
        "resumeGrace": resume_grace,
        "directory": directory,
        "features": FEATURES,
    }
    if more:
        frame["more"] = True
    return frame


FEATURES: Final = ["contacts"]
"""What this server does beyond the first publication of protocol v1 (`welcome`'s `features`)."""


def contacts(
    contacts: list[dict[str, Any]],
    incoming: list[dict[str, Any]],
    outgoing: list[dict[str, Any]],
    blocked: list[dict[str, Any]],
    calls_from: str | None,
    default_calls_from: str,
    directory: str,
) -> str:
    """To every device of a user, after `welcome` and after each change: their contacts (each with its presence,
    `contact_entry`), requests both ways (`{"id","at"}`, an incoming one with the requester's `displayName`),
    blocked users (`{"id","at"}`) and ring setting."""
    return _encode(
        {
            "type": "contacts",
            "contacts": contacts,
            "incoming": incoming,
            "outgoing": outgoing,
            "blocked": blocked,
            "callsFrom": calls_from,
            "defaultCallsFrom": default_calls_from,
            "directory": directory,
        }
    ).decode()


def contact_entry(
    user: str,
    name: str | None,
    since: float,
    status: str,
    in_call: bool = False,
    last_seen: float | None = None,
    display_name: str | None = None,
) -> dict[str, Any]:
    """One contact of a `contacts` frame: who, the name the user gave them, since when, their presence, and their
    own display name if they have one."""
    entry: dict[str, Any] = {"id": user, "name": name, "since": since, "status": status}
    if in_call:
        entry["inCall"] = True
    if last_seen is not None:
        entry["lastSeen"] = last_seen
    if display_name is not None:
        entry["displayName"] = display_name
    return entry


def directory(
    users: list[tuple[str, bool]], next_after: str | None, display_names: Mapping[str, str] | None = None
) -> str:
    """The answer to `directory`: `(id, in an answered call)` of a page of users online (with the `displayName`
    of those `display_names` has), and where the next starts."""
    names = display_names or {}
    listed = []
    for user, in_call in users:
        entry: dict[str, Any] = {"id": user, "inCall": in_call}
        if user in names:
            entry["displayName"] = names[user]
        listed.append(entry)
    return _encode({"type": "directory", "users": listed, "next": next_after}).decode()


def call_ringing(call_id: str, to: str) -> dict[str, Any]:
    """To the caller: its call has an id and rings (or seems to: a busy callee's call ends right after)."""
    return {"type": "call-ringing", "callId": call_id, "to": to}


def call_ended(call_id: str, outcome: str, reason: str) -> dict[str, Any]:
    """To every connection that took part in a call or rang for it: the call is over, how and why."""
    return {"type": "call-ended", "callId": call_id, "outcome": outcome, "reason": reason}


def call_resumed(call_id: str, state: str, role: str, peer: str) -> dict[str, Any]:
    """To a party whose device came back within the resume grace, and to its peer: re-send what is pending.
    The callee is the polite side."""
    return {
        "type": "call-resumed",
        "callId": call_id,
        "state": state,
        "role": role,
        "peer": peer,
        "polite": role == "callee",
    }


def hangup(sender: str, to: str, call_id: str, reason: str) -> dict[str, Any]:
    """The seed protocol's `hangup`, as if `sender` had sent it (for clients that know no `call-ended`)."""
    return {"type": "hangup", "from": sender, "to": to, "callId": call_id, "data": {"reason": reason}}


def call_reject(sender: str, to: str, call_id: str, reason: str) -> dict[str, Any]:
    """The seed protocol's `call-reject`, as if the callee `sender` had declined (busy, or the server decided)."""
    return {"type": "call-reject", "from": sender, "to": to, "callId": call_id, "data": {"reason": reason}}


def call_accept(sender: str, to: str, call_id: str, polite: bool) -> dict[str, Any]:
    """`call-accept` when glare answered a ringing call: both sides hear it, and which of them is polite."""
    return {"type": "call-accept", "from": sender, "to": to, "callId": call_id, "polite": polite}


def error_message(
    code: str, message: str, *, ref: str | None = None, to: str | None = None, call_id: str | None = None
) -> dict[str, Any]:
    """The `error` frame, to the offending client only: `ref`, `to` and `callId` echo the frame it answers."""
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        body["ref"] = ref
    if to is not None:
        body["to"] = to
    if call_id is not None:
        body["callId"] = call_id
    return body


def error(exc: ProtocolError) -> str:
    """The `error` frame for `exc`, as text."""
    return _encode(error_message(exc.code.value, exc.message, ref=exc.ref, to=exc.to, call_id=exc.call_id)).decode()


def missed_calls(calls: list[dict[str, object]], total: int, display_names: Mapping[str, str] | None = None) -> str:
    """To a user who connects: the calls that rang for them while they were away (history records), the newest
    of them, how many there were in all (`total`, at least `len(calls)`), and the callers' `displayNames` (of
    those that have one; left out when none has)."""
    frame: dict[str, Any] = {"type": "missed-calls", "calls": calls, "total": total}
    if display_names:
        frame["displayNames"] = dict(display_names)
    return _encode(frame).decode()


def silenced_call(record: dict[str, object]) -> dict[str, Any]:
    """To the callee's connected devices when a call that their ring setting silenced ends: its history record
    (as the callee sees it), so that their Recent calls lists it at once."""
    return {"type": "silenced-call", "call": record}


def presence_change(
    user: str,
    status: str,
    in_call: bool = False,
    last_seen: float | None = None,
    display_name: str | None = None,
) -> dict[str, Any]:
    """One presence change: `{"id","status"}`, plus `"inCall": true` while in a call, `"lastSeen"` when offline,
    `"displayName"` when online and the user has one."""
    change: dict[str, Any] = {"id": user, "status": status}
    if in_call:
        change["inCall"] = True
    if last_seen is not None:
        change["lastSeen"] = last_seen
    if display_name is not None:
        change["displayName"] = display_name
    return change


def presence(
    user: str, status: str, in_call: bool = False, last_seen: float | None = None, display_name: str | None = None
) -> str:
    """Sent to everyone else when `user` comes online (`status="online"`), leaves (`"offline"`), or starts or
    stops being in a call."""
    return _encode({"type": "presence", **presence_change(user, status, in_call, last_seen, display_name)}).decode()


def presence_one(change: dict[str, Any]) -> str:
    """One presence change (`presence_change`) in a frame of its own, as `presence` sends it."""
    return _encode({"type": "presence", **change}).decode()


def presence_batch(changes: list[dict[str, Any]]) -> str:
    """Several presence changes in one frame: `{"type":"presence","changes":[{"id":…,"status":…},…]}`."""
    return _encode({"type": "presence", "changes": changes}).decode()


def auth_renewed(expires_at: float) -> str:
    """The answer to a later `auth` frame whose token was accepted: the connection's token now expires at
    `expires_at` (Unix seconds, the new token's `exp`)."""
    return _encode({"type": "auth-renewed", "expiresAt": expires_at}).decode()
