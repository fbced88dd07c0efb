"""Smoke tests of the benchmark harness (bench/): it runs, and its load generator catches a misbehaving relay.

No timing is asserted here: the numbers are only checked to be there. The harness needs node and the Node
packages that `python3 bench/run.py --install-only` puts in bench/.work (from npm, so before entering the
loopback-only namespace); without them these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from . import run_tree
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
def test_quick_run_against_peercall_prints_numbers(tmp_path: Path) -> None:
    """`bench/run.py --quick --servers peercall` exits 0 and prints a table with a number for every scenario,
    the two-node cluster included, with the server's and the client's CPU per operation; its JSON says of every
    run and every case whether the load generator was the bottleneck."""
    peercall = str(Path(sys.executable).parent / "peercall")
    done = run_tree(
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
            "--json",
            str(tmp_path / "bench.json"),
        ],
        timeout=200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "scenario" not in line]
    for metric in ("msgs/s", "p50 µs", "calls/s", "KB/conn", "connects/s"):
        row = next((r for r in rows if metric in r), None)
        assert row is not None, f"no {metric} row in:\n{done.stdout}"
        value = row.split("|")[3].strip()
        assert re.fullmatch(r"[\d,.]+‡?", value), f"{metric}: {value!r} is not a number in:\n{row}"
        # the CPU per operation: server and client, each a number
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        server_us, client_us = cells[-6], cells[-5]
        assert re.fullmatch(r"[\d,.]+", server_us) and re.fullmatch(r"[\d,.]+", client_us), row
    assert "‡ client-bound" in done.stdout, done.stdout
    # the cluster scenario: one node and two nodes sharing a real Redis, each with a number
    clustered = [r for r in rows if r.startswith("| cluster: ") and "msgs/s" in r]
    assert clustered, f"no cluster rows in:\n{done.stdout}"
    for row in clustered:
        one, two = (cell.strip() for cell in row.split("|")[3:5])
        assert re.fullmatch(r"[\d,.]+‡?", one) and re.fullmatch(r"[\d,.]+‡?", two), row
    report = json.loads((tmp_path / "bench.json").read_text())
    assert "client-bound" in report["clientBoundRule"]
    for case in report["cases"]:
        for server, runs in case["results"].items():
            assert case["clientBound"][server] in (0, 1), case
            for result in runs:
                assert result["clientBound"] in (0, 1) and result["serverUsPerOp"] > 0, result
                assert result["clientUsPerOp"] > 0, result


@pytest.mark.timeout(120)
def test_change_cost_places_calls_across_two_nodes_and_prints_their_cost() -> None:
    """`bench/change_cost.py` (two nodes in one process on a redis-server of its own) places its calls (a frame
    it did not expect, an error, stops it) and prints the CPU per call of each round and their median."""
    done = run_tree(
        [sys.executable, str(BENCH / "change_cost.py"), "--calls", "40", "--pairs", "4", "--rounds", "2"],
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = re.findall(r"^  (\d+) µs of CPU per call$", done.stdout, re.M)
    assert len(rounds) == 2 and all(int(r) > 0 for r in rounds), done.stdout
    assert re.search(r"^median: \d+ µs of CPU per call", done.stdout, re.M), done.stdout


@pytest.mark.timeout(240)
def test_quick_presence_run_prints_the_cost_of_a_join(tmp_path: Path) -> None:
    """`bench/run.py --quick --scenarios presence` seeds a SQLite store with a social graph, brings its users
    online on one node and on two nodes sharing Redis, measures their joins and prints a row with numbers for
    each; with PEERCALL_DIRECTORY=contacts a join sends its presence to far fewer users than with `all`."""
    peercall = str(Path(sys.executable).parent / "peercall")
    done = run_tree(
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
        timeout=200,
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


async def loadgen(url: str, scenario: str, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        NODE or "node",
        str(LOADGEN),
        *("--proto", "peercall", "--url", url, "--scenario", scenario, "--pairs", "1"),
        *("--duration", "0.5", "--warmup", "0.1", "--drain-timeout", "1", "--setup-timeout", "10", *extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


@pytest.mark.parametrize("client", ["raw", "ws"])
@pytest.mark.parametrize(
    ("mode", "scenario", "expected"),
    [
        ("none", "pingpong", None),
        ("none", "calls", None),
        ("spaced", "pingpong", None),
        ("spaced", "calls", None),
        ("drop", "pingpong", "lost"),
        ("drop", "calls", "lost"),
        ("dup", "pingpong", "duplicated or reordered"),
        ("dup", "calls", "duplicated or reordered"),
        ("reorder", "pingpong", "lost"),  # one frame in flight per pair: the one held back never has a next
        ("reorder", "calls", "reordered"),
        ("misroute", "pingpong", "not the candidate it waits for"),
        ("misroute", "calls", '"from":"xca0-'),
        ("error", "pingpong", "error frame"),
        ("error", "calls", "error frame"),
        ("close", "pingpong", "the server closed the connection (4000"),
        ("close", "calls", "the server closed the connection (4000"),
    ],
)
async def test_loadgen_detects_lost_duplicated_and_reordered_frames(
    mode: str, scenario: str, expected: str | None, client: str
) -> None:
    """The load generator passes a faithful relay (also one that writes its JSON differently from peercall, which
    its quick check leaves to the full one) and fails, saying why, on a lost, duplicated, reordered or misrouted
    frame, an `error` frame, a closed connection: with its own WebSocket client and with `ws`'s."""
    relay = BrokenRelay(mode)
    url = await relay.start()
    try:
        code, output = await loadgen(url, scenario, "--client", client)
    finally:
        await relay.stop()
    if expected is None:
        assert code == 0, output
        assert '"scenario"' in output
        # the relayed frames went through the quick check (and none could with spaces in the JSON)
        quick = json.loads(next(line for line in output.splitlines() if line.startswith("{")))["quickChecked"]
        assert quick == 0 if mode == "spaced" else quick > 50, output
    else:
        assert code == 1, output
        assert "FAIL:" in output and expected in output, output


async def handshake_server(behaviour: str) -> tuple[asyncio.Server, str]:
    """A TCP server that mishandles the WebSocket upgrade: "refuse" answers 400, "close" closes the connection
    at once, "silent" never answers, "bad-accept" answers 101 with a wrong Sec-WebSocket-Accept."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if behaviour == "refuse":
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        elif behaviour == "bad-accept":
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
        if behaviour == "silent":
            await reader.read()  # until the load generator gives up and its socket closes
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


@pytest.mark.parametrize("client", ["raw", "ws"])
@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("refuse", "400"), ("close", "hang up|closed"), ("silent", "did not finish"), ("bad-accept", "ccept")],
)
async def test_loadgen_fails_when_the_server_does_not_upgrade(behaviour: str, expected: str, client: str) -> None:
    """The idle scenario's connects fail the run when the server refuses the upgrade, closes the connection, never
    answers, or answers with a wrong Sec-WebSocket-Accept (the raw client checks it against its precomputed one)."""
    server, url = await handshake_server(behaviour)
    try:
        code, output = await loadgen(
            url, "idle", "--conns", "3", "--baseline", "1", "--hold", "0", "--setup-timeout", "2", "--client", client
        )
    finally:
        server.close()
        await server.wait_closed()
    assert code == 1, output
    assert "FAIL:" in output and re.search(expected, output), output
