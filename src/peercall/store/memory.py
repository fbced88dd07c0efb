"""An in-process call history and contact book (`memory://`): for tests and for servers that need nothing kept
across restarts.

Owns a dict of records, and the contacts, requests, blocks, ring settings and display names in dicts indexed both ways.
Nothing is persisted: each instance starts empty and forgets everything when dropped.
No method awaits while it reads or changes state, so every method is atomic on the event loop.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

from ..core.records import CallRecord
from ..core.social import (
    HIDDEN_FROM_CALLEE,
    MAX_BLOCKED,
    MAX_CONTACTS,
    MAX_INCOMING,
    MAX_OUTGOING,
    CallsFrom,
    Circle,
    Contact,
)
from .base import (
    MISSED_PER_CALLER,
    MISSED_SHOWN,
    PRUNE_BATCH,
    UNANSWERED_OUTCOMES,
    ContactChange,
    ContactLimit,
    check_limit,
    check_name,
    check_names_asked,
    check_pair,
    check_user,
    decode_cursor,
    encode_cursor,
    expired,
)
from .memory_accounts import MemoryAccounts
from .memory_push import MemoryPush


def _order(rec: CallRecord) -> tuple[float, str]:
    return (rec.ringing_at, rec.call_id)


def _listed_for(rec: CallRecord, user: str) -> bool:
    if rec.caller == user:
        return True
    return rec.callee == user and rec.screened not in HIDDEN_FROM_CALLEE


V = TypeVar("V")


class _Index(dict[str, dict[str, V]]):
    """user -> their entries. Reading a user with none gives an empty dict without storing it (lookups of ids
    nobody uses leave nothing behind); `of` gives the stored one, for writing."""

    def __missing__(self, user: str) -> dict[str, V]:
        return {}

    def of(self, user: str) -> dict[str, V]:
        return self.setdefault(user, {})


@dataclasses.dataclass(slots=True)
class _Request:
    at: float
    name: str | None = None  # the sender's name for the recipient, given to their contact once it is accepted
    declined: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _Block:
    at: float
    name: str | None  # the blocker's name for the contact the block took away, restored by unblock


class MemoryHistory(MemoryAccounts, MemoryPush):
    """`CallHistory` and `ContactBook` in dicts: calls keyed by call_id, relations by user both ways."""

    in_loop = True
    """Its coroutines never suspend and need no task (hub/social.py reads a circle without starting one)."""
    cancellable = True

    def __init__(self) -> None:
        MemoryAccounts.__init__(self)
        MemoryPush.__init__(self)
        self._calls: dict[str, CallRecord] = {}
        self._taken: set[str] = set()
        self._waiting: collections.Counter[tuple[str, str]] = collections.Counter()  # (callee, caller) -> not taken
        # callee -> the ids of their missed calls not taken yet: `take_missed` runs at every connect, and reads only
        # these (bounded as `_waiting` is: MISSED_PER_CALLER per caller), not every stored call
        self._missed: _Index[None] = _Index()
        self._contacts: _Index[Contact] = _Index()  # owner -> peer -> contact
        self._outgoing: _Index[_Request] = _Index()  # sender -> recipient -> request
        self._incoming: _Index[None] = _Index()  # recipient -> senders
        self._blocks: _Index[_Block] = _Index()  # owner -> blocked -> block
        self._blocked_by: _Index[None] = _Index()  # blocked -> owners
        self._calls_from: dict[str, CallsFrom] = {}
        self._display_names: dict[str, str] = {}
        self._kept_calls: dict[str, bytes] = {}  # node -> its calls under way, as it stopped (`keep_calls`)

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the records stay until the instance is dropped."""

    async def record(self, rec: CallRecord, *, notified: bool = False) -> None:
        if rec.call_id in self._calls:
            return
        if rec.screened is not None:
            notified = True  # a screened call never rang: nothing to hand out as missed
        if not notified and rec.outcome in UNANSWERED_OUTCOMES:
            notified = self._waiting[rec.callee, rec.caller] >= MISSED_PER_CALLER
            if not notified:
                self._waiting[rec.callee, rec.caller] += 1
        self._calls[rec.call_id] = rec
        if notified:
            self._taken.add(rec.call_id)
        elif rec.outcome in UNANSWERED_OUTCOMES:
            self._missed.of(rec.callee)[rec.call_id] = None

    async def record_many(self, records: Sequence[tuple[CallRecord, bool]]) -> None:
        for rec, notified in records:
            await self.record(rec, notified=notified)

    async def calls_for(
        self, user: str, *, limit: int = 50, before: str | None = None
    ) -> tuple[list[CallRecord], str | None]:
        check_limit(limit)
        after = None if before is None else decode_cursor(before)
        mine = sorted(
            (r for r in self._calls.values() if _listed_for(r, user) and (after is None or _order(r) < after)),
            key=_order,
            reverse=True,
        )
        page = mine[:limit]
        return page, encode_cursor(page[-1]) if len(mine) > limit else None

    async def add_quality(self, call_id: str, user: str, summary: dict[str, Any]) -> bool:
        rec = self._calls.get(call_id)
        if rec is None:
            return False
        if user not in (rec.quality or {}):
            self._calls[call_id] = dataclasses.replace(rec, quality={**(rec.quality or {}), user: dict(summary)})
        return True

    async def take_missed(self, user: str, *, limit: int = MISSED_SHOWN) -> tuple[list[CallRecord], int]:
        check_limit(limit)
        ids = self._missed.pop(user, None)
        if not ids:
            return [], 0
        fresh = sorted((self._calls[call_id] for call_id in ids), key=_order)
        self._taken.update(ids)
        for rec in fresh:
            self._uncount(user, rec.caller)
        return fresh[-limit:], len(fresh)

    def _uncount(self, callee: str, caller: str) -> None:
        key = (callee, caller)
        self._waiting[key] -= 1
        if self._waiting[key] <= 0:
            del self._waiting[key]

    async def keep_calls(self, node: str, state: bytes) -> None:
        self._kept_calls[node] = state

    async def take_calls(self, node: str) -> bytes | None:
        return self._kept_calls.pop(node, None)

    async def delete_ended_before(self, cutoff: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        old = sorted((r for r in self._calls.values() if r.ended_at < cutoff), key=lambda r: r.ended_at)[:limit]
        for rec in old:
            del self._calls[rec.call_id]
            if rec.call_id in self._taken:
                self._taken.discard(rec.call_id)
            elif rec.outcome in UNANSWERED_OUTCOMES:
                self._uncount(rec.callee, rec.caller)
                missed = self._missed[rec.callee]
                missed.pop(rec.call_id, None)
                if not missed:
                    self._missed.pop(rec.callee, None)
        return len(old)

    # -- ContactBook ----------------------------------------------------------------------------------------------

    async def circle(self, user: str, *, now: float) -> Circle:
        if not (
            user in self._blocks
            or user in self._incoming
            or user in self._blocked_by
            or user in self._contacts
            or user in self._outgoing
            or user in self._calls_from
        ):
            return Circle(user)  # most users (every one in open mode): read at each connect
        blocked = self._blocks.get(user, {})
        incoming = {}
        for sender in self._incoming.get(user, ()):
            req = self._outgoing[sender][user]
            if not req.declined and sender not in blocked and not expired(req.at, now):
                incoming[sender] = req.at
        newest_in = sorted(incoming.items(), key=lambda item: (item[1], item[0]), reverse=True)[:MAX_INCOMING]
        by = self._blocked_by[user]
        contacts = dict(self._contacts.get(user, {}))
        shown = [*contacts, *(sender for sender, _ in newest_in)]
        names = {u: self._display_names[u] for u in shown if u in self._display_names}
        newest_by = sorted(by, key=lambda owner: (self._blocks[owner][user].at, owner), reverse=True)[:MAX_BLOCKED]
        return Circle(
            user=user,
            contacts=contacts,
            incoming=dict(newest_in),
            outgoing={p: r.at for p, r in self._outgoing.get(user, {}).items() if not expired(r.at, now)},
            blocked={p: b.at for p, b in blocked.items()},
            blocked_by={owner: self._blocks[owner][user].at for owner in newest_by},
            calls_from=self._calls_from.get(user),
            display_names=names,
        )

    async def add(self, user: str, peer: str, *, now: float, name: str | None = None) -> ContactChange:
        check_pair(user, peer)
        check_name(name)
        mine = self._contacts.of(user)
        if peer in mine:
            if name is not None:
                mine[peer] = dataclasses.replace(mine[peer], name=name)
            return ContactChange.UNCHANGED
        block = self._blocks[user].get(peer)
        theirs = self._contacts[peer].get(user)
        asked = self._outgoing[peer].get(user)
        if theirs is not None or (asked is not None and not expired(asked.at, now)):
            if len(mine) >= MAX_CONTACTS:
                raise ContactLimit(f"{user} has {MAX_CONTACTS} contacts: remove some first")
            if theirs is None and len(self._contacts[peer]) >= MAX_CONTACTS:
                raise ContactLimit(f"{peer} has {MAX_CONTACTS} contacts")
            if block is not None:
                self._unblock(user, peer)
            since = now if theirs is None else theirs.since
            mine[peer] = Contact(peer, name if name is not None else block.name if block else None, since)
            self._contacts.of(peer).setdefault(user, Contact(user, asked.name if asked else None, since))
            self._drop_request(user, peer)
            self._drop_request(peer, user)
            return ContactChange.CONNECTED
        out = self._outgoing.of(user)
        current = out.get(peer)
        if current is not None and not expired(current.at, now):
            if name is not None:
                current.name = name
            if block is not None:
                self._unblock(user, peer)
                return ContactChange.UPDATED
            return ContactChange.UNCHANGED
        if sum(1 for r in out.values() if not expired(r.at, now)) >= MAX_OUTGOING:
            raise ContactLimit(f"{user} has {MAX_OUTGOING} requests waiting for an answer: withdraw some first")
        if block is not None:
            self._unblock(user, peer)
        self._drop_request(user, peer)
        if user not in self._blocks[peer]:
            visible = [
                s for s in self._incoming[peer] if s not in self._blocks[peer] and not self._outgoing[s][peer].declined
            ]
            visible.sort(key=lambda s: (self._outgoing[s][peer].at, s))
            for sender in visible[: max(0, len(visible) - MAX_INCOMING + 1)]:
                self._drop_request(sender, peer)
        out[peer] = _Request(now, name)
        self._incoming.of(peer)[user] = None
        return ContactChange.REQUESTED

    def _drop_request(self, sender: str, recipient: str) -> bool:
        if self._outgoing[sender].pop(recipient, None) is None:
            return False
        self._incoming[recipient].pop(sender, None)
        return True

    async def decline(self, user: str, peer: str) -> ContactChange:
        check_pair(user, peer)
        req = self._outgoing[peer].get(user)
        if req is None or req.declined:
            return ContactChange.UNCHANGED
        req.declined = True
        return ContactChange.REMOVED

    async def remove(self, user: str, peer: str) -> ContactChange:
        check_pair(user, peer)
        gone = self._contacts[user].pop(peer, None) is not None
        gone = (self._contacts[peer].pop(user, None) is not None) or gone
        gone = self._drop_request(user, peer) or gone
        return ContactChange.REMOVED if gone else ContactChange.UNCHANGED

    async def rename(self, user: str, peer: str, name: str | None) -> ContactChange:
        check_pair(user, peer)
        check_name(name)
        contact = self._contacts[user].get(peer)
        if contact is None or contact.name == name:
            return ContactChange.UNCHANGED
        self._contacts.of(user)[peer] = dataclasses.replace(contact, name=name)
        return ContactChange.UPDATED

    async def block(self, user: str, peer: str, *, now: float) -> ContactChange:
        check_pair(user, peer)
        blocks = self._blocks.of(user)
        if peer in blocks:
            return ContactChange.UNCHANGED
        if len(blocks) >= MAX_BLOCKED:
            raise ContactLimit(f"{user} blocked {MAX_BLOCKED} users: unblock some first")
        contact = self._contacts[user].pop(peer, None)
        self._drop_request(user, peer)
        blocks[peer] = _Block(now, None if contact is None else contact.name)
        self._blocked_by.of(peer)[user] = None
        return ContactChange.UPDATED

    async def unblock(self, user: str, peer: str) -> ContactChange:
        check_pair(user, peer)
        if peer not in self._blocks[user]:
            return ContactChange.UNCHANGED
        self._unblock(user, peer)
        return ContactChange.REMOVED

    def _unblock(self, user: str, peer: str) -> None:
        block = self._blocks[user].pop(peer)
        self._blocked_by[peer].pop(user, None)
        theirs = self._contacts[peer].get(user)
        if theirs is None:
            return
        if len(self._contacts[user]) < MAX_CONTACTS:
            self._contacts.of(user)[peer] = Contact(peer, block.name, theirs.since)
        else:
            del self._contacts[peer][user]  # no room to restore it: they are no longer contacts, on either side

    async def set_calls_from(self, user: str, value: CallsFrom | None) -> ContactChange:
        if self._calls_from.get(user) == value:
            return ContactChange.UNCHANGED
        if value is None:
            del self._calls_from[user]
        else:
            self._calls_from[user] = CallsFrom(value)
        return ContactChange.UPDATED

    async def set_display_name(self, user: str, name: str | None) -> ContactChange:
        check_user(user)
        check_name(name, "a display name")
        if self._display_names.get(user) == name:
            return ContactChange.UNCHANGED
        if name is None:
            del self._display_names[user]
        else:
            self._display_names[user] = name
        return ContactChange.UPDATED

    async def names(self, users: Collection[str]) -> dict[str, str]:
        return {u: self._display_names[u] for u in check_names_asked(users) if u in self._display_names}

    async def import_contacts(self, pairs: Sequence[tuple[str, str]], *, now: float) -> int:
        for a, b in pairs:
            check_pair(a, b)
        new = 0
        for a, b in pairs:
            added = False
            for owner, peer in ((a, b), (b, a)):
                if peer not in self._contacts[owner] and peer not in self._blocks[owner]:
                    since = self._contacts[peer][owner].since if owner in self._contacts[peer] else now
                    self._contacts.of(owner)[peer] = Contact(peer, None, since)
                    added = True
            if added:
                self._drop_request(a, b)
                self._drop_request(b, a)
                new += 1
        return new

    async def delete_expired_requests(self, now: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        old = sorted(
            ((r.at, sender, recipient) for sender, out in self._outgoing.items() for recipient, r in out.items()),
        )
        gone = [(s, r) for at, s, r in old if expired(at, now)][:limit]
        for sender, recipient in gone:
            self._drop_request(sender, recipient)
        return len(gone)
