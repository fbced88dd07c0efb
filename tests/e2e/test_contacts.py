"""Contacts in the web client, driven as a user would: a contact request sent from one page and accepted from the
other, the contact's presence coming and going; a blocked caller whose call never reaches the callee's page;
"Who may ring me: Nobody" (do not disturb), whose calls never ring and show as silenced in the history. The last
test walks the contacts panel through axe-core and takes its screenshots ($PEERCALL_TEST_ARTIFACTS/screens/contacts-*).

Each server is the test's own (`run_server`): contacts are kept per user, and a shared server would carry one
test's contacts into the next. Nothing sleeps and then asserts, except where a test proves that something does
NOT happen: there it watches the page for the whole time it could have happened (the call's ring timeout).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from typing import Any

import pytest
import websockets
from playwright.async_api import Page, WebSocketRoute, expect

from tests.conftest import SCALE, ServerProcess, run_server

from .conftest import OpenPage, dump
from .steps import SCREENS, check_accessibility, connect, shoot, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

RING_TIMEOUT = 3.0
"""Seconds a call rings on these tests' servers before it ends as missed (a silent call lasts that long too)."""

# A stand-in for the browser's Notification that records what the page shows (as in test_experience.py), and the
# tab in the background: the page would notify of a call that rang.
FAKE_NOTIFICATIONS_HIDDEN_TAB = """
() => {
  const log = { shown: [] };
  window.__e2e.notifications = log;
  class FakeNotification {
    static permission = "granted";
    static async requestPermission() { return "granted"; }
    constructor(title, options = {}) { log.shown.push({ title, body: options.body ?? "" }); }
    close() {}
    addEventListener() {}
  }
  window.Notification = FakeNotification;
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  document.dispatchEvent(new Event("visibilitychange"));
}
"""

# The tab comes back to the foreground (the user returns to it).
SHOW_TAB = """
() => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "visible" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
  document.dispatchEvent(new Event("visibilitychange"));
}
"""

# What the page shows or plays of a call coming in, sampled in the page every 50 ms from now on; `window.__e2e.rang`
# keeps every sign seen (the incoming-call box, the ringtone, the body's ringing state, a notification, the title).
WATCH_RINGING = """
() => {
  const seen = [];
  window.__e2e.rang = seen;
  const look = () => {
    const signs = [];
    if (!document.getElementById("incoming").hidden) signs.push("incoming box");
    if (window.peercall.ringing) signs.push("ringtone");
    if (document.body.dataset.ringing === "true") signs.push("body ringing");
    if (document.title.startsWith("Incoming call")) signs.push("title");
    if (window.peercall.call) signs.push(`call ${window.peercall.call.phase}`);
    if ((window.__e2e.notifications?.shown ?? []).length) signs.push("notification");
    for (const sign of signs) if (!seen.includes(sign)) seen.push(sign);
  };
  look();
  setInterval(look, 50);
}
"""


def contacts_server(**env: str) -> Any:
    """A server of the test's own: open mode, calls ring RING_TIMEOUT seconds."""
    return run_server(PEERCALL_RING_TIMEOUT=str(RING_TIMEOUT), **env)


async def sign_in(open_page: OpenPage, server: ServerProcess, user: str) -> Page:
    """A page of its own for `user`, connected, with its contacts loaded."""
    page = await open_page(server.http, f"/?id={user}", user)
    await connect(page)
    await expect(page.locator("#contacts-card")).to_be_visible()
    await expect(page.locator("#contact-add")).to_be_enabled()
    return page


async def add_contact(page: Page, user: str, name: str = "") -> None:
    """Ask `user` to be a contact from the "Add a contact" form."""
    await page.fill("#contact-add-id", user)
    if name:
        await page.fill("#contact-add-name", name)
    await page.click("#contact-add")
    await expect(page.locator(f'#contact-outgoing li[data-user="{user}"]')).to_be_visible()


def contact(page: Page, user: str) -> Any:
    return page.locator(f'#contacts li[data-contact="{user}"]')


