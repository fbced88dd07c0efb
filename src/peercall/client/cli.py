"""The SDK's commands: `peercall call`, `answer`, `echo`, `audio-check` and `contacts …` (their options are in
peercall/cli.py).

Glue only: turns parsed options into `Client`, `media`, `run_echo` and `audio_check` calls, prints what happens, and
returns an exit status (peercall/cli.py `SDK_EXIT_STATUSES`, which --help shows; the same for every command: 0 done
as asked, 1 the call did not happen or did not end well, the check failed, the server refused us or an operation, 2
a usage error or a server that cannot be reached). Stops cleanly on Ctrl-C and SIGTERM: a call is hung up first.
Imports the SDK; must not import the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiortc import MediaStreamTrack

from . import media, video
from .accounts import SignInError, TokenProvider, server_auth_mode, token_file
from .call import Call, CallEndedError, CallError, CallPhase
from .client import Client
from .contacts import ContactError, Contacts, DirectoryPage
from .echo import echo_policy, run_echo
from .events import CallPhaseChanged, PeerMediaChanged
from .signaling import ClientError, ConnectError, check_url

T = TypeVar("T")

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
CONNECTING_NOTICE = 1.0
"""After this many seconds still connecting, the commands say so (on stderr) and for how long they keep trying."""


def default_url() -> str:
    """`PEERCALL_URL`, or the local server's default address."""
    return os.environ.get("PEERCALL_URL") or DEFAULT_URL


def default_id() -> str:
    """`PEERCALL_ID`, or the login name made into a valid id, or `python`."""
    if os.environ.get("PEERCALL_ID"):
        return os.environ["PEERCALL_ID"]
    with contextlib.suppress(Exception):
        name = re.sub(r"[^A-Za-z0-9_.@-]", "", getpass.getuser())[:64]
        if name:
            return name
    return "python"


def _say(text: str) -> None:
    print(text, flush=True)


def _ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not str(args.url).startswith("wss:"):
        return None
    context = ssl.create_default_context()
    if getattr(args, "insecure", False):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def token(args: argparse.Namespace) -> str | None:
    """The token to sign in with: `--token-file`, `--token`, `$PEERCALL_TOKEN_FILE`, `$PEERCALL_TOKEN`, in that order.

    A token on the command line is visible to every user of the machine (`ps`); a file or the environment is not.

    Raises:
        ValueError: the token file cannot be read, or is empty.
    """
    path = getattr(args, "token_file", None)
    text = getattr(args, "token", None)
    if not path and not text:
        path, text = os.environ.get("PEERCALL_TOKEN_FILE"), os.environ.get("PEERCALL_TOKEN")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {path}: {exc.strerror}") from None
        if not text:
            raise ValueError(f"the token file {path} is empty")
    return text or None


def token_provider(args: argparse.Namespace) -> TokenProvider | None:
    """A provider that rereads the token file (`--token-file`, else `$PEERCALL_TOKEN_FILE` when no `--token`), so
    that the client renews its token from it as an external refresher rotates it; None without a token file."""
    path = getattr(args, "token_file", None)
    if not path and not getattr(args, "token", None):
        path = os.environ.get("PEERCALL_TOKEN_FILE")
    return token_file(path) if path else None


def password(args: argparse.Namespace) -> str | None:
    """The password to sign in with (accounts mode): `--password-file`, `$PEERCALL_PASSWORD_FILE`, then
    `$PEERCALL_PASSWORD`. Never an option's value: the command line is visible to every user of the machine.

    Raises:
        ValueError: the password file cannot be read, or is empty.
    """
    path = getattr(args, "password_file", None) or os.environ.get("PEERCALL_PASSWORD_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read the password file {path}: {exc.strerror}") from None
        if not text:
            raise ValueError(f"the password file {path} is empty")
        return text
    return os.environ.get("PEERCALL_PASSWORD") or None


async def credentials(args: argparse.Namespace) -> dict[str, Any]:
    """How to authenticate to the server, as `Client` keyword arguments: a password when the server is in accounts
    mode (as `/healthz` says) and we have one; else the token (renewed from its file, if it came from one).

    Raises:
        ValueError: a file cannot be read; or the server is in accounts mode and we have neither password nor token.
    """
    secret, provider = password(args), token_provider(args)
    fixed = None if provider else token(args)
    if secret is None and (provider or fixed):
        return {"token": fixed, "token_provider": provider}
    mode = await server_auth_mode(args.url, _ssl(args))
    if mode == "token" and not (provider or fixed):
        raise ValueError("this server requires a token: give --token, --token-file or $PEERCALL_TOKEN")
    if mode == "accounts":
        if secret is None:
            raise ValueError(
                f"{args.url} signs in with accounts: give the password in --password-file or $PEERCALL_PASSWORD"
            )
        return {"password": secret}
    if secret is not None and mode is not None:
        logging.getLogger("peercall.client").warning("the server is in %s mode: the password is not used", mode)
    return {"token": fixed, "token_provider": provider}


