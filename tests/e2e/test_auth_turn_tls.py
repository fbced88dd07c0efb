"""Deployment features seen from the browser: sign-in tokens, a real TURN relay (coturn), and https.

Each test starts what it needs (a server in token mode, coturn on loopback, a server with a self-signed
certificate and a browser that accepts it) and stops it at the end, so the rest of the suite never pays for it.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections.abc import Callable

import jwt
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, WebSocket, expect

from tests.conftest import OPEN_DOORS, ServerProcess, run_server

from .conftest import SCALE, LaunchBrowser, OpenPage, artifacts_dir, dump
from .coturn import run_coturn, turn_rest_credentials
from .steps import assert_audio_flows, audio_stats, connect, mic, open_pair, ring, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

AUTH_SECRET = "e2e-token-secret-0123456789abcdef"  # HS256 wants 32 bytes or more
TURN_SECRET = "e2e-turn-secret"

# In a page: gather relay-only candidates with one ICE server, and report what happened (no call, no peer).
GATHER_RELAY = """
async ({ server, waitMs }) => {
  const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: "relay" });
  const errors = [], candidates = [];
  const done = new Promise((resolve) => {
    pc.addEventListener("icecandidateerror", (e) =>
      errors.push({ errorCode: e.errorCode, url: e.url, errorText: e.errorText }));
    pc.addEventListener("icecandidate", (e) => {
      if (e.candidate) candidates.push({ type: e.candidate.type, address: e.candidate.address });
    });
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve("complete");
    });
    setTimeout(() => resolve("timed out"), waitMs);
  });
  pc.addTransceiver("audio");
  await pc.setLocalDescription();
  const gathering = await done;
  const state = pc.connectionState;
  pc.close();
  return { gathering, errors, candidates, connectionState: state };
}
"""


def token_for(user: str, ttl: float) -> str:
    """An HS256 token for `user` that expires `ttl` seconds from now (negative: already expired)."""
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now - 120, "exp": now + int(ttl)}, AUTH_SECRET, algorithm="HS256")


def record_sent_frames(page: Page) -> list[str]:
    """Every frame the page sends on its WebSockets, from now on."""
    frames: list[str] = []

    def on_socket(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: frames.append(payload if isinstance(payload, str) else "<binary>"))

    page.on("websocket", on_socket)
    return frames


async def test_token_in_the_url_fragment_signs_in_as_its_user(open_page: OpenPage, uid: Callable[[str], str]) -> None:
    """`#token=<jwt>` names the user, leaves the address bar, and is the first frame; the history takes it too."""
    alice = uid("alice")
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=AUTH_SECRET) as server:
        page = await open_page(server.http, f"/#token={token_for(alice, 600)}", "alice")
        await expect(page).to_have_url(re.compile(r"^[^#]*/$"))  # the token left the address bar
        assert "token" not in await page.evaluate("location.href")
        await expect(page.locator("#my-id")).to_have_value(alice)
        await expect(page.locator("#my-id")).to_have_js_property("readOnly", True)
        await expect(page.locator("#advanced")).to_have_attribute("open", "")  # the server wants a token
        frames = record_sent_frames(page)

        await connect(page)
        assert await page.evaluate("window.peercall.signaling.welcome.id") == alice
        assert frames, "the page sent nothing"
        assert json.loads(frames[0])["type"] == "auth", f"the first frame was not auth: {frames[:2]}"
        await expect(page.locator("#history-empty")).to_have_text("No calls yet.")  # /api/calls took the token

        # A second user pastes a token into the field instead; then the two call each other.
        bob = uid("bob")
        other = await open_page(server.http, "/", "bob")
        await expect(other.locator("#advanced")).to_have_attribute("open", "")
        await other.click("#connect")  # no token yet: the page says one is needed and does not connect
        await expect(other.locator("#message")).to_contain_text("requires a token")
        await expect(other.locator("#server-status")).to_have_text("Disconnected")
        await other.fill("#token", token_for(bob, 600))
        await expect(other.locator("#my-id")).to_have_value(bob)
        await connect(other)
        await expect(page.locator(f'#online button[data-peer="{bob}"]')).to_be_visible()
        await page.click(f'#online button[data-peer="{bob}"]')
        await expect(other.locator("#incoming")).to_be_visible()
        await other.click("#accept")
        await expect(page.locator("#call-status")).to_have_text("Connected")
        await page.click("#hangup")
        await expect(other.locator("#call-status")).to_have_text("Call Ended")
        entry = other.locator("#history li")
        await expect(entry).to_have_count(1)
        await expect(entry).to_contain_text(alice)
        await expect(entry).to_contain_text("Answered")
        for request in (
            f'"GET /ice-servers?id={alice} HTTP/1.1" 200',
            f'"GET /api/calls?limit=15&id={bob} HTTP/1.1" 200',
        ):
            assert await asyncio.to_thread(server.wait_log, request), f"no {request} in\n{server.log()[-2000:]}"


async def test_token_mode_is_known_with_static_turn_servers(open_page: OpenPage, uid: Callable[[str], str]) -> None:
    """Token mode with static TURN URLs (no secret): the page still knows a token is needed and sends it first."""
    dana = uid("dana")
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=AUTH_SECRET,
        PEERCALL_TURN_URLS="turn:127.0.0.1:9?transport=udp",
    ) as server:
        page = await open_page(server.http, "/", "dana")
        await expect(page.locator("#advanced")).to_have_attribute("open", "")  # the server wants a token
        frames = record_sent_frames(page)
        await page.fill("#token", token_for(dana, 600))
        await connect(page)
        assert json.loads(frames[0])["type"] == "auth", f"the first frame was not auth: {frames[:2]}"
        assert await asyncio.to_thread(server.wait_log, '"GET /healthz HTTP/1.1" 200')  # asked, not probed


async def test_expired_token_is_refused_and_not_retried(open_page: OpenPage, uid: Callable[[str], str]) -> None:
    """An expired token gets the server's refusal (4401) in words, no reconnect, and a field for a new token."""
    carol = uid("carol")
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=AUTH_SECRET) as server:
        page = await open_page(server.http, f"/callerA.html#token={token_for(carol, -60)}", "carol")
        await expect(page.locator("#my-id")).to_have_value(carol)  # the token's user, not the page's clientA
        await page.evaluate(
            """() => { window.__e2e.closes = [];
              window.peercall.signaling.addEventListener("statechange", (e) => {
                if (e.detail.code !== undefined) window.__e2e.closes.push(e.detail); }); }"""
        )
        await page.click("#connect")
        await expect(page.locator("#message")).to_have_text(
            "The server refused your token: the token has expired. Paste a new token, then connect again."
        )
        await expect(page.locator("#server-status")).to_have_text("Disconnected")
        await expect(page.locator("#token")).to_have_attribute("aria-invalid", "true")
        await expect(page.locator("#token")).to_be_focused()
        await expect(page.locator("#connect")).to_be_enabled()
        closes = await page.evaluate("window.__e2e.closes")
        assert [c["code"] for c in closes] == [4401], dump(closes)
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        with pytest.raises(PlaywrightError):  # no reconnect attempt within several backoff periods
            await page.wait_for_event("websocket", timeout=1500 * SCALE)
        assert sockets == []
        await page.screenshot(path=artifacts_dir() / "token-refused.png", full_page=True)

        await page.fill("#token", token_for(carol, 600))  # a new token: now it works
        await connect(page)
        assert "refused a connection" in server.log()


