"""`peercall admin` as the operator runs it: a process on the server's SQLite store (PEERCALL_DATABASE_URL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from peercall.core.social import CallsFrom
from peercall.store import open_history


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'history.sqlite3'}"


def admin(url: str, *args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `peercall admin ARGS` with only PEERCALL_DATABASE_URL set among peercall's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERCALL_")}
    env["PEERCALL_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "peercall", "admin", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def circle_json(url: str, user: str) -> dict[str, Any]:
    done = admin(url, "contacts", user, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_import_from_a_file_then_list_and_remove(store_url: str, tmp_path: Path) -> None:
    """Pairs imported from a file ('a,b', 'a b', comments) become mutual contacts; --remove ends one for both."""
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# our team\nalice,bob\nalice carol\n\n bob , carol  # again\nbob,alice\n")

    done = admin(store_url, "import-contacts", str(pairs))
    assert done.returncode == 0, done.stderr
    assert "pairs read: 4; new contacts: 3" in done.stdout

    alice = circle_json(store_url, "alice")
    assert [c["id"] for c in alice["contacts"]] == ["bob", "carol"]
    assert abs(alice["contacts"][0]["since"] - time.time()) < 60

    done = admin(store_url, "contacts", "alice", "--remove", "bob")
    assert done.returncode == 0 and "no longer contacts" in done.stdout
    assert [c["id"] for c in circle_json(store_url, "alice")["contacts"]] == ["carol"]
    assert [c["id"] for c in circle_json(store_url, "bob")["contacts"]] == ["carol"]
    again = admin(store_url, "contacts", "alice", "--remove", "bob")
    assert again.returncode == 0 and "nothing changed" in again.stdout


def test_import_from_stdin_refuses_a_bad_line_and_imports_nothing(store_url: str) -> None:
    """A malformed line is named with its number, the exit status is 2 and no pair of the file is imported."""
    done = admin(store_url, "import-contacts", "-", stdin="alice bob\ncarol\n")
    assert done.returncode == 2
    assert "standard input, line 2" in done.stderr and "'carol'" in done.stderr
    assert circle_json(store_url, "alice")["contacts"] == []

    done = admin(store_url, "import-contacts", "-", stdin="alice bob\n")
    assert done.returncode == 0, done.stderr
    assert [c["id"] for c in circle_json(store_url, "bob")["contacts"]] == ["alice"]


async def test_contacts_prints_the_whole_circle(store_url: str) -> None:
    """`admin contacts USER` shows what the server keeps: names, requests both ways, blocks and the setting."""
    store: Any = open_history(store_url)
    await store.open()
    try:
        now = time.time()
        await store.import_contacts([("alice", "bob")], now=now)
        await store.rename("alice", "bob", "Bob (work)")
        await store.add("dave", "alice", now=now)
        await store.add("alice", "erin", now=now)
        await store.block("alice", "mallory", now=now)
        await store.set_calls_from("alice", CallsFrom.NOBODY)
    finally:
        await store.close()

    done = admin(store_url, "contacts", "alice")

    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "bob (Bob (work))" in text
    assert "requests waiting for their answer (1):\n    dave" in text
    assert "their requests waiting for an answer (1):\n    erin" in text
    assert "blocked by them (1):\n    mallory" in text
    assert "calls from: nobody" in text


def test_bad_input_and_settings_are_clear_errors(store_url: str, tmp_path: Path) -> None:
    """A bad id, a missing file or an in-memory store is refused with a one-line message and status 2."""
    cases = [
        (store_url, ["contacts", "bad id"], "is not a user id"),
        (store_url, ["contacts", "alice", "--remove", "alice"], "the same user"),
        (store_url, ["import-contacts", str(tmp_path / "missing.txt")], "cannot read"),
        ("memory://", ["contacts", "alice"], "memory://"),
        ("redis://x", ["contacts", "alice"], "unsupported"),
    ]
    for url, args, message in cases:
        done = admin(url, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
