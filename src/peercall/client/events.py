"""What `Client.events()` yields: one frozen dataclass per kind of change. Pure data; imports only the call and
contact types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .call import Call, CallEnd, CallPhase, MediaState
from .contacts import Contacts
from .signaling import SignalingState


@dataclass(frozen=True)
class Connected:
    """The client is connected (again): `welcome` is the server's first frame, `online` the others online."""

    welcome: dict[str, Any]
    online: frozenset[str]
    reconnected: bool = False


@dataclass(frozen=True)
class Disconnected:
    """The connection dropped. Unless `terminal`, the client reconnects in `retry_in` seconds (calls go on)."""

    state: SignalingState
    reason: str
    code: int | None = None
    retry_in: float | None = None
    terminal: bool = False


@dataclass(frozen=True)
class PresenceChanged:
    """`user` came online (`online=True`) or went offline."""

    user: str
    online: bool


@dataclass(frozen=True)
class ContactsChanged:
    """Our contacts, requests, blocks or ring setting changed (a `contacts` frame), or a contact's presence did.

    `previous` is the snapshot before (None for the first one).
    """

    contacts: Contacts
    previous: Contacts | None = None


@dataclass(frozen=True)
class IncomingCall:
    """Someone calls us: `call` rings (phase `incoming`) until we accept or reject it, or it ends.
    `display_name`: the caller's display name, if they have one."""

    call: Call
    display_name: str | None = None


@dataclass(frozen=True)
class CallPhaseChanged:
    """A call moved from the phase `previous` to `phase`."""

    call: Call
    phase: CallPhase
    previous: CallPhase

    @property
    def state(self) -> CallPhase:
        """Deprecated alias of `phase`."""
        return self.phase


CallStateChanged = CallPhaseChanged
"""Deprecated alias of `CallPhaseChanged`, its name before the glossary (docs/glossary.md)."""


@dataclass(frozen=True)
class CallEnded:
    """A call ended, and the server said how (`end.outcome` is None if it could not)."""

    call: Call
    end: CallEnd


@dataclass(frozen=True)
class CallResumed:
    """After a reconnect, the server handed `call` back to this connection (`call-resumed`): it goes on."""

    call: Call


@dataclass(frozen=True)
class PeerMediaChanged:
    """The peer said its media changed (`media-state`): muted, camera or screen (also `call.peer_media`)."""

    call: Call
    media: MediaState


@dataclass(frozen=True)
class MissedCalls:
    """Calls to us that nobody answered while none of our devices was connected (records as in `/api/calls`),
    and the callers' display names (of those that have one)."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    display_names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerError:
    """The server refused one of our frames (`code` as in docs/protocol.md); the connection goes on."""

    code: str
    message: str
    ref: str | None = None


Event: TypeAlias = (
    Connected
    | Disconnected
    | PresenceChanged
    | ContactsChanged
    | IncomingCall
    | CallPhaseChanged
    | CallEnded
    | CallResumed
    | PeerMediaChanged
    | MissedCalls
    | ServerError
)
"""Anything `Client.events()` yields."""
