"""One SDK call: its phase machine (this side's view of the call), its aiortc peer connection and its media.

Owns the `RTCPeerConnection`, the source tracks and the sinks (audio, and video if any), the call's timers and the
order in which the peer's frames are handled (one at a time, from the call's own inbox). Frames go out through the
`send` function it is given and come in through `deliver()`; it knows nothing of the WebSocket, nor of other calls.

Negotiation is explicit, and aiortc is always the impolite side in spirit: it has no rollback and no
`negotiationneeded` (aiortc#975), and it does not trickle its own candidates (its SDP carries them all). So:
- as the caller (`polite: false` in `call-accept`), it adds its track, makes the one offer and applies the answer;
- as the callee, or when the server makes it polite (glare), it never offers: it answers the offers it gets;
- as the impolite side, it ignores an offer that collides with its own (the polite peer yields).
Video is settled by the offers too: the caller offers it when it has a video source or sink; every offer it answers
puts its video source on the peer's first video m-line and its video sink on the newest one the peer sends on, and
answers the rest without receiving (`inactive` without a video source or sink), so the peer may add, move or stop
video mid-call without breaking the call. An m-line that it receives again (the camera, once a screen shared beside
it stops) starts afresh from the peer's next packet and a keyframe (`_restart_reception`).
aiortc cannot restart ICE (its ICE agent keeps the credentials and the candidate pair of the first negotiation), so
the SDK never offers a restart, and it answers a browser's restart offer with the ICE it has: the call goes on over
the path in use if that still works, and fails (`ice-timeout`, `ice-failed`) if it is gone (`peer_ice_restarts`).
The peer's trickled candidates are queued until the remote description is set. Nothing waits for the peer's
gathering to complete. Every remote candidate, trickled or in the peer's SDP, passes the call's `CandidatePolicy`
first (candidates.py): an address the policy denies never reaches aiortc, and at most `max_candidates` do (the
queue included).

Imports aiortc, the SDK's `candidates`, `ice`, `media`, `video` and `signaling` (errors only); must not import the
client or the server.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from threading import Event
from typing import Any

import aiortc
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.sdp import SessionDescription, candidate_from_sdp

from .candidates import CandidatePolicy, RemoteCandidates
from .ice import IceConfig, close_peer_connection, set_local_description
from .media import AudioIn, AudioOut, Discard, Mutable, Sink, as_sink, as_source
from .signaling import ClientError, Frame
from .video import VideoIn, VideoOut, VideoSink, as_video_sink, as_video_source

log = logging.getLogger("peercall.client")

_ICE_PASSWORD = re.compile(r"(a=ice-pwd:)[^\s\\\"']+")


class RedactIcePassword(logging.Filter):
    """Replace the value of every `a=ice-pwd:` line in a log message with `[redacted]`.

    aiortc logs each description it sets, in full, at debug level (what `peercall … -v` shows): the ICE password
    in it is the credential of the call's connectivity checks, and a log is pasted into bug reports. Only the log is
    changed; the SDP sent to the peer keeps it. The DTLS fingerprint stays: it is the hash of a public certificate,
    no secret, and it tells which certificate a failed handshake expected.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "a=ice-pwd:" in message:
            record.msg, record.args = _ICE_PASSWORD.sub(r"\1[redacted]", message), None
        return True


for _name in ("aiortc.rtcpeerconnection", "peercall.client"):  # a logger's filter sees only its own records
    logging.getLogger(_name).addFilter(RedactIcePassword())


class CallPhase(enum.StrEnum):
    """A call's phase: this side's view of its call, in the web client's words (the JS `CallPhase`).

    The server's view of a call (`ringing`, `answered`, `ended`) is its *state*; the two are different things.
    """

    REQUESTING = "requesting"  # we called; the peer's devices ring
    INCOMING = "incoming"  # the peer called; we ring
    CALLING = "calling"  # accepted; offer, answer and ICE under way
    CONNECTED = "connected"  # audio flows
    ENDED = "ended"


CallState = CallPhase
"""Deprecated alias of `CallPhase`, its name before the glossary (docs/glossary.md): use `CallPhase`."""

TRANSITIONS: dict[tuple[CallPhase, str], CallPhase] = {
    (CallPhase.REQUESTING, "accepted"): CallPhase.CALLING,
    (CallPhase.REQUESTING, "end"): CallPhase.ENDED,
    (CallPhase.INCOMING, "accept"): CallPhase.CALLING,
    (CallPhase.INCOMING, "end"): CallPhase.ENDED,
    (CallPhase.CALLING, "connected"): CallPhase.CONNECTED,
    (CallPhase.CALLING, "end"): CallPhase.ENDED,
    (CallPhase.CONNECTED, "end"): CallPhase.ENDED,
}
"""The phase machine as one table: (phase, event) -> next phase. A missing key is not allowed."""


@dataclass(frozen=True)
class MediaState:
    """What one party's media does (the `media-state` frame, docs/protocol.md): its microphone is muted, it sends
    its camera, it shares a screen. A party says it; the other side never has to guess it from the media."""

    muted: bool = False
    camera: bool = False
    screen: bool = False

    @classmethod
    def from_data(cls, data: Any) -> MediaState:
        """The state a `media-state` frame's `data` says: a key left out (or not a boolean) is false."""
        if not isinstance(data, dict):
            return cls()
        return cls(data.get("muted") is True, data.get("camera") is True, data.get("screen") is True)

    def to_data(self) -> dict[str, bool]:
        """The `data` of the `media-state` frame that says this state."""
        return {"muted": self.muted, "camera": self.camera, "screen": self.screen}


