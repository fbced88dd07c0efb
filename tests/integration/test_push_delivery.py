"""The push service's HTTP side against real loopback sockets: a push that is accepted, a push service that cannot
be reached, and one that never answers. Each ends counted, logged and within the push timeout: a call never
waits on a push service."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from peercall.core.switchboard import Push
from peercall.hub.push import PushService, VapidKey
from peercall.store.base import PushSubscription
from peercall.store.memory import MemoryHistory
from tests.conftest import SCALE
from tests.pushservice import Subscriber, push_service

TIMEOUT = 0.5  # the push timeout of these services (the server's default is 10 s)


def service(origin: str) -> tuple[PushService, MemoryHistory]:
    store = MemoryHistory()
    key = VapidKey(ec.generate_private_key(ec.SECP256R1()))
    return PushService(store, key, subject="mailto:ops@example.org", services=[origin], timeout=TIMEOUT), store


async def subscribe(store: MemoryHistory, subscriber: Subscriber) -> None:
    keys = subscriber.json()["keys"]
    await store.add_push_subscription(
        PushSubscription("bob", "tab-1", subscriber.endpoint, keys["p256dh"], keys["auth"], time.time())
    )


def ring() -> Push:
    now = time.time()
    return Push("bob", "call", "c0ffee", "alice", now, now + 45)


@pytest.fixture
def silent() -> Iterator[str]:
    """A push service that accepts connections and never answers: its origin."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def test_a_push_is_posted_encrypted_and_counted() -> None:
    with push_service() as receiver:
        pushes, store = service(receiver.origin)
        subscriber = receiver.subscriber()
        await subscribe(store, subscriber)
        pushes.push(ring())
        await asyncio.wait_for(pushes.idle(), 30 * SCALE)
        await pushes.stop()
        (got,) = await asyncio.to_thread(receiver.wait, subscriber.endpoint.removeprefix(receiver.origin))
        assert subscriber.decrypt(got)["callId"] == "c0ffee"
        assert got.headers["urgency"] == "high" and got.headers["topic"] == "c0ffee"
        assert pushes.sent["accepted"] == 1


async def test_an_unreachable_push_service_fails_the_push_at_once(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:  # a port nothing listens on
        taken.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{taken.getsockname()[1]}"
        pushes, store = service(origin)
        await subscribe(store, Subscriber(f"{origin}/push/x"))
        started = time.monotonic()
        pushes.push(ring())
        await asyncio.wait_for(pushes.idle(), 5 * SCALE)
        await pushes.stop()
    assert pushes.sent == {"failed": 1}
    assert time.monotonic() - started < TIMEOUT * 4 * SCALE
    assert "push to 127.0.0.1" in caplog.text and "failed" in caplog.text


async def test_a_push_service_that_never_answers_fails_the_push_at_its_timeout(silent: str) -> None:
    pushes, store = service(silent)
    await subscribe(store, Subscriber(f"{silent}/push/x"))
    started = time.monotonic()
    pushes.push(ring())
    await asyncio.wait_for(pushes.idle(), 5 * SCALE)
    took = time.monotonic() - started
    await pushes.stop()
    assert pushes.sent == {"failed": 1}
    assert TIMEOUT * 0.9 <= took < TIMEOUT * 4 * SCALE, f"the push failed after {took:.2f} s"
