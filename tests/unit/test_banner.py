"""The startup banner tells the operator which host names the server answers for (any other gets 421)."""

from __future__ import annotations

from peercall.config import Settings
from peercall.server.run import banner


def test_the_banner_names_the_allowed_hosts_and_how_to_add_one() -> None:
    """With PEERCALL_ALLOWED_HOSTS set, the banner lists those names and says how to add another."""
    text = banner(Settings(allowed_hosts=["calls.example.org"]), 8080)
    line = next(line for line in text.splitlines() if line.startswith("  answers for"))
    assert "calls.example.org" in line
    assert "PEERCALL_ALLOWED_HOSTS" in text


def test_the_banner_says_when_any_host_is_answered() -> None:
    """PEERCALL_ALLOWED_HOSTS=* is said plainly (DNS rebinding is then the proxy's job)."""
    assert "any Host header" in banner(Settings(allowed_hosts=["*"]), 8080)


def test_the_default_lists_localhost() -> None:
    """By default the machine's own names are answered, localhost first."""
    line = next(line for line in banner(Settings(), 8080).splitlines() if line.startswith("  answers for"))
    assert line.split()[2].rstrip(",") == "localhost"


def test_the_banner_warns_of_rate_limits_that_calls_would_meet() -> None:
    """A burst too small for a call's start, or a message size above what the burst pays for, is said at start;
    the defaults say nothing of either."""
    assert "note          PEERCALL" not in banner(Settings(), 8080)
    small = banner(Settings(rate_burst=10), 8080)
    assert "PEERCALL_RATE_BURST=10 is below what a call's start takes" in small
    assert "PEERCALL_MAX_MESSAGE_SIZE=65536 is above what the rate burst pays for" in small  # 64 KiB > 10 KiB
    large = banner(Settings(max_message_size=1 << 20), 8080)
    assert "RATE_BURST" not in large and "frames of 200 KiB or more cost less than their size" in large