async def _client(args: argparse.Namespace, user: str, **kwargs: Any) -> Client:
    check_url(args.url)
    return Client(
        args.url,
        user,
        **await credentials(args),
        ice_loopback=True if args.ice_loopback else None,
        ssl_context=_ssl(args),
        connect_timeout=args.connect_timeout,
        **kwargs,
    )


@contextlib.asynccontextmanager
async def _connected(args: argparse.Namespace, user: str) -> AsyncIterator[Client]:
    """A connected client for the command; says so on stderr when connecting takes more than a second."""
    client = await _client(args, user)
    wait = client.connect_timeout
    notice = asyncio.get_running_loop().call_later(
        CONNECTING_NOTICE,
        lambda: print(f"connecting to {args.url} (retrying for {wait:g} s)", file=sys.stderr, flush=True),
    )
    try:
        try:
            await client.connect()
        finally:
            notice.cancel()
        yield client
    finally:
        await client.close()


def _warn_short_token(client: Client, duration: float | None) -> None:
    """Warn when the token expires before `--duration` ends and nothing can renew it."""
    expires = client.token_expires_at
    if duration is None or expires is None or client.renews_token:
        return
    left = expires - time.time()
    if left < duration:
        print(
            f"warning: the token expires in {max(0.0, left):.0f} s, before --duration {duration:g} ends, and cannot "
            "be renewed (give --token-file, which is reread, to renew it)",
            file=sys.stderr,
            flush=True,
        )


def _token_lost(client: Client) -> bool:
    """Say (on stderr) that the token could not be renewed, if so."""
    if client.token_lost is None:
        return False
    print(f"the call was hung up: {client.token_lost}", file=sys.stderr, flush=True)
    return True


def _source(args: argparse.Namespace) -> MediaStreamTrack:
    if args.play and args.tone:
        raise ValueError("give --play or --tone, not both")
    if args.play:
        return media.FileSource(args.play)
    if args.tone:
        return media.Tone(args.tone)
    return media.Silence()


def _sink(args: argparse.Namespace, n: int = 1) -> media.Sink:
    return media.record(numbered(args.record, n)) if args.record else media.Discard()


def numbered(path: str, n: int) -> str:
    """The `n`th call's file of `--record`/`--record-video`: `in.wav` for the first, then `in-2.wav`, `in-3.wav`…"""
    if n <= 1:
        return path
    file = Path(path)
    return str(file.with_name(f"{file.stem}-{n}{file.suffix}"))


def _video(args: argparse.Namespace, n: int = 1) -> dict[str, Any]:
    """`video_in` and `video_out` for `--video` and `--record-video` (files open, or fail, at once)."""
    return {
        "video_in": video.VideoFileSource(args.video) if args.video else None,
        "video_out": video.VideoRecorder(numbered(args.record_video, n)) if args.record_video else None,
    }


def _received(call: Call, packets: int | None) -> str:
    """`; N packets received` (and `, M video frames`) for the line that says how a call ended."""
    text = f"; {packets} packets received" if packets is not None else ""
    if call.video_sink is not None:
        text += f"{',' if text else ';'} {call.video_sink.frames} video frames received"
    return text


