"""The switchboard: who is connected from which device, and the state of every call. Pure: no I/O, no clock.

Inputs are method calls carrying `now` (Unix seconds); outputs are lists of effects for the edge to perform
(send a frame, forward a client's frame, broadcast presence, close a connection, write a history record). Timers
are not effects: the edge asks `next_deadline()` and calls `tick(now)` when it passes.

Rules (docs/protocol.md, "Calls", is the user-facing version):

- A user may connect from several devices (connections) at once; presence is per user.
- A user has at most one call at a time, as caller or callee. Calling someone who has a call gets `busy`
  (no call waiting); calling while you have one gets `error in-call`.
- A call rings every device of the callee, including devices that connect while it rings. The first device to
  accept gets the call; the others get `call-ended` (answered-elsewhere). A reject from any device declines the
  call for all of them (SIP's 603 Decline), except a reject with reason "busy", which only stops that device
  ringing (SIP's 486 on one branch); when the last ringing device says busy, the call ends `busy`.
- Glare: a call-request to someone whose call to you is ringing answers that call instead of starting a second.
- The peer frames (`offer`, `answer`, `candidate`, `media-state`) pass only between the two parties of an answered
  call; anything that does not fit a call this connection takes part in gets `error not-in-call` and reaches
  nobody.
- A party whose connection drops is "lost": the call goes on (the audio is peer-to-peer) and the other side is
  not told, unless the user does not come back within the resume grace period; then the call ends `peer-lost`.
  A connection of the same user (and same device, if it names one) that arrives meanwhile resumes the call; both
  sides get `call-resumed`, so that each re-sends what the other may have missed.
- A call-request comes with a `Screen` (core/social.py; None: as if `visible` unless the switchboard is private,
  and not screened). A caller who may not see the callee's presence (`visible` false) cannot tell offline, busy
  and unanswered apart: a call to someone offline or busy is then a *silent* call (below) instead of ending
  `unavailable` or `busy` at once. A screened call never rings either: BLOCKED makes the callee look offline
  (`unavailable` at once if visible, else silent), whatever their state; SILENCED or REFUSED make a call to
  someone online and free silent (busy, offline and visible still end at once, as any call would).
- A *silent* call rings on no device until the ring timeout and ends `missed`, with exactly the frames of a call
  nobody answers. It holds only its caller: the callee stays free to call out and to be called (a stranger cannot
  lock anyone), and a device of the callee that connects meanwhile does not ring (it was placed while they could
  not take it; the history and `missed-calls` tell them, unless it was screened). A call-request from the callee
  to its caller answers it, as glare does, except for a BLOCKED or REFUSED call, of which the callee must learn
  nothing: their call to the blocked caller is a call of its own, to someone who has a call (the silent one), so
  busy or silent by the same rules; the silent call runs on to its timeout. A call the blocker places rings the
  blocked user (if free) as any call, who may answer it by accepting or by calling back (glare): screens apply to
  the call being placed, never to the answer.
- A screened call's history record carries why (`CallRecord.screened`) and is never `notified`: the store shows a
  SILENCED call in the callee's history only, a BLOCKED or REFUSED one nowhere on their side. Nothing of a BLOCKED
  or REFUSED call reaches the callee's connections.
- Private mode hides who exists and who is in a call: no presence, empty welcome lists, and no call is `visible`.
- A welcome lists only users the connection's `View` includes (None: everyone). With `View.everyone` its `online`
  is cut at WELCOME_ONLINE_MAX (contacts first) and says `more`; `directory` pages on (`online_page`).
- Ringing ends by the ring timeout (`missed`) unless answered, rejected or cancelled first.
- A callee with no device connected whom the `Screen` says is `reachable` (Web Push) is rung by push, unless the
  call is screened (the rules above first): the call rings with no device (devices that connect meanwhile ring as
  any would) and a `Push` effect wakes theirs. Every end of its ringing sends a second `Push` that replaces that
  notification: a missed call if it ends unanswered (ring timeout, the caller hangs up), else "ended" (answered on
  a device of theirs, declined by one). While it rings the callee has a call: a second caller gets `busy` (or a
  silent call), as with any ringing call. `decline()` declines such a call on the callee's behalf from no
  connection (the notification's Decline).
- A user may place at most `call_rate` call requests a minute (a token bucket per user; the rest get
  `error rate-limited`). A node's hub charges it before the request costs any store work (its screening), and
  gives its broker a switchboard whose call rate refuses nothing (`UNLIMITED_CALLS`).
- A party of a call that ended lately (the last 10 000 calls: `ended_calls`) may send its `call-summary`;
  anyone else gets `error not-in-call`.
- Whenever a call ends, every connection that took part in it or rang gets `call-ended`, and, for clients of the
  seed protocol, the `call-reject` or `hangup` they know. One history record is written per call.
- The operator's webhooks (hub/webhooks.py) hear of a call through a `CallEvent` when it starts ringing on the
  callee's devices and when it is answered, and through its `Record` when it ends. A silent or screened call rings
  nowhere, so it has no ringing event: the operator learns of it when it ends, as the callee would.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import itertools
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import msgspec

from ..protocol import messages
from ..protocol.codes import CloseCode, ErrorCode
from ..protocol.errors import ProtocolError
from ..protocol.messages import PEER_FRAMES, Envelope
from .limits import TokenBucket
from .records import CallRecord, Outcome, Reason
from .social import HIDDEN_FROM_CALLEE, Audience, Screen, Screening, View

# ---------------------------------------------------------------------------------------------------- effects
# msgspec Structs rather than frozen dataclasses: several are made for every frame, and a frozen dataclass's
# __init__ (object.__setattr__ per field) costs ~0.6 µs against ~0.05 µs. gc=False: an effect holds no cycle.


class Send(msgspec.Struct, frozen=True, gc=False):
    """Send a server-built frame to one connection."""

    cid: str
    message: dict[str, Any]


class Forward(msgspec.Struct, frozen=True, gc=False):
    """Forward a client's frame to one connection: verbatim data, `from` stamped, `callId` set by the server."""

    cid: str
    env: Envelope
    sender: str
    call_id: str
    polite: bool | None = None


