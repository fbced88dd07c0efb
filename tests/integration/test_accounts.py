"""Accounts mode (PEERCALL_AUTH=accounts) on a real server: the set-up link, invites, sign-up, password sign-in and
its throttle, CSRF, signaling tokens that open /ws and ring another user, sign-out, and disabled users."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from peercall.auth.accounts import b64url
from peercall.protocol.messages import MAX_DEPTH
from peercall.server.accounts import INVITE_TAKEN, INVITE_TAKEN_REFILL, SIGN_IN_REFILL, SIGN_INS
from tests.conftest import OPEN_DOORS, SCALE, TIMEOUT, Client, ServerProcess, run_server
from tests.integration.test_security import closed_with, recv_json

PASSWORD = "correct horse battery"
CSRF = "x-peercall-csrf"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "accounts.sqlite3"


@pytest.fixture
def srv(db: Path) -> Iterator[ServerProcess]:
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}", **OPEN_DOORS) as s:
        yield s


def setup_token(srv: ServerProcess) -> str:
    assert srv.wait_log("#invite="), srv.log()
    found = re.search(r"#invite=([\w-]+)", srv.log())
    assert found is not None
    return found.group(1)


class Browser:
    """A browser as the API sees it: a cookie jar, and the CSRF header its page would send."""

    def __init__(self, srv: ServerProcess) -> None:
        self.http = httpx.AsyncClient(base_url=srv.http, timeout=TIMEOUT)
        self.csrf = "1"  # before signing in, any value: what matters is that a page sent the header

    async def post(self, path: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
        return await self.http.post(path, json=body or {}, headers={CSRF: self.csrf, **headers})

    async def delete(self, path: str) -> httpx.Response:
        return await self.http.delete(path, headers={CSRF: self.csrf})

    async def signed(self, answer: httpx.Response) -> dict[str, Any]:
        assert answer.status_code in (200, 201), answer.text
        body: dict[str, Any] = answer.json()
        self.csrf = body["csrf"]
        return body

    async def sign_up(self, invite: str, user: str, name: str | None = None) -> dict[str, Any]:
        body = {"invite": invite, "id": user, "name": name or user.title(), "password": PASSWORD}
        return await self.signed(await self.post("/api/signup", body))

    async def sign_in(self, user: str, password: str = PASSWORD) -> httpx.Response:
        return await self.post("/api/session", {"id": user, "password": password})

    async def token(self) -> str:
        answer = await self.post("/api/session/token")
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])

    async def invite(self, **body: Any) -> str:
        answer = await self.post("/api/invites", body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["link"]).rpartition("#invite=")[2]


@pytest.fixture
async def browser(srv: ServerProcess) -> AsyncIterator[Any]:
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser(srv))
        return made[-1]

    yield make
    for b in made:
        await b.http.aclose()


async def admin_and_bob(srv: ServerProcess, browser: Any) -> tuple[Browser, Browser]:
    ann, bob = browser(), browser()
    await ann.sign_up(setup_token(srv), "ann")
    await bob.sign_up(await ann.invite(), "bob")
    return ann, bob


async def connect(srv: ServerProcess, token: str) -> Client:
    ws = await websockets.connect(srv.ws, additional_headers={"Authorization": f"Bearer {token}"})
    client = Client(ws, "")
    client.welcome = await client.expect(type="welcome")
    client.id = client.welcome["id"]
    return client


async def test_the_set_up_link_makes_the_first_administrator_once(srv: ServerProcess, browser: Any) -> None:
    """The link printed at first start signs up an administrator, once; the cookie is HttpOnly and SameSite=Strict
    (not Secure on plain http to 127.0.0.1: `make run`)."""
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{srv.http}/healthz")).json()["auth"] == "accounts"
    token = setup_token(srv)
    ann = browser()
    answer = await ann.post("/api/signup", {"invite": token, "id": "ann", "name": " Ann A. ", "password": PASSWORD})
    me = await ann.signed(answer)
    assert answer.status_code == 201 and (me["id"], me["name"], me["admin"]) == ("ann", "Ann A.", True)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("peercall-session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie
    assert (await ann.http.get("/api/session")).json()["id"] == "ann"
    again = await browser().post("/api/signup", {"invite": token, "id": "eve", "name": "Eve", "password": PASSWORD})
    assert again.status_code == 404 and again.json()["error"]["code"] == "no-invite"


async def test_an_invite_is_one_time_and_expires(srv: ServerProcess, browser: Any, db: Path) -> None:
    """Only an administrator makes invites; each signs up one person (a taken id does not use it up); an expired
    one is refused with the same message as a used one."""
    ann, bob = await admin_and_bob(srv, browser)
    assert (await bob.post("/api/invites")).json()["error"]["code"] == "forbidden"
    invite = await ann.invite(ttl=600)
    cy = browser()
    taken = await cy.post("/api/signup", {"invite": invite, "id": "bob", "name": "B2", "password": PASSWORD})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "id-taken"
    me = await cy.sign_up(invite, "cy")
    assert me["admin"] is False
    used = await browser().post("/api/signup", {"invite": invite, "id": "dee", "name": "D", "password": PASSWORD})
    assert used.status_code == 404
    late = await ann.invite(ttl=600)
    with sqlite3.connect(db) as conn:  # the invite's time runs out
        conn.execute("UPDATE invites SET expires = ?", (time.time() - 1,))
    expired = await browser().post("/api/signup", {"invite": late, "id": "dee", "name": "D", "password": PASSWORD})
    assert expired.status_code == 404 and expired.json() == used.json()


async def test_one_invite_learns_only_a_few_taken_ids(srv: ServerProcess, browser: Any) -> None:
    """An invitee is told the id they chose is taken, but an invite is no way to list who has an account: after
    INVITE_TAKEN sign-ups told so, its next ones wait (even for a free id: nothing more is learnt), saying how long;
    another invite is not held back."""
    ann, _ = await admin_and_bob(srv, browser)
    invite, other = await ann.invite(), await ann.invite()
    eve = browser()
    for n in range(INVITE_TAKEN):
        body = {"invite": invite, "id": ("ann", "bob")[n % 2], "name": "E", "password": PASSWORD}
        taken = await eve.post("/api/signup", body)
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "id-taken", (n, taken.text)
    for who in ("bob", "nobody-has-this-id"):
        held = await eve.post("/api/signup", {"invite": invite, "id": who, "name": "E", "password": PASSWORD})
        assert held.status_code == 429, held.text
        error = held.json()["error"]
        assert error["code"] == "too-many-attempts" and "ids you chose are taken" in error["message"]
        assert 0 < int(held.headers["retry-after"]) <= INVITE_TAKEN_REFILL
    assert (await browser().sign_up(other, "cy"))["id"] == "cy"


async def test_a_password_a_guesser_would_try_first_is_refused(srv: ServerProcess, browser: Any) -> None:
    """A sign-up or a change to a common password (or the user's own id with digits) is refused with 400
    `bad-password` saying why, before the invite is used; a strong one is then taken."""
    ann, bob = await admin_and_bob(srv, browser)
    invite = await ann.invite()
    cy = browser()
    for weak in ("password1", "cy123456", "qwertyuiop"):
        refused = await cy.post("/api/signup", {"invite": invite, "id": "cy", "name": "Cy", "password": weak})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "bad-password" and "too easy to guess" in error["message"], error
    assert (await cy.sign_up(invite, "cy"))["id"] == "cy"  # the invite was not used up
    weak = await bob.post("/api/password", {"password": "iloveyou2", "current": PASSWORD})
    assert (weak.status_code, weak.json()["error"]["code"]) == (400, "bad-password")


async def test_sign_in_gives_one_answer_whether_or_not_the_account_exists(srv: ServerProcess, browser: Any) -> None:
    """A wrong password and an unknown id get the same status and message, in about the same time (the unknown id
    is checked against a dummy hash); the right password signs in."""
    await admin_and_bob(srv, browser)
    someone = browser()
    answers: dict[str, list[httpx.Response]] = {"bob": [], "ghost": []}
    times: dict[str, list[float]] = {"bob": [], "ghost": []}
    for _ in range(4):
        for who in answers:
            start = time.perf_counter()
            answers[who].append(await someone.sign_in(who, "wrong password"))
            times[who].append(time.perf_counter() - start)
    bodies = {json.dumps(a.json()) for group in answers.values() for a in group}
    assert {a.status_code for group in answers.values() for a in group} == {401}
    assert len(bodies) == 1 and "wrong user id or password" in bodies.pop()
    # The fastest of each: a busy machine only ever adds time, and what is compared is the work each one costs.
    known, unknown = min(times["bob"]), min(times["ghost"])
    assert unknown > known / 3 and known > unknown / 3, (known, unknown)  # not 100 ms against 3 ms
    me = await someone.signed(await someone.sign_in("bob"))
    assert me["id"] == "bob" and me["admin"] is False


async def test_one_account_signing_in_again_and_again_is_slowed_down(srv: ServerProcess, browser: Any) -> None:
    """Each sign-in is a row kept and (with a password) a hash: an account holder signing in in a loop, from
    many addresses, grew the sign-ins table faster than it was pruned and kept the hash queue full for everyone.
    Ten sign-ins of one account, then 429 `too-many-sign-ins` with Retry-After, before the password is checked
    (the right one too); another account signs in meanwhile, and the account's guessers are not helped."""
    await admin_and_bob(srv, browser)  # (bob signed up: one sign-in)
    for n in range(SIGN_INS - 1):
        answer = await browser().post("/api/session", {"id": "bob", "password": PASSWORD}, **from_address(n))
        assert answer.status_code == 200, (n, answer.text)
    again = await browser().post("/api/session", {"id": "bob", "password": PASSWORD}, **from_address(99))
    assert error(again) == (429, "too-many-sign-ins") and 0 < int(again.headers["retry-after"]) <= SIGN_IN_REFILL
    ann = browser()
    assert (await ann.sign_in("ann")).status_code == 200
    wrong = await browser().post("/api/session", {"id": "bob", "password": "a guess"}, **from_address(98))
    assert error(wrong) == (429, "too-many-sign-ins")  # no hash was spent on it either


def from_address(n: int) -> dict[str, str]:
    return {"x-forwarded-for": f"198.51.100.{n}"}


def error(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


async def test_failed_sign_ins_are_throttled_per_account_and_per_address(srv: ServerProcess, browser: Any) -> None:
    """Five wrong passwords for one account stop its sign-ins for a while (the right password too), with 429 and
    Retry-After; other accounts are not affected until the address has failed some twenty times."""
    await admin_and_bob(srv, browser)
    guesser = browser()
    for _ in range(5):
        assert (await guesser.sign_in("bob", "guess")).status_code == 401
    stopped = await guesser.sign_in("bob")
    assert stopped.status_code == 429 and stopped.json()["error"]["code"] == "too-many-attempts"
    assert 1 <= int(stopped.headers["retry-after"]) <= 60
    assert "try again in" in stopped.json()["error"]["message"]
    assert (await guesser.sign_in("ann")).status_code == 200  # another account
    failed = 5
    while (answer := await guesser.sign_in(f"nobody{failed}", "guess")).status_code == 401:
        failed += 1  # a try comes back every 10 s: on a slow machine a few more than 20 get through
        assert failed <= 25, "the address was never throttled"
    assert answer.status_code == 429 and failed >= 20
    assert (await guesser.sign_in("ann")).status_code == 429  # the address is throttled, whatever the account


async def test_guesses_sent_at_once_get_no_more_tries_than_one_by_one(srv: ServerProcess, browser: Any) -> None:
    """Twelve wrong passwords for one account sent together, then more one by one: no more of them are checked
    than the five the throttle allows (the others are refused unchecked), and the right password after them waits
    too; the same for the current password of a password change (a stolen sign-in cannot guess it faster)."""
    await admin_and_bob(srv, browser)

    async def at_most_five_checked(guess: Any, wrong: int) -> None:
        statuses = [answer.status_code for answer in await asyncio.gather(*(guess(f"guess {n}") for n in range(12)))]
        assert set(statuses) <= {wrong, 429} and statuses.count(wrong) <= 5, statuses
        checked = statuses.count(wrong)
        while (await guess("one more guess")).status_code == wrong:
            checked += 1
            assert checked <= 5, "more guesses were checked than one by one"

    guesser = browser()
    await at_most_five_checked(lambda password: guesser.sign_in("bob", password), 401)
    assert (await guesser.sign_in("bob")).status_code == 429

    thief = browser()
    await thief.signed(await thief.sign_in("ann"))
    new = {"password": "the thief's own"}
    await at_most_five_checked(lambda current: thief.post("/api/password", {**new, "current": current}), 403)
    right = await thief.post("/api/password", {**new, "current": PASSWORD})
    assert right.status_code == 429


async def test_guessers_elsewhere_do_not_lock_a_user_out_where_they_signed_in(srv: ServerProcess, browser: Any) -> None:
    """Five wrong passwords for bob from one address (X-Forwarded-For from the trusted loopback proxy) do not stop
    bob's right password from the address he signed in from before; the guesser's address stays stopped, and so
    does any address bob never signed in from (guessers with many addresses get no more tries)."""
    await admin_and_bob(srv, browser)
    home, guesser, elsewhere = ({"x-forwarded-for": f"198.51.100.{n}"} for n in (7, 66, 99))
    bob = browser()
    assert (await bob.post("/api/session", {"id": "bob", "password": PASSWORD}, **home)).status_code == 200
    attacker = browser()
    for n in range(5):
        assert (
            await attacker.post("/api/session", {"id": "bob", "password": f"guess {n}"}, **guesser)
        ).status_code == 401
    again = await browser().post("/api/session", {"id": "bob", "password": PASSWORD}, **home)
    assert again.status_code == 200, again.text
    for who, where in ((attacker, guesser), (browser(), elsewhere)):
        stopped = await who.post("/api/session", {"id": "bob", "password": PASSWORD}, **where)
        assert stopped.status_code == 429 and stopped.json()["error"]["code"] == "too-many-attempts"


async def test_a_flood_of_sign_ins_is_refused_as_overloaded_instead_of_queued(srv: ServerProcess) -> None:
    """Sixty wrong passwords at once from thirty addresses (two each: what one address may have checked at once):
    the server checks those its queue holds (two at a time, 32 waiting) and refuses the others at once with 503
    `overloaded` and Retry-After, rather than making every sign-in wait behind them."""
    async with httpx.AsyncClient(base_url=srv.http, timeout=TIMEOUT * 20) as http:
        guesses = [
            http.post(
                "/api/session",
                json={"id": f"nobody{n}", "password": "a wrong guess"},
                headers={CSRF: "1", "x-forwarded-for": f"198.51.100.{n // 2}"},
            )
            for n in range(60)
        ]
        answers = await asyncio.gather(*guesses)
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) == {401, 503}, statuses
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert refused.json()["error"]["code"] == "overloaded" and refused.headers["retry-after"] == "1"


async def test_state_changing_routes_need_the_csrf_header_and_our_origin(srv: ServerProcess, browser: Any) -> None:
    """Without X-Peercall-CSRF, with a foreign Origin, cross-site, or with another sign-in's CSRF value: 403."""
    ann = browser()
    await ann.sign_up(setup_token(srv), "ann")
    refused = [
        await ann.http.post("/api/session", json={"id": "ann", "password": PASSWORD}),
        await ann.http.post("/api/session/token"),
        await ann.post("/api/session/token", origin="https://evil.example"),
        await ann.post("/api/session/token", **{"sec-fetch-site": "cross-site"}),
        await ann.http.post("/api/session/token", headers={CSRF: "not-the-value"}),
        await ann.http.delete("/api/session"),
    ]
    for answer in refused:
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "csrf", answer.text
    assert (await ann.http.get("/api/session")).status_code == 200  # still signed in
    own = await ann.post("/api/session/token", origin=srv.http, **{"sec-fetch-site": "same-origin"})
    assert own.status_code == 200


async def test_a_deeply_nested_body_is_a_bad_request_not_a_traceback(srv: ServerProcess, browser: Any) -> None:
    """A body of ten thousand `[` (10 KB, under the 16 KiB limit) to the routes that need no sign-in gets 400
    `bad-request` and logs no traceback (it was a 500 and two tracebacks per request); as deep as MAX_DEPTH is
    decoded and answered as any body."""
    someone = browser()
    for path in ("/api/session", "/api/signup", "/api/session/passkey", "/api/signup/passkey/options"):
        for deep in (b"[" * 10_000, b'{"id":' * 2_000):
            answer = await someone.http.post(path, content=deep, headers={CSRF: "1"})
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad-request", (path, answer.text)
    for depth, status in ((MAX_DEPTH, 401), (MAX_DEPTH + 1, 400)):  # the object, then arrays in one member
        body = '{"id":"ann","password":"wrong","extra":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
        assert (await someone.http.post("/api/session", content=body, headers={CSRF: "1"})).status_code == status
    assert "Traceback" not in srv.log() and "Exception in ASGI application" not in srv.log()


async def test_a_lone_surrogate_or_a_foreign_passkey_id_is_refused_not_a_traceback(
    srv: ServerProcess, browser: Any
) -> None:
    """JSON may escape half a UTF-16 pair (`"\\ud800"`), which no store can encode: Python's decoder let it
    through, and a passkey id so made was a 500 and two tracebacks per request from anyone (no sign-in needed, no
    throttle). Now every API body is 400 `bad-request`, and a passkey id that is no base64url is not looked up
    (the answer of an unknown passkey)."""
    someone = browser()
    client_data = b64url(json.dumps({"type": "webauthn.get", "challenge": "AAAA", "origin": "x"}).encode())
    for value in (
        {"passkey": {"id": "\ud800", "response": {"clientDataJSON": client_data}}},
        {"id": "\udc00ann", "password": PASSWORD},
        {"passkey": {}, "\udfff": 1},
    ):
        body = json.dumps(value)  # (ASCII: `\\ud800` and the like)
        for path in ("/api/session/passkey", "/api/session", "/api/signup"):
            answer = await someone.http.post(path, content=body, headers={CSRF: "1"})
            assert (answer.status_code, answer.json()["error"]["code"]) == (400, "bad-request"), (path, answer.text)
    for key in ("not base64!", "é" * 10, "A" * 1401):
        sent = {"passkey": {"id": key, "response": {"clientDataJSON": client_data}}}
        answer = await someone.http.post("/api/session/passkey", json=sent, headers={CSRF: "1"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "sign-in-failed"), answer.text
    assert "Traceback" not in srv.log()


async def test_signaling_tokens_connect_and_ring_another_user(srv: ServerProcess, browser: Any) -> None:
    """A token from POST /api/session/token opens /ws as its user, who can ring another signed-in user; the
    HTTP API takes it as a Bearer too."""
    ann, bob = await admin_and_bob(srv, browser)
    answer = await ann.post("/api/session/token")
    assert answer.json()["expiresIn"] == 300 and answer.json()["id"] == "ann"
    a, b = await connect(srv, answer.json()["token"]), await connect(srv, await bob.token())
    try:
        assert (a.id, b.id) == ("ann", "bob")
        await a.send({"type": "call-request", "to": "bob"})
        request = await b.expect(type="call-request")
        assert (request["from"], request["displayName"]) == ("ann", "Ann")  # the account's display name
    finally:
        await a.close()
        await b.close()
    async with httpx.AsyncClient() as http:
        calls = await http.get(f"{srv.http}/api/calls", headers={"Authorization": f"Bearer {await bob.token()}"})
        assert calls.status_code == 200


async def test_signing_out_ends_the_sign_in_and_its_tokens(srv: ServerProcess, browser: Any) -> None:
    """After sign-out the cookie no longer works and the sign-in's unexpired signaling tokens are refused; signing
    out everywhere ends the other sign-ins too."""
    _, bob = await admin_and_bob(srv, browser)
    token = await bob.token()
    out = await bob.delete("/api/session")
    assert out.status_code == 200 and 'peercall-session=""' in out.headers["set-cookie"]
    stale = Browser(srv)
    stale.http.cookies = bob.http.cookies
    for answer in (await bob.http.get("/api/session"), await bob.post("/api/session/token")):
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    async with websockets.connect(srv.ws) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert "sign-in has ended" in (await recv_json(ws))["message"]
        assert (await closed_with(ws))[0] == 4401
    phone, laptop = browser(), browser()
    await phone.signed(await phone.sign_in("bob"))
    await laptop.signed(await laptop.sign_in("bob"))
    listed = (await phone.http.get("/api/sessions")).json()["sessions"]
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
    assert (await laptop.delete("/api/sessions")).json() == {"signedOut": 2}
    assert (await phone.http.get("/api/session")).status_code == 401
    await stale.http.aclose()


async def test_a_sign_out_closes_the_sockets_of_that_sign_in_only(srv: ServerProcess, browser: Any) -> None:
    """bob is signed in on his phone and his laptop, each with a socket. Signing the laptop out from the phone's
    list closes the laptop's socket (4401 "signed out") within a second; the phone's stays open and still calls ann.
    Then the phone signs itself out: both sockets of its sign-in (two tabs) close, ann's stays open."""
    ann, phone = await admin_and_bob(srv, browser)
    laptop = browser()
    await laptop.signed(await laptop.sign_in("bob"))
    a = await connect(srv, await ann.token())
    tabs = [await connect(srv, await phone.token()), await connect(srv, await phone.token())]
    on_laptop = await connect(srv, await laptop.token())
    listed = (await phone.http.get("/api/sessions")).json()["sessions"]
    other = next(s["id"] for s in listed if not s["current"])
    watching = asyncio.create_task(closed_with(on_laptop.ws))
    assert (await phone.delete(f"/api/sessions/{other}")).json() == {"signedOut": 1}
    told = time.monotonic()
    assert await watching == (4401, "signed out")
    assert time.monotonic() - told < 1.0 * SCALE
    await tabs[0].send({"type": "call-request", "to": "ann"})
    ring = await a.expect(type="call-request")
    await a.send({"type": "call-reject", "to": "bob", "callId": ring["callId"]})
    await tabs[0].expect(type="call-ended")

    watching_tabs = [asyncio.create_task(closed_with(t.ws)) for t in tabs]
    assert (await phone.delete("/api/session")).json() == {"signedOut": 1}
    assert await asyncio.gather(*watching_tabs) == [(4401, "signed out")] * 2
    await a.expect(type="presence", id="bob", status="offline")  # ann's socket is open, and bob has none left
    await a.close()


async def test_a_disabled_user_cannot_sign_in_or_get_tokens(srv: ServerProcess, browser: Any) -> None:
    """An administrator disables bob: his sign-ins end at once (cookie and tokens refused), and he cannot sign in
    until enabled again; an administrator can also end his sign-ins without disabling him."""
    ann, bob = await admin_and_bob(srv, browser)
    token = await bob.token()
    assert (await ann.post("/api/users/ann/disable")).json()["error"]["code"] == "self"
    disabled = await ann.post("/api/users/bob/disable")
    assert disabled.status_code == 200 and disabled.json()["user"]["disabled"] is True
    assert (await bob.post("/api/session/token")).status_code == 401
    status = (await bob.sign_in("bob")).json()["error"]
    assert status["code"] == "disabled"
    assert (await bob.sign_in("bob", "wrong password")).json()["error"]["code"] == "sign-in-failed"
    async with websockets.connect(srv.ws) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert (await closed_with(ws))[0] == 4401
    users = (await ann.http.get("/api/users")).json()["users"]
    assert [(u["id"], u["disabled"]) for u in users] == [("ann", False), ("bob", True)]
    assert (await ann.post("/api/users/bob/enable")).status_code == 200
    await bob.signed(await bob.sign_in("bob"))
    assert await bob.token()
    assert (await bob.delete("/api/users/ann/sessions")).json()["error"]["code"] == "forbidden"
    assert (await ann.delete("/api/users/bob/sessions")).json() == {"signedOut": 1}
    assert (await bob.http.get("/api/session")).status_code == 401
    assert (await ann.http.get("/api/session")).status_code == 200


async def test_sign_in_needs_https_except_on_localhost(browser: Any, db: Path) -> None:
    """Over plain http to a public name sign-in is refused (it would travel in clear); behind a trusted proxy
    that says https, the cookie is `__Host-` and Secure."""
    with run_server(
        PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}", PEERCALL_ALLOWED_HOSTS="*"
    ) as srv:
        token = setup_token(srv)
        async with httpx.AsyncClient(base_url=srv.http) as http:
            body = {"invite": token, "id": "ann", "name": "Ann", "password": PASSWORD}
            clear = await http.post("/api/signup", json=body, headers={CSRF: "1", "host": "call.example.org"})
            assert clear.status_code == 403 and clear.json()["error"]["code"] == "https-required"
            proxied = await http.post(
                "/api/signup",
                json=body,
                headers={CSRF: "1", "host": "call.example.org", "x-forwarded-proto": "https"},
            )
            assert proxied.status_code == 201, proxied.text
            cookie = proxied.headers["set-cookie"]
            assert cookie.startswith("__Host-peercall-session=") and "Secure" in cookie and "Path=/" in cookie


async def test_over_https_only_the_host_prefixed_cookie_is_a_sign_in(srv: ServerProcess, browser: Any) -> None:
    """Over https (a trusted proxy says so) a plain `peercall-session` cookie, which an http page or a sub-domain
    can plant, signs nobody in, even with a live sign-in's secret; the `__Host-` one does, and is set again
    `Secure` when a token is made."""
    await admin_and_bob(srv, browser)
    https = {"x-forwarded-proto": "https"}
    async with httpx.AsyncClient(base_url=srv.http, timeout=TIMEOUT * 4) as http:  # a sign-in hashes: slow when busy
        signed = await http.post("/api/session", json={"id": "bob", "password": PASSWORD}, headers={**https, CSRF: "1"})
        name, _, rest = signed.headers["set-cookie"].partition("=")
        secret = rest.split(";")[0]
        csrf = signed.json()["csrf"]
        http.cookies.clear()
        for cookie, status in ((f"peercall-session={secret}", 401), (f"__Host-peercall-session={secret}", 200)):
            headers = {**https, "cookie": cookie}
            assert (await http.get("/api/session", headers=headers)).status_code == status
            token = await http.post("/api/session/token", headers={**headers, CSRF: csrf})
            assert token.status_code == status, token.text
            http.cookies.clear()
    assert name == "__Host-peercall-session"
    again = token.headers["set-cookie"]
    assert again.startswith("__Host-peercall-session=") and "Secure" in again


async def test_the_cli_adds_lists_and_invites(db: Path) -> None:
    """`peercall user add` (password on stdin), `user list`, `invite --admin` on the server's store."""
    env = {"PEERCALL_DATABASE_URL": f"sqlite:///{db}", "PEERCALL_AUTH": "accounts"}
    import os
    import sys

    async def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "peercall",
            *args,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode())
        return proc.returncode or 0, out.decode(), err.decode()

    assert (await run("user", "add", "root", "--admin", "--name", "The Admin", stdin=PASSWORD + "\n"))[0] == 0
    code, _, err = await run("user", "add", "root", stdin=PASSWORD + "\n")
    assert code == 2 and "taken" in err
    code, _, err = await run("user", "add", "short", stdin="pw\n")
    assert code == 2 and "8 to 1024" in err
    assert (await run("user", "list"))[1] == "root\tThe Admin\tadmin\n"
    code, out, _ = await run("invite", "--admin")
    assert code == 0 and re.fullmatch(r"http://localhost:8080/#invite=[\w-]{43}\n", out)
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}") as srv:
        assert "SET-UP" not in srv.log()  # someone has an account already
        async with httpx.AsyncClient(base_url=srv.http) as http:
            answer = await http.post("/api/session", json={"id": "root", "password": PASSWORD}, headers={CSRF: "1"})
            assert answer.status_code == 200 and answer.json()["admin"] is True
            invite = out.strip().rpartition("=")[2]
            body = {"invite": invite, "id": "deputy", "name": "D", "password": PASSWORD}
            signed_up = await http.post("/api/signup", json=body, headers={CSRF: "1"})
            assert signed_up.status_code == 201 and signed_up.json()["admin"] is True
        assert (await run("user", "disable", "deputy"))[0] == 0
        assert "deputy\tD\tadmin, disabled\n" in (await run("user", "list"))[1]


