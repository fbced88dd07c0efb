"""TURN REST API credentials, as coturn's `use-auth-secret` checks them.

username = "<expiry unix time>:<user>", credential = base64(HMAC-SHA1(secret, username)). coturn recomputes the
HMAC with its `static-auth-secret` and refuses a username whose expiry has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def turn_credentials(user: str, secret: str, ttl: int, now: float) -> tuple[str, str]:
    """(username, credential) for `user`, valid for `ttl` seconds from `now`."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()