class Presence(msgspec.Struct, frozen=True, gc=False):
    """Tell every connection but the user's own that `user` came online, went offline (`last_seen` then says
    when), or started or stopped being in an answered call (`in_call`). Also what `Switchboard.presences` says of
    a user now. (The user's own devices learn of their calls from the switchboard itself: `_in_call_changed`.)

    `audience`: who is told (core/social.py); None: everyone. The switchboard leaves it None: the hub, which
    knows the user's circle, sets it before handing the change to the broker. `display_name`: the user's display
    name, which the hub sets too (status online only, when the user has one)."""

    user: str
    status: str
    in_call: bool = False
    last_seen: float | None = None
    audience: Audience | None = None
    display_name: str | None = None


class Close(msgspec.Struct, frozen=True, gc=False):
    """Close one connection."""

    cid: str
    code: int
    reason: str


class Record(msgspec.Struct, frozen=True, gc=False):
    """Write one ended call to the history. `notified`: the callee was online, so a missed call rang there (never
    for a silent or screened call: `record.screened` says why a screened one did not ring)."""

    record: CallRecord
    notified: bool = False


class Push(msgspec.Struct, frozen=True, gc=False):
    """Ring `user`'s devices through Web Push (`kind` "call"), or tell them that the call they were rung for ended
    unanswered (`kind` "missed": the notification turns into a missed call), or stopped ringing otherwise (`kind`
    "ended", with the `outcome`: "answered" on one of their devices, or "rejected"/"busy" by one of them: the
    notification is taken away). The hub sends it off the hot path (hub/push.py)."""

    user: str
    kind: str
    call_id: str
    caller: str
    at: float  # when the call started ringing
    ring_deadline: float
    outcome: str | None = None  # kind "ended" only


# ------------------------------------------------------------------------------------------------ state table


class CallState(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class CallEvent(msgspec.Struct, frozen=True, gc=False):
    """A call started ringing on a device of its callee (`state` RINGING), or was answered (ANSWERED), at `at`: for
    the operator's webhooks (hub/webhooks.py), which learn how a call ended from its `Record`. A silent or screened
    call has no RINGING event (it rings nowhere); a silent call answered by calling back has only ANSWERED."""

    state: CallState
    call_id: str
    caller: str
    callee: str
    at: float


Effect = Send | Forward | Presence | Close | Record | CallEvent | Push


class Event(StrEnum):
    ACCEPT = "accept"  # a ringing device of the callee accepts (or the callee calls back: glare)
    REJECT = "reject"  # the callee declines (or its last ringing device is busy)
    CANCEL = "cancel"  # the caller hangs up while it rings
    RING_TIMEOUT = "ring-timeout"  # nobody answered in time
    HANGUP = "hangup"  # a party of an answered call hangs up
    PEER_LOST = "peer-lost"  # a party stayed disconnected past the resume grace period
    RETRACT = "retract"  # the shared state placed a call whose caller was told it had not (`Switchboard.retract`)


TRANSITIONS: Final[dict[tuple[CallState, Event], CallState]] = {
    (CallState.RINGING, Event.ACCEPT): CallState.ANSWERED,
    (CallState.RINGING, Event.REJECT): CallState.ENDED,
    (CallState.RINGING, Event.CANCEL): CallState.ENDED,
    (CallState.RINGING, Event.RING_TIMEOUT): CallState.ENDED,
    (CallState.RINGING, Event.PEER_LOST): CallState.ENDED,
    (CallState.RINGING, Event.RETRACT): CallState.ENDED,
    (CallState.ANSWERED, Event.HANGUP): CallState.ENDED,
    (CallState.ANSWERED, Event.PEER_LOST): CallState.ENDED,
}
"""Every legal transition; anything else is a bug in the switchboard (InvalidTransition)."""


class InvalidTransition(RuntimeError):
    def __init__(self, call_id: str, state: CallState, event: Event) -> None:
        super().__init__(f"call {call_id}: no transition from {state} on {event}")


_LAST_SEEN_KEPT = 1000  # offline users whose last-seen time is remembered (in memory: lost on restart)
LAST_SEEN_SHOWN: Final = 50  # of which `welcome` lists the newest
WELCOME_ONLINE_MAX: Final = 200  # users a `welcome` lists as online at most (contacts first); see WelcomeLists.more
_ENDED_KEPT = 10_000  # calls that ended lately whose parties may still send a call-summary
_RATED_KEPT = 10_000  # users whose call rate is tracked; the oldest are forgotten (a fresh bucket is a full one)

# Hangup reasons a client may give (`{"type":"hangup","data":{"reason":…}}`); these three mean media failed.
_CLIENT_REASONS: Final = {r.value: r for r in Reason}
_MEDIA_FAILURES: Final = {Reason.ICE_FAILED, Reason.ICE_TIMEOUT, Reason.USER_MEDIA_FAILED}

# ------------------------------------------------------------------------------------------------------ model


@dataclass(slots=True)
class Device:
    cid: str
    user: str
    device: str
    named: bool  # the client chose the device id (so a reconnect can be matched to it)


class Party(msgspec.Struct):
    """A caller or callee, as the holder of one connection in the call. Stored in Redis inside its `Call` (JSON):
    `cid` keeps the stored name `conn` it had, so that nodes of two versions can share a cluster's calls."""

    user: str
    device: str
    cid: str | None = msgspec.field(name="conn")  # None while lost
    lost_until: float | None = None


@dataclass(slots=True)
class Call:
    id: str
    caller: Party
    callee_user: str
    request: Envelope  # the caller's call-request, forwarded to every device that rings
    ringing_at: float
    ring_deadline: float
    state: CallState = CallState.RINGING
    ringing: dict[str, str] = field(default_factory=dict)  # cid -> device id, while it rings
    callee: Party | None = None
    answered_at: float | None = None
    silent: bool = False  # rings on no device and does not hold the callee (see the module doc)
    screened: Screening | None = None  # why it did not ring although it could have (kept in its history record)
    pushed: bool = False  # it rang the callee by Web Push (no device of theirs was connected)

    def parties(self) -> list[Party]:
        return [self.caller] if self.callee is None else [self.caller, self.callee]

    def party_of(self, cid: str) -> Party | None:
        for party in self.parties():
            if party.cid == cid:
                return party
        return None

    def other(self, party: Party) -> Party | None:
        return self.callee if party is self.caller else self.caller

    def deadline(self) -> float | None:
        """When this call next needs `tick()`: its ring timeout, or the end of a lost party's grace period."""
        deadline = self.ring_deadline if self.state is CallState.RINGING else None
        for party in (self.caller, self.callee):  # no lists: the timer asks this after every call event
            if party is not None and (lost := party.lost_until) is not None and (deadline is None or lost < deadline):
                deadline = lost
        return deadline


class WelcomeLists(msgspec.Struct, frozen=True, gc=False):
    """What a `welcome` lists besides the newcomer: everyone online and everyone in an answered call (sorted,
    without the newcomer), and the users seen lately who are offline now, newest first (the wire field `recent`).
    A switchboard works them out from its own state; a switchboard holding a slice of shared state is handed them
    (`Switchboard.connect(..., lists=...)`)."""

    online: list[str]
    in_call: list[str]
    last_seen: list[dict[str, object]]
    more: bool = False  # `online` was cut at WELCOME_ONLINE_MAX (Directory.ALL): the `directory` frame pages on


class CallRate:
    """At most `per_minute` call requests a minute per user, `per_minute` saved up: a token bucket each.

    The buckets are not call state: a node keeps its own (a cluster's nodes each allow the rate).
    """

    def __init__(self, per_minute: int = 30) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, user: str, env: Envelope, now: float) -> None:
        """Spend one of `user`'s call requests at `now`.

        Raises:
            ProtocolError: `rate-limited`: none is left; the request is dropped.
        """
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self.per_minute / 60.0, self.per_minute, now)
            if len(self._buckets) > _RATED_KEPT:
                del self._buckets[next(iter(self._buckets))]
        if not bucket.take(now):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.per_minute} call requests a minute; wait a little",
                ref=env.type,
                to=env.to,
            )


