"""Web Push (PEERCALL_PUSH): a call to someone whose app is closed rings through a push to a push service on
loopback; the test decrypts it with the subscription's keys. Decline from the notification, the ring timeout's
missed-call push, a subscription the push service says is gone, and the API's refusals."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from py_vapid import Vapid02  # type: ignore[import-untyped]

from tests.conftest import OPEN_DOORS, SCALE, ServerProcess, run_server
from tests.integration.test_security import SECRET, token
from tests.integration.test_token_renewal import Peer
from tests.pushservice import PushService, Subscriber, push_service

RING = 3.0


@pytest.fixture(scope="module")
def service() -> Iterator[PushService]:
    with push_service() as svc:
        yield svc


@pytest.fixture(scope="module")
def srv(service: PushService) -> Iterator[ServerProcess]:
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=SECRET,
        PEERCALL_PUSH="true",
        PEERCALL_PUSH_SERVICES=service.origin,
        PEERCALL_VAPID_SUBJECT="mailto:ops@example.org",
        PEERCALL_RING_TIMEOUT=str(RING),
    ) as s:
        yield s


def api(srv: ServerProcess, user: str | None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token(user)}"} if user is not None else {}
    return httpx.AsyncClient(base_url=srv.http, headers=headers, timeout=10 * SCALE)


async def subscribe(srv: ServerProcess, service: PushService, user: str, device: str = "browser") -> Subscriber:
    sub = service.subscriber()
    async with api(srv, user) as http:
        r = await http.post("/api/push/subscriptions", json={"device": device, "subscription": sub.json()})
    assert r.status_code == 201, r.text
    return sub


def path(sub: Subscriber) -> str:
    return urllib.parse.urlsplit(sub.endpoint).path


async def pushes(service: PushService, sub: Subscriber, count: int) -> list[dict[str, Any]]:
    got = await asyncio.to_thread(service.wait, path(sub), count, 10 * SCALE)
    return [sub.decrypt(p) for p in got]


async def test_a_call_to_a_closed_app_rings_by_an_encrypted_push_and_decline_ends_it(
    srv: ServerProcess, service: PushService, uid: Any
) -> None:
    """Bob has no tab open: Alice hears it ring, Bob's browser gets an encrypted, VAPID-signed push with only what
    the notification needs; its Decline capability ends the call `rejected` for Alice, once."""
    alice, bob = uid("alice"), uid("bob")
    sub = await subscribe(srv, service, bob)
    caller = await Peer.connect(srv, alice, "a1", ttl=60)
    await caller.send({"type": "call-request", "to": bob})
    ringing = await caller.expect("call-ringing")
    call_id = ringing["callId"]

    (payload,) = await pushes(service, sub, 1)
    assert set(payload) == {"type", "callId", "from", "name", "at", "ringDeadline", "decline"}  # no SDP, no address
    assert (payload["type"], payload["callId"], payload["from"], payload["name"]) == (
        "incoming-call",
        call_id,
        alice,
        None,
    )
    assert 0 < payload["ringDeadline"] - payload["at"] <= RING + 0.01
    (raw,) = await asyncio.to_thread(service.wait, path(sub), 1)
    async with api(srv, None) as http:
        key = (await http.get("/api/push")).json()
    assert key["enabled"] is True
    assert raw.headers["authorization"].endswith(f"k={key['applicationServerKey']}")
    assert Vapid02.verify(raw.headers["authorization"])
    assert raw.headers["urgency"] == "high" and 0 < int(raw.headers["ttl"]) <= RING

    async with api(srv, None) as http:  # the service worker: no sign-in, only the capability
        forged = await http.post(f"/api/calls/{call_id}/decline", json={"decline": payload["decline"][:-2] + "AA"})
        assert (forged.status_code, forged.json()["error"]["code"]) == (403, "bad-capability")
        declined = await http.post(f"/api/calls/{call_id}/decline", json={"decline": payload["decline"]})
        assert declined.status_code == 204
        ended = await caller.expect("call-ended", callId=call_id)
        assert (ended["outcome"], ended["reason"]) == ("rejected", "user-rejected")
        again = await http.post(f"/api/calls/{call_id}/decline", json={"decline": payload["decline"]})
        assert (again.status_code, again.json()["error"]["code"]) == (409, "not-ringing")
    # Bob's other browsers are told it stopped ringing (their notifications go): once, with no capability left.
    _, gone = await pushes(service, sub, 2)
    assert set(gone) == {"type", "callId", "from", "name", "at", "outcome"}
    assert (gone["type"], gone["callId"], gone["outcome"]) == ("call-ended", call_id, "rejected")
    (_, raw_gone) = await asyncio.to_thread(service.wait, path(sub), 2)
    assert raw_gone.headers["topic"] == call_id  # it replaces the call's push if the push service still holds it
    await asyncio.sleep(0.3)
    assert len(await pushes(service, sub, 2)) == 2
    await caller.ws.close()


async def test_a_decline_capability_is_for_its_call_only(srv: ServerProcess, service: PushService, uid: Any) -> None:
    """A capability of one call does not decline another."""
    alice, bob = uid("alice"), uid("bob")
    sub = await subscribe(srv, service, bob)
    caller = await Peer.connect(srv, alice, "a1", ttl=60)
    await caller.send({"type": "call-request", "to": bob})
    call_id = (await caller.expect("call-ringing"))["callId"]
    (payload,) = await pushes(service, sub, 1)
    async with api(srv, None) as http:
        other = await http.post("/api/calls/0123456789abcdef/decline", json={"decline": payload["decline"]})
    assert (other.status_code, other.json()["error"]["code"]) == (403, "bad-capability")
    await caller.send({"type": "hangup", "to": bob, "callId": call_id})
    await caller.expect("call-ended", callId=call_id)
    await caller.ws.close()


async def test_an_unanswered_pushed_call_ends_missed_and_pushes_the_missed_call(
    srv: ServerProcess, service: PushService, uid: Any
) -> None:
    """Nobody opens the notification: at the ring timeout Alice hears `missed`; Bob's browser gets a missed-call
    push for the same call (it replaces the notification)."""
    alice, bob = uid("alice"), uid("bob")
    sub = await subscribe(srv, service, bob)
    caller = await Peer.connect(srv, alice, "a1", ttl=60)
    await caller.send({"type": "call-request", "to": bob})
    call_id = (await caller.expect("call-ringing"))["callId"]
    ended = await caller.expect("call-ended", timeout=(RING + 5) * SCALE, callId=call_id)
    assert ended["outcome"] == "missed"
    ring, missed = await pushes(service, sub, 2)
    assert ring["type"] == "incoming-call"
    assert set(missed) == {"type", "callId", "from", "name", "at"}
    assert (missed["type"], missed["callId"], missed["from"]) == ("missed-call", call_id, alice)
    await caller.ws.close()


async def test_a_device_that_connects_while_it_rings_answers_the_pushed_call(
    srv: ServerProcess, service: PushService, uid: Any
) -> None:
    """The app the notification opened connects and accepts: the caller gets the accept."""
    alice, bob = uid("alice"), uid("bob")
    sub = await subscribe(srv, service, bob)
    caller = await Peer.connect(srv, alice, "a1", ttl=60)
    await caller.send({"type": "call-request", "to": bob})
    call_id = (await caller.expect("call-ringing"))["callId"]
    await pushes(service, sub, 1)
    callee = await Peer.connect(srv, bob, "b1", ttl=60)
    request = await callee.expect("call-request", callId=call_id)
    assert request["from"] == alice
    await callee.send({"type": "call-accept", "to": alice, "callId": call_id})
    await caller.expect("call-accept", callId=call_id)
    # The notifications on Bob's browsers go: the call was answered (on this device or another).
    _, answered = await pushes(service, sub, 2)
    assert (answered["type"], answered["callId"], answered["outcome"]) == ("call-ended", call_id, "answered")
    await caller.send({"type": "hangup", "to": bob, "callId": call_id})
    await callee.expect("call-ended", callId=call_id)
    await asyncio.sleep(0.3)
    assert len(await pushes(service, sub, 2)) == 2  # the end of the answered call pushes nothing
    await caller.ws.close()
    await callee.ws.close()


async def test_a_subscription_the_push_service_says_is_gone_is_dropped(
    srv: ServerProcess, service: PushService, uid: Any
) -> None:
    """410 Gone: the subscription is deleted, so the next call to Bob ends `unavailable` at once."""
    alice, bob = uid("alice"), uid("bob")
    sub = await subscribe(srv, service, bob)
    service.status[path(sub)] = 410
    caller = await Peer.connect(srv, alice, "a1", ttl=60)
    await caller.send({"type": "call-request", "to": bob})
    call_id = (await caller.expect("call-ringing"))["callId"]
    await pushes(service, sub, 1)
    gone = 'peercall_pushes_total{result="gone"} 1.0'
    async with httpx.AsyncClient(base_url=srv.http) as http:  # /metrics: loopback clients may read it
        # The push service has the push; its 410 is handled a moment later (before it, the hangup's own push
        # would still go to the subscription and be answered 410 as well).
        async with asyncio.timeout(5 * SCALE):
            while True:
                if gone in (await http.get("/metrics")).text:
                    break
                await asyncio.sleep(0.05)
        await caller.send({"type": "hangup", "to": bob, "callId": call_id})
        await caller.expect("call-ended", callId=call_id)
        async with asyncio.timeout(5 * SCALE):
            while True:  # the store is told right after the answer: poll what the user would see
                await caller.send({"type": "call-request", "to": bob})
                error = await caller.expect("call-ended")
                if error["outcome"] == "unavailable":
                    break
                await asyncio.sleep(0.1)
        await caller.ws.close()
        metrics = (await http.get("/metrics")).text
    assert gone in metrics  # nothing more was pushed to the dropped subscription
    assert len([push for push in service.received if push.path == path(sub)]) == 1


async def test_unsubscribing_stops_the_pushes(srv: ServerProcess, service: PushService, uid: Any) -> None:
    """DELETE drops the device's subscription: a call to Bob is `unavailable` again."""
    alice, bob = uid("alice"), uid("bob")
    await subscribe(srv, service, bob, device="phone")
    async with api(srv, bob) as http:
        r = await http.request("DELETE", "/api/push/subscriptions", json={"device": "phone"})
    assert r.json() == {"deleted": 1}
    caller = await Peer.connect(srv, alice, "a1", ttl=60)
    await caller.send({"type": "call-request", "to": bob})
    ended = await caller.expect("call-ended")
    assert ended["outcome"] == "unavailable"
    await caller.ws.close()