def _follow(client: Client) -> asyncio.Task[None]:
    """Print every phase change of the client's calls, and what the peer says of its media."""
    events = client.events()

    async def printer() -> None:
        async with events:
            async for event in events:
                if isinstance(event, CallPhaseChanged) and event.phase is not CallPhase.ENDED:
                    _say(f"{event.call.peer}: {event.phase.value}")
                elif isinstance(event, PeerMediaChanged):
                    said = event.media
                    extra = (", camera on" if said.camera else "") + (", sharing a screen" if said.screen else "")
                    _say(f"{event.call.peer}: {'muted' if said.muted else 'unmuted'}{extra}")

    return asyncio.create_task(printer())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _talk(call: Call, source: MediaStreamTrack, duration: float | None) -> None:
    """Keep a connected call going: for `duration` seconds, else until the played file ends, else until it ends."""
    waits: list[Awaitable[Any]] = [call.wait_ended()]
    if duration is not None:
        waits.append(asyncio.sleep(duration))
    elif isinstance(source, media.PcmSource) and not isinstance(source, media.Silence):
        waits.append(source.finished.wait())
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def call_command(args: argparse.Namespace) -> int:
    """`peercall call USER`: call, talk, hang up.

    Args:
        args: the parsed options.

    Returns:
        SDK_EXIT_STATUSES["call"] (peercall/cli.py); `args.interrupted` is the status should Ctrl-C or SIGTERM stop it.
    """
    args.interrupted = 1  # stopped while it rings: not answered
    opened: list[Any] = []  # stopped on every path: a WAV left to the garbage collector may never be complete
    try:
        source = _opened(opened, _source(args))
        sink = _opened(opened, _sink(args))
        videos = {kind: _opened(opened, made) for kind, made in _video(args).items()}
        async with _connected(args, args.id or default_id()) as client:
            _warn_short_token(client, args.duration)
            follower = _follow(client)
            try:
                _say(f"calling {args.user} as {client.id} on {args.url}")
                call = await client.call(args.user, audio_in=source, audio_out=sink, **videos)
                try:
                    await call.wait_connected()
                except CallEndedError as exc:
                    _say(f"the call did not connect: {exc.end}" + (f"; {call.hint}" if call.hint else ""))
                    return 1
                args.interrupted = 0  # answered: Ctrl-C hangs up
                await _talk(call, source, args.duration)
                end = await call.hangup()
                stats = await call.stats() if call.pc else None
                _say(f"call ended: {end}" + _received(call, stats.packets_received if stats else None))
                if _token_lost(client):
                    return 1
                return 0 if end.outcome == "answered" and end.reason != "signaling-lost" else 1
            finally:
                await _stop(follower)
    finally:
        await _release(opened)


def _opened(opened: list[Any], made: T) -> T:
    """Keep `made` (a source or a sink, or None) in `opened`, to be released by `_release()`."""
    if made is not None:
        opened.append(made)
    return made


async def _release(opened: list[Any]) -> None:
    """Stop the sources and sinks of a call (again: each stop is idempotent), and say which recording got no audio.

    A `--record` WAV that no audio reached is left a valid WAV of 0 frames, and said so: a script finds the file it
    asked for, and a user learns why it is silent (the call ended, or never connected, before any audio came).
    """
    for made in opened:
        if isinstance(made, media.TrackSink):
            await made.stop()
            if isinstance(made, media.WavRecorder) and made.frames == 0:
                _say(f"nothing was recorded: {made.path} holds no audio (0 frames)")
        elif isinstance(made, MediaStreamTrack):
            made.stop()


async def answer_command(args: argparse.Namespace) -> int:
    """`peercall answer`: wait for calls; accept them (asking first unless `--auto`), talk, until they end.

    Each call records to its own file: `--record in.wav` writes `in.wav`, then `in-2.wav`, `in-3.wav`…

    Args:
        args: the parsed options.

    Returns:
        SDK_EXIT_STATUSES["answer"].
    """
    if not args.auto and not sys.stdin.isatty():
        raise ValueError("without a terminal to ask on, use --auto")
    if args.video:  # a file that cannot be played stops us now, not at the first call
        video.VideoFileSource(args.video).stop()
    answered = 0
    async with _connected(args, args.id or default_id()) as client:
        follower = _follow(client)
        _say(f"waiting for calls as {client.id} on {args.url}")
        try:
            async with client.incoming() as incoming:
                async for call in incoming:
                    if not args.auto and not await _ask(f"{call.peer} is calling. Accept? [y/N] "):
                        if call.active:
                            await call.reject()
                        _say(f"rejected {call.peer}")
                        continue
                    opened: list[Any] = []
                    try:
                        source = _opened(opened, _source(args))
                        n = answered + 1
                        sink = _opened(opened, _sink(args, n))
                        videos = {kind: _opened(opened, made) for kind, made in _video(args, n).items()}
                        try:
                            await call.accept(audio_in=source, audio_out=sink, **videos)
                        except CallError as exc:
                            _say(f"could not answer: {exc}")
                            continue
                        await _talk(call, source, args.duration)
                        end = await call.hangup()
                        _say(f"call with {call.peer} ended: {end}" + _received(call, None))
                    finally:
                        await _release(opened)
                    if _token_lost(client):
                        return 1
                    answered += 1
                    if args.count and answered >= args.count:
                        return 0
        finally:
            await _stop(follower)
    return 0