async def history_records(server: ServerProcess, user: str) -> list[dict[str, Any]]:
    """`user`'s call history as the server keeps it (open mode: anyone may read it)."""

    def get() -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{server.http}/api/calls?id={user}&limit=50", timeout=5) as response:
            calls: list[dict[str, Any]] = json.load(response)["calls"]
            return calls

    return await asyncio.to_thread(get)


async def call_and_wait_for_the_end(page: Page, user: str) -> dict[str, str]:
    """Call `user` from the "Who to call" form; wait for the call to end; what the page said."""
    started = time.monotonic()
    await page.fill("#peer-id", user)
    await page.click("#call")
    await expect(page.locator("#hangup")).to_be_disabled(timeout=(RING_TIMEOUT + 10) * 1000 * SCALE)
    await expect(page.locator("#call")).to_be_enabled()
    return {
        "status": await page.locator("#call-status").inner_text(),
        "state": await page.locator("#call-status").get_attribute("data-state") or "",
        "message": await page.locator("#message").inner_text(),
        "seconds": f"{time.monotonic() - started:.0f}",
    }


async def test_a_request_is_accepted_from_the_page_and_the_contacts_presence_comes_and_goes(
    open_page: OpenPage,
) -> None:
    """alice asks bob from her page; bob sees the request and accepts it; each then sees the other online, under the
    name they gave; when bob disconnects alice sees him offline ("Last seen just now"), and online when he is back.
    On a server that shows contacts only, bob is nowhere on alice's page before he accepts."""
    with contacts_server(PEERCALL_DIRECTORY="contacts") as server:
        alice = await sign_in(open_page, server, "alice")
        bob = await sign_in(open_page, server, "bob")
        await expect(alice.locator("#people-contacts-only")).to_be_visible()
        await expect(alice.locator("#contacts-empty")).to_contain_text("No contacts yet")

        # What cannot be asked is said next to the field, before anything is sent.
        for typed, said in (("alice", "That is you"), ("bob smith", "is not a user id"), ("", "Type the exact")):
            await alice.fill("#contact-add-id", typed)
            await alice.click("#contact-add")
            await expect(alice.locator("#contact-add-hint")).to_contain_text(said)
            await expect(alice.locator("#contact-add-id")).to_have_attribute("aria-invalid", "true")
            await expect(alice.locator("#contact-add-id")).to_be_focused()
        # A refusal from the server reads as a sentence (here: no searching who is online on this server).
        await alice.evaluate("window.peercall.signaling.send({type: 'directory', data: {limit: 5}})")
        await expect(alice.locator("#message")).to_have_text(
            "This server does not let anyone search who is online: add contacts by their exact id."
        )

        await add_contact(alice, "bob", "Bob (work)")
        await expect(alice.locator("#contact-add-id")).not_to_have_attribute("aria-invalid", "true")
        await expect(alice.locator("#contacts li")).to_have_count(0)
        await expect(alice.locator("#message")).to_contain_text("Asked bob to be your contact")

        request = bob.locator('#contact-requests li[data-user="alice"]')
        await expect(request).to_be_visible()
        await expect(request).to_contain_text("wants to add you")
        await expect(bob.locator("#message")).to_have_text("alice wants to be your contact: see Contact requests.")
        await expect(bob.locator("#requests-count")).to_have_text("1")
        await request.get_by_role("button", name="Accept alice's contact request").click()

        await expect(bob.locator("#contact-requests-box")).to_be_hidden()
        await expect(bob.locator("#requests-count")).to_be_hidden()
        await expect(bob.locator("#contacts-title")).to_be_focused()  # not the page's top: where the request was
        # Each side is told, in place of what it was told before (the request, "Asked bob…"), which no longer holds.
        await expect(bob.locator("#message")).to_have_text("You and alice are now contacts.")
        await expect(alice.locator("#message")).to_have_text("bob accepted: you are now contacts.")
        await expect(contact(bob, "alice")).to_have_attribute("data-status", "online")
        await expect(contact(bob, "alice").locator(".status-text")).to_have_text("Online")
        await expect(alice.locator("#contact-outgoing-box")).to_be_hidden()
        bob_at_alice = contact(alice, "bob")
        await expect(bob_at_alice).to_have_attribute("data-status", "online")
        await expect(bob_at_alice.locator(".name")).to_have_text("Bob (work)")
        await expect(bob_at_alice.locator(".user-id")).to_have_text("@bob, ")
        await expect(
            bob_at_alice.get_by_role("button", name=re.compile(r"^Call Bob \(work\)\s*,\s*@bob\s*,\s*Online$"))
        ).to_be_enabled()

        await bob.click("#disconnect")
        await expect(bob_at_alice).to_have_attribute("data-status", "offline")
        await expect(bob_at_alice.locator(".status-text")).to_have_text("Last seen just now")

        await connect(bob)
        await expect(bob_at_alice).to_have_attribute("data-status", "online")
        await expect(bob_at_alice.locator(".status-text")).to_have_text("Online")
        await expect(contact(bob, "alice")).to_have_attribute("data-status", "online")

        # Renamed from the contact's options: the new name shows at once, and on every page of alice's.
        await bob_at_alice.get_by_role("button", name="More for Bob (work)").click()
        await bob_at_alice.get_by_role("button", name="Rename").click()
        await bob_at_alice.get_by_role("textbox", name="Your name for bob").fill("Bobby")
        await bob_at_alice.get_by_role("textbox", name="Your name for bob").press("Enter")
        await expect(bob_at_alice.locator(".name")).to_have_text("Bobby")
        second = await sign_in(open_page, server, "alice")
        await expect(contact(second, "bob").locator(".name")).to_have_text("Bobby")

        # Called by the name alice gave him (people who sign in know each other by name, not by id).
        await alice.fill("#peer-id", "BOBBY ")
        await alice.click("#call")
        await expect(bob.locator("#incoming-from")).to_contain_text("alice")
        await alice.click("#hangup")  # (cancelled while it rings)
        await expect(bob.locator("#incoming")).to_be_hidden()

        # Called from the list: each sees the other in a call while it lasts.
        await bob_at_alice.locator('button[data-act="call"]').click()
        await bob.click("#accept")
        await expect(alice.locator("#call-status")).to_have_text("Connected")
        await expect(contact(second, "bob").locator(".status-text")).to_have_text("In a call")
        await expect(contact(second, "bob")).to_have_attribute("data-status", "in-call")
        await expect(bob_at_alice.locator('button[data-act="call"]')).to_be_disabled()  # we are in a call
        await alice.click("#hangup")
        await expect(contact(second, "bob").locator(".status-text")).to_have_text("Online")

        # Removed from one page: gone from both sides.
        await bob_at_alice.get_by_role("button", name="More for Bobby").click()
        await bob_at_alice.get_by_role("button", name="Remove bob from your contacts").click()
        await expect(alice.locator("#contacts li")).to_have_count(0)
        await expect(alice.locator("#contacts-title")).to_be_focused()  # (the list is empty: its card's heading)
        await expect(second.locator("#contacts li")).to_have_count(0)
        await expect(bob.locator("#contacts li")).to_have_count(0)


