"""Calls that outlive their WebSocket, ring several devices, and end up in the history, seen from the browser.

The server keeps every call's state: it rings all devices of the callee, keeps a call for its resume grace
when a party's WebSocket drops, and tells the web client how each call ended (`call-ended`). These tests
check what a user sees of that: one tab stops ringing when another answers, a network blip does not cut the
audio, and a call that rang out, or came while the user was away, waits in the history as missed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import ServerProcess, run_server

from .conftest import SCALE, OpenPage, artifacts_dir, dump
from .steps import assert_audio_flows, audio_stats, connect, mic, open_pair, ring, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

# Remember, in the page, every call phase change and every call-ended / call-resumed frame from now on.
WATCH_CALL = """
() => {
  const seen = { phases: [], ended: [], resumed: [], signaling: [] };
  window.__e2e.seen = seen;
  window.peercall.call.addEventListener("phasechange", (e) => seen.phases.push(e.detail.phase));
  const s = window.peercall.signaling;
  s.addEventListener("call-ended", (e) => seen.ended.push(e.detail));
  s.addEventListener("call-resumed", (e) => seen.resumed.push(e.detail));
  s.addEventListener("statechange", (e) => seen.signaling.push(e.detail.state));
  window.__e2e.pcBefore = window.peercall.pc;
}
"""


async def seen(page: Page) -> dict[str, Any]:
    return await page.evaluate("window.__e2e.seen")


async def test_second_tab_of_the_callee_stops_ringing_when_the_first_answers(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """Both tabs of the callee ring; the first to accept gets the call, the other shows "Answered elsewhere"."""
    a, b1 = await open_pair(open_page, fresh_server)
    b2 = await open_page(fresh_server.http, "/callerB.html", "B2")  # clientB's second device (another tab)
    await connect(b2)
    devices = [await page.evaluate("window.peercall.signaling.welcome.device") for page in (b1, b2)]
    assert devices[0] != devices[1], f"the two tabs should be two devices: {devices}"
    await expect(a.locator("#online li")).to_have_count(1)  # presence is per user: clientB once

    await ring(a, b1)
    await expect(b2.locator("#incoming")).to_be_visible()
    await expect(b2.locator("#incoming")).to_contain_text("clientA")

    await b1.click("#accept")
    await expect(b2.locator("#incoming")).to_be_hidden()
    await expect(b2.locator("#call-status")).to_have_text("Answered elsewhere")
    await expect(b2.locator("#message")).to_have_text("The call from clientA was answered on another device.")
    await expect(b1.locator("#call-status")).to_have_text("Connected")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(b1, "B1")
    await assert_audio_flows(a, "A")
    assert await mic(b2) == {"opened": 0, "live": 0}, "the tab that did not answer opened the microphone"
    await expect(b2.locator("#missed-count")).to_be_hidden()  # answered elsewhere is not a missed call
    await b2.screenshot(path=artifacts_dir() / "answered-elsewhere-clientB-tab2.png", full_page=True)

    await a.click("#hangup")
    await expect(b1.locator("#call-status")).to_have_text("Call Ended")
    await expect(b2.locator("#call-status")).to_have_text("Answered elsewhere")  # untouched by the hangup


# In a page: remember every text #call-status and #message show from now on (`window.__e2e.shown`).
WATCH_SHOWN = """
() => {
  const shown = [];
  window.__e2e.shown = shown;
  for (const id of ["call-status", "message"]) {
    const el = document.getElementById(id);
    const watch = { childList: true, characterData: true, subtree: true };
    new MutationObserver(() => shown.push(el.textContent)).observe(el, watch);
  }
}
"""


async def test_closing_a_ringing_tab_leaves_the_call_ringing_on_the_other(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """Closing one of the callee's tabs while the call rings there only stops that tab ringing: the call is not
    declined, the other tab still rings and can answer, and the caller never reads that it was rejected."""
    a, b1 = await open_pair(open_page, fresh_server)
    b2 = await open_page(fresh_server.http, "/callerB.html", "B2")  # clientB's second device (another tab)
    await connect(b2)
    await a.evaluate(WATCH_SHOWN)

    async def connections() -> int:
        response = await a.request.get(f"{fresh_server.http}/readyz")
        return (await response.json())["connections"]

    assert await connections() == 3
    await ring(a, b1)
    await expect(b2.locator("#incoming")).to_be_visible()
    await b1.close(run_before_unload=True)  # the user closes the tab: pagehide runs
    await wait_until(connections, lambda n: n == 2, "the server to see the closed tab's connection go")

    await expect(b2.locator("#incoming")).to_be_visible()
    await expect(b2.locator("#call-status")).to_have_text("Incoming call")
    await expect(a.locator("#call-status")).to_have_text("Requesting")
    await b2.screenshot(path=artifacts_dir() / "still-ringing-clientB-tab2.png", full_page=True)
    await b2.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b2.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(a, "A")
    shown = await a.evaluate("window.__e2e.shown")
    assert not [text for text in shown if "eject" in text], f"the caller was told the call was rejected: {shown}"


async def test_caller_network_blip_keeps_the_call_and_resumes_it(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """The caller's WebSocket drops mid-call: audio flows on, the page reconnects and resumes; the peer sees nothing."""
    a, b = await open_pair(open_page, fresh_server)
    await ring(a, b)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(a, "A")
    call_id = await a.evaluate("window.peercall.call.callId")
    for page in (a, b):
        await page.evaluate(WATCH_CALL)

    # The network goes down under A: its socket closes, and new ones fail at once until it comes back.
    await a.evaluate("() => { window.__e2e.blockSockets = true; window.__e2e.sockets.at(-1).close(); }")
    await expect(a.locator("#server-status")).to_have_text("Reconnecting…")
    await expect(b.locator('#online button[data-peer="clientA"]')).to_be_hidden()  # B hears: clientA offline
    during_a = await assert_audio_flows(a, "A, while its signaling is down")
    during_b = await assert_audio_flows(b, "B, while A's signaling is down")
    assert await a.evaluate("window.peercall.signaling.state") == "reconnecting", "A reconnected too early"
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(a.locator("#hangup")).to_be_enabled()
    await expect(b.locator("#call-status")).to_have_text("Connected")
    await a.screenshot(path=artifacts_dir() / "blip-clientA-reconnecting.png", full_page=True)

    await a.evaluate("window.__e2e.blockSockets = false")  # the network is back: the page retries by itself
    await expect(a.locator("#server-status")).to_have_text("Connected")
    resumed = await wait_until(lambda: seen(a), lambda s: len(s["resumed"]) >= 1, "A to get call-resumed")
    assert resumed["resumed"][0]["callId"] == call_id, dump(resumed)
    assert resumed["resumed"][0]["state"] == "answered", dump(resumed)
    await expect(b.locator('#online button[data-peer="clientA"]')).to_be_visible()
    assert await a.evaluate("window.peercall.pc === window.__e2e.pcBefore"), "A replaced its peer connection"
    after_a = await assert_audio_flows(a, "A, after the reconnect")
    after_b = await assert_audio_flows(b, "B, after A's reconnect")
    assert after_a["inbound"]["packetsReceived"] > during_a["inbound"]["packetsReceived"]
    assert after_b["inbound"]["packetsReceived"] > during_b["inbound"]["packetsReceived"]

    # The browser says the network is back (as after a Wi-Fi switch): the call restarts ICE, audio goes on.
    ufrag = """() => { const pc = window.peercall.pc;  // the negotiated one: new once the restart completed
      return [pc.signalingState, /a=ice-ufrag:(\\S+)/.exec(pc.currentLocalDescription.sdp)[1]]; }"""
    _, before = await a.evaluate(ufrag)
    await a.evaluate("window.dispatchEvent(new Event('online'))")
    await wait_until(
        lambda: a.evaluate(ufrag), lambda now: now[0] == "stable" and now[1] != before, "A's ICE restart to complete"
    )
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await assert_audio_flows(b, "B, after A's ICE restart")

    b_seen = await seen(b)
    assert b_seen["phases"] == [] and b_seen["ended"] == [], f"B saw the call change: {dump(b_seen)}"
    assert (await seen(a))["phases"] == [], f"A's call changed phase: {dump(await seen(a))}"

    await a.click("#hangup")
    await expect(a.locator("#call-status")).to_have_text("Call Ended")
    await expect(b.locator("#call-status")).to_have_text("Call Ended")
    await expect(b.locator("#message")).to_have_text("clientA hung up.")
    ended = await wait_until(lambda: seen(b), lambda s: len(s["ended"]) == 1, "B to get call-ended")
    assert ended["ended"][0] == {
        "type": "call-ended",
        "callId": call_id,
        "outcome": "answered",
        "reason": "user-hangup",
    }, dump(ended)
    assert await audio_stats(a) is None, "A still has a peer connection after the hangup"
    line = f"call {call_id} clientA -> clientB ended: answered (user-hangup)"
    assert await asyncio.to_thread(fresh_server.wait_log, line), f"the server did not log {line!r}"


