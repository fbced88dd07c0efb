"""Where a real `peercall serve` keeps its call history when no database is set, and what it says about it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, run_server


def history_in_banner(srv: ServerProcess) -> str:
    """The URL after `history in` on the banner's calls line (the banner is printed after the port is known)."""
    assert srv.wait_log("history in "), srv.log()
    match = re.search(r"history in (\S+)", srv.log())
    assert match, srv.log()
    return match.group(1)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory for the server, and XDG_DATA_HOME in tmp_path/data."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return cwd


def test_default_history_is_in_the_data_folder(workdir: Path, tmp_path: Path) -> None:
    """With no database set, the history is created in $XDG_DATA_HOME/peercall (0700), and the banner says so."""
    with run_server(PEERCALL_DATABASE_URL=None) as srv:
        banner = history_in_banner(srv)

    folder = tmp_path / "data" / "peercall"
    assert banner == f"sqlite:///{folder}/history.sqlite3"
    assert (folder / "history.sqlite3").is_file()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert list(workdir.iterdir()) == []


def test_old_history_in_the_working_directory_is_used_with_a_log_line(workdir: Path, tmp_path: Path) -> None:
    """A peercall.sqlite3 from before in the working directory is used, an INFO line says so, nothing else is made."""
    (workdir / "peercall.sqlite3").touch()  # an empty file is an empty SQLite database

    with run_server(PEERCALL_DATABASE_URL=None) as srv:
        banner = history_in_banner(srv)
        log = srv.log()

    assert banner == "sqlite:///peercall.sqlite3"
    assert re.search(rf"INFO .*call history: using {re.escape(str(workdir))}/peercall\.sqlite3 in the working", log)
    assert (workdir / "peercall.sqlite3").stat().st_size > 0  # migrated: the history is really there
    assert not (tmp_path / "data").exists()


def test_servers_the_tests_start_keep_their_history_outside_the_checkout() -> None:
    """run_server() gives every server a history in a temporary folder, never a file in the checkout."""
    with run_server() as srv:
        url = history_in_banner(srv)

    assert url.startswith("sqlite:////")
    assert not Path(url.removeprefix("sqlite:///")).resolve().is_relative_to(ROOT)
