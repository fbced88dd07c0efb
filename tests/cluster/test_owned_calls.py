"""A call owned by its caller's node (broker/redis.py, "Calls a node owns"): hubs on a real redis-server, driven
in-process with fake connections, so that each node's round trips and retries can be counted.

The owner runs each change of its call on the slice the last one left (no read), and the callee's node asks it to
carry out the callee's accept, reject or hangup. Whatever goes wrong with that (another node changed the call,
the owner does not answer, a node does not know the owner), the outcome is the one a single node would give.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peercall.broker import redis as redis_broker
from peercall.broker import resp
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
    assert second.broker.asks["asked"] == 3
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
    assert second.broker.asks["asked"] == 1
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
    assert second.broker.asks["late"] == 1
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


def _answers_late(monkeypatch: pytest.MonkeyPatch, broker: Any, delay: float) -> None:
    """`broker` hears the owner's answers (ASKED) `delay` seconds late."""
    heard = broker._owner_frame
    loop = asyncio.get_running_loop()

    def late(kind: str, text: str) -> None:
        if kind == nodeframe.ASKED:
            loop.call_later(delay, heard, kind, text)
        else:
            heard(kind, text)

    monkeypatch.setattr(broker, "_owner_frame", late)


@pytest.mark.parametrize("frame", ["call-accept", "call-request"])
async def test_an_answer_that_comes_too_late_does_not_make_the_change_twice(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    frame: str,
) -> None:
    """The owner answers bob's accept (or his call back to alice, glare) after bob's node stopped waiting: bob's
    node finds it done on Redis and does not do it again (no `not-in-call` or `in-call` for what worked)."""
    _, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    monkeypatch.setattr(redis_broker, "_ASK_WITHIN", 0.3)
    _answers_late(monkeypatch, second.broker, 0.6)
    await second.handle(bob, json.dumps({"type": frame, "to": "alice", "callId": call_id}))
    assert (await alice.wait_for("call-accept"))["callId"] == call_id
    await asyncio.sleep(0.5)  # and the late answer comes
    assert second.broker.asks["late"] == 1
    assert "error" not in bob.types()


