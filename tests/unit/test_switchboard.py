"""The call state machine, fed events and clock ticks, with no sockets and no event loop."""

from __future__ import annotations

import msgspec
import pytest

from peercall.core.records import Outcome, Reason
from peercall.core.switchboard import TRANSITIONS, Call, CallState, Event, InvalidTransition, Presence

from .board import Board

OFFER = {"type": "offer", "sdp": "v=0"}
CANDIDATE = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


@pytest.fixture
def board() -> Board:
    b = Board(ring=45, grace=20)
    b.connect("a1", "alice")
    b.connect("b1", "bob")
    b.connect("c1", "carol")
    for conn in ("a1", "b1", "c1"):
        b.take(conn)
    return b


def test_answered_call_end_to_end(board: Board) -> None:
    """Ring, accept, negotiate, hang up: every frame carries the call id and one record says answered."""
    call_id = board.ring("a1", "bob")
    request = board.last("b1", "call-request")
    assert request == {"type": "call-request", "from": "alice", "to": "bob", "callId": call_id}
    board.take("a1"), board.take("b1")
    assert board.send("b1", "call-accept", "alice") is None
    assert board.take("a1") == [
        {"type": "call-accept", "from": "bob", "to": "alice", "callId": call_id, "polite": False}
    ]
    board.send("a1", "offer", "bob", data=OFFER)
    board.send("b1", "answer", "alice", data={"type": "answer", "sdp": "v=0"})
    board.send("b1", "candidate", "alice", data=CANDIDATE)
    assert [m["type"] for m in board.take("b1")] == ["offer"]
    assert [m["type"] for m in board.take("a1")] == ["answer", "candidate"]
    board.advance(30)
    board.send("a1", "hangup", "bob")
    ended = {"type": "call-ended", "callId": call_id, "outcome": "answered", "reason": "user-hangup"}
    assert board.take("a1") == [ended]
    assert board.take("b1") == [ended, {"type": "hangup", "from": "alice", "to": "bob", "callId": call_id}]
    (record,) = board.records
    assert (record.outcome, record.reason, record.hung_up_by) == (Outcome.ANSWERED, Reason.USER_HANGUP, "alice")
    assert record.answered_device == "d-b1" and record.ended_at - record.ringing_at == 30


def test_reject(board: Board) -> None:
    """The callee declines: the caller gets the seed's call-reject and call-ended rejected."""
    call_id = board.ring("a1", "bob")
    board.take("a1")
    board.send("b1", "call-reject", "alice")
    assert board.take("a1") == [
        {"type": "call-ended", "callId": call_id, "outcome": "rejected", "reason": "user-rejected"},
        {"type": "call-reject", "from": "bob", "to": "alice", "callId": call_id},
    ]
    assert board.records[0].outcome is Outcome.REJECTED and board.records[0].hung_up_by == "bob"


def test_callee_hangup_while_ringing_is_a_reject(board: Board) -> None:
    """A hangup from a ringing device declines the call."""
    board.ring("a1", "bob")
    board.send("b1", "hangup", "alice")
    assert board.records[0].outcome is Outcome.REJECTED
    assert board.last("a1", "call-reject")["from"] == "bob"


def test_cancel(board: Board) -> None:
    """The caller hangs up while it rings: the callee stops ringing; the call is cancelled."""
    call_id = board.ring("a1", "bob")
    board.take("b1")
    board.send("a1", "hangup", "bob")
    assert board.take("b1") == [
        {"type": "call-ended", "callId": call_id, "outcome": "cancelled", "reason": "user-hangup"},
        {"type": "hangup", "from": "alice", "to": "bob", "callId": call_id},
    ]
    assert board.records[0].outcome is Outcome.CANCELLED


