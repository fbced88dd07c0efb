"""The gate: which TCP connections a node takes, and how long and large a request head may be, before any HTTP is
served. For every connection, `/ws` or not, on both transports.

Owns: the cap on open connections per address (`PEERCALL_MAX_CONNECTIONS_PER_IP`; an IPv6 address counts with its
/64, as in the session layer), the rate of new connections per address (`PEERCALL_CONNECTION_RATE`, a token bucket
per address, for the 10,000 addresses seen last), and the bounds of a request head: HEAD_LIMIT bytes (else 431)
read within `PEERCALL_HEAD_TIMEOUT` seconds (else 408), and of its body: whole within as long again after its head
(else 408, or only the close if it was answered already). Sans-I/O: `FrontProtocol` (server/front.py), which reads each
connection's first request head, and `PeercallHttpProtocol` (server/fastws.py), the HTTP protocol both transports
run under, ask it and write what it answers (once per connection: the front hands its count over).

A connection is counted here by its socket's address while it speaks HTTP; once it is upgraded to `/ws` it is the
session layer's (server/session.py), which counts it by the address a trusted proxy forwarded. Connections from a
trusted proxy (`PEERCALL_FORWARDED_ALLOW_IPS`) are not capped or rate-limited here: behind nginx every connection
comes from 127.0.0.1 and would share one address's allowance; the proxy limits its clients' HTTP connections
(`limit_conn`, `limit_req`), and peercall's `/ws` caps still count the forwarded address.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

from ..core.limits import KeyedBuckets
from .session import TABLE_SIZE, LogBudget, address_group

log = logging.getLogger("peercall.http")

HEAD_LIMIT = 16 * 1024
"""Bytes a request head (request line and headers) may take, as Node.js allows; more gets 431 and a close."""
BURST_SECONDS = 5
"""New connections an address may open at once: this many seconds' worth of `PEERCALL_CONNECTION_RATE`."""


def response(status: int, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP response that ends the connection, with the JSON error body of the session layer's refusals."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    reason = {408: "Request Timeout", 429: "Too Many Requests", 431: "Request Header Fields Too Large"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_LARGE = response(431, "head-too-large", f"the request head is larger than {HEAD_LIMIT} bytes")


class Gate:
    """What a node's connections share before HTTP: the open ones per address, and the new ones' buckets."""

    def __init__(self, max_per_address: int, rate: float, head_timeout: float, trusted: Any, budget: LogBudget) -> None:
        self.max_per_address = max_per_address
        self.rate = rate
        self.head_timeout = head_timeout
        self.trusted = trusted
        """uvicorn's `_TrustedHosts` of PEERCALL_FORWARDED_ALLOW_IPS (None: trust no one); `host in trusted`."""
        self.budget = budget
        self.open: Counter[str] = Counter()
        """Open connections per address, while they speak HTTP (bounded by the connections themselves)."""
        self._new = KeyedBuckets(rate, rate * BURST_SECONDS, TABLE_SIZE)
        self.too_large = TOO_LARGE
        self.timed_out = response(
            408, "head-timeout", f"the request head did not come within {head_timeout:g}s; closing"
        )
        self.body_timed_out = response(
            408, "body-timeout", f"the request body did not come within {head_timeout:g}s of its head; closing"
        )

    def enter(self, host: str | None) -> str | bytes | None:
        """A new connection from `host`: the address it is counted as (release it with `leave`), None when it is
        not counted (a trusted proxy, or no address), or the response that refuses it."""
        if host is None or (self.trusted is not None and host in self.trusted):
            return None
        address = address_group(host)
        if not self._new.take(address, time.monotonic()):
            if self.budget.allows(address):
                log.info("refused a connection from %s: more than %g new connections a second", address, self.rate)
            return response(
                429,
                "rate-limited",
                f"{address} opens more than {self.rate:g} connections a second; wait and retry",
                "retry-after: 1\r\n",
            )
        if self.open[address] >= self.max_per_address:
            if self.budget.allows(address):
                log.info("refused a connection from %s: %d connections open", address, self.open[address])
            return response(429, "too-many-connections", f"{address} already has {self.open[address]} connections open")
        self.open[address] += 1
        return address

    def leave(self, address: str) -> None:
        """A counted connection closed, or became a `/ws` session (which the session layer counts)."""
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def refused_head(self, address: str | None, host: str | None, why: str) -> None:
        """Log (within the address's budget) a connection closed for its request head."""
        if self.budget.allows(address or host or "?"):
            log.info("closed a connection from %s: %s", host or "?", why)
