"""Token mode with an identity provider's JWKS URL (PEERCALL_AUTH_JWKS_URL): a local HTTP server plays the
provider; its keys rotate while peercall runs, and it may be unreachable or hang."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import OPEN_DOORS, SCALE, ServerProcess, run_server
from tests.integration.conftest import TRANSPORTS
from tests.integration.test_security import closed_with, recv_json, refused_status

AUD, ISS = "peercall-web", "https://id.example.org/realms/family"


class Provider:
    """An identity provider's keys, served as a JWKS at `url` (threading http.server on 127.0.0.1)."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.served: list[str] = []  # the kids of the JWKS served now
        self.fetches = 0
        self.delay = 0.0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                time.sleep(provider.delay)
                body = json.dumps({"keys": [provider.public(kid) for kid in provider.served]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/realms/family/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def add(self, kid: str, kind: str = "RSA") -> None:
        """Make a key (RS256 or ES256) and serve it, besides those served now."""
        self.keys[kid] = (
            rsa.generate_private_key(65537, 2048) if kind == "RSA" else ec.generate_private_key(ec.SECP256R1())
        )
        self.served.append(kid)

    def rotate(self, kid: str, kind: str = "RSA") -> None:
        """Serve a new key only: the old ones are gone from the JWKS."""
        self.served = []
        self.add(kid, kind)

    def public(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid]
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig", "alg": "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"}

    def token(self, user: str, kid: str, ttl: float = 60, **claims: Any) -> str:
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        body = {"sub": user, "iat": now, "exp": now + ttl, "aud": AUD, "iss": ISS, **claims}
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider()
    p.add("k1")
    yield p
    p.close()


@pytest.fixture(scope="module")
def jwks_server(provider: Provider, transport: str) -> Iterator[ServerProcess]:
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=None,
        PEERCALL_AUTH_JWKS_URL=provider.url,
        PEERCALL_AUTH_JWKS_MIN_INTERVAL="0",
        PEERCALL_AUTH_AUDIENCE=AUD,
        PEERCALL_AUTH_ISSUER=ISS,
        **TRANSPORTS[transport],
    ) as srv:
        yield srv


async def first_frame(srv: ServerProcess, token: str, then: list[dict[str, Any]] = ()) -> websockets.ClientConnection:  # type: ignore[assignment]
    ws = await websockets.connect(srv.ws)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    for frame in then:
        await ws.send(json.dumps(frame))
    return ws


async def test_rotated_keys_are_fetched_and_dropped_without_a_restart(
    jwks_server: ServerProcess, provider: Provider, uid: Any
) -> None:
    """Tokens signed with the provider's key are accepted (first frame, header, HTTP API); after the provider
    rotates (old kid gone, a new EC key added), a token with the new key is accepted at once (the keys are fetched
    again), and one with the old key is refused with a reason that names it."""
    if "k1" not in provider.served:  # the other transport's run rotated it away
        provider.rotate("k1")
    user = uid("ida")
    ws = await first_frame(jwks_server, provider.token(user, "k1"))
    assert (await recv_json(ws))["id"] == user
    await ws.close()
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"{jwks_server.http}/api/calls", headers={"Authorization": f"Bearer {provider.token(user, 'k1')}"}
        )
        assert answer.status_code == 200, answer.text
    new = f"k-{uid('new')}"
    provider.rotate(new, "EC")
    ws = await first_frame(jwks_server, provider.token(user, new))
    assert (await recv_json(ws))["id"] == user
    await ws.close()
    ws = await first_frame(jwks_server, provider.token(user, "k1"))
    error = await recv_json(ws)
    assert error["code"] == "unauthorized"
    assert error["message"] == f"the token's key 'k1' is not among the keys at {provider.url}"
    assert (await closed_with(ws))[0] == 4401
    # In the header, a key the server does not hold is checked after the upgrade (the keys fetched again first):
    # refused with `unauthorized` and 4401 rather than HTTP 401.
    headers = {"Authorization": f"Bearer {provider.token(user, 'k1')}"}
    async with websockets.connect(jwks_server.ws, additional_headers=headers) as ws:
        assert "'k1' is not among the keys" in (await recv_json(ws))["message"]
        assert (await closed_with(ws))[0] == 4401
    status, body = await refused_status(
        jwks_server.ws, additional_headers={"Authorization": f"Bearer {provider.token(user, new, ttl=-60)}"}
    )
    assert status == 401 and body["error"]["message"] == "the token has expired"


