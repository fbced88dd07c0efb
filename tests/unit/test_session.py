"""The session rules (server/session.py) with no socket and no event loop: a handshake or a frame in, a decision out."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any, TypeVar

import jwt
import pytest

from peercall.config import Settings
from peercall.core.limits import KeyedBuckets
from peercall.protocol.codes import CloseCode, ErrorCode
from peercall.protocol.errors import ProtocolError
from peercall.server.session import (
    HOSTS_KEPT,
    Close,
    Handshake,
    LogBudget,
    Refused,
    Session,
    Sessions,
    address_group,
    is_signaling_path,
    normalise_path,
)

SECRET = "test-secret-with-enough-entropy-0123456789"
T = TypeVar("T")


class FakeHub:
    """What the session layer uses of the hub: connection ids, the disconnect counters, draining, the count."""

    def __init__(self) -> None:
        self.stats = SimpleNamespace(dropped=Counter())
        self.draining = False
        self._serial = itertools.count(1)

    def new_cid(self) -> str:
        return f"c{next(self._serial)}"

    def __len__(self) -> int:
        return 0


class FakeConnection:
    """A transport's connection, as far as the session needs one."""

    def __init__(self, session: Session) -> None:
        self.id, self.cid, self.errors, self.pending = session.id, session.cid, 0, 0

    async def send_text(self, text: str) -> bool:
        return True

    def send_now(self, text: str) -> bool:
        return True

    async def close(self, code: int, reason: str) -> None:
        return None


