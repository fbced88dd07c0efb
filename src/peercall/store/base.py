"""The call-history contract: what every store promises, and the paging cursor they all share.

Owns the `CallHistory` Protocol and the cursor format. Imports the stdlib and `core.records` only: no database
driver, no SQLAlchemy, no asyncio.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from collections.abc import Collection, Sequence
from enum import StrEnum
from typing import Any, Protocol

import msgspec

from ..core.records import CallRecord, Outcome
from ..core.social import MAX_NAME, REQUEST_TTL, CallsFrom, Circle

UNANSWERED_OUTCOMES = frozenset({Outcome.MISSED, Outcome.UNAVAILABLE})
"""The outcomes that `take_missed` hands out: the callee never got the chance to answer."""

MISSED_PER_CALLER = 3
"""How many calls one caller may leave in one callee's missed calls (not yet taken): a caller's further unanswered
calls are written as if the callee had seen them (`notified`), so a flood of call-requests to someone offline
leaves them a few missed calls, not thousands. They are still in the history (`calls_for`)."""

MISSED_SHOWN = 50
"""How many missed calls `take_missed` returns at most (the newest), with the count of all it handed out."""

PRUNE_BATCH = 1000
"""How many records `delete_ended_before` deletes at most in one call (one short transaction)."""


class Waits(Protocol):
    """How a store's operations wait, for whoever awaits them (every store protocol below has these)."""

    @property
    def in_loop(self) -> bool:
        """True if no operation ever suspends (memory://): it may be awaited with no task of its own, and needs no
        deadline (hub/social.py, the hub's join)."""
        ...

    @property
    def cancellable(self) -> bool:
        """Whether an operation may be cut off mid-way by a deadline (hub/deadline.py `within`); False: it is awaited
        as long as it takes, and its own timeouts bound it (SQLite)."""
        ...


class CallHistory(Waits, Protocol):
    """Where ended calls are kept.

    Every method may raise whatever the database raises (connection lost, disk full): the caller logs and counts
    such errors, and calling goes on without history. Records come back equal to what was written: same floats,
    same Nones, `Outcome` and `Reason` members.
    """

    async def open(self) -> None:
        """Connect, and create the schema or upgrade it to the current version.

        Upgrading runs in one transaction and is idempotent: opening an up-to-date store changes nothing, and
        two processes opening the same store at once upgrade it once.

        Raises:
            RuntimeError: the store was written by a newer peercall whose schema this one does not know.
        """
        ...

    async def close(self) -> None:
        """Release connections. The store may be opened again afterwards."""
        ...

    async def record(self, rec: CallRecord, *, notified: bool = False) -> None:
        """Write one ended call.

        Idempotent on `call_id`: writing a call_id that is already stored does nothing, and the first record
        written stays (it is never updated or duplicated), `notified` included.

        An unanswered call (`missed`, `unavailable`) is written as `notified` when the callee already has
        `MISSED_PER_CALLER` calls of the same caller not yet taken by `take_missed` (counted in this store's
        transaction: writers in two processes at once may each let one more through).

        Args:
            rec: the call.
            notified: the callee already saw this call as it happened (they were online while it rang), so
                `take_missed` never hands it out; it is still listed by `calls_for`.
        """
        ...

    async def record_many(self, records: Sequence[tuple[CallRecord, bool]]) -> None:
        """Write several ended calls, `(record, notified)` each, as `record` would one by one (the hub hands
        over the calls that ended while the previous write was under way: one transaction for all of them)."""
        ...

    async def calls_for(
        self, user: str, *, limit: int = 50, before: str | None = None
    ) -> tuple[list[CallRecord], str | None]:
        """One page of `user`'s own calls, as caller or callee, newest first.

        Order: `ringing_at` descending, then `call_id` descending (code-point order) among equal times, so a
        page boundary never splits or repeats calls that rang at the same instant.

        Args:
            user: whose calls; other users' calls are never included.
            limit: the most records to return (at least 1).
            before: the cursor returned with the previous page, or None for the first page.

        Returns:
            The page, and an opaque cursor for the next page, or None when this page is the last.

        Raises:
            ValueError: `before` is not a cursor that `calls_for` returned, or `limit` is below 1.
        """
        ...

    async def add_quality(self, call_id: str, user: str, summary: dict[str, Any]) -> bool:
        """Keep what `user`'s client reported of call `call_id` (its `call-summary`) with the call's record.

        Each party's summary is kept under its user id; a second summary from the same user changes nothing (one
        per party: the nodes of a cluster each refuse a repeat, this refuses one sent through another node).
        Returns False (and changes nothing) when no record of that call exists.
        """
        ...

    async def take_missed(self, user: str, *, limit: int = MISSED_SHOWN) -> tuple[list[CallRecord], int]:
        """Hand out the calls to `user` that they never got to answer, once.

        Takes the records whose callee is `user`, whose outcome is `missed` or `unavailable`, that were not written
        `notified`, and that no earlier `take_missed` took. They are all marked taken in one atomic step, so two
        concurrent callers (in this process or another one) never both get the same record. A record taken is
        never handed out again, even if the caller then loses it.

        Returns:
            The newest `limit` of the records taken, oldest first (`ringing_at`, then `call_id`), and how many
            records were taken in all.

        Raises:
            ValueError: `limit` is below 1.
        """
        ...

    async def keep_calls(self, node: str, state: bytes) -> None:
        """Keep what node `node` hands over as it stops (its calls under way, encoded: opaque here), replacing
        what it kept before, for `take_calls` at its next start."""
        ...

    async def take_calls(self, node: str) -> bytes | None:
        """What node `node` kept with `keep_calls` (None: nothing), forgotten at once: handed out once."""
        ...

    async def delete_ended_before(self, cutoff: float, *, limit: int = PRUNE_BATCH) -> int:
        """Delete at most `limit` records of calls that ended before `cutoff` (seconds since the epoch), oldest
        first: the history's retention (`PEERCALL_HISTORY_RETENTION`). Bounded, so that the caller can delete a
        large backlog in short steps.

        Returns:
            How many records were deleted: fewer than `limit` when none older is left.

        Raises:
            ValueError: `limit` is below 1.
        """
        ...


