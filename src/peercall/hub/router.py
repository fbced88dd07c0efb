"""The hub: the switchboard's hands. It owns a node's connections, hands their events to the broker, performs
the effects that come back, batches presence, and hands ended calls (and their summaries) to the history and
call events to the webhooks.

No sockets here: a connection is anything with `id`, `cid`, `send_text()`, `send_now()` and `close()` (the
adapters in server/fastws.py and server/ws.py, or a list in the unit tests). The hub decides no call rule: the
switchboard (core/switchboard.py) does, run by the broker (hub/broker.py) wherever the state lives. What the hub
decides is only how to deliver: to a connection of its own at once, or through the broker to another node's.

Must not import: the broker package, Redis, or anything of server/.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..core.records import CallRecord
from ..core.social import Circle, Screen, View
from ..core.switchboard import CallEvent, CallRate, Close, Effect, Forward, Presence, Push, Record, Send
from ..protocol import messages
from ..protocol.codes import CloseCode, ErrorCode
from ..protocol.errors import ProtocolError, SharedStateInDoubt, SharedStateUnavailable
from ..protocol.messages import CONTACT_TYPES, PEER_FRAMES
from ..store.base import MISSED_SHOWN, PRUNE_BATCH
from . import nodeframe
from .broker import Broker
from .deadline import within
from .social import Social, relations
from .stats import Stats

if TYPE_CHECKING:
    from ..store.base import CallHistory
    from .push import PushService
    from .webhooks import Webhooks

log = logging.getLogger("peercall.hub")

_LOGGED_ERRORS = 5  # protocol errors logged per connection; the rest are counted
_PRUNE_EVERY = 3600.0  # seconds between two deletions of calls older than the history retention
_PRUNE_BATCHES = 100  # batches (of store.base.PRUNE_BATCH calls) deleted at most each time
_JOIN_WAITING_MAX = 1_000  # frames held for a connection until its welcome is sent; beyond, it is closed (1013)
_SUMMARIES_KEPT = 20_000  # (call, party) whose call-summary was taken: both parties of the 10,000 ended calls kept
_WRITE_WITHIN = 30.0
"""Seconds a batch of history records (or of deletions) may take to write: past it the batch fails (logged, counted
in `peercall_history_write_failures_total`) and the writer goes on; without it a database that stopped answering
held the writer, and every call that ended meanwhile, for ever."""
_PEER_FRAME = messages.Envelope("candidate")  # of no call in particular: whose route a connection has (`_route`)
_NO_LIMIT = 1 << 62  # a `relay_buffer` no backlog reaches
_NO_RELATIONS = relations(Circle(""))  # no contact, request or block, and the server's ring setting
DRAIN_WITHIN = 3.0
"""Seconds the hub waits at shutdown for its pending work (history writes, effects on their way)."""
_ENDING = frozenset(("hangup", "call-reject", "call-accept"))
"""Frames that end or answer a ringing call: naming a call of the sender's that has just ended, they get no error
(the `call-ended` the sender was sent says how it ended)."""
_SHARED_STATE_DOWN = "the server cannot reach its shared state (Redis) right now; nothing was done, try again shortly"
_SHARED_STATE_LOST = (
    "the server lost its shared state (Redis) while doing this; if Redis did it, it takes effect when Redis is back "
    "(you will be told)"
)


class Connection(Protocol):
    """One client connection, as the hub sees it."""

    id: str  # the user id
    cid: str  # this connection's own id, unique in the cluster
    errors: int
    backlog_bytes: int  # bytes held back while the reader lags (0 while it keeps up): `relay_buffer` reads it

    async def send_text(self, text: str) -> bool:
        """Send one text frame. Returns False (and never raises) if the connection is already gone."""
        ...

    def send_now(self, text: str) -> bool:
        """`send_text` without a coroutine: the frame is queued at once and written as soon as it can be."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake."""
        ...


def _reader_lags(reader: str | None, kind: str, call_id: str | None) -> ProtocolError:
    """What the sender of a peer frame hears when it was dropped because `reader` is not reading fast enough."""
    why = f"{reader or 'the other party'} is not reading fast enough; this {kind} was dropped"
    return ProtocolError(ErrorCode.RATE_LIMITED, why, ref=kind, to=reader, call_id=call_id)


