"""Steps shared by the browser tests: what a user does (connect, call, ring) and what proves it worked (audio
flows), each waiting for what the user would see, with a timeout. Nothing here sleeps and then asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, WebSocket, expect

from tests.conftest import ARTIFACTS, ROOT, ServerProcess

from .conftest import SCALE, TIMEOUT_MS, OpenPage, dump

# The page's audio as getStats() reports it: the inbound audio stream, the outbound one, and the candidate
# pair that the transport selected (or, failing that, the nominated pair that succeeded).
AUDIO_STATS = """
async () => {
  const pc = window.peercall.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  const out = { connectionState: pc.connectionState, inbound: null, outbound: null, pair: null };
  let pair = null;
  for (const r of stats.values()) {
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      out.inbound = { packetsReceived: r.packetsReceived, totalAudioEnergy: r.totalAudioEnergy ?? 0,
                      audioLevel: r.audioLevel ?? 0, bytesReceived: r.bytesReceived, at: r.timestamp };
    }
    if (r.type === "outbound-rtp" && r.kind === "audio") out.outbound = { packetsSent: r.packetsSent };
    if (r.type === "transport" && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
  }
  if (!pair) {
    for (const r of stats.values()) {
      if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r;
    }
  }
  if (pair) {
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    out.pair = { state: pair.state, local: local?.candidateType, remote: remote?.candidateType,
                 localAddress: local?.address, remoteAddress: remote?.address, protocol: local?.protocol };
  }
  return out;
}
"""

# Microphone streams the page opened (see TRACK_MICROPHONE in conftest.py).
MIC = """
() => {
  const tracks = window.__e2e.streams.flatMap((s) => s.getTracks());
  return { opened: window.__e2e.streams.length, live: tracks.filter((t) => t.readyState === "live").length };
}
"""


async def wait_until(
    probe: Callable[[], Awaitable[Any]],
    ok: Callable[[Any], bool],
    what: str,
    timeout: float = TIMEOUT_MS / 1000,
) -> Any:
    """Poll `probe()` every 100 ms until `ok(value)`; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not ok(value):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}; last value:\n{dump(value)}")
        await asyncio.sleep(0.1)
        value = await probe()
    return value


async def connect(page: Page) -> None:
    """Click Connect and wait until the page says it is connected to the server."""
    await page.click("#connect")
    await expect(page.locator("#server-status")).to_have_text("Connected")


async def mic(page: Page) -> dict[str, int]:
    return await page.evaluate(MIC)


async def audio_stats(page: Page) -> dict[str, Any] | None:
    return await page.evaluate(AUDIO_STATS)


async def assert_audio_flows(page: Page, who: str) -> dict[str, Any]:
    """`who`'s page receives audio: packets keep arriving (~50/s) and they carry sound (energy grows).

    The rate is read on the page's own clock (the stats' timestamps), not on ours: the test's polling is slow on a
    loaded machine and would make a steady stream look slow. A window that starts in a pause the call was meant to
    get through (an ICE restart) is followed by the next, until one of 40 packets (0.8 s of Opus) or more shows
    the stream, or `5 * SCALE` seconds have passed."""
    first = await wait_until(
        lambda: audio_stats(page),
        lambda s: bool(s and s["inbound"] and s["inbound"]["packetsReceived"] > 0),
        f"{who} to receive audio packets",
    )
    deadline = time.monotonic() + 5 * SCALE
    before, rate = first["inbound"], 0.0
    while True:
        later = await wait_until(
            lambda: audio_stats(page),
            lambda s, before=before: (
                s["inbound"]["packetsReceived"] >= before["packetsReceived"] + 40
                and s["inbound"]["totalAudioEnergy"] > before["totalAudioEnergy"]
            ),
            f"{who}'s inbound audio to grow by 40 packets (0.8 s of Opus) with rising energy",
            timeout=max(deadline - time.monotonic(), 0.5),
        )
        after = later["inbound"]
        rate = (after["packetsReceived"] - before["packetsReceived"]) / max((after["at"] - before["at"]) / 1000, 1e-3)
        if rate > 25 or time.monotonic() > deadline:
            break
        before = after
    assert rate > 25, f"{who} receives only {rate:.0f} packets/s (expected about 50): {dump(later)}"
    assert after["totalAudioEnergy"] > 0, f"{who} receives silence: {dump(later)}"
    return later


async def open_pair(open_page: OpenPage, server: ServerProcess) -> tuple[Page, Page]:
    """The two-tab demo: clientA and clientB, both connected to the server."""
    a = await open_page(server.http, "/callerA.html", "A")
    b = await open_page(server.http, "/callerB.html", "B")
    await connect(a)
    await connect(b)
    await expect(a.locator('#online button[data-peer="clientB"]')).to_be_visible()
    return a, b


async def ring(a: Page, b: Page, caller: str = "clientA") -> None:
    """`a` clicks Call; `b` sees the highlighted incoming-call box with the caller's name."""
    await a.click("#call")
    await expect(a.locator("#call-status")).to_have_text("Requesting")
    await expect(b.locator("#incoming")).to_be_visible()
    await expect(b.locator("#incoming")).to_contain_text(caller)
    await expect(b.locator("#call-status")).to_have_text("Incoming call")


