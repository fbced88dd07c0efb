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
    """`/ice-servers` returns the configured servers, and the startup banner says which and where to go."""
    with run_server(PEERCALL_ICE_SERVERS=json.dumps(ICE)) as srv:
        assert httpx.get(f"{srv.http}/ice-servers").json() == {"iceServers": ICE, "iceTransportPolicy": "all"}
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


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PEERCALL_PORT": "99999"}, "port"),
        ({"PEERCALL_ICE_SERVERS": '[{"url":1}]'}, "ice_servers"),
        ({"PEERCALL_MAX_MESSAGE_SIZE": "12"}, "max_message_size"),
    ],
)
def test_invalid_settings_stop_the_server_at_start(env: dict[str, str], names: str) -> None:
    """A bad setting exits with status 2 and a message naming the setting, before listening."""
    import os

    out = subprocess.run(
        [sys.executable, "-m", "peercall", "serve"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "invalid settings" in out.stderr and names in out.stderr


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