def test_a_retracted_call_leaves_no_trace(board: Board) -> None:
    """A call taken back (several nodes: Redis placed it while its caller was told it had not) is gone with no
    record, push or frame, except to a device that rang since; both users can call at once; and it never times
    out. An answered call is not taken back."""
    call_id = board.ring("a1", "bob")
    board.take("a1"), board.take("b1")
    board.connect("b2", "bob")  # rung late
    board.take("b2")
    board.apply(board.sb.retract(call_id, never_rang={"b1"}))
    assert board.take("a1") == [] and board.take("b1") == []
    assert board.take("b2") == [
        {"type": "call-ended", "callId": call_id, "outcome": "cancelled", "reason": "user-hangup"}
    ]
    assert board.records == [] and board.pushes == [] and board.sb.calls == {} and board.sb.active == {}
    board.advance(60)
    assert board.records == [] and board.take("a1") == []
    again = board.ring("a1", "bob")
    board.send("b1", "call-accept", "alice")
    assert board.sb.retract(again, never_rang=()) == [] and board.sb.calls[again].state is CallState.ANSWERED


def test_missed_after_ring_timeout(board: Board) -> None:
    """Nobody answers: at the ring timeout, and not before, both sides hear missed."""
    call_id = board.ring("a1", "bob")
    board.take("a1"), board.take("b1")
    board.advance(44.9)
    assert board.take("a1") == [] and board.records == []
    board.advance(0.2)
    ended = {"type": "call-ended", "callId": call_id, "outcome": "missed", "reason": "invite-timeout"}
    assert board.take("a1")[0] == ended and board.take("b1")[0] == ended
    assert board.records[0].outcome is Outcome.MISSED and board.records[0].hung_up_by is None
    assert board.sb.next_deadline() is None


def test_busy(board: Board) -> None:
    """Calling someone who is in a call ends at once as busy, and the callee is not disturbed."""
    board.answered("b1", "c1")
    call_id = board.ring("a1", "bob")
    assert board.take("a1")[1:] == [
        {"type": "call-reject", "from": "bob", "to": "alice", "callId": call_id, "data": {"reason": "busy"}},
        {"type": "call-ended", "callId": call_id, "outcome": "busy", "reason": "user-busy"},
    ]
    assert board.take("b1") == []
    assert board.records[-1].outcome is Outcome.BUSY


def test_unavailable(board: Board) -> None:
    """Calling someone offline: error unavailable (as before) and call-ended unavailable, recorded."""
    board.send("a1", "call-request", "zed")
    error, ended = board.take("a1")
    assert error["code"] == "unavailable" and error["to"] == "zed"
    assert ended["outcome"] == "unavailable" and ended["callId"] == error["callId"]
    assert board.records[0].outcome is Outcome.UNAVAILABLE and board.records[0].callee == "zed"


@pytest.mark.parametrize("reason", ["ice-failed", "ice-timeout", "user-media-failed"])
def test_media_failure_hangup_is_failed(board: Board, reason: str) -> None:
    """A hangup that says media failed records the call as failed, with that reason."""
    board.answered("a1", "b1")
    board.send("b1", "hangup", "alice", data={"reason": reason})
    assert (board.records[0].outcome, board.records[0].reason) == (Outcome.FAILED, Reason(reason))
    assert board.last("a1", "call-ended")["outcome"] == "failed"


@pytest.mark.parametrize("reason", ["user-media-failed", "ice-failed"])
def test_a_device_that_cannot_take_the_call_fails_it(board: Board, reason: str) -> None:
    """A ringing device that declines because its media failed (it could not open its microphone) ends the call
    as failed, with that reason, for both sides; the caller also gets the device's call-reject."""
    call_id = board.ring("a1", "bob")
    board.send("b1", "call-reject", "alice", data={"reason": reason})
    assert (board.records[0].outcome, board.records[0].reason) == (Outcome.FAILED, Reason(reason))
    ended = board.last("a1", "call-ended")
    assert (ended["callId"], ended["outcome"], ended["reason"]) == (call_id, "failed", reason)
    assert board.last("a1", "call-reject")["data"] == {"reason": reason}


