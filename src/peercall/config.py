"""Settings: one frozen, typed object, read from PEERCALL_* environment variables and CLI options.

CLI options win over the environment, the environment over the defaults. Invalid values stop the server at
startup with a message naming the setting, never later.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_STUN = "stun:stun.l.google.com:19302"

OLD_HISTORY = Path("peercall.sqlite3")
"""Where the call history was kept by default before it moved to the data folder: in the working directory."""

log = logging.getLogger("peercall")


def data_folder() -> Path:
    """peercall's folder for what it keeps between runs: `$XDG_DATA_HOME/peercall`, else `~/.local/share/peercall`.

    A relative XDG_DATA_HOME is ignored, as the XDG Base Directory specification says. The folder is not created
    here: whoever writes into it first does (the SQLite history makes it 0700).
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "peercall"


def default_database_url() -> str:
    """The call history when `PEERCALL_DATABASE_URL` is not set: `history.sqlite3` in `data_folder()`.

    If the working directory holds a `peercall.sqlite3` (the default before the history moved), that file is used
    instead, so that nobody loses their history; `Settings.uses_old_history` is then true.
    """
    if OLD_HISTORY.is_file():
        return f"sqlite:///{OLD_HISTORY}"
    return f"sqlite:///{data_folder() / 'history.sqlite3'}"


WEBHOOK_EVENTS = ("call.ringing", "call.answered", "call.missed", "call.ended")
"""The webhook event types (hub/webhooks.py `EVENT_TYPES`)."""


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a webhook secret: `whsec_` and the base64 of 24 to 64 bytes (Standard Webhooks).

    Raises:
        ValueError: it is not such a secret (the message says what is expected, never the secret).
    """
    expected = "expected whsec_ and the base64 of 24 to 64 random bytes (echo whsec_$(openssl rand -base64 32))"
    if not secret.startswith("whsec_"):
        raise ValueError(expected)
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not base64 after whsec_; {expected}") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"{len(key)} bytes after whsec_; {expected}")
    return key


def _is_http_url(url: str) -> bool:
    """Whether `url` is an http:// or https:// URL with a host (and a port, if any, that can be)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError if out of range)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"\s", url)


def _web_origin(text: str) -> str:
    """`text` as a web origin for CSP (`https://host[:port]`, lower-case), or ValueError saying what is wrong."""
    problem = f"{text!r} is not a web origin (scheme://host[:port], e.g. https://www.example.org)"
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    host = parts.hostname or ""
    if (
        parts.scheme.lower() not in ("http", "https")
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or any(not (c.isalnum() or c in ".-[]:") for c in host)
    ):
        raise ValueError(problem)
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{shown}{f':{port}' if port is not None else ''}"


