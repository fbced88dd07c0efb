"""The `peercall` command."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import __version__


def _settings_errors(exc: ValidationError) -> str:
    """What is wrong with the settings, a line each, naming the setting as the operator sets it (its environment
    variable, `PEERCALL_PORT`, rather than the field `port`): never the value given, which may be a secret."""
    from .config import Settings

    # A setting's name as a word of its own (not part of a URL pattern such as "scheme://host[:port]").
    names = re.compile(
        r"(?<![\w/:\[.])(" + "|".join(sorted(Settings.model_fields, key=len, reverse=True)) + r")(?![\w\[\]/])"
    )

    def variables(text: str) -> str:
        return names.sub(lambda m: f"PEERCALL_{m.group(1).upper()}", text)

    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"])
        message = variables(error["msg"].removeprefix("Value error, "))
        lines.append(f"  {variables(where)}: {message}" if where else f"  {message}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes options only as spelled out (`allow_abbrev=False`): `--password` must not be
    read as `--password-file`, nor `--token` typed short as another option. Subcommands' parsers are of this class
    too (`add_subparsers` makes parsers of its parser's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="peercall", description="Peer-to-peer voice calls over WebRTC.")
    parser.add_argument("--version", action="version", version=f"peercall {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the signaling server and the web client",
        description="Run the signaling server. Every option can also be set as PEERCALL_<NAME> in the environment.",
    )
    serve.add_argument("--host", help="interface to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--ice-servers",
        type=json.loads,
        metavar="JSON",
        help='ICE servers, e.g. \'[{"urls":"stun:host:3478"}]\'',
    )
    serve.add_argument("--max-message-size", type=int, metavar="BYTES", help="largest routed frame (default 65536)")
    serve.add_argument("--cors-origins", metavar="LIST", help="comma-separated origins allowed by CORS")
    serve.add_argument("--shutdown-timeout", type=float, metavar="SECONDS", help="graceful shutdown bound")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--certfile", metavar="PEM", help="TLS certificate: serve https and wss")
    serve.add_argument("--keyfile", metavar="PEM", help="TLS private key")
    serve.add_argument("--redis-url", metavar="URL", help="share calls with other nodes through this Redis")
    serve.add_argument("--node-id", metavar="NAME", help="this node's name in logs and Redis (default: random)")
    serve.add_argument(
        "--tls-self-signed",
        action="store_true",
        default=None,
        help="make a self-signed certificate for this machine and serve https (for calls across a LAN)",
    )
    serve.add_argument(
        "--with-echo",
        action="store_true",
        help="also run the echo test service (`peercall echo`, id 'echo') against this server "
        "(PEERCALL_WITH_ECHO=1); needs the sdk extra",
    )
    serve.add_argument(
        "--ice-loopback",
        action="store_true",
        default=None,
        help="with --with-echo: the echo offers 127.0.0.1 as an ICE candidate, for callers on this machine with no "
        "other network (PEERCALL_ICE_LOOPBACK=1; the callers need it too)",
    )
    token = commands.add_parser(
        "token",
        help="print a signed token for a user (PEERCALL_AUTH_SECRET)",
        description="Print an HS256 token whose sub is USER, signed with PEERCALL_AUTH_SECRET.",
    )
    token.add_argument("user")
    token.add_argument("--ttl", type=float, default=3600, metavar="SECONDS", help="lifetime (default 3600)")
    token.add_argument("--name", metavar="NAME", help="the user's display name (the token's name claim)")
    revoke = commands.add_parser(
        "revoke",
        help="close every connection of a user on every node (PEERCALL_REDIS_URL)",
        description="Close every WebSocket of USER on every node of the cluster whose Redis is PEERCALL_REDIS_URL "
        "(and key prefix PEERCALL_REDIS_PREFIX), with close 4401. Their tokens stay valid: disable the user at "
        "the identity provider too, and keep tokens short-lived with PEERCALL_AUTH_EXPIRY=enforce.",
    )
    revoke.add_argument("user")
    revoke.add_argument(
        "--reason", default="signed out by the server", help="the close reason (default: 'signed out by the server')"
    )
    conformance = commands.add_parser(
        "conformance",
        help="check a server against the protocol (docs/protocol.md) with raw WebSocket clients",
        description="Drive a signaling server through every call outcome and report which rules hold.",
    )
    conformance.add_argument(
        "url",
        nargs="+",
        help="the server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws; several (the nodes of one cluster): "
        "each scenario spreads its users over them",
    )
    conformance.add_argument("-k", dest="select", metavar="TEXT", help="only scenarios whose name contains TEXT")
    conformance.add_argument(
        "--max-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="skip scenarios that must wait longer than this for a server timer (default 10)",
    )
    _add_sdk_commands(commands)
    from .admin import add_commands as add_admin_commands

    add_admin_commands(commands)
    from .users import add_commands as add_user_commands

    add_user_commands(commands)
    return parser


SDK_COMMANDS = ("call", "answer", "echo", "audio-check", "contacts")
SDK_EXIT_STATUSES = {
    "call": "0: the call was answered and ended as asked (also when Ctrl-C or SIGTERM hangs it up); 1: it was not "
    "answered (rejected, missed, busy, unavailable, or stopped while it rang), it ended badly (the connection to the "
    "server was lost, the token could not be renewed), or the server refused us (a password or token); 2: a usage "
    "error, or the server cannot be reached",
    "answer": "0: --count calls were answered, or it was stopped (Ctrl-C, SIGTERM); 1: the server refused us, or "
    "the token could not be renewed; 2: a usage error, or the server cannot be reached",
    "echo": "0: stopped (Ctrl-C, SIGTERM); 1: the server refused us; 2: a usage error (e.g. a malformed address "
    "range), or the server cannot be reached",
    "audio-check": "0: the check ran (and PESQ is at least --min-pesq); 1: PESQ is below --min-pesq; 2: a usage "
    "error, or the server cannot be reached",
    "contacts": "0: done; 1: the server refused us or the operation (the reason, with its code, on stderr), or did "
    "not answer; 2: a usage error, or the server cannot be reached",
}
"""The exit statuses of the SDK's commands, for their --help (peercall.client.cli returns them)."""


