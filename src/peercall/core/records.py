"""What the history keeps of one call: written once, when the call ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol.codes import Outcome, Reason
from .social import Screening

__all__ = ["CallRecord", "Outcome", "Reason"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One ended call. Times are Unix seconds (float)."""

    call_id: str
    caller: str
    callee: str
    caller_device: str
    answered_device: str | None
    ringing_at: float
    answered_at: float | None
    ended_at: float
    outcome: Outcome
    reason: Reason
    hung_up_by: str | None
    """The user whose action ended the call (hangup, reject, cancel); None when the server ended it."""
    quality: dict[str, dict[str, Any]] | None = None
    """What each party's client reported of the call after it ended (`call-summary`), by user id."""
    screened: Screening | None = None
    """Why the call did not ring although it could have (core/social.py): shown to the callee only (`to_json`),
    and a call `HIDDEN_FROM_CALLEE` not even to them. None: it was not screened."""

    def to_json(self, viewer: str | None = None, *, devices: bool = True) -> dict[str, object]:
        """The record as the HTTP API and the `missed-calls` frame show it (camelCase keys).

        `"screened"` is there only when `viewer` is the callee and the call was screened: for the caller (and
        anyone else) the record looks exactly like a call to someone offline or not answering.

        A party's device id is shown to that party only (`viewer`), and to nobody with `devices=False` (open mode,
        where anyone may read the history of any id): a device id is what takes over a device and its call
        (`?device=`), so it is kept from anyone who could use it to step into someone else's call.
        """
        shown: dict[str, object] = {
            "callId": self.call_id,
            "caller": self.caller,
            "callee": self.callee,
            "callerDevice": self.caller_device if devices and viewer == self.caller else None,
            "answeredDevice": self.answered_device if devices and viewer == self.callee else None,
            "ringingAt": self.ringing_at,
            "answeredAt": self.answered_at,
            "endedAt": self.ended_at,
            "outcome": self.outcome.value,
            "reason": self.reason.value,
            "hungUpBy": self.hung_up_by,
            "duration": None if self.answered_at is None else round(self.ended_at - self.answered_at, 3),
            "quality": self.quality,
        }
        if self.screened is not None and viewer is not None and viewer == self.callee:
            shown["screened"] = self.screened.value
        return shown
