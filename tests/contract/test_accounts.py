"""The accounts contract (store/base.py `Accounts`) on every backend: users, sign-in methods, one-time invites,
sign-ins with their bounds, revocation and pruning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest

from peercall.store import Store, open_history
from peercall.store.base import (
    MAX_CREDENTIALS_PER_USER,
    MAX_INVITES_PER_ADMIN,
    MAX_SESSIONS_PER_USER,
    REVOKED_KEPT,
    AccountLimit,
    AccountSession,
    Credential,
    Invite,
    SignUp,
    User,
)

NOW = 1_800_000_000.0
DAY = 86400.0


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    s = cast(Store, open_history(url))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def password(user: str, secret: str = "$argon2id$hash") -> Credential:
    return Credential(user=user, kind="password", key="", secret=secret, created=NOW)


def session(user: str, n: int, at: float = NOW) -> AccountSession:
    return AccountSession(f"s{n:03d}", user, f"h{n:03d}", at, at, at + DAY, "test")


async def test_users_are_created_once_and_listed_in_id_order(store: Store) -> None:
    assert await store.count_users() == 0
    assert await store.add_user(User("bo", "Bo", created=NOW), password("bo"))
    assert not await store.add_user(User("bo", "Another Bo", admin=True, created=NOW))
    assert await store.add_user(User("ann", "Ann", admin=True, created=NOW))
    assert await store.user("bo") == User("bo", "Bo", created=NOW)
    assert await store.user("nobody") is None
    assert [u.id for u in await store.users()] == ["ann", "bo"]
    assert [u.id for u in await store.users(limit=1, after="ann")] == ["bo"]
    assert await store.count_users() == 2
    assert [c.secret for c in await store.credentials("bo")] == ["$argon2id$hash"]
    with pytest.raises(ValueError):
        await store.users(limit=0)


async def test_a_password_is_replaced_and_sign_in_methods_are_bounded(store: Store) -> None:
    await store.add_user(User("bo", "Bo", created=NOW), password("bo"))
    await store.set_credential(password("bo", "$argon2id$new"))
    assert [c.secret for c in await store.credentials("bo")] == ["$argon2id$new"]
    for n in range(MAX_CREDENTIALS_PER_USER - 1):
        await store.set_credential(Credential("bo", "passkey", f"k{n}", "pk", NOW + n))
    with pytest.raises(AccountLimit):
        await store.set_credential(Credential("bo", "passkey", "one-more", "pk", NOW))
    assert len(await store.credentials("bo")) == MAX_CREDENTIALS_PER_USER


async def test_an_invite_signs_up_one_user_once_and_expires(store: Store) -> None:
    await store.add_invite(Invite("inv1", "ann", NOW, NOW + 60), now=NOW)
    await store.add_invite(Invite("inv2", "ann", NOW, NOW + 60, admin=True), now=NOW)
    assert (await store.invite("inv1", now=NOW)) == Invite("inv1", "ann", NOW, NOW + 60)
    assert await store.invite("inv1", now=NOW + 60) is None
    await store.add_user(User("taken", "T", created=NOW))
    # An id that is taken does not use the invite up.
    assert await store.sign_up("inv1", User("taken", "X"), password("taken"), now=NOW) == SignUp.ID_TAKEN
    assert await store.sign_up("inv1", User("cy", "Cy", admin=True), password("cy"), now=NOW) == SignUp.DONE
    assert await store.sign_up("inv1", User("dee", "Dee"), password("dee"), now=NOW) == SignUp.NO_INVITE
    assert await store.user("cy") == User("cy", "Cy", admin=False, created=NOW)  # the invite decides
    assert await store.user("dee") is None
    assert await store.sign_up("inv2", User("eve", "Eve"), password("eve"), now=NOW + 61) == SignUp.NO_INVITE
    assert await store.sign_up("nope", User("eve", "Eve"), password("eve"), now=NOW) == SignUp.NO_INVITE


async def test_two_sign_ups_with_one_invite_at_once_make_one_user(store: Store) -> None:
    await store.add_invite(Invite("inv", "ann", NOW, NOW + 60, admin=True), now=NOW)
    results = await asyncio.gather(
        *(store.sign_up("inv", User(f"u{n}", "U"), password(f"u{n}"), now=NOW) for n in range(5))
    )
    assert sorted(results) == sorted([SignUp.DONE] + [SignUp.NO_INVITE] * 4)
    assert await store.count_users() == 1
    assert (await store.users())[0].admin


async def test_invites_are_bounded_per_admin_and_expired_ones_make_room(store: Store) -> None:
    for n in range(MAX_INVITES_PER_ADMIN):
        await store.add_invite(Invite(f"i{n}", "ann", NOW, NOW + 60 + n), now=NOW)
    with pytest.raises(AccountLimit):
        await store.add_invite(Invite("more", "ann", NOW, NOW + 60), now=NOW)
    await store.add_invite(Invite("other", "bo", NOW, NOW + 600), now=NOW)  # another admin's own room
    await store.add_invite(Invite("later", "ann", NOW + 61, NOW + 600), now=NOW + 61)  # i0 and i1 expired
    assert await store.invite("later", now=NOW + 61) is not None
    assert await store.drop_invites("bo") == 1
    assert await store.invite("other", now=NOW) is None


async def test_sessions_are_found_by_secret_hash_touched_revoked_and_bounded(store: Store) -> None:
    await store.add_user(User("bo", "Bo", created=NOW))
    assert await store.add_session(session("bo", 0)) == []
    found = await store.session("h000", now=NOW + 10)
    assert found is not None and (found.id, found.last_used, found.expires) == ("s000", NOW + 10, NOW + 10 + DAY)
    assert await store.session("s000", now=NOW) is None  # the id is not the secret
    assert await store.session("h000", now=NOW + 20 + DAY) is None  # expired
    dropped: list[str] = []
    for n in range(1, MAX_SESSIONS_PER_USER + 2):
        dropped += await store.add_session(session("bo", n, NOW + n))
    assert dropped == ["s001", "s002"]  # the least recently used (s000 was used at +10)
    assert await store.session("h001", now=NOW + 100) is None
    live = await store.sessions("bo", now=NOW + 100)
    assert len(live) == MAX_SESSIONS_PER_USER and live[0].id == f"s{MAX_SESSIONS_PER_USER + 1:03d}"
    assert not await store.revoke_session("s005", now=NOW + 200, user_id="someone-else")
    assert await store.revoke_session("s005", now=NOW + 200, user_id="bo")
    assert not await store.revoke_session("s005", now=NOW + 201)
    assert await store.session("h005", now=NOW + 202) is None
    ended = await store.revoke_sessions("bo", now=NOW + 300, keep="s010")
    assert len(ended) == MAX_SESSIONS_PER_USER - 2 and "s010" not in ended
    assert [s.id for s in await store.sessions("bo", now=NOW + 301)] == ["s010"]
    assert set(await store.revoked_since(NOW + 200)) == {"s005", *ended}
    assert await store.revoked_since(NOW + 301) == []


async def test_a_disabled_user_has_no_live_session(store: Store) -> None:
    await store.add_user(User("bo", "Bo", created=NOW))
    await store.add_session(session("bo", 1))
    assert await store.set_disabled("bo", True, now=NOW + 1)
    assert (await store.user("bo")) == User("bo", "Bo", disabled=True, created=NOW)
    assert await store.session("h001", now=NOW + 2) is None
    assert await store.revoked_since(NOW + 1) == ["s001"]
    assert await store.set_disabled("bo", False, now=NOW + 3)
    assert await store.session("h001", now=NOW + 4) is None  # enabling does not bring sign-ins back
    assert not await store.set_disabled("nobody", True, now=NOW)


async def test_prune_deletes_expired_invites_and_old_sessions_in_batches(store: Store) -> None:
    await store.add_user(User("bo", "Bo", created=NOW))
    for n in range(3):
        await store.add_invite(Invite(f"i{n}", "ann", NOW, NOW + 10), now=NOW)
    await store.add_invite(Invite("fresh", "ann", NOW, NOW + 10 * DAY), now=NOW)
    await store.add_session(session("bo", 1))  # expires after a day
    await store.add_session(AccountSession("s2", "bo", "h2", NOW, NOW, NOW + 10 * DAY, ""))
    await store.revoke_session("s2", now=NOW)
    later = NOW + 2 * DAY
    assert later - NOW > REVOKED_KEPT
    assert await store.prune_accounts(later, limit=2) == 2
    assert await store.prune_accounts(later) == 3
    assert await store.prune_accounts(later) == 0
    assert await store.invite("fresh", now=later) is not None
    with pytest.raises(ValueError):
        await store.prune_accounts(later, limit=0)


async def test_accounts_outlive_the_store_instance(durable_url: str) -> None:
    first = cast(Store, open_history(durable_url))
    await first.open()
    await first.add_user(User("bo", "Bo", admin=True, created=NOW), password("bo"))
    await first.close()
    second = cast(Store, open_history(durable_url))
    await second.open()
    try:
        assert await second.user("bo") == User("bo", "Bo", admin=True, created=NOW)
        assert len(await second.credentials("bo")) == 1
    finally:
        await second.close()


def passkey(user: str, key: str, secret: str = '{"signCount": 0}', at: float = NOW) -> Credential:
    return Credential(user=user, kind="passkey", key=key, secret=secret, created=at)


async def test_a_passkey_is_found_by_its_credential_id_and_its_use_is_kept(store: Store) -> None:
    await store.add_user(User("bo", "Bo", created=NOW), password("bo"))
    await store.add_user(User("ann", "Ann", created=NOW), passkey("ann", "cred-ann"))
    await store.set_credential(passkey("bo", "cred-bo", at=NOW + 1))
    assert await store.credential("passkey", "cred-bo") == passkey("bo", "cred-bo", at=NOW + 1)
    assert (await store.credential("passkey", "cred-ann")).user == "ann"  # type: ignore[union-attr]
    assert await store.credential("passkey", "nobody's") is None
    with pytest.raises(ValueError):  # a credential id belongs to one user
        await store.set_credential(passkey("bo", "cred-ann"))
    assert [c.key for c in await store.credentials("bo")] == ["", "cred-bo"]

    assert await store.use_credential(passkey("bo", "cred-bo", '{"signCount": 7}'), now=NOW + 50)
    used = await store.credential("passkey", "cred-bo")
    assert used is not None and used.secret == '{"signCount": 7}' and used.last_used == NOW + 50
    assert used.created == NOW + 1
    assert not await store.use_credential(passkey("bo", "gone"), now=NOW + 50)
    assert not await store.use_credential(passkey("ann", "cred-bo"), now=NOW + 50)  # not ann's


async def test_a_sign_in_method_is_deleted_but_never_the_last(store: Store) -> None:
    await store.add_user(User("bo", "Bo", created=NOW), password("bo"))
    await store.set_credential(passkey("bo", "k1"))
    await store.add_user(User("ann", "Ann", created=NOW), passkey("ann", "k2"))
    assert not await store.delete_credential("ann", "passkey", "k1")  # bo's: not ann's to delete
    assert await store.delete_credential("bo", "passkey", "k1")
    assert not await store.delete_credential("bo", "passkey", "k1")
    assert await store.credential("passkey", "k1") is None
    with pytest.raises(AccountLimit):
        await store.delete_credential("bo", "password", "")
    with pytest.raises(AccountLimit):
        await store.delete_credential("ann", "passkey", "k2")
    assert [c.kind for c in await store.credentials("bo")] == ["password"]
    assert [c.key for c in await store.credentials("ann")] == ["k2"]
    await store.set_credential(passkey("ann", "k3"))
    assert await store.delete_credential("ann", "passkey", "k2")
    assert [c.key for c in await store.credentials("ann")] == ["k3"]
