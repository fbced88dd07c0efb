"""The installable app (manifest, service worker, offline shell), call links and the embeddable call button
(issue 17, items 3 and 4)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Playwright, expect

from tests.conftest import CHROMIUM_FLAGS, OPEN_DOORS, ServerProcess, free_port, run_server

from .conftest import OpenPage, artifacts_dir
from .steps import assert_audio_flows, check_accessibility, connect, wait_until
from .test_accounts_web import add_user, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

CONTROLLED = "navigator.serviceWorker.controller !== null"


async def installed_worker(page: Page) -> None:
    """Wait until the service worker has cached the shell and controls the page."""
    await wait_until(lambda: page.evaluate(CONTROLLED), bool, "the service worker to control the page")
    caches = await page.evaluate(
        "async () => { const names = await caches.keys(); const c = await caches.open(names[0]); "
        "return [names, (await c.keys()).map((r) => new URL(r.url).pathname)]; }"
    )
    names, cached = caches
    assert len(names) == 1 and names[0].startswith("peercall-shell-"), names
    assert {"/", "/js/main.js", "/css/peercall.css", "/manifest.webmanifest"} <= set(cached), cached
    assert not [path for path in cached if path.startswith(("/api", "/ws", "/ice-servers", "/healthz"))], cached


async def test_chromium_finds_the_app_installable(
    playwright: Playwright, chromium_path: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """Chromium's own installability check (the one behind its Install button) finds nothing missing.

    In a browser profile of its own: Playwright's usual contexts are incognito, where nothing is installable."""
    context = await playwright.chromium.launch_persistent_context(
        tmp_path / "profile", executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS
    )
    try:
        page = await context.new_page()
        await page.goto(f"{server.http}/")
        await installed_worker(page)
        cdp = await context.new_cdp_session(page)
        manifest = await cdp.send("Page.getAppManifest")
        assert manifest.get("errors") == [], manifest
        installability = await cdp.send("Page.getInstallabilityErrors")
        assert installability["installabilityErrors"] == [], installability
    finally:
        await context.close()


async def test_the_app_opens_without_the_server(open_page: OpenPage) -> None:
    """With the server gone and the device offline, a reload still opens the app from the service worker, which
    says "No connection to the server" (and why) instead of looking idle."""
    with run_server() as server:
        page = await open_page(server.http, "/", "app")
        await installed_worker(page)
        await expect(page.locator("#connection-banner")).to_be_hidden()
        await asyncio.to_thread(server.stop)

    await page.context.set_offline(True)
    await page.reload()
    banner = page.locator("#connection-banner")
    await expect(banner).to_be_visible()
    reason = page.locator("#connection-reason")
    await expect(reason).to_have_text("No connection to the server.")
    await expect(reason).to_have_attribute("role", "status")  # read out when it changes
    await expect(page.locator("#retry-countdown")).to_have_text(
        "This device is offline: the page connects when the network is back."
    )
    await expect(page.locator("#my-id")).to_be_editable()  # the whole page is there, from the cache
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=artifacts_dir() / "app-offline-phone.png")
    await page.set_viewport_size({"width": 1100, "height": 760})
    await check_accessibility(page, "offline")

    await page.context.set_offline(False)  # the network is back (as far as the browser can tell), not the server
    await page.fill("#my-id", "offlineuser")
    await page.click("#connect")
    await expect(page.locator("#server-status")).to_have_text("Reconnecting…")
    await expect(reason).to_have_text("No connection to the server.")
    await expect(page.locator("#retry-countdown")).to_contain_text("Trying again")


