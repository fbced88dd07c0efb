"""Accounts mode from the page: sign in, invite someone, sign up from the link, call each other while the page
renews its short-lived token on the live socket, and lose the page's sign-in when an administrator disables it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import OPEN_DOORS, run_server

from .conftest import OpenPage
from .steps import assert_audio_flows, check_accessibility, shoot, wait_until
from .test_passkeys import setup_token, with_authenticator

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

PASSWORD = "correct horse battery"
TOKEN_TTL = 10  # the smallest PEERCALL_ACCOUNTS_TOKEN_TTL allowed: the page renews every 5 s
COUNT_RENEWALS = """() => {
  window.__renewals = 0;
  window.peercall.signaling.addEventListener("auth-renewed", () => { window.__renewals += 1; });
}"""


def add_user(db: Path, user: str, name: str, *, admin: bool = False) -> None:
    """`peercall user add USER [--admin]`, the way an operator makes the first administrator."""
    done = subprocess.run(
        [sys.executable, "-m", "peercall", "user", "add", user, "--name", name, *(["--admin"] if admin else [])],
        input=f"{PASSWORD}\n",
        env={"PEERCALL_AUTH": "accounts", "PEERCALL_DATABASE_URL": f"sqlite:///{db}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def sign_in(page: Page, user: str, password: str = PASSWORD) -> None:
    await expect(page.locator("#signin-form")).to_be_visible()
    await page.fill("#signin-id", user)
    await page.fill("#signin-password", password)
    await page.click("#signin-submit")


def accounts_server(db: Path) -> Any:
    return run_server(
        PEERCALL_AUTH="accounts",
        PEERCALL_DATABASE_URL=f"sqlite:///{db}",
        PEERCALL_ACCOUNTS_TOKEN_TTL=str(TOKEN_TTL),
        PEERCALL_AUTH_EXPIRY="enforce",
        **OPEN_DOORS,
    )


async def call(caller: Page, callee: Page, callee_id: str) -> None:
    await caller.fill("#peer-id", callee_id)
    await caller.click("#call")
    await expect(callee.locator("#incoming")).to_be_visible()
    await callee.click("#accept")
    await expect(caller.locator("#call-status")).to_have_text("Connected")
    await expect(callee.locator("#call-status")).to_have_text("Connected")


async def sockets(page: Page) -> int:
    count: int = await page.evaluate("window.__e2e.sockets.length")
    return count


async def renewals(page: Page) -> Any:
    return await page.evaluate("window.__renewals")


async def test_invite_sign_up_call_across_renewals_then_disable(open_page: OpenPage, tmp_path: Path) -> None:
    """An administrator invites bob from the page; bob signs up from the link and in again; they talk through two
    token renewals (expiry enforced) on the same sockets; disabled, bob's page is back at the sign-in screen."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "ada", "Ada Admin", admin=True)
    with accounts_server(db) as server:
        # The administrator: the sign-in screen, a wrong password, then the right one.
        ada = await open_page(server.http, "/", "ada")
        await expect(ada.locator("#signin-screen")).to_be_visible()
        await expect(ada.locator("#people-card")).to_be_hidden()
        # The server takes passkeys, but a page opened by IP address cannot use one (a passkey is for a domain name).
        await expect(ada.locator("#passkey-signin")).to_be_hidden()
        await check_accessibility(ada, "accounts sign-in")
        await shoot(ada, "accounts-signin")
        await sign_in(ada, "ada", "not the password")
        await expect(ada.locator("#signin-error")).to_have_text("Wrong user id or password.")
        await shoot(ada, "accounts-signin-failed", keep_focus=True)
        await sign_in(ada, "ada")
        await expect(ada.locator("#account-name")).to_have_text("Ada Admin")
        await expect(ada.locator("#my-name")).to_have_text("Ada Admin")  # People shows her as others see her
        await expect(ada.locator("#account-admin")).to_be_visible()
        await expect(ada.locator("#server-status")).to_have_text("Connected")
        # people who sign in know each other by name: "Who to call" takes a contact's, or a user id
        await expect(ada.locator("#peer-id")).to_have_attribute("placeholder", "a contact's name, or a user id")

        # An invite link, made from the page.
        await ada.click("#admin-box summary")
        await expect(ada.locator('#users li[data-user="ada"]')).to_contain_text("Ada Admin")
        await ada.click("#invite-create")
        await expect(ada.locator("#invite-link")).to_have_value(
            re.compile(rf"^{re.escape(server.http)}/#invite=[\w-]+$")
        )
        await expect(ada.locator("#invite-status")).to_contain_text("Invite link made")
        link = await ada.locator("#invite-link").input_value()

        # The invitee signs up from it: the invite leaves the address bar; the display name is text, not markup.
        bob = await open_page(server.http, link.removeprefix(server.http), "bob")
        await expect(bob.locator("#signup-form")).to_be_visible()
        await expect(bob).to_have_url(re.compile(r"^[^#]*/$"))
        await check_accessibility(bob, "accounts sign-up")
        await bob.fill("#signup-id", "bob")
        await bob.fill("#signup-name", "<b>Bob</b> Builder")
        await bob.fill("#signup-password", "short")
        await bob.click("#signup-submit")
        await expect(bob.locator("#signup-error")).to_have_text("A password is at least 8 characters.")
        await bob.fill("#signup-password", "password1")  # the server's word: why it is refused
        await bob.click("#signup-submit")
        await expect(bob.locator("#signup-error")).to_have_text(
            "That password is too easy to guess (this is a very common password): a few uncommon words make a strong"
            " one."
        )
        await bob.fill("#signup-password", PASSWORD)
        await shoot(bob, "accounts-signup")
        await bob.click("#signup-submit")
        await expect(bob.locator("#account-name")).to_have_text("<b>Bob</b> Builder")
        assert await bob.locator("#account-name b").count() == 0
        await expect(bob.locator("#admin-box")).to_be_hidden()
        await expect(bob.locator("#server-status")).to_have_text("Connected")
        # The link was used: a second sign-up from it is refused, in words.
        again = await open_page(server.http, link.removeprefix(server.http), "again")
        await again.fill("#signup-id", "mallory")
        await again.fill("#signup-name", "Mallory")
        await again.fill("#signup-password", PASSWORD)
        await again.click("#signup-submit")
        await expect(again.locator("#signup-error")).to_contain_text("This invite link is not valid")

        # Bob signs out, and in again with his password.
        await bob.click("#sign-out")
        await expect(bob.locator("#signin-screen")).to_be_visible()
        await expect(bob.locator("#server-status")).to_have_text("Disconnected")
        await sign_in(bob, "bob")
        await expect(bob.locator("#server-status")).to_have_text("Connected")

        # Ada calls bob; the call lasts across two renewals of each page's token, with no new socket.
        await call(ada, bob, "bob")
        for page in (ada, bob):
            await page.evaluate(COUNT_RENEWALS)
        before = {"ada": await sockets(ada), "bob": await sockets(bob)}
        started = time.monotonic()
        for name, page in (("ada", ada), ("bob", bob)):
            await wait_until(lambda page=page: renewals(page), lambda n: n >= 2, f"{name}'s page to renew twice", 30)
        # Past the first tokens' enforced expiry (their exp plus 5 s): without renewal the sockets would be closed.
        await ada.wait_for_timeout(max(0.0, TOKEN_TTL + 6 - (time.monotonic() - started)) * 1000)
        await assert_audio_flows(ada, "ada")
        await assert_audio_flows(bob, "bob")
        assert {"ada": await sockets(ada), "bob": await sockets(bob)} == before, "a page reconnected"
        await expect(ada.locator("#call-status")).to_have_text("Connected")
        await expect(bob.locator("#call-status")).to_have_text("Connected")
        await expect(ada.locator("#server-status")).to_have_text("Connected")

        # My sign-ins: this browser, with a Sign out button.
        await bob.click("#sessions-box summary")
        await expect(bob.locator("#sessions li")).to_have_count(1)  # the sign-up's sign-in ended with Sign out
        await expect(bob.locator("#sessions li")).to_contain_text("(this browser)")

        # The administrator disables bob: his page is back at the sign-in screen within seconds, saying why.
        await ada.click("#admin-box summary")  # closed, and open again: the list now has bob
        await ada.click("#admin-box summary")
        await expect(ada.locator('#users li[data-user="bob"]')).to_contain_text("<b>Bob</b> Builder")
        await check_accessibility(ada, "accounts administration")
        await shoot(ada, "accounts-admin")
        await ada.click('#users button[aria-label="Disable bob"]')
        await expect(ada.locator('#users li[data-user="bob"]')).to_contain_text("disabled")
        await expect(bob.locator("#signin-screen")).to_be_visible(timeout=5000)
        await expect(bob.locator("#signin-error")).to_contain_text("Your sign-in has ended")
        await expect(bob.locator("#server-status")).to_have_text("Disconnected")
        await shoot(bob, "accounts-signed-out", keep_focus=True)
        # Disabled, the right password is refused with its own message.
        await sign_in(bob, "bob")
        await expect(bob.locator("#signin-error")).to_have_text("This account is disabled: ask an administrator.")


