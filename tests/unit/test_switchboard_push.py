"""Calls that ring a closed app (Web Push): a `reachable` callee with no device connected is rung by a `Push`."""

from __future__ import annotations

import pytest

from peercall.core.records import Outcome, Reason
from peercall.core.social import Screen, Screening
from peercall.core.switchboard import Push

from .board import Board

RING = 45.0


def board(screen: Screen) -> Board:
    b = Board(ring=RING)
    b.connect("a1", "alice")
    b.screens[("alice", "bob")] = screen
    return b


@pytest.mark.parametrize("visible", [True, False])
def test_a_reachable_callee_with_no_device_is_rung_by_push(visible: bool) -> None:
    """The caller hears it ring (not `unavailable`, nor a silent call when they may not see the callee); one Push
    names the call, the caller and the ring deadline."""
    b = board(Screen(visible, None, reachable=True))
    b.send("a1", "call-request", "bob")
    (ringing,) = b.take("a1")
    assert ringing["type"] == "call-ringing"
    call_id = ringing["callId"]
    assert b.pushes == [Push("bob", "call", call_id, "alice", 1000.0, 1000.0 + RING)]


def test_a_device_that_connects_while_a_pushed_call_rings_rings_and_answers_it() -> None:
    """The app the push opened connects: it is rung with the call-request, and accepting connects the caller."""
    b = board(Screen(True, None, reachable=True))
    b.send("a1", "call-request", "bob")
    call_id = b.take("a1")[0]["callId"]
    b.advance(3)
    b.connect("b1", "bob")
    (request,) = b.take("b1")
    assert (request["type"], request["callId"], request["from"]) == ("call-request", call_id, "alice")
    b.send("b1", "call-accept", "alice", callId=call_id)
    assert [m["type"] for m in b.take("a1")] == ["call-accept"]
    # The notifications on bob's browsers go away: an "ended" push, outcome answered.
    assert [(p.kind, p.call_id, p.outcome) for p in b.pushes] == [
        ("call", call_id, None),
        ("ended", call_id, "answered"),
    ]
    b.advance(RING)
    assert not b.records  # answered: the ring timeout does not end it
    b.send("a1", "hangup", "bob", callId=call_id)
    assert b.records[0].outcome is Outcome.ANSWERED
    assert len(b.pushes) == 2  # and no missed push, nor another one when the answered call ends


def test_a_pushed_call_nobody_answers_ends_missed_and_pushes_the_missed_call() -> None:
    """At the ring timeout the caller hears `missed`; a second Push (kind missed) replaces the notification."""
    b = board(Screen(True, None, reachable=True))
    b.send("a1", "call-request", "bob")
    call_id = b.take("a1")[0]["callId"]
    b.advance(RING + 1)
    assert [(m["type"], m.get("outcome")) for m in b.take("a1")] == [("call-ended", "missed"), ("hangup", None)]
    assert [p.kind for p in b.pushes] == ["call", "missed"]
    assert b.pushes[1].call_id == call_id
    assert b.records[0].outcome is Outcome.MISSED
    assert b.notified[call_id] is False  # bob was not online: his next connection gets it in missed-calls


def test_a_pushed_call_the_caller_cancels_pushes_the_missed_call() -> None:
    """The caller hangs up while it rings: the notification turns into a missed call too."""
    b = board(Screen(True, None, reachable=True))
    b.send("a1", "call-request", "bob")
    call_id = b.take("a1")[0]["callId"]
    b.send("a1", "hangup", "bob", callId=call_id)
    assert [p.kind for p in b.pushes] == ["call", "missed"]
    assert b.records[0].outcome is Outcome.CANCELLED


def test_decline_ends_a_pushed_call_rejected_for_the_caller() -> None:
    """The notification's Decline: the caller gets call-reject and call-ended rejected; no missed push, but an
    "ended" one that takes the notification away on the callee's other browsers."""
    b = board(Screen(True, None, reachable=True))
    b.send("a1", "call-request", "bob")
    call_id = b.take("a1")[0]["callId"]
    b.apply(b.sb.decline(call_id, "bob", b.now))
    got = [(m["type"], m.get("outcome"), m.get("reason")) for m in b.take("a1")]
    assert got == [("call-ended", "rejected", "user-rejected"), ("call-reject", None, None)]
    record = b.records[0]
    assert (record.outcome, record.reason, record.hung_up_by) == (Outcome.REJECTED, Reason.USER_REJECTED, "bob")
    assert [(p.kind, p.outcome) for p in b.pushes] == [("call", None), ("ended", "rejected")]
    assert "alice" not in b.sb.active and "bob" not in b.sb.active


