"""Browser to browser: real calls between two Chromium pages, asserted the way a user would notice them.

Every page runs in a browser context of its own with a fake microphone that beeps. Nothing sleeps and then
asserts: every step waits for what the user would see, with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from tests.conftest import ServerProcess, run_server

from .conftest import SCALE, OpenPage, artifacts_dir, dump
from .steps import assert_audio_flows, connect, mic, open_pair, ring

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_two_tab_demo_call_has_audio_both_ways_and_hangs_up(
    fresh_server: ServerProcess, open_page: OpenPage, record_property: Callable[[str, Any], None]
) -> None:
    """callerA calls callerB, B accepts, audio flows both ways on a direct path, and A's hangup ends both."""
    a, b = await open_pair(open_page, fresh_server)
    assert await mic(a) == {"opened": 0, "live": 0}, "A opened the microphone before any call"

    await ring(a, b)
    assert (await mic(a))["live"] == 1, "the caller's microphone should be open while it rings"
    assert await mic(b) == {"opened": 0, "live": 0}, "B opened the microphone before accepting"
    await expect(b.locator("#accept")).to_be_enabled()

    clicked = time.monotonic()
    await b.click("#accept")
    await expect(b.locator("#incoming")).to_be_hidden()
    await expect(b.locator("#message")).to_be_hidden()
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    wall = time.monotonic() - clicked
    in_page = await b.evaluate("peercall.call.timeline.connected - peercall.call.timeline.accepted")
    record_property("accept_to_connected_ms", round(in_page))
    print(f"Accept -> Connected: {in_page:.0f} ms in B's page, {wall * 1000:.0f} ms as the test saw it")
    assert (await mic(b))["live"] == 1, "the callee's microphone should be open during the call"

    b_stats = await assert_audio_flows(b, "B")  # A's beeps arrive at B
    a_stats = await assert_audio_flows(a, "A")  # and B's at A
    for who, stats in (("A", a_stats), ("B", b_stats)):
        pair = stats["pair"]
        assert pair, f"{who} has no selected candidate pair: {dump(stats)}"
        assert (pair["local"], pair["remote"]) == ("host", "host"), f"{who}'s path is not direct: {dump(pair)}"
    print(f"B receives {dump(b_stats['inbound'])}\nA receives {dump(a_stats['inbound'])}")

    await expect(a.locator("#remote-audio")).to_have_js_property("paused", False)
    await expect(b.locator("#hangup")).to_be_enabled()
    await expect(a.locator("#call")).to_be_disabled()
    shots = artifacts_dir()
    await a.screenshot(path=shots / "call-clientA.png", full_page=True)
    await b.screenshot(path=shots / "call-clientB.png", full_page=True)

    await a.click("#hangup")
    await expect(a.locator("#call-status")).to_have_text("Call Ended")
    await expect(b.locator("#call-status")).to_have_text("Call Ended")
    for who, page in (("A", a), ("B", b)):
        assert await mic(page) == {"opened": 1, "live": 0}, f"{who} did not release the microphone"
        assert await page.evaluate("window.peercall.pc") is None
        assert await page.evaluate("window.peercall.call.pc.connectionState") == "closed"
        await expect(page.locator("#call")).to_be_enabled()
        await expect(page.locator("#hangup")).to_be_disabled()
    await expect(b.locator("#message")).to_have_text("clientA hung up.")


async def test_rejected_call(fresh_server: ServerProcess, open_page: OpenPage) -> None:
    """B rejects: A shows "Rejected" and releases its microphone; B's incoming box goes away."""
    a, b = await open_pair(open_page, fresh_server)
    await ring(a, b)

    await b.click("#reject")
    await expect(a.locator("#call-status")).to_have_text("Rejected")
    await expect(b.locator("#incoming")).to_be_hidden()
    await expect(b.locator("#call-status")).to_have_text("Call Ended")
    # One word for one thing: the button said Reject, the status says Rejected, so do the sentences and the history.
    await expect(a.locator("#message")).to_have_text("clientB rejected the call.")
    await expect(b.locator("#message")).to_have_text("You rejected the call from clientA.")
    await expect(b.locator("#history li .what").first).to_have_text("Rejected")
    await expect(b.locator("#incoming .keys")).to_have_text("Enter answers · Esc rejects")
    assert await mic(a) == {"opened": 1, "live": 0}, "A did not release the microphone"
    assert await mic(b) == {"opened": 0, "live": 0}, "B opened the microphone although it rejected"
    await expect(a.locator("#call")).to_be_enabled()


