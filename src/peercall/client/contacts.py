"""What the SDK knows of the user's contacts: immutable snapshots built from the server's `contacts` frames, kept up
to date by `presence` frames, and the pages of the `directory` frame (docs/protocol.md, "Contacts").

Pure data and parsing: imports the standard library, `peercall.core.social` (the rules' enums) and the SDK's base
error; must not import the rest of the client or the server. Frames from the server are read leniently: an entry of
the wrong shape is left out rather than failing the whole frame (a newer server may add fields).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from ..core.social import MAX_NAME, CallsFrom, Directory
from ..protocol.codes import ErrorCode
from .signaling import ClientError

CONTACT_FRAMES: Final = frozenset(
    {"contact-add", "contact-decline", "contact-remove", "contact-rename", "block", "unblock", "settings"}
)
"""The client frames the server answers with a `contacts` frame."""
MAX_DIRECTORY_PAGE: Final = 200
"""The largest `limit` of a `directory` frame."""


class ContactError(ClientError):
    """The server refused a contact operation, or did not answer it.

    `code` is the protocol's error code (`too-many`, `not-allowed`, `rate-limited`, `bad-message`,
    `service-unavailable`…; `wire_code` is it as the server sent it, should this SDK not know it). `answered` is
    False when no answer came (not connected, or none within `Client.answer_timeout`): then `code` is
    `service-unavailable`, and trying again may work.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.answered = code is not None
        self.wire_code = code or ErrorCode.SERVICE_UNAVAILABLE.value
        with contextlib.suppress(ValueError):
            self.code = ErrorCode(self.wire_code)
        self.retryable = self.code in (ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.RATE_LIMITED)


@dataclass(frozen=True, slots=True)
class Contact:
    """A mutual contact, with their presence as last told by the server.

    `name` is the name we gave them (or None); `since` when we became contacts (Unix seconds); `online`, `in_call`
    (in an answered call) and `last_seen` (when they went offline, if known) their presence; `display_name` their
    own display name, if they have one (docs/protocol.md, "Display names"). A contact who blocked us always looks
    offline.
    """

    id: str
    name: str | None
    since: float
    online: bool = False
    in_call: bool = False
    last_seen: float | None = None
    display_name: str | None = None

    @property
    def status(self) -> str:
        """`online` or `offline`, as in the protocol."""
        return "online" if self.online else "offline"

    @property
    def label(self) -> str:
        """The name we gave them, else their display name, else their id."""
        return self.name or self.display_name or self.id


@dataclass(frozen=True, slots=True)
class Pending:
    """A contact request waiting for an answer, or a block: who, and since when (Unix seconds); a request to us
    also has the requester's `display_name`, if they have one."""

    id: str
    at: float
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class Contacts:
    """The user's contacts as the server last told them (`contacts` frame), with their presence kept up to date.

    Immutable: each change makes a new one (`Client.contacts`, the `ContactsChanged` event).
    """

    contacts: tuple[Contact, ...] = ()
    """Mutual contacts, in the server's order."""
    incoming: tuple[Pending, ...] = ()
    """Requests waiting for our answer (`add_contact` accepts, `decline_contact` declines)."""
    outgoing: tuple[Pending, ...] = ()
    """Our requests waiting for theirs."""
    blocked: tuple[Pending, ...] = ()
    """Users we blocked."""
    calls_from: CallsFrom | None = None
    """Our ring setting, or None for the server's default (`default_calls_from`)."""
    default_calls_from: CallsFrom | None = None
    """The server's default ring setting (`PEERCALL_CALLS_FROM`, also in `welcome`); None if the server did not say
    (one that predates welcome's `defaultCallsFrom`, to a user with nothing in their contacts)."""
    directory: Directory = Directory.ALL
    """Whose presence we are told: our contacts only, or everyone online (`PEERCALL_DIRECTORY`)."""

    @property
    def ring_setting(self) -> CallsFrom | None:
        """Who may ring us now: our setting, else the server's default (None: the default, not told yet)."""
        return self.calls_from or self.default_calls_from

    def contact(self, user: str) -> Contact | None:
        """Our contact `user`, or None."""
        return next((c for c in self.contacts if c.id == user), None)

    def is_contact(self, user: str) -> bool:
        return self.contact(user) is not None

    def has_incoming(self, user: str) -> bool:
        return any(p.id == user for p in self.incoming)

    def has_outgoing(self, user: str) -> bool:
        return any(p.id == user for p in self.outgoing)

    def is_blocked(self, user: str) -> bool:
        return any(p.id == user for p in self.blocked)

    def with_presence(self, user: str, online: bool, in_call: bool, last_seen: float | None) -> Contacts:
        """This snapshot with contact `user`'s presence changed (itself if nothing changes)."""
        changed = False
        contacts = []
        for contact in self.contacts:
            if contact.id == user:
                updated = replace(
                    contact,
                    online=online,
                    in_call=in_call and online,
                    last_seen=contact.last_seen if online or last_seen is None else last_seen,
                )
                changed = changed or updated != contact
                contact = updated
            contacts.append(contact)
        return replace(self, contacts=tuple(contacts)) if changed else self

    def to_json(self) -> dict[str, Any]:
        """The snapshot in the shape of the protocol's `contacts` frame (without `type`)."""
        return {
            "contacts": [
                {
                    "id": c.id,
                    "name": c.name,
                    "since": c.since,
                    "status": c.status,
                    **({"inCall": True} if c.in_call else {}),
                    **({"lastSeen": c.last_seen} if c.last_seen is not None and not c.online else {}),
                    **({"displayName": c.display_name} if c.display_name is not None else {}),
                }
                for c in self.contacts
            ],
            "incoming": [
                {"id": p.id, "at": p.at, **({"displayName": p.display_name} if p.display_name is not None else {})}
                for p in self.incoming
            ],
            "outgoing": [{"id": p.id, "at": p.at} for p in self.outgoing],
            "blocked": [{"id": p.id, "at": p.at} for p in self.blocked],
            "callsFrom": self.calls_from.value if self.calls_from else None,
            "defaultCallsFrom": self.default_calls_from.value if self.default_calls_from else None,
            "directory": self.directory.value,
        }


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    """Someone online, as the `directory` frame lists them (with their display name, if they have one)."""

    id: str
    in_call: bool = False
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class DirectoryPage:
    """One page of who is online (`Client.directory()`): `users` in id order; `next` is the `after` of the next
    page, or None after the last."""

    users: tuple[DirectoryUser, ...]
    next: str | None