class Hub:
    """A node's connections, the broker that decides for them, and the history it writes to.

    It is the broker's `BrokerEvents`: `perform`, `deliver` and `presence_changed` are what the broker calls back.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        history: CallHistory | None = None,
        clock: Callable[[], float] = time.time,
        presence_interval: float = 0.1,
        history_retention: float = 0.0,
        social: Social | None = None,
        display_names: bool = False,
        webhooks: Webhooks | None = None,
        push: PushService | None = None,
        relay_buffer: int | None = None,
        store_timeout: float = 5.0,
        call_rate: int | None = None,
    ) -> None:
        """`history_retention`: seconds a call stays in the history (0: for ever); the writer deletes older ones.
        `social`: the contacts service (hub/social.py); None: no contacts, every presence goes to everyone and
        every call may ring (the hub as it was before contacts, for tests of the call rules alone).
        `display_names`: users may have display names (tokens carry them: token and accounts modes), so `welcome`,
        `directory` and `missed-calls` look them up (in open mode nobody has one, and nothing is looked up).
        `webhooks`: where call events go (hub/webhooks.py); None: nowhere. `push`: Web Push (hub/push.py); None: a call
        to someone with no device connected never rings.
        `relay_buffer`: bytes held back for a lagging reader past which the frames its call's other party relays to
        it are dropped, and that party answered `rate-limited` (settings.relay_buffer); None: no such limit.
        `store_timeout`: seconds a history read or a summary's write may take (a batch of records or of deletions:
        `_WRITE_WITHIN`), past which it fails as the store being down (hub/deadline.py).
        `call_rate`: call-requests a user may place a minute on this node (settings.call_rate), charged before a
        request costs any store work (its screening); None: no limit."""
        self.broker = broker
        self.social = social
        self.display_names = display_names
        # The display names of the users connected to this node (their latest token's), for their presence and
        # their call-requests.
        self._names: dict[str, str] = {}
        self.webhooks = webhooks
        self.push = push
        # This node's connections by user, and for each such user what it was last shown of its circle: the
        # relations of its last `contacts` frame and whose presence it sees (`_refresh` sends the difference).
        self._by_user: dict[str, dict[str, Connection]] = {}
        self._shown: dict[str, tuple[tuple[object, ...], View]] = {}
        self.presence_interval = presence_interval
        self._presence_pending: dict[str, Presence] = {}
        # Calls that ended lately on this node: call id -> the history write of its record (a call-summary waits
        # for it).
        self._written: collections.OrderedDict[str, asyncio.Future[None]] = collections.OrderedDict()
        # Whose `call-summary` this node took lately: (call id, user), the newest _SUMMARIES_KEPT. One per party and
        # call (docs/protocol.md): each is a write to the history, so a repeat is refused before any store work (a
        # party repeating one was a flood of writes that stalled every other user's store work behind it).
        self._summarised: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._presence_timer: asyncio.TimerHandle | None = None
        self.stats = Stats()
        self.history = history
        self.clock = clock
        self.draining = False
        self.history_failures = 0
        self._conns: dict[str, Connection] = {}
        self._serial = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        # Ended calls waiting for the history writer (`_queue_write`), and the future their write completes.
        self._unwritten: list[tuple[CallRecord, bool]] = []
        self._unwritten_done: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self.history_retention = history_retention
        self._pruned_at = -math.inf  # when the writer last deleted calls older than the retention (monotonic)
        # Connections whose welcome is not sent yet, with the frames that wait for it: (kind, text).
        self._joining: dict[str, tuple[Connection, list[tuple[str, str]]]] = {}
        # Connections that `user_closed` closed, until they leave: their calls end at once (`leave`).
        self._signed_out: set[str] = set()
        self._route = broker.route
        self._shared = broker.shared
        self.relay_buffer = relay_buffer or _NO_LIMIT
        self.store_timeout = store_timeout
        self.call_rate = CallRate(call_rate) if call_rate is not None else None
        self._history_in_loop = history is not None and history.in_loop
        broker.bind(self)

    def __len__(self) -> int:
        return len(self._conns)

    def connections(self) -> list[Connection]:
        return list(self._conns.values())

    def new_cid(self) -> str:
        return f"{self.broker.cid_prefix}{next(self._serial)}"

    def users_online(self) -> int:
        return self.broker.users_online()

    def calls_by_state(self) -> dict[str, int]:
        return self.broker.calls_by_state()

    # ------------------------------------------------------------------------------------- connections

    async def join(
        self,
        conn: Connection,
        device: str | None = None,
        *,
        token_expires_at: float | None = None,
        display_name: str | None = None,
    ) -> None:
        """Register an accepted connection: welcome it, announce it, resume or ring its calls. `token_expires_at`:
        the `exp` of its token (token mode), which its `welcome` says (`tokenExpiresAt`); `display_name`: the name
        its token carried (kept, and shown to those who see the user)."""
        # `welcome` must be the first frame: what arrives for the connection while the broker decides (presence,
        # frames from other nodes) waits in `_joining` and follows it.
        # Whatever happens, the entry goes: a leaked one would collect every presence frame for ever.
        waiting: list[tuple[str, str]] = []
        self._joining[conn.cid] = (conn, waiting)
        try:
            circle: Circle | None = None
            view: View | None = None
            if display_name is not None:
                self._names[conn.id] = display_name
                await self._keep_name(conn.id, display_name)
            if self.social is not None:
                try:
                    circle = await self.social.circle(conn.id)
                except Exception as exc:  # calls go on: a user whose contacts cannot be read sees none for now
                    log.warning(
                        "%s: could not read their contacts (%s); they see none until they reconnect", conn.id, exc
                    )
                    circle = Circle(conn.id)
                view = self.social.view(circle)
            try:
                effects = await self.broker.connect(conn.cid, conn.id, device, self.clock(), view=view)
            except SharedStateUnavailable as exc:
                del self._joining[conn.cid]
                log.warning("%s: refused, the shared state (Redis) is unavailable: %s", conn.id, exc)
                error = ProtocolError(ErrorCode.SERVICE_UNAVAILABLE, _SHARED_STATE_DOWN)
                await conn.send_text(messages.error(error))
                await conn.close(CloseCode.TRY_AGAIN_LATER, "shared state unavailable")
                return
            welcome = _welcome_of(conn.cid, effects)
            if self.social is not None and welcome is not None:
                # What the user's ring setting falls back to, before any `contacts` frame says more. The member is
                # a str, encoded as its value: `.value` cost ~0.2 µs a join on Python 3.11.
                welcome["defaultCallsFrom"] = self.social.default_calls_from
            if token_expires_at is not None and welcome is not None:
                welcome["tokenExpiresAt"] = token_expires_at
            if self.display_names and self.social is not None and welcome is not None:
                listed = [*welcome["online"], *(seen["id"] for seen in welcome["recent"])]
                names = await self.social.names(listed)
                if names:
                    welcome["displayNames"] = names
            if welcome is not None:
                # Sent before the connection is among ours: until then no presence batch or frame of another node
                # can reach it but through `waiting` (a batch flushed during an await here came first, seen in CI).
                effects = [e for e in effects if not (isinstance(e, Send) and e.message is welcome)]
                await conn.send_text(messages.encode(welcome))
            self._conns[conn.cid] = conn
            self._by_user.setdefault(conn.id, {})[conn.cid] = conn
            await self.perform(effects)
            if circle is not None and view is not None:
                if circle.is_empty():  # most users: no contacts frame to send (as `_send_contacts` tells), no coroutine
                    self._shown[conn.id] = (_NO_RELATIONS, view)
                else:
                    await self._send_contacts(conn, circle, view, welcome)
            for kind, text in waiting:  # (`_hold` keeps adding while a delivery awaits: the loop sees them)
                await self._deliver_to(conn, kind, text)
                if kind == nodeframe.CLOSE:
                    break  # closed: what came after it is for nobody
        finally:
            self._joining.pop(conn.cid, None)
        if self.history is not None:
            if self._history_in_loop:  # it never waits (memory://): no task for every join
                await self._send_missed(conn)
            else:
                self._spawn(self._send_missed(conn))

    async def leave(self, conn: Connection) -> None:
        """Forget a connection that closed. One that `user_closed` closed (its sign-in ended) cannot come back to
        its call: that ends now rather than after the resume grace."""
        final = conn.cid in self._signed_out
        self._signed_out.discard(conn.cid)
        if self._conns.pop(conn.cid, None) is None:
            return
        mine = self._by_user.get(conn.id)
        if mine is not None:
            mine.pop(conn.cid, None)
            if not mine:
                del self._by_user[conn.id]
                self._shown.pop(conn.id, None)
                self._names.pop(conn.id, None)
        try:
            await self.perform(await self.broker.disconnect(conn.cid, conn.id, self.clock(), final=final))
        except SharedStateUnavailable:
            log.warning("%s: Redis is unreachable; its disconnect is told when it is back", conn.id)

    async def _keep_name(self, user: str, name: str) -> None:
        """Keep `user`'s display name in the store (no write when it is the one known), and show it to those whose
        contacts frame lists the user (on every node). Never raises: a store that fails is logged."""
        if self.social is None:
            return
        try:
            changed = await self.social.set_display_name(user, name)
        except Exception as exc:
            log.warning("%s: could not keep their display name: %s", user, exc)
            return
        if changed:
            self.broker.circles_changed(changed)

    async def renamed(self, user: str, name: str) -> None:
        """A connection of `user` renewed its token with another display name (`name`): keep it, and tell those
        who see the user's presence (a presence change with the new name)."""
        if user not in self._by_user:
            return
        self._names[user] = name
        await self._keep_name(user, name)
        seen = (await self._presences([user])).get(user)
        if seen is not None and seen.status == "online":
            await self.perform([Presence(user, "online", in_call=seen.in_call)])

    async def handle(self, conn: Connection, frame: str | bytes) -> None:
        """One frame from `conn`: let the broker decide, then do what it says."""
        rest = self.receive(conn, frame)
        if rest is not None:
            await rest

    def receive(self, conn: Connection, frame: str | bytes) -> Coroutine[Any, Any, None] | None:
        """`handle`, for callers that run coroutines by hand (server/fastws.py): the hot path, a peer frame
        whose route the broker knows at once (`Broker.route`: one node, or a node of a cluster that knows where the
        peer is), is forwarded at once (to a connection of this node, or queued for another node's) and returns
        None; anything else returns the coroutine that does it (a frame that changes a call, an error, a peer
        frame whose route a node of a cluster has to read)."""
        try:
            env = messages.parse(frame, conn.id)
            if env.type in PEER_FRAMES and (route := self._route) is not None:  # no effects, no waiting
                to = route(conn.cid, env)
                if to is None and self._shared:  # not known on this node: the broker finds out (`receive`)
                    return self._handle(conn, env)
                self.stats.messages[env.type] += 1
                if to is not None:
                    if (target := self._conns.get(to[0])) is not None:
                        if target.backlog_bytes > self.relay_buffer:  # it lags: the sender's frame pays, not it
                            return self._relay_refused(conn, env)
                        target.send_now(messages.forward(env, conn.id, to[1]))
                    elif self._shared:  # on another node (or still joining)
                        self._elsewhere(to[0], nodeframe.RELAY, messages.forward(env, conn.id, to[1]))
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s -> %s %s (%d chars)", conn.id, env.to, env.type, len(frame))
                return None
        except ProtocolError as exc:
            if exc.ref == "auth" and (renew := self.renew) is not None and isinstance(frame, str):
                return renew(conn, frame)  # a renewal of the connection's token: the session layer's
            return self.reject(conn, exc)
        return self._handle(conn, env)

    def _relay_refused(self, conn: Connection, env: messages.Envelope) -> Coroutine[Any, Any, None]:
        """A peer frame for a connection with more than `relay_buffer` bytes held back: dropped, and the sender told.
        A party that sends faster than the other reads (a flood, or a reader on a poor link) has its own frames
        dropped, instead of filling the reader's send buffer until the reader is dropped as a slow one (4420)."""
        self.stats.relay_dropped += 1
        return self.reject(conn, _reader_lags(env.to, env.type, env.callId))

    def _relay_dropped_elsewhere(self, reader: Connection, text: str) -> None:
        """An offer or answer from another node dropped for `reader`, who lags: tell its sender, found by the
        reader's own route (if this node knows it), as `_relay_refused` does on one node, so that the sender's
        client sends it again (a renegotiation waits for it). Candidates are not worth a frame back: one path fewer."""
        try:
            frame = msgspec.json.decode(text)
            kind, sender, call_id = frame["type"], frame["from"], frame.get("callId")
            if kind not in ("offer", "answer") or self._route is None:
                return
            to = self._route(reader.cid, _PEER_FRAME)
        except (msgspec.MsgspecError, KeyError, TypeError, AttributeError, ProtocolError):
            return
        if to is None:
            return
        error = _reader_lags(reader.id, kind, call_id)
        self.stats.errors[error.code] += 1
        self.broker.send(to[0], nodeframe.SEND, messages.error(error))
        log.debug("%s -> %s: dropped a relayed %s (the reader lags)", sender, reader.id, kind)

    async def _handle(self, conn: Connection, env: messages.Envelope) -> None:
        try:
            try:
                if env.type == "call-summary":
                    await self._summary(conn, env)
                    self.stats.messages[env.type] += 1
                    return
                if env.type in CONTACT_TYPES:
                    await self._contact(conn, env)
                    self.stats.messages[env.type] += 1
                    return
                screen = None
                if env.type == "call-request" and self.call_rate is not None:  # before any store work, so that
                    self.call_rate.check(conn.id, env, self.clock())  # a flood of requests reads nothing
                if env.type == "call-request" and self.social is not None:
                    assert env.to is not None
                    screen = await self.social.screen(conn.id, env.to)
                if env.type == "call-request" and self.push is not None and env.to is not None:
                    screen = screen or Screen()  # the switchboard's private mode still hides the callee's state
                    if screen.screening is None:
                        screen = msgspec.structs.replace(screen, reachable=await self.push.reachable(env.to))
                effects = await self.broker.receive(conn.cid, conn.id, env, self.clock(), screen=screen)
            except SharedStateUnavailable as exc:
                text = _SHARED_STATE_LOST if isinstance(exc, SharedStateInDoubt) else _SHARED_STATE_DOWN
                raise ProtocolError(
                    ErrorCode.SERVICE_UNAVAILABLE, text, ref=env.type, to=env.to, call_id=env.callId
                ) from None
        except ProtocolError as exc:
            if exc.code is ErrorCode.NOT_IN_CALL and env.type in _ENDING and await self._ended_lately(conn, env):
                self.stats.messages[env.type] += 1  # e.g. both parties hung up at once: the call is over, as asked
                return
            await self.reject(conn, exc)
            return
        self.stats.messages[env.type] += 1
        await self.perform(effects)
        if env.type in PEER_FRAMES:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s -> %s %s", conn.id, env.to, env.type)
            return
        if log.isEnabledFor(logging.INFO):
            call_id = next((e.call_id for e in effects if isinstance(e, Forward)), None)
            if call_id is None:
                call_id = next((e.message.get("callId") for e in effects if isinstance(e, Send)), None)
            log.info("%s -> %s %s (call %s)", conn.id, env.to, env.type, call_id, extra={"call_id": call_id})

    async def _contact(self, conn: Connection, env: messages.Envelope) -> None:
        """A contact frame: carry it out, answer the sender's devices with `contacts` (or `directory`), and tell
        every node whose circles changed."""
        social = self.social
        if social is None:
            raise ProtocolError(ErrorCode.NOT_ALLOWED, "this server keeps no contacts", ref=env.type)
        social.check_rate(conn.id, env, self.clock())
        if env.type == "directory":
            query = social.directory_query(env)
            view = social.view(await social.current(conn.id))
            found = await self.broker.online_page(query.q, query.after, query.limit + 1)
            page, more = found[: query.limit], len(found) > query.limit
            users = [(p.user, p.in_call) for p in page if p.user != conn.id and view.includes(p.user)]
            names = await social.names([u for u, _ in users]) if self.display_names else None
            await conn.send_text(messages.directory(users, page[-1].user if more else None, names))
            return
        changed = await social.apply(conn.id, env)
        await self._refresh(conn.id, force=True)  # the sender's devices on this node, even if nothing changed
        self.broker.circles_changed(changed)  # every node (this one too): the others' devices, the other user

    async def _send_contacts(
        self, conn: Connection, circle: Circle, view: View, welcome: dict[str, Any] | None
    ) -> None:
        """Send a joining connection its `contacts` frame (after `welcome`), if its circle is not empty. The
        contacts' presence comes from the `welcome` when it lists contacts only (no second read)."""
        assert self.social is not None
        related = _NO_RELATIONS if circle.is_empty() else relations(circle)
        if related == _NO_RELATIONS:
            self._shown[conn.id] = (_NO_RELATIONS, view)  # shared objects: nothing per connection but the entry
            return  # nothing to say: a client takes "no contacts frame" for an empty one (and seed clients see none)
        if welcome is not None and not view.everyone:
            presences = _presences_in(welcome)
        else:
            presences = await self._presences(list(circle.contacts))
        await conn.send_text(self.social.contacts_frame(circle, presences))

    async def _presences(self, users: list[str]) -> dict[str, Presence]:
        if not users:
            return {}
        try:
            return await self.broker.presences(users)
        except SharedStateUnavailable:
            return {}  # shown offline until their next presence change

    def circles_changed(self, users: list[str]) -> None:
        """BrokerEvents: these users' circles changed (on some node). Forget them; show this node's connections of
        them what changed."""
        if self.social is None:
            return
        self.social.forget(users)
        for user in users:
            if user in self._by_user:
                self._spawn(self._refresh(user))

    async def _refresh(self, user: str, *, force: bool = False) -> None:
        """Show `user`'s connections on this node what changed in their circle: a new `contacts` frame when its
        relations changed (or `force`), else `presence` frames for the users they now see or no longer see (a
        block: the blocked user sees the blocker go offline, as if they had)."""
        social = self.social
        conns = self._by_user.get(user)
        if social is None or not conns:
            return
        try:
            circle = await social.circle(user)
        except Exception as exc:
            log.warning("%s: could not read their contacts after a change: %s", user, exc)
            return
        view = social.view(circle)
        shown = self._shown.get(user)
        related = relations(circle)
        self._shown[user] = (related, view)
        if force or shown is None or shown[0] != related:
            text = social.contacts_frame(circle, await self._presences(list(circle.contacts)))
        elif shown[1] != view:
            old = shown[1]
            gone = [
                u
                for u in (old.contacts | old.hidden | view.contacts | view.hidden)
                if old.includes(u) and not view.includes(u)
            ]
            came = [u for u in (view.contacts | old.hidden) if view.includes(u) and not old.includes(u)]
            now = self.clock()
            changes = [messages.presence_change(u, "offline", last_seen=now) for u in sorted(gone)]
            found = await self._presences(sorted(came))
            names = await social.names(sorted(came)) if self.display_names and came else {}
            for u in sorted(came):
                p = found.get(u)
                if p is not None and p.status == "online":
                    changes.append(messages.presence_change(u, "online", p.in_call, display_name=names.get(u)))
            if not changes:
                return
            # one change alone as a disconnect's is (`_flush_scoped`): a block must look like the blocker leaving
            text = messages.presence_batch(changes) if len(changes) > 1 else messages.presence_one(changes[0])
        else:
            return
        for conn in list(conns.values()):
            await conn.send_text(text)

    async def _summary(self, conn: Connection, env: messages.Envelope) -> None:
        """Keep a party's `call-summary` with its call's history record (once the record is written)."""
        assert env.callId is not None
        taken = (env.callId, conn.id)
        if taken in self._summarised:
            raise ProtocolError(
                ErrorCode.NOT_IN_CALL,
                f"you sent the call-summary of call {env.callId} already: one per call",
                ref=env.type,
                call_id=env.callId,
            )
        await self.broker.summary(conn.cid, conn.id, env)
        self._summarised[taken] = None
        if len(self._summarised) > _SUMMARIES_KEPT:
            self._summarised.popitem(last=False)
        if self.history is not None:
            written = self._written.get(env.callId)  # None: it ended on another node
            self._spawn(self._add_quality(env.callId, conn.id, messages.summary(env), written))

    async def _add_quality(
        self, call_id: str, user: str, summary: dict[str, object], written: asyncio.Future[None] | None
    ) -> None:
        assert self.history is not None
        try:
            if written is not None:
                await asyncio.shield(written)  # shared by a batch of calls: cancelling us must not cancel it
                await within(self.history.add_quality(call_id, user, summary), self.store_timeout, self.history)
                return
            # The call ended on another node, whose write of its record may still be on its way.
            for delay in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2):
                if await within(self.history.add_quality(call_id, user, summary), self.store_timeout, self.history):
                    return
                await asyncio.sleep(delay)
            log.warning("the summary of call %s from %s came, its history record did not", call_id, user)
        except Exception:
            self.history_failures += 1
            log.exception("could not keep the summary of call %s from %s", call_id, user)

    renew: Callable[[Connection, str], Coroutine[Any, Any, None]] | None = None
    """Token mode: what to do with an `auth` frame from a joined connection (a renewal of its token): the session
    layer's (server/session.py `Sessions.renew`). None: such a frame is an `unknown-type`, as in open mode."""

    def close_user(self, user: str, code: int, reason: str, *, sign_in: str | None = None) -> None:
        """Close every connection of `user`, on every node (this one too) within a second: an administrator
        disabled them or signed them out everywhere (`peercall revoke`). With `sign_in`, only those whose latest
        token came from that sign-in (it was signed out). At most once, like `Broker.send`."""
        self.broker.close_user(user, code, reason, sign_in=sign_in)

    sign_in_of: Callable[[Connection], str | None] | None = None
    """Accounts mode: the sign-in of a connection's latest token (server/session.py `Sessions.sign_in_of`), which
    `user_closed` with a sign-in looks at. None: no connection has one (a sign-in closes none)."""

    def user_closed(self, user: str, code: int, reason: str, *, sign_in: str | None = None) -> None:
        """BrokerEvents: close this node's connections of `user` (those still joining too; with `sign_in`, only
        those of that sign-in), each in a task of its own so that no slow one holds the broker's listener. Looks at
        the user's connections only (at most PEERCALL_MAX_CONNECTIONS_PER_USER), never at every connection."""
        targets = list(self._by_user.get(user, {}).values())
        targets += [conn for conn, _ in self._joining.values() if conn.id == user and conn.cid not in self._conns]
        if sign_in is not None:
            of = self.sign_in_of
            targets = [conn for conn in targets if of is not None and of(conn) == sign_in]
        if targets:
            which = "" if sign_in is None else " of one sign-in"
            log.info("%s: closing their %d connections%s on this node (%s)", user, len(targets), which, reason)
        for conn in targets:
            self._signed_out.add(conn.cid)  # (until it leaves: `leave`)
            self._spawn(conn.close(code, reason))

    may_log: Callable[[Connection], bool] | None = None
    """Whether a protocol error of a connection may be logged now, beyond the first few of each connection: the
    session layer's budget per address (server/session.py `Sessions.may_log`), which reconnecting does not reset."""

    async def _ended_lately(self, conn: Connection, env: messages.Envelope) -> bool:
        """Whether `env` (a `hangup`, `call-reject` or `call-accept` the switchboard found no call for) names a
        call of the sender's that has just ended (the last 10,000, on any node): then it crossed that end (two
        hang-ups, or an accept or reject and the ring timeout) and gets no error: its `call-ended` says how it ended."""
        if env.callId is None:
            return False
        try:
            await self.broker.summary(conn.cid, conn.id, env)  # the same rule as a call-summary's
        except (ProtocolError, SharedStateUnavailable):
            return False
        return True

    async def reject(self, conn: Connection, exc: ProtocolError) -> None:
        """Answer `conn` with an `error` frame, and log the first few of each connection (within `may_log`)."""
        conn.errors += 1
        self.stats.errors[exc.code] += 1
        if conn.errors <= _LOGGED_ERRORS and (self.may_log is None or self.may_log(conn)):
            log.info("%s: %s", conn.id, exc)
            if conn.errors == _LOGGED_ERRORS:
                log.info("%s: further protocol errors on this connection are counted, not logged", conn.id)
        await conn.send_text(messages.error(exc))

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection (graceful shutdown). New connections are refused from now on."""
        self.draining = True
        self.broker.stop_timers()
        await asyncio.gather(*(c.close(code, reason) for c in list(self._conns.values())))

    async def keep_calls(self) -> None:
        """At shutdown, once every connection is closed and before the broker stops: keep the calls under way that
        only this node holds (`memory://`) in the history store, for its next start to take over (`take_calls`), so
        that a restart within the resume grace ends no call. Never raises."""
        count = sum(self.broker.calls_by_state().values())
        state = self.broker.hand_over(self.clock())
        if state is None or self.history is None:
            return
        try:
            await self.history.keep_calls(self.broker.node, state)
        except Exception:
            log.exception("could not keep the %d call(s) under way for the next start: they end with this run", count)
            return
        if count:
            log.info(
                "kept %d call(s) under way: resumed if the server and their parties are back within the grace", count
            )

    async def take_calls(self) -> None:
        """At start, before the broker starts: take over the calls that this node kept as it last stopped
        (`keep_calls`). Their parties resume them as they reconnect; the timers end the others. Never raises."""
        if self.history is None:
            return
        try:
            state = await self.history.take_calls(self.broker.node)
            if state is None:
                return
            count = self.broker.take_over(state)
        except Exception:
            log.exception("could not take over the calls kept at the last stop: they are lost")
            return
        if count:
            log.info("took over %d call(s) under way at the last stop: their parties may resume them", count)

    async def drain(self) -> None:
        """Wait for pending work (history writes, effects on their way) at shutdown, at most `DRAIN_WITHIN` seconds:
        a shutdown must end (a node with 20,000 churning connections once waited here for ever)."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_WITHIN)
            if pending:
                log.warning(
                    "%d task(s) still running %gs into the shutdown: left unfinished", len(pending), DRAIN_WITHIN
                )

    # ----------------------------------------------------------------------------------------- effects

    async def perform(self, effects: list[Effect]) -> None:
        """Do what the broker decided: frames to connections of this node at once, to others through the broker."""
        conns = self._conns
        for effect in effects:
            if isinstance(effect, Forward):
                # A call-request shows the callee who calls: the caller's display name (kept here when the caller is
                # on this node; else read, for a call rung again on a device of the callee that connects here).
                name = None
                if effect.env.type == "call-request":
                    name = self._names.get(effect.sender)
                    if name is None and self.display_names and effect.sender not in self._by_user and self.social:
                        name = (await self.social.names([effect.sender])).get(effect.sender)
                text = messages.forward(effect.env, effect.sender, effect.call_id, effect.polite, name)
                target = conns.get(effect.cid)
                if target is not None:
                    await target.send_text(text)
                else:
                    kind = nodeframe.RELAY if effect.env.type in PEER_FRAMES else nodeframe.SEND
                    self._elsewhere(effect.cid, kind, text)
            elif isinstance(effect, Send):
                target = conns.get(effect.cid)
                if target is not None:
                    await target.send_text(messages.encode(effect.message))
                else:
                    kind = nodeframe.kind_of(effect.message["type"])
                    self._elsewhere(effect.cid, kind, messages.encode(effect.message))
            elif isinstance(effect, Presence):
                if effect.status == "online" and (name := self._names.get(effect.user)) is not None:
                    effect = msgspec.structs.replace(effect, display_name=name)
                if self.social is not None:
                    circle = self.social.cached(effect.user)
                    if circle is None:
                        try:
                            circle = await self.social.circle(effect.user)
                        except Exception:
                            circle = Circle(effect.user)  # unknown: told to nobody but everyone-directories
                    effect = msgspec.structs.replace(effect, audience=self.social.audience(circle))
                self.broker.presence(effect)
            elif isinstance(effect, Close):
                target = conns.get(effect.cid)
                if target is not None:
                    log.info("%s: closing an older connection of the same device (%s)", target.id, target.cid)
                    await target.close(effect.code, effect.reason)
                else:
                    self._elsewhere(effect.cid, nodeframe.CLOSE, nodeframe.close_text(effect.code, effect.reason))
            elif isinstance(effect, Record):
                self._ended(effect.record, effect.notified)
                if self.webhooks is not None:
                    self.webhooks.submit(effect)
            elif isinstance(effect, CallEvent):
                if self.webhooks is not None:
                    self.webhooks.submit(effect)
            elif isinstance(effect, Push):
                if self.push is not None:
                    self.push.push(effect)

    async def decline(self, call_id: str, callee: str) -> bool:
        """`callee` declines the ringing call `call_id` from no connection (a push notification's Decline, whose
        capability the caller checked). False if it was not ringing for them any more (nothing changed).

        Raises:
            SharedStateUnavailable: the shared state cannot be reached (nothing changed).
        """
        effects = await self.broker.decline(call_id, callee, self.clock())
        await self.perform(effects)
        if effects:
            log.info("%s declined call %s from a notification", callee, call_id, extra={"call_id": call_id})
        return bool(effects)

    def _elsewhere(self, cid: str, kind: str, text: str) -> None:
        """A frame for a connection that is not (yet) among ours: one still joining, or one on another node."""
        joining = self._joining
        if joining and (entry := joining.get(cid)) is not None:  # mostly none joins: no lookup
            _hold(entry, kind, text)
        else:
            self.broker.send(cid, kind, text)

    def deliver(self, cid: str, kind: str, text: str) -> None:
        """A frame that another node sent for a connection of this one (`Broker.send` there).

        Called by the broker's one listener, which delivers what every other node sends to all of this node's
        connections: so it never waits for one of them, and is no coroutine (the listener calls it for every frame
        it reads, as it reads them). A frame is queued (`send_now`: a connection that cannot take it closes
        itself, a slow reader), and a close is started in a task of its own."""
        joining = self._joining
        if joining and (entry := joining.get(cid)) is not None:
            _hold(entry, kind, text)
            return
        target = self._conns.get(cid)
        if target is None:
            return
        if kind == nodeframe.CLOSE:
            self._spawn(self._deliver_to(target, kind, text))
        elif kind != nodeframe.RELAY or target.backlog_bytes <= self.relay_buffer:
            target.send_now(text)
        else:  # a peer frame for a reader that lags: dropped
            self.stats.relay_dropped += 1
            if '"offer"' in text or '"answer"' in text:
                self._relay_dropped_elsewhere(target, text)

    async def _deliver_to(self, target: Connection, kind: str, text: str) -> None:
        if kind == nodeframe.CLOSE:
            code, reason = nodeframe.parse_close(text)
            if code == CloseCode.REPLACED:
                log.info("%s: closing an older connection of the same device (%s)", target.id, target.cid)
            await target.close(code, reason)
        else:
            await target.send_text(text)

    # --------------------------------------------------------------------------------------- presence

    def presence_changed(self, change: Presence) -> None:
        """Queue a presence change; changes are sent in batches, at most one frame per connection per interval.

        Telling everyone of every join and leave one frame at a time is O(N^2) in a reconnect storm (10k users
        coming back after a restart = 100M frames). Batching sends each connection one frame per interval,
        with the latest status of everyone who changed, encoded once for all.
        """
        self._presence_pending[change.user] = change
        if self._presence_timer is None and not self.draining:
            loop = asyncio.get_running_loop()
            self._presence_timer = loop.call_later(self.presence_interval, self._flush_presence)

    def _flush_presence(self) -> None:
        self._presence_timer = None
        changes, self._presence_pending = self._presence_pending, {}
        if not changes:
            return
        if self.social is not None:
            self._flush_scoped(changes)
            return
        if len(changes) == 1:
            (p,) = changes.values()
            text = messages.presence(p.user, p.status, p.in_call, p.last_seen, p.display_name)
            targets = [c for c in self._conns.values() if c.id != p.user]
        else:
            text = messages.presence_batch([_change_of(p) for p in changes.values()])
            targets = list(self._conns.values())
        if joining := self._joining:
            # Connections still joining (their welcome, or what waited for them after it, not sent yet; some are
            # among ours already) get it after that, in order: sent now it could overtake an older batch.
            targets = [c for c in targets if c.cid not in joining]
            for entry in joining.values():
                if len(changes) > 1 or entry[0].id != p.user:
                    _hold(entry, nodeframe.SEND, text)
        self._spawn(self._send_all(targets, text))

    def _flush_scoped(self, changes: dict[str, Presence]) -> None:
        """`_flush_presence` with contacts: each change goes to the connections of its audience (everyone online,
        or the user's contacts) whose own view includes the user; a connection gets one frame with its share."""
        shown = self._shown
        joining = self._joining
        by_conn: dict[str, list[Presence]] = {}
        conns: dict[str, Connection] = {}
        for change in changes.values():
            audience = change.audience
            if audience is None or audience.users is None:
                targets: Any = self._by_user.items()
            else:
                targets = ((u, self._by_user[u]) for u in audience.users if u in self._by_user)
            for user, mine in targets:
                if user == change.user or (audience is not None and not audience.includes(user)):
                    continue
                seen = shown.get(user)
                if seen is not None and not seen[1].includes(change.user):
                    continue
                for cid, conn in mine.items():
                    if joining and cid in joining:
                        continue  # (below)
                    by_conn.setdefault(cid, []).append(change)
                    conns[cid] = conn
        texts: dict[tuple[str, ...], str] = {}
        sends: list[tuple[Connection, str]] = []
        for cid, mine_changes in by_conn.items():
            key = tuple(p.user for p in mine_changes)
            text = texts.get(key)
            if text is None:
                if len(mine_changes) == 1:
                    p = mine_changes[0]
                    text = messages.presence(p.user, p.status, p.in_call, p.last_seen, p.display_name)
                else:
                    text = messages.presence_batch([_change_of(p) for p in mine_changes])
                texts[key] = text
            sends.append((conns[cid], text))
        if sends:
            self._spawn(self._send_each(sends))
        for entry in joining.values():  # connections still joining get theirs after what waits (`_flush_presence`)
            conn = entry[0]
            if len(entry[1]) > _JOIN_WAITING_MAX:
                continue  # (it will be closed: `_hold`)
            seen = shown.get(conn.id)  # (known once one of the user's connections has joined)
            mine_changes = [
                p
                for p in changes.values()
                if p.user != conn.id
                and (p.audience is None or p.audience.includes(conn.id))
                and (seen is None or seen[1].includes(p.user))
            ]
            if mine_changes:
                _hold(entry, nodeframe.SEND, messages.presence_batch([_change_of(p) for p in mine_changes]))

    async def _send_each(self, sends: list[tuple[Connection, str]]) -> None:
        for conn, text in sends:
            await conn.send_text(text)

    async def _send_all(self, targets: list[Connection], text: str) -> None:
        for conn in targets:
            await conn.send_text(text)

    @property
    def writes_history(self) -> bool:
        return self.history is not None

    def _ended(self, record: CallRecord, notified: bool) -> None:
        self.stats.outcomes[record.outcome.value] += 1
        if record.answered_at is not None:
            self.stats.answer_time.observe(record.answered_at - record.ringing_at)
        log.info(
            "call %s %s -> %s ended: %s (%s)",
            record.call_id,
            record.caller,
            record.callee,
            record.outcome.value,
            record.reason.value,
            extra={"call_id": record.call_id},
        )
        if self.history is not None:
            # A callee who was online saw a missed call ring; only calls missed while away are reported later.
            self._written[record.call_id] = self._queue_write(record, notified)
            if len(self._written) > 10_000:
                self._written.popitem(last=False)

    def _queue_write(self, record: CallRecord, notified: bool) -> asyncio.Future[None]:
        """Hand an ended call to the history writer; the future completes when it has been written (or failed).

        One writer task, one transaction per batch: the calls that end while a write is under way are written
        together by the next one (a task and a transaction per call cost more than the call's signaling).
        """
        if not self._unwritten:
            self._unwritten_done = asyncio.get_running_loop().create_future()
        if self._writer is None:
            self._writer = self._spawn(self._write_loop())
        self._unwritten.append((record, notified))
        assert self._unwritten_done is not None
        return self._unwritten_done

    async def _write_loop(self) -> None:
        assert self.history is not None
        try:
            while self._unwritten:
                batch, done = self._unwritten, self._unwritten_done
                self._unwritten, self._unwritten_done = [], None
                assert done is not None
                try:
                    await within(self.history.record_many(batch), _WRITE_WITHIN, self.history)
                except Exception:
                    self.history_failures += len(batch)
                    ids = ", ".join(record.call_id for record, _ in batch[:5])
                    log.exception(
                        "could not write %d calls (%s…) to the history: they are missing from it", len(batch), ids
                    )
                finally:  # also when cancelled: whoever waits for this batch goes on
                    if not done.done():
                        done.set_result(None)
                # Written or given up on: a broker that kept them for another node to write, should this one die
                # before, lets them go (redis://).
                await self.broker.recorded([record.call_id for record, _ in batch])
                if self.history_retention > 0 and time.monotonic() - self._pruned_at >= _PRUNE_EVERY:
                    self._pruned_at = time.monotonic()
                    await self.prune_history()
        finally:
            self._writer = None

    async def prune_history(self) -> int:
        """Delete the calls older than the retention, in batches of `PRUNE_BATCH` (each a short transaction), at
        most `_PRUNE_BATCHES` of them (the rest wait for the next time). Returns how many were deleted; never
        raises."""
        assert self.history is not None
        cutoff, deleted = self.clock() - self.history_retention, 0
        try:
            for _ in range(_PRUNE_BATCHES):
                n = await within(
                    self.history.delete_ended_before(cutoff, limit=PRUNE_BATCH), _WRITE_WITHIN, self.history
                )
                deleted += n
                if n < PRUNE_BATCH:
                    break
                await asyncio.sleep(0)  # let the writer's callers in between batches
        except Exception:
            log.exception("could not delete calls older than the retention from the history (calls go on)")
        if deleted:
            log.info("deleted %d calls older than the history retention", deleted)
        if self.social is not None:
            try:
                book = self.social.book
                await within(book.delete_expired_requests(self.clock()), _WRITE_WITHIN, book)
            except Exception:
                log.exception("could not delete expired contact requests")
        return deleted

    async def _send_missed(self, conn: Connection) -> None:
        assert self.history is not None
        try:
            work = self.history.take_missed(conn.id, limit=MISSED_SHOWN)
            # (memory:// never waits: no timer on every join)
            missed, total = await (work if self._history_in_loop else within(work, self.store_timeout, self.history))
        except Exception:
            self.history_failures += 1
            log.exception("could not read the missed calls of %s", conn.id)
            return
        if missed:
            names = None
            if self.display_names and self.social is not None:
                names = await self.social.names([r.caller for r in missed])
            await conn.send_text(messages.missed_calls([r.to_json(conn.id) for r in missed], total, names))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _change_of(p: Presence) -> dict[str, Any]:
    return messages.presence_change(p.user, p.status, p.in_call, p.last_seen, p.display_name)


