"""Screened call-requests (core/social.py `Screen`): what the caller hears, what the callee is spared, the history."""

from __future__ import annotations

from typing import Any

import pytest

from peercall.core.social import Screen, Screening

from .board import Board

RING = 45.0
SCREENINGS = [Screening.BLOCKED, Screening.SILENCED, Screening.REFUSED]


def heard(b: Board, caller: str, callee: str, seconds: float = RING + 1) -> list[tuple[Any, ...]]:
    """What `caller` hears calling `callee` until `seconds` later: (type, outcome, reason, seconds after request)."""
    start = b.now
    b.take(caller)
    b.send(caller, "call-request", callee)
    got = [(m["type"], m.get("outcome"), m.get("reason") or m.get("code"), 0.0) for m in b.take(caller)]
    while b.now - start < seconds:
        b.advance(1.0)
        got += [(m["type"], m.get("outcome"), m.get("reason"), b.now - start) for m in b.take(caller)]
    return got


UNANSWERED = [
    ("call-ringing", None, None, 0.0),
    ("call-ended", "missed", "invite-timeout", RING),
    ("hangup", None, None, RING),
]
UNAVAILABLE = [("error", None, "unavailable", 0.0), ("call-ended", "unavailable", "user-unavailable", 0.0)]
BUSY = [
    ("call-ringing", None, None, 0.0),
    ("call-reject", None, None, 0.0),
    ("call-ended", "busy", "user-busy", 0.0),
]


def board(screen: Screen | None) -> Board:
    b = Board(ring=RING)
    b.connect("a1", "alice")
    b.connect("c1", "carol")
    if screen is not None:
        b.screens[("alice", "bob")] = screen
    return b


@pytest.mark.parametrize("visible", [True, False])
@pytest.mark.parametrize("state", ["offline", "free", "busy"])
def test_unscreened_calls_ring_or_fail_as_visible_allows(visible: bool, state: str) -> None:
    """Not screened: offline and busy end at once when the caller may know them, else sound unanswered."""
    b = board(Screen(visible, None))
    if state != "offline":
        b.connect("b1", "bob")
    if state == "busy":
        b.answered("c1", "b1")
    got = heard(b, "a1", "bob")
    if state == "free":
        assert got == UNANSWERED  # it rang, and nobody answered
        assert b.types("b1") == ["call-request", "call-ended", "hangup"]
    elif visible:
        assert got == (UNAVAILABLE if state == "offline" else BUSY)
    else:
        assert got == UNANSWERED
        if state == "busy":
            assert b.types("b1") == [] and b.types("c1") == []
        assert b.records[-1].screened is None


def test_no_screen_is_todays_behaviour() -> None:
    """screen=None: the switchboard's private flag decides, as before screens existed."""
    open_board = board(None)
    assert heard(open_board, "a1", "bob") == UNAVAILABLE
    private = board(None)
    private.sb.private = True
    assert heard(private, "a1", "bob") == UNANSWERED
    private.screens[("alice", "bob")] = Screen(True, None)  # private mode wins over a screen that says visible
    assert heard(private, "a1", "bob") == UNANSWERED


@pytest.mark.parametrize("screening", SCREENINGS)
@pytest.mark.parametrize("visible", [True, False])
def test_a_screened_call_to_someone_online_and_free_rings_nowhere(screening: Screening, visible: bool) -> None:
    """Silenced or refused: an unanswered call for the caller; blocked: offline (unavailable if visible)."""
    b = board(Screen(visible, screening))
    b.connect("b1", "bob")
    b.connect("b2", "bob")
    got = heard(b, "a1", "bob")
    if screening is Screening.BLOCKED and visible:
        assert got == UNAVAILABLE
    else:
        assert got == UNANSWERED
    record = b.records[-1]
    if screening is Screening.SILENCED:  # nothing rang; once it ended, its line in Recent calls, on every device
        told = {"type": "silenced-call", "call": record.to_json("bob")}
        assert b.take("b1") == b.take("b2") == [told] and told["call"]["screened"] == "silenced"
    assert b.types("b1") == [] and b.types("b2") == []  # nothing rang, nothing ended
    assert record.caller == "alice" and record.callee == "bob" and record.screened is screening
    assert b.notified[record.call_id] is False  # online, but never told


@pytest.mark.parametrize("screening", SCREENINGS)
def test_a_screened_call_to_someone_busy(screening: Screening) -> None:
    """Visible: busy at once, except a blocker, who looks offline; invisible: unanswered. The call in progress
    hears nothing."""
    for visible in (True, False):
        b = board(Screen(visible, screening))
        b.connect("b1", "bob")
        b.answered("c1", "b1")
        got = heard(b, "a1", "bob")
        if not visible:
            assert got == UNANSWERED
        else:
            assert got == (UNAVAILABLE if screening is Screening.BLOCKED else BUSY)
        silenced = ["silenced-call"] if screening is Screening.SILENCED else []  # a line in Recent calls, no more
        assert b.types("b1") == silenced and b.types("c1") == []
        assert b.records[-1].screened is screening and b.notified[b.records[-1].call_id] is False


