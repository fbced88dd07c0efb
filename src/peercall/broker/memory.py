"""The memory broker (`memory://`, the default): one node, the switchboard's state in memory.

Every connection is on this node, so nothing travels between nodes: `send` drops (a connection of no node is
gone), and a presence change goes straight back to the hub. The call timers are one loop timer for the
switchboard's next deadline. The calls under way outlive a restart: the node hands them over as it stops and the
history store keeps them (`hand_over`, `take_over`; hub `keep_calls`), so that their parties resume them when they
reconnect, within the resume grace; so do the calls that ended lately, whose parties may still send their
call-summary. Presence starts afresh.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable, Collection

import msgspec

from ..core.social import Screen, View
from ..core.switchboard import UNLIMITED_CALLS, Call, Effect, Presence, Switchboard
from ..hub.broker import BrokerEvents
from ..protocol.messages import PEER_FRAMES, Envelope


class _HandedOver(msgspec.Struct):
    """What a node hands over as it stops (`hand_over`): its calls under way, and (call id, caller, callee) of the
    calls that ended lately, whose parties may still send their call-summary after the restart."""

    calls: list[Call]
    ended: list[tuple[str, str, str]] = []


_ENDED_HANDED = 1000
"""The calls that ended lately handed over at most (the newest): a summary comes seconds after its call ends."""

_encode_handed = msgspec.json.encode
_decode_handed = msgspec.json.Decoder(_HandedOver | list[Call]).decode  # a list: a node of before `ended`


class MemoryBroker:
    """A `hub.broker.Broker` for one node."""

    shared = False

    def __init__(
        self,
        *,
        ring_timeout: float = 45.0,
        resume_grace: float = 20.0,
        private: bool = False,
        node_id: str | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.switchboard = Switchboard(
            ring_timeout=ring_timeout,
            resume_grace=resume_grace,
            new_id=new_id,
            private=private,
            call_rate=UNLIMITED_CALLS,  # the hub charges call-requests (`Hub.call_rate`)
        )
        self.node = node_id or "local"
        self.cid_prefix = "c"
        self.healthy = True
        self.ops: collections.Counter[str] = collections.Counter()
        self.route = self.switchboard.route  # the hot path: no coroutine, no effect objects
        self.clock = clock
        self._events: BrokerEvents | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, events: BrokerEvents) -> None:
        self._events = events

    async def start(self) -> None:
        pass

    def stop_timers(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    async def stop(self) -> None:
        self.stop_timers()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def hand_over(self, now: float) -> bytes | None:
        calls = self.switchboard.hand_over(now)
        ended = self.switchboard.ended_lately(_ENDED_HANDED)
        return _encode_handed(_HandedOver(calls, ended)) if calls or ended else None

    def take_over(self, state: bytes) -> int:
        try:
            handed = _decode_handed(state)
        except msgspec.ValidationError as exc:  # (a DecodeError is one too)
            raise ValueError(f"not the calls a node handed over: {exc}") from exc
        if isinstance(handed, list):
            handed = _HandedOver(handed)
        held = self.switchboard.take_over(handed.calls, handed.ended)
        self._reschedule()
        return held

    async def ping(self) -> bool:
        return True

    def users_online(self) -> int:
        return len(self.switchboard.users)

    def calls_by_state(self) -> dict[str, int]:
        states = {"ringing": 0, "answered": 0}
        for call in self.switchboard.calls.values():
            states[call.state.value] += 1
        return states

    # ------------------------------------------------------------------------------------------ events

    async def connect(
        self, cid: str, user: str, device: str | None, now: float, *, view: View | None = None
    ) -> list[Effect]:
        effects = self.switchboard.connect(cid, user, device, now, view=view)
        self._reschedule()
        return effects

    async def disconnect(self, cid: str, user: str, now: float, *, final: bool = False) -> list[Effect]:
        effects = self.switchboard.disconnect(cid, now, final=final)
        self._reschedule()
        return effects

    async def receive(
        self, cid: str, user: str, env: Envelope, now: float, *, screen: Screen | None = None
    ) -> list[Effect]:
        effects = self.switchboard.receive(cid, env, now, screen)
        if env.type not in PEER_FRAMES:  # they change no deadline
            self._reschedule()
        return effects

    async def decline(self, call_id: str, callee: str, now: float) -> list[Effect]:
        effects = self.switchboard.decline(call_id, callee, now)
        self._reschedule()
        return effects

    async def recorded(self, call_ids: list[str]) -> None:
        return None  # one node: its history writer is the only one there is

    async def summary(self, cid: str, user: str, env: Envelope) -> None:
        self.switchboard.check_summary(user, env)

    async def presences(self, users: Collection[str]) -> dict[str, Presence]:
        return self.switchboard.presences(users)

    async def online_page(self, prefix: str, after: str | None, limit: int) -> list[Presence]:
        return self.switchboard.online_page(prefix, after, limit)

    def send(self, cid: str, kind: str, text: str) -> None:
        pass  # not a connection of this node, and there is no other: it is gone

    def circles_changed(self, users: list[str]) -> None:
        assert self._events is not None
        self._events.circles_changed(users)

    def close_user(self, user: str, code: int, reason: str, *, sign_in: str | None = None) -> None:
        assert self._events is not None
        self._events.user_closed(user, code, reason, sign_in=sign_in)

    def presence(self, change: Presence) -> None:
        assert self._events is not None
        self._events.presence_changed(change)

    # ------------------------------------------------------------------------------------------- timer

    def _reschedule(self) -> None:
        """Arm one loop timer for the switchboard's next deadline (a ring timeout or the end of a resume grace)."""
        deadline = self.switchboard.next_deadline()
        if deadline is None or self._stopped:
            return  # an armed timer may fire for nothing: cheaper than cancelling it on every call event
        if self._timer_at is not None and self._timer_at <= deadline:
            return  # it fires first, and re-arms for what is left (ring deadlines only move later)
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, deadline - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        task = asyncio.ensure_future(self._tick())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        assert self._events is not None
        await self._events.perform(self.switchboard.tick(self.clock()))
        self._reschedule()
