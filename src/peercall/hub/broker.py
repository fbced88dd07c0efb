"""The Broker interface the hub owns, and the events interface a broker calls back through.

A broker is where the switchboard's state lives and how a node reaches connections of other nodes. The hub hands
it every event of its connections (connect, disconnect, a frame, a call summary) with the time, and performs the
effects it returns; the broker runs the call timers and hands the hub, through `BrokerEvents`, the effects of the
calls that time ended, the presence changes to tell, and frames that other nodes sent to connections of this one.

Two implementations, picked by URL in one place (`open_broker` in broker/__init__.py, called by server/app.py):

- `memory://` (broker/memory.py): one node. A `Switchboard` in memory and a loop timer; every connection is local.
  Nothing to install. It offers the synchronous `route` fast path for peer frames.
- `redis://` (broker/redis.py): a cluster of nodes sharing presence, routing and calls through Redis.

The rules themselves (core/switchboard.py) are the same code for both: a broker only decides where the state lives.
Both pass one contract suite (tests/contract/test_broker.py).

Must not import: the broker package, Redis, or anything of server/.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from typing import Protocol

from ..core.social import Screen, View
from ..core.switchboard import Effect, Presence
from ..protocol.messages import Envelope


class BrokerEvents(Protocol):
    """What a broker calls back on the hub that owns it. Never raises."""

    @property
    def writes_history(self) -> bool:
        """Whether the hub writes ended calls to a history: then `Broker.recorded` follows every `Record` it
        performs, once its writer is done with it."""
        ...

    async def perform(self, effects: list[Effect]) -> None:
        """Perform effects the broker decided on its own (a call timer fired; Redis lost a node's connections)."""
        ...

    def deliver(self, cid: str, kind: str, text: str) -> None:
        """A frame that another node sent to connection `cid` of this node (hub/nodeframe.py: `kind`, `text`).
        A connection that is gone meanwhile drops it. Never waits: called for each frame as it is read."""
        ...

    def presence_changed(self, change: Presence) -> None:
        """A user's presence changed (on any node): tell this node's connections in `change.audience` (None:
        all of them), in the next batch."""
        ...

    def circles_changed(self, users: list[str]) -> None:
        """These users' contacts, requests, blocks or ring setting changed (on any node): forget what is cached of
        them and send their connections on this node the new `contacts` frame."""
        ...

    def user_closed(self, user: str, code: int, reason: str, *, sign_in: str | None = None) -> None:
        """Close this node's connections of `user` (`Broker.close_user` on any node) with `code` and `reason`:
        with `sign_in`, only those whose latest token came from that sign-in (accounts mode)."""
        ...


class Broker(Protocol):
    """The switchboard's state and the way to other nodes' connections, as the hub sees them.

    Events change state atomically and in order for each connection; each returns the effects for the hub to
    perform, in order, after the change was made. Every event may raise `SharedStateUnavailable` (the shared state
    cannot be reached, nothing was changed: the hub tells the client to try again); `receive` and `summary` may
    raise `ProtocolError` (the frame breaks a rule, nothing was changed).
    """

    node: str
    """This node's name (settings.node_id, or made up)."""
    cid_prefix: str
    """Connection ids this node hands out start with it (in a cluster, a connection's node is found by it)."""
    shared: bool
    """Whether the state is shared with other nodes (then /metrics reports `ops` and `healthy`)."""
    healthy: bool
    """Whether the shared state answered lately (always True in memory)."""
    ops: Counter[str]
    """Round trips to the shared state by kind, for /metrics."""

    @property
    def route(self) -> Callable[[str, Envelope], tuple[str, str] | None] | None:
        """The hot path, or None when the broker has none: where a peer frame from connection `cid` goes,
        as (the peer's connection id, call id), or None while the peer is away (the frame is dropped). Synchronous,
        and changes nothing. Raises ProtocolError `not-in-call` like `receive` would.

        A broker whose state is `shared` answers only for what its node knows: None there means "not known here",
        and the hub hands the frame to `receive` (which finds out, and answers not-in-call or a dropped frame as
        this does); a peer on another node gets the frame through `send`."""
        ...

    def bind(self, events: BrokerEvents) -> None:
        """Called once, by the hub that owns this broker (in its constructor), before any other method."""
        ...

    async def start(self) -> None:
        """Start background work (a cluster's lease, listening, timers). Returns without waiting for shared state
        that cannot be reached: the node starts unready and joins when it can."""
        ...

    def stop_timers(self) -> None:
        """The node is shutting down: this node's call timers fire no more (its calls end with it)."""
        ...

    async def stop(self) -> None:
        """Leave: the node's connections are closed by now. Bounded in time; never raises."""
        ...

    def hand_over(self, now: float) -> bytes | None:
        """The node is stopping and its connections are closed (before `stop`): the calls under way that only
        this node holds, encoded, for `take_over` at its next start; None if it holds none, or if the calls are in
        shared state (they outlive the node)."""
        ...

    def take_over(self, state: bytes) -> int:
        """Before `start`: hold the calls that `hand_over` gave as the node last stopped. Returns how many.

        Raises:
            ValueError: `state` is not what `hand_over` gives.
        """
        ...

    async def ping(self) -> bool:
        """Whether the shared state answers now (for /readyz)."""
        ...

    def users_online(self) -> int:
        """Users with at least one connection, on any node."""
        ...

    def calls_by_state(self) -> dict[str, int]:
        """Calls not yet ended, by state (`ringing`, `answered`), on any node."""
        ...

    async def connect(
        self, cid: str, user: str, device: str | None, now: float, *, view: View | None = None
    ) -> list[Effect]:
        """A connection of this node was accepted (`device`: the id its client gave, if any). The effects start
        with frames for the connection itself, `welcome` first of them, which lists whose presence `view` says
        (None: everyone's). Its cost must grow with `view.contacts`, not with the users online."""
        ...

    async def disconnect(self, cid: str, user: str, now: float, *, final: bool = False) -> list[Effect]:
        """A connection of this node closed. Its calls wait for it for the resume grace; with `final` (the server
        closed it because its sign-in ended: it cannot come back to them) they end at once."""
        ...

    async def receive(
        self, cid: str, user: str, env: Envelope, now: float, *, screen: Screen | None = None
    ) -> list[Effect]:
        """A valid call frame (through `messages.parse`) from a connection of this node (not `call-summary`, nor
        a contact frame). `screen`: how a `call-request` is screened (`Switchboard.receive`)."""
        ...

    async def decline(self, call_id: str, callee: str, now: float) -> list[Effect]:
        """`callee` declines the ringing call `call_id` from no connection (`Switchboard.decline`): no effects if
        it is not ringing for them."""
        ...

    async def presences(self, users: Collection[str]) -> dict[str, Presence]:
        """Each of `users`' presence now, on any node (`Switchboard.presences`). One round trip at most."""
        ...

    async def online_page(self, prefix: str, after: str | None, limit: int) -> list[Presence]:
        """Users online whose id starts with `prefix`, after `after`, in id order, at most `limit` (the
        `directory` frame). Bounded by `limit`, not by the users online."""
        ...

    async def recorded(self, call_ids: list[str]) -> None:
        """The hub's history writer is done with these calls' records (written, or failed and logged): a broker that
        keeps the records of the calls it ended until then, so that another node writes them if this one dies
        (redis://), lets them go. Never raises."""
        ...

    async def summary(self, cid: str, user: str, env: Envelope) -> None:
        """Whether `user` may send the `call-summary` `env`: raises ProtocolError `not-in-call` unless it names
        a call of theirs that ended lately (on any node). Changes nothing."""
        ...

    def send(self, cid: str, kind: str, text: str) -> None:
        """Queue a frame for connection `cid` of another node (hub/nodeframe.py: `kind`, `text`). At most once:
        a frame for a node that is gone, or for no node, is dropped."""
        ...

    def presence(self, change: Presence) -> None:
        """Tell every node (this one too, through `BrokerEvents.presence_changed`) of a presence change, with its
        `audience`."""
        ...

    def circles_changed(self, users: list[str]) -> None:
        """Tell every node (this one too, through `BrokerEvents.circles_changed`) that these users' circles
        changed. At most once, like `send`."""
        ...

    def close_user(self, user: str, code: int, reason: str, *, sign_in: str | None = None) -> None:
        """Have every node (this one too, through `BrokerEvents.user_closed`) close its connections of `user`
        with `code` and `reason`, within a second: with `sign_in`, only those whose latest token came from that
        sign-in (accounts mode: a sign-out ends one sign-in, and the user's others stay connected). At most once,
        like `send`: a node that cannot hear it now (cut off from Redis) does not close them later."""
        ...
