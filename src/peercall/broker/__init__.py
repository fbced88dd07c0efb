"""Brokers: where the switchboard's state lives, and how frames reach connections on other nodes.

Both implement the `Broker` interface the hub owns (hub/broker.py), and pass one contract suite
(tests/contract/test_broker.py):

- `memory://` (the default, broker/memory.py): the switchboard holds every device and call in memory and every
  connection is local. Nothing to install; one node. It keeps the peer frames' path free of any coroutine.
- `redis://` (`PEERCALL_REDIS_URL`, broker/redis.py): N identical nodes share presence, routing and call state.
  Each state change loads the slice of state it touches from Redis into a fresh `Switchboard`, runs the very same
  pure transition code on it, and writes the result back with a compare-and-set Lua script: if another node
  changed any of those keys meanwhile, nothing is written and the event is replayed on the new state, so every
  transition is atomic across nodes. Frames for connections on another node travel over that node's Pub/Sub channel.

`open_broker(url)` is the one place that maps a URL scheme to an implementation; the Redis client is imported only
when a `redis://` URL asks for it.
"""

from __future__ import annotations

from ..hub.broker import Broker

__all__ = ["ACCEPTED_URLS", "Broker", "open_broker"]

ACCEPTED_URLS = ("memory://", "redis://host:port/db", "rediss://…", "unix:///path/to/redis.sock")

_REDIS = {"redis", "rediss", "unix"}


def open_broker(
    url: str,
    *,
    ring_timeout: float = 45.0,
    resume_grace: float = 20.0,
    private: bool = False,
    node_id: str | None = None,
    lease: float = 10.0,
    prefix: str = "peercall:",
) -> Broker:
    """The broker that `url` names, not yet started (the hub binds it; then `await broker.start()`).

    Args:
        url: `memory://` (one node) or a Redis URL as redis-py reads it (`redis://`, `rediss://`, `unix://`).
        ring_timeout, resume_grace, private: the call rules' settings (core/switchboard.py; the call rate is the
            hub's).
        node_id, lease, prefix: a cluster node's name, its lease in seconds and its Redis key prefix.

    Raises:
        ValueError: the scheme is not one of those.
    """
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(
            ring_timeout=ring_timeout,
            resume_grace=resume_grace,
            private=private,
            node_id=node_id,
        )
    if sep and scheme in _REDIS:
        from .redis import RedisBroker

        return RedisBroker(
            url,
            node_id=node_id,
            lease=lease,
            prefix=prefix,
            ring_timeout=ring_timeout,
            resume_grace=resume_grace,
            private=private,
        )
    raise ValueError(f"unknown broker URL {url!r}: expected one of {', '.join(ACCEPTED_URLS)}")