async def test_a_phone_shows_how_the_call_ended_at_the_top(fresh_server: ServerProcess, open_page: OpenPage) -> None:
    """At phone width (390x844) the call card comes into view when a call starts, and stays first once it ended:
    "Rejected" is on screen, not below the people and contacts."""
    a, b = await open_pair(open_page, fresh_server)
    await a.set_viewport_size({"width": 390, "height": 844})
    await a.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # the user had scrolled down
    await ring(a, b)
    await expect(a.locator("#call-status")).to_be_in_viewport()  # "Requesting": the call card came into view
    await b.click("#reject")
    await expect(a.locator("#call-status")).to_have_text("Rejected")
    await expect(a.locator("#call-status")).to_be_in_viewport()
    await expect(a.locator("#message")).to_be_in_viewport()
    card = await a.locator("#call-card").bounding_box()
    people = await a.locator("#people-card").bounding_box()
    assert card and people and card["y"] < people["y"], f"the call card is not above the people: {card}, {people}"
    await expect(a.locator("#hangup")).to_be_hidden()  # nothing to hang up: the call buttons go with the call
    await expect(a.locator("#call")).to_be_in_viewport()  # and calling again is at hand


async def test_calling_an_offline_name_is_unavailable(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """Calling a name nobody is connected as (typed, then Enter) shows "Unavailable"."""
    page = await open_page(server.http, "/", "alice")
    await page.fill("#my-id", uid("alice"))
    await page.press("#my-id", "Enter")
    await expect(page.locator("#server-status")).to_have_text("Connected")

    await page.fill("#peer-id", "nobody-here")
    await page.press("#peer-id", "Enter")
    await expect(page.locator("#call-status")).to_have_text("Unavailable")
    await expect(page.locator("#message")).to_have_text("nobody-here is not online.")
    assert (await mic(page))["live"] == 0, "the microphone stayed open after the call failed"
    await expect(page.locator("#call")).to_be_enabled()


async def test_index_users_see_each_other_and_caller_can_cancel(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """Two named users see each other online; a click on the other's name rings them; cancel stops it, and the
    callee reads it as a missed call."""
    alice_id, bob_id = uid("alice"), uid("bob")
    alice = await open_page(server.http, "/", "alice")
    bob = await open_page(server.http, "/", "bob")
    for page, name in ((alice, alice_id), (bob, bob_id)):
        await page.fill("#my-id", name)
        await connect(page)
    await expect(alice.locator(f'#online button[data-peer="{bob_id}"]')).to_be_visible()
    await expect(bob.locator(f'#online button[data-peer="{alice_id}"]')).to_be_visible()

    await alice.click(f'#online button[data-peer="{bob_id}"]')
    await expect(alice.locator("#call-status")).to_have_text("Requesting")
    await expect(bob.locator("#incoming")).to_be_visible()
    await expect(bob.locator("#incoming")).to_contain_text(alice_id)

    await expect(alice.locator("#hangup")).to_have_text("Cancel")
    await alice.click("#hangup")  # cancel while it rings
    await expect(bob.locator("#incoming")).to_be_hidden()
    # To bob it is a missed call, in the same word as his Recent calls list it.
    await expect(bob.locator("#call-status")).to_have_text("Missed")
    await expect(bob.locator("#message")).to_have_text(f"{alice_id} hung up before you answered.")
    await expect(bob.locator("#history li.missed")).to_contain_text("Missed")
    await expect(bob.locator("#missed-count")).to_have_text("1")
    await bob.screenshot(path=artifacts_dir() / "cancelled-while-ringing-callee.png", full_page=True)
    await expect(alice.locator("#call-status")).to_have_text("Call Ended")
    assert (await mic(alice))["live"] == 0, "alice did not release the microphone"
    assert (await mic(bob))["opened"] == 0, "bob opened the microphone without accepting"


@pytest.mark.parametrize(
    ("typed", "explained"),
    [
        ("bad name!", "not a valid name"),
        ("x" * 65, "at most 64"),
        ("", "Please enter a name"),
        ("Zoë", "(“ë” not allowed)"),
    ],
    ids=["space-and-bang", "too-long", "empty", "accent"],
)
async def test_invalid_name_is_explained_without_connecting(
    server: ServerProcess, open_page: OpenPage, typed: str, explained: str
) -> None:
    """An invalid name gets an error under the name field saying what is allowed (not in the call card, a screen
    away on a phone), and no connection is attempted. The rule reads the same in the hint under the name and in the
    error, and names exactly the characters the check allows: an accented letter is refused, so neither says
    "letters". Typing again clears the error."""
    page = await open_page(server.http, "/", "user")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.evaluate("document.querySelector('#my-id').removeAttribute('maxlength')")
    await page.fill("#my-id", typed)
    await page.click("#connect")

    message = page.locator("#my-id-error")
    await expect(message).to_be_visible()
    await expect(page.locator("#message")).to_be_hidden()
    await expect(message).to_contain_text(explained)
    rule = "1\u201364 characters: a\u2013z, A\u2013Z, 0\u20139 and _ - . @ (no spaces or accents)"
    await expect(message).to_contain_text(rule)
    await expect(page.locator("#my-id-hint")).to_have_text(f"{rule}.")
    await expect(page.locator("#my-id")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#server-status")).to_have_text("Disconnected")
    assert sockets == [], f"the page tried to connect: {sockets}"
    assert await page.evaluate("window.peercall.signaling.state") == "disconnected"
    await page.locator("#my-id").press_sequentially("x")
    await expect(message).to_be_hidden()
    await expect(page.locator("#my-id")).not_to_have_attribute("aria-invalid", "true")


async def test_refused_microphone_is_explained_on_both_sides(fresh_server: ServerProcess, open_page: OpenPage) -> None:
    """A user who refuses the microphone is told why, and the call reads *Failed*; as a callee, the caller's call
    fails too (the server records it failed, user-media-failed) and says why."""
    a = await open_page(fresh_server.http, "/callerA.html", "A", deny_microphone=True)
    b = await open_page(fresh_server.http, "/callerB.html", "B")
    await connect(a)
    await connect(b)

    await b.click("#call")  # B calls A, A accepts, A's microphone is refused
    await expect(a.locator("#incoming")).to_be_visible()
    await a.click("#accept")
    await expect(a.locator("#message")).to_contain_text("Microphone access was denied")
    await expect(a.locator("#incoming")).to_be_hidden()
    await expect(a.locator("#call-status")).to_have_text("Failed")
    await expect(a.locator("#call-detail")).to_have_text("microphone access was denied")
    await expect(b.locator("#call-status")).to_have_text("Failed")
    await expect(b.locator("#call-detail")).to_have_text("a microphone could not be opened")
    await expect(b.locator("#message")).to_have_text("clientA could not open their microphone.")
    assert (await mic(b))["live"] == 0, "B did not release the microphone"

    await a.click("#call")  # A calls B: fails before anything is sent, so B never rings
    await expect(a.locator("#message")).to_contain_text("Microphone access was denied")
    await expect(a.locator("#call-status")).to_have_text("Failed")
    await expect(a.locator("#call")).to_be_enabled()
    await expect(b.locator("#incoming")).to_be_hidden()
    await expect(b.locator("#call-status")).to_have_text("Failed")  # still B's last call


async def test_second_caller_gets_busy_and_callee_is_not_disturbed(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """While A and B are in a call, a third caller gets "Busy" and B sees no incoming-call box."""
    a, b = await open_pair(open_page, fresh_server)
    await ring(a, b)
    await b.click("#accept")
    await expect(b.locator("#call-status")).to_have_text("Connected")

    carol = await open_page(fresh_server.http, "/?peer=clientB", "carol")
    await carol.fill("#my-id", "carol")
    await connect(carol)
    # Her page shows clientB in a call, and its Call button says so instead of calling (test_daily_use.py). A page
    # whose presence is behind (the call began a moment before) still calls: the server answers busy.
    await expect(carol.locator("#call")).to_have_attribute("aria-disabled", "true")
    await carol.evaluate(
        "() => { const b = document.getElementById('call'); b.removeAttribute('aria-disabled'); b.click(); }"
    )
    await expect(carol.locator("#call-status")).to_have_text("Busy")
    assert (await mic(carol))["live"] == 0, "carol did not release the microphone"
    await expect(b.locator("#incoming")).to_be_hidden()
    await expect(b.locator("#message")).to_be_hidden()
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await expect(a.locator("#call-status")).to_have_text("Connected")


async def test_caller_going_offline_while_ringing_ends_the_call(open_page: OpenPage) -> None:
    """If the caller's tab goes away while it rings, the callee rings on until the server says "Call lost"."""
    with run_server(PEERCALL_RESUME_GRACE="2") as server:
        a, b = await open_pair(open_page, server)
        await ring(a, b)
        await a.evaluate("window.peercall.signaling.disconnect()")  # as if the tab lost its connection
        # Presence says clientA is offline at once, but the server keeps the call for the resume grace.
        await expect(b.locator('#online button[data-peer="clientA"]')).to_be_hidden()
        assert await b.locator("#incoming").is_visible(), "B stopped ringing on presence alone"
        await expect(b.locator("#incoming")).to_be_hidden()
        await expect(b.locator("#call-status")).to_have_text("Call lost")
        await expect(b.locator("#message")).to_have_text("clientA went offline.")


async def test_page_reconnects_by_itself_after_a_server_restart(open_page: OpenPage, uid: Callable[[str], str]) -> None:
    """A server restart (close 1001) shows "Reconnecting…"; once the server is back the page is online again."""
    name = uid("dana")
    with run_server() as first:
        port = first.port
        page = await open_page(first.http, "/", "dana")
        await page.fill("#my-id", name)
        await connect(page)
        await page.evaluate(
            """() => {
              window.__e2e.closes = [];
              window.peercall.signaling.addEventListener("statechange", (e) => {
                if (e.detail.code !== undefined) window.__e2e.closes.push(e.detail);
              });
            }"""
        )
        await asyncio.to_thread(first.stop)
        await expect(page.locator("#server-status")).to_have_text("Reconnecting…")
        await expect(page.locator("#call")).to_be_disabled()
        first_close = await page.evaluate("window.__e2e.closes[0]")
        assert first_close["code"] == 1001, f"expected 1001 going away, got {first_close}"
        assert first_close["state"] == "reconnecting" and first_close["reason"] == "The server is restarting."
    with run_server(PEERCALL_PORT=str(port)) as second:
        await expect(page.locator("#server-status")).to_have_text("Connected")
        await expect(page.locator("#message")).to_have_text("Reconnected to the server.")
        other = await open_page(second.http, "/", "erin")
        await other.fill("#my-id", uid("erin"))
        await connect(other)
        await expect(other.locator(f'#online button[data-peer="{name}"]')).to_be_visible()
        await expect(page.locator("#call")).to_be_enabled()


async def test_an_error_on_screen_outlasts_the_reconnection(open_page: OpenPage, uid: Callable[[str], str]) -> None:
    """What went wrong while the server was away (a call that failed meanwhile says why) is still on screen once
    the page is connected again: "Reconnected to the server." shows only where no warning or error is."""
    with run_server() as first:
        port = first.port
        page = await open_page(first.http, "/", "fay")
        await page.fill("#my-id", uid("fay"))
        await connect(page)
        await asyncio.to_thread(first.stop)
        await expect(page.locator("#server-status")).to_have_text("Reconnecting…")
        failed = "The audio connection was lost and could not be restored (the network may have changed)."
        await page.evaluate("async (text) => (await import('/js/ui.js')).say(text, 'error')", failed)
    with run_server(PEERCALL_PORT=str(port)):
        await expect(page.locator("#server-status")).to_have_text("Connected")
        await expect(page.locator("#message")).to_have_text(failed)


async def test_terminal_close_is_explained_and_not_retried(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """When the same device connects again elsewhere (close 4501), the page says so and does not reconnect."""
    name = uid("fay")
    page = await open_page(server.http, "/", "fay")
    await page.fill("#my-id", name)
    await connect(page)
    device = await page.evaluate("window.peercall.signaling.welcome.device")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    async with websockets.connect(f"{server.ws}?id={name}&device={device}") as takeover:
        assert json.loads(await takeover.recv())["type"] == "welcome"
        await expect(page.locator("#server-status")).to_have_text("Disconnected")
        await expect(page.locator("#message")).to_contain_text("the same device connected again")
        await expect(page.locator("#connect")).to_be_enabled()
        with pytest.raises(PlaywrightError):  # no reconnect attempt within several backoff periods
            await page.wait_for_event("websocket", timeout=1500 * SCALE)
        assert sockets == []