async def test_a_blocked_callers_call_leaves_the_callees_page_untouched(open_page: OpenPage) -> None:
    """bob blocks mallory (from her contact request); her call then never shows on bob's page: no incoming box, no
    ringtone, no notification, no line in his history; her page shows what a call to someone offline shows. A call
    from carol at the same time does ring, and does land in bob's history: bob's page would have shown mallory's."""
    with contacts_server() as server:
        bob = await sign_in(open_page, server, "bob")
        mallory = await sign_in(open_page, server, "mallory")
        carol = await sign_in(open_page, server, "carol")

        await add_contact(mallory, "bob")
        request = bob.locator('#contact-requests li[data-user="mallory"]')
        await request.get_by_role("button", name="Block mallory").click()
        await expect(bob.locator('#blocked li[data-user="mallory"]')).to_have_count(1)
        await expect(bob.locator("#blocked-count")).to_have_text("(1)")
        await expect(bob.locator("#contact-requests-box")).to_be_hidden()
        # mallory's page: bob is no longer among those online (nor anywhere as online).
        await expect(mallory.locator('#online button[data-peer="bob"]')).to_have_count(0)

        await bob.evaluate(FAKE_NOTIFICATIONS_HIDDEN_TAB)
        await bob.evaluate(WATCH_RINGING)
        blocked = await call_and_wait_for_the_end(mallory, "bob")
        offline = await call_and_wait_for_the_end(mallory, "nobody-uses-this-id")
        print(f"mallory calls bob, who blocked her: {dump(blocked)}\nmallory calls an unused id: {dump(offline)}")

        assert await bob.evaluate("window.__e2e.rang") == [], "mallory's call showed on bob's page"
        await expect(bob.locator("#incoming")).to_be_hidden()
        await expect(bob.locator("body")).to_have_attribute("data-call", "idle")

        # A control: carol's call does ring on the same page, and ends in bob's history.
        await carol.fill("#peer-id", "bob")
        await carol.click("#call")
        await expect(bob.locator("#incoming")).to_be_visible()
        await wait_until(lambda: bob.evaluate("window.__e2e.rang"), lambda signs: "ringtone" in signs, "the ringtone")
        shown = await bob.evaluate("window.__e2e.notifications.shown")
        assert [n["title"] for n in shown] == ["Incoming call from carol"], dump(shown)
        await bob.click("#reject")
        await expect(carol.locator("#call-status")).to_have_text("Rejected")
        await expect(bob.locator('#history li button[data-peer="carol"]')).to_have_count(1)
        await expect(bob.locator('#history li button[data-peer="mallory"]')).to_have_count(0)
        records = await history_records(server, "bob")
        assert [r["caller"] for r in records] == ["carol"], dump(records)
        await expect(bob.locator("#missed-count")).to_be_hidden()

        # Unblocked from the Blocked list: mallory's calls ring again.
        await bob.locator("#blocked-box summary").click()
        await bob.get_by_role("button", name="Unblock mallory").click()
        await expect(bob.locator("#blocked li")).to_have_count(0)
        await mallory.fill("#peer-id", "bob")
        await mallory.click("#call")
        await expect(bob.locator("#incoming")).to_contain_text("mallory")
        await bob.click("#reject")

        # What mallory's page showed of her call to bob while blocked: what a call to someone offline shows.
        assert blocked["status"] == offline["status"], (blocked, offline)
        assert blocked["state"] == offline["state"], (blocked, offline)
        assert blocked["message"] == offline["message"].replace("nobody-uses-this-id", "bob"), (blocked, offline)
        assert abs(float(blocked["seconds"]) - float(offline["seconds"])) <= 2, (blocked, offline)


