"""Webhook events (hub/webhooks.py, pure part): what each call event says, how it is signed, how retries are spaced,
and the settings (no server, no event loop)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from peercall.config import Settings
from peercall.core.records import CallRecord, Outcome, Reason
from peercall.core.social import Screening
from peercall.core.switchboard import CallEvent, CallState, Record
from peercall.hub.webhooks import MAX_DELAY, backoff, event_of, headers
from peercall.server.run import banner

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"x" * 24).decode()

ANSWERED = CallRecord(
    call_id="0123abcd4567ef89",
    caller="alice",
    callee="bob",
    caller_device="alice-laptop",
    answered_device="bob-phone",
    ringing_at=1_700_000_000.0,
    answered_at=1_700_000_004.5,
    ended_at=1_700_000_065.25,
    outcome=Outcome.ANSWERED,
    reason=Reason.USER_HANGUP,
    hung_up_by="bob",
    quality={"alice": {"mos": 4.2}},
)
MISSED = dataclasses.replace(
    ANSWERED,
    answered_device=None,
    answered_at=None,
    ended_at=1_700_000_045.0,
    outcome=Outcome.MISSED,
    reason=Reason.INVITE_TIMEOUT,
    hung_up_by=None,
    quality=None,
)


def body(effect: CallEvent | Record) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(event_of(effect).body)
    return parsed


def test_ringing_and_answered_say_who_and_when() -> None:
    """`call.ringing` / `call.answered`: id, type, ISO timestamp of the transition, and the two parties."""
    ringing = body(CallEvent(CallState.RINGING, "0123abcd4567ef89", "alice", "bob", 1_700_000_000.0))
    assert ringing == {
        "id": "0123abcd4567ef89-ringing",
        "type": "call.ringing",
        "timestamp": "2023-11-14T22:13:20.000Z",
        "data": {"callId": "0123abcd4567ef89", "caller": "alice", "callee": "bob"},
    }
    answered = body(CallEvent(CallState.ANSWERED, "0123abcd4567ef89", "alice", "bob", 1_700_000_004.5))
    assert (answered["id"], answered["type"], answered["timestamp"]) == (
        "0123abcd4567ef89-answered",
        "call.answered",
        "2023-11-14T22:13:24.500Z",
    )


def test_an_ended_call_says_outcome_reason_and_duration_and_no_device_or_quality() -> None:
    """`call.ended` carries the history's fields but devices and call summaries."""
    ended = body(Record(ANSWERED))
    assert ended["id"] == "0123abcd4567ef89-ended" and ended["type"] == "call.ended"
    assert ended["timestamp"] == "2023-11-14T22:14:25.250Z"
    assert ended["data"] == {
        "callId": "0123abcd4567ef89",
        "caller": "alice",
        "callee": "bob",
        "outcome": "answered",
        "reason": "user-hangup",
        "ringingAt": 1_700_000_000.0,
        "answeredAt": 1_700_000_004.5,
        "endedAt": 1_700_000_065.25,
        "duration": 60.75,
        "hungUpBy": "bob",
    }
    assert "laptop" not in event_of(Record(ANSWERED)).body.decode()


@pytest.mark.parametrize(
    ("outcome", "kind"),
    [
        (Outcome.MISSED, "call.missed"),
        (Outcome.UNAVAILABLE, "call.missed"),
        (Outcome.REJECTED, "call.ended"),
        (Outcome.CANCELLED, "call.ended"),
        (Outcome.BUSY, "call.ended"),
        (Outcome.FAILED, "call.ended"),
    ],
)
def test_missed_is_what_the_history_hands_out_as_missed(outcome: Outcome, kind: str) -> None:
    """Not answered before the ring timeout, or to someone offline: `call.missed`; any other end: `call.ended`."""
    event = event_of(Record(dataclasses.replace(MISSED, outcome=outcome)))
    assert event.type == kind
    assert event.id == f"0123abcd4567ef89-{kind.removeprefix('call.')}"
    assert json.loads(event.body)["data"]["duration"] is None


@pytest.mark.parametrize("screening", list(Screening))
def test_a_screened_call_is_never_missed_and_says_why(screening: Screening) -> None:
    """A blocked, refused or silenced call ends as `call.ended` with `screened`: a missed-call mail can't leak it."""
    event = event_of(Record(dataclasses.replace(MISSED, screened=screening)))
    data = json.loads(event.body)["data"]
    assert event.type == "call.ended"
    assert (data["outcome"], data["screened"]) == ("missed", screening.value)
    assert "screened" not in json.loads(event_of(Record(MISSED)).body)["data"]


