"""Where the switchboard's state lives, and how frames reach connections on other nodes.

Two implementations of one idea:

- **in-process** (the default): the hub's own `Switchboard` holds every device and call in memory and the hub
  delivers to its own connections. Nothing to install; one node. This is `Hub` with `broker=None`, and it keeps
  the per-message path free of any indirection.
- **Redis** (`PEERCALL_REDIS_URL`, `RedisBroker`): N identical nodes share presence, routing and call state.
  Each state change loads the slice of state it touches from Redis into a fresh `Switchboard`, runs the very same
  pure transition code on it, and writes the result back with a compare-and-set Lua script: if another node
  changed any of those keys meanwhile, nothing is written and the event is replayed on the new state, so every
  transition is atomic across nodes. Frames for connections on another node travel over that node's Pub/Sub channel.
"""

from .redis_broker import RedisBroker, SharedStateUnavailable

__all__ = ["RedisBroker", "SharedStateUnavailable"]
