"""The web client as a daily caller uses it: what the last review of its screens found, each as the user notices
it. One duration of a call in its summary and in the history (the server's); a first visit in accounts mode makes
no request that fails; someone in a call is shown as not callable (to the eye and to a screen reader); a call that
ends during a screen share sends nothing after its end; a user's id is written one way (`@bob`) wherever it is
shown beside a name; Full screen is offered only when there is a picture of the other side to fill it with.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Response, Route, expect
from playwright.async_api import Error as PlaywrightError

from tests.conftest import ServerProcess, run_server

from .conftest import SCALE, OpenPage
from .steps import (
    check_accessibility,
    connect,
    open_pair,
    record_frames,
    shoot,
    start_call,
    wait_until,
)
from .test_accounts_web import add_user, sign_in
from .test_contacts import history_records

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


def clock(seconds: float) -> str:
    """How the page writes a duration: m:ss, whole seconds gone by (a call of 2.7 s lasted 0:02)."""
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


async def test_the_summary_and_the_history_say_the_same_duration(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A call of some 2.7 s (as the server counts it): the summary under the call and its history entry show the
    same duration on both sides, the server record's."""
    a, b = await open_pair(open_page, fresh_server)
    await a.click("#call")
    await expect(b.locator("#incoming")).to_be_visible()
    accepted = time.monotonic()
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#call-status")).to_have_text("Connected")
    # Hang up when the server's count is past the middle of a second, where rounding and truncating differ, and
    # the time the page counts from (the audio connected, a moment after the answer) is a whole second behind.
    await asyncio.sleep(max(0.0, 2.7 - (time.monotonic() - accepted)))
    await a.click("#hangup")
    call_id = await a.evaluate("peercall.call.callId")

    records = await wait_until(
        lambda: history_records(fresh_server, "clientA"),
        lambda calls: any(r["callId"] == call_id and r["duration"] is not None for r in calls),
        "the server to keep the call",
    )
    record = next(r for r in records if r["callId"] == call_id)
    expected = clock(record["duration"])
    for page, peer in ((a, "clientB"), (b, "clientA")):
        await expect(page.locator("#call-status")).to_have_text("Call Ended")
        entry = page.locator(f'#history li[data-call-id="{call_id}"]')
        await expect(entry.locator(".len")).to_have_text(expected)
        await expect(page.locator("#call-summary")).to_have_text(re.compile(rf"^Call with {peer}: {expected}, "))
        assert await page.locator("#call-summary").get_attribute("data-duration-sec") is not None


def watch_failures(page: Page) -> tuple[list[str], list[str]]:
    """Keep what goes wrong in `page` from now on: requests answered 4xx/5xx, and console errors (page errors too)."""
    failed: list[str] = []
    errors: list[str] = []

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.request.method} {response.url} -> {response.status}")

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(msg.text)

    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return failed, errors


