"""A real TURN server for the browser tests: Debian's coturn (`turnserver`) on loopback, started and stopped by
the test that needs it (see /work/shared/notes/testing-webrtc.md for the flags that work on loopback).

TURN REST credentials, as coturn's `--use-auth-secret` checks them: username "<expiry unix time>:<user>",
credential base64(HMAC-SHA1(secret, username)). `turn_rest_credentials()` computes them independently of
peercall's own src/peercall/auth/turn.py, so a test can check the two agree with coturn.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"


@dataclass
class Coturn:
    """A running coturn; `log()` is everything it printed so far."""

    proc: subprocess.Popen[str]
    port: int
    secret: str
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log(self) -> str:
        return "\n".join(self.lines)


def turn_rest_credentials(user: str, secret: str, expiry: float) -> tuple[str, str]:
    """(username, credential) for `user`, valid until the unix time `expiry` (in the past: expired)."""
    username = f"{int(expiry)}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stun_binding_answers(port: int, timeout: float = 0.2) -> bool:
    """Whether something answers a STUN Binding request on 127.0.0.1:`port` (UDP)."""
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request, ("127.0.0.1", port))
            answer, _ = sock.recvfrom(2048)
        except OSError:
            return False
    return len(answer) >= 20 and answer[4:20] == request[4:20]  # same magic cookie and transaction id


@contextlib.contextmanager
def run_coturn(secret: str, *, realm: str = "peercall.test") -> Iterator[Coturn]:
    """Start coturn on a free loopback UDP port, wait until it answers STUN, stop it at the end."""
    if not os.access(TURNSERVER, os.X_OK):
        pytest.fail(f"{TURNSERVER} is missing: install Debian's coturn (apt-get install -y coturn)", pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="peercall-coturn-"))
    port = free_udp_port()
    relay_low = 40000 + port % 20000  # a private network namespace: nothing else uses these
    command = [
        TURNSERVER,
        "-n",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        f"--min-port={relay_low}",
        f"--max-port={relay_low + 99}",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        f"--realm={realm}",
        "--fingerprint",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--allow-loopback-peers",
        "--log-file=stdout",
        "--simple-log",
        "--verbose",  # logs each allocation with its user, so a test can see who relayed
        f"--pidfile={workdir / 'turnserver.pid'}",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir)
    server = Coturn(proc, port, secret)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not _stun_binding_answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"coturn did not start on port {port}:\n{server.log()}", pytrace=False)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)
