"""The SDK's composition root: one signaling connection, the calls made over it, and the events an application sees.

Owns the `Signaling` connection, the current call (a user has at most one), the subscribers of `events()` and
`incoming()`, and the reconnect bookkeeping: a call outlives a dropped connection for the server's resume grace,
and after a reconnect the server hands it back (`call-resumed`) or it is over. It decides which frames belong to
which call, answers a second caller with "busy", and takes the server's `call-ended` as the truth about how a call
ended. It also keeps the user's contacts (`contacts` frames, with their presence kept up to date by `presence`
frames) and sends the contact operations, each awaiting the server's answer. It is the Python counterpart of the web
client's `main.js`.

Imports the rest of the SDK and `peercall.protocol` (pure data); must not import the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..core.social import CallsFrom, Directory
from ..protocol.messages import is_valid_id
from .accounts import Accounts, server_health
from .call import Call, CallEnd, CallError, CallPhase, MediaState
from .candidates import CandidatePolicy
from .contacts import (
    MAX_DIRECTORY_PAGE,
    ContactError,
    Contacts,
    DirectoryPage,
    calls_from,
    check_name,
    display_name_of,
    parse_contacts,
    parse_directory,
)
from .events import (
    CallEnded,
    CallPhaseChanged,
    CallResumed,
    Connected,
    ContactsChanged,
    Disconnected,
    Event,
    IncomingCall,
    MissedCalls,
    PeerMediaChanged,
    PresenceChanged,
    ServerError,
)
from .ice import IceConfig, fetch_ice_config, loopback_from_env
from .media import AudioIn, AudioOut, as_sink, as_source
from .signaling import ClientError, Frame, Signaling, SignalingState, StateChange, TokenProvider, check_url
from .video import VideoIn, VideoOut, as_video_sink, as_video_source

log = logging.getLogger("peercall.client")

T = TypeVar("T")

_CALL_FRAMES = frozenset({"call-accept", "call-reject", "offer", "answer", "candidate", "media-state", "hangup"})
RINGING_WAIT = 10.0
"""How long `call()` waits for the server to confirm a call request (`call-ringing`), in seconds."""
RESUME_WAIT = 2.0
"""After a reconnect, how long to wait for the server to hand our call back (`call-resumed`), in seconds."""
ANSWER_WAIT = 10.0
"""How long a contact operation or a directory page waits for the server's answer by default, in seconds."""
CONTACTS_WAIT = 1.0
"""After `welcome`, how long to wait for the `contacts` frame before taking its absence for "all empty", seconds
(the server sends none to a user with no contact, request, block or ring setting)."""
MAX_NAMES_KEPT = 5000
"""Display names `Client.display_name` keeps (the oldest told go first)."""


