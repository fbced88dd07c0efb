"""A tiny stand-in for peercall that relays like it but mistreats one frame, to show the load generator notices.

`mode`: "none" relays faithfully; "drop" loses the 5th candidate; "dup" sends it twice; "reorder" holds it back
and sends it after the next one; "misroute" stamps it with the wrong sender; "error" sends an `error` frame
in its place; "close" closes the receiver's connection instead; "spaced" relays faithfully but writes its JSON
with spaces after `:` and `,` (the load generator's quick check passes none of it, its full check all of it).
Frames are written compactly, like peercall's, so that the load generator's quick check is what sees them.
Only what bench/loadgen.mjs uses is implemented (welcome, a call's setup,
candidate/offer/answer, hangup and call-ended).
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve


class BrokenRelay:
    def __init__(self, mode: str, victim: int = 5) -> None:
        self.mode = mode
        self.victim = victim
        self.clients: dict[str, ServerConnection] = {}
        self.calls: dict[str, str] = {}  # user -> callId
        self.candidates = 0
        self.held: str | None = None
        self.ids = itertools.count(1)
        self.server: Server | None = None

    async def start(self) -> str:
        self.server = await serve(self.handle, "127.0.0.1", 0)
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def dumps(self, frame: dict[str, Any]) -> str:
        return json.dumps(frame) if self.mode == "spaced" else json.dumps(frame, separators=(",", ":"))

    async def send(self, to: str, frame: dict[str, Any]) -> None:
        await self.clients[to].send(self.dumps(frame))

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        me = parse_qs(urlsplit(ws.request.path).query)["id"][0]
        self.clients[me] = ws
        await ws.send(self.dumps({"type": "welcome", "id": me, "online": [], "protocol": 1}))
        async for raw in ws:
            msg = json.loads(raw)
            kind, to = msg["type"], msg.get("to")
            if kind == "call-request":
                call = f"call{next(self.ids)}"
                self.calls[me] = self.calls[to] = call
                await self.send(me, {"type": "call-ringing", "callId": call, "to": to})
                await self.send(to, {"type": "call-request", "from": me, "to": to, "callId": call})
            elif kind == "call-accept":
                accept = {"type": "call-accept", "from": me, "to": to, "callId": self.calls[me], "polite": False}
                await self.send(to, accept)
            elif kind in ("offer", "answer", "candidate"):
                text = self.dumps({**msg, "from": me, "callId": self.calls[me]})
                await self.relay(to, kind, text)
            elif kind == "hangup":
                call = self.calls[me]
                await self.send(to, {"type": "hangup", "from": me, "to": to, "callId": call})
                for user in (me, to):
                    await self.send(user, {"type": "call-ended", "callId": call, "outcome": "answered"})

    async def relay(self, to: str, kind: str, text: str) -> None:
        ws = self.clients[to]
        if kind == "candidate":
            self.candidates += 1
            if self.candidates == self.victim:
                if self.mode == "drop":
                    return
                if self.mode == "misroute":
                    text = text.replace('"from":"', '"from":"x', 1).replace('"from": "', '"from": "x', 1)
                elif self.mode == "error":
                    error = {"type": "error", "code": "bad-message", "message": "refused", "ref": "candidate"}
                    text = self.dumps(error)
                elif self.mode == "close":
                    await ws.close(4000, "closed by the broken relay")
                    return
                if self.mode == "dup":
                    await ws.send(text)
                elif self.mode == "reorder":
                    self.held = text
                    return
        await ws.send(text)
        if self.held is not None:
            held, self.held = self.held, None
            await ws.send(held)
