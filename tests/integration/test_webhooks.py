"""Webhooks from a real `peercall serve` to a real HTTP endpoint on loopback (tests/webhook_sink.py), which verifies
each one with the stock Standard Webhooks library: the events of a call, signed, once each, and retried."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from peercall.core.records import CallRecord, Outcome, Reason
from peercall.core.switchboard import Record
from peercall.hub.webhooks import Webhooks
from tests.conftest import Client, ServerProcess, run_server
from tests.webhook_sink import SECRET, Sink, running_sink

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 192.0.2.7\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


@pytest.fixture(scope="module")
def hooked() -> Iterator[tuple[ServerProcess, Sink]]:
    """A server whose webhooks go to a sink of its own; calls ring for 2 s."""
    with (
        running_sink() as sink,
        run_server(PEERCALL_WEBHOOK_URLS=sink.url, PEERCALL_WEBHOOK_SECRET=SECRET, PEERCALL_RING_TIMEOUT="2") as srv,
    ):
        yield srv, sink


def assert_signed(events: list[dict[str, Any]], sink: Sink) -> None:
    """Every delivery of these events verified, and its `webhook-id` is the event's id."""
    ids = {e["id"] for e in events}
    for delivery in sink.deliveries:
        if delivery.event["id"] in ids:
            assert delivery.verified, delivery
            assert delivery.headers["webhook-id"] == delivery.event["id"]


async def test_a_call_answered_then_hung_up_sends_ringing_answered_ended(
    hooked: tuple[ServerProcess, Sink], connect: Any, uid: Any
) -> None:
    """Three events, in order, each once and signed; `call.ended` has the outcome, reason and duration, and no
    event carries SDP, candidates or addresses."""
    srv, sink = hooked
    alice: Client = await connect(uid("alice"), srv)
    bob: Client = await connect(uid("bob"), srv)
    await alice.send({"type": "call-request", "to": bob.id})
    call_id = (await alice.expect(type="call-ringing"))["callId"]
    await bob.expect(type="call-request")
    await bob.send({"type": "call-accept", "to": alice.id})
    await alice.expect(type="call-accept")
    await alice.send({"type": "offer", "to": bob.id, "data": OFFER})
    await bob.expect(type="offer")
    await bob.send({"type": "candidate", "to": alice.id, "data": CANDIDATE})
    await alice.expect(type="candidate")
    await alice.send({"type": "hangup", "to": bob.id})
    await bob.expect(type="call-ended")

    events = await asyncio.to_thread(sink.wait, 3, call_id)
    events.sort(key=lambda e: e["timestamp"])  # each is a delivery of its own: they may arrive in any order
    assert [e["type"] for e in events] == ["call.ringing", "call.answered", "call.ended"]
    assert [e["id"] for e in events] == [f"{call_id}-ringing", f"{call_id}-answered", f"{call_id}-ended"]
    ended = events[2]["data"]
    assert (ended["caller"], ended["callee"], ended["outcome"], ended["reason"]) == (
        alice.id,
        bob.id,
        "answered",
        "user-hangup",
    )
    assert ended["hungUpBy"] == alice.id
    assert 0 <= ended["duration"] < 10 and ended["answeredAt"] >= ended["ringingAt"]
    assert_signed(events, sink)
    for delivery in sink.deliveries:
        text = str(delivery.event)
        assert "192.0.2.7" not in text and "v=0" not in text and "candidate" not in text
    await asyncio.to_thread(sink.no_more, 3, call_id)


async def test_a_call_nobody_answers_sends_ringing_then_missed(
    hooked: tuple[ServerProcess, Sink], connect: Any, uid: Any
) -> None:
    """Rang until the ring timeout: `call.ringing`, then `call.missed` (missed, invite-timeout), once each."""
    srv, sink = hooked
    alice: Client = await connect(uid("alice"), srv)
    bob: Client = await connect(uid("bob"), srv)
    await alice.send({"type": "call-request", "to": bob.id})
    call_id = (await alice.expect(type="call-ringing"))["callId"]
    await alice.expect(type="call-ended", timeout=5)

    events = await asyncio.to_thread(sink.wait, 2, call_id)
    events.sort(key=lambda e: e["timestamp"])
    assert [e["type"] for e in events] == ["call.ringing", "call.missed"]
    missed = events[1]["data"]
    assert (missed["caller"], missed["callee"], missed["outcome"], missed["reason"]) == (
        alice.id,
        bob.id,
        "missed",
        "invite-timeout",
    )
    assert missed["answeredAt"] is None and missed["duration"] is None
    assert_signed(events, sink)
    await asyncio.to_thread(sink.no_more, 2, call_id)


