"""What the JSON HTTP APIs (accounts, push, call history) share: the error body, refusals, reading a body.

Every error is `{"error": {"code": "...", "message": "..."}}` (docs/protocol.md, "HTTP errors"), never cached."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..protocol.messages import MAX_DEPTH, nested_deeper_than

NO_STORE = {"cache-control": "no-store"}


class Refusal(Exception):
    """A request an API refuses: the status, the code and the message of its error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers={**NO_STORE, **(headers or {})}
    )


def refused(refusal: Refusal) -> Response:
    return error_response(refusal.status, refusal.code, refusal.message, refusal.headers)


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


async def json_object(request: Request, max_body: int) -> dict[str, Any]:
    """The request's body, a JSON object (an empty body is `{}`). Reads at most `max_body` bytes: a larger body is
    refused (413 too-large) as soon as it is, not read to its end; anything but an object is 400 bad-request, and so
    is one nested more than MAX_DEPTH deep, refused before it is decoded: a body of ten thousand `[` made the
    decoder recurse to Python's limit (a 500 and two tracebacks in the log, from anyone). Decoded by msgspec, as the
    WebSocket frames are: strict JSON (no `NaN`), and no lone surrogate (`"\\ud800"`), which Python's `json` let
    through to fail later in a store that encodes it (a 500 and two tracebacks, from anyone, at the passkey
    sign-in).

    A body that is not whole within PEERCALL_HEAD_TIMEOUT of its head is answered 408 `body-timeout` by the HTTP
    protocol (server/fastws.py), which closes the connection; this then raises a Refusal that no one hears, as it
    does for a client that goes away mid-body (not the traceback of Starlette's ClientDisconnect)."""
    data = b""
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body:
                raise Refusal(413, "too-large", f"the body is larger than {max_body} bytes")
    except ClientDisconnect:
        raise Refusal(408, "body-timeout", "the connection closed before the whole body came") from None
    # bytes that are not UTF-8 are refused by the decoder below; here they only must not hide brackets
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and nested_deeper_than(data.decode(errors="replace")):
        raise Refusal(400, "bad-request", f"the body must be a JSON object nested at most {MAX_DEPTH} deep")
    try:
        body = msgspec.json.decode(data or b"{}")
    except (msgspec.DecodeError, RecursionError):  # RecursionError: should the count above ever miss a depth
        raise Refusal(400, "bad-request", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Refusal(400, "bad-request", "the body must be a JSON object")
    return body
