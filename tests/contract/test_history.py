"""The CallHistory contract, run against every backend: memory, SQLite (file and :memory:), PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import math
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from peercall.core.records import CallRecord, Outcome, Reason
from peercall.core.social import Screening
from peercall.store import CallHistory, open_history

T0 = 1_732_616_400.123456  # an arbitrary ringing time with a fractional part
UNANSWERED = {Outcome.MISSED, Outcome.UNAVAILABLE}  # what take_missed hands out


def call(
    call_id: str,
    caller: str = "alice",
    callee: str = "bob",
    *,
    at: float = T0,
    outcome: Outcome = Outcome.ANSWERED,
    reason: Reason = Reason.USER_HANGUP,
) -> CallRecord:
    """A plausible record; `at` is when it started ringing."""
    answered = outcome in (Outcome.ANSWERED, Outcome.FAILED)
    return CallRecord(
        call_id=call_id,
        caller=caller,
        callee=callee,
        caller_device=f"{caller}-laptop",
        answered_device=f"{callee}-phone" if answered else None,
        ringing_at=at,
        answered_at=at + 2.5 if answered else None,
        ended_at=at + 60.25,
        outcome=outcome,
        reason=reason,
        hung_up_by=caller if answered else None,
    )


async def taken(history: CallHistory, user: str) -> list[CallRecord]:
    """`take_missed(user)` with room for every call: what it took (checked against the count it gives)."""
    records, total = await history.take_missed(user, limit=1000)
    assert total == len(records)
    return records


async def all_calls(history: CallHistory, user: str, limit: int) -> list[list[CallRecord]]:
    """Every page of `user`'s calls, following the cursors to the end."""
    pages, cursor = [], None
    while True:
        page, cursor = await history.calls_for(user, limit=limit, before=cursor)
        pages.append(page)
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never reached the end"


# -- record and calls_for -----------------------------------------------------------------------------------


async def test_record_round_trips_exactly(history: CallHistory) -> None:
    """A record comes back equal field by field: exact floats, None, and Outcome/Reason members."""
    awkward = [T0, 1_732_616_400.0, 0.1 + 0.2, math.nextafter(T0, math.inf), 5e-324, 1e300, 1_732_616_400.987654321]
    outcomes = list(Outcome)
    written = [
        call(f"c{i}", at=awkward[i % len(awkward)], outcome=outcomes[i % len(outcomes)], reason=reason)
        for i, reason in enumerate(Reason)
    ]
    written.append(dataclasses.replace(call("all-none", at=awkward[-1]), answered_device=None, hung_up_by=None))
    written.append(
        dataclasses.replace(call("unicode-ĉ✓", "álïce 👩", "bob"), caller_device="", ended_at=math.nextafter(T0, 0))
    )
    for rec in written:
        await history.record(rec)

    found, cursor = await history.calls_for("bob", limit=100)
    found += (await history.calls_for("álïce 👩"))[0]

    assert cursor is None
    by_id = {rec.call_id: rec for rec in found}
    assert by_id == {rec.call_id: rec for rec in written}
    for rec in found:
        assert type(rec.outcome) is Outcome and type(rec.reason) is Reason
        for name in ("ringing_at", "ended_at"):
            assert type(getattr(rec, name)) is float
        assert rec.answered_at is None or type(rec.answered_at) is float


async def test_calls_are_newest_first(history: CallHistory) -> None:
    """calls_for lists by ringing_at descending, whatever order the calls were recorded in."""
    for i in (3, 1, 4, 0, 2):
        await history.record(call(f"c{i}", at=T0 + i))

    page, cursor = await history.calls_for("alice")

    assert [r.call_id for r in page] == ["c4", "c3", "c2", "c1", "c0"]
    assert cursor is None


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 9, 10])
async def test_paging_covers_every_call_once_across_ties(history: CallHistory, limit: int) -> None:
    """Pages follow each other without gaps or repeats, even where ringing_at ties straddle a page boundary."""
    # Ties broken by call_id in code-point order ("B" < "a" < "b"), whatever the database's collation.
    ids_and_times = [
        ("a", T0),
        ("B", T0),
        ("b", T0),
        ("x1", T0 - 1),
        ("x2", T0 - 1),
        ("y", T0 + 1),
        ("Z", T0 - 1),
        ("c", T0),
        ("é", T0),
    ]
    for call_id, at in ids_and_times:
        await history.record(call(call_id, at=at))
    expected = [cid for cid, _ in sorted(ids_and_times, key=lambda p: (p[1], p[0]), reverse=True)]

    pages = await all_calls(history, "alice", limit)

    assert [r.call_id for page in pages for r in page] == expected
    assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= limit  # an exact multiple ends with a full page and no cursor, not an empty one


