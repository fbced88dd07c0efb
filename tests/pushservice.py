"""A push service on loopback for the tests (RFC 8030's receiving end, as far as peercall uses it), and a browser's
side of a subscription: keys made here, pushes decrypted here (RFC 8291, `http_ece`)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Subscriber:
    """A browser's push subscription: its endpoint on the test service, and the private keys that decrypt."""

    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def json(self) -> dict[str, Any]:
        """What the browser's `PushSubscription.toJSON()` gives."""
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }

    def decrypt(self, push: Received) -> dict[str, Any]:
        assert push.headers["content-encoding"] == "aes128gcm"
        plain = http_ece.decrypt(push.body, private_key=self.key, auth_secret=self.auth, version="aes128gcm")
        return json.loads(plain)  # type: ignore[no-any-return]


class PushService:
    """Accepts every push (201), or answers `status[path]`; keeps what it got."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status: dict[str, int] = {}
        self.changed = threading.Condition()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with service.changed:
                    service.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    service.changed.notify_all()
                self.send_response(service.status.get(self.path, 201))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def subscriber(self) -> Subscriber:
        return Subscriber(f"{self.origin}/push/{secrets.token_hex(8)}")

    def wait(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The first `count` pushes to `path`, waiting for them (blocking: use `asyncio.to_thread`)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                got = [r for r in self.received if r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} pushes to {path}, expected {count}")
                self.changed.wait(left)


@contextlib.contextmanager
def push_service() -> Iterator[PushService]:
    service = PushService()
    thread = threading.Thread(target=service.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.server.shutdown()
        service.server.server_close()
        thread.join(5)