def done(coro: Coroutine[Any, Any, T]) -> T:
    """What a coroutine of the session returns, when it completes without suspending (no key to fetch)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the coroutine suspended")


def make(**settings: Any) -> tuple[Sessions, FakeHub]:
    hub = FakeHub()
    return Sessions(hub, Settings(**settings)), hub  # type: ignore[arg-type]


def handshake(query: str = "id=alice", peer: str = "10.0.0.1:5000", **headers: str) -> Handshake:
    return Handshake(query.encode(), [(k.lower().encode(), v.encode()) for k, v in headers.items()], peer)


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": time.time() + 60}, SECRET, algorithm="HS256")


def opened(sessions: Sessions, hs: Handshake | None = None) -> Session:
    session = sessions.admit(hs or handshake())
    session.opened(FakeConnection(session))
    return session


@pytest.mark.parametrize(
    ("target", "is_ws"),
    [
        ("/ws", True),
        ("/ws?id=a", True),
        ("/ws?", True),
        ("/ws?id=a/../x", True),
        ("/%77s", True),
        ("/%77%73?id=a", True),
        ("//ws", True),
        ("/ws/", True),
        ("/./ws", True),
        ("/a/../ws", True),
        ("/../ws", True),
        ("/%2Fws", True),
        ("http://example.test/ws?id=a", True),
        ("/%2577s", False),
        ("/wss", False),
        ("/ws/x", False),
        ("/Ws", False),
        ("/ws%00", False),
        ("/", False),
        ("", False),
        ("/api/calls", False),
    ],
)
def test_one_function_decides_what_is_ws(target: str, is_ws: bool) -> None:
    """A path is /ws after one percent-decoding, dot segments resolved, slashes merged and a trailing one dropped."""
    assert is_signaling_path(target) is is_ws
    assert is_signaling_path(target.encode()) is is_ws


def test_normalising_keeps_what_is_not_a_separator() -> None:
    """Normalising resolves segments but decodes only once."""
    assert normalise_path("/a//b/./c/../d/") == "/a/b/d"
    assert normalise_path("/%2577s") == "/%77s"


@pytest.mark.parametrize(
    ("settings", "hs", "status", "code"),
    [
        (
            {"allowed_hosts": ["chat.example"]},
            handshake(Origin="https://evil.example", Host="chat.example"),
            403,
            "bad-origin",
        ),
        ({}, handshake(Origin="http://evil.test", Host="evil.test"), 421, "bad-host"),  # DNS rebinding
        ({}, handshake("id=no%20spaces"), 400, "bad-id"),
        ({}, handshake(""), 400, "bad-id"),
        ({}, handshake("id=a&id=b"), 400, "bad-id"),
        ({}, handshake("id=alice&device=a%20b"), 400, "bad-device"),
        ({"auth": "token", "auth_secret": SECRET}, handshake("", Authorization="Bearer nope"), 401, "unauthorized"),
        (
            {"auth": "token", "auth_secret": SECRET},
            handshake("", Authorization=f"Basic {token('a')}"),
            401,
            "unauthorized",
        ),
        (
            {"auth": "token", "auth_secret": SECRET},
            handshake("id=eve", Authorization=f"Bearer {token('fay')}"),
            401,
            "unauthorized",
        ),
    ],
)
def test_a_bad_handshake_is_refused_and_counted(settings: dict, hs: Handshake, status: int, code: str) -> None:
    """Each refusal names its HTTP status and code, has the JSON body, and counts as a disconnect."""
    sessions, hub = make(**settings)
    with pytest.raises(Refused) as info:
        sessions.admit(hs)
    assert (info.value.status, info.value.code) == (status, code)
    assert json.loads(info.value.body())["error"]["code"] == code
    assert hub.stats.dropped == {code: 1}


def test_the_verdict_on_a_host_is_remembered_and_the_memory_is_bounded() -> None:
    sessions, _ = make(allowed_hosts=["chat.example"])
    for _ in range(2):  # the second time from what it remembers: the same answer
        assert sessions.admit(handshake(Host="chat.example")).user == "alice"
        with pytest.raises(Refused) as info:
            sessions.admit(handshake(Host="evil.test"))
        assert info.value.code == "bad-host"
    for n in range(3 * HOSTS_KEPT):
        with pytest.raises(Refused):
            sessions.admit(handshake(Host=f"evil{n}.test"))
    assert len(sessions._hosts) <= HOSTS_KEPT
    assert sessions.admit(handshake(Host="chat.example")).user == "alice"


def test_origins_and_draining() -> None:
    """The same origin and listed origins pass; a draining node refuses everyone (503)."""
    sessions, hub = make(allowed_origins=["https://app.example"])
    assert sessions.admit(handshake(Origin="https://app.example")).user == "alice"
    assert (
        make(allowed_hosts=["chat.example"])[0].admit(handshake(Origin="http://chat.example", Host="chat.example")).user
        == "alice"
    )
    hub.draining = True
    with pytest.raises(Refused) as info:
        sessions.admit(handshake())
    assert (info.value.status, info.value.code) == (503, "shutting-down")


def test_the_per_address_cap_counts_open_sessions_and_releases_them() -> None:
    """Past `max_connections_per_ip` open sessions of one address the next is refused (429) until one ends."""
    sessions, _ = make(max_connections_per_ip=2)
    first, _second = opened(sessions), opened(sessions, handshake("id=bob"))
    assert opened(sessions, handshake("id=carl", peer="10.0.0.2:1")).user == "carl"  # another address
    with pytest.raises(Refused) as info:
        sessions.admit(handshake("id=dora"))
    assert (info.value.status, info.value.code) == (429, "too-many-connections")
    first.ended(1000, 0)
    assert sessions.admit(handshake("id=dora")).user == "dora"


def test_the_per_user_cap_refuses_after_the_upgrade() -> None:
    """Past `max_connections_per_user` a session gets an `error` and close 4430; ending one frees a place."""
    sessions, hub = make(max_connections_per_user=1)
    first = opened(sessions)
    assert first.start() is None and first.joined
    second = opened(sessions)
    refusal = second.start()
    assert refusal is not None and refusal.code == CloseCode.TOO_MANY_CONNECTIONS and refusal.frame is not None
    assert json.loads(refusal.frame)["code"] == "rate-limited" and not second.joined
    assert hub.stats.dropped == {"too-many-connections": 1}
    second.ended(refusal.code, 0)
    first.ended(1000, 0)
    assert sessions.per_user == {} and sessions.per_ip == {} and sessions.live == set()
    third = opened(sessions)
    assert third.start() is None


def test_first_frame_auth() -> None:
    """In token mode without a header the first frame must be `auth` with a good token for the id asked for."""
    sessions, hub = make(auth="token", auth_secret=SECRET, auth_timeout=0.5)
    good = opened(sessions, handshake(""))
    assert good.awaiting_auth and done(good.authenticate(json.dumps({"type": "auth", "token": token("ann")}))) is None
    assert good.user == "ann" and good.start() is None and good.joined
    for frame in (None, "not json", '{"type":"hangup","to":"x"}', '{"type":"auth","token":"bad"}'):
        refusal = done(opened(sessions, handshake("")).authenticate(frame))
        assert isinstance(refusal, Close) and refusal.code == CloseCode.UNAUTHORIZED and refusal.frame is not None
    other = done(
        opened(sessions, handshake("id=eve")).authenticate(json.dumps({"type": "auth", "token": token("fay")}))
    )
    assert other is not None and other.reason == "the token is for fay, not eve"
    late = opened(sessions, handshake("")).auth_timed_out()
    assert (late.code, late.reason) == (CloseCode.UNAUTHORIZED, "no auth frame within 0.5s")
    assert hub.stats.dropped == {"unauthorized": 6}


def test_frame_rules() -> None:
    """A text frame passes; a binary one and one over the size limit get an error; the connection stays."""
    sessions, _ = make(max_message_size=1024)
    session = opened(sessions)
    assert session.start() is None
    assert session.inbound('{"type":"hangup","to":"bob"}') is None
    binary = session.inbound(None)
    assert isinstance(binary, ProtocolError) and binary.code == ErrorCode.BAD_MESSAGE
    assert session.inbound("é" * 512) is None  # 1024 bytes: at the limit
    large = session.inbound("é" * 513)
    assert isinstance(large, ProtocolError) and large.code == ErrorCode.TOO_LARGE
    assert session.received == 4


def test_a_flood_is_answered_then_closed_with_4429() -> None:
    """Beyond the burst frames are dropped with `rate-limited`; as many again and the connection is closed."""
    sessions, hub = make(rate_limit=0.001, rate_burst=3)
    session = opened(sessions)
    assert session.start() is None
    verdicts = [session.inbound("{}") for _ in range(7)]
    assert verdicts[:3] == [None] * 3
    assert all(isinstance(v, ProtocolError) and v.code == ErrorCode.RATE_LIMITED for v in verdicts[3:6])
    assert verdicts[6] == Close(CloseCode.RATE_LIMITED, "too many messages")
    assert hub.stats.dropped == {"rate-limited": 1}


def test_a_frame_costs_a_token_and_one_more_per_kib() -> None:
    """A burst of 10 tokens: ten small frames, or five of 1 KiB (2 each), or three of 2 KiB in UTF-8 (1,024 é: 3 each),
    or one frame too large for the burst (it costs the whole burst, no more: it is answered, not refused)."""
    for frame, passing in (("{}", 10), ("x" * 1024, 5), ("é" * 1024, 3), ("x" * 200_000, 1)):
        sessions, _ = make(rate_limit=0.001, rate_burst=10, max_message_size=1024 * 1024)
        session = opened(sessions)
        assert session.start() is None
        verdicts = [session.inbound(frame) for _ in range(passing + 1)]
        assert verdicts[:passing] == [None] * passing, frame[:10]
        assert isinstance(verdicts[passing], ProtocolError) and verdicts[passing].code == ErrorCode.RATE_LIMITED
    # a binary message (refused: `bad-message`) pays for its bytes too, as its transport counted them
    sessions, _ = make(rate_limit=0.001, rate_burst=10)
    session = opened(sessions)
    assert session.start() is None
    verdicts = [session.inbound(None, 4096) for _ in range(3)]
    assert [v.code for v in verdicts if isinstance(v, ProtocolError)] == [ErrorCode.BAD_MESSAGE] * 2 + [
        ErrorCode.RATE_LIMITED
    ]


def test_a_slow_reader_is_closed_with_4420() -> None:
    """An overflowing send backlog closes the connection (4420) and counts as `slow-consumer`."""
    sessions, hub = make()
    session = opened(sessions)
    assert session.overflowed(2_000_000) == Close(CloseCode.SLOW_CONSUMER, "too slow: send buffer overflowed")
    assert hub.stats.dropped == {"slow-consumer": 1}


def test_the_connection_lines_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A joined session logs its connect and its disconnect (code, duration, messages, errors), once."""
    sessions, _ = make()
    session = opened(sessions, handshake("id=alice&device=tab1"))
    with caplog.at_level("INFO", logger="peercall.ws"):
        assert session.start() is None
        session.inbound("{}")
        session.ended(1001, 2)
        session.ended(1001, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "alice connected from 10.0.0.1:5000 (tab1, 1 connections)"
    assert lines[1].startswith("alice disconnected (code 1001) after ") and lines[1].endswith(", 1 messages, 2 errors")
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("host", "group"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::/64"),
        ("?", "?"),
    ],
)
def test_addresses_are_grouped_ipv6_by_64(host: str, group: str) -> None:
    """Per-address limits count an IPv6 address with its /64, and an IPv4-mapped address as IPv4."""
    assert address_group(host) == group