def _hold(joining: tuple[Connection, list[tuple[str, str]]], kind: str, text: str) -> None:
    """Keep a frame for a connection until its welcome is sent (`Hub.join`). A join that takes long (a store that
    hangs) while frames keep coming would keep them all: past `_JOIN_WAITING_MAX` the connection is closed with
    1013 once it has its welcome and what was kept (it comes back with a fresh one), and the rest is dropped."""
    conn, waiting = joining
    if len(waiting) < _JOIN_WAITING_MAX:
        waiting.append((kind, text))
    elif len(waiting) == _JOIN_WAITING_MAX:
        log.warning(
            "%s (%s): %d frames came while it joined; closing it after its welcome", conn.id, conn.cid, len(waiting)
        )
        waiting.append((nodeframe.CLOSE, nodeframe.close_text(CloseCode.TRY_AGAIN_LATER, "joining took too long")))


def _welcome_of(cid: str, effects: list[Effect]) -> dict[str, Any] | None:
    """The `welcome` that `effects` send to connection `cid`."""
    for effect in effects:
        if isinstance(effect, Send) and effect.cid == cid and effect.message.get("type") == "welcome":
            return effect.message
    return None


def _presences_in(welcome: dict[str, Any]) -> dict[str, Presence]:
    """What a `welcome` says of the presence of those it lists: online (in a call or not), or seen lately."""
    in_call = set(welcome["inCall"])
    found = {user: Presence(user, "online", in_call=user in in_call) for user in welcome["online"]}
    for seen in welcome["recent"]:
        found[seen["id"]] = Presence(seen["id"], "offline", last_seen=seen["lastSeen"])
    return found
