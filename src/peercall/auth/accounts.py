"""The secrets of accounts mode: password hashing (argon2id), the tokens of invites and sign-ins (only their hashes
are stored), the key that signs signaling tokens, the sign-in throttle, and the verifier of signaling tokens.

No HTTP and no store here (server/accounts.py has the routes, store/ the tables). The clock comes in as an argument.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .tokens import AuthError, TokenVerifier

MIN_PASSWORD, MAX_PASSWORD = 8, 1024
"""Length bounds of a password, in characters (the upper one keeps hashing cheap to refuse)."""

KEY_FILE = "signing.key"
"""The file in the data folder that keeps the signing key of accounts mode when PEERCALL_AUTH_SECRET is unset."""

HASHING_AT_ONCE = 2
"""Password hashes computed at once (argon2id takes 64 MiB and some 50 ms of one core each)."""


def new_token() -> str:
    """A random, URL-safe secret of 256 bits: an invite's or a sign-in's."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex. (The token has 256 random bits: no salt or slow hash is
    needed for it, unlike a password.)"""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_password(password: object) -> str:
    """`password` if it is acceptable as a new password, else ValueError saying why."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


class Passwords:
    """argon2id hashing (argon2-cffi's defaults, RFC 9106's second recommendation) off the event loop, at most
    HASHING_AT_ONCE at a time. `verify` of an unknown account checks against a dummy hash, so that it takes
    about the time of a real one (no enumeration by timing)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_hex(16))
        self._turns = asyncio.Semaphore(HASHING_AT_ONCE)

    def hash_now(self, password: str) -> str:
        """The PHC string of `password` (blocking: for the CLI)."""
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        async with self._turns:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches the PHC string `stored` (None: no such account; the dummy is checked)."""
        async with self._turns:
            return await asyncio.to_thread(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            ok = self._hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and stored is not None


def signing_key(secret: str | None, folder: Path) -> str:
    """The HS256 key of signaling tokens: `secret` (PEERCALL_AUTH_SECRET) if set, else the one in
    `folder/signing.key`, made (random, mode 0600, in a 0700 folder) if there is none."""
    if secret:
        return secret
    path = folder / KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


class Throttle:
    """Failed attempts per key (an account, an address), as a bucket of `burst` tries that refills by one every
    `refill` seconds. Bounded: at most `keys` keys are tracked; past that, those whose buckets are fullest (the
    oldest touched) are forgotten. Per node: in a cluster each node throttles on its own."""

    def __init__(self, burst: int, refill: float, keys: int = 10_000) -> None:
        self.burst, self.refill, self.keys = burst, refill, keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tries left, at)

    def _left(self, key: str, now: float) -> float:
        left, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), left + (now - at) / self.refill)

    def wait(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0: now)."""
        left = self._left(key, now)
        return 0.0 if left >= 1 else (1 - left) * self.refill

    def failed(self, key: str, now: float) -> None:
        self._buckets[key] = (max(0.0, self._left(key, now) - 1), now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.keys:
            self._buckets.popitem(last=False)

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


class AccountsVerifier(TokenVerifier):
    """Signaling tokens of accounts mode: HS256 with the signing key, `sub` the user, `sid` the sign-in they came
    from, and refused once that sign-in is in `revoked` (which server/accounts.py refreshes from the store every
    few seconds, on every node)."""

    def __init__(self, key: str) -> None:
        super().__init__(secret=key)
        self._mint_key = key
        self.revoked: frozenset[str] = frozenset()
        self._required.append("sid")

    def mint(self, user: str, session_id: str, ttl: float, *, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {"sub": user, "sid": session_id, "iat": issued, "exp": issued + int(ttl)}
        return jwt.encode(claims, self._mint_key, algorithm="HS256")

    def check(self, claims: dict[str, Any]) -> None:
        if claims.get("sid") in self.revoked:
            raise AuthError("this sign-in has ended (signed out or revoked): sign in again")

    def csrf(self, session_id: str) -> str:
        """The CSRF value of a sign-in: derived from its id with the key, so nothing more is stored."""
        return hmac.new(self._mint_key.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()[:32]