def test_the_signature_verifies_with_the_standard_webhooks_library() -> None:
    """An operator's stock Standard Webhooks verifier accepts the headers; a changed body or id is refused."""
    event = event_of(Record(MISSED))
    now = int(time.time())
    sent = headers([base64.b64decode(SECRET.removeprefix("whsec_"))], event, now)
    assert (sent["webhook-id"], sent["webhook-timestamp"]) == (event.id, str(now))
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(event.body, sent)["id"] == event.id
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(event.body.replace(b"alice", b"mallory"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(event.body, {**sent, "webhook-id": "0123abcd4567ef89-ended"})
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD_SECRET).verify(event.body, sent)


def test_the_verification_snippet_of_the_docs_works() -> None:
    """docs/webhooks.md's standard-library `verify`, run as written: true for a real delivery, false for a changed
    body, another key or an old timestamp."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    found = re.search(r"<!-- example: verify .*?-->\n```python\n(.*?)```", doc, re.S)
    assert found, "no verify example in docs/webhooks.md"
    scope: dict[str, Any] = {}
    exec(found.group(1), scope)
    verify = scope["verify"]
    event = event_of(Record(ANSWERED))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    sent = headers([key], event, int(time.time()))
    assert verify(SECRET, event.body, sent) is True
    assert verify(SECRET, event.body + b" ", sent) is False
    assert verify(OLD_SECRET, event.body, sent) is False
    assert verify(SECRET, event.body, headers([key], event, int(time.time()) - 600)) is False
    rotating = headers([base64.b64decode(OLD_SECRET.removeprefix("whsec_")), key], event, int(time.time()))
    assert verify(SECRET, event.body, rotating) is True


def test_while_rotating_both_keys_sign() -> None:
    """Two secrets: two signatures, space-separated; a receiver with either key accepts the event."""
    settings = Settings(webhook_urls="http://127.0.0.1:9/hook", webhook_secret=f"{SECRET},{OLD_SECRET}")
    event = event_of(Record(ANSWERED))
    sent = headers(settings.webhook_keys(), event, int(time.time()))
    assert len(sent["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        Webhook(secret).verify(event.body, sent)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    """Each retry waits a random half to all of 1, 2, 4… seconds, at most MAX_DELAY; Retry-After may lengthen it."""
    for attempt in range(1, 8):
        delays = [backoff(attempt) for _ in range(200)]
        ceiling = 2.0 ** (attempt - 1)
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not a fixed schedule
    assert MAX_DELAY / 2 <= backoff(40) <= MAX_DELAY
    assert backoff(1, retry_after=30.0) == 30.0
    assert backoff(1, retry_after=10 * MAX_DELAY) == MAX_DELAY


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"webhook_urls": "https://hooks.example.org/p"}, "webhook_urls needs webhook_secret"),
        ({"webhook_urls": "ftp://hooks.example.org/p", "webhook_secret": SECRET}, "not http:// or https:// URLs"),
        ({"webhook_urls": "https://hooks.example.org:99999/p", "webhook_secret": SECRET}, "not http:// or https://"),
        ({"webhook_secret": "s3cr3t-s3cr3t-s3cr3t-s3cr3t"}, "expected whsec_ and the base64"),
        ({"webhook_secret": "whsec_not*base64"}, "not base64 after whsec_"),
        ({"webhook_secret": "whsec_" + base64.b64encode(b"short").decode()}, "5 bytes after whsec_"),
        ({"webhook_events": "call.missed,call.rang"}, "unknown event types call.rang"),
    ],
)
def test_bad_webhook_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    """A URL without a secret, a secret that is not a Standard Webhooks one, an unknown event type: refused."""
    with pytest.raises(ValidationError, match=message.replace("*", r"\*")):
        Settings(**env)  # type: ignore[arg-type]


def test_the_banner_says_where_webhooks_go_without_their_path_or_credentials() -> None:
    """The start banner names the event types and the endpoints' origins, never a token in a URL."""
    settings = Settings(
        webhook_urls="https://hook:pw@hooks.example.org/p/s3cr3t-path?token=abc,https://hooks.example.org:8443/x",
        webhook_secret=SECRET,
        webhook_events="call.missed",
    )
    text = banner(settings, 8080)
    line = next(line for line in text.splitlines() if "webhooks" in line)
    assert "call.missed to https://hooks.example.org, https://hooks.example.org:8443" in line
    assert "s3cr3t" not in text and "token=abc" not in text and "hook:pw" not in text
