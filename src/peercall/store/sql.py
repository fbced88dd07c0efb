"""The call history in SQL: SQLite (aiosqlite) or PostgreSQL (asyncpg), through SQLAlchemy's async Core.

Owns the `calls` table, the contact book's tables (`contacts`, `contact_requests`, `blocks`, `user_settings`,
`display_names`),
their migrations and every statement sent to the database. Imported lazily by
`store.open_history`, so a server on `memory://` never imports SQLAlchemy; the driver itself is imported when
the engine is created. Must not import anything from peercall outside `core.records`, `core.social`, `store.base` and
`store.sql_accounts` (the accounts' tables and statements) and `store.sql_push` (the push subscriptions').

The two databases share one implementation: the statements are the same, and the few differences (how a
transaction begins, text ordering, locking the migration) are set up once in `SQLHistory.__init__` and
`_migrate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from ..core.records import CallRecord, Outcome, Reason
from ..core.social import (
    HIDDEN_FROM_CALLEE,
    MAX_BLOCKED,
    MAX_CONTACTS,
    MAX_INCOMING,
    MAX_OUTGOING,
    REQUEST_TTL,
    CallsFrom,
    Circle,
    Contact,
    Screening,
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
)
from .sql_accounts import SQLAccounts, v5_accounts
from .sql_push import SQLPush, v7_push

# -- Schema ---------------------------------------------------------------------------------------------------
#
# Why not Alembic: the history is one table on two dialects, and migrations must run by themselves inside
# `open()` with nothing for users to run. Alembic would bring a script directory, env.py and Mako, plus
# run_sync glue for async engines; a `schema_version` table and the ordered list below do the same job in a
# few lines, in one transaction, under a lock.
#
# A migration step is a function of the dialect name returning the statements that take the schema from
# version N-1 to N (N is its 1-based place in MIGRATIONS). Steps are frozen once released: change the schema by
# appending a step, never by editing one, and keep the `calls` Table below in step with the latest version.


def _v1_calls(dialect: str) -> list[str]:
    # Order ties by code point on both databases (SQLite's default BINARY collation already does), whatever
    # locale the PostgreSQL cluster was created with, so that every backend pages identically.
    binary = ' COLLATE "C"' if dialect == "postgresql" else ""
    return [
        f"""CREATE TABLE calls (
            call_id TEXT{binary} NOT NULL PRIMARY KEY,
            caller TEXT NOT NULL,
            callee TEXT NOT NULL,
            caller_device TEXT NOT NULL,
            answered_device TEXT,
            ringing_at DOUBLE PRECISION NOT NULL,
            answered_at DOUBLE PRECISION,
            ended_at DOUBLE PRECISION NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT NOT NULL,
            hung_up_by TEXT,
            missed_taken BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX calls_caller_ringing_at ON calls (caller, ringing_at)",
        "CREATE INDEX calls_callee_ringing_at ON calls (callee, ringing_at)",
    ]


def _v2_quality(dialect: str) -> list[str]:
    # What the parties' clients reported of the call (`call-summary`), as JSON text keyed by user id.
    return ["ALTER TABLE calls ADD COLUMN quality TEXT"]


def _v3_retention(dialect: str) -> list[str]:
    # The retention deletes the oldest calls first, a batch at a time (`delete_ended_before`).
    return ["CREATE INDEX calls_ended_at ON calls (ended_at)"]


def _v4_contacts(dialect: str) -> list[str]:
    # The contact book. A mutual contact is two rows, one per owner, each with its owner's name for the other; a
    # request keeps the name its sender gave, for the sender's row once it is accepted; a block takes away the
    # blocker's row only (keeping the name it had, for unblock). Every query of a circle is on a primary key or
    # one of these indexes; `calls.screened` says why a call did not ring.
    return [
        """CREATE TABLE contacts (
            owner TEXT NOT NULL,
            peer TEXT NOT NULL,
            name TEXT,
            since DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (owner, peer)
        )""",
        """CREATE TABLE contact_requests (
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            declined BOOLEAN NOT NULL DEFAULT FALSE,
            name TEXT,
            PRIMARY KEY (sender, recipient)
        )""",
        "CREATE INDEX contact_requests_recipient_at ON contact_requests (recipient, at)",
        "CREATE INDEX contact_requests_at ON contact_requests (at)",
        """CREATE TABLE blocks (
            owner TEXT NOT NULL,
            blocked TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            name TEXT,
            PRIMARY KEY (owner, blocked)
        )""",
        "CREATE INDEX blocks_blocked_at ON blocks (blocked, at)",
        """CREATE TABLE user_settings (
            user_id TEXT NOT NULL PRIMARY KEY,
            calls_from TEXT
        )""",
        "ALTER TABLE calls ADD COLUMN screened TEXT",
    ]


