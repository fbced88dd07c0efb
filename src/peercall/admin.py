"""The operator's commands on the contact book: `peercall admin contacts USER [--remove PEER]` and
`peercall admin import-contacts FILE`.

They open the store the server uses, from the same settings (`PEERCALL_DATABASE_URL`, config.Settings), make one
change or read, and close it: safe while servers run on the same database (each operation is one transaction).
Owns argument parsing of `admin` and its output; imports config, protocol (the id rule) and store, never the
server or the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from .config import Settings
from .core.social import Circle
from .protocol.messages import is_valid_id
from .store import Store, open_history
from .store.base import ContactChange


class AdminError(Exception):
    """A problem the operator must fix (bad input, unusable settings): printed as one line, exit status 2."""


def add_commands(commands: Any) -> None:
    """Register `admin` and its subcommands on the `peercall` parser's subparsers."""
    admin = commands.add_parser(
        "admin",
        help="operator commands on the server's store (contacts)",
        description="Read or change what the server keeps, in the store PEERCALL_DATABASE_URL names.",
    )
    sub = admin.add_subparsers(dest="admin_command", required=True)
    contacts = sub.add_parser(
        "contacts",
        help="print a user's contacts, requests, blocks and ring setting, or remove a contact",
        description="Print USER's circle: contacts, requests both ways, blocked users and the ring setting.",
    )
    contacts.add_argument("user")
    contacts.add_argument(
        "--remove", metavar="PEER", help="end the contact between USER and PEER (both lose the other)"
    )
    contacts.add_argument("--json", action="store_true", help="print the circle as one JSON object")
    imports = sub.add_parser(
        "import-contacts",
        help="make pairs of users contacts, from a file of lines 'a,b' or 'a b'",
        description="Make each pair of users on the lines of FILE ('a,b' or 'a b'; '#' starts a comment) mutual "
        "contacts, in one transaction, ignoring the per-user bounds. A user's block is kept.",
    )
    imports.add_argument("file", help="the file of pairs, or - for standard input")


def run(args: argparse.Namespace) -> int:
    """Run `peercall admin …`; returns the exit status."""
    try:
        if args.admin_command == "contacts":
            return asyncio.run(_contacts(args.user, args.remove, as_json=args.json))
        if args.file == "-":
            pairs = read_pairs(sys.stdin, "standard input")
        else:
            try:
                with open(args.file, encoding="utf-8") as file:
                    pairs = read_pairs(file, args.file)
            except OSError as exc:
                raise AdminError(f"cannot read {args.file}: {exc.strerror}") from None
        return asyncio.run(_import(pairs))
    except AdminError as exc:
        print(f"peercall admin: {exc}", file=sys.stderr)
        return 2


def read_pairs(lines: Iterable[str], name: str) -> list[tuple[str, str]]:
    """The pairs of a contacts file: one pair a line, 'a,b' or 'a b'; blank lines and '#' comments skipped.

    Raises:
        AdminError: a line is not two valid, different user ids (naming the line).
    """
    pairs: list[tuple[str, str]] = []
    try:
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = [f.strip() for f in text.split(",")] if "," in text else text.split()
            if len(fields) != 2 or not all(is_valid_id(f) for f in fields) or fields[0] == fields[1]:
                raise AdminError(
                    f"{name}, line {number}: expected two different user ids as 'a,b' or 'a b' "
                    f"(1-64 ASCII letters, digits, '_', '-', '.' or '@'), found {text!r}"
                )
            pairs.append((fields[0], fields[1]))
    except UnicodeDecodeError as exc:
        raise AdminError(f"{name} is not UTF-8 text: {exc}") from None
    return pairs


async def _book() -> Store:
    try:
        url = Settings().database_url
    except Exception as exc:  # pydantic's ValidationError: the same settings would stop the server
        raise AdminError(f"invalid settings: {exc}") from None
    if url.partition("://")[0].lower() == "memory":
        raise AdminError(
            "PEERCALL_DATABASE_URL is memory://: a server keeps such contacts in its own process, out of reach; "
            "set it to the server's sqlite:/// or postgresql:// URL"
        )
    try:
        store = open_history(url)
    except (ValueError, ImportError) as exc:
        raise AdminError(str(exc)) from None
    await store.open()
    return store


async def _contacts(user: str, remove: str | None, *, as_json: bool) -> int:
    for who in (user, remove):
        if who is not None and not is_valid_id(who):
            raise AdminError(f"{who!r} is not a user id (1-64 ASCII letters, digits, '_', '-', '.' or '@')")
    if remove == user:
        raise AdminError("USER and PEER are the same user")
    store = await _book()
    try:
        if remove is not None:
            change = await store.remove(user, remove)
            if change is ContactChange.REMOVED:
                print(
                    f"{user} and {remove} are no longer contacts (servers running now see it when they next read "
                    "their contacts: docs/operations.md)"
                )
            else:
                print(f"{user} and {remove} were not contacts: nothing changed")
            return 0
        circle = await store.circle(user, now=time.time())
    finally:
        await store.close()
    print(json.dumps(_as_json(circle)) if as_json else _as_text(circle))
    return 0


async def _import(pairs: list[tuple[str, str]]) -> int:
    store = await _book()
    try:
        new = await store.import_contacts(pairs, now=time.time())
    finally:
        await store.close()
    print(f"pairs read: {len(pairs)}; new contacts: {new}")
    return 0


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _as_json(circle: Circle) -> dict[str, Any]:
    return {
        "user": circle.user,
        "contacts": [
            {"id": c.id, "name": c.name, "since": c.since} for c in sorted(circle.contacts.values(), key=lambda c: c.id)
        ],
        "incoming": [{"id": k, "at": v} for k, v in sorted(circle.incoming.items())],
        "outgoing": [{"id": k, "at": v} for k, v in sorted(circle.outgoing.items())],
        "blocked": [{"id": k, "at": v} for k, v in sorted(circle.blocked.items())],
        "blockedBy": sorted(circle.blocked_by),
        "callsFrom": None if circle.calls_from is None else circle.calls_from.value,
    }


def _as_text(circle: Circle) -> str:
    lines = [f"{circle.user}"]
    lines.append(f"  contacts ({len(circle.contacts)}):")
    for c in sorted(circle.contacts.values(), key=lambda c: c.id):
        name = f" ({c.name})" if c.name else ""
        lines.append(f"    {c.id}{name}, since {_when(c.since)}")
    for title, items in (
        ("requests waiting for their answer", circle.incoming),
        ("their requests waiting for an answer", circle.outgoing),
        ("blocked by them", circle.blocked),
    ):
        lines.append(f"  {title} ({len(items)}):")
        lines += [f"    {who}, {_when(at)}" for who, at in sorted(items.items())]
    lines.append(f"  blocked them ({len(circle.blocked_by)}): {', '.join(sorted(circle.blocked_by)) or '-'}")
    setting = "the server's default (PEERCALL_CALLS_FROM)" if circle.calls_from is None else circle.calls_from.value
    lines.append(f"  calls from: {setting}")
    return "\n".join(lines)