async def test_a_sign_out_reaches_another_node_within_seconds(browser: Any, db: Path) -> None:
    """Two nodes on one store: a sign-in ended on one is refused by the other within its refresh (REFRESH, 2 s),
    though the signaling token has minutes left."""
    env = {"PEERCALL_AUTH": "accounts", "PEERCALL_DATABASE_URL": f"sqlite:///{db}", **OPEN_DOORS}
    with run_server(**env) as one, run_server(**env) as two:
        ann = Browser(one)
        try:
            await ann.sign_up(setup_token(one), "ann")
            late = {"invite": setup_token(two), "id": "eve", "name": "Eve", "password": PASSWORD}
            assert (await ann.post("/api/signup", late)).status_code == 404  # the first sign-up ended every link
            signal_token = await ann.token()
            client = await connect(two, signal_token)
            await client.close()
            assert (await ann.delete("/api/session")).status_code == 200
            started = time.monotonic()
            while True:
                async with websockets.connect(two.ws) as ws:
                    await ws.send(json.dumps({"type": "auth", "token": signal_token}))
                    if (await recv_json(ws))["type"] == "error":
                        break
                assert time.monotonic() - started < 2 + 2, "the other node still takes the token"
                await asyncio.sleep(0.2)
        finally:
            await ann.http.aclose()


