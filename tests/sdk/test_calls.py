"""SDK ↔ SDK calls through a real server: audio both ways, hangup from either side, reject, missed, resume."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import numpy as np
import pytest

from peercall.auth.tokens import mint
from peercall.client import (
    CallEnded,
    CallEndedError,
    CallError,
    CallPhase,
    CallPhaseChanged,
    CallResumed,
    CallState,
    CallStateChanged,
    Connected,
    ConnectError,
    Event,
    IncomingCall,
    PresenceChanged,
    media,
    quality,
)
from peercall.client.media import Pcm
from tests.conftest import OPEN_DOORS, run_server

from .conftest import WAIT, MakeClient, next_incoming

TONE_RMS = 0.3 * 32767 / np.sqrt(2)  # a Tone's default amplitude


def assert_tone(samples: Pcm, frequency: float, who: str) -> None:
    """`samples` (48 kHz) carry a tone of `frequency` at about the level it was sent with."""
    tail = samples[-48_000:]
    level = quality.rms(tail)
    found = quality.dominant_frequency(tail, media.SAMPLE_RATE)
    assert abs(found - frequency) < 5, f"{who} hears {found:.0f} Hz, expected {frequency:.0f} Hz"
    assert 0.5 * TONE_RMS < level < 1.5 * TONE_RMS, f"{who} hears the tone at RMS {level:.0f}, sent {TONE_RMS:.0f}"


async def collect(events: Any, until: type, call_id: str | None = None) -> list[Event]:
    """The events up to and including the first of type `until` (for `call_id`, if given)."""
    seen: list[Event] = []
    async with asyncio.timeout(WAIT):
        async for event in events:
            seen.append(event)
            about: Any = event
            if isinstance(event, until) and (call_id is None or about.call.id == call_id):
                return seen
    raise AssertionError(f"the events ended before {until.__name__}: {seen}")


def test_deprecated_call_state_names_still_work() -> None:
    """`CallState` and `CallStateChanged` (and an event's `state`) are aliases of the call phase names."""
    assert CallState is CallPhase and CallStateChanged is CallPhaseChanged
    assert CallState.CONNECTED is CallPhase.CONNECTED == "connected"
    event = CallStateChanged(None, CallPhase.ENDED, CallPhase.CONNECTED)  # type: ignore[arg-type]
    match event:
        case CallStateChanged(state=state, previous=previous):
            assert (state, previous) == (CallPhase.ENDED, CallPhase.CONNECTED)


async def test_tones_arrive_both_ways_and_caller_hangs_up(sdk: MakeClient, uid: Any, tmp_path: Any) -> None:
    """Each side hears the other's tone at its frequency and level (one side into a WAV file); the caller hangs up."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    recording = tmp_path / "alice-hears.wav"
    caller_events = alice.events()
    call = await alice.call(bob.id, audio_in=media.Tone(440), audio_out=recording)
    assert call.phase is CallPhase.REQUESTING and call.id
    ringing = await next_incoming(bob)
    assert (ringing.peer, ringing.id, ringing.phase) == (alice.id, call.id, CallPhase.INCOMING)
    heard = media.Capture()
    await ringing.accept(audio_in=media.Tone(1000), audio_out=heard)
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
        await heard.wait_for(1.5)
        await call.sink.wait_for(1.5)

    end = await call.hangup()
    assert (end.outcome, end.reason) == ("answered", "user-hangup")
    async with asyncio.timeout(WAIT):
        assert await ringing.wait_ended() == end
    assert call.phase is ringing.phase is CallPhase.ENDED

    assert_tone(heard.samples(), 440, "bob")
    samples, rate = media.read_wav(recording)
    assert rate == media.SAMPLE_RATE and samples.size >= 1.5 * rate
    assert_tone(samples, 1000, "alice (recorded file)")
    phases = [e.phase for e in await collect(caller_events, CallEnded, call.id) if isinstance(e, CallPhaseChanged)]
    assert phases == [CallPhase.CALLING, CallPhase.CONNECTED, CallPhase.ENDED]
    assert call.state is call.phase  # the deprecated alias
    stats = await call.stats()
    assert stats.packets_received > 50 and stats.packets_lost == 0, stats


async def test_speech_arrives_and_callee_hangs_up(sdk: MakeClient, uid: Any, speech: tuple[Pcm, int]) -> None:
    """Speech sent from a generator arrives recognisably (correlation with the sample); the callee hangs up."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    samples, rate = speech
    clip = samples[: int(2.5 * rate)]
    chunks = (media.resample(clip, rate, media.SAMPLE_RATE)[i : i + 4800] for i in range(0, 3 * 48_000, 4800))
    call = await alice.call(bob.id, audio_in=chunks)
    ringing = await next_incoming(bob)
    heard = media.Capture()
    await ringing.accept(audio_out=heard)
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
        await heard.wait_for(3.2)

    end = await ringing.hangup()
    assert (end.outcome, end.reason) == ("answered", "user-hangup")
    async with asyncio.timeout(WAIT):
        assert await call.wait_ended() == end
    received = media.resample(heard.samples(), media.SAMPLE_RATE, rate)
    found = quality.align(clip, received)
    assert found.correlation > 0.8, f"the speech arrived unlike the sample: correlation {found.correlation:.2f}"
    assert quality.rms(received[found.lag : found.lag + clip.size]) > 0.5 * quality.rms(clip)


async def test_reject(sdk: MakeClient, uid: Any) -> None:
    """A callee that rejects ends the call as rejected on both sides, and the caller's wait says so."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    call = await alice.call(bob.id)
    ringing = await next_incoming(bob)
    end = await ringing.reject()
    assert (end.outcome, end.reason) == ("rejected", "user-rejected")
    with pytest.raises(CallEndedError) as raised:
        async with asyncio.timeout(WAIT):
            await call.wait_connected()
    assert raised.value.end == end
    with pytest.raises(CallError, match="cannot accept"):
        await ringing.accept()


async def test_missed_when_nobody_answers(sdk: MakeClient, uid: Any) -> None:
    """A call nobody answers ends as missed (invite-timeout) for the caller and for the callee that rang."""
    with run_server(PEERCALL_RING_TIMEOUT="1") as short:
        alice, bob = await sdk(uid("alice"), short), await sdk(uid("bob"), short)
        call = await alice.call(bob.id)
        ringing = await next_incoming(bob)
        async with asyncio.timeout(WAIT):
            caller_end, callee_end = await call.wait_ended(), await ringing.wait_ended()
        assert (caller_end.outcome, caller_end.reason) == ("missed", "invite-timeout")
        assert callee_end == caller_end and ringing.phase is CallPhase.ENDED
        await alice.close()
        await bob.close()


async def test_unavailable_and_busy(sdk: MakeClient, uid: Any) -> None:
    """Calling someone offline ends as unavailable; calling someone in a call ends as busy; one call at a time."""
    alice, bob, carol = await sdk(uid("alice")), await sdk(uid("bob")), await sdk(uid("carol"))
    nobody = await alice.call(uid("nobody"))
    async with asyncio.timeout(WAIT):
        assert (await nobody.wait_ended()).outcome == "unavailable"

    call = await alice.call(bob.id)
    with pytest.raises(CallError, match="already in call"):
        await alice.call(carol.id)
    busy = await carol.call(alice.id)
    async with asyncio.timeout(WAIT):
        assert (await busy.wait_ended()).outcome == "busy"
    assert (await call.hangup()).outcome == "cancelled"


async def test_a_missing_audio_file_fails_before_anything_rings(sdk: MakeClient, uid: Any, tmp_path: Any) -> None:
    """`call()` with an audio file that cannot be opened raises OSError, and no call starts."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    events = bob.events()
    with pytest.raises(OSError, match=r"missing\.wav"):
        await alice.call(bob.id, audio_in=tmp_path / "missing.wav")
    assert alice.current_call is None
    call = await alice.call(bob.id)  # and the next call works
    seen = await collect(events, IncomingCall)
    assert [e.call.id for e in seen if isinstance(e, IncomingCall)] == [call.id]
    await call.hangup()


async def test_glare_makes_one_call(sdk: MakeClient, uid: Any) -> None:
    """Two users who call each other at once get one call: the server makes one side polite, and it connects."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    one, other = await asyncio.gather(alice.call(bob.id, audio_in=media.Tone(440)), bob.call(alice.id))
    async with asyncio.timeout(WAIT):
        await one.wait_connected()
        await other.wait_connected()
    assert one.id == other.id
    assert {one.polite, other.polite} == {True, False}
    end = await other.hangup()
    async with asyncio.timeout(WAIT):
        assert await one.wait_ended() == end


async def test_presence_and_incoming_events(sdk: MakeClient, uid: Any) -> None:
    """events() reports others coming online and going offline, and a call ringing here."""
    alice = await sdk(uid("alice"))
    events = alice.events()
    bob = await sdk(uid("bob"))
    seen = await collect(events, PresenceChanged)
    assert PresenceChanged(bob.id, True) in seen and bob.id in alice.online
    await bob.call(alice.id)
    seen = await collect(events, IncomingCall)
    assert seen[-1].call.peer == bob.id  # type: ignore[union-attr]
    await bob.close()
    seen = await collect(events, CallEnded)
    assert seen[-1].end.outcome == "cancelled"  # type: ignore[union-attr]
    async with asyncio.timeout(WAIT):
        async for event in events:
            if event == PresenceChanged(bob.id, False):
                break
    assert bob.id not in alice.online


async def test_call_survives_a_signaling_drop(sdk: MakeClient, uid: Any) -> None:
    """When the caller's WebSocket drops mid-call, it reconnects as the same device, the server hands the call back,
    audio keeps flowing, and a later hangup ends it on both sides."""
    alice = await sdk(uid("alice"), min_delay=0.05, max_delay=0.2)
    bob = await sdk(uid("bob"))
    call = await alice.call(bob.id, audio_in=media.Tone(440))
    ringing = await next_incoming(bob)
    heard = media.Capture()
    await ringing.accept(audio_out=heard)
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    events = alice.events()
    await alice._signaling.drop()
    seen = await collect(events, CallResumed)
    assert any(isinstance(e, Connected) and e.reconnected for e in seen)
    async with asyncio.timeout(WAIT):
        await heard.wait_for(heard.duration + 1.0)  # the audio went on
    assert call.phase is CallPhase.CONNECTED
    end = await call.hangup()
    assert (end.outcome, end.reason) == ("answered", "user-hangup")
    async with asyncio.timeout(WAIT):
        assert await ringing.wait_ended() == end


async def test_token_mode(sdk: MakeClient, uid: Any) -> None:
    """With PEERCALL_AUTH=token a client connects and calls with its token (sent as a Bearer header, also for
    /ice-servers); a bad token is refused for good with a ConnectError."""
    secret = "sdk-test-secret-" + "x" * 32
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=secret) as guarded:
        alice, bob = uid("alice"), uid("bob")
        caller = await sdk(alice, guarded, token=mint(alice, secret))
        callee = await sdk(bob, guarded, token=mint(bob, secret))
        call = await caller.call(bob)
        ringing = await next_incoming(callee)
        await ringing.accept()
        async with asyncio.timeout(WAIT):
            await call.wait_connected()
        assert (await call.hangup()).outcome == "answered"
        assert await asyncio.to_thread(guarded.wait_log, f'"GET /ice-servers?id={bob} HTTP/1.1" 200'), guarded.log()
        with pytest.raises(ConnectError) as refused:
            await sdk(uid("mallory"), guarded, token=mint(alice, secret))
        assert refused.value.terminal and refused.value.status == 401
        await caller.close()
        await callee.close()


async def test_debug_logs_redact_the_ice_password(sdk: MakeClient, uid: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Debug logging (`peercall … -v`) shows each SDP but not its `a=ice-pwd:` value, a credential that ends up in
    pasted bug reports; the peer still gets it (the call connects)."""
    caplog.set_level(logging.DEBUG)
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    call = await alice.call(bob.id)
    await (await next_incoming(bob)).accept()
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
    assert call.pc is not None and call.pc.remoteDescription is not None
    passwords = re.findall(r"a=ice-pwd:(\S+)", call.pc.remoteDescription.sdp + call.pc.localDescription.sdp)
    await call.hangup()
    assert len(passwords) == 2 and "[redacted]" not in passwords, passwords
    for password in passwords:
        assert password not in caplog.text
    assert "a=ice-pwd:[redacted]" in caplog.text, "the SDPs were not logged"


async def test_a_recording_opened_for_a_call_that_fails_to_start_is_closed(
    sdk: MakeClient, uid: Any, tmp_path: Any
) -> None:
    """`call()` with a WAV to record and a video file that cannot be opened raises OSError, and the WAV it had
    created is closed at once (a valid WAV of 0 frames), not left half-written to the garbage collector."""
    alice, bob = await sdk(uid("alice")), await sdk(uid("bob"))
    wav = tmp_path / "heard.wav"
    with pytest.raises(OSError, match=r"missing\.mp4") as failed:
        await alice.call(bob.id, audio_out=wav, video_in=tmp_path / "missing.mp4")
    samples, rate = media.read_wav(wav)  # while the error (and its traceback) is still held
    assert samples.size == 0 and rate == media.SAMPLE_RATE
    assert alice.current_call is None, failed.value
