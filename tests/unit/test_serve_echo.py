"""`peercall serve --with-echo` in open mode: the echo it starts takes the reserved id `echo` with a service token
of this process's own, which the server knows and nobody else does."""

from __future__ import annotations

from typing import Any

import pytest

from peercall import cli
from peercall.config import Settings


def test_with_echo_gives_the_server_and_its_echo_one_fresh_service_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """In open mode, serve makes a random service token, gives it to the server's settings and to the echo's
    environment (not its command line), and a new one each time."""
    started: list[dict[str, Any]] = []
    served: list[Settings] = []

    class Popen:
        def __init__(self, command: list[str], **kwargs: Any) -> None:
            started.append({"command": command, **kwargs})
            self.stdin = None

        def terminate(self) -> None: ...

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", Popen)
    monkeypatch.setattr(cli, "_echo_settings_problem", lambda: None)  # the echo's own ranges: not this test's
    monkeypatch.setattr("peercall.server.run.serve", lambda settings: served.append(settings) or 0)
    monkeypatch.delenv("PEERCALL_SERVICE_TOKEN", raising=False)
    for _ in range(2):
        assert cli.main(["serve", "--with-echo", "--port", "0"]) == 0
    tokens = [settings.service_token.get_secret_value() for settings in served if settings.service_token]
    assert len(tokens) == 2 and tokens[0] != tokens[1] and len(tokens[0]) >= 32
    assert [run["env"]["PEERCALL_TOKEN"] for run in started] == tokens
    assert not any(token in " ".join(run["command"]) for run, token in zip(started, tokens, strict=True))
    assert all(settings.port != 0 for settings in served)  # the echo must know the port in advance
