"""Media state is said, not guessed (`media-state`): a mute shows on the other page within half a second and says
"muted"; the silence heuristic only speaks ("No sound from …") when the peer says it is unmuted; the state is said
again after the call resumes. Both pages run in one browser, so `Date.now()` in each is one clock."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.conftest import ServerProcess

from .conftest import OpenPage
from .steps import assert_audio_flows, open_pair, start_call, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

# In a page: note when #peer-note first shows text containing `muted`, and when it is next empty (Date.now()).
WATCH_NOTE = """
() => {
  const note = document.querySelector("#peer-note");
  const seen = (window.__noteTimes = { muted: null, cleared: null, texts: [] });
  new MutationObserver(() => {
    const text = note.hidden ? "" : note.textContent;
    seen.texts.push(text);
    if (seen.muted === null && text.includes("muted")) seen.muted = Date.now();
    else if (seen.muted !== null && seen.cleared === null && !text) seen.cleared = Date.now();
  }).observe(note, { childList: true, characterData: true, subtree: true, attributes: true });
}
"""

# In a page: click #mute, and say when (Date.now()).
CLICK_MUTE = "() => { const at = Date.now(); document.querySelector('#mute').click(); return at; }"


async def note_time(page: Page, key: str) -> int:
    times = await wait_until(lambda: page.evaluate("window.__noteTimes"), lambda t: t[key] is not None, key)
    return int(times[key])


async def test_a_mute_shows_on_the_other_page_within_half_a_second_as_said(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A mutes: B reads "clientA muted their microphone." within 500 ms of the click (the silence window alone
    takes 2 s, and would say "No sound from …"); A unmutes: it clears within 500 ms."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await assert_audio_flows(b, "B")
    in_call = b.locator("#in-call")
    await expect(in_call).to_have_attribute("data-peer-muted", "false")  # said after call-accept, before any change
    await b.evaluate(WATCH_NOTE)

    clicked = await a.evaluate(CLICK_MUTE)
    await expect(b.locator("#peer-note")).to_have_text("clientA muted their microphone.")
    shown = await note_time(b, "muted")
    assert shown - clicked < 500, f"B showed the mute {shown - clicked} ms after A clicked"
    await expect(in_call).to_have_attribute("data-peer-muted", "true")
    texts = await b.evaluate("window.__noteTimes.texts")
    assert not any("No sound" in text for text in texts), f"the silence heuristic spoke: {texts}"

    unclicked = await a.evaluate(CLICK_MUTE)
    await expect(b.locator("#peer-note")).to_be_hidden()
    cleared = await note_time(b, "cleared")
    assert cleared - unclicked < 500, f"B cleared the mute {cleared - unclicked} ms after A clicked"
    await expect(in_call).to_have_attribute("data-peer-muted", "false")
    await assert_audio_flows(b, "B, after A unmuted")


async def test_silence_from_an_unmuted_peer_is_the_no_sound_hint(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A's microphone goes silent without a mute (as a dead microphone does): A says it is unmuted, so B reads "No
    sound from clientA: their microphone may not be working." (the heuristic, only now), not "muted"."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await assert_audio_flows(b, "B")
    await a.evaluate("window.peercall.call.localStream.getAudioTracks()[0].enabled = false")  # not through Mute
    await expect(b.locator("#peer-note")).to_have_text("No sound from clientA: their microphone may not be working.")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-muted", "false")
    assert await a.evaluate("window.peercall.mediaState.local.muted") is False


async def test_the_media_state_is_said_again_after_the_call_resumes(
    fresh_server: ServerProcess, open_page: OpenPage
) -> None:
    """A mutes, then A's connection to the server drops and comes back: the server hands the call back, A says its
    state again (it may have been lost), and B still shows the mute."""
    a, b = await open_pair(open_page, fresh_server)
    await start_call(a, b)
    await a.click("#mute")
    await expect(b.locator("#peer-note")).to_have_text("clientA muted their microphone.")
    said_at = await b.evaluate("window.peercall.mediaState.peerAt")

    await a.evaluate("() => { window.__e2e.blockSockets = true; window.__e2e.sockets.at(-1).close(); }")
    await expect(b.locator("#peer-note")).to_have_text("clientA's connection dropped — waiting for them…")
    await expect(a.locator("#connection-banner")).to_be_visible()
    await a.evaluate("window.__e2e.blockSockets = false")  # it reconnects by itself at its next try
    await expect(a.locator("#server-status")).to_have_text("Connected")
    await wait_until(
        lambda: b.evaluate("window.peercall.mediaState.peerAt"), lambda at: at > said_at, "A to say its state again"
    )
    await expect(b.locator("#peer-note")).to_have_text("clientA muted their microphone.")
    await expect(b.locator("#in-call")).to_have_attribute("data-peer-muted", "true")