async def test_empty_history_has_one_empty_page(history: CallHistory) -> None:
    """A user with no calls gets an empty page and no cursor."""
    assert await history.calls_for("nobody") == ([], None)


async def test_user_sees_calls_as_caller_and_callee_but_not_others(history: CallHistory) -> None:
    """calls_for returns the user's calls in either role, a call to oneself once, and never other users' calls."""
    await history.record(call("out", "alice", "bob", at=T0 + 1))
    await history.record(call("in", "carol", "alice", at=T0 + 2))
    await history.record(call("self", "alice", "alice", at=T0 + 3))
    await history.record(call("others", "bob", "carol", at=T0 + 4))
    await history.record(call("prefix", "alice2", "alicia", at=T0 + 5))

    alice, _ = await history.calls_for("alice")
    carol, _ = await history.calls_for("carol")

    assert [r.call_id for r in alice] == ["self", "in", "out"]
    assert [r.call_id for r in carol] == ["others", "in"]


async def test_record_is_idempotent_and_keeps_the_first(history: CallHistory) -> None:
    """Writing a call_id again neither duplicates nor overwrites the first record."""
    first = call("dup", outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT)
    second = dataclasses.replace(first, outcome=Outcome.ANSWERED, ended_at=first.ended_at + 100)

    await history.record(first)
    await history.record(first)
    await history.record(second)

    assert await history.calls_for("bob") == ([first], None)
    assert await taken(history, "bob") == [first]


async def test_concurrent_records_of_one_call_store_it_once(history: CallHistory) -> None:
    """Several writes of the same call at once store it exactly once, without raising."""
    rec = call("race")

    await asyncio.gather(*(history.record(rec) for _ in range(8)))

    assert await history.calls_for("alice") == ([rec], None)


BAD_CURSORS = [
    "",
    "not a cursor!",
    "bm90IGpzb24",  # "not json"
    *(
        base64.urlsafe_b64encode(raw).decode()
        for raw in (
            b'{"a": 1}',
            b"[1.5]",
            b'[1.5, "x", 3]',
            b'["1.5", "x"]',
            b"[1.5, 7]",
            b'[true, "x"]',
            b'[NaN, "x"]',
            b'[Infinity, "x"]',
            b"[" * 5000,
        )
    ),
    base64.urlsafe_b64encode(b'[1.5, "x"]').decode() + "*",
]


async def test_malformed_cursor_raises_value_error(history: CallHistory) -> None:
    """calls_for rejects a cursor it did not make with ValueError."""
    await history.record(call("c1"))

    for cursor in BAD_CURSORS:
        with pytest.raises(ValueError, match="cursor"):
            await history.calls_for("alice", before=cursor)


@pytest.mark.parametrize("limit", [0, -1])
async def test_limit_below_one_raises_value_error(history: CallHistory, limit: int) -> None:
    """calls_for rejects a page size below 1 with ValueError."""
    with pytest.raises(ValueError, match="limit"):
        await history.calls_for("alice", limit=limit)


# -- take_missed --------------------------------------------------------------------------------------------


async def test_take_missed_hands_out_missed_and_unavailable_calls_once(history: CallHistory) -> None:
    """take_missed returns the callee's missed and unavailable calls, oldest first, and never the same one twice."""
    unanswered = [
        call("m2", "carol", "bob", at=T0 + 2, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT),
        call("u1", "alice", "bob", at=T0 + 1, outcome=Outcome.UNAVAILABLE, reason=Reason.USER_UNAVAILABLE),
        call("m3b", "alice", "bob", at=T0 + 3, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT),
        call("m3a", "alice", "bob", at=T0 + 3, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT),
    ]
    others = [
        *(call(f"{o.value}", "alice", "bob", at=T0, outcome=o) for o in Outcome if o not in UNANSWERED),
        call("bob-to-carol", "bob", "carol", outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT),
        call("alice-to-carol", "alice", "carol", outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT),
    ]
    for rec in [*unanswered, *others]:
        await history.record(rec)

    first = await taken(history, "bob")
    again = await taken(history, "bob")

    assert [r.call_id for r in first] == ["u1", "m2", "m3a", "m3b"]
    assert {r.call_id: r for r in first} == {r.call_id: r for r in unanswered}
    assert again == []
    assert [r.call_id for r in await taken(history, "carol")] == ["alice-to-carol", "bob-to-carol"]
    bobs = {r.call_id for r in [*unanswered, *others] if "bob" in (r.caller, r.callee)}
    assert {r.call_id for r in (await history.calls_for("bob", limit=100))[0]} == bobs  # taken, not gone