class ContactChange(StrEnum):
    """What a contact operation did, as `ContactBook` reports it."""

    REQUESTED = "requested"  # a request now waits for the other's answer (or vanished: the other blocked us)
    CONNECTED = "connected"  # the two are contacts now (the other had asked us: this answered it)
    REMOVED = "removed"  # a contact, a request or a block is gone
    UPDATED = "updated"  # a name, a block or a setting changed
    UNCHANGED = "unchanged"  # it was so already (every operation is idempotent)


class ContactLimit(Exception):
    """An operation would take a list over its bound (core.social MAX_CONTACTS, MAX_OUTGOING, MAX_BLOCKED).
    Nothing was changed. The message says which list, for the `too-many` error."""


class ContactBook(Waits, Protocol):
    """Where contacts, requests, blocks and ring settings are kept (core/social.py has the rules).

    Every operation is one transaction, idempotent, and never fails because the other user does not exist: a user
    id is only ever checked for its form (nothing here tells whether anyone uses an id). `now` is Unix seconds.
    Operations return what they did; the caller tells both users' devices (`circle` of each).
    Every method may raise what the database raises, and `ContactLimit` where it says so.
    """

    async def circle(self, user: str, *, now: float) -> Circle:
        """Everything about `user`'s relations (requests older than core.social.REQUEST_TTL are left out;
        `incoming` holds the newest MAX_INCOMING at most, `blocked_by` the newest MAX_BLOCKED)."""
        ...

    async def add(self, user: str, peer: str, *, now: float, name: str | None = None) -> ContactChange:
        """`user` asks `peer` to be contacts, or accepts `peer`'s request (CONNECTED). `name` is `user`'s name for
        `peer`: kept with a request, and given to `user`'s contact when `peer` accepts it. Already contacts:
        UNCHANGED (a `name` given is set all the same). `peer` blocked by `user`: the block is lifted first.
        `peer` blocked `user`: stored as asked (REQUESTED), but `peer` never sees it. `peer` keeps at most
        MAX_INCOMING requests: a newer one drops the oldest (requests `peer` declined, or from users `peer`
        blocked, are not shown to `peer` and take no room). Asking again while a request waits: UNCHANGED (it keeps
        its time; a `name` given replaces the request's); once it expired, it is made anew. A request `user`
        declined earlier is still accepted by this (they changed their mind). Connecting by accepting keeps `since`
        equal on both sides.

        Raises:
            ContactLimit: `user` has MAX_CONTACTS contacts (when this would connect; also when `peer` has them, so
                that nobody ends up over the bound) or MAX_OUTGOING requests.
            ValueError: `user` is `peer`, an id is empty, or `name` is not 1 to MAX_NAME characters.
        """
        ...

    async def decline(self, user: str, peer: str) -> ContactChange:
        """`user` declines `peer`'s request (REMOVED; UNCHANGED if there was none). `peer` is not told: their
        request stays in their `outgoing` until it expires, as one that is never answered, and asking again is
        UNCHANGED. `user` may still accept it later (`add`) while it waits."""
        ...

    async def remove(self, user: str, peer: str) -> ContactChange:
        """`user` and `peer` are no longer contacts (both lose the other), and `user`'s request to `peer`, if any,
        is withdrawn. REMOVED if any of that was there. Removing someone `user` blocked also takes `user` from
        `peer`'s contacts, so that unblocking them later does not restore the contact."""
        ...

    async def rename(self, user: str, peer: str, name: str | None) -> ContactChange:
        """`user`'s own name for their contact `peer` (None: none). UNCHANGED if `peer` is not a contact."""
        ...

    async def block(self, user: str, peer: str, *, now: float) -> ContactChange:
        """`user` blocks `peer`: `peer` leaves `user`'s contacts (not the other way round), requests between them
        are dropped from `user`'s side (`peer`'s own request stays in `peer`'s `outgoing`, hidden from `user`).
        UPDATED, or UNCHANGED if already blocked. The name `user` gave `peer` is kept with the block for `unblock`.

        Raises:
            ContactLimit: `user` already blocked MAX_BLOCKED users.
        """
        ...

    async def unblock(self, user: str, peer: str) -> ContactChange:
        """Lift the block (REMOVED; UNCHANGED if there was none): if `peer` still has `user` as a contact (neither
        removed the other meanwhile), they are contacts again, with the name and `since` they had. Should `user`
        meanwhile have MAX_CONTACTS contacts, there is no room to restore it: `peer` loses `user` too (as if `user`
        had removed them), so that contacts stay mutual and bounded. `peer`'s request hidden by the block shows
        again if it has not expired."""
        ...

    async def set_calls_from(self, user: str, value: CallsFrom | None) -> ContactChange:
        """`user`'s ring setting (None: the operator's default)."""
        ...

    async def set_display_name(self, user: str, name: str | None) -> ContactChange:
        """`user`'s display name (what their latest token's `name` claim said; None: none). UPDATED, or UNCHANGED
        if it was so already. `circle` of their contacts and of those they asked shows it (`display_names`).

        Raises:
            ValueError: `user` is empty, or `name` is not 1 to MAX_NAME characters.
        """
        ...

    async def names(self, users: Collection[str]) -> dict[str, str]:
        """The display names of those of `users` that have one (one query).

        Raises:
            ValueError: more than MAX_NAMES_ASKED users.
        """
        ...

    async def import_contacts(self, pairs: Sequence[tuple[str, str]], *, now: float) -> int:
        """Make each pair contacts (an operator's existing social graph, the benchmark's users), in one
        transaction, ignoring the bounds. Returns how many pairs were new (not contacts on either side before).
        Requests between the two are dropped. A block wins: the blocker's side is not made (as after `block`),
        so unblocking later restores the contact.

        Raises:
            ValueError: a pair names one user twice or an empty id (nothing is changed).
        """
        ...

    async def delete_expired_requests(self, now: float, *, limit: int = PRUNE_BATCH) -> int:
        """Delete at most `limit` requests older than REQUEST_TTL, oldest first. Returns how many.

        Raises:
            ValueError: `limit` is below 1.
        """
        ...