async def test_an_invite_makes_its_maker_and_the_invitee_contacts(db: Path) -> None:
    """Under accounts mode's defaults (presence and ringing for contacts only), bob, who signed up with ann's
    invite, is her contact at once: her open socket gets the new `contacts` frame, each sees the other online, and
    they ring each other. The set-up link and a `peercall invite` without `--by` introduce nobody; with
    `--by ann` the invitee is ann's contact too."""
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}") as srv:
        ann, bob, cy, dee = (Browser(srv) for _ in range(4))
        try:
            await ann.sign_up(setup_token(srv), "ann")
            a = await connect(srv, await ann.token())
            assert a.welcome["directory"] == "contacts" and a.welcome["defaultCallsFrom"] == "contacts"
            await a.nothing(type="contacts")  # the set-up link made no contact

            await bob.sign_up(await ann.invite(), "bob")
            shown = await a.expect(type="contacts")
            assert [(c["id"], c["status"]) for c in shown["contacts"]] == [("bob", "offline")]
            assert shown["incoming"] == [] and shown["outgoing"] == []
            b = await connect(srv, await bob.token())
            assert b.welcome["online"] == ["ann"]
            assert [c["id"] for c in (await b.expect(type="contacts"))["contacts"]] == ["ann"]
            await a.expect(type="presence", id="bob", status="online")
            await b.send({"type": "call-request", "to": "ann"})
            assert (await a.expect(type="call-request"))["from"] == "bob"
            await b.send({"type": "hangup", "to": "ann"})

            code, out, err = await run_cli(db, "invite")
            assert code == 0, err
            await cy.sign_up(out.strip().rpartition("#invite=")[2], "cy")
            code, out, err = await run_cli(db, "invite", "--by", "ann")
            assert code == 0, err
            await dee.sign_up(out.strip().rpartition("#invite=")[2], "dee")
            code, out, _ = await run_cli(db, "admin", "contacts", "ann", "--json")
            assert code == 0 and sorted(c["id"] for c in json.loads(out)["contacts"]) == ["bob", "dee"]
            code, out, _ = await run_cli(db, "admin", "contacts", "cy", "--json")
            assert code == 0 and json.loads(out)["contacts"] == [] and json.loads(out)["outgoing"] == []
            code, _, err = await run_cli(db, "invite", "--by", "nobody")
            assert code == 2 and "no such user" in err
            await a.close()
            await b.close()
        finally:
            for one in (ann, bob, cy, dee):
                await one.http.aclose()


