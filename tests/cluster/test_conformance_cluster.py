"""The conformance suite (`peercall conformance URL…`) across a cluster: every scenario's users spread over two
and over three nodes sharing one Redis, so that every call outcome happens between nodes and must look exactly
as it does on one node (tests/integration/test_conformance.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from peercall import conformance

from .conftest import Cluster, RedisServer, running_cluster

# Short timers, so that missed calls and lost peers happen within the test.
QUICK = {"PEERCALL_RING_TIMEOUT": "1.5", "PEERCALL_RESUME_GRACE": "1.5"}


@pytest.fixture(scope="module", params=[2, 3, "postgres"], ids=["2-nodes", "3-nodes", "2-nodes-postgres"])
def quick_cluster(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Cluster]:
    """Two or three nodes sharing one SQLite file, or two sharing one PostgreSQL (their store: history, contacts)."""
    if request.param == "postgres":
        admin = request.getfixturevalue("postgres_server")
        with running_cluster(redis_server, 2, postgres_admin=admin, **QUICK) as c:
            yield c
        return
    with running_cluster(redis_server, request.param, **QUICK) as c:
        yield c


def tails(c: Cluster, lines: int = 30) -> str:
    return "\n".join(f"---- n{i} ----\n" + "\n".join(node.lines[-lines:]) for i, node in enumerate(c.nodes))


@pytest.mark.parametrize("name", list(conformance.SCENARIOS))
async def test_scenario(quick_cluster: Cluster, name: str) -> None:
    """Each protocol rule holds with the scenario's users on different nodes (none skipped)."""
    result = await conformance.run_one(quick_cluster.urls, name)
    assert result.status == "pass", f"{result.detail}\n{tails(quick_cluster)}"


async def test_users_are_spread_over_the_nodes(quick_cluster: Cluster) -> None:
    """Caller on the first node, callee on the second; a second device and a reconnect land on other nodes."""

    async def run(name: str, user: str) -> list[int]:
        """Run scenario `name`; the nodes that `user` connected to meanwhile."""
        before = [len(node.lines) for node in quick_cluster.nodes]
        result = await conformance.run_one(quick_cluster.urls, name)
        assert result.status == "pass", f"{name}: {result.detail}\n{tails(quick_cluster)}"
        pattern = re.compile(rf"\b{user}-[0-9a-f]{{6}} connected from ")
        return [
            i
            for i, (node, n) in enumerate(zip(quick_cluster.nodes, before, strict=True))
            if any(pattern.search(line) for line in node.lines[n:])
        ]

    assert await run("answered-then-hangup", "alice") == [0]
    assert await run("answered-then-hangup", "bob") == [1]
    assert len(await run("every-device-rings-first-accept-wins", "bob")) >= 2, "bob's devices all on one node"
    assert len(await run("resume-after-drop", "alice")) == 2, "alice reconnected to the same node"


def test_cli_takes_several_urls(quick_cluster: Cluster) -> None:
    """`peercall conformance URL1 URL2 …` says it spreads the users, prints one line per scenario, exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "peercall", "conformance", *quick_cluster.urls, "-k", "rejected"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"over {len(quick_cluster.urls)} servers" in done.stdout
    assert "PASS  rejected" in done.stdout
