#!/usr/bin/env python3
"""Benchmark peercall against the PeerJS server, side by side, in one run (see docs/benchmarks.md); and what
presence costs the server per join (the `presence` scenario, peercall only).

    python3 bench/run.py              # every scenario, 5 runs each, medians, peercall/PeerJS ratios
    python3 bench/run.py --quick      # tiny sizes, ~1 s per scenario, one run (CI smoke)
    python3 bench/run.py --install-only

Each server is pinned to core 0 (`taskset -c 0`), the load generator (bench/loadgen.mjs, Node: its own minimal
WebSocket client, or `ws`) to core 1. Every row also reports CPU µs per operation and whether the load generator
was the bottleneck (client-bound, marked ‡).
The Node packages are installed by this script into bench/.work (gitignored). Only loopback addresses are used.
Standard library only, so that any python3 can run it; peercall itself runs from the repo's .venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
LOADGEN_DIR = WORK / "loadgen"
PEERJS_DIR = WORK / "peerjs"
# Pinned so that two runs compare the same code. bufferutil speeds up the load generator's frame masking; the
# PeerJS server gets only what `npm install peer` gives a user (no bufferutil), in its own folder.
LOADGEN_PACKAGES = {"ws": "8.23.0", "bufferutil": "4.1.0"}
PEERJS_PACKAGES = {"peer": "1.0.2"}

SERVER_CORE, CLIENT_CORE = "0", "1"
BIG = "1000000"


# ---------------------------------------------------------------------------------------------------- install
def installed(folder: Path, packages: dict[str, str]) -> bool:
    for name, version in packages.items():
        meta = folder / "node_modules" / name / "package.json"
        if not meta.exists() or json.loads(meta.read_text()).get("version") != version:
            return False
    return True


def npm_install(folder: Path, packages: dict[str, str]) -> None:
    if installed(folder, packages):
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("bench: npm is not installed (the benchmark needs node >= 18 and npm)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(
        json.dumps({"name": f"peercall-bench-{folder.name}", "private": True, "dependencies": packages}, indent=2)
    )
    print(f"bench: npm install {' '.join(f'{k}@{v}' for k, v in packages.items())} into {folder}", flush=True)
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--omit=dev"],
        cwd=folder,
        check=True,
        timeout=300,
    )


def install(peerjs: bool) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    npm_install(LOADGEN_DIR, LOADGEN_PACKAGES)
    if peerjs:
        npm_install(PEERJS_DIR, PEERJS_PACKAGES)


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))  # root may raise the hard limit
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pinned(core: str, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", core, *argv] if taskset and (os.cpu_count() or 1) > 1 else argv


def machine_busy() -> float:
    """CPU seconds used on the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float, threshold: float = 0.15) -> float:
    """Wait up to `limit` seconds for the machine to be idle (other work below `threshold` of one core).

    The benchmark shares the machine with whatever else runs on it; each result also reports `otherCpu`.
    Returns the load seen last, in cores.
    """
    deadline = time.monotonic() + limit
    while True:
        b0, t0 = machine_busy(), time.monotonic()
        time.sleep(0.5)
        load = (machine_busy() - b0) / (time.monotonic() - t0)
        if load < threshold or time.monotonic() >= deadline:
            return load


# ---------------------------------------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    others: list[Server] = field(default_factory=list)  # cluster: the second node, then Redis

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pids(self) -> str:
        return ",".join(str(s.proc.pid) for s in (self, *self.others))

    def stop(self) -> None:
        for server in (self, *self.others):
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in (self, *self.others):
            try:
                server.proc.wait(15)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()


