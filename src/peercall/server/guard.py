"""The web guard: which Host a request may name (against DNS rebinding), and the security headers of every HTTP
response.

A page on `evil.test` whose name the attacker re-points at this server's address (DNS rebinding) makes the browser
send `Host: evil.test` and `Origin: http://evil.test`: the same origin as far as the browser is concerned. Only the
Host tells such a request apart, so every HTTP route (`WebGuard`) and the `/ws` upgrade (server/session.py) refuse
a Host that is not allowed (`PEERCALL_ALLOWED_HOSTS`; by default this machine's names and addresses, as the
self-signed certificate lists them: server/tls.py). A request without a Host (HTTP/1.0) cannot come from a browser
and is let through.

Owns no state but the allowed names; imports nothing of the hub or the transports.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from .tls import machine_names

if TYPE_CHECKING:
    from ..config import Settings


def content_security_policy(frame_ancestors: str = "'none'") -> str:
    """The web client's policy; `frame_ancestors` says who may show the page in a frame (no one by default)."""
    return (
        "default-src 'self'; script-src 'self'; connect-src 'self'; media-src 'self' blob:; "
        f"img-src 'self' data:; style-src 'self'; frame-ancestors {frame_ancestors}; base-uri 'none'; "
        "form-action 'self'"
    )


CONTENT_SECURITY_POLICY = content_security_policy()
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
"""Added to every HTTP response (the web client works under this policy: no inline script or style, no eval).
A response that brings its own content-security-policy (the embed page: server/webapp.py) decides its framing
itself: it gets neither this policy nor X-Frame-Options."""

BAD_HOST_STATUS = 421  # Misdirected Request: "this server is not configured to answer for that name"


def host_name(header: str) -> str:
    """The name in a Host header, without its port, lower-case, without a trailing dot: `[::1]:8080` -> `::1`.

    Only a port (digits, RFC 3986) may follow the name: anything else leaves the text whole, which names no allowed
    host (`[::1]evil.test` was taken for `::1`)."""
    text = header.strip().lower()
    if text.startswith("["):
        name, bracket, port = text[1:].partition("]")
        return name if bracket and _port(port) else text
    if text.count(":") == 1:
        name, _, port = text.partition(":")
        if not _port(":" + port):
            return text
        text = name
    return text.rstrip(".")


def _port(after: str) -> bool:
    """Whether what follows a Host's name is nothing, or `:` and a port (digits, maybe none)."""
    port = after[1:]
    return not after or (after[0] == ":" and (not port or (port.isascii() and port.isdigit())))


@functools.cache
def _allowed(configured: tuple[str, ...], listen: str) -> frozenset[str] | None:
    if "*" in configured:
        return None
    if configured:
        return frozenset(host_name(name) for name in configured)
    names, addresses = machine_names()
    found = {host_name(n) for n in names} | set(addresses)
    try:
        if not ipaddress.ip_address(listen).is_unspecified:
            found.add(listen)
    except ValueError:  # a name to listen on
        found.add(host_name(listen))
    return frozenset(found)


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The names a Host may give (None: any), from `PEERCALL_ALLOWED_HOSTS` or this machine's names. Worked out
    once (it asks the system for the interfaces' addresses): call it at startup."""
    return _allowed(tuple(settings.allowed_hosts), settings.host)


def host_allowed(settings: Settings, header: str | None) -> bool:
    """Whether a request naming `header` as its Host (None: it sent none) may be served."""
    allowed = allowed_hosts(settings)
    return header is None or allowed is None or host_name(header) in allowed


def bad_host_message(header: str) -> str:
    return (
        f"this server does not answer for the host {header[:100]!r}; its operator may add it to PEERCALL_ALLOWED_HOSTS"
    )


class WebGuard:
    """ASGI middleware around the HTTP app: refuses a Host that is not allowed (421, JSON body) and adds
    `SECURITY_HEADERS` to every response, errors and refusals included."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        allowed_hosts(settings)  # now, not on the first request

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if not host_allowed(self.settings, host):
            assert host is not None
            body = json.dumps({"error": {"code": "bad-host", "message": bad_host_message(host)}}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": BAD_HOST_STATUS,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *SECURITY_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                framing = b"content-security-policy" in present  # then X-Frame-Options would contradict it
                skip = present | ({b"x-frame-options"} if framing else set())
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in skip]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
