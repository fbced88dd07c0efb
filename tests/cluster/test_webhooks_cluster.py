"""Webhooks from a cluster: every node has the same endpoint, and each transition of a call is sent once, by the
node that made it, whichever nodes the parties are on."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Client
from tests.webhook_sink import SECRET, running_sink


async def test_two_nodes_send_each_event_of_a_call_once(cluster: Any, connect: Any, uid: Any) -> None:
    """Caller on n0, callee on n1: an answered call gives ringing, answered and ended, a call nobody answers
    ringing and missed; one delivery each, all signed, none repeated by the other node."""
    with running_sink() as sink:
        async with cluster(
            2, PEERCALL_WEBHOOK_URLS=sink.url, PEERCALL_WEBHOOK_SECRET=SECRET, PEERCALL_RING_TIMEOUT="2"
        ) as c:
            alice: Client = await connect(uid("alice"), c.nodes[0])
            bob: Client = await connect(uid("bob"), c.nodes[1])

            await alice.send({"type": "call-request", "to": bob.id})
            answered = (await alice.expect(type="call-ringing"))["callId"]
            await bob.expect(type="call-request")
            await bob.send({"type": "call-accept", "to": alice.id})
            await alice.expect(type="call-accept")
            await bob.send({"type": "hangup", "to": alice.id})
            await alice.expect(type="call-ended")

            await bob.send({"type": "call-request", "to": alice.id})
            missed = (await bob.expect(type="call-ringing"))["callId"]
            await alice.expect(type="call-request")
            await bob.expect(type="call-ended", timeout=5)

            events = await asyncio.to_thread(sink.wait, 3, answered)
            assert sorted(e["type"] for e in events) == ["call.answered", "call.ended", "call.ringing"]
            events = await asyncio.to_thread(sink.wait, 2, missed)
            assert sorted(e["type"] for e in events) == ["call.missed", "call.ringing"]
            await asyncio.to_thread(sink.no_more, 5, None, 2.0)
            assert len(sink.deliveries) == 5 and all(d.verified for d in sink.deliveries)
            assert len({d.headers["webhook-id"] for d in sink.deliveries}) == 5
