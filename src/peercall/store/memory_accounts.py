"""Accounts in process memory (`memory://`): users, sign-in methods, invites and sign-ins in dicts, as
`store.base.Accounts` describes them. Mixed into `MemoryHistory`. No method awaits while it reads or changes
state, so every method is atomic on the event loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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


class MemoryAccounts:
    """`Accounts` in dicts."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._credentials: dict[str, dict[tuple[str, str], Credential]] = {}  # user -> (kind, key) -> credential
        self._invites: dict[str, Invite] = {}  # token hash -> invite
        self._sessions: dict[str, AccountSession] = {}  # session id -> session
        self._by_secret: dict[str, str] = {}  # secret hash -> session id

    async def add_user(self, user: User, credential: Credential | None = None) -> bool:
        if user.id in self._users:
            return False
        self._users[user.id] = user
        self._credentials[user.id] = {}
        if credential is not None:
            self._credentials[user.id][(credential.kind, credential.key)] = credential
        return True

    async def user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def users(self, *, limit: int = 100, after: str | None = None) -> list[User]:
        check_limit(limit)
        ids = sorted(i for i in self._users if after is None or i > after)[:limit]
        return [self._users[i] for i in ids]

    async def count_users(self) -> int:
        return len(self._users)

    async def set_disabled(self, user_id: str, disabled: bool, *, now: float) -> bool:
        user = self._users.get(user_id)
        if user is None:
            return False
        self._users[user_id] = dataclasses.replace(user, disabled=disabled)
        if disabled:
            self._revoke_where(lambda s: s.user == user_id, now)
        return True

    async def credentials(self, user_id: str) -> list[Credential]:
        return sorted(self._credentials.get(user_id, {}).values(), key=lambda c: (c.created, c.kind, c.key))

    async def set_credential(self, credential: Credential) -> None:
        mine = self._credentials.setdefault(credential.user, {})
        slot = (credential.kind, credential.key)
        if slot not in mine and len(mine) >= MAX_CREDENTIALS_PER_USER:
            raise AccountLimit(f"{credential.user} has {MAX_CREDENTIALS_PER_USER} sign-in methods: remove one first")
        if slot not in mine and credential.kind != "password" and await self.credential(*slot) is not None:
            raise ValueError(f"another user has the {credential.kind} {credential.key[:32]!r}")
        mine[slot] = credential

    async def credential(self, kind: str, key: str) -> Credential | None:
        for mine in self._credentials.values():
            if (kind, key) in mine:
                return mine[(kind, key)]
        return None

    async def use_credential(self, credential: Credential, *, now: float) -> bool:
        mine = self._credentials.get(credential.user, {})
        slot = (credential.kind, credential.key)
        if slot not in mine:
            return False
        mine[slot] = dataclasses.replace(mine[slot], secret=credential.secret, last_used=now)
        return True

    async def delete_credential(self, user_id: str, kind: str, key: str) -> bool:
        mine = self._credentials.get(user_id, {})
        if (kind, key) not in mine:
            return False
        if len(mine) == 1:
            raise AccountLimit(f"this is the last way {user_id} can sign in: add another first")
        del mine[(kind, key)]
        return True

    async def add_invite(self, invite: Invite, *, now: float) -> None:
        for token_hash, old in list(self._invites.items()):
            if old.expires <= now:
                del self._invites[token_hash]
        waiting = sum(1 for i in self._invites.values() if i.created_by == invite.created_by)
        if waiting >= MAX_INVITES_PER_ADMIN:
            raise AccountLimit(
                f"{invite.created_by or 'the set-up'} has {MAX_INVITES_PER_ADMIN} invites waiting: wait for them to "
                "be used or to expire"
            )
        self._invites[invite.token_hash] = invite

    async def invite(self, token_hash: str, *, now: float) -> Invite | None:
        found = self._invites.get(token_hash)
        return found if found is not None and found.expires > now else None

    async def drop_invites(self, created_by: str) -> int:
        gone = [h for h, i in self._invites.items() if i.created_by == created_by]
        for token_hash in gone:
            del self._invites[token_hash]
        return len(gone)

    async def sign_up(self, token_hash: str, user: User, credential: Credential, *, now: float) -> SignUp:
        found = self._invites.get(token_hash)
        if found is None or found.expires <= now:
            return SignUp.NO_INVITE
        if user.id in self._users:
            return SignUp.ID_TAKEN
        del self._invites[token_hash]
        await self.add_user(dataclasses.replace(user, admin=found.admin, disabled=False, created=now), credential)
        return SignUp.DONE

    async def add_session(self, session: AccountSession) -> list[str]:
        self._sessions[session.id] = session
        self._by_secret[session.secret_hash] = session.id
        live = sorted(
            (s for s in self._sessions.values() if s.user == session.user and self._live(s, session.created)),
            key=lambda s: (s.last_used, s.created, s.id),
        )
        dropped = [s.id for s in live[: max(0, len(live) - MAX_SESSIONS_PER_USER)]]
        self._revoke_where(lambda s: s.id in dropped, session.created)
        return dropped

    def _live(self, session: AccountSession, now: float) -> bool:
        user = self._users.get(session.user)
        return session.revoked is None and session.expires > now and user is not None and not user.disabled

    async def session(self, secret_hash: str, *, now: float, touch: bool = True) -> AccountSession | None:
        found = self._sessions.get(self._by_secret.get(secret_hash, ""))
        if found is None or not self._live(found, now):
            return None
        if touch:
            found = dataclasses.replace(found, last_used=now, expires=now + (found.expires - found.last_used))
            self._sessions[found.id] = found
        return found

    async def sessions(self, user_id: str, *, now: float) -> list[AccountSession]:
        live = [s for s in self._sessions.values() if s.user == user_id and self._live(s, now)]
        return sorted(live, key=lambda s: (-s.last_used, s.id))

    async def revoke_session(self, session_id: str, *, now: float, user_id: str | None = None) -> bool:
        found = self._sessions.get(session_id)
        if found is None or found.revoked is not None or (user_id is not None and found.user != user_id):
            return False
        self._sessions[session_id] = dataclasses.replace(found, revoked=now)
        return True

    async def revoke_sessions(self, user_id: str, *, now: float, keep: str | None = None) -> list[str]:
        return self._revoke_where(lambda s: s.user == user_id and s.id != keep, now)

    def _revoke_where(self, which: Callable[[AccountSession], bool], now: float) -> list[str]:
        ids = [s.id for s in self._sessions.values() if s.revoked is None and which(s)]
        for session_id in ids:
            self._sessions[session_id] = dataclasses.replace(self._sessions[session_id], revoked=now)
        return ids

    async def revoked_since(self, since: float) -> list[str]:
        return sorted(s.id for s in self._sessions.values() if s.revoked is not None and s.revoked >= since)

    async def prune_accounts(self, now: float, *, limit: int = PRUNE_BATCH) -> int:
        check_limit(limit)
        invites = [h for h, i in self._invites.items() if i.expires <= now][:limit]
        for token_hash in invites:
            del self._invites[token_hash]
        left = limit - len(invites)
        sessions = [
            s
            for s in self._sessions.values()
            if s.expires <= now or (s.revoked is not None and s.revoked <= now - REVOKED_KEPT)
        ][:left]
        for s in sessions:
            del self._sessions[s.id]
            self._by_secret.pop(s.secret_hash, None)
        return len(invites) + len(sessions)
