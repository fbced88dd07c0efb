""" "Test my audio": the web client calls the server's echo service, measures the call, and hangs up by itself.

The echo runs beside the server (`peercall serve --with-echo`, as user `echo`), with loopback ICE candidates,
so the whole test call stays on 127.0.0.1. Nothing sleeps and then asserts: every step waits for what the
user would see, with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from playwright.async_api import Locator, expect

from tests.conftest import SERVICE_TOKEN, ServerProcess, run_server

from .conftest import SCALE, TIMEOUT_MS, OpenPage, artifacts_dir, dump
from .steps import connect, mic, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

CHECK_MS = 7000
"""How long the page's audio check listens once connected (CHECK_MS in js/audiocheck.js)."""
METRICS = ["rtt-ms", "jitter-ms", "loss-pct", "mos", "path", "mic", "heard", "echo-delay-ms", "one-way-ms"]


async def metrics(panel: Locator) -> dict[str, str | None]:
    """The measurements the result panel carries in its data- attributes."""
    return {name: await panel.get_attribute(f"data-{name}") for name in METRICS}


async def test_test_my_audio_measures_a_call_to_the_echo_and_hangs_up(
    open_page: OpenPage, uid: Callable[[str], str], record_property: Callable[[str, Any], None]
) -> None:
    """With `serve --with-echo`, "Test my audio" calls echo, hears the mic back directly, scores it, hangs up."""
    # no PEERCALL_SERVICE_TOKEN: serve makes one for the echo it starts, which takes the reserved id `echo` with it
    with run_server(PEERCALL_WITH_ECHO="1", PEERCALL_ICE_LOOPBACK="1", PEERCALL_SERVICE_TOKEN=None) as srv:
        ready = await asyncio.to_thread(srv.wait_log, "echo service answering", TIMEOUT_MS / 1000)
        assert ready, f"the echo service did not start:\n{srv.log()}"
        page = await open_page(srv.http, "/", "alice")
        button = page.locator("#test-audio")
        await expect(button).to_be_disabled()  # not connected yet
        await page.fill("#my-id", uid("alice"))
        await connect(page)
        await expect(button).to_be_enabled()  # echo is online (welcome or presence)
        await expect(button).to_have_text("Test my audio")
        assert await mic(page) == {"opened": 0, "live": 0}, "the page opened the microphone before the test"

        await button.click()
        panel = page.locator("#audio-check")
        await expect(panel).to_be_visible()
        await expect(page.locator("#call-status")).to_have_text("Connected")
        await expect(page.locator("#call-peer")).to_have_text("with echo")
        await expect(panel).to_have_attribute("data-state", "measuring")
        await expect(page.locator("#audio-check-progress")).to_be_visible()
        await expect(button).to_be_disabled()
        assert (await mic(page))["live"] == 1, "the microphone should be open during the test"
        await page.screenshot(path=artifacts_dir() / "audio-check-running.png", full_page=True, animations="disabled")

        # It listens for CHECK_MS, then hangs up by itself.
        await expect(panel).to_have_attribute("data-state", "done", timeout=CHECK_MS + TIMEOUT_MS)
        await expect(page.locator("#call-status")).to_have_text("Call Ended")
        await expect(page.locator("#message")).to_be_hidden()
        await wait_until(lambda: mic(page), lambda m: m["live"] == 0, "the page to release the microphone")
        await expect(button).to_be_enabled()  # ready for another test

        values = await metrics(panel)
        print(f"audio check on loopback: {dump(values)}")
        for name, value in values.items():
            record_property(name, value)
        assert values["path"] == "direct", f"the test call was not peer to peer: {dump(values)}"
        assert values["mic"] == "working", f"the fake microphone's beeps were not noticed: {dump(values)}"
        assert values["heard"] == "yes", f"the page did not hear its beeps back from the echo: {dump(values)}"
        assert float(values["loss-pct"] or "nan") < 5, f"packet loss on loopback: {dump(values)}"
        assert float(values["mos"] or "nan") >= 3.5, f"MOS too low for loopback: {dump(values)}"
        assert float(values["rtt-ms"] or "nan") < 100 * SCALE, f"round trip too long for loopback: {dump(values)}"
        assert values["jitter-ms"] is not None, f"no jitter reported: {dump(values)}"
        echo_delay = float(values["echo-delay-ms"] or "nan")
        assert 400 <= echo_delay <= 2000 * SCALE, f"the echo (0.7 s) came back after {echo_delay} ms: {dump(values)}"

        # What the user reads matches the numbers.
        await expect(page.locator("#audio-check-summary")).to_contain_text("Your audio works")
        await expect(page.locator("#audio-check-mic")).to_have_text("Working")
        await expect(page.locator("#audio-check-heard")).to_contain_text("Yes")
        await expect(page.locator("#audio-check-path")).to_contain_text("Direct (P2P)")
        # (data-mos has two decimals, the text one, both rounded from the same number: 4.35 may read 4.3 or 4.4)
        mos = float(values["mos"] or 0)
        shown = "|".join(re.escape(f"{m:.1f}") for m in sorted({round(mos - 0.005, 1), round(mos + 0.005, 1)}))
        await expect(page.locator("#audio-check-mos")).to_contain_text(re.compile(rf"^({shown}) of 4\.5"))
        # The test call is an ordinary call: it shows in the history.
        entry = page.locator('#history li[data-direction="outgoing"]').first
        await expect(entry).to_contain_text("echo")
        await expect(entry).to_have_attribute("data-outcome", "answered")

        await page.mouse.move(0, 0)  # no hover effect in the pictures
        await page.screenshot(path=artifacts_dir() / "audio-check.png", full_page=True, animations="disabled")
        await page.emulate_media(color_scheme="dark")
        await page.screenshot(path=artifacts_dir() / "audio-check-dark.png", full_page=True, animations="disabled")