class _Unlimited(CallRate):
    """A call rate that refuses nothing: for a switchboard whose requests were charged before they reached it."""

    def check(self, user: str, env: Envelope, now: float) -> None:
        return None


UNLIMITED_CALLS: Final = _Unlimited()
"""The call rate of a broker's switchboard: the hub charged each call-request before its screening."""


def check_summary(user: str, env: Envelope, parties: tuple[str, str] | None) -> None:
    """Whether `user` may send the `call-summary` `env`: `parties` are the caller and callee of the call it names,
    if that call ended lately (None: it did not, or too long ago).

    Raises:
        ProtocolError: `not-in-call`: it is not a call of `user`'s that ended lately.
    """
    if parties is None or user not in parties:
        raise ProtocolError(
            ErrorCode.NOT_IN_CALL,
            f"call {env.callId} is not a call of yours that ended lately; send call-summary after call-ended",
            ref=env.type,
            call_id=env.callId,
        )


def _error(code: ErrorCode, message: str, env: Envelope, call_id: str | None = None) -> ProtocolError:
    return ProtocolError(code, message, ref=env.type, to=env.to, call_id=call_id or env.callId)


# ------------------------------------------------------------------------------------------------ switchboard


class Switchboard:
    """All devices and calls of one server. Every public method returns the effects to perform, in order."""

    def __init__(
        self,
        *,
        ring_timeout: float = 45.0,
        resume_grace: float = 20.0,
        new_id: Callable[[], str],
        private: bool = False,
        call_rate: CallRate | None = None,
    ) -> None:
        self.ring_timeout = ring_timeout
        self.call_rate = call_rate if call_rate is not None else CallRate()
        self.private = private
        self.resume_grace = resume_grace
        self._new_id = new_id
        self.devices: dict[str, Device] = {}  # cid -> device
        self.users: dict[str, dict[str, Device]] = {}  # user -> cid -> device
        self._online: list[str] = []  # the keys of `users`, kept sorted: a welcome must not sort 10k ids
        self.last_seen: collections.OrderedDict[str, float] = collections.OrderedDict()  # offline users, newest last
        self.calls: dict[str, Call] = {}  # active calls (ringing or answered) by id
        # (deadline, call id) of every deadline set, as a heap; entries whose call has ended or whose deadline
        # moved are dropped when they reach the top, so next_deadline() and tick() never scan all calls.
        self._due: list[tuple[float, str]] = []
        self.active: dict[str, str] = {}  # user -> id of their active call
        # Calls that ended lately: call id -> (caller, callee), who may send its call-summary.
        self.ended_calls: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()

    # -------------------------------------------------------------------------------------- connections

    def online(self, *, exclude: str | None = None) -> list[str]:
        """Everyone online, sorted, without `exclude`: a copy of the sorted list (memmove-fast, no sort)."""
        ids = self._online
        i = bisect.bisect_left(ids, exclude) if exclude is not None else len(ids)
        if i < len(ids) and ids[i] == exclude:
            return ids[:i] + ids[i + 1 :]
        return ids[:]

    def _in_call(self, user: str) -> bool:
        call_id = self.active.get(user)
        return call_id is not None and self.calls[call_id].state is CallState.ANSWERED

    def load(self, devices: list[Device]) -> None:
        """Hold devices read from shared state (no effects: they are connected already)."""
        for device in devices:
            if device.user not in self.users:
                bisect.insort(self._online, device.user)
            self.devices[device.cid] = self.users.setdefault(device.user, {})[device.cid] = device

    def presences(self, users: Iterable[str]) -> dict[str, Presence]:
        """Each of `users`' presence now: online (and whether in an answered call), or offline (with when they
        were last seen, if this switchboard remembers)."""
        out: dict[str, Presence] = {}
        for user in users:
            if user in self.users:
                out[user] = Presence(user, "online", in_call=self._in_call(user))
            else:
                out[user] = Presence(user, "offline", last_seen=self.last_seen.get(user))
        return out

    def online_page(self, prefix: str, after: str | None, limit: int) -> list[Presence]:
        """Users online whose id starts with `prefix`, after `after`, in id order, at most `limit`."""
        ids = self._online
        start = max(prefix, after) if after is not None else prefix
        i = bisect.bisect_right(ids, start) if after is not None and after >= prefix else bisect.bisect_left(ids, start)
        page: list[Presence] = []
        while i < len(ids) and len(page) < limit and ids[i].startswith(prefix):
            page.append(Presence(ids[i], "online", in_call=self._in_call(ids[i])))
            i += 1
        return page

    def welcome_lists(self, user: str, view: View | None = None) -> WelcomeLists:
        """What the welcome of a connection of `user` lists, from this switchboard's own state, restricted to
        `view` (None: everyone, all of them).

        With a view that is not `everyone`, only the view's contacts are looked at (O(contacts)); with `everyone`,
        `online` is the view's contacts (sorted) then the others in id order, at most WELCOME_ONLINE_MAX, and `more`
        says it was cut (O(WELCOME_ONLINE_MAX + contacts + hidden)). `inCall` then lists those of `online` in an
        answered call, and `recent` only users the view includes."""
        if view is None:
            found = {
                u for c in self.calls.values() if c.state is CallState.ANSWERED for u in (c.caller.user, c.callee_user)
            }
            in_call = sorted(u for u in found if u in self.users and u != user)
            return WelcomeLists(self.online(exclude=user), in_call, self._recent(None))
        contacts = [c for c in view.contacts if c in self.users]
        online, more = _online_in_view(user, view, contacts, self._online)  # walks _online in place: no copy
        in_call = sorted(u for u in online if self._in_call(u))
        return WelcomeLists(online, in_call, self._recent(view), more)

    def _recent(self, view: View | None) -> list[dict[str, object]]:
        """The users seen lately who are offline now and `view` includes, newest first, at most LAST_SEEN_SHOWN."""
        if view is not None and not view.everyone:  # O(contacts), not O(seen)
            seen = [(at, u) for u in view.contacts if (at := self.last_seen.get(u)) is not None and view.includes(u)]
            seen.sort(reverse=True)
            return [{"id": u, "lastSeen": at} for at, u in seen[:LAST_SEEN_SHOWN]]
        recent: list[dict[str, object]] = []
        for u in reversed(self.last_seen):
            if len(recent) == LAST_SEEN_SHOWN:
                break
            if view is None or view.includes(u):
                recent.append({"id": u, "lastSeen": self.last_seen[u]})
        return recent

    def _in_call_changed(self, call: Call, in_call: bool) -> list[Effect]:
        """Those who see the parties' presence are told (not in private mode), and so are the parties' other
        devices (in every mode): their user is in a call, or no longer, on another device."""
        effects: list[Effect] = []
        for party in call.parties():
            devices = self.users.get(party.user)
            if devices is None:
                continue
            if not self.private:
                effects.append(Presence(party.user, "online", in_call=in_call))
            if len(devices) > 1 or party.cid is None:
                told = _own_presence(party.user, in_call)
                effects += [Send(cid, told) for cid in devices if cid != party.cid]
        return effects

    def connect(
        self,
        cid: str,
        user: str,
        device: str | None,
        now: float,
        *,
        lists: WelcomeLists | None = None,
        view: View | None = None,
    ) -> list[Effect]:
        """A connection of `user` was accepted. `device` is the id the client gave its device, if any. `lists`:
        what its welcome lists, when this switchboard holds only a slice of the state (else its own view); either
        is restricted to `view`, whose presence the user is told (None: everyone's)."""
        effects: list[Effect] = []
        named = device is not None
        device_id = device if device is not None else f"d-{cid}"
        first = user not in self.users
        devices = self.users.get(user)
        if named and devices:
            for old in list(devices.values()):
                if old.device == device_id:  # the same device is back: retire its stale connection
                    effects.append(Close(old.cid, CloseCode.REPLACED, "replaced by a newer connection"))
                    effects += self.disconnect(old.cid, now, replaced=True)
        if user not in self.users:
            bisect.insort(self._online, user)
        self.last_seen.pop(user, None)  # online again: not among the recently seen (in their own welcome too)
        self.devices[cid] = self.users.setdefault(user, {})[cid] = Device(cid, user, device_id, named)
        if self.private:
            lists = WelcomeLists([], [], [])
        elif lists is None:
            lists = self.welcome_lists(user, view)
        elif view is not None:
            lists = _in_view(lists, user, view)
        welcome = messages.welcome(
            user,
            device_id,
            lists.online,
            lists.in_call,
            lists.last_seen,
            self.ring_timeout,
            self.resume_grace,
            directory="all" if view is None or view.everyone else "contacts",
            more=lists.more,
        )
        effects.append(Send(cid, welcome))
        if first and not self.private:
            effects.append(Presence(user, "online", in_call=self._in_call(user)))
        call_id = self.active.get(user)
        if call_id is not None:
            call = self.calls[call_id]
            effects += self._rejoin(call, cid, user, device_id, named)
            if call.state is CallState.ANSWERED and call.party_of(cid) is None:
                # The user talks on another device: this one is told so, as their devices are when the call ends.
                effects.append(Send(cid, _own_presence(user, True)))
        return effects

    def _rejoin(self, call: Call, cid: str, user: str, device_id: str, named: bool) -> list[Effect]:
        for party in call.parties():
            if party.user == user and party.cid is None and (not named or party.device == device_id):
                party.cid, party.lost_until = cid, None
                party.device = device_id
                self._arm(call)
                peer = call.other(party)
                effects: list[Effect] = [Send(cid, _resumed(call, party))]
                if peer is not None and peer.cid is not None:
                    # The peer's frames to us were dropped while we were away: it re-sends what is pending.
                    effects.append(Send(peer.cid, _resumed(call, peer)))
                return effects
        if call.state is CallState.RINGING and user == call.callee_user:
            call.ringing[cid] = device_id  # a device that connects while the call rings rings too
            return [Forward(cid, call.request, call.caller.user, call.id)]
        return []

    def disconnect(self, cid: str, now: float, *, replaced: bool = False, final: bool = False) -> list[Effect]:
        """A connection is gone. Its calls go on for the resume grace period (at once, if `replaced`); with `final`
        (its sign-in ended: it cannot come back) the call of its party ends now, `peer-lost`."""
        device = self.devices.pop(cid, None)
        if device is None:
            return []
        user = device.user
        devices = self.users[user]
        del devices[cid]
        effects: list[Effect] = []
        if not devices:
            del self.users[user]
            del self._online[bisect.bisect_left(self._online, user)]
            if not replaced:
                self.last_seen[user] = now
                if len(self.last_seen) > _LAST_SEEN_KEPT:
                    self.last_seen.popitem(last=False)
                if not self.private:
                    effects.append(Presence(user, "offline", last_seen=now))
        call_id = self.active.get(user)
        if call_id is None:
            return effects
        call = self.calls[call_id]
        call.ringing.pop(cid, None)
        party = call.party_of(cid)
        if party is not None:
            party.cid = None
            party.lost_until = now if final else now + self.resume_grace
            self._arm(call)
            if final or self.resume_grace <= 0:
                effects += self.tick(now)
        return effects

    # ----------------------------------------------------------------------------------------- frames

    def receive(self, cid: str, env: Envelope, now: float, screen: Screen | None = None) -> list[Effect]:
        """A valid frame from `cid` (already through protocol.messages.parse). `screen`: how a call-request is
        screened (core/social.py `screen()`; the rules are in the module doc); None: it may ring, and the caller
        may know the callee's presence unless the switchboard is private.

        Raises:
            ProtocolError: `in-call`, `unavailable` or `not-in-call`; nothing was changed and nobody was told.
        """
        device = self.devices[cid]
        kind = env.type
        if kind == "call-request":
            self.call_rate.check(device.user, env, now)
            return self._request(device, env, now, screen)
        if kind in PEER_FRAMES:
            route = self.route(cid, env)
            return [] if route is None else [Forward(route[0], env, device.user, route[1])]
        call = self._call_for(device, env)
        if kind == "call-accept":
            if call.state is not CallState.RINGING or cid not in call.ringing:
                raise self._not_in_call(env, call)
            return self._accept(call, device, env, now, glare=False)
        if kind == "call-reject" or (kind == "hangup" and cid in call.ringing):
            if call.state is not CallState.RINGING or cid not in call.ringing:
                raise self._not_in_call(env, call)
            return self._reject(call, device, env, now)
        # hangup by a party
        party = call.party_of(cid)
        if party is None:
            raise self._not_in_call(env, call)
        if call.state is CallState.RINGING:
            return self._end(call, Event.CANCEL, Outcome.CANCELLED, Reason.USER_HANGUP, now, by=cid, env=env)
        reason = _client_reason(env) or Reason.USER_HANGUP
        outcome = Outcome.FAILED if reason in _MEDIA_FAILURES else Outcome.ANSWERED
        return self._end(call, Event.HANGUP, outcome, reason, now, by=cid, env=env)

    def decline(self, call_id: str, callee: str, now: float) -> list[Effect]:
        """`callee` declines the ringing call `call_id` from no connection (a push notification's Decline, whose
        capability the edge checked): as a `call-reject` from one of their devices would. No effects if that call
        is not ringing for `callee` (answered, ended, or not theirs): nothing changed.
        """
        call = self.calls.get(call_id)
        if call is None or call.state is not CallState.RINGING or call.callee_user != callee or call.silent:
            return []
        return self._end(call, Event.REJECT, Outcome.REJECTED, Reason.USER_REJECTED, now, by=None, by_user=callee)

    def check_summary(self, user: str, env: Envelope) -> None:
        """Whether `user` may send the `call-summary` `env` (see `check_summary()`). Changes nothing.

        Raises:
            ProtocolError: `not-in-call`.
        """
        assert env.callId is not None
        check_summary(user, env, self.ended_calls.get(env.callId))

    def route(self, cid: str, env: Envelope) -> tuple[str, str] | None:
        """Where a peer frame (`offer`, `answer`, `candidate`, `media-state`) from `cid` goes: the other party's
        connection and the call id, or None while that party is reconnecting (it restarts ICE and says its media
        state again when it is back, so nothing is kept for it).

        The relay's hot path (`receive` does the same, as a Forward effect). Changes nothing.

        Raises:
            ProtocolError: `not-in-call`: this connection is not a party of an answered call with `env.to`.
        """
        call = self._call_for(self.devices[cid], env)
        caller, callee = call.caller, call.callee
        if call.state is CallState.ANSWERED and callee is not None:
            if caller.cid == cid:
                return None if callee.cid is None else (callee.cid, call.id)
            if callee.cid == cid:
                return None if caller.cid is None else (caller.cid, call.id)
        raise self._not_in_call(env, call)

    def _call_for(self, device: Device, env: Envelope) -> Call:
        call_id = self.active.get(device.user)
        call = self.calls.get(call_id) if call_id is not None else None
        if call is None:
            raise _error(ErrorCode.NOT_IN_CALL, f"cannot send {env.type}: you are not in a call", env)
        if env.callId is not None and env.callId != call.id:
            raise _error(ErrorCode.NOT_IN_CALL, f"cannot send {env.type}: call {env.callId} is not yours or over", env)
        peer = call.callee_user if device.user == call.caller.user else call.caller.user
        if env.to is not None and env.to != peer:
            raise _error(
                ErrorCode.NOT_IN_CALL, f"cannot send {env.type} to {env.to}: your call {call.id} is with {peer}", env
            )
        return call

    def _not_in_call(self, env: Envelope, call: Call) -> ProtocolError:
        why = "it has not been answered" if call.state is CallState.RINGING else "this connection is not part of it"
        return _error(ErrorCode.NOT_IN_CALL, f"cannot send {env.type} in call {call.id}: {why}", env, call.id)

    def _request(self, device: Device, env: Envelope, now: float, screen: Screen | None) -> list[Effect]:
        caller, callee = device.user, env.to
        assert callee is not None
        current = self.active.get(caller)
        if current is not None:
            call = self.calls[current]
            if call.state is CallState.RINGING and call.callee_user == caller and call.caller.user == callee:
                return self._accept(call, device, env, now, glare=True)
            raise _error(ErrorCode.IN_CALL, f"you are already in call {call.id}; hang up first", env, call.id)
        theirs = self.calls.get(self.active.get(callee, ""))
        if (
            theirs is not None
            and theirs.silent
            and theirs.screened not in HIDDEN_FROM_CALLEE
            and theirs.callee_user == caller
            and theirs.caller.user == callee
        ):
            theirs.silent = False  # calling back the caller of a silent call to us answers it
            theirs.screened = None  # it is an answered call now, not one that was kept from ringing
            self.active[caller] = theirs.id
            return self._accept(theirs, device, env, now, glare=True)
        visible = not self.private and (screen is None or screen.visible)
        screening = None if screen is None else screen.screening
        call_id = self._new_id()
        call = Call(call_id, Party(caller, device.device, device.cid), callee, env, now, now + self.ring_timeout)
        call.screened = screening
        callee_devices = self.users.get(callee)
        # A callee rung by push has no device, but has a call (it rings): busy, as anyone whose call rings.
        pushed = (
            theirs is not None and theirs.pushed and theirs.state is CallState.RINGING and theirs.callee_user == callee
        )
        offline = (not callee_devices and not pushed) or screening is Screening.BLOCKED  # a blocker looks offline
        busy = not offline and callee in self.active
        if offline and screening is None and screen is not None and screen.reachable and callee not in self.active:
            # Nobody connected (and no call of theirs waits for them to come back), but their devices can be
            # woken: the call rings with no device (a device that connects meanwhile rings, as any would), and
            # the push rings the closed apps.
            call.pushed = True
            self.add_call(call)
            self.active[caller] = self.active[callee] = call_id
            push = Push(callee, "call", call_id, caller, now, call.ring_deadline)
            return [Send(device.cid, messages.call_ringing(call_id, callee)), push]
        if (offline or busy or screening is not None) and not (visible and (offline or busy)):
            # Looks like a call nobody answers: same frames, same time; nobody else is held, and nothing of it
            # reaches the callee (their state is not even read beyond this point).
            call.silent = True
            self.add_call(call)
            self.active[caller] = call_id
            return [Send(device.cid, messages.call_ringing(call_id, callee))]
        if offline:
            unavailable = messages.error_message(
                ErrorCode.UNAVAILABLE.value, f"{callee} is not online", ref=env.type, to=callee, call_id=call_id
            )
            return [
                Send(device.cid, unavailable),
                *self._record_only(call, Outcome.UNAVAILABLE, Reason.USER_UNAVAILABLE, now, device),
            ]
        if busy:
            return [
                Send(device.cid, messages.call_ringing(call_id, callee)),
                *self._record_only(call, Outcome.BUSY, Reason.USER_BUSY, now, device),
            ]
        assert callee_devices is not None  # not offline, not busy: connected
        self.add_call(call)
        self.active[caller] = self.active[callee] = call_id
        effects: list[Effect] = [Send(device.cid, messages.call_ringing(call_id, callee))]
        for ringing in callee_devices.values():
            call.ringing[ringing.cid] = ringing.device
            effects.append(Forward(ringing.cid, env, caller, call_id))
        effects.append(CallEvent(CallState.RINGING, call_id, caller, callee, now))
        return effects

    def _record_only(self, call: Call, outcome: Outcome, reason: Reason, now: float, device: Device) -> list[Effect]:
        """A call that ends as it starts (busy, unavailable): the caller hears why; the history keeps it."""
        effects: list[Effect] = []
        if outcome is Outcome.BUSY:
            effects.append(Send(device.cid, messages.call_reject(call.callee_user, device.user, call.id, "busy")))
        effects.append(Send(device.cid, _ended(call.id, outcome, reason)))
        ended = self._ended(call, outcome, reason, now, hung_up_by=None)
        effects.append(ended)
        return effects + self._silenced(call, ended)

    def _accept(self, call: Call, device: Device, env: Envelope, now: float, *, glare: bool) -> list[Effect]:
        self._transition(call, Event.ACCEPT)
        call.callee = Party(device.user, device.device, device.cid)
        call.answered_at = now
        self._arm(call)
        others = [cid for cid in call.ringing if cid != device.cid]
        call.ringing.clear()
        effects: list[Effect] = []
        caller_cid = call.caller.cid
        if glare:
            # The requester becomes the callee: it hears "accepted" like a caller, but as the polite side it
            # waits for the offer instead of making one.
            effects.append(Send(device.cid, messages.call_accept(call.caller.user, device.user, call.id, True)))
            if caller_cid is not None:
                effects.append(Send(caller_cid, messages.call_accept(device.user, call.caller.user, call.id, False)))
        elif caller_cid is not None:
            effects.append(Forward(caller_cid, env, device.user, call.id, polite=False))
        for cid in others:
            effects.append(Send(cid, _ended(call.id, Outcome.ANSWERED, Reason.ANSWERED_ELSEWHERE)))
            effects.append(Send(cid, _compat_hangup(call, call.caller.user, Reason.ANSWERED_ELSEWHERE)))
        effects.append(CallEvent(CallState.ANSWERED, call.id, call.caller.user, call.callee_user, now))
        if call.pushed:  # the notifications on the callee's other browsers go away
            effects.append(
                Push(call.callee_user, "ended", call.id, call.caller.user, call.ringing_at, now, Outcome.ANSWERED.value)
            )
        return effects + self._in_call_changed(call, True)

    def retract(self, call_id: str, never_rang: Collection[str]) -> list[Effect]:
        """Take back the ringing call `call_id`, as if it had never been placed: no record, no push, no frame to
        the caller. For several nodes: Redis placed it, but its reply was lost and
        the caller was told that nothing was done, so the call rang nowhere (`RedisBroker._settle`): the devices
        it was placed to ring (`never_rang`) never heard of it; one rung since (it connected late) is told it
        ended. Nothing if that call no longer rings."""
        call = self.calls.get(call_id)
        if call is None or call.state is not CallState.RINGING:
            return []
        self._close(call, Event.RETRACT)
        ended = _ended(call_id, Outcome.CANCELLED, Reason.USER_HANGUP)
        return [Send(cid, ended) for cid in call.ringing if cid not in never_rang]

    def _reject(self, call: Call, device: Device, env: Envelope, now: float) -> list[Effect]:
        busy = isinstance(data := _data(env), dict) and data.get("reason") == "busy"
        if busy:
            del call.ringing[device.cid]
            if call.ringing:
                return [Send(device.cid, _ended(call.id, Outcome.BUSY, Reason.USER_BUSY))]
            return self._end(call, Event.REJECT, Outcome.BUSY, Reason.USER_BUSY, now, by=device.cid, env=env)
        if (reason := _client_reason(env)) in _MEDIA_FAILURES:  # e.g. the device could not open its microphone
            return self._end(call, Event.REJECT, Outcome.FAILED, reason, now, by=device.cid, env=env)
        return self._end(call, Event.REJECT, Outcome.REJECTED, Reason.USER_REJECTED, now, by=device.cid, env=env)

    # ---------------------------------------------------------------------------------------- timers

    def hand_over(self, now: float) -> list[Call]:
        """The calls under way, for the next run of this server to take over (`take_over`): the server is stopping
        and has closed every connection, so nothing rings any more and every party is lost from `now` on (a party
        lost already keeps its grace)."""
        for call in self.calls.values():
            call.ringing.clear()
            for party in call.parties():
                if party.cid is not None:
                    party.cid, party.lost_until = None, now + self.resume_grace
        return list(self.calls.values())

    def take_over(self, calls: Iterable[Call], ended: Iterable[tuple[str, str, str]] = ()) -> int:
        """Hold the calls that the previous run of this server handed over as it stopped (`hand_over`): a party
        that connects again within its grace resumes its call (and a device of the callee of a call that still rings
        rings), as after any reconnect; the timers end the others, as any call whose party did not come back (at the
        end of its grace, however long ago: `tick`). A call whose caller or callee has a call here already is left
        out. `ended`: (call id, caller, callee) of calls that ended lately (`ended_lately`), whose parties may still
        send their call-summary. Returns how many calls it holds."""
        for call_id, caller, callee in ended:
            if call_id not in self.ended_calls:
                self._ended_lately(call_id, caller, callee)
        held = 0
        for call in calls:
            if call.id in self.calls or call.caller.user in self.active:
                continue
            if not call.silent and call.callee_user in self.active:
                continue
            self.add_call(call)
            self.active[call.caller.user] = call.id
            if not call.silent:
                self.active[call.callee_user] = call.id
            held += 1
        return held

    def ended_lately(self, limit: int) -> list[tuple[str, str, str]]:
        """(call id, caller, callee) of the newest `limit` calls that ended lately, oldest first: the calls whose
        parties may still send their call-summary, for the next run of the server (`take_over`)."""
        newest = itertools.islice(reversed(self.ended_calls.items()), limit)
        return [(call_id, caller, callee) for call_id, (caller, callee) in newest][::-1]

    def _ended_lately(self, call_id: str, caller: str, callee: str) -> None:
        self.ended_calls[call_id] = (caller, callee)
        if len(self.ended_calls) > _ENDED_KEPT:
            self.ended_calls.popitem(last=False)

    def add_call(self, call: Call) -> None:
        """Hold `call` (a new one, or one loaded from shared state) and arm its deadline."""
        self.calls[call.id] = call
        self._arm(call)

    def _arm(self, call: Call) -> None:
        deadline = call.deadline()
        if deadline is not None:
            heapq.heappush(self._due, (deadline, call.id))
            if len(self._due) > 4 * len(self.calls) + 64:  # mostly stale entries: rebuild from the live calls
                self._due = [(d, c.id) for c in self.calls.values() if (d := c.deadline()) is not None]
                heapq.heapify(self._due)

    def _next_due(self) -> tuple[float, Call] | None:
        """The earliest live deadline and its call, dropping stale entries on the way."""
        due = self._due
        while due:
            deadline, call_id = due[0]
            call = self.calls.get(call_id)
            if call is not None and call.deadline() == deadline:
                return deadline, call
            heapq.heappop(due)
        return None

    def next_deadline(self) -> float | None:
        """When `tick()` next has something to do, or None."""
        head = self._next_due()
        return None if head is None else head[0]

    def tick(self, now: float) -> list[Effect]:
        """End the calls whose ring timeout or resume grace has passed. Each ends at its deadline, not at `now`: a
        timer that fires late (a busy loop, or calls taken over after a restart that outlasted them) records the
        call as long as it was."""
        effects: list[Effect] = []
        while (head := self._next_due()) is not None and head[0] <= now:
            heapq.heappop(self._due)
            at, call = head
            lost = [p for p in call.parties() if p.lost_until is not None and p.lost_until <= at]
            if lost:
                outcome = Outcome.CANCELLED if call.state is CallState.RINGING else Outcome.ANSWERED
                effects += self._end(call, Event.PEER_LOST, outcome, Reason.PEER_LOST, at, by=None)
            elif call.state is CallState.RINGING and call.ring_deadline <= at:
                effects += self._end(call, Event.RING_TIMEOUT, Outcome.MISSED, Reason.INVITE_TIMEOUT, at, by=None)
        return effects

    # ----------------------------------------------------------------------------------------- ending

    def _transition(self, call: Call, event: Event) -> None:
        try:
            call.state = TRANSITIONS[(call.state, event)]
        except KeyError:
            raise InvalidTransition(call.id, call.state, event) from None

    def _close(self, call: Call, event: Event) -> None:
        """`event` ends `call`: it is gone, and neither party is in it any more."""
        self._transition(call, event)
        del self.calls[call.id]
        for user in (call.caller.user, call.callee_user):
            if self.active.get(user) == call.id:
                del self.active[user]

    def _end(
        self,
        call: Call,
        event: Event,
        outcome: Outcome,
        reason: Reason,
        now: float,
        *,
        by: str | None,
        env: Envelope | None = None,
        by_user: str | None = None,
    ) -> list[Effect]:
        """End `call`: `by` is the connection whose frame `env` ended it (None: the server ended it, or `by_user`
        did from no connection).

        Every connection of the call gets `call-ended`; all but `by` also get what a seed client understands,
        from the other side: `call-reject` on a declined caller, `hangup` otherwise (the ending frame itself
        when it came from that other side).
        """
        self._close(call, event)
        actor = self.devices[by].user if by is not None else by_user
        ended = _ended(call.id, outcome, reason)
        caller_side = [call.caller.cid] if call.caller.cid is not None else []
        callee_side = list(call.ringing)
        if call.callee is not None and call.callee.cid is not None:
            callee_side.append(call.callee.cid)
        effects: list[Effect] = []
        for cid in caller_side + callee_side:
            effects.append(Send(cid, ended))
            if cid == by:
                continue
            to_caller = cid in caller_side
            peer = call.callee_user if to_caller else call.caller.user
            by_peer = env is not None and actor == peer
            declined = env is not None and env.type == "call-reject"  # also a device that failed to take it
            if to_caller and (outcome in (Outcome.REJECTED, Outcome.BUSY) or declined):
                if by_peer and env is not None and declined:
                    effects.append(Forward(cid, env, peer, call.id))
                else:
                    effects.append(Send(cid, messages.call_reject(peer, call.caller.user, call.id, reason.value)))
            elif by_peer and env is not None and env.type == "hangup":
                effects.append(Forward(cid, env, peer, call.id))
            else:
                effects.append(Send(cid, _compat_hangup(call, peer, reason)))
        record = self._ended(call, outcome, reason, now, hung_up_by=actor)
        effects.append(record)
        effects += self._silenced(call, record)
        if call.callee is not None:
            effects += self._in_call_changed(call, False)
        if call.pushed and call.answered_at is None:  # it stops ringing: the notification is replaced
            if outcome in (Outcome.MISSED, Outcome.CANCELLED):
                effects.append(Push(call.callee_user, "missed", call.id, call.caller.user, call.ringing_at, now))
            else:  # declined (from a device, or from the notification on another browser)
                caller = call.caller.user
                effects.append(Push(call.callee_user, "ended", call.id, caller, call.ringing_at, now, outcome.value))
        return effects

    def _silenced(self, call: Call, ended: Record) -> list[Effect]:
        """A call that the callee's ring setting silenced rang nowhere, yet their open pages list it in Recent calls
        now, not at a reload: its record, to each of their devices connected as it ends (`silenced-call`)."""
        devices = self.users.get(call.callee_user)
        if call.screened is not Screening.SILENCED or not devices:
            return []
        told = messages.silenced_call(ended.record.to_json(call.callee_user))
        return [Send(cid, told) for cid in devices]

    def _ended(self, call: Call, outcome: Outcome, reason: Reason, now: float, *, hung_up_by: str | None) -> Record:
        """The history record of `call`, which just ended; its parties may send their call-summary from now on."""
        self._ended_lately(call.id, call.caller.user, call.callee_user)
        # A silent call rang nowhere: it is missed. A screened one is never told (the store decides what the callee
        # sees of it: a silenced call in their history, a blocked or refused one nowhere).
        notified = call.callee_user in self.users and not call.silent and call.screened is None
        return Record(_record(call, outcome, reason, now, hung_up_by=hung_up_by), notified)


