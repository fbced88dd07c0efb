"""Passkey routes of accounts mode on a real server, where no browser is needed: the answers to challenges that
were never given, were given for something else, were already used, or come from another origin; bad bodies;
the throttle; CSRF. (tests/e2e/test_passkeys.py makes real passkeys in Chromium.)"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any, cast

import cbor2
import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from peercall.auth.accounts import Challenges
from peercall.auth.tokens import AccountsVerifier
from peercall.config import Settings
from peercall.server.accounts import AccountsApi
from peercall.store import Store, open_history
from tests.conftest import ServerProcess
from tests.integration.test_accounts import PASSWORD, Browser, admin_and_bob, browser, db, setup_token, srv

__all__ = ["browser", "db", "srv"]  # fixtures of test_accounts, used here


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def attestation(challenge: str, origin: str, kind: str = "webauthn.create") -> dict[str, Any]:
    """A registration answer with this clientDataJSON and an attestation no authenticator made."""
    client_data = json.dumps({"type": kind, "challenge": challenge, "origin": origin}).encode()
    response = {"clientDataJSON": b64(client_data), "attestationObject": b64(b"\xa0"), "transports": ["internal"]}
    return {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": response, "clientExtensionResults": {}}


def assertion(challenge: str, origin: str, credential_id: str = "AAAA") -> dict[str, Any]:
    client_data = json.dumps({"type": "webauthn.get", "challenge": challenge, "origin": origin}).encode()
    response = {"clientDataJSON": b64(client_data), "authenticatorData": b64(b"\0" * 37), "signature": b64(b"x")}
    return {"id": credential_id, "rawId": credential_id, "type": "public-key", "response": response}


class SoftKey:
    """A software authenticator (ES256, attestation "none"): a passkey that signs what the server asks."""

    def __init__(self, origin: str, rp_id: str = "127.0.0.1") -> None:
        self.origin, self.rp_id = origin, rp_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.id, self.count, self.handle = os.urandom(32), 0, ""

    def _data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin}).encode()

    def create(self, options: dict[str, Any]) -> dict[str, Any]:
        self.handle = options["user"]["id"]
        public = self.key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: public.x.to_bytes(32, "big"), -3: public.y.to_bytes(32, "big")})
        self.count += 1
        rp = hashlib.sha256(self.rp_id.encode()).digest()
        made = rp + bytes([0x45]) + struct.pack(">I", self.count) + b"\0" * 16 + struct.pack(">H", 32) + self.id + cose
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": made})
        response = {
            "clientDataJSON": b64(self._data("webauthn.create", options["challenge"])),
            "attestationObject": b64(attestation),
            "transports": ["internal"],
        }
        return {"id": b64(self.id), "rawId": b64(self.id), "type": "public-key", "response": response}

    def get(self, challenge: str) -> dict[str, Any]:
        self.count += 1
        signed = hashlib.sha256(self.rp_id.encode()).digest() + bytes([0x05]) + struct.pack(">I", self.count)
        data = self._data("webauthn.get", challenge)
        signature = self.key.sign(signed + hashlib.sha256(data).digest(), ec.ECDSA(hashes.SHA256()))
        response = {
            "clientDataJSON": b64(data),
            "authenticatorData": b64(signed),
            "signature": b64(signature),
            "userHandle": self.handle,
        }
        return {"id": b64(self.id), "rawId": b64(self.id), "type": "public-key", "response": response}


def error(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


async def test_a_page_learns_that_passkeys_are_supported(srv: ServerProcess, browser: Any) -> None:
    stranger = browser()
    answer = await stranger.http.get("/api/session")
    assert answer.status_code == 401 and answer.json()["passkeys"] is True
    ann: Browser = browser()
    assert (await ann.sign_up(setup_token(srv), "ann"))["passkeys"] is True


async def test_creation_options_name_the_user_and_a_fresh_challenge(srv: ServerProcess, browser: Any) -> None:
    ann, _ = await admin_and_bob(srv, browser)
    first, second = (await ann.post("/api/passkeys/options")).json(), (await ann.post("/api/passkeys/options")).json()
    assert first["rp"] == {"id": "127.0.0.1", "name": "peercall"}
    assert first["user"]["name"] == "ann" and first["user"]["displayName"] == "Ann"
    assert first["user"]["id"] != b64(b"ann")  # a hash of the id, not the id
    assert first["authenticatorSelection"]["residentKey"] == "required"
    assert first["challenge"] != second["challenge"] and len(first["challenge"]) >= 43


async def test_an_answer_to_no_challenge_or_a_used_one_is_refused(srv: ServerProcess, browser: Any) -> None:
    ann, _ = await admin_and_bob(srv, browser)
    made_up = attestation(b64(b"\1" * 32), srv.http)
    assert error(await ann.post("/api/passkeys", {"passkey": made_up, "name": "Key"})) == (400, "bad-challenge")

    challenge = (await ann.post("/api/passkeys/options")).json()["challenge"]
    forged = attestation(challenge, srv.http)
    first = await ann.post("/api/passkeys", {"passkey": forged, "name": "Key"})
    assert error(first) == (400, "bad-passkey"), first.text  # the challenge was right, the attestation is not
    again = await ann.post("/api/passkeys", {"passkey": forged, "name": "Key"})
    assert error(again) == (400, "bad-challenge")  # a challenge is answered once, even by a refused answer
    assert (await ann.http.get("/api/passkeys")).json() == {"passkeys": []}


async def test_an_answer_from_another_origin_is_refused(srv: ServerProcess, browser: Any) -> None:
    ann, _ = await admin_and_bob(srv, browser)
    challenge = (await ann.post("/api/passkeys/options")).json()["challenge"]
    answer = await ann.post("/api/passkeys", {"passkey": attestation(challenge, "https://evil.example")})
    assert error(answer) == (400, "bad-passkey")
    assert "origin" in answer.json()["error"]["message"]


async def test_a_challenge_answers_only_what_it_was_given_for(srv: ServerProcess, browser: Any) -> None:
    ann, bob = await admin_and_bob(srv, browser)
    sign_in = (await ann.post("/api/session/passkey/options")).json()
    assert sign_in["rpId"] == "127.0.0.1" and sign_in.get("allowCredentials", []) == []
    wrong_use = await ann.post("/api/passkeys", {"passkey": attestation(sign_in["challenge"], srv.http)})
    assert error(wrong_use) == (400, "bad-challenge")
    anns = (await ann.post("/api/passkeys/options")).json()["challenge"]
    bobs_answer = await bob.post("/api/passkeys", {"passkey": attestation(anns, srv.http)})
    assert error(bobs_answer) == (400, "bad-challenge")  # ann's challenge is not bob's


async def test_a_failed_passkey_sign_in_says_one_thing_and_is_throttled(srv: ServerProcess, browser: Any) -> None:
    await admin_and_bob(srv, browser)
    stranger = browser()
    assert error(await stranger.post("/api/session/passkey", {"passkey": "not a credential"})) == (400, "bad-passkey")
    assert error(await stranger.post("/api/session/passkey", {"passkey": {"response": {}}})) == (400, "bad-passkey")
    messages = set()
    for n in range(20):
        challenge = (await stranger.post("/api/session/passkey/options")).json()["challenge"]
        guess = challenge if n % 2 else b64(bytes([n]) * 32)  # a real challenge, or none
        answer = await stranger.post("/api/session/passkey", {"passkey": assertion(guess, srv.http)})
        assert error(answer) == (401, "sign-in-failed"), answer.text
        messages.add(answer.json()["error"]["message"])
    assert len(messages) == 1
    throttled = await stranger.post("/api/session/passkey/options")
    assert error(throttled) == (429, "too-many-attempts") and int(throttled.headers["retry-after"]) > 0


async def test_guessed_passwords_do_not_stop_a_passkey_sign_in(srv: ServerProcess, browser: Any) -> None:
    """Five wrong passwords for bob from one address spend his id's own throttle: from an address he never signed
    in from, his password waits, but his passkey signs him in (an answer to a challenge is no guess)."""
    _, bob = await admin_and_bob(srv, browser)
    key = SoftKey(srv.http)
    added = await bob.post("/api/passkeys", {"passkey": key.create((await bob.post("/api/passkeys/options")).json())})
    assert added.status_code == 201, added.text
    attacker, new_place = {"x-forwarded-for": "203.0.113.66"}, {"x-forwarded-for": "198.51.100.99"}
    for n in range(5):
        guess = await browser().post("/api/session", {"id": "bob", "password": f"guess {n}"}, **attacker)
        assert guess.status_code == 401
    laptop = browser()
    waits = await laptop.post("/api/session", {"id": "bob", "password": PASSWORD}, **new_place)
    assert error(waits) == (429, "too-many-attempts")
    challenge = (await laptop.post("/api/session/passkey/options", **new_place)).json()["challenge"]
    signed = await laptop.post("/api/session/passkey", {"passkey": key.get(challenge)}, **new_place)
    assert signed.status_code == 200 and signed.json()["id"] == "bob", signed.text


async def test_passkey_routes_keep_the_csrf_and_invite_rules(srv: ServerProcess, browser: Any) -> None:
    ann, _ = await admin_and_bob(srv, browser)
    no_header = await ann.http.post("/api/session/passkey/options", json={})
    assert error(no_header) == (403, "csrf")
    other_site = await ann.post("/api/passkeys/options", origin="https://evil.example")
    assert error(other_site) == (403, "csrf")
    assert error(await ann.delete("/api/passkeys/nothing-here")) == (404, "not-found")

    stranger = browser()
    assert error(await stranger.post("/api/passkeys/options")) == (401, "unauthorized")
    bad = {"invite": "no-such-invite", "id": "carol", "name": "Carol"}
    assert error(await stranger.post("/api/signup/passkey/options", bad)) == (404, "no-invite")
    invite = await ann.invite()
    taken = await stranger.post("/api/signup/passkey/options", {"invite": invite, "id": "bob", "name": "Bob"})
    assert error(taken) == (409, "id-taken")
    options = (
        await stranger.post("/api/signup/passkey/options", {"invite": invite, "id": "carol", "name": "C"})
    ).json()
    assert options["user"]["name"] == "carol"
    # The challenge is the sign-up of carol with this invite: not of another id.
    other = {"invite": invite, "id": "dave", "name": "C", "passkey": attestation(options["challenge"], srv.http)}
    assert error(await stranger.post("/api/signup", other)) == (400, "bad-challenge")


async def test_a_flood_of_options_requests_leaves_waiting_challenges_alone() -> None:
    """In-process, with a table of three challenges (a real server's holds 10 000): requests from other addresses
    that find it full are refused with 429 `too-many-challenges` and Retry-After, and the challenge a user waits
    on is still there to be answered."""
    store = cast(Store, open_history("memory://"))
    await store.open()
    api = AccountsApi(Settings(auth="accounts"), store, AccountsVerifier("k" * 40), object())
    api.challenges = Challenges(limit=3)
    app = Starlette(routes=api.routes())

    async def options(address: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.post("/api/session/passkey/options", headers={"x-peercall-csrf": "1"})

    try:
        waiting = (await options("198.51.100.1")).json()["challenge"]
        flood = [await options(f"203.0.113.{n}") for n in range(1, 6)]
        assert [answer.status_code for answer in flood] == [200, 200, 429, 429, 429]
        assert error(flood[-1]) == (429, "too-many-challenges")
        assert 1 <= int(flood[-1].headers["retry-after"]) <= 300
        assert api.challenges.take(waiting, "sign-in", api.clock()) is not None
    finally:
        await store.close()
