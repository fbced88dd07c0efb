"""Fixtures for the Python client SDK tests: SDK clients on a real server, and Debian's Chromium running the web client.

Media only ever touches loopback: these tests run in a network namespace that has nothing but `lo`
(`scripts/loopback-only .venv/bin/pytest tests/sdk -q`), every SDK client offers 127.0.0.1 as its ICE candidate
(`ice_loopback=True`: aioice leaves it out by default), and the servers hand out no ICE servers.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from peercall.client import Call, Client
from peercall.client.check import sample_path
from peercall.client.media import Pcm, read_wav
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS, SCALE, ServerProcess

WAIT = 10.0 * SCALE
"""Seconds to wait for anything that happens "at once" on loopback (a call connecting, audio arriving)."""


AUDIBLE_ENERGY = 0.01
"""Growth of getStats' totalAudioEnergy that means sound, not silence: a second at -20 dBFS adds 0.01 (Opus-coded
digital silence adds about 1e-10)."""

# The page's audio as getStats() reports it.
AUDIO_STATS = """
async () => {
  const pc = window.peercall.pc;
  if (!pc) return null;
  const out = { connectionState: pc.connectionState, inbound: null, outbound: null };
  for (const r of (await pc.getStats()).values()) {
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      out.inbound = { packetsReceived: r.packetsReceived, totalAudioEnergy: r.totalAudioEnergy ?? 0 };
    }
    if (r.type === "outbound-rtp" && r.kind === "audio") out.outbound = { packetsSent: r.packetsSent };
  }
  return out;
}
"""


@pytest.fixture(scope="session", autouse=True)
def loopback_only() -> None:
    """Fail (never skip) unless this process is in a network namespace whose only interface is `lo`."""
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        pytest.fail(
            f"the SDK tests make real WebRTC calls and must run in a loopback-only network namespace, but this one "
            f"has {', '.join(interfaces)}. Run them as: scripts/loopback-only .venv/bin/pytest tests/sdk -q",
            pytrace=False,
        )


MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def sdk(server: ServerProcess) -> AsyncIterator[MakeClient]:
    """`await sdk("alice")` -> a connected `Client` (loopback candidates on); `srv=` picks another server.

    All are closed at the end of the test.
    """
    made: list[Client] = []

    async def make(user: str, srv: ServerProcess | None = None, **kwargs: Any) -> Client:
        client = Client((srv or server).ws, user, ice_loopback=True, **kwargs)
        made.append(client)
        await client.connect()
        return client

    yield make
    for client in reversed(made):
        await client.close()


async def next_incoming(client: Client) -> Call:
    """The next call that rings `client` (waits at most WAIT seconds)."""
    async with client.incoming() as calls, asyncio.timeout(WAIT):
        async for call in calls:
            return call
    raise AssertionError(f"{client.id}: no incoming call")


@pytest.fixture(scope="session")
def speech() -> tuple[Pcm, int]:
    """The shipped speech sample: (mono int16 samples, sample rate)."""
    return read_wav(sample_path())


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """/usr/bin/chromium; fails (never skips) if it is not installed."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)", pytrace=False)
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium with a fake microphone, headless; closed at the end of the test."""
    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


OpenPage = Callable[[str, str], Awaitable[Page]]


@pytest.fixture
async def open_page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[OpenPage]:
    """`await open_page(server.http, "alice")` -> the web client (`/?processing=off`) connected as `alice`.

    Its console is printed if the test fails.
    """
    contexts = []
    logs: list[str] = []

    async def open_(base: str, user: str) -> Page:
        context = await browser.new_context()
        contexts.append(context)
        page = await context.new_page()
        page.on("console", lambda msg: logs.append(f"[{user}] {msg.type}: {msg.text}"))
        await page.goto(f"{base}/?processing=off")
        await page.fill("#my-id", user)
        await page.click("#connect")
        await wait_text(page, "#server-status", "Connected")
        return page

    yield open_
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print("\n".join(logs[-200:]))
    for context in contexts:
        await context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep the call phase's report on the item, so that fixtures can tell whether the test failed."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


async def wait_until(
    probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], what: str, timeout: float = WAIT
) -> Any:
    """Poll `probe()` every 100 ms until `ok(value)`; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not ok(value):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.1)
        value = await probe()
    return value


async def wait_text(page: Page, selector: str, text: str, timeout: float = WAIT) -> None:
    """Wait until `selector`'s text is `text`."""

    async def read() -> str:
        return (await page.text_content(selector) or "").strip()

    await wait_until(read, lambda value: value == text, f"{selector} to read {text!r}", timeout)


async def page_audio(page: Page) -> Any:
    """The page's current call audio stats (inbound packets and energy), or None without a call."""
    return await page.evaluate(AUDIO_STATS)


async def assert_page_hears(page: Page, who: str) -> None:
    """`who`'s page receives audio: packets keep arriving and they carry sound (the energy grows clearly)."""
    first = await wait_until(
        lambda: page_audio(page),
        lambda s: bool(s and s["inbound"] and s["inbound"]["packetsReceived"] > 0),
        f"{who} to receive audio packets",
    )
    before = first["inbound"]
    await wait_until(
        lambda: page_audio(page),
        lambda s: bool(
            s
            and s["inbound"]
            and s["inbound"]["packetsReceived"] >= before["packetsReceived"] + 40
            and s["inbound"]["totalAudioEnergy"] > before["totalAudioEnergy"] + AUDIBLE_ENERGY
        ),
        f"{who}'s inbound audio to grow by 40 packets, carrying sound",
    )


async def run_python(
    *argv: str, what: str, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run this interpreter with `argv` (in this network namespace); its exit status and output.

    `what` names it in the failure when it does not finish within `timeout` seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.communicate()
        raise
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"{what} did not finish in {timeout}s:\n{out.decode()}") from None
    return proc.returncode or 0, out.decode()
