"""Call rules beyond the transition table that both brokers apply: the call rate, and who may send a call-summary."""

from __future__ import annotations

import json

import pytest

from peercall.core.switchboard import CallRate, check_summary
from peercall.protocol import messages
from peercall.protocol.codes import ErrorCode
from peercall.protocol.errors import ProtocolError

from .board import Board


def test_call_rate_allows_a_burst_then_one_every_two_seconds() -> None:
    """At 30 a minute, 30 requests go through at once, the 31st is refused, and one more goes after 2 s."""
    b = Board()
    b.sb.call_rate = CallRate(30)
    b.connect("a1", "alice")
    for _ in range(30):
        assert b.send("a1", "call-request", "bob") is None  # bob is offline: each ends unavailable at once
    error = b.send("a1", "call-request", "bob")
    assert error is not None and error["code"] == "rate-limited" and error["to"] == "bob"
    assert error["message"] == "more than 30 call requests a minute; wait a little"
    b.now += 2.0
    assert b.send("a1", "call-request", "bob") is None


def test_call_rate_is_per_user() -> None:
    """One user's spent requests do not limit another's."""
    b = Board()
    b.sb.call_rate = CallRate(1)
    b.connect("a1", "alice")
    b.connect("c1", "carol")
    assert b.send("a1", "call-request", "bob") is None
    assert b.send("a1", "call-request", "bob") is not None
    assert b.send("c1", "call-request", "bob") is None


def _summary(call_id: str, user: str) -> messages.Envelope:
    return messages.parse(json.dumps({"type": "call-summary", "callId": call_id, "data": {"mos": 4}}), user)


def _call_that_ends(b: Board, outcome: str) -> str:
    """alice (a1) calls bob, and the call ends `outcome`; returns its id. carol (c1) is online."""
    b.connect("a1", "alice")
    b.connect("c1", "carol")
    if outcome != "unavailable":
        b.connect("b1", "bob")
    if outcome == "busy":
        b.ring("c1", "bob")
    assert b.send("a1", "call-request", "bob") is None
    call_id = b.last("a1", "call-ended" if outcome == "unavailable" else "call-ringing")["callId"]
    if outcome == "rejected":
        with pytest.raises(ProtocolError):  # not while it rings
            b.sb.check_summary("alice", _summary(call_id, "alice"))
        b.send("b1", "call-reject", "alice")
    assert b.last("a1", "call-ended") == {
        "type": "call-ended",
        "callId": call_id,
        "outcome": outcome,
        "reason": {"rejected": "user-rejected", "busy": "user-busy", "unavailable": "user-unavailable"}[outcome],
    }
    return call_id


@pytest.mark.parametrize("outcome", ["rejected", "busy", "unavailable"])
def test_parties_of_an_ended_call_may_send_its_summary(outcome: str) -> None:
    """Both parties of a call that ended, however it ended, may send a call-summary; nobody else may."""
    b = Board()
    call_id = _call_that_ends(b, outcome)
    b.sb.check_summary("alice", _summary(call_id, "alice"))
    b.sb.check_summary("bob", _summary(call_id, "bob"))
    with pytest.raises(ProtocolError) as refused:
        b.sb.check_summary("carol", _summary(call_id, "carol"))
    assert refused.value.code is ErrorCode.NOT_IN_CALL and refused.value.call_id == call_id


def test_check_summary_needs_a_call_that_ended_lately() -> None:
    """A call id that ended too long ago (or never) is refused with not-in-call, echoing the call id."""
    with pytest.raises(ProtocolError) as refused:
        check_summary("alice", _summary("k9", "alice"), None)
    assert refused.value.code is ErrorCode.NOT_IN_CALL and refused.value.ref == "call-summary"
    check_summary("alice", _summary("k9", "alice"), ("alice", "bob"))
