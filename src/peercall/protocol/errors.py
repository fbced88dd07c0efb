"""The error tree. Every error the server reports to a client is a PeercallError with a stable wire code."""

from __future__ import annotations

from .codes import ErrorCode

ECHO_LIMIT = 64
"""Characters of a client's own input that an error echoes (in `ref`, in its message, in the log line)."""
MESSAGE_LIMIT = 300
"""Characters of an error's message at most, whatever it quotes."""


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text`, cut to `limit` characters with an ellipsis when it is longer: what an error echoes of a client's
    input, so that a 60 KB `type` costs 64 characters in the reply and the log, not 60 KB."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PeercallError(Exception):
    """Base of every peercall error; `code` is what the client sees in an `error` frame."""

    code: ErrorCode = ErrorCode.BAD_MESSAGE
    retryable: bool = False


class ProtocolError(PeercallError):
    """The peer sent something wrong. It gets an `error` frame; its connection stays open and keeps working.

    `ref` is the `type` of the offending frame when it could be read, `to` and `call_id` are echoed back so that
    a client can tell which of its requests failed.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: str | None = None,
        to: str | None = None,
        call_id: str | None = None,
    ) -> None:
        message = shorten(message, MESSAGE_LIMIT)
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref if ref is None else shorten(ref)
        self.to = to
        self.call_id = call_id
        self.retryable = code in (ErrorCode.UNAVAILABLE, ErrorCode.SERVICE_UNAVAILABLE)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class SharedStateUnavailable(Exception):
    """Several nodes: Redis cannot be reached (or an event met too much contention), so nothing was changed."""


class SharedStateInDoubt(SharedStateUnavailable):
    """Several nodes: the connection to Redis went while Redis was being asked to end or answer a call, so it may
    have done it. The node finds out when Redis is back and, if it did, carries it out then (the parties told, the
    history written), as if the reply had come."""