async def test_an_invite_keeps_a_block_and_the_bound_on_contacts(db: Path, tmp_path: Path) -> None:
    """An administrator who had blocked an id stays so when someone signs up with it from their invite (the
    invitee's request stays hidden); one who has 500 contacts gets the invitee's request to answer instead."""
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}") as srv:
        ann, mallory, zed = Browser(srv), Browser(srv), Browser(srv)
        try:
            await ann.sign_up(setup_token(srv), "ann")
            a = await connect(srv, await ann.token())
            await a.send({"type": "block", "to": "mallory"})
            assert [b["id"] for b in (await a.expect(type="contacts"))["blocked"]] == ["mallory"]
            await mallory.sign_up(await ann.invite(), "mallory")
            code, out, _ = await run_cli(db, "admin", "contacts", "ann", "--json")
            circle = json.loads(out)
            assert code == 0 and circle["contacts"] == [] and circle["incoming"] == []
            assert [b["id"] for b in circle["blocked"]] == ["mallory"]

            pairs = tmp_path / "pairs.txt"
            pairs.write_text("".join(f"ann friend{i}\n" for i in range(500)))
            assert (await run_cli(db, "admin", "import-contacts", str(pairs)))[0] == 0
            await zed.sign_up(await ann.invite(), "zed")
            code, out, _ = await run_cli(db, "admin", "contacts", "ann", "--json")
            circle = json.loads(out)
            assert len(circle["contacts"]) == 500 and [r["id"] for r in circle["incoming"]] == ["zed"]
            await a.close()
        finally:
            for one in (ann, mallory, zed):
                await one.http.aclose()


