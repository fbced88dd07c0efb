"""Push subscriptions in process memory (`memory://`), as `store.base.PushSubscriptions` describes them. Mixed into
`MemoryHistory`. No method awaits, so every method is atomic on the event loop."""

from __future__ import annotations

import dataclasses

from .base import MAX_PUSH_SUBSCRIPTIONS, PushSubscription


class MemoryPush:
    """`PushSubscriptions` in a dict by endpoint."""

    def __init__(self) -> None:
        self._push: dict[str, PushSubscription] = {}  # endpoint -> subscription (in insertion order)

    def _of(self, user: str) -> list[PushSubscription]:
        return sorted((s for s in self._push.values() if s.user == user), key=lambda s: s.created)

    async def add_push_subscription(self, subscription: PushSubscription) -> None:
        self._push.pop(subscription.endpoint, None)
        for old in self._of(subscription.user):
            if old.device == subscription.device:
                del self._push[old.endpoint]
        self._push[subscription.endpoint] = subscription
        mine = self._of(subscription.user)
        for old in mine[: max(0, len(mine) - MAX_PUSH_SUBSCRIPTIONS)]:
            del self._push[old.endpoint]

    async def push_subscriptions(self, user: str) -> list[PushSubscription]:
        return self._of(user)

    async def delete_push_subscriptions(
        self, user: str, *, endpoint: str | None = None, device: str | None = None
    ) -> int:
        gone = [
            s
            for s in self._of(user)
            if (endpoint is None or s.endpoint == endpoint) and (device is None or s.device == device)
        ]
        for s in gone:
            del self._push[s.endpoint]
        return len(gone)

    async def push_answered(self, endpoint: str, *, gone: bool, now: float) -> None:
        found = self._push.get(endpoint)
        if found is None:
            return
        if gone:
            del self._push[endpoint]
        else:
            self._push[endpoint] = dataclasses.replace(found, last_success=now)