def test_every_device_rings_and_first_accept_wins(board: Board) -> None:
    """All of the callee's devices ring; the first to accept gets the call, the others stop and can't accept."""
    board.connect("b2", "bob")
    board.connect("b3", "bob")
    call_id = board.ring("a1", "bob")
    assert all(board.last(c, "call-request")["callId"] == call_id for c in ("b1", "b2", "b3"))
    for conn in ("b1", "b2", "b3"):
        board.take(conn)
    board.send("b2", "call-accept", "alice")
    for conn in ("b1", "b3"):
        assert board.take(conn)[0] == {
            "type": "call-ended",
            "callId": call_id,
            "outcome": "answered",
            "reason": "answered-elsewhere",
        }
    assert board.send("b1", "call-accept", "alice")["code"] == "not-in-call"
    assert board.send("b3", "candidate", "alice", data=CANDIDATE)["code"] == "not-in-call"
    board.send("a1", "offer", "bob", data=OFFER)
    assert board.last("b2", "offer")["from"] == "alice"
    assert "offer" not in [m["type"] for m in board.inbox["b1"] + board.inbox["b3"]]


def test_the_callees_other_devices_learn_that_the_call_goes_on_elsewhere_and_when_it_ends(board: Board) -> None:
    """Once one device answers, the others (and one that connects mid-call, or while the answering one is away)
    get the user's own presence with inCall; when the call ends, without it. The device in the call gets none."""

    def own(conn: str) -> list[dict[str, object]]:
        """The presence frames of bob's own that `conn` got since the last look."""
        got = [m for m in board.inbox[conn] if m["type"] == "presence" and m["id"] == "bob"]
        board.inbox[conn].clear()
        return got

    board.connect("b2", "bob")
    board.ring("a1", "bob")
    board.send("b2", "call-accept", "alice")
    in_call = {"type": "presence", "id": "bob", "status": "online", "inCall": True}
    assert own("b1") == [in_call] and own("b2") == []
    board.connect("b3", "bob")
    assert board.inbox["b3"][0]["type"] == "welcome" and own("b3") == [in_call]
    board.disconnect("b2")  # the answering device is away: its user still talks there (it may come back)
    board.connect("b4", "bob", device="laptop")  # another device (an unnamed one would take the call's place)
    assert own("b4") == [in_call]
    board.send("a1", "hangup", "bob")
    for conn in ("b1", "b3", "b4"):
        assert own(conn) == [{"type": "presence", "id": "bob", "status": "online"}]


def test_reject_from_one_device_declines_for_all(board: Board) -> None:
    """A plain reject from any device ends the call on every device (SIP 603)."""
    board.connect("b2", "bob")
    board.ring("a1", "bob")
    board.send("b1", "call-reject", "alice")
    assert board.last("b2", "call-ended")["outcome"] == "rejected"
    assert board.sb.calls == {}


def test_busy_reject_only_stops_that_device(board: Board) -> None:
    """A busy reject stops one device ringing (SIP 486); when the last says busy the call ends busy."""
    board.connect("b2", "bob")
    board.ring("a1", "bob")
    board.take("a1")
    board.send("b1", "call-reject", "alice", data={"reason": "busy"})
    assert board.take("a1") == [] and len(board.sb.calls) == 1
    board.send("b2", "call-reject", "alice", data={"reason": "busy"})
    assert board.last("a1", "call-ended")["outcome"] == "busy"
    assert board.last("a1", "call-reject")["data"] == {"reason": "busy"}


def test_glare_makes_exactly_one_call(board: Board) -> None:
    """Two users calling each other at once end up in one answered call, with roles assigned."""
    call_id = board.ring("a1", "bob")
    board.take("a1"), board.take("b1")
    assert board.send("b1", "call-request", "alice") is None
    assert board.take("a1") == [
        {"type": "call-accept", "from": "bob", "to": "alice", "callId": call_id, "polite": False}
    ]
    assert board.take("b1") == [
        {"type": "call-accept", "from": "alice", "to": "bob", "callId": call_id, "polite": True}
    ]
    assert len(board.sb.calls) == 1
    board.send("a1", "offer", "bob", data=OFFER)
    assert board.last("b1", "offer")["callId"] == call_id