def _online_in_view(
    user: str, view: View, contacts_online: Iterable[str], everyone_online: Iterable[str]
) -> tuple[list[str], bool]:
    """Whom a welcome of `user` lists as online under `view`, and whether it was cut: the view's contacts who are
    online (sorted), then, with `view.everyone`, the others from `everyone_online` (in id order), at most
    WELCOME_ONLINE_MAX. `everyone_online` is only walked with `everyone`, and no further than the cut."""
    online = sorted(c for c in contacts_online if c != user and view.includes(c))
    if not view.everyone:
        return online, False
    more = len(online) > WELCOME_ONLINE_MAX
    del online[WELCOME_ONLINE_MAX:]
    for other in everyone_online:
        if more:
            break
        if other == user or other in view.contacts or not view.includes(other):
            continue
        if len(online) == WELCOME_ONLINE_MAX:
            more = True
        else:
            online.append(other)
    return online, more


def _in_view(lists: WelcomeLists, user: str, view: View) -> WelcomeLists:
    """`lists` (everyone's, as a switchboard holding a slice of shared state is handed them) restricted to `view`,
    as `Switchboard.welcome_lists` would have made them."""
    listed = set(lists.online)
    online, more = _online_in_view(user, view, (c for c in view.contacts if c in listed), lists.online)
    shown = set(online)
    in_call = [u for u in lists.in_call if u in shown]
    recent = [r for r in lists.last_seen if isinstance(r.get("id"), str) and view.includes(str(r["id"]))]
    return WelcomeLists(online, in_call, recent, more or lists.more)


