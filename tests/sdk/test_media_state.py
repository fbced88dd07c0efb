"""The SDK says its media state (`media-state`) and hears the peer's: mute sends silence and tells the peer, who
sees it as `Call.peer_media` and a `PeerMediaChanged` event; a state set before the call is answered is said once
it is."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from peercall.client import Call, Client, MediaState, PeerMediaChanged, Subscription, media, quality
from peercall.client.events import Event

from .conftest import WAIT, MakeClient, next_incoming


async def peer_media(events: Subscription[Event], call: Call) -> MediaState:
    """The next media state that `call`'s peer says."""
    async with asyncio.timeout(WAIT):
        async for event in events:
            if isinstance(event, PeerMediaChanged) and event.call is call:
                return event.media
    raise AssertionError("the events ended")


def level(heard: media.Capture, seconds: float = 0.5) -> float:
    """The RMS level (0..1) of the last `seconds` heard."""
    tail = heard.samples()[-int(seconds * media.SAMPLE_RATE) :]
    return quality.rms(tail.astype(np.float64) / 32768)


async def test_mute_is_said_to_the_peer_and_sends_silence(sdk: MakeClient, uid: Any) -> None:
    alice: Client = await sdk(uid("alice"))
    bob: Client = await sdk(uid("bob"))
    bob_events, alice_events = bob.events(), alice.events()
    call = await alice.call(bob.id, audio_in=media.Tone(440))
    await call.mute()  # before the call is answered: said once it is
    assert call.muted and call.media == MediaState(muted=True)
    ringing = await next_incoming(bob)
    heard = media.Capture()
    await ringing.accept(audio_out=heard)
    assert await peer_media(bob_events, ringing) == MediaState(muted=True)
    assert ringing.peer_media.muted
    async with asyncio.timeout(WAIT):
        await call.wait_connected()
        await heard.wait_for(1.0)
    assert level(heard) < 0.001, "a muted caller's audio should be silence"

    await call.mute(False)
    assert await peer_media(bob_events, ringing) == MediaState()
    async with asyncio.timeout(WAIT):
        await heard.wait_for(heard.duration + 1.0)
    assert level(heard) > 0.05, "the tone should be heard again after unmuting"

    # The callee's state reaches the caller too; camera and screen are said as the application sets them.
    assert call.peer_media == MediaState()
    await ringing.set_media(camera=True)
    assert await peer_media(alice_events, call) == MediaState(camera=True)
    assert call.peer_media.camera and not call.peer_media.muted
    await call.hangup()
