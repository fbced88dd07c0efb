"""The calling experience, driven as a user would (clicks and keys) and checked on the page and in getStats().

People with their status and a search; a ringtone and a notification while a call rings; the keyboard (Enter
calls and answers, Escape declines and hangs up); during a call: the timer, mute as the other side hears it,
level meters, switching the microphone and the speaker, the quality panel; after it: the summary, sent to the
server and shown in the history. The last test walks through the main screens, checks them with axe-core and
saves screenshots ($PEERCALL_TEST_ARTIFACTS/screens/). Nothing sleeps and then asserts: every step waits for what
the user would see, with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import ServerProcess, run_server

from .conftest import SCALE, OpenPage, dump
from .steps import (
    assert_audio_flows,
    audio_stats,
    check_accessibility,
    connect,
    data_float,
    inbound_sound,
    mic,
    open_pair,
    record_frames,
    ring,
    shoot,
    start_call,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

# A stand-in for the browser's Notification: records what the page shows and asks (headless Chromium has none
# that a test can see). `permission` starts as "default": the page may only ask when the user clicks.
FAKE_NOTIFICATIONS = """
() => {
  const log = { asked: 0, shown: [] };
  window.__e2e.notifications = log;
  class FakeNotification {
    static permission = "default";
    static async requestPermission() { log.asked += 1; FakeNotification.permission = "granted"; return "granted"; }
    constructor(title, options = {}) {
      this.entry = { title, body: options.body ?? "", closed: false };
      log.shown.push(this.entry);
    }
    close() { this.entry.closed = true; }
    addEventListener() {}
  }
  window.Notification = FakeNotification;
}
"""

# The tab goes to the background (as when the user switches to another tab).
HIDE_TAB = """
() => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
  document.dispatchEvent(new Event("visibilitychange"));
}
"""

# Count the replaceTrack calls of the page's audio sender from now on.
SPY_REPLACE_TRACK = """
() => {
  const calls = [];
  window.__e2e.replaced = calls;
  const original = RTCRtpSender.prototype.replaceTrack;
  RTCRtpSender.prototype.replaceTrack = function (track) {
    calls.push(track ? track.label : null);
    return original.call(this, track);
  };
}
"""

# What the quality panel is based on, read independently from getStats(): rtt, jitter, loss, and the inbound
# payload bit rate over `ms`.
STATS_NOW = """
async (ms) => {
  const read = async () => {
    const stats = await window.peercall.pc.getStats();
    const out = {};
    for (const r of stats.values()) {
      if (r.type === "inbound-rtp" && r.kind === "audio") {
        Object.assign(out, { t: r.timestamp, bytes: r.bytesReceived, lost: r.packetsLost, received: r.packetsReceived,
                             jitterMs: r.jitter * 1000 });
      }
      if (r.type === "transport" && r.selectedCandidatePairId) {
        const pair = stats.get(r.selectedCandidatePairId);
        out.rttMs = pair.currentRoundTripTime * 1000;
        out.local = stats.get(pair.localCandidateId).candidateType;
        out.remote = stats.get(pair.remoteCandidateId).candidateType;
      }
    }
    return out;
  };
  const a = await read();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = await read();
  return { ...b, bitrateKbps: ((b.bytes - a.bytes) * 8) / (b.t - a.t) };
}
"""


# Every text #call-status shows from now on, in order (`window.__e2e.callStatus`), however briefly.
WATCH_CALL_STATUS = """
() => {
  const status = document.getElementById("call-status");
  const shown = [status.textContent];
  window.__e2e.callStatus = shown;
  new MutationObserver(() => {
    if (shown.at(-1) !== status.textContent) shown.push(status.textContent);
  }).observe(status, { childList: true, characterData: true, subtree: true });
}
"""


def mos_word(mos: float) -> str:
    """quality.js `mosWord`: G.107's bands of R (90, 80, 70, 60 ↔ MOS 4.34, 4.03, 3.60, 3.10), rounded."""
    return next(
        word
        for floor, word in ((4.3, "excellent"), (4.0, "good"), (3.6, "fair"), (3.1, "poor"), (0, "bad"))
        if mos >= floor
    )


