"""What call control costs a cluster's nodes in Python, in one process: an A/B tool steadier than the probe.

    PYTHONPATH=src .venv/bin/python bench/change_cost.py [--calls 2000] [--pairs 20] [--rounds 3]

Starts a `redis-server` on a free loopback port in a temporary folder, two hubs on it in this process (two nodes of
one cluster), and `--pairs` pairs of fake connections, the caller of each on the first node and the callee on the
second; then each pair places calls one after the other (call-request, accept, hangup; no relayed frames), all
pairs at once, and it prints the CPU time of this process (both nodes, the fake connections and the loop) per call,
for each round, and their median. `bench/cluster_probe.py` measures the real thing (WebSockets, three processes on
one core) but moves ±10% from one run to the next on a shared host; this leaves out the sockets, the other
processes and Redis's own CPU, and moves by a few percent: use it to compare two builds' call control (alternate
them, `PYTHONPATH=<their src>`), and the probe for what a deployment would see.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from peercall.broker import open_broker
from peercall.hub.router import Hub


class Fake:
    """A connection as the hub sees it, keeping only the frames a call waits for."""

    def __init__(self, hub: Hub, user: str) -> None:
        self.id, self.cid = user, hub.new_cid()
        self.errors = self.backlog_bytes = 0
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def send_text(self, text: str) -> bool:
        return self.send_now(text)

    def send_now(self, text: str) -> bool:
        if text.startswith('{"type":"presence'):
            return True
        message = json.loads(text)
        future = self.waiting.pop(message["type"], None)
        if future is not None and not future.done():
            future.set_result(message)
        elif message["type"] == "error":
            raise SystemExit(f"change_cost: {self.id} got {message}")
        return True

    async def close(self, code: int, reason: str) -> None:
        pass

    def expect(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        future = self.waiting[kind] = asyncio.get_running_loop().create_future()
        return future


async def calls(first: Hub, second: Hub, a: Fake, b: Fake, count: int) -> None:
    for _ in range(count):
        ringing, rung = a.expect("call-ringing"), b.expect("call-request")
        await first.handle(a, json.dumps({"type": "call-request", "to": b.id}))
        call_id = (await ringing)["callId"]
        await rung
        accepted = a.expect("call-accept")
        await second.handle(b, json.dumps({"type": "call-accept", "to": a.id, "callId": call_id}))
        await accepted
        ended = b.expect("call-ended")
        await first.handle(a, json.dumps({"type": "hangup", "to": b.id, "callId": call_id}))
        await ended


async def measure(url: str, args: argparse.Namespace) -> list[float]:
    hubs = []
    for n in range(2):
        broker = open_broker(url, node_id=f"n{n}")
        hub = Hub(broker, presence_interval=0.5)
        await broker.start()
        hubs.append(hub)
    first, second = hubs
    await asyncio.sleep(0.3)  # both leases in Redis: each node knows the other is alive
    pairs = [(Fake(first, f"a{i}"), Fake(second, f"b{i}")) for i in range(args.pairs)]
    for a, b in pairs:
        await first.join(a)
        await second.join(b)
    per_pair = max(1, args.calls // args.pairs)
    await asyncio.gather(*(calls(first, second, a, b, 5) for a, b in pairs))  # warm-up
    found = []
    for _ in range(args.rounds):
        cpu = time.process_time()
        await asyncio.gather(*(calls(first, second, a, b, per_pair) for a, b in pairs))
        found.append((time.process_time() - cpu) / (per_pair * args.pairs) * 1e6)
        print(f"  {found[-1]:.0f} µs of CPU per call", flush=True)
    for hub in hubs:
        await hub.close_all(1001, "done")
        await hub.broker.stop()
    return found


@contextlib.contextmanager
def own_redis(tool: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A `redis-server` of this process's own on a free loopback port, in a temporary folder: (its port, its
    process), once it answers; stopped after. `tool` names the caller in the message when there is none."""
    server = shutil.which("redis-server")
    if server is None:
        sys.exit(f"{tool}: needs redis-server (Debian: apt install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        redis = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield port, redis
        finally:
            redis.terminate()
            redis.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round, over all pairs")
    parser.add_argument("--pairs", type=int, default=20, help="pairs placing calls at once")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with own_redis("change_cost") as (port, _):
        found = asyncio.run(measure(f"redis://127.0.0.1:{port}/0", args))
    print(f"median: {statistics.median(found):.0f} µs of CPU per call (two nodes in one process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
