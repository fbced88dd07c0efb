"""Who may see whom and who may ring whom: contacts, requests, blocking and the ring setting. Pure: no I/O.

A user's `Circle` is what the server knows of their relations (kept in the store, `store.base.ContactBook`); the
functions below turn circles into the two decisions the rest of the server needs:

- `screen()`: what a call-request may do (ring, or look like a call to someone offline or not answering), handed
  to the switchboard as a `Screen` with the call-request (core/switchboard.py decides the frames);
- `audience()` and `sees()`: who is told a user's presence, and whose presence a user is told.

Rules (docs/protocol.md, "Contacts", is the user-facing version):

- Contacts are mutual: a user asks (`contact-add`), the other accepts (`contact-add` back) or declines. Either
  removes the other (`contact-remove`): both lose the contact.
- Blocking is one-sided and silent. The blocker no longer lists the blocked user among their contacts; the
  blocked user keeps the blocker as a contact who always looks offline (no presence, calls end as if offline),
  and their requests and calls never reach the blocker. Unblocking restores what was there.
- A user's presence goes to their contacts (`Directory.CONTACTS`), or to everyone online (`Directory.ALL`, the
  operator's choice for small trusted servers), and never to anyone on either side of a block.
- The ring setting (`CallsFrom`) decides who may ring a user: everyone, contacts only, or nobody. A call it
  refuses is *silenced*: it rings nowhere and the caller sees a call nobody answers.
- A caller learns whether the callee is online or busy only if they may see the callee's presence (`visible`);
  otherwise a call that cannot ring looks like one nobody answers, whatever the reason.
- Services (the operator's reserved ids, `PEERCALL_RESERVED_IDS`: the echo behind "Test my audio") are public:
  everyone is told their presence and may ring them, whatever the directory and their ring setting (a user who
  blocked one, or whom one blocked, still does not see it). Only the services' own presence is concerned: what a
  service sees of others, and what anyone sees of a real user, follow the rules above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec


class CallsFrom(StrEnum):
    """Who may ring a user (the ring setting, `callsFrom`)."""

    EVERYONE = "everyone"
    CONTACTS = "contacts"
    NOBODY = "nobody"  # do not disturb


class Directory(StrEnum):
    """Whose presence a user sees (`PEERCALL_DIRECTORY`)."""

    ALL = "all"  # everyone online (and the `directory` frame pages through them)
    CONTACTS = "contacts"  # contacts only; no way to enumerate users


class Screening(StrEnum):
    """Why a call did not ring although it could have: kept with its history record."""

    SILENCED = "silenced"  # the callee's ring setting refused it: listed in their history, marked silenced
    BLOCKED = "blocked"  # the callee blocked the caller: nothing of it reaches the callee
    REFUSED = "refused"  # the operator's rule (PEERCALL_CALL_POLICY) refused it: nothing reaches the callee


HIDDEN_FROM_CALLEE: Final = frozenset({Screening.BLOCKED, Screening.REFUSED})
"""Screenings whose calls the callee never sees: not rung, not notified, not in their history."""

MAX_CONTACTS: Final = 500
"""Contacts a user may have; a request or an acceptance beyond it gets `error too-many`."""
MAX_OUTGOING: Final = 100
"""Requests a user may have waiting for an answer; beyond it, `error too-many`."""
MAX_INCOMING: Final = 200
"""Requests waiting for one user's answer that are kept: a newer one drops the oldest (nobody can fill a list)."""
MAX_BLOCKED: Final = 1000
"""Users one user may block; beyond it, `error too-many`."""
REQUEST_TTL: Final = 30 * 86400.0
"""Seconds a request waits for an answer before it is dropped."""
MAX_NAME: Final = 64
"""Characters of the name a user gives a contact, and of a user's display name."""


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    name: str | None  # the name this user gave the contact, or None
    since: float  # when the contact was made (Unix seconds)