def mos_level(mos: float) -> str:
    """quality.js `qualityLevel`: the colour of a MOS (G.107's "satisfied" bands)."""
    return "good" if mos >= 4.0 else "fair" if mos >= 3.6 else "poor"


async def person(page: Page, peer: str) -> dict[str, Any]:
    """Where `peer` is listed on `page` (#online or #offline-people), with its status, or {} if nowhere."""
    return await page.evaluate(
        """(peer) => {
          const li = document.querySelector(`#online li[data-peer="${peer}"], #offline-people li[data-peer="${peer}"]`);
          if (!li) return {};
          const text = li.querySelector(".status-text").textContent;
          return { list: li.parentElement.id, status: li.dataset.status, text, hidden: li.hidden };
        }""",
        peer,
    )


async def level(page: Page, meter: str) -> float:
    return await data_float(page, meter, "level") or 0.0


async def test_people_show_their_status_and_the_search_calls_with_enter(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """People show online / in a call / last seen; the search narrows them, Enter calls, Enter answers, Esc hangs up."""
    names = {who: uid(who) for who in ("alice", "bob", "carol")}
    pages: dict[str, Page] = {}
    for who, name in names.items():
        pages[who] = page = await open_page(server.http, "/", who)
        await page.fill("#my-id", name)
        await connect(page)
    alice, bob, carol = pages["alice"], pages["bob"], pages["carol"]
    await expect(alice.locator("#my-name")).to_have_text(names["alice"])
    await expect(alice.locator("#my-status")).to_have_text("Online: people can call you")
    for who in ("bob", "carol"):
        await wait_until(
            lambda who=who: person(alice, names[who]),
            lambda p: p.get("list") == "online" and p["status"] == "online" and p["text"] == "Online",
            f"alice to see {who} online",
        )

    # The search: only bob is left, and Enter calls him.
    await alice.fill("#contact-filter", names["bob"][:5].upper() + names["bob"][5:])  # case does not matter
    await expect(alice.locator(f'#online li[data-peer="{names["bob"]}"]')).to_be_visible()
    await expect(alice.locator(f'#online li[data-peer="{names["carol"]}"]')).to_be_hidden()
    await expect(alice.locator("#contact-filter-hint")).to_have_text(f"Press Enter to call {names['bob']}.")
    await alice.press("#contact-filter", "Enter")
    await expect(alice.locator("#call-status")).to_have_text("Requesting")
    await expect(bob.locator("#incoming-from")).to_have_text(names["alice"])
    await expect(bob.locator("#accept")).to_be_focused()  # focus lands on Accept: Enter answers
    await bob.keyboard.press("Enter")
    await expect(alice.locator("#call-status")).to_have_text("Connected")
    await expect(bob.locator("#call-status")).to_have_text("Connected")

    # Everyone else sees both of them in a call; they see themselves so.
    for who in ("alice", "bob"):
        await wait_until(
            lambda who=who: person(carol, names[who]),
            lambda p: p.get("status") == "in-call" and p["text"] == "In a call",
            f"carol to see {who} in a call",
        )
    await expect(alice.locator("#my-status")).to_have_text("In a call")

    # carol leaves: she is listed as seen just now.
    await carol.click("#disconnect")
    await wait_until(
        lambda: person(alice, names["carol"]),
        lambda p: p.get("list") == "offline-people" and p["status"] == "offline",
        "alice to list carol as offline",
    )
    assert (await person(alice, names["carol"]))["text"] == "Last seen just now"
    await expect(alice.locator(f'#online li[data-peer="{names["carol"]}"]')).to_have_count(0)

    # Escape in the search field clears it; Escape again hangs up.
    await expect(alice.locator("#contact-filter")).to_be_focused()
    await alice.keyboard.press("Escape")
    await expect(alice.locator("#contact-filter")).to_have_value("")
    await expect(alice.locator("#call-status")).to_have_text("Connected")
    await alice.keyboard.press("Escape")
    await expect(alice.locator("#call-status")).to_have_text("Call Ended")
    await expect(bob.locator("#call-status")).to_have_text("Call Ended")
    third = await open_page(server.http, "/", "dave")
    await third.fill("#my-id", uid("dave"))
    await connect(third)  # a newcomer learns from `welcome` who is online and who left lately
    await wait_until(lambda: person(third, names["alice"]), lambda p: p.get("status") == "online", "alice online")
    await wait_until(lambda: person(third, names["carol"]), lambda p: p.get("status") == "offline", "carol offline")


async def test_ringtone_and_notification_while_it_rings_and_escape_declines(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A ringing call plays a Web Audio ringtone and (tab hidden, after the user allowed it) notifies; Esc declines."""
    a, b = await open_pair(open_page, fresh_server)
    await b.evaluate(FAKE_NOTIFICATIONS)
    await b.evaluate("window.peercall.signaling.dispatchEvent(new CustomEvent('people'))")  # render again
    button = b.locator("#enable-notifications")
    await expect(button).to_be_visible()
    assert await b.evaluate("window.__e2e.notifications.asked") == 0, "the page asked for notifications by itself"
    await button.click()
    await expect(button).to_be_hidden()
    assert await b.evaluate("window.__e2e.notifications.asked") == 1
    await b.evaluate(HIDE_TAB)

    await ring(a, b)
    assert await b.evaluate("window.peercall.ringing") is True
    assert await b.evaluate("window.peercall.ringtone.contextState") == "running"
    await wait_until(lambda: b.evaluate("window.peercall.ringtone.level()"), lambda v: v > 0.1, "the ringtone's sound")
    await expect(b.locator("body")).to_have_attribute("data-ringing", "true")
    await wait_until(lambda: a.evaluate("window.peercall.ringback.playing"), bool, "the caller's ringback tone")
    shown = await b.evaluate("window.__e2e.notifications.shown")
    assert [n["title"] for n in shown] == ["Incoming call from clientA"], dump(shown)
    await expect(b.locator("#accept")).to_be_focused()
    assert await mic(b) == {"opened": 0, "live": 0}, "the callee's microphone opened without an answer"
    assert await b.evaluate("window.peercall.call.phase") == "incoming", "the call was answered by itself"

    await b.keyboard.press("Escape")
    await expect(a.locator("#call-status")).to_have_text("Rejected")
    await expect(b.locator("#incoming")).to_be_hidden()
    assert await b.evaluate("window.peercall.ringing") is False
    await wait_until(lambda: b.evaluate("window.peercall.ringtone.level()"), lambda v: v == 0, "the ringtone to stop")
    assert await a.evaluate("window.peercall.ringback.playing") is False
    assert (await b.evaluate("window.__e2e.notifications.shown"))[0]["closed"] is True, "the notification stayed"
    await expect(b.locator("body")).to_have_attribute("data-ringing", "false")


async def test_connect_and_disconnect_show_one_at_a_time_and_hand_over_the_focus(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """Only the button that works now is shown (no greyed-out Disconnect on a first visit); by keyboard, the focus
    goes from Connect to Disconnect and back."""
    page = await open_page(server.http, "/", "kim")
    await expect(page.locator("#connect")).to_be_visible()
    await expect(page.locator("#disconnect")).to_be_hidden()
    await page.fill("#my-id", uid("kim"))
    await page.focus("#connect")
    await page.keyboard.press("Enter")
    await expect(page.locator("#server-status")).to_have_text("Connected")
    await expect(page.locator("#connect")).to_be_hidden()
    await expect(page.locator("#disconnect")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#server-status")).to_have_text("Disconnected")
    await expect(page.locator("#disconnect")).to_be_hidden()
    await expect(page.locator("#connect")).to_be_focused()


async def test_a_long_history_still_scrolls_by_keyboard_during_a_call(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """During a call the history's call-back buttons are disabled: the list itself takes the focus, so the keyboard
    scrolls it (axe: scrollable-region-focusable), and it gives the focus up again after the call."""
    a, b = await open_pair(open_page, fresh_server)
    for n in range(9):
        await a.fill("#peer-id", f"nobody-{n}")
        await a.press("#peer-id", "Enter")
        await expect(a.locator("#message")).to_have_text(f"nobody-{n} is not online.")
    await expect(a.locator("#history li")).to_have_count(9)
    history = a.locator("#history")
    assert await history.evaluate("(ul) => ul.scrollHeight > ul.clientHeight"), "the history should scroll"
    await expect(history).not_to_have_attribute("tabindex", "0")  # its buttons take the focus

    await a.fill("#peer-id", "clientB")
    await start_call(a, b)
    await expect(history.locator("button").first).to_be_disabled()
    await check_accessibility(a, "in-call-with-a-long-history")
    await history.focus()
    await expect(history).to_be_focused()
    await a.keyboard.press("End")
    await wait_until(lambda: history.evaluate("(ul) => ul.scrollTop"), lambda top: top > 0, "the history to scroll")

    await a.click("#hangup")
    await expect(history.locator("button").first).to_be_enabled()
    await expect(history).not_to_have_attribute("tabindex", "0")


async def test_a_call_that_rings_while_one_types_leaves_the_keys_to_the_field(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """clientB is typing a contact's id when clientA calls: the rest of what he types goes into the field (the
    focus stays there, so his Enter does not answer), and Escape there neither rejects nor, once he answered, hangs
    up. Accept is one click (or Tab) away."""
    a, b = await open_pair(open_page, fresh_server)
    field = b.locator("#contact-add-id")
    await field.click()
    await b.keyboard.type("car")
    await ring(a, b)
    await b.keyboard.type("ol")
    await expect(field).to_have_value("carol")
    await expect(field).to_be_focused()
    await b.keyboard.press("Escape")
    await expect(b.locator("#incoming")).to_be_visible()
    await b.click("#accept")
    await expect(a.locator("#call-status")).to_have_text("Connected")
    await field.click()
    await b.keyboard.type("x")
    await b.keyboard.press("Escape")
    await asyncio.sleep(0.5)
    await expect(b.locator("#call-status")).to_have_text("Connected")


async def test_the_keyboard_focus_stays_in_the_call_card_after_a_hangup_or_a_reject(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """Enter answers (the status reads Calling, then Connected); Esc hangs up or rejects: the focus lands on
    the call card's heading (not the top of the page), and Tab leads to "Who to call"."""
    a, b = await open_pair(open_page, fresh_server)
    await b.evaluate(WATCH_CALL_STATUS)
    await ring(a, b)
    await expect(b.locator("#accept")).to_be_focused()
    await b.keyboard.press("Enter")
    await expect(b.locator("#call-status")).to_have_text("Connected")
    shown = await b.evaluate("window.__e2e.callStatus")
    assert shown[-3:] == ["Incoming call", "Calling", "Connected"], f"the callee's status went {shown}"
    await expect(b.locator("#mute")).to_be_focused()
    await b.keyboard.press("Escape")
    await expect(b.locator("#call-status")).to_have_text("Call Ended")
    await expect(b.locator("#call-title")).to_be_focused()
    await b.keyboard.press("Tab")
    await expect(b.locator("#peer-id")).to_be_focused()

    await ring(a, b)
    await expect(b.locator("#accept")).to_be_focused()
    await b.keyboard.press("Escape")
    await expect(a.locator("#call-status")).to_have_text("Rejected")
    await expect(b.locator("#call-title")).to_be_focused()

    # The caller's Cancel, clicked: the button is hidden with the call, the focus stays in the card.
    await ring(a, b)
    await a.click("#hangup")
    await expect(a.locator("#call-status")).to_have_text("Call Ended")
    await expect(a.locator("#call-title")).to_be_focused()


async def test_mute_silences_what_the_other_side_receives_and_unmute_restores_it(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """Mute: the peer's inbound energy stops growing, its meter drops, it reads "clientA muted their microphone."
    (said by A, not guessed from the silence); unmute restores."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await wait_until(lambda: level(b, "#remote-level"), lambda v: v > 0.2, "B's meter to show A's voice")
    await wait_until(lambda: level(a, "#mic-level"), lambda v: v > 0.2, "A's meter to show A's microphone")
    loud = await wait_until(lambda: inbound_sound(b), lambda s: bool(s and s["power"] > 1e-6), "sound at B")
    print(f"B receives, unmuted: {dump(loud)}")

    await a.click("#mute")
    await expect(a.locator("#mute")).to_have_attribute("aria-pressed", "true")
    await expect(a.locator("#mute")).to_have_text("Unmute")
    await expect(a.locator("#call-detail")).to_contain_text("you are muted")
    quiet = await wait_until(
        lambda: inbound_sound(b),
        lambda s: bool(s and s["packets"] > 15 and s["power"] < 1e-9 and s["audioLevel"] < 0.001),
        "the energy arriving at B to stop growing while packets still flow",
    )
    print(f"B receives, A muted: {dump(quiet)}")
    await expect(b.locator("#peer-note")).to_have_text("clientA muted their microphone.")
    await wait_until(lambda: level(b, "#remote-level"), lambda v: v == 0, "B's meter to drop to zero")
    await expect(a.locator("#mic-level")).to_have_attribute("data-muted", "true")
    await wait_until(lambda: level(a, "#mic-level"), lambda v: v == 0, "A's own meter to drop to zero")
    await expect(b.locator("#call-status")).to_have_text("Connected")

    await a.focus("#mute")  # the keyboard works too: Space toggles it
    await a.keyboard.press("Space")
    await expect(a.locator("#mute")).to_have_attribute("aria-pressed", "false")
    await wait_until(lambda: inbound_sound(b), lambda s: bool(s and s["power"] > 1e-6), "sound at B again")
    await expect(b.locator("#peer-note")).to_be_hidden()
    await wait_until(lambda: level(b, "#remote-level"), lambda v: v > 0.2, "B's meter to come back")


async def test_switching_microphone_and_speaker_mid_call_keeps_the_call(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """Another microphone mid-call goes through replaceTrack (also the same one again); audio flows on; speaker too."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    pc_before = await a.evaluate("() => { window.__e2e.pc = window.peercall.pc; return true; }")
    assert pc_before
    await a.evaluate(SPY_REPLACE_TRACK)
    options = a.locator("#mic-select option")
    await wait_until(options.count, lambda n: n >= 2, "the microphones to be listed by name")
    labels = await options.all_text_contents()
    print(f"microphones: {labels}")
    assert "Fake Audio Input 1" in labels, labels

    await a.select_option("#mic-select", label="Fake Audio Input 1")
    await wait_until(lambda: a.evaluate("window.__e2e.replaced"), lambda r: r == ["Fake Audio Input 1"], "replaceTrack")
    sender_track = "window.peercall.call.audioSender.track.label"
    assert await a.evaluate(sender_track) == "Fake Audio Input 1"
    await wait_until(lambda: mic(a), lambda m: m == {"opened": 2, "live": 1}, "the old microphone to be released")
    await expect(a.locator("#mic-select")).to_have_value(re.compile(r"^(?!default$).+"))
    await assert_audio_flows(b, "B, after A switched microphones")
    await wait_until(lambda: level(b, "#remote-level"), lambda v: v > 0.2, "B's meter with A's new microphone")

    # The same one again (as when there is only one microphone): replaceTrack again, and the call goes on.
    await a.select_option("#mic-select", label="Fake Audio Input 1")
    await wait_until(lambda: a.evaluate("window.__e2e.replaced.length"), lambda n: n == 2, "a second replaceTrack")
    # Back to the system default, while muted: the new track stays muted.
    await a.click("#mute")
    await a.select_option("#mic-select", index=0)
    await wait_until(lambda: a.evaluate("window.__e2e.replaced.length"), lambda n: n == 3, "a third replaceTrack")
    assert await a.evaluate("window.peercall.call.audioSender.track.enabled") is False, "the switch unmuted A"
    await a.click("#mute")
    await assert_audio_flows(b, "B, after A went back to the default microphone")
    assert await a.evaluate("window.peercall.pc === window.__e2e.pc"), "the switch replaced the peer connection"
    assert await a.evaluate("window.peercall.call.micSwitches") == 3

    outputs = await b.locator("#speaker-select option").all_text_contents()
    assert "Fake Audio Output 1" in outputs, outputs
    await b.select_option("#speaker-select", label="Fake Audio Output 1")
    chosen = await b.locator("#speaker-select").input_value()
    await expect(b.locator("#remote-audio")).to_have_js_property("sinkId", chosen)
    await assert_audio_flows(b, "B, on another speaker")
    for page in (a, b):
        await expect(page.locator("#call-status")).to_have_text("Connected")
    await b.reload()  # the choice is remembered
    await expect(b.locator("#speaker-select")).to_have_value(chosen)


async def test_quality_panel_timer_and_path_agree_with_get_stats(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """The timer ticks; #quality's numbers (shown on demand) match getStats(); #path says direct, as getStats does."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await expect(a.locator("#call-timer")).to_be_visible()
    await wait_until(lambda: data_float(a, "#call-timer", "seconds"), lambda s: (s or 0) >= 2, "the timer to tick")
    await expect(a.locator("#call-timer")).to_have_text(re.compile(r"^0:0[2-9]$"))

    quality = a.locator("#quality")
    await expect(quality).to_have_attribute("data-mos", re.compile(r"^\d"))
    # A second sample, so that the bit rate is measured over more than one interval.
    await wait_until(
        lambda: a.evaluate("window.peercall.quality.last.at"),
        lambda at: at is not None,
        "a quality sample",
    )
    # The panel shows its last sample and getStats() is read a moment later: on a loaded machine jitter jumps in
    # between (seen in CI: 1 ms shown, 21 ms read). A few tries, a second apart, for the two to meet: a panel that
    # is wrong never does.
    for _ in range(5):
        stats = await a.evaluate(STATS_NOW, 2000)
        shown = {
            name: await data_float(a, "#quality", name)
            for name in ("mos", "rtt-ms", "jitter-ms", "loss-pct", "bitrate-kbps")
        }
        print(f"quality panel {dump(shown)}\ngetStats {dump(stats)}")
        if (
            abs(shown["rtt-ms"] - stats["rttMs"]) <= 5 * SCALE
            and abs(shown["jitter-ms"] - stats["jitterMs"]) <= 5 * SCALE
        ):
            break
        await asyncio.sleep(1)
    assert shown["rtt-ms"] == pytest.approx(stats["rttMs"], abs=5 * SCALE), (shown, stats)
    assert shown["jitter-ms"] == pytest.approx(stats["jitterMs"], abs=5 * SCALE), (shown, stats)
    expected_loss = 100 * stats["lost"] / max(1, stats["lost"] + stats["received"])
    assert shown["loss-pct"] == pytest.approx(expected_loss, abs=1.0), (shown, stats)
    assert stats["bitrateKbps"] / 2 <= shown["bitrate-kbps"] <= stats["bitrateKbps"] * 2, (shown, stats)
    # Good on loopback; fair when this machine is loaded enough to add jitter (seen in CI: 3.88). Whichever, the
    # label says the band of the MOS shown (G.107's: ≥ 4.0 good, ≥ 3.6 fair).
    assert 3.6 <= shown["mos"] <= 4.5, f"MOS on loopback should be good, fair at worst: {shown}"
    mos, level, text = await a.evaluate(
        "() => { const q = document.querySelector('#quality');"
        " return [+q.dataset.mos, q.dataset.level, q.textContent]; }"
    )
    assert level in {mos_level(mos - 0.005), mos_level(mos + 0.005)} - {"poor"}, (mos, level)
    # The words are those of the MOS (quality.js `mosWord`), as in the audio check; data-mos is rounded to 0.01.
    assert text in {f"{mos_word(m).capitalize()} quality" for m in (mos - 0.005, mos + 0.005)}, (mos, text)
    assert (stats["local"], stats["remote"]) == ("host", "host"), stats
    await expect(a.locator("#path")).to_have_attribute("data-path", "direct")
    await expect(a.locator("#path")).to_have_text("Direct connection (peer to peer)")

    # The numbers on demand, by keyboard: Enter opens them, Escape closes them (and does not hang up).
    details = a.locator("#quality-details")
    await expect(details).to_be_hidden()
    await quality.focus()
    await a.keyboard.press("Enter")
    await expect(details).to_be_visible()
    await expect(quality).to_have_attribute("aria-expanded", "true")
    await wait_until(
        lambda: a.evaluate("[quality.dataset.mos, document.querySelector('#quality-mos').textContent]"),
        lambda v: f"{float(v[0]):.1f} of 4.5" == v[1],
        "the details to show the MOS of #quality",
    )
    await expect(a.locator("#quality-loss")).to_have_text(re.compile(r"^\d+\.\d %$"))
    await expect(a.locator("#quality-bitrate")).to_have_text(re.compile(r"^\d+(\.\d)? kbit/s$"))
    await a.keyboard.press("Escape")
    await expect(details).to_be_hidden()
    await expect(a.locator("#call-status")).to_have_text("Connected")


async def test_call_summary_is_sent_kept_by_the_server_and_shown_in_history(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """After a call each side shows its summary and sends call-summary; /api/calls and the history show the quality.
    What that quality is, is not this test's: on a loaded host a loopback call can measure fair or poor (a MOS of
    3.5 was seen); what is shown must be what was measured (the quality panel's test asserts good)."""
    a = await open_page(fresh_server.http, "/callerA.html", "A")
    b = await open_page(fresh_server.http, "/callerB.html", "B")
    frames = {"A": record_frames(a), "B": record_frames(b)}
    await connect(a)
    await connect(b)
    await start_call(a, b)
    for page in (a, b):
        await expect(page.locator("#quality")).to_have_attribute("data-mos", re.compile(r"^\d"))
    call_id = await a.evaluate("window.peercall.call.callId")
    await b.click("#hangup")
    for page in (a, b):
        await expect(page.locator("#call-status")).to_have_text("Call Ended")
        summary = page.locator("#call-summary")
        await expect(summary).to_be_visible()
        said = r"^Call with client[AB]: 0:0\d, (excellent|good|fair|poor|bad) quality \(\d\.\d of 4\.5\), direct\.$"
        await expect(summary).to_have_text(re.compile(said))
        word = re.match(said, await summary.inner_text())
        assert word is not None
        # The words of the MOS, as everywhere (data-mos is rounded to 0.01); the level colours it.
        mos = float(await summary.get_attribute("data-mos") or "nan")
        assert word[1] in {mos_word(mos - 0.005), mos_word(mos + 0.005)}, (mos, word[1])
        level = await summary.get_attribute("data-level")
        assert level in {mos_level(mos - 0.005), mos_level(mos + 0.005)}, (mos, level)

    async def summaries(who: str) -> list[dict[str, Any]]:
        return [f for f in frames[who] if f["type"] == "call-summary"]

    for who in ("A", "B"):
        sent = await wait_until(lambda who=who: summaries(who), lambda s: len(s) == 1, f"{who} to send a call-summary")
        frame = sent[0]
        assert frame["callId"] == call_id, dump(frame)
        data = frame["data"]
        assert set(data) == {"durationSec", "mos", "rttMs", "jitterMs", "lossPct", "bitrateKbps", "path"}, dump(data)
        assert data["path"] == "direct" and 1.0 <= data["mos"] <= 4.5 and data["durationSec"] > 0, dump(data)

    def record() -> dict[str, Any]:
        with urllib.request.urlopen(f"{fresh_server.http}/api/calls?id=clientA", timeout=5) as response:
            return json.load(response)["calls"][0]

    stored = await wait_until(
        lambda: asyncio.to_thread(record),
        lambda r: set(r.get("quality") or {}) == {"clientA", "clientB"},
        "the server to keep both summaries with the call",
    )
    assert stored["callId"] == call_id and stored["quality"]["clientA"]["path"] == "direct", dump(stored)

    # The call was as good as its worse side (ui.js `historyQuality`).
    worse = min(stored["quality"][who]["mos"] for who in ("clientA", "clientB"))
    level, word = mos_level(worse), mos_word(worse)
    for page in (a, b):
        entry = page.locator(f'#history li[data-call-id="{call_id}"]')
        await expect(entry).to_have_attribute("data-quality", level)
        await expect(entry.locator(".q")).to_be_visible()
        button = entry.locator("button")
        shown = rf"^{word.capitalize()} quality \(MOS \d\.\d for (you|client[AB]), "
        await expect(button).to_have_attribute("title", re.compile(shown))
        await expect(entry.locator(".q-text")).to_have_text(f", {word} quality")
    title = await a.locator(f'#history li[data-call-id="{call_id}"] button').get_attribute("title")
    assert "for you" in (title or "") and "for clientB" in (title or ""), title


async def test_main_screens_pass_axe_and_are_captured(open_page: OpenPage) -> None:
    """Idle, ringing, in call and history: no serious axe violations (light and dark); screenshots at two sizes."""
    with run_server() as server:
        alice = await open_page(server.http, "/", "alice")
        await shoot(alice, "welcome")
        await check_accessibility(alice, "welcome")
        others = {}
        for name in ("bob", "carol", "dave", "erin"):
            others[name] = page = await open_page(server.http, "/", name)
            await page.fill("#my-id", name)
            await connect(page)
        await others["erin"].click("#disconnect")  # seen lately
        await alice.fill("#my-id", "alice")
        await connect(alice)
        await expect(alice.locator("#offline-people li")).to_have_count(1)

        # A missed call for the history: dave calls, then gives up.
        await others["dave"].click('#online button[data-peer="alice"]')
        await expect(alice.locator("#incoming")).to_be_visible()
        await others["dave"].click("#hangup")
        await expect(alice.locator("#missed-count")).to_have_text("1")
        await expect(alice.locator("#history li")).to_have_count(1)
        await shoot(alice, "idle")
        await check_accessibility(alice, "idle")

        # carol and dave talk meanwhile: they show "In a call".
        await others["carol"].click('#online button[data-peer="dave"]')
        await others["dave"].click("#accept")
        await expect(alice.locator('#online li[data-peer="carol"]')).to_have_attribute("data-status", "in-call")

        bob = others["bob"]
        await bob.click('#online button[data-peer="alice"]')
        await expect(alice.locator("#incoming")).to_be_visible()
        await expect(alice.locator("#accept")).to_be_focused()
        await shoot(alice, "ringing", keep_focus=True)
        await check_accessibility(alice, "ringing")

        await alice.keyboard.press("Enter")
        await expect(alice.locator("#call-status")).to_have_text("Connected")
        # the indicator shows a level (which one is the quality panel's test's: a loaded host may measure fair)
        await expect(alice.locator("#quality")).to_have_attribute("data-level", re.compile(r"^(good|fair|poor)$"))
        await wait_until(lambda: level(alice, "#remote-level"), lambda v: v > 0.3, "bob's voice on alice's meter")
        await shoot(alice, "in-call")
        await check_accessibility(alice, "in-call")
        await alice.click("#quality")
        await expect(alice.locator("#quality-details")).to_be_visible()
        await wait_until(lambda: level(alice, "#remote-level"), lambda v: v > 0.3, "bob's voice on alice's meter")
        await shoot(alice, "in-call-details")

        await bob.click("#hangup")
        await expect(alice.locator("#call-summary")).to_be_visible()
        entry = alice.locator("#history li").first
        await expect(entry).to_have_attribute("data-quality", re.compile(r"^(good|fair|poor)$"))
        await expect(alice.locator("#history li")).to_have_count(2)
        await shoot(alice, "call-ended")
        await check_accessibility(alice, "call-ended")
        assert await audio_stats(alice) is None
