"""The two transports of `/ws`, for the tests of the session rules (server/session.py) that must hold on both:
picows (server/fastws.py, the default) and the ASGI WebSocket (server/ws.py, used with per-message deflate)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess, run_server

TRANSPORTS: dict[str, dict[str, str]] = {
    "picows": {},
    "deflate": {"PEERCALL_WS_PER_MESSAGE_DEFLATE": "true"},
}
"""The settings that pick each transport, to pass to `run_server()`."""


@pytest.fixture(scope="session", params=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    """Each transport in turn: a test (or a fixture) that takes this runs over both."""
    return str(request.param)


@pytest.fixture(scope="session")
def deflate_server() -> Iterator[ServerProcess]:
    """A server of the session's own with per-message deflate on (the ASGI transport), shared like `server`."""
    with run_server(**TRANSPORTS["deflate"]) as srv:
        yield srv


@pytest.fixture
def ws_server(transport: str, request: pytest.FixtureRequest) -> ServerProcess:
    """The shared server of each transport in turn (`server` for picows, `deflate_server` for the ASGI one)."""
    return request.getfixturevalue("server" if transport == "picows" else "deflate_server")  # type: ignore[no-any-return]