class IceServer(BaseModel):
    """One RTCIceServer, in the browser's own shape (`urls`, `username`, `credential`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


PLACEHOLDER = "CHANGE-ME"
"""How deploy/peercall.env.example marks the secrets and passwords to replace: refused at start."""

_SECRETS = ("auth_secret", "turn_secret", "service_token", "metrics_token", "vapid_private_key", "webhook_secret")


class Settings(BaseSettings):
    """Every setting of the server. Environment variable: PEERCALL_ + the upper-case name."""

    model_config = SettingsConfigDict(env_prefix="PEERCALL_", frozen=True, extra="forbid")

    host: str = "0.0.0.0"
    """Interface to listen on (`PEERCALL_HOST`)."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """TCP port (`PEERCALL_PORT`); 0 picks a free one and the banner says which."""
    ice_servers: list[IceServer] | None = None
    """Fixed ICE servers for `/ice-servers`, as JSON (`PEERCALL_ICE_SERVERS='[{"urls":"stun:…"}]'`; `[]` for
    none). Unset: the seed's public STUN server, unless STUN or TURN URLs below are set."""
    stun_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """STUN server URLs, comma-separated (`PEERCALL_STUN_URLS=stun:turn.example.org:3478`)."""
    turn_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """TURN server URLs, comma-separated (`PEERCALL_TURN_URLS=turn:turn.example.org:3478?transport=udp,…`)."""
    turn_secret: SecretStr | None = None
    """coturn's `static-auth-secret` (`PEERCALL_TURN_SECRET`): each user gets short-lived TURN credentials."""
    turn_ttl: Annotated[int, Field(ge=60, le=7 * 86400)] = 3600
    """Lifetime of minted TURN credentials, seconds (`PEERCALL_TURN_TTL`)."""
    ice_transport_policy: Literal["all", "relay"] = "all"
    """`relay` makes every client use TURN only, so that neither side learns the other's IP address
    (`PEERCALL_ICE_TRANSPORT_POLICY`; needs TURN)."""
    auth: Literal["open", "token", "accounts"] = "open"
    """`open`: anyone may connect under any id. `token`: a signed JWT whose `sub` is the user id is required
    (`PEERCALL_AUTH`). `accounts`: users, invites, passwords and sessions live in the store (`database_url`); a
    signed-in browser gets short-lived signaling tokens from `POST /api/session/token` (docs/protocol.md)."""
    auth_secret: SecretStr | None = None
    """HS256 secret for tokens (`PEERCALL_AUTH_SECRET`); `peercall token` signs with it. In accounts mode, the key
    that signs signaling tokens: unset, a random one is made into `signing.key` in `data_folder()` (mode 0600);
    set it, the same on every node, for a cluster."""
    accounts_token_ttl: Annotated[float, Field(ge=10, le=3600)] = 300.0
    """Seconds a signaling token of accounts mode is valid (`PEERCALL_ACCOUNTS_TOKEN_TTL`): also how long a socket of
    an ended sign-in may stay open (plus 5 s of clock skew): its next renewal is refused, and with `auth_expiry`
    `enforce` (accounts mode's default) a socket that is not renewed is closed; with `ignore` set, such a socket stays
    open (docs/security.md, revocation delay)."""
    accounts_session_ttl: Annotated[float, Field(gt=0, le=400)] = 30.0
    """Days a sign-in lasts without being used (`PEERCALL_ACCOUNTS_SESSION_TTL`); each use extends it."""
    public_url: Annotated[str | None, Field(pattern=r"^https?://[^/?#\s]+$")] = None
    """The server's address as people reach it, without a path (`PEERCALL_PUBLIC_URL=https://calls.example.org`):
    the base of set-up and invite links. Unset: `http(s)://localhost:<port>`, or the Host of the request."""
    auth_public_key: Path | None = None
    """PEM file of an RS256/ES256 public key for tokens (`PEERCALL_AUTH_PUBLIC_KEY`)."""
    auth_audience: str | None = None
    """The `aud` a token must carry (`PEERCALL_AUTH_AUDIENCE`; an identity provider's client id). Unset: `aud` is
    not checked."""
    auth_issuer: str | None = None
    """The `iss` a token must carry (`PEERCALL_AUTH_ISSUER`; an identity provider's issuer URL). Unset: not checked."""
    auth_jwks_url: Annotated[str | None, Field(pattern=r"^https?://")] = None
    """An identity provider's JWKS URL (`PEERCALL_AUTH_JWKS_URL`, e.g. Keycloak's
    `https://id.example.org/realms/family/protocol/openid-connect/certs`): tokens are checked with its RS256/ES256
    keys, fetched at start, every 5 minutes, and when a token names a key not seen yet (the provider rotated)."""
    auth_jwks_min_interval: Annotated[float, Field(ge=0, le=3600)] = 30.0
    """Seconds between two fetches of the JWKS that unknown keys may cause (`PEERCALL_AUTH_JWKS_MIN_INTERVAL`): a
    flood of tokens with made-up `kid`s costs the provider one request per interval at most."""
    auth_expiry: Literal["ignore", "enforce"] | None = None
    """What happens when the token of a live connection expires (`PEERCALL_AUTH_EXPIRY`): `ignore` (a connection
    outlives its token) or `enforce` (it is closed with 4401 unless the client renewed it with an `auth` frame before
    `exp`, plus 5 s of clock skew). Unset: `enforce` in accounts mode, whose tokens the server hands out and its
    clients renew (so the socket of an ended sign-in closes within a token's lifetime), `ignore` in token mode (an
    identity provider's clients may not renew; see `effective_auth_expiry`)."""
    auth_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Seconds a connection has to send its `auth` frame (`PEERCALL_AUTH_TIMEOUT`)."""
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Web origins allowed to open the WebSocket, comma-separated (`PEERCALL_ALLOWED_ORIGINS`); `*` for any.
    Empty (the default): same-origin only. Clients that send no Origin (non-browsers) are not affected."""
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Host names (and addresses) the server answers for, comma-separated (`PEERCALL_ALLOWED_HOSTS`); `*` for any.
    Empty (the default): `localhost`, `127.0.0.1`, `::1`, this machine's host name and its interfaces' addresses.
    Behind a reverse proxy, list the public name. Any other Host gets 421, on every route and on `/ws` (a DNS
    rebinding page names its own host)."""
    metrics_token: SecretStr | None = None
    """Bearer token that `/metrics` requires, and with which `/readyz` gives its counts
    (`PEERCALL_METRICS_TOKEN`). Unset: in open mode without `private` both are public; otherwise (private, token or
    accounts mode) `/metrics` is served to loopback clients only and `/readyz` gives its counts to them alone."""
    reserved_ids: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["echo"])
    """Service ids, comma-separated (`PEERCALL_RESERVED_IDS`; default `echo`): in every mode everyone sees them and
    may ring them (core/social.py: services are public). Nobody may take one in open mode, whose callers must reach
    the service and not whoever took its id: only a connection that shows `service_token` may use one. Empty: none.
    (In token mode the identity provider decides who is who: it must not hand one to a person.)"""
    service_token: SecretStr | None = None
    """The bearer token with which a service (the echo) takes a reserved id in open mode
    (`PEERCALL_SERVICE_TOKEN`). `serve --with-echo` makes a random one per process when it is unset."""
    push: bool = False
    """Ring closed apps by Web Push (`PEERCALL_PUSH=true`; docs/push.md): a call to someone with no device
    connected rings the browsers they opted in on. Token or accounts mode only (in open mode anyone could take
    anyone's id, and with it their pushes)."""
    vapid_private_key: SecretStr | None = None
    """The VAPID key that signs pushes (`PEERCALL_VAPID_PRIVATE_KEY`): PEM, or the base64url of the raw P-256
    private key. Unset: one is made into `vapid.pem` in `data_folder()`; set it, the same on every node, for a
    cluster (browsers subscribe with its public key)."""
    vapid_subject: Annotated[str | None, Field(pattern=r"^(mailto:[^\s@]+@[^\s@]+|https://\S+)$")] = None
    """Who runs this server, for the push services (`PEERCALL_VAPID_SUBJECT=mailto:admin@example.org`, or an https
    URL). Unset: `public_url` if it is https, else `mailto:admin@localhost` (which Apple's push service refuses)."""
    push_services: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "https://fcm.googleapis.com",
            "https://updates.push.services.mozilla.com",
            "https://*.push.apple.com",
            "https://*.notify.windows.com",
        ]
    )
    """Push services the server may send pushes to, comma-separated `scheme://host[:port]`, a host may start
    with `*.` (`PEERCALL_PUSH_SERVICES`): a subscription to any other endpoint is refused, so that nobody makes the
    server post wherever they like. Default: the services of Chrome, Firefox, Safari and Edge."""
    private: bool = False
    """Hide who exists (`PEERCALL_PRIVATE`): no presence lists, and calling someone offline or in a call looks like
    a call nobody answers (a silent call: rings until the ring timeout, holds nobody) instead of `unavailable` or
    `busy`."""
    directory: Literal["all", "contacts"] | None = None
    """Whose presence a user sees (`PEERCALL_DIRECTORY`): `contacts` (their contacts only; nobody can list who
    uses the server) or `all` (everyone online: small, trusted servers, and the two-tab demo). Default: `all` in
    open mode, `contacts` in token and accounts modes (where an invite makes its maker and the invitee contacts)."""
    calls_from: Literal["everyone", "contacts", "nobody"] | None = None
    """Who may ring a user who has not chosen (`PEERCALL_CALLS_FROM`): `everyone`, `contacts` or `nobody`.
    Default: `everyone` in open mode, `contacts` in token and accounts modes."""
    contact_rate: Annotated[int, Field(ge=1)] = 60
    """Contact frames (requests, blocks, settings, directory pages) a user may send per minute
    (`PEERCALL_CONTACT_RATE`)."""
    store_timeout: Annotated[float, Field(gt=0)] = 5.0
    """Seconds a store operation on the signaling path may take before it fails (`PEERCALL_STORE_TIMEOUT`):
    contacts, blocks, ring settings, display names, push subscriptions, missed calls, call summaries (a batch of
    history records: 30 s); PostgreSQL only (SQLite: its busy timeout). A database that stops answering then
    costs a join its contacts for now, and a call-request or contact frame a `service-unavailable`, instead of
    holding them for ever."""
    call_policy: Annotated[str | None, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] = None
    """An operator's rule for who may call whom (`PEERCALL_CALL_POLICY=module:function`): a function (or
    coroutine function) of `(caller, callee)` returning whether the call may ring. Asked for every call-request: a
    coroutine function within 1 s; a plain function runs on the event loop, unbounded, so it must be quick. An
    error, a coroutine's timeout or anything but `True` refuses the call (docs/operations.md has an example)."""
    presence_interval: Annotated[float, Field(ge=0.01, le=10)] = 0.1
    """Seconds over which presence changes are gathered into one frame per connection
    (`PEERCALL_PRESENCE_INTERVAL`): keeps a reconnect storm of N users from costing N^2 frames."""
    rate_limit: Annotated[float, Field(gt=0)] = 50.0
    """Frames per second a connection may send, sustained (`PEERCALL_RATE_LIMIT`); a frame of n whole KiB counts as
    1 + n frames (at most the burst)."""
    rate_burst: Annotated[int, Field(ge=1)] = 200
    """Frames a connection may send at once above the rate (`PEERCALL_RATE_BURST`)."""
    call_rate: Annotated[int, Field(ge=1)] = 30
    """Call requests a user may make per minute (`PEERCALL_CALL_RATE`)."""
    max_connections_per_ip: Annotated[int, Field(ge=1)] = 200
    """Open connections from one address, an IPv6 address counting with its /64
    (`PEERCALL_MAX_CONNECTIONS_PER_IP`): as many connections that speak HTTP (server/gate.py) and as many `/ws`
    sessions (server/session.py). A `/ws` session behind a trusted proxy (`forwarded_allow_ips`) counts as the
    address the proxy forwards; the proxy's own connections are not capped by address."""
    connection_rate: Annotated[float, Field(gt=0)] = 20.0
    """New connections a second from one address (IPv6: its /64), with a burst of five seconds' worth
    (`PEERCALL_CONNECTION_RATE`); past it a connection gets HTTP 429. Not applied to trusted proxies."""
    head_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds a connection has to send a whole HTTP request head, from when it opens or its request begins
    (`PEERCALL_HEAD_TIMEOUT`), and then as long again for the request's body; past either, HTTP 408 and the
    connection is closed (slowloris, on the head or on the body)."""
    max_connections_per_user: Annotated[int, Field(ge=1)] = 10
    """Open connections (devices) of one user (`PEERCALL_MAX_CONNECTIONS_PER_USER`)."""
    send_buffer: Annotated[int, Field(ge=16 * 1024)] = 1024 * 1024
    """Bytes that may wait to be sent to one slow connection before it is dropped (`PEERCALL_SEND_BUFFER`)."""
    relay_buffer: Annotated[int, Field(ge=0)] | None = None
    """Bytes held back for a connection past which the frames its call's other party sends it (offer, answer,
    candidate, media-state) are dropped, and that party told `rate-limited`, rather than queued until the reader
    is dropped as a slow one (`PEERCALL_RELAY_BUFFER`): a party that floods the other fills no more than this of
    its buffer. Default: a quarter of the send buffer, at least 64 KiB (the backlog holds the server's own frames
    too: presence, a directory page); 0: no such limit (relayed frames count against the send buffer like any
    other). Otherwise 16 KiB at least, and at most the send buffer."""

    @property
    def effective_relay_buffer(self) -> int | None:
        """`relay_buffer` as the hub applies it: None for no limit."""
        if self.relay_buffer is None:
            return min(max(self.send_buffer // 4, 64 * 1024), self.send_buffer)
        return self.relay_buffer or None

    ping_interval: Annotated[float, Field(gt=0)] = 20.0
    """Seconds between WebSocket pings from the server (`PEERCALL_PING_INTERVAL`)."""
    ping_timeout: Annotated[float, Field(gt=0)] = 20.0
    """Seconds without a pong before a connection is reaped as lost (`PEERCALL_PING_TIMEOUT`)."""
    certfile: Path | None = None
    """TLS certificate (PEM) for https/wss (`PEERCALL_CERTFILE`, `--certfile`)."""
    keyfile: Path | None = None
    """TLS private key (PEM) (`PEERCALL_KEYFILE`, `--keyfile`)."""
    tls_self_signed: bool = False
    """Make a self-signed certificate for this machine's names and addresses and serve https
    (`PEERCALL_TLS_SELF_SIGNED`, `--tls-self-signed`)."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies whose X-Forwarded-For is trusted for the client address (`PEERCALL_FORWARDED_ALLOW_IPS`): addresses
    and networks, comma-separated. Never everyone (`*`, `0.0.0.0/0`, `::/0`): refused at start (`_proxies`)."""
    max_message_size: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    """Largest frame, in bytes, that is routed; larger ones get `too-large` (`PEERCALL_MAX_MESSAGE_SIZE`)."""
    embed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Web origins whose pages may show the call button (`/embed/call/<id>`) in an iframe, separated by commas or
    spaces (`PEERCALL_EMBED_ORIGINS`), e.g. `https://www.example.org`. Empty (the default): no site may. Only that
    page is ever framed (CSP `frame-ancestors`); every other page keeps `frame-ancestors 'none'`."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the HTTP API from other sites, comma-separated (`PEERCALL_CORS_ORIGINS`); `*`
    allows any. Empty (the default): same-origin only."""
    ring_timeout: Annotated[float, Field(gt=0, le=600)] = 45.0
    """Seconds a call rings before it ends as missed (`PEERCALL_RING_TIMEOUT`)."""
    resume_grace: Annotated[float, Field(ge=0, le=600)] = 20.0
    """Seconds a call waits for a party whose connection dropped to come back (`PEERCALL_RESUME_GRACE`);
    the audio is peer-to-peer and usually keeps flowing meanwhile."""
    database_url: str = Field(default_factory=default_database_url)
    """Call history store (`PEERCALL_DATABASE_URL`): `sqlite:///relative/path` or `sqlite:////absolute/path`,
    `postgresql://user:password@host/db` for several nodes, or `memory://` (lost at exit). Default:
    `$XDG_DATA_HOME/peercall/history.sqlite3` (`~/.local/share/peercall/history.sqlite3`), or `peercall.sqlite3`
    in the working directory if one is there from before (see `default_database_url`)."""
    history_retention: Annotated[float, Field(ge=0)] = 365.0
    """Days a call stays in the history (`PEERCALL_HISTORY_RETENTION`); older calls are deleted, in small batches,
    by the node that writes the history (at its first write, then hourly). `0` keeps every call for ever."""
    redis_url: str | None = None
    """Several nodes (`PEERCALL_REDIS_URL=redis://host:6379/0`): nodes with the same Redis share presence,
    routing and call state, so users on any two of them can call each other. Unset: one node, all in memory."""
    redis_prefix: Annotated[str, Field(min_length=1, max_length=64)] = "peercall:"
    """Prefix of every Redis key and channel (`PEERCALL_REDIS_PREFIX`): several clusters may share one Redis."""
    node_id: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = None
    """This node's name in logs and in Redis (`PEERCALL_NODE_ID`); default: a random one."""
    node_lease: Annotated[float, Field(ge=1, le=300)] = 10.0
    """Seconds after which a node that stopped renewing its lease (it died without a word) has its connections
    taken as gone and its users marked offline (`PEERCALL_NODE_LEASE`)."""
    webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Where call events are POSTed, signed (`PEERCALL_WEBHOOK_URLS=https://hooks.example.org/peercall`; several,
    comma-separated, each gets every event): docs/webhooks.md. Empty (the default): none are sent."""
    webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """The key that signs webhooks (`PEERCALL_WEBHOOK_SECRET`), required with `webhook_urls`: `whsec_` and the
    base64 of 24 to 64 random bytes, as Standard Webhooks has it (make one: `echo whsec_$(openssl rand -base64
    32)`). To rotate, give the new one and the old one, comma-separated: both sign each event meanwhile."""
    webhook_events: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """The event types sent, comma-separated (`PEERCALL_WEBHOOK_EVENTS=call.missed`); empty (the default): all of
    `call.ringing`, `call.answered`, `call.missed`, `call.ended`."""
    webhook_retry_for: Annotated[float, Field(gt=0, le=7 * 86400)] = 86400.0
    """Seconds a webhook delivery is retried, with exponential backoff, until its URL answers 2xx
    (`PEERCALL_WEBHOOK_RETRY_FOR`)."""
    webhook_queue: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    """Webhook deliveries that may wait on one node (in flight or for a retry; `PEERCALL_WEBHOOK_QUEUE`): beyond
    it, events are dropped with a warning and counted in /metrics."""
    shutdown_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Seconds that a graceful shutdown waits for connections to close (`PEERCALL_SHUTDOWN_TIMEOUT`)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """`debug` also logs every routed message (`PEERCALL_LOG_LEVEL`)."""
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object a line, with `callId` on every line about a call (`PEERCALL_LOG_FORMAT`)."""
    access_log: bool = True
    """Log every HTTP request (`PEERCALL_ACCESS_LOG`)."""
    ws_per_message_deflate: bool = False
    """Compress WebSocket frames (`PEERCALL_WS_PER_MESSAGE_DEFLATE`): saves bandwidth on SDP, costs memory and
    CPU on every connection, so it is off by default."""

    @field_validator(
        "cors_origins",
        "allowed_origins",
        "allowed_hosts",
        "stun_urls",
        "turn_urls",
        "reserved_ids",
        "push_services",
        "webhook_urls",
        "webhook_secret",
        "webhook_events",
        mode="before",
    )
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("embed_origins", mode="before")
    @classmethod
    def _split_embed_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    @field_validator("embed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [_web_origin(origin) for origin in value]

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        """uvicorn's "trust every proxy" (`*`) would let any client name its own address: uvicorn takes the leftmost
        X-Forwarded-For entry, which the client writes, so it could claim 127.0.0.1 (the loopback-only /metrics and
        /readyz counts) or a fresh address for every request (past every per-address cap, throttle and log budget).
        A network that holds every address is the same. No deployment needs it: a proxy whose address changes sits
        in a network that can be listed (`10.0.0.0/8`)."""
        for part in (p.strip() for p in value.split(",")):
            try:
                everyone = part == "*" or ("/" in part and ipaddress.ip_network(part, strict=False).prefixlen == 0)
            except ValueError:
                everyone = False  # uvicorn takes it as a literal name, which no client's address is
            if everyone:
                raise ValueError(
                    f"{part!r} trusts every client's X-Forwarded-For, so any client could claim any address "
                    "(127.0.0.1 included): list your proxies' addresses or networks (e.g. 10.0.0.0/8)"
                )
        return value

    @field_validator("reserved_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        from .protocol.messages import is_valid_id

        bad = [user for user in value if not is_valid_id(user)]
        if bad:
            raise ValueError(f"not user ids (1-64 ASCII letters, digits, '_', '-', '.' or '@'): {', '.join(bad)}")
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: list[str]) -> list[str]:
        bad = [url for url in value if not _is_http_url(url)]
        if bad:
            raise ValueError(f"not http:// or https:// URLs: {', '.join(bad)}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            webhook_key(secret.get_secret_value())
        return value

    @field_validator("webhook_events")
    @classmethod
    def _webhook_events(cls, value: list[str]) -> list[str]:
        bad = [kind for kind in value if kind not in WEBHOOK_EVENTS]
        if bad:
            raise ValueError(f"unknown event types {', '.join(bad)}: choose among {', '.join(WEBHOOK_EVENTS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # deploy/peercall.env.example's placeholders: a copy of it whose secrets were not all replaced would run
        # with secrets printed in this repository (anyone could sign tokens, or use the TURN relay).
        for name in _SECRETS:
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            if any(v is not None and PLACEHOLDER in v.get_secret_value() for v in values):
                raise ValueError(f"{name} is still the example's placeholder ({PLACEHOLDER}…): set a random one")
        if self.relay_buffer and not 16 * 1024 <= self.relay_buffer <= self.send_buffer:
            raise ValueError(
                f"relay_buffer={self.relay_buffer}: 0 (no limit), or from 16384 to send_buffer ({self.send_buffer})"
            )
        for name in ("redis_url", "database_url"):
            if PLACEHOLDER in (getattr(self, name) or ""):
                raise ValueError(f"{name} still has the example's placeholder password ({PLACEHOLDER}…)")
        if self.auth == "accounts" and self.auth_public_key is not None:
            raise ValueError("auth=accounts signs its own tokens: unset auth_public_key (auth_secret may be set)")
        if (
            self.auth == "token"
            and self.auth_secret is None
            and self.auth_public_key is None
            and self.auth_jwks_url is None
        ):
            raise ValueError(
                "auth=token needs auth_secret (HS256), auth_public_key (RS256/ES256) or auth_jwks_url (an identity "
                "provider's keys)"
            )
        if self.auth_jwks_url is not None and self.auth_public_key is not None:
            raise ValueError("choose auth_jwks_url or auth_public_key, not both")
        if self.auth_public_key is not None and not self.auth_public_key.is_file():
            raise ValueError(f"auth_public_key: no such file {self.auth_public_key}")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together")
        if self.tls_self_signed and self.certfile is not None:
            raise ValueError("choose tls_self_signed or certfile/keyfile, not both")
        if self.service_token is not None and len(self.service_token.get_secret_value()) < 16:
            raise ValueError("service_token must be at least 16 characters (a random one: openssl rand -hex 32)")
        if self.turn_secret is not None and not self.turn_urls:
            raise ValueError("turn_secret needs turn_urls")
        if self.push and self.auth == "open":
            raise ValueError("push needs auth=token or auth=accounts (in open mode anyone could take a user's pushes)")
        for service in self.push_services:
            if not re.fullmatch(
                r"https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?", service
            ):
                raise ValueError(f"push_services: {service!r} is not scheme://host[:port]")
        if self.ice_transport_policy == "relay" and not self.turn_urls:
            raise ValueError("ice_transport_policy=relay needs turn_urls")
        if self.webhook_urls and not self.webhook_secret:
            raise ValueError(
                "webhook_urls needs webhook_secret, the key that signs them: whsec_ and the base64 of 24 to 64 random "
                "bytes (echo whsec_$(openssl rand -base64 32))"
            )
        return self

    def webhook_keys(self) -> list[bytes]:
        """The HMAC keys of `webhook_secret`, the one in use first."""
        return [webhook_key(secret.get_secret_value()) for secret in self.webhook_secret]

    @property
    def effective_directory(self) -> str:
        """`directory`, or its default for the auth mode."""
        return self.directory or ("all" if self.auth == "open" else "contacts")

    @property
    def effective_auth_expiry(self) -> str:
        """`auth_expiry`, or its default for the auth mode: `enforce` in accounts mode, `ignore` otherwise."""
        return self.auth_expiry or ("enforce" if self.auth == "accounts" else "ignore")

    @property
    def effective_calls_from(self) -> str:
        """`calls_from`, or its default for the auth mode."""
        return self.calls_from or ("everyone" if self.auth == "open" else "contacts")

    @property
    def uses_old_history(self) -> bool:
        """No database was set and the history is the `peercall.sqlite3` found in the working directory."""
        return "database_url" not in self.model_fields_set and self.database_url == f"sqlite:///{OLD_HISTORY}"

    def log_history_choice(self) -> None:
        """Log at INFO that the old `peercall.sqlite3` in the working directory is used, if it is."""
        if self.uses_old_history:
            log.info(
                "call history: using %s in the working directory (found from before); the default is now %s: "
                "move the file there, or set PEERCALL_DATABASE_URL, to keep one history wherever peercall starts",
                OLD_HISTORY.resolve(),
                data_folder() / "history.sqlite3",
            )
        if self.redis_url and not self.database_url.lower().startswith(("postgres", "sqlite")):
            log.warning(
                "several nodes (PEERCALL_REDIS_URL) with a store of this node's own (%s): each node keeps its own "
                "contacts and history; give every node the same PostgreSQL (PEERCALL_DATABASE_URL)",
                self.database_url.partition("://")[0] + "://",
            )
        elif self.redis_url and self.database_url.lower().startswith("sqlite"):
            log.info(
                "several nodes (PEERCALL_REDIS_URL) with the SQLite store %s: every node of the cluster must open this "
                "same file (nodes on one machine); nodes on several machines need one PostgreSQL",
                self.database_url.partition(":///")[2],
            )

    def log_weak_secrets(self) -> None:
        """Log a warning for an HS256 secret shorter than RFC 7518 asks (32 bytes): it can be guessed offline from
        any token it signed, and whoever finds it signs tokens as anyone."""
        if self.auth_secret is not None and len(self.auth_secret.get_secret_value().encode()) < 32:
            log.warning(
                "PEERCALL_AUTH_SECRET is %d bytes: too short for an HS256 key (anyone who guesses it signs tokens as "
                "anyone): use 32 random bytes or more (openssl rand -hex 32)",
                len(self.auth_secret.get_secret_value().encode()),
            )

    @property
    def tls(self) -> bool:
        return self.certfile is not None or self.tls_self_signed

    def fixed_ice_servers(self) -> list[IceServer]:
        """The ICE servers that are the same for everyone (TURN with a secret is minted per user)."""
        if self.ice_servers is not None:
            servers = list(self.ice_servers)
        elif self.stun_urls or self.turn_urls:
            servers = []
        else:
            servers = [IceServer(urls=DEFAULT_STUN)]
        if self.stun_urls:
            servers.append(IceServer(urls=self.stun_urls))
        return servers
