"""The soak's short form (bench/soak.py, docs/benchmarks.md "Soak"): a minute of people-like calls by 1,000 users
against a real server, with nothing lost; and its checks catch a planted fault (a check that cannot fail is a
defect). No timing is asserted beyond the soak's own bounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "bench" / "soak.py"
PEERCALL = str(Path(sys.executable).parent / "peercall")


def soak(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--peercall", PEERCALL, "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    summary = json.loads(out.read_text()) if out.exists() else {}
    return done, summary


@pytest.mark.timeout(300)
def test_a_minute_of_calls_by_1000_users_loses_nothing(tmp_path: Path) -> None:
    """`bench/soak.py --duration 60` exits 0: every call ended once on each side with the expected outcome,
    every relayed frame arrived once and in order, the history holds each call once, RSS stayed flat; and the
    minute had calls of every outcome, reconnects and relayed frames."""
    done, summary = soak(tmp_path, "--duration", "60", "--seed", "1", timeout=280)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "FAIL:" not in done.stdout
    outcomes = summary["outcomes"]
    assert isinstance(outcomes, dict)
    for outcome in ("answered", "rejected", "missed", "busy", "cancelled", "unavailable", "failed"):
        assert outcomes.get(outcome, 0) > 0, f"no {outcome} call in {outcomes}"
    assert summary["users"] == 1000
    assert summary["history"] == summary["calls"] == summary["ended"]
    assert isinstance(summary["relayed"], int) and summary["relayed"] > 1000
    assert isinstance(summary["reconnects"], int) and summary["reconnects"] > 0
    kinds = summary["kinds"]
    assert isinstance(kinds, dict)
    for variant in ("answered/resume", "answered/lost"):
        assert kinds.get(variant, 0) > 0, f"no {variant} call in {kinds}"


@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("drop-frame", "relayed frames within|(lost, duplicated or reordered)"),
        ("dup-frame", "(lost, duplicated or reordered)"),
        ("history", "is missing"),
    ],
)
def test_the_checks_catch_a_planted_fault(tmp_path: Path, fault: str, says: str) -> None:
    """A frame lost, a frame doubled, a history record lost and another written twice: each fails the soak
    (exit 1, `FAIL:` saying what)."""
    done, _ = soak(
        tmp_path,
        "--users",
        "60",
        "--duration",
        "15",
        "--talk-max",
        "4",
        "--seed",
        "2",
        "--fault",
        fault,
        "--no-rss-check",
        timeout=180,
    )
    assert done.returncode == 1, done.stdout[-4000:]
    fails = [line for line in done.stdout.splitlines() if line.startswith("FAIL:")]
    assert any(any(s in line for s in says.split("|")) for line in fails), "\n".join(fails) or done.stdout[-4000:]
    if fault == "history":
        assert any("a call the soak did not place" in line for line in fails), "\n".join(fails)
