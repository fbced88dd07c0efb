"""Private mode: a stranger learns nothing from the outcome or timing of a call, and cannot hold anyone."""

from __future__ import annotations

from typing import Any

from .board import Board


def private_board() -> Board:
    b = Board(ring=45.0)
    b.sb.private = True
    return b


def unanswered(b: Board, caller: str, callee: str) -> list[tuple[str, Any, Any]]:
    """What `caller` hears when calling `callee`, up to the ring timeout: (type, outcome, seconds after request)."""
    start = b.now
    b.take(caller)
    assert b.send(caller, "call-request", callee) is None
    heard = [(m["type"], m.get("outcome"), b.now - start) for m in b.take(caller)]
    for _ in range(46):
        b.advance(1.0)
        heard += [(m["type"], m.get("outcome"), b.now - start) for m in b.take(caller)]
    return heard


def test_busy_offline_and_unanswered_sound_the_same() -> None:
    """Calling someone in a call, someone offline, or someone who lets it ring: the same frames at the same times."""
    b = private_board()
    b.connect("x1", "stranger")
    b.connect("a1", "alice")
    b.connect("c1", "carol")
    b.connect("d1", "dave")
    b.answered("a1", "c1")  # alice and carol are in a call
    busy = unanswered(b, "x1", "alice")
    offline = unanswered(b, "x1", "nobody")
    idle = unanswered(b, "x1", "dave")  # online, lets it ring
    assert busy == offline == idle
    assert [h[:2] for h in busy] == [("call-ringing", None), ("call-ended", "missed"), ("hangup", None)]
    assert busy[1][2] == 45.0
    assert b.types("a1") == [] and b.types("c1") == []  # the call in progress heard nothing


def test_a_call_to_someone_offline_does_not_hold_them() -> None:
    """While a stranger's call to offline bob rings, a third party's call rings on bob, and bob may call out."""
    b = private_board()
    b.connect("x1", "stranger")
    b.connect("c1", "carol")
    b.ring("x1", "bob")
    b.connect("b1", "bob")
    assert b.types("b1") == []  # the stranger's call does not ring on the device that just connected
    b.ring("c1", "bob")
    assert b.types("b1") == ["call-request"]  # carol's does
    assert b.send("b1", "call-accept", "carol") is None
    assert b.types("c1")[-1] == "call-accept"


def test_the_callee_of_a_silent_call_may_call_out() -> None:
    """Bob, called by a stranger while offline, connects and calls someone else: no `in-call`."""
    b = private_board()
    b.connect("x1", "stranger")
    b.connect("c1", "carol")
    b.ring("x1", "bob")
    b.connect("b1", "bob")
    assert b.send("b1", "call-request", "carol") is None
    assert b.types("c1") == ["call-request"]


def test_calling_back_answers_a_silent_call() -> None:
    """Bob calling the user whose silent call to him still rings answers that call (glare), on both sides."""
    b = private_board()
    b.connect("a1", "alice")
    call_id = b.ring("a1", "bob")
    b.connect("b1", "bob")
    assert b.send("b1", "call-request", "alice") is None
    accepted = b.last("a1", "call-accept")
    assert accepted["callId"] == call_id and b.last("b1", "call-accept")["callId"] == call_id
    assert b.sb.calls[call_id].state == "answered"
    assert b.send("b1", "hangup", "alice") is None
    assert b.records[-1].outcome.value == "answered"


def test_a_silent_call_is_told_as_missed() -> None:
    """A silent call rang on no device: its history record is written as not notified, so missed-calls tells it."""
    b = private_board()
    b.connect("x1", "stranger")
    notified: list[bool] = []
    original = b.apply

    def apply(effects: list[Any]) -> None:
        notified.extend(e.notified for e in effects if type(e).__name__ == "Record")
        original(effects)

    b.apply = apply  # type: ignore[method-assign]
    b.ring("x1", "bob")
    b.connect("b1", "bob")  # online when it ends, but it never rang there
    b.advance(45.0)
    assert b.records[-1].outcome.value == "missed" and notified == [False]