async def test_test_my_audio_is_disabled_and_says_why_without_an_echo(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """Without a user `echo` online the button is disabled and says why; it follows echo's presence."""
    page = await open_page(server.http, "/", "alice")
    button = page.locator("#test-audio")
    hint = page.locator("#test-audio-hint")
    await expect(button).to_be_disabled()
    await expect(button).to_have_attribute("title", "Connect first: the test calls the server's echo service.")

    await page.fill("#my-id", uid("alice"))
    await connect(page)
    await expect(button).to_be_disabled()
    await expect(button).to_have_attribute("title", re.compile(r"^No echo service is online on this server"))
    await expect(hint).to_contain_text("No echo service is online on this server")
    await expect(button).to_have_attribute("aria-describedby", "test-audio-hint")
    await expect(page.locator("#audio-check")).to_be_hidden()

    # Someone connects as `echo` (presence): the button comes alive; when it leaves, it goes back.
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}  # `echo` is reserved for the server's service
    async with websockets.connect(f"{server.ws}?id=echo", additional_headers=service) as echo:
        await echo.recv()  # welcome
        await expect(button).to_be_enabled()
        await expect(hint).to_contain_text("Calls the echo service")
    await expect(button).to_be_disabled()
    await expect(hint).to_contain_text("No echo service is online on this server")


async def test_mos_estimate_follows_the_documented_e_model(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """The page's MOS is G.107's: R = 93.2 - Id - Ie,eff with Ie = 0, Bpl = 15, and the R-to-MOS curve."""
    page = await open_page(server.http, "/", "alice")
    cases = [  # (one-way delay ms, loss %) -> (R, MOS), worked out from the formulas in quality.js's JSDoc
        ((0, 0), (93.2, 4.409)),  # nothing lost, no delay: G.107's default R
        ((100, 0), (90.8, 4.358)),  # Id = 0.024 * 100
        ((277.3, 0), (75.545, 3.845)),  # Id = 0.024 * 277.3 + 0.11 * (277.3 - 177.3)
        ((0, 1), (87.2625, 4.266)),  # Ie,eff = 95 * 1 / (1 + 15)
        ((0, 5), (69.45, 3.571)),  # Ie,eff = 95 * 5 / (5 + 15)
        ((1000, 0), (-21.297, 1.0)),  # R below 0: MOS 1
    ]
    got = await page.evaluate(
        """async (cases) => {
          const { eModel } = await import("./js/quality.js");
          return cases.map(([[delayMs, lossPct]]) => eModel({ delayMs, lossPct }));
        }""",
        cases,
    )
    for ((delay, loss), (r, mos)), model in zip(cases, got, strict=True):
        assert model["r"] == pytest.approx(r, abs=1e-3), f"R for {delay} ms, {loss} %: {dump(model)}"
        assert model["mos"] == pytest.approx(mos, abs=1e-3), f"MOS for {delay} ms, {loss} %: {dump(model)}"


async def test_in_token_mode_the_echo_is_public_and_test_my_audio_works_without_contacts(
    open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """Token mode shows presence to contacts and rings for contacts only: the echo (a reserved id, a service) is
    the exception. A user with no contacts sees `echo` online in their welcome, and "Test my audio" calls it and
    hears it; another user online without contacts stays unseen."""
    from tests.e2e.test_auth_turn_tls import AUTH_SECRET, token_for

    with run_server(
        PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET=AUTH_SECRET, PEERCALL_WITH_ECHO="1", PEERCALL_ICE_LOOPBACK="1"
    ) as srv:
        ready = await asyncio.to_thread(srv.wait_log, "echo service answering", TIMEOUT_MS / 1000)
        assert ready, f"the echo service did not start:\n{srv.log()}"
        alice, bob = uid("alice"), uid("bob")
        async with websockets.connect(srv.ws, additional_headers={"Authorization": f"Bearer {token_for(bob, 600)}"}):
            async with websockets.connect(
                srv.ws, additional_headers={"Authorization": f"Bearer {token_for(alice, 600)}"}
            ) as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_MS / 1000))
            assert welcome["type"] == "welcome" and welcome["directory"] == "contacts"
            assert welcome["online"] == ["echo"]  # the service, not bob

            page = await open_page(srv.http, f"/#token={token_for(alice, 600)}", "alice")
            await connect(page)
            button = page.locator("#test-audio")
            await expect(button).to_be_enabled()  # echo is online for her
            await button.click()
            panel = page.locator("#audio-check")
            await expect(page.locator("#call-peer")).to_have_text("with echo")
            await expect(panel).to_have_attribute("data-state", "done", timeout=CHECK_MS + TIMEOUT_MS)
            values = await metrics(panel)
            assert values["heard"] == "yes", f"the page did not hear its beeps back from the echo: {dump(values)}"