async def test_relay_only_call_through_coturn(open_page: OpenPage) -> None:
    """With relay forced and per-user TURN credentials, the two-tab call connects through coturn, audio flows."""
    with (
        run_coturn(TURN_SECRET) as turn,
        run_server(
            PEERCALL_ICE_SERVERS=None,
            PEERCALL_TURN_URLS=turn.url,
            PEERCALL_TURN_SECRET=TURN_SECRET,
            PEERCALL_ICE_TRANSPORT_POLICY="relay",
        ) as server,
    ):
        a, b = await open_pair(open_page, server)
        for page in (a, b):  # the server relays everyone: the box says so and cannot be unticked
            await expect(page.locator("#relay-only")).to_be_checked()
            await expect(page.locator("#relay-only")).to_be_disabled()
        await ring(a, b)
        await b.click("#accept")
        await expect(a.locator("#call-status")).to_have_text("Connected")
        await expect(b.locator("#call-status")).to_have_text("Connected")
        for who, page in (("A", a), ("B", b)):
            stats = await assert_audio_flows(page, who)
            pair = stats["pair"]
            assert pair and (pair["local"], pair["remote"]) == ("relay", "relay"), f"{who}: {dump(stats)}"
            config = await page.evaluate("window.peercall.pc.getConfiguration()")
            assert config["iceTransportPolicy"] == "relay", dump(config)
            assert [s["urls"] for s in config["iceServers"]] == [[turn.url]], dump(config)
            await expect(page.locator("#call-detail")).to_contain_text("relayed through a TURN server")
        await a.screenshot(path=artifacts_dir() / "relay-call-clientA.png", full_page=True)
        await a.click("#hangup")
        await expect(b.locator("#call-status")).to_have_text("Call Ended")
        # coturn saw both users, each with the credentials the server minted for it
        assert re.search(r"\d+:clientA", turn.log()) and re.search(r"\d+:clientB", turn.log()), turn.log()[-3000:]


