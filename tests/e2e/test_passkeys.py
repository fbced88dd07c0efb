"""Passkeys in a real Chromium with a virtual authenticator (the DevTools protocol's WebAuthn domain): a signed-in
user adds a passkey and signs in with it after signing out; a clone (its sign count gone back) is refused; a
sign-up from an invite with a passkey only; a deleted passkey signs nobody in; the last sign-in method cannot be
deleted. The calls go through static/js/passkeys.js, as a page would make them, on http://localhost (WebAuthn
allows it without TLS)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import CDPSession, Page, expect

from tests.conftest import OPEN_DOORS, ServerProcess, run_server

from .conftest import OpenPage
from .steps import check_accessibility

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

PASSWORD = "correct horse battery"
THIS_BROWSER = "async () => (await import('/js/account.js')).thisBrowser()"
"""The name the page gives the passkeys it makes: the browser and its system (account.js `thisBrowser`)."""


def setup_token(srv: ServerProcess) -> str:
    """The token of the set-up link a new accounts server prints (its first user becomes an administrator)."""
    assert srv.wait_log("#invite="), srv.log()
    found = re.search(r"#invite=([\w-]+)", srv.log())
    assert found is not None
    return found.group(1)


async def with_authenticator(page: Page) -> tuple[CDPSession, str]:
    """Give the page's browser context a virtual platform authenticator (user verified): the DevTools session that
    drives it, and its id."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


async def set_sign_count(cdp: CDPSession, authenticator: str, count: int) -> None:
    """Put the authenticator's (only) passkey back with this sign count: a clone of it, as far as a server sees."""
    (credential,) = (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator}))["credentials"]
    await cdp.send(
        "WebAuthn.removeCredential", {"authenticatorId": authenticator, "credentialId": credential["credentialId"]}
    )
    await cdp.send(
        "WebAuthn.addCredential", {"authenticatorId": authenticator, "credential": {**credential, "signCount": count}}
    )


async def pk(page: Page, function: str, *args: Any) -> Any:
    """Call `function` of static/js/passkeys.js in the page: its result, or {"error", "code"} if it threw."""
    return await page.evaluate(
        """async ([name, args]) => {
            const module = await import('/js/passkeys.js');
            try {
              return await module[name](...args);
            } catch (err) {
              return {error: err.message, code: err.code};
            }
        }""",
        [function, list(args)],
    )


async def api(page: Page, method: str, path: str, body: Any = None, csrf: str = "1") -> dict[str, Any]:
    """A request of the page to the accounts API: {"status", "body"}."""
    result: dict[str, Any] = await page.evaluate(
        """async ([method, path, body, csrf]) => {
            const r = await fetch(path, {method, headers: {'Content-Type': 'application/json',
              'X-Peercall-CSRF': csrf}, body: body === null ? undefined : JSON.stringify(body)});
            return {status: r.status, body: await r.json()};
        }""",
        [method, path, body, csrf],
    )
    return result


