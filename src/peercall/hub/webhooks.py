"""Signed webhooks: the operator's HTTP endpoints hear when a call rings, is answered, is missed or ends
(docs/webhooks.md), e.g. to send an e-mail about a missed call.

The events come from the effects a node performs (`Hub.perform`): a `CallEvent` when a call starts ringing or is
answered, its `Record` when it ends. A change is applied once in a cluster and its effects are performed by the
node that applied it (broker/redis.py), so every transition is sent by one node, once: at least once, as the
deliveries are retried until the endpoint answers 2xx; an endpoint tells repeats apart by their `webhook-id`.

Each event is one JSON object, sent as the body of a POST to every URL, signed as Standard Webhooks says
(https://www.standardwebhooks.com): headers `webhook-id` (the event's id, the same in every retry),
`webhook-timestamp` (of the attempt, Unix seconds) and `webhook-signature` (`v1,` and the base64 of the
HMAC-SHA256 of `{id}.{timestamp}.{body}`, once per key, space-separated, so that a key can be rotated).

What is never sent: SDP, candidates, addresses, device ids, call summaries. A screened call (blocked, refused or
silenced: core/social.py) rang nowhere: it has no `call.ringing`, and its end is `call.ended` with `screened`,
never `call.missed`, so that a mail "you missed a call from …" can never tell a user of a caller they blocked.

Delivery never holds up the hub: `submit` only queues; each delivery is a task of its own that POSTs (bounded
by a timeout) and, until a 2xx, retries with exponential backoff and jitter for at most `retry_for` seconds.
The deliveries waiting (in flight or for their next attempt) are bounded by `queue`: beyond it an event is dropped,
counted and logged. They live in this node's memory: a node that stops or dies loses those not yet delivered.

Must not import: the broker package, Redis, or anything of server/.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import msgspec

from .. import __version__
from ..core.records import CallRecord
from ..core.switchboard import CallEvent, CallState, Record
from ..store.base import UNANSWERED_OUTCOMES

log = logging.getLogger("peercall.webhooks")

RINGING: Final = "call.ringing"
ANSWERED: Final = "call.answered"
MISSED: Final = "call.missed"
ENDED: Final = "call.ended"
EVENT_TYPES: Final = (RINGING, ANSWERED, MISSED, ENDED)
"""Every event type, in the order a call goes through them (a call ends with one of the last two)."""

TIMEOUT: Final = 15.0
"""Seconds an attempt may take (connect, send, the response's head); then it failed."""
CONCURRENCY: Final = 8
"""Attempts in flight at once, per node (the others wait for a slot)."""
FIRST_DELAY: Final = 1.0
"""Seconds before the first retry; each retry waits about twice as long as the one before, up to MAX_DELAY."""
MAX_DELAY: Final = 3600.0
MAX_ATTEMPTS: Final = 50
_DROP_LOG_EVERY = 60.0  # seconds between two warnings about dropped events (each says how many since the last)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One event, ready to send: its id (the `webhook-id`), its type, and its body (JSON, compact)."""

    id: str
    type: str
    body: bytes


def _iso(at: float) -> str:
    """`at` (Unix seconds) as ISO 8601 in UTC with milliseconds, as Standard Webhooks' `timestamp` is."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(call_id: str, kind: str, at: float, data: dict[str, Any]) -> WebhookEvent:
    # The id must not contain '.', which separates the signed parts: call ids are the server's own (hex).
    event_id = f"{call_id}-{kind.removeprefix('call.')}"
    body = {"id": event_id, "type": kind, "timestamp": _iso(at), "data": data}
    return WebhookEvent(event_id, kind, msgspec.json.encode(body))


def event_of(effect: CallEvent | Record) -> WebhookEvent:
    """The webhook event of a switchboard effect: `call.ringing` or `call.answered` for a `CallEvent`; for a
    `Record`, `call.missed` if the callee never got the chance to answer (`missed`, `unavailable`: the calls the
    history hands out as missed), else `call.ended`; a screened call's is always `call.ended`, with `screened`."""
    if isinstance(effect, CallEvent):
        kind = RINGING if effect.state is CallState.RINGING else ANSWERED
        return _event(
            effect.call_id,
            kind,
            effect.at,
            {"callId": effect.call_id, "caller": effect.caller, "callee": effect.callee},
        )
    record = effect.record
    kind = MISSED if record.screened is None and record.outcome in UNANSWERED_OUTCOMES else ENDED
    return _event(record.call_id, kind, record.ended_at, ended_data(record))


def ended_data(record: CallRecord) -> dict[str, Any]:
    """What `call.missed` and `call.ended` say of a call: the history's fields (`CallRecord.to_json`), without
    devices and call summaries; `screened` only for a screened call."""
    data: dict[str, Any] = {
        "callId": record.call_id,
        "caller": record.caller,
        "callee": record.callee,
        "outcome": record.outcome.value,
        "reason": record.reason.value,
        "ringingAt": record.ringing_at,
        "answeredAt": record.answered_at,
        "endedAt": record.ended_at,
        "duration": None if record.answered_at is None else round(record.ended_at - record.answered_at, 3),
        "hungUpBy": record.hung_up_by,
    }
    if record.screened is not None:
        data["screened"] = record.screened.value
    return data


def signature(keys: Sequence[bytes], event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for each key,
    space-separated."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys)


def headers(keys: Sequence[bytes], event: WebhookEvent, timestamp: int) -> dict[str, str]:
    """The headers of one attempt to deliver `event` at `timestamp` (Unix seconds)."""
    return {
        "content-type": "application/json",
        "user-agent": f"peercall/{__version__}",
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys, event.id, timestamp, event.body),
    }


def backoff(attempt: int, retry_after: float | None = None, *, first: float = FIRST_DELAY) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, …): `first` doubled each time up to MAX_DELAY,
    of which a random half to all ("equal jitter"), or what the endpoint's `Retry-After` asked if that is longer
    (up to MAX_DELAY)."""
    ceiling = min(MAX_DELAY, first * 2.0 ** min(attempt - 1, 30))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_DELAY))
    return delay


def _retry_after(value: str | None) -> float | None:
    """A `Retry-After` header given in seconds (an HTTP date is ignored: the backoff applies)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Webhooks:
    """This node's deliveries of webhook events to the operator's URLs.

    `submit` never blocks and never raises; `close` ends the deliveries at shutdown (bounded in time).
    """

    def __init__(
        self,
        urls: Sequence[str],
        keys: Sequence[bytes],
        *,
        events: Collection[str] | None = None,
        retry_for: float = 86400.0,
        queue: int = 10_000,
        timeout: float = TIMEOUT,
        first_delay: float = FIRST_DELAY,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`urls`: where every event goes; `keys`: the HMAC keys, the one in use first (more while rotating);
        `events`: the types sent (None: all); `retry_for`: seconds a delivery is retried at most; `queue`: the
        deliveries that may wait at once on this node."""
        if not urls or not keys:
            raise ValueError("webhooks need at least one URL and one key")
        self.urls = list(urls)
        self.keys = list(keys)
        self.events = frozenset(EVENT_TYPES if events is None else events)
        self.retry_for = retry_for
        self.queue = queue
        self.timeout = timeout
        self.first_delay = first_delay
        self.clock = clock
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.counts: collections.Counter[str] = collections.Counter()
        """Deliveries by result, for /metrics: `delivered`, `retried` (failed attempts that were retried),
        `gave-up` (no 2xx within `retry_for`, or 410 Gone) and `dropped` (the queue was full)."""
        self._dropped_since_log = 0
        self._drop_logged_at = -_DROP_LOG_EVERY

    def pending(self) -> int:
        """Deliveries in flight or waiting for their next attempt."""
        return len(self._tasks)

    def submit(self, effect: CallEvent | Record) -> None:
        """Queue the event of `effect` (if its type is sent) for every URL. Never blocks, never raises."""
        try:
            event = event_of(effect)
        except Exception:  # a bug here must not stop the hub performing the call's other effects
            log.exception("could not make the webhook event of %r", effect)
            return
        if event.type not in self.events or self._closing:
            return
        for url in self.urls:
            if len(self._tasks) >= self.queue:
                self._drop(event, url)
                continue
            task = asyncio.ensure_future(self._deliver(url, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _drop(self, event: WebhookEvent, url: str) -> None:
        self.counts["dropped"] += 1
        self._dropped_since_log += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= _DROP_LOG_EVERY:
            log.warning(
                "webhook queue full (%d deliveries waiting): dropped %d events since the last warning, the latest "
                "%s for %s; is the endpoint down? (PEERCALL_WEBHOOK_QUEUE)",
                self.queue,
                self._dropped_since_log,
                event.id,
                url,
            )
            self._dropped_since_log = 0
            self._drop_logged_at = now

    async def _deliver(self, url: str, event: WebhookEvent) -> None:
        """POST `event` to `url` until it answers 2xx, `retry_for` has passed, or MAX_ATTEMPTS were made."""
        started = time.monotonic()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            status, retry_after, why = await self._attempt(url, event)
            if 200 <= status < 300:
                self.counts["delivered"] += 1
                log.debug("webhook %s delivered to %s (attempt %d)", event.id, url, attempt)
                return
            if status == 410:
                self.counts["gave-up"] += 1
                log.warning("webhook %s: %s answered 410 Gone; not retried", event.id, url)
                return
            delay = backoff(attempt, retry_after, first=self.first_delay)
            if attempt == MAX_ATTEMPTS or time.monotonic() - started + delay > self.retry_for or self._closing:
                break
            self.counts["retried"] += 1
            log.info("webhook %s to %s failed (%s); attempt %d in %.1fs", event.id, url, why, attempt + 1, delay)
            await asyncio.sleep(delay)
        self.counts["gave-up"] += 1
        log.warning(
            "webhook %s to %s: gave up after %d attempts in %.0fs (%s)",
            event.id,
            url,
            attempt,
            time.monotonic() - started,
            why,
        )

    async def _attempt(self, url: str, event: WebhookEvent) -> tuple[int, float | None, str]:
        """One POST: (status, Retry-After, what failed in words); status 0 when no response came."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=False, transport=self._transport, trust_env=False
            )
            self._slots = asyncio.Semaphore(CONCURRENCY)
        assert self._slots is not None
        async with self._slots:
            sent = headers(self.keys, event, int(self.clock()))
            try:
                async with asyncio.timeout(self.timeout + 1):  # httpx bounds each step; this, the whole attempt
                    async with self._client.stream("POST", url, content=event.body, headers=sent) as response:
                        status = response.status_code  # the body is not read: nothing is done with it
                        return status, _retry_after(response.headers.get("retry-after")), f"HTTP {status}"
            except Exception as exc:  # refused, reset, timed out, a URL httpx cannot use: all a failed attempt
                return 0, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def close(self, within: float = 3.0) -> None:
        """At shutdown: give the deliveries under way `within` seconds to finish (no new retry starts), then
        cancel the rest, saying how many were lost; close the HTTP client."""
        self._closing = True
        tasks = list(self._tasks)
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=within)
            for task in left:
                task.cancel()
            if left:
                log.warning("%d webhook deliveries were not made before shutdown: they are lost", len(left))
                await asyncio.wait(left, timeout=1.0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