async def test_coturn_refuses_an_expired_turn_credential(open_page: OpenPage) -> None:
    """An expired TURN REST username gets a 401 candidate error and no relay candidate; a fresh one relays."""
    with (
        run_coturn(TURN_SECRET) as turn,
        run_server(PEERCALL_TURN_URLS=turn.url, PEERCALL_TURN_SECRET=TURN_SECRET) as server,
    ):
        page = await open_page(server.http, "/", "probe")
        minted = await page.evaluate("async () => (await fetch('ice-servers?id=probe')).json()")
        fresh = next(s for s in minted["iceServers"] if s.get("username"))
        expiry = int(fresh["username"].split(":", 1)[0])
        assert 0 < expiry - time.time() <= 3600 + 5, dump(minted)
        assert (fresh["username"], fresh["credential"]) == turn_rest_credentials("probe", TURN_SECRET, expiry)

        good = await page.evaluate(GATHER_RELAY, {"server": fresh, "waitMs": int(8000 * SCALE)})
        assert good["gathering"] == "complete" and good["errors"] == [], dump(good)
        assert [c["type"] for c in good["candidates"]] == ["relay"], dump(good)

        username, credential = turn_rest_credentials("probe", TURN_SECRET, time.time() - 60)
        expired = {"urls": turn.url, "username": username, "credential": credential}
        bad = await page.evaluate(GATHER_RELAY, {"server": expired, "waitMs": int(8000 * SCALE)})
        assert [e["errorCode"] for e in bad["errors"]] == [401], dump(bad)
        assert bad["candidates"] == [], dump(bad)
        assert bad["connectionState"] == "new", dump(bad)

        async def coturn_log() -> str:
            return turn.log()

        await wait_until(coturn_log, lambda log: f"user <{username}>" in log, "coturn to log the refused username")


async def test_hide_my_ip_relays_my_side_through_coturn(open_page: OpenPage) -> None:
    """Ticking "Hide my IP address" makes that side relay-only: the peer only ever learns the relay's address."""
    with (
        run_coturn(TURN_SECRET) as turn,
        run_server(PEERCALL_TURN_URLS=turn.url, PEERCALL_TURN_SECRET=TURN_SECRET) as server,
    ):
        a, b = await open_pair(open_page, server)
        await expect(a.locator("#relay-only")).to_be_enabled()  # the server relays only those who ask
        await a.check("#relay-only")
        await ring(a, b)
        await b.click("#accept")
        await expect(a.locator("#call-status")).to_have_text("Connected")
        a_stats = await assert_audio_flows(a, "A")
        b_stats = await assert_audio_flows(b, "B")
        assert a_stats["pair"]["local"] == "relay", dump(a_stats)
        assert b_stats["pair"]["remote"] == "relay", dump(b_stats)
        assert await a.evaluate("window.peercall.pc.getConfiguration().iceTransportPolicy") == "relay"
        assert await b.evaluate("window.peercall.pc.getConfiguration().iceTransportPolicy") == "all"
        seen_by_b = await b.evaluate(
            """async () => [...(await window.peercall.pc.getStats()).values()]
                 .filter((r) => r.type === "remote-candidate").map((r) => r.candidateType)"""
        )
        assert seen_by_b and set(seen_by_b) == {"relay"}, f"B learnt A's own addresses: {seen_by_b}"
        await a.click("#hangup")
        await expect(b.locator("#call-status")).to_have_text("Call Ended")
        await a.reload()  # the choice is the user's, remembered for the next visit
        await expect(a.locator("#relay-only")).to_be_checked()