async def test_a_new_key_on_the_header_path_and_in_a_renewal(
    jwks_server: ServerProcess, provider: Provider, uid: Any
) -> None:
    """A header token whose key is new is checked after the upgrade (once the keys are fetched) and welcomed; a
    renewal with a key rotated in meanwhile is accepted; frames sent right behind an auth frame whose key is being
    fetched wait for it and are handled after the welcome, in order."""
    user = uid("jo")
    provider.delay = 0.3  # the provider is slow: frames pile up behind the auth frame while its key is fetched
    try:
        kid = f"k-{uid('h')}"
        provider.rotate(kid)
        headers = {"Authorization": f"Bearer {provider.token(user, kid)}"}
        async with websockets.connect(jwks_server.ws, additional_headers=headers) as ws:
            welcome = await recv_json(ws)
            assert welcome["id"] == user and welcome["tokenExpiresAt"] > time.time()
            renewed_kid = f"k-{uid('r')}"
            provider.add(renewed_kid, "EC")
            await ws.send(json.dumps({"type": "auth", "token": provider.token(user, renewed_kid, ttl=120)}))
            renewed = await recv_json(ws)
            assert renewed["type"] == "auth-renewed" and renewed["expiresAt"] > welcome["tokenExpiresAt"]
        kid = f"k-{uid('p')}"
        provider.add(kid)
        offline = uid("nobody")
        ws = await first_frame(jwks_server, provider.token(user, kid), [{"type": "call-request", "to": offline}])
        kinds: list[str] = []
        while "call-ended" not in kinds:
            kind = (await recv_json(ws))["type"]
            if kind not in ("presence", "contacts"):
                kinds.append(kind)
        assert kinds == ["welcome", "error", "call-ended"]
        await ws.close()
    finally:
        provider.delay = 0.0


async def test_aud_and_iss_are_still_enforced(jwks_server: ServerProcess, provider: Provider, uid: Any) -> None:
    """With a JWKS, a token signed with a good key but for another audience or issuer is refused, naming the claim."""
    kid = provider.served[-1]
    for bad, why in [
        (provider.token(uid("kim"), kid, aud="another-app"), "not for this server"),
        (provider.token(uid("kim"), kid, iss="https://evil.example"), "not issued by"),
    ]:
        ws = await first_frame(jwks_server, bad)
        assert why in (await recv_json(ws))["message"]
        assert (await closed_with(ws))[0] == 4401


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers (a provider that hangs)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_an_unreachable_or_hanging_provider_is_a_clear_error_and_no_hang(uid: Any) -> None:
    """A JWKS URL that refuses connections, or that never answers: the server starts and stays responsive, and a
    token is refused (4401) within the fetch's bound with a reason that says the keys could not be fetched."""
    with (
        silent_listener() as port,
        run_server(
            PEERCALL_AUTH="token",
            **OPEN_DOORS,
            PEERCALL_AUTH_SECRET=None,
            PEERCALL_AUTH_JWKS_URL=f"http://127.0.0.1:{port}/certs",
            PEERCALL_AUTH_JWKS_MIN_INTERVAL="0",
        ) as srv,
    ):
        provider = Provider()
        provider.add("k9")
        try:
            started = time.monotonic()
            ws = await first_frame(srv, provider.token(uid("lu"), "k9"))
            async with httpx.AsyncClient() as http:  # the event loop is free while the fetch hangs
                assert (await http.get(f"{srv.http}/healthz", timeout=2)).status_code == 200
            error = await recv_json(ws, timeout=15 * SCALE)
            assert "the keys at http://127.0.0.1" in error["message"] and "could not be fetched" in error["message"]
            assert (await closed_with(ws))[0] == 4401
            assert time.monotonic() - started < 13 * SCALE
        finally:
            provider.close()
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=None,
        PEERCALL_AUTH_JWKS_URL="http://127.0.0.1:9/certs",
    ) as srv:
        provider = Provider()
        provider.add("k9")
        try:
            ws = await first_frame(srv, provider.token(uid("mo"), "k9"))
            error = await recv_json(ws, timeout=5 * SCALE)
            assert "could not be fetched" in error["message"] and "refused" in error["message"].lower(), error
            assert "could not fetch the keys at http://127.0.0.1:9/certs" in srv.log()
        finally:
            provider.close()
