"""Security against a real server: tokens, origins, abuse limits, liveness, privacy, TURN credentials, TLS.

The session rules (tokens, origins, rate, connection caps, slow readers, liveness) run over both transports of
`/ws` (the `transport` fixture: picows, and the ASGI WebSocket that per-message deflate uses)."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from peercall.auth.tokens import mint
from tests.conftest import OPEN_DOORS, TIMEOUT, ServerProcess, run_server, small_socket
from tests.integration.conftest import TRANSPORTS

SECRET = "test-secret-with-enough-entropy-0123456789"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


def token(user: str, ttl: float = 60, secret: str = SECRET, **claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + ttl, **claims}, secret, algorithm="HS256")


async def recv_json(ws: websockets.ClientConnection, timeout: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def closed_with(ws: websockets.ClientConnection, timeout: float = 5) -> tuple[int, str]:
    """Read until the server closes; the close code and reason it sent."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert info.value.rcvd is not None, "the server closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


async def answered(caller: websockets.ClientConnection, callee: websockets.ClientConnection, a: str, b: str) -> None:
    """`a` (on `caller`) calls `b` (on `callee`), who answers; returns once the caller is told."""
    await caller.send(json.dumps({"type": "call-request", "to": b}))
    while (await recv_json(callee))["type"] != "call-request":
        pass
    await callee.send(json.dumps({"type": "call-accept", "to": a}))
    while (await recv_json(caller))["type"] != "call-accept":
        pass


async def refused_status(url: str, **kwargs: object) -> tuple[int, dict]:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url, **kwargs)
    return info.value.response.status_code, json.loads(info.value.response.body)


# ------------------------------------------------------------------------------------------------ tokens


@pytest.fixture(scope="module")
def token_server(transport: str) -> Iterator[ServerProcess]:
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=SECRET,
        PEERCALL_AUTH_TIMEOUT="0.5",
        **TRANSPORTS[transport],
    ) as srv:
        yield srv


async def test_bearer_header_token_connects_as_its_sub(token_server: ServerProcess) -> None:
    """A valid token in the Authorization header connects as the token's `sub`, with or without ?id=."""
    async with websockets.connect(
        token_server.ws, additional_headers={"Authorization": f"Bearer {token('ann')}"}
    ) as ws:
        assert (await recv_json(ws))["id"] == "ann"
    url = f"{token_server.ws}?id=ben"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token('ben')}"}) as ws:
        assert (await recv_json(ws))["id"] == "ben"


async def test_first_frame_token_connects(token_server: ServerProcess) -> None:
    """A browser-style client sends the token as its first frame and is then welcomed."""
    async with websockets.connect(token_server.ws) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token("cat")}))
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome" and welcome["id"] == "cat"


async def test_welcome_is_the_first_frame_while_presence_churns() -> None:
    """Token mode (display names read while joining): a device that comes back, replacing its older connection,
    while others come and go every few ms is greeted first: no presence batch overtakes its welcome (seen in CI)."""
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=SECRET,
        PEERCALL_PRESENCE_INTERVAL="0.01",
    ) as srv:
        stop = asyncio.Event()

        async def churn(name: str) -> None:
            bearer = {"Authorization": f"Bearer {token(name, ttl=600, name=name.title())}"}
            while not stop.is_set():
                async with websockets.connect(srv.ws, additional_headers=bearer, max_queue=None):
                    await asyncio.sleep(0)

        churners = [asyncio.create_task(churn(f"churn{i}")) for i in range(3)]
        firsts = []
        me = {"Authorization": f"Bearer {token('joiner', ttl=600, name='Joiner')}"}
        url = f"{srv.ws}?device=tab"
        try:
            older = await websockets.connect(url, additional_headers=me, max_queue=None)
            for _ in range(100):
                newer = await websockets.connect(url, additional_headers=me, max_queue=None)
                firsts.append((await recv_json(newer))["type"])
                await older.close()
                older = newer
            await older.close()
        finally:
            stop.set()
            await asyncio.gather(*churners, return_exceptions=True)
        assert set(firsts) == {"welcome"}, collections.Counter(firsts)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: token("dan", ttl=-60), "expired"),
        (lambda: token("dan", secret="not-the-secret-but-long-enough-0123"), "signature"),
        (lambda: token("dan", nbf=int(time.time()) + 600), "not valid yet"),
        (lambda: jwt.encode({"sub": "dan"}, SECRET, algorithm="HS256"), "'exp'"),
        (lambda: token("bad id"), "'sub'"),
        (lambda: "not.a.token", "not valid"),
        (lambda: jwt.encode({"sub": "dan", "exp": time.time() + 60}, "", algorithm="none"), "not valid"),
    ],
)
async def test_bad_tokens_are_refused_both_ways(token_server: ServerProcess, make, why: str) -> None:
    """Expired, forged, not-yet-valid, sub-less, `none`-signed tokens: HTTP 401 in the header, close 4401 as a frame."""
    bad = make()
    status, body = await refused_status(token_server.ws, additional_headers={"Authorization": f"Bearer {bad}"})
    assert status == 401 and body["error"]["code"] == "unauthorized" and why in body["error"]["message"]
    async with websockets.connect(token_server.ws) as ws:
        await ws.send(json.dumps({"type": "auth", "token": bad}))
        error = await recv_json(ws)
        assert error["code"] == "unauthorized" and why in error["message"]
        code, _ = await closed_with(ws)
        assert code == 4401