# ---- helpers of the experience tests (test_experience*.py) ------------------------------------------------

SCREENS = ARTIFACTS / "screens"
"""Where the screenshots of every screen go: <screen>-<desktop|phone>-<light|dark>.png."""
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}

AXE_ENV = "PEERCALL_AXE_JS"
"""Names axe-core's axe.min.js; by default the copy `npm install --prefix bench/.work/axe axe-core@4` puts in place."""
DEFAULT_AXE = ROOT / "bench" / ".work" / "axe" / "node_modules" / "axe-core" / "axe.min.js"


async def shoot(page: Page, screen: str, *, keep_focus: bool = False) -> list[Path]:
    """Screenshots of the page as it is now, at desktop (1280x800) and phone (390x844) size, light and dark."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    await page.mouse.move(0, 0)  # no hover effect in the pictures
    if not keep_focus:  # nor a focus ring
        await page.evaluate("document.activeElement?.blur()")
    paths = []
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        for size_name, size in SIZES.items():
            await page.set_viewport_size(size)
            path = SCREENS / f"{screen}-{size_name}-{scheme}.png"
            await page.screenshot(path=path, full_page=True, animations="disabled")
            paths.append(path)
    await page.emulate_media(color_scheme="light")
    if original:
        await page.set_viewport_size(original)
    return paths


def axe_source() -> str:
    """The text of axe.min.js (fails, naming the fix, when it is not installed)."""
    path = Path(os.environ.get(AXE_ENV) or DEFAULT_AXE)
    if not path.is_file():
        pytest.fail(
            f"axe-core is missing: {path} does not exist. Install it before entering the loopback-only namespace "
            f"with `npm install --prefix bench/.work/axe axe-core@4`, or set {AXE_ENV} to an axe.min.js.",
            pytrace=False,
        )
    return path.read_text()


async def check_accessibility(page: Page, screen: str) -> list[dict[str, Any]]:
    """Run axe-core on the page in light and in dark mode; fail on any serious or critical violation."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        # Through the devtools protocol, not an inline <script>/<style> tag: the page's CSP blocks those.
        await page.evaluate(axe_source())
        # Colours are checked as they settle: no transition caught half-way after a state or scheme change.
        await page.evaluate(
            """() => {
              const sheet = new CSSStyleSheet();
              sheet.replaceSync("*, *::before, *::after { transition: none !important; }");
              document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
            }"""
        )
    found: list[dict[str, Any]] = []
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        violations = await page.evaluate(
            """async () => {
              const result = await axe.run(document, { resultTypes: ["violations"] });
              return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")}: ${n.failureSummary}`),
              }));
            }"""
        )
        found += [{**v, "scheme": scheme} for v in violations]
    await page.emulate_media(color_scheme="light")
    if found:
        kinds = sorted({f"{v['id']} ({v['impact']})" for v in found})
        print(f"axe on the {screen} screen, nothing serious: {', '.join(kinds)}")
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe finds serious or critical violations on the {screen} screen:\n{dump(bad)}"
    return found


async def start_call(a: Page, b: Page, caller: str = "clientA") -> None:
    """`a` calls `b`, `b` accepts; both say Connected."""
    await ring(a, b, caller)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#call-status")).to_have_text("Connected")


# In a page: the sound arriving from the other side over the next `ms`: packets, and mean power (energy / time).
INBOUND_SOUND = """
async (ms) => {
  const read = async () => {
    const pc = window.peercall.pc;
    if (!pc) return null;
    for (const r of (await pc.getStats()).values()) {
      if (r.type === "inbound-rtp" && r.kind === "audio") {
        return { packets: r.packetsReceived ?? 0, energy: r.totalAudioEnergy ?? 0,
                 duration: r.totalSamplesDuration ?? 0, audioLevel: r.audioLevel ?? 0 };
      }
    }
    return null;
  };
  const before = await read();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = await read();
  if (!before || !after) return null;
  const seconds = after.duration - before.duration;
  return { packets: after.packets - before.packets, seconds,
           power: seconds > 0 ? (after.energy - before.energy) / seconds : 0, audioLevel: after.audioLevel };
}
"""


async def inbound_sound(page: Page, ms: int = 600) -> dict[str, Any] | None:
    """Packets and mean power of the audio `page` receives over the next `ms` milliseconds."""
    return await page.evaluate(INBOUND_SOUND, ms)


def record_frames(page: Page) -> list[dict[str, Any]]:
    """Every JSON frame the page sends on its WebSockets from now on."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: WebSocket) -> None:
        def sent(payload: str | bytes) -> None:
            if isinstance(payload, str):
                with contextlib.suppress(ValueError):
                    frames.append(json.loads(payload))

        ws.on("framesent", sent)

    page.on("websocket", on_socket)
    return frames


async def data_float(page: Page, selector: str, name: str) -> float | None:
    """A data- attribute as a number (None when absent)."""
    value = await page.locator(selector).get_attribute(f"data-{name}")
    return None if value is None else float(value)
