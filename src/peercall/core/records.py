"""What the history keeps of one call: written once, when the call ends."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """How a call ended, from the user's point of view."""

    ANSWERED = "answered"  # it was answered (and then ended)
    REJECTED = "rejected"  # the callee declined
    CANCELLED = "cancelled"  # the caller gave up while it rang
    MISSED = "missed"  # nobody answered before the ring timeout
    BUSY = "busy"  # the callee was in another call
    UNAVAILABLE = "unavailable"  # the callee was not online
    FAILED = "failed"  # answered, but media never connected (ICE or microphone failure)


class Reason(StrEnum):
    """Why a call ended: Matrix's hangup reasons in kebab-case, plus peercall's own."""

    USER_HANGUP = "user-hangup"
    USER_BUSY = "user-busy"
    INVITE_TIMEOUT = "invite-timeout"
    ICE_FAILED = "ice-failed"
    ICE_TIMEOUT = "ice-timeout"
    USER_MEDIA_FAILED = "user-media-failed"
    UNKNOWN_ERROR = "unknown-error"
    PEER_LOST = "peer-lost"  # a party's connection dropped and did not come back within the grace period
    USER_REJECTED = "user-rejected"  # the callee declined
    ANSWERED_ELSEWHERE = "answered-elsewhere"  # sent to the callee's other devices when one accepts
    USER_UNAVAILABLE = "user-unavailable"  # nobody by that id was online


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

    def to_json(self) -> dict[str, object]:
        """The record as the HTTP API and the `missed-calls` frame show it (camelCase keys)."""
        return {
            "callId": self.call_id,
            "caller": self.caller,
            "callee": self.callee,
            "callerDevice": self.caller_device,
            "answeredDevice": self.answered_device,
            "ringingAt": self.ringing_at,
            "answeredAt": self.answered_at,
            "endedAt": self.ended_at,
            "outcome": self.outcome.value,
            "reason": self.reason.value,
            "hungUpBy": self.hung_up_by,
            "duration": None if self.answered_at is None else round(self.ended_at - self.answered_at, 3),
            "quality": self.quality,
        }
