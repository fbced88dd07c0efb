"""Fixtures for the browser end-to-end tests: Debian's Chromium driven by Playwright (async API), and Debian's
Firefox ESR driven through Marionette (`open_firefox`, tests/e2e/firefox.py) for the calls between the two.

One browser per session, a fresh browser context (own storage, own fake microphone) per page. The tests
must run inside a network namespace that has nothing but loopback, so that no media or DNS ever leaves
127.0.0.1: `scripts/loopback-only .venv/bin/pytest tests/e2e -x -v`.

The async API, not the sync one: a session-scoped sync Playwright leaves its event loop marked as running
between calls, which breaks every pytest-asyncio test that runs after it in the same session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    async_playwright,
    expect,
)

from tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, SCALE

from .firefox import FirefoxPage, start_firefox

TIMEOUT_MS = int(10_000 * SCALE)
"""How long to wait for anything a user would see "at once" (a status, a call connecting on loopback)."""


# Runs in every page before its scripts: remember every stream getUserMedia hands out, so that a test can
# tell whether the page opened the microphone, and whether it released it (all tracks "ended").
TRACK_MICROPHONE = """
(() => {
  const streams = [];
  window.__e2e = { streams };
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) return;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    streams.push(stream);
    return stream;
  };
})();
"""

# Runs in every page after TRACK_MICROPHONE: remember every WebSocket the page opens (`window.__e2e.sockets`), so
# that a test can close one as a network blip would; while `window.__e2e.blockSockets` is true, new sockets go
# to a path of the page's own server that is no WebSocket (404) and fail at once, as when the network is down (its own
# origin: the CSP, `connect-src 'self'`, blocks any other, and a socket it blocks never closes).
TRACK_SOCKETS = """
(() => {
  const e2e = window.__e2e;
  const Native = window.WebSocket;
  e2e.sockets = [];
  e2e.blockSockets = false;
  window.WebSocket = class TrackedWebSocket extends Native {
    constructor(url, protocols) {
      const blocked = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/network-down`;
      super(e2e.blockSockets ? blocked : url, protocols);
      e2e.sockets.push(this);
    }
  };
})();
"""

# Runs in a page whose user refuses the microphone: getUserMedia fails as when the permission is denied.
DENY_MICROPHONE = """
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException("Permission denied", "NotAllowedError");
};
"""

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def loopback_only() -> None:
    """Fail (never skip) unless this process is in a network namespace whose only interface is `lo`.

    Asks the kernel for this process's own interfaces (netlink, via `if_nameindex`). `/sys/class/net` is not
    enough: it shows the namespace of whoever mounted sysfs, so after `unshare --net` without a fresh
    `mount -t sysfs` (as scripts/loopback-only does today) it still lists the host's interfaces.
    """
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        pytest.fail(
            f"browser tests must run in a loopback-only network namespace, but this one has the interfaces "
            f"{', '.join(interfaces)}. Run them as: scripts/loopback-only .venv/bin/pytest tests/e2e -x -v",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """/usr/bin/chromium; fails (never skips) if it is not installed."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium). "
            "Do not use `playwright install`: its browser download cannot work here.",
            pytrace=False,
        )
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def playwright(loopback_only: None) -> AsyncIterator[Playwright]:
    """The Playwright driver, one for the whole session."""
    async with async_playwright() as driver:
        yield driver


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(playwright: Playwright, chromium_path: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium with a fake microphone, headless: one for the whole session."""
    chromium = await playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS)
    try:
        yield chromium
    finally:
        await chromium.close()


LaunchBrowser = Callable[..., Awaitable[Browser]]


@pytest_asyncio.fixture(loop_scope="session")
async def launch_browser(playwright: Playwright, chromium_path: Path) -> AsyncIterator[LaunchBrowser]:
    """`await launch_browser("--ignore-certificate-errors")` -> a Chromium of the test's own, with the usual
    flags plus these; closed at the end of the test."""
    launched: list[Browser] = []

    async def _launch(*extra_flags: str) -> Browser:
        chromium = await playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=[*CHROMIUM_FLAGS, *extra_flags]
        )
        launched.append(chromium)
        return chromium

    yield _launch
    for chromium in launched:
        await chromium.close()


@dataclass
class Opened:
    """A page opened by `open_page`, with what it logged."""

    page: Page
    name: str
    context: BrowserContext
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


OpenPage = Callable[..., Awaitable[Page]]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(
    browser: Browser, launch_browser: LaunchBrowser, request: pytest.FixtureRequest
) -> AsyncIterator[OpenPage]:
    """`await open_page(base_url, "/callerA.html", "A")` -> a Page in a browser context of its own.

    `deny_microphone=True`: the user refuses the microphone in that page. `in_browser=`: open it in that
    browser (one from `launch_browser`, which this fixture depends on so that such a browser outlives its
    pages) instead of the session's.

    At the end: if the test failed, save a screenshot of every page and print their console logs; in any
    case fail if a page had an uncaught JavaScript error.
    """
    opened: list[Opened] = []

    async def _open(
        base_url: str, path: str, name: str, *, deny_microphone: bool = False, in_browser: Browser | None = None
    ) -> Page:
        context = await (in_browser or browser).new_context(base_url=base_url, viewport={"width": 1100, "height": 760})
        await context.add_init_script(TRACK_MICROPHONE)
        await context.add_init_script(TRACK_SOCKETS)
        if deny_microphone:
            await context.add_init_script(DENY_MICROPHONE)
        page = await context.new_page()
        entry = Opened(page, name, context)
        opened.append(entry)

        def on_console(msg: ConsoleMessage) -> None:
            entry.console.append(f"[{name}] {msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: entry.errors.append(f"[{name}] {exc}"))
        await page.goto(path)
        return page

    yield _open

    report = getattr(request.node, "report_call", None)
    failed = report is not None and report.failed
    try:
        if failed:
            for entry in opened:
                if not entry.page.is_closed():
                    shot = artifacts_dir() / f"failed-{request.node.name}-{entry.name}.png"
                    await entry.page.screenshot(path=shot, full_page=True)
                    print(f"screenshot of {entry.name}: {shot}")
            for entry in opened:
                print(f"---- console of {entry.name} ----")
                print("\n".join(entry.console) or "(nothing)")
    finally:
        for entry in opened:
            await entry.context.close()
    errors = [e for entry in opened for e in entry.errors]
    if errors:
        pytest.fail("uncaught JavaScript errors:\n" + "\n".join(errors), pytrace=False)


def artifacts_dir() -> Path:
    """The artifacts folder (tests.conftest.ARTIFACTS, outside the checkout), created on demand."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)


# ---- Firefox ESR (tests/e2e/firefox.py): the other browser of the mixed Firefox <-> Chromium calls ----------

OpenFirefox = Callable[..., Awaitable[FirefoxPage]]


@pytest_asyncio.fixture(loop_scope="session")
async def open_firefox(loopback_only: None, request: pytest.FixtureRequest) -> AsyncIterator[OpenFirefox]:
    """`await open_firefox(base_url, "/callerA.html", "A")` -> the page of a headless Firefox ESR of its own.

    Each gets a fresh profile, with the microphone permission stored for the exact origin of `base_url` (and the
    camera's too with `camera=True`): without it Firefox gathers no ICE candidates in the loopback-only
    namespace. At the end: if the test failed, a screenshot and Firefox's output; in any case Firefox quits and
    its profile is deleted; then the test fails if a page logged a `console.error` or had an uncaught error in a
    script of its origin (unless the test took those with `errors(take=True)`).
    """
    opened: list[FirefoxPage] = []

    async def _open(base_url: str, path: str, name: str, *, camera: bool = False) -> FirefoxPage:
        firefox = await asyncio.to_thread(start_firefox)
        page = FirefoxPage(firefox, name, base_url.rstrip("/"))
        opened.append(page)
        await asyncio.to_thread(firefox.grant, page.origin, "microphone", *(["camera"] if camera else []))
        await page.goto(page.origin + path)
        return page

    yield _open

    report = getattr(request.node, "report_call", None)
    failed = report is not None and report.failed
    errors: list[str] = []
    for page in opened:
        try:
            if failed:
                with contextlib.suppress(Exception):
                    shot = artifacts_dir() / f"failed-{request.node.name}-{page.name}.png"
                    await page.screenshot(shot)
                    print(f"screenshot of {page.name} (Firefox): {shot}")
                print(f"---- output of {page.name} (Firefox) ----")
                print("\n".join(page.firefox.output) or "(nothing)")
            try:
                errors += [f"[{page.name}] {e}" for e in await page.errors()]
            except Exception as exc:  # the page is gone: its uncaught errors are still in Firefox's output
                print(f"could not read {page.name}'s console errors: {exc}")
                errors += [f"[{page.name}] {e}" for e in page.firefox.uncaught_errors(page.origin)]
        finally:
            await asyncio.to_thread(page.firefox.quit)
    if errors:
        pytest.fail("the Firefox page logged errors:\n" + "\n".join(errors), pytrace=False)
