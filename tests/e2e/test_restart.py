"""A restart of the server (one node) in the middle of a call between two pages: the call goes on."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.conftest import run_server

from .conftest import OpenPage
from .steps import assert_audio_flows, open_pair, start_call

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_a_call_goes_on_across_a_server_restart(open_page: OpenPage) -> None:
    """clientA and clientB are in a call when the server restarts (SIGTERM, a new process on the same port and
    database, as `systemctl restart` does). Both pages say Reconnecting, then Connected, the call is never lost,
    the audio goes on, and after the hang-up both pages list the call in Recent calls."""
    with tempfile.TemporaryDirectory(prefix="peercall-restart-") as folder:
        env = {"PEERCALL_DATABASE_URL": f"sqlite:///{Path(folder) / 'history.sqlite3'}"}
        with run_server(**env) as first:
            port = first.port
            a, b = await open_pair(open_page, first)
            await start_call(a, b)
            await asyncio.to_thread(first.stop)
            await expect(a.locator("#server-status")).to_have_text("Reconnecting…")
        with run_server(**env, PEERCALL_PORT=str(port)) as second:
            for page in (a, b):
                await expect(page.locator("#server-status")).to_have_text("Connected")
            await asyncio.sleep(3)  # past the page's wait for the server to hand the call back (resume.js: 2 s)
            for page in (a, b):
                await expect(page.locator("#call-status")).to_have_text("Connected")
            await assert_audio_flows(b, "B, after the restart")
            await a.click("#hangup")
            for page in (a, b):
                await expect(page.locator("#call-status")).to_have_text("Call Ended")
                await expect(page.locator("#history li").first).to_contain_text("Answered")
            assert "took over 1 call(s) under way" in second.log(), second.log()


async def test_while_the_page_reconnects_people_keeps_what_the_server_said(open_page: OpenPage) -> None:
    """On a server that lists contacts only, the server goes away: People still says that contacts are listed in
    the Contacts card (no search box that finds nobody, no "Connect" hint on a page that is connected as far as
    the user is concerned) and the user's own line keeps their name, marked as reconnecting."""
    with run_server(PEERCALL_DIRECTORY="contacts") as server:
        page = await open_page(server.http, "/callerA.html", "A")
        await page.click("#connect")
        await expect(page.locator("#server-status")).to_have_text("Connected")
        await expect(page.locator("#people-contacts-only")).to_be_visible()
        await asyncio.to_thread(server.stop)
        await expect(page.locator("#server-status")).to_have_text("Reconnecting…")
        await expect(page.locator("#people-contacts-only")).to_be_visible()
        await expect(page.locator("#contact-filter")).to_be_hidden()
        await expect(page.locator("#my-name")).to_have_text("clientA")
        await expect(page.locator("#my-status")).to_have_text("Reconnecting…")