async def test_passkeys_add_sign_in_sign_up_and_delete(open_page: OpenPage) -> None:
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_ALLOWED_HOSTS="*", **OPEN_DOORS) as srv:
        setup = setup_token(srv)
        base = f"http://localhost:{srv.port}"

        ann = await open_page(base, "/healthz", "ann")
        cdp, authenticator = await with_authenticator(ann)
        signed = (
            await api(ann, "POST", "/api/signup", {"invite": setup, "id": "ann", "name": "Ann", "password": PASSWORD})
        )["body"]
        assert signed.get("id") == "ann" and signed["passkeys"] is True, signed

        # A signed-in user adds a passkey, signs out, and signs in with it (no id typed).
        added = await pk(ann, "registerPasskey", signed["csrf"], "Laptop")
        assert added.get("name") == "Laptop" and added.get("id"), added
        listed = (await api(ann, "GET", "/api/passkeys"))["body"]
        assert [p["name"] for p in listed["passkeys"]] == ["Laptop"]
        assert (await api(ann, "DELETE", "/api/session", csrf=signed["csrf"]))["status"] == 200
        assert (await api(ann, "GET", "/api/session"))["status"] == 401
        again = await pk(ann, "signInWithPasskey")
        assert again.get("id") == "ann" and again.get("admin") is True, again
        assert (await api(ann, "GET", "/api/session"))["body"]["id"] == "ann"
        listed = (await api(ann, "GET", "/api/passkeys"))["body"]
        assert listed["passkeys"][0]["lastUsed"] is not None

        # A passkey whose sign count goes back (a cloned authenticator) is refused; with a count past the last one,
        # the same key signs in again.
        assert (await api(ann, "DELETE", "/api/session", csrf=again["csrf"]))["status"] == 200
        await set_sign_count(cdp, authenticator, 0)
        cloned = await pk(ann, "signInWithPasskey")
        assert cloned.get("code") == "sign-in-failed", cloned
        await set_sign_count(cdp, authenticator, 1000)
        again = await pk(ann, "signInWithPasskey")
        assert again.get("id") == "ann", again

        # Sign-up from an invite with a passkey instead of a password, in another browser with its own authenticator.
        invite = (await api(ann, "POST", "/api/invites", {}, again["csrf"]))["body"]
        token = invite["link"].rpartition("#invite=")[2]
        bob = await open_page(base, "/healthz", "bob")
        await with_authenticator(bob)
        joined = await pk(bob, "signUpWithPasskey", token, "bob", "Bob")
        assert joined.get("id") == "bob" and joined.get("name") == "Bob", joined
        bobs = (await api(bob, "GET", "/api/passkeys"))["body"]["passkeys"]
        assert len(bobs) == 1
        assert bobs[0]["name"] == await bob.evaluate(THIS_BROWSER), bobs  # named after the browser, as added ones
        last = await api(bob, "DELETE", f"/api/passkeys/{bobs[0]['id']}", csrf=joined["csrf"])
        assert last["status"] == 409 and last["body"]["error"]["code"] == "last-method", last
        used_again = await pk(bob, "signUpWithPasskey", token, "bob2", "Bob")
        assert "invite link is not valid" in used_again.get("error", ""), used_again

        # A deleted passkey signs nobody in (the authenticator still offers it).
        gone = await api(ann, "DELETE", f"/api/passkeys/{added['id']}", csrf=again["csrf"])
        assert gone["status"] == 200, gone
        await api(ann, "DELETE", "/api/session", csrf=again["csrf"])
        refused = await pk(ann, "signInWithPasskey")
        assert refused.get("code") == "sign-in-failed", refused
        assert "did not sign you in" in refused["error"]
        assert (await api(ann, "GET", "/api/session"))["status"] == 401


async def test_the_sign_in_page_signs_in_with_a_passkey(open_page: OpenPage) -> None:
    """The page shows "Sign in with a passkey" when the server takes passkeys; one click signs the user in."""
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_ALLOWED_HOSTS="*", **OPEN_DOORS) as srv:
        setup = setup_token(srv)
        base = f"http://localhost:{srv.port}"
        ann = await open_page(base, "/healthz", "ann")
        await with_authenticator(ann)
        body = {"invite": setup, "id": "ann", "name": "Ann Example", "password": PASSWORD}
        signed = (await api(ann, "POST", "/api/signup", body))["body"]
        assert (await pk(ann, "registerPasskey", signed["csrf"], "Laptop")).get("name") == "Laptop"
        assert (await api(ann, "DELETE", "/api/session", csrf=signed["csrf"]))["status"] == 200

        await ann.goto(f"{base}/")
        button = ann.locator("#passkey-signin")
        await expect(button).to_be_visible()
        await expect(ann.locator("#signin-form")).to_be_visible()
        await button.click()
        await expect(ann.locator("#account-name")).to_have_text("Ann Example")
        assert (await api(ann, "GET", "/api/session"))["body"]["id"] == "ann"


