"""Property: a blocked, silenced or refused call tells its caller nothing the callee did, and its callee nothing.

For every interleaving of the callee's doings (connecting, leaving, calling a third user, being called, answering,
hanging up), the caller's cancelling and time passing, a screened call gives the caller exactly the frames, at the
same times, and the same history record (as far as the caller sees it) as a call to someone offline; and it
leaves the callee's (and the third user's) frames exactly as if it had never been placed.

"As a call to someone offline" with the same `visible`; except that a caller who may see the callee's presence
(`visible`) already knows a silenced or refused callee is online, free or busy: theirs sounds like a call nobody
answers (free) or `busy` (busy). A blocker always looks offline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peercall.core.social import Screen, Screening

from .board import Board
from .test_switchboard_properties import check_invariants

RING = 45.0
CALL_ID = re.compile(r"\bk\d+\b")  # the Board's call ids

op = st.one_of(
    st.just(("bob-connects",)),
    st.just(("bob-leaves",)),
    st.just(("alice-leaves",)),
    st.just(("alice-returns",)),
    st.sampled_from(
        [
            ("bob", "call-request", "carol"),
            ("bob", "call-accept", "carol"),
            ("bob", "call-reject", "carol"),
            ("bob", "hangup", "carol"),
            ("carol", "call-request", "bob"),
            ("carol", "call-accept", "bob"),
            ("carol", "hangup", "bob"),
            ("alice", "hangup", "bob"),
        ]
    ),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 1.0, 5.0, 20.0, 44.0])),
)


@dataclass
class World:
    heard: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # conn -> (seconds, normalized frame)
    record: tuple[Any, ...] | None = None  # alice's call, as alice may know it
    others: list[tuple[Any, ...]] = field(default_factory=list)  # the other calls' records
    call_id: str | None = None
    silenced: list[str] = field(default_factory=list)  # the connections told a `silenced-call` (its line)


def normalize(frame: dict[str, Any], ids: dict[str, str]) -> str:
    """The frame with every call id (field or text) replaced by its order of appearance to that connection."""
    text = json.dumps(frame, sort_keys=True)
    return CALL_ID.sub(lambda m: ids.setdefault(m.group(), f"#{len(ids)}"), text)


def run(initial: str, screen: Screen | None, ops: list[tuple[Any, ...]], *, alice_calls: bool, bob_acts: bool) -> World:
    b = Board(ring=RING)
    b.connect("a1", "alice")
    b.connect("c1", "carol")
    bobs: list[str] = []
    alice: str | None = "a1"
    serial = returns = 0
    if initial != "offline":
        serial += 1
        bobs.append(f"b{serial}")
        b.connect(bobs[0], "bob")
    if initial == "busy":
        b.answered("c1", bobs[0])
    for conn in list(b.inbox):
        b.take(conn)
    b.records.clear()
    if screen is not None:
        b.screens[("alice", "bob")] = screen
    start = b.now
    world = World()
    ids: dict[str, dict[str, str]] = {}

    def collect() -> None:
        for conn in list(b.inbox):
            frames = world.heard.setdefault(conn, [])
            for m in b.take(conn):
                if m["type"] == "silenced-call":  # the line a silenced call leaves in the callee's Recent calls
                    world.silenced.append(conn)
                    continue
                frames.append((b.now - start, normalize(m, ids.setdefault(conn, {}))))

    if alice_calls:
        b.send("a1", "call-request", "bob")
        world.call_id = next(m["callId"] for m in b.inbox["a1"] if "callId" in m)
    collect()
    for step in ops:
        if step[0] == "tick":
            b.advance(step[1])
        elif step[0] == "alice":
            if alice_calls and alice is not None:
                b.send(alice, step[1], step[2])
        elif step[0] == "alice-leaves":
            if alice is not None:
                b.disconnect(alice)
                alice = None
        elif step[0] == "alice-returns":
            if alice is None:
                returns += 1
                alice = f"a{returns + 1}"
                b.connect(alice, "alice")
        elif step[0] == "carol":
            if bob_acts:
                b.send("c1", step[1], step[2])
        elif not bob_acts:
            continue
        elif step[0] == "bob-connects":
            if len(bobs) < 2:
                serial += 1
                bobs.append(f"b{serial}")
                b.connect(bobs[-1], "bob")
        elif step[0] == "bob-leaves":
            if bobs:
                b.disconnect(bobs.pop(0))
        elif bobs:
            b.send(bobs[0], step[1], step[2])
        collect()
        check_invariants(b)
        call = b.sb.calls.get(world.call_id or "")
        if call is not None:  # a screened call never holds, rings or reaches bob
            assert call.silent and call.ringing == {} and b.sb.active.get("bob") != call.id
    b.advance(RING + 1)
    collect()
    for r in b.records:
        mine = (r.outcome, r.reason, r.ringing_at - start, r.ended_at - start, r.answered_at, r.hung_up_by)
        if r.call_id == world.call_id:
            world.record = (r.caller, r.callee, r.caller_device, r.answered_device, *mine)
        else:
            world.others.append((r.caller, r.callee, *mine, r.screened))
    assert world.call_id not in b.sb.calls
    return world


def reference(initial: str, screening: Screening, visible: bool) -> tuple[str, Screen]:
    """The unscreened call that the caller must not be able to tell from the screened one."""
    if screening is Screening.BLOCKED or not visible or initial == "offline":
        return "offline", Screen(visible, None)
    if initial == "busy":
        return "busy", Screen(True, None)
    return "offline", Screen(False, None)  # online and free: a call nobody answers


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(Screening)),
    st.booleans(),
    st.sampled_from(["offline", "free", "busy"]),
    st.lists(op, min_size=4, max_size=40),
)
def test_a_screened_call_is_a_call_to_someone_offline(
    screening: Screening, visible: bool, initial: str, ops: list[tuple[Any, ...]]
) -> None:
    screened = run(initial, Screen(visible, screening), ops, alice_calls=True, bob_acts=True)
    ref_initial, ref_screen = reference(initial, screening, visible)
    offline = run(ref_initial, ref_screen, ops, alice_calls=True, bob_acts=False)
    untouched = run(initial, None, ops, alice_calls=False, bob_acts=True)
    # The caller: same frames at the same times, same record.
    for conn in {c for c in screened.heard.keys() | offline.heard.keys() if c.startswith("a")}:
        assert screened.heard.get(conn) == offline.heard.get(conn), conn
    assert screened.record is not None and screened.record == offline.record
    # The callee and everyone else: as if the call had never been placed, but for the line that a silenced call
    # leaves in the callee's Recent calls (`silenced-call`, to their devices connected when it ended).
    for conn, frames in screened.heard.items():
        if not conn.startswith("a"):
            assert frames == untouched.heard.get(conn, []), conn
            assert "alice" not in str(frames)
    assert all(conn.startswith("b") for conn in screened.silenced)
    assert screening is Screening.SILENCED or not screened.silenced
    assert screened.others == untouched.others