async def _ask(prompt: str) -> bool:
    """Ask a yes/no question on the terminal without blocking the event loop."""
    print(prompt, end="", flush=True)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        if not answer.done():
            answer.set_result(sys.stdin.readline())

    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        return (await answer).strip().lower() in ("y", "yes")
    finally:
        loop.remove_reader(sys.stdin.fileno())


def signed_by_serve(user: str) -> dict[str, Any] | None:
    """The echo that `peercall serve --with-echo` starts: a provider of short-lived tokens for `user` that it signs
    itself with the server's key, handed over in `$PEERCALL_ECHO_SIGNER` (auth/tokens.py `ServiceSigner`); the client
    gets its first token from it and renews before each expiry. None when that variable is unset.

    Raises:
        ValueError: the variable is malformed.
    """
    from ..auth.tokens import SERVICE_SIGNER_ENV, ServiceSigner  # the server's token shapes, with PyJWT

    text = os.environ.get(SERVICE_SIGNER_ENV)
    if not text:
        return None
    signer = ServiceSigner.from_env(text)
    return {"token_provider": lambda: signer.mint(user)}


async def echo_command(args: argparse.Namespace) -> int:
    """`peercall echo`: run the echo test service until stopped.

    Args:
        args: the parsed options.

    Returns:
        0 when stopped, 2 if an option is malformed, or the server cannot be reached or refuses us.
    """
    policy = echo_policy(args.allow_peer, args.deny_peer, args.max_candidates)  # a bad range: exit 2, at once
    check_url(args.url)
    if args.stop_with_stdin:
        _stop_with_stdin()
    await run_echo(
        args.url,
        args.id,
        **(signed_by_serve(args.id) or await credentials(args)),
        delay=args.delay,
        max_duration=args.max_duration,
        ice_loopback=True if args.ice_loopback else None,
        ssl_context=_ssl(args),
        connect_timeout=args.connect_timeout,
        candidate_policy=policy,
        calls_per_minute=args.calls_per_minute,
    )
    return 0


def _stop_with_stdin() -> None:
    """End this process when stdin closes: the parent (`peercall serve --with-echo`) has gone."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def readable() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            if main is not None:
                main.cancel()

    loop.add_reader(sys.stdin.fileno(), readable)


async def audio_check_command(args: argparse.Namespace) -> int:
    """`peercall audio-check`: measure a call between two clients on this machine.

    Args:
        args: the parsed options.

    Returns:
        0, or 1 if PESQ is below `--min-pesq`.
    """
    from .check import audio_check

    if not args.json:
        _say("placing a call between two clients on this machine" + (f" through {args.url}" if args.url else ""))
    result = await audio_check(args.url, sample=args.sample, record_dir=args.record_dir)
    if args.json:
        print(json.dumps({**result.__dict__, "loss": result.loss}))
    else:
        _say(result.report())
    if args.min_pesq is not None and result.pesq < args.min_pesq:
        _say(f"PESQ {result.pesq:.2f} is below {args.min_pesq}")
        return 1
    return 0


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _ring_setting(contacts: Contacts) -> str:
    if contacts.calls_from is not None:
        return contacts.calls_from.value
    if contacts.default_calls_from is not None:
        return f"{contacts.default_calls_from.value} (the server's default)"
    return "the server's default"


def contacts_report(contacts: Contacts) -> str:
    """`peercall contacts list`'s text: contacts with their presence, requests, blocks, the ring setting."""
    lines = [f"contacts ({len(contacts.contacts)}):" if contacts.contacts else "contacts: none"]
    width = max((len(c.id) for c in contacts.contacts), default=0)
    for c in contacts.contacts:
        presence = "online, in a call" if c.in_call else "online" if c.online else "offline"
        if not c.online and c.last_seen is not None:
            presence += f" (last seen {_when(c.last_seen)})"
        name = f"  {json.dumps(c.name, ensure_ascii=False)}" if c.name else ""
        lines.append(f"  {c.id:{width}}  {presence}{name}")
    for title, items in (
        ("requests waiting for your answer", contacts.incoming),
        ("your requests waiting for theirs", contacts.outgoing),
        ("blocked", contacts.blocked),
    ):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines.extend(f"  {p.id}  since {_when(p.at)}" for p in items)
    lines.append(f"who may ring you: {_ring_setting(contacts)}")
    lines.append(f"presence: {'everyone online' if contacts.directory == 'all' else 'contacts only'}")
    return "\n".join(lines)