def check_user(user: str) -> None:
    """Raise ValueError unless `user` is a non-empty string."""
    if not isinstance(user, str) or not user:
        raise ValueError(f"a user id must be a non-empty string, got {user!r}")


def check_pair(user: str, peer: str) -> None:
    """Raise ValueError unless `user` and `peer` are two different, non-empty user ids (their form is the
    protocol's business: the store only refuses what it could not keep)."""
    for who in (user, peer):
        if not isinstance(who, str) or not who:
            raise ValueError(f"a user id must be a non-empty string, got {who!r}")
    if user == peer:
        raise ValueError(f"{user!r} cannot be their own contact")


def check_name(name: str | None, what: str = "a contact's name") -> None:
    """Raise ValueError unless `name` is None or 1 to core.social.MAX_NAME characters."""
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME):
        raise ValueError(f"{what} is 1 to {MAX_NAME} characters or none, got {name!r}")


MAX_NAMES_ASKED = 500
"""Users whose display names one `ContactBook.names` call may ask for."""


def check_names_asked(users: Collection[str]) -> list[str]:
    """`users` without repeats. Raises ValueError for more than MAX_NAMES_ASKED of them."""
    unique = list(dict.fromkeys(users))
    if len(unique) > MAX_NAMES_ASKED:
        raise ValueError(f"asked for the display names of {len(unique)} users: at most {MAX_NAMES_ASKED}")
    return unique