def _exit_statuses(command: str) -> str:
    return f"exit status: {SDK_EXIT_STATUSES[command]}."


def _add_sdk_commands(commands: Any) -> None:
    """The Python client's commands (peercall.client.cli runs them; they need `pip install 'peercall[sdk]'`)."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--url", default=None, help="the server's WebSocket URL (default $PEERCALL_URL or ws://127.0.0.1:8080/ws)"
    )
    connection.add_argument(
        "--token",
        help="a token whose sub is our id; visible to other users in `ps`: prefer $PEERCALL_TOKEN or --token-file",
    )
    connection.add_argument(
        "--token-file",
        metavar="FILE",
        help="read the token from this file (also $PEERCALL_TOKEN_FILE); reread to renew it before it expires, so "
        "that a program can rotate the file",
    )
    connection.add_argument(
        "--password-file",
        metavar="FILE",
        help="servers with accounts (PEERCALL_AUTH=accounts): sign in as --id with the password in this file "
        "(also $PEERCALL_PASSWORD_FILE or $PEERCALL_PASSWORD; never on the command line)",
    )
    connection.add_argument(
        "--ice-loopback",
        action="store_true",
        help="offer 127.0.0.1 as an ICE candidate (two programs on one machine with no network; "
        "also PEERCALL_ICE_LOOPBACK=1)",
    )
    connection.add_argument("--insecure", action="store_true", help="accept any TLS certificate (self-signed wss)")
    connection.add_argument(
        "--connect-timeout",
        type=float,
        default=10,
        metavar="SECONDS",
        help="how long to keep trying to reach the server (default 10; after a second it says so on stderr)",
    )
    connection.add_argument("-v", "--verbose", action="store_true", help="log every negotiation step")
    audio = argparse.ArgumentParser(add_help=False)
    audio.add_argument("--play", metavar="FILE", help="send this audio file (WAV, MP3, Ogg…)")
    audio.add_argument("--tone", type=float, metavar="HZ", help="send a sine tone")
    audio.add_argument(
        "--record",
        metavar="FILE",
        help="record the audio that arrives (.wav: 16-bit mono 48 kHz); answering several calls (--count), each "
        "has its own file: in.wav, then in-2.wav, in-3.wav…",
    )
    audio.add_argument(
        "--duration", type=float, metavar="SECONDS", help="hang up after this long (default: when --play ends)"
    )
    audio.add_argument(
        "--video",
        metavar="FILE",
        help="send this video file, looped (MP4, WebM…; anything FFmpeg reads); answering: when the caller's offer "
        "has video",
    )
    audio.add_argument(
        "--record-video",
        metavar="FILE",
        help="record the other side's video (.mp4/.mkv: H.264, .webm: VP8; numbered as --record); without it their "
        "video is declined",
    )

    call = commands.add_parser(
        "call",
        parents=[connection, audio],
        help="call a user from Python (WebRTC with aiortc)",
        description="Call USER, send audio (and video), record what arrives, hang up.",
        epilog=_exit_statuses("call"),
    )
    call.add_argument("user", help="who to call")
    call.add_argument("--id", help="our id (default $PEERCALL_ID or the login name)")
    answer = commands.add_parser(
        "answer",
        parents=[connection, audio],
        help="wait for a call and answer it",
        description="Wait for calls and answer them (asking first, unless --auto).",
        epilog=_exit_statuses("answer"),
    )
    answer.add_argument("--id", help="our id (default $PEERCALL_ID or the login name)")
    answer.add_argument("--auto", action="store_true", help="accept every call without asking")
    answer.add_argument("--count", type=int, default=1, metavar="N", help="exit after N calls (0: never; default 1)")
    echo = commands.add_parser(
        "echo",
        parents=[connection],
        help="run the echo test service",
        description="Answer every call and play back what the caller says, after a short delay: call it to "
        "check a microphone and speakers. One caller at a time.",
        epilog=_exit_statuses("echo"),
    )
    echo.add_argument("--id", default="echo", help="the id to answer as (default echo)")
    echo.add_argument("--delay", type=float, default=0.7, metavar="SECONDS", help="echo delay (default 0.7)")
    echo.add_argument("--max-duration", type=float, default=600, metavar="SECONDS", help="hang up after (600)")
    echo.add_argument(
        "--allow-peer",
        action="append",
        metavar="CIDR",
        help="let calls check caller candidates in this address range, even where a default denies it (repeatable; "
        "also $PEERCALL_ECHO_ALLOWED_PEERS, comma-separated)",
    )
    echo.add_argument(
        "--deny-peer",
        action="append",
        metavar="CIDR",
        help="never check caller candidates in this range (repeatable; also $PEERCALL_ECHO_DENIED_PEERS). "
        "Default: loopback, this machine's subnets and global addresses are checked, other private and reserved "
        "ranges are not",
    )
    echo.add_argument(
        "--max-candidates", type=int, default=20, metavar="N", help="caller candidates a call checks at most (20)"
    )
    echo.add_argument(
        "--calls-per-minute", type=int, default=6, metavar="N", help="calls one caller may place a minute (6)"
    )
    echo.add_argument("--stop-with-stdin", action="store_true", help=argparse.SUPPRESS)
    check = commands.add_parser(
        "audio-check",
        help="measure call audio quality (PESQ, delay, loss) between two clients on this machine",
        description="Place a call between two Python clients on this machine (through --url, or a server started "
        "for the test), send a speech sample, and report wideband PESQ, one-way delay and packet loss.",
        epilog=_exit_statuses("audio-check"),
    )
    check.add_argument("--url", help="a server's WebSocket URL (default: start one on a free loopback port)")
    check.add_argument("--sample", type=Path, metavar="WAV", help="16-bit WAV of speech (default: the shipped one)")
    check.add_argument("--record-dir", type=Path, metavar="DIR", help="write sent.wav and received.wav there")
    check.add_argument("--min-pesq", type=float, metavar="SCORE", help="exit 1 if PESQ is below this")
    check.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    check.add_argument("-v", "--verbose", action="store_true", help="log every negotiation step")
    _add_contacts_command(commands, connection)


def _add_contacts_command(commands: Any, connection: argparse.ArgumentParser) -> None:
    """`peercall contacts …`: contacts, requests, blocks and the ring setting (peercall.client.cli runs them)."""
    contacts = commands.add_parser(
        "contacts",
        help="your contacts, requests, blocks and who may ring you",
        description="Manage your contacts on a peercall server (docs/protocol.md, Contacts).",
        epilog=_exit_statuses("contacts"),
    )
    actions = contacts.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, parents=[connection], help=help, description=help, epilog=_exit_statuses("contacts")
        )
        parser.add_argument("--id", help="our id (default $PEERCALL_ID or the login name)")
        return parser

    listing = action("list", "list your contacts with their presence, requests, blocks and your ring setting")
    listing.add_argument("--json", action="store_true", help="print them as one JSON object")
    add = action("add", "ask USER to be your contact, or accept their request")
    add.add_argument("user")
    add.add_argument("--name", help="your own name for them (1-64 characters)")
    action("decline", "decline USER's contact request (they are not told)").add_argument("user")
    action("remove", "no longer be contacts with USER (both sides), or withdraw your request").add_argument("user")
    rename = action("rename", "give contact USER your own name for them ('' removes it)")
    rename.add_argument("user")
    rename.add_argument("name")
    action("block", "block USER: their calls and requests never reach you").add_argument("user")
    action("unblock", "lift your block on USER").add_argument("user")
    ring = action("calls-from", "set who may ring you (default: the server's setting)")
    ring.add_argument("setting", choices=["everyone", "contacts", "nobody", "default"])
    directory = action("directory", "list who is online (servers with PEERCALL_DIRECTORY=all)")
    directory.add_argument("prefix", nargs="?", default="", help="only ids that start with this")
    directory.add_argument("--after", metavar="ID", help="the page after this id (as the previous page said)")
    directory.add_argument("--limit", type=int, default=50, metavar="N", help="at most N users (1-200; default 50)")


def _start_echo(settings: Any) -> subprocess.Popen[bytes] | None:
    """Start `peercall echo` as a child process that connects to the server about to start (serve --with-echo).

    The child keeps trying until the server is up, and exits when our end of its stdin closes (so it never
    outlives us). Returns None (and says why) if it cannot be started.
    """
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    url = f"{'wss' if settings.tls else 'ws'}://{f'[{host}]' if ':' in host else host}:{settings.port}/ws"
    env = dict(os.environ)
    if settings.auth == "open" and settings.service_token is not None:
        # `echo` is a reserved id in open mode: the echo takes it with the service token (see `main`).
        env["PEERCALL_TOKEN"] = settings.service_token.get_secret_value()
    if settings.auth in ("accounts", "token"):
        # The echo has no account and no identity provider: it signs its own short-lived tokens with the server's
        # key and renews them before they expire (auth/tokens.py `ServiceSigner`), so that it stays connected under
        # PEERCALL_AUTH_EXPIRY=enforce (accounts mode's default). The key goes in the environment, which only this
        # user can read, never on the command line.
        from .auth.tokens import SERVICE_SIGNER_ENV, ServiceSigner

        signer = ServiceSigner.for_settings(settings)
        if signer is None:
            print("peercall: --with-echo needs PEERCALL_AUTH_SECRET to sign the echo's token", file=sys.stderr)
            return None
        env[SERVICE_SIGNER_ENV] = signer.to_env()
    command = [sys.executable, "-m", "peercall", "echo", "--url", url, "--connect-timeout", "60", "--stop-with-stdin"]
    if settings.tls:
        command.append("--insecure")  # our own certificate, over loopback
    return subprocess.Popen(command, stdin=subprocess.PIPE, env=env)


def _echo_settings_problem() -> str | None:
    """What is wrong with the echo's settings in the environment (its address ranges), or None.

    The child would exit at once on them; saying so before the server starts is clearer. Without the SDK there is
    nothing to check here (the child says that the SDK is missing).
    """
    try:
        from .client.echo import echo_policy
    except ImportError:
        return None
    try:
        echo_policy()
    except ValueError as exc:
        return str(exc)
    return None


def _revoke(user: str, reason: str) -> int:
    """`peercall revoke USER`: tell every node, through Redis, to close USER's connections (close 4401)."""
    import asyncio

    from .protocol.codes import CloseCode
    from .protocol.messages import is_valid_id

    url = os.environ.get("PEERCALL_REDIS_URL")
    prefix = os.environ.get("PEERCALL_REDIS_PREFIX", "peercall:")
    if not is_valid_id(user):
        print("peercall: a user id is 1-64 ASCII letters, digits, '_', '-', '.' or '@'", file=sys.stderr)
        return 2
    if not url:
        print(
            "peercall revoke: set PEERCALL_REDIS_URL to the Redis of the nodes (a single node without Redis cannot "
            "be reached from outside: restart it, or use a cluster of one with Redis)",
            file=sys.stderr,
        )
        return 2
    from .broker.redis import close_user_everywhere

    try:
        heard = asyncio.run(close_user_everywhere(url, prefix, user, CloseCode.UNAUTHORIZED, reason[:100]))
    except Exception as exc:  # redis-py's errors, refused connections: one line for the operator
        print(f"peercall revoke: could not reach Redis at {url.split('@')[-1]}: {exc}", file=sys.stderr)
        return 1
    print(f"told {heard} node(s) to close the connections of {user}")
    return 0 if heard else 1


