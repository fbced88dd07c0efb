"""Token checks without a server: the settings of the three key sources, JWKS documents, and renewal in the
session layer (a frame in, a decision out)."""

from __future__ import annotations

import json
import time
from collections.abc import Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from peercall.auth.jwks import JwksError, parse_keys
from peercall.auth.tokens import AuthError, TokenVerifier, UnknownKey
from peercall.config import Settings
from peercall.protocol.codes import CloseCode
from peercall.server.session import Close, Sessions
from tests.unit.test_session import SECRET, handshake, make, opened

T = TypeVar("T")


def done(coro: Coroutine[Any, Any, T]) -> T:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the coroutine suspended")


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid, **extra}


def test_token_mode_takes_a_secret_a_public_key_or_a_jwks_url(tmp_path: Path) -> None:
    """Token mode needs one key source; a JWKS URL is http(s) and does not go with a public key file."""
    with pytest.raises(ValidationError, match="auth_jwks_url"):
        Settings(auth="token")
    assert Settings(auth="token", auth_jwks_url="https://id.example.org/certs").effective_auth_expiry == "ignore"
    with pytest.raises(ValidationError, match="auth_jwks_url"):
        Settings(auth="token", auth_jwks_url="file:///etc/passwd")
    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\n")
    with pytest.raises(ValidationError, match="not both"):
        Settings(auth="token", auth_jwks_url="https://id.example.org/certs", auth_public_key=pem)
    with pytest.raises(ValidationError):
        Settings(auth="token", auth_secret=SECRET, auth_expiry="sometimes")


def test_expiry_is_enforced_by_default_in_accounts_mode_only() -> None:
    """PEERCALL_AUTH_EXPIRY unset: `enforce` in accounts mode (the server hands out and renews its own tokens),
    `ignore` in token mode (an identity provider's clients may not renew); a value given always wins."""
    assert Settings(auth="accounts").effective_auth_expiry == "enforce"
    assert Settings(auth="accounts", auth_expiry="ignore").effective_auth_expiry == "ignore"
    assert Settings(auth="token", auth_secret=SECRET).effective_auth_expiry == "ignore"
    assert Settings(auth="token", auth_secret=SECRET, auth_expiry="enforce").effective_auth_expiry == "enforce"


def test_a_jwks_keeps_its_rs256_and_es256_signing_keys_only() -> None:
    """Encryption keys, other key types and mismatched `alg`s are skipped; a set with no usable key is an error."""
    rsa_key, ec_key = rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())
    keys = parse_keys(
        json.dumps(
            {
                "keys": [
                    jwk(rsa_key, "r1", use="sig", alg="RS256"),
                    jwk(ec_key, "e1"),
                    jwk(rsa_key, "enc", use="enc"),
                    jwk(rsa_key, "r512", alg="RS512"),
                    {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                    "junk",
                ]
            }
        ).encode()
    )
    assert {kid: algorithm for kid, (_, algorithm) in keys.items()} == {"r1": "RS256", "e1": "ES256"}
    for bad, why in [(b"<html>", "not JSON"), (b'{"keys": 5}', "not a JWKS"), (b'{"keys": []}', "no RS256")]:
        with pytest.raises(JwksError, match=why):
            parse_keys(bad)


def test_an_unknown_kid_is_named() -> None:
    """A token whose `kid` the key set does not hold raises UnknownKey, which `check` answers by fetching again."""
    from peercall.auth.jwks import KeySet

    keyset = KeySet("https://id.example.org/certs")
    verifier = TokenVerifier(jwks=keyset)
    token = jwt.encode(
        {"sub": "ann", "exp": time.time() + 60}, rsa.generate_private_key(65537, 2048), "RS256", {"kid": "k7"}
    )
    with pytest.raises(UnknownKey) as info:
        verifier.identify(token)
    assert str(info.value) == "the token's key 'k7' is not among the keys at https://id.example.org/certs"


def token(user: str, ttl: float = 60) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + ttl)}, SECRET, algorithm="HS256")


def test_a_renewal_keeps_the_user_and_moves_the_deadline() -> None:
    """A joined session renews with a token for the same user (answered `auth-renewed` with its `exp`); a token
    for another user, a bad one or a malformed frame is a 4401 close that says why."""
    sessions, _ = make(auth="token", auth_secret=SECRET)
    session = opened(sessions, handshake(""))
    assert done(session.authenticate(json.dumps({"type": "auth", "token": token("ann", 30)}))) is None
    first = session.expires_at
    assert first is not None and session.start() is None
    later = token("ann", 600)
    answer = done(session.renew(json.dumps({"type": "auth", "token": later})))
    assert isinstance(answer, str) and json.loads(answer) == {"type": "auth-renewed", "expiresAt": session.expires_at}
    assert session.expires_at is not None and session.expires_at > first and session.user == "ann"
    for frame, why in [
        ({"type": "auth", "token": token("bob")}, "the new token is for bob, not ann"),
        ({"type": "auth", "token": "junk"}, "the renewal was refused: the token is not valid"),
        ({"type": "auth"}, 'the renewal was refused: a renewal must be {"type":"auth","token":"<token>"}'),
    ]:
        refusal = done(session.renew(json.dumps(frame)))
        assert (
            isinstance(refusal, Close)
            and refusal.code == CloseCode.UNAUTHORIZED
            and refusal.reason.startswith(why[:60])
        )