async def test_a_delivery_answered_500_is_retried_until_2xx(connect: Any, uid: Any) -> None:
    """The endpoint fails once: the same event (same id, fresh signature) comes again and is taken; with
    PEERCALL_WEBHOOK_EVENTS=call.missed, an answered call sends nothing. /metrics counts the retry."""
    with (
        running_sink() as sink,
        run_server(
            PEERCALL_WEBHOOK_URLS=sink.url, PEERCALL_WEBHOOK_SECRET=SECRET, PEERCALL_WEBHOOK_EVENTS="call.missed"
        ) as srv,
    ):
        alice: Client = await connect(uid("alice"), srv)
        bob: Client = await connect(uid("bob"), srv)
        await alice.send({"type": "call-request", "to": bob.id})
        answered_id = (await alice.expect(type="call-ringing"))["callId"]
        await bob.send({"type": "call-accept", "to": alice.id})
        await alice.expect(type="call-accept")
        await bob.send({"type": "hangup", "to": alice.id})
        await alice.expect(type="call-ended")

        sink.answers = [500]
        nobody = uid("nobody")
        await alice.send({"type": "call-request", "to": nobody})
        ended = await alice.expect(type="call-ended")
        assert ended["outcome"] == "unavailable"
        (event,) = await asyncio.to_thread(sink.wait, 1, ended["callId"], 10.0)
        assert (event["type"], event["data"]["callee"], event["data"]["outcome"]) == (
            "call.missed",
            nobody,
            "unavailable",
        )
        tries = [d for d in sink.deliveries if d.event["id"] == event["id"]]
        assert [d.status for d in tries] == [500, 204]
        assert all(d.verified for d in tries)
        assert tries[0].headers["webhook-id"] == tries[1].headers["webhook-id"] == f"{ended['callId']}-missed"
        assert await asyncio.to_thread(srv.wait_log, "failed (HTTP 500); attempt 2 in")

        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{srv.http}/metrics")).text
        assert 'peercall_webhooks_total{result="retried"} 1.0' in metrics
        assert 'peercall_webhooks_total{result="delivered"} 1.0' in metrics
        assert sink.events(answered_id) == []


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"PEERCALL_WEBHOOK_URLS": "https://hooks.example.org/peercall"},
            "PEERCALL_WEBHOOK_URLS needs PEERCALL_WEBHOOK_SECRET",
        ),
        (
            {
                "PEERCALL_WEBHOOK_URLS": "https://hooks.example.org/peercall",
                "PEERCALL_WEBHOOK_SECRET": "my-password-is-long-enough-surely",
            },
            "PEERCALL_WEBHOOK_SECRET: expected whsec_",
        ),
        (
            {
                "PEERCALL_WEBHOOK_URLS": "https://hooks.example.org/peercall",
                "PEERCALL_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"tiny-key-of-17-by").decode(),
            },
            "PEERCALL_WEBHOOK_SECRET: 17 bytes after whsec_",
        ),
    ],
)
def test_webhooks_without_a_good_secret_stop_the_server_at_start(env: dict[str, str], said: str) -> None:
    """Exit status 2 and a sentence naming the setting; the secret given is never printed."""
    out = subprocess.run(
        [sys.executable, "-m", "peercall", "serve"],
        env={**os.environ, "PEERCALL_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert said in out.stderr
    secret = env.get("PEERCALL_WEBHOOK_SECRET")
    if secret is not None:
        assert secret not in out.stderr and secret not in out.stdout


# ---- the delivery itself (hub/webhooks.py `Webhooks`), against the loopback endpoint, without a server


def missed_call(call_id: str) -> Record:
    return Record(
        CallRecord(
            call_id, "alice", "bob", "d1", None, 1000.0, None, 1045.0, Outcome.MISSED, Reason.INVITE_TIMEOUT, None
        )
    )


KEY = base64.b64decode(SECRET.removeprefix("whsec_"))


async def test_410_stops_the_retries_and_a_failing_endpoint_is_given_up_in_time(caplog: Any) -> None:
    """410 Gone: one attempt. Always 500: retried with growing delays, then given up once `retry_for` would pass,
    with a warning."""
    with running_sink() as sink:
        hooks = Webhooks([sink.url], [KEY], retry_for=1.5, first_delay=0.1)
        sink.answers = [410]
        hooks.submit(missed_call("c410"))

        def c410_answered() -> bool:
            with sink.changed:
                return sink.changed.wait_for(lambda: any(d.event["id"] == "c410-missed" for d in sink.deliveries), 5)

        # The sink answers POSTs in their order of arrival and deliveries run side by side: submitted at once, c500's
        # first attempt sometimes took the 410 meant for c410 (2 runs in 3 on a loaded machine).
        assert await asyncio.to_thread(c410_answered), "c410 was never delivered"
        sink.answers += [500] * 100
        hooks.submit(missed_call("c500"))
        started = time.monotonic()
        while hooks.pending():
            assert time.monotonic() - started < 5, "a delivery outlived retry_for"
            await asyncio.sleep(0.05)
        await hooks.close()
    assert [d.status for d in sink.deliveries if d.event["id"] == "c410-missed"] == [410]
    failed = [d for d in sink.deliveries if d.event["id"] == "c500-missed"]
    assert 3 <= len(failed) <= 8 and all(d.verified for d in failed)
    assert hooks.counts["gave-up"] == 2 and hooks.counts["delivered"] == 0
    assert hooks.counts["retried"] == len(failed) - 1
    assert any("c500-missed" in r.message and "gave up after" in r.message for r in caplog.records)


async def test_an_endpoint_that_never_answers_holds_nobody_and_a_full_queue_drops(caplog: Any) -> None:
    """`submit` returns at once even when the endpoint hangs; past the queue's bound events are dropped, counted and
    logged once; at shutdown the deliveries left are cancelled within the time given, and the log says so."""
    with socket.socket() as hole:  # accepts connections (the kernel's backlog) and never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/"
        hooks = Webhooks([url], [KEY], queue=2, timeout=30.0)
        started = time.monotonic()
        for n in range(5):
            hooks.submit(missed_call(f"c{n}"))
        assert time.monotonic() - started < 0.1
        assert (hooks.pending(), hooks.counts["dropped"]) == (2, 3)
        drops = [r for r in caplog.records if "webhook queue full" in r.message]
        assert len(drops) == 1 and drops[0].levelname == "WARNING"
        await asyncio.sleep(0.2)  # the two attempts are under way
        started = time.monotonic()
        await hooks.close(within=0.3)
        assert time.monotonic() - started < 2.0
        assert hooks.pending() == 0
        assert any("2 webhook deliveries were not made before shutdown" in r.message for r in caplog.records)
