"""Web Push across a cluster: two real nodes, a real Redis, one shared store and one VAPID key. A call placed on
one node to someone with no device connected rings by push; their app connects to the other node and answers, or
the notification's Decline reaches the other node's HTTP API; the ring timeout's missed-call push comes once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import OPEN_DOORS, SCALE
from tests.integration.test_push import path, pushes
from tests.integration.test_security import SECRET, token
from tests.integration.test_token_renewal import Peer
from tests.pushservice import PushService, b64url, push_service


@pytest.fixture
def service() -> Iterator[PushService]:
    with push_service() as svc:
        yield svc


def settings(service: PushService) -> dict[str, str]:
    return {
        "PEERCALL_AUTH": "token",
        **OPEN_DOORS,
        "PEERCALL_AUTH_SECRET": SECRET,
        "PEERCALL_PUSH": "true",
        "PEERCALL_PUSH_SERVICES": service.origin,
        "PEERCALL_VAPID_PRIVATE_KEY": b64url(os.urandom(32)),  # raw P-256 private key (any 32 bytes < n will do)
        "PEERCALL_VAPID_SUBJECT": "mailto:ops@example.org",
        "PEERCALL_RING_TIMEOUT": "3",
    }


async def test_a_pushed_call_is_answered_on_another_node_declined_through_it_and_missed_once(
    cluster: Any, service: PushService, uid: Any
) -> None:
    """alice on n1 calls bob, who has no device: his browser is pushed; his app connects to n0 and answers. A
    second call is declined through n0's API: alice, on n1, hears `rejected`. A third rings out: one missed push.
    Each end of a call's ringing pushes once: answered, declined, missed."""
    async with cluster(2, **settings(service)) as c:
        alice, bob = uid("alice"), uid("bob")
        sub = service.subscriber()
        async with httpx.AsyncClient(base_url=c.nodes[0].http, timeout=10 * SCALE) as n0:
            r = await n0.post(
                "/api/push/subscriptions",
                json={"device": "phone", "subscription": sub.json()},
                headers={"authorization": f"Bearer {token(bob)}"},
            )
            assert r.status_code == 201, r.text
            keys = set()
            for node in c.nodes:
                async with httpx.AsyncClient(base_url=node.http) as http:
                    keys.add((await http.get("/api/push")).json()["applicationServerKey"])
            assert len(keys) == 1  # one key for the cluster: a browser subscribed on one node is pushed by any

            caller = await Peer.connect(c.nodes[1], alice, "a1", ttl=120)
            await caller.send({"type": "call-request", "to": bob})
            first = (await caller.expect("call-ringing"))["callId"]
            (ring,) = await pushes(service, sub, 1)
            assert (ring["type"], ring["callId"]) == ("incoming-call", first)
            callee = await Peer.connect(c.nodes[0], bob, "b1", ttl=120)
            await callee.expect("call-request", callId=first)
            await callee.send({"type": "call-accept", "to": alice, "callId": first})
            await caller.expect("call-accept", callId=first)
            await callee.send({"type": "hangup", "to": alice, "callId": first})
            await caller.expect("call-ended", callId=first)
            await callee.ws.close()
            await caller.expect("presence", id=bob, status="offline")

            await caller.send({"type": "call-request", "to": bob})
            second = (await caller.expect("call-ringing"))["callId"]
            got = await pushes(service, sub, 3)
            # in either order: n0's first push (answered) may be overtaken by n1's second ring (pushes are sent off the
            # hot path, and a node's first one loads the Web Push library); each names its call
            assert sorted((p["type"], p["callId"], p.get("outcome") or "") for p in got[1:3]) == sorted(
                [
                    ("call-ended", first, "answered"),  # answered on n0: bob's notifications go
                    ("incoming-call", second, ""),
                ]
            )
            ring = next(p for p in got[1:3] if p["type"] == "incoming-call")
            declined = await n0.post(f"/api/calls/{second}/decline", json={"decline": ring["decline"]})
            assert declined.status_code == 204
            ended = await caller.expect("call-ended", callId=second)
            assert ended["outcome"] == "rejected"

            await caller.send({"type": "call-request", "to": bob})
            third = (await caller.expect("call-ringing"))["callId"]
            # Meanwhile carol, on n0, calls bob too: his call rings (by push), so he is busy on that node as well
            # (not `unavailable`, as someone offline would be).
            other = await Peer.connect(c.nodes[0], uid("carol"), "c1", ttl=120)
            await other.send({"type": "call-request", "to": bob})
            busy = await other.expect("call-ended")
            assert (busy["outcome"], busy["reason"]) == ("busy", "user-busy")
            ended = await caller.expect("call-ended", timeout=10 * SCALE, callId=third)
            assert ended["outcome"] == "missed"
            got = await pushes(service, sub, 6)
            # (pushes are sent off the hot path, by several workers: their order may differ from the calls')
            assert sorted((p["type"], p["callId"]) for p in got[3:]) == sorted(
                [
                    ("call-ended", second),  # declined through n0
                    ("incoming-call", third),
                    ("missed-call", third),
                ]
            )
            assert len([r for r in service.received if r.path == path(sub)]) == 6  # each once, on two nodes
            await other.ws.close()
            await caller.ws.close()
