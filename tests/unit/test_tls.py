"""The self-signed certificate's private key is private from the moment it exists."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from peercall.server.tls import self_signed


def test_the_key_is_created_with_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key file is created 0600, not written with the umask's mode and narrowed later (a window in which
    another user could open it): with chmod disabled and a permissive umask it is still 0600."""
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    old = os.umask(0o000)
    try:
        _cert, key, _names = self_signed(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()


def test_a_new_key_replaces_an_old_one_with_a_loose_mode(tmp_path: Path) -> None:
    """A key file left with a loose mode by an older version is replaced by a 0600 one."""
    old_key = tmp_path / "key.pem"
    old_key.write_text("old")
    old_key.chmod(0o644)
    _cert, key, _names = self_signed(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text() != "old"
