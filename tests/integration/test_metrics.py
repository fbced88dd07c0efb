"""/metrics and structured logs after a scripted call."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from tests.conftest import run_server


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus exposition."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.groups()[-1])
    raise AssertionError(f"no {name}{labels} in:\n{text}")


async def test_metrics_after_a_call(connect) -> None:
    """A call shows up in the connection, message, error, outcome and answer-time series."""
    with run_server(PEERCALL_LOG_FORMAT="json") as srv:
        alice = await connect("alice", srv)
        bob = await connect("bob", srv)
        await alice.send({"type": "call-request", "to": "bob"})
        await bob.expect(type="call-request")
        async with httpx.AsyncClient(base_url=srv.http) as http:
            during = (await http.get("/metrics")).text
            assert sample(during, "peercall_connections") == 2
            assert sample(during, "peercall_calls_active", state="ringing") == 1
            await bob.send({"type": "call-accept", "to": "alice"})
            await alice.expect(type="call-accept")
            for _ in range(3):
                await alice.send({"type": "candidate", "to": "bob", "data": {"candidate": "c"}})
            await alice.send("{nope")
            await alice.send({"type": "hangup", "to": "bob"})
            await bob.expect(type="call-ended")
            await alice.expect(type="error")
            text = (await http.get("/metrics")).text
        assert sample(text, "peercall_messages_total", type="candidate") == 3
        assert sample(text, "peercall_messages_total", type="call-request") == 1
        assert sample(text, "peercall_errors_total", code="bad-json") == 1
        assert sample(text, "peercall_calls_total", outcome="answered") == 1
        assert sample(text, "peercall_call_answer_seconds_count") == 1
        assert sample(text, "peercall_calls_active", state="answered") == 0
        assert sample(text, "peercall_users_online") == 2
        await alice.close()
        await bob.close()
        assert await asyncio.to_thread(srv.wait_log, "ended: answered")
    lines = [json.loads(line) for line in srv.lines if line.startswith("{")]
    call_lines = [entry for entry in lines if "callId" in entry]
    assert {entry["message"].split(" (call")[0] for entry in call_lines} >= {
        "alice -> bob call-request",
        "bob -> alice call-accept",
        "alice -> bob hangup",
    }
    assert len({entry["callId"] for entry in call_lines}) == 1
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in lines)
