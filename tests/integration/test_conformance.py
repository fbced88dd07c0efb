"""The conformance suite (`peercall conformance`) against our own server: every call outcome over real sockets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from peercall import conformance
from tests.conftest import ServerProcess, run_server


@pytest.fixture(scope="module")
def quick_server() -> Iterator[ServerProcess]:
    """A server with short timers, so that missed calls and lost peers happen within the test."""
    with run_server(PEERCALL_RING_TIMEOUT="1.5", PEERCALL_RESUME_GRACE="1.5") as srv:
        yield srv


@pytest.fixture(scope="module")
def contacts_server() -> Iterator[ServerProcess]:
    """The same, showing presence to contacts only (PEERCALL_DIRECTORY=contacts, as token mode does by default)."""
    with run_server(PEERCALL_RING_TIMEOUT="1.5", PEERCALL_RESUME_GRACE="1.5", PEERCALL_DIRECTORY="contacts") as srv:
        yield srv


@pytest.mark.parametrize("name", list(conformance.SCENARIOS))
async def test_scenario(quick_server: ServerProcess, name: str) -> None:
    """Each protocol rule holds against a real peercall server in open mode (presence for everyone; none skipped)."""
    result = await conformance.run_one(quick_server.ws, name)
    assert result.status == "pass", result.detail


@pytest.mark.parametrize("name", list(conformance.SCENARIOS))
async def test_scenario_with_presence_for_contacts_only(contacts_server: ServerProcess, name: str) -> None:
    """Each rule holds, too, against a server that shows presence to contacts only: the scenarios follow what its
    welcome says (the contact ones check `not-allowed` directories and presence scoped to contacts)."""
    result = await conformance.run_one(contacts_server.ws, name)
    expected = "skip" if name == "unavailable" else "pass"
    assert result.status == expected, result.detail


def test_cli_reports_and_fails_on_a_broken_server(quick_server: ServerProcess) -> None:
    """`peercall conformance` prints one line per scenario, and exits non-zero when a rule fails."""
    ok = subprocess.run(
        [sys.executable, "-m", "peercall", "conformance", quick_server.ws, "-k", "rejected"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS  rejected" in ok.stdout
    # A "server" that is not there at all fails every scenario, and says so.
    bad = subprocess.run(
        [sys.executable, "-m", "peercall", "conformance", "ws://127.0.0.1:9/ws", "-k", "busy"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "FAIL  busy" in bad.stdout


async def test_nothing_fails_when_the_frame_comes(quick_server: ServerProcess) -> None:
    """A scenario's "nothing arrives" check fails when it does arrive (it once could not fail at all)."""
    ctx = conformance.Context([quick_server.ws], 10.0)
    try:
        alice, bob = await ctx.connect("alice"), await ctx.connect("bob")
        await alice.send({"type": "call-request", "to": bob.user})
        with pytest.raises(conformance.Failure, match="should not have received"):
            await bob.nothing("call-request", within=2.0)
        await alice.nothing("call-request", within=0.2)  # and passes when nothing comes
    finally:
        for peer in ctx.peers:
            await peer.close()
