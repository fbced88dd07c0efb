"""Web Push in Chromium: bob's app is closed, only its service worker is left. alice calls him; the server's push
(to a push service on loopback, decrypted with the subscription's keys the test made) is delivered to bob's service
worker through the DevTools protocol (`ServiceWorker.deliverPushMessage`); the notification it shows is read with
`registration.getNotifications()`. Decline (the service worker's click handler) ends alice's call as declined;
Accept (the app opened at `/?accept=<callId>`) connects the call with audio both ways; a call nobody answers turns
the notification into a missed call. (Headless Chromium makes no real push subscription: the server-side one is made
by the test, with keys of its own.)"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, CDPSession, Page, Worker, expect

from tests.conftest import OPEN_DOORS, SCALE, ServerProcess, run_server
from tests.e2e.conftest import OpenPage
from tests.e2e.steps import assert_audio_flows, connect, wait_until
from tests.e2e.test_auth_turn_tls import AUTH_SECRET, token_for
from tests.pushservice import PushService, Subscriber, push_service

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

RING = 6  # seconds: long enough to read the notification and click, short enough to ring out


@pytest.fixture
def service() -> Iterator[PushService]:
    with push_service() as svc:
        yield svc


@pytest.fixture
def server(service: PushService) -> Iterator[ServerProcess]:
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=AUTH_SECRET,
        PEERCALL_PUSH="true",
        PEERCALL_PUSH_SERVICES=service.origin,
        PEERCALL_VAPID_SUBJECT="mailto:ops@example.org",
        PEERCALL_RING_TIMEOUT=str(RING),
    ) as srv:
        yield srv


class ClosedApp:
    """bob's browser with peercall closed: a context whose only peercall code is its service worker."""

    def __init__(self, context: BrowserContext, worker: Worker, cdp: CDPSession, registration: str, origin: str):
        self.context, self.worker, self.cdp, self.registration, self.origin = context, worker, cdp, registration, origin

    async def deliver(self, payload: dict[str, Any]) -> None:
        """A push message arrives (as the push service would hand it over, decrypted)."""
        await self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": self.origin, "registrationId": self.registration, "data": json.dumps(payload)},
        )

    async def show(self, payload: dict[str, Any], title: str) -> list[dict[str, Any]]:
        """Deliver `payload` and wait until the notification of its call says `title`. Headless Chromium now and
        then drops a message delivered through the DevTools protocol (about one run in four, never the same step):
        it is delivered again, as a push service retries, up to three times."""
        for attempt in range(3):
            await self.deliver(payload)
            try:
                return await wait_until(
                    self.notifications,
                    lambda ns: any(n["tag"] == payload["callId"] and n["title"] == title for n in ns),
                    f"a notification {title!r}",
                    timeout=3 * SCALE,
                )
            except pytest.fail.Exception:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def gone(self, call_id: str) -> None:
        """Wait until no notification of `call_id` is left."""
        await wait_until(
            self.notifications,
            lambda ns: all(n["tag"] != call_id for n in ns),
            f"no notification of call {call_id}",
            timeout=10 * SCALE,
        )

    async def notifications(self) -> list[dict[str, Any]]:
        return await self.worker.evaluate(  # type: ignore[no-any-return]
            """async () => (await self.registration.getNotifications()).map((n) => ({
                 title: n.title, tag: n.tag, actions: n.actions.map((a) => a.title)}))"""
        )

    async def click(self, action: str, payload: dict[str, Any]) -> Any:
        """The user clicks `action` on the notification (the service worker's own click handler)."""
        return await self.worker.evaluate(
            "([action, data]) => self.peercallPush.click(action, data)", [action, payload]
        )


@pytest_asyncio.fixture(loop_scope="session")
async def closed_app(browser: Browser, server: ServerProcess) -> AsyncIterator[ClosedApp]:
    """bob opened peercall once (its service worker is installed), allowed notifications, and closed it."""
    context = await browser.new_context(base_url=server.http)
    await context.grant_permissions(["notifications", "microphone"], origin=server.http)
    page = await context.new_page()
    await page.goto("/")
    await page.evaluate("navigator.serviceWorker.register('/sw.js').then(() => navigator.serviceWorker.ready)")
    worker = context.service_workers[0] if context.service_workers else await context.wait_for_event("serviceworker")
    blank = await context.new_page()
    await blank.goto("about:blank")
    cdp = await context.new_cdp_session(blank)
    registrations: list[dict[str, Any]] = []
    found = asyncio.Event()

    def updated(event: dict[str, Any]) -> None:
        registrations.extend(event["registrations"])
        if any(r["scopeURL"].startswith(server.http) for r in registrations):
            found.set()

    cdp.on("ServiceWorker.workerRegistrationUpdated", updated)
    await cdp.send("ServiceWorker.enable")
    async with asyncio.timeout(5 * SCALE):
        await found.wait()
    registration = next(r["registrationId"] for r in registrations if r["scopeURL"].startswith(server.http))
    await page.close()  # the app is closed now; the service worker stays
    try:
        yield ClosedApp(context, worker, cdp, registration, server.http)
    finally:
        await context.close()