def test_a_connection_belongs_to_the_sign_in_of_its_latest_token() -> None:
    """Accounts mode: a session's sign-in is its token's `sid` (from the header or the first frame), moved by a
    renewal with a token of another sign-in of the same user; a token mode token, even with an OIDC `sid`, has none."""
    from peercall.auth.tokens import AccountsVerifier

    sessions, _ = make(auth="accounts", auth_secret=SECRET, auth_expiry="ignore")  # no expiry timer: no loop
    verifier = sessions.verifier
    assert isinstance(verifier, AccountsVerifier)
    header = opened(sessions, handshake("", authorization=f"Bearer {verifier.mint('ann', 's1', 60)}"))
    assert header.sign_in == "s1" and header.start() is None
    framed = opened(sessions, handshake(""))
    assert done(framed.authenticate(json.dumps({"type": "auth", "token": verifier.mint("ann", "s2", 60)}))) is None
    assert framed.sign_in == "s2" and framed.start() is None
    renewal = json.dumps({"type": "auth", "token": verifier.mint("ann", "s3", 60)})
    assert isinstance(done(framed.renew(renewal)), str)
    assert framed.sign_in == "s3" and Sessions.sign_in_of(SimpleNamespace(session=framed)) == "s3"
    assert Sessions.sign_in_of(object()) is None
    odd = jwt.encode({"sub": "ann", "sid": ["s1"], "exp": int(time.time() + 60)}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="'sid' is not a sign-in id"):
        verifier.identify(odd)
    token_mode, _ = make(auth="token", auth_secret=SECRET)
    oidc = jwt.encode({"sub": "ann", "sid": "s1", "exp": int(time.time() + 60)}, SECRET, algorithm="HS256")
    session = opened(token_mode, handshake("", authorization=f"Bearer {oidc}"))
    assert session.user == "ann" and session.sign_in is None


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("Alice B", "Alice B"),
        ("  Alice B \t", "Alice B"),
        ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
        ("x" * 64, "x" * 64),
        ("x" * 65, None),
        ("   ", None),
        ("", None),
        ("Ali\nce", None),
        ("Ali\x85ce", None),
        ("Zoë Ñandú 李 😀", "Zoë Ñandú 李 😀"),
        # the bidi override (shows "Alice" as "ecilA", or an id beside it as another), isolates, zero-width and
        # other format characters, private use: refused as accounts mode refuses them
        ("Alice\u202e", None),
        ("\u2066Alice\u2069", None),
        ("Ali\u200bce", None),
        ("Alice\ufeff", None),
        ("Ali\ue000ce", None),
        # but the joiners, which Persian and Indic names and emoji sequences need, and which reverse nothing
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"),
        ("Family \U0001f468\u200d\U0001f469\u200d\U0001f467", "Family \U0001f468\u200d\U0001f469\u200d\U0001f467"),
        (42, None),
        (["Alice"], None),
        (None, None),
    ],
)
def test_a_tokens_name_claim_is_its_display_name_when_it_is_1_to_64_characters(claim: object, expected: object) -> None:
    """The `name` claim, trimmed, is the display name if it is 1-64 characters of text with no character of Unicode
    category C (accounts mode's rule); anything else is ignored."""
    verifier = TokenVerifier(secret=SECRET)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "alice", "exp": now + 60}
    if claim is not None:
        claims["name"] = claim
    identity = verifier.identify(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert (identity.user, identity.name) == ("alice", expected)


def test_minted_tokens_carry_the_display_name_given() -> None:
    """`peercall token --name` and accounts mode's signaling tokens carry the name; without one there is none."""
    from peercall.auth.tokens import AccountsVerifier, mint

    verifier = TokenVerifier(secret=SECRET)
    assert verifier.identify(mint("alice", SECRET, name="Alice B")).name == "Alice B"
    assert verifier.identify(mint("alice", SECRET)).name is None
    accounts = AccountsVerifier(SECRET)
    assert accounts.identify(accounts.mint("bob", "s1", 60, name="Bob")).name == "Bob"