def _v6_display_names(dialect: str) -> list[str]:
    # A user's display name, as their latest token's `name` claim said (read with circles, welcomes, directories).
    return [
        """CREATE TABLE display_names (
            user_id TEXT NOT NULL PRIMARY KEY,
            name TEXT NOT NULL
        )"""
    ]


def _v8_kept_calls(dialect: str) -> list[str]:
    # The calls under way that a node (one without shared state) hands over as it stops, for its next start
    # (`keep_calls`, `take_calls`): one row per node, JSON text that only the node reads.
    return [
        """CREATE TABLE kept_calls (
            node TEXT NOT NULL PRIMARY KEY,
            state TEXT NOT NULL,
            kept_at DOUBLE PRECISION NOT NULL
        )"""
    ]


MIGRATIONS: Sequence[Callable[[str], list[str]]] = (
    _v1_calls,
    _v2_quality,
    _v3_retention,
    _v4_contacts,
    v5_accounts,
    _v6_display_names,
    v7_push,
    _v8_kept_calls,
)
SCHEMA_VERSION = len(MIGRATIONS)

_WAL_ATTEMPTS, _WAL_RETRY_DELAY = 100, 0.05  # seconds; up to 5 s, like sqlite3's default busy timeout
_MIGRATION_LOCK = 0x70656572  # pg_advisory_xact_lock key ("peer"): one migrating process per database
_USER_LOCK = 0x636F6E74  # pg_advisory_xact_lock(int, int) key space ("cont"): one contact change per user at once
_IMPORT_CHUNK = 500  # pairs per statement in import_contacts (well under both drivers' parameter limits)

