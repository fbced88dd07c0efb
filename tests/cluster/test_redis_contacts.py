"""What contacts ask of the Redis broker beyond the contract suite (tests/contract/test_broker.py): a welcome for a
view read with the slice, in one round trip, whose cost does not grow with the users online; and the frames for
every node, which a node of the previous version may still send (#15)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from peercall.broker import open_broker
from peercall.core.social import MAX_BLOCKED, MAX_CONTACTS, Audience, View
from peercall.core.switchboard import WELCOME_ONLINE_MAX, Presence, Switchboard, WelcomeLists
from peercall.hub import nodeframe
from peercall.hub.router import Hub
from tests.cluster.conftest import RedisServer
from tests.contract.conftest import FakeConnection

PREFIX = "peercall:"


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Callable[..., Awaitable[Hub]]]:
    """`await make()`: a started hub on a fresh Redis database; a second one is another node."""
    db = redis_server.fresh_db()
    made: list[Hub] = []

    async def start(**rules: Any) -> Hub:
        broker = open_broker(redis_server.db_url(db), node_id=f"n{len(made)}", **rules)
        hub = Hub(broker, presence_interval=0.05)
        await broker.start()
        made.append(hub)
        return hub

    try:
        yield start
    finally:
        for hub in made:
            await hub.close_all(1001, "test over")
            await hub.broker.stop()


def evals(server: RedisServer) -> tuple[int, float]:
    """The scripts Redis ran since its statistics were reset, and the microseconds they took."""
    stats = server.command("INFO", "commandstats")
    calls, usec = 0, 0.0
    for line in stats.splitlines():
        if line.startswith("cmdstat_eval"):
            parts = dict(part.split("=") for part in line.partition(":")[2].split(","))
            calls, usec = calls + int(parts["calls"]), usec + float(parts["usec"])
    return calls, usec


@pytest.fixture
def lists_given(monkeypatch: pytest.MonkeyPatch) -> list[WelcomeLists | None]:
    """The welcome lists each switchboard slice is handed on connect, recorded."""
    given: list[WelcomeLists | None] = []
    connect = Switchboard.connect

    def recording(self: Switchboard, *args: Any, lists: WelcomeLists | None = None, **kwargs: Any) -> Any:
        given.append(lists)
        return connect(self, *args, lists=lists, **kwargs)

    monkeypatch.setattr(Switchboard, "connect", recording)
    return given


async def test_a_welcome_for_a_view_is_one_read_and_lists_what_the_view_says(
    make: Callable[..., Awaitable[Hub]], redis_server: RedisServer, lists_given: list[WelcomeLists | None]
) -> None:
    """With 600 users online, a join with a view of two contacts reads Redis once (the slice and the contacts'
    states together); with everyone in view it lists WELCOME_ONLINE_MAX, contacts first, and says there are more."""
    hub = await make()
    for i in range(600):
        await hub.join(FakeConnection(hub, f"u{i:03}"))
    broker = hub.broker
    lists_given.clear()
    redis_server.command("CONFIG", "RESETSTAT")
    await broker.connect(hub.new_cid(), "me", None, time.time(), view=View(frozenset({"u599", "u007"}), False))
    assert evals(redis_server)[0] == 2  # the read (the slice and the contacts together), and the change applied
    assert lists_given == [WelcomeLists(["u007", "u599"], [], [])]
    lists_given.clear()
    everyone = View(frozenset({"u599"}), True, frozenset({"u000"}))
    await broker.connect(hub.new_cid(), "me2", None, time.time(), view=everyone)
    (lists,) = lists_given
    assert lists is not None and lists.more
    assert lists.online == ["u599", "me", *(f"u{i:03}" for i in range(1, WELCOME_ONLINE_MAX - 1))]


async def test_a_welcome_for_contacts_does_not_cost_more_with_more_users_online(
    make: Callable[..., Awaitable[Hub]], redis_server: RedisServer
) -> None:
    """The Redis time of a join with 50 contacts stays about the same from 200 to 2,000 users online (reading the
    whole online list, as a join without a view does, takes four times as long at 2,000)."""
    hub = await make()
    contacts = View(frozenset(f"u{i:04}" for i in range(0, 2000, 40)), False)

    async def redis_usec_per_join(users: int) -> float:
        for i in range(len(hub._conns), users):
            await hub.join(FakeConnection(hub, f"u{i:04}"))
        # The least of five rounds: time inside Redis grows when the machine is busy, never the other way.
        rounds = []
        for r in range(5):
            redis_server.command("CONFIG", "RESETSTAT")
            for n in range(20):
                await hub.broker.connect(hub.new_cid(), f"me{users}-{r}-{n}", None, time.time(), view=contacts)
            rounds.append(evals(redis_server)[1] / 20)
        return min(rounds)

    small, large = await redis_usec_per_join(200), await redis_usec_per_join(2000)
    assert large < 2 * small + 20, (small, large)  # measured: 109 and 94 µs (the whole online list: 61 and 236)


async def test_a_node_of_the_previous_version_is_heard_and_an_unreadable_frame_is_dropped(
    make: Callable[..., Awaitable[Hub]], redis_server: RedisServer
) -> None:
    """A presence change in the previous format (4 fields, on `all`) is told with no audience (everyone); a frame
    for every node that cannot be read is dropped, and the node keeps listening."""
    hub = await make()
    told: list[Presence] = []
    arrived = asyncio.Event()

    def on_presence(change: Presence) -> None:
        told.append(change)
        arrived.set()

    hub.presence_changed = on_presence  # type: ignore[method-assign]
    await asyncio.sleep(0.2)  # the listener subscribes
    redis_server.command("PUBLISH", f"{PREFIX}all", nodeframe.pack(['["old","offline",false,12.5]']))
    redis_server.command("PUBLISH", f"{PREFIX}everyone", nodeframe.pack(["{not a frame", "Cnot a list"]))
    change = Presence("new", "online", audience=Audience(frozenset({"friend"})))
    redis_server.command("PUBLISH", f"{PREFIX}everyone", nodeframe.pack([nodeframe.encode_presence(change)]))
    async with asyncio.timeout(3):
        while len(told) < 2:
            arrived.clear()
            await arrived.wait()
    assert told == [Presence("old", "offline", last_seen=12.5), change]  # the last came after the bad ones


def test_an_audience_is_bounded_by_what_a_circle_holds() -> None:
    """A presence change names at most a user's contacts and hides at most their blocks, both ways: a node refuses
    to send a larger one, and drops one it is sent."""
    many = frozenset(f"u{i}" for i in range(MAX_CONTACTS + 1))
    with pytest.raises(ValueError, match="at most 500"):
        nodeframe.encode_presence(Presence("alice", "online", audience=Audience(many)))
    hidden = frozenset(f"u{i}" for i in range(2 * MAX_BLOCKED + 1))
    with pytest.raises(ValueError, match="hides 2001"):
        nodeframe.encode_presence(Presence("alice", "online", audience=Audience(None, hidden)))
    text = json.dumps(["alice", "online", False, None, [sorted(many), []]])
    with pytest.raises(nodeframe.BadNodeFrame, match="length <= 500"):
        nodeframe.decode_everyone(text)
    most = Presence("alice", "online", audience=Audience(frozenset(sorted(many)[:MAX_CONTACTS]), hidden - {"u0"}))
    assert nodeframe.decode_everyone(nodeframe.encode_presence(most)) == most