async def test_take_missed_returns_calls_recorded_after_the_last_take(history: CallHistory) -> None:
    """A missed call recorded after a take_missed comes with the next one, alone."""
    await history.record(call("early", outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT))
    assert [r.call_id for r in await taken(history, "bob")] == ["early"]

    await history.record(call("late", at=T0 + 10, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT))

    assert [r.call_id for r in await taken(history, "bob")] == ["late"]


async def test_missed_call_the_callee_was_notified_of_is_listed_but_never_taken(history: CallHistory) -> None:
    """record(notified=True) keeps the call in calls_for but out of take_missed; the first write's flag stays."""
    seen = call("seen", outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT)
    unseen = call("unseen", at=T0 + 1, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT)
    await history.record(seen, notified=True)
    await history.record(seen)  # a retried write does not make it "new" again
    await history.record(unseen)
    await history.record(unseen, notified=True)  # nor does a late one hide it

    assert [r.call_id for r in (await history.calls_for("bob"))[0]] == ["unseen", "seen"]
    assert [r.call_id for r in await taken(history, "bob")] == ["unseen"]


async def test_screened_calls_round_trip(history: CallHistory) -> None:
    """Each screening is written and read back as the same Screening member (and None as None)."""
    for i, screening in enumerate([*Screening, None]):
        await history.record(dataclasses.replace(call(f"s{i}", "bob", "alice", at=T0 + i), screened=screening))

    found = {r.call_id: r.screened for r in (await history.calls_for("bob", limit=100))[0]}

    assert found == {f"s{i}": screening for i, screening in enumerate([*Screening, None])}
    assert all(s is None or type(s) is Screening for s in found.values())


async def test_screened_calls_are_never_taken_as_missed(history: CallHistory) -> None:
    """A screened unanswered call never comes out of take_missed (it never rang), and takes none of the caller's
    room for missed calls; a silenced one is still in the callee's history."""
    missed = {"outcome": Outcome.MISSED, "reason": Reason.INVITE_TIMEOUT}
    for i, screening in enumerate([*Screening] * 2):
        await history.record(dataclasses.replace(call(f"s{i}", at=T0 + i, **missed), screened=screening))
    await history.record_many(
        [(dataclasses.replace(call("batch", at=T0 + 20, **missed), screened=Screening.SILENCED), False)]
    )
    await history.record(call("plain", at=T0 + 30, **missed))

    assert [r.call_id for r in await taken(history, "bob")] == ["plain"]
    listed = [r.call_id for r in (await history.calls_for("bob", limit=100))[0]]
    assert listed == ["plain", "batch", "s3", "s0"]  # silenced: listed; blocked, refused: not


async def test_calls_hidden_from_the_callee_stay_in_the_callers_history(history: CallHistory) -> None:
    """calls_for leaves out, for the callee only, the calls screened BLOCKED or REFUSED; the caller sees all."""
    for i, screening in enumerate(Screening):
        await history.record(dataclasses.replace(call(f"s{i}", "mallory", "bob", at=T0 + i), screened=screening))
    await history.record(dataclasses.replace(call("back", "bob", "mallory", at=T0 + 9), screened=Screening.BLOCKED))

    mallory = [r.call_id for r in (await history.calls_for("mallory", limit=100))[0]]
    bob = [r.call_id for r in (await history.calls_for("bob", limit=100))[0]]

    assert list(Screening) == [Screening.SILENCED, Screening.BLOCKED, Screening.REFUSED]
    assert mallory == ["s2", "s1", "s0"]  # as the caller all three; as the callee of "back" (blocked) not it
    assert bob == ["back", "s0"]  # the silenced call, and his own call as the caller


