"""Names in the browser. Display names (token mode, the tokens' `name` claim): each of two people sees the other's
name in People, the incoming call, the call and the history, with the id beside it; a name that looks like markup is
shown as text. The longest name an id may be (64 characters, none of them a place to break a line) stays inside
its card, on a desktop and on a phone."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest
from playwright.async_api import Page, expect

from tests.conftest import OPEN_DOORS, ServerProcess, run_server

from .conftest import OpenPage, artifacts_dir, dump
from .steps import SIZES, connect

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

SECRET = "e2e-names-secret-0123456789abcdef"
XSS = "<img src=x onerror=window.__xss=1>B"


def named_token(user: str, name: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "exp": now + 600, "name": name}, SECRET, algorithm="HS256")


async def no_markup(page: Page) -> None:
    """Nothing of the name became an element, and nothing ran."""
    shown = "#me img, #online img, #history img, #incoming img"
    assert await page.evaluate(f"document.querySelectorAll('{shown}').length") == 0
    assert await page.evaluate("window.__xss") is None


async def test_two_people_see_each_others_names(open_page: OpenPage, uid: Callable[[str], str]) -> None:
    """alice ("Alice B") and bob (a name with markup) see their own and each other's names in People (with the id
    beside), bob's incoming call says "Alice B", both see the name during the call and in the history; the markup
    is text."""
    alice_id, bob_id = uid("alice"), uid("bob")
    with run_server(PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET=SECRET, **OPEN_DOORS) as server:
        alice = await open_page(server.http, f"/#token={named_token(alice_id, 'Alice B')}", "alice")
        bob = await open_page(server.http, f"/#token={named_token(bob_id, XSS)}", "bob")
        await connect(alice)
        await connect(bob)
        # Each sees their own name as the others see it, with the id in its title.
        await expect(alice.locator("#my-name")).to_have_text("Alice B")
        await expect(alice.locator("#my-name")).to_have_attribute("title", f"@{alice_id}")
        await expect(bob.locator("#my-name")).to_have_text(XSS)

        bob_at_alice = alice.locator(f'#online li[data-peer="{bob_id}"]')
        await expect(bob_at_alice.locator(".name")).to_have_text(XSS)
        await expect(bob_at_alice.locator(".handle")).to_have_text(f"@{bob_id}")
        alice_at_bob = bob.locator(f'#online li[data-peer="{alice_id}"]')
        await expect(alice_at_bob.locator(".name")).to_have_text("Alice B")
        await expect(alice_at_bob.locator(".handle")).to_have_text(f"@{alice_id}")

        await alice.click(f'#online button[data-peer="{bob_id}"]')
        await expect(bob.locator("#incoming")).to_be_visible()
        await expect(bob.locator("#incoming-from")).to_have_text("Alice B")
        assert (await bob.title()).startswith("Incoming call from Alice B ")
        await bob.click("#accept")
        await expect(alice.locator("#call-status")).to_have_text("Connected")
        await expect(alice.locator("#call-peer")).to_have_text(f"with {XSS}")
        await expect(bob.locator("#call-peer")).to_have_text("with Alice B")
        await alice.click("#hangup")
        await expect(bob.locator("#call-status")).to_have_text("Call Ended")

        await expect(bob.locator("#history li .who")).to_have_text(["Alice B"])
        await expect(alice.locator("#history li .who")).to_have_text([XSS])
        await expect(bob.locator("#history li button")).to_have_attribute("data-peer", alice_id)
        for page in (alice, bob):
            await no_markup(page)


# In a page: what of the card `selector` reaches past its right edge: the card's content when it is wider than the
# card, and each visible element inside it whose box ends right of the card's content box.
OVERFLOWING = """
(selector) => {
  const card = document.querySelector(selector);
  const right = card.getBoundingClientRect().right - parseFloat(getComputedStyle(card).paddingRight) + 0.5;
  const out = [];
  if (card.scrollWidth > card.clientWidth) {
    out.push({ el: selector, scrollWidth: card.scrollWidth, clientWidth: card.clientWidth });
  }
  for (const el of card.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || el.closest(".visually-hidden")) continue;
    if (r.right > right) {
      out.push({ el: el.id || el.className || el.tagName, text: el.textContent.trim().slice(0, 80),
                 right: Math.round(r.right), cardRight: Math.round(right) });
    }
  }
  return out;
}
"""


async def assert_inside(page: Page, selector: str, what: str) -> None:
    """Nothing of the card `selector` leaves it, at desktop and at phone size; a screenshot of each."""
    for size_name, size in SIZES.items():
        await page.set_viewport_size(size)
        overflowing = await page.evaluate(OVERFLOWING, selector)
        await page.locator(selector).screenshot(path=artifacts_dir() / f"long-name-{what}-{size_name}.png")
        assert overflowing == [], f"{what}, {size_name}: these leave {selector}:\n{dump(overflowing)}"


async def test_the_longest_name_stays_inside_its_card(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """A 64-character name without a place to break: its owner still reads "(you)" beside it; the other side's
    call card ("with …", "… hung up.", the summary, "last call: …") keeps it inside, and the timer stays on the
    status line on a desktop."""
    tail = uid("").replace("-", "_")
    long = "w" * (64 - len(tail)) + tail
    bob = uid("bob")
    alice_page = await open_page(server.http, "/", "alice")
    bob_page = await open_page(server.http, "/", "bob")
    for page, name in ((alice_page, long), (bob_page, bob)):
        await page.fill("#my-id", name)
        await connect(page)

    await expect(alice_page.locator("#my-you")).to_be_visible()
    await assert_inside(alice_page, "#people-card", "own-name")
    for size in SIZES.values():
        await alice_page.set_viewport_size(size)
        you = await alice_page.locator("#my-you").bounding_box()
        me = await alice_page.locator("#me").bounding_box()
        assert you and me and you["x"] + you["width"] <= me["x"] + me["width"], f"(you) is cut off: {you}, {me}"

    await alice_page.fill("#peer-id", bob)
    await alice_page.click("#call")
    await expect(bob_page.locator("#incoming")).to_be_visible()
    await assert_inside(bob_page, "#call-card", "incoming")
    await bob_page.click("#accept")
    await expect(bob_page.locator("#call-status")).to_have_text("Connected")
    await expect(bob_page.locator("#call-peer")).to_have_text(f"with {long}")
    await expect(bob_page.locator("#call-timer")).to_be_visible()
    await assert_inside(bob_page, "#call-card", "in-call")
    await bob_page.set_viewport_size(SIZES["desktop"])
    status = await bob_page.locator("#call-status").bounding_box()
    timer = await bob_page.locator("#call-timer").bounding_box()
    assert status and timer and timer["y"] < status["y"] + status["height"], f"the timer left the status line: {timer}"

    await alice_page.click("#hangup")
    await expect(bob_page.locator("#message")).to_have_text(f"{long} hung up.")
    await expect(bob_page.locator("#call-summary")).to_contain_text(f"Call with {long}:")
    await expect(bob_page.locator("#call-peer")).to_have_text(f"last call: {long}")
    await assert_inside(bob_page, "#call-card", "ended")
    await expect(bob_page.locator("#history li .who")).to_have_text([long])
    await assert_inside(bob_page, "#history-card", "history")