def test_second_call_while_in_one_is_refused(board: Board) -> None:
    """A user with a call going cannot start another."""
    call_id = board.answered("a1", "b1")
    error = board.send("a1", "call-request", "carol")
    assert error["code"] == "in-call" and error["callId"] == call_id
    assert board.take("c1") == []


def test_no_sdp_or_candidates_before_accept(board: Board) -> None:
    """Offers and candidates reach nobody until the callee accepts, from either side."""
    board.ring("a1", "bob")
    board.take("b1")
    assert board.send("a1", "offer", "bob", data=OFFER)["code"] == "not-in-call"
    assert board.send("b1", "candidate", "alice", data=CANDIDATE)["code"] == "not-in-call"
    assert board.send("c1", "offer", "bob", data=OFFER)["code"] == "not-in-call"
    assert [m["type"] for m in board.take("b1")] == ["error"]
    assert [m["type"] for m in board.take("a1")] == ["call-ringing", "error"]
    assert [m["type"] for m in board.take("c1")] == ["error"]


def test_frames_for_another_call_or_person_are_refused(board: Board) -> None:
    """A stale callId or a `to` other than the peer gets not-in-call and reaches nobody."""
    board.answered("a1", "b1")
    assert board.send("a1", "offer", "bob", data=OFFER, callId="old")["code"] == "not-in-call"
    assert board.send("a1", "offer", "carol", data=OFFER)["code"] == "not-in-call"
    assert board.send("c1", "hangup", "alice")["code"] == "not-in-call"
    assert board.take("b1") == []
    assert [m["type"] for m in board.take("c1")] == ["error"]
    assert len(board.sb.calls) == 1


def test_peer_lost_only_after_grace(board: Board) -> None:
    """A dropped party ends the call only if it stays away for the whole grace period."""
    call_id = board.answered("a1", "b1")
    board.disconnect("a1")
    board.advance(19.9)
    assert [m["type"] for m in board.take("b1")] == []
    board.advance(0.2)
    assert board.take("b1") == [
        {"type": "call-ended", "callId": call_id, "outcome": "answered", "reason": "peer-lost"},
        {"type": "hangup", "from": "alice", "to": "bob", "callId": call_id, "data": {"reason": "peer-lost"}},
    ]
    assert board.records[0].reason is Reason.PEER_LOST


def test_reconnect_within_grace_resumes(board: Board) -> None:
    """A party that reconnects in time resumes its call; the other side never hears it ended."""
    call_id = board.answered("a1", "b1")
    board.disconnect("a1")
    board.send("b1", "candidate", "alice", data=CANDIDATE)  # dropped quietly while alice is away
    board.advance(5)
    board.connect("a2", "alice")
    assert board.last("a2", "call-resumed") == {
        "type": "call-resumed",
        "callId": call_id,
        "state": "answered",
        "role": "caller",
        "peer": "bob",
        "polite": False,
    }
    assert board.last("b1", "call-resumed") == {
        "type": "call-resumed",
        "callId": call_id,
        "state": "answered",
        "role": "callee",
        "peer": "alice",
        "polite": True,
    }
    board.advance(30)
    assert board.records == [] and board.sb.next_deadline() is None
    board.send("a2", "offer", "bob", data=OFFER)
    assert board.last("b1", "offer")["from"] == "alice"
    board.send("b1", "hangup", "alice")
    assert board.last("a2", "call-ended")["reason"] == "user-hangup"


def test_same_device_reconnecting_replaces_its_stale_connection(board: Board) -> None:
    """A device that connects again (same device id) retires its old connection and takes over its call."""
    board.connect("a9", "alice", "tab-1")
    board.disconnect("a1")
    call_id = board.answered("a9", "b1")
    board.connect("a10", "alice", "tab-1")
    assert board.closed["a9"] == (4501, "replaced by a newer connection")
    assert board.last("a10", "call-resumed")["callId"] == call_id
    assert "presence" not in [m["type"] for m in board.inbox["b1"]]


