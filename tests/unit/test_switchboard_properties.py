"""Property-based tests: random interleavings never leave a call in an impossible state."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peercall.core.switchboard import CallState

from .board import Board

USERS = ["alice", "bob", "carol"]
DEVICES = ["x", "y"]  # each user may connect from two devices, named or not
RING, GRACE = 45.0, 20.0

op = st.one_of(
    st.tuples(st.just("connect"), st.sampled_from(USERS), st.sampled_from([*DEVICES, None])),
    st.tuples(st.just("disconnect"), st.sampled_from(USERS), st.sampled_from(DEVICES)),
    st.tuples(
        st.just("send"),
        st.sampled_from(USERS),
        st.sampled_from(DEVICES),
        st.sampled_from(["call-request", "call-accept", "call-reject", "hangup", "offer", "candidate"]),
        st.sampled_from(USERS),
        st.sampled_from([None, {"reason": "busy"}, {"reason": "ice-failed"}]),
    ),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 5.0, 19.0, 21.0, 44.0, 46.0])),
)

DATA = {
    "offer": {"type": "offer", "sdp": "v=0"},
    "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 1 typ host"},
}


def check_invariants(b: Board) -> None:
    sb = b.sb
    for call_id, call in sb.calls.items():
        assert call.state in (CallState.RINGING, CallState.ANSWERED)
        assert sb.active[call.caller.user] == call_id
        # a silent call holds only its caller
        assert (sb.active.get(call.callee_user) == call_id) is not call.silent
        assert call.caller.user != call.callee_user
        if call.state is CallState.ANSWERED:
            assert call.callee is not None and not call.ringing and call.answered_at is not None
        else:
            assert call.callee is None
            assert b.now < call.ring_deadline <= call.ringing_at + RING
        for conn in call.ringing:
            assert sb.devices[conn].user == call.callee_user
        for party in call.parties():
            if party.cid is None:
                assert party.lost_until is not None and b.now < party.lost_until
            else:
                assert sb.devices[party.cid].user == party.user and party.lost_until is None
        # a call with nobody left connected on either side cannot outlive the grace period
        assert any(p.cid is not None for p in call.parties()) or all(p.lost_until is not None for p in call.parties())
    # the deadline heap agrees with a scan of every call
    assert sb.next_deadline() == min((d for c in sb.calls.values() if (d := c.deadline()) is not None), default=None)
    for user, call_id in sb.active.items():
        assert call_id in sb.calls
        assert user in (sb.calls[call_id].caller.user, sb.calls[call_id].callee_user)
    for conn, device in sb.devices.items():
        assert sb.users[device.user][conn] is device
    assert sum(len(d) for d in sb.users.values()) == len(sb.devices)
    assert sb.online() == sorted(sb.users) and all(sb.users.values())
    # every call is recorded once, and only once it has ended
    ids = [r.call_id for r in b.records]
    assert len(ids) == len(set(ids))
    assert not set(ids) & set(sb.calls)
    # nobody hears that one call ended twice
    for conn, inbox in b.inbox.items():
        ended = Counter(m["callId"] for m in inbox if m["type"] == "call-ended")
        assert all(n == 1 for n in ended.values()), (conn, ended)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=80))
def test_random_interleavings_keep_calls_consistent(ops: list[tuple]) -> None:
    """Any sequence of connects, frames, disconnects and ticks keeps every invariant, and all calls end."""
    b = Board(ring=RING, grace=GRACE)
    live: dict[tuple[str, str], str] = {}
    serial = 0
    start = [("connect", "alice", None), ("connect", "bob", "x"), ("connect", "bob", "y"), ("connect", "carol", None)]
    for step in start + ops:
        if step[0] == "connect":
            _, user, device = step
            slot = (user, device or "x")
            if slot in live and device is None:
                continue
            serial += 1
            conn = f"{user}-{serial}"
            b.connect(conn, user, device)
            for old_slot, old_conn in list(live.items()):
                if old_conn in b.closed:
                    del live[old_slot]
                    b.disconnect(old_conn)
            live[slot] = conn
        elif step[0] == "disconnect":
            _, user, device = step
            conn = live.pop((user, device), None)
            if conn is not None:
                b.disconnect(conn)
        elif step[0] == "send":
            _, user, device, kind, to, data = step
            conn = live.get((user, device))
            if conn is None or to == user:
                continue
            fields = {"data": DATA[kind]} if kind in DATA else ({"data": data} if data else {})
            b.send(conn, kind, to, **fields)
        else:
            b.advance(step[1])
        check_invariants(b)
    # Everyone leaves; after the grace period and the ring timeout nothing is left. Every connection the switchboard
    # still has, not only those in `live`: a named device connecting into a slot an unnamed one held leaves that
    # one connected (it is another device), and its call may be answered (a call-request both ways is an accept).
    for conn in list(b.sb.devices):
        b.disconnect(conn)
    b.advance(GRACE + 0.1)
    b.advance(RING)
    assert b.sb.calls == {} and b.sb.active == {} and b.sb.next_deadline() is None
    check_invariants(b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["b1", "b2", "b3"]), min_size=1, max_size=6))
def test_simultaneous_accepts_have_exactly_one_winner(order: list[str]) -> None:
    """However the callee's devices' accepts interleave, exactly one of them gets the call."""
    b = Board()
    b.connect("a1", "alice")
    for conn in ("b1", "b2", "b3"):
        b.connect(conn, "bob")
    b.ring("a1", "bob")
    outcomes = [b.send(conn, "call-accept", "alice") for conn in order]
    assert outcomes[0] is None and all(o is not None and o["code"] == "not-in-call" for o in outcomes[1:])
    (call,) = b.sb.calls.values()
    assert call.callee is not None and call.callee.cid == order[0]
    accepts = [m for m in b.inbox["a1"] if m["type"] == "call-accept"]
    assert len(accepts) == 1