async def test_record_many_writes_a_batch_as_record_would_one_by_one(history: CallHistory) -> None:
    """record_many stores every call of the batch exactly once (the first of a repeated call_id wins, within the
    batch and against what is stored), each with its own `notified`."""
    await history.record(call("old", at=T0))
    missed = {"outcome": Outcome.MISSED, "reason": Reason.INVITE_TIMEOUT}
    batch = [
        (call("old", at=T0 + 9), False),  # already stored: unchanged
        (call("seen", at=T0 + 1, **missed), True),
        (call("unseen", at=T0 + 2, **missed), False),
        (call("unseen", at=T0 + 8, **missed), True),  # a repeat inside the batch: the first stays
        *((call(f"b{i:02}", at=T0 + 3 + i / 100), False) for i in range(30)),
    ]
    await history.record_many(batch)
    await history.record_many([])

    stored = {r.call_id: r for page in await all_calls(history, "bob", limit=100) for r in page}
    assert sorted(stored) == sorted({"old", "seen", "unseen", *(f"b{i:02}" for i in range(30))})
    assert stored["old"].ringing_at == T0 and stored["unseen"].ringing_at == T0 + 2
    assert [r.call_id for r in await taken(history, "bob")] == ["unseen"]


async def test_concurrent_take_missed_hands_out_each_call_exactly_once(history: CallHistory) -> None:
    """Several take_missed at once for one user share the missed calls out without duplicates or losses."""
    missed = [
        call(f"m{i:02}", f"c{i}", at=T0 + i, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT) for i in range(20)
    ]
    for rec in missed:
        await history.record(rec)

    results = await asyncio.gather(*(taken(history, "bob") for _ in range(8)))

    handed_out = [r.call_id for result in results for r in result]
    assert sorted(handed_out) == [r.call_id for r in missed]
    assert await taken(history, "bob") == []


async def test_concurrent_take_missed_from_two_stores_hands_out_each_call_once(durable_url: str) -> None:
    """Two store instances on one database (two servers) never both hand out the same missed call."""
    stores = [open_history(durable_url), open_history(durable_url)]
    for store in stores:
        await store.open()
    try:
        missed = [
            call(f"m{i:02}", f"c{i}", at=T0 + i, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT)
            for i in range(30)
        ]
        for rec in missed:
            await stores[0].record(rec)

        results = await asyncio.gather(*(taken(stores[i % 2], "bob") for i in range(8)))

        assert sorted(r.call_id for result in results for r in result) == [r.call_id for r in missed]
    finally:
        for store in stores:
            await store.close()


async def test_take_missed_returns_the_newest_and_how_many_it_took(history: CallHistory) -> None:
    """take_missed takes every missed call at once but returns only the newest `limit` of them, oldest first,
    with the count of all it took."""
    missed = [
        call(f"m{i:02}", f"c{i}", at=T0 + i, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT) for i in range(60)
    ]
    await history.record_many([(rec, False) for rec in missed])

    records, total = await history.take_missed("bob")

    assert total == 60
    assert [r.call_id for r in records] == [f"m{i:02}" for i in range(10, 60)]  # MISSED_SHOWN = 50
    assert await history.take_missed("bob", limit=5) == ([], 0)
    with pytest.raises(ValueError, match="limit"):
        await history.take_missed("bob", limit=0)


async def test_one_caller_leaves_at_most_three_missed_calls(history: CallHistory) -> None:
    """A caller's unanswered calls beyond 3 not yet taken are kept in the history but never handed out by
    take_missed, whether written one by one or in a batch; once taken, there is room for 3 more."""
    missed = {"outcome": Outcome.MISSED, "reason": Reason.INVITE_TIMEOUT}
    unavailable = {"outcome": Outcome.UNAVAILABLE, "reason": Reason.USER_UNAVAILABLE}
    for i in range(5):
        await history.record(call(f"a{i}", "mallory", "bob", at=T0 + i, **missed))
    await history.record_many(
        [(call(f"b{i}", "mallory", "bob", at=T0 + 10 + i, **unavailable), False) for i in range(30)]
    )
    await history.record(call("carol", "carol", "bob", at=T0 + 50, **missed))
    await history.record(call("answered", "mallory", "bob", at=T0 + 51))

    assert [r.call_id for r in await taken(history, "bob")] == ["a0", "a1", "a2", "carol"]
    assert len(await all_calls(history, "bob", limit=1000)) == 1  # one page
    assert len((await all_calls(history, "bob", limit=1000))[0]) == 37  # every call is in the history
    await history.record(call("later", "mallory", "bob", at=T0 + 60, **missed))
    assert [r.call_id for r in await taken(history, "bob")] == ["later"]


