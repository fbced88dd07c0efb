"""The session: the rules of one `/ws` connection, whatever transport carries it.

Owns, written once for both transports: which request is `/ws` (`is_signaling_path`, the one place that decides);
admission (draining, origin against host, id and device, open or token mode, the per-address and per-user caps);
the per-frame rules (rate limit, every frame counted: pings, pongs and fragments too; size limit, binary refusal,
first-frame auth and its timeout); renewing the token on a live connection (a later `auth` frame, which the hub
hands back through its `renew` hook) and closing it when its token expires (`PEERCALL_AUTH_EXPIRY=enforce`: the
deadlines are kept by server/expiry.py's one timer for the node); the sign-in of each connection's latest token
(accounts mode), which the hub asks through its `sign_in_of` hook when a sign-out closes that sign-in's connections;
the refusal body;
the connection's log lines ("… connected from …", "… disconnected (code …) after …s, n messages") and the
`peercall_disconnects_total` counters; and how long a closing connection may take before its transport is aborted.

Sans-I/O, as python-websockets' `protocol.py` is to its `asyncio/connection.py`: a `Session` is told what happened
(a handshake, a frame, the auth timer, the socket gone) and answers with what to do: `None` (go on: hand the frame
to the hub), a `ProtocolError` (answer the frame with an `error`, keep the connection) or a `Close` (send its
`error` frame if it has one, then close). It starts no task, sets no timer and touches no socket. Checking a token
is a coroutine (`authenticate`, `renew`) only because a token signed with a key not seen yet makes the verifier
fetch its identity provider's keys again (auth/jwks.py); otherwise it completes without suspending. (`Sessions`
starts one task per sweep of the expiry watch, to close the connections whose tokens expired.) The transports do
the I/O: server/fastws.py (picows, the default) and server/ws.py (the ASGI WebSocket, used with per-message
deflate). This module imports neither of them, and they do not import each other.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ..auth.tokens import AuthError, Identity, TokenVerifier, UnknownKey
from ..core.limits import KeyedBuckets, TokenBucket
from ..protocol import messages
from ..protocol.codes import CloseCode, ErrorCode
from ..protocol.errors import ProtocolError
from .expiry import ExpiryWatch, Watched
from .guard import BAD_HOST_STATUS, bad_host_message, host_allowed

if TYPE_CHECKING:
    from ..config import Settings
    from ..hub.router import Connection, Hub

log = logging.getLogger("peercall.ws")

SIGNALING_PATH = "/ws"
CLOSE_GRACE = 1.0
"""Seconds a closing connection's queued frames and close frame get to leave; a transport that still cannot write
them then (the client reads nothing) is aborted, so that a client that never reads is gone at once."""
CLOSE_TIMEOUT = 5.0
"""Seconds a client may take to answer our close frame before its socket is dropped."""

_ID_RULE = "the {what} must be 1-64 characters: ASCII letters, digits, '_', '-', '.' or '@'"
_AUTH_FRAME = 'the first frame must be {"type":"auth","token":"<token>"}'
_RENEWAL_FRAME = 'a renewal must be {"type":"auth","token":"<token>"}'
TOKEN_EXPIRED = "the token expired; renew it with an auth frame"
"""The reason of the close (4401) of a connection whose token expired without renewal (PEERCALL_AUTH_EXPIRY=enforce)."""
LOG_LINES_PER_MINUTE = 20
"""Lines about one address's misbehaviour (protocol errors, refusals, floods) logged a minute, as many at once."""
HOSTS_KEPT = 64
"""Host headers whose verdict (allowed or not) a node remembers; past that it starts again."""
TABLE_SIZE = 10_000
"""Addresses that a per-address table (log budget, connection rate) remembers: the least recently seen go first."""

_BINARY = ProtocolError(ErrorCode.BAD_MESSAGE, "binary frames are not supported; send JSON text")
_DROPPED = ProtocolError(ErrorCode.RATE_LIMITED, "too many frames; this one was dropped")