async def test_hide_my_ip_without_a_turn_server_says_so_instead_of_calling(
    server: ServerProcess, open_page: OpenPage, uid: Callable[[str], str]
) -> None:
    """ "Hide my IP address" on a server with no TURN server: the box cannot be ticked, and the hint under it says why
    before any call; ticked on an earlier visit (remembered), it stays ticked rather than quietly showing the
    address it asked to hide: a call then explains, and rings nobody; once unticked, it cannot be ticked again."""
    page = await open_page(server.http, "/", "dora")
    await expect(page.locator("#relay-only")).to_be_disabled()
    await expect(page.locator("#relay-only")).not_to_be_checked()
    await expect(page.locator("#relay-hint")).to_have_text(
        "This server has no relay (TURN) server: calls connect directly, and the other side can see your IP address."
    )
    await page.evaluate("localStorage.setItem('peercall.relayOnly', '1')")  # as an earlier visit left it
    await page.reload()
    await expect(page.locator("#relay-hint")).to_be_visible()
    await expect(page.locator("#relay-only")).to_be_checked()
    await expect(page.locator("#relay-only")).to_be_enabled()
    await page.fill("#my-id", uid("dora"))
    await connect(page)
    await page.fill("#peer-id", "nobody-here")
    await page.click("#call")
    await expect(page.locator("#call-status")).to_have_text("Failed")
    await expect(page.locator("#message")).to_have_text(
        "“Hide my IP address” needs a relay (TURN) server, and this server offers none. Untick it to call directly."
    )
    await expect(page.locator("#call-detail")).to_have_text("no relay server for a relay-only call")
    assert (await mic(page))["live"] == 0, "the microphone stayed open"
    await expect(page.locator("#call")).to_be_enabled()
    await page.uncheck("#relay-only")
    await expect(page.locator("#relay-only")).to_be_disabled()


async def test_refused_relay_credentials_end_the_call_with_a_clear_message(open_page: OpenPage) -> None:
    """When coturn refuses the minted TURN credentials, a relay-only call fails after ~10 s and says why."""
    with (
        run_coturn(TURN_SECRET) as turn,
        run_server(
            PEERCALL_ICE_SERVERS=None,
            PEERCALL_TURN_URLS=turn.url,
            PEERCALL_TURN_SECRET="not-the-coturn-secret",
            PEERCALL_ICE_TRANSPORT_POLICY="relay",
        ) as server,
    ):
        a, b = await open_pair(open_page, server)
        await ring(a, b)
        started = time.monotonic()
        await b.click("#accept")
        failed = "Could not connect the audio: the relay server refused us (its credentials were not accepted)."
        await expect(a.locator("#call-status")).to_have_text("Failed", timeout=20_000 * SCALE)
        await expect(b.locator("#call-status")).to_have_text("Failed")
        print(f"accept -> Failed: {time.monotonic() - started:.1f}s (the client gives ICE 10s)")
        for page in (a, b):
            await expect(page.locator("#message")).to_have_text(failed)
            await expect(page.locator("#call-detail")).to_have_text("the relay server refused us")
        assert await audio_stats(a) is None and await audio_stats(b) is None
        assert re.search(r"ended: failed \(ice-(timeout|failed)\)", server.log()), server.log()[-2000:]
        await a.screenshot(path=artifacts_dir() / "relay-refused-clientA.png", full_page=True)


async def test_https_with_a_self_signed_certificate(open_page: OpenPage, launch_browser: LaunchBrowser) -> None:
    """Over https with the server's self-signed certificate, the page is a secure context and the call has audio."""
    chromium = await launch_browser("--ignore-certificate-errors")
    with tempfile.TemporaryDirectory(prefix="peercall-home-") as home:
        with run_server(PEERCALL_TLS_SELF_SIGNED="true", HOME=home) as server:
            base = f"https://127.0.0.1:{server.port}"
            a = await open_page(base, "/callerA.html", "A", in_browser=chromium)
            b = await open_page(base, "/callerB.html", "B", in_browser=chromium)
            sockets: list[str] = []
            a.on("websocket", lambda ws: sockets.append(ws.url))
            for page in (a, b):
                assert await page.evaluate("window.isSecureContext") is True
                assert await page.evaluate("location.protocol") == "https:"
                await connect(page)
            assert sockets and all(url.startswith(f"wss://127.0.0.1:{server.port}/ws?") for url in sockets), sockets
            await ring(a, b)
            await b.click("#accept")
            await expect(a.locator("#call-status")).to_have_text("Connected")
            await assert_audio_flows(a, "A")
            await assert_audio_flows(b, "B")
            await a.screenshot(path=artifacts_dir() / "https-call-clientA.png", full_page=True)
            await b.click("#hangup")
            await expect(a.locator("#call-status")).to_have_text("Call Ended")