async def test_a_missed_renewal_reconnects_with_a_fresh_token_and_the_call_resumes(
    open_page: OpenPage, tmp_path: Path
) -> None:
    """Bob's page cannot get a fresh token in time: the server closes his socket (4401, expiry enforced); once the
    token API answers again his page gets one, reconnects, and the call resumes with audio, still signed in."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "ada", "Ada", admin=True)
    add_user(db, "bob", "Bob")
    with accounts_server(db) as server:
        ada = await open_page(server.http, "/", "ada")
        bob = await open_page(server.http, "/", "bob")
        for page, user in ((ada, "ada"), (bob, "bob")):
            await sign_in(page, user)
            await expect(page.locator("#server-status")).to_have_text("Connected")
        await call(ada, bob, "bob")
        before = await sockets(bob)

        await bob.route("**/api/session/token", lambda route: route.abort())
        await wait_until(
            lambda: bob.evaluate("window.peercall.signaling.state"),
            lambda state: state == "reconnecting",
            "the server to close bob's socket when his token expired unrenewed",
            timeout=TOKEN_TTL + 10,
        )
        await bob.unroute("**/api/session/token")
        await expect(bob.locator("#server-status")).to_have_text("Connected", timeout=15_000)
        assert await sockets(bob) > before
        await expect(bob.locator("#account-card")).to_be_visible()  # still signed in
        await expect(bob.locator("#call-status")).to_have_text("Connected")
        await expect(ada.locator("#call-status")).to_have_text("Connected")
        await assert_audio_flows(bob, "bob")
        await assert_audio_flows(ada, "ada")


async def test_sign_ins_end_from_another_browser_and_the_throttle_says_when_to_retry(
    open_page: OpenPage, tmp_path: Path
) -> None:
    """ "My sign-ins" lists both browsers; "Sign out" on the other one sends it back to the sign-in screen at its
    next renewal; "Sign out everywhere" at once. Failed sign-ins are throttled with the wait in words."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "carol", "Carol")
    with accounts_server(db) as server:
        laptop = await open_page(server.http, "/", "laptop")
        phone = await open_page(server.http, "/", "phone")
        for page in (laptop, phone):
            await sign_in(page, "carol")
            await expect(page.locator("#server-status")).to_have_text("Connected")

        await laptop.click("#sessions-box summary")
        await expect(laptop.locator("#sessions li")).to_have_count(2)
        await expect(laptop.locator("#sessions li").first).to_contain_text("(this browser)")  # the last used
        other = laptop.locator("#sessions li", has_not_text="(this browser)")
        await other.get_by_role("button", name=re.compile(r"^Sign out Chromium")).click()
        await expect(laptop.locator("#sessions li")).to_have_count(1)
        await expect(laptop.locator("#sessions-status")).to_have_text(
            re.compile(r"^Signed out Chromium on \w+, last used ")
        )
        await expect(phone.locator("#signin-screen")).to_be_visible(timeout=(TOKEN_TTL + 2) * 1000)
        await expect(phone.locator("#signin-error")).to_contain_text("Your sign-in has ended")
        await expect(laptop.locator("#server-status")).to_have_text("Connected")  # this one goes on

        await sign_in(phone, "carol")
        await expect(phone.locator("#server-status")).to_have_text("Connected")
        await phone.click("#sign-out-everywhere")
        for page in (laptop, phone):
            await expect(page.locator("#signin-screen")).to_be_visible(timeout=5000)
            await expect(page.locator("#server-status")).to_have_text("Disconnected")

        for _ in range(5):
            await sign_in(laptop, "carol", "wrong password")
            await expect(laptop.locator("#signin-error")).to_have_text("Wrong user id or password.")
        await sign_in(laptop, "carol")  # even the right password must wait now
        await expect(laptop.locator("#signin-error")).to_have_text(
            re.compile(r"^Too many failed attempts: try again in \d+ s\.$")
        )