def normalise_path(raw: bytes | str) -> str:
    """A request path as `/ws` is matched against: percent-decoded once (UTF-8), then `.` and `..` segments
    resolved, runs of `/` merged and a trailing `/` dropped. So `/%77s`, `//ws`, `/ws/` and `/a/../ws` are all
    `/ws`, and `/%2577s` (encoded twice) is `/%77s`."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    segments: list[str] = []
    for segment in unquote(text).split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)


def is_signaling_path(target: bytes | str) -> bool:
    """Whether a request is for `/ws`: the one place that decides, for both transports.

    `target` is the raw request target (a query, if any, is ignored; an absolute-form `http://host/ws` is reduced
    to its path), before any percent-decoding: `normalise_path` does that, once.
    """
    if isinstance(target, bytes):
        if target == b"/ws" or target.startswith(b"/ws?"):  # as clients write it: nothing to decode or resolve
            return True
        text = target.decode("latin-1")
    else:
        text = target
    path = text.partition("?")[0].partition("#")[0]
    if not path.startswith("/"):
        path = urlsplit(path).path
    return normalise_path(path) == SIGNALING_PATH


def address_group(host: str) -> str:
    """The address that per-address limits count: an IPv4 address itself; an IPv6 address its /64, since one
    subscriber (one attacker) commonly has a whole /64; an IPv4-mapped IPv6 address its IPv4 address."""
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class LogBudget:
    """How much is logged about one address's misbehaviour: LOG_LINES_PER_MINUTE lines a minute, then one line
    saying that the rest are counted, not logged (the counters are in /metrics). Unlike the first few errors of
    each connection, which the hub logs, this does not start again when the client reconnects. Bounded: it
    remembers the TABLE_SIZE addresses seen last."""

    def __init__(self, per_minute: int = LOG_LINES_PER_MINUTE, size: int = TABLE_SIZE) -> None:
        self._buckets = KeyedBuckets(per_minute / 60.0, per_minute, size)
        self._muted: OrderedDict[str, int] = OrderedDict()  # address -> lines not logged since it went quiet
        self._size = size

    def allows(self, address: str) -> bool:
        """Whether a line about `address` may be logged now."""
        if self._buckets.take(address, time.monotonic()):
            skipped = self._muted.pop(address, 0)
            if skipped:
                log.info("%d lines about %s were not logged in the last while", skipped, address)
            return True
        if address in self._muted:
            self._muted[address] += 1
        else:
            self._muted[address] = 1
            if len(self._muted) > self._size:
                self._muted.popitem(last=False)
            log.info("further protocol errors from %s are counted, not logged", address)
        return False


class TransportConnection(Protocol):
    """A connection as a transport makes it: what the hub sees (`Connection`), plus what waits to be sent."""

    id: str
    cid: str
    errors: int

    @property
    def pending(self) -> int:
        """Bytes waiting to be sent to this connection."""
        ...

    async def send_text(self, text: str) -> bool: ...

    def send_now(self, text: str) -> bool: ...

    async def close(self, code: int, reason: str) -> None: ...


class Handshake:
    """What a transport read from an upgrade request to `/ws`: `query_string`, `headers` (names in lower case)
    and `peer`, the client's `host:port` (behind a trusted proxy, the address it forwarded) or `?`.

    A plain class, not a frozen dataclass: that one's `__init__` cost ~1 µs of every connect."""

    __slots__ = ("address", "headers", "peer", "query_string")

    def __init__(self, query_string: bytes, headers: Sequence[tuple[bytes, bytes]], peer: str) -> None:
        self.query_string = query_string
        self.headers = headers
        self.peer = peer
        self.address = address_group(peer.rsplit(":", 1)[0])
        """What the per-address limits count: `ip`, or its /64 for IPv6 (`address_group`)."""

    @property
    def ip(self) -> str:
        return self.peer.rsplit(":", 1)[0]