async def test_missed_call_waits_in_the_history_and_calls_back(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """A call to someone offline shows in their history as missed when they connect, and calls back from there."""
    amy, ben = uid("amy"), uid("ben")
    caller = await open_page(server.http, "/", "amy")
    await caller.fill("#my-id", amy)
    await connect(caller)
    await expect(caller.locator("#history-empty")).to_have_text("No calls yet.")
    await caller.fill("#peer-id", ben)
    await caller.click("#call")
    await expect(caller.locator("#call-status")).to_have_text("Unavailable")
    outgoing = caller.locator("#history li")
    await expect(outgoing).to_have_count(1)
    await expect(outgoing).to_have_attribute("data-direction", "outgoing")
    await expect(outgoing).to_contain_text(ben)
    await expect(outgoing).to_contain_text("Unavailable")
    await expect(caller.locator("#missed-count")).to_be_hidden()

    callee = await open_page(server.http, "/", "ben")
    await callee.fill("#my-id", ben)
    await connect(callee)
    await expect(callee.locator("#missed-count")).to_have_text("1")
    await expect(callee.locator("#missed-count")).to_be_visible()
    await expect(callee.locator("#message")).to_have_text(f"Missed calls while you were away: {amy}.")
    missed = callee.locator("#history li.missed")
    await expect(missed).to_have_count(1)
    await expect(missed).to_contain_text(amy)
    await expect(missed).to_contain_text("Missed")
    await expect(missed).to_have_attribute("data-direction", "incoming")
    await expect(callee).to_have_title("(1) peercall")
    await callee.screenshot(path=artifacts_dir() / "missed-call-history.png", full_page=True)

    await missed.locator("button").click()  # call back
    await expect(callee.locator("#call-status")).to_have_text("Requesting")
    await expect(callee.locator("#hangup")).to_have_text("Cancel")
    await expect(callee.locator("#missed-count")).to_be_hidden()  # looked at, so no longer new
    await expect(caller.locator("#incoming")).to_be_visible()
    await expect(caller.locator("#incoming-from")).to_have_text(ben)

    await callee.click("#hangup")
    await expect(caller.locator("#call-status")).to_have_text("Missed")  # as her Recent calls say
    await expect(caller.locator("#message")).to_have_text(f"{ben} hung up before you answered.")
    await expect(caller.locator("#missed-count")).to_have_text("1")  # amy missed ben's call-back
    await expect(caller.locator("#history li.missed")).to_contain_text(ben)
    await expect(callee.locator("#history li")).to_have_count(2)
    await expect(callee.locator("#history li").first).to_have_attribute("data-direction", "outgoing")
    await expect(callee.locator("#history li").first).to_contain_text("Cancelled")
    await caller.locator("#history li button").first.focus()  # the user looks at the history
    await expect(caller.locator("#missed-count")).to_be_hidden()


async def test_unanswered_call_is_missed_by_the_callee_and_unanswered_for_the_caller(open_page: OpenPage) -> None:
    """A call nobody answers before the server's ring timeout is a missed call for its callee ("Missed", counted) and
    "No answer" for its caller, on the screen and in Recent calls ("Missed" read as a call the caller missed)."""
    with run_server(PEERCALL_RING_TIMEOUT="1.5") as server:
        a, b = await open_pair(open_page, server)
        await ring(a, b)
        await expect(a.locator("#hangup")).to_have_text("Cancel")
        await expect(a.locator("#call-status")).to_have_text("No answer")
        await expect(b.locator("#call-status")).to_have_text("Missed")
        await expect(b.locator("#incoming")).to_be_hidden()
        await expect(a.locator("#message")).to_have_text("clientB did not answer.")
        await expect(b.locator("#message")).to_have_text("Missed call from clientA.")
        await expect(b.locator("#missed-count")).to_have_text("1")
        await expect(a.locator("#missed-count")).to_be_hidden()
        await expect(b.locator("#history li.missed")).to_contain_text("clientA")
        await expect(a.locator("#history li")).to_contain_text("No answer")
        await expect(a.locator("#history li")).not_to_contain_text("Missed")
        await expect(a.locator("#hangup")).to_have_text("Hang Up")
        assert (await mic(a))["live"] == 0, "A did not release the microphone"


# In a page: a round trip through the server on the page's WebSocket (an unknown frame type gets an `error`
# back), or how that socket was closed.
ROUND_TRIP = """
async () => {
  const sock = window.__e2e.sockets.at(-1);
  if (sock.readyState !== WebSocket.OPEN) return { closed: true, readyState: sock.readyState };
  return await new Promise((resolve) => {
    sock.addEventListener("message", (e) => {
      const frame = JSON.parse(e.data);
      if (frame.type === "error") resolve({ reply: frame.code });
    });
    sock.addEventListener("close", (e) => resolve({ closed: true, code: e.code }));
    sock.send(JSON.stringify({ type: "e2e-probe" }));
  });
}
"""


async def duplicate(page: Page) -> Page:
    """What the browser's "Duplicate tab" does: a new tab of the same profile whose sessionStorage is a copy of
    the live tab's, loading the same address. (The copy is made on a same-origin page that runs none of our
    scripts, then the tab navigates to the address: sessionStorage stays with the tab.)"""
    copy = await page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    tab = await page.context.new_page()
    await tab.goto("/css/peercall.css")
    await tab.evaluate("(entries) => { for (const [k, v] of JSON.parse(entries)) sessionStorage.setItem(k, v); }", copy)
    assert await tab.evaluate("sessionStorage.getItem('peercall.device')"), "the copy carries the device id"
    await tab.goto(page.url)
    return tab


async def test_a_duplicated_tab_is_a_device_of_its_own(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """A duplicated tab (its sessionStorage copied) connects as another device of the same user: both tabs stay
    connected, and neither is replaced (close 4501)."""
    name = uid("dana")
    first = await open_page(server.http, "/", "first")
    await first.fill("#my-id", name)
    await connect(first)
    second = await duplicate(first)
    await expect(second.locator("#my-id")).to_have_value(name)  # the name typed last, as a returning user sees it
    await connect(second)
    # The server retires a replaced connection before it welcomes the new one: a round trip on the first tab's
    # socket after the second is welcomed shows that it was not retired.
    probes = [await page.evaluate(ROUND_TRIP) for page in (first, second)]
    assert all("reply" in probe for probe in probes), f"a tab lost its connection: {probes}"
    devices = [await page.evaluate("window.peercall.signaling.welcome.device") for page in (first, second)]
    assert devices[0] != devices[1], f"the duplicated tab should be a device of its own: {devices}"
    await expect(first.locator("#server-status")).to_have_text("Connected")
    await expect(second.locator("#server-status")).to_have_text("Connected")


async def test_a_reloaded_tab_keeps_its_device(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """A reload is the same tab: it connects as the same device (so the server would hand its call back), and a
    duplicate of the reloaded tab is still a device of its own."""
    name = uid("rhea")
    page = await open_page(server.http, "/", "rhea")
    await page.fill("#my-id", name)
    await connect(page)
    device = await page.evaluate("window.peercall.signaling.welcome.device")
    await page.reload()
    await expect(page.locator("#my-id")).to_have_value(name)
    await connect(page)
    assert await page.evaluate("window.peercall.signaling.welcome.device") == device
    await page.reload()  # twice: the mark the first reload left must not carry over to a duplicate
    await connect(page)
    assert await page.evaluate("window.peercall.signaling.welcome.device") == device
    second = await duplicate(page)
    await connect(second)
    assert await second.evaluate("window.peercall.signaling.welcome.device") != device
    assert "reply" in await page.evaluate(ROUND_TRIP)


async def test_the_tab_that_did_not_answer_shows_the_call_elsewhere_and_then_in_recent_calls(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """clientB has two tabs; both ring and he answers in the second. The first says he is in a call on another
    device while the call goes on, and once it ends lists it in Recent calls (Answered) by itself: no return to
    the tab (no `visibilitychange`) needed. Then it says he can be called again."""
    a, b1 = await open_pair(open_page, fresh_server)
    b2 = await open_page(fresh_server.http, "/callerB.html", "B2")  # clientB's second device (another tab)
    await connect(b2)
    await b1.evaluate(
        """() => { window.__e2e.visibility = 0;
                   document.addEventListener("visibilitychange", () => window.__e2e.visibility++); }"""
    )
    await ring(a, b1)
    await expect(b2.locator("#incoming")).to_be_visible()
    await b2.click("#accept")
    await expect(b1.locator("#call-status")).to_have_text("Answered elsewhere")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await expect(b1.locator("#my-status")).to_have_text("In a call on another device")
    await expect(b1.locator("#my-status")).to_have_attribute("data-status", "in-call")
    await b1.screenshot(path=artifacts_dir() / "elsewhere-in-call-tab1.png", full_page=True)
    call_id = await a.evaluate("peercall.call.callId")
    await asyncio.sleep(3)  # they talk for a while: longer than the page's own look at the history after the answer

    await a.click("#hangup")
    await expect(b2.locator("#call-status")).to_have_text("Call Ended")
    entry = b1.locator(f'#history li[data-call-id="{call_id}"]')
    await expect(entry).to_have_attribute("data-outcome", "answered", timeout=12_000 * SCALE)
    await expect(entry.locator(".what")).to_have_text(re.compile(r"^Answered"))
    await expect(b1.locator("#my-status")).to_have_text("Online: people can call you")
    await b1.screenshot(path=artifacts_dir() / "elsewhere-ended-tab1.png", full_page=True)
    assert await b1.evaluate("window.__e2e.visibility") == 0, "the test should not have needed the tab's return"


async def test_a_call_declined_on_one_tab_says_so_on_the_other(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """clientB's two tabs ring and he rejects in one: the other says that he declined it, not that the caller did."""
    a, b1 = await open_pair(open_page, fresh_server)
    b2 = await open_page(fresh_server.http, "/callerB.html", "B2")
    await connect(b2)
    await ring(a, b1)
    await expect(b2.locator("#incoming")).to_be_visible()
    await b1.click("#reject")
    await expect(b2.locator("#call-status")).to_have_text("Declined elsewhere")
    await expect(b2.locator("#message")).to_have_text("You declined the call from clientA on another device.")
    await expect(b1.locator("#message")).to_have_text("You rejected the call from clientA.")
    await expect(a.locator("#call-status")).to_have_text("Rejected")


async def test_a_tab_opened_mid_call_says_the_call_goes_on_elsewhere_and_cannot_call_until_it_ends(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """clientB talks to clientA in one tab and opens another: the new tab says at once that he is in a call on
    another device and offers no Call button (the server would refuse the call), until the call ends: then it lists
    the call in Recent calls and can call again."""
    a, b1 = await open_pair(open_page, fresh_server)
    await ring(a, b1)
    await b1.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    b2 = await open_page(fresh_server.http, "/callerB.html", "B2")  # clientB's second device, opened mid-call
    await connect(b2)
    await expect(b2.locator("#my-status")).to_have_text("In a call on another device")
    await expect(b2.locator("#demo-links")).to_be_visible()  # open mode: the two-tab demo is offered
    await b2.fill("#peer-id", "clientA")
    await expect(b2.locator("#call")).to_be_disabled()
    await b2.screenshot(path=artifacts_dir() / "elsewhere-opened-mid-call.png", full_page=True)
    call_id = await a.evaluate("peercall.call.callId")

    await a.click("#hangup")
    await expect(b2.locator("#my-status")).to_have_text("Online: people can call you")
    await expect(b2.locator("#call")).to_be_enabled()
    entry = b2.locator(f'#history li[data-call-id="{call_id}"]')
    await expect(entry).to_have_attribute("data-outcome", "answered")
    assert await b1.locator("#my-status").text_content() == "Online: people can call you"


async def test_a_failed_call_shows_no_duration_in_recent_calls(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A call that was answered but never connected (the caller's side gave up on the network path: `ice-failed`)
    is listed as Failed with no duration: its seconds were not talk time. An answered call keeps its duration."""
    a, b = await open_pair(open_page, fresh_server)
    # The caller gives up as soon as the call is answered, before any audio connects: what the page sends when
    # ICE fails, and the server ends the call `failed`.
    await a.evaluate(
        """() => peercall.signaling.addEventListener("call-accept", ({detail}) => peercall.signaling.send(
               {type: "hangup", to: detail.from, callId: detail.callId, data: {reason: "ice-failed"}}),
             {once: true})"""
    )
    await ring(a, b)
    failed_id = await wait_until(lambda: a.evaluate("peercall.call.callId"), bool, "the call's id")
    await b.click("#accept")
    for page in (a, b):
        entry = page.locator(f'#history li[data-call-id="{failed_id}"]')
        await expect(entry).to_have_attribute("data-outcome", "failed")
        await expect(entry.locator(".what")).to_have_text(re.compile(r"^Failed"))
        await expect(entry.locator(".when")).to_be_visible()
        await expect(entry.locator(".len")).to_have_count(0)

    await expect(b.locator("#incoming")).to_be_hidden()
    await ring(a, b)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    answered_id = await a.evaluate("peercall.call.callId")
    await a.click("#hangup")
    entry = a.locator(f'#history li[data-call-id="{answered_id}"]')
    await expect(entry).to_have_attribute("data-outcome", "answered")
    await expect(entry.locator(".len")).to_have_text(re.compile(r"^\d+:\d\d$"))
    await a.screenshot(path=artifacts_dir() / "failed-call-no-duration.png", full_page=True)

    # A call that connects, goes on for a while, then fails (the path is lost): it shows how long it was connected,
    # as the page's own call-summary said.
    await ring(a, b)
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    dropped_id = await a.evaluate("peercall.call.callId")
    await asyncio.sleep(2.2)
    await a.evaluate(
        """(id) => peercall.signaling.send(
             {type: "hangup", to: "clientB", callId: id, data: {reason: "ice-failed"}})""",
        dropped_id,
    )
    entry = a.locator(f'#history li[data-call-id="{dropped_id}"]')
    await expect(entry).to_have_attribute("data-outcome", "failed")

    async def summary_written() -> bool:
        await a.evaluate('() => document.dispatchEvent(new Event("visibilitychange"))')  # (Recent calls reloads)
        await asyncio.sleep(0.4)
        return await entry.locator(".len").count() == 1

    await wait_until(summary_written, bool, "the dropped call's connected time in Recent calls")
    assert re.fullmatch(r"0:0[2-9]", await entry.locator(".len").inner_text())
