"""Tokens from an identity provider: `aud` and `iss` enforced when the operator sets them, ignored when not."""

from __future__ import annotations

import json

import httpx
import websockets

from tests.conftest import OPEN_DOORS, run_server
from tests.integration.test_security import SECRET, closed_with, recv_json, refused_status, token

AUD, ISS = "peercall-web", "https://id.example.org/realms/family"


async def test_audience_and_issuer_are_enforced_when_set() -> None:
    """With PEERCALL_AUTH_AUDIENCE/ISSUER set, only tokens carrying both are accepted, on /ws (header and first
    frame) and on the HTTP API; a wrong or missing claim is refused with a message that names it."""
    with run_server(
        PEERCALL_AUTH="token",
        **OPEN_DOORS,
        PEERCALL_AUTH_SECRET=SECRET,
        PEERCALL_AUTH_AUDIENCE=AUD,
        PEERCALL_AUTH_ISSUER=ISS,
    ) as srv:
        good = token("ida", aud=AUD, iss=ISS)
        async with websockets.connect(srv.ws, additional_headers={"Authorization": f"Bearer {good}"}) as ws:
            assert (await recv_json(ws))["id"] == "ida"
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"{srv.http}/ice-servers", headers={"Authorization": f"Bearer {good}"})
            assert answer.status_code == 200
        for bad, why in [
            (token("ida", aud="another-app", iss=ISS), "not for this server"),
            (token("ida", iss=ISS), "'aud'"),
            (token("ida", aud=AUD, iss="https://evil.example"), "not issued by"),
            (token("ida", aud=AUD), "'iss'"),
        ]:
            status, body = await refused_status(srv.ws, additional_headers={"Authorization": f"Bearer {bad}"})
            assert status == 401 and why in body["error"]["message"], (why, body)
            async with websockets.connect(srv.ws) as ws:
                await ws.send(json.dumps({"type": "auth", "token": bad}))
                assert why in (await recv_json(ws))["message"]
                assert (await closed_with(ws))[0] == 4401


async def test_audience_is_not_checked_when_unset() -> None:
    """Without PEERCALL_AUTH_AUDIENCE, a provider's token that carries an `aud` is accepted (its signature is
    what counts)."""
    with run_server(PEERCALL_AUTH="token", **OPEN_DOORS, PEERCALL_AUTH_SECRET=SECRET) as srv:
        with_aud = token("jon", aud="some-client", iss=ISS)
        async with websockets.connect(srv.ws, additional_headers={"Authorization": f"Bearer {with_aud}"}) as ws:
            assert (await recv_json(ws))["id"] == "jon"