def test_the_per_address_cap_counts_an_ipv6_64_as_one_address() -> None:
    """Two addresses of one IPv6 /64 share the per-address cap; another /64 does not."""
    sessions, _ = make(max_connections_per_ip=2)
    opened(sessions, handshake("id=a", peer="2001:db8:1:2::1:5000"))
    opened(sessions, handshake("id=b", peer="2001:db8:1:2::2:5000"))
    with pytest.raises(Refused) as info:
        sessions.admit(handshake("id=c", peer="2001:db8:1:2:ffff::3:5000"))
    assert info.value.code == "too-many-connections"
    assert sessions.admit(handshake("id=d", peer="2001:db8:1:3::1:5000")).user == "d"


def test_a_reserved_id_needs_the_service_token_in_open_mode() -> None:
    """`echo` (and any PEERCALL_RESERVED_IDS) is refused (403 `reserved-id`) unless the service token comes with it."""
    sessions, _ = make(service_token="s" * 32, reserved_ids=["echo", "bot"])
    for user in ("echo", "bot"):
        with pytest.raises(Refused) as info:
            sessions.admit(handshake(f"id={user}"))
        assert (info.value.status, info.value.close, info.value.code) == (403, 1008, "reserved-id")
    with pytest.raises(Refused):
        sessions.admit(handshake("id=echo", authorization="Bearer " + "t" * 32))
    assert sessions.admit(handshake("id=echo", authorization="Bearer " + "s" * 32)).user == "echo"
    assert make()[0].admit(handshake("id=Echo")).user == "Echo"  # ids are case-sensitive
    with pytest.raises(Refused):
        make()[0].admit(handshake("id=echo"))  # reserved by default, and no token to show
    assert make(reserved_ids=[])[0].admit(handshake("id=echo")).user == "echo"


