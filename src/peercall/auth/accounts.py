"""The secrets of accounts mode: password hashing (argon2id), the tokens of invites and sign-ins (only their hashes
are stored), the sign-in throttle, the pending WebAuthn challenges and what is kept of a passkey. (The signing key
and the verifier of signaling tokens are in auth/tokens.py.)

No HTTP and no store here (server/accounts.py has the routes, store/ the tables). The clock comes in as an argument.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

T = TypeVar("T")

MIN_PASSWORD, MAX_PASSWORD = 8, 1024
"""Length bounds of a password, in characters (the upper one keeps hashing cheap to refuse)."""

HASHING_AT_ONCE = 2
"""Password hashes computed at once (argon2id takes 64 MiB and some 50 ms of one core each)."""
MAX_HASHES_WAITING = 32
"""Password hashes that may wait for their turn on a node: past it, a hash is refused (`Busy`), so that a flood
makes nobody wait more than about a second for theirs."""
HASHES_PER_OWNER = HASHING_AT_ONCE
"""Password hashes of one owner (an address) computed or waiting at once: one address cannot fill the queue."""


def new_token() -> str:
    """A random, URL-safe secret of 256 bits: an invite's or a sign-in's."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex. (The token has 256 random bits: no salt or slow hash is
    needed for it, unlike a password.)"""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_password(password: object) -> str:
    """`password` if it has the shape of a password (a string of an acceptable length), else ValueError saying why.
    Cheap: checked before anything else; `check_strength` too, before a new password is kept."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


MIN_STRENGTH = 2
"""zxcvbn's score (0-4) a new password needs. 0 and 1 are what guessers try first: the commonest passwords and their
variants ("password1", "iloveyou2"), keyboard runs, one character repeated, the user's own id or name with digits
(NIST SP 800-63B asks a verifier to refuse "commonly-used, expected, or compromised" passwords, not to impose
rules of composition). "correct horse battery" scores 4."""
STRENGTH_CHECKED = 72
"""Characters of a password zxcvbn judges (its own limit; its cost grows with the length): a longer one by its start."""


def check_strength(password: str, context: list[str]) -> None:
    """ValueError saying why, if `password` is among the first a guesser tries; `context`: the words of its account
    (the user id, the display name), which a guesser tries too."""
    found = zxcvbn(password[:STRENGTH_CHECKED], user_inputs=[*context, "peercall"])
    if found["score"] < MIN_STRENGTH:
        warning = str(found["feedback"]["warning"]).rstrip(".") or "it is among the first a guesser tries"
        why = warning[:1].lower() + warning[1:]
        raise ValueError(f"that password is too easy to guess ({why}): a few uncommon words make a strong one")


class Busy(Exception):
    """A password hash refused for now: too many wait (`mine`: too many of this owner's own)."""

    def __init__(self, mine: bool) -> None:
        super().__init__("too many password hashes of this address wait" if mine else "too many password hashes wait")
        self.mine = mine


