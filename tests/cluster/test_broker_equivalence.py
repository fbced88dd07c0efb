"""The Redis broker decides exactly as the in-memory switchboard does.

Random sequences of connects, frames, disconnects and timer ticks (the generator of the switchboard's own
property tests), and call-summaries, are fed to a `Switchboard` and to a `RedisBroker` on a real Redis, with the
same connection ids and call ids and a low call rate; after every step both must produce the same effects: the
same frames to each connection in the same order, the same presence changes, closes and history records, and the
same errors (rate-limited and not-in-call included). Each user joins with a view of their own (whose presence
their welcome lists; #15) and each pair's call-requests come with a screen of their own, drawn for each sequence.
"""

# ruff: noqa: B023 (each lambda is called at once, inside the loop turn that made it)
from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from peercall.broker.redis import RedisBroker
from peercall.core.social import Screen, Screening, View
from peercall.core.switchboard import UNLIMITED_CALLS, Close, Effect, Forward, Send, Switchboard
from peercall.protocol import messages
from peercall.protocol.errors import ProtocolError
from tests.unit.test_switchboard_properties import DATA, GRACE, RING, USERS, op

# A call-summary from a user's device for one of the first calls (ids k1…k6, the same on both sides).
summary_op = st.tuples(
    st.just("summary"), st.sampled_from(USERS), st.sampled_from(["x", "y"]), st.integers(min_value=1, max_value=6)
)
# Whose presence each user is told (None: everyone's), and how each caller's call-requests to each callee are
# screened (None: not at all), for one whole sequence.
views = st.fixed_dictionaries(
    {
        user: st.one_of(
            st.none(),
            st.builds(
                View,
                contacts=st.frozensets(st.sampled_from([*USERS, "dave"])),
                everyone=st.booleans(),
                hidden=st.frozensets(st.sampled_from(USERS)),
            ),
        )
        for user in USERS
    }
)
screens = st.dictionaries(
    st.tuples(st.sampled_from(USERS), st.sampled_from(USERS)),
    st.builds(Screen, visible=st.booleans(), screening=st.one_of(st.none(), st.sampled_from(Screening))),
)
START = [("connect", "alice", None), ("connect", "bob", "x"), ("connect", "bob", "y"), ("connect", "carol", None)]


def normal(effects: list[Effect]) -> tuple[dict[str, list[Any]], list[str]]:
    """Effects as what each connection gets, in order, plus the rest (presence, records) as a sorted list.
    The order between different connections does not matter (a hash's order in Redis is not insertion order)."""
    per_conn: dict[str, list[Any]] = defaultdict(list)
    rest = []
    for effect in effects:
        if isinstance(effect, Send):
            message = json.loads(json.dumps(effect.message))
            if message["type"] == "welcome":  # people seen at the same moment may come in either order
                message["recent"] = sorted(r["id"] for r in message["recent"])
            per_conn[effect.cid].append(message)
        elif isinstance(effect, Forward):
            per_conn[effect.cid].append(messages.forward(effect.env, effect.sender, effect.call_id, effect.polite))
        elif isinstance(effect, Close):
            per_conn[effect.cid].append(("close", effect.code))
        else:
            rest.append(repr(effect))
    return dict(per_conn), sorted(rest)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


_db = itertools.count(1)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.one_of(op, summary_op), max_size=60), st.booleans(), views, screens)
# Found by Hypothesis: a call-request that the node first tried on what it knew of the slice, and then replayed on
# what it read, was charged to the caller's call rate twice (bob's third request was rate-limited, not in-call).
@example(
    ops=[("send", "bob", "x", "call-request", "alice", None)] * 3,
    private=False,
    view_of={"alice": None, "bob": None, "carol": None},
    screen_of={},
)
def test_the_broker_makes_the_same_decisions_as_one_node(
    runner: asyncio.Runner,
    redis_server: Any,
    ops: list,
    private: bool,
    view_of: dict[str, View | None],
    screen_of: dict[tuple[str, str], Screen],
) -> None:
    runner.run(_compare(redis_server, ops, private, view_of, screen_of))


