"""When something goes wrong, the page says what happened and what to do, in words people understand.

A microphone that is refused, missing or busy; a page opened over plain http from another address; a server that
cannot be reached (a countdown to the next try, and "Retry now"); the other side's network dropping during a call
("waiting for them…" rather than an abrupt end). Each screen is saved to $PEERCALL_TEST_ARTIFACTS/screens/ at
desktop and phone size, light and dark. Nothing sleeps and then asserts: every step waits for what the user would see.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest
from playwright.async_api import expect

from tests.conftest import ServerProcess, run_server

from .conftest import LaunchBrowser, OpenPage
from .steps import (
    assert_audio_flows,
    check_accessibility,
    connect,
    data_float,
    mic,
    open_pair,
    shoot,
    start_call,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

# getUserMedia fails in the page as the browser makes it fail for each of these (the DOMException's name).
FAIL_MICROPHONE = """
(name) => {
  navigator.mediaDevices.getUserMedia = async () => { throw new DOMException("refused in the test", name); };
}
"""


@pytest.mark.parametrize(
    ("error", "screen", "said", "why"),
    [
        (
            "NotAllowedError",
            "error-mic-denied",
            "Microphone access was denied. To call, allow the microphone",
            "microphone access was denied",
        ),
        (
            "NotFoundError",
            "error-no-mic",
            "No microphone was found. Plug in a microphone or a headset",
            "no microphone was found",
        ),
        (
            "NotReadableError",
            "error-mic-in-use",
            "another application may be using it. Close other calling apps",
            "the microphone is in use by another application",
        ),
    ],
    ids=["denied", "missing", "in-use"],
)
async def test_microphone_problems_are_explained(
    server: ServerProcess,
    open_page: OpenPage,
    uid: Callable[[str], str],
    error: str,
    screen: str,
    said: str,
    why: str,
) -> None:
    """A refused, missing or busy microphone stops the call before it rings: the call reads *Failed* with the
    reason in a few words, and a sentence says what to do."""
    page = await open_page(server.http, "/", "ann")
    await page.fill("#my-id", uid("ann"))
    await connect(page)
    await page.evaluate(FAIL_MICROPHONE, error)
    await page.fill("#peer-id", uid("nobody"))
    await page.press("#peer-id", "Enter")
    message = page.locator("#message")
    await expect(message).to_contain_text(said)
    await expect(message).to_have_attribute("data-kind", "error")
    await expect(page.locator("#call-status")).to_have_text("Failed")
    await expect(page.locator("#call-status")).to_have_attribute("data-state", "failed")
    await expect(page.locator("#call-detail")).to_have_text(why)
    await expect(page.locator("#call")).to_be_enabled()  # ready to try again
    assert (await mic(page))["opened"] == 0
    await shoot(page, screen)


async def test_plain_http_from_another_address_says_https_is_needed(
    open_page: OpenPage, launch_browser: LaunchBrowser
) -> None:
    """Over plain http from a LAN-style address the page says at once that https is needed and how to get it."""
    with run_server(PEERCALL_ALLOWED_HOSTS="peercall.test") as server:  # a LAN name the server answers for
        await _insecure_page_says_so(server, open_page, launch_browser)


async def _insecure_page_says_so(server: ServerProcess, open_page: OpenPage, launch_browser: LaunchBrowser) -> None:
    chromium = await launch_browser("--host-resolver-rules=MAP peercall.test 127.0.0.1")
    page = await open_page(f"http://peercall.test:{server.port}", "/", "lan", in_browser=chromium)
    assert await page.evaluate("window.isSecureContext") is False
    warning = page.locator("#insecure-warning")
    await expect(warning).to_be_visible()
    await expect(warning).to_contain_text("Calls need a secure (https) page.")
    await expect(warning).to_contain_text("peercall serve --tls-self-signed")
    await expect(page.locator("#insecure-host")).to_have_text(f"peercall.test:{server.port}")

    await page.fill("#my-id", "lan-user")
    await connect(page)  # signaling works over http; only the microphone is refused
    await page.fill("#peer-id", "someone")
    await page.click("#call")
    await expect(page.locator("#message")).to_contain_text("The microphone needs a secure page (https)")
    await expect(page.locator("#message")).to_contain_text("peercall serve --tls-self-signed")
    await shoot(page, "error-insecure")


async def test_unreachable_server_counts_down_and_retry_now_reconnects(
    open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """A dead server shows a countdown to the next try and "Retry now"; with a server back, Retry now reconnects."""
    name = uid("gus")
    with run_server() as first:
        port = first.port
        page = await open_page(first.http, "/", "gus")
        await page.fill("#my-id", name)
        await connect(page)
        await asyncio.to_thread(first.stop, signal.SIGKILL)  # the server dies: no goodbye
        banner = page.locator("#connection-banner")
        await expect(banner).to_be_visible()
        await expect(page.locator("#server-status")).to_have_text("Reconnecting…")
        await expect(page.locator("#connection-reason")).to_have_text("No connection to the server.")
        # Before the countdown is timed below (axe takes seconds). Not even a moderate finding about the banner: it
        # is a landmark of its own, found by landmark navigation.
        found = await check_accessibility(page, "server-unreachable")
        assert not [v for v in found if v["id"] == "region"], f"content outside any landmark: {found}"
        countdown = page.locator("#retry-countdown")
        # The backoff grows; once the next try is 2 s or more away, the countdown visibly counts down.
        start = await wait_until(
            lambda: data_float(page, "#retry-countdown", "seconds"), lambda s: (s or 0) >= 2, "a countdown of 2 s+"
        )
        await expect(countdown).to_have_text(f"Trying again in {int(start or 0)} s…")
        await wait_until(
            lambda: data_float(page, "#retry-countdown", "seconds"),
            lambda s: s is not None and 0 < s < (start or 0),
            "the countdown to go down",
        )
        await shoot(page, "error-server-unreachable")
        # The next try far enough away to outlast a server's start (a second or two, more on a busy machine): once
        # the server is back, a try that comes first connects by itself, and no countdown of 2 s shows again.
        await wait_until(
            lambda: data_float(page, "#retry-countdown", "seconds"),
            lambda s: (s or 0) >= 4,
            "the next try to be 4 s or more away",
            timeout=20,
        )
    with run_server(PEERCALL_PORT=str(port)):
        left = await data_float(page, "#retry-countdown", "seconds")
        assert left is not None and left > 0, "the page tried again before Retry now could be pressed"
        await page.click("#retry-now")
        await expect(page.locator("#server-status")).to_have_text("Connected", timeout=1500)
        await expect(banner).to_be_hidden()
        await expect(page.locator("#message")).to_have_text("Reconnected to the server.")
        await expect(page.locator("#my-status")).to_have_text("Online: people can call you")


async def test_peer_connection_drop_shows_waiting_and_clears_when_they_are_back(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """When the other side's network drops mid-call the page waits for them (no abrupt end), and clears when back."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await a.evaluate("() => { window.__e2e.blockSockets = true; window.__e2e.sockets.at(-1).close(); }")
    note = b.locator("#peer-note")
    await expect(note).to_have_text("clientA's connection dropped — waiting for them…")
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#hangup")).to_be_enabled()
    await expect(a.locator("#connection-banner")).to_be_visible()
    await expect(a.locator("#connection-reason")).to_contain_text("Your call goes on meanwhile.")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(b, "B, while A's signaling is down")
    await shoot(b, "error-peer-dropped")
    await shoot(a, "error-reconnecting-in-call")

    await a.evaluate("window.__e2e.blockSockets = false")
    # Retry now, unless the page's own next try (its countdown runs meanwhile) already brought it back: on a busy
    # machine that try can win the race with the click, and the button is gone.
    await a.evaluate("() => { const b = document.getElementById('retry-now'); if (b?.offsetParent) b.click() }")
    await expect(a.locator("#server-status")).to_have_text("Connected")
    await expect(note).to_be_hidden()
    await expect(a.locator("#connection-banner")).to_be_hidden()
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(b, "B, after A came back")


async def test_a_microphone_the_browser_refuses_fails_the_call_with_the_reason(
    server: ServerProcess, open_page: OpenPage, launch_browser: LaunchBrowser, uid: Callable[[str], str]
) -> None:
    """Chromium itself refuses the microphone (its fake permission prompt answers "deny"): the call reads *Failed*
    with the reason, not *Call Ended*; nothing rang."""
    denying = await launch_browser("--use-fake-ui-for-media-stream=deny")
    page = await open_page(server.http, "/", "ann", in_browser=denying)
    await page.fill("#my-id", uid("ann"))
    await connect(page)
    await page.fill("#peer-id", uid("nobody"))
    await page.press("#peer-id", "Enter")
    await expect(page.locator("#call-status")).to_have_text("Failed")
    await expect(page.locator("#call-detail")).to_have_text("microphone access was denied")
    await expect(page.locator("#message")).to_contain_text("Microphone access was denied. To call, allow")
    await expect(page.locator("#message")).to_have_attribute("data-kind", "error")
    assert await page.evaluate("window.peercall.call.reason") == "no-microphone"
    assert await page.evaluate("window.peercall.call.mediaError.name") == "MicrophoneError"
