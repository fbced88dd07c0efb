"""Where a call's CPU goes: one node against two nodes and Redis, process by process.

    .venv/bin/python bench/cluster_probe.py [--candidates 10 20] [--rounds 2] [--duration 6] [bench/run.py options]

Runs bench/run.py's `calls` scenario (50 pairs at once, the `a` side of each pair on the first node and the `b` side
on the second) against one node and against the cluster, alternating, for each number of ICE candidates a side
sends per call. For every process it prints the CPU per call (user and system, from /proc, over the measured
window), its context switches per call, and for Redis the commands per call and their CPU (`INFO commandstats`).

Two candidate counts give a line per setup: its slope is what one more relayed frame pair costs, its intercept
what a call costs besides (the call-request, accept and hangup, the offer and answer). The cluster's cost over the
single node's sits in one or the other. Same pinning as bench/run.py: servers on core 0, the load generator on 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py: its servers, load generator and pinning


def cpu(pid: int) -> tuple[float, float, int]:
    """(user s, system s, context switches) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    switches = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            switches += int(line.split()[1])
    return int(fields[11]) / tick, int(fields[12]) / tick, switches


def commandstats(port: int) -> dict[str, tuple[int, float]]:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "info", "commandstats"], capture_output=True, text=True, check=True
    ).stdout
    stats = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line.split(":", 1)
            values = dict(item.split("=") for item in rest.split(","))
            stats[name.removeprefix("cmdstat_")] = (int(values["calls"]), float(values["usec"]))
    return stats


def measure(setup: str, candidates: int, args: argparse.Namespace, options: argparse.Namespace) -> dict[str, Any]:
    """One run of the calls scenario; CPU per call of each process, and Redis's commands per call."""
    label = f"calls, {options.call_pairs} pairs at once"
    # the load runs 4 s longer than the window read here, which starts once it runs: its rate holds all through
    loadgen = {"pairs": options.call_pairs, "candidates": candidates, "duration": args.duration + 4, "warmup": 1.0}
    case = bench.Case("calls", label, loadgen, 1)
    server = bench.start_server(setup, "calls", options)
    processes = [server, *server.others]
    redis = server.others[-1].port if setup == bench.CLUSTER else None
    try:
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(bench.run_loadgen(server, case, options)))
        thread.start()
        time.sleep(3.0)  # connecting, setting up the pairs and the warm-up
        before = [cpu(p.proc.pid) for p in processes]
        stats_before = commandstats(redis) if redis else {}
        started = time.monotonic()
        time.sleep(args.duration)
        after = [cpu(p.proc.pid) for p in processes]
        stats_after = commandstats(redis) if redis else {}
        window = time.monotonic() - started
        thread.join()
    finally:
        server.stop()
    if "callsPerSec" not in result:
        sys.exit(f"cluster_probe: the load generator gave no result: {result}")
    calls = result["callsPerSec"] * window
    names = ["node", "node 2", "redis"] if redis else ["node"]
    per_process = {
        name: tuple((b - a) / calls * (1e6 if i < 2 else 1) for i, (a, b) in enumerate(zip(x, y, strict=True)))
        for name, x, y in zip(names, before, after, strict=True)
    }
    commands = {
        name: ((n - stats_before.get(name, (0, 0.0))[0]) / calls, (us - stats_before.get(name, (0, 0.0))[1]) / calls)
        for name, (n, us) in stats_after.items()
    }
    return {"callsPerSec": result["callsPerSec"], "processes": per_process, "commands": commands}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, nargs="+", default=[10, 20], help="ICE candidates a side sends")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of one node and the cluster")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load measured per run")
    args, rest = parser.parse_known_args()
    options = bench.parse(["--scenarios", "calls", *rest])  # bench/run.py's own options (--peercall, --call-pairs…)
    totals: dict[tuple[str, int], list[float]] = {}
    for candidates in args.candidates:
        for _ in range(args.rounds):
            for setup in ("peercall", bench.CLUSTER):
                found = measure(setup, candidates, args, options)
                total = sum(user + system for user, system, _ in found["processes"].values())
                totals.setdefault((setup, candidates), []).append(total)
                print(f"{setup} · {candidates} candidates: {found['callsPerSec']:,.0f} calls/s, {total:.0f} µs/call")
                for name, (user, system, switches) in found["processes"].items():
                    print(f"    {name:7} user {user:6.1f} µs  system {system:5.1f} µs  {switches:.2f} switches")
                for name, (n, us) in sorted(found["commands"].items(), key=lambda kv: -kv[1][1]):
                    if n >= 0.01:
                        print(f"    redis {name:14} {n:5.2f} per call {us:5.1f} µs")
    if len(args.candidates) >= 2:
        low, high = min(args.candidates), max(args.candidates)
        for setup in ("peercall", bench.CLUSTER):
            a = sorted(totals[(setup, low)])[len(totals[(setup, low)]) // 2]
            b = sorted(totals[(setup, high)])[len(totals[(setup, high)]) // 2]
            slope = (b - a) / (high - low)
            print(f"{setup}: {slope:.1f} µs per candidate pair, {a - slope * low:.0f} µs per call besides (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