def _number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _pending(items: Any) -> tuple[Pending, ...]:
    if not isinstance(items, list):
        return ()
    return tuple(
        Pending(item["id"], _number(item.get("at")), display_name_of(item))
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("id"), str)
    )


def display_name_of(item: Mapping[str, Any], key: str = "displayName") -> str | None:
    """The display name a frame (or an entry of one) carries under `key`: 1-64 characters of text, or None."""
    value = item.get(key)
    return value if isinstance(value, str) and 1 <= len(value) <= MAX_NAME else None


def _enum(kind: type[CallsFrom] | type[Directory], value: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        return None


def parse_contacts(frame: Mapping[str, Any]) -> Contacts:
    """A snapshot from a `contacts` frame."""
    contacts = []
    items = frame.get("contacts")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        name = item.get("name")
        last_seen = item.get("lastSeen")
        online = item.get("status") == "online"
        contacts.append(
            Contact(
                id=item["id"],
                name=name if isinstance(name, str) else None,
                since=_number(item.get("since")),
                online=online,
                in_call=online and item.get("inCall") is True,
                last_seen=_number(last_seen) if isinstance(last_seen, int | float) else None,
                display_name=display_name_of(item),
            )
        )
    return Contacts(
        contacts=tuple(contacts),
        incoming=_pending(frame.get("incoming")),
        outgoing=_pending(frame.get("outgoing")),
        blocked=_pending(frame.get("blocked")),
        calls_from=_enum(CallsFrom, frame.get("callsFrom")),
        default_calls_from=_enum(CallsFrom, frame.get("defaultCallsFrom")),
        directory=_enum(Directory, frame.get("directory")) or Directory.ALL,
    )


def parse_directory(frame: Mapping[str, Any]) -> DirectoryPage:
    """A page from a `directory` frame."""
    users = frame.get("users")
    after = frame.get("next")
    return DirectoryPage(
        tuple(
            DirectoryUser(u["id"], u.get("inCall") is True, display_name_of(u))
            for u in (users if isinstance(users, list) else [])
            if isinstance(u, Mapping) and isinstance(u.get("id"), str)
        ),
        after if isinstance(after, str) else None,
    )


def check_name(name: str | None) -> str | None:
    """A contact's name as the protocol takes it: 1-64 characters (trimmed), or None.

    Raises:
        ValueError: empty, or longer than 64 characters.
    """
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a contact's name is 1-64 characters, not empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"a contact's name is at most {MAX_NAME} characters, not {len(name)}")
    return name


def calls_from(value: CallsFrom | str | None) -> CallsFrom | None:
    """A ring setting from its name (`everyone`, `contacts`, `nobody`; None or `default`: the server's default).

    Raises:
        ValueError: another word.
    """
    if value is None or value == "default":
        return None
    try:
        return CallsFrom(value)
    except ValueError:
        raise ValueError(f"who may ring you is everyone, contacts, nobody or default, not {value!r}") from None