async def test_do_not_disturb_never_rings_and_the_call_shows_as_silenced(open_page: OpenPage) -> None:
    """bob chooses "Nobody" under Who may ring me: the header says Do not disturb; alice's call never rings on his
    page, alice sees a call nobody answers, and bob's history lists it as silenced (not as a missed call)."""
    with contacts_server() as server:
        alice = await sign_in(open_page, server, "alice")
        bob = await sign_in(open_page, server, "bob")
        await expect(bob.locator("#dnd-indicator")).to_be_hidden()
        await expect(bob.get_by_role("radio", name=re.compile("^Server default"))).to_be_checked()

        await bob.get_by_role("radio", name="Nobody (do not disturb)").check()
        await expect(bob.locator("#dnd-indicator")).to_be_visible()
        await expect(bob.locator("#dnd-indicator")).to_have_text("Do not disturb")
        await expect(bob.locator("#ring-setting-now")).to_contain_text("no call rings")
        await expect(bob.locator("#my-status")).to_contain_text("do not disturb")
        # The setting is the server's: a second page of bob's shows it too.
        other = await sign_in(open_page, server, "bob")
        await expect(other.get_by_role("radio", name="Nobody (do not disturb)")).to_be_checked()
        await expect(other.locator("#dnd-indicator")).to_be_visible()

        for page in (bob, other):
            await page.evaluate(FAKE_NOTIFICATIONS_HIDDEN_TAB)
            await page.evaluate(WATCH_RINGING)
        ended = await call_and_wait_for_the_end(alice, "bob")
        print(f"alice calls bob (do not disturb): {dump(ended)}")
        assert ended["status"] == "No answer", dump(ended)
        assert float(ended["seconds"]) >= RING_TIMEOUT - 0.5, "the call ended before a call nobody answers would"
        for page in (bob, other):
            assert await page.evaluate("window.__e2e.rang") == [], "the call showed on a page of bob's"

        records = await history_records(server, "bob")
        assert [(r["caller"], r["outcome"], r.get("screened")) for r in records] == [("alice", "missed", "silenced")], (
            dump(records)
        )
        # It rang on neither page, yet both list it in Recent calls as it ends (`silenced-call`): no reload, no
        # return to the tab (both are hidden, as far as they know).
        for page in (other, bob):
            entry = page.locator('#history li[data-screened="silenced"]')
            await expect(entry).to_have_count(1)
        await expect(entry.locator(".what")).to_contain_text("Silenced")
        await expect(entry.locator("button")).to_contain_text("alice")
        await expect(entry).not_to_have_class("missed")
        await expect(bob.locator("#missed-count")).to_be_hidden()
        SCREENS.mkdir(parents=True, exist_ok=True)
        await bob.locator("#history-card").screenshot(path=SCREENS / "history-silenced-light.png")

        # Back to the server's default: the next call rings.
        await bob.get_by_role("radio", name="Server default (Everyone)").check()
        await expect(bob.locator("#dnd-indicator")).to_be_hidden()
        await alice.fill("#peer-id", "bob")
        await alice.click("#call")
        await expect(bob.locator("#incoming")).to_contain_text("alice")
        await bob.click("#reject")


