"""The secrets of accounts mode: password hashing (argon2id), the tokens of invites and sign-ins (only their hashes
are stored) and the sign-in throttle. (The signing key and the verifier of signaling tokens are in auth/tokens.py.)

No HTTP and no store here (server/accounts.py has the routes, store/ the tables). The clock comes in as an argument.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD, MAX_PASSWORD = 8, 1024
"""Length bounds of a password, in characters (the upper one keeps hashing cheap to refuse)."""

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
