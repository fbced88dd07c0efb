"""CallRecord.to_json: what each viewer is shown of a screened call."""

from __future__ import annotations

import dataclasses

import pytest

from peercall.core.records import CallRecord, Outcome, Reason
from peercall.core.social import Screening

PLAIN = CallRecord(
    call_id="c1",
    caller="alice",
    callee="bob",
    caller_device="tab",
    answered_device=None,
    ringing_at=10.0,
    answered_at=None,
    ended_at=55.0,
    outcome=Outcome.MISSED,
    reason=Reason.INVITE_TIMEOUT,
    hung_up_by=None,
)


@pytest.mark.parametrize("screening", list(Screening))
def test_only_the_callee_is_shown_the_screening(screening: Screening) -> None:
    """The callee's record says `screened`; the caller's is exactly that of a call nobody answered."""
    rec = dataclasses.replace(PLAIN, screened=screening)

    assert rec.to_json(viewer="bob") == {**PLAIN.to_json(viewer="bob"), "screened": screening.value}
    assert rec.to_json(viewer="alice") == PLAIN.to_json(viewer="alice")
    assert rec.to_json() == PLAIN.to_json()
    assert "screened" not in rec.to_json(viewer="carol")


def test_a_call_not_screened_has_no_screened_key() -> None:
    """A call that was not screened looks as before contacts came, to everyone."""
    assert "screened" not in PLAIN.to_json(viewer="bob")