async def test_renewal_comes_a_minute_early_or_at_half_a_short_lifetime(open_page: OpenPage, tmp_path: Path) -> None:
    """When the page renews a token expiring in 300 s, 100 s, 10 s, or already expired (ms from now)."""
    with accounts_server(tmp_path / "accounts.sqlite3") as server:
        page = await open_page(server.http, "/", "page")
        delays = await page.evaluate(
            """async () => {
              const { renewDelay } = await import("./js/signaling.js");
              const now = 1_700_000_000_000;
              return [300, 100, 10, -5].map((left) => renewDelay(now / 1000 + left, now));
            }"""
        )
        assert delays == [240_000, 50_000, 5_000, 1_000]


async def test_the_done_when_of_accounts_from_a_fresh_server(open_page: OpenPage, tmp_path: Path) -> None:
    """Issue 16's "done when", with accounts mode's defaults (contacts only): the first administrator creates
    their account from the set-up link with a passkey and invites bob from the page; bob signs up from the link with
    a password, and each sees the other online (the invite made them contacts); the administrator signs in again
    with the passkey in a fresh browser; they call each other and stay in the call with audio across three token
    lifetimes (expiry enforced) on the same sockets, and a hang-up still reaches the other side; disabled from the
    administration card, bob's page is back at the sign-in screen within the bound (sockets closed at once)."""
    with run_server(
        PEERCALL_AUTH="accounts",
        PEERCALL_DATABASE_URL=f"sqlite:///{tmp_path / 'accounts.sqlite3'}",
        PEERCALL_ACCOUNTS_TOKEN_TTL=str(TOKEN_TTL),
        PEERCALL_AUTH_EXPIRY="enforce",
    ) as server:
        base = f"http://localhost:{server.port}"  # a passkey needs a domain name, not 127.0.0.1
        ada = await open_page(base, "/healthz", "ada")
        cdp, authenticator = await with_authenticator(ada)
        await ada.goto(f"{base}/#invite={setup_token(server)}")
        await ada.fill("#signup-id", "ada")
        await ada.fill("#signup-name", "Ada Admin")
        await ada.click("#passkey-signup")
        await expect(ada.locator("#account-admin")).to_be_visible()
        await ada.click("#admin-box summary")
        await ada.click("#invite-create")
        await expect(ada.locator("#invite-link")).to_have_value(re.compile(r"#invite=[\w-]+$"))
        link = await ada.locator("#invite-link").input_value()

        bob = await open_page(base, link.removeprefix(base), "bob")
        await bob.fill("#signup-id", "bob")
        await bob.fill("#signup-name", "Bob Builder")
        await bob.fill("#signup-password", PASSWORD)
        await bob.click("#signup-submit")
        await expect(bob.locator("#server-status")).to_have_text("Connected")
        await expect(bob.locator('#contacts li[data-contact="ada"] .status-text')).to_have_text("Online")
        await expect(ada.locator('#contacts li[data-contact="bob"] .status-text')).to_have_text("Online")

        # Ada signs out here, and in with her passkey in a fresh browser (its authenticator holds her passkey).
        (passkey,) = (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator}))["credentials"]
        await ada.click("#sign-out")
        await expect(ada.locator("#signin-screen")).to_be_visible()
        laptop = await open_page(base, "/", "ada-laptop")
        cdp2, authenticator2 = await with_authenticator(laptop)
        await cdp2.send("WebAuthn.addCredential", {"authenticatorId": authenticator2, "credential": passkey})
        await laptop.click("#passkey-signin")
        await expect(laptop.locator("#account-name")).to_have_text("Ada Admin")
        await expect(laptop.locator("#server-status")).to_have_text("Connected")
        await expect(laptop.locator('#contacts li[data-contact="bob"] .status-text')).to_have_text("Online")

        await call(laptop, bob, "bob")
        for page in (laptop, bob):
            await page.evaluate(COUNT_RENEWALS)
        before = {"ada": await sockets(laptop), "bob": await sockets(bob)}
        started = time.monotonic()
        # A renewal every half lifetime: six of them span three lifetimes, past each token's enforced expiry.
        for name, page in (("ada", laptop), ("bob", bob)):
            await wait_until(lambda page=page: renewals(page), lambda n: n >= 6, f"{name}'s 6 renewals", 4 * TOKEN_TTL)
        assert time.monotonic() - started >= 2.5 * TOKEN_TTL
        assert {"ada": await sockets(laptop), "bob": await sockets(bob)} == before, "a page reconnected"
        await assert_audio_flows(laptop, "ada")
        await assert_audio_flows(bob, "bob")
        await bob.click("#hangup")
        await expect(laptop.locator("#call-status")).to_have_text("Call Ended")

        await laptop.click("#admin-box summary")
        await laptop.click('#users button[aria-label="Disable bob"]')
        disabled = time.monotonic()
        await expect(bob.locator("#signin-screen")).to_be_visible(timeout=5000)
        await expect(bob.locator("#signin-error")).to_contain_text("Your sign-in has ended")
        assert time.monotonic() - disabled < 3, "bob's page learnt it was signed out only after a token renewal"
        await expect(laptop.locator('#contacts li[data-contact="bob"] .status-text')).not_to_have_text("Online")