async def subscribe(server: ServerProcess, service: PushService, user: str) -> Subscriber:
    """bob's subscription as the server keeps it: made by the test, with keys that decrypt its pushes."""
    sub = service.subscriber()
    async with httpx.AsyncClient(
        base_url=server.http, headers={"authorization": f"Bearer {token_for(user, 600)}"}
    ) as http:
        r = await http.post("/api/push/subscriptions", json={"device": "browser", "subscription": sub.json()})
    assert r.status_code == 201, r.text
    return sub


async def push_number(service: PushService, sub: Subscriber, n: int) -> dict[str, Any]:
    """The `n`th push (from 1) the server sent to bob's browser, decrypted."""
    got = await asyncio.to_thread(service.wait, urllib.parse.urlsplit(sub.endpoint).path, n, 10 * SCALE)
    return sub.decrypt(got[n - 1])


async def call_bob(alice: Page, bob: str) -> None:
    await alice.fill("#peer-id", bob)
    await alice.click("#call")
    await expect(alice.locator("#call-status")).to_have_text("Requesting")


async def test_a_closed_app_rings_by_push_and_its_notification_declines_accepts_and_turns_missed(
    open_page: OpenPage, server: ServerProcess, service: PushService, closed_app: ClosedApp, uid: Any
) -> None:
    """Decline from the notification ends alice's call as declined; Accept opens the app, which connects and
    answers with audio both ways; a call nobody answers leaves a missed-call notification in its place."""
    alice, bob = uid("alice"), uid("bob")
    sub = await subscribe(server, service, bob)
    caller = await open_page(server.http, f"/#token={token_for(alice, 600)}", "alice")
    await connect(caller)

    # 1. Decline.
    await call_bob(caller, bob)
    ring = await push_number(service, sub, 1)
    (shown,) = await closed_app.show(ring, f"Incoming call from {alice}")
    assert shown == {"title": f"Incoming call from {alice}", "tag": ring["callId"], "actions": ["Accept", "Decline"]}
    assert await closed_app.click("decline", ring) == 204
    await expect(caller.locator("#call-status")).to_have_text("Rejected")
    # Bob's other browsers (here: this one, whose notification the test's click left): the incoming call is replaced
    # by a quiet "Call declined" that goes by itself.
    gone = await push_number(service, sub, 2)
    assert (gone["type"], gone["outcome"]) == ("call-ended", "rejected")
    await closed_app.show(gone, "Call declined")
    await closed_app.gone(ring["callId"])

    # 2. Accept: the app opens at /?accept=<callId> (with bob's token at hand), connects and answers.
    await call_bob(caller, bob)
    ring = await push_number(service, sub, 3)
    await closed_app.show(ring, f"Incoming call from {alice}")
    callee = await closed_app.context.new_page()
    errors: list[str] = []
    callee.on("pageerror", lambda exc: errors.append(str(exc)))
    await callee.goto(f"/?accept={ring['callId']}#token={token_for(bob, 600)}")
    await expect(callee.locator("#call-status")).to_have_text("Connected", timeout=10_000 * SCALE)
    await expect(caller.locator("#call-status")).to_have_text("Connected")
    assert "accept=" not in callee.url  # the address bar lost the one-time request
    answered = await push_number(service, sub, 4)
    assert (answered["type"], answered["callId"], answered["outcome"]) == ("call-ended", ring["callId"], "answered")
    await closed_app.deliver(answered)  # the app is visible here: the notification just goes
    await closed_app.gone(ring["callId"])
    await assert_audio_flows(caller, "alice")
    await assert_audio_flows(callee, "bob")
    await caller.click("#hangup")
    await expect(callee.locator("#call-status")).to_have_text("Call Ended")
    await callee.close()
    assert errors == []
    # Where no page of the app shows (another of bob's browsers), it says so briefly instead.
    await closed_app.show(answered, "Call answered on another device")
    await closed_app.gone(ring["callId"])

    # 3. Nobody answers: at the ring timeout the notification of that call becomes a missed call.
    await call_bob(caller, bob)
    ring = await push_number(service, sub, 5)
    await closed_app.show(ring, f"Incoming call from {alice}")
    missed = await push_number(service, sub, 6)
    assert (missed["type"], missed["callId"]) == ("missed-call", ring["callId"])
    shown = await closed_app.show(missed, f"Missed call from {alice}")
    assert [n for n in shown if n["tag"] == ring["callId"]] == [
        {"title": f"Missed call from {alice}", "tag": ring["callId"], "actions": []}
    ]
    await expect(caller.locator("#call-status")).to_have_text("No answer")


