"""Contacts on one node: users' circles (cached), the contact frames, call screening, and who is told whose presence.

The rules are pure (core/social.py); the circles live in the store (`store.base.ContactBook`, the same database as
the history), which every node shares. What a node caches of a circle is dropped whenever any node changes it
(`Broker.circles_changed`), so every node screens a call with the same circle, give or take the delivery of that
message (a millisecond on one machine).

The operator's rule (`PEERCALL_CALL_POLICY=module:function`) is loaded here and asked for each call-request.

Must not import: the broker package, Redis, or anything of server/.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from ..core import social
from ..core.limits import TokenBucket
from ..core.social import Audience, CallsFrom, Circle, Directory, Screen, View
from ..core.switchboard import Presence
from ..protocol import messages
from ..protocol.codes import ErrorCode
from ..protocol.errors import ProtocolError
from ..protocol.messages import ContactAdd, ContactRename, DirectoryQuery, Envelope, Settings
from ..store.base import MAX_NAMES_ASKED, ContactBook, ContactChange, ContactLimit
from .deadline import within

log = logging.getLogger("peercall.contacts")
T = TypeVar("T")

CallPolicy = Callable[[str, str], "bool | Awaitable[bool]"]
"""The operator's rule: whether `caller` may ring `callee` (a function or a coroutine function)."""

_CACHED: Final = 20_000  # circles kept in memory (the least recently used go first; they are read again if needed)
_RATED_KEPT: Final = 10_000  # users whose contact rate is tracked
_POLICY_TIMEOUT: Final = 1.0  # seconds the operator's rule has to answer; no answer refuses the call
_STORE_DOWN: Final = "the server cannot reach its contacts store right now; nothing was done, try again shortly"


def load_policy(spec: str) -> CallPolicy:
    """The function `module:function` names (PEERCALL_CALL_POLICY).

    Raises:
        ValueError: it cannot be imported, or is not callable.
    """
    module_name, _, attribute = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"PEERCALL_CALL_POLICY={spec}: cannot load it: {exc}") from exc
    if not callable(target):
        raise ValueError(f"PEERCALL_CALL_POLICY={spec}: not a function")
    return target  # type: ignore[no-any-return]