def peercall_env(scenario: str) -> dict[str, str]:
    env = {
        "PEERCALL_HOST": "127.0.0.1",
        "PEERCALL_PORT": "0",
        "PEERCALL_RATE_LIMIT": BIG,
        "PEERCALL_RATE_BURST": BIG,
        "PEERCALL_CALL_RATE": BIG,
        "PEERCALL_MAX_CONNECTIONS_PER_IP": BIG,
        "PEERCALL_ACCESS_LOG": "false",
        "PEERCALL_LOG_LEVEL": "warning",  # no line per connection (the PeerJS launcher prints none either)
        "PEERCALL_DATABASE_URL": "memory://",
        "PEERCALL_ICE_SERVERS": "[]",
        # no presence broadcasts: PeerJS has none, and with 10k connections they would be the whole benchmark
        "PEERCALL_PRIVATE": "true",
        "PYTHONUNBUFFERED": "1",
    }
    if scenario == "presence":
        env["PEERCALL_PRIVATE"] = "false"  # presence is what is measured (PEERCALL_DIRECTORY: the case's)
    return env


def start_server(name: str, scenario: str, args: argparse.Namespace, extra: dict[str, str] | None = None) -> Server:
    if name == CLUSTER:
        return start_cluster(scenario, args, extra)
    logdir = WORK / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log = (
        logdir
        / f"{name}-{scenario}{'-' + extra['PEERCALL_NODE_ID'] if extra and 'PEERCALL_NODE_ID' in extra else ''}.log"
    )
    env = dict(os.environ)
    if name == "peercall":
        env.update(peercall_env(scenario))
        env.update(extra or {})
        argv = [args.peercall, "serve"]
        ready = re.compile(r"listening on \S+:(\d+)$", re.M)
    else:
        env["PEERCALL_BENCH_PEERJS"] = str(PEERJS_DIR)
        argv = [args.node, str(BENCH / "peerjs_server.mjs"), "--port", "0"]
        ready = re.compile(r"peerjs listening on \S+:(\d+)$", re.M)
    with log.open("wb") as out:
        proc = subprocess.Popen(pinned(SERVER_CORE, argv), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = ready.search(log.read_text(errors="replace"))
        if m:
            return Server(name, proc, int(m.group(1)), log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    Server(name, proc, 0, log).stop()
    sys.exit(f"bench: {name} did not start; its output:\n{log.read_text(errors='replace')[-3000:]}")


CLUSTER = "2 nodes + Redis"


def start_cluster(scenario: str, args: argparse.Namespace, extra: dict[str, str] | None = None) -> Server:
    """Two peercall nodes sharing a Redis, all three on the server core: the `a` side of every pair connects to
    the first node, the `b` side to the second, so that every relayed frame crosses nodes through Redis. Same
    core budget as one node: the cost of the hop shows as throughput lost."""
    port = free_port()
    workdir = WORK / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    redis_log = WORK / "logs" / f"redis-{scenario}.log"
    redis_log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with redis_log.open("wb") as out:
        redis = subprocess.Popen(pinned(SERVER_CORE, [*argv, "--dir", str(workdir)]), stdout=out, stderr=out)
    redis_server = Server("redis", redis, port, redis_log)
    deadline = time.monotonic() + 10
    while not _accepts(port):
        if redis.poll() is not None or time.monotonic() > deadline:
            redis_server.stop()
            sys.exit(f"bench: redis-server did not start:\n{redis_log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)
    url = {**(extra or {}), "PEERCALL_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    started: list[Server] = []
    try:  # a node that does not start exits the run (`start_server`): stop what started before it
        for node in ("n1", "n2"):
            started.append(start_server("peercall", scenario, args, {**url, "PEERCALL_NODE_ID": node}))
    except BaseException:
        for server in [*started, redis_server]:
            server.stop()
        raise
    first, second = started
    first.name, first.others = CLUSTER, [second, redis_server]
    return first


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------------------------- scenarios
@dataclass
class Case:
    scenario: str
    label: str
    loadgen: dict[str, Any]
    runs: int
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    servers: list[str] | None = None  # None: the --servers; the cluster cases compare one node with two
    env: dict[str, str] = field(default_factory=dict)  # more server settings
    users: int = 0  # presence: the users of the social graph the server's store is seeded with


# ---------------------------------------------------------------------------------------------------- presence
PRESENCE = WORK / "presence"


def social_graph(users: int, contacts: int) -> Path:
    """A random graph of `users` users (u0, u1, …) with about `contacts` mutual contacts each: every user asks
    contacts/2 others picked at random. Written as the pairs file `peercall admin import-contacts` reads (the
    load generator reads it too, to check who gets whose presence); the same arguments give the same graph."""
    PRESENCE.mkdir(parents=True, exist_ok=True)
    path = PRESENCE / f"graph-{users}x{contacts}.txt"
    if not path.exists():
        rng = random.Random(users * 1000 + contacts)
        pairs: set[tuple[int, int]] = set()
        for a in range(users):
            for b in rng.sample(range(users - 1), min(contacts // 2, users - 1)):
                b += b >= a  # anyone but a
                pairs.add((min(a, b), max(a, b)))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"u{a},u{b}\n" for a, b in sorted(pairs)))
        tmp.rename(path)
    return path


def seeded_store(users: int, contacts: int, args: argparse.Namespace) -> Path:
    """A SQLite store holding the social graph, made once with `peercall admin import-contacts`; each run gets
    a fresh copy of it (`fresh_store`)."""
    template = PRESENCE / f"store-{users}x{contacts}.sqlite"
    if not template.exists():
        graph = social_graph(users, contacts)
        tmp = template.with_suffix(".tmp")
        for old in PRESENCE.glob(tmp.name + "*"):
            old.unlink()
        env = {**os.environ, "PEERCALL_DATABASE_URL": f"sqlite:///{tmp}"}
        print(f"bench: seeding a store with {users:,} users, ~{contacts} contacts each ({graph.name})", flush=True)
        done = subprocess.run(
            [args.peercall, "admin", "import-contacts", str(graph)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"bench: peercall admin import-contacts failed:\n{done.stdout}{done.stderr}")
        tmp.rename(template)
    return template


def fresh_store(users: int, contacts: int, args: argparse.Namespace) -> str:
    """The PEERCALL_DATABASE_URL of a fresh copy of the seeded store (the one file every node of a cluster shares)."""
    template = seeded_store(users, contacts, args)
    run = PRESENCE / "run.sqlite"
    for old in PRESENCE.glob("run.sqlite*"):
        old.unlink()
    shutil.copyfile(template, run)
    return f"sqlite:///{run}"


def cases(args: argparse.Namespace) -> list[Case]:
    timing = {"duration": args.duration, "warmup": args.warmup}
    out: list[Case] = []
    if "pingpong" in args.scenarios:
        for size in ("candidate", "sdp"):
            for n in args.pairs:
                what = "candidate ~200 B" if size == "candidate" else "offer/answer ~3 KB"
                label = f"pingpong {n} pair{'s' if n > 1 else ''}, {what}"
                out.append(Case("pingpong", label, {"pairs": n, "size": size, **timing}, args.runs))
    if "calls" in args.scenarios:
        out.append(
            Case("calls", f"calls, {args.call_pairs} pairs at once", {"pairs": args.call_pairs, **timing}, args.runs)
        )
    if "idle" in args.scenarios:
        for n in args.idle_conns:
            runs = args.runs if n <= 10_000 else args.big_idle_runs
            out.append(Case("idle", f"idle {n} connections", {"conns": n, "hold": args.hold}, runs))
    if "cluster" in args.scenarios:
        # PeerJS (one process, on the same core) as the reference, measured in the same run as everything else
        both = ["peercall", CLUSTER, *(["peerjs"] if "peerjs" in args.servers else [])]
        for n in sorted({1, max(args.pairs)}):
            label = f"cluster: pingpong {n} pair{'s' if n > 1 else ''}, candidate ~200 B"
            out.append(Case("pingpong", label, {"pairs": n, "size": "candidate", **timing}, args.runs, servers=both))
        label = f"cluster: calls, {args.call_pairs} pairs at once"
        out.append(Case("calls", label, {"pairs": args.call_pairs, **timing}, args.runs, servers=both))
    if "presence" in args.scenarios:
        for directory in ("contacts", "all"):
            for users in args.presence_users if directory == "contacts" else args.presence_all_users:
                joins = min(args.presence_joins, users // 2)
                label = f"{directory}: {users:,} online"
                load = {"users": users, "joins": joins, "directory": directory}
                env = {"PEERCALL_DIRECTORY": directory}
                servers = ["peercall", CLUSTER]
                out.append(Case("presence", label, load, args.runs, servers=servers, env=env, users=users))
    return out


def run_loadgen(server: Server, case: Case, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        args.node,
        str(BENCH / "loadgen.mjs"),
        "--proto",
        server.name,
        "--url",
        server.url,
        "--scenario",
        case.scenario,
        "--server-pid",
        server.pids,
        "--setup-timeout",
        str(args.setup_timeout),
        "--client",
        args.client,
    ]
    if server.name == CLUSTER:
        argv += ["--url2", server.others[0].url]
    if case.users:
        argv += ["--graph", str(social_graph(case.users, args.presence_contacts))]
    for key, value in case.loadgen.items():
        flag = re.sub(r"([A-Z])", r"-\1", key).lower()
        argv += [f"--{flag}", str(value)]
    env = {**os.environ, "PEERCALL_BENCH_MODULES": str(LOADGEN_DIR)}
    bound = (
        (4 if case.scenario == "presence" else 1) * args.setup_timeout + args.duration + args.warmup + args.hold + 60
    )
    try:
        done = subprocess.run(
            pinned(CLIENT_CORE, argv), env=env, capture_output=True, text=True, timeout=bound, check=False
        )
    except subprocess.TimeoutExpired:
        raise Failure(f"{server.name} / {case.label}: the load generator did not finish within {bound}s") from None
    if done.returncode != 0:
        raise Failure(
            f"{server.name} / {case.label}: the load generator failed (exit {done.returncode}):\n"
            f"{done.stderr.strip()[-2000:]}\n(server log: {server.log})"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


class Failure(Exception):
    pass


# ---------------------------------------------------------------------------------------------------- report
def median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    if not values:
        return None
    m = statistics.median(values)
    return round(m, 1) if isinstance(m, float) else m


def medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in results[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return {k: median([r.get(k) for r in results]) for k in keys}


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b:
        return "—"
    return f"{a / b:.2f}"


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and v >= 100:
        return f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


METRICS = {
    # scenario: [(key, heading, better)]  better: "higher" or "lower"
    "pingpong": [
        ("msgsPerSec", "msgs/s", "higher"),
        ("p50", "p50 µs", "lower"),
        ("p99", "p99 µs", "lower"),
        ("max", "max µs", "lower"),
    ],
    "calls": [
        ("callsPerSec", "calls/s", "higher"),
        ("callP50ms", "call p50 ms", "lower"),
        ("callP99ms", "call p99 ms", "lower"),
    ],
    "idle": [("kbPerConn", "KB/conn", "lower"), ("connectPerSec", "connects/s", "higher")],
}


CLIENT_BOUND = "‡"
CLIENT_BOUND_LEGEND = (
    f"{CLIENT_BOUND} client-bound: the load generator used >= 90% of its core and more of it than the server used of"
    " its own (medians), so the figure measures the load generator more than the server; a ratio gets the mark when"
    " either side has it. µs/op: CPU time per operation (a connect, a frame delivered, a call), server (all its"
    " processes) / client: what a busy machine distorts least."
)


def client_bound(med: dict[str, Any]) -> bool:
    """The rule of bench/loadgen.mjs's `clientBound`, on a case's medians: the load generator used >= 90% of its
    core and more of it than the server used of its own (a server near 100% is the bottleneck however busy the
    client is)."""
    client, server = med.get("clientCpu"), med.get("serverCpu")
    return client is not None and client >= 90 and (server is None or client > server)


def cell(med: dict[str, dict[str, Any]], bound: set[str], key: str, top: str, bottom: str | None = None) -> str:
    """A figure of server `top` (or, with `bottom`, the ratio of two), marked when a side of it was client-bound."""
    value = med.get(top, {}).get(key)
    text = fmt(value) if bottom is None else ratio(value, med.get(bottom, {}).get(key))
    return text + (CLIENT_BOUND if bound.intersection({top, bottom}) else "")


def table(all_cases: list[Case], servers: list[str]) -> str:
    if not all_cases:
        return ""
    both = "peercall" in servers and "peerjs" in servers
    cluster = servers[:2] == ["peercall", CLUSTER]
    head = ["scenario", "metric", *servers, *(["peercall/PeerJS"] if both else [])]
    if cluster:
        head = ["scenario", "metric", "1 node", "2 nodes + Redis", *(["PeerJS"] if both else [])]
        head += ["2 nodes / 1 node", *(["1 node / PeerJS", "2 nodes / PeerJS"] if both else [])]
    head += ["server µs/op", "client µs/op", "server CPU %", "client CPU %", "other CPU %", "noisy runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in all_cases:
        med = {s: medians(case.results[s]) for s in servers if case.results.get(s)}
        bound = {s for s in servers if s in med and client_bound(med[s])}
        for key, heading, better in METRICS[case.scenario]:
            row = [case.label, f"{heading} ({better} is better)"]
            row += [cell(med, bound, key, s) for s in servers]
            if cluster:
                row.append(cell(med, bound, key, CLUSTER, "peercall"))
            if both:
                row.append(cell(med, bound, key, "peercall", "peerjs"))
            if cluster and both:
                row.append(cell(med, bound, key, CLUSTER, "peerjs"))
            row.append(" / ".join(fmt(med.get(s, {}).get("serverUsPerOp")) for s in servers))
            row.append(" / ".join(fmt(med.get(s, {}).get("clientUsPerOp")) for s in servers))
            row.append(" / ".join(fmt(med.get(s, {}).get("serverCpu")) for s in servers))
            row.append(" / ".join(fmt(med.get(s, {}).get("clientCpu")) for s in servers))
            row.append(" / ".join(fmt(med.get(s, {}).get("otherCpu")) for s in servers))
            row.append(" / ".join(str(sum(r.get("noisy", 0) for r in case.results.get(s, []))) for s in servers))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", CLIENT_BOUND_LEGEND]
    return "\n".join(lines)


PRESENCE_COLUMNS = [
    ("joinsPerSec", "joins/s"),
    ("cpuUsPerJoin", "server CPU µs/join"),
    ("bytesPerJoin", "bytes sent/join"),
    ("toJoinerBytes", "to the joiner"),
    ("toOthersBytes", "to the others"),
    ("framesPerJoin", "frames/join"),
    ("presenceChangesPerJoin", "users told"),
    ("welcomeBytes", "welcome B"),
    ("contactsBytes", "contacts frame B"),
    ("cpuUsPerLeave", "server CPU µs/leave"),
    ("bytesPerLeave", "bytes sent/leave"),
    ("idleServerCpu", "server CPU % idle"),
]


def presence_table(all_cases: list[Case]) -> str:
    """One row per case and server: what a join costs the server, by users online."""
    head = ["directory: users online", "server", *(h for _, h in PRESENCE_COLUMNS), "other CPU %", "noisy runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in all_cases:
        for server in case.servers or []:
            results = case.results.get(server)
            if not results:
                continue
            med = medians(results)
            row = [case.label, "1 node" if server == "peercall" else server]
            row += [fmt(med.get(key)) for key, _ in PRESENCE_COLUMNS]
            row += [fmt(med.get("otherCpu")), str(sum(r.get("noisy", 0) for r in results))]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def versions(args: argparse.Namespace) -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        except OSError:
            return "?"

    py = Path(args.peercall).parent / "python"
    probe = (
        "import sys, uvicorn, websockets as w, picows, uvloop;"
        "print(sys.version.split()[0], uvicorn.__version__, w.__version__, picows.__version__, uvloop.__version__)"
    )
    pyv = out([str(py), "-c", probe]).split() or ["?"] * 5
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": pyv[0],
        "uvicorn": pyv[1] if len(pyv) > 1 else "?",
        "websockets": pyv[2] if len(pyv) > 2 else "?",
        "picows (/ws)": pyv[3] if len(pyv) > 3 else "?",
        "uvloop": pyv[4] if len(pyv) > 4 else "?",
        "node": out([args.node, "--version"]),
        "load generator client": args.client if args.client == "raw" else f"ws {LOADGEN_PACKAGES['ws']}",
        "peer (PeerJS server)": PEERJS_PACKAGES["peer"],
    }


# ---------------------------------------------------------------------------------------------------- main
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, ~1 s per scenario, one run (CI smoke)")
    p.add_argument("--runs", type=int, default=5, help="runs per scenario and server; medians are reported")
    p.add_argument("--servers", default="peercall,peerjs", help="comma-separated: peercall, peerjs")
    p.add_argument(
        "--scenarios",
        default="pingpong,calls,idle,cluster,presence",
        help="pingpong, calls, idle, cluster, presence",
    )
    p.add_argument("--pairs", default="1,50,500", help="pingpong: pairs, comma-separated")
    p.add_argument("--call-pairs", type=int, default=50, help="calls: pairs calling at once")
    p.add_argument("--idle-conns", default="10000,50000", help="idle: connections, comma-separated")
    p.add_argument("--big-idle-runs", type=int, default=1, help="runs of idle sizes above 10,000")
    p.add_argument("--presence-users", default="1000,2000,5000,10000", help="presence: users online, comma-separated")
    p.add_argument(
        "--presence-all-users",
        default="1000,2000",
        help="presence: users online with PEERCALL_DIRECTORY=all (every join goes to everyone: O(users) per join)",
    )
    p.add_argument("--presence-contacts", type=int, default=50, help="presence: contacts per user (about)")
    p.add_argument("--presence-joins", type=int, default=200, help="presence: users that leave and join again")
    p.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    p.add_argument("--hold", type=float, default=5.0, help="idle: seconds the connections are held")
    p.add_argument("--setup-timeout", type=float, default=120.0, help="seconds for connecting and call setup")
    p.add_argument("--peercall", default=str(ROOT / ".venv" / "bin" / "peercall"), help="the peercall command")
    p.add_argument("--node", default=shutil.which("node") or "node")
    p.add_argument("--quiet-wait", type=float, default=20.0, help="seconds to wait for an idle machine before a run")
    p.add_argument("--max-other", type=float, default=25.0, help="%% of a core other processes may use during a run")
    p.add_argument("--retries", type=int, default=2, help="retries of a run that --max-other calls noisy")
    p.add_argument(
        "--client",
        choices=("raw", "ws"),
        default="raw",
        help="the load generator's WebSocket client: raw (its own, cheaper per connect and frame) or ws (the package)",
    )
    p.add_argument("--json", type=Path, help="also write every run's numbers here")
    p.add_argument("--install-only", action="store_true", help="install the Node packages into bench/.work, then stop")
    p.add_argument("--no-install", action="store_true", help="do not run npm (offline); fail if packages are missing")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup, args.hold, args.quiet_wait = 1, 1.0, 0.3, 1.0, 0.0
        args.retries = 0
        args.pairs, args.call_pairs, args.idle_conns, args.setup_timeout = "2", 2, "200", 30.0
        args.presence_users, args.presence_all_users, args.presence_joins = "100,200", "100", 20
        args.presence_contacts = min(args.presence_contacts, 10)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.pairs = [int(x) for x in str(args.pairs).split(",")]
    args.idle_conns = [int(x) for x in str(args.idle_conns).split(",")]
    args.presence_users = [int(x) for x in str(args.presence_users).split(",") if x]
    args.presence_all_users = [int(x) for x in str(args.presence_all_users).split(",") if x]
    for s in args.servers:
        if s not in ("peercall", "peerjs"):
            p.error(f"unknown server {s!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the server under test
    if args.no_install:
        wanted = ((LOADGEN_DIR, LOADGEN_PACKAGES), (PEERJS_DIR, PEERJS_PACKAGES))
        missing = [d for d, pk in wanted if not installed(d, pk)]
        if LOADGEN_DIR in missing or ("peerjs" in args.servers and PEERJS_DIR in missing):
            print(f"bench: Node packages missing in {WORK}; run `python3 bench/run.py --install-only`", file=sys.stderr)
            return 2
    else:
        install(peerjs="peerjs" in args.servers or args.install_only)
    if args.install_only:
        return 0
    limit = raise_fd_limit()
    info = versions(args)
    print("bench: " + ", ".join(f"{k} {v}" for k, v in info.items()) + f", open files {limit}", flush=True)
    print(f"bench: servers on core {SERVER_CORE}, load generator on core {CLIENT_CORE}; {args.runs} run(s) each")
    too_many = [n for n in {*args.presence_users, *args.presence_all_users} if n + 1000 > limit]
    if "presence" in args.scenarios and too_many:
        print(f"bench: presence with {max(too_many):,} users online does not fit the open-file limit of {limit}")
        return 2
    fits = [n for n in args.idle_conns if n + 1000 <= limit]
    for n in sorted(set(args.idle_conns) - set(fits)) if "idle" in args.scenarios else ():
        print(f"bench: idle {n} connections skipped: the open-file limit is {limit} per process and cannot be raised")
    args.idle_conns = fits
    all_cases = cases(args)
    started = time.monotonic()
    try:
        for case in all_cases:
            for run in range(case.runs):
                for name in case.servers or args.servers:
                    for attempt in range(1 + args.retries):
                        if args.quiet_wait > 0:
                            load = wait_quiet(args.quiet_wait)
                            if load >= 0.15:
                                print(f"  (the machine is busy with other work: {load * 100:.0f}% of a core)")
                        extra = dict(case.env)
                        if case.users:
                            extra["PEERCALL_DATABASE_URL"] = fresh_store(case.users, args.presence_contacts, args)
                        server = start_server(name, case.scenario, args, extra or None)
                        try:
                            result = run_loadgen(server, case, args)
                        finally:
                            server.stop()
                        shown = {k: v for k, v in result.items() if k not in ("scenario", "proto")}
                        print(f"  {case.label} [{name} run {run + 1}/{case.runs}] {json.dumps(shown)}", flush=True)
                        # a run during which other processes took a core's worth of CPU is noise: retry it
                        noisy = (result.get("otherCpu") or 0) > args.max_other
                        if not noisy or attempt == args.retries:
                            break
                        print(f"  (other processes used {result['otherCpu']}% of a core during that run: retrying)")
                    result["noisy"] = 1 if noisy else 0
                    case.results.setdefault(name, []).append(result)
    except Failure as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"Medians of {args.runs} run(s); ratio = peercall / PeerJS; took {time.monotonic() - started:.0f}s")
    print(
        "CPU columns are % of one core, peercall / PeerJS: a server below ~90% was not saturated; 'other' is what"
        f" the rest of the machine used meanwhile (noise); a noisy run is one with other > {args.max_other:g}%"
        " even after retries."
    )
    print()
    print(table([c for c in all_cases if c.servers is None], args.servers))
    clustered = [c for c in all_cases if c.servers is not None and c.scenario != "presence"]
    if clustered:
        print()
        print("Cluster: one node against two nodes sharing a Redis, all on the server core (same CPU budget);")
        print("every frame of the two-node runs crosses nodes. Server CPU is the sum of the nodes and Redis.")
        print("PeerJS, one process on the same core, is the reference (it has no multi-node mode).")
        print()
        print(table(clustered, clustered[0].servers or []))
    present = [c for c in all_cases if c.scenario == "presence"]
    if present:
        print()
        print(
            f"Presence: U users online, each with ~{args.presence_contacts} mutual contacts (a random graph in a SQLite"
        )
        print(f"store); {args.presence_joins} of them (at most U/2) leave, then join again. Per join: the server's CPU")
        print("(all its processes: nodes and Redis; less what it spends idle with everyone online), the bytes")
        print("it sends (WebSocket frames, headers included) to")
        print("the joiner (welcome, contacts, presence) and to everyone else (presence), the frames; median sizes.")
        print()
        print(presence_table(present))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "clientBoundRule": CLIENT_BOUND_LEGEND,
                    "cases": [
                        {
                            "label": c.label,
                            "results": c.results,
                            # per server, on the medians (each run's own `clientBound` is in its results)
                            "clientBound": {s: int(client_bound(medians(r))) for s, r in c.results.items() if r},
                        }
                        for c in all_cases
                    ],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