async def test_a_picked_ring_setting_stays_chosen_until_the_server_answers(open_page: OpenPage) -> None:
    """bob picks "Nobody" while his `settings` frame is held on its way: the choice stays checked even when the page
    redraws meanwhile (carol comes online), and "Do not disturb" shows only once the server has it."""
    with contacts_server() as server:
        bob = await open_page(server.http, "/?id=bob", "bob")
        held: list[str] = []
        upstream: list[WebSocketRoute] = []

        def route(ws: WebSocketRoute) -> None:
            server_side = ws.connect_to_server()
            upstream.append(server_side)

            def from_page(message: str | bytes) -> None:
                if isinstance(message, str) and json.loads(message).get("type") == "settings":
                    held.append(message)
                else:
                    server_side.send(message)

            ws.on_message(from_page)

        await bob.route_web_socket(re.compile(r"/ws"), route)
        await connect(bob)
        await expect(bob.locator("#contact-add")).to_be_enabled()
        nobody = bob.get_by_role("radio", name="Nobody (do not disturb)")
        await nobody.check()

        async def how_many_held() -> int:
            return len(held)

        await wait_until(how_many_held, lambda n: n == 1, "the settings frame to be held")
        await sign_in(open_page, server, "carol")
        await expect(bob.locator('#online li[data-peer="carol"]')).to_have_count(1)  # bob's page has redrawn
        await expect(nobody).to_be_checked()
        await expect(bob.locator("#dnd-indicator")).to_be_hidden()  # not in force yet

        upstream[-1].send(held.pop())
        await expect(bob.locator("#dnd-indicator")).to_be_visible()
        await expect(nobody).to_be_checked()