async def test_token_for_someone_else_is_refused(token_server: ServerProcess) -> None:
    """A token whose sub is not the id asked for is refused, as a header or as a first frame."""
    status, body = await refused_status(
        f"{token_server.ws}?id=eve", additional_headers={"Authorization": f"Bearer {token('fay')}"}
    )
    assert status == 401 and "for fay, not eve" in body["error"]["message"]
    async with websockets.connect(f"{token_server.ws}?id=eve") as ws:
        await ws.send(json.dumps({"type": "auth", "token": token("fay")}))
        assert "for fay, not eve" in (await recv_json(ws))["message"]
        assert (await closed_with(ws))[0] == 4401


async def test_nothing_is_routed_before_auth(token_server: ServerProcess) -> None:
    """Until a client has authenticated, its frames reach no one, and silence past the timeout closes it."""
    async with websockets.connect(
        token_server.ws, additional_headers={"Authorization": f"Bearer {token('gus')}"}
    ) as gus:
        await recv_json(gus)
        async with websockets.connect(token_server.ws) as anon:
            await anon.send(json.dumps({"type": "call-request", "to": "gus"}))
            assert (await recv_json(anon))["code"] == "unauthorized"
            assert (await closed_with(anon))[0] == 4401
        async with websockets.connect(token_server.ws) as silent:
            code, reason = await closed_with(silent)
            assert code == 4401 and "no auth frame within 0.5s" in reason
        with pytest.raises(TimeoutError):  # nothing but presence (of other tests' users) reaches gus
            while (frame := await recv_json(gus, timeout=0.3))["type"] == "presence":
                pass
            pytest.fail(f"gus got {frame}")


async def test_in_token_mode_no_one_injects_into_a_call(token_server: ServerProcess) -> None:
    """An authenticated third party cannot push SDP or candidates into someone else's call, nor forge `from`."""
    conns = {}
    for name in ("hal", "ivy", "mal"):
        conns[name] = await websockets.connect(
            token_server.ws, additional_headers={"Authorization": f"Bearer {token(name)}"}
        )
        await recv_json(conns[name])
    hal, ivy, mal = conns["hal"], conns["ivy"], conns["mal"]
    try:
        await hal.send(json.dumps({"type": "call-request", "to": "ivy"}))
        call_id = None
        while call_id is None:
            msg = await recv_json(ivy)
            call_id = msg.get("callId") if msg["type"] == "call-request" else None
        await ivy.send(json.dumps({"type": "call-accept", "to": "hal"}))
        for frame in (
            {"type": "offer", "to": "ivy", "data": {"type": "offer", "sdp": "v=0"}},
            {"type": "candidate", "to": "ivy", "data": CANDIDATE, "callId": call_id},
            {"type": "hangup", "to": "ivy", "callId": call_id},
            {"type": "candidate", "to": "ivy", "from": "hal", "data": CANDIDATE},
        ):
            await mal.send(json.dumps(frame))
            error = await recv_json(mal)
            while error["type"] == "presence":
                error = await recv_json(mal)
            assert error["code"] in ("not-in-call", "bad-message")
        await hal.send(json.dumps({"type": "candidate", "to": "ivy", "data": CANDIDATE}))
        while (msg := await recv_json(ivy))["type"] != "candidate":
            assert msg["type"] == "presence", msg
        assert msg["from"] == "hal"
    finally:
        for ws in conns.values():
            await ws.close()


