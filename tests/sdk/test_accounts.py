"""Signing in and renewing tokens with the SDK and its commands, on real servers: accounts mode (a password, short
tokens, `PEERCALL_AUTH_EXPIRY=enforce`) and token mode with a token file that the test rotates."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from peercall.auth.tokens import mint
from peercall.client import (
    Accounts,
    Call,
    CallPhase,
    Client,
    Disconnected,
    Event,
    SignInError,
    media,
    token_file,
)
from tests.conftest import OPEN_DOORS, ServerProcess, run_server
from tests.integration.test_security import closed_with
from tests.integration.test_token_renewal import EXPIRED, LEEWAY, Peer

from .conftest import SCALE, WAIT, next_incoming, run_python
from .test_calls import assert_tone, collect

PASSWORD = "correct horse battery"
TTL = 10
"""PEERCALL_ACCOUNTS_TOKEN_TTL at its minimum: the client renews every 5 s (its margin is at least 5 s)."""


def add_user(database: str, user: str, password: str = PASSWORD) -> None:
    """`peercall user add USER` on the server's database, the password on stdin, as an operator does."""
    done = subprocess.run(
        [sys.executable, "-m", "peercall", "user", "add", user],
        input=password + "\n",
        env={**os.environ, "PEERCALL_DATABASE_URL": database, "PEERCALL_AUTH": "accounts"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server in accounts mode with users alice, bob, carol and dave, 10-second tokens, and expiry enforced."""
    database = f"sqlite:///{tmp_path_factory.mktemp('accounts')}/accounts.sqlite3"
    for user in ("alice", "bob", "carol", "dave"):
        add_user(database, user)
    with run_server(
        PEERCALL_AUTH="accounts",
        PEERCALL_DATABASE_URL=database,
        PEERCALL_ACCOUNTS_TOKEN_TTL=str(TTL),
        PEERCALL_AUTH_EXPIRY="enforce",
        **OPEN_DOORS,
    ) as srv:
        yield srv


async def follow(client: Client, into: list[Event]) -> asyncio.Task[None]:
    """Keep every event of `client` in `into` until the client closes."""
    events = client.events()

    async def keep() -> None:
        async for event in events:
            into.append(event)

    return asyncio.create_task(keep())


async def wait_renewals(clients: list[Client], count: int) -> None:
    deadline = time.monotonic() + (count + 1) * TTL * SCALE + WAIT
    while any(c.renewals < count for c in clients):
        assert time.monotonic() < deadline, [(c.id, c.renewals) for c in clients]
        await asyncio.sleep(0.2)


async def test_a_call_with_passwords_stays_up_across_token_renewals(accounts_server: ServerProcess) -> None:
    """Two clients sign in with a password; their 10-second tokens, which the server enforces, are renewed on the
    live connections several times during a call: no disconnect, and the tones keep arriving both ways."""
    alice = Client(accounts_server.ws, "alice", password=PASSWORD, ice_loopback=True)
    bob = Client(accounts_server.ws, "bob", password=PASSWORD, ice_loopback=True)
    seen: list[Event] = []
    try:
        await alice.connect()
        await bob.connect()
        assert alice.accounts is not None and alice.accounts.session is not None
        assert alice.accounts.session["id"] == "alice"
        first_expiry = alice.token_expires_at
        assert first_expiry is not None and 0 < first_expiry - time.time() <= TTL + 1
        watchers = [await follow(alice, seen), await follow(bob, seen)]
        heard_by_bob, heard_by_alice = media.Capture(max_seconds=5), media.Capture(max_seconds=5)
        call = await alice.call("bob", audio_in=media.Tone(440), audio_out=heard_by_alice)
        ringing = await next_incoming(bob)
        await ringing.accept(audio_in=media.Tone(1000), audio_out=heard_by_bob)
        async with asyncio.timeout(WAIT):
            await call.wait_connected()
        await wait_renewals([alice, bob], 3)  # well past the first token's expiry plus the server's 5 s of skew
        assert time.time() > first_expiry + 5
        assert alice.token_expires_at is not None and alice.token_expires_at > first_expiry + TTL
        assert [e for e in seen if isinstance(e, Disconnected)] == []
        assert alice.connected and bob.connected and call.phase is CallPhase.CONNECTED
        before = (heard_by_alice.duration, heard_by_bob.duration)
        async with asyncio.timeout(WAIT):
            await heard_by_alice.wait_for(before[0] + 1.0)
            await heard_by_bob.wait_for(before[1] + 1.0)
        assert_tone(heard_by_alice.samples(), 1000, "alice")
        assert_tone(heard_by_bob.samples(), 440, "bob")
        end = await call.hangup()
        assert (end.outcome, end.reason) == ("answered", "user-hangup")
        for watcher in watchers:
            watcher.cancel()
    finally:
        await alice.close()
        await bob.close()
    assert alice.accounts is not None and not alice.accounts.signed_in  # close() signed out


async def test_a_wrong_password_is_a_clear_error(accounts_server: ServerProcess) -> None:
    """The SDK raises SignInError (`sign-in-failed`); the commands say why on stderr and exit 1."""
    client = Client(accounts_server.ws, "carol", password="not the password")
    with pytest.raises(SignInError, match="wrong user id or password") as refused:
        await client.connect()
    assert refused.value.server_code == "sign-in-failed" and refused.value.status == 401
    await client.close()
    env = {**os.environ, "PEERCALL_PASSWORD": "not the password"}
    for argv in (["contacts", "list"], ["call", "bob", "--duration", "1"]):
        status, out = await run_python(
            "-m", "peercall", *argv, "--url", accounts_server.ws, "--id", "carol", what=argv[0], timeout=30, env=env
        )
        assert status == 1, out
        assert f"peercall {argv[0]}" in out and "wrong user id or password" in out, out
        assert "Traceback" not in out


async def test_the_commands_sign_in_with_a_password_file(accounts_server: ServerProcess, tmp_path: Path) -> None:
    """`--password-file` signs in when /healthz says accounts; without any password the command says what to give."""
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    base = ("contacts", "list", "--url", accounts_server.ws, "--id", "carol")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERCALL_PASSWORD")}
    status, out = await run_python(
        "-m", "peercall", *base, "--password-file", str(secret), what="contacts", timeout=30, env=env
    )
    assert status == 0 and "contacts: none" in out, out
    status, out = await run_python("-m", "peercall", *base, what="contacts", timeout=30, env=env)
    assert status == 1 and "--password-file or $PEERCALL_PASSWORD" in out, out


async def test_signing_out_everywhere_ends_the_clients_sign_in_for_good(accounts_server: ServerProcess) -> None:
    """When the user signs out everywhere (from a browser), the SDK client's socket closes 4401 and it does not sign in
    again behind their back: the disconnect is final, and says the sign-in has ended."""
    client = Client(accounts_server.ws, "dave", password=PASSWORD)
    try:
        await client.connect()
        events = client.events()
        async with httpx.AsyncClient(base_url=accounts_server.http, timeout=WAIT) as browser:
            signed = await browser.post(
                "/api/session", json={"id": "dave", "password": PASSWORD}, headers={"X-Peercall-CSRF": "1"}
            )
            assert signed.status_code == 200, signed.text
            ended = await browser.delete("/api/sessions", headers={"X-Peercall-CSRF": signed.json()["csrf"]})
            assert ended.status_code == 200 and ended.json()["signedOut"] == 2, ended.text
        seen = await collect(events, Disconnected)
        lost = seen[-1]
        assert isinstance(lost, Disconnected) and lost.terminal and lost.code == 4401, seen
        assert "no new token" in lost.reason and "has ended" in lost.reason, lost.reason
        assert not client.connected and client.accounts is not None and not client.accounts.signed_in
    finally:
        await client.close()


@pytest.fixture(scope="module")
def default_expiry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, float]]:
    """`serve --with-echo` in accounts mode with 10-second tokens and PEERCALL_AUTH_EXPIRY unset (so `enforce`), user
    ann; and a time by which its echo had its first token (it was answering then)."""
    database = f"sqlite:///{tmp_path_factory.mktemp('default-expiry')}/accounts.sqlite3"
    add_user(database, "ann")
    with run_server(
        PEERCALL_AUTH="accounts",
        PEERCALL_DATABASE_URL=database,
        PEERCALL_ACCOUNTS_TOKEN_TTL=str(TTL),
        PEERCALL_AUTH_EXPIRY=None,
        PEERCALL_WITH_ECHO="1",
        PEERCALL_ICE_LOOPBACK="1",
        **OPEN_DOORS,
    ) as srv:
        assert srv.wait_log("echo service answering", WAIT), f"the echo service did not start:\n{srv.log()}"
        yield srv, time.time()


async def test_in_accounts_mode_a_token_not_renewed_closes_its_socket_by_default(
    default_expiry_server: tuple[ServerProcess, float],
) -> None:
    """PEERCALL_AUTH_EXPIRY unset in accounts mode: a socket whose signaling token is not renewed is closed 4401 at the
    token's `exp` + 5 s (a client that stops renewing cannot keep the socket of an ended sign-in)."""
    srv, _ = default_expiry_server
    token = await Accounts(srv.ws, "ann", PASSWORD).token()
    async with websockets.connect(f"{srv.ws}?device=raw-1", open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        peer = Peer(ws, "ann")
        expires_at = float((await peer.expect("welcome"))["tokenExpiresAt"])
        assert expires_at <= time.time() + TTL
        error = await peer.expect("error", timeout=expires_at + LEEWAY - time.time() + 3 * SCALE)
        assert error["message"] == EXPIRED and time.time() >= expires_at + LEEWAY - 0.5
        assert await closed_with(ws) == (4401, EXPIRED)


async def test_the_echo_of_serve_renews_its_tokens_and_outlives_them(
    default_expiry_server: tuple[ServerProcess, float],
) -> None:
    """The echo that `serve --with-echo` starts signs its own short tokens and renews them: past its first token's
    expiry and the server's skew, it is still connected (never closed for an expired token) and answers a call; and
    it did renew (a long token would pass the rest until it expired, in production)."""
    srv, answering_by = default_expiry_server
    await asyncio.sleep(max(0.0, answering_by + TTL + LEEWAY + 2 - time.time()))  # after the sweep that would close it
    cut = [line for line in srv.lines if "echo (" in line and "expired without renewal" in line]
    assert not cut, cut
    caller = Client(srv.ws, "ann", password=PASSWORD, ice_loopback=True)
    try:
        await caller.connect()
        heard = media.Capture(max_seconds=5)
        call = await caller.call("echo", audio_in=media.Tone(440), audio_out=heard)
        async with asyncio.timeout(WAIT):
            await call.wait_connected()
            await heard.wait_for(0.5)
        end = await call.hangup()
        assert (end.outcome, end.reason) == ("answered", "user-hangup")
    finally:
        await caller.close()
    assert "echo: renewed the token" in srv.log(), "the echo's token is not short-lived: it never renewed it"


@pytest.fixture(scope="module")
def token_server() -> Iterator[tuple[ServerProcess, str]]:
    secret = "s" * 40
    with run_server(
        PEERCALL_AUTH="token", PEERCALL_AUTH_SECRET=secret, PEERCALL_AUTH_EXPIRY="enforce", **OPEN_DOORS
    ) as srv:
        yield srv, secret


async def test_a_rotated_token_file_renews_the_token(token_server: tuple[ServerProcess, str], tmp_path: Path) -> None:
    """With a token provider that rereads a file, the client renews from whatever the file holds when its token
    nears expiry (a refresher rewrites it every second), and stays connected past several expiries."""
    srv, secret = token_server
    path = tmp_path / "token"
    path.write_text(mint("dora", secret, 8))

    async def refresher() -> None:
        while True:
            await asyncio.sleep(1)
            path.write_text(mint("dora", secret, 8))

    rotating = asyncio.create_task(refresher())
    client = Client(srv.ws, "dora", token_provider=token_file(path))
    seen: list[Event] = []
    try:
        await client.connect()
        first_expiry = client.token_expires_at
        assert first_expiry is not None
        watcher = await follow(client, seen)
        await asyncio.sleep(first_expiry + 6 - time.time())  # past the first token's expiry and the skew
        assert client.renewals >= 2 and client.connected
        assert client.token_expires_at is not None and client.token_expires_at > first_expiry + 3
        assert [e for e in seen if isinstance(e, Disconnected)] == []
        watcher.cancel()
    finally:
        rotating.cancel()
        await client.close()


async def call_on_a_token_file(
    srv: ServerProcess, secret: str, path: Path, caller: str, callee: str
) -> tuple[Client, Client, Call, Call, float]:
    """`caller`, whose token is read from the file `path`, calls `callee` (a 10-minute token), who answers: both
    clients, the caller's call, the callee's, and when the caller's token expires. The clients are connected: the
    caller closes them."""
    mine = Client(srv.ws, caller, token_provider=token_file(path), ice_loopback=True)
    theirs = Client(srv.ws, callee, mint(callee, secret, 600), ice_loopback=True)
    try:
        await mine.connect()
        await theirs.connect()
        expiry = mine.token_expires_at
        assert expiry is not None
        call = await mine.call(callee, audio_in=media.Tone(440))
        ringing = await next_incoming(theirs)
        await ringing.accept(audio_in=media.Tone(1000))
        async with asyncio.timeout(WAIT):
            await call.wait_connected()
    except BaseException:
        await mine.close()
        await theirs.close()
        raise
    return mine, theirs, call, ringing, expiry


async def test_a_token_file_rotated_just_after_expiry_still_renews_the_live_connection(
    token_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """The file is rotated a second after the token expired: within the server's 5 s of clock skew the connection is
    still open, and the client, still asking the file, renews on it; the call goes on undisturbed."""
    srv, secret = token_server
    path = tmp_path / "token"
    path.write_text(mint("erin", secret, 6))
    erin, fred, call, _, expiry = await call_on_a_token_file(srv, secret, path, "erin", "fred")
    try:
        seen: list[Event] = []
        watcher = await follow(erin, seen)
        await asyncio.sleep(max(0.0, expiry + 1 - time.time()))
        assert erin.renewals == 0
        path.write_text(mint("erin", secret, 600))
        await asyncio.sleep(max(0.0, expiry + LEEWAY + 1 - time.time()))  # past the server's close, had there been one
        watcher.cancel()
        assert erin.renewals == 1 and erin.token_lost is None, seen
        assert [e for e in seen if isinstance(e, Disconnected)] == [], seen
        assert call.phase is CallPhase.CONNECTED and erin.token_expires_at is not None
    finally:
        await erin.close()
        await fred.close()


async def test_a_token_that_cannot_be_renewed_hangs_up_the_call_before_the_server_closes(
    token_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """The file is never rotated: before the server closes the connection (4401, 5 s after the expiry), the client
    hangs the call up, and says why; the callee's call ends then, not after the resume grace."""
    srv, secret = token_server
    path = tmp_path / "token"
    path.write_text(mint("gail", secret, 4))
    gail, hal, call, ringing, expiry = await call_on_a_token_file(srv, secret, path, "gail", "hal")
    try:
        async with asyncio.timeout(expiry + LEEWAY - time.time()):
            end = await ringing.wait_ended()
        assert end.outcome == "answered" and end.reason == "user-hangup", end
        assert call.end is not None and call.end.outcome == "answered", call.end
        assert gail.token_lost is not None and f"the token file {path} had no newer token" in gail.token_lost
    finally:
        await gail.close()
        await hal.close()


async def test_the_commands_reread_the_token_file_and_read_the_password_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--token-file` (or $PEERCALL_TOKEN_FILE) becomes a provider that rereads the file, so that renewals pick up a
    rotated token; a password is read from a file or the environment, and an empty one is refused."""
    import argparse

    from peercall.client.cli import credentials, password

    path = tmp_path / "token"
    path.write_text("first\n")
    monkeypatch.delenv("PEERCALL_TOKEN", raising=False)
    monkeypatch.delenv("PEERCALL_PASSWORD", raising=False)
    monkeypatch.delenv("PEERCALL_PASSWORD_FILE", raising=False)
    args = argparse.Namespace(url="ws://127.0.0.1:9/ws", token=None, token_file=str(path), password_file=None)
    given = await credentials(args)
    provider = given["token_provider"]
    assert given["token"] is None and provider() == "first"
    path.write_text("second\n")
    assert provider() == "second"
    monkeypatch.setenv("PEERCALL_TOKEN_FILE", str(path))
    assert (await credentials(argparse.Namespace(url=args.url, token=None, token_file=None)))["token_provider"]
    assert (await credentials(argparse.Namespace(url=args.url, token="fixed", token_file=None))) == {
        "token": "fixed",
        "token_provider": None,
    }
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        password(argparse.Namespace(password_file=str(empty)))
    monkeypatch.setenv("PEERCALL_PASSWORD", "from env")
    assert password(argparse.Namespace(password_file=None)) == "from env"
