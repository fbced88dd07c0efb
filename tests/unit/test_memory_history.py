"""memory:// keeps an index of each callee's missed calls not taken yet, so `take_missed` (at every connect) reads
only those; the index must not keep anything once the calls are taken or pruned."""

from __future__ import annotations

from peercall.core.records import CallRecord, Outcome, Reason
from peercall.store.memory import MemoryHistory


def missed(call_id: str, caller: str, callee: str, at: float) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        caller=caller,
        callee=callee,
        caller_device=f"{caller}-laptop",
        answered_device=None,
        ringing_at=at,
        answered_at=None,
        ended_at=at + 30,
        outcome=Outcome.MISSED,
        reason=Reason.INVITE_TIMEOUT,
        hung_up_by=None,
    )


async def test_take_missed_reads_the_index_and_empties_it() -> None:
    history = MemoryHistory()
    for i in range(2000):  # other users' calls: not read by bob's take
        await history.record(missed(f"other-{i}", "alice", f"user-{i}", float(i)))
    await history.record(missed("b2", "carol", "bob", 20.0))
    await history.record(missed("b1", "alice", "bob", 10.0))
    records, total = await history.take_missed("bob")
    assert [r.call_id for r in records] == ["b1", "b2"] and total == 2
    assert "bob" not in history._missed and ("bob", "alice") not in history._waiting
    assert await history.take_missed("bob") == ([], 0)
    assert await history.take_missed("nobody") == ([], 0)
    assert "nobody" not in history._missed


async def test_pruned_missed_calls_leave_the_index() -> None:
    history = MemoryHistory()
    await history.record(missed("old", "alice", "bob", 0.0))
    assert await history.delete_ended_before(1000.0) == 1
    assert "bob" not in history._missed and not history._waiting
    assert await history.take_missed("bob") == ([], 0)
