"""Signed session tokens (JWT) whose `sub` is the user id: verified with PyJWT, minted for `peercall token`; in
accounts mode the server's own signaling tokens (`AccountsVerifier`, its key: `signing_key`); and the tokens a
service beside the server (`serve --with-echo`'s echo) signs for itself (`ServiceSigner`).

Keys come from one of: an HS256 secret, a PEM public key (RS256/ES256), or a JWKS URL (auth/jwks.py: an identity
provider's keys, fetched and refreshed off the event loop). `TokenVerifier.identify` is synchronous and never does
I/O; `TokenVerifier.check` is the same, except that a token signed with a key the verifier has not seen makes it
fetch the provider's keys again (at most once per `min_interval` seconds, bounded in time) before it decides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from ..protocol.errors import PeercallError
from ..protocol.messages import is_plain_text, is_valid_id

if TYPE_CHECKING:
    from ..config import Settings
    from .jwks import KeySet


class AuthError(PeercallError):
    """The credentials are missing or not acceptable. `str()` says why, in the user's terms."""


class UnknownKey(AuthError):
    """The token names a key (`kid`) that the verifier's key set does not hold (yet): `check` fetches the keys
    again once and decides then."""

    def __init__(self, kid: str | None, source: str) -> None:
        which = f"key {kid!r}" if kid is not None else "key (it names no 'kid')"
        super().__init__(f"the token's {which} is not among the keys at {source}")
        self.kid = kid


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token proves this is, and until when (`exp`, Unix seconds); `name`: their display name, from the
    token's standard `name` claim (`display_name`), or None; `sign_in`: the sign-in it came from (the `sid` of an
    accounts-mode token), or None (token mode)."""

    user: str
    expires_at: float
    name: str | None = None
    sign_in: str | None = None


MAX_DISPLAY_NAME = 64
"""Characters of a display name (after trimming)."""


def display_name(value: object) -> str | None:
    """The display name a token's `name` claim gives: the text trimmed, if it is 1 to MAX_DISPLAY_NAME characters
    of plain text (`is_plain_text`: accounts mode's rule, so that an identity provider's names are no freer than
    an account's); None for anything else (no claim, not text, empty, too long, a bidi override…): it is ignored."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not 1 <= len(name) <= MAX_DISPLAY_NAME or not is_plain_text(name):
        return None
    return name


class TokenVerifier:
    """Checks tokens: signature, `exp` (required), `nbf` and `iat` when present, a well-formed `sub`, and `aud` and
    `iss` when an audience or issuer is set (a token's `aud` is not looked at when no audience is set)."""

    LEEWAY = 5.0  # seconds of clock skew tolerated between the token's issuer and this server

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: Path | None = None,
        jwks: KeySet | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.jwks = jwks
        if jwks is not None:
            self._key: str | bytes = b""
            self._algorithms = ["RS256", "ES256"]
        elif public_key is not None:
            self._key = public_key.read_bytes()
            self._algorithms = ["RS256", "ES256"]
        elif secret is not None:
            self._key = secret
            self._algorithms = ["HS256"]
        else:
            raise ValueError("a token verifier needs a secret, a public key or a JWKS URL")
        self.audience, self.issuer = audience, issuer
        self._required = ["exp", "sub", *(["aud"] if audience else []), *(["iss"] if issuer else [])]

    @classmethod
    def for_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier `settings` ask for: None in `open` mode; in `accounts` mode, one of signaling tokens signed
        with the server's own key (auth/accounts.py)."""
        if settings.auth == "accounts":
            from ..config import data_folder

            secret = settings.auth_secret.get_secret_value() if settings.auth_secret else None
            return AccountsVerifier(signing_key(secret, data_folder()))
        if settings.auth != "token":
            return None
        jwks = None
        if settings.auth_jwks_url is not None:
            from .jwks import KeySet

            jwks = KeySet(settings.auth_jwks_url, min_interval=settings.auth_jwks_min_interval)
        return cls(
            secret=settings.auth_secret.get_secret_value() if settings.auth_secret else None,
            public_key=settings.auth_public_key,
            jwks=jwks,
            audience=settings.auth_audience,
            issuer=settings.auth_issuer,
        )

    async def start(self) -> None:
        """Fetch the JWKS (if any) and keep it fresh in the background. Never raises: an unreachable provider is
        logged, and its keys are fetched again when a token needs them."""
        if self.jwks is not None:
            await self.jwks.start()

    async def stop(self) -> None:
        if self.jwks is not None:
            await self.jwks.stop()

    def verify(self, token: str) -> str:
        """The user id the token is for (`identify(token).user`).

        Raises:
            AuthError: as `identify`.
        """
        return self.identify(token).user

    async def check(self, token: str) -> Identity:
        """`identify`, except that a key the verifier does not know makes it fetch the JWKS again first (at most
        once per its `min_interval`; bounded in time, off the event loop).

        Raises:
            AuthError: as `identify`; `UnknownKey` if the key is still unknown after that.
        """
        try:
            return self.identify(token)
        except UnknownKey:
            if self.jwks is None:
                raise
            await self.jwks.refetch()
            try:
                return self.identify(token)
            except UnknownKey as exc:
                if self.jwks.error is None:
                    raise
                which = f"key {exc.kid!r}" if exc.kid is not None else "key"
                raise AuthError(
                    f"the token's {which} is unknown, and the keys at {self.jwks.url} could not be fetched: "
                    f"{self.jwks.error}"
                ) from None

    def identify(self, token: str) -> Identity:
        """Who the token is for, and until when. No I/O.

        Raises:
            AuthError: no token, a bad signature, an expired or not-yet-valid token, no usable `sub`, or (with a
                JWKS) `UnknownKey`: a key that the key set does not hold now.
        """
        if not token:
            raise AuthError("no token")
        key: Any = self._key
        algorithms = self._algorithms
        if self.jwks is not None:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.InvalidTokenError as exc:
                raise AuthError(f"the token is not valid: {exc}") from None
            kid = header.get("kid")
            found = self.jwks.get(kid if isinstance(kid, str) else None)
            if found is None:
                raise UnknownKey(kid if isinstance(kid, str) else None, self.jwks.url)
            key, algorithm = found
            algorithms = [algorithm] if algorithm in self._algorithms else []
            if not algorithms:
                raise AuthError(f"the token's key {kid!r} is for {algorithm}; this server takes RS256 and ES256")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                options={"require": self._required, "verify_aud": self.audience is not None},
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature is not valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token is not for this server (its 'aud' is not {self.audience!r})") from None
        except jwt.InvalidIssuerError:
            raise AuthError(f"the token was not issued by {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token has no '{exc.claim}' claim") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the token is not valid: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not is_valid_id(sub):
            raise AuthError("the token's 'sub' is not a valid user id")
        self.check_claims(claims)
        return Identity(sub, float(claims["exp"]), display_name(claims.get("name")), self.sign_in_of(claims))

    def check_claims(self, claims: dict[str, Any]) -> None:
        """More checks of a well-signed token's claims (accounts mode: its sign-in is not revoked).

        Raises:
            AuthError: the token is not acceptable.
        """

    def sign_in_of(self, claims: dict[str, Any]) -> str | None:
        """The sign-in a well-signed token came from (`Identity.sign_in`): None, but in accounts mode. A `sid` of
        another issuer's token (OIDC puts one there) is not a sign-in of this server's."""
        return None


def mint(user: str, secret: str, ttl: float = 3600, *, now: float | None = None, name: str | None = None) -> str:
    """An HS256 token for `user`, valid for `ttl` seconds from `now`, with their display name `name` (the `name`
    claim) if given."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user, "iat": issued, "exp": issued + int(ttl)}
    if name is not None:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm="HS256")


KEY_FILE = "signing.key"
"""The file in the data folder that keeps the signing key of accounts mode when PEERCALL_AUTH_SECRET is unset."""


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


class AccountsVerifier(TokenVerifier):
    """Signaling tokens of accounts mode: HS256 with the signing key, `sub` the user, `sid` the sign-in they came
    from, and refused once that sign-in is in `revoked` (which server/accounts.py refreshes from the store every
    few seconds, on every node)."""

    def __init__(self, key: str) -> None:
        super().__init__(secret=key)
        self._mint_key = key
        self.revoked: frozenset[str] = frozenset()
        self._required.append("sid")

    def mint(self, user: str, session_id: str, ttl: float, *, now: float | None = None, name: str | None = None) -> str:
        """A signaling token of sign-in `session_id`, with the account's display name `name` if given."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"sub": user, "sid": session_id, "iat": issued, "exp": issued + int(ttl)}
        if name is not None:
            claims["name"] = name
        return jwt.encode(claims, self._mint_key, algorithm="HS256")

    def check_claims(self, claims: dict[str, Any]) -> None:
        sid = claims.get("sid")
        if not isinstance(sid, str):
            raise AuthError("the token's 'sid' is not a sign-in id")
        if sid in self.revoked:
            raise AuthError("this sign-in has ended (signed out or revoked): sign in again")

    def sign_in_of(self, claims: dict[str, Any]) -> str | None:
        sid: str = claims["sid"]  # `check_claims` made sure
        return sid

    def csrf(self, session_id: str) -> str:
        """The CSRF value of a sign-in: derived from its id with the key, so nothing more is stored."""
        return hmac.new(self._mint_key.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()[:32]


SERVICE_SIGNER_ENV = "PEERCALL_ECHO_SIGNER"
"""The environment variable through which `serve --with-echo` hands its echo a `ServiceSigner` (JSON): the
environment, never the command line, which every user of the machine sees in `ps`."""

SERVICE_SESSION = "service"
"""The `sid` of a service's tokens in accounts mode: a sign-in that no store holds, so that no sign-out ends it."""

SERVICE_TOKEN_TTL = 3600.0
"""Seconds a service's token lasts in token mode (as `peercall token`'s); accounts mode uses its own token TTL."""


@dataclass(frozen=True)
class ServiceSigner:
    """How a service that `serve` starts beside itself (the echo of `--with-echo`) signs its own tokens: with the
    server's key, for a short lifetime, a new one each time it renews. Its tokens are what the server checks anyway
    (`AccountsVerifier` in accounts mode, HS256 with `PEERCALL_AUTH_SECRET` in token mode), so the server needs no
    exception for it, and `PEERCALL_AUTH_EXPIRY=enforce` holds for it as for everyone.
    """

    key: str = field(repr=False)
    """The HS256 key: accounts mode's signing key, or token mode's `PEERCALL_AUTH_SECRET`."""
    ttl: float
    """Seconds each token lasts."""
    session_id: str | None = None
    """Accounts mode: the `sid` of its tokens (`SERVICE_SESSION`). None: a token mode token (`mint`)."""

    @classmethod
    def for_settings(cls, settings: Settings) -> ServiceSigner | None:
        """The signer of a service beside a server with `settings`: None in open mode (a service takes its id with
        `service_token`, which never expires) and in token mode without `auth_secret` (a public key or an identity
        provider's keys: the server holds nothing to sign with).

        The lifetime is short and the service renews before each expiry (the SDK's `token_provider`), rather than
        one long token: accounts mode's `accounts_token_ttl`, the lifetime of every signaling token of the server
        (300 s by default, renewed about every 4 min); token mode's `SERVICE_TOKEN_TTL`. A copy of the key that
        leaks from the service's environment is no worse than the server's own (same user, same machine), and a
        token that leaks from it is good for minutes, not days.
        """
        secret = settings.auth_secret.get_secret_value() if settings.auth_secret else None
        if settings.auth == "accounts":
            from ..config import data_folder

            # The key itself, not "read signing.key": the service then never makes a key file of its own.
            return cls(signing_key(secret, data_folder()), settings.accounts_token_ttl, SERVICE_SESSION)
        if settings.auth == "token" and secret:
            return cls(secret, SERVICE_TOKEN_TTL)
        return None

    def mint(self, user: str) -> str:
        """A fresh token for `user`, valid for `ttl` seconds from now."""
        if self.session_id is not None:
            return AccountsVerifier(self.key).mint(user, self.session_id, self.ttl)
        return mint(user, self.key, self.ttl)

    def to_env(self) -> str:
        """This signer as the value of `SERVICE_SIGNER_ENV`."""
        return json.dumps({"key": self.key, "ttl": self.ttl, "sid": self.session_id})

    @classmethod
    def from_env(cls, text: str) -> ServiceSigner:
        """The signer in the value of `SERVICE_SIGNER_ENV`.

        Raises:
            ValueError: the value is not what `to_env` makes (it never says the key).
        """
        try:
            spec = json.loads(text)
            key, ttl, sid = spec["key"], spec["ttl"], spec["sid"]
        except (ValueError, TypeError, KeyError):
            raise ValueError(f"{SERVICE_SIGNER_ENV} is malformed") from None
        if not isinstance(key, str) or not key or not isinstance(ttl, int | float) or isinstance(ttl, bool):
            raise ValueError(f"{SERVICE_SIGNER_ENV} is malformed")
        if ttl <= 0 or not (sid is None or isinstance(sid, str)):
            raise ValueError(f"{SERVICE_SIGNER_ENV} is malformed")
        return cls(key, float(ttl), sid)
