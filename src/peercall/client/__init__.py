"""peercall's Python client SDK: voice calls from Python over a peercall server, with aiortc for WebRTC.

```python
import asyncio
from peercall.client import Client

async def main() -> None:
    async with Client("ws://127.0.0.1:8080/ws", "alice") as client:
        call = await client.call("bob", audio_in="hello.wav", audio_out="reply.wav")
        await call.wait_connected()
        await asyncio.sleep(10)
        print(await call.hangup())

asyncio.run(main())
```

Modules: `signaling` (the WebSocket and its reconnects), `call` (one call: phase machine, aiortc, explicit
negotiation), `candidates` (which of the peer's ICE candidates a call may check), `media` (audio sources and sinks),
`video` (video sources and sinks), `client` (the composition root), `accounts` (signing in to a server in accounts
mode, token providers), `contacts` (contacts, requests, blocks and the ring setting), `events`, `ice`
(`/ice-servers` and the loopback setting), `quality` (audio measurements), `check` (the audio self-test), `echo`
(the echo service), `cli` (the `call`, `answer`, `echo`, `audio-check` and `contacts` commands). See
docs/python-client.md.

Needs the `sdk` extra: `pip install 'peercall[sdk]'`.

`CallState` and `CallStateChanged` are deprecated aliases of `CallPhase` and `CallPhaseChanged` (a call's phase
is this side's view of it; its state is the server's, see docs/glossary.md), as are `Call.state` and
`CallPhaseChanged.state` of their `phase`.
"""

from . import media, video
from .accounts import Accounts, SignInError, server_auth_mode, token_file
from .call import Call, CallEnd, CallEndedError, CallError, CallPhase, CallState, CallStats, MediaState
from .candidates import CandidatePolicy
from .client import Client, IncomingCalls, Subscription
from .contacts import Contact, ContactError, Contacts, DirectoryPage, DirectoryUser, Pending
from .events import (
    CallEnded,
    CallPhaseChanged,
    CallResumed,
    CallStateChanged,
    Connected,
    ContactsChanged,
    Disconnected,
    Event,
    IncomingCall,
    MissedCalls,
    PeerMediaChanged,
    PresenceChanged,
    ServerError,
)
from .ice import LOOPBACK_ENV, IceConfig, fetch_ice_config, loopback_candidates
from .signaling import ClientError, ConnectError, SignalingState, TokenProvider

__all__ = [
    "LOOPBACK_ENV",
    "Accounts",
    "Call",
    "CallEnd",
    "CallEnded",
    "CallEndedError",
    "CallError",
    "CallPhase",
    "CallPhaseChanged",
    "CallResumed",
    "CallState",
    "CallStateChanged",
    "CallStats",
    "CandidatePolicy",
    "Client",
    "ClientError",
    "ConnectError",
    "Connected",
    "Contact",
    "ContactError",
    "Contacts",
    "ContactsChanged",
    "DirectoryPage",
    "DirectoryUser",
    "Disconnected",
    "Event",
    "IceConfig",
    "IncomingCall",
    "IncomingCalls",
    "MediaState",
    "MissedCalls",
    "PeerMediaChanged",
    "Pending",
    "PresenceChanged",
    "ServerError",
    "SignInError",
    "SignalingState",
    "Subscription",
    "TokenProvider",
    "fetch_ice_config",
    "loopback_candidates",
    "media",
    "server_auth_mode",
    "token_file",
    "video",
]