@pytest.mark.parametrize("screening", SCREENINGS)
def test_a_screened_call_does_not_hold_the_callee(screening: Screening) -> None:
    """While it runs, the callee calls out, is called, and a device that connects does not ring for it."""
    b = board(Screen(False, screening))
    b.connect("b1", "bob")
    call_id = b.ring("a1", "bob")
    assert "bob" not in b.sb.active and b.sb.calls[call_id].ringing == {}
    b.connect("b2", "bob")
    assert b.types("b2") == []
    b.ring("c1", "bob")  # carol's call rings on bob
    assert b.types("b1") == ["call-request"] and b.types("b2") == ["call-request"]
    assert b.send("b2", "call-accept", "carol") is None
    assert b.sb.calls[b.sb.active["bob"]].state == "answered"
    b.advance(RING)
    assert [(r.call_id, r.outcome.value) for r in b.records] == [(call_id, "missed")]
    told = [m for m in b.inbox["b1"] + b.inbox["b2"] if m["type"] != "silenced-call"]  # (its line, at its end)
    assert "alice" not in str(told)


def test_calling_back_answers_a_silenced_call() -> None:
    """The callee calling its caller back answers a silenced call, as glare does; it is no longer screened."""
    b = board(Screen(True, Screening.SILENCED))
    b.connect("b1", "bob")
    call_id = b.ring("a1", "bob")
    assert b.send("b1", "call-request", "alice") is None
    assert b.last("a1", "call-accept")["callId"] == call_id == b.last("b1", "call-accept")["callId"]
    assert b.send("a1", "hangup", "bob") is None
    assert b.records[-1].outcome.value == "answered" and b.records[-1].screened is None


@pytest.mark.parametrize("screening", [Screening.BLOCKED, Screening.REFUSED])
@pytest.mark.parametrize("visible", [True, False])
def test_calling_back_does_not_answer_a_hidden_call(screening: Screening, visible: bool) -> None:
    """A blocker (or a callee the operator's rule protects) calling the caller starts a call of its own: the caller
    has a call (the silent one), so it is busy (or unanswered, if the blocker may not know). The silent call runs on
    alone and ends missed at its timeout, as one to someone offline would."""
    b = board(Screen(False, screening))
    b.screens[("bob", "alice")] = Screen(visible, None)
    b.connect("b1", "bob")
    call_id = b.ring("a1", "bob")
    b.take("a1")
    got = heard(b, "b1", "alice", seconds=0)
    assert got == (BUSY if visible else [("call-ringing", None, None, 0.0)])
    assert b.types("a1") == []  # the blocked caller hears nothing of it
    assert b.sb.calls[call_id].state == "ringing"
    b.advance(RING)
    assert [m["type"] for m in b.take("a1")] == ["call-ended", "hangup"]
    assert {r.call_id: r.outcome.value for r in b.records}[call_id] == "missed"
    assert all(m.get("callId") != call_id for m in b.inbox["b1"])


@pytest.mark.parametrize("screening", SCREENINGS)
def test_the_caller_cancels_a_screened_call(screening: Screening) -> None:
    """Cancelling sounds as for any call that rings; the callee hears nothing."""
    b = board(Screen(False, screening))
    b.connect("b1", "bob")
    call_id = b.ring("a1", "bob")
    b.take("a1")
    b.advance(3.0)
    assert b.send("a1", "hangup", "bob") is None
    assert [(m["type"], m.get("outcome")) for m in b.take("a1")] == [("call-ended", "cancelled")]
    silenced = ["silenced-call"] if screening is Screening.SILENCED else []  # its line in Recent calls, no more
    assert b.types("b1") == silenced and "alice" not in b.sb.active
    record = b.records[-1]
    assert (record.call_id, record.outcome.value, record.hung_up_by, record.screened) == (
        call_id,
        "cancelled",
        "alice",
        screening,
    )
    assert record.ended_at - record.ringing_at == 3.0


def test_unscreened_history_is_notified_as_before() -> None:
    """A call that rang and was missed on an online callee is notified and not screened."""
    b = board(Screen(True, None))
    b.connect("b1", "bob")
    b.ring("a1", "bob")
    b.advance(RING)
    assert b.records[-1].screened is None and b.notified[b.records[-1].call_id] is True


def test_the_blocked_user_may_answer_a_call_the_blocker_placed() -> None:
    """Screens apply to the call being placed: the blocker's own call rings, and calling back answers it."""
    b = board(Screen(True, Screening.BLOCKED))  # alice's calls to bob are blocked
    b.connect("b1", "bob")
    call_id = b.ring("b1", "alice")
    assert b.types("a1") == ["call-request"]
    assert b.send("a1", "call-request", "bob") is None
    assert b.last("a1", "call-accept")["callId"] == call_id == b.last("b1", "call-accept")["callId"]
    assert b.sb.calls[call_id].state == "answered"