def _calls_from(value: Any) -> CallsFrom | None:
    try:
        return CallsFrom(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Pending:
    """A contact frame waiting for its answer."""

    kind: str
    user: str | None
    done: Callable[[Contacts], bool]
    answer: asyncio.Future[Contacts]


class Subscription(Generic[T]):
    """An async iterator over what a client publishes from the moment it was made; ends when the client closes.

    Use it in `async for`, or `async with` to unsubscribe early. The client holds it weakly: once nothing else
    refers to it (`break` out of `async for event in client.events()`), it is unsubscribed and freed, so a loop
    left early leaves no queue filling up for nobody. Kept in a variable, it goes on collecting until `close()`.
    At most `maxsize` items wait unread (the oldest are dropped beyond that).
    """

    def __init__(self, owner: weakref.WeakSet[Subscription[T]], maxsize: int = 1000) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        self._maxsize = maxsize
        self._closed = False
        self._behind = False  # dropping items, said once until the reader catches up
        owner.add(self)

    def put(self, item: T | None) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self._maxsize:
            self._queue.get_nowait()
            if not self._behind:
                log.warning("a subscriber fell %d items behind; dropping the oldest", self._maxsize)
            self._behind = True
        elif self._queue.empty():
            self._behind = False
        self._queue.put_nowait(item)

    def close(self) -> None:
        """Unsubscribe: iteration ends once what is queued has been read."""
        if not self._closed:
            self._queue.put_nowait(None)
            self._closed = True
            self._owner.discard(self)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class IncomingCalls:
    """An async iterator over the calls that ring us, each handed to one iterator when it asks for the next.

    A ringing call waits with the client until an iterator takes it: none is held in an iterator nobody reads, so
    `break` out of `async for`, and a later `incoming()` (or the same one iterated again) gets the calls that rang
    meanwhile (those still ringing), oldest first. Iteration ends when the client closes, or at `close()` (also
    `async with`). Made by `Client.incoming()`.
    """

    def __init__(self, owner: weakref.WeakSet[IncomingCalls], take: Callable[[], Call | None]) -> None:
        self._owner = owner  # weakly, as a Subscription: one that nothing refers to any more is gone
        self._take = take
        self._wake = asyncio.Event()
        self._closed = False
        owner.add(self)

    def wake(self) -> None:
        """A call rang, or the client closed: look again."""
        self._wake.set()

    def close(self) -> None:
        """End this iterator (the calls that ring from now on wait for another)."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._owner.discard(self)

    def __aiter__(self) -> IncomingCalls:
        return self

    async def __anext__(self) -> Call:
        while not self._closed:
            call = self._take()
            if call is not None:
                return call
            self._wake.clear()
            await self._wake.wait()
        raise StopAsyncIteration

    async def __aenter__(self) -> IncomingCalls:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A peercall client: connect, call, answer, and follow presence.

    ```python
    async with Client("ws://127.0.0.1:8080/ws", "alice") as client:
        call = await client.call("bob", audio_in="hello.wav", audio_out="reply.wav")
        await call.wait_connected()
        await asyncio.sleep(10)
        print(await call.hangup())          # answered (user-hangup)
    ```

    Args:
        url: the server's WebSocket URL (`ws://host:port/ws`, or `wss://…`; not the web client's `http://` one).
        id: our user id (1-64 of `A-Z a-z 0-9 _ - . @`).
        token: a signed token whose `sub` is `id` (servers with `PEERCALL_AUTH=token`).
        token_provider: gives a new token when called (a function or coroutine function: e.g. `token_file(path)`,
            which rereads a file an external refresher rotates). The client renews its token with it before the
            token expires (`tokenExpiresAt` of `welcome`), and reconnects with a new one when the server refuses
            the old (close 4401). Without `token`, the first token comes from it too.
        password: sign in as `id` with this password (servers with `PEERCALL_AUTH=accounts`): the client makes an
            `Accounts` (kept as `accounts`), gets its tokens from it, renews them, and signs out on `close()`. Not
            with `token_provider`.
        device: this device's id, kept across reconnects (default: one made up for this client).
        ice_loopback: offer 127.0.0.1 as an ICE candidate (two programs on a machine with no other network);
            None: `PEERCALL_ICE_LOOPBACK` decides (default off).
        ssl_context: for `wss://` servers with a private certificate.
        connect_timeout: how long `connect()` keeps trying to reach the server, seconds.
        setup_timeout: how long a call may take from accept to audio before it is hung up (`ice-timeout`).
        min_delay: first reconnect delay, seconds.
        max_delay: largest reconnect delay, seconds.
        candidate_policy: which of the peer's ICE candidates a call may check, and how many (candidates.py); None:
            any address, at most 50 a call. A bot that answers strangers should pass
            `CandidatePolicy.public_service()`, as the echo service does.

    Raises:
        ValueError: `url` is not a `ws://` or `wss://` URL (an `http://` address is refused, with the URL to use),
            `id` or `device` is malformed, or both `password` and `token_provider` are given.
    """

    def __init__(
        self,
        url: str,
        id: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        password: str | None = None,
        device: str | None = None,
        ice_loopback: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        setup_timeout: float = 30.0,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        candidate_policy: CandidatePolicy | None = None,
    ) -> None:
        check_url(url)
        if not is_valid_id(id):
            raise ValueError(f"a user id is 1-64 ASCII letters, digits, '_', '-', '.' or '@', not {id!r}")
        if device is not None and not is_valid_id(device):
            raise ValueError(f"a device id is 1-64 ASCII letters, digits, '_', '-', '.' or '@', not {device!r}")
        self.url = url
        self.id = id
        self.accounts: Accounts | None = None
        """The sign-in made with `password` (None without one)."""
        if password is not None:
            if token_provider is not None:
                raise ValueError("give a password or a token provider, not both")
            self.accounts = Accounts(url, id, password, ssl_context=ssl_context)
            token_provider = self.accounts.token
        self.device = device or f"py-{secrets.token_hex(6)}"
        self.ice_loopback = loopback_from_env() if ice_loopback is None else ice_loopback
        self.connect_timeout = connect_timeout
        self.setup_timeout = setup_timeout
        self.candidate_policy = candidate_policy or CandidatePolicy()
        self._ssl = ssl_context
        self._signaling = Signaling(
            url,
            id,
            on_frame=self._on_frame,
            on_state=self._on_state,
            token=token,
            token_provider=token_provider,
            device=self.device,
            ssl_context=ssl_context,
            min_delay=min_delay,
            max_delay=max_delay,
            on_token_lost=self._token_lost,
        )
        self._online: set[str] = set()
        self._call: Call | None = None
        self._calls: dict[str, Call] = {}
        self._ringing: asyncio.Future[Frame] | None = None
        self._events: weakref.WeakSet[Subscription[Event]] = weakref.WeakSet()  # weakly: see Subscription
        self._incoming: weakref.WeakSet[IncomingCalls] = weakref.WeakSet()
        self._undelivered: list[Call] = []  # calls that rang, not yet handed to an `incoming()` iterator
        self._lost_timer: asyncio.TimerHandle | None = None
        self._resume_timer: asyncio.TimerHandle | None = None
        self._presence_changed = asyncio.Event()
        self._contacts: Contacts | None = None
        self._contacts_changed = asyncio.Event()
        self._contacts_settled = asyncio.Event()  # since the last welcome: a `contacts` frame came, or none will
        self._contacts_timer: asyncio.TimerHandle | None = None
        self._contact_lock = asyncio.Lock()
        self._contact_answer: _Pending | None = None
        self._directory_lock = asyncio.Lock()
        self._directory_answer: asyncio.Future[DirectoryPage] | None = None
        self._names: dict[str, str] = {}  # display names the server told, by user (at most MAX_NAMES_KEPT)
        self._closed = False
        self._connecting = False  # inside connect(): its failure is no end of the iterations, a retry may follow
        self._welcomed = False
        self._sending: set[asyncio.Future[bool]] = set()
        self.last_disconnect: Disconnected | None = None
        """Why the connection last dropped (None if it never did)."""
        self.token_lost: str | None = None
        """Why our token could not be renewed before it expired (None while it could): then, on a server that
        enforces expiry (`/healthz` `authExpiry`), the current call was hung up before the server closed the
        connection."""
        self._token_task: asyncio.Task[None] | None = None
        self.answer_timeout = ANSWER_WAIT
        """How long a contact operation or `directory()` waits for the server's answer, seconds (then it raises
        `ContactError`)."""

    # ---- connection ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> dict[str, Any]:
        """Connect to the server (retrying for up to `connect_timeout`), and stay connected until `close()`.

        When it fails, the client is as it was before: call it again to retry (the `events()` and `incoming()`
        iterators made before go on); after `close()`, make a new `Client`.

        Returns:
            The server's `welcome` frame.

        Raises:
            ConnectError: refused for good (bad id, bad token…), or not reachable within `connect_timeout`.
            SignInError: (a `ConnectError`) with `password`: a wrong id or password (`server_code` `sign-in-failed`), a
                disabled account, too many attempts, or a server without accounts.
            ClientError: the client is connected already, or was closed.
        """
        if self._closed:
            raise ClientError(f"{self.id}: this client was closed; make a new Client to connect again")
        self._connecting = True
        try:
            return await self._signaling.connect(retry_for=self.connect_timeout)
        except BaseException:
            if self.accounts is not None:
                await self.accounts.sign_out()
                self._signaling.token = None  # signed out: the next connect() signs in again for a token
            raise
        finally:
            self._connecting = False

    async def close(self) -> None:
        """Hang up the current call, disconnect, and end every `events()`/`incoming()` iteration. Idempotent."""
        if self._closed:
            return
        call = self._call
        if call is not None and call.active and self._signaling.is_open:
            with contextlib.suppress(ClientError, TimeoutError):
                await call.hangup()
        self._closed = True
        if self._token_task is not None:
            await asyncio.gather(self._token_task, return_exceptions=True)
        self._cancel_resume_timers()
        if self._contacts_timer is not None:
            self._contacts_timer.cancel()
            self._contacts_timer = None
        if self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)
        await self._signaling.close()
        if self.accounts is not None:
            await self.accounts.sign_out()
        for known in {*self._calls.values(), *([call] if call else [])}:
            await known.close()
        for events in list(self._events):
            events.close()
        for incoming in list(self._incoming):
            incoming.close()

    @property
    def token(self) -> str | None:
        """The signaling token in use (the latest renewed one), or None in open mode."""
        return self._signaling.token

    @property
    def token_expires_at(self) -> float | None:
        """When our token expires (Unix seconds), as the server last said (`welcome`, `auth-renewed`), or None."""
        return self._signaling.token_expires_at

    @property
    def renews_token(self) -> bool:
        """Whether the client can renew its token (it has a token provider, or a password)."""
        return self._signaling.token_provider is not None

    @property
    def renewals(self) -> int:
        """How many times the server accepted a renewed token on a live connection."""
        return self._signaling.renewals

    @property
    def connected(self) -> bool:
        """Whether the connection to the server is open right now."""
        return self._signaling.is_open

    @property
    def state(self) -> SignalingState:
        """The connection's state: `connecting`, `connected`, `reconnecting` or `disconnected`."""
        return self._signaling.state

    @property
    def welcome(self) -> dict[str, Any] | None:
        """The server's last `welcome` frame (its version, `ringTimeout`, `resumeGrace`), or None."""
        return self._signaling.welcome

    @property
    def online(self) -> frozenset[str]:
        """The other users online now."""
        return frozenset(self._online)

    def display_name(self, user: str) -> str | None:
        """`user`'s display name as the server last told it (in `welcome`, `presence`, `call-request`, `directory`,
        `missed-calls` or `contacts`), or None."""
        return self._names.get(user)

    @property
    def current_call(self) -> Call | None:
        """The call going on (ringing, connecting or connected), or None."""
        return self._call if self._call is not None and self._call.active else None

    async def wait_online(self, user: str) -> None:
        """Wait until `user` is online (bound it with `asyncio.timeout()` if you like).

        Args:
            user: their id.
        """
        while user not in self._online:
            self._presence_changed.clear()
            await self._presence_changed.wait()

    # ---- contacts -----------------------------------------------------------------------------------------------

    @property
    def contacts(self) -> Contacts | None:
        """Our contacts, requests, blocks and ring setting as the server last told them, with the contacts'
        presence kept up to date; None before we know them (just after connecting: `wait_contacts()` waits), or
        if the server has no contacts."""
        return self._contacts

    async def wait_contacts(self, condition: Callable[[Contacts], bool] | None = None) -> Contacts:
        """Wait until we know our contacts (and, with `condition`, until it holds of them); bound it with
        `asyncio.timeout()` if you like.

        Args:
            condition: e.g. `lambda c: c.has_incoming("bob")`.

        Returns:
            The snapshot that satisfied it.

        Raises:
            ContactError: the server has no contacts.
        """
        self._require_contacts()
        await self._contacts_settled.wait()
        while self._contacts is None or (condition is not None and not condition(self._contacts)):
            self._contacts_changed.clear()
            await self._contacts_changed.wait()
        return self._contacts

    async def add_contact(self, user: str, name: str | None = None) -> Contacts:
        """Ask `user` to be our contact, or accept their request (this also lifts a block of ours on them).

        Nothing tells whether `user` exists: the request waits in `outgoing` until they answer or it expires.

        Args:
            user: their id.
            name: our own name for them (1-64 characters), or None.

        Returns:
            Our contacts after the change.

        Raises:
            ValueError: `user` or `name` is malformed, or is ourselves.
            ContactError: refused (`too-many`: 500 contacts or 100 requests waiting; `rate-limited`…), or no answer
                within `answer_timeout`.
        """
        data = None if name is None else {"name": check_name(name)}
        return await self._contact_frame(
            "contact-add", user, data, lambda c: c.is_contact(user) or c.has_outgoing(user)
        )

    async def decline_contact(self, user: str) -> Contacts:
        """Decline `user`'s contact request (they are not told). Raises as `add_contact()`."""
        return await self._contact_frame("contact-decline", user, None, lambda c: not c.has_incoming(user))

    async def remove_contact(self, user: str) -> Contacts:
        """No longer be contacts with `user` (on both sides), or withdraw our request to them."""
        return await self._contact_frame(
            "contact-remove", user, None, lambda c: not c.is_contact(user) and not c.has_outgoing(user)
        )

    async def rename_contact(self, user: str, name: str | None) -> Contacts:
        """Give contact `user` our own name for them (1-64 characters), or none (None)."""
        checked = check_name(name)

        def renamed(contacts: Contacts) -> bool:
            contact = contacts.contact(user)
            return contact is None or contact.name == checked

        return await self._contact_frame("contact-rename", user, {"name": checked}, renamed)

    async def block(self, user: str) -> Contacts:
        """Block `user`: their calls end as if we were offline, their requests vanish, they see no presence of ours,
        and nothing of theirs reaches us. They are not told."""
        return await self._contact_frame("block", user, None, lambda c: c.is_blocked(user))

    async def unblock(self, user: str) -> Contacts:
        """Lift our block on `user`: what was there before comes back."""
        return await self._contact_frame("unblock", user, None, lambda c: not c.is_blocked(user))

    async def set_calls_from(self, setting: CallsFrom | str | None) -> Contacts:
        """Set who may ring us: `everyone`, `contacts`, `nobody` (do not disturb), or None (`default`) for the
        server's default. A call the setting refuses never rings; its caller sees a call nobody answers."""
        value = calls_from(setting)
        data = {"callsFrom": value.value if value is not None else None}
        return await self._contact_frame("settings", None, data, lambda c: c.calls_from == value)

    async def directory(self, prefix: str = "", *, after: str | None = None, limit: int = 50) -> DirectoryPage:
        """One page of who is online, on servers that list everyone (`PEERCALL_DIRECTORY=all`).

        Args:
            prefix: only ids that start with this.
            after: the `next` of the previous page (None: the first page).
            limit: at most this many users (1-200).

        Returns:
            Users in id order, and the `after` of the next page (None after the last).

        Raises:
            ValueError: a malformed `prefix`, `after` or `limit`.
            ContactError: `not-allowed` (the server lists contacts only), `rate-limited`, or no answer within
                `answer_timeout`.
        """
        if prefix and not (len(prefix) <= 64 and is_valid_id(prefix)):
            raise ValueError(f"an id prefix is up to 64 ASCII letters, digits, '_', '-', '.' or '@', not {prefix!r}")
        if after is not None and not is_valid_id(after):
            raise ValueError(f"after is a user id (a page's next), not {after!r}")
        if not 1 <= limit <= MAX_DIRECTORY_PAGE:
            raise ValueError(f"a directory page holds 1-{MAX_DIRECTORY_PAGE} users, not {limit}")
        self._require_contacts()
        data: dict[str, Any] = {"limit": limit}
        if prefix:
            data["q"] = prefix
        if after is not None:
            data["after"] = after
        async with self._directory_lock:
            answer: asyncio.Future[DirectoryPage] = asyncio.get_running_loop().create_future()
            self._directory_answer = answer
            try:
                return await self._answer({"type": "directory", "data": data}, answer)
            finally:
                self._directory_answer = None

    async def _contact_frame(
        self, kind: str, user: str | None, data: Any, done: Callable[[Contacts], bool]
    ) -> Contacts:
        """Send a contact frame; the first `contacts` frame after it that shows it `done` (a `contacts` frame that
        the server sent for another reason, before our frame was handled, does not), or the error that refuses it.
        """
        if user is not None:
            if not is_valid_id(user):
                raise ValueError(f"a user id is 1-64 ASCII letters, digits, '_', '-', '.' or '@', not {user!r}")
            if user == self.id:
                raise ValueError(f"{kind}: {user} is yourself")
        self._require_contacts()
        frame: dict[str, Any] = {"type": kind}
        if user is not None:
            frame["to"] = user
        if data is not None:
            frame["data"] = data
        async with self._contact_lock:  # one at a time, so that an error frame's `ref` and `to` tell whose it is
            answer: asyncio.Future[Contacts] = asyncio.get_running_loop().create_future()
            self._contact_answer = _Pending(kind, user, done, answer)
            try:
                return await self._answer(frame, answer)
            finally:
                self._contact_answer = None

    async def _answer(self, frame: Frame, answer: asyncio.Future[T]) -> T:
        if not await self._signaling.send(frame):
            raise ContactError(f"cannot send {frame['type']}: not connected to the server")
        try:
            async with asyncio.timeout(self.answer_timeout):  # (not wait_for: see `call`)
                return await asyncio.shield(answer)
        except TimeoutError:
            wait = self.answer_timeout
            raise ContactError(f"the server did not answer {frame['type']} within {wait:g}s") from None

    def _require_contacts(self) -> None:
        welcome = self.welcome
        if welcome is not None and "contacts" not in (welcome.get("features") or ()):
            raise ContactError(f"the server at {self.url} has no contacts (its welcome lists no 'contacts' feature)")

    def _on_contacts(self, frame: Frame) -> None:
        contacts = parse_contacts(frame)
        self._settle_contacts(contacts)
        pending = self._contact_answer
        if pending is not None and not pending.answer.done() and pending.done(contacts):
            pending.answer.set_result(contacts)

    def _settle_contacts(self, contacts: Contacts) -> None:
        if self._contacts_timer is not None:
            self._contacts_timer.cancel()
            self._contacts_timer = None
        self._contacts_settled.set()
        previous, self._contacts = self._contacts, contacts
        if contacts != previous:
            self._contacts_changed.set()
            self._publish(ContactsChanged(contacts, previous))

    def _no_contacts_frame(self, welcome: Frame) -> None:
        """No `contacts` frame followed `welcome`: we have no contact, request, block or ring setting."""
        self._contacts_timer = None
        directory = Directory.CONTACTS if welcome.get("directory") == "contacts" else Directory.ALL
        default = _calls_from(welcome.get("defaultCallsFrom"))
        if default is None and self._contacts is not None:  # a server that predates welcome's defaultCallsFrom
            default = self._contacts.default_calls_from
        self._settle_contacts(Contacts(default_calls_from=default, directory=directory))

    def _contact_presence(self, user: str, change: dict[str, Any]) -> None:
        contacts = self._contacts
        if contacts is None:
            return
        last_seen = change.get("lastSeen")
        updated = contacts.with_presence(
            user,
            change.get("status") == "online",
            change.get("inCall") is True,
            float(last_seen) if isinstance(last_seen, int | float) and not isinstance(last_seen, bool) else None,
        )
        if updated is not contacts:
            self._contacts = updated
            self._contacts_changed.set()
            self._publish(ContactsChanged(updated, contacts))

    # ---- subscriptions ----------------------------------------------------------------------------------------

    def events(self) -> Subscription[Event]:
        """Everything that happens from now on: connection, presence, calls, server errors.

        Returns:
            An async iterator of `Event`s (`async for event in client.events(): ...`); it ends when the client
            closes, or at `close()` on it (`async with`). A `break` out of `async for event in client.events()`
            unsubscribes (nothing refers to it any more); one kept in a variable goes on collecting events, to be
            read by the next `async for` over it, until its `close()`.
        """
        return Subscription(self._events)

    def incoming(self) -> IncomingCalls:
        """Incoming calls, ringing (phase `incoming`): `accept()` or `reject()` each.

        A call waits with the client until an iterator asks for the next one, so calls that rang before you started
        iterating (or while you were not: after a `break`) are delivered first, oldest first, if they still ring.
        Each call goes to one iterator, if several are iterated at once.

        Returns:
            An async iterator of `Call`s; it ends when the client closes, or at its `close()` (`async with`).
        """
        return IncomingCalls(self._incoming, self._take_ringing)

    def _take_ringing(self) -> Call | None:
        """The oldest call that rang and still rings, not yet handed to an `incoming()` iterator."""
        while self._undelivered:
            call = self._undelivered.pop(0)
            if call.active and call.phase is CallPhase.INCOMING:
                return call
        return None

    # ---- calls ------------------------------------------------------------------------------------------------

    async def call(
        self,
        user: str,
        audio_in: AudioIn = None,
        audio_out: AudioOut = None,
        *,
        video_in: VideoIn = None,
        video_out: VideoOut = None,
    ) -> Call:
        """Call `user`: fetch the ICE servers, send `call-request`, and return once the server says it rings.

        Args:
            user: who to call.
            audio_in: what to send (a track, a file name, an iterator of 48 kHz chunks; None: silence).
            audio_out: what to do with what arrives (a sink, a file name, `fn(samples, rate)`; None: drop it).
            video_in: video to send (a video track, or a file name, looped; None: no video).
            video_out: what to do with the peer's video (a video sink, a file name to record, `fn(frame)`; None:
                decline it).

        Returns:
            The call, ringing (`requesting`), or already ended if `user` is not online (`call.end.outcome` is
            `unavailable`) or busy. `await call.wait_connected()` waits for the answer.

        Raises:
            CallError: we already have a call, `user` is ourselves or malformed, the server refused the request
                (`in-call`, `rate-limited`), or we are not connected.
            OSError: a file cannot be opened.
        """
        if not is_valid_id(user):
            raise CallError(f"cannot call {user!r}: a user id is 1-64 ASCII letters, digits, '_', '-', '.' or '@'")
        if user == self.id:
            raise CallError("cannot call yourself")
        if self.current_call is not None:
            current = self.current_call
            raise CallError(f"you are already in call {current.id} with {current.peer}; hang up first")
        source, sink = as_source(audio_in), None  # files open (or fail) before anything is sent
        video_source = None
        try:
            sink = as_sink(audio_out)
            video_source = as_video_source(video_in)
            video_sink = as_video_sink(video_out)
        except BaseException:  # close what opened: a WAV left to the garbage collector stays empty until then
            for track in (source, video_source):
                if track is not None:
                    track.stop()
            if sink is not None:
                await sink.stop()
            raise
        call = self._new_call(user, "outgoing", None)
        self._ringing = asyncio.get_running_loop().create_future()
        try:
            if not await call._request(source, sink, video_source, video_sink):
                await call.close()
                raise CallError(f"cannot call {user}: not connected to the server")
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result and drops a cancel
                # that comes as the future completes (a SIGTERM as the server answers left the call ringing)
                async with asyncio.timeout(RINGING_WAIT):
                    answer = await asyncio.shield(self._ringing)
            except TimeoutError:
                await call.hangup()
                raise CallError(f"the server did not confirm the call to {user}") from None
        except asyncio.CancelledError:
            call._spawn(call.hangup())  # the caller gave up: do not leave the call ringing
            raise
        finally:
            self._ringing = None
        if answer.get("type") == "error" and answer.get("code") != "unavailable":
            await call.close()
            raise CallError(f"the server refused the call to {user}: {answer.get('message')}")
        return call

    def _new_call(self, peer: str, direction: str, call_id: str | None) -> Call:
        call = Call(
            peer=peer,
            direction=direction,
            call_id=call_id,
            send=self._signaling.send,
            get_ice=self._fetch_ice,
            on_change=self._call_changed,
            on_end=self._call_ended,
            on_media=self._peer_media_changed,
            ice_loopback=self.ice_loopback,
            setup_timeout=self.setup_timeout,
            candidate_policy=self.candidate_policy,
        )
        self._call = call
        if call_id is not None:
            self._calls[call_id] = call
        return call

    async def _fetch_ice(self) -> IceConfig:
        return await fetch_ice_config(self.url, self.id, self.token, self._ssl)

    def _call_changed(self, call: Call, phase: CallPhase, previous: CallPhase) -> None:
        self._publish(CallPhaseChanged(call, phase, previous))

    def _peer_media_changed(self, call: Call, media: MediaState) -> None:
        self._publish(PeerMediaChanged(call, media))

    def _call_ended(self, call: Call, end: CallEnd) -> None:
        self._publish(CallEnded(call, end))
        if call.id is not None:
            self._calls.pop(call.id, None)

    def _publish(self, event: Event) -> None:
        for subscription in list(self._events):
            subscription.put(event)

    # ---- frames from the server ------------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        self._learn_names(kind, frame)
        if kind == "welcome":
            self._on_welcome(frame)
        elif kind == "presence":
            self._on_presence(frame)
        elif kind == "call-request":
            self._on_call_request(frame)
        elif kind in _CALL_FRAMES:
            if kind == "call-accept":
                self._glare(frame)
            call = self._call_for(frame.get("callId"), frame.get("from"))
            if call is not None:
                call.deliver(frame)
            elif kind == "offer" and isinstance(frame.get("from"), str):
                # The peer thinks a call is still going (it missed our hangup): tell it there is none.
                self._spawn_send({"type": "hangup", "to": frame["from"], "callId": frame.get("callId")})
        elif kind == "call-ringing":
            if self._ringing is not None and not self._ringing.done() and self._call is not None:
                if frame.get("to") == self._call.peer and isinstance(frame.get("callId"), str):
                    self._call.adopt_id(frame["callId"])
                    self._calls[frame["callId"]] = self._call
                    self._ringing.set_result(frame)
        elif kind == "call-ended":
            call = self._calls.get(str(frame.get("callId")))
            if call is None and self._call is not None and self._call.id == frame.get("callId"):
                call = self._call
            if call is not None:
                call.server_ended(frame.get("outcome"), frame.get("reason"))
        elif kind == "call-resumed":
            self._on_call_resumed(frame)
        elif kind == "contacts":
            self._on_contacts(frame)
        elif kind == "directory":
            if self._directory_answer is not None and not self._directory_answer.done():
                self._directory_answer.set_result(parse_directory(frame))
        elif kind == "missed-calls":
            calls = frame.get("calls")
            callers = {c.get("caller") for c in calls if isinstance(c, dict)} if isinstance(calls, list) else set()
            names = {u: n for u in callers if isinstance(u, str) and (n := self._names.get(u)) is not None}
            self._publish(MissedCalls(calls if isinstance(calls, list) else [], names))
        elif kind == "error":
            self._on_error(frame)

    def _learn_names(self, kind: object, frame: Frame) -> None:
        """Keep the display names `frame` carries (docs/protocol.md, "Display names")."""
        found: list[tuple[object, str | None]] = []
        if kind in ("welcome", "missed-calls"):
            names = frame.get("displayNames")
            if isinstance(names, dict):
                found = [(user, display_name_of(names, user)) for user in names]
        elif kind == "presence":
            changes = frame.get("changes")
            for change in changes if isinstance(changes, list) else [frame]:
                if isinstance(change, dict) and change.get("status") == "online":
                    found.append((change.get("id"), display_name_of(change)))
        elif kind == "call-request":
            found = [(frame.get("from"), display_name_of(frame))]
        elif kind in ("directory", "contacts"):
            lists = [frame.get("users")] if kind == "directory" else [frame.get("contacts"), frame.get("incoming")]
            for items in lists:
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict):
                        found.append((item.get("id"), display_name_of(item)))
        for user, name in found:
            if isinstance(user, str) and name is not None:
                self._names.pop(user, None)
                self._names[user] = name
                if len(self._names) > MAX_NAMES_KEPT:
                    del self._names[next(iter(self._names))]

    def _glare(self, frame: Frame) -> None:
        """We called someone who was calling us: the server joined the two requests into their call, and tells us
        with `call-accept` (we are the polite side) instead of `call-ringing`."""
        call, call_id = self._call, frame.get("callId")
        pending = self._ringing is not None and not self._ringing.done()
        if (
            pending
            and call is not None
            and call.id is None
            and frame.get("from") == call.peer
            and isinstance(call_id, str)
        ):
            call.adopt_id(call_id)
            self._calls[call_id] = call
            assert self._ringing is not None
            self._ringing.set_result(frame)

    def _on_welcome(self, frame: Frame) -> None:
        online = frame.get("online")
        previous = set(self._online)
        self._online = {u for u in online if isinstance(u, str) and u != self.id} if isinstance(online, list) else set()
        self._presence_changed.set()
        reconnected, self._welcomed = self._welcomed, True
        if self._contacts_timer is not None:
            self._contacts_timer.cancel()
            self._contacts_timer = None
        if "contacts" in (frame.get("features") or ()):
            self._contacts_settled.clear()
            loop = asyncio.get_running_loop()
            self._contacts_timer = loop.call_later(CONTACTS_WAIT, self._no_contacts_frame, frame)
        self._publish(Connected(frame, frozenset(self._online), reconnected))
        for user in sorted(previous ^ self._online):
            self._publish(PresenceChanged(user, user in self._online))
        if self.current_call is not None and self._lost_timer is not None:
            self._lost_timer.cancel()
            self._lost_timer = None
            # The server should hand the call back at once (`call-resumed`); if not, it is over.
            loop = asyncio.get_running_loop()
            self._resume_timer = loop.call_later(RESUME_WAIT, self._resume_timed_out)

    def _on_presence(self, frame: Frame) -> None:
        changes = frame.get("changes")
        items = changes if isinstance(changes, list) else [frame]
        for change in items:
            if not isinstance(change, dict):
                continue
            user, status = change.get("id"), change.get("status")
            if not isinstance(user, str) or user == self.id:
                continue
            self._contact_presence(user, change)
            online = status == "online"
            if online == (user in self._online):
                continue
            if online:
                self._online.add(user)
            else:
                self._online.discard(user)
            self._publish(PresenceChanged(user, online))
        self._presence_changed.set()

    def _on_call_request(self, frame: Frame) -> None:
        peer, call_id = frame.get("from"), frame.get("callId")
        if not isinstance(peer, str) or not isinstance(call_id, str):
            return
        current = self.current_call
        if current is not None:
            if current.peer == peer and current.id == call_id:
                # A device that reconnected while the call rings is rung again: the same call.
                self._cancel_resume_timers()
                return
            if current.peer == peer and current.phase is CallPhase.REQUESTING:
                log.info("%s is calling us while we call them; waiting for the server", peer)
                return
            log.info("busy: declined a call from %s", peer)
            self._spawn_send({"type": "call-reject", "to": peer, "callId": call_id, "data": {"reason": "busy"}})
            return
        call = self._new_call(peer, "incoming", call_id)
        self._publish(IncomingCall(call, display_name_of(frame)))
        self._undelivered = [c for c in self._undelivered if c.active] + [call]
        for iterator in list(self._incoming):
            iterator.wake()

    def _on_call_resumed(self, frame: Frame) -> None:
        call = self._call_for(frame.get("callId"), frame.get("peer"))
        if call is not None:
            self._cancel_resume_timers()
            if isinstance(frame.get("callId"), str):
                call.adopt_id(frame["callId"])
            log.info("call %s with %s resumed (%s)", frame.get("callId"), frame.get("peer"), frame.get("state"))
            call.deliver(frame)
            self._publish(CallResumed(call))
        elif isinstance(frame.get("peer"), str):
            log.info("the server resumed call %s, which we no longer have: hanging up", frame.get("callId"))
            self._spawn_send({"type": "hangup", "to": frame["peer"], "callId": frame.get("callId")})

    def _on_error(self, frame: Frame) -> None:
        code, ref = str(frame.get("code")), frame.get("ref")
        self._publish(ServerError(code, str(frame.get("message")), ref if isinstance(ref, str) else None))
        pending = self._contact_answer
        if pending is not None and ref == pending.kind and frame.get("to") in (None, pending.user):
            if not pending.answer.done():
                pending.answer.set_exception(ContactError(f"{ref} refused: {code}: {frame.get('message')}", code))
            return
        if ref == "directory" and self._directory_answer is not None and not self._directory_answer.done():
            self._directory_answer.set_exception(
                ContactError(f"directory refused: {code}: {frame.get('message')}", code)
            )
            return
        if ref == "call-request" and self._ringing is not None and not self._ringing.done():
            call = self._call
            if call is not None and frame.get("to") == call.peer:
                if isinstance(frame.get("callId"), str) and code == "unavailable":
                    call.adopt_id(frame["callId"])
                    self._calls[frame["callId"]] = call
                self._ringing.set_result(frame)
            return
        if code == "not-in-call" and ref != "media-state":  # a media-state raced the end: call-ended says it
            call = self._call_for(frame.get("callId"), frame.get("to"))
            if call is not None and call.active:
                # The server has no such call (any more): e.g. it ended while we were away.
                call.signaling_lost()

    def _call_for(self, call_id: Any, peer: Any) -> Call | None:
        """The active call that a frame with this `callId` from (or about) `peer` belongs to, if any."""
        call = self._call
        if call is None or not call.active or peer != call.peer:
            return None
        if call_id is None or call.id is None or call_id == call.id:
            return call
        return None

    def _end_subscriptions(self) -> None:
        call = self.current_call
        if call is not None:
            call.signaling_lost()
        for events in list(self._events):
            events.close()
        for incoming in list(self._incoming):
            incoming.close()

    def _spawn_send(self, frame: Frame) -> None:
        task = asyncio.ensure_future(self._signaling.send(frame))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    # ---- reconnects -------------------------------------------------------------------------------------------

    async def _token_lost(self, why: str) -> None:
        """Our token expires for good in a moment (Signaling's `on_token_lost`), the connection still open."""
        self.token_lost = why
        if self._token_task is None or self._token_task.done():
            # Its own task: the connection's renewal task, which tells us, is cancelled when the connection closes.
            self._token_task = asyncio.create_task(self._hang_up_before_expiry(why))

    async def _hang_up_before_expiry(self, why: str) -> None:
        call = self.current_call
        if call is None or self._closed:
            log.warning("%s: %s", self.id, why)
            return
        health = await server_health(self.url, self._ssl, http_timeout=1.0) or {}
        enforced = health.get("authExpiry")
        if enforced is None:  # a server that does not say: its mode's default (and when it cannot be asked: enforce)
            enforced = "ignore" if health.get("auth") == "token" else "enforce"
        if enforced != "enforce":
            log.warning("%s: %s; the server keeps the connection (PEERCALL_AUTH_EXPIRY=ignore)", self.id, why)
            return
        log.warning(
            "%s: %s; hanging up the call with %s before the server closes the connection", self.id, why, call.peer
        )
        with contextlib.suppress(ClientError, TimeoutError):
            await call.hangup()

    def _on_state(self, change: StateChange) -> None:
        # One Disconnected per lost connection (the retries that follow say nothing more), and one when the client
        # stops for good while reconnecting (refused, or closed by us).
        lost = change.previous is SignalingState.CONNECTED and change.state is not SignalingState.CONNECTED
        ended = change.previous is SignalingState.RECONNECTING and change.state is SignalingState.DISCONNECTED
        if lost or ended:
            self.last_disconnect = Disconnected(
                change.state, change.reason, change.code, change.retry_in, change.terminal
            )
            self._publish(self.last_disconnect)
        if self._closed:
            return
        if change.state is SignalingState.DISCONNECTED and change.terminal and not self._connecting:
            # Refused for good (replaced, bad token…): nothing more will come; end the iterations.
            self._end_subscriptions()
        call = self.current_call
        if change.state is SignalingState.DISCONNECTED and call is not None:
            call.signaling_lost()
        elif change.state is SignalingState.RECONNECTING and call is not None and self._lost_timer is None:
            # The audio is peer-to-peer and goes on; the server keeps the call for us for its resume grace.
            grace = float((self.welcome or {}).get("resumeGrace") or 0)
            self._cancel_resume_timers()
            self._lost_timer = asyncio.get_running_loop().call_later(grace + 1, self._lost_timed_out)

    def _lost_timed_out(self) -> None:
        self._lost_timer = None
        call = self.current_call
        if call is not None and not self._signaling.is_open:
            log.info("the connection did not come back within the resume grace; call %s is lost", call.id)
            call.signaling_lost()

    def _resume_timed_out(self) -> None:
        self._resume_timer = None
        call = self.current_call
        if call is not None:
            log.info("reconnected, but the server did not hand call %s back: it is over", call.id)
            call.signaling_lost()

    def _cancel_resume_timers(self) -> None:
        for timer in (self._lost_timer, self._resume_timer):
            if timer is not None:
                timer.cancel()
        self._lost_timer = self._resume_timer = None
