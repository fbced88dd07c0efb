"""Web Push on one node: who can be rung by push, the pushes themselves, and the decline capability.

The switchboard decides when a call rings a closed app (core/switchboard.py `Push`); this service performs it off
the hot path: it reads the callee's subscriptions from the store (shared by every node), encrypts a small payload
for each (RFC 8291, aes128gcm, with `pywebpush`'s encoder) and POSTs it to the push service with a VAPID
signature (RFC 8292, `py-vapid`). A push service that answers 404 or 410 has dropped the subscription: so does the
store. At most `concurrency` pushes are under way at once, each bounded by `timeout`; at most `_QUEUED` wait, and
the rest are dropped (and counted), so that a slow push service never holds a call.

The payload says only what the notification needs (docs/push.md): no SDP, no address.

Must not import: the broker package, Redis, or anything of server/.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02  # type: ignore[import-untyped]

from ..core.switchboard import Push
from ..store.base import PushSubscription, PushSubscriptions
from .deadline import within

log = logging.getLogger("peercall.push")

_CACHED: Final = 20_000  # users whose reachability is kept in memory (one node); the oldest go first
_QUEUED: Final = 1000  # pushes waiting for a sender; beyond it, new ones are dropped
_VAPID_TTL: Final = 12 * 3600  # seconds a VAPID signature is valid (RFC 8292: at most 24 h)
DECLINE_GRACE: Final = 60.0  # seconds a decline capability outlives its call's ring deadline
INCOMING, MISSED, ENDED = "incoming-call", "missed-call", "call-ended"  # the payload's `type`
_TYPES: Final = {"call": INCOMING, "missed": MISSED, "ended": ENDED}  # by the `Push` effect's kind
_ENDED_TTL: Final = 600  # seconds a push saying the call stopped ringing may wait for a browser that is offline

DEFAULT_SERVICES: Final = (
    "https://fcm.googleapis.com",  # Chrome, Edge on Android, Chromium-based browsers
    "https://updates.push.services.mozilla.com",  # Firefox
    "https://*.push.apple.com",  # Safari, iOS home-screen apps
    "https://*.notify.windows.com",  # Edge on Windows (WNS)
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def unb64url(text: str) -> bytes:
    """base64url, padded or not, to bytes. Raises ValueError."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def endpoint_allowed(endpoint: str, services: list[str] | tuple[str, ...]) -> bool:
    """Whether the server may POST to `endpoint`: its scheme, host and port match one of `services`
    (`scheme://host[:port]`, the host may start with `*.` for any name under it). Anything else would let a user
    make the server send requests to wherever they like."""
    try:
        url = urllib.parse.urlsplit(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return False
    host = (url.hostname or "").lower()
    if not host or url.username is not None or url.password is not None:
        return False
    for service in services:
        allowed = urllib.parse.urlsplit(service)
        allowed_port = allowed.port or (443 if allowed.scheme == "https" else 80)
        pattern = (allowed.hostname or "").lower()
        if allowed.scheme != url.scheme or allowed_port != port:
            continue
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


class VapidKey:
    """The server's VAPID key pair (RFC 8292): the private key signs each push, the public key is the
    `applicationServerKey` browsers subscribe with. The decline capability's HMAC key is derived from it, so
    that every node sharing the key (as a cluster must) accepts every node's capabilities."""

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        self._vapid = Vapid02(private)
        raw = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key = b64url(raw)
        secret = private.private_numbers().private_value.to_bytes(32, "big")
        self._mac_key = hashlib.sha256(b"peercall push decline capability\0" + secret).digest()
        self._signed: dict[str, tuple[float, dict[str, str]]] = {}

    def headers(self, audience: str, subject: str, now: float) -> dict[str, str]:
        """The `Authorization` header for a push to the origin `audience`, signed anew every hour or so."""
        cached = self._signed.get(audience)
        if cached is not None and cached[0] - now > _VAPID_TTL / 2:
            return cached[1]
        expires = int(now) + _VAPID_TTL
        headers: dict[str, str] = self._vapid.sign({"sub": subject, "aud": audience, "exp": expires})
        if len(self._signed) > 100:
            self._signed.clear()
        self._signed[audience] = (expires, headers)
        return headers

    def decline_token(self, call_id: str, callee: str, expires: float) -> str:
        """A capability to decline call `call_id` on `callee`'s behalf until `expires` (Unix seconds)."""
        body = b64url(json.dumps([call_id, callee, math.ceil(expires)], separators=(",", ":")).encode())
        return f"{body}.{b64url(hmac.new(self._mac_key, body.encode(), 'sha256').digest())}"

    def check_decline(self, token: object, call_id: str, now: float) -> str:
        """The callee a decline capability for `call_id` was made for.

        Raises:
            ValueError: it is not one this key made for this call, or it has expired.
        """
        if not isinstance(token, str) or len(token) > 512 or token.count(".") != 1:
            raise ValueError("not a decline capability")
        body, _, mac = token.partition(".")
        expected = b64url(hmac.new(self._mac_key, body.encode(), "sha256").digest())
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            raise ValueError("not a decline capability of this server")
        try:
            named, callee, expires = json.loads(unb64url(body))
        except (ValueError, TypeError) as exc:
            raise ValueError("not a decline capability") from exc
        if named != call_id or not isinstance(callee, str):
            raise ValueError("this capability is for another call")
        if not isinstance(expires, int) or expires < now:
            raise ValueError("this capability has expired")
        return callee


class PushService:
    """The Web Push service of one node."""

    def __init__(
        self,
        store: PushSubscriptions,
        key: VapidKey,
        *,
        subject: str,
        services: list[str] | tuple[str, ...] = DEFAULT_SERVICES,
        names: Callable[[str], Awaitable[str | None]] | None = None,
        clock: Callable[[], float] = time.time,
        shared: bool = False,
        concurrency: int = 8,
        timeout: float = 10.0,
        store_timeout: float = 5.0,
    ) -> None:
        """`names`: a user's display name, if the server knows one (accounts mode). `shared`: the store is shared
        with other nodes, whose subscription changes this node's cache would not see: reachability is then read
        from the store each time. `store_timeout`: seconds that read may take (a call-request waits for it)."""
        self.store = store
        self.key = key
        self.subject = subject
        self.services = services
        self.names = names
        self.clock = clock
        self.shared = shared
        self.timeout = timeout
        self.store_timeout = store_timeout
        self.sent = collections.Counter[
            str
        ]()  # outcomes of pushes, for logs and tests: accepted, gone, failed, dropped
        self._reachable: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self._queue: asyncio.Queue[Push] = asyncio.Queue(_QUEUED)
        self._concurrency = concurrency
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    # --------------------------------------------------------------------------------- reachability

    async def reachable(self, user: str) -> bool:
        """Whether `user` has a push subscription (cached on one node; read from the store in a cluster). A store
        that cannot be read says no: the call goes on as to someone offline."""
        if not self.shared and (cached := self._reachable.get(user)) is not None:
            self._reachable.move_to_end(user)
            return cached
        try:
            found = bool(await within(self.store.push_subscriptions(user), self.store_timeout, self.store))
        except Exception as exc:
            log.warning("could not read the push subscriptions of %s: %s", user, exc)
            return False
        self._reachable[user] = found
        if len(self._reachable) > _CACHED:
            self._reachable.popitem(last=False)
        return found

    def forget(self, user: str) -> None:
        """`user` subscribed or unsubscribed (on this node): read their subscriptions again when next needed."""
        self._reachable.pop(user, None)

    async def subscribe(self, subscription: PushSubscription) -> None:
        await self.store.add_push_subscription(subscription)
        self.forget(subscription.user)

    async def unsubscribe(self, user: str, *, endpoint: str | None = None, device: str | None = None) -> int:
        deleted = await self.store.delete_push_subscriptions(user, endpoint=endpoint, device=device)
        self.forget(user)
        return deleted

    # ------------------------------------------------------------------------------------- pushing

    def push(self, effect: Push) -> None:
        """Queue a push (the hub's `Push` effect); never waits. Dropped, and counted, when the queue is full."""
        if len(self._workers) < self._concurrency:
            self._workers.append(asyncio.ensure_future(self._work()))
        try:
            self._queue.put_nowait(effect)
        except asyncio.QueueFull:
            self.sent["dropped"] += 1
            log.warning(
                "push queue full: the %s push of call %s to %s is dropped", effect.kind, effect.call_id, effect.user
            )

    async def idle(self) -> None:
        """Wait until every queued push has been sent (tests, shutdown)."""
        await self._queue.join()

    async def stop(self) -> None:
        """Stop sending (what is queued is dropped) and close the HTTP client."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _work(self) -> None:
        while True:
            effect = await self._queue.get()
            try:
                async with asyncio.timeout(self.timeout * 2):
                    await self._deliver(effect)
            except Exception as exc:  # a push is best effort: the call rings on the devices that are connected
                self.sent["failed"] += 1
                log.warning("could not push call %s to %s: %r", effect.call_id, effect.user, exc)
            finally:
                self._queue.task_done()

    async def payload(self, effect: Push) -> dict[str, Any]:
        """What the notification of `effect` needs, and nothing more (docs/push.md)."""
        name = None
        if self.names is not None:
            try:
                name = await self.names(effect.caller)
            except Exception as exc:
                log.warning("could not read the name of %s for a push: %s", effect.caller, exc)
        body: dict[str, Any] = {
            "type": _TYPES[effect.kind],
            "callId": effect.call_id,
            "from": effect.caller,
            "name": name,
            "at": effect.at,
        }
        if effect.kind == "call":
            body["ringDeadline"] = effect.ring_deadline
            body["decline"] = self.key.decline_token(effect.call_id, effect.user, effect.ring_deadline + DECLINE_GRACE)
        elif effect.kind == "ended":
            body["outcome"] = effect.outcome
        return body

    async def _deliver(self, effect: Push) -> None:
        subscriptions = await self.store.push_subscriptions(effect.user)
        if not subscriptions:
            return
        data = json.dumps(await self.payload(effect), separators=(",", ":")).encode()
        now = self.clock()
        # A call push is worth nothing once the call stopped ringing; a missed call, for a day; the end of a call that
        # was answered or declined only has to replace a notification that may still show (or, by its Topic, a call
        # push the push service still holds).
        ttl = {"call": max(1, int(effect.ring_deadline - now)), "ended": _ENDED_TTL}.get(effect.kind, 86400)
        await asyncio.gather(*(self._send(s, effect, data, ttl) for s in subscriptions))

    async def _send(self, subscription: PushSubscription, effect: Push, data: bytes, ttl: int) -> None:
        endpoint = subscription.endpoint
        if not endpoint_allowed(endpoint, self.services):
            self.sent["refused"] += 1
            return
        # Imported here: pywebpush brings `requests` along (~70 ms at every server start, push or not).
        from pywebpush import WebPusher  # type: ignore[import-untyped]

        try:
            info = {"endpoint": endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
            body = WebPusher(info).encode(data, "aes128gcm")["body"]
        except Exception as exc:  # keys the browser sent that do not work: nothing will ever reach it
            self.sent["failed"] += 1
            log.warning(
                "the push subscription %s of %s has unusable keys (%s): dropped", endpoint[:80], effect.user, exc
            )
            await self.store.push_answered(endpoint, gone=True, now=self.clock())
            self.forget(effect.user)
            return
        url = urllib.parse.urlsplit(endpoint)
        headers = {
            **self.key.headers(f"{url.scheme}://{url.netloc}", self.subject, self.clock()),
            "TTL": str(ttl),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Urgency": "high",
            "Topic": effect.call_id[:32],  # the push that ends a call replaces an undelivered call push
        }
        if self._client is None:  # httpx, as the webhooks' (hub/webhooks.py): one HTTP client in the server
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)
        try:
            async with asyncio.timeout(self.timeout):  # httpx bounds each step; this, the whole push
                async with self._client.stream("POST", endpoint, content=body, headers=headers) as response:
                    status = response.status_code  # the body is not read: nothing is done with it
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError) as exc:
            self.sent["failed"] += 1
            log.warning("push to %s failed: %r", url.netloc, exc)
            return
        if status in (404, 410):
            self.sent["gone"] += 1
            log.info("the push service says a subscription of %s is gone (%d): dropped", effect.user, status)
            await self.store.push_answered(endpoint, gone=True, now=self.clock())
            self.forget(effect.user)
        elif 200 <= status < 300:
            self.sent["accepted"] += 1
            await self.store.push_answered(endpoint, gone=False, now=self.clock())
        else:
            self.sent["failed"] += 1
            log.warning("the push service %s answered %d to a push for %s", url.netloc, status, effect.user)