def _free_port(host: str) -> int:
    """A free TCP port on `host` (for --with-echo with --port 0: the echo must know the port in advance)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from .config import Settings
        from .server.run import serve

        with_echo = args.with_echo or os.environ.get("PEERCALL_WITH_ECHO", "").strip().lower() in ("1", "true", "yes")
        skip = ("command", "with_echo", "ice_loopback")
        if args.ice_loopback:
            os.environ["PEERCALL_ICE_LOOPBACK"] = "1"  # for the echo child (the server itself gathers no ICE)
        overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
        try:
            settings = Settings(**overrides)
            more: dict[str, Any] = {}
            if with_echo and settings.port == 0:
                more["port"] = _free_port(settings.host)
            if with_echo and settings.auth == "open" and settings.service_token is None:
                # A token of this process's own, known to the server and to the echo it starts, with which the
                # echo takes its reserved id; nobody else can learn it (it is in neither's command line).
                more["service_token"] = secrets.token_urlsafe(32)
            if more:
                settings = Settings(**{**overrides, **more})
        except ValidationError as exc:
            print(f"peercall: invalid settings:\n{_settings_errors(exc)}", file=sys.stderr)
            return 2
        if with_echo and (problem := _echo_settings_problem()):
            print(f"peercall: --with-echo: {problem}", file=sys.stderr)
            return 2
        echo = _start_echo(settings) if with_echo else None
        try:
            return serve(settings)
        finally:
            if echo is not None:
                if echo.stdin is not None:
                    echo.stdin.close()
                echo.terminate()
                try:
                    echo.wait(10)
                except subprocess.TimeoutExpired:
                    echo.kill()
                    echo.wait()
    if args.command == "token":
        from .auth.tokens import display_name, mint
        from .protocol.messages import is_valid_id

        secret = os.environ.get("PEERCALL_AUTH_SECRET")
        if not secret:
            print("peercall: set PEERCALL_AUTH_SECRET to the server's token secret", file=sys.stderr)
            return 2
        if not is_valid_id(args.user):
            print("peercall: a user id is 1-64 ASCII letters, digits, '_', '-', '.' or '@'", file=sys.stderr)
            return 2
        name = None
        if args.name is not None:
            name = display_name(args.name)
            if name is None:
                print(
                    "peercall: a display name is 1-64 characters, without control or format characters"
                    " (Unicode category C)",
                    file=sys.stderr,
                )
                return 2
        print(mint(args.user, secret, args.ttl, name=name))
        return 0
    if args.command == "revoke":
        return _revoke(args.user, args.reason)
    if args.command in SDK_COMMANDS:
        try:
            from .client.cli import run
        except ImportError as exc:
            print(
                f"peercall {args.command} needs the Python client: pip install 'peercall[sdk]' ({exc})", file=sys.stderr
            )
            return 2
        if getattr(args, "url", None) is None and args.command != "audio-check":
            from .client.cli import default_url

            args.url = default_url()
        return run(args)
    if args.command in ("user", "invite"):
        from .users import run as users

        return users(args)
    if args.command == "admin":
        from .admin import run as admin

        return admin(args)
    if args.command == "conformance":
        from .conformance import main as conformance

        return conformance(args.url, args.select, args.max_wait)
    return 2


if __name__ == "__main__":
    sys.exit(main())
