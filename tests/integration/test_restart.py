"""A restart of a single node (`memory://`) ends no call: the calls under way are kept in the history store as the
server stops and taken over as it starts, and their parties resume them as after any reconnect."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import AsyncExitStack
from pathlib import Path

import websockets

from tests.conftest import TIMEOUT, Client, ServerProcess, run_server


async def device(stack: AsyncExitStack, srv: ServerProcess, user: str, device_id: str) -> Client:
    """A client of `user` on device `device_id` (so that a reconnect is matched to its call), past its welcome."""
    ws = await websockets.connect(f"{srv.ws}?id={user}&device={device_id}", open_timeout=TIMEOUT)
    stack.push_async_callback(ws.close)
    client = Client(ws, user)
    client.welcome = await client.expect(type="welcome")
    return client


async def answered_call(alice: Client, bob: Client) -> str:
    await alice.send({"type": "call-request", "to": bob.id})
    call_id = (await bob.expect(type="call-request"))["callId"]
    await bob.send({"type": "call-accept", "to": alice.id, "callId": call_id})
    await alice.expect(type="call-accept", callId=call_id)
    return str(call_id)


async def call_then_stop(stack: AsyncExitStack, env: dict[str, str]) -> tuple[str, str]:
    """Alice calls bob, he answers, and the server stops (SIGTERM): the call's id, and the server's log."""
    with run_server(**env) as first:
        alice = await device(stack, first, "alice", "alice-laptop")
        bob = await device(stack, first, "bob", "bob-phone")
        call_id = await answered_call(alice, bob)
        await asyncio.to_thread(first.stop)  # (the clients answer its close handshakes meanwhile)
        return call_id, first.log()


def history(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT call_id, outcome, reason FROM calls").fetchall()


async def test_an_answered_call_goes_on_across_a_restart(tmp_path: Path) -> None:
    """Alice and bob are in a call; the server restarts (SIGTERM, then a new process on the same database). Both
    come back on their devices and get `call-resumed` (answered, their roles, each other), their frames reach each
    other again, and the hang-up ends the call for both: in the history once, answered, hung up."""
    db = tmp_path / "history.sqlite3"
    env = {"PEERCALL_DATABASE_URL": f"sqlite:///{db}", "PEERCALL_RESUME_GRACE": "20"}
    async with AsyncExitStack() as stack:
        call_id, log = await call_then_stop(stack, env)
        assert "kept 1 call(s) under way" in log, log
        with run_server(**env) as second:
            assert "took over 1 call(s) under way" in second.log(), second.log()
            alice = await device(stack, second, "alice", "alice-laptop")
            resumed = await alice.expect(type="call-resumed")
            assert (resumed["callId"], resumed["state"], resumed["role"], resumed["peer"]) == (
                call_id,
                "answered",
                "caller",
                "bob",
            )
            bob = await device(stack, second, "bob", "bob-phone")
            resumed = await bob.expect(type="call-resumed")
            assert (resumed["callId"], resumed["state"], resumed["role"], resumed["peer"]) == (
                call_id,
                "answered",
                "callee",
                "alice",
            )
            await alice.send({"type": "offer", "to": "bob", "data": {"type": "offer", "sdp": "v=0\r\n"}})
            assert (await bob.expect(type="offer"))["callId"] == call_id
            await bob.send({"type": "hangup", "to": "alice", "callId": call_id})
            ended = await alice.expect(type="call-ended")
            assert (ended["callId"], ended["outcome"], ended["reason"]) == (call_id, "answered", "user-hangup")
            await bob.expect(type="call-ended", callId=call_id)
            await asyncio.sleep(0.3)  # (the history writer's batch)
    assert history(db) == [(call_id, "answered", "user-hangup")]


async def test_a_party_that_does_not_come_back_ends_the_call_after_the_grace(tmp_path: Path) -> None:
    """Only alice comes back after the restart: the call ends `peer-lost` when bob's grace (counted from the stop)
    runs out, alice is told, and the call is in the history once; a second restart has nothing to take over."""
    db = tmp_path / "history.sqlite3"
    # (a grace that outlasts the second start on a loaded machine: with 3 s, alice once came back too late)
    env = {"PEERCALL_DATABASE_URL": f"sqlite:///{db}", "PEERCALL_RESUME_GRACE": "8"}
    async with AsyncExitStack() as stack:
        call_id, _ = await call_then_stop(stack, env)
        with run_server(**env) as second:
            alice = await device(stack, second, "alice", "alice-laptop")
            await alice.expect(type="call-resumed", callId=call_id)
            ended = await alice.expect(type="call-ended", timeout=15)
            assert (ended["callId"], ended["outcome"], ended["reason"]) == (call_id, "answered", "peer-lost")
        with run_server(**env) as third:
            await asyncio.to_thread(third.stop)
            assert "took over" not in third.log()
    assert history(db) == [(call_id, "answered", "peer-lost")]


async def test_a_call_summary_for_a_call_that_ended_just_before_a_restart_is_kept(tmp_path: Path) -> None:
    """Alice hangs up and the server restarts before her page sends the call's summary (as a deploy may): she
    sends it on the next run, which takes it (no `not-in-call`) and keeps it with the call; mallory still may not."""
    db = tmp_path / "history.sqlite3"
    env = {"PEERCALL_DATABASE_URL": f"sqlite:///{db}"}
    async with AsyncExitStack() as stack:
        with run_server(**env) as first:
            alice = await device(stack, first, "alice", "alice-laptop")
            bob = await device(stack, first, "bob", "bob-phone")
            call_id = await answered_call(alice, bob)
            await alice.send({"type": "hangup", "to": "bob", "callId": call_id})
            await bob.expect(type="call-ended", callId=call_id)
            await asyncio.to_thread(first.stop)
        with run_server(**env) as second:
            alice = await device(stack, second, "alice", "alice-laptop")
            mallory = await device(stack, second, "mallory", "mallory-tab")
            await alice.send({"type": "call-summary", "callId": call_id, "data": {"mos": 4.3, "path": "direct"}})
            await mallory.send({"type": "call-summary", "callId": call_id, "data": {"mos": 1}})
            assert (await mallory.expect(type="error"))["code"] == "not-in-call"
            await alice.nothing(type="error", within=0.5)
        with sqlite3.connect(db) as con:
            (quality,) = con.execute("SELECT quality FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        assert quality is not None and "4.3" in quality, quality