async def test_a_reject_with_no_call_id_redone_after_a_late_answer_rejects_no_later_call(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bob rejects alice's call with no callId; the owner rejects it, but bob's node hears nothing from it for a
    second (its subscription was cut) and alice calls again at once: bob's node redoes the reject of the call it
    asked about (over: nothing to do), not of the new one, which goes on ringing."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call1 = await _ring(first, alice, bob)
    monkeypatch.setattr(redis_broker, "_ASK_WITHIN", 0.5)
    heard = second.broker._handle_inbox  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(second.broker, "_handle_inbox", lambda message: loop.call_later(1.0, heard, message))
    reject = asyncio.create_task(second.handle(bob, json.dumps({"type": "call-reject", "to": "alice"})))
    assert (await alice.wait_for("call-ended"))["callId"] == call1
    alice.sent.clear()
    await first.handle(alice, json.dumps({"type": "call-request", "to": "bob"}))
    call2 = (await alice.wait_for("call-ringing", timeout=2.0))["callId"]
    await reject
    await asyncio.sleep(1.2)
    assert call2 != call1
    assert redis_server.command("GET", f"{PREFIX}call:{call2}", db=db) is not None
    assert "call-ended" not in alice.types()
    assert "error" not in bob.types()


async def test_an_owner_that_cannot_reach_redis_leaves_the_change_to_the_asking_node(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alice's node loses its connection to Redis as it carries out bob's accept (nothing written): bob's node,
    which reaches Redis, makes the change; bob is not told `service-unavailable`."""
    _, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    real = first.broker._eval  # type: ignore[attr-defined]
    failed: list[str] = []

    async def cut_once(script: str, *args: Any) -> Any:
        if script == redis_broker._APPLY and not failed:
            failed.append(script)
            raise resp.NotSent("connection lost")
        return await real(script, *args)

    monkeypatch.setattr(first.broker, "_eval", cut_once)
    await second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    assert (await alice.wait_for("call-accept"))["callId"] == call_id
    assert second.broker.asks["redo"] == 1
    assert "error" not in bob.types()


async def test_a_call_whose_caller_left_during_a_change_is_not_kept_owned(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alice leaves while bob's accept is carried out on her node: the accept, applied, does not keep the call
    that her leaving let go of (nobody there would end it); the call ends elsewhere and her node holds nothing."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    real = first.broker._eval  # type: ignore[attr-defined]
    applied = asyncio.Event()

    async def slow(script: str, *args: Any) -> Any:
        result = await real(script, *args)
        if script == redis_broker._APPLY and not applied.is_set():
            applied.set()
            await asyncio.sleep(0.2)  # the reply on its way back
        return result

    monkeypatch.setattr(first.broker, "_eval", slow)
    accept = asyncio.create_task(
        second.handle(bob, json.dumps({"type": "call-accept", "to": "alice", "callId": call_id}))
    )
    await applied.wait()
    await first.leave(alice)
    await accept
    broker: Any = first.broker
    assert (broker._owned, broker._owned_by) == ({}, {})
    second.broker._owners.clear()  # type: ignore[attr-defined]  # (bob's node forgets who owned it)
    await second.handle(bob, json.dumps({"type": "hangup", "to": "alice", "callId": call_id}))
    await bob.wait_for("call-ended")
    assert redis_server.keys(db, f"{PREFIX}call:*") == []
    assert (broker._owned, broker._owned_by) == ({}, {})


async def test_a_call_back_answered_too_late_places_no_new_call_once_it_ended(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bob's call back to alice (glare) is answered by the owner, which answers late; alice hangs up meanwhile:
    bob's node, finding that call over, does not place a new call to alice."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    monkeypatch.setattr(redis_broker, "_ASK_WITHIN", 0.5)
    _answers_late(monkeypatch, second.broker, 1.0)
    request = asyncio.create_task(second.handle(bob, json.dumps({"type": "call-request", "to": "alice"})))
    assert (await alice.wait_for("call-accept"))["callId"] == call_id
    await first.handle(alice, json.dumps({"type": "hangup", "to": "bob", "callId": call_id}))
    await bob.wait_for("call-ended")
    await request
    await asyncio.sleep(0.6)
    assert redis_server.keys(db, f"{PREFIX}call:*") == []
    assert "call-request" not in alice.types()
    assert "error" not in bob.types()


async def test_a_busy_reject_answered_too_late_while_another_device_rings_is_not_refused(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One of bob's two devices says busy (the call rings on the other); the owner's answer comes late: bob's node
    finds that device no longer rung and sends it no `not-in-call` for what worked."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    bob2 = FakeConnection(second, "bob")
    await second.join(bob2)
    call_id = await _ring(first, alice, bob)
    await bob2.wait_for("call-request")
    monkeypatch.setattr(redis_broker, "_ASK_WITHIN", 0.3)
    _answers_late(monkeypatch, second.broker, 0.6)
    busy = {"type": "call-reject", "to": "alice", "callId": call_id, "data": {"reason": "busy"}}
    await second.handle(bob, json.dumps(busy))
    await asyncio.sleep(0.5)
    assert redis_server.command("GET", f"{PREFIX}call:{call_id}", db=db) is not None  # it rings on bob2
    assert "error" not in bob.types()


async def test_a_frame_with_no_call_id_is_not_held_to_a_call_that_ended(
    redis_server: RedisServer,
    hubs: tuple[int, Make],  # noqa: F811
) -> None:
    """Bob's node was told late that alice's node owns a call that is over (frames of two nodes do not keep one
    order); bob places a call to alice and hangs up with no callId: the hangup ends his call, not the old one."""
    db, make = hubs
    first, second, alice, bob = await _alice_and_bob_on_two_nodes(make)
    call_id = await _ring(first, alice, bob)
    broker: Any = second.broker
    owner = broker._owners[bob.cid]
    await first.handle(alice, json.dumps({"type": "hangup", "to": "bob", "callId": call_id}))
    await bob.wait_for("call-ended")
    broker._owner_frame(nodeframe.OWNER, f"{bob.cid} {owner[0]} {owner[1]} {owner[2]}")  # (told late)
    bob.sent.clear()
    await second.handle(bob, json.dumps({"type": "call-request", "to": "alice"}))
    mine = (await bob.wait_for("call-ringing"))["callId"]
    await second.handle(bob, json.dumps({"type": "hangup", "to": "alice"}))
    assert (await bob.wait_for("call-ended"))["callId"] == mine
    assert redis_server.keys(db, f"{PREFIX}call:*") == []
    assert "error" not in bob.types()