async def test_delete_ended_before_deletes_old_calls_in_bounded_batches(history: CallHistory) -> None:
    """delete_ended_before deletes at most `limit` calls that ended before the cutoff, oldest first, and nothing
    newer; a missed call deleted before it was taken is gone from take_missed too."""
    for i in range(7):
        await history.record(call(f"old{i}", f"c{i}", at=T0 + i, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT))
    await history.record(call("new", at=T0 + 1000))
    cutoff = T0 + 1000  # every `old` ended (rang + 60.25 s) before it; `new` after

    assert await history.delete_ended_before(cutoff, limit=3) == 3
    assert await history.delete_ended_before(cutoff, limit=3) == 3
    assert await history.delete_ended_before(cutoff, limit=3) == 1
    assert await history.delete_ended_before(cutoff, limit=3) == 0
    assert [r.call_id for r in (await history.calls_for("bob"))[0]] == ["new"]
    assert await taken(history, "bob") == []
    with pytest.raises(ValueError, match="limit"):
        await history.delete_ended_before(cutoff, limit=0)


# -- call summaries ------------------------------------------------------------------------------------------


async def test_quality_summaries_are_kept_per_party(history: CallHistory) -> None:
    """Each party's call summary is kept with the record under its id; a second one from a party changes nothing
    (one per party: in a cluster, a repeat sent through another node than the first reaches the store)."""
    await history.record(call("q1"))
    assert await history.add_quality("q1", "alice", {"mos": 4.1, "path": "direct"})
    assert await history.add_quality("q1", "bob", {"mos": 3.9, "lossPct": 0.5})
    assert await history.add_quality("q1", "alice", {"mos": 1.2, "path": "relayed"})
    (rec,), _ = await history.calls_for("alice")
    assert rec.quality == {"alice": {"mos": 4.1, "path": "direct"}, "bob": {"mos": 3.9, "lossPct": 0.5}}
    assert rec.to_json()["quality"] == rec.quality


async def test_quality_for_an_unknown_call_changes_nothing(history: CallHistory) -> None:
    """A summary for a call that is not recorded returns False and stores nothing."""
    assert not await history.add_quality("nope", "alice", {"mos": 4.0})
    assert await history.calls_for("alice") == ([], None)


async def test_concurrent_summaries_of_both_parties_are_both_kept(history: CallHistory) -> None:
    """The two parties' summaries arriving at once are both kept (no lost update)."""
    await history.record(call("q2"))
    await asyncio.gather(*(history.add_quality("q2", who, {"mos": float(i)}) for i, who in enumerate(["alice", "bob"])))
    (rec,), _ = await history.calls_for("bob")
    assert rec.quality == {"alice": {"mos": 0.0}, "bob": {"mos": 1.0}}


# -- opening, schema and URLs -------------------------------------------------------------------------------


async def test_reopening_keeps_data_and_schema(durable_url: str) -> None:
    """Opening a store again (twice on one instance, then a new instance) keeps its calls and taken marks."""
    store = open_history(durable_url)
    await store.open()
    await store.open()
    try:
        await store.record(call("kept", outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT))
        await store.record(call("pending", at=T0 + 1, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT))
        assert [r.call_id for r in await taken(store, "bob")] == ["kept", "pending"]
        await store.record(call("new", at=T0 + 2, outcome=Outcome.MISSED, reason=Reason.INVITE_TIMEOUT))
    finally:
        await store.close()

    again = open_history(durable_url)
    await again.open()
    try:
        assert [r.call_id for r in (await again.calls_for("bob"))[0]] == ["new", "pending", "kept"]
        assert [r.call_id for r in await taken(again, "bob")] == ["new"]
    finally:
        await again.close()