class CallError(ClientError):
    """An operation that the call's phase does not allow, or a call the server would not start."""


@dataclass(frozen=True)
class CallEnd:
    """How a call ended: the server's `outcome` and `reason` (docs/protocol.md, "Outcomes and reasons").

    `outcome` is None when the server could not tell us (our connection to it was lost: `reason` then says
    `signaling-lost`).
    """

    outcome: str | None
    reason: str | None

    def __str__(self) -> str:
        what = self.outcome or "unknown"
        return f"{what} ({self.reason})" if self.reason else what


class CallEndedError(CallError):
    """The call ended before what we waited for (e.g. the peer rejected it). `end` says how."""

    def __init__(self, call: Call, end: CallEnd | None) -> None:
        hint = f"; {call.hint}" if call.hint else ""
        super().__init__(f"call {call.id or '?'} with {call.peer} ended: {end or 'ended'}{hint}")
        self.call = call
        self.end = end


@dataclass(frozen=True)
class CallStats:
    """Media statistics of a call, from aiortc's `getStats()`.

    `jitter` is the interarrival jitter of what we receive, in seconds; `round_trip_time` is from the peer's RTCP
    receiver reports (None before the first one).
    """

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    jitter: float = 0.0
    round_trip_time: float | None = None

    @property
    def loss(self) -> float:
        """The fraction of the peer's packets that were lost (0 when none arrived)."""
        total = self.packets_received + self.packets_lost
        return self.packets_lost / total if total else 0.0


_HANGUP = "hangup"
_SENDS = ("sendrecv", "sendonly")
MAX_BAD_DESCRIPTIONS = 10
"""Offers or answers that aiortc cannot take in one call before it is hung up (`unknown-error`): the first three are
logged, one line each; the call goes on meanwhile (a re-offer that adds what aiortc cannot do keeps the audio)."""
MAX_MEDIA_LINES = 32
"""Media lines an offer or answer may have (the web client adds one each time the camera is turned on again): beyond,
the call is hung up (`unknown-error`), since aiortc keeps a transceiver for each for the call's life."""
"""The directions of an m-line in the peer's offer in which the peer sends."""
_DIRECTIONS = {
    (True, True): "sendrecv",
    (True, False): "sendonly",
    (False, True): "recvonly",
    (False, False): "inactive",
}
"""Our direction for a video m-line: (we send, we receive) -> direction."""
_NOT_RECEIVING = ("sendonly", "inactive")
"""The negotiated directions of an m-line in which we do not receive: aiortc drops what arrives on it."""
_STOP: Frame = {"type": "_stop"}

Send = Callable[[Frame], Awaitable[bool]]
GetIce = Callable[[], Awaitable[IceConfig]]


