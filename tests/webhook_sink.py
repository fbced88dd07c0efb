"""A webhook endpoint for the tests: a small HTTP server on 127.0.0.1 (in a thread) that verifies every POST with
the stock Standard Webhooks library, as an operator's endpoint would, and keeps what it got."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
"""PEERCALL_WEBHOOK_SECRET of the test servers (a new one per test session)."""


@dataclass
class Delivery:
    """One POST the sink received: its headers, its body as JSON, whether the signature verified, what it
    answered."""

    headers: dict[str, str]
    event: dict[str, Any]
    verified: bool
    status: int


class Sink:
    """`url` receives webhooks. `answers`: statuses to answer the next POSTs with, in order (then 204)."""

    def __init__(self, secret: str = SECRET) -> None:
        self.verifier = Webhook(secret)
        self.answers: list[int] = []
        self.deliveries: list[Delivery] = []
        self.changed = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    event = sink.verifier.verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    event, verified = json.loads(body), False
                with sink.changed:
                    status = sink.answers.pop(0) if sink.answers else 204
                    sink.deliveries.append(Delivery(headers, event, verified, status))
                    sink.changed.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/peercall"

    def events(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """The events received and answered 2xx (of `call_id`, if given), in the order they came."""
        with self.changed:
            return [
                d.event
                for d in self.deliveries
                if 200 <= d.status < 300 and (call_id is None or d.event["data"]["callId"] == call_id)
            ]

    def wait(self, count: int, call_id: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until `count` events (of `call_id`) were received and answered 2xx; returns them all. Blocking:
        from async code, use `asyncio.to_thread`."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.events(call_id)) >= count, timeout)
        return self.events(call_id)

    def no_more(self, count: int, call_id: str | None = None, within: float = 1.0) -> None:
        """Assert that no event beyond the `count` received (of `call_id`) comes within `within` seconds: a retry
        of a delivered event, or the same event from another node. Blocking, like `wait`."""
        with self.changed:
            more = self.changed.wait_for(lambda: len(self.events(call_id)) > count, within)
        assert not more, f"more than {count} events: {self.events(call_id)}"


@contextlib.contextmanager
def running_sink(secret: str = SECRET) -> Iterator[Sink]:
    sink = Sink(secret)
    sink.thread.start()
    try:
        yield sink
    finally:
        sink.server.shutdown()
        sink.server.server_close()