async def make_invite(page: Page) -> str:
    """An invite link, made from the administrator's page (Administration open)."""
    await page.click("#invite-create")
    await expect(page.locator("#invite-status")).to_contain_text("Invite link made")
    return await page.locator("#invite-link").input_value()


async def test_an_invite_opened_where_someone_is_signed_in_switches_nobody(open_page: OpenPage, tmp_path: Path) -> None:
    """An invite opened in a tab of ann's browser says it is for someone new and leaves her signed in, also when
    pasted into the address bar of her open page; signed out from there, it is the sign-up form (its errors speak
    of a user id, the passkey way's too), and ann's first tab then says that another tab signed in as bob."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "ann", "Ann Admin", admin=True)
    with accounts_server(db) as server:
        base = f"http://localhost:{server.port}"  # a passkey needs a domain name, not 127.0.0.1
        ann = await open_page(base, "/", "ann")
        await sign_in(ann, "ann")
        await expect(ann.locator("#server-status")).to_have_text("Connected")
        await ann.click("#admin-box summary")
        link = await make_invite(ann)

        tab = await ann.context.new_page()
        await tab.goto(link)
        taken = tab.locator("#invite-taken")
        await expect(taken).to_be_visible()
        await expect(taken).to_contain_text(
            "You are signed in as Ann Admin. This invite is for someone new: send them the link, or sign out to use "
            "it yourself."
        )
        await expect(tab.locator("#signup-form")).to_be_hidden()
        await expect(tab).to_have_url(re.compile(r"^[^#]*/$"))
        await check_accessibility(tab, "accounts invite while signed in")
        await shoot(tab, "accounts-invite-signed-in")
        await tab.click("#invite-taken-continue")
        await expect(tab.locator("#account-name")).to_have_text("Ann Admin")
        await expect(tab.locator("#server-status")).to_have_text("Connected")

        # Pasted into the address bar of the open page (only the `#…` changes): read at once, no reload.
        second = await make_invite(ann)
        await tab.evaluate("(hash) => { location.hash = hash; }", second.partition("#")[2])
        await expect(taken).to_be_visible()
        await expect(tab).to_have_url(re.compile(r"^[^#]*/$"))
        # Signed out from there, the invite is this browser's to use: the sign-up form, whose errors name the user id.
        # Ann's first tab, whose sign-in that was, is closed at once (4401 signed out) and says so.
        await tab.click("#invite-taken-sign-out")
        await expect(tab.locator("#signup-form")).to_be_visible()
        await expect(ann.locator("#signin-form")).to_be_visible()
        await expect(ann.locator("#signin-error")).to_contain_text("Your sign-in has ended")
        await tab.click("#signup-submit")
        await expect(tab.locator("#signup-error")).to_have_text(
            re.compile(r"^Please enter a user id: 1.64 characters: .* \(no spaces or accents\)\.$")
        )
        await tab.click("#passkey-signup")  # the passkey way checks the form on the page the same way
        await expect(tab.locator("#signup-error")).to_contain_text("Please enter a user id:")
        await tab.fill("#signup-id", "bo b")
        await tab.click("#signup-submit")
        await expect(tab.locator("#signup-error")).to_contain_text(
            "“bo b” is not a valid user id (spaces not allowed)."
        )
        await tab.fill("#signup-id", "bob")
        await tab.fill("#signup-name", "Bob Builder")
        await tab.fill("#signup-password", PASSWORD)
        await tab.click("#signup-submit")
        await expect(tab.locator("#account-name")).to_have_text("Bob Builder")
        # Ann's first tab, at the sign-in screen, follows the browser's new sign-in.
        await expect(ann.locator("#account-name")).to_have_text("Bob Builder")


async def test_a_pasted_invite_is_read_at_once_and_passkeys_speak_plainly(open_page: OpenPage, tmp_path: Path) -> None:
    """An invite pasted into the address bar of a page open at the sign-in screen shows the sign-up form at once;
    the new user appears in the administrator's open Users list when she looks again; a new passkey is named after
    the browser, and a device with none for the site says so in a sentence."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "ann", "Ann Admin", admin=True)
    with accounts_server(db) as server:
        base = f"http://localhost:{server.port}"  # a passkey needs a domain name, not 127.0.0.1
        ann = await open_page(base, "/", "ann")
        cdp, authenticator = await with_authenticator(ann)
        await sign_in(ann, "ann")
        await expect(ann.locator("#server-status")).to_have_text("Connected")
        await ann.click("#admin-box summary")
        await expect(ann.locator("#users li")).to_have_count(1)
        link = await make_invite(ann)

        carol = await open_page(base, "/", "carol")
        await with_authenticator(carol)
        await expect(carol.locator("#signin-form")).to_be_visible()
        await carol.evaluate("(hash) => { location.hash = hash; }", link.partition("#")[2])
        await expect(carol.locator("#signup-form")).to_be_visible()
        await expect(carol).to_have_url(re.compile(r"^[^#]*/$"))
        await carol.fill("#signup-id", "carol")
        await carol.fill("#signup-name", "Carol")
        await carol.fill("#signup-password", PASSWORD)
        await carol.click("#signup-submit")
        await expect(carol.locator("#account-name")).to_have_text("Carol")
        # Ann's open Users list shows carol once her page is looked at again, without closing and opening it.
        await ann.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        await expect(ann.locator('#users li[data-user="carol"]')).to_contain_text("Carol")

        await ann.click("#passkey-add")
        brand = await ann.evaluate("async () => (await import('/js/account.js')).thisBrowser()")
        assert brand and brand != "Passkey" and " on " in brand, brand
        await expect(ann.locator("#passkey-status")).to_have_text(
            f"Passkey “{brand}” added: you can sign in with it on this device."
        )
        await ann.click("#methods-box summary")
        await expect(ann.locator("#methods li")).to_have_count(2)
        await expect(ann.locator("#methods li").nth(1)).to_contain_text(re.compile(rf"^{re.escape(brand)}Passkey · "))
        await ann.click("#passkey-add")  # the same device again
        await expect(ann.locator("#passkey-status")).to_have_text(
            "This device has one of your passkeys already: you can sign in with it."
        )
        assert len((await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator}))["credentials"]) == 1
        await shoot(ann, "accounts-passkey-named")

        await carol.click("#sign-out")
        await carol.click("#passkey-signin")  # her device has no passkey for the site
        await expect(carol.locator("#signin-error")).to_have_text(
            "No passkey was used: none is saved for this site on this device, or the request was cancelled."
        )