def _directory_report(page: DirectoryPage, args: argparse.Namespace) -> str:
    lines = [f"{u.id}{'  (in a call)' if u.in_call else ''}" for u in page.users] or ["nobody online"]
    if page.next is not None:
        prefix = f" {args.prefix}" if args.prefix else ""
        lines.append(f"more: peercall contacts directory{prefix} --after {page.next}")
    return "\n".join(lines)


async def _our_contacts(client: Client) -> Contacts:
    """Our contacts, once the server has told them (within `answer_timeout`).

    Raises:
        ContactError: the server has no contacts, or did not tell them in time.
    """
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a SIGTERM that comes as the contacts do
        async with asyncio.timeout(client.answer_timeout):
            return await client.wait_contacts()
    except TimeoutError:
        raise ContactError(f"the server did not send our contacts within {client.answer_timeout:g}s") from None


async def _contacts_action(client: Client, args: argparse.Namespace) -> str:
    """Do what `peercall contacts ACTION` asks; what to print."""
    action, user = args.action, str(getattr(args, "user", ""))
    if action == "list":
        contacts = await _our_contacts(client)
        return json.dumps(contacts.to_json(), ensure_ascii=False) if args.json else contacts_report(contacts)
    if action == "directory":
        return _directory_report(await client.directory(args.prefix, after=args.after, limit=args.limit), args)
    if action == "add":
        after = await client.add_contact(user, args.name)
        if after.is_contact(user):
            return f"{user} is your contact"
        return f"asked {user} to be your contact; the request waits for their answer"
    if action == "decline":
        before = await _our_contacts(client)
        if not before.has_incoming(user):
            return f"no request from {user} to decline"
        await client.decline_contact(user)
        return f"declined {user}'s request"
    if action == "remove":
        await client.remove_contact(user)
        return f"{user} is not your contact (any more)"
    if action == "rename":
        after = await client.rename_contact(user, args.name or None)
        contact = after.contact(user)
        if contact is None:
            raise ValueError(f"{user} is not your contact")
        return (
            f"{user} is called {json.dumps(contact.name, ensure_ascii=False)}"
            if contact.name
            else f"{user} has no name of yours"
        )
    if action == "block":
        await client.block(user)
        return f"blocked {user}"
    if action == "unblock":
        await client.unblock(user)
        return f"unblocked {user}"
    if action == "calls-from":
        return f"who may ring you: {_ring_setting(await client.set_calls_from(args.setting))}"
    raise ValueError(f"unknown action {action!r}")


async def contacts_command(args: argparse.Namespace) -> int:
    """`peercall contacts ACTION …`: connect, do it, print the result.

    Args:
        args: the parsed options.

    Returns:
        SDK_EXIT_STATUSES["contacts"] (the reason on stderr).
    """
    try:
        async with _connected(args, args.id or default_id()) as client:
            _say(await _contacts_action(client, args))
            return 0
    except ConnectError as exc:
        if isinstance(exc, SignInError) or exc.terminal:
            print(f"peercall contacts {args.action}: {exc}", file=sys.stderr)
            return 1
        raise  # cannot be reached: run() says so, with the other commands' status
    except (ClientError, ValueError, OSError, TimeoutError) as exc:
        print(f"peercall contacts {args.action}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "call": call_command,
    "answer": answer_command,
    "echo": echo_command,
    "audio-check": audio_check_command,
    "contacts": contacts_command,
}


def run(args: argparse.Namespace) -> int:
    """Run one of the SDK's commands (`args.command`) to completion.

    Args:
        args: the parsed options.

    Returns:
        The exit status.
    """
    level = logging.DEBUG if args.verbose else logging.INFO if args.command == "echo" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("aioice", "aiortc", "websockets"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, lambda: task and task.cancel())
        return await COMMANDS[args.command](args)

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return int(getattr(args, "interrupted", 0))
    except SignInError as exc:
        print(f"peercall {args.command}: {exc}", file=sys.stderr)
        return 1
    except ConnectError as exc:
        print(f"peercall {args.command}: {exc}", file=sys.stderr)
        return 1 if exc.terminal else 2  # refused (a bad token…), or cannot be reached
    except (ClientError, OSError, ValueError, TimeoutError, ImportError) as exc:
        print(f"peercall {args.command}: {exc}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "run"]