async def test_the_page_adds_a_passkey_and_signs_up_with_one(open_page: OpenPage) -> None:
    """Signed in with a password, a user adds a passkey from the account card; an invitee creates their account
    with a passkey from the invite link's form, and is signed in (no password anywhere)."""
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_ALLOWED_HOSTS="*", **OPEN_DOORS) as srv:
        setup = setup_token(srv)
        base = f"http://localhost:{srv.port}"
        ann = await open_page(base, "/healthz", "ann")
        await with_authenticator(ann)
        body = {"invite": setup, "id": "ann", "name": "Ann Example", "password": PASSWORD}
        signed = (await api(ann, "POST", "/api/signup", body))["body"]
        # Signed up through the API, not the page: mark the browser signed in, as the page's own sign-up does (a
        # browser the page never saw signed in shows the sign-in screen without asking the server).
        await ann.evaluate("localStorage.setItem('peercall.signedIn', '1')")
        await ann.goto(f"{base}/")
        await expect(ann.locator("#account-name")).to_have_text("Ann Example")
        await ann.locator("#passkey-add").click()
        await expect(ann.locator("#passkey-status")).to_contain_text("added: you can sign in with it on this device")
        assert len((await api(ann, "GET", "/api/passkeys"))["body"]["passkeys"]) == 1

        invite = (await api(ann, "POST", "/api/invites", {}, signed["csrf"]))["body"]
        bob = await open_page(base, "/healthz", "bob")
        await with_authenticator(bob)
        assert invite["link"].startswith(f"{base}/#invite="), invite
        await bob.goto(invite["link"])
        await expect(bob.locator("#signup-form")).to_be_visible()
        await bob.locator("#signup-id").fill("bob")
        await bob.locator("#signup-name").fill("Bob Example")
        await bob.locator("#passkey-signup").click()
        await expect(bob.locator("#account-name")).to_have_text("Bob Example")
        me = (await api(bob, "GET", "/api/session"))["body"]
        assert me["id"] == "bob"
        assert len((await api(bob, "GET", "/api/passkeys"))["body"]["passkeys"]) == 1


async def test_a_passkey_only_account_adds_a_password_from_the_page(open_page: OpenPage) -> None:
    """The first administrator creates their account with a passkey only; under "Sign-in methods" they add a
    password and sign in with it; changing it needs the current one (a wrong one is refused in words); deleting
    the passkey leaves the password, which then cannot be removed (the only way to sign in left)."""
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_ALLOWED_HOSTS="*", **OPEN_DOORS) as srv:
        base = f"http://localhost:{srv.port}"
        ann = await open_page(base, "/healthz", "ann")
        await with_authenticator(ann)
        await ann.goto(f"{base}/#invite={setup_token(srv)}")
        await ann.locator("#signup-id").fill("ann")
        await ann.locator("#signup-name").fill("Ann Example")
        await ann.locator("#passkey-signup").click()
        await expect(ann.locator("#account-name")).to_have_text("Ann Example")

        await ann.locator("#methods-box summary").click()
        methods = ann.locator("#methods li")
        await expect(methods).to_have_count(1)
        browser = await ann.evaluate(THIS_BROWSER)
        await expect(methods).to_contain_text(re.compile(rf"^{re.escape(browser)}Passkey · added "))
        await expect(ann.locator("#password-title")).to_have_text("Add a password")
        await expect(ann.locator("#password-current")).to_be_hidden()
        await ann.locator("#password-new").fill(PASSWORD)
        await ann.locator("#password-submit").click()
        await expect(ann.locator("#methods-status")).to_contain_text("Password added")
        await expect(methods).to_have_count(2)
        await expect(methods.first).to_contain_text("Password")
        await expect(ann.locator("#password-title")).to_have_text("Change your password")
        await check_accessibility(ann, "account sign-in methods")

        await ann.locator("#sign-out").click()
        await ann.locator("#signin-id").fill("ann")
        await ann.locator("#signin-password").fill(PASSWORD)
        await ann.locator("#signin-submit").click()
        await expect(ann.locator("#account-name")).to_have_text("Ann Example")

        await expect(ann.locator("#password-current")).to_be_visible()  # the box stayed open, shown anew
        await ann.locator("#password-current").fill("not my password")
        await ann.locator("#password-new").fill("another good password")
        await ann.locator("#password-submit").click()
        await expect(ann.locator("#methods-status")).to_have_text(
            "Your current password is not that: type the one you sign in with."
        )
        await ann.locator("#password-current").fill(PASSWORD)
        await ann.locator("#password-submit").click()
        await expect(ann.locator("#methods-status")).to_have_text("Password changed.")

        await ann.get_by_role("button", name=f"Delete passkey {browser}").click()
        await expect(methods).to_have_count(1)
        await ann.get_by_role("button", name="Remove my password").click()
        await expect(ann.locator("#methods-status")).to_have_text(
            "This is your only way to sign in: add another one first."
        )
        assert (await api(ann, "GET", "/api/password"))["body"]["password"] is not None
