"""Display names in the browser (token mode, the tokens' `name` claim): each of two people sees the other's name
in People, the incoming call, the call and the history, with the id beside it; a name that looks like markup is
shown as text."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest
from playwright.async_api import Page, expect

from tests.conftest import OPEN_DOORS, run_server

from .conftest import OpenPage
from .steps import connect

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