def expired(at: float, now: float) -> bool:
    """Whether a request made at `at` is older than REQUEST_TTL at `now`."""
    return at < now - REQUEST_TTL


# -- Accounts (PEERCALL_AUTH=accounts) ---------------------------------------------------------------------------

MAX_INVITES_PER_ADMIN = 50
"""Invites one administrator may have waiting (not used, not expired) at once."""

MAX_SESSIONS_PER_USER = 20
"""Sign-ins one user keeps at once: a new one beyond this ends the one used least recently."""

MAX_CREDENTIALS_PER_USER = 10
"""Sign-in methods (a password, passkeys) one user may have."""

REVOKED_KEPT = 7200.0
"""Seconds a revoked sign-in is kept (so that every node learns of it: `revoked_since`) before it is pruned: more
than the longest signaling token lives (PEERCALL_ACCOUNTS_TOKEN_TTL, at most 3,600 s) plus the clock skew and the
refresh that `revoked_since` covers. It was a day: one account signing in again and again (each 21st sign-in
revokes the oldest) grew the table faster than it was pruned, slowing every user's sign-in."""


class AccountLimit(Exception):
    """An operation would take a list over its bound (MAX_INVITES_PER_ADMIN, MAX_CREDENTIALS_PER_USER). Nothing
    was changed; the message says which list."""


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """A person with an account. `id` is what the protocol calls a user id; `name` is their display name."""

    id: str
    name: str
    admin: bool = False
    disabled: bool = False
    created: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Credential:
    """A way for `user` to sign in. `kind` `password`: `secret` is an argon2id hash (PHC string), `key` is empty.
    `kind` `passkey` (WebAuthn): `key` is the credential id (base64url), `secret` its public key, sign count,
    transports and name as auth/accounts.py `Passkey` encodes them (JSON; a public key is no secret, but it is
    kept where the other sign-in methods keep theirs). A passkey's credential id is unique across users."""

    user: str
    kind: str
    key: str
    secret: str
    created: float = 0.0
    last_used: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Invite:
    """A one-time, expiring invitation. Only `token_hash` (SHA-256 of the token in the link) is stored.
    `created_by` is the administrator who made it (empty for the first administrator's set-up link);
    `admin` makes whoever uses it an administrator."""

    token_hash: str
    created_by: str
    created: float
    expires: float
    admin: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class AccountSession:
    """A sign-in: `id` is public (in signaling tokens' `sid`, in lists of sessions); `secret_hash` is the SHA-256
    of the secret in the browser's cookie, which is never stored. `revoked` is when it was ended (None: live)."""

    id: str
    user: str
    secret_hash: str
    created: float
    last_used: float
    expires: float
    user_agent: str = ""
    revoked: float | None = None


