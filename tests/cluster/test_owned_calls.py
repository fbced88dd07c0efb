"""A call owned by its caller's node (broker/redis.py, "Calls a node owns"): hubs on a real redis-server, driven
in-process with fake connections, so that each node's round trips and retries can be counted.

The owner runs each change of its call on the slice the last one left (no read), and the callee's node asks it to
carry out the callee's accept, reject or hangup. Whatever goes wrong with that (another node changed the call,
the owner does not answer, a node does not know the owner), the outcome is the one a single node would give.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import pytest

from peercall.broker import redis as redis_broker
from peercall.hub import nodeframe
from peercall.hub.router import Hub
from tests.cluster.conftest import RedisServer
from tests.cluster.test_redis_state import _alice_and_bob_on_two_nodes, hubs  # noqa: F401
from tests.contract.conftest import FakeConnection

PREFIX = "peercall:"
Make = Callable[..., Awaitable[Hub]]


async def _ring(first: Hub, alice: FakeConnection, bob: FakeConnection) -> str:
    await first.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    return str((await bob.wait_for("call-request"))["callId"])


async def test_the_callee_s_frames_are_carried_out_by_the_caller_s_node_with_no_read(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
) -> None:
    """Bob's accept and hangup are asked of alice's node, which runs them on the call as it left it: no read and
    no change made on bob's node; a frame the owner refuses gets bob the error a single node would send."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    reads = first.broker.ops["read"], second.broker.ops["read"]
    changes = second.broker.ops["transaction"]
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    assert (await alice.wait_for("call-accept"))["from"] == "bob"
    offer = {"type": "offer", "to": "alice", "callId": call_id, "data": {"type": "offer", "sdp": "v=0"}}
    await second.handle(bob, json.dumps(offer))  # its route came with the owner's answer: no read
    assert (await alice.wait_for("offer"))["from"] == "bob"
    assert (first.broker.ops["read"], second.broker.ops["read"]) == reads
    assert second.broker.ops["transaction"] == changes
    # (a refusal on what the owner holds is checked on what Redis holds: one read there)
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    error = await bob.wait_for("error")
    assert (error["code"], error["callId"]) == ("not-in-call", call_id)
    await second.handle(bob, json.dumps({"type": "hangup", "to": "alice", "callId": call_id}))
    ended = await alice.wait_for("call-ended")
    assert (ended["outcome"], ended["reason"]) == ("answered", "user-hangup")
    assert (await bob.wait_for("call-ended"))["callId"] == call_id
    assert second.broker.ops["transaction"] == changes
    assert second.broker.ops["ask"] == 3
    assert (first.broker.ops["retry"], second.broker.ops["retry"]) == (1, 0)  # (the refused accept, checked)
    assert redis_server.keys(db, f"{PREFIX}call:*") == []
    assert redis_server.command("SMEMBERS", f"{PREFIX}incall", db=db) == []


async def test_a_call_changed_by_another_node_is_read_again_by_its_owner(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
) -> None:
    """Bob's second device connects on a third node while the call rings: it rings, and answers there (that
    node was not told who owns the call). Alice's node still holds the call as ringing: its hangup fails the
    compare and set, is replayed on the state read, and ends the call for the device that answered."""
    db, make = hubs
    first, _, alice, bob = await _alice_and_bob_on_two_nodes(make)
    third = await make()
    call_id = await _ring(first, alice, bob)
    bob2 = FakeConnection(third, "bob")
    await third.join(bob2)
    assert (await bob2.wait_for("call-request"))["callId"] == call_id
    await third.handle(bob2, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    await alice.wait_for("call-accept")
    assert (await bob.wait_for("call-ended"))["reason"] == "answered-elsewhere"
    retries = first.broker.ops["retry"]
    await first.handle(alice, json.dumps({"type": "hangup", "to": "bob", "callId": call_id}))
    assert (await bob2.wait_for("call-ended"))["reason"] == "user-hangup"
    assert first.broker.ops["retry"] == retries + 1
    assert redis_server.keys(db, f"{PREFIX}call:*") == []
    assert "error" not in alice.types() + bob2.types()


async def test_glare_across_nodes_is_answered_by_the_owner(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
) -> None:
    """Bob, rung by alice's call, calls alice: asked of alice's node, it answers the call that rings him, as on
    one node (bob the polite side)."""
    _, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    await second.handle(bob, json.dumps({"type": "call-request", "to": "alice"}))
    mine = await bob.wait_for("call-accept")
    theirs = await alice.wait_for("call-accept")
    assert (mine["callId"], mine["polite"], theirs["callId"], theirs["polite"]) == (call_id, True, call_id, False)
    assert second.broker.ops["ask"] == 1
    assert "error" not in alice.types() + bob.types()


async def test_an_owner_that_does_not_answer_leaves_the_change_to_the_asking_node(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alice's node stops answering (it hangs, or died and its lease has not run out yet): bob's hangup waits
    for it at most _ASK_WITHIN seconds, then bob's node makes the change itself. The call ends for both."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    await alice.wait_for("call-accept")
    monkeypatch.setattr(redis_broker, "_ASK_WITHIN", 0.3)
    heard = first.broker._owner_frame  # type: ignore[attr-defined]
    deaf = lambda kind, text: None if kind == nodeframe.ASK else heard(kind, text)  # noqa: E731
    monkeypatch.setattr(first.broker, "_owner_frame", deaf)
    await second.handle(bob, json.dumps({"type": "hangup", "to": "alice", "callId": call_id}))
    assert second.broker.ops["ask-late"] == 1
    assert (await alice.wait_for("call-ended"))["reason"] == "user-hangup"
    assert (await bob.wait_for("call-ended"))["callId"] == call_id
    assert redis_server.keys(db, f"{PREFIX}call:*") == []


async def test_frames_about_owned_calls_that_make_no_sense_are_dropped(
    hubs: tuple[int, Make],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A newer or broken node's OWNER, ASK or ASKED frame is dropped with a warning: the listener goes on."""
    _, make = hubs
    first, _, alice, bob = await _alice_and_bob_on_two_nodes(make)
    broker = first.broker
    with caplog.at_level(logging.WARNING, logger="peercall.broker"):
        for kind, text in (
            (nodeframe.OWNER, "too few"),
            (nodeframe.ASK, "1 x\n{}"),
            (nodeframe.ASK, "1 n1-x.1 bob\nnot json"),
            (nodeframe.ASKED, "not-a-number ok"),
        ):
            broker._owner_frame(kind, text)  # type: ignore[attr-defined]
    assert caplog.text.count("dropped a frame of another node about a call it owns") == 4
    await _ring(first, alice, bob)  # and calls go on