async def test_more_online_than_welcome_lists_are_found_by_searching(open_page: OpenPage) -> None:
    """On a server that lists everyone online, with more online than `welcome` carries (200), the People card offers a
    search: it finds those whose id starts with what was typed, pages on with "Show more", and adds one as a contact.
    """
    crowded = {"PEERCALL_MAX_CONNECTIONS_PER_IP": "1000", "PEERCALL_CONNECTION_RATE": "1000"}
    with contacts_server(**crowded) as server:
        crowd = [await websockets.connect(f"{server.ws}?id=user{n:03d}", open_timeout=10 * SCALE) for n in range(205)]
        try:
            # Each of them has joined (its welcome came) before alice does, so her welcome is the one that lists 200 of
            # them; anyone joining after her would come as a presence frame and be listed too.
            for ws in crowd:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10 * SCALE))["type"] == "welcome"
            alice = await sign_in(open_page, server, "alice")
            await expect(alice.locator("#directory-more")).to_be_visible()
            await expect(alice.locator("#online li")).to_have_count(200)
            await alice.fill("#directory-q", "user1")
            await alice.click("#directory-search")
            found = alice.locator("#directory-results li")
            await expect(found).to_have_count(50)
            await expect(alice.locator("#directory-status")).to_have_text(
                "50 online so far whose id starts with “user1”."
            )
            await alice.click("#directory-next")
            await expect(found).to_have_count(100)
            await expect(alice.locator("#directory-next")).to_be_hidden()
            await expect(alice.locator("#directory-status")).to_have_text("100 online whose id starts with “user1”.")
            await expect(found.first).to_have_attribute("data-user", "user100")
            await expect(found.last).to_have_attribute("data-user", "user199")
            await alice.get_by_role("button", name="Add user150 to your contacts").click()
            await expect(alice.locator('#contact-outgoing li[data-user="user150"]')).to_be_visible()
            await alice.fill("#directory-q", "nobody")
            await alice.press("#directory-q", "Enter")
            await expect(alice.locator("#directory-status")).to_have_text(
                "No one online whose id starts with “nobody”."
            )
            await expect(found).to_have_count(0)
        finally:
            for ws in crowd:
                await ws.close()


async def test_contacts_panel_is_accessible_and_its_screens_are_kept(open_page: OpenPage) -> None:
    """The contacts panel with a contact online (named), one offline, a request each way, a user blocked, and do not
    disturb: axe-core finds nothing serious in light or dark mode; screenshots at desktop and phone size."""
    with contacts_server(PEERCALL_DIRECTORY="contacts") as server:
        alice = await sign_in(open_page, server, "alice")
        bob = await sign_in(open_page, server, "bob")
        carol = await sign_in(open_page, server, "carol")
        dave = await sign_in(open_page, server, "dave")
        for friend, page in (("bob", bob), ("carol", carol)):
            await add_contact(alice, friend, "Bob (work)" if friend == "bob" else "")
            await page.locator('#contact-requests li[data-user="alice"]').get_by_role("button", name="Accept").click()
            await expect(contact(alice, friend)).to_have_attribute("data-status", "online")
        await carol.click("#disconnect")
        await expect(contact(alice, "carol")).to_have_attribute("data-status", "offline")
        mallory = await sign_in(open_page, server, "mallory")
        await add_contact(mallory, "alice")
        await alice.locator('#contact-requests li[data-user="mallory"]').get_by_role("button", name="Block").click()
        await expect(alice.locator('#blocked li[data-user="mallory"]')).to_have_count(1)
        await add_contact(dave, "alice")
        await add_contact(alice, "erin")
        await alice.get_by_role("radio", name="Nobody (do not disturb)").check()
        await expect(alice.locator('#contact-requests li[data-user="dave"]')).to_be_visible()
        await expect(alice.locator("#dnd-indicator")).to_be_visible()
        await alice.locator("#blocked-box summary").click()
        await contact(alice, "bob").get_by_role("button", name="More for Bob (work)").click()
        await alice.keyboard.press("Escape")
        await expect(contact(alice, "bob").locator(".contact-options")).to_be_hidden()
        await expect(contact(alice, "bob").get_by_role("button", name="More for Bob (work)")).to_be_focused()

        await check_accessibility(alice, "contacts")
        paths = await shoot(alice, "contacts")
        for scheme in ("light", "dark"):  # the card alone, as docs/screenshots/ shows it
            await alice.emulate_media(color_scheme=scheme)
            path = SCREENS / f"contacts-card-{scheme}.png"
            await alice.locator("#contacts-card").screenshot(path=path, animations="disabled")
            paths.append(path)
        await alice.emulate_media(color_scheme="light")
        print("screenshots:", *paths, sep="\n")
