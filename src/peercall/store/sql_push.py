"""Push subscriptions in SQL (SQLite or PostgreSQL): the table of migration v7 and the statements of
`store.base.PushSubscriptions`. Mixed into `SQLHistory` (store/sql.py), which owns the engine, the turn-taking lock
and the migrations."""

from __future__ import annotations

import contextlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .base import MAX_PUSH_SUBSCRIPTIONS, PushSubscription


def v7_push(dialect: str) -> list[str]:
    """Migration 7: push subscriptions, one per endpoint and one per (user, device)."""
    return [
        """CREATE TABLE push_subscriptions (
            endpoint TEXT NOT NULL PRIMARY KEY,
            user_id TEXT NOT NULL,
            device TEXT NOT NULL,
            p256dh TEXT NOT NULL,
            auth TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            last_success DOUBLE PRECISION
        )""",
        "CREATE UNIQUE INDEX push_subscriptions_device ON push_subscriptions (user_id, device)",
    ]


_metadata = sa.MetaData()
push_subscriptions = sa.Table(
    "push_subscriptions",
    _metadata,
    sa.Column("endpoint", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("p256dh", sa.Text, nullable=False),
    sa.Column("auth", sa.Text, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("last_success", sa.Double),
)
_t = push_subscriptions


def _subscription(row: Any) -> PushSubscription:
    return PushSubscription(row.user_id, row.device, row.endpoint, row.p256dh, row.auth, row.created, row.last_success)


class SQLPush:
    """`PushSubscriptions` on the engine of `SQLHistory` (which sets these attributes)."""

    _engine: AsyncEngine
    _turn: contextlib.AbstractAsyncContextManager[Any]

    async def add_push_subscription(self, subscription: PushSubscription) -> None:
        s = subscription
        for attempt in range(3):  # another writer may insert the same endpoint or device between our statements
            try:
                async with self._turn, self._engine.begin() as conn:
                    await self._add(conn, s)
                return
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise

    @staticmethod
    async def _add(conn: AsyncConnection, s: PushSubscription) -> None:
        await conn.execute(
            sa.delete(_t).where(
                sa.or_(_t.c.endpoint == s.endpoint, sa.and_(_t.c.user_id == s.user, _t.c.device == s.device))
            )
        )
        await conn.execute(
            sa.insert(_t).values(
                endpoint=s.endpoint,
                user_id=s.user,
                device=s.device,
                p256dh=s.p256dh,
                auth=s.auth,
                created=s.created,
                last_success=s.last_success,
            )
        )
        kept = (
            sa.select(_t.c.endpoint)
            .where(_t.c.user_id == s.user)
            .order_by(_t.c.created.desc(), _t.c.endpoint.desc())
            .limit(MAX_PUSH_SUBSCRIPTIONS)
        )
        await conn.execute(sa.delete(_t).where(_t.c.user_id == s.user, _t.c.endpoint.not_in(kept.scalar_subquery())))

    async def push_subscriptions(self, user: str) -> list[PushSubscription]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(_t)
                .where(_t.c.user_id == user)
                .order_by(_t.c.created, _t.c.endpoint)
                .limit(MAX_PUSH_SUBSCRIPTIONS)
            )
            return [_subscription(r) for r in rows]

    async def delete_push_subscriptions(
        self, user: str, *, endpoint: str | None = None, device: str | None = None
    ) -> int:
        where = [_t.c.user_id == user]
        if endpoint is not None:
            where.append(_t.c.endpoint == endpoint)
        if device is not None:
            where.append(_t.c.device == device)
        async with self._turn, self._engine.begin() as conn:
            return (await conn.execute(sa.delete(_t).where(*where))).rowcount

    async def push_answered(self, endpoint: str, *, gone: bool, now: float) -> None:
        async with self._turn, self._engine.begin() as conn:
            if gone:
                await conn.execute(sa.delete(_t).where(_t.c.endpoint == endpoint))
            else:
                await conn.execute(sa.update(_t).where(_t.c.endpoint == endpoint).values(last_success=now))