class Refused(Exception):
    """A handshake that is turned down: HTTP `status` before the upgrade, or `close` code after it."""

    def __init__(self, status: int, close: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.close, self.code, self.message = status, close, code, message

    def body(self) -> bytes:
        """The JSON body of the HTTP refusal: `{"error":{"code":…,"message":…}}`."""
        return json.dumps({"error": {"code": self.code, "message": self.message}}).encode()


@dataclass(frozen=True, slots=True)
class Close:
    """What a transport is to do: send `frame` (an `error`) when there is one, then close with `code` and `reason`."""

    code: int
    reason: str
    frame: str | None = None


class Sessions:
    """The sessions of this node: admission, and the limits they share (connections per address, per user)."""

    def __init__(self, hub: Hub, settings: Settings, verifier: TokenVerifier | None = None) -> None:
        """`verifier`: the token verifier the HTTP routes share (None: the one `settings` ask for)."""
        self.hub = hub
        self.settings = settings
        self.max_size = settings.max_message_size
        self.hard_limit = max(4 * settings.max_message_size, 1024 * 1024)
        """A frame larger than this closes its connection with 1009 (the transports' frame limit)."""
        self.verifier = verifier if verifier is not None else TokenVerifier.for_settings(settings)
        self.per_ip: Counter[str] = Counter()
        """Open sessions per address (`address_group`: IPv6 by /64)."""
        self.log_budget = LogBudget()
        self.reserved = frozenset(settings.reserved_ids)
        self._service_token = (
            settings.service_token.get_secret_value().encode() if settings.service_token is not None else None
        )
        self.per_user: Counter[str] = Counter()
        # read on every connect, so read once here: a pydantic model's field costs ~3x a plain attribute
        self.max_per_ip = settings.max_connections_per_ip
        self.max_per_user = settings.max_connections_per_user
        self.rate = (settings.rate_limit, settings.rate_burst)
        self.live: set[Session] = set()
        """Sessions whose transport is open, joined or not yet (waiting for their auth frame)."""
        self.too_large = ProtocolError(ErrorCode.TOO_LARGE, f"frame is larger than the limit of {self.max_size} bytes")
        self.expiries: ExpiryWatch | None = None
        """Token or accounts mode with PEERCALL_AUTH_EXPIRY=enforce: the deadlines of the joined connections'
        tokens."""
        if self.verifier is not None and settings.effective_auth_expiry == "enforce":
            self.expiries = ExpiryWatch(self._expired, self.live)
        self._closing: set[asyncio.Future[None]] = set()
        self._hosts: dict[str | None, bool] = {}  # Host header -> whether it is allowed (`_host_allowed`)

    def admit(self, handshake: Handshake) -> Session:
        """Check a handshake: the session to open, or `Refused` (logged and counted).

        The user is known now (open mode, or a token in the Authorization header) or comes with the first frame.
        """
        try:
            user, wanted, device, identity, deferred = self._check(handshake)
        except Refused as refused:
            if self.log_budget.allows(handshake.address):
                log.info("refused a connection from %s: %s", handshake.peer, refused.message)
            self.dropped(refused.code)
            raise
        session = Session(self, user, wanted, device, handshake.peer, handshake.address)
        session.expires_at = identity.expires_at if identity is not None else None
        session.name = identity.name if identity is not None else None
        session.sign_in = identity.sign_in if identity is not None else None
        session.deferred = deferred
        return session

    async def renew(self, conn: Connection, text: str) -> None:
        """The hub's `renew` hook: an `auth` frame from a joined connection renews its token (`Session.renew`),
        answered `auth-renewed`, or refused with close 4401."""
        session = getattr(conn, "session", None)
        if not isinstance(session, Session):
            return
        name = session.name
        outcome = await session.renew(text)
        if isinstance(outcome, Close):
            if outcome.frame is not None:
                await conn.send_text(outcome.frame)
            await conn.close(outcome.code, outcome.reason)
        else:
            await conn.send_text(outcome)
            if session.name is not None and session.name != name and session.user is not None:
                await self.hub.renamed(session.user, session.name)

    def _expired(self, due: list[Watched]) -> None:
        """The expiry watch: these connections' tokens expired without renewal; close them (4401), in one task."""
        closing = []
        for session in due:
            assert isinstance(session, Session)
            if session.conn is None:
                continue
            if self.log_budget.allows(session.address):
                log.info("%s (%s): the token expired without renewal; closing the connection", session.id, session.cid)
            self.dropped("token-expired")
            closing.append(session.conn)
        if closing:
            task = asyncio.ensure_future(self._close_expired(closing))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_expired(conns: list[TransportConnection]) -> None:
        error = messages.error(ProtocolError(ErrorCode.UNAUTHORIZED, TOKEN_EXPIRED))
        for conn in conns:
            await conn.send_text(error)
            await conn.close(CloseCode.UNAUTHORIZED, TOKEN_EXPIRED)

    @staticmethod
    def sign_in_of(conn: object) -> str | None:
        """The sign-in of `conn` (a transport's connection): that of its latest token (`Session.sign_in`), or None
        (the hub's `sign_in_of`)."""
        session = getattr(conn, "session", None)
        return session.sign_in if isinstance(session, Session) else None

    def may_log(self, conn: object) -> bool:
        """Whether a protocol error of `conn` (a transport's connection) may be logged now: its address's
        `LogBudget` (the hub's `may_log`)."""
        session = getattr(conn, "session", None)
        return not isinstance(session, Session) or self.log_budget.allows(session.address)

    def dropped(self, reason: str) -> None:
        """Count a connection refused or closed by the server (`peercall_disconnects_total{reason}`)."""
        self.hub.stats.dropped[reason] += 1

    async def close_all(self, code: int, reason: str) -> None:
        """Close the connections that the hub does not know yet (waiting for their auth frame); at shutdown, after
        the hub has closed its own."""
        for session in list(self.live):
            if not session.joined and session.conn is not None:
                await session.conn.close(code, reason)

    def backlog_bytes(self) -> int:
        """Bytes waiting for slow readers, over all connections (a gauge for /metrics)."""
        return sum(session.conn.pending for session in self.live if session.conn is not None)

    def _check(self, handshake: Handshake) -> tuple[str | None, str | None, str | None, Identity | None, str | None]:
        """(the user, or None while a first-frame token is to come; the id the client asked for; its device; what
        the header's token proved; the header's token when it is to be checked after the upgrade, its key being
        unknown until the identity provider's keys are fetched again)."""
        if self.hub.draining:
            raise Refused(503, CloseCode.GOING_AWAY, "shutting-down", "the server is shutting down; reconnect soon")
        # only the headers checked here are decoded (a browser sends a dozen): ~1 µs less per connect
        headers = {
            n.decode("latin-1"): v.decode("latin-1") for k, v in handshake.headers if (n := k.lower()) in _CHECKED
        }
        host = headers.get("host")
        if not self._host_allowed(host):  # DNS rebinding: a page on another name, re-pointed here
            assert host is not None
            raise Refused(BAD_HOST_STATUS, 1008, "bad-host", bad_host_message(host))
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, headers.get("host", "")):
            raise Refused(403, 1008, "bad-origin", f"origin {origin[:100]} may not connect here")
        query = _query(handshake.query_string.decode("latin-1"))
        client_id = _single(query, "id")
        device = _single(query, "device")
        if "device" in query and not messages.is_valid_id(device):
            raise Refused(400, 1008, "bad-device", _ID_RULE.format(what="device"))
        address = handshake.address
        if self.per_ip[address] >= self.max_per_ip:
            raise Refused(
                429,
                CloseCode.TOO_MANY_CONNECTIONS,
                "too-many-connections",
                f"{address} already has {self.per_ip[address]} connections open",
            )
        if self.verifier is None:
            if not messages.is_valid_id(client_id):
                raise Refused(400, 1008, "bad-id", _ID_RULE.format(what="id"))
            if client_id in self.reserved and not self._is_service(headers.get("authorization")):
                raise Refused(
                    403,
                    1008,
                    "reserved-id",
                    f"{client_id!r} is reserved for a service of this server; choose another id (the service itself "
                    "connects with PEERCALL_SERVICE_TOKEN, or is started by peercall serve --with-echo)",
                )
            return client_id, client_id, device, None, None
        if "id" in query and not messages.is_valid_id(client_id):
            raise Refused(400, 1008, "bad-id", _ID_RULE.format(what="id"))
        authorization = headers.get("authorization")
        if authorization is None:
            return None, client_id, device, None, None
        scheme, _, token = authorization.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise AuthError("the Authorization header must be 'Bearer <token>'")
            identity = self.verifier.identify(token.strip())
        except UnknownKey:
            return None, client_id, device, None, token.strip()  # checked once the open socket can wait for keys
        except AuthError as exc:
            raise Refused(401, CloseCode.UNAUTHORIZED, "unauthorized", str(exc)) from None
        user = identity.user
        if client_id is not None and client_id != user:
            raise Refused(401, CloseCode.UNAUTHORIZED, "unauthorized", f"the token is for {user}, not {client_id}")
        return user, client_id, device, identity, None

    def _host_allowed(self, host: str | None) -> bool:
        """`host_allowed`, remembered for the last HOSTS_KEPT Host headers: clients name this server in one or two
        ways, and working it out again cost ~1 µs of every connect."""
        allowed = self._hosts.get(host)
        if allowed is None:
            if len(self._hosts) >= HOSTS_KEPT:
                self._hosts.clear()
            allowed = self._hosts[host] = host_allowed(self.settings, host)
        return allowed

    def _is_service(self, authorization: str | None) -> bool:
        """Open mode: whether the Authorization header carries this server's service token (PEERCALL_SERVICE_TOKEN;
        `serve --with-echo` makes one per process and gives it to the echo it starts)."""
        if self._service_token is None or authorization is None:
            return False
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._service_token)

    def _origin_allowed(self, origin: str, host: str) -> bool:
        allowed = self.settings.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        return not allowed and urlsplit(origin).netloc.lower() == host.lower()


