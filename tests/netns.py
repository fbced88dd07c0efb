"""A second network inside the loopback-only namespace, for tests of a network change under a call.

Chromium ignores every address on `lo` except its own 127.0.0.1 (and that only with
`--allow-loopback-in-peer-connection`), so addresses added to `lo` are no use here. Instead: a veth pair whose two
ends both stay in the namespace (nothing can leave it), with /32 addresses that the test adds and removes as a
laptop's address changes when it moves to another network. A Chromium launched with `NETWORK_ONLY_FLAGS` (no
loopback flag) has the veth's addresses as its only ICE candidates, so removing the one in use breaks its path.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM_FLAGS

LINK, PEER_END = "pcnet0", "pcnet1"
FIRST, SECOND = "10.0.0.2", "10.0.0.3"
NETWORK_ONLY_FLAGS = [f for f in CHROMIUM_FLAGS if f != "--allow-loopback-in-peer-connection"]
"""Chromium's flags without the loopback one: its only ICE candidates are the veth's addresses."""


def ip(*args: str) -> None:
    """Run `ip ARGS`; fail the test with ip's own words if it cannot (not root, or not in the namespace)."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.fail(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}", pytrace=False)


def move_to_second_address() -> None:
    """The network changes: SECOND comes, then FIRST (the address in use) goes."""
    ip("addr", "add", f"{SECOND}/32", "dev", LINK)
    ip("addr", "del", f"{FIRST}/32", "dev", LINK)


@contextmanager
def veth_network() -> Iterator[None]:
    """A veth pair with FIRST on one end, and no IPv6 on it (Chromium would gather its link-local address as a second
    way out); deleted, with its addresses, at the end."""
    ip("link", "add", LINK, "type", "veth", "peer", "name", PEER_END)
    try:
        for link in (LINK, PEER_END):
            Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1\n")
            ip("link", "set", link, "up")
        ip("addr", "add", f"{FIRST}/32", "dev", LINK)
        yield
    finally:
        subprocess.run(["ip", "link", "del", LINK], check=False, capture_output=True)