_metadata = sa.MetaData()
calls = sa.Table(
    "calls",
    _metadata,
    sa.Column("call_id", sa.Text, primary_key=True),
    sa.Column("caller", sa.Text, nullable=False),
    sa.Column("callee", sa.Text, nullable=False),
    sa.Column("caller_device", sa.Text, nullable=False),
    sa.Column("answered_device", sa.Text),
    sa.Column("ringing_at", sa.Double, nullable=False),
    sa.Column("answered_at", sa.Double),
    sa.Column("ended_at", sa.Double, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("hung_up_by", sa.Text),
    sa.Column("missed_taken", sa.Boolean, nullable=False),
    sa.Column("quality", sa.Text),
    sa.Column("screened", sa.Text),
)
contacts = sa.Table(
    "contacts",
    _metadata,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("peer", sa.Text, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("since", sa.Double, nullable=False),
)
requests = sa.Table(
    "contact_requests",
    _metadata,
    sa.Column("sender", sa.Text, primary_key=True),
    sa.Column("recipient", sa.Text, primary_key=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("declined", sa.Boolean, nullable=False),
    sa.Column("name", sa.Text),
)
blocks = sa.Table(
    "blocks",
    _metadata,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("blocked", sa.Text, primary_key=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("name", sa.Text),
)
user_settings = sa.Table(
    "user_settings",
    _metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("calls_from", sa.Text),
)
display_names = sa.Table(
    "display_names",
    _metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
)
kept_calls = sa.Table(
    "kept_calls",
    _metadata,
    sa.Column("node", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("kept_at", sa.Double, nullable=False),
)
_FIELDS = [field.name for field in dataclasses.fields(CallRecord) if field.name in calls.c]  # screened: issue 15, store
_RECORD_COLUMNS = [calls.c[name] for name in _FIELDS]


def _to_row(rec: CallRecord) -> dict[str, Any]:
    row = {name: getattr(rec, name) for name in _FIELDS}
    row["outcome"] = rec.outcome.value
    row["reason"] = rec.reason.value
    row["quality"] = None if rec.quality is None else json.dumps(rec.quality)
    row["screened"] = None if rec.screened is None else rec.screened.value
    return row


def _to_record(row: sa.Row[Any]) -> CallRecord:
    fields = row._asdict()
    fields["outcome"] = Outcome(fields["outcome"])
    fields["reason"] = Reason(fields["reason"])
    fields["quality"] = None if fields["quality"] is None else json.loads(fields["quality"])
    fields["screened"] = None if fields["screened"] is None else Screening(fields["screened"])
    return CallRecord(**fields)


async def _migrate(conn: AsyncConnection) -> None:
    """Bring the schema to SCHEMA_VERSION inside the caller's transaction."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # SQLite's BEGIN IMMEDIATE already holds the write lock; PostgreSQL needs one of its own so that two
        # servers starting together don't both create the tables.
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY)")
    current = (await conn.exec_driver_sql("SELECT MAX(version) FROM schema_version")).scalar() or 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"call history schema is at version {current}, but this peercall knows versions up to "
            f"{SCHEMA_VERSION}: upgrade peercall or use another database"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version - 1](dialect):
            await conn.exec_driver_sql(statement)
        await conn.execute(sa.text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": version})


# -- The store ------------------------------------------------------------------------------------------------


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module (which would not BEGIN before DDL or SELECT). WAL
    # itself is a property of the file, set once by `SQLHistory.open()`; `synchronous` is per connection.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Every transaction takes the write lock up front: a deferred one that reads and then writes can fail with
    # SQLITE_BUSY when another process wrote in between, instead of waiting for the busy timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class SQLHistory(SQLAccounts, SQLPush):
    """`CallHistory` on SQLAlchemy's async engine.

    Args:
        url: a SQLAlchemy URL with an async driver, `sqlite+aiosqlite:///path` or `postgresql+asyncpg://…`
            (`store.open_history` turns the user-facing forms into these).

    Raises:
        ValueError: the URL cannot be parsed.
        ImportError: the driver is not installed.
    """

    def __init__(self, url: str | URL) -> None:
        try:
            self._url = make_url(url)
        except ArgumentError as exc:
            raise ValueError(f"invalid database URL: {exc}") from None
        self._sqlite = self._url.get_backend_name() == "sqlite"
        self._engine = create_async_engine(self._url, pool_pre_ping=not self._sqlite)
        # SQLite has one writer at a time, and `:memory:` shares a single connection between all callers, so
        # this process takes turns; PostgreSQL's own row locks keep concurrent callers apart.
        self._turn: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if self._sqlite else contextlib.nullcontext()
        )
        if self._sqlite:
            event.listen(self._engine.sync_engine, "connect", _sqlite_connect)
            event.listen(self._engine.sync_engine, "begin", _sqlite_begin)

    in_loop = False  # every operation waits for the database

    @property
    def cancellable(self) -> bool:
        """Whether an operation may be cut off mid-way (hub/deadline.py): not on SQLite, whose statement runs in a
        thread and, cancelled, left the file write-locked until the garbage collector freed its cursor (and a
        `:memory:` database gone with its one connection); its busy timeout bounds each operation."""
        return not self._sqlite

    def __repr__(self) -> str:
        return f"SQLHistory({self._url.render_as_string(hide_password=True)!r})"

    def _file(self) -> Path | None:
        database = self._url.database
        if not self._sqlite or not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database)

    async def open(self) -> None:
        if (path := self._file()) is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new folder: the history is private
        async with self._turn:
            if path is not None:
                await self._enable_wal()
            async with self._engine.begin() as conn:
                await _migrate(conn)

    async def _enable_wal(self) -> None:
        """Switch the SQLite file to write-ahead logging, so that readers in other processes don't block writes.

        The switch needs the file to itself and fails at once, without waiting for the busy timeout, while another
        connection (another server starting on the same file) is switching it too: so try again for a while.
        It runs outside any transaction, on the driver's connection, since a BEGIN would make it fail.
        """
        async with self._engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            for attempt in range(_WAL_ATTEMPTS):
                try:
                    async with driver.execute("PRAGMA journal_mode=WAL") as cursor:
                        await cursor.fetchall()
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                        raise
                await asyncio.sleep(_WAL_RETRY_DELAY)

    async def close(self) -> None:
        await self._engine.dispose()

    async def record(self, rec: CallRecord, *, notified: bool = False) -> None:
        await self.record_many([(rec, notified)])

    async def record_many(self, records: Sequence[tuple[CallRecord, bool]]) -> None:
        if not records:
            return
        insert = sqlite.insert if self._sqlite else postgresql.insert
        # A screened call never rang: it is written as taken, so that take_missed never hands it out.
        rows = [{**_to_row(rec), "missed_taken": notified or rec.screened is not None} for rec, notified in records]
        async with self._turn, self._engine.begin() as conn:
            await _cap_missed(conn, rows)
            await conn.execute(insert(calls).on_conflict_do_nothing(), rows)

    async def calls_for(
        self, user: str, *, limit: int = 50, before: str | None = None
    ) -> tuple[list[CallRecord], str | None]:
        check_limit(limit)
        shown_to_callee = sa.or_(calls.c.screened.is_(None), calls.c.screened.not_in(_HIDDEN))
        query = sa.select(*_RECORD_COLUMNS).where(
            sa.or_(calls.c.caller == user, sa.and_(calls.c.callee == user, shown_to_callee))
        )
        if before is not None:
            ringing_at, call_id = decode_cursor(before)
            query = query.where(
                sa.or_(
                    calls.c.ringing_at < ringing_at,
                    sa.and_(calls.c.ringing_at == ringing_at, calls.c.call_id < call_id),
                )
            )
        query = query.order_by(calls.c.ringing_at.desc(), calls.c.call_id.desc()).limit(limit + 1)
        async with self._turn, self._engine.begin() as conn:
            rows = (await conn.execute(query)).all()
        page = [_to_record(row) for row in rows[:limit]]
        return page, encode_cursor(page[-1]) if len(rows) > limit else None

    async def add_quality(self, call_id: str, user: str, summary: dict[str, Any]) -> bool:
        # Read, merge and write in one transaction: SQLite holds its write lock from BEGIN IMMEDIATE, PostgreSQL
        # the row lock from SELECT … FOR UPDATE, so the two parties' summaries never overwrite each other.
        query = sa.select(calls.c.quality).where(calls.c.call_id == call_id)
        if not self._sqlite:
            query = query.with_for_update()
        async with self._turn, self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return False
            kept = json.loads(row[0]) if row[0] else {}
            if user not in kept:  # one per party (base.py)
                merged = json.dumps({**kept, user: summary})
                await conn.execute(sa.update(calls).where(calls.c.call_id == call_id).values(quality=merged))
        return True

    async def take_missed(self, user: str, *, limit: int = MISSED_SHOWN) -> tuple[list[CallRecord], int]:
        # One UPDATE … RETURNING: under PostgreSQL's READ COMMITTED a concurrent UPDATE waits for our row locks,
        # then re-checks `NOT missed_taken` and skips the rows we took; SQLite runs it under its write lock. It
        # returns only the order of what it took; the newest `limit` are then read whole, in the same transaction.
        check_limit(limit)
        statement = (
            sa.update(calls)
            .where(
                calls.c.callee == user,
                calls.c.outcome.in_(_UNANSWERED),
                sa.not_(calls.c.missed_taken),
                calls.c.screened.is_(None),
            )
            .values(missed_taken=True)
            .returning(calls.c.ringing_at, calls.c.call_id)
        )
        async with self._turn, self._engine.begin() as conn:
            taken = sorted(tuple(row) for row in (await conn.execute(statement)).all())
            newest = [call_id for _, call_id in taken[-limit:]]
            rows = (await conn.execute(sa.select(*_RECORD_COLUMNS).where(calls.c.call_id.in_(newest)))).all()
        return sorted((_to_record(row) for row in rows), key=lambda r: (r.ringing_at, r.call_id)), len(taken)

    async def keep_calls(self, node: str, state: bytes) -> None:
        async with self._turn, self._engine.begin() as conn:
            await conn.execute(sa.delete(kept_calls).where(kept_calls.c.node == node))
            await conn.execute(sa.insert(kept_calls).values(node=node, state=state.decode(), kept_at=time.time()))

    async def take_calls(self, node: str) -> bytes | None:
        taken = sa.delete(kept_calls).where(kept_calls.c.node == node).returning(kept_calls.c.state)
        async with self._turn, self._engine.begin() as conn:
            state = (await conn.execute(taken)).scalar()
        return None if state is None else str(state).encode()

    async def delete_ended_before(self, cutoff: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        oldest = sa.select(calls.c.call_id).where(calls.c.ended_at < cutoff).order_by(calls.c.ended_at).limit(limit)
        async with self._turn, self._engine.begin() as conn:
            result = await conn.execute(sa.delete(calls).where(calls.c.call_id.in_(oldest.scalar_subquery())))
        return result.rowcount

    # -- ContactBook ----------------------------------------------------------------------------------------------
    #
    # Each operation is one transaction. SQLite runs them one at a time (BEGIN IMMEDIATE, and `_turn` in this
    # process). On PostgreSQL an operation that reads and then writes first takes a transaction-level advisory
    # lock on each user it changes (`_lock`), in one global order: two users adding each other at once, or many
    # users asking one, are serialized, so the checks and bounds see each other's writes.

    async def _lock(self, conn: AsyncConnection, *users: str) -> None:
        if self._sqlite:
            return
        for key in sorted({_user_key(u) for u in users}):
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": _USER_LOCK, "key": key})

    async def circle(self, user: str, *, now: float) -> Circle:
        cutoff = now - REQUEST_TTL
        blocked_by_user = sa.select(blocks.c.blocked).where(blocks.c.owner == user)
        async with self._turn, self._engine.begin() as conn:
            contact_rows = (
                await conn.execute(
                    sa.select(contacts.c.peer, contacts.c.name, contacts.c.since, display_names.c.name)
                    .select_from(contacts.outerjoin(display_names, display_names.c.user_id == contacts.c.peer))
                    .where(contacts.c.owner == user)
                )
            ).all()
            incoming = (
                await conn.execute(
                    sa.select(requests.c.sender, requests.c.at, display_names.c.name)
                    .select_from(requests.outerjoin(display_names, display_names.c.user_id == requests.c.sender))
                    .where(
                        requests.c.recipient == user,
                        requests.c.at >= cutoff,
                        sa.not_(requests.c.declined),
                        requests.c.sender.not_in(blocked_by_user),
                    )
                    .order_by(requests.c.at.desc(), requests.c.sender.desc())
                    .limit(MAX_INCOMING)
                )
            ).all()
            outgoing = (
                await conn.execute(
                    sa.select(requests.c.recipient, requests.c.at).where(
                        requests.c.sender == user, requests.c.at >= cutoff
                    )
                )
            ).all()
            blocked = (await conn.execute(sa.select(blocks.c.blocked, blocks.c.at).where(blocks.c.owner == user))).all()
            blocked_by = (
                await conn.execute(
                    sa.select(blocks.c.owner, blocks.c.at)
                    .where(blocks.c.blocked == user)
                    .order_by(blocks.c.at.desc(), blocks.c.owner.desc())
                    .limit(MAX_BLOCKED)
                )
            ).all()
            setting = (
                await conn.execute(sa.select(user_settings.c.calls_from).where(user_settings.c.user_id == user))
            ).scalar()
            shown = [(peer, shown) for peer, _, _, shown in contact_rows] + [(u, shown) for u, _, shown in incoming]
            return Circle(
                user=user,
                contacts={peer: Contact(peer, name, since) for peer, name, since, _ in contact_rows},
                incoming={sender: at for sender, at, _ in incoming},
                outgoing={recipient: at for recipient, at in outgoing},
                blocked={peer: at for peer, at in blocked},
                blocked_by={owner: at for owner, at in blocked_by},
                calls_from=None if setting is None else CallsFrom(setting),
                display_names={u: name for u, name in shown if name is not None},
            )

    async def add(self, user: str, peer: str, *, now: float, name: str | None = None) -> ContactChange:
        check_pair(user, peer)
        check_name(name)
        async with self._turn, self._engine.begin() as conn:
            await self._lock(conn, user, peer)
            if await _contact(conn, user, peer) is not None:
                if name is not None:
                    await conn.execute(_contact_row(user, peer).values(name=name))
                return ContactChange.UNCHANGED
            block = (
                await conn.execute(sa.select(blocks.c.name).where(blocks.c.owner == user, blocks.c.blocked == peer))
            ).first()
            theirs = await _contact(conn, peer, user)
            asked = await _request(conn, peer, user)
            if theirs is not None or (asked is not None and asked.at >= now - REQUEST_TTL):
                if await _count(conn, contacts, contacts.c.owner == user) >= MAX_CONTACTS:
                    raise ContactLimit(f"{user} has {MAX_CONTACTS} contacts: remove some first")
                if theirs is None and await _count(conn, contacts, contacts.c.owner == peer) >= MAX_CONTACTS:
                    raise ContactLimit(f"{peer} has {MAX_CONTACTS} contacts")
                since = now if theirs is None else theirs.since
                rows = [{"owner": user, "peer": peer, "name": name if name is not None else block and block.name}]
                if theirs is None:
                    rows.append({"owner": peer, "peer": user, "name": asked and asked.name})
                if block is not None:
                    await conn.execute(_block_row(user, peer))
                await conn.execute(sa.insert(contacts), [{**row, "since": since} for row in rows])
                await conn.execute(
                    sa.delete(requests).where(_pair(requests.c.sender, requests.c.recipient, user, peer))
                )
                return ContactChange.CONNECTED
            current = await _request(conn, user, peer)
            if current is not None and current.at >= now - REQUEST_TTL:
                if name is not None and name != current.name:
                    await conn.execute(_request_row(user, peer, sa.update).values(name=name))
                if block is None:
                    return ContactChange.UNCHANGED
                await conn.execute(_block_row(user, peer))
                return ContactChange.UPDATED
            waiting = requests.c.sender == user, requests.c.at >= now - REQUEST_TTL
            if await _count(conn, requests, *waiting) >= MAX_OUTGOING:
                raise ContactLimit(f"{user} has {MAX_OUTGOING} requests waiting for an answer: withdraw some first")
            if block is not None:
                await conn.execute(_block_row(user, peer))
            if current is not None:
                await conn.execute(_request_row(user, peer))
            hidden = (
                await conn.execute(sa.select(blocks.c.at).where(blocks.c.owner == peer, blocks.c.blocked == user))
            ).first()
            if hidden is None:
                await _make_room(conn, peer)
            await conn.execute(
                sa.insert(requests).values(sender=user, recipient=peer, at=now, declined=False, name=name)
            )
            return ContactChange.REQUESTED

    async def decline(self, user: str, peer: str) -> ContactChange:
        check_pair(user, peer)
        statement = _request_row(peer, user, sa.update).where(sa.not_(requests.c.declined)).values(declined=True)
        async with self._turn, self._engine.begin() as conn:
            result = await conn.execute(statement)
        return ContactChange.REMOVED if result.rowcount else ContactChange.UNCHANGED

    async def remove(self, user: str, peer: str) -> ContactChange:
        check_pair(user, peer)
        async with self._turn, self._engine.begin() as conn:
            gone = (
                await conn.execute(sa.delete(contacts).where(_pair(contacts.c.owner, contacts.c.peer, user, peer)))
            ).rowcount
            gone += (await conn.execute(_request_row(user, peer))).rowcount
        return ContactChange.REMOVED if gone else ContactChange.UNCHANGED

    async def rename(self, user: str, peer: str, name: str | None) -> ContactChange:
        check_pair(user, peer)
        check_name(name)
        statement = _contact_row(user, peer).where(contacts.c.name.is_distinct_from(name)).values(name=name)
        async with self._turn, self._engine.begin() as conn:
            result = await conn.execute(statement)
        return ContactChange.UPDATED if result.rowcount else ContactChange.UNCHANGED

    async def block(self, user: str, peer: str, *, now: float) -> ContactChange:
        check_pair(user, peer)
        async with self._turn, self._engine.begin() as conn:
            await self._lock(conn, user, peer)
            if await _count(conn, blocks, blocks.c.owner == user, blocks.c.blocked == peer):
                return ContactChange.UNCHANGED
            if await _count(conn, blocks, blocks.c.owner == user) >= MAX_BLOCKED:
                raise ContactLimit(f"{user} blocked {MAX_BLOCKED} users: unblock some first")
            contact = await _contact(conn, user, peer)
            if contact is not None:
                await conn.execute(_contact_row(user, peer, sa.delete))
            await conn.execute(_request_row(user, peer))
            name = None if contact is None else contact.name
            await conn.execute(sa.insert(blocks).values(owner=user, blocked=peer, at=now, name=name))
        return ContactChange.UPDATED

    async def unblock(self, user: str, peer: str) -> ContactChange:
        check_pair(user, peer)
        async with self._turn, self._engine.begin() as conn:
            await self._lock(conn, user, peer)
            block = (
                await conn.execute(
                    sa.delete(blocks).where(blocks.c.owner == user, blocks.c.blocked == peer).returning(blocks.c.name)
                )
            ).first()
            if block is None:
                return ContactChange.UNCHANGED
            theirs = await _contact(conn, peer, user)
            if theirs is not None:
                if await _count(conn, contacts, contacts.c.owner == user) < MAX_CONTACTS:
                    await conn.execute(
                        sa.insert(contacts).values(owner=user, peer=peer, name=block.name, since=theirs.since)
                    )
                else:
                    await conn.execute(_contact_row(peer, user, sa.delete))
        return ContactChange.REMOVED

    async def set_calls_from(self, user: str, value: CallsFrom | None) -> ContactChange:
        if value is not None:
            value = CallsFrom(value)
        async with self._turn, self._engine.begin() as conn:
            await self._lock(conn, user)
            current = (
                await conn.execute(sa.select(user_settings.c.calls_from).where(user_settings.c.user_id == user))
            ).scalar()
            if current == (None if value is None else value.value):
                return ContactChange.UNCHANGED
            await conn.execute(sa.delete(user_settings).where(user_settings.c.user_id == user))
            if value is not None:
                await conn.execute(sa.insert(user_settings).values(user_id=user, calls_from=value.value))
        return ContactChange.UPDATED

    async def set_display_name(self, user: str, name: str | None) -> ContactChange:
        check_user(user)
        check_name(name, "a display name")
        async with self._turn, self._engine.begin() as conn:
            await self._lock(conn, user)
            where = display_names.c.user_id == user
            current = (await conn.execute(sa.select(display_names.c.name).where(where))).scalar()
            if current == name:
                return ContactChange.UNCHANGED
            if name is None:
                await conn.execute(sa.delete(display_names).where(where))
            elif current is None:
                await conn.execute(sa.insert(display_names).values(user_id=user, name=name))
            else:
                await conn.execute(sa.update(display_names).where(where).values(name=name))
        return ContactChange.UPDATED

    async def names(self, users: Collection[str]) -> dict[str, str]:
        asked = check_names_asked(users)
        if not asked:
            return {}
        async with self._turn, self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(display_names.c.user_id, display_names.c.name).where(display_names.c.user_id.in_(asked))
            )
            return {user: name for user, name in rows.all()}

    async def import_contacts(self, pairs: Sequence[tuple[str, str]], *, now: float) -> int:
        for a, b in pairs:
            check_pair(a, b)
        unique = list(dict.fromkeys((a, b) if a < b else (b, a) for a, b in pairs))
        insert = sqlite.insert if self._sqlite else postgresql.insert
        new = 0
        async with self._turn, self._engine.begin() as conn:
            for start in range(0, len(unique), _IMPORT_CHUNK):
                chunk = unique[start : start + _IMPORT_CHUNK]
                both = [row for a, b in chunk for row in ((a, b), (b, a))]
                existing = {
                    (owner, peer): since
                    for owner, peer, since in await _matching(conn, "contacts", "owner", "peer", both, ", t.since")
                }
                blocked = {(owner, peer) for owner, peer in await _matching(conn, "blocks", "owner", "blocked", both)}
                rows: list[dict[str, Any]] = []
                made: list[tuple[str, str]] = []
                for a, b in chunk:
                    missing = [(o, p) for o, p in ((a, b), (b, a)) if (o, p) not in existing and (o, p) not in blocked]
                    if not missing:
                        continue
                    since = existing.get((b, a), existing.get((a, b), now))
                    rows += [{"owner": o, "peer": p, "name": None, "since": since} for o, p in missing]
                    made += [(a, b), (b, a)]
                if rows:
                    await conn.execute(insert(contacts).on_conflict_do_nothing(), rows)
                    asked = await _matching(conn, "contact_requests", "sender", "recipient", made)
                    await _delete_requests(conn, [(sender, recipient) for sender, recipient in asked])
                    new += len(made) // 2
        return new

    async def delete_expired_requests(self, now: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        oldest = (
            sa.select(requests.c.sender, requests.c.recipient)
            .where(requests.c.at < now - REQUEST_TTL)
            .order_by(requests.c.at)
            .limit(limit)
        )
        if not self._sqlite:
            oldest = oldest.with_for_update(skip_locked=True)  # two nodes pruning at once share the work
        async with self._turn, self._engine.begin() as conn:
            gone = [(sender, recipient) for sender, recipient in await conn.execute(oldest)]
            await _delete_requests(conn, gone)
        return len(gone)


async def _matching(
    conn: AsyncConnection, table: str, a: str, b: str, pairs: Sequence[tuple[str, str]], more: str = ""
) -> list[tuple[Any, ...]]:
    """The rows of `table` whose (`a`, `b`) is one of `pairs`: a join on the primary key, row by row (a row-value
    `IN` list would make SQLite scan the table)."""
    if not pairs:
        return []
    values = ", ".join(f"(:a{i}, :b{i})" for i in range(len(pairs)))
    params = {f"{side}{i}": who for i, pair in enumerate(pairs) for side, who in zip("ab", pair, strict=True)}
    query = (
        f"WITH wanted (a, b) AS (VALUES {values}) "
        f"SELECT t.{a}, t.{b}{more} FROM wanted JOIN {table} t ON t.{a} = wanted.a AND t.{b} = wanted.b"
    )
    return [tuple(row) for row in await conn.execute(sa.text(query), params)]


async def _delete_requests(conn: AsyncConnection, pairs: Sequence[tuple[str, str]]) -> None:
    """Delete these (sender, recipient) requests, each by its primary key."""
    if pairs:
        statement = sa.delete(requests).where(
            requests.c.sender == sa.bindparam("s"), requests.c.recipient == sa.bindparam("r")
        )
        await conn.execute(statement, [{"s": sender, "r": recipient} for sender, recipient in pairs])


def _user_key(user: str) -> int:
    """A user's advisory-lock key: a stable signed 32-bit hash of the id (collisions only serialize more)."""
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=4).digest(), "big", signed=True)


def _pair(a_col: sa.ColumnElement[Any], b_col: sa.ColumnElement[Any], a: str, b: str) -> sa.ColumnElement[bool]:
    """Rows between `a` and `b`, either way round."""
    return sa.or_(sa.and_(a_col == a, b_col == b), sa.and_(a_col == b, b_col == a))


def _contact_row(owner: str, peer: str, verb: Any = sa.update) -> Any:
    return verb(contacts).where(contacts.c.owner == owner, contacts.c.peer == peer)


def _request_row(sender: str, recipient: str, verb: Any = sa.delete) -> Any:
    return verb(requests).where(requests.c.sender == sender, requests.c.recipient == recipient)


def _block_row(owner: str, blocked: str) -> Any:
    return sa.delete(blocks).where(blocks.c.owner == owner, blocks.c.blocked == blocked)


async def _contact(conn: AsyncConnection, owner: str, peer: str) -> Any:
    query = sa.select(contacts.c.name, contacts.c.since).where(contacts.c.owner == owner, contacts.c.peer == peer)
    return (await conn.execute(query)).first()


async def _request(conn: AsyncConnection, sender: str, recipient: str) -> Any:
    query = sa.select(requests.c.at, requests.c.name).where(
        requests.c.sender == sender, requests.c.recipient == recipient
    )
    return (await conn.execute(query)).first()


async def _count(conn: AsyncConnection, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    n: int = (await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one()
    return n


async def _make_room(conn: AsyncConnection, recipient: str) -> None:
    """Drop the oldest requests `recipient` sees so that one more leaves them at most MAX_INCOMING (requests they
    declined, or from users they blocked, are not shown to them and take no room)."""
    shown = (
        requests.c.recipient == recipient,
        sa.not_(requests.c.declined),
        requests.c.sender.not_in(sa.select(blocks.c.blocked).where(blocks.c.owner == recipient)),
    )
    excess = await _count(conn, requests, *shown) - MAX_INCOMING + 1
    if excess <= 0:
        return
    oldest = sa.select(requests.c.sender).where(*shown).order_by(requests.c.at, requests.c.sender).limit(excess)
    senders = (await conn.execute(oldest)).scalars().all()
    await conn.execute(sa.delete(requests).where(requests.c.recipient == recipient, requests.c.sender.in_(senders)))


_UNANSWERED = sorted(o.value for o in UNANSWERED_OUTCOMES)
_HIDDEN = sorted(s.value for s in HIDDEN_FROM_CALLEE)


async def _cap_missed(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Mark taken (as if notified) the unanswered calls of `rows` that would give a callee more than
    `MISSED_PER_CALLER` missed calls of one caller not yet taken; counted inside the caller's transaction."""
    unseen = [row for row in rows if not row["missed_taken"] and row["outcome"] in _UNANSWERED]
    if not unseen:
        return
    callees = sorted({row["callee"] for row in unseen})
    query = (
        sa.select(calls.c.callee, calls.c.caller, sa.func.count())
        .where(calls.c.callee.in_(callees), calls.c.outcome.in_(_UNANSWERED), sa.not_(calls.c.missed_taken))
        .group_by(calls.c.callee, calls.c.caller)
    )
    waiting = {(callee, caller): n for callee, caller, n in (await conn.execute(query)).all()}
    for row in unseen:
        pair = (row["callee"], row["caller"])
        if waiting.get(pair, 0) >= MISSED_PER_CALLER:
            row["missed_taken"] = True
        else:
            waiting[pair] = waiting.get(pair, 0) + 1
