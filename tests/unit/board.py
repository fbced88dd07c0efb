"""A test harness around the pure Switchboard: connections are names, inboxes are lists, time is a number."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

from peercall.core.records import CallRecord
from peercall.core.social import Screen, View
from peercall.core.switchboard import CallEvent, Close, Effect, Forward, Presence, Record, Send, Switchboard
from peercall.protocol import messages
from peercall.protocol.errors import ProtocolError


class Board:
    def __init__(self, ring: float = 45.0, grace: float = 20.0) -> None:
        counter = itertools.count(1)
        self.sb = Switchboard(ring_timeout=ring, resume_grace=grace, new_id=lambda: f"k{next(counter)}")
        self.now = 1000.0
        self.inbox: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.records: list[CallRecord] = []
        self.closed: dict[str, tuple[int, str]] = {}
        self.users: dict[str, str] = {}  # conn -> user
        self.notified: dict[str, bool] = {}  # call id -> Record.notified
        self.screens: dict[tuple[str, str], Screen] = {}  # (caller, callee) -> how their call-requests are screened
        self.events: list[tuple[str, str, float]] = []  # (state, call id, at) of every CallEvent, in order

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.inbox[effect.cid].append(json.loads(json.dumps(effect.message)))
            elif isinstance(effect, Forward):
                text = messages.forward(effect.env, effect.sender, effect.call_id, effect.polite)
                self.inbox[effect.cid].append(json.loads(text))
            elif isinstance(effect, Presence):
                for conn, device in self.sb.devices.items():
                    if device.user != effect.user:
                        self.inbox[conn].append({"type": "presence", "id": effect.user, "status": effect.status})
            elif isinstance(effect, Close):
                self.closed[effect.cid] = (effect.code, effect.reason)
            elif isinstance(effect, Record):
                self.records.append(effect.record)
                self.notified[effect.record.call_id] = effect.notified
            elif isinstance(effect, CallEvent):
                self.events.append((effect.state.value, effect.call_id, effect.at))

    def connect(self, conn: str, user: str, device: str | None = None, view: View | None = None) -> dict[str, Any]:
        self.users[conn] = user
        self.apply(self.sb.connect(conn, user, device, self.now, view=view))
        return self.inbox[conn][0] if len(self.inbox[conn]) == 1 else self.last(conn, "welcome")

    def disconnect(self, conn: str) -> None:
        self.apply(self.sb.disconnect(conn, self.now))

    def send(self, conn: str, type: str, to: str | None = None, **fields: Any) -> dict[str, Any] | None:
        """Send a frame from `conn`; returns the error frame it got, if any."""
        frame: dict[str, Any] = {"type": type, **fields}
        if to is not None:
            frame["to"] = to
        try:
            env = messages.parse(json.dumps(frame), self.users[conn])
            screen = self.screens.get((self.users[conn], to)) if type == "call-request" and to is not None else None
            self.apply(self.sb.receive(conn, env, self.now, screen))
        except ProtocolError as exc:
            error = json.loads(messages.error(exc))
            self.inbox[conn].append(error)
            return error
        return None

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.apply(self.sb.tick(self.now))

    def take(self, conn: str) -> list[dict[str, Any]]:
        """Everything `conn` received since the last take (presence and welcome left out)."""
        got = [m for m in self.inbox[conn] if m["type"] not in ("presence", "welcome")]
        self.inbox[conn].clear()
        return got

    def types(self, conn: str) -> list[str]:
        return [m["type"] for m in self.take(conn)]

    def last(self, conn: str, type: str) -> dict[str, Any]:
        for message in reversed(self.inbox[conn]):
            if message["type"] == type:
                return message
        raise AssertionError(f"{conn} received no {type}: {self.inbox[conn]}")

    def ring(self, caller: str, callee_user: str) -> str:
        """`caller` calls `callee_user`; returns the call id."""
        assert self.send(caller, "call-request", callee_user) is None
        return self.last(caller, "call-ringing")["callId"]

    def answered(self, caller: str, callee: str) -> str:
        """A call from `caller` to `callee`, answered; inboxes cleared."""
        call_id = self.ring(caller, self.users[callee])
        assert self.send(callee, "call-accept", self.users[caller]) is None
        for conn in (caller, callee):
            self.take(conn)
        return call_id
