"""The secrets of accounts mode without a server: the throttle's arithmetic, the signing key's file, the signaling
tokens' claims and revocation, password hashing."""

from __future__ import annotations

import asyncio
import stat
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from peercall.auth.accounts import (
    HASHES_PER_OWNER,
    HASHING_AT_ONCE,
    MAX_HASHES_WAITING,
    Busy,
    Challenges,
    Full,
    Known,
    Passkey,
    Passwords,
    Throttle,
    b64url,
    check_password,
    check_strength,
    token_hash,
)
from peercall.auth.tokens import AccountsVerifier, AuthError, TokenVerifier, signing_key
from peercall.config import Settings


def test_the_throttle_allows_a_burst_then_one_try_per_refill() -> None:
    throttle = Throttle(burst=3, refill=60, keys=2)
    for _ in range(3):
        assert throttle.wait("bob", 0) == 0
        assert throttle.take("bob", 0) == 1
    assert throttle.wait("bob", 0) == 60
    assert throttle.wait("bob", 45) == pytest.approx(15)
    assert throttle.wait("bob", 60) == 0
    assert throttle.wait("ann", 0) == 0  # another key
    throttle.forget("bob")
    assert throttle.wait("bob", 1) == 0


def test_a_try_taken_from_the_throttle_is_given_back_whole_or_in_part() -> None:
    throttle = Throttle(burst=2, refill=60)
    taken = [throttle.take("bob", 0) for _ in range(2)]
    assert throttle.wait("bob", 0) == 60
    throttle.give_back("bob", taken[1], 0)
    assert throttle.wait("bob", 0) == 0
    assert throttle.take("bob", 0) == 1 and throttle.take("bob", 30) == pytest.approx(0.5)
    throttle.give_back("bob", 0.5, 30)  # a try taken from a nearly empty bucket gives back no more than it took
    assert throttle.wait("bob", 30) == pytest.approx(30)
    throttle.give_back("bob", 1, 30)
    throttle.give_back("bob", 1, 30)  # never more than the burst
    assert [throttle.take("bob", 30) for _ in range(3)] == [1, 1, 0]


def test_the_throttle_forgets_the_oldest_keys_past_its_bound() -> None:
    throttle = Throttle(burst=1, refill=60, keys=2)
    for key in ("a", "b", "c"):
        throttle.take(key, 0)
    assert throttle.wait("a", 0) == 0 and throttle.wait("c", 0) == 60


def test_known_addresses_last_their_time_and_are_bounded() -> None:
    known = Known(ttl=60, keys=2)
    known.add("bob\n10.0.0.1", 0)
    assert known.has("bob\n10.0.0.1", 59) and not known.has("bob\n10.0.0.1", 60)
    assert not known.has("bob\n10.0.0.2", 0)
    for key in ("a", "b"):
        known.add(key, 10)
    assert not known.has("bob\n10.0.0.1", 10) and known.has("a", 10)


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


@pytest.mark.parametrize(
    "weak",
    ["password1", "aaaaaaaaaaaa", "12345678", "qwertyuiop", "iloveyou2", "bob12345", "Bob Builder1", "peercall1"],
)
def test_a_new_password_a_guesser_would_try_first_is_refused(weak: str) -> None:
    """The commonest passwords and their variants, keyboard runs, one character repeated, and the account's own id,
    name or the product's name with digits are refused, saying why; a few uncommon words are not."""
    with pytest.raises(ValueError, match="too easy to guess"):
        check_strength(weak, ["bob", "Bob Builder"])
    check_strength("correct horse battery", ["bob", "Bob Builder"])
    check_strength("correct horse battery staple " * 35, [])  # (1,015 characters: judged by its first 72)