def test_a_deep_auth_frame_is_refused_as_unauthorized() -> None:
    """An auth frame nested past MAX_DEPTH, or larger than the message limit, is `unauthorized`, whatever its depth."""
    sessions, _ = make(auth="token", auth_secret=SECRET, max_message_size=1024)
    for frame in ("[" * 400 + "]" * 400, '{"type":"auth","token":"x","a":' + "[" * 400 + "]" * 400 + "}"):
        refusal = done(opened(sessions, handshake("")).authenticate(frame))
        assert (
            refusal is not None and refusal.code == CloseCode.UNAUTHORIZED and "nested more than 32" in refusal.reason
        )
    refusal = done(opened(sessions, handshake("")).authenticate(json.dumps({"type": "auth", "token": "x" * 2000})))
    assert refusal is not None and "larger than 1024" in refusal.reason


def test_the_log_budget_is_per_address_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """LOG_LINES_PER_MINUTE lines per address, then one line saying the rest are counted; the table is bounded."""
    budget = LogBudget(per_minute=3, size=100)
    with caplog.at_level("INFO", logger="peercall.ws"):
        assert [budget.allows("10.0.0.1") for _ in range(5)] == [True, True, True, False, False]
        assert budget.allows("10.0.0.2")
    assert caplog.text.count("further protocol errors from 10.0.0.1 are counted, not logged") == 1
    for i in range(1000):
        budget.allows(f"10.1.{i // 256}.{i % 256}")
    assert len(budget._buckets) <= 100 and len(budget._muted) <= 100


def test_keyed_buckets_forget_the_least_recently_used() -> None:
    """A bucket per key, at most `size` keys: a flood of new keys costs bounded memory."""
    buckets = KeyedBuckets(rate=1, burst=2, size=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [True, True, False]
    for key in "bcd":
        buckets.take(key, 0.0)
    assert len(buckets) == 3 and buckets.take("a", 0.0)  # "a" was forgotten: a full bucket again


@pytest.mark.parametrize(
    "query", ["", "id=alice&device=d1", "a", "=x", "a=b=c", "a&&b=", "id=1&id=2", "x;y=1", "id=al%69ce", "n=a+b"]
)
def test_the_query_is_read_as_parse_qs_reads_it(query: str) -> None:
    from urllib.parse import parse_qs

    from peercall.server.session import _query

    assert _query(query) == parse_qs(query, keep_blank_values=True)