class Passwords:
    """argon2id hashing (argon2-cffi's defaults, RFC 9106's second recommendation) off the event loop, at most
    HASHING_AT_ONCE at a time, MAX_HASHES_WAITING waiting and HASHES_PER_OWNER of one owner (beyond: `Busy`).
    `verify` of an unknown account checks against a dummy hash, so that it takes about the time of a real one (no
    enumeration by timing)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_hex(16))
        self._turns = asyncio.Semaphore(HASHING_AT_ONCE)
        self._owners: Counter[str] = Counter()  # hashes computed or waiting, by owner

    def hash_now(self, password: str) -> str:
        """The PHC string of `password` (blocking: for the CLI)."""
        return self._hasher.hash(password)

    async def hash(self, password: str, owner: str = "") -> str:
        return await self._queued(owner, self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str, owner: str = "") -> bool:
        """Whether `password` matches the PHC string `stored` (None: no such account; the dummy is checked)."""
        return await self._queued(owner, self._verify, stored, password)

    async def _queued(self, owner: str, work: Callable[..., T], *args: object) -> T:
        if self._owners[owner] >= HASHES_PER_OWNER:
            raise Busy(mine=True)
        if self._owners.total() >= HASHING_AT_ONCE + MAX_HASHES_WAITING:
            raise Busy(mine=False)
        self._owners[owner] += 1
        # Shielded: a request that goes away leaves its hash counted until the thread is done with it.
        return await asyncio.shield(asyncio.ensure_future(self._in_turn(owner, work, *args)))

    async def _in_turn(self, owner: str, work: Callable[..., T], *args: object) -> T:
        try:
            async with self._turns:
                return await asyncio.to_thread(work, *args)
        finally:
            self._owners[owner] -= 1
            if self._owners[owner] <= 0:
                del self._owners[owner]

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            ok = self._hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and stored is not None


class Throttle:
    """Failed attempts per key (an account, an address), as a bucket of `burst` tries that refills by one every
    `refill` seconds; a try is taken when an attempt starts and given back if it succeeds. Bounded: at most `keys`
    keys are tracked; past that, those whose buckets are fullest (the oldest touched) are forgotten. Per node: in
    a cluster each node throttles on its own."""

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

    def take(self, key: str, now: float) -> float:
        """Spend a try of `key` as an attempt starts, before its outcome is known, so that attempts made at the
        same time see it spent; what was taken (less than a whole try from a nearly empty bucket), for
        `give_back` should the attempt succeed or not be made."""
        left = self._left(key, now)
        taken = min(1.0, left)
        self._set(key, left - taken, now)
        return taken

    def give_back(self, key: str, taken: float, now: float) -> None:
        self._set(key, min(float(self.burst), self._left(key, now) + taken), now)

    def _set(self, key: str, left: float, now: float) -> None:
        self._buckets[key] = (left, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.keys:
            self._buckets.popitem(last=False)

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


class Known:
    """The keys (an account and an address) that signed in within `ttl` seconds, so that a sign-in from where
    its user signed in before is not refused with the account's guessers elsewhere. Bounded: past `keys`, the
    least recently seen go. Per node, in memory: a restart forgets them."""

    def __init__(self, ttl: float, keys: int = 100_000) -> None:
        self.ttl, self.keys = ttl, keys
        self._until: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str, now: float) -> None:
        self._until[key] = now + self.ttl
        self._until.move_to_end(key)
        while len(self._until) > self.keys:
            self._until.popitem(last=False)

    def has(self, key: str, now: float) -> bool:
        return self._until.get(key, now) > now


CHALLENGE_TTL = 300.0
"""Seconds a WebAuthn challenge waits for its answer (the browser's own timeout is shorter)."""
MAX_CHALLENGES, MAX_CHALLENGES_PER_OWNER = 10_000, 16
"""Challenges waiting on one node, and per owner (a signed-in user, or an address): past the owner's bound its
oldest goes; past the node's, no challenge is given until one is answered or expires (`Full`)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def user_handle(user_id: str) -> bytes:
    """The WebAuthn user handle of an account: a hash of its id (the handle is stored on the authenticator and
    sent back at each sign-in; the spec asks that it not be the user's name)."""
    return hashlib.sha256(b"peercall-user:" + user_id.encode()).digest()


@dataclasses.dataclass(frozen=True, slots=True)
class Challenge:
    """A challenge handed out for `purpose` (`add-passkey`, `sign-up`, `sign-in`); `bound`: what its answer must
    come with (the user adding a passkey; the invite hash, id and name of a sign-up)."""

    purpose: str
    owner: str
    expires: float
    bound: tuple[str, ...] = ()


class Full(Exception):
    """No challenge now: `limit` wait, none expired; the oldest expires in `wait` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"too many challenges wait: one expires in {wait:.0f} s")
        self.wait = wait


class Challenges:
    """The WebAuthn challenges waiting for an answer, on this node. A challenge is taken once (a failed answer
    uses it up too), expires after `ttl`, and at most `limit` wait, `per_owner` of one owner. A full table refuses
    new ones rather than dropping others' (a flood would otherwise make the answers of everyone else's unknown)."""

    def __init__(
        self, ttl: float = CHALLENGE_TTL, limit: int = MAX_CHALLENGES, per_owner: int = MAX_CHALLENGES_PER_OWNER
    ) -> None:
        self.ttl, self.limit, self.per_owner = ttl, limit, per_owner
        self._waiting: OrderedDict[str, Challenge] = OrderedDict()  # base64url challenge -> what it is for
        self._owners: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._waiting)

    def issue(self, purpose: str, owner: str, now: float, bound: tuple[str, ...] = ()) -> bytes:
        """A new random challenge (32 bytes) for `purpose`; Full if `limit` wait (an owner's own oldest goes
        for its new one)."""
        while self._waiting and next(iter(self._waiting.values())).expires <= now:
            self._drop(next(iter(self._waiting)))
        if self._owners[owner] >= self.per_owner:
            self._drop(next(k for k, c in self._waiting.items() if c.owner == owner))
        if len(self._waiting) >= self.limit:
            raise Full(next(iter(self._waiting.values())).expires - now)
        challenge = secrets.token_bytes(32)
        self._waiting[b64url(challenge)] = Challenge(purpose, owner, now + self.ttl, bound)
        self._owners[owner] += 1
        return challenge

    def take(self, challenge: str, purpose: str, now: float) -> Challenge | None:
        """The waiting challenge (base64url, as the browser's clientDataJSON has it) if it is for `purpose` and
        has not expired; it is used up either way."""
        found = self._waiting.get(challenge)
        if found is None:
            return None
        self._drop(challenge)
        return found if found.purpose == purpose and found.expires > now else None

    def _drop(self, key: str) -> None:
        found = self._waiting.pop(key)
        self._owners[found.owner] -= 1
        if self._owners[found.owner] <= 0:
            del self._owners[found.owner]


@dataclasses.dataclass(frozen=True, slots=True)
class Passkey:
    """What is kept of a passkey besides its credential id (a `Credential`'s `secret`, as JSON)."""

    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    name: str

    def encode(self) -> str:
        return json.dumps(
            {
                "publicKey": b64url(self.public_key),
                "signCount": self.sign_count,
                "transports": list(self.transports),
                "name": self.name,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, secret: str) -> Passkey:
        """Raises ValueError if `secret` was not made by `encode`."""
        try:
            v = json.loads(secret)
            key = base64.urlsafe_b64decode(v["publicKey"] + "=" * (-len(v["publicKey"]) % 4))
            return cls(key, int(v["signCount"]), tuple(str(t) for t in v["transports"]), str(v["name"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("not a stored passkey") from exc
