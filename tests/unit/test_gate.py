"""The gate (server/gate.py) with no socket: which connections a node takes before any HTTP is read."""

from __future__ import annotations

from uvicorn.middleware.proxy_headers import _TrustedHosts

from peercall.server.gate import Gate
from peercall.server.session import LogBudget


def gate(per_address: int = 2, rate: float = 100.0, trusted: str = "") -> Gate:
    return Gate(per_address, rate, 10.0, _TrustedHosts(trusted), LogBudget())


def test_open_connections_are_capped_per_address_and_per_ipv6_64() -> None:
    """Past the cap an address (an IPv6 /64) gets a 429 `too-many-connections`, until one of its own leaves."""
    g = gate()
    assert g.enter("10.0.0.1") == "10.0.0.1" and g.enter("10.0.0.1") == "10.0.0.1"
    refused = g.enter("10.0.0.1")
    assert isinstance(refused, bytes) and refused.startswith(b"HTTP/1.1 429") and b"too-many-connections" in refused
    assert g.enter("10.0.0.2") == "10.0.0.2"
    g.leave("10.0.0.1")
    assert g.enter("10.0.0.1") == "10.0.0.1"
    assert g.enter("2001:db8::1") == g.enter("2001:db8::ffff:1") == "2001:db8::/64"
    assert isinstance(g.enter("2001:db8::2:3"), bytes)
    assert g.enter("2001:db8:0:1::1") == "2001:db8:0:1::/64"


def test_new_connections_are_rate_limited_per_address() -> None:
    """An address opens `rate` connections a second, five seconds' worth at once; past that, 429 `rate-limited`."""
    g = gate(per_address=1000, rate=2)
    answers = [g.enter("10.0.0.1") for _ in range(12)]
    assert answers[:10] == ["10.0.0.1"] * 10
    assert all(isinstance(a, bytes) and b"rate-limited" in a and b"retry-after: 1" in a for a in answers[10:])
    assert g.enter("10.0.0.2") == "10.0.0.2"


def test_trusted_proxies_are_not_counted() -> None:
    """A trusted proxy carries many clients: the gate neither caps nor rate-limits it (the /ws caps count the
    address it forwards)."""
    g = gate(per_address=1, rate=1, trusted="127.0.0.1")
    assert [g.enter("127.0.0.1") for _ in range(50)] == [None] * 50
    assert g.enter(None) is None and g.open == {}