class Circle(msgspec.Struct, frozen=True):
    """What the server knows of one user's relations. Everything is bounded (the MAX_ constants).

    A msgspec Struct, not a frozen dataclass: one is built for every user who connects (the store's answer), and a
    frozen dataclass's `__init__` (an `object.__setattr__` per field) cost ~15k instructions, ~4% of a connect."""

    user: str
    contacts: Mapping[str, Contact] = msgspec.field(default_factory=dict)
    """Mutual contacts, by id: those this user has accepted or been accepted by. Someone this user blocked is not
    among them (they are in `blocked`); someone who blocked this user still is."""
    incoming: Mapping[str, float] = msgspec.field(default_factory=dict)
    """Requests waiting for this user's answer: requester -> when. Never from someone this user blocked."""
    outgoing: Mapping[str, float] = msgspec.field(default_factory=dict)
    """This user's requests waiting for an answer: recipient -> when (also those a block made vanish)."""
    blocked: Mapping[str, float] = msgspec.field(default_factory=dict)
    """Users this user blocked -> when."""
    blocked_by: Mapping[str, float] = msgspec.field(default_factory=dict)
    """Users who blocked this user -> when (the newest MAX_BLOCKED). Server-side only: never shown to this user,
    to whom such a contact looks offline since then (the time is their `lastSeen`, as if they had left)."""
    calls_from: CallsFrom | None = None
    """This user's ring setting, or None for the operator's default (`PEERCALL_CALLS_FROM`)."""
    display_names: Mapping[str, str] = msgspec.field(default_factory=dict)
    """The display names of the contacts and of those in `incoming` that have one (never of `outgoing`: asking
    someone does not tell whether their id is used)."""

    def is_empty(self) -> bool:
        """Nothing is known of this user's relations (most users'): equal to a fresh `Circle(user)`, told without
        building one and comparing its eight fields."""
        return not (
            self.contacts or self.incoming or self.outgoing or self.blocked or self.blocked_by or self.display_names
        ) and (self.calls_from is None)

    def watchers(self) -> frozenset[str]:
        """Who is told this user's presence in `Directory.CONTACTS`: contacts, but nobody on either side of a block."""
        return frozenset(c for c in self.contacts if c not in self.blocked_by)

    def may_ring(self, caller: str, default: CallsFrom) -> bool:
        """Whether this user's ring setting lets `caller` ring them (blocking aside)."""
        setting = self.calls_from or default
        if setting is CallsFrom.EVERYONE:
            return True
        return setting is CallsFrom.CONTACTS and caller in self.contacts


class Screen(msgspec.Struct, frozen=True, gc=False):
    """What the switchboard needs to know of a call-request beyond its own state (core/switchboard.py)."""

    visible: bool = True
    """The caller may know whether the callee is online or in a call (they see the callee's presence, or the
    server is not private). If not, a call that cannot ring is a silent call: it looks like one nobody answers."""
    screening: Screening | None = None
    """Why the call must not ring, or None. BLOCKED makes the callee look offline to the caller."""
    reachable: bool = False
    """The callee can be rung by Web Push (they have a push subscription, hub/push.py): a call to them rings even
    with no device connected (the switchboard's rules of screening and blocking come first)."""


def screen(
    caller: Circle,
    callee: Circle,
    *,
    directory: Directory,
    default: CallsFrom,
    private: bool = False,
    allowed: bool = True,
    services: frozenset[str] = frozenset(),
) -> Screen:
    """How a call-request from `caller.user` to `callee.user` is screened.

    `visible` is the caller's own view: whether they are told the callee's presence (a blocked caller still has
    the blocker among their contacts, always offline: so a call to them ends as a call to an offline contact).
    `allowed`: what the operator's rule said (PEERCALL_CALL_POLICY; True when there is none). `services`: the
    public ids, whom everyone sees and may ring.
    """
    service = callee.user in services
    visible = not private and (directory is Directory.ALL or callee.user in caller.contacts or service)
    if caller.user in callee.blocked:
        return Screen(visible, Screening.BLOCKED)
    if not allowed:
        return Screen(visible, Screening.REFUSED)
    if not service and not callee.may_ring(caller.user, default):
        return Screen(visible, Screening.SILENCED)
    return Screen(visible, None)


def sees(viewer: Circle, user: str, directory: Directory, services: frozenset[str] = frozenset()) -> bool:
    """Whether `viewer.user` is told `user`'s presence."""
    if user in viewer.blocked or user in viewer.blocked_by:
        return False
    return directory is Directory.ALL or user in viewer.contacts or user in services


class Audience(msgspec.Struct, frozen=True, gc=False):
    """Who is told a user's presence: `users` (None: everyone online) minus `hidden`."""

    users: frozenset[str] | None
    hidden: frozenset[str] = frozenset()

    def includes(self, user: str) -> bool:
        return user not in self.hidden and (self.users is None or user in self.users)


class View(msgspec.Struct, frozen=True, gc=False):
    """Whose presence a user is told (their `welcome` lists): their `contacts`, and with `everyone` the others
    online too; never `hidden`."""

    contacts: frozenset[str]
    everyone: bool
    hidden: frozenset[str] = frozenset()

    def includes(self, user: str) -> bool:
        return user not in self.hidden and (self.everyone or user in self.contacts)


def view(circle: Circle, directory: Directory, services: frozenset[str] = frozenset()) -> View:
    """Whose presence `circle.user` is told (the converse of `audience`): with the `services`, listed as contacts
    are (first in a welcome), but for those on either side of a block, and the user themself."""
    hidden = frozenset(circle.blocked) | circle.blocked_by.keys()
    shown = (frozenset(circle.contacts) | services) - hidden - {circle.user}
    return View(shown, directory is Directory.ALL, hidden)


def audience(circle: Circle, directory: Directory, services: frozenset[str] = frozenset()) -> Audience:
    """Who is told `circle.user`'s presence: everyone online (but those on either side of a block) for a
    service (one of `services`)."""
    if directory is Directory.ALL or circle.user in services:
        return Audience(None, frozenset(circle.blocked) | circle.blocked_by.keys())
    return Audience(circle.watchers())