async def test_on_a_phone_the_account_comes_after_people_and_calls(open_page: OpenPage, tmp_path: Path) -> None:
    """Signed in on a 390 px screen: People, Contacts and the call card come first, the account's sign-ins and
    settings last, a page's length away, where the top bar's "Account" leads (sign out is there); the two-tab demo
    (two made-up names of open mode) is not offered."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "ann", "Ann Admin", admin=True)
    with accounts_server(db) as server:
        page = await open_page(server.http, "/", "ann")
        await page.set_viewport_size({"width": 390, "height": 844})
        await sign_in(page, "ann")
        await expect(page.locator("#server-status")).to_have_text("Connected")
        tops = {}
        for card in ("#people-card", "#call-card", "#account-card"):
            box = await page.locator(card).bounding_box()
            assert box is not None, card
            tops[card] = box["y"]
        assert tops["#people-card"] < tops["#call-card"] < tops["#account-card"], tops
        await expect(page.locator("#demo-links")).to_be_hidden()
        await expect(page.locator("#sign-out")).not_to_be_in_viewport()
        await page.click("#account-link")
        await expect(page.locator("#sign-out")).to_be_in_viewport()
        await expect(page.locator("#account-title")).to_be_focused()
        assert "#" not in page.url, page.url  # (the page reads its `#` for invites and tokens)
        await page.set_viewport_size({"width": 1280, "height": 800})  # two columns: the account is at the top
        await expect(page.locator("#account-link")).to_be_hidden()
