"""Signing in to a server in accounts mode (`PEERCALL_AUTH=accounts`) from Python, and token providers.

Owns one sign-in: the password it was given, the session cookie and the CSRF value the server answered with (all in
memory only, never written anywhere), and the HTTP requests of docs/protocol.md "Accounts" that a program needs:
`POST /api/session` (sign in), `POST /api/session/token` (a signaling token), `DELETE /api/session` (sign out). Also
`server_auth_mode()` (`GET /healthz`: how a client learns the server's mode) and `token_file()` (a token provider
that rereads a file an external refresher rotates).

Imports the standard library and `signaling` (for `ConnectError`) only; must not import the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .signaling import ConnectError, TokenProvider

log = logging.getLogger("peercall.client")

CSRF_HEADER = "X-Peercall-CSRF"
HTTP_TIMEOUT = 10.0
"""Seconds an accounts request may take."""


class SignInError(ConnectError):
    """The server refused to sign us in or to give us a token (`server_code` is its error code: `sign-in-failed` for a
    wrong id or password, `too-many-attempts`, `disabled`, `https-required`…), or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        # 429 (too many attempts) and 503 (too many passwords wait on the server) pass: tried again later.
        super().__init__(message, status=status, terminal=status is not None and status not in (429, 503))
        self.server_code = code


def http_base(url: str) -> str:
    """The server's HTTP origin from its WebSocket (or HTTP) URL: `ws://host:8080/ws` -> `http://host:8080`."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not a server address: {url!r}")
    return f"{scheme}://{parts.netloc}"


def token_file(path: str | Path) -> Callable[[], str]:
    """A token provider that reads the token from `path` each time it is called (so that a program that renews
    tokens can rotate the file while the client runs).

    Args:
        path: a file holding one token.

    Returns:
        The provider; it raises `ValueError` if the file cannot be read or is empty.
    """
    file = Path(path)

    def read() -> str:
        try:
            text = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {file}: {exc.strerror}") from None
        if not text:
            raise ValueError(f"the token file {file} is empty")
        return text

    read.__qualname__ = f"the token file {file}"  # how messages name this provider (signaling.provider_name)
    return read


def _request(
    method: str,
    url: str,
    *,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[int, dict[str, Any], list[str]]:
    """One HTTP request (blocking; run in a thread): (status, JSON body or {}, Set-Cookie headers)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = ssl_context if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, raw, cookies = response.status, response.read(1 << 20), response.headers.get_all("Set-Cookie")
    except urllib.error.HTTPError as exc:
        status, raw, cookies = exc.code, exc.read(1 << 20), exc.headers.get_all("Set-Cookie")
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        parsed = {}
    return status, parsed if isinstance(parsed, dict) else {}, list(cookies or [])


def _error(body: dict[str, Any]) -> tuple[str | None, str]:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("code")), str(error.get("message"))
    return None, "no error message"


async def server_health(
    url: str, ssl_context: ssl.SSLContext | None = None, http_timeout: float = HTTP_TIMEOUT
) -> dict[str, Any] | None:
    """What `GET /healthz` says (`auth`, and `authExpiry` on servers that say it); None if it cannot be asked."""
    try:
        status, body, _ = await asyncio.to_thread(
            _request,
            "GET",
            f"{http_base(url)}/healthz",
            body=None,
            headers={},
            ssl_context=ssl_context,
            timeout=http_timeout,
        )
    except (OSError, ValueError) as exc:
        log.info("could not ask %s for its auth mode: %s", url, exc)
        return None
    return body if status == 200 and isinstance(body, dict) else None


async def server_auth_mode(
    url: str, ssl_context: ssl.SSLContext | None = None, http_timeout: float = HTTP_TIMEOUT
) -> str | None:
    """The server's auth mode as `GET /healthz` says: `open`, `token` or `accounts`; None if it cannot be asked.

    Args:
        url: the server's WebSocket (or HTTP) URL.
        ssl_context: for https servers with a private certificate.
        http_timeout: seconds to wait.
    """
    mode = (await server_health(url, ssl_context, http_timeout) or {}).get("auth")
    return mode if isinstance(mode, str) else None