@pytest.mark.parametrize(
    ("user", "change", "status", "code"),
    [
        (None, {}, 401, "unauthorized"),
        ("bob", {"endpoint": "http://10.0.0.1/internal"}, 400, "push-service-refused"),
        ("bob", {"keys": {"p256dh": "AAAA", "auth": "AAAA"}}, 400, "bad-subscription"),
        ("bob", {"device": "no spaces"}, 400, "bad-device"),
    ],
)
async def test_subscriptions_that_are_refused(
    srv: ServerProcess, service: PushService, user: str | None, change: dict[str, Any], status: int, code: str
) -> None:
    """No token, an endpoint outside PEERCALL_PUSH_SERVICES (the server would post wherever told), bad keys, a bad
    device id: each a clear error."""
    sub = service.subscriber().json()
    body: dict[str, Any] = {"device": change.pop("device", "browser"), "subscription": {**sub, **change}}
    async with api(srv, user) as http:
        r = await http.post("/api/push/subscriptions", json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


async def test_a_deeply_nested_body_is_a_bad_request(srv: ServerProcess) -> None:
    """The push routes answer a body nested thousands deep, or with a lone surrogate, 400 `bad-request` (it was 503
    `push-unavailable` and a traceback), with a sign-in and without one."""
    deep = b"[" * 5_000
    async with api(srv, "bob") as http:
        for path in ("/api/push/subscriptions", "/api/push/subscriptions/replace", "/api/calls/abc/decline"):
            r = await http.post(path, content=deep)
            assert (r.status_code, r.json()["error"]["code"]) == (400, "bad-request"), (path, r.text)
        # half a UTF-16 pair, which no store can encode: it was 503 `push-unavailable` ("cannot be reached right
        # now") and a traceback of the database's per request
        lone = b'{"device":"browser","subscription":{"endpoint":"https://fcm.googleapis.com/x\\ud800"}}'
        for method, path in (("POST", "/api/push/subscriptions"), ("DELETE", "/api/push/subscriptions")):
            r = await http.request(method, path, content=lone)
            assert (r.status_code, r.json()["error"]["code"]) == (400, "bad-request"), (path, r.text)
    assert "Traceback" not in srv.log()


async def test_push_is_off_unless_turned_on(server: ServerProcess) -> None:
    """The shared open-mode server: /api/push says disabled and the routes answer push-disabled."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        assert (await http.get("/api/push")).json() == {"enabled": False, "applicationServerKey": None}
        r = await http.post("/api/calls/abc/decline", json={"decline": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "push-disabled")


async def test_accounts_mode_subscribes_with_the_sign_in_and_pushes_the_callers_name(
    service: PushService, tmp_path: Any
) -> None:
    """Accounts mode: the sign-in cookie with its CSRF header keeps a subscription (not without the header); the
    push carries the caller's display name."""
    from tests.integration.test_accounts import CSRF, Browser, admin_and_bob, connect

    with run_server(
        PEERCALL_AUTH="accounts",
        PEERCALL_DATABASE_URL=f"sqlite:///{tmp_path / 'accounts.sqlite3'}",
        **OPEN_DOORS,
        PEERCALL_PUSH="true",
        PEERCALL_PUSH_SERVICES=service.origin,
    ) as accounts:
        made: list[Browser] = []

        def browser() -> Browser:
            made.append(Browser(accounts))
            return made[-1]

        try:
            ann, bob = await admin_and_bob(accounts, browser)
            sub = service.subscriber()
            body = {"device": "laptop", "subscription": sub.json()}
            refused = await bob.http.post("/api/push/subscriptions", json=body)  # no CSRF header
            assert (refused.status_code, refused.json()["error"]["code"]) == (403, "csrf")
            assert (await bob.post("/api/push/subscriptions", body)).status_code == 201
            caller = await connect(accounts, await ann.token())
            await caller.send({"type": "call-request", "to": "bob"})
            (payload,) = await pushes(service, sub, 1)
            assert (payload["from"], payload["name"]) == ("ann", "Ann")
            await caller.close()
            gone = await bob.http.request("DELETE", "/api/push/subscriptions", json={}, headers={CSRF: bob.csrf})
            assert gone.json() == {"deleted": 1}
        finally:
            for b in made:
                await b.http.aclose()


async def test_the_browser_replaces_its_subscription_with_the_old_auth_secret(
    srv: ServerProcess, service: PushService, uid: Any
) -> None:
    """`pushsubscriptionchange`: the service worker has no token, only what the page left it. The old
    subscription's `auth` secret replaces it (for that user and device only); a wrong secret, another device or a
    dropped subscription get 403, and keep nothing. Then calls ring the new endpoint, not the old one."""
    alice, bob = uid("alice"), uid("bob")
    old = await subscribe(srv, service, bob, device="phone")
    new = service.subscriber()
    replacement = {"user": bob, "device": "phone", "subscription": new.json()}
    async with api(srv, None) as http:
        for wrong in (
            {**replacement, "old": {"endpoint": old.endpoint, "auth": new.json()["keys"]["auth"]}},
            {**replacement, "device": "laptop", "old": {"endpoint": old.endpoint, "auth": old.json()["keys"]["auth"]}},
            {**replacement, "user": alice, "old": {"endpoint": old.endpoint, "auth": old.json()["keys"]["auth"]}},
        ):
            r = await http.post("/api/push/subscriptions/replace", json=wrong)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "unknown-subscription")
        r = await http.post("/api/push/subscriptions/replace", json={**replacement, "old": {"endpoint": old.endpoint}})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad-request")
        r = await http.post(
            "/api/push/subscriptions/replace",
            json={**replacement, "old": {"endpoint": old.endpoint, "auth": old.json()["keys"]["auth"]}},
        )
        assert r.status_code == 201, r.text
        assert r.json() == {"user": bob, "device": "phone", "endpoint": new.endpoint}
        again = await http.post(  # the old one is gone: its secret replaces nothing any more
            "/api/push/subscriptions/replace",
            json={**replacement, "old": {"endpoint": old.endpoint, "auth": old.json()["keys"]["auth"]}},
        )
        assert again.status_code == 403
    caller = await Peer.connect(srv, alice, "a1", ttl=60)
    await caller.send({"type": "call-request", "to": bob})
    call_id = (await caller.expect("call-ringing"))["callId"]
    (ring,) = await pushes(service, new, 1)
    assert ring["callId"] == call_id
    assert not [r for r in service.received if r.path == path(old)]
    await caller.send({"type": "hangup", "to": bob, "callId": call_id})
    await caller.expect("call-ended", callId=call_id)
    await caller.ws.close()