class HeldHasher(PasswordHasher):
    """Cheap argon2id whose verifications wait until `go` is set: hashes that stay in the queue."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.go = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.go.wait(30)
        return super().verify(hash, password)


async def test_password_hashes_wait_in_a_bounded_queue_and_a_few_per_address() -> None:
    """Past HASHES_PER_OWNER of one address, or past MAX_HASHES_WAITING in all, a hash is refused at once (Busy)
    instead of waiting behind the others; once they are done, hashes are taken again."""
    hasher = HeldHasher()
    passwords = Passwords(hasher)
    stored = await passwords.hash("correct horse", "10.0.0.1")
    held = [asyncio.create_task(passwords.verify(stored, "wrong horse", "10.0.0.1")) for _ in range(HASHES_PER_OWNER)]
    await asyncio.sleep(0)
    with pytest.raises(Busy) as mine:
        await passwords.verify(stored, "correct horse", "10.0.0.1")
    assert mine.value.mine
    for n in range(HASHING_AT_ONCE + MAX_HASHES_WAITING - HASHES_PER_OWNER):
        held.append(asyncio.create_task(passwords.verify(stored, "wrong horse", f"10.0.1.{n}")))
    await asyncio.sleep(0)
    with pytest.raises(Busy) as everyone:
        await passwords.verify(stored, "correct horse", "10.0.2.1")
    assert not everyone.value.mine
    hasher.go.set()
    assert await asyncio.gather(*held) == [False] * len(held)
    assert await passwords.verify(stored, "correct horse", "10.0.2.1")


def test_a_webauthn_challenge_is_taken_once_for_its_purpose_before_it_expires() -> None:
    challenges = Challenges(ttl=60)
    first = b64url(challenges.issue("sign-in", "10.0.0.0", 1000.0))
    assert challenges.take(first, "sign-in", 1010.0) is not None
    assert challenges.take(first, "sign-in", 1010.0) is None  # used up
    wrong = b64url(challenges.issue("add-passkey", "user:ann", 1000.0, ("ann",)))
    assert challenges.take(wrong, "sign-in", 1010.0) is None
    assert challenges.take(wrong, "add-passkey", 1010.0) is None  # a wrong use used it up too
    late = b64url(challenges.issue("sign-in", "10.0.0.0", 1000.0))
    assert challenges.take(late, "sign-in", 1060.0) is None
    assert len(challenges) == 0


def test_waiting_challenges_are_bounded_in_all_and_per_owner() -> None:
    challenges = Challenges(ttl=60, limit=10, per_owner=3)
    mine = [b64url(challenges.issue("sign-in", "me", 1000.0)) for _ in range(5)]
    assert len(challenges) == 3
    assert challenges.take(mine[0], "sign-in", 1001.0) is None  # the oldest of mine went
    others = [b64url(challenges.issue("sign-in", f"o{n}", 1010.0)) for n in range(7)]
    assert len(challenges) == 10
    with pytest.raises(Full) as full:  # no one else's challenge goes for a new one
        challenges.issue("sign-in", "late", 1020.0)
    assert full.value.wait == pytest.approx(40)
    assert challenges.take(mine[-1], "sign-in", 1021.0) and challenges.take(others[0], "sign-in", 1021.0)
    challenges.issue("sign-in", "new", 2000.0)  # the expired ones are dropped first
    assert len(challenges) == 1


def test_a_passkey_is_kept_as_text_and_read_back() -> None:
    passkey = Passkey(b"\x01\x02cose", 7, ("internal", "hybrid"), "Laptop")
    assert Passkey.decode(passkey.encode()) == passkey
    with pytest.raises(ValueError):
        Passkey.decode("$argon2id$not-a-passkey")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (" Ann A. ", "Ann A."),
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",) * 2,  # a Persian word with its ZWNJ
        ("Fam \U0001f468\u200d\U0001f469\u200d\U0001f467",) * 2,  # an emoji family (ZWJ)
        ("Ann\u202e", None),  # the bidi override
        ("Ann\u200b", None),  # a zero-width space
        ("A\nnn", None),
    ],
)
def test_an_accounts_name_follows_the_one_rule_of_names(given: str, kept: str | None) -> None:
    """An account's display name and a passkey's label follow the rule a token's name claim does
    (`is_plain_text`): no Unicode category C but the joiners that Persian and Indic names and emoji need."""
    from peercall.server.accounts import display_name, passkey_label
    from peercall.server.jsonapi import Refusal

    for check in (display_name, passkey_label):
        if kept is None:
            with pytest.raises(Refusal):
                check(given)
        else:
            assert check(given) == kept
