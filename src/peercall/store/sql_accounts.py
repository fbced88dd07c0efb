"""Accounts in SQL (SQLite or PostgreSQL): the tables of migration v5 and the statements of `store.base.Accounts`.
Mixed into `SQLHistory` (store/sql.py), which owns the engine, the turn-taking lock and the migrations.

Secrets never reach these tables: invites and sessions are kept by the SHA-256 of their token, passwords as argon2id
hashes. A `credentials` row is a password (`kind` `password`, empty `key`) or a passkey (`kind` `passkey`, `key` its
WebAuthn credential id, unique by the index `credentials_passkey`, `secret` what auth/accounts.py `Passkey` keeps).
"""

from __future__ import annotations

import contextlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .base import (
    MAX_CREDENTIALS_PER_USER,
    MAX_INVITES_PER_ADMIN,
    MAX_SESSIONS_PER_USER,
    PRUNE_BATCH,
    REVOKED_KEPT,
    AccountLimit,
    AccountSession,
    Credential,
    Invite,
    SignUp,
    User,
    check_limit,
)


def v5_accounts(dialect: str) -> list[str]:
    """Migration 5: users, their sign-in methods, invites and sign-ins (PEERCALL_AUTH=accounts)."""
    binary = ' COLLATE "C"' if dialect == "postgresql" else ""  # users page in code-point order on both
    return [
        f"""CREATE TABLE users (
            id TEXT{binary} NOT NULL PRIMARY KEY,
            name TEXT NOT NULL,
            admin BOOLEAN NOT NULL DEFAULT FALSE,
            disabled BOOLEAN NOT NULL DEFAULT FALSE,
            created DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE credentials (
            user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            secret TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            last_used DOUBLE PRECISION,
            PRIMARY KEY (user_id, kind, key)
        )""",
        "CREATE UNIQUE INDEX credentials_passkey ON credentials (kind, key) WHERE kind <> 'password'",
        """CREATE TABLE invites (
            token_hash TEXT NOT NULL PRIMARY KEY,
            created_by TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            expires DOUBLE PRECISION NOT NULL,
            admin BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        "CREATE INDEX invites_created_by ON invites (created_by, expires)",
        "CREATE INDEX invites_expires ON invites (expires)",
        """CREATE TABLE account_sessions (
            id TEXT NOT NULL PRIMARY KEY,
            user_id TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            created DOUBLE PRECISION NOT NULL,
            last_used DOUBLE PRECISION NOT NULL,
            expires DOUBLE PRECISION NOT NULL,
            user_agent TEXT NOT NULL,
            revoked DOUBLE PRECISION
        )""",
        "CREATE INDEX account_sessions_user ON account_sessions (user_id, last_used)",
        "CREATE INDEX account_sessions_expires ON account_sessions (expires)",
        "CREATE INDEX account_sessions_revoked ON account_sessions (revoked)",
    ]


_metadata = sa.MetaData()
users = sa.Table(
    "users",
    _metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
)
credentials = sa.Table(
    "credentials",
    _metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("last_used", sa.Double),
)
invites = sa.Table(
    "invites",
    _metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("expires", sa.Double, nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
)
sessions = sa.Table(
    "account_sessions",
    _metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("last_used", sa.Double, nullable=False),
    sa.Column("expires", sa.Double, nullable=False),
    sa.Column("user_agent", sa.Text, nullable=False),
    sa.Column("revoked", sa.Double),
)

_SESSION_COLUMNS = [sessions.c[n] for n in ("id", "user_id", "secret_hash", "created", "last_used", "expires")]


def _user(row: Any) -> User:
    return User(id=row.id, name=row.name, admin=bool(row.admin), disabled=bool(row.disabled), created=row.created)


def _session(row: Any) -> AccountSession:
    return AccountSession(
        id=row.id,
        user=row.user_id,
        secret_hash=row.secret_hash,
        created=row.created,
        last_used=row.last_used,
        expires=row.expires,
        user_agent=row.user_agent,
        revoked=row.revoked,
    )


def _invite(row: Any) -> Invite:
    return Invite(
        token_hash=row.token_hash,
        created_by=row.created_by,
        created=row.created,
        expires=row.expires,
        admin=bool(row.admin),
    )


def _live(now: float) -> tuple[sa.ColumnElement[bool], ...]:
    """A session that is not revoked, not expired, and whose user is not disabled."""
    enabled = sa.select(users.c.id).where(users.c.id == sessions.c.user_id, sa.not_(users.c.disabled))
    return (sessions.c.revoked.is_(None), sessions.c.expires > now, sa.exists(enabled))


async def _insert_user(conn: AsyncConnection, user: User, credential: Credential | None) -> None:
    values = {"id": user.id, "name": user.name, "admin": user.admin, "disabled": user.disabled}
    await conn.execute(sa.insert(users).values(**values, created=user.created))
    if credential is not None:
        await conn.execute(sa.insert(credentials).values(**_credential_row(credential)))


def _credential(r: Any) -> Credential:
    return Credential(user=r.user_id, kind=r.kind, key=r.key, secret=r.secret, created=r.created, last_used=r.last_used)


def _credential_row(c: Credential) -> dict[str, Any]:
    return {
        "user_id": c.user,
        "kind": c.kind,
        "key": c.key,
        "secret": c.secret,
        "created": c.created,
        "last_used": c.last_used,
    }


class _IdTaken(Exception):
    pass


class SQLAccounts:
    """`Accounts` on the engine of `SQLHistory` (which sets these attributes)."""

    _engine: AsyncEngine
    _turn: contextlib.AbstractAsyncContextManager[Any]
    _sqlite: bool

    async def _user_exists(self, conn: AsyncConnection, user_id: str) -> bool:
        return (await conn.execute(sa.select(users.c.id).where(users.c.id == user_id))).first() is not None

    async def add_user(self, user: User, credential: Credential | None = None) -> bool:
        async with self._turn, self._engine.begin() as conn:
            if await self._user_exists(conn, user.id):
                return False
            try:
                async with conn.begin_nested():
                    await _insert_user(conn, user, credential)
            except sa.exc.IntegrityError:  # another process took the id meanwhile
                return False
        return True

    async def user(self, user_id: str) -> User | None:
        async with self._turn, self._engine.begin() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def users(self, *, limit: int = 100, after: str | None = None) -> list[User]:
        check_limit(limit)
        query = sa.select(users).order_by(users.c.id).limit(limit)
        if after is not None:
            query = query.where(users.c.id > after)
        async with self._turn, self._engine.begin() as conn:
            return [_user(row) for row in await conn.execute(query)]

    async def count_users(self) -> int:
        async with self._turn, self._engine.begin() as conn:
            n: int = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
        return n

    async def set_disabled(self, user_id: str, disabled: bool, *, now: float) -> bool:
        async with self._turn, self._engine.begin() as conn:
            result = await conn.execute(sa.update(users).where(users.c.id == user_id).values(disabled=disabled))
            if disabled and result.rowcount:
                await conn.execute(
                    sa.update(sessions)
                    .where(sessions.c.user_id == user_id, sessions.c.revoked.is_(None))
                    .values(revoked=now)
                )
        return bool(result.rowcount)

    async def credentials(self, user_id: str) -> list[Credential]:
        query = (
            sa.select(credentials)
            .where(credentials.c.user_id == user_id)
            .order_by(credentials.c.created, credentials.c.kind, credentials.c.key)
        )
        async with self._turn, self._engine.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [_credential(r) for r in rows]

    async def set_credential(self, credential: Credential) -> None:
        mine = credentials.c.user_id == credential.user
        slot = (mine, credentials.c.kind == credential.kind, credentials.c.key == credential.key)
        async with self._turn, self._engine.begin() as conn:
            if not self._sqlite:
                await conn.execute(sa.select(users.c.id).where(users.c.id == credential.user).with_for_update())
            if (await conn.execute(sa.update(credentials).where(*slot).values(secret=credential.secret))).rowcount:
                return
            count = (await conn.execute(sa.select(sa.func.count()).select_from(credentials).where(mine))).scalar_one()
            if count >= MAX_CREDENTIALS_PER_USER:
                raise AccountLimit(
                    f"{credential.user} has {MAX_CREDENTIALS_PER_USER} sign-in methods: remove one first"
                )
            try:
                async with conn.begin_nested():
                    await conn.execute(sa.insert(credentials).values(**_credential_row(credential)))
            except sa.exc.IntegrityError:  # the index credentials_passkey: another user's credential id
                raise ValueError(f"another user has the {credential.kind} {credential.key[:32]!r}") from None

    async def credential(self, kind: str, key: str) -> Credential | None:
        query = sa.select(credentials).where(credentials.c.kind == kind, credentials.c.key == key).limit(1)
        async with self._turn, self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _credential(row)

    async def use_credential(self, credential: Credential, *, now: float) -> bool:
        slot = (
            credentials.c.user_id == credential.user,
            credentials.c.kind == credential.kind,
            credentials.c.key == credential.key,
        )
        async with self._turn, self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(credentials).where(*slot).values(secret=credential.secret, last_used=now)
            )
        return bool(result.rowcount)

    async def delete_credential(self, user_id: str, kind: str, key: str) -> bool:
        mine = credentials.c.user_id == user_id
        async with self._turn, self._engine.begin() as conn:
            if not self._sqlite:  # two deletions at once must not both see another method left
                await conn.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update())
            count = (await conn.execute(sa.select(sa.func.count()).select_from(credentials).where(mine))).scalar_one()
            slot = (mine, credentials.c.kind == kind, credentials.c.key == key)
            found = (await conn.execute(sa.select(credentials.c.key).where(*slot))).first()
            if found is None:
                return False
            if count <= 1:
                raise AccountLimit(f"this is the last way {user_id} can sign in: add another first")
            await conn.execute(sa.delete(credentials).where(*slot))
        return True

    async def add_invite(self, invite: Invite, *, now: float) -> None:
        maker = invites.c.created_by == invite.created_by
        async with self._turn, self._engine.begin() as conn:
            if not self._sqlite:  # one maker's invites are counted and added by one transaction at a time
                await conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(0x696E7669, sa.func.hashtext(invite.created_by)))
                )
            await conn.execute(sa.delete(invites).where(maker, invites.c.expires <= now))
            count = (await conn.execute(sa.select(sa.func.count()).select_from(invites).where(maker))).scalar_one()
            if count >= MAX_INVITES_PER_ADMIN:
                raise AccountLimit(
                    f"{invite.created_by or 'the set-up'} has {MAX_INVITES_PER_ADMIN} invites waiting: wait for "
                    "them to be used or to expire"
                )
            await conn.execute(
                sa.insert(invites).values(
                    token_hash=invite.token_hash,
                    created_by=invite.created_by,
                    created=invite.created,
                    expires=invite.expires,
                    admin=invite.admin,
                )
            )

    async def invite(self, token_hash: str, *, now: float) -> Invite | None:
        query = sa.select(invites).where(invites.c.token_hash == token_hash, invites.c.expires > now)
        async with self._turn, self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _invite(row)

    async def drop_invites(self, created_by: str) -> int:
        async with self._turn, self._engine.begin() as conn:
            return int((await conn.execute(sa.delete(invites).where(invites.c.created_by == created_by))).rowcount)

    async def sign_up(self, token_hash: str, user: User, credential: Credential, *, now: float) -> SignUp:
        try:
            async with self._turn, self._engine.begin() as conn:
                # Deleting the row is what uses the invite up: of two sign-ups at once, one deletes it, the other
                # waits on its row lock (PostgreSQL) or on the write lock (SQLite) and then finds nothing.
                taken = (
                    await conn.execute(
                        sa.delete(invites)
                        .where(invites.c.token_hash == token_hash, invites.c.expires > now)
                        .returning(invites.c.admin)
                    )
                ).first()
                if taken is None:
                    return SignUp.NO_INVITE
                if await self._user_exists(conn, user.id):
                    raise _IdTaken  # rolls the transaction back: the invite is not used up
                await _insert_user(conn, User(user.id, user.name, bool(taken.admin), False, now), credential)
        except (_IdTaken, sa.exc.IntegrityError):
            return SignUp.ID_TAKEN
        return SignUp.DONE

    async def add_session(self, session: AccountSession) -> list[str]:
        now = session.created
        async with self._turn, self._engine.begin() as conn:
            await conn.execute(
                sa.insert(sessions).values(
                    id=session.id,
                    user_id=session.user,
                    secret_hash=session.secret_hash,
                    created=session.created,
                    last_used=session.last_used,
                    expires=session.expires,
                    user_agent=session.user_agent,
                    revoked=session.revoked,
                )
            )
            live = (
                (
                    await conn.execute(
                        sa.select(sessions.c.id)
                        .where(sessions.c.user_id == session.user, *_live(now))
                        .order_by(sessions.c.last_used.desc(), sessions.c.created.desc(), sessions.c.id.desc())
                        .offset(MAX_SESSIONS_PER_USER)
                    )
                )
                .scalars()
                .all()
            )
            if live:
                await conn.execute(sa.update(sessions).where(sessions.c.id.in_(live)).values(revoked=now))
        return list(live)

    async def session(self, secret_hash: str, *, now: float, touch: bool = True) -> AccountSession | None:
        query = sa.select(sessions).where(sessions.c.secret_hash == secret_hash, *_live(now))
        async with self._turn, self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            found = _session(row)
            if touch:
                expires = now + (found.expires - found.last_used)
                await conn.execute(
                    sa.update(sessions).where(sessions.c.id == found.id).values(last_used=now, expires=expires)
                )
                found = AccountSession(
                    found.id, found.user, found.secret_hash, found.created, now, expires, found.user_agent, None
                )
        return found

    async def sessions(self, user_id: str, *, now: float) -> list[AccountSession]:
        query = (
            sa.select(sessions)
            .where(sessions.c.user_id == user_id, *_live(now))
            .order_by(sessions.c.last_used.desc(), sessions.c.id)
            .limit(MAX_SESSIONS_PER_USER)
        )
        async with self._turn, self._engine.begin() as conn:
            return [_session(row) for row in await conn.execute(query)]

    async def revoke_session(self, session_id: str, *, now: float, user_id: str | None = None) -> bool:
        where = [sessions.c.id == session_id, sessions.c.revoked.is_(None)]
        if user_id is not None:
            where.append(sessions.c.user_id == user_id)
        async with self._turn, self._engine.begin() as conn:
            return bool((await conn.execute(sa.update(sessions).where(*where).values(revoked=now))).rowcount)

    async def revoke_sessions(self, user_id: str, *, now: float, keep: str | None = None) -> list[str]:
        where = [sessions.c.user_id == user_id, sessions.c.revoked.is_(None)]
        if keep is not None:
            where.append(sessions.c.id != keep)
        async with self._turn, self._engine.begin() as conn:
            result = await conn.execute(sa.update(sessions).where(*where).values(revoked=now).returning(sessions.c.id))
            return sorted(result.scalars().all())

    async def revoked_since(self, since: float) -> list[str]:
        query = sa.select(sessions.c.id).where(sessions.c.revoked >= since).order_by(sessions.c.id)
        async with self._turn, self._engine.begin() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def prune_accounts(self, now: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        old_invites = sa.select(invites.c.token_hash).where(invites.c.expires <= now).limit(limit)
        old_sessions = sa.select(sessions.c.id).where(
            sa.or_(sessions.c.expires <= now, sessions.c.revoked <= now - REVOKED_KEPT)
        )
        async with self._turn, self._engine.begin() as conn:
            gone = (await conn.execute(sa.delete(invites).where(invites.c.token_hash.in_(old_invites)))).rowcount
            left = limit - gone
            if left > 0:
                gone += (
                    await conn.execute(sa.delete(sessions).where(sessions.c.id.in_(old_sessions.limit(left))))
                ).rowcount
        return int(gone)