def _own_presence(user: str, in_call: bool) -> dict[str, Any]:
    """What a user's devices are told of their own call on another device (a `presence` change of their own)."""
    return {"type": "presence", **messages.presence_change(user, "online", in_call)}


def _resumed(call: Call, party: Party) -> dict[str, Any]:
    """`call-resumed` for `party`: its own role, and who the call is with."""
    if party is call.caller:
        return messages.call_resumed(call.id, call.state.value, "caller", call.callee_user)
    return messages.call_resumed(call.id, call.state.value, "callee", call.caller.user)


def _ended(call_id: str, outcome: Outcome, reason: Reason) -> dict[str, Any]:
    return messages.call_ended(call_id, outcome.value, reason.value)


def _compat_hangup(call: Call, sender: str, reason: Reason) -> dict[str, Any]:
    to = call.callee_user if sender == call.caller.user else call.caller.user
    return messages.hangup(sender, to, call.id, reason.value)


def _record(call: Call, outcome: Outcome, reason: Reason, now: float, hung_up_by: str | None) -> CallRecord:
    return CallRecord(
        call_id=call.id,
        caller=call.caller.user,
        callee=call.callee_user,
        caller_device=call.caller.device,
        answered_device=call.callee.device if call.callee is not None else None,
        ringing_at=call.ringing_at,
        answered_at=call.answered_at,
        ended_at=now,
        outcome=outcome,
        reason=reason,
        hung_up_by=hung_up_by,
        screened=call.screened,
    )


def _data(env: Envelope) -> Any:
    if not env.data:
        return None
    try:
        return msgspec.json.decode(env.data)
    except (msgspec.DecodeError, RecursionError):
        return None


def _client_reason(env: Envelope) -> Reason | None:
    data = _data(env)
    if isinstance(data, dict) and isinstance(data.get("reason"), str):
        return _CLIENT_REASONS.get(data["reason"])
    return None