async def test_a_first_visit_in_accounts_mode_makes_no_failing_request(browser: Browser, tmp_path: Path) -> None:
    """A browser that never signed in opens an accounts-mode server: the sign-in screen, and no request answered
    4xx/5xx, no error in the console. Signed in, a reload keeps the sign-in; signed out, a reload asks nothing that
    fails either."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "ann", "Ann Example")
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}") as srv:
        context = await browser.new_context(base_url=srv.http)
        try:
            page = await context.new_page()
            failed, errors = watch_failures(page)
            await page.goto("/")
            await expect(page.locator("#signin-form")).to_be_visible()
            await page.wait_for_load_state("networkidle")
            assert not failed, f"a first visit made requests that failed: {failed}"
            assert not errors, f"a first visit logged errors: {errors}"

            await sign_in(page, "ann")
            await expect(page.locator("#account-name")).to_have_text("Ann Example")
            await page.reload()
            await expect(page.locator("#account-name")).to_have_text("Ann Example")
            await page.click("#sign-out")
            await expect(page.locator("#signin-form")).to_be_visible()
            await page.reload()
            await expect(page.locator("#signin-form")).to_be_visible()
            await page.wait_for_load_state("networkidle")
        finally:
            await context.close()
    assert not failed, f"requests failed: {failed}"
    assert not errors, f"the page logged errors: {errors}"


async def test_signing_out_while_the_history_loads_makes_no_failing_request(browser: Browser, tmp_path: Path) -> None:
    """Signing out while the page still loads Recent calls (its `/api/calls` request slowed down): the request is
    dropped, not sent with the sign-in that has just ended, so no request is answered 4xx/5xx and the console stays
    clean; the sign-in screen shows."""
    db = tmp_path / "accounts.sqlite3"
    add_user(db, "ann", "Ann Example")
    with run_server(PEERCALL_AUTH="accounts", PEERCALL_DATABASE_URL=f"sqlite:///{db}") as srv:
        context = await browser.new_context(base_url=srv.http)
        try:
            page = await context.new_page()
            failed, errors = watch_failures(page)
            held: list[Route] = []

            async def hold(route: Route) -> None:
                held.append(route)

            async def asked() -> int:
                return len(held)

            await page.route("**/api/calls?*", hold)
            await page.goto("/")
            await sign_in(page, "ann")
            await expect(page.locator("#server-status")).to_have_text("Connected")
            await wait_until(asked, bool, "the page to ask for its call history")
            signed_out = lambda r: r.request.method == "DELETE" and r.url.endswith("/api/session")  # noqa: E731
            async with page.expect_response(signed_out):
                await page.click("#sign-out")
            await expect(page.locator("#signin-form")).to_be_visible()
            for route in held:  # the slow answers come now, if they are still awaited
                try:
                    await route.continue_()
                except PlaywrightError:
                    pass  # the page dropped the request: nothing to answer
            await page.wait_for_load_state("networkidle")
            await asyncio.sleep(0.5 * SCALE)
            await expect(page.locator("#signin-form")).to_be_visible()
        finally:
            await context.close()
    assert not failed, f"requests failed: {failed}"
    assert not errors, f"the page logged errors: {errors}"


async def test_someone_in_a_call_is_shown_as_not_callable(fresh_server: ServerProcess, open_page: OpenPage) -> None:
    """While clientA and clientB talk, carol's People list says they are in a call, and their lines do not call:
    marked unavailable for a screen reader (aria-disabled, still focusable), with the reason in the name and the
    tooltip; neither a click nor Enter in the search places a call. Once their call ends they can be called."""
    a, b = await open_pair(open_page, fresh_server)
    carol = await open_page(fresh_server.http, "/?id=carol", "carol")
    await connect(carol)
    await start_call(a, b)
    line = carol.locator('#online button[data-peer="clientB"]')
    await expect(carol.locator('#online li[data-peer="clientB"]')).to_have_attribute("data-status", "in-call")
    await expect(line).to_have_attribute("aria-disabled", "true")
    await expect(line).to_have_accessible_name(re.compile(r"^Call clientB\s*,\s*In a call$"))
    await expect(line).to_have_attribute("title", re.compile(r"clientB is in a call"))
    await expect(line.locator(".action")).to_be_hidden()  # no Call pill: the line does not call
    await line.focus()  # a keyboard reaches it, and hears why it does nothing
    assert await carol.evaluate("document.activeElement?.dataset.peer") == "clientB"
    await line.click(force=True)  # a click anyway (Playwright takes aria-disabled as not enabled)
    await expect(carol.locator("#message")).to_have_text("clientB is in a call: you can call when it ends.")
    await carol.keyboard.press("Enter")
    # Typed into "Who to call": the Call button says the same, in words under it and in its description.
    await carol.fill("#peer-id", "clientB")
    for button in (carol.locator("#call"), carol.locator("#video-call")):
        await expect(button).to_have_attribute("aria-disabled", "true")
        await expect(button).to_have_accessible_description("clientB is in a call: you can call when it ends.")
    await expect(carol.locator("#peer-in-call")).to_have_text("clientB is in a call: you can call when it ends.")
    await carol.click("#call", force=True)
    await carol.fill("#contact-filter", "clientB")
    await expect(carol.locator("#contact-filter-hint")).to_have_text(re.compile(r"in a call"))
    await carol.press("#contact-filter", "Enter")
    await expect(carol.locator("#call-status")).to_have_text("No Call")
    assert await carol.evaluate("peercall.call") is None
    await shoot(carol, "people-in-a-call")
    await check_accessibility(carol, "people-in-a-call")

    await a.click("#hangup")
    await expect(line).not_to_have_attribute("aria-disabled", "true")
    await expect(carol.locator("#call")).not_to_have_attribute("aria-disabled", "true")
    await expect(carol.locator("#peer-in-call")).to_be_hidden()
    await expect(line.locator(".action")).to_be_visible()
    await carol.press("#contact-filter", "Enter")
    await expect(carol.locator("#call-status")).to_have_text("Requesting")


def console_of(page: Page) -> list[str]:
    lines: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        lines.append(f"{msg.type}: {msg.text}")

    page.on("console", on_console)
    return lines


async def test_a_call_ending_during_a_screen_share_sends_no_media_state_after_its_end(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A shares a screen, and the call ends (A hangs up; then, in a second call, B does): A sends no `media-state`
    once it sent its hangup or learnt of the end, and the server refuses nothing of it."""
    a = await open_page(fresh_server.http, "/callerA.html", "A")
    b = await open_page(fresh_server.http, "/callerB.html", "B")
    frames = record_frames(a)
    lines = console_of(a)
    await connect(a)
    await connect(b)
    for hanging_up in (a, b):
        await start_call(a, b)
        await a.click("#screen-share")
        await expect(b.locator("#in-call")).to_have_attribute("data-peer-screen", "true")
        before = len(frames)
        await hanging_up.click("#hangup")
        for page in (a, b):
            await expect(page.locator("#call-status")).to_have_text("Call Ended")
        await expect(a.locator("#screen-share")).to_be_hidden()
        # The end's frames have all gone out: the call summary is the last one A sends.
        await wait_until(
            lambda: a.evaluate("peercall.summaries.length"),
            lambda n, want=1 + (hanging_up is b): n >= want,
            "A to send its call summary",
        )
        after = [f["type"] for f in frames[before:]]
        assert "call-summary" in after, f"A's frames were not recorded: {after}"
        assert "media-state" not in after, f"A sent after the call's end: {after}"
    refused = [line for line in lines if "media-state" in line and "did not pass" in line]
    assert not refused, f"the server refused A's media-state: {refused}"


