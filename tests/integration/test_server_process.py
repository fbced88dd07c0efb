"""The server as a process: settings, banner, CORS, and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from tests.conftest import run_server

ICE = [{"urls": "stun:127.0.0.1:3478"}, {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"}]


def test_ice_servers_come_from_settings_and_banner_names_them() -> None:
    """`/ice-servers` returns the configured servers, and the startup banner says which and where to go;
    `/healthz` says whether a call can be relayed (a TURN server among them, or PEERCALL_TURN_URLS)."""
    with run_server(PEERCALL_ICE_SERVERS=json.dumps(ICE)) as srv:
        assert httpx.get(f"{srv.http}/ice-servers").json() == {"iceServers": ICE, "iceTransportPolicy": "all"}
        assert httpx.get(f"{srv.http}/healthz").json()["relay"] is True
        banner = srv.log()
        assert "peercall 0.1.0 (signaling protocol v1)" in banner
        assert f"http://127.0.0.1:{srv.port}/callerA.html" in banner
        assert "stun:127.0.0.1:3478, turn:127.0.0.1:3478" in banner


def test_default_ice_server_is_the_seeds_stun() -> None:
    """With nothing configured, `/ice-servers` offers the seed's public STUN server."""
    with run_server(PEERCALL_ICE_SERVERS=None) as srv:
        assert httpx.get(f"{srv.http}/ice-servers").json() == {
            "iceServers": [{"urls": "stun:stun.l.google.com:19302"}],
            "iceTransportPolicy": "all",
        }
        assert httpx.get(f"{srv.http}/healthz").json()["relay"] is False  # STUN only: no call can be relayed
    with run_server(PEERCALL_ICE_SERVERS=None, PEERCALL_TURN_URLS="turns:127.0.0.1:5349") as srv:
        assert httpx.get(f"{srv.http}/healthz").json()["relay"] is True


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PEERCALL_PORT": "99999"}, "  PEERCALL_PORT: "),
        ({"PEERCALL_ICE_SERVERS": '[{"url":1}]'}, "PEERCALL_ICE_SERVERS"),
        ({"PEERCALL_MAX_MESSAGE_SIZE": "12"}, "PEERCALL_MAX_MESSAGE_SIZE"),
        ({"PEERCALL_ICE_TRANSPORT_POLICY": "relay"}, "PEERCALL_ICE_TRANSPORT_POLICY=relay needs PEERCALL_TURN_URLS"),
        # uvicorn's "trust every proxy": any client would name its own address (127.0.0.1 for /metrics, a new one
        # for every request past the per-address caps)
        ({"PEERCALL_FORWARDED_ALLOW_IPS": "*"}, "  PEERCALL_FORWARDED_ALLOW_IPS: '*' trusts every client's"),
        ({"PEERCALL_FORWARDED_ALLOW_IPS": "10.0.0.1, ::/0"}, "  PEERCALL_FORWARDED_ALLOW_IPS: '::/0' trusts every"),
        # deploy/peercall.env.example copied, a secret left as it was: refused, never served with
        (
            {"PEERCALL_AUTH": "token", "PEERCALL_AUTH_SECRET": "CHANGE-ME-64-hex-characters"},
            "PEERCALL_AUTH_SECRET is still the example's placeholder",
        ),
        (
            {"PEERCALL_DATABASE_URL": "postgresql://peercall:CHANGE-ME-db-password@10.0.0.5/peercall"},
            "PEERCALL_DATABASE_URL still has the example's placeholder password",
        ),
    ],
)
def test_invalid_settings_stop_the_server_at_start(env: dict[str, str], names: str) -> None:
    """A bad setting exits with status 2 and a message naming the setting as the operator sets it (its environment
    variable), before listening; never its value (it may be a secret)."""
    import os

    out = subprocess.run(
        [sys.executable, "-m", "peercall", "serve"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "invalid settings" in out.stderr and names in out.stderr, out.stderr
    assert "db-password@" not in out.stderr and "64-hex" not in out.stderr


def test_cors_allows_only_configured_origins() -> None:
    """Cross-origin reads of the API are allowed for configured origins only."""
    with run_server(PEERCALL_CORS_ORIGINS="https://app.example, https://other.example") as srv:
        ok = httpx.get(f"{srv.http}/ice-servers", headers={"origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        evil = httpx.get(f"{srv.http}/ice-servers", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers


async def test_sigterm_closes_clients_with_going_away_and_exits() -> None:
    """On SIGTERM every client gets close 1001 and the process exits promptly and cleanly."""
    with run_server() as srv:
        clients = [await websockets.connect(f"{srv.ws}?id=user{i}") for i in range(5)]
        for ws in clients:
            await ws.recv()  # welcome
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(websockets.ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "server shutting down")
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status says "SIGTERM".
        code = await asyncio.to_thread(srv.proc.wait, 10)
        assert code == -signal.SIGTERM
        assert time.monotonic() - started < 5
        srv.reader.join(5)
        assert "closing 5 connection(s) with 1001 going away" in srv.log()
        assert "Finished server process" in srv.log()


async def test_ctrl_c_shuts_down_cleanly_without_a_traceback() -> None:
    """Ctrl+C (SIGINT) in `make run`: clients get close 1001, the log ends with the clean shutdown, no traceback."""
    with run_server() as srv:
        ws = await websockets.connect(f"{srv.ws}?id=alice")
        await ws.recv()  # welcome
        srv.proc.send_signal(signal.SIGINT)
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        code = await asyncio.to_thread(srv.proc.wait, 10)
        srv.reader.join(5)
        log = srv.log()
        assert "Finished server process" in log
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-2000:]
        assert code == 130


def test_a_short_hs256_secret_is_served_with_a_warning_in_the_log() -> None:
    """A token secret shorter than 32 bytes can be guessed from any token it signed: the server says so at start
    (it still serves: tests and trials use short ones), without printing it."""
    with run_server(PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET="tiny-secret") as srv:
        log = srv.log()
    assert "PEERCALL_AUTH_SECRET is 11 bytes: too short for an HS256 key" in log, log
    assert "tiny-secret" not in log