async def test_http_api_follows_token_mode(token_server: ServerProcess) -> None:
    """/api/calls and /ice-servers need a token; a token only reads its own user's history."""
    async with httpx.AsyncClient(base_url=token_server.http) as http:
        assert (await http.get("/api/calls")).status_code == 401
        assert (await http.get("/ice-servers")).status_code == 401
        auth = {"Authorization": f"Bearer {token('jan')}"}
        assert (await http.get("/api/calls", headers=auth)).json() == {"calls": [], "next": None}
        assert (await http.get("/api/calls", params={"id": "kim"}, headers=auth)).status_code == 403
        assert (await http.get("/ice-servers", headers=auth)).status_code == 200
        expired = {"Authorization": f"Bearer {token('jan', ttl=-60)}"}
        assert (await http.get("/api/calls", headers=expired)).json()["error"]["message"] == "the token has expired"


async def test_the_history_shows_a_device_id_to_its_owner_only(token_server: ServerProcess) -> None:
    """A device id takes over that device and its answered call (`?device=`): the history shows each party its own
    device only, never the other party's, and is never cached."""
    socks = {}
    for name in ("hub1", "ida1"):
        socks[name] = await websockets.connect(
            f"{token_server.ws}?device=d-{name}", additional_headers={"Authorization": f"Bearer {token(name)}"}
        )
        await recv_json(socks[name])

    async def until(ws: websockets.ClientConnection, kind: str) -> dict:
        while (msg := await recv_json(ws))["type"] != kind:
            pass
        return msg

    try:
        await socks["hub1"].send(json.dumps({"type": "call-request", "to": "ida1"}))
        call_id = (await until(socks["ida1"], "call-request"))["callId"]
        await socks["ida1"].send(json.dumps({"type": "call-accept", "to": "hub1"}))
        await until(socks["hub1"], "call-accept")
        await socks["hub1"].send(json.dumps({"type": "hangup", "to": "ida1"}))
        await until(socks["ida1"], "call-ended")
    finally:
        for ws in socks.values():
            await ws.close()
    async with httpx.AsyncClient(base_url=token_server.http) as http:
        seen = {}
        for name in ("hub1", "ida1"):
            for _ in range(50):  # the history writer may still be on its way
                answer = await http.get("/api/calls", headers={"Authorization": f"Bearer {token(name)}"})
                if answer.json()["calls"]:
                    break
                await asyncio.sleep(0.05)
            assert answer.headers["cache-control"] == "no-store"
            (seen[name],) = answer.json()["calls"]
    assert seen["hub1"]["callId"] == seen["ida1"]["callId"] == call_id
    assert (seen["hub1"]["callerDevice"], seen["hub1"]["answeredDevice"]) == ("d-hub1", None)
    assert (seen["ida1"]["callerDevice"], seen["ida1"]["answeredDevice"]) == (None, "d-ida1")