async def test_an_id_beside_a_name_is_written_the_same_everywhere(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """alice names her contact bob "Bobby": her Contacts card writes bob's id as People does beside a name
    (`@bob`), never bare."""
    alice = await open_page(fresh_server.http, "/?id=alice", "alice")
    bob = await open_page(fresh_server.http, "/?id=bob", "bob")
    await connect(alice)
    await connect(bob)
    await alice.fill("#contact-add-id", "bob")
    await alice.fill("#contact-add-name", "Bobby")
    await alice.click("#contact-add")
    request = bob.locator('#contact-requests li[data-user="alice"]')
    await request.get_by_role("button", name="Accept alice's contact request").click()
    contact = alice.locator('#contacts li[data-contact="bob"]')
    await expect(contact.locator(".name")).to_have_text("Bobby")
    await expect(contact.locator(".user-id")).to_have_text(re.compile(r"^@bob\b"))
    call_bobby = re.compile(r"^Call Bobby\s*,\s*@bob\s*,\s*Online$")
    await expect(contact.get_by_role("button", name=call_bobby)).to_be_visible()


async def test_full_screen_is_offered_only_with_a_picture_of_the_other_side(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A turns the camera on in an audio call: A sees only its own preview, and no Full screen; B, who sees A's
    picture, is offered it."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await a.click("#camera")
    await expect(a.locator("#local-video")).to_be_visible()
    await expect(b.locator("#video-stage")).to_have_attribute("data-remote", "on", timeout=10_000 * SCALE)
    await expect(b.locator("#fullscreen")).to_be_visible()
    await expect(a.locator("#video-stage")).to_have_attribute("data-remote", "off")
    await expect(a.locator("#fullscreen")).to_be_hidden()
    await shoot(a, "video-own-preview-only")
    await check_accessibility(a, "video-own-preview-only")
