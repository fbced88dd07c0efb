"""Does one script per batch of changes cost Redis less than one `_APPLY` per change, pipelined? (#19, 2026-12-06)

    .venv/bin/python bench/prototypes/apply_batching.py

A throwaway measurement, not product code. Starts a `redis-server` on a free loopback port in a temporary folder and
sends it 30,000 changes shaped like an accept (a compare and set on three keys, seven commands), first as
`--batch` `_APPLY`s pipelined in one write, then as one script that runs `--batch` of them in a loop (each with its
own compare and set); prints Redis's CPU (user and system, from /proc) per change for each. Measured on
2026-12-06, pinned to one core (`taskset -c 0`), four runs: about the same, one script at most ~10% less (5 a
batch: 25.7, 27.3, 23.3, 29.7 µs pipelined against 25.3, 25.0, 24.3, 25.0 in one script): what a change costs Redis
is its commands (~2.5 µs per `redis.call`), not the script around them, so batching the owner's writes into one
script per loop turn would take ~1% off a cluster's call.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
from pathlib import Path

import hiredis

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from change_cost import own_redis  # bench/change_cost.py: a redis-server of our own

from peercall.broker.redis import _APPLY

# `_APPLY` over several changes: ARGV is their `_APPLY` ARGVs one after the other, each preceded by its length.
MANY = """
local base, out = 1, {}
while base <= #ARGV do
  local size, n, kept = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local ok = true
  if n > 0 then
    local held = redis.call('HMGET', KEYS[1], unpack(ARGV, base + 3, base + 2 + n))
    for i = 1, n do
      if (held[i] or '0') ~= ARGV[base + 2 + n + i] then ok = false break end
    end
  end
  if ok then
    local version = tostring(redis.call('INCR', KEYS[2])) .. '00000'
    local i = base + 2 * n + 3
    while i < base + size do
      local argc = tonumber(ARGV[i])
      redis.call(unpack(ARGV, i + 1, i + argc))
      i = i + argc + 1
    end
    local set = {}
    for j = base + 3, base + 2 + kept do
      set[#set + 1] = ARGV[j]
      set[#set + 1] = version
    end
    if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
    out[#out + 1] = version
  else
    out[#out + 1] = 0
  end
  base = base + size
end
return out
"""


def change(i: int) -> list[str | int]:
    """`_APPLY`'s ARGV for an accept of call `i`: its call and its two parties checked at version 0."""
    call = f"call:{i}"
    value = (
        f'{{"id":"{i}","caller":{{"user":"a{i}","cid":"n1.{i}"}},"callee":"b{i}","state":"answered",'
        '"created":1733450000.123,"answered":1733450001.5}'
    )
    commands = [
        ["SET", call, value],
        ["DEL", f"calldata:{i}"],
        ["ZREM", "due", str(i)],
        ["HSET", "callstate", str(i), "answered"],
        ["SADD", "incall", f"a{i}", f"b{i}"],
        ["HSET", f"u:a{i}", "~active", str(i)],
        ["HSET", f"u:b{i}", "~active", str(i)],
    ]
    keys = [call, f"u:a{i}", f"u:b{i}"]
    args: list[str | int] = [len(keys), len(keys), *keys, *["0"] * len(keys)]
    for command in commands:
        args += [len(command), *command]
    return args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--changes", type=int, default=30_000)
    args = parser.parse_args()
    with own_redis("apply_batching") as (port, redis):
        sock = socket.create_connection(("127.0.0.1", port))
        reader = hiredis.Reader()

        def run(commands: list[tuple[object, ...]]) -> None:
            sock.sendall(b"".join(hiredis.pack_command(command) for command in commands))
            got = 0
            while got < len(commands):
                reader.feed(sock.recv(1 << 20))
                while (reply := reader.gets()) is not False:
                    if isinstance(reply, hiredis.ReplyError):
                        sys.exit(f"apply_batching: {reply}")
                    got += 1

        def cpu() -> float:
            fields = Path(f"/proc/{redis.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        one, many = (hashlib.sha1(script.encode()).hexdigest() for script in (_APPLY, MANY))
        run([("SCRIPT", "LOAD", _APPLY), ("SCRIPT", "LOAD", MANY)])
        for batch in args.batch:
            for pipelined in (True, False):
                run([("FLUSHALL",)])
                before = cpu()
                for start in range(0, args.changes, batch):
                    group = [change(i) for i in range(start, start + batch)]
                    if pipelined:
                        run([("EVALSHA", one, 2, "ver", "clock", *g) for g in group])
                    else:
                        flat: list[str | int] = []
                        for g in group:
                            flat += [len(g) + 1, *g]
                        run([("EVALSHA", many, 2, "ver", "clock", *flat)])
                spent = (cpu() - before) / args.changes * 1e6
                how = "pipelined, one _APPLY each" if pipelined else "one script for the batch"
                print(f"{batch} a batch, {how}: {spent:.1f} µs of Redis CPU per change", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
