"""The call history in SQL: SQLite (aiosqlite) or PostgreSQL (asyncpg), through SQLAlchemy's async Core.

Owns the `calls` table, its migrations and every statement sent to the database. Imported lazily by
`store.open_history`, so a server on `memory://` never imports SQLAlchemy; the driver itself is imported when
the engine is created. Must not import anything from peercall outside `core.records` and `store.base`.

The two databases share one implementation: the statements are the same, and the few differences (how a
transaction begins, text ordering, locking the migration) are set up once in `SQLHistory.__init__` and
`_migrate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from ..core.records import CallRecord, Outcome, Reason
from .base import (
    MISSED_PER_CALLER,
    MISSED_SHOWN,
    PRUNE_BATCH,
    UNANSWERED_OUTCOMES,
    check_limit,
    decode_cursor,
    encode_cursor,
)

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


MIGRATIONS: Sequence[Callable[[str], list[str]]] = (_v1_calls, _v2_quality, _v3_retention)
SCHEMA_VERSION = len(MIGRATIONS)

_WAL_ATTEMPTS, _WAL_RETRY_DELAY = 100, 0.05  # seconds; up to 5 s, like sqlite3's default busy timeout
_MIGRATION_LOCK = 0x70656572  # pg_advisory_xact_lock key ("peer"): one migrating process per database

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
)
_FIELDS = [field.name for field in dataclasses.fields(CallRecord) if field.name in calls.c]  # screened: issue 15, store
_RECORD_COLUMNS = [calls.c[name] for name in _FIELDS]


def _to_row(rec: CallRecord) -> dict[str, Any]:
    row = {name: getattr(rec, name) for name in _FIELDS}
    row["outcome"] = rec.outcome.value
    row["reason"] = rec.reason.value
    row["quality"] = None if rec.quality is None else json.dumps(rec.quality)
    return row


def _to_record(row: sa.Row[Any]) -> CallRecord:
    fields = row._asdict()
    fields["outcome"] = Outcome(fields["outcome"])
    fields["reason"] = Reason(fields["reason"])
    fields["quality"] = None if fields["quality"] is None else json.loads(fields["quality"])
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


class SQLHistory:
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
        rows = [{**_to_row(rec), "missed_taken": notified} for rec, notified in records]
        async with self._turn, self._engine.begin() as conn:
            await _cap_missed(conn, rows)
            await conn.execute(insert(calls).on_conflict_do_nothing(), rows)

    async def calls_for(
        self, user: str, *, limit: int = 50, before: str | None = None
    ) -> tuple[list[CallRecord], str | None]:
        check_limit(limit)
        query = sa.select(*_RECORD_COLUMNS).where(sa.or_(calls.c.caller == user, calls.c.callee == user))
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
            merged = {**(json.loads(row[0]) if row[0] else {}), user: summary}
            await conn.execute(sa.update(calls).where(calls.c.call_id == call_id).values(quality=json.dumps(merged)))
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
            )
            .values(missed_taken=True)
            .returning(calls.c.ringing_at, calls.c.call_id)
        )
        async with self._turn, self._engine.begin() as conn:
            taken = sorted(tuple(row) for row in (await conn.execute(statement)).all())
            newest = [call_id for _, call_id in taken[-limit:]]
            rows = (await conn.execute(sa.select(*_RECORD_COLUMNS).where(calls.c.call_id.in_(newest)))).all()
        return sorted((_to_record(row) for row in rows), key=lambda r: (r.ringing_at, r.call_id)), len(taken)

    async def delete_ended_before(self, cutoff: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        oldest = sa.select(calls.c.call_id).where(calls.c.ended_at < cutoff).order_by(calls.c.ended_at).limit(limit)
        async with self._turn, self._engine.begin() as conn:
            result = await conn.execute(sa.delete(calls).where(calls.c.call_id.in_(oldest.scalar_subquery())))
        return result.rowcount


_UNANSWERED = sorted(o.value for o in UNANSWERED_OUTCOMES)


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
