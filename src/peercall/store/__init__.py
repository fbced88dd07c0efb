"""Call history: where ended calls are kept, behind the `CallHistory` Protocol (see `store.base`).

`open_history(url)` is the one place that maps a URL scheme to an implementation. Implementations and their
drivers are imported only when their scheme is asked for, so a server on `memory://` needs neither SQLAlchemy
nor a database driver.
"""

from __future__ import annotations

from .base import CallHistory, Store

__all__ = ["ACCEPTED_URLS", "CallHistory", "Store", "open_history"]

ACCEPTED_URLS = (
    "memory://",
    "sqlite:///relative/path.sqlite3",
    "sqlite:////absolute/path.sqlite3",
    "sqlite:///:memory:",
    "postgresql://user:password@host:port/database",
    "postgres://…",
)

_SQLITE = {"sqlite", "sqlite+aiosqlite"}
_POSTGRES = {"postgresql", "postgres", "postgresql+asyncpg"}


def open_history(url: str) -> Store:
    """The call history that `url` names, not yet opened (call `await history.open()`).

    Args:
        url: `memory://` (in-process, forgotten at exit); `sqlite:///path` (relative to the working directory;
            four slashes for an absolute path; `sqlite:///:memory:`); `postgresql://…` or `postgres://…`
            (a libpq-style `sslmode=` query option is passed on as asyncpg's `ssl=`).

    Raises:
        ValueError: the scheme is not one of those, or the URL cannot be parsed.
        ImportError: the database driver for the scheme is not installed.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "memory":
        from .memory import MemoryHistory

        return MemoryHistory()
    if sep and scheme in _SQLITE:
        from .sql import SQLHistory

        if not rest.startswith("/") or rest == "/":
            # SQLAlchemy would read `sqlite://history.db` as a host name and quietly open an in-memory database.
            raise ValueError(
                "a SQLite URL names a file after three slashes: sqlite:///relative/path.sqlite3, "
                "sqlite:////absolute/path.sqlite3 or sqlite:///:memory:"
            )
        return SQLHistory(f"sqlite+aiosqlite://{rest}")
    if sep and scheme in _POSTGRES:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from .sql import SQLHistory

        try:
            parsed = make_url(f"postgresql+asyncpg://{rest}")
        except ArgumentError as exc:
            raise ValueError(f"invalid PostgreSQL URL: {exc}") from None
        if "sslmode" in parsed.query and "ssl" not in parsed.query:
            parsed = parsed.update_query_dict({"ssl": parsed.query["sslmode"]}).difference_update_query(["sslmode"])
        return SQLHistory(parsed)
    found = f"scheme {scheme!r}" if sep else "no scheme"
    raise ValueError(f"unsupported call history URL ({found}): expected one of {', '.join(ACCEPTED_URLS)}")
