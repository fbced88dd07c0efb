"""`peercall serve --with-echo`: in open mode the echo it starts takes the reserved id `echo` with a service token
of this process's own, which the server knows and nobody else does; in accounts and token modes it signs its own
short-lived tokens with the server's key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from peercall import cli
from peercall.auth.tokens import SERVICE_SIGNER_ENV, TokenVerifier
from peercall.client.cli import signed_by_serve
from peercall.config import Settings


@dataclass
class Runs:
    started: list[dict[str, Any]] = field(default_factory=list)
    """The echo processes serve started: their command and Popen's keyword arguments."""
    served: list[Settings] = field(default_factory=list)
    """The settings serve ran the server with."""


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Runs:
    """`cli.main(["serve", …])` starts neither a server nor an echo, and says what it would have run."""
    runs = Runs()

    class Popen:
        def __init__(self, command: list[str], **kwargs: Any) -> None:
            runs.started.append({"command": command, **kwargs})
            self.stdin = None

        def terminate(self) -> None: ...

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", Popen)
    monkeypatch.setattr(cli, "_echo_settings_problem", lambda: None)  # the echo's own ranges: not these tests'
    monkeypatch.setattr("peercall.server.run.serve", lambda settings: runs.served.append(settings) or 0)
    return runs


def test_with_echo_gives_the_server_and_its_echo_one_fresh_service_token(
    runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In open mode, serve makes a random service token, gives it to the server's settings and to the echo's
    environment (not its command line), and a new one each time."""
    monkeypatch.delenv("PEERCALL_SERVICE_TOKEN", raising=False)
    for _ in range(2):
        assert cli.main(["serve", "--with-echo", "--port", "0"]) == 0
    tokens = [settings.service_token.get_secret_value() for settings in runs.served if settings.service_token]
    assert len(tokens) == 2 and tokens[0] != tokens[1] and len(tokens[0]) >= 32
    assert [run["env"]["PEERCALL_TOKEN"] for run in runs.started] == tokens
    assert not any(token in " ".join(run["command"]) for run, token in zip(runs.started, tokens, strict=True))
    assert all(settings.port != 0 for settings in runs.served)  # the echo must know the port in advance


@pytest.mark.parametrize("mode", ["accounts", "token"])
def test_with_echo_hands_the_echo_a_signer_of_short_tokens_in_its_environment(
    mode: str, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In accounts and token modes, serve gives the echo the server's key in its environment (not its command line),
    from which the echo mints a fresh token for each renewal: one the server accepts, of the accounts token TTL
    (token mode: an hour)."""
    monkeypatch.setenv("PEERCALL_AUTH", mode)
    monkeypatch.setenv("PEERCALL_ACCOUNTS_TOKEN_TTL", "42")
    monkeypatch.setenv("PEERCALL_AUTH_SECRET", "k" * 40)
    monkeypatch.delenv("PEERCALL_TOKEN", raising=False)
    assert cli.main(["serve", "--with-echo", "--port", "0"]) == 0
    (run,) = runs.started
    assert "PEERCALL_TOKEN" not in run["env"] and "k" * 40 not in " ".join(run["command"])
    monkeypatch.setenv(SERVICE_SIGNER_ENV, run["env"][SERVICE_SIGNER_ENV])  # as the echo finds it
    credentials = signed_by_serve("echo")
    verifier = TokenVerifier.for_settings(runs.served[0])
    assert credentials is not None and verifier is not None
    token = verifier.identify(credentials["token_provider"]())
    assert token.user == "echo"
    assert token.expires_at - time.time() == pytest.approx(42 if mode == "accounts" else 3600, abs=2)
    monkeypatch.delenv(SERVICE_SIGNER_ENV)
    assert signed_by_serve("echo") is None  # a `peercall echo` of its own: the usual token or password
