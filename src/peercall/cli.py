"""The `peercall` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from . import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peercall", description="Peer-to-peer voice calls over WebRTC.")
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
    serve.add_argument(
        "--tls-self-signed",
        action="store_true",
        default=None,
        help="make a self-signed certificate for this machine and serve https (for calls across a LAN)",
    )
    token = commands.add_parser(
        "token",
        help="print a signed token for a user (PEERCALL_AUTH_SECRET)",
        description="Print an HS256 token whose sub is USER, signed with PEERCALL_AUTH_SECRET.",
    )
    token.add_argument("user")
    token.add_argument("--ttl", type=float, default=3600, metavar="SECONDS", help="lifetime (default 3600)")
    conformance = commands.add_parser(
        "conformance",
        help="check a server against the protocol (docs/protocol.md) with raw WebSocket clients",
        description="Drive a signaling server through every call outcome and report which rules hold.",
    )
    conformance.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws")
    conformance.add_argument("-k", dest="select", metavar="TEXT", help="only scenarios whose name contains TEXT")
    conformance.add_argument(
        "--max-wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="skip scenarios that must wait longer than this for a server timer (default 10)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from .config import Settings
        from .server.run import serve

        overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            print(f"peercall: invalid settings:\n{exc}", file=sys.stderr)
            return 2
        return serve(settings)
    if args.command == "token":
        import os

        from .auth.tokens import mint
        from .protocol.messages import is_valid_id

        secret = os.environ.get("PEERCALL_AUTH_SECRET")
        if not secret:
            print("peercall: set PEERCALL_AUTH_SECRET to the server's token secret", file=sys.stderr)
            return 2
        if not is_valid_id(args.user):
            print("peercall: a user id is 1-64 letters, digits, '_', '-', '.' or '@'", file=sys.stderr)
            return 2
        print(mint(args.user, secret, args.ttl))
        return 0
    if args.command == "conformance":
        from .conformance import main as conformance

        return conformance(args.url, args.select, args.max_wait)
    return 2


if __name__ == "__main__":
    sys.exit(main())