class Call:
    """A call with one peer. Made by `Client.call()` (outgoing) or received from `Client.incoming()` (incoming).

    Attributes:
        id: the server's call id (`callId`), or None until the server has named an outgoing call.
        peer: the other party's user id.
        direction: `outgoing` or `incoming`.
        polite: our role in perfect negotiation, as the server assigned it (`call-accept`, `call-resumed`).
    """

    def __init__(
        self,
        *,
        peer: str,
        direction: str,
        call_id: str | None,
        send: Send,
        get_ice: GetIce,
        on_change: Callable[[Call, CallPhase, CallPhase], None],
        on_end: Callable[[Call, CallEnd], None],
        on_media: Callable[[Call, MediaState], None] | None = None,
        ice_loopback: bool = False,
        setup_timeout: float = 30.0,
        end_timeout: float = 5.0,
        candidate_policy: CandidatePolicy | None = None,
    ) -> None:
        self.id = call_id
        self.peer = peer
        self.direction = direction
        self.polite = direction == "incoming"
        self._phase = CallPhase.REQUESTING if direction == "outgoing" else CallPhase.INCOMING
        self._send_frame = send
        self._get_ice = get_ice
        self._on_change = on_change
        self._on_end = on_end
        self._on_media = on_media
        self._media = MediaState()
        self._peer_media = MediaState()
        self._sent: Mutable | None = None
        self._ice_loopback = ice_loopback
        self._setup_timeout = setup_timeout
        self._end_timeout = end_timeout
        self._ice: IceConfig | None = None
        self._pc: RTCPeerConnection | None = None
        self._source: MediaStreamTrack | None = None
        self._sink: Sink = Discard()
        self._remote_track: MediaStreamTrack | None = None
        self._bad_descriptions = 0  # offers and answers that aiortc could not take (MAX_BAD_DESCRIPTIONS)
        self._sink_started = False
        self._track_added = False
        self._video_source: MediaStreamTrack | None = None
        self._video_sink: VideoSink | None = None
        self._video_track: MediaStreamTrack | None = None  # the peer's video track that the video sink consumes
        self._video_receiving: RTCRtpTransceiver | None = None  # its transceiver
        self._video_added = False
        self._pending_candidates: list[dict[str, Any] | None] = []  # at most max_candidates, and one end
        self._remote_candidates = RemoteCandidates(candidate_policy or CandidatePolicy(), f"call with {peer}")
        self.peer_ice_restarts = 0
        """How many ICE restarts the peer asked for (a new offer with new ICE credentials, e.g. after its network
        changed). aiortc cannot follow them: see the module's docstring."""
        self.hint: str | None = None
        """Why the audio did not connect, when the peer's candidates tell (it offered none, or none was usable);
        set as the call fails with `ice-timeout` or `ice-failed`, and said in `CallEndedError`. None otherwise."""
        self._changed = asyncio.Event()
        self._end: asyncio.Future[CallEnd] = asyncio.get_running_loop().create_future()
        self._local_reason: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._teardown: asyncio.Future[None] | None = None
        self._fallback: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name=f"peercall-call-{peer}")

    # ---- what the application sees ------------------------------------------------------------------------------

    @property
    def phase(self) -> CallPhase:
        """The call's phase: this side's view of the call."""
        return self._phase

    @property
    def state(self) -> CallPhase:
        """Deprecated alias of `phase`."""
        return self._phase

    @property
    def active(self) -> bool:
        """Whether the call is still going (ringing, negotiating or connected)."""
        return self._phase is not CallPhase.ENDED

    @property
    def end(self) -> CallEnd | None:
        """How the call ended, once the server has said so (or could not), else None."""
        return self._end.result() if self._end.done() else None

    @property
    def pc(self) -> RTCPeerConnection | None:
        """The aiortc peer connection (None before the call is accepted; closed after it ended)."""
        return self._pc

    @property
    def source(self) -> MediaStreamTrack | None:
        """The track we send (None before we accepted or were accepted)."""
        return self._source

    @property
    def sink(self) -> Sink:
        """What consumes the peer's audio."""
        return self._sink

    @property
    def video_source(self) -> MediaStreamTrack | None:
        """The video track we send, or None (no video from us)."""
        return self._video_source

    @property
    def video_sink(self) -> VideoSink | None:
        """What consumes the peer's video, or None (we decline it)."""
        return self._video_sink

    @property
    def media(self) -> MediaState:
        """What this side says of its media (`mute()`, `set_media()`)."""
        return self._media

    @property
    def muted(self) -> bool:
        """Whether our audio is muted (silence is sent in its place)."""
        return self._media.muted

    @property
    def peer_media(self) -> MediaState:
        """What the peer last said of its media (`media-state`): until it says anything, unmuted, camera and screen
        off. Each change is also a `PeerMediaChanged` event."""
        return self._peer_media

    async def mute(self, muted: bool = True) -> None:
        """Mute our audio (send silence instead), or unmute it; the peer is told (`media-state`).

        Args:
            muted: True to mute, False to unmute.
        """
        await self.set_media(muted=muted)

    async def set_media(
        self, *, muted: bool | None = None, camera: bool | None = None, screen: bool | None = None
    ) -> MediaState:
        """Change what this side says of its media, and tell the peer once the call is answered (and again after
        it resumes). `muted` also mutes our audio; `camera` and `screen` are only said: they describe what the
        application sends. None leaves that part as it is.

        Returns:
            The state now said.
        """
        before = self._media
        self._media = replace(
            before,
            muted=before.muted if muted is None else bool(muted),
            camera=before.camera if camera is None else bool(camera),
            screen=before.screen if screen is None else bool(screen),
        )
        if self._sent is not None:
            self._sent.muted = self._media.muted
        if self._media != before:
            self._log(f"media state {self._media.to_data()}")
            await self._say_media()
        return self._media

    @property
    def role(self) -> str:
        """`polite` or `impolite`: the prefix of this call's log lines."""
        return "polite" if self.polite else "impolite"

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.direction} {self.peer} {self._phase.value}>"

    async def accept(
        self,
        audio_in: AudioIn = None,
        audio_out: AudioOut = None,
        *,
        video_in: VideoIn = None,
        video_out: VideoOut = None,
    ) -> None:
        """Accept a ringing incoming call: fetch the ICE servers, then send `call-accept` and wait for the offer.

        Args:
            audio_in: what to send (a track, a file name, an iterator of 48 kHz chunks; None: silence).
            audio_out: what to do with what arrives (a sink, a file name, `fn(samples, rate)`; None: drop it).
            video_in: video to send when the caller's offer has video (a track, a file name, looped; None: none).
            video_out: what to do with the caller's video (a video sink, a file name, `fn(frame)`; None: decline
                it).

        Raises:
            CallError: the call is not ringing here (it was accepted, rejected or ended).
            OSError: a file cannot be opened.
        """
        if self._phase is not CallPhase.INCOMING:
            raise CallError(f"cannot accept call {self.id} from {self.peer}: it is {self._phase.value}")
        self._attach(audio_in, audio_out, video_in, video_out)
        self._transition("accept")
        self._log("accept: fetching the ICE servers")
        ice = await self._get_ice()
        if not self.active:
            return
        self._ice = ice
        self._create_pc()
        if not await self._send({"type": "call-accept", "to": self.peer, "callId": self.id}):
            await self._finish("signaling-lost", CallEnd(None, "signaling-lost"))
            raise CallError(f"cannot accept call {self.id}: not connected to the server")
        self._log(f"call-accept sent to {self.peer}; waiting for the offer")
        self._start_timer()
        await self._say_media()

    async def reject(self, reason: str = "user-rejected") -> CallEnd:
        """Decline a ringing incoming call.

        Args:
            reason: sent to the caller; `busy` only stops this device ringing (the user's other devices go on).

        Returns:
            How the call ended, as the server says.

        Raises:
            CallError: the call is not ringing here.
        """
        if self._phase is not CallPhase.INCOMING:
            raise CallError(f"cannot reject call {self.id} from {self.peer}: it is {self._phase.value}")
        frame: Frame = {"type": "call-reject", "to": self.peer, "callId": self.id}
        if reason != "user-rejected":
            frame["data"] = {"reason": reason}
        sent = await self._send(frame)
        await self._finish("declined", None if sent else CallEnd(None, "signaling-lost"))
        return await self._wait_end()

    async def hangup(self, reason: str = "user-hangup") -> CallEnd:
        """End the call (or cancel it while it rings, or decline it while it rings here). Idempotent.

        Args:
            reason: one of `user-hangup`, `user-busy`, `invite-timeout`, `ice-failed`, `ice-timeout`,
                `user-media-failed`, `unknown-error` (the last few end the call as `failed`).

        Returns:
            How the call ended, as the server says (after at most a few seconds; `outcome` None if it did not).
        """
        if self.active:
            frame: Frame = {"type": _HANGUP, "to": self.peer}
            if self.id is not None:
                frame["callId"] = self.id
            if reason != "user-hangup":
                frame["data"] = {"reason": reason}
            self._log(f"hangup ({reason})")
            sent = await self._send(frame)
            await self._finish(reason, None if sent else CallEnd(None, "signaling-lost"))
        return await self._wait_end()

    async def wait_connected(self) -> None:
        """Wait until the audio flows (bound it with `asyncio.timeout()` if you like).

        Raises:
            CallEndedError: the call ended first (rejected, missed, busy, failed…): `end` says how.
        """
        while True:
            if self._phase is CallPhase.CONNECTED:
                return
            if self._phase is CallPhase.ENDED:
                raise CallEndedError(self, await self._wait_end())
            self._changed.clear()
            await self._changed.wait()

    async def wait_ended(self) -> CallEnd:
        """Wait until the call has ended, its media has stopped (recordings are complete) and the server has said
        how it ended. Bound it with `asyncio.timeout()` if you like.

        Returns:
            How it ended.
        """
        end = await asyncio.shield(self._end)
        while self._teardown is None and self.active:  # the server said so; the call ends here just after
            self._changed.clear()
            await self._changed.wait()
        if self._teardown is not None:
            await asyncio.shield(self._teardown)
        return end

    async def _wait_end(self) -> CallEnd:
        """The end, once known; the server says it at once, and the fallback timer bounds the wait anyway."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that comes as the end does
            async with asyncio.timeout(self._end_timeout + 1):
                return await self.wait_ended()
        except TimeoutError:
            return self.end or CallEnd(None, self._local_reason)

    async def stats(self) -> CallStats:
        """The call's media statistics so far.

        Returns:
            Packets sent, received and lost, jitter and round-trip time (zeros before the call is accepted).
        """
        pc = self._pc
        if pc is None:
            return CallStats()
        values: dict[str, Any] = {}
        for report in (await pc.getStats()).values():
            kind = getattr(report, "type", None)
            if getattr(report, "kind", "audio") != "audio":
                continue
            if kind == "inbound-rtp":
                values["packets_received"] = values.get("packets_received", 0) + report.packetsReceived
                values["packets_lost"] = values.get("packets_lost", 0) + max(0, report.packetsLost)
                values["jitter"] = max(values.get("jitter", 0.0), report.jitter / 48_000)
            elif kind == "outbound-rtp":
                values["packets_sent"] = values.get("packets_sent", 0) + report.packetsSent
                values["bytes_sent"] = values.get("bytes_sent", 0) + report.bytesSent
            elif kind == "remote-inbound-rtp" and report.roundTripTime is not None:
                values["round_trip_time"] = float(report.roundTripTime)
        return CallStats(**values)

    # ---- what the client calls -----------------------------------------------------------------------------------

    def _attach(self, audio_in: AudioIn, audio_out: AudioOut, video_in: VideoIn, video_out: VideoOut) -> None:
        """Set the sources and the sinks (before the call is accepted)."""
        self._source = as_source(audio_in)
        self._sink = as_sink(audio_out)
        self._video_source = as_video_source(video_in)
        self._video_sink = as_video_sink(video_out)
        if self._video_source is not None:  # say it: a web client shows the peer's video only while it is said on
            self._media = replace(self._media, camera=True)

    async def _request(
        self, audio_in: AudioIn, audio_out: AudioOut, video_in: VideoIn = None, video_out: VideoOut = None
    ) -> bool:
        """Caller: fetch the ICE servers, then send `call-request`. False if it could not be sent."""
        self._attach(audio_in, audio_out, video_in, video_out)
        self._log("request: fetching the ICE servers")
        self._ice = await self._get_ice()
        if not self.active:
            return False
        sent = await self._send({"type": "call-request", "to": self.peer})
        if sent:
            self._log(f"call-request sent to {self.peer}")
        return sent

    def deliver(self, frame: Frame) -> None:
        """Queue one frame about this call (from the peer or the server), to be handled in order.

        Args:
            frame: `call-accept`, `call-reject`, `offer`, `answer`, `candidate`, `media-state`, `hangup` or
                `call-resumed`.
        """
        self._inbox.put_nowait(frame)

    def server_ended(self, outcome: str | None, reason: str | None) -> None:
        """The server's `call-ended`: the truth about how the call ended. Ends it here too if it still runs.

        Args:
            outcome: the server's outcome.
            reason: the server's reason.
        """
        self._set_end(CallEnd(outcome, reason))
        self._end_now(reason or "ended")

    def signaling_lost(self) -> None:
        """Our connection to the server is gone for good: the call cannot go on, and nobody will say how it ended."""
        if self.active:
            self._log("the connection to the server is lost: ending the call")
        self._set_end(CallEnd(None, "signaling-lost"))
        self._end_now("signaling-lost")

    def adopt_id(self, call_id: str) -> None:
        """Take the id the server gave our outgoing call (`call-ringing`).

        Args:
            call_id: the server's `callId`.
        """
        if self.id is None:
            self.id = call_id
            self._log(f"call id {call_id} (assigned by the server)")

    async def close(self) -> None:
        """End the call without a word to anyone (the client is closing) and wait until everything has stopped."""
        if self.active:
            await self._finish(self._local_reason or "closed")
        self._set_end(self.end or CallEnd(None, "signaling-lost"))
        try:
            # Awaited directly, the worker is cancelled when the timeout (or our caller) cancels us.
            async with asyncio.timeout(self._end_timeout):
                await self._worker
        except TimeoutError:
            self._log("the call's inbox did not stop in time: cancelled")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller was cancelled (a SIGTERM in the CLI): not ours to swallow
            self._log("the call's inbox was cancelled")
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---- the inbox ---------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            frame = await self._inbox.get()
            if frame is _STOP:
                return
            try:
                await self._handle(frame)
            except Exception as exc:
                if self.active:
                    log.exception("[%s] error while handling %s from %s", self.role, frame.get("type"), self.peer)
                else:  # the call ended meanwhile (e.g. the peer connection closed under setLocalDescription)
                    self._log(f"{frame.get('type')} not handled: the call ended ({exc!r})")

    async def _handle(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "call-accept":
            await self._on_accepted(frame.get("polite"))
        elif kind == "call-reject":
            self._log(f"call-reject from {self.peer}{_reason_text(frame)}")
            await self._finish("rejected")
        elif kind == _HANGUP:
            self._log(f"hangup from {self.peer}{_reason_text(frame)}")
            await self._finish("remote-hangup")
        elif kind in ("offer", "answer"):
            await self._on_description(frame.get("data"))
        elif kind == "candidate":
            await self._on_candidate(frame.get("data"))
        elif kind == "call-resumed":
            await self._on_resumed(frame)
        elif kind == "media-state":
            self._on_media_state(frame.get("data"))
        else:
            self._log(f"ignored {kind}")

    async def _on_accepted(self, polite: Any) -> None:
        """Caller: the peer accepted. As the impolite side (the default), make the offer; if the server made us the
        polite side (both called each other at once), wait for the peer's offer."""
        if self.direction != "outgoing" or not self._transition("accepted"):
            return
        self.polite = polite is True
        self._create_pc()
        self._start_timer()
        await self._say_media()
        if self.polite:
            self._log(f"call-accept from {self.peer}; the server made us polite: waiting for the offer")
            return
        self._log(f"call-accept from {self.peer}; making the offer")
        pc = self._require_pc()
        self._add_track(pc)
        self._offer_video(pc)
        offer = await pc.createOffer()
        await set_local_description(pc, offer, self._ice_loopback)
        await self._send_description(pc)

    async def _on_description(self, data: Any) -> None:
        pc = self._pc
        if pc is None or not self.active or not isinstance(data, dict):
            self._log("ignored a description: no peer connection")
            return
        kind, sdp = data.get("type"), data.get("sdp")
        if kind not in ("offer", "answer") or not isinstance(sdp, str):
            self._log(f"ignored a description of type {kind!r}")
            return
        sdp = self._remote_candidates.filter_sdp(sdp, self._log)  # before aiortc sees a candidate
        if kind == "offer":
            remote = pc.remoteDescription
            if remote is not None and remote.type == "offer" and remote.sdp == sdp and pc.localDescription:
                self._log("the same offer again (a resume): re-sending our answer")
                await self._send_description(pc)
                return
            if not self.polite and pc.signalingState != "stable":
                self._log("ignored a colliding offer (impolite)")
                return
        if kind == "offer" and _ice_restarted(pc.remoteDescription, sdp):
            self.peer_ice_restarts += 1
            log.info(
                "call %s with %s: the peer restarted ICE (its network may have changed); aiortc cannot restart ICE, "
                "so the call keeps the path it has, and fails if that path is gone",
                self.id,
                self.peer,
            )
        lines = sdp.count("\nm=") + sdp.startswith("m=")
        if lines > MAX_MEDIA_LINES:  # each an aiortc transceiver, kept for the call's life (re-offers add more)
            self._log(f"the {kind} has {lines} media lines (at most {MAX_MEDIA_LINES}): hanging up")
            self._spawn(self.hangup("unknown-error"))
            return
        self._log(f"SRD({kind})")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except InvalidStateError as exc:  # e.g. an answer sent again after the first was taken
            self._log(f"{kind} ignored: {exc}")
            return
        except Exception as exc:  # an SDP that aiortc cannot take (a traceback a frame flooded the log)
            self._bad_descriptions += 1
            if pc is not self._pc or not self.active:
                return
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            if self._bad_descriptions >= MAX_BAD_DESCRIPTIONS:
                log.warning(
                    "call %s with %s: %d %ss that cannot be used: hanging up",
                    self.id,
                    self.peer,
                    self._bad_descriptions,
                    kind,
                )
                self._spawn(self.hangup("unknown-error"))
            elif self._bad_descriptions <= 3:
                log.warning("call %s with %s: a %s that cannot be used (%s): ignored", self.id, self.peer, kind, why)
            return
        if kind == "offer":
            self._add_track(pc)
            self._answer_video(pc, sdp)
            self._answer_other_audio(pc)
        await self._start_sink()
        if kind == "offer":
            self._log("SLD(answer)")
            answer = await pc.createAnswer()
            await set_local_description(pc, answer, self._ice_loopback)
            if pc is not self._pc or not self.active:
                return
            await self._send_description(pc)
        await self._flush_candidates(pc)

    async def _on_candidate(self, data: Any) -> None:
        candidate = data if isinstance(data, dict) else None
        text = candidate.get("candidate") if candidate else None
        if text:
            if not self._remote_candidates.admit(str(text), self._log):
                return
        elif None in self._pending_candidates:  # end-of-candidates, queued already
            return
        pc = self._pc
        if pc is None or pc.remoteDescription is None:
            self._pending_candidates.append(candidate if text else None)
            return
        await self._add_candidate(pc, candidate)

    async def _flush_candidates(self, pc: RTCPeerConnection) -> None:
        queued, self._pending_candidates = self._pending_candidates, []
        if queued:
            self._log(f"adding {len(queued)} queued candidate(s)")
        for data in queued:
            await self._add_candidate(pc, data)

    async def _add_candidate(self, pc: RTCPeerConnection, data: dict[str, Any] | None) -> None:
        text = data.get("candidate") if data else None
        if self.peer_ice_restarts:
            return  # the restart's candidates: aiortc keeps the first negotiation's ICE, they are no use to it
        try:
            if not text:  # null, or an empty candidate: end-of-candidates
                await pc.addIceCandidate(None)
                return
            candidate = candidate_from_sdp(str(text).removeprefix("candidate:"))
            candidate.sdpMid = data.get("sdpMid") if data else None
            index = data.get("sdpMLineIndex") if data else None
            candidate.sdpMLineIndex = index if isinstance(index, int) else None
            if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
                candidate.sdpMLineIndex = 0
            await pc.addIceCandidate(candidate)
        except Exception as exc:  # a malformed or late candidate must not end the call
            self._log(f"addIceCandidate failed: {exc!r} ({text!r:.80})")

    async def _on_resumed(self, frame: Frame) -> None:
        """Our connection came back and the server handed the call back to it: take up what was lost."""
        self._log(f"resumed (the server says the call is {frame.get('state')})")
        if self._phase is CallPhase.REQUESTING and frame.get("state") == "answered":
            await self._on_accepted(frame.get("polite"))  # the call-accept was lost while we were away
            return
        if isinstance(frame.get("polite"), bool):
            self.polite = frame["polite"]
        if frame.get("state") == "answered":
            await self._say_media()  # ours may have been lost while a connection was away
        pc = self._pc
        if pc is None or not self.active:
            return
        if pc.signalingState == "have-local-offer" and pc.localDescription is not None:
            self._log("re-sending our offer (it may have been lost)")
            await self._send_description(pc)
        elif pc.connectionState == "failed":
            await self.hangup("ice-failed")

    def _on_media_state(self, data: Any) -> None:
        said = MediaState.from_data(data)
        if said == self._peer_media:
            return
        self._peer_media = said
        self._log(f"the peer's media state: {said.to_data()}")
        if self._on_media is not None:
            self._on_media(self, said)

    async def _say_media(self) -> None:
        """Tell the peer our media state, if the call is answered (before, the server would refuse it)."""
        if self._phase in (CallPhase.CALLING, CallPhase.CONNECTED):
            await self._send({"type": "media-state", "to": self.peer, "callId": self.id, "data": self._media.to_data()})

    # ---- the peer connection --------------------------------------------------------------------------------------

    def _create_pc(self) -> None:
        config = (self._ice or IceConfig()).rtc_configuration()
        pc = RTCPeerConnection(configuration=config)
        self._pc = pc
        servers = len(config.iceServers or [])
        self._log(f"created RTCPeerConnection with {servers} ICE server(s), policy {config.iceTransportPolicy.value}")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._remote_track is None:
                self._log("remote audio track")
                self._remote_track = track
            elif track.kind == "video":
                self._log("remote video track")

        @pc.on("connectionstatechange")
        def on_connection_state() -> None:
            if pc is not self._pc:
                return
            state = pc.connectionState
            self._log(f"connectionState {state}")
            if not self.active:
                return
            if state == "connected":
                self._cancel_timer()
                self._transition("connected")
            elif state == "failed":
                self._explain_ice_failure()
                self._spawn(self.hangup("ice-failed"))

    def _require_pc(self) -> RTCPeerConnection:
        if self._pc is None:
            raise CallError(f"call {self.id} has no peer connection")
        return self._pc

    def _add_track(self, pc: RTCPeerConnection) -> None:
        if self._track_added:
            return
        self._track_added = True
        if self._source is None:
            self._source = as_source(None)
        self._sent = Mutable(self._source)
        self._sent.muted = self._media.muted
        pc.addTrack(self._sent)

    def _offer_video(self, pc: RTCPeerConnection) -> None:
        """Caller: offer video if we send it (sendrecv, or sendonly without a video sink) or only receive it."""
        if self._video_added:
            return
        self._video_added = True
        if self._video_source is not None:
            transceiver = pc.addTransceiver(self._video_source, "sendrecv" if self._video_sink else "sendonly")
            self._log(f"offering video ({transceiver.direction})")
        elif self._video_sink is not None:
            pc.addTransceiver("video", "recvonly")
            self._log("offering to receive video (recvonly)")

    def _answer_other_audio(self, pc: RTCPeerConnection) -> None:
        """Answerer: every audio m-line but the first is answered `inactive`, so that nothing is received on it.
        Each would start a decoder thread whose frames no one reads, kept in aiortc's unbounded queue: a caller who
        offered four audio tracks grew the echo service by ~18 MB a second."""
        for transceiver in [t for t in pc.getTransceivers() if t.kind == "audio"][1:]:
            if transceiver.direction != "inactive":
                transceiver.direction = "inactive"
                self._log(f"audio m-line {transceiver.mid}: inactive (one audio track a call)")

    def _answer_video(self, pc: RTCPeerConnection, offer: str) -> None:
        """Answerer: our video source goes on the peer's first video m-line; our video sink takes the last video
        m-line on which the peer sends (a camera turned off and on again comes back on a new m-line; a screen shared
        beside the camera is the newer one); every other video m-line is answered without us receiving (inactive
        when we do not send on it either). Without a video source or sink every video m-line is `inactive`.

        Called for every offer, so video that the peer adds, moves or stops mid-call is answered too, and the call
        goes on with audio whatever the peer does with its video. An m-line that we receive on again after not
        receiving has its reception restarted (`_restart_reception`)."""
        sending = {m.rtp.muxId for m in SessionDescription.parse(offer).media if m.direction in (None, *_SENDS)}
        videos = [t for t in pc.getTransceivers() if t.kind == "video"]
        if videos and self._video_source is not None and not self._video_added:
            self._video_added = True
            videos[0].sender.replaceTrack(self._video_source)
        peer_sends = [t for t in videos if t.mid in sending]
        self._video_receiving = peer_sends[-1] if peer_sends and self._video_sink is not None else None
        for transceiver in videos:
            send = transceiver is videos[0] and transceiver.sender.track is not None
            receive = transceiver is self._video_receiving
            direction = _DIRECTIONS[send, receive]
            if transceiver.direction != direction:
                transceiver.direction = direction
                self._log(f"video m-line {transceiver.mid}: {direction}")
            if receive and transceiver.currentDirection in _NOT_RECEIVING and _restart_reception(transceiver.receiver):
                self._log(f"video m-line {transceiver.mid}: received again, from the next packet and a keyframe")

    def _remote_video(self) -> MediaStreamTrack | None:
        """The peer's video track that our video sink consumes (None if we receive no video)."""
        pc = self._pc
        if pc is None or self._video_sink is None:
            return None
        if self._video_receiving is None:  # as the caller: our one video m-line, if the peer sends on it
            videos = [t for t in pc.getTransceivers() if t.kind == "video"]
            receiving = [t for t in videos[:1] if t.direction in ("sendrecv", "recvonly")]
            self._video_receiving = receiving[0] if receiving else None
        if self._video_receiving is None:
            return None
        track: MediaStreamTrack | None = self._video_receiving.receiver.track
        return track

    async def _start_sink(self) -> None:
        if self._remote_track is not None and not self._sink_started and self.active:
            self._sink_started = True
            await self._sink.start(self._remote_track)
        track = self._remote_video()
        if self._video_sink is not None and track is not None and track is not self._video_track and self.active:
            self._video_track = track
            self._log("receiving video" if self._video_sink.track is None else "receiving video from a new m-line")
            await self._video_sink.start(track)

    async def _send_description(self, pc: RTCPeerConnection) -> None:
        description = pc.localDescription
        if description is None or pc is not self._pc or not self.active:
            return
        data = {"type": description.type, "sdp": description.sdp}
        await self._send({"type": description.type, "to": self.peer, "callId": self.id, "data": data})
        self._log(f"sent {description.type}")

    # ---- timers and the end ---------------------------------------------------------------------------------------

    def _start_timer(self) -> None:
        """Give the offer, the answer and ICE `setup_timeout` seconds to connect the audio."""
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(self._setup_timeout, self._setup_timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _setup_timed_out(self) -> None:
        self._timer = None
        if self._phase is CallPhase.CALLING:
            failed = self._pc is not None and self._pc.connectionState == "failed"
            self._log(f"the audio did not connect within {self._setup_timeout:g}s: giving up")
            self._explain_ice_failure()
            self._spawn(self.hangup("ice-failed" if failed else "ice-timeout"))

    def _explain_ice_failure(self) -> None:
        """Set `hint` (and warn) when the peer's candidates explain why ICE failed: with no remote candidate aiortc
        has nothing to check, and a bare `ice-timeout` would send a developer to the network, not to the peer."""
        seen = self._remote_candidates
        if seen.admitted:
            return
        if seen.dropped:
            self.hint = (
                f"none of the peer's {seen.dropped} ICE candidate(s) could be used: the candidate policy denied them, "
                "or they were malformed or not UDP (aiortc checks UDP only)"
            )
        else:
            self.hint = (
                "the peer offered no ICE candidates: none in its SDP and none trickled (it gathered none: e.g. "
                "Chromium on a loopback-only machine without --allow-loopback-in-peer-connection, an aiortc peer "
                "without 127.0.0.1 there; or its `candidate` frames never reached us)"
            )
        log.warning("call %s with %s did not connect: %s", self.id, self.peer, self.hint)

    async def _finish(self, reason: str, end: CallEnd | None = None) -> None:
        """End the call here and wait until the media has stopped and the peer connection is closed. Idempotent."""
        if end is not None:
            self._set_end(end)
        self._end_now(reason)
        if self._teardown is not None:
            await asyncio.shield(self._teardown)

    def _end_now(self, reason: str) -> None:
        """End the call here at once (phase `ended`); the media stops and the peer connection closes in a task."""
        if not self.active:
            return
        self._local_reason = reason
        self._transition("end")
        self._log(f"ended: {reason}")
        self._cancel_timer()
        if not self._end.done():
            self._fallback = asyncio.get_running_loop().call_later(
                self._end_timeout, lambda: self._set_end(CallEnd(None, reason))
            )
        self._inbox.put_nowait(_STOP)
        if self._source is not None:
            self._source.stop()
        if self._video_source is not None:
            self._video_source.stop()
        self._teardown = asyncio.ensure_future(self._stop_media())

    async def _stop_media(self) -> None:
        try:
            await self._sink.stop()
            if self._video_sink is not None:
                await self._video_sink.stop()
            if self._pc is not None:
                await close_peer_connection(self._pc)
            if self._remote_track is not None:
                self._remote_track.stop()
        except Exception:
            log.exception("[%s] error while closing call %s", self.role, self.id)

    def _set_end(self, end: CallEnd) -> None:
        if self._end.done():
            return
        if self._fallback is not None:
            self._fallback.cancel()
            self._fallback = None
        self._end.set_result(end)
        self._on_end(self, end)

    def _transition(self, event: str) -> bool:
        previous = self._phase
        following = TRANSITIONS.get((previous, event))
        if following is None:
            self._log(f'ignored "{event}": the call is {previous.value}')
            return False
        self._phase = following
        self._changed.set()
        self._on_change(self, following, previous)
        return True

    async def _send(self, frame: Frame) -> bool:
        return await self._send_frame(frame)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log(self, text: str) -> None:
        log.debug("[%s] %s %s: %s", self.role, self.id or "-", self.peer, text)


_RECEIVER = "_RTCRtpReceiver__"
"""The prefix of aiortc's private `RTCRtpReceiver` attributes (name-mangled)."""


def _restart_reception(receiver: RTCRtpReceiver) -> bool:
    """Make a video receiver that we stopped receiving on, and now receive on again, take up the peer's packets
    from the next one that arrives.

    While an m-line is not received, aiortc drops its packets before its jitter buffer sees them. The peer goes on
    sending until our answer that stops it reaches it, so the packets of that moment are lost for good (the peer no
    longer keeps them when we receive again and ask for them). The jitter buffer would wait for them and give no
    frame until it overflows (512 packets, some 20 s of a camera), the video sink staying meanwhile on the last
    picture of the video it left. A fresh jitter buffer and NACK generator start at the next packet instead, and the
    decoder's error flag makes aiortc ask for a keyframe (a PLI) with it, so that no picture is built on frames the
    decoder never had. The frames decoded before we stopped receiving and still queued on the track are dropped:
    the sink would take them for the first pictures of the video it comes back to. And the receiver's statistics
    start afresh: counted, the dropped packets would be reported to the peer as lost (the first receiver report
    said 20 % and more), and a web client lowers the video it sends from 10 % (a quarter of the resolution).

    This reaches into aiortc's private attributes (the same from aiortc 1.14 to 1.16); if they are not there, it
    logs a warning once and leaves the receiver as it is.

    Args:
        receiver: the receiver of a video m-line.

    Returns:
        Whether the receiver was restarted.
    """
    state = vars(receiver)
    jitter = state.get(f"{_RECEIVER}jitter_buffer")
    nack = state.get(f"{_RECEIVER}nack_generator")
    decoder_error = state.get(f"{_RECEIVER}decoder_error")
    if not (isinstance(jitter, JitterBuffer) and isinstance(nack, NackGenerator) and isinstance(decoder_error, Event)):
        _cannot_restart_reception(aiortc.__version__)
        return False
    state[f"{_RECEIVER}jitter_buffer"] = JitterBuffer(capacity=jitter.capacity, is_video=True)
    state[f"{_RECEIVER}nack_generator"] = NackGenerator()
    streams = state.get(f"{_RECEIVER}remote_streams")
    if isinstance(streams, dict):  # the dropped packets are no loss on the way: the peer would lower its video
        streams.clear()
    decoder_error.set()
    queue = vars(receiver.track).get("_queue") if receiver.track is not None else None
    if isinstance(queue, asyncio.Queue):  # pictures from before we stopped receiving: stale
        ended = False
        while not queue.empty():
            ended = queue.get_nowait() is None or ended
        if ended:
            queue.put_nowait(None)
    return True


@functools.cache
def _cannot_restart_reception(version: str) -> None:
    """Say once that this aiortc lacks what `_restart_reception` needs."""
    log.warning(
        "aiortc %s: cannot restart the reception of a video m-line; video that the peer sends again on an m-line we "
        "stopped receiving may stay frozen for a while",
        version,
    )


def _ice_ufrags(sdp: str) -> set[str]:
    return {line.split(":", 1)[1].strip() for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")}


def _ice_restarted(current: RTCSessionDescription | None, sdp: str) -> bool:
    """Whether an offer asks for an ICE restart: its ICE username fragment differs from the one in use."""
    return current is not None and bool(_ice_ufrags(sdp)) and _ice_ufrags(sdp) != _ice_ufrags(current.sdp)


def _reason_text(frame: Frame) -> str:
    data = frame.get("data")
    reason = data.get("reason") if isinstance(data, dict) else None
    return f" ({reason})" if isinstance(reason, str) else ""