@pytest.mark.parametrize(("reason", "outcome"), [(None, "rejected"), ("busy", "busy")])
def test_a_pushed_call_declined_from_a_device_takes_the_notification_away(reason: str | None, outcome: str) -> None:
    """Bob's app connects while the pushed call rings and declines it (or says busy): the notification on his
    other browsers is replaced by an "ended" push, not left ringing and not turned into a missed call."""
    b = board(Screen(True, None, reachable=True))
    b.send("a1", "call-request", "bob")
    call_id = b.take("a1")[0]["callId"]
    b.connect("b1", "bob")
    b.take("b1")
    b.send("b1", "call-reject", "alice", callId=call_id, **({"data": {"reason": reason}} if reason else {}))
    assert b.records[0].outcome.value == outcome
    assert [(p.kind, p.call_id, p.outcome) for p in b.pushes] == [("call", call_id, None), ("ended", call_id, outcome)]


@pytest.mark.parametrize("visible", [True, False])
def test_a_second_caller_to_someone_being_pushed_is_busy(visible: bool) -> None:
    """Bob has no device but a call ringing by push: carol's call gets `busy` at once, as to anyone whose call
    rings (or, if she may not see bob's presence, a silent call); bob's call rings on, and nothing is pushed."""
    b = board(Screen(True, None, reachable=True))
    b.connect("c1", "carol")
    b.screens[("carol", "bob")] = Screen(visible, None, reachable=True)
    b.send("a1", "call-request", "bob")
    call_id = b.take("a1")[0]["callId"]
    b.send("c1", "call-request", "bob")
    got = [(m["type"], m.get("outcome")) for m in b.take("c1")]
    if visible:
        assert got == [("call-ringing", None), ("call-reject", None), ("call-ended", "busy")]
        assert b.records[0].outcome is Outcome.BUSY
    else:
        assert got == [("call-ringing", None)]  # silent: it looks like a call nobody answers
        assert not b.records
    assert [p.call_id for p in b.pushes] == [call_id]
    assert b.sb.calls[call_id].state.value == "ringing" and b.sb.active["bob"] == call_id


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_decline_of_a_call_that_is_not_ringing_for_that_user_changes_nothing(who: str) -> None:
    """Declining on someone else's behalf, or twice, or after the answer does nothing."""
    b = board(Screen(True, None, reachable=True))
    b.send("a1", "call-request", "bob")
    call_id = b.take("a1")[0]["callId"]
    assert b.sb.decline(call_id, who, b.now) == []
    assert b.sb.decline("no-such-call", "bob", b.now) == []
    b.connect("b1", "bob")
    b.send("b1", "call-accept", "alice", callId=call_id)
    assert b.sb.decline(call_id, "bob", b.now) == []
    assert b.sb.calls[call_id].state.value == "answered"


@pytest.mark.parametrize("screening", [Screening.BLOCKED, Screening.SILENCED, Screening.REFUSED])
@pytest.mark.parametrize("visible", [True, False])
def test_a_screened_call_is_never_pushed(screening: Screening, visible: bool) -> None:
    """Blocking, the ring setting and the operator's rule come first: no push, the call goes as it would."""
    b = board(Screen(visible, screening, reachable=True))
    b.send("a1", "call-request", "bob")
    b.advance(RING + 1)
    assert b.pushes == []


def test_a_callee_online_is_rung_on_their_devices_not_by_push() -> None:
    """Push is for a callee with no device connected; a busy one gets busy as before."""
    b = board(Screen(True, None, reachable=True))
    b.connect("b1", "bob")
    b.send("a1", "call-request", "bob")
    assert [m["type"] for m in b.take("b1")] == ["call-request"]
    assert b.pushes == []


def test_not_reachable_is_unavailable_as_before() -> None:
    """Without a subscription a call to someone offline ends `unavailable` at once (visible caller)."""
    b = board(Screen(True, None, reachable=False))
    b.send("a1", "call-request", "bob")
    assert [m["type"] for m in b.take("a1")] == ["error", "call-ended"]
    assert b.pushes == []


def test_a_callee_whose_call_waits_for_them_to_come_back_is_not_pushed() -> None:
    """Bob's connection dropped during a call (resume grace): a third caller is not pushed and does not take over
    his call; the call he is in goes on, and he resumes it."""
    b = board(Screen(True, None, reachable=True))
    b.connect("c1", "carol")
    b.connect("b1", "bob")
    b.answered("c1", "b1")
    b.disconnect("b1")
    b.send("a1", "call-request", "bob")
    assert [m["type"] for m in b.take("a1")] == ["error", "call-ended"]  # as to someone offline
    assert b.pushes == []
    b.connect("b2", "bob")
    assert [m["type"] for m in b.take("b2")] == ["call-resumed"]
