"""Steps shared by the browser tests: what a user does (connect, call, ring) and what proves it worked (audio
flows), each waiting for what the user would see, with a timeout. Nothing here sleeps and then asserts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import ServerProcess

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
                      audioLevel: r.audioLevel ?? 0, bytesReceived: r.bytesReceived };
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
    """`who`'s page receives audio: packets keep arriving (~50/s) and they carry sound (energy grows)."""
    first = await wait_until(
        lambda: audio_stats(page),
        lambda s: bool(s and s["inbound"] and s["inbound"]["packetsReceived"] > 0),
        f"{who} to receive audio packets",
    )
    start = time.monotonic()
    before = first["inbound"]
    later = await wait_until(
        lambda: audio_stats(page),
        lambda s: (
            s["inbound"]["packetsReceived"] >= before["packetsReceived"] + 40
            and s["inbound"]["totalAudioEnergy"] > before["totalAudioEnergy"]
        ),
        f"{who}'s inbound audio to grow by 40 packets (0.8 s of Opus) with rising energy",
        timeout=5 * SCALE,
    )
    elapsed = time.monotonic() - start
    after = later["inbound"]
    rate = (after["packetsReceived"] - before["packetsReceived"]) / elapsed
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
