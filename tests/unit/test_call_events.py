"""The switchboard's `CallEvent`s (for webhooks): one when a call starts ringing on the callee's devices, one when
it is answered; none for a call that rings nowhere (silent, screened, busy, unavailable)."""

from __future__ import annotations

import pytest

from peercall.core.social import Screen, Screening

from .board import Board


def test_a_call_that_rings_and_is_answered_has_one_event_each() -> None:
    """Ringing on two devices is one event; the accept of one device is one more, at the accept's time."""
    b = Board()
    b.connect("a1", "alice")
    b.connect("b1", "bob")
    b.connect("b2", "bob")
    call_id = b.ring("a1", "bob")
    assert b.events == [("ringing", call_id, 1000.0)]
    b.now += 3
    assert b.send("b2", "call-accept", "alice") is None
    assert b.events == [("ringing", call_id, 1000.0), ("answered", call_id, 1003.0)]
    b.send("a1", "hangup", "bob")
    assert len(b.events) == 2  # the end is told by the call's Record
    (record,) = b.records
    assert (record.call_id, record.outcome.value) == (call_id, "answered")


@pytest.mark.parametrize("end", ["ring-timeout", "reject", "cancel"])
def test_a_call_that_ends_unanswered_has_only_its_ringing_event(end: str) -> None:
    """Missed, declined or cancelled: its ringing event, then only its Record."""
    b = Board(ring=10)
    b.connect("a1", "alice")
    b.connect("b1", "bob")
    call_id = b.ring("a1", "bob")
    if end == "ring-timeout":
        b.advance(11)
    elif end == "reject":
        b.send("b1", "call-reject", "alice")
    else:
        b.send("a1", "hangup", "bob")
    assert b.events == [("ringing", call_id, 1000.0)]
    assert [r.call_id for r in b.records] == [call_id]


def test_glare_answers_with_an_answered_event() -> None:
    """Bob calling alice while her call to him rings answers it: one call, ringing then answered."""
    b = Board()
    b.connect("a1", "alice")
    b.connect("b1", "bob")
    call_id = b.ring("a1", "bob")
    b.send("b1", "call-request", "alice")
    assert [(state, cid) for state, cid, _ in b.events] == [("ringing", call_id), ("answered", call_id)]


@pytest.mark.parametrize("state", ["offline", "busy"])
def test_a_call_that_cannot_ring_has_no_event(state: str) -> None:
    """Unavailable or busy at once: nothing rang, so only its Record tells of it."""
    b = Board()
    b.connect("a1", "alice")
    if state == "busy":
        b.connect("b1", "bob")
        b.connect("c1", "carol")
        b.answered("c1", "b1")
        b.events.clear()
    b.send("a1", "call-request", "bob")
    assert b.events == []
    assert [r.outcome.value for r in b.records] == ["unavailable" if state == "offline" else "busy"]


@pytest.mark.parametrize("screening", [Screening.BLOCKED, Screening.SILENCED, Screening.REFUSED, None])
def test_a_silent_or_screened_call_has_no_ringing_event(screening: Screening | None) -> None:
    """A call that rings nowhere (screened, or to someone offline the caller may not see) has no event until its
    Record, which says why it was screened."""
    b = Board(ring=10)
    b.connect("a1", "alice")
    if screening is not None:
        b.connect("b1", "bob")
    b.screens[("alice", "bob")] = Screen(False, screening)
    b.ring("a1", "bob")
    b.advance(11)
    assert b.events == []
    (record,) = b.records
    assert (record.outcome.value, record.screened) == ("missed", screening)


def test_a_silent_call_answered_by_calling_back_has_only_its_answered_event() -> None:
    """A silenced call rang nowhere; the callee calling back answers it: answered, never ringing."""
    b = Board()
    b.connect("a1", "alice")
    b.connect("b1", "bob")
    b.screens[("alice", "bob")] = Screen(True, Screening.SILENCED)
    call_id = b.ring("a1", "bob")
    assert b.events == []
    b.send("b1", "call-request", "alice")
    assert [(state, cid) for state, cid, _ in b.events] == [("answered", call_id)]