def test_token_command_prints_a_token_the_server_accepts() -> None:
    """`peercall token USER --ttl S` prints a token for USER signed with PEERCALL_AUTH_SECRET."""
    env = {**os.environ, "PEERCALL_AUTH_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, "-m", "peercall", "token", "lou", "--ttl", "120"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    claims = jwt.decode(out, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "lou" and 115 <= claims["exp"] - time.time() <= 121
    missing = subprocess.run(
        [sys.executable, "-m", "peercall", "token", "lou"],
        env={k: v for k, v in env.items() if k != "PEERCALL_AUTH_SECRET"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "PEERCALL_AUTH_SECRET" in missing.stderr


async def test_public_key_tokens(tmp_path: Path) -> None:
    """With PEERCALL_AUTH_PUBLIC_KEY, ES256 tokens from the matching private key are accepted, others refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    good = jwt.encode({"sub": "max", "exp": time.time() + 60}, key, algorithm="ES256")
    forged = jwt.encode(
        {"sub": "max", "exp": time.time() + 60}, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"
    )
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_PUBLIC_KEY=str(tmp_path / "pub.pem")) as srv:
        async with websockets.connect(srv.ws, additional_headers={"Authorization": f"Bearer {good}"}) as ws:
            assert (await recv_json(ws))["id"] == "max"
        status, _ = await refused_status(srv.ws, additional_headers={"Authorization": f"Bearer {forged}"})
        assert status == 401


def test_minted_tokens_round_trip() -> None:
    """peercall's own mint() makes tokens with sub, iat and exp."""
    claims = jwt.decode(mint("nia", SECRET, 30), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "nia" and claims["exp"] - claims["iat"] == 30


# ---------------------------------------------------------------------------------------- origins, limits


async def test_cross_site_origins_are_refused(ws_server: ServerProcess, transport: str, uid) -> None:
    """A page from another site cannot open the WebSocket (403); the same origin and non-browsers can."""
    server = ws_server
    status, body = await refused_status(f"{server.ws}?id={uid('o')}", origin="https://evil.example")
    assert status == 403 and body["error"]["code"] == "bad-origin"
    async with websockets.connect(f"{server.ws}?id={uid('o')}", origin=f"http://127.0.0.1:{server.port}") as ws:
        assert (await recv_json(ws))["type"] == "welcome"
    with run_server(PEERCALL_ALLOWED_ORIGINS="https://app.example", **TRANSPORTS[transport]) as srv:
        async with websockets.connect(f"{srv.ws}?id=ok", origin="https://app.example") as ws:
            assert (await recv_json(ws))["type"] == "welcome"
        assert (await refused_status(f"{srv.ws}?id=no", origin=f"http://127.0.0.1:{srv.port}"))[0] == 403


@pytest.fixture(scope="module")
def tight_server(transport: str) -> Iterator[ServerProcess]:
    with run_server(
        PEERCALL_RATE_LIMIT="20",
        PEERCALL_RATE_BURST="10",
        PEERCALL_CALL_RATE="3",
        PEERCALL_MAX_CONNECTIONS_PER_IP="6",
        PEERCALL_MAX_CONNECTIONS_PER_USER="2",
        PEERCALL_SEND_BUFFER="65536",
        PEERCALL_PING_INTERVAL="0.3",
        PEERCALL_PING_TIMEOUT="0.3",
        **TRANSPORTS[transport],
    ) as srv:
        yield srv


async def test_flood_is_rate_limited_then_disconnected(tight_server: ServerProcess) -> None:
    """Frames beyond the burst get `rate-limited`; a client that keeps flooding is closed with 4429."""
    async with websockets.connect(f"{tight_server.ws}?id=flooder") as ws:
        await recv_json(ws)
        for _ in range(40):
            await ws.send('{"type":"hangup","to":"nobody"}')
        codes = []
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                codes.append((await recv_json(ws))["code"])
        # The burst of 10 passes; after it, frames are dropped (a few may pass again as the bucket refills at
        # 20/s if the machine is slow to send them all).
        assert codes[:10] == ["not-in-call"] * 10 and codes.count("rate-limited") >= 10
        assert set(codes[10:]) <= {"rate-limited", "not-in-call"}
        assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (
            4429,
            "too many messages",
        )
    assert await asyncio.to_thread(tight_server.wait_log, "kept sending faster than 20 frames/s; disconnecting")


async def test_a_party_cannot_flood_the_other_with_large_frames(transport: str) -> None:
    """A frame costs one token more per KiB: a party that relays 60 KB candidates as fast as it can gets a few
    through (the burst's worth) and `rate-limited` for the rest, instead of pushing the frame rate's 3 MB/s at the
    other party (whose link would fall behind and have it dropped as a slow reader)."""
    with run_server(**OPEN_DOORS, **TRANSPORTS[transport]) as srv:
        async with (
            websockets.connect(f"{srv.ws}?id=bigsender", max_size=None) as a,
            websockets.connect(f"{srv.ws}?id=bigreader", max_size=None, max_queue=None) as b,
        ):
            for ws in (a, b):
                assert (await recv_json(ws))["type"] == "welcome"
            await answered(a, b, "bigsender", "bigreader")
            pad = "x" * 60_000
            for n in range(40):
                candidate = {"candidate": f"candidate:{n} {pad}", "sdpMid": "0", "sdpMLineIndex": 0}
                with contextlib.suppress(websockets.ConnectionClosed):
                    await a.send(json.dumps({"type": "candidate", "to": "bigreader", "data": candidate}))
            refused = 0
            with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
                while True:
                    if (await recv_json(a, timeout=1)).get("code") == "rate-limited":
                        refused += 1
            relayed = 0
            with contextlib.suppress(TimeoutError):
                while True:
                    if (await recv_json(b, timeout=1))["type"] == "candidate":
                        relayed += 1
        # 200 tokens of burst pay for 3 frames of 61 tokens; the bucket refills 50 a second meanwhile
        assert 3 <= relayed <= 8, relayed
        assert refused >= 40 - relayed - 5, (refused, relayed)


async def test_binary_frames_pay_for_their_bytes(transport: str) -> None:
    """Binary frames are refused (`bad-message`), and they cost one token more per KiB as text does: 30 of 20 KB
    get 9 answers of `bad-message` (200 tokens of burst, 21 each), then `rate-limited`, not 30 reads for free."""
    with run_server(**OPEN_DOORS, **TRANSPORTS[transport]) as srv:
        async with websockets.connect(f"{srv.ws}?id=binsender") as ws:
            assert (await recv_json(ws))["type"] == "welcome"
            for _ in range(30):
                await ws.send(b"\x00" * 20_000)
            codes = [(await recv_json(ws))["code"] for _ in range(30)]
    assert 9 <= codes.count("bad-message") <= 12 and codes.count("rate-limited") >= 18, codes


async def test_call_requests_per_minute(tight_server: ServerProcess) -> None:
    """A user gets `rate-limited` past its call requests per minute."""
    async with websockets.connect(f"{tight_server.ws}?id=dialer") as ws:
        await recv_json(ws)
        answers = []
        for _ in range(4):
            await ws.send('{"type":"call-request","to":"nobody"}')
            answers.append((await recv_json(ws))["code"])
            if answers[-1] == "unavailable":
                assert (await recv_json(ws))["type"] == "call-ended"
        assert answers == ["unavailable"] * 3 + ["rate-limited"]


async def test_connection_limits(tight_server: ServerProcess) -> None:
    """Past the per-user limit a connection is closed with 4430; past the per-address limit it is refused (429)."""
    held = [await websockets.connect(f"{tight_server.ws}?id=many") for _ in range(2)]
    third = await websockets.connect(f"{tight_server.ws}?id=many")
    assert (await recv_json(third))["code"] == "rate-limited"
    assert (await closed_with(third))[0] == 4430
    held += [await websockets.connect(f"{tight_server.ws}?id=other{i}") for i in range(4)]
    status, body = await refused_status(f"{tight_server.ws}?id=seventh")
    assert status == 429 and body["error"]["code"] == "too-many-connections"
    for ws in held:
        await ws.close()
    await asyncio.sleep(0.1)
    async with websockets.connect(f"{tight_server.ws}?id=again") as ws:  # limits are released on close
        assert (await recv_json(ws))["type"] == "welcome"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def slow_reader_server(transport: str) -> Iterator[ServerProcess]:
    # (rate limits out of the way: the sender's 60 KB frames at the frame rate are what a slow reader must survive;
    # no relay buffer: they fill the reader's send buffer as the server's own frames would)
    env = {
        "PEERCALL_RATE_LIMIT": "100000",
        "PEERCALL_RATE_BURST": "100000",
        "PEERCALL_SEND_BUFFER": "65536",
        "PEERCALL_RELAY_BUFFER": "0",
    }
    with run_server(**env, **TRANSPORTS[transport]) as srv:
        yield srv


async def test_a_client_that_never_reads_is_dropped_and_harms_no_one(slow_reader_server: ServerProcess) -> None:
    """A callee that stops reading is disconnected (4420) once its buffer overflows, and its session ends at once
    (it cannot read the close frame); memory stays bounded and two other clients keep their latency meanwhile."""
    tight_server = slow_reader_server
    small = socket.create_connection(("127.0.0.1", tight_server.port))
    small.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender = await websockets.connect(f"{tight_server.ws}?id=talker")
    sleeper = await websockets.connect(f"{tight_server.ws}?id=sleeper", max_queue=1, sock=small)
    a = await websockets.connect(f"{tight_server.ws}?id=pinga")
    b = await websockets.connect(f"{tight_server.ws}?id=pingb")
    for ws in (sender, sleeper, a, b):
        await recv_json(ws)
    await answered(sender, sleeper, "talker", "sleeper")
    await answered(a, b, "pinga", "pingb")
    before = rss_kib(tight_server.proc.pid)
    sdp = {"type": "offer", "sdp": "a=x" * 20_000}  # 60 KB a frame; the sleeper reads none of them
    for _ in range(100):
        await sender.send(json.dumps({"type": "offer", "to": "sleeper", "data": sdp}))
    delays = []
    for i in range(10):
        started = time.monotonic()
        await a.send(json.dumps({"type": "candidate", "to": "pingb", "data": {**CANDIDATE, "sdpMLineIndex": i}}))
        while (msg := await recv_json(b))["type"] != "candidate":
            pass
        assert msg["data"]["sdpMLineIndex"] == i
        delays.append(time.monotonic() - started)
        for _ in range(4):
            await sender.send(json.dumps({"type": "offer", "to": "sleeper", "data": sdp}))
        await asyncio.sleep(0.06)
    assert max(delays) < 0.5, delays
    assert await asyncio.to_thread(tight_server.wait_log, "reads too slowly", 10)
    assert "sleeper (c" in tight_server.log()
    assert await asyncio.to_thread(tight_server.wait_log, "sleeper disconnected (code 4420)", TIMEOUT)
    assert "talker" in tight_server.log() and "rate" not in tight_server.log()
    grown = rss_kib(tight_server.proc.pid) - before
    assert grown < 20_000, f"server grew by {grown} KiB"
    for ws in (sender, sleeper, a, b):
        await ws.close()


async def test_a_party_that_floods_a_lagging_reader_has_its_own_frames_dropped(transport: str) -> None:
    """A party that relays more than the other reads (here 9 KB candidates to a reader that stopped, with the rate
    limits out of the way) gets `rate-limited` for its frames once a quarter of the reader's send buffer is held
    back for it, instead of having the reader dropped as a slow one (4420): the reader stays, gets what was
    relayed before in order once it reads again, and the call goes on."""
    env = {"PEERCALL_RATE_LIMIT": "100000", "PEERCALL_RATE_BURST": "100000"}  # send buffer: 1 MiB, relay 256 KiB
    with run_server(**env, **TRANSPORTS[transport]) as srv:
        slow = small_socket(srv.port)
        reader = await websockets.connect(f"{srv.ws}?id=reader", sock=slow, max_queue=None, max_size=None)
        flooder = await websockets.connect(f"{srv.ws}?id=flooder")
        try:
            for ws in (reader, flooder):
                assert (await recv_json(ws))["type"] == "welcome"
            await answered(flooder, reader, "flooder", "reader")
            reader.transport.pause_reading()  # from now on it reads nothing: its socket fills, then the server's
            refused: dict | None = None
            sent = 0
            while refused is None and sent < 1_000:  # up to 9 MB: past the kernel's buffers and the 1 MiB one
                for _ in range(20):
                    blob = base64.b64encode(os.urandom(6750)).decode()  # 9 KB that deflate cannot shrink much
                    data = {"candidate": f"candidate:{sent} {blob}", "sdpMid": "0", "sdpMLineIndex": 0}
                    await flooder.send(json.dumps({"type": "candidate", "to": "reader", "data": data}))
                    sent += 1
                with contextlib.suppress(TimeoutError):
                    while refused is None:
                        msg = await recv_json(flooder, timeout=0.05)
                        if msg.get("code") == "rate-limited":
                            refused = msg
            assert refused is not None, f"{sent} frames relayed to a reader that reads nothing, and none refused"
            assert refused["ref"] == "candidate" and "reader is not reading fast enough" in refused["message"]
            await asyncio.sleep(0.5)
            assert "reads too slowly" not in srv.log() and "reader disconnected" not in srv.log()
            reader.transport.resume_reading()
            got = []
            with contextlib.suppress(TimeoutError):
                while True:  # what was relayed before the flooder was refused, until no more comes
                    msg = await recv_json(reader, timeout=2)
                    if msg["type"] == "candidate":  # (and presence: the call's parties are in a call now)
                        got.append(int(msg["data"]["candidate"].split()[0].removeprefix("candidate:")))
            await flooder.send(
                json.dumps({"type": "candidate", "to": "reader", "data": {**CANDIDATE, "sdpMLineIndex": 7}})
            )
            msg = await recv_json(reader)
            assert msg["type"] == "candidate" and msg["data"]["sdpMLineIndex"] == 7, msg
            # in order, none twice, from the first on; the ones dropped were sent while it lagged (a frame that left
            # its backlog for the socket's buffer may let a later one through)
            assert got[:20] == list(range(20)) and got == sorted(set(got)) and len(got) < sent, (got, sent)
        finally:
            for ws in (reader, flooder):
                ws.transport.abort()


async def backlog_bytes(srv: ServerProcess) -> float:
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{srv.http}/metrics")).text
    return float(next(x for x in metrics.splitlines() if x.startswith("peercall_send_backlog_bytes ")).split()[1])


async def test_closing_a_client_that_never_reads_blocks_no_one(transport: str) -> None:
    """A connection whose reader stopped, with frames waiting for it, is closed (here: replaced by its device's new
    connection, 4501) without the closer waiting for it: the new connection is welcomed, the old session ends
    within a second or two, and a bystanders' call goes on meanwhile."""
    env = {"PEERCALL_RATE_LIMIT": "100000", "PEERCALL_RATE_BURST": "100000", "PEERCALL_SEND_BUFFER": "67108864"}
    with run_server(**env, **TRANSPORTS[transport]) as srv:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few frames
        slow.connect(("127.0.0.1", srv.port))
        lagger = await websockets.connect(f"{srv.ws}?id=lagger&device=d1", sock=slow, max_queue=None)
        talker = await websockets.connect(f"{srv.ws}?id=talker")
        b1, b2 = [await websockets.connect(f"{srv.ws}?id={name}") for name in ("b1", "b2")]
        try:
            for ws in (lagger, talker, b1, b2):
                assert (await recv_json(ws))["type"] == "welcome"
            await answered(talker, lagger, "talker", "lagger")
            lagger.transport.pause_reading()  # from now on lagger reads nothing: its socket fills, then the server's
            for n in range(800):  # up to 10 MB, more than the kernel buffers (tcp_wmem): some must wait in a backlog
                data = {"candidate": f"candidate:{n} {base64.b64encode(os.urandom(9000)).decode()}"}  # deflate-proof
                await talker.send(json.dumps({"type": "candidate", "to": "lagger", "data": data}))
                if n % 20 == 19 and await backlog_bytes(srv) > 0:
                    break
            else:
                pytest.fail("the server never held frames back for the reader that stopped")
            started = time.monotonic()
            async with websockets.connect(f"{srv.ws}?id=lagger&device=d1") as again:  # replaces lagger: 4501
                assert (await recv_json(again))["type"] == "welcome"
                await answered(b1, b2, "b1", "b2")
                await b1.send(json.dumps({"type": "candidate", "to": "b2", "data": CANDIDATE}))
                while (msg := await recv_json(b2))["type"] != "candidate":
                    pass
                assert msg["from"] == "b1"
                assert time.monotonic() - started < 1.0
                assert await asyncio.to_thread(srv.wait_log, "lagger disconnected (code 4501)", TIMEOUT)
        finally:
            for ws in (talker, b1, b2):
                await ws.close()
            # It reads nothing, so it would never see the server's close frame: a close handshake would wait out
            # websockets' close_timeout (10 s). It just goes away, as such a client does.
            lagger.transport.abort()


async def test_an_idle_client_that_answers_pings_stays_connected(tight_server: ServerProcess) -> None:
    """Pings every 0.3 s: a client that sends nothing but answers them (as browsers do) is never dropped."""
    async with websockets.connect(f"{tight_server.ws}?id=idler", ping_interval=None) as idler:
        await recv_json(idler)
        await asyncio.sleep(2.0)  # several ping intervals and timeouts, all answered by the library
        await idler.send('{"type":"hangup","to":"nobody"}')
        while (answer := await recv_json(idler))["type"] == "presence":  # others of this server come and go
            pass
        assert answer["code"] == "not-in-call", answer
    assert not [line for line in tight_server.log().splitlines() if "idler" in line and "no pong" in line]


async def test_silent_connection_is_reaped_by_ping(tight_server: ServerProcess) -> None:
    """A client that stops answering pings (its process froze, its network died) is reaped as lost."""
    watcher = await websockets.connect(f"{tight_server.ws}?id=watcher")
    await recv_json(watcher)
    raw = socket.create_connection(("127.0.0.1", tight_server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        f"GET /ws?id=frozen HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b"101" in raw.recv(4096).split(b"\r\n")[0]

    async def presence_of(user: str, status: str) -> None:
        while True:
            msg = await recv_json(watcher)
            if {"id": user, "status": status} in msg.get(
                "changes", [{"id": msg.get("id"), "status": msg.get("status")}]
            ):
                return

    try:
        await presence_of("frozen", "online")
        started = time.monotonic()
        await presence_of("frozen", "offline")
        assert time.monotonic() - started < 3
    finally:
        raw.close()
        await watcher.close()


# -------------------------------------------------------------------------------------------- privacy


async def test_private_mode_hides_who_exists() -> None:
    """Private: no presence lists, and calling someone offline looks like a call nobody answers."""
    with run_server(PEERCALL_PRIVATE="true", PEERCALL_RING_TIMEOUT="0.5") as srv:
        async with websockets.connect(f"{srv.ws}?id=pa") as pa, websockets.connect(f"{srv.ws}?id=pb") as pb:
            assert (await recv_json(pa))["online"] == [] and (await recv_json(pb))["online"] == []
            await pa.send('{"type":"call-request","to":"nobody-here"}')
            assert (await recv_json(pa))["type"] == "call-ringing"
            ended = await recv_json(pa)
            assert (ended["type"], ended["outcome"]) == ("call-ended", "missed")
            assert (await recv_json(pa))["type"] == "hangup"  # what a seed client understands
            await pb.close()
            with pytest.raises(TimeoutError):
                await recv_json(pa, timeout=0.3)


# ---------------------------------------------------------------------------------------------- TURN


def test_turn_credentials_are_minted_per_user() -> None:
    """With a TURN secret, /ice-servers hands each user a short-lived coturn REST credential."""
    with run_server(
        PEERCALL_ICE_SERVERS=None,
        PEERCALL_STUN_URLS="stun:127.0.0.1:3478",
        PEERCALL_TURN_URLS="turn:127.0.0.1:3478?transport=udp,turn:127.0.0.1:3478?transport=tcp",
        PEERCALL_TURN_SECRET="coturn-secret",
        PEERCALL_TURN_TTL="600",
        PEERCALL_ICE_TRANSPORT_POLICY="relay",
    ) as srv:
        body = httpx.get(f"{srv.http}/ice-servers", params={"id": "olga"}).json()
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:127.0.0.1:3478"]}
    assert turn["urls"] == ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
    expiry, user = turn["username"].split(":")
    assert user == "olga" and 590 <= int(expiry) - time.time() <= 601
    expected = base64.b64encode(hmac.new(b"coturn-secret", turn["username"].encode(), hashlib.sha1).digest())
    assert turn["credential"] == expected.decode()
    assert body["iceTransportPolicy"] == "relay" and body["ttl"] == 600


# ----------------------------------------------------------------------------------------------- TLS


async def test_self_signed_tls_serves_https_and_wss(tmp_path: Path) -> None:
    """--tls-self-signed serves https and wss with a certificate for localhost and the machine's addresses, kept in
    the data folder (`$XDG_DATA_HOME/peercall/tls`, as the history and the keys)."""
    with run_server(PEERCALL_TLS_SELF_SIGNED="true", XDG_DATA_HOME=str(tmp_path)) as srv:
        assert f"https://127.0.0.1:{srv.port}/" in srv.log()
        cert = tmp_path / "peercall/tls/cert.pem"
        context = ssl.create_default_context(cafile=cert)
        async with httpx.AsyncClient(verify=context) as http:
            assert (await http.get(f"https://127.0.0.1:{srv.port}/healthz")).json()["status"] == "ok"
        async with websockets.connect(f"wss://localhost:{srv.port}/ws?id=tls", ssl=context) as ws:
            assert (await recv_json(ws))["type"] == "welcome"
        async with httpx.AsyncClient() as http:  # not trusted by default: it is self-signed
            with pytest.raises(httpx.ConnectError):
                await http.get(f"https://127.0.0.1:{srv.port}/healthz")
