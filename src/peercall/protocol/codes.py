"""Stable codes of protocol v1: how a call ended and why, error codes and WebSocket close codes (docs/protocol.md
lists them all).

Close codes follow one rule that clients rely on without a list (static/js/signaling.js, client/signaling.py):
4000-4499 means "you may reconnect" (with backoff), like 1001 and 1013; 4500-4999 is terminal, "do not reconnect
as you are" (4501: a newer connection of the same device took over, and reconnecting would retire it in turn).
One exception, 4401: the token was refused, so a client first gets a new one (the same token would be refused
again).
"""

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """The `code` of an `error` frame. The connection stays open after every one of them."""

    BAD_JSON = "bad-json"  # the frame is not valid JSON text
    BAD_MESSAGE = "bad-message"  # valid JSON, but not a valid message (missing/invalid field, binary frame…)
    UNKNOWN_TYPE = "unknown-type"  # `type` is not one a client may send
    TOO_LARGE = "too-large"  # the frame is larger than the server's limit
    UNAVAILABLE = "unavailable"  # the target user is not online
    NOT_IN_CALL = "not-in-call"  # the frame needs a call this connection is a party of (or rings for)
    IN_CALL = "in-call"  # a call-request while this user already has a call going
    RATE_LIMITED = "rate-limited"  # too many frames, or call requests, too fast: this one was dropped
    UNAUTHORIZED = "unauthorized"  # the token is missing or not acceptable (sent just before close 4401)
    SERVICE_UNAVAILABLE = "service-unavailable"  # the server cannot reach its shared state (Redis): try again soon
    TOO_MANY = "too-many"  # a contact operation would take a list over its bound (contacts, requests, blocked)
    NOT_ALLOWED = "not-allowed"  # `directory` while the server shows presence to contacts only


class CloseCode(IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down or restarting: reconnect with backoff
    MESSAGE_TOO_BIG = 1009  # a frame above the hard limit (4 x max message size); smaller ones get `too-large`
    INTERNAL_ERROR = 1011  # a bug on our side, logged with its traceback
    TRY_AGAIN_LATER = 1013  # the server cannot reach its shared state (Redis) now: reconnect with backoff
    UNAUTHORIZED = 4401  # no valid token (or none in time): get a new token, then reconnect
    SLOW_CONSUMER = 4420  # the client read too slowly and its send buffer overflowed
    RATE_LIMITED = 4429  # the client kept sending faster than its rate limit
    TOO_MANY_CONNECTIONS = 4430  # the user or address has too many connections open
    REPLACED = 4501  # terminal: the same device connected again; this older connection is retired


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