def test_device_connecting_while_ringing_rings_too(board: Board) -> None:
    """A device of the callee that connects while the call rings is rung as well."""
    call_id = board.ring("a1", "bob")
    board.connect("b2", "bob")
    assert board.last("b2", "call-request")["callId"] == call_id
    board.send("b2", "call-accept", "alice")
    assert board.last("b1", "call-ended")["reason"] == "answered-elsewhere"


def test_presence_is_per_user(board: Board) -> None:
    """Others see a user online at its first device and offline after its last."""
    board.connect("b2", "bob")
    assert "presence" not in [m["type"] for m in board.inbox["a1"]]
    board.disconnect("b1")
    assert "presence" not in [m["type"] for m in board.inbox["a1"]]
    board.disconnect("b2")
    assert board.last("a1", "presence") == {"type": "presence", "id": "bob", "status": "offline"}


def test_welcome_tells_device_and_timers(board: Board) -> None:
    """The welcome names the device and the ring timeout and grace the server applies."""
    welcome = board.connect("a5", "alice", "phone")
    assert welcome["device"] == "phone" and welcome["ringTimeout"] == 45 and welcome["resumeGrace"] == 20
    assert welcome["online"] == ["bob", "carol"] and isinstance(welcome["version"], str)


# Every (call state, event) pair, written out by hand from the rules in docs/protocol.md: the state the call moves
# to, or None where the event is illegal in that state. Deliberately not derived from TRANSITIONS.
EXPECTED_TRANSITIONS: dict[tuple[str, str], str | None] = {
    ("ringing", "accept"): "answered",
    ("ringing", "reject"): "ended",
    ("ringing", "cancel"): "ended",
    ("ringing", "ring-timeout"): "ended",
    ("ringing", "hangup"): None,
    ("ringing", "peer-lost"): "ended",
    ("ringing", "retract"): "ended",
    ("answered", "accept"): None,
    ("answered", "reject"): None,
    ("answered", "cancel"): None,
    ("answered", "ring-timeout"): None,
    ("answered", "hangup"): "ended",
    ("answered", "peer-lost"): "ended",
    ("answered", "retract"): None,
    ("ended", "accept"): None,
    ("ended", "reject"): None,
    ("ended", "cancel"): None,
    ("ended", "ring-timeout"): None,
    ("ended", "hangup"): None,
    ("ended", "peer-lost"): None,
    ("ended", "retract"): None,
}


@pytest.mark.parametrize(("state", "event", "after"), [(s, e, a) for (s, e), a in EXPECTED_TRANSITIONS.items()])
def test_transition_table(board: Board, state: str, event: str, after: str | None) -> None:
    """Each (state, event) pair moves the call to the state written above, or raises InvalidTransition."""
    from peercall.core.switchboard import Call, Party

    call = Call("k", Party("alice", "d", "a1"), "bob", None, 0, 45, state=CallState(state))  # type: ignore[arg-type]
    if after is not None:
        board.sb._transition(call, Event(event))
        assert call.state is CallState(after)
    else:
        with pytest.raises(InvalidTransition, match=f"no transition from {state} on {event}"):
            board.sb._transition(call, Event(event))
        assert call.state is CallState(state)


def test_transition_table_covers_every_pair() -> None:
    """The pairs above are every (CallState, Event) pair, and TRANSITIONS holds exactly their legal ones."""
    assert set(EXPECTED_TRANSITIONS) == {(s.value, e.value) for s in CallState for e in Event}
    legal = {(s, e): a for (s, e), a in EXPECTED_TRANSITIONS.items() if a is not None}
    assert {(s.value, e.value): a.value for (s, e), a in TRANSITIONS.items()} == legal