class Session:
    """The rules of one connection, from its handshake to its end. Sans-I/O: each method says what to do.

    The transport's side, in order: `opened(conn)` once the socket is open; if `awaiting_auth`, the first frame
    goes to `authenticate()` (or, after `auth_timeout` seconds of silence, `auth_timed_out()`); then `start()`,
    and on None `Hub.join`; every later frame to `inbound()`; `overflowed()` when the send backlog passes
    `send_buffer`; `failed()` on an unexpected exception; and `ended()` once the socket is gone (after `Hub.leave`
    when it was joined).
    """

    __slots__ = (
        "_bucket",
        "_ended",
        "_limited",
        "_sessions",
        "_started",
        "address",
        "cid",
        "conn",
        "deferred",
        "device",
        "expires_at",
        "joined",
        "name",
        "peer",
        "received",
        "sign_in",
        "user",
        "wanted",
    )

    def __init__(
        self,
        sessions: Sessions,
        user: str | None,
        wanted: str | None,
        device: str | None,
        peer: str,
        address: str | None = None,
    ) -> None:
        self._sessions = sessions
        self.user = user
        self.wanted = wanted
        self.device = device
        self.peer = peer
        self.address = address if address is not None else address_group(peer.rsplit(":", 1)[0])
        """What the per-address limits count this connection as (`address_group`)."""
        self.cid = sessions.hub.new_cid()
        self.conn: TransportConnection | None = None
        self.joined = False
        self.received = 0
        self._bucket: TokenBucket | None = None
        self._limited = 0
        self._started = 0.0
        self._ended = False
        self.expires_at: float | None = None
        """The `exp` of this connection's token (token mode), moved by each renewal."""
        self.deferred: str | None = None
        """A token from the Authorization header that `authenticate` is to check once the socket is open."""
        self.name: str | None = None
        """The display name of this connection's latest token (its `name` claim), if it had one."""
        self.sign_in: str | None = None
        """The sign-in of this connection's latest token (accounts mode: its `sid`), whose end closes it
        (`Hub.user_closed`); None in token mode."""

    @property
    def deadline(self) -> float | None:
        """When the connection closes unless its token is renewed (`exp` + the verifier's leeway)."""
        return None if self.expires_at is None else self.expires_at + TokenVerifier.LEEWAY

    @property
    def watched(self) -> bool:
        """Whether the expiry watch still cares: joined and not ended."""
        return self.joined and not self._ended

    @property
    def id(self) -> str:
        """The user id as far as it is known: the user, else the id asked for, else ""."""
        return self.user or self.wanted or ""

    @property
    def awaiting_auth(self) -> bool:
        """Token mode without an Authorization header: the first frame must be `auth`."""
        return self.user is None

    @property
    def auth_timeout(self) -> float:
        return self._sessions.settings.auth_timeout

    @property
    def send_buffer(self) -> int:
        """Bytes that may wait for a slow reader before `overflowed()`."""
        return self._sessions.settings.send_buffer

    def opened(self, conn: TransportConnection) -> None:
        """The socket is open (the 101 is sent): count it against its address."""
        sessions = self._sessions
        self.conn = conn
        self._started = now = time.monotonic()
        # From the first frame on, joined or not: a ping or a fragment before the auth frame costs a token too.
        self._bucket = TokenBucket(*sessions.rate, now)
        sessions.per_ip[self.address] += 1
        sessions.live.add(self)

    async def authenticate(self, text: str | None) -> Close | None:
        """The first frame, `{"type":"auth","token":…}` (or, when `deferred`, the header's token: `text` is then
        not looked at): None when it proves who this is (then `start()`)."""
        verifier = self._sessions.verifier
        assert verifier is not None
        try:
            token = self.deferred if self.deferred is not None else _token(text, self._sessions.max_size)
            self.deferred = None
            identity = await verifier.check(token)
        except (AuthError, ValueError) as exc:
            return self._unauthorized(str(exc))
        if self.wanted and self.wanted != identity.user:
            return self._unauthorized(f"the token is for {identity.user}, not {self.wanted}")
        self.user, self.expires_at, self.sign_in = identity.user, identity.expires_at, identity.sign_in
        if identity.name is not None:
            self.name = identity.name
        return None

    async def renew(self, text: str) -> str | Close:
        """A later `auth` frame: a new token for the same user. The `auth-renewed` frame to answer with, or the
        close (4401) of a connection whose renewal is refused (a bad token, or one for another user)."""
        verifier = self._sessions.verifier
        assert verifier is not None and self.user is not None
        try:
            identity = await verifier.check(_token(text, self._sessions.max_size, _RENEWAL_FRAME))
        except (AuthError, ValueError) as exc:
            return self._unauthorized(f"the renewal was refused: {exc}")
        if identity.user != self.user:
            return self._unauthorized(f"the new token is for {identity.user}, not {self.user}")
        # The connection belongs to the sign-in of its latest token: one of another sign-in of the same user (the
        # browser signed out and in again meanwhile) moves it there, and the end of the old one leaves it open.
        self.expires_at, self.sign_in = identity.expires_at, identity.sign_in
        if identity.name is not None:  # a token without a name leaves the one the connection has
            self.name = identity.name
        expiries = self._sessions.expiries
        if expiries is not None and self.watched:
            expiries.watch(self)
        log.debug("%s (%s): token renewed until %s", self.user, self.cid, identity.expires_at)
        return messages.auth_renewed(identity.expires_at)

    def auth_timed_out(self) -> Close:
        return self._unauthorized(f"no auth frame within {self.auth_timeout:g}s")

    def start(self) -> Close | None:
        """The user is known: check the per-user limit. None: the transport joins the hub now."""
        sessions, user = self._sessions, self.user
        assert user is not None and self.conn is not None
        self.conn.id = user
        count = sessions.per_user[user]
        if count >= sessions.max_per_user:
            message = f"{user} already has {count} connections open"
            if sessions.log_budget.allows(self.address):
                log.info("refused %s from %s: %s", user, self.peer, message)
            sessions.dropped("too-many-connections")
            error = messages.error(ProtocolError(ErrorCode.RATE_LIMITED, message))
            return Close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections", error)
        sessions.per_user[user] = count + 1
        self.joined = True
        if sessions.expiries is not None:
            sessions.expiries.watch(self)
        if log.isEnabledFor(logging.INFO):  # the count is worked out only for a line that is logged
            log.info(
                "%s connected from %s (%s, %d connections)",
                user,
                self.peer,
                self.device or self.cid,
                len(sessions.hub) + 1,
            )
        return None

    def inbound(self, text: str | None, size: int = 0) -> ProtocolError | Close | None:
        """A message of a joined connection (`text` None: a binary one, of `size` bytes). None: hand it to the hub."""
        self.received += 1
        if text is not None and len(text) < 1024 and text.isascii():  # most frames: one token (`isascii` is O(1))
            if not self._bucket.take(time.monotonic()):  # type: ignore[union-attr]
                return self._flooding()
            self._limited = 0
            return None
        # A message costs one token more for each KiB (of UTF-8) it has: else a party could relay 64 KB frames at the
        # frame rate, 3 MB/s, and have the other dropped as a slow reader (4420) on any link slower than that (and
        # binary ones, which are refused, would be read at 50 MB/s). (At most the burst: a frame that a full bucket
        # cannot pay for would be refused for ever, as a flood.)
        if text is not None:
            size = len(text) if text.isascii() else len(text.encode())
        cost = min(1 + (size >> 10), self._sessions.rate[1])
        if not self._bucket.take(time.monotonic(), cost):  # type: ignore[union-attr]
            return self._flooding()
        self._limited = 0
        if text is None:
            return _BINARY
        if size > self._sessions.max_size:
            return self._sessions.too_large
        return None

    def control(self) -> ProtocolError | Close | None:
        """A frame that is not the end of a message: a ping, a pong, or a fragment before the last one. It costs a
        token like a message does, so that no kind of frame floods for free (a message of n frames costs n).

        None: go on (answer the ping, keep the fragment). A `ProtocolError`: over the rate, this frame is dropped
        (a ping gets no pong; a fragmented message is dropped, and answered `rate-limited`, when it ends). A
        `Close`: the client keeps flooding (4429), and the transport stops reading it.
        """
        if self._bucket.take(time.monotonic()):  # type: ignore[union-attr]
            self._limited = 0
            return None
        return self._flooding()

    def overflowed(self, waiting: int) -> Close:
        """More than `send_buffer` bytes wait for this reader: it is dropped (4420) rather than slowing anyone."""
        if self._sessions.log_budget.allows(self.address):
            log.warning("%s (%s): reads too slowly, %d bytes waiting; disconnecting", self.id, self.cid, waiting)
        self._sessions.dropped("slow-consumer")
        return Close(CloseCode.SLOW_CONSUMER, "too slow: send buffer overflowed")

    def failed(self) -> Close:
        """An unexpected exception (call this inside the `except`): logged with its traceback, closed with 1011."""
        log.exception("%s: unexpected error, closing the connection", self.id)
        return Close(CloseCode.INTERNAL_ERROR, "internal error")

    def ended(self, code: int, errors: int) -> None:
        """The socket is gone (and the hub has let go of a joined connection): release its counts, log its end."""
        if self._ended:
            return
        self._ended = True
        sessions = self._sessions
        sessions.live.discard(self)
        if self.conn is not None:
            address = self.address
            sessions.per_ip[address] -= 1
            if sessions.per_ip[address] <= 0:
                del sessions.per_ip[address]
            # The connection holds its session: let go of it, so that refcounting frees both with the socket. Left
            # as a cycle, a connection (~10 KB with picows's write buffer) waited for the cyclic GC, which seldom
            # looks at the old generations a connection of a few minutes has reached (`tune_gc`, server/run.py).
            self.conn = None
        if not self.joined:
            return
        user = self.user
        assert user is not None
        sessions.per_user[user] -= 1
        if sessions.per_user[user] <= 0:
            del sessions.per_user[user]
        log.info(
            "%s disconnected (code %s) after %.1fs, %d messages%s",
            user,
            code,
            time.monotonic() - self._started,
            self.received,
            f", {errors} errors" if errors else "",
        )

    def _flooding(self) -> ProtocolError | Close:
        self._limited += 1
        settings = self._sessions.settings
        if self._limited <= settings.rate_burst:
            return _DROPPED
        if self._sessions.log_budget.allows(self.address):
            log.warning("%s: kept sending faster than %g frames/s; disconnecting", self.id, settings.rate_limit)
        self._sessions.dropped("rate-limited")
        return Close(CloseCode.RATE_LIMITED, "too many messages")

    def _unauthorized(self, why: str) -> Close:
        if self._sessions.log_budget.allows(self.address):
            log.info("refused a connection (%s) from %s: %s", self.cid, self.peer, why)
        self._sessions.dropped("unauthorized")
        return Close(CloseCode.UNAUTHORIZED, why[:120], messages.error(ProtocolError(ErrorCode.UNAUTHORIZED, why)))


def _token(text: str | None, max_size: int, shape: str = _AUTH_FRAME) -> str:
    """The token of an auth frame. Raises AuthError (saying what is expected) or ValueError (not JSON) if `text`
    is not one."""
    if text is not None and len(text) > max_size:
        raise AuthError(f"the auth frame is larger than {max_size} characters")
    if text is not None and messages.nested_deeper_than(text):
        raise AuthError(f"the auth frame is nested more than {messages.MAX_DEPTH} deep; {shape}")
    frame = json.loads(text or "null")
    if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(frame.get("token"), str):
        raise AuthError(shape)
    token: str = frame["token"]
    return token


_CHECKED = frozenset((b"host", b"origin", b"authorization"))


def _query(query: str) -> dict[str, list[str]]:
    """`parse_qs(query, keep_blank_values=True)`, with a fast path for the common query (`?id=alice&device=d1`):
    without `%` or `+` nothing is unquoted, and splitting it takes ~a third of parse_qs's time (~1 µs a connect)."""
    if "%" in query or "+" in query:
        return parse_qs(query, keep_blank_values=True)
    fields: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            fields.setdefault(name, []).append(value)
    return fields


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name, [])
    return values[0] if len(values) == 1 else None