class Social:
    """The contacts service of one node: what the hub asks about relations."""

    def __init__(
        self,
        book: ContactBook,
        *,
        directory: Directory = Directory.ALL,
        default_calls_from: CallsFrom = CallsFrom.EVERYONE,
        private: bool = False,
        rate_per_minute: int = 60,
        policy: CallPolicy | None = None,
        clock: Callable[[], float],
        shared: bool = False,
        services: frozenset[str] = frozenset(),
        store_timeout: float = 5.0,
    ) -> None:
        """`shared`: the store is shared with other nodes (a cluster), whose changes reach this node's cache a
        moment later (`forget`): a call is then screened with circles read from the store, so that every node
        decides it the same way. `services`: the public ids (`PEERCALL_RESERVED_IDS`: the echo), whom everyone
        sees and may ring (core/social.py). `store_timeout`: seconds a store operation may take before it fails
        (`_store`)."""
        self.services = services
        self.store_timeout = store_timeout
        self.book = book
        self.directory = directory
        self.default_calls_from = default_calls_from
        self.private = private
        self.rate_per_minute = rate_per_minute
        self.policy = policy
        self.clock = clock
        self.policy_failures = 0
        self.shared = shared
        self._circles: collections.OrderedDict[str, Circle | None] = collections.OrderedDict()  # None: empty
        self._buckets: dict[str, TokenBucket] = {}
        # The display name this node last wrote or found in the store, by user (the least recently used go first):
        # a user who connects again with the same name costs no write.
        self._names: collections.OrderedDict[str, str] = collections.OrderedDict()
        # Bumped by `forget`: a circle read from the store before a change must not be cached after it.
        self._epoch = 0
        # A store whose coroutines never suspend (memory://) needs no task of its own: one per joining user was a
        # fifth of what a connect cost (fastws.py then also had to finish the join in a task).
        self._in_loop = book.in_loop
        # The views of users who see nobody but the services (most users): shared, keyed by what they hold (at
        # most two per service, and two more), rather than ~0.5 KB of sets for each connection.
        self._common_views: dict[tuple[frozenset[str], bool], View] = {}
        self._empty_view: tuple[Directory, View] | None = None  # the view of a user with an empty circle

    async def _store(self, work: Awaitable[T]) -> T:
        """A store operation, for at most `store_timeout` seconds (TimeoutError, which callers handle as any store
        failure: a join gets no contacts for now, a call-request or contact frame `service-unavailable`)."""
        return await within(work, self.store_timeout, self.book)

    # ---------------------------------------------------------------------------------------- circles

    async def circle(self, user: str) -> Circle:
        """`user`'s circle: cached, or read from the store. Raises what the store raises."""
        if user in self._circles:
            self._circles.move_to_end(user)
            return self._circles[user] or Circle(user)
        epoch = self._epoch
        work = self.book.circle(user, now=self.clock())
        circle = await (work if self._in_loop else self._store(work))
        if epoch == self._epoch:
            # An empty circle (most users') is kept as None: ~0.7 KB less for each user connected.
            self._circles[user] = None if circle.is_empty() else circle
            if len(self._circles) > _CACHED:
                self._circles.popitem(last=False)
        return circle

    async def fresh(self, user: str) -> Circle:
        """`user`'s circle read from the store now (and cached). Raises what the store raises."""
        self._circles.pop(user, None)
        return await self.circle(user)

    async def current(self, user: str) -> Circle:
        """`user`'s circle for a decision: cached on one node, where every change goes through this cache; read
        from the store in a cluster, where another node's change may still be on its way to this one's cache (so
        that every node decides the same way)."""
        return await (self.fresh(user) if self.shared else self.circle(user))

    def cached(self, user: str) -> Circle | None:
        if user not in self._circles:
            return None
        return self._circles[user] or Circle(user)

    def forget(self, users: list[str]) -> None:
        """These users' circles changed (on some node): read them again when next needed. (A user whose display
        name changed is among them: their name is read again too.)"""
        self._epoch += 1
        for user in users:
            self._circles.pop(user, None)
            self._names.pop(user, None)

    async def set_display_name(self, user: str, name: str) -> list[str]:
        """Keep `user`'s display name (their token's `name` claim). Returns the users whose circles now show
        something new, `user` first, to be told to every node: none when the store had this name already (known
        from the cache: no write then).

        Raises:
            Exception: what the store raises (the caller logs it: the name is kept next time).
        """
        if self._names.get(user) == name:
            self._names.move_to_end(user)
            return []
        change = await self._store(self.book.set_display_name(user, name))
        self._names[user] = name
        if len(self._names) > _CACHED:
            self._names.popitem(last=False)
        if change is ContactChange.UNCHANGED:
            return []
        circle = await self.circle(user)
        # Those who are shown the name: contacts, and those asked (their `incoming`); the user too, so that every
        # node reads the name again (`forget`).
        return [user, *sorted(circle.contacts), *sorted(circle.outgoing)]

    async def names(self, users: list[str]) -> dict[str, str]:
        """The display names of those of `users` that have one (at most MAX_NAMES_ASKED are asked for; the
        first ones). Never raises: a store that fails gives no names (logged)."""
        asked = list(dict.fromkeys(users))[:MAX_NAMES_ASKED]
        if not asked:
            return {}
        try:
            return await self._store(self.book.names(asked))
        except Exception as exc:
            log.warning("could not read the display names of %d users: %s", len(asked), exc)
            return {}

    def view(self, circle: Circle) -> View:
        empty = circle.is_empty() and circle.user not in self.services
        if empty and self._empty_view is not None and self._empty_view[0] is self.directory:
            return self._empty_view[1]  # most users': the same view for all of them, worked out once
        found = social.view(circle, self.directory, self.services)
        if found.hidden or not found.contacts <= self.services:
            return found
        found = self._common_views.setdefault((found.contacts, found.everyone), found)
        if empty:
            self._empty_view = (self.directory, found)
        return found

    def audience(self, circle: Circle) -> Audience:
        return social.audience(circle, self.directory, self.services)

    # --------------------------------------------------------------------------------------- screening

    async def screen(self, caller: str, callee: str) -> Screen:
        """How a call-request from `caller` to `callee` is screened (core/social.py `screen`).

        Raises:
            ProtocolError: `service-unavailable`: the store cannot be read (the call is not placed).
        """
        try:
            caller_circle, callee_circle = await self.current(caller), await self.current(callee)
        except Exception as exc:
            log.warning("could not read the contacts of %s or %s to screen a call: %s", caller, callee, exc)
            raise ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, _STORE_DOWN, ref="call-request", to=callee) from None
        allowed = True
        if self.policy is not None and caller not in callee_circle.blocked:
            allowed = await self._ask_policy(caller, callee)
        return social.screen(
            caller_circle,
            callee_circle,
            directory=self.directory,
            default=self.default_calls_from,
            private=self.private,
            allowed=allowed,
            services=self.services,
        )

    async def _ask_policy(self, caller: str, callee: str) -> bool:
        assert self.policy is not None
        try:
            answer = self.policy(caller, callee)
            if inspect.isawaitable(answer):
                answer = await asyncio.wait_for(answer, _POLICY_TIMEOUT)
            return answer is True
        except Exception as exc:  # the operator's code: whatever it raises refuses this call, and is counted
            self.policy_failures += 1
            if self.policy_failures <= 10 or math.log10(self.policy_failures).is_integer():
                log.warning(
                    "PEERCALL_CALL_POLICY failed (%d times so far), call refused: %r", self.policy_failures, exc
                )
            return False

    # ---------------------------------------------------------------------------------- contact frames

    def check_rate(self, user: str, env: Envelope, now: float) -> None:
        """Spend one of `user`'s contact frames.

        Raises:
            ProtocolError: `rate-limited`.
        """
        bucket = self._buckets.get(user)
        if bucket is None:
            per_minute = self.rate_per_minute
            bucket = self._buckets[user] = TokenBucket(per_minute / 60.0, per_minute, now)
            if len(self._buckets) > _RATED_KEPT:
                del self._buckets[next(iter(self._buckets))]
        if not bucket.take(now):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.rate_per_minute} contact frames a minute; wait a little",
                ref=env.type,
                to=env.to,
            )

    async def apply(self, user: str, env: Envelope) -> list[str]:
        """Carry out a contact frame of `user` other than `directory` (through `messages.parse`). Returns the users
        whose circles changed (`user` first), to be told to every node.

        Raises:
            ProtocolError: `too-many`, or `service-unavailable` (the store failed; nothing changed).
        """
        book, kind, peer, now = self.book, env.type, env.to, self.clock()
        try:
            if kind == "settings":
                settings = messages.data_of(env, Settings)
                assert settings is not None
                value = None if settings.callsFrom is None else CallsFrom(settings.callsFrom)
                await self._store(book.set_calls_from(user, value))
                changed = [user]
            else:
                assert peer is not None
                if kind == "contact-add":
                    add = messages.data_of(env, ContactAdd)
                    change = await self._store(
                        book.add(user, peer, now=now, name=add.name if add is not None else None)
                    )
                elif kind == "contact-decline":
                    change = await self._store(book.decline(user, peer))
                elif kind == "contact-remove":
                    change = await self._store(book.remove(user, peer))
                elif kind == "contact-rename":
                    rename = messages.data_of(env, ContactRename)
                    assert rename is not None
                    change = await self._store(book.rename(user, peer, rename.name))
                elif kind == "block":
                    change = await self._store(book.block(user, peer, now=now))
                else:
                    assert kind == "unblock"
                    change = await self._store(book.unblock(user, peer))
                # Declining and renaming change only the user's own view: the other is never told.
                changed = [user] if kind in ("contact-decline", "contact-rename") else [user, peer]
                if change is ContactChange.UNCHANGED:
                    changed = [user]
        except ContactLimit as exc:
            raise ProtocolError(ErrorCode.TOO_MANY, str(exc), ref=kind, to=peer) from None
        except ProtocolError:
            raise
        except Exception as exc:
            log.warning("%s: could not carry out %s: %s", user, kind, exc)
            raise ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, _STORE_DOWN, ref=kind, to=peer) from None
        self.forget(changed)
        log.info("%s: %s %s", user, kind, peer or "")
        return changed

    def directory_query(self, env: Envelope) -> DirectoryQuery:
        """The query of a `directory` frame.

        Raises:
            ProtocolError: `not-allowed`: this server shows presence to contacts only.
        """
        if self.directory is not Directory.ALL:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "this server lists contacts only", ref=env.type)
        return messages.data_of(env, DirectoryQuery) or DirectoryQuery()

    # ---------------------------------------------------------------------------------------- frames

    def contacts_frame(self, circle: Circle, presences: dict[str, Presence]) -> str:
        """The `contacts` frame of `circle`'s user, with their contacts' presence as `presences` says (a contact
        on either side of a block is shown offline; one who blocked this user as if they had left when they did:
        with no `lastSeen`, which every contact who really left has while the server remembers it, the user
        could tell that they were blocked)."""
        blocked_by = circle.blocked_by
        hidden = set(circle.blocked) | blocked_by.keys()
        names = circle.display_names
        entries = []
        for contact in sorted(circle.contacts.values(), key=lambda c: c.id):
            seen = presences.get(contact.id)
            shown = names.get(contact.id)
            if seen is None or contact.id in hidden or seen.status != "online":
                last: float | None
                if contact.id in blocked_by:
                    last = blocked_by[contact.id]
                else:
                    last = None if seen is None or contact.id in hidden else seen.last_seen
                entries.append(
                    messages.contact_entry(
                        contact.id, contact.name, contact.since, "offline", last_seen=last, display_name=shown
                    )
                )
            else:
                entries.append(
                    messages.contact_entry(
                        contact.id, contact.name, contact.since, "online", seen.in_call, display_name=shown
                    )
                )
        incoming = []
        for u, at in sorted(circle.incoming.items(), key=lambda kv: kv[1]):
            request: dict[str, object] = {"id": u, "at": at}
            if u in names:
                request["displayName"] = names[u]
            incoming.append(request)
        return messages.contacts(
            entries,
            incoming,
            [{"id": u, "at": at} for u, at in sorted(circle.outgoing.items(), key=lambda kv: kv[1])],
            [{"id": u, "at": at} for u, at in sorted(circle.blocked.items(), key=lambda kv: kv[1])],
            None if circle.calls_from is None else circle.calls_from.value,
            self.default_calls_from.value,
            self.directory.value,
        )


def relations(circle: Circle) -> tuple[object, ...]:
    """What a `contacts` frame says besides presence: compared to tell whether a user must get a new one."""
    return (
        tuple(sorted((c.id, c.name, c.since) for c in circle.contacts.values())),
        tuple(sorted(circle.incoming.items())),
        tuple(sorted(circle.outgoing.items())),
        tuple(sorted(circle.blocked.items())),
        circle.calls_from,
        tuple(sorted(circle.display_names.items())),
    )