async def run_cli(db: Path, *args: str) -> tuple[int, str, str]:
    """`peercall ARGS` on the accounts store `db`: the exit status, standard output and error."""
    import os
    import sys

    env = {**os.environ, "PEERCALL_DATABASE_URL": f"sqlite:///{db}", "PEERCALL_AUTH": "accounts"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "peercall",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT * 3)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_signed_in_user_changes_or_removes_their_password(srv: ServerProcess, browser: Any) -> None:
    """`/api/password`: a change needs the current password (a wrong one is refused and throttled like a failed
    sign-in), the new one signs in and the old one no longer does; the only sign-in method cannot be removed;
    every change needs the sign-in's CSRF value. (A passkey-only account adding one: tests/e2e/test_passkeys.py.)"""
    _, bob = await admin_and_bob(srv, browser)
    shown = (await bob.http.get("/api/password")).json()["password"]
    assert shown is not None and shown["created"] > 0
    new = "a much better password"
    unsent = await bob.post("/api/password", {"password": new})
    assert (unsent.status_code, unsent.json()["error"]["code"]) == (403, "wrong-password")
    short = await bob.post("/api/password", {"password": "short", "current": PASSWORD})
    assert (short.status_code, short.json()["error"]["code"]) == (400, "bad-password")
    forged = await bob.http.post("/api/password", json={"password": new, "current": PASSWORD}, headers={CSRF: "1"})
    assert (forged.status_code, forged.json()["error"]["code"]) == (403, "csrf")
    changed = await bob.post("/api/password", {"password": new, "current": PASSWORD})
    assert changed.status_code == 200, changed.text
    assert (await browser().sign_in("bob")).status_code == 401
    assert (await browser().sign_in("bob", new)).status_code == 200
    last = await bob.delete("/api/password")
    assert (last.status_code, last.json()["error"]["code"]) == (409, "last-method")
    for _ in range(5):
        wrong = await bob.post("/api/password", {"password": PASSWORD, "current": "not my password"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "wrong-password")
    waits = await bob.post("/api/password", {"password": PASSWORD, "current": new})
    assert waits.status_code == 429 and int(waits.headers["retry-after"]) > 0
    assert (await browser().sign_in("bob", new)).status_code == 429  # the same throttle as sign-in
