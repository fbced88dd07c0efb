"""An identity provider's signing keys, from its JWKS URL (`PEERCALL_AUTH_JWKS_URL`): OIDC providers rotate them.

A `KeySet` fetches the URL at start and every REFRESH seconds in the background, and again when a token names a
key it does not hold (`refetch`: at most once per `min_interval` seconds; whoever asks meanwhile waits for the fetch
under way or gets the keys as they are). Each fetch replaces the whole set, so a key the provider dropped is
refused from then on. The fetch is blocking urllib, so it runs in a thread (`asyncio.to_thread`) and is bounded by
TIMEOUT: the event loop never waits on the network. A failed fetch keeps the keys held so far and is logged.

Only RS256 and ES256 keys (`kty` RSA and EC, `use` absent or `sig`) are kept; others in the set are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from typing import Any

import jwt

log = logging.getLogger("peercall.auth")

TIMEOUT = 5.0
"""Seconds one fetch of the JWKS may take, connection included."""
REFRESH = 300.0
"""Seconds between two background fetches."""
MAX_BYTES = 1024 * 1024
"""A JWKS larger than this is refused (a provider's is a few KB)."""
MAX_KEYS = 100
"""Keys kept of one JWKS."""
_ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}


class JwksError(Exception):
    """The JWKS could not be fetched or read. `str()` says why."""


class KeySet:
    """The keys of one JWKS URL, by `kid`."""

    def __init__(self, url: str, *, min_interval: float = 30.0, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.min_interval = min_interval
        self.timeout = timeout
        self._keys: dict[str | None, tuple[Any, str]] = {}
        self._fetched_at = -float("inf")  # monotonic time of the last fetch tried
        self._fetching: asyncio.Future[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.error: str | None = None
        """Why the last fetch failed (`no answer in time`, `Connection refused`…), or None."""

    def get(self, kid: str | None) -> tuple[Any, str] | None:
        """(the key, its algorithm) for `kid`; a token without `kid` gets the only key of a set that has one."""
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    @property
    def kids(self) -> list[str | None]:
        return list(self._keys)

    async def start(self) -> None:
        """Fetch the keys now and every REFRESH seconds, in a task: the server does not wait for the provider (a
        token that comes before the first fetch is done waits for it)."""
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_loop())
            await asyncio.sleep(0)  # the first fetch is under way: tokens wait for it rather than start another

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def refetch(self, *, force: bool = False) -> None:
        """Fetch the keys again, unless that was tried less than `min_interval` seconds ago (then return at once)
        or is under way (then wait for it). Never raises: a failure is logged and kept in `error`."""
        if self._fetching is not None:
            await asyncio.shield(self._fetching)
            return
        if not force and time.monotonic() - self._fetched_at < self.min_interval:
            return
        self._fetched_at = time.monotonic()
        self._fetching = asyncio.get_running_loop().create_future()
        try:
            try:
                data = await asyncio.wait_for(asyncio.to_thread(self._download), self.timeout + 1)
                self._keys = parse_keys(data)
            except (TimeoutError, JwksError, OSError, ValueError) as exc:
                why = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
                self.error = why
                log.warning(
                    "could not fetch the keys at %s: %s; keeping the %d held so far", self.url, why, len(self._keys)
                )
            else:
                self.error = None
                log.info("fetched %d signing keys from %s", len(self._keys), self.url)
        finally:
            self._fetching.set_result(None)
            self._fetching = None

    async def _refresh_loop(self) -> None:
        while True:
            await self.refetch(force=True)
            await asyncio.sleep(REFRESH)

    def _download(self) -> bytes:
        """The JWKS document (blocking: runs in a thread)."""
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # the URL is http(s): config.py
                data: bytes = answer.read(MAX_BYTES + 1)
        except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
            raise JwksError(str(getattr(exc, "reason", exc))) from None
        if len(data) > MAX_BYTES:
            raise JwksError(f"the document is larger than {MAX_BYTES} bytes")
        return data


def parse_keys(data: bytes) -> dict[str | None, tuple[Any, str]]:
    """The RS256/ES256 signing keys of a JWKS document, by `kid`.

    Raises:
        JwksError: it is not a JWKS, or holds no usable key.
    """
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise JwksError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('not a JWKS: expected {"keys": [...]}')
    keys: dict[str | None, tuple[Any, str]] = {}
    for entry in document["keys"][:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        algorithm = _ALGORITHMS.get(str(entry.get("kty")))
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue
        try:
            key = jwt.PyJWK.from_dict(entry, algorithm=algorithm)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = (key.key, algorithm)
    if not keys:
        raise JwksError("it holds no RS256 or ES256 signing key")
    return keys
