"""The push-subscription contract (store/base.py `PushSubscriptions`) on every backend: one per endpoint and per
device, bounded per user, deleted by their owner only, and dropped when the push service says they are gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest

from peercall.store import Store, open_history
from peercall.store.base import MAX_PUSH_SUBSCRIPTIONS, PushSubscription

NOW = 1_800_000_000.0


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    s = cast(Store, open_history(url))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def sub(user: str, device: str, n: int, at: float = NOW) -> PushSubscription:
    return PushSubscription(user, device, f"https://push.example/{user}/{n}", f"key{n}", f"auth{n}", at)


async def test_subscriptions_are_kept_per_device_and_listed_oldest_first(store: Store) -> None:
    """Two devices, two subscriptions; a device's new subscription replaces its old one."""
    await store.add_push_subscription(sub("bo", "phone", 1, NOW))
    await store.add_push_subscription(sub("bo", "laptop", 2, NOW + 1))
    await store.add_push_subscription(sub("ann", "phone", 3, NOW + 2))
    assert [s.endpoint for s in await store.push_subscriptions("bo")] == [
        "https://push.example/bo/1",
        "https://push.example/bo/2",
    ]
    await store.add_push_subscription(sub("bo", "phone", 4, NOW + 3))
    got = await store.push_subscriptions("bo")
    assert [(s.device, s.endpoint) for s in got] == [
        ("laptop", "https://push.example/bo/2"),
        ("phone", "https://push.example/bo/4"),
    ]
    assert got[1] == sub("bo", "phone", 4, NOW + 3)
    assert await store.push_subscriptions("nobody") == []


async def test_an_endpoint_belongs_to_one_user(store: Store) -> None:
    """The same endpoint subscribed by another user (someone else signed in on that browser) moves to them."""
    first = sub("bo", "phone", 1)
    await store.add_push_subscription(first)
    await store.add_push_subscription(PushSubscription("ann", "tablet", first.endpoint, "k", "a", NOW + 1))
    assert await store.push_subscriptions("bo") == []
    assert [s.user for s in await store.push_subscriptions("ann")] == ["ann"]


async def test_a_user_keeps_at_most_the_newest_subscriptions(store: Store) -> None:
    """Beyond MAX_PUSH_SUBSCRIPTIONS the oldest go."""
    for n in range(MAX_PUSH_SUBSCRIPTIONS + 3):
        await store.add_push_subscription(sub("bo", f"d{n}", n, NOW + n))
    kept = await store.push_subscriptions("bo")
    assert [s.device for s in kept] == [f"d{n}" for n in range(3, MAX_PUSH_SUBSCRIPTIONS + 3)]


async def test_only_the_owner_deletes_and_by_endpoint_device_or_all(store: Store) -> None:
    """Deleting names the owner: another user's endpoint is never touched."""
    for n, device in enumerate(["a", "b", "c"]):
        await store.add_push_subscription(sub("bo", device, n, NOW + n))
    await store.add_push_subscription(sub("ann", "a", 9))
    assert await store.delete_push_subscriptions("ann", endpoint="https://push.example/bo/0") == 0
    assert await store.delete_push_subscriptions("bo", endpoint="https://push.example/bo/0") == 1
    assert await store.delete_push_subscriptions("bo", device="b") == 1
    assert [s.device for s in await store.push_subscriptions("bo")] == ["c"]
    assert await store.delete_push_subscriptions("bo") == 1
    assert await store.push_subscriptions("bo") == []
    assert len(await store.push_subscriptions("ann")) == 1


async def test_the_push_services_answer_records_success_or_drops_the_subscription(store: Store) -> None:
    """Accepted: last_success is set. Gone (404/410): the subscription is deleted. Unknown endpoints: nothing."""
    await store.add_push_subscription(sub("bo", "phone", 1))
    await store.add_push_subscription(sub("bo", "laptop", 2, NOW + 1))
    await store.push_answered("https://push.example/bo/1", gone=False, now=NOW + 5)
    await store.push_answered("https://push.example/bo/2", gone=True, now=NOW + 5)
    await store.push_answered("https://push.example/nobody", gone=True, now=NOW + 5)
    (left,) = await store.push_subscriptions("bo")
    assert (left.device, left.last_success) == ("phone", NOW + 5)


async def test_subscriptions_outlive_the_store_instance(durable_url: str) -> None:
    """Kept in the database: another process (another node) sees them."""
    one = cast(Store, open_history(durable_url))
    await one.open()
    await one.add_push_subscription(sub("bo", "phone", 1))
    await one.close()
    two = cast(Store, open_history(durable_url))
    await two.open()
    try:
        assert [s.device for s in await two.push_subscriptions("bo")] == ["phone"]
    finally:
        await two.close()
