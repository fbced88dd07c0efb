"""JSON Schema of protocol v1: every frame a client sends and every frame the server sends.

These structs describe the wire for other implementers (`GET /protocol/v1/schema.json`, and
`docs/protocol.schema.json`, which the tests keep equal to `schema()`); the server's own hot path validates with
the leaner `messages.Envelope`. Run `python -m peercall.protocol.schema > docs/protocol.schema.json` after a change.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Meta, UnsetType

from . import codes
from .messages import (
    CallId,
    CallSummary,
    ContactAdd,
    ContactRename,
    DirectoryQuery,
    IceCandidate,
    MediaState,
    SessionDescription,
    Settings,
    UserId,
)

# Built from the enums, so that a new value cannot be left out of the schema (a type checker sees plain strings).
if TYPE_CHECKING:
    Outcome: TypeAlias = str
    Reason: TypeAlias = str
    ErrorCode: TypeAlias = str
else:
    Outcome = Literal[tuple(outcome.value for outcome in codes.Outcome)]
    Reason = Literal[tuple(reason.value for reason in codes.Reason)]
    ErrorCode = Literal[tuple(code.value for code in codes.ErrorCode)]


class _Frame(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    pass


# ------------------------------------------------------------------------------------- client -> server


class _Sent(_Frame):
    to: UserId
    callId: CallId | None = None


class CallRequest(_Sent, tag="call-request", kw_only=True):
    """Ring `to`. The server answers `call-ringing` (with the call's id) or ends the call at once."""

    data: Any = None


class CallAccept(_Sent, tag="call-accept", kw_only=True):
    """Accept the call that rings on this connection."""

    data: Any = None


class CallReject(_Sent, tag="call-reject", kw_only=True):
    """Decline the ringing call; `{"reason":"busy"}` only stops this device ringing."""

    data: Any = None


class Offer(_Sent, tag="offer", kw_only=True):
    """SDP offer, to the other party of an answered call."""

    data: SessionDescription


class Answer(_Sent, tag="answer", kw_only=True):
    """SDP answer, to the other party of an answered call."""

    data: SessionDescription


class Candidate(_Sent, tag="candidate", kw_only=True):
    """A trickled ICE candidate (null: end of candidates), to the other party of an answered call."""

    data: IceCandidate | None


MediaStateData = Annotated[
    MediaState,
    Meta(
        description="the sender's whole media state, at most 256 bytes: a key left out is false; other keys are "
        "forwarded as sent and ignored by receivers that do not know them"
    ),
]


class MediaStateFrame(_Sent, tag="media-state", kw_only=True):
    """What this party's microphone, camera and screen do now, to the other party of an answered call: sent
    whenever it changes, and again after `call-accept` and `call-resumed`."""

    data: MediaStateData


class HangupReason(msgspec.Struct, omit_defaults=True):
    reason: Reason | None = None


class Hangup(_Sent, tag="hangup", kw_only=True):
    """End the call (cancel it while it rings, decline it while it rings here)."""

    data: HangupReason | None = None


class CallSummaryFrame(_Frame, tag="call-summary", kw_only=True):
    """After a call ended: what this party measured of it, kept with the call's history record."""

    callId: CallId
    data: CallSummary


class Auth(_Frame, tag="auth", kw_only=True):
    """Token mode only: as the first frame, the signed token that proves who this is; later, a new token for the
    same user (a renewal, answered `auth-renewed`)."""

    token: str


class _ToUser(_Frame):
    to: UserId


class ContactAddFrame(_ToUser, tag="contact-add", kw_only=True):
    """Ask `to` to be contacts, or accept their request; `name`: your own name for them."""

    data: ContactAdd | None = None


class ContactDecline(_ToUser, tag="contact-decline", kw_only=True):
    """Decline `to`'s request (they are not told)."""


class ContactRemove(_ToUser, tag="contact-remove", kw_only=True):
    """No longer contacts with `to` (both sides), or withdraw your request to them."""


class ContactRenameFrame(_ToUser, tag="contact-rename", kw_only=True):
    """Your own name for the contact `to` (null: none)."""

    data: ContactRename


class Block(_ToUser, tag="block", kw_only=True):
    """Block `to`: their calls and requests never reach you, they see no presence of yours."""


class Unblock(_ToUser, tag="unblock", kw_only=True):
    """Lift the block on `to`."""


class SettingsFrame(_Frame, tag="settings", kw_only=True):
    """Your ring setting: who may ring you (null: the server's default)."""

    data: Settings


class DirectoryFrame(_Frame, tag="directory", kw_only=True):
    """Page through who is online (PEERCALL_DIRECTORY=all only)."""

    data: DirectoryQuery | None = None


ClientFrame = (
    Auth
    | CallSummaryFrame
    | CallRequest
    | CallAccept
    | CallReject
    | Offer
    | Answer
    | Candidate
    | MediaStateFrame
    | Hangup
    | ContactAddFrame
    | ContactDecline
    | ContactRemove
    | ContactRenameFrame
    | Block
    | Unblock
    | SettingsFrame
    | DirectoryFrame
)

# ------------------------------------------------------------------------------------- server -> client


DisplayName = Annotated[
    str, Meta(min_length=1, max_length=64, description="a person's display name: text to show, never markup")
]
DisplayNames = Annotated[
    dict[UserId, DisplayName], Meta(description="display names by user id, of those that have one")
]


class _Forwarded(_Frame):
    to: UserId
    from_: Annotated[UserId, Meta(description="the sender's id, set by the server")] = msgspec.field(name="from")
    callId: CallId | None = None


class CallRequestForwarded(_Forwarded, tag="call-request", kw_only=True):
    data: Any = None
    displayName: DisplayName | None = None


class CallAcceptForwarded(_Forwarded, tag="call-accept", kw_only=True):
    polite: bool | None = None
    data: Any = None


class CallRejectForwarded(_Forwarded, tag="call-reject", kw_only=True):
    data: Any = None


class OfferForwarded(_Forwarded, tag="offer", kw_only=True):
    data: SessionDescription


class AnswerForwarded(_Forwarded, tag="answer", kw_only=True):
    data: SessionDescription


class CandidateForwarded(_Forwarded, tag="candidate", kw_only=True):
    data: IceCandidate | None


class HangupForwarded(_Forwarded, tag="hangup", kw_only=True):
    data: Any = None


class MediaStateForwarded(_Forwarded, tag="media-state", kw_only=True):
    data: MediaStateData


class RecentUser(msgspec.Struct):
    """Someone seen lately who is offline now."""

    id: UserId
    lastSeen: float


class Welcome(_Frame, tag="welcome", kw_only=True):
    """First frame on every connection."""

    id: UserId
    online: list[UserId]
    protocol: Literal[1]
    device: UserId | None = None
    version: str | None = None
    ringTimeout: float | None = None
    resumeGrace: float | None = None
    inCall: list[UserId] | None = None
    recent: list[RecentUser] | None = None
    directory: Literal["all", "contacts"] | None = None
    features: list[str] | None = None
    more: bool | None = None
    defaultCallsFrom: Literal["everyone", "contacts", "nobody"] | None = None
    tokenExpiresAt: Annotated[float, Meta(description="token mode: the `exp` of the connection's token")] | None = None
    displayNames: DisplayNames | None = None


class PresenceChange(msgspec.Struct, omit_defaults=True):
    id: UserId
    status: Literal["online", "offline"]
    inCall: bool | None = None
    lastSeen: float | None = None
    displayName: DisplayName | None = None


class Presence(_Frame, tag="presence", kw_only=True):
    """One change (`id`, `status`), or several gathered over the presence interval (`changes`)."""

    id: UserId | None = None
    status: Literal["online", "offline"] | None = None
    inCall: bool | None = None
    lastSeen: float | None = None
    displayName: DisplayName | None = None
    changes: list[PresenceChange] | None = None


class Error(_Frame, tag="error", kw_only=True):
    code: ErrorCode
    message: str
    ref: str | None = None
    to: str | None = None
    callId: CallId | None = None


class CallRinging(_Frame, tag="call-ringing", kw_only=True):
    callId: CallId
    to: UserId


class CallEnded(_Frame, tag="call-ended", kw_only=True):
    callId: CallId
    outcome: Outcome
    reason: Reason


class CallResumed(_Frame, tag="call-resumed", kw_only=True):
    callId: CallId
    state: Literal["ringing", "answered"]
    role: Literal["caller", "callee"]
    peer: UserId
    polite: bool


class CallRecord(msgspec.Struct):
    callId: str
    caller: UserId
    callee: UserId
    callerDevice: str | None  # shown to its own user only (docs/protocol.md, "HTTP endpoints")
    answeredDevice: str | None
    ringingAt: float
    answeredAt: float | None
    endedAt: float
    outcome: Outcome
    reason: Reason
    hungUpBy: str | None
    duration: float | None
    quality: dict[str, CallSummary] | None = None
    screened: Literal["silenced"] | UnsetType = UNSET  # to the callee only: their ring setting refused it


class ContactEntry(msgspec.Struct, omit_defaults=True):
    id: UserId
    name: str | None
    since: float
    status: Literal["online", "offline"]
    inCall: bool | None = None
    lastSeen: float | None = None
    displayName: DisplayName | None = None


class Dated(msgspec.Struct):
    id: UserId
    at: float


class Requester(msgspec.Struct, omit_defaults=True):
    """A request waiting for the user's answer: who asked (with their display name), and when."""

    id: UserId
    at: float
    displayName: DisplayName | None = None


CallsFrom = Literal["everyone", "contacts", "nobody"]


class Contacts(_Frame, tag="contacts", kw_only=True):
    """After `welcome` and after each change: the user's contacts (with presence), requests, blocks, setting."""

    contacts: list[ContactEntry]
    incoming: list[Requester]
    outgoing: list[Dated]
    blocked: list[Dated]
    callsFrom: CallsFrom | None
    defaultCallsFrom: CallsFrom
    directory: Literal["all", "contacts"]


class DirectoryUser(msgspec.Struct, omit_defaults=True):
    id: UserId
    inCall: bool
    displayName: DisplayName | None = None


class Directory(_Frame, tag="directory", kw_only=True):
    """The answer to `directory`: a page of users online, and where the next page starts (null: the last)."""

    users: list[DirectoryUser]
    next: UserId | None


class AuthRenewed(_Frame, tag="auth-renewed", kw_only=True):
    """The answer to a later `auth` frame: the connection's token now expires at `expiresAt` (its `exp`)."""

    expiresAt: float


class MissedCalls(_Frame, tag="missed-calls", kw_only=True):
    calls: list[CallRecord]
    total: Annotated[int, Meta(ge=0)] | UnsetType = UNSET  # how many were missed, `calls` being the newest
    displayNames: DisplayNames | None = None


class SilencedCall(_Frame, tag="silenced-call", kw_only=True):
    """To the callee's connected devices: a call that their ring setting silenced (it rang nowhere) has ended, and
    is in their history as this record (`"screened": "silenced"`)."""

    call: CallRecord


ServerFrame = (
    Welcome
    | Presence
    | Error
    | CallRinging
    | CallEnded
    | CallResumed
    | MissedCalls
    | SilencedCall
    | Contacts
    | Directory
    | AuthRenewed
    | CallRequestForwarded
    | CallAcceptForwarded
    | CallRejectForwarded
    | OfferForwarded
    | AnswerForwarded
    | CandidateForwarded
    | MediaStateForwarded
    | HangupForwarded
)

_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)


def check_client_frame(text: str | bytes) -> None:
    """Raise msgspec.ValidationError unless `text` is a valid client frame."""
    _client_decoder.decode(text)


def check_server_frame(text: str | bytes) -> None:
    """Raise msgspec.ValidationError unless `text` is a valid server frame."""
    _server_decoder.decode(text)


def schema() -> dict[str, Any]:
    """The whole protocol as one JSON Schema document."""
    (client, server), components = msgspec.json.schema_components([ClientFrame, ServerFrame])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "peercall signaling protocol v1",
        "description": "Frames on the /ws WebSocket, one JSON object per text frame. See docs/protocol.md.",
        "$defs": {**components, "ClientFrame": client, "ServerFrame": server},
        "oneOf": [{"$ref": "#/$defs/ClientFrame"}, {"$ref": "#/$defs/ServerFrame"}],
    }


if __name__ == "__main__":
    print(json.dumps(schema(), indent=2, sort_keys=True))
