"""What one connect costs the server in user-space instructions: deterministic to ~1%, where its CPU µs on a shared
machine vary by ±15% (docs/benchmarks.md, "The connect path, third sitting").

    python3 bench/connect_cost.py                  # 200 warm-up connects, then 500 counted; prints instructions/connect
    python3 bench/connect_cost.py --src /tmp/base/src   # the same for another checkout's src (PYTHONPATH)

The server (`python -m peercall serve` from the repo's .venv, with bench/run.py's settings) runs under
`valgrind --tool=callgrind --instr-atstart=no`; a client of plain blocking sockets opens the warm-up connections,
switches counting on (`callgrind_control -i on`), opens the counted ones one after the other (each waits for its
`welcome`), switches counting off and has callgrind dump. All connections stay open until the end, as in the `idle`
scenario. The dump (`--out`) can be read with `callgrind_annotate --inclusive=yes`.

Standard library only; valgrind (with callgrind_control) must be installed.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"  # gitignored
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
SETTINGS = {
    "PEERCALL_HOST": "127.0.0.1",
    "PEERCALL_PORT": "0",
    "PEERCALL_RATE_LIMIT": "1000000",
    "PEERCALL_RATE_BURST": "1000000",
    "PEERCALL_CALL_RATE": "1000000",
    "PEERCALL_MAX_CONNECTIONS_PER_IP": "1000000",
    "PEERCALL_CONNECTION_RATE": "1000000",
    "PEERCALL_ACCESS_LOG": "false",
    "PEERCALL_LOG_LEVEL": "warning",
    "PEERCALL_DATABASE_URL": "memory://",
    "PEERCALL_ICE_SERVERS": "[]",
    "PEERCALL_PRIVATE": "true",
    "PYTHONUNBUFFERED": "1",
}


def connect(port: int, user: str, timeout: float) -> socket.socket:
    """Open `/ws` as `user` and read until its `welcome` has come; the socket stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(
        f"GET /ws?id={user}&device=d HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n".encode()
        + b"Sec-WebSocket-Key: "
        + KEY
        + b"\r\n\r\n"
    )
    got = b""
    while not (b"\r\n\r\n" in got and b'"welcome"' in got.split(b"\r\n\r\n", 1)[1]):
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit(f"connect_cost: the server closed {user}'s connection: {got[:300]!r}")
        got += chunk
    if not got.startswith(b"HTTP/1.1 101"):
        sys.exit(f"connect_cost: {user} was not upgraded: {got[:300]!r}")
    return sock


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, default=200, help="connects before counting")
    p.add_argument("--connects", type=int, default=500, help="connects counted")
    p.add_argument("--src", help="the src folder to run (PYTHONPATH); default: the repo's own")
    p.add_argument("--out", default=str(WORK / "connect-cost.callgrind"), help="where callgrind writes its dump")
    args = p.parse_args()

    env = {**os.environ, **SETTINGS}
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    out_file = Path(args.out)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    for old in out_file.parent.glob(out_file.name + "*"):  # callgrind adds .1, .2 to a dump asked for
        old.unlink()
    log = Path(args.out + ".log")
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={args.out}"]
    argv += [str(ROOT / ".venv" / "bin" / "python"), "-m", "peercall", "serve"]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        port = None
        while port is None:
            found = re.search(r"listening on \S+:(\d+)$", log.read_text(errors="replace"), re.M)
            if found:
                port = int(found.group(1))
            elif server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"connect_cost: the server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            else:
                time.sleep(0.1)
        held += [connect(port, f"w{i}", 60) for i in range(args.warmup)]
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        held += [connect(port, f"m{i}", 60) for i in range(args.connects)]
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
    finally:
        for sock in held:
            sock.close()
        server.terminate()
        server.wait(60)
    # the dump asked for (`.1`) holds the counted connects; the one written at exit, nothing (counting was off)
    dumps = [f for f in out_file.parent.glob(out_file.name + "*") if f.suffix != ".log"]
    found = (re.search(r"^totals: (\d+)", f.read_text(errors="replace"), re.M) for f in dumps)
    total = max((int(m.group(1)) for m in found if m), default=0)
    if not total:
        sys.exit(f"connect_cost: no counted instructions in {args.out}*")
    print(f"{total / args.connects:,.0f} instructions per connect ({total:,} over {args.connects} connects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
