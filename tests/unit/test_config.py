"""Settings: where the call history goes when no database is set (no server, no event loop)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from peercall.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, XDG_DATA_HOME in tmp_path/data and no PEERCALL_DATABASE_URL."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("PEERCALL_DATABASE_URL", raising=False)
    return cwd


def test_default_history_is_in_the_data_folder(workdir: Path, tmp_path: Path) -> None:
    """With no setting, the history is $XDG_DATA_HOME/peercall/history.sqlite3 (an absolute sqlite URL)."""
    settings = Settings()

    assert settings.database_url == f"sqlite:///{tmp_path}/data/peercall/history.sqlite3"
    assert settings.database_url.startswith("sqlite:////")
    assert not settings.uses_old_history


def test_default_history_without_xdg_data_home_is_under_home(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without XDG_DATA_HOME (or with a relative one, which the XDG spec ignores) it is ~/.local/share/peercall."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = f"sqlite:///{tmp_path}/home/.local/share/peercall/history.sqlite3"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert Settings().database_url == expected
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    assert Settings().database_url == expected


def test_resolving_the_default_creates_nothing(workdir: Path, tmp_path: Path) -> None:
    """Reading the settings writes nothing: the folder is made when the history is opened."""
    Settings()

    assert not (tmp_path / "data").exists()
    assert list(workdir.iterdir()) == []


def test_old_history_in_the_working_directory_is_used_and_logged(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peercall.sqlite3 left in the working directory is used, and an INFO line says so and where the default is."""
    (workdir / "peercall.sqlite3").touch()
    settings = Settings()

    with caplog.at_level(logging.INFO, logger="peercall"):
        settings.log_history_choice()

    assert settings.database_url == "sqlite:///peercall.sqlite3"
    assert settings.uses_old_history
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert str(workdir / "peercall.sqlite3") in record.getMessage()
    assert "history.sqlite3" in record.getMessage()


@pytest.mark.parametrize("url", ["memory://", "sqlite:///peercall.sqlite3"])
def test_a_setting_overrides_the_default_and_the_old_file(
    workdir: Path, url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PEERCALL_DATABASE_URL wins over both, and then nothing is logged (even when it names the old file)."""
    (workdir / "peercall.sqlite3").touch()
    monkeypatch.setenv("PEERCALL_DATABASE_URL", url)
    settings = Settings()

    with caplog.at_level(logging.INFO, logger="peercall"):
        settings.log_history_choice()

    assert settings.database_url == url
    assert not settings.uses_old_history
    assert caplog.records == []


def test_tests_keep_the_default_history_out_of_the_checkout() -> None:
    """The test session points XDG_DATA_HOME at a temporary folder outside the checkout (tests/conftest.py)."""
    import os

    data = Path(os.environ["XDG_DATA_HOME"]).resolve()

    assert not data.is_relative_to(ROOT)
    assert not data.is_relative_to(Path.home() / ".local" / "share")


def test_the_relay_buffer_is_a_quarter_of_the_send_buffer_with_a_floor_and_checked() -> None:
    """By default a quarter of the send buffer, but never under 64 KiB (the backlog holds the server's own frames
    too) nor over the send buffer; 0 turns it off; a value under 16 KiB or over the send buffer is refused."""
    assert Settings().effective_relay_buffer == 256 * 1024
    assert Settings(send_buffer=128 * 1024).effective_relay_buffer == 64 * 1024
    assert Settings(send_buffer=32 * 1024).effective_relay_buffer == 32 * 1024
    assert Settings(relay_buffer=0).effective_relay_buffer is None
    assert Settings(relay_buffer=100_000).effective_relay_buffer == 100_000
    for bad in (1024, 2 * 1024 * 1024):
        with pytest.raises(ValueError, match="relay_buffer"):
            Settings(relay_buffer=bad)