async def test_a_new_server_version_replaces_the_cached_shell(open_page: OpenPage) -> None:
    """The worker's cache is named after the server's build; a worker of another build deletes the old cache."""
    with run_server() as server:
        page = await open_page(server.http, "/", "app")
        await installed_worker(page)
        first = await page.evaluate("caches.keys()")
        # An older build's cache, as a previous version of the worker left it.
        await page.evaluate("caches.open('peercall-shell-0.0.1-000000000000')")
        assert len(await page.evaluate("caches.keys()")) == 2
        # The browser checks the worker again (as on every navigation, at most daily): same build, nothing to do.
        await page.evaluate("navigator.serviceWorker.ready.then((r) => r.update())")
        assert len(await page.evaluate("caches.keys()")) == 2
        # A new worker (another script, as when the server's build changed) takes over, and keeps only its cache.
        await page.evaluate("navigator.serviceWorker.register('sw.js?another-build')")
        await wait_until(lambda: page.evaluate("caches.keys()"), lambda names: names == first, "one cache again")
        assert await page.evaluate("caches.keys()") == first


async def test_the_phone_layout_as_an_installed_app(open_page: OpenPage, server: ServerProcess) -> None:
    """At phone size (390x844) the app fits the width: nothing scrolls sideways; the picture is kept to look at."""
    page = await open_page(server.http, "/?call=somebody", "phone")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.fill("#my-id", "phoneuser")
    await connect(page)
    await expect(page.locator("#call-link")).to_be_in_viewport()  # at the top, not below the cards
    await expect(page.locator("#call-link-call")).to_be_focused()
    await expect(page.locator("#my-call-link")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.click("#copy-call-link")
    await expect(page.locator("#copy-call-link-status")).to_contain_text(f"{server.http}/call/phoneuser")
    await page.screenshot(path=artifacts_dir() / "app-phone.png")
    await page.locator("#call-card").screenshot(path=artifacts_dir() / "app-phone-call-card.png")
    await check_accessibility(page, "call link")


async def test_opening_bobs_call_link_rings_bob(
    open_page: OpenPage, server: ServerProcess, uid: Callable[[str], str]
) -> None:
    """Bob copies his call link; Alice opens it, is asked "Call bob?", connects, clicks Call: Bob's phone rings,
    and the call connects with audio."""
    alice_id, bob_id = uid("alice"), uid("bob")
    bob = await open_page(server.http, "/", "bob")
    # (the microphone too: a context given permissions has only those, and without it Chromium hides its
    # addresses from ICE behind mDNS names, which nothing resolves here)
    await bob.context.grant_permissions(["clipboard-read", "clipboard-write", "microphone"])
    await bob.fill("#my-id", bob_id)
    await connect(bob)
    await bob.click("#copy-call-link")
    status = bob.locator("#copy-call-link-status")
    await expect(status).to_have_text(f"Copied: {server.http}/call/{bob_id}")
    link = await bob.evaluate("navigator.clipboard.readText()")
    assert link == f"{server.http}/call/{bob_id}"

    alice = await open_page(server.http, "/", "alice")
    await alice.goto(link)
    assert alice.url == f"{server.http}/?call={bob_id}"
    offer = alice.locator("#call-link")
    await expect(offer).to_be_visible()
    await expect(alice.locator("#call-link-title")).to_have_text(f"Call {bob_id}?")
    await expect(alice.locator("#call-link-call")).to_be_disabled()
    await expect(alice.locator("#call-link-hint")).to_have_text("Connect first: your name, then Connect.")
    await expect(bob.locator("#incoming")).to_be_hidden()  # opening the link rang no one
    await alice.fill("#my-id", alice_id)
    await connect(alice)
    await expect(alice.locator("#call-link-call")).to_be_enabled()
    await expect(bob.locator("#incoming")).to_be_hidden()  # nor did connecting
    await alice.click("#call-link-call")
    await expect(bob.locator("#incoming")).to_be_visible()
    await expect(bob.locator("#incoming-from")).to_have_text(alice_id)
    await expect(offer).to_be_hidden()
    assert alice.url == f"{server.http}/"  # a reload does not offer the call again
    await bob.click("#accept")
    await expect(alice.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(alice, "alice")
    await alice.click("#hangup")


async def test_a_call_link_calls_once_signed_in(open_page: OpenPage, tmp_path: Path) -> None:
    """Accounts mode: the link opens the sign-in screen under "Call bob?" (Sign in first); once Alice signs in, Call
    rings Bob."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "alice", "Alice")
    add_user(db, "bob", "Bob")
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}", **OPEN_DOORS) as srv:
        bob = await open_page(srv.http, "/", "bob")
        await sign_in(bob, "bob")
        await expect(bob.locator("#server-status")).to_have_text("Connected")
        alice = await open_page(srv.http, "/call/bob", "alice")
        await expect(alice.locator("#call-link-title")).to_have_text("Call bob?")
        await expect(alice.locator("#call-link-hint")).to_have_text("Sign in first.")
        await sign_in(alice, "alice")
        await expect(alice.locator("#call-link-call")).to_be_enabled()
        await alice.click("#call-link-call")
        await expect(bob.locator("#incoming")).to_be_visible()
        await expect(bob.locator("#incoming-from")).to_contain_text(re.compile("alice", re.IGNORECASE))  # or Alice
        await bob.click("#reject")


async def test_call_links_that_cannot_ring(
    open_page: OpenPage, server: ServerProcess, uid: Callable[[str], str]
) -> None:
    """A link whose id breaks the id rule gets a page that says so; one to a user who is not there says so when
    called; one's own link is not offered as a call; "Not now" sets a link aside."""
    page = await open_page(server.http, "/call/not%20an%20id", "bad")
    await expect(page.locator("#link-problem")).to_have_text("This call link is not valid")
    await expect(page.locator("main")).to_contain_text("“not an id” is not a user id")
    await page.click("text=Open peercall")
    await expect(page.locator("#my-id")).to_be_visible()

    me, nobody = uid("carol"), uid("nobody")
    await page.goto("/?call=a%20b")
    await expect(page.locator("#call-link-problem")).to_contain_text("This call link is not valid: “a b” is not")
    await expect(page.locator("#call-link-call")).to_be_hidden()
    await page.click("#call-link-dismiss")
    await expect(page.locator("#call-link")).to_be_hidden()

    await page.goto(f"/call/{me}")
    await page.fill("#my-id", me)
    await connect(page)
    await expect(page.locator("#call-link-problem")).to_have_text(
        "This is your own call link: send it to people who want to call you."
    )

    await page.goto(f"/call/{nobody}")
    await connect(page)
    await page.click("#call-link-call")
    await expect(page.locator("#message")).to_have_text(f"{nobody} is not online.")


@contextlib.contextmanager
def site_with_iframe(src: str) -> Iterator[str]:
    """Another web site on loopback (a port of its own) whose page shows `src` in an iframe; yields its origin."""
    page = f'<!doctype html><title>a site</title><iframe src="{src}" title="Call button"></iframe>'.encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: object) -> None:
            return

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()
        thread.join(5)


async def test_the_call_button_can_be_embedded_by_listed_sites_only(browser: Browser) -> None:
    """An iframe of /embed/call/<id> shows the call button on a site PEERCALL_EMBED_ORIGINS lists, and its click
    opens the call link in a new tab; on a site it does not list, the browser refuses to show it."""
    port = free_port()
    src = f"http://127.0.0.1:{port}/embed/call/bob"
    with site_with_iframe(src) as listed, site_with_iframe(src) as unlisted:
        with run_server(PEERCALL_PORT=str(port), PEERCALL_EMBED_ORIGINS=listed) as server:
            context = await browser.new_context()
            try:
                page = await context.new_page()
                await page.goto(f"{listed}/")
                button = page.frame_locator("iframe").locator("#embed-call")
                await expect(button).to_have_text("Call bob")
                async with context.expect_page() as opened:
                    await button.click()
                tab = await opened.value
                await expect(tab.locator("#call-link-title")).to_have_text("Call bob?")
                assert tab.url == f"{server.http}/?call=bob"

                refused = await context.new_page()
                async with refused.expect_console_message(lambda msg: "frame-ancestors" in msg.text) as said:
                    await refused.goto(f"{unlisted}/")
                assert listed in (await said.value).text  # "… violates … frame-ancestors <the listed origin>"
                assert await refused.frames[1].locator("#embed-call").count() == 0  # an error page instead
            finally:
                await context.close()
