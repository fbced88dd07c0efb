"""The secrets of accounts mode without a server: the throttle's arithmetic, the signing key's file, the signaling
tokens' claims and revocation, password hashing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from peercall.auth.accounts import Passwords, Throttle, check_password, token_hash
from peercall.auth.tokens import AccountsVerifier, AuthError, TokenVerifier, signing_key
from peercall.config import Settings


def test_the_throttle_allows_a_burst_then_one_try_per_refill() -> None:
    throttle = Throttle(burst=3, refill=60, keys=2)
    for _ in range(3):
        assert throttle.wait("bob", 0) == 0
        throttle.failed("bob", 0)
    assert throttle.wait("bob", 0) == 60
    assert throttle.wait("bob", 45) == pytest.approx(15)
    assert throttle.wait("bob", 60) == 0
    assert throttle.wait("ann", 0) == 0  # another key
    throttle.forget("bob")
    assert throttle.wait("bob", 1) == 0


def test_the_throttle_forgets_the_oldest_keys_past_its_bound() -> None:
    throttle = Throttle(burst=1, refill=60, keys=2)
    for key in ("a", "b", "c"):
        throttle.failed(key, 0)
    assert throttle.wait("a", 0) == 0 and throttle.wait("c", 0) == 60


def test_the_signing_key_is_made_once_and_private(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    key = signing_key(None, folder)
    assert len(key) >= 64 and signing_key(None, folder) == key
    assert stat.S_IMODE((folder / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert signing_key("operator-secret", folder) == "operator-secret"


def test_signaling_tokens_need_a_live_sign_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    verifier = TokenVerifier.for_settings(Settings(auth="accounts"))
    assert isinstance(verifier, AccountsVerifier)
    token = verifier.mint("ann", "s1", 300)
    assert verifier.verify(token) == "ann"
    verifier.revoked = frozenset({"s1"})
    with pytest.raises(AuthError, match="sign-in has ended"):
        verifier.verify(token)
    assert verifier.csrf("s1") != verifier.csrf("s2") and len(verifier.csrf("s1")) == 32


def test_a_token_without_sid_is_refused(tmp_path: Path) -> None:
    from peercall.auth.tokens import mint

    verifier = AccountsVerifier("k" * 40)
    with pytest.raises(AuthError, match="'sid'"):
        verifier.verify(mint("ann", "k" * 40))


async def test_passwords_verify_only_their_own_hash() -> None:
    passwords = Passwords()
    stored = await passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "correct horse")
    assert not await passwords.verify(stored, "wrong horse")
    assert not await passwords.verify(None, "correct horse")  # no account: the dummy, and never a match
    assert not await passwords.verify("not a hash", "x")
    with pytest.raises(ValueError, match="8 to 1024"):
        check_password("short")
    assert token_hash("a") != token_hash("b") and len(token_hash("a")) == 64