def test_presence_says_in_call_and_last_seen(board: Board) -> None:
    """Others see when a user's call is answered and ends, and when an offline user was last seen."""
    effects = board.sb.receive("a1", _parse("a1", "call-request", "bob"), board.now)
    effects += board.sb.receive("b1", _parse("b1", "call-accept", "alice"), board.now)
    changes = [(e.user, e.in_call) for e in effects if isinstance(e, Presence)]
    assert sorted(changes) == [("alice", True), ("bob", True)]
    assert board.sb.connect("c9", "carol", None, board.now)[0].message["inCall"] == ["alice", "bob"]
    ended = board.sb.receive("a1", _parse("a1", "hangup", "bob"), board.now)
    assert sorted((e.user, e.in_call) for e in ended if isinstance(e, Presence)) == [("alice", False), ("bob", False)]
    board.advance(7)
    (gone,) = [e for e in board.sb.disconnect("b1", board.now) if isinstance(e, Presence)]
    assert (gone.status, gone.last_seen) == ("offline", board.now)
    welcome = board.sb.connect("d1", "dave", None, board.now)[0].message
    assert welcome["recent"] == [{"id": "bob", "lastSeen": board.now}]
    board.sb.connect("b2", "bob", None, board.now)
    assert board.sb.connect("e1", "erin", None, board.now)[0].message["recent"] == []


def _parse(conn: str, type: str, to: str):
    from peercall.protocol import messages

    return messages.parse(f'{{"type":"{type}","to":"{to}"}}', {"a1": "alice", "b1": "bob"}[conn])


def test_a_ringing_call_handed_over_rings_again_after_the_restart(board: Board) -> None:
    """The server stops while alice's call rings bob; the next run takes it over (through its encoding): bob's
    device that connects rings, alice's resumes the call as ringing, and bob's accept answers it."""
    call_id = board.ring("a1", "bob")
    board.advance(5)
    state = msgspec.json.encode(board.sb.hand_over(board.now))
    again = Board(ring=45, grace=20)
    again.now = board.now + 3
    again.sb.take_over(msgspec.json.decode(state, type=list[Call]))
    again.connect("b2", "bob")
    assert again.last("b2", "call-request") == {"type": "call-request", "from": "alice", "to": "bob", "callId": call_id}
    again.connect("a2", "alice")
    resumed = again.last("a2", "call-resumed")
    assert (resumed["callId"], resumed["state"], resumed["role"]) == (call_id, "ringing", "caller")
    again.send("b2", "call-accept", "alice")
    assert again.last("a2", "call-accept")["callId"] == call_id
    assert again.records == []


def test_a_call_handed_over_whose_party_stays_away_ends_after_the_grace(board: Board) -> None:
    """An answered call taken over after a restart: if nobody comes back, it ends `peer-lost` once the grace that
    began at the stop has run out, and is recorded once."""
    call_id = board.answered("a1", "b1")
    state = msgspec.json.encode(board.sb.hand_over(board.now))
    again = Board(ring=45, grace=20)
    again.now = board.now + 5
    again.sb.take_over(msgspec.json.decode(state, type=list[Call]))
    again.advance(14)
    assert again.records == []
    again.advance(2)
    (record,) = again.records
    assert (record.call_id, record.outcome, record.reason) == (call_id, Outcome.ANSWERED, Reason.PEER_LOST)
    assert record.ended_at == board.now + 20  # when the grace ran out, not when the timer fired


def test_a_call_handed_over_before_a_long_stop_is_recorded_as_long_as_it_was(board: Board) -> None:
    """The server stays down for two hours: the calls it took over end when their parties' grace (counted from
    the stop) ran out, not two hours later: the answered one `answered`, the one that rang `cancelled`."""
    answered = board.answered("a1", "b1")
    board.connect("d1", "dave")
    ringing = board.ring("c1", "dave")
    state = msgspec.json.encode(board.sb.hand_over(board.now))
    again = Board(ring=45, grace=20)
    again.now = board.now + 7200
    assert again.sb.take_over(msgspec.json.decode(state, type=list[Call])) == 2
    again.advance(0)
    ended = {(r.call_id, r.outcome, r.reason, r.ended_at) for r in again.records}
    assert ended == {
        (answered, Outcome.ANSWERED, Reason.PEER_LOST, board.now + 20),
        (ringing, Outcome.CANCELLED, Reason.PEER_LOST, board.now + 20),
    }