class SignUp(StrEnum):
    """What `Accounts.sign_up` did."""

    DONE = "done"
    NO_INVITE = "no-invite"  # unknown, used or expired: all the same to whoever holds the link
    ID_TAKEN = "id-taken"  # someone has that id (the invite is not used up)


class Accounts(Protocol):
    """Users, their sign-in methods, invites and sign-ins (server/accounts.py has the rules; auth/accounts.py the
    hashing). Every operation is one transaction. `now` is Unix seconds. Secrets never reach the store: invites
    and sessions are looked up by a hash of their token. Every method may raise what the database raises."""

    async def add_user(self, user: User, credential: Credential | None = None) -> bool:
        """Create `user` (with a first sign-in method). False, and nothing changed, if the id is taken."""
        ...

    async def user(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        ...

    async def users(self, *, limit: int = 100, after: str | None = None) -> list[User]:
        """A page of users by id (code-point order), those after `after`.

        Raises:
            ValueError: `limit` is below 1.
        """
        ...

    async def count_users(self) -> int:
        """How many users there are (0: the first administrator has not signed up yet)."""
        ...

    async def set_disabled(self, user_id: str, disabled: bool, *, now: float) -> bool:
        """Disable or enable a user; disabling also revokes all their sessions. False if no such user."""
        ...

    async def credentials(self, user_id: str) -> list[Credential]:
        """The user's sign-in methods, oldest first."""
        ...

    async def set_credential(self, credential: Credential) -> None:
        """Add a sign-in method, or replace the one of the same user, kind and key (a new password hash).

        Raises:
            AccountLimit: the user has MAX_CREDENTIALS_PER_USER already.
            ValueError: another user has a passkey with this credential id.
        """
        ...

    async def credential(self, kind: str, key: str) -> Credential | None:
        """The sign-in method of this kind and key, whoever's it is (a passkey by its credential id), or None.
        Not for `password` (its key is empty for every user)."""
        ...

    async def use_credential(self, credential: Credential, *, now: float) -> bool:
        """The sign-in method was used now: its `secret` becomes `credential.secret` (a passkey's new sign count)
        and its `last_used` `now`. False, and nothing changed, if it is gone."""
        ...

    async def delete_credential(self, user_id: str, kind: str, key: str) -> bool:
        """Remove one of the user's sign-in methods. False if there is no such method.

        Raises:
            AccountLimit: it is the user's last one (an account always keeps a way to sign in).
        """
        ...

    async def add_invite(self, invite: Invite, *, now: float) -> None:
        """Keep an invite. Expired invites of its maker are pruned first.

        Raises:
            AccountLimit: its maker has MAX_INVITES_PER_ADMIN invites waiting.
        """
        ...

    async def invite(self, token_hash: str, *, now: float) -> Invite | None:
        """The invite with this hash if it is still waiting (not used, not expired)."""
        ...

    async def drop_invites(self, created_by: str) -> int:
        """Delete every invite `created_by` made (the set-up link is remade at each start). Returns how many."""
        ...

    async def sign_up(self, token_hash: str, user: User, credential: Credential, *, now: float) -> SignUp:
        """Use an invite up (once, atomically: two sign-ups with one link never both succeed) to create `user`
        with `credential`; the user is an administrator if the invite says so (`user.admin` is ignored)."""
        ...

    async def add_session(self, session: AccountSession) -> list[str]:
        """Keep a sign-in. The user's oldest live sessions beyond MAX_SESSIONS_PER_USER are revoked: their ids
        are returned (their sockets should be closed)."""
        ...

    async def session(self, secret_hash: str, *, now: float, touch: bool = True) -> AccountSession | None:
        """The live session whose secret has this hash: not revoked, not expired, its user not disabled.
        `touch`: it was used now (`last_used`; `expires` moves to `now` plus its original length)."""
        ...

    async def sessions(self, user_id: str, *, now: float) -> list[AccountSession]:
        """The user's live sessions, most recently used first (at most MAX_SESSIONS_PER_USER)."""
        ...

    async def revoke_session(self, session_id: str, *, now: float, user_id: str | None = None) -> bool:
        """End one session (only if it is `user_id`'s, when given). False if there was no such live session."""
        ...

    async def revoke_sessions(self, user_id: str, *, now: float, keep: str | None = None) -> list[str]:
        """End all the user's live sessions but `keep`; their ids."""
        ...

    async def revoked_since(self, since: float) -> list[str]:
        """Ids of sessions revoked at or after `since` (kept for REVOKED_KEPT seconds)."""
        ...

    async def prune_accounts(self, now: float, *, limit: int = PRUNE_BATCH) -> int:
        """Delete at most `limit` expired invites and sessions expired or revoked over REVOKED_KEPT ago.

        Raises:
            ValueError: `limit` is below 1.
        """
        ...


# -- Web Push (PEERCALL_PUSH) ---------------------------------------------------------------------------------

MAX_PUSH_SUBSCRIPTIONS = 10
"""Push subscriptions one user keeps (one per device): a new one beyond this drops the oldest."""


@dataclasses.dataclass(frozen=True, slots=True)
class PushSubscription:
    """Where a browser of `user` (its `device` id, as the web client names itself) is woken by Web Push: the push
    service's `endpoint` (unique: a push service hands each subscription its own), and the browser's keys for
    RFC 8291 message encryption (`p256dh`, the P-256 public key, and `auth`, both base64url as the browser's
    PushSubscription JSON has them). `last_success`: when a push was last accepted by the push service."""

    user: str
    device: str
    endpoint: str
    p256dh: str
    auth: str
    created: float
    last_success: float | None = None


class PushSubscriptions(Waits, Protocol):
    """Where push subscriptions are kept (hub/push.py sends the pushes). Every method is one transaction and may
    raise what the database raises."""

    async def add_push_subscription(self, subscription: PushSubscription) -> None:
        """Keep `subscription`. It replaces the one with the same endpoint (whoever's it was: the browser moved
        it to another user) and the one of the same user and device; beyond MAX_PUSH_SUBSCRIPTIONS, the user's
        oldest (by `created`) are dropped."""
        ...

    async def push_subscriptions(self, user: str) -> list[PushSubscription]:
        """`user`'s subscriptions, oldest first (MAX_PUSH_SUBSCRIPTIONS at most)."""
        ...

    async def delete_push_subscriptions(
        self, user: str, *, endpoint: str | None = None, device: str | None = None
    ) -> int:
        """Delete `user`'s subscription with this endpoint, or of this device, or all of them (neither given).
        Returns how many were deleted; another user's subscription is never touched."""
        ...

    async def push_answered(self, endpoint: str, *, gone: bool, now: float) -> None:
        """The push service answered a push to `endpoint`: accepted it (`last_success` becomes `now`), or said
        the subscription is `gone` (404 or 410: it is deleted)."""
        ...


class Store(CallHistory, ContactBook, Accounts, PushSubscriptions, Protocol):
    """What a store keeps: the call history, the contacts, the accounts and the push subscriptions, in one
    database."""


def check_limit(limit: int) -> None:
    """Raise ValueError unless `limit` is a usable page size."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer of at least 1, got {limit!r}")


def encode_cursor(rec: CallRecord) -> str:
    """The cursor that continues a newest-first listing after `rec`: URL-safe, opaque to clients."""
    raw = json.dumps([rec.ringing_at, rec.call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """`(ringing_at, call_id)` of the last record of the previous page.

    Raises:
        ValueError: `cursor` was not made by `encode_cursor`.
    """
    try:
        if not isinstance(cursor, str):
            raise TypeError
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        value = msgspec.json.decode(raw)  # (no lone surrogate in the id: a store could not encode it)
        ringing_at, call_id = value
        if isinstance(ringing_at, bool) or not isinstance(ringing_at, int | float) or not isinstance(call_id, str):
            raise TypeError
        at = float(ringing_at)  # an int of 400 digits: OverflowError (it was a 503 and a traceback)
        if not math.isfinite(at):
            raise TypeError
    except (TypeError, ValueError, OverflowError, binascii.Error, RecursionError) as exc:  # (DecodeError: ValueError)
        shown = cursor[:64] if isinstance(cursor, str) else cursor  # (not a str: TypeError above)
        raise ValueError(f"invalid call history cursor {shown!r}: expected a cursor returned by calls_for") from exc
    return at, call_id