async def test_concurrent_first_opens_create_the_schema_once(durable_url: str) -> None:
    """Several stores opening a new database at once all succeed and share one schema."""
    stores = [open_history(durable_url) for _ in range(4)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        await stores[0].record(call("one"))
        assert [r.call_id for r in (await stores[-1].calls_for("alice"))[0]] == ["one"]
    finally:
        for store in stores:
            await store.close()


async def test_schema_from_a_newer_peercall_is_refused(
    durable_url: str, run_sql: Callable[[str, str], Awaitable[None]]
) -> None:
    """open() raises rather than touch a database whose schema version it does not know."""
    store = open_history(durable_url)
    await store.open()
    await store.close()
    await run_sql(durable_url, "INSERT INTO schema_version (version) VALUES (999)")

    with pytest.raises(RuntimeError, match="version 999"):
        await store.open()
    await store.close()


async def test_sqlite_creates_the_missing_parent_directory(tmp_path: Path) -> None:
    """A sqlite:/// URL whose directories don't exist yet gets them on open()."""
    path = tmp_path / "does" / "not" / "exist" / "history.sqlite3"
    store = open_history(f"sqlite:///{path}")

    await store.open()
    await store.record(call("c1"))
    await store.close()

    assert path.is_file()


async def test_sqlite_makes_a_new_folder_private(tmp_path: Path) -> None:
    """The folder open() creates for a SQLite file is readable by its user only (0700): the history is private."""
    path = tmp_path / "data" / "peercall" / "history.sqlite3"
    store = open_history(f"sqlite:///{path}")

    await store.open()
    await store.close()

    assert path.parent.stat().st_mode & 0o777 == 0o700


async def test_sqlite_file_is_switched_to_wal(tmp_path: Path) -> None:
    """open() puts a SQLite file in write-ahead-log mode, so readers elsewhere don't block writes."""
    path = tmp_path / "history.sqlite3"
    store = open_history(f"sqlite:///{path}")

    await store.open()
    await store.close()

    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///var/history.sqlite3 (three slashes) names a file under the working directory."""
    monkeypatch.chdir(tmp_path)
    store = open_history("sqlite:///var/history.sqlite3")

    await store.open()
    await store.close()

    assert (tmp_path / "var" / "history.sqlite3").is_file()


async def test_postgres_scheme_alias_opens_the_same_database(postgres_url: str) -> None:
    """postgres:// and postgresql:// name the same database."""
    rest = postgres_url.partition("://")[2]
    long, short = open_history(f"postgresql://{rest}"), open_history(f"postgres://{rest}")
    await long.open()
    await short.open()
    try:
        await long.record(call("c1"))
        assert [r.call_id for r in (await short.calls_for("alice"))[0]] == ["c1"]
    finally:
        await long.close()
        await short.close()


async def test_memory_scheme_gives_a_fresh_store_each_time() -> None:
    """Each open_history("memory://") is its own empty store."""
    first, second = open_history("memory://"), open_history("memory://")
    await first.open()
    await second.open()

    await first.record(call("c1"))

    assert (await second.calls_for("alice"))[0] == []


@pytest.mark.parametrize(
    "url",
    ["redis://localhost", "mysql://u:hunter2@db/x", "sqlite", "", "/var/lib/history.sqlite3", "file:///x.db"],
)
def test_unknown_scheme_raises_value_error_naming_the_accepted_ones(url: str) -> None:
    """open_history rejects other schemes with a ValueError that lists the accepted ones and hides passwords."""
    with pytest.raises(ValueError, match="unsupported call history URL") as exc:
        open_history(url)

    for accepted in ("memory://", "sqlite:///", "postgresql://", "postgres://"):
        assert accepted in str(exc.value)
    assert "hunter2" not in str(exc.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://history.sqlite3", "sqlite:history.sqlite3"])
def test_sqlite_url_without_a_path_raises_value_error(url: str) -> None:
    """A SQLite URL that names no file is refused rather than silently opened in memory."""
    with pytest.raises(ValueError, match="sqlite:///"):
        open_history(url)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so no one else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_unreachable_database_raises_from_open() -> None:
    """A database that cannot be reached makes open() raise, for the caller to log; it is not swallowed."""
    with closed_port() as port:
        store = open_history(f"postgresql://postgres@127.0.0.1:{port}/nothing")
        with pytest.raises(OSError):
            await store.open()
        await store.close()


async def test_the_calls_a_node_keeps_are_taken_once_by_that_node(history: CallHistory) -> None:
    """What a node keeps as it stops is handed back once, to that node only; keeping again replaces it."""
    assert await history.take_calls("local") is None
    await history.keep_calls("local", b'[{"id":"old"}]')
    await history.keep_calls("local", b'[{"id":"c1"},{"id":"c2"}]')
    await history.keep_calls("n2", b"[]")
    assert await history.take_calls("local") == b'[{"id":"c1"},{"id":"c2"}]'
    assert await history.take_calls("local") is None
    assert await history.take_calls("n2") == b"[]"


async def test_the_calls_a_node_keeps_outlive_the_store_being_closed(durable_url: str) -> None:
    """A node keeps its calls as it stops and closes the store; the next process to open it takes them."""
    store = open_history(durable_url)
    await store.open()
    await store.keep_calls("local", b'[{"id":"c1"}]')
    await store.close()
    again = open_history(durable_url)
    await again.open()
    try:
        assert await again.take_calls("local") == b'[{"id":"c1"}]'
    finally:
        await again.close()
