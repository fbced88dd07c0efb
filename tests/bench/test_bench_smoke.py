"""Smoke tests of the benchmark harness (bench/): it runs, and its load generator catches a misbehaving relay.

No timing is asserted here: the numbers are only checked to be there. The harness needs node and the Node
packages that `python3 bench/run.py --install-only` puts in bench/.work (from npm, so before entering the
loopback-only namespace); without them these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .broken_relay import BrokenRelay

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
LOADGEN = BENCH / "loadgen.mjs"
NODE = shutil.which("node")
HAVE_WS = (BENCH / ".work" / "loadgen" / "node_modules" / "ws" / "package.json").exists()

if NODE is None or not HAVE_WS:
    reason = "bench needs node and bench/.work (run `python3 bench/run.py --install-only` before the tests)"
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytestmark = pytest.mark.skip(reason=reason)


@pytest.mark.timeout(240)
def test_quick_run_against_peercall_prints_numbers() -> None:
    """`bench/run.py --quick --servers peercall` exits 0 and prints a table with a number for every scenario,
    the two-node cluster included."""
    peercall = str(Path(sys.executable).parent / "peercall")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--quick",
            "--servers",
            "peercall",
            "--scenarios",
            "pingpong,calls,idle,cluster",
            "--no-install",
            "--peercall",
            peercall,
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "scenario" not in line]
    for metric in ("msgs/s", "p50 µs", "calls/s", "KB/conn", "connects/s"):
        row = next((r for r in rows if metric in r), None)
        assert row is not None, f"no {metric} row in:\n{done.stdout}"
        value = row.split("|")[3].strip()
        assert re.fullmatch(r"[\d,.]+", value), f"{metric}: {value!r} is not a number in:\n{row}"
    # the cluster scenario: one node and two nodes sharing a real Redis, each with a number
    clustered = [r for r in rows if r.startswith("| cluster: ") and "msgs/s" in r]
    assert clustered, f"no cluster rows in:\n{done.stdout}"
    for row in clustered:
        one, two = (cell.strip() for cell in row.split("|")[3:5])
        assert re.fullmatch(r"[\d,.]+", one) and re.fullmatch(r"[\d,.]+", two), row


@pytest.mark.timeout(240)
def test_quick_presence_run_prints_the_cost_of_a_join(tmp_path: Path) -> None:
    """`bench/run.py --quick --scenarios presence` seeds a SQLite store with a social graph, brings its users
    online on one node and on two nodes sharing Redis, measures their joins and prints a row with numbers for
    each; with PEERCALL_DIRECTORY=contacts a join sends its presence to far fewer users than with `all`."""
    peercall = str(Path(sys.executable).parent / "peercall")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--quick",
            "--servers",
            "peercall",
            "--scenarios",
            "presence",
            "--no-install",
            "--peercall",
            peercall,
            "--json",
            str(tmp_path / "presence.json"),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows: dict[tuple[str, str], list[str]] = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].endswith(" online"):
            rows[(cells[0], cells[1])] = cells
    for label in ("contacts: 100 online", "contacts: 200 online", "all: 100 online"):
        for server in ("1 node", "2 nodes + Redis"):
            row = rows.get((label, server))
            assert row is not None, f"no row for {label} / {server} in:\n{done.stdout}"
            for value in row[2:8]:  # joins/s, CPU/join, bytes/join (all, to the joiner, to others), frames
                assert re.fullmatch(r"[\d,.]+", value), f"{label} / {server}: {value!r} is not a number"

    def to_others(label: str) -> int:
        return int(rows[(label, "1 node")][6].replace(",", ""))

    # 100 users with ~10 contacts each: presence to ~10 contacts, against ~80 users online
    assert to_others("all: 100 online") > 3 * to_others("contacts: 100 online"), done.stdout


async def loadgen(url: str, scenario: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        NODE or "node",
        str(LOADGEN),
        *("--proto", "peercall", "--url", url, "--scenario", scenario, "--pairs", "1"),
        *("--duration", "0.5", "--warmup", "0.1", "--drain-timeout", "1", "--setup-timeout", "10"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


@pytest.mark.parametrize(
    ("mode", "scenario", "expected"),
    [
        ("none", "pingpong", None),
        ("none", "calls", None),
        ("drop", "pingpong", "lost"),
        ("dup", "pingpong", "duplicated or reordered"),
        ("reorder", "calls", "reordered"),
    ],
)
async def test_loadgen_detects_lost_duplicated_and_reordered_frames(
    mode: str, scenario: str, expected: str | None
) -> None:
    """The load generator passes a faithful relay and fails, saying why, on a lost, duplicated or reordered frame."""
    relay = BrokenRelay(mode)
    url = await relay.start()
    try:
        code, output = await loadgen(url, scenario)
    finally:
        await relay.stop()
    if expected is None:
        assert code == 0, output
        assert '"scenario"' in output
    else:
        assert code == 1, output
        assert "FAIL:" in output and expected in output, output