async def test_the_control_shows_where_push_is_on_and_says_why_it_cannot(
    open_page: OpenPage, server: ServerProcess, uid: Any
) -> None:
    """Connected to a server with push on, the page offers "Ring this device when peercall is closed"; where the
    browser refuses a push subscription (headless Chromium does), ticking it says why and leaves it unticked."""
    page = await open_page(server.http, f"/#token={token_for(uid('carol'), 600)}", "carol")
    await page.context.grant_permissions(["notifications", "microphone"], origin=server.http)
    await expect(page.locator("#push-ring-label")).to_be_hidden()
    await connect(page)
    await expect(page.locator("#push-ring-label")).to_be_visible()
    await expect(page.locator("#push-ring-label")).to_have_text("Ring this device when peercall is closed")
    await expect(page.locator("#push-ring")).not_to_be_checked()
    await page.click("#push-ring")
    await expect(page.locator("#push-ring-hint")).to_contain_text("This device cannot ring while peercall is closed:")
    await expect(page.locator("#push-ring")).not_to_be_checked()
    await expect(page.locator("#push-ring")).to_be_enabled()


async def test_the_control_is_hidden_where_push_is_off(open_page: OpenPage, uid: Any) -> None:
    """A server without PEERCALL_PUSH: nothing to tick."""
    with run_server() as plain:
        page = await open_page(plain.http, "/", "dave")
        await page.fill("#my-id", uid("dave"))
        await connect(page)
        await expect(page.locator("#people-card")).to_be_visible()
        assert await page.evaluate("fetch('/api/push').then((r) => r.json())") == {
            "enabled": False,
            "applicationServerKey": None,
        }
        await expect(page.locator("#push-ring-label")).to_be_hidden()


async def test_the_service_worker_replaces_a_subscription_the_browser_replaced(
    open_page: OpenPage, server: ServerProcess, service: PushService, closed_app: ClosedApp, uid: Any
) -> None:
    """`pushsubscriptionchange` with no page open and no token: the worker tells the server the new subscription,
    proving the old one with what the page left it (push.js), and calls then ring the new one. (Headless Chromium
    makes no real subscription: the worker's handler is given the new one the test made.)"""
    bob = uid("bob")
    old = await subscribe(server, service, bob)
    new = service.subscriber()
    record = {"user": bob, "device": "browser", "endpoint": old.endpoint, "auth": old.json()["keys"]["auth"]}
    await closed_app.worker.evaluate(  # what push.js leaves once the server kept the subscription
        """async (record) => (await caches.open("peercall-push")).put(
             new URL("push-replacement", self.registration.scope).href, new Response(JSON.stringify(record)))""",
        record,
    )
    status = await closed_app.worker.evaluate(
        "(json) => self.peercallPush.replaceSubscription(null, { toJSON: () => json })", new.json()
    )
    assert status == 201
    kept = await closed_app.worker.evaluate(
        """async () => (await (await caches.open("peercall-push")).match(
             new URL("push-replacement", self.registration.scope).href)).json()"""
    )
    assert kept == {**record, "endpoint": new.endpoint, "auth": new.json()["keys"]["auth"]}  # for the next replacement
    alice = uid("alice")
    caller = await open_page(server.http, f"/#token={token_for(alice, 600)}", "alice")
    await connect(caller)
    await call_bob(caller, bob)
    ring = await push_number(service, new, 1)
    assert ring["type"] == "incoming-call"
    assert not [r for r in service.received if r.path == urllib.parse.urlsplit(old.endpoint).path]
    await caller.click("#hangup")