class Accounts:
    """One sign-in to a server in accounts mode, which hands out signaling tokens.

    ```python
    accounts = Accounts("ws://127.0.0.1:8080/ws", "alice", password)
    async with Client(url, "alice", token_provider=accounts.token) as client: ...
    await accounts.sign_out()
    ```

    (`Client(url, "alice", password=password)` does exactly this.) The password, the session cookie and the CSRF
    value stay in this object's memory. Every request is bounded by `timeout`.

    Args:
        url: the server's WebSocket URL (`ws://host:port/ws`) or its HTTP address.
        id: the user id to sign in as.
        password: its password.
        ssl_context: for https servers with a private certificate.
        timeout: seconds each request may take.
    """

    def __init__(
        self,
        url: str,
        id: str,
        password: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        if not password:
            raise ValueError("the password is empty")
        self.base = http_base(url)
        self.id = id
        self._password = password
        self._ssl = ssl_context
        self.timeout = timeout
        self._cookies: dict[str, str] = {}
        self._csrf: str | None = None
        self._lock = asyncio.Lock()
        self.session: dict[str, Any] | None = None
        """What the sign-in answered (`id`, `name`, `admin`, `session`; not the CSRF value), or None."""

    def __repr__(self) -> str:
        return f"Accounts({self.base!r}, {self.id!r}, signed_in={self.signed_in})"

    @property
    def signed_in(self) -> bool:
        """Whether we hold a sign-in (the server may have ended it since)."""
        return self._csrf is not None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {CSRF_HEADER: self._csrf or "1", "Accept": "application/json"}
        if self._cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._cookies.items())
        url = f"{self.base}{path}"
        try:
            status, answer, cookies = await asyncio.to_thread(
                _request, method, url, body=body, headers=headers, ssl_context=self._ssl, timeout=self.timeout
            )
        except (OSError, ValueError) as exc:
            raise SignInError(f"cannot reach {self.base}: {exc}") from None
        for cookie in cookies:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if name.strip():
                self._cookies[name.strip()] = value
        return status, answer

    async def sign_in(self) -> dict[str, Any]:
        """Sign in with the password (`POST /api/session`).

        Returns:
            Who we are: `{"id", "name", "admin", "session"}`.

        Raises:
            SignInError: a wrong id or password (`sign-in-failed`), too many attempts, a disabled account, a server
                not in accounts mode, or no answer.
        """
        async with self._lock:
            return await self._sign_in()

    async def _sign_in(self) -> dict[str, Any]:
        self._cookies.clear()
        self._csrf = None
        status, body = await self._call("POST", "/api/session", {"id": self.id, "password": self._password})
        if status != 200 or not isinstance(body.get("csrf"), str):
            code, message = _error(body)
            if status == 404:
                message = "this server has no accounts (is it in PEERCALL_AUTH=accounts mode?)"
            raise SignInError(f"cannot sign in to {self.base} as {self.id}: {message}", status=status, code=code)
        self._csrf = body["csrf"]
        self.session = {k: v for k, v in body.items() if k != "csrf"}
        log.info("signed in to %s as %s", self.base, self.id)
        return self.session

    async def token(self) -> str:
        """A fresh signaling token of this sign-in (`POST /api/session/token`), signing in first if we have not yet.
        A `TokenProvider`.

        A sign-in that the server ended (signed out everywhere, ended by an administrator, the account disabled) is
        not made again behind the user's back: that raises.

        Raises:
            SignInError: as `sign_in()`; the sign-in has ended (status 401); or the server would not give a token.
        """
        async with self._lock:
            if self._csrf is None:
                await self._sign_in()
            status, body = await self._call("POST", "/api/session/token")
            token = body.get("token")
            if status == 401:
                self._csrf = None
                self._cookies.clear()
                raise SignInError(
                    f"the sign-in of {self.id} at {self.base} has ended (signed out, or ended by an administrator)",
                    status=status,
                    code=_error(body)[0],
                )
            if status != 200 or not isinstance(token, str):
                code, message = _error(body)
                raise SignInError(f"{self.base} gave no token to {self.id}: {message}", status=status, code=code)
            return token

    async def sign_out(self) -> None:
        """End this sign-in (`DELETE /api/session`): its tokens are refused from now on. Never raises."""
        async with self._lock:
            if self._csrf is None:
                return
            try:
                status, body = await self._call("DELETE", "/api/session")
                if status != 200:
                    log.info("signing out of %s: %s", self.base, _error(body)[1])
            except SignInError as exc:
                log.info("signing out: %s", exc)
            self._cookies.clear()
            self._csrf = None
            self.session = None


__all__ = ["Accounts", "SignInError", "TokenProvider", "http_base", "server_auth_mode", "token_file"]