async def _compare(
    redis_server: Any,
    ops: list[tuple[Any, ...]],
    private: bool = False,
    view_of: dict[str, View | None] | None = None,
    screen_of: dict[tuple[str, str], Screen] | None = None,
) -> None:
    view_of, screen_of = view_of or {}, screen_of or {}
    db = redis_server.fresh_db()
    local_ids, shared_ids = itertools.count(1), itertools.count(1)
    sb = Switchboard(
        ring_timeout=RING,
        resume_grace=GRACE,
        new_id=lambda: f"k{next(local_ids)}",
        call_rate=UNLIMITED_CALLS,  # as a broker's: the hub charges call-requests, the same for both
        private=private,
    )
    broker = RedisBroker(
        redis_server.db_url(db),
        ring_timeout=RING,
        resume_grace=GRACE,
        new_id=lambda: f"k{next(shared_ids)}",
        private=private,
    )
    now = 1000.0
    live: dict[tuple[str, str], str] = {}
    users: dict[str, str] = {}  # every connection ever opened, and its user
    serial = 0

    async def both(local: Any, shared: Any, what: str) -> None:
        try:
            mine = ("ok", normal(local()))
        except ProtocolError as exc:
            mine = ("error", exc.code, exc.message)
        try:
            theirs = ("ok", normal(await shared()))
        except ProtocolError as exc:
            theirs = ("error", exc.code, exc.message)
        assert theirs == mine, what

    try:
        for step in START + ops:
            if step[0] == "connect":
                _, user, device = step
                slot = (user, device or "x")
                if slot in live and device is None:
                    continue
                serial += 1
                conn = f"{broker.address}.{serial}"
                users[conn] = user
                before = set(sb.devices)
                view = view_of.get(user)
                await both(
                    lambda c=conn, u=user, d=device: sb.connect(c, u, d, now, view=view),
                    lambda c=conn, u=user, d=device: broker.connect(c, u, d, now, view=view),
                    f"connect {user} {device}",
                )
                for old in before - set(sb.devices):  # replaced: that socket closes, as ws.py would
                    for s, c in list(live.items()):
                        if c == old:
                            del live[s]
                    await both(
                        lambda o=old: sb.disconnect(o, now), lambda o=old: broker.disconnect(o, users[o], now), "x"
                    )
                live[slot] = conn
            elif step[0] == "disconnect":
                _, user, device = step
                conn = live.pop((user, device), None)
                if conn is not None:
                    await both(
                        lambda c=conn: sb.disconnect(c, now),
                        lambda c=conn, u=user: broker.disconnect(c, u, now),
                        f"disconnect {conn}",
                    )
            elif step[0] == "send":
                _, user, device, kind, to, data = step
                conn = live.get((user, device))
                if conn is None or to == user:
                    continue
                frame: dict[str, Any] = {"type": kind, "to": to}
                if kind in DATA:
                    frame["data"] = DATA[kind]
                elif data:
                    frame["data"] = data
                env = messages.parse(json.dumps(frame), user)
                screen = screen_of.get((user, to)) if kind == "call-request" else None
                await both(
                    lambda c=conn, e=env: sb.receive(c, e, now, screen),
                    lambda c=conn, u=user, e=env: broker.receive(c, u, e, now, screen=screen),
                    f"{user} sends {frame}",
                )
            elif step[0] == "summary":
                _, user, device, n = step
                conn = live.get((user, device))
                if conn is None:
                    continue
                frame = {"type": "call-summary", "callId": f"k{n}", "data": {"mos": 4}}
                env = messages.parse(json.dumps(frame), user)

                async def no_effects(check: Any) -> list[Effect]:
                    await check
                    return []

                await both(
                    lambda u=user, e=env: sb.check_summary(u, e) or [],
                    lambda c=conn, u=user, e=env: no_effects(broker.summary(c, u, e)),
                    f"{user} sends {frame}",
                )
            else:
                now += step[1]
                await both(lambda: sb.tick(now), lambda: broker.tick(now), f"tick to {now}")
        for conn in list(users):  # everyone leaves, including older connections no longer in `live`
            await both(lambda c=conn: sb.disconnect(c, now), lambda c=conn: broker.disconnect(c, users[c], now), "end")
        now += GRACE + RING + 1
        await both(lambda: sb.tick(now), lambda: broker.tick(now), "final tick")
        assert sb.calls == {}
        # Nothing of any call or user is left (no version either); what stays: last-seen times, recently ended
        # calls, the counter versions come from.
        kept = ("peercall:seen", "peercall:ended:", "peercall:endedat", "peercall:clock")
        assert [k for k in await broker.redis.keys("*") if not k.startswith(kept)] == []
    finally:
        await broker.stop()  # closes its connections: redis-py's pool and the lean client's (broker/resp.py)
