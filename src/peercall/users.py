"""The operator's commands on accounts (`PEERCALL_AUTH=accounts`): `peercall user add|list|disable|enable` and
`peercall invite`.

They open the store the server uses, from the same settings (`PEERCALL_DATABASE_URL`), make one change or read,
and close it: safe while servers run on the same database. A user disabled here has their sign-ins revoked at
once; with `PEERCALL_REDIS_URL` (a cluster) every node is told to close their sockets now, as `peercall revoke`
does; without it (this process cannot reach a lone server's sockets) their open sockets end when their client's
next signaling-token renewal is refused (the web client's, within `PEERCALL_ACCOUNTS_TOKEN_TTL`), or at their
token's expiry with `PEERCALL_AUTH_EXPIRY=enforce`, accounts mode's default (the HTTP API's disable closes them at
once).
Imports config, protocol (the id rule), auth.accounts (hashing) and store; never the server or the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import sys
import time
from typing import Any

from .admin import AdminError, _book
from .auth.accounts import Passwords, check_password, check_strength, new_token, token_hash
from .config import Settings
from .core.social import MAX_NAME
from .protocol.messages import is_valid_id
from .store.base import AccountLimit, Credential, Invite, User

INVITE_TTL = 7 * 86400.0
CLI_MAKER = "peercall invite"
"""Who made an invite of `peercall invite` without `--by`: no user (not a user id), so it introduces nobody."""


def add_commands(commands: Any) -> None:
    """Register `user` and `invite` on the `peercall` parser's subparsers."""
    user = commands.add_parser(
        "user",
        help="add, list, disable or enable the users of accounts mode",
        description="Manage the users kept in the store PEERCALL_DATABASE_URL names (PEERCALL_AUTH=accounts).",
    )
    sub = user.add_subparsers(dest="user_command", required=True)
    add = sub.add_parser(
        "add",
        help="add a user with a password (read from standard input, or asked for twice on a terminal)",
        description="Add the user ID with a password: the first line of standard input, or asked for at a prompt.",
    )
    add.add_argument("id", help="the user id (1-64 ASCII letters, digits, '_', '-', '.' or '@')")
    add.add_argument("--name", help="the display name (default: the id)")
    add.add_argument("--admin", action="store_true", help="make the user an administrator")
    sub.add_parser("list", help="print every user: id, display name, admin, disabled")
    for verb, what in (("disable", "disable a user and end their sign-ins"), ("enable", "enable a disabled user")):
        one = sub.add_parser(verb, help=what, description=what[0].upper() + what[1:] + ".")
        one.add_argument("id")
    invite = commands.add_parser(
        "invite",
        help="print a one-time invite link (accounts mode)",
        description="Make a one-time invite and print its link (base: PEERCALL_PUBLIC_URL, else localhost).",
    )
    invite.add_argument("--ttl", type=float, default=INVITE_TTL, metavar="SECONDS", help="lifetime (default 7 days)")
    invite.add_argument("--admin", action="store_true", help="whoever uses it becomes an administrator")
    invite.add_argument(
        "--by",
        metavar="ID",
        help="make it on behalf of this user, who becomes a contact of whoever uses it (as with an invite made "
        "from the web client); default: no one",
    )


def run(args: argparse.Namespace) -> int:
    """Run `peercall user …` or `peercall invite`; returns the exit status."""
    try:
        if args.command == "invite":
            return asyncio.run(_invite(args.ttl, args.admin, args.by))
        if args.user_command == "add":
            return _add(args.id, args.name, args.admin)
        if args.user_command == "list":
            return asyncio.run(_list())
        return asyncio.run(_set_disabled(args.id, args.user_command == "disable"))
    except AdminError as exc:
        print(f"peercall {args.command}: {exc}", file=sys.stderr)
        return 2


def _read_password(context: list[str]) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
    else:
        line = getpass.getpass("password: ")
        if getpass.getpass("again: ") != line:
            raise AdminError("the two passwords differ")
    try:
        check_strength(check_password(line), context)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    return line


def _add(user_id: str, name: str | None, admin: bool) -> int:
    if not is_valid_id(user_id):
        raise AdminError(f"{user_id!r} is not a user id (1-64 ASCII letters, digits, '_', '-', '.' or '@')")
    name = (name if name is not None else user_id).strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise AdminError(f"a display name is 1 to {MAX_NAME} characters")
    password = _read_password([user_id, name])
    secret = Passwords().hash_now(password)
    return asyncio.run(_store_user(User(user_id, name, admin=admin, created=time.time()), secret))


async def _store_user(user: User, secret: str) -> int:
    store = await _book()
    try:
        added = await store.add_user(user, Credential(user.id, "password", "", secret, user.created))
    finally:
        await store.close()
    if not added:
        raise AdminError(f"the id {user.id!r} is taken")
    print(f"added {user.id}{' (administrator)' if user.admin else ''}")
    return 0


async def _list() -> int:
    store = await _book()
    try:
        after: str | None = None
        while page := await store.users(limit=500, after=after):
            for u in page:
                flags = ", ".join(f for f, on in (("admin", u.admin), ("disabled", u.disabled)) if on)
                print(f"{u.id}\t{u.name}\t{flags}")
            after = page[-1].id
    finally:
        await store.close()
    return 0


async def _set_disabled(user_id: str, disabled: bool) -> int:
    store = await _book()
    try:
        found = await store.set_disabled(user_id, disabled, now=time.time())
    finally:
        await store.close()
    if not found:
        raise AdminError(f"there is no user {user_id!r}")
    if not disabled:
        print(f"{user_id} enabled")
        return 0
    print(f"{user_id} disabled: their sign-ins have ended")
    settings = Settings()
    if settings.redis_url is None:
        print("their open connections close at their next token renewal (set PEERCALL_REDIS_URL to close them now)")
        return 0
    from .broker.redis import close_user_everywhere
    from .protocol.codes import CloseCode

    try:
        heard = await close_user_everywhere(
            settings.redis_url, settings.redis_prefix, user_id, CloseCode.UNAUTHORIZED, "signed out"
        )
    except Exception as exc:  # redis-py's errors, refused connections: one line for the operator
        raise AdminError(f"could not reach Redis to close their connections now: {exc}") from None
    print(f"told {heard} node(s) to close their connections")
    return 0


async def _invite(ttl: float, admin: bool, by: str | None) -> int:
    if not 60 <= ttl <= 30 * 86400:
        raise AdminError("--ttl is 60 to 2592000 seconds")
    settings = Settings()
    token, now = new_token(), time.time()
    store = await _book()
    try:
        if by is not None and (not is_valid_id(by) or await store.user(by) is None):
            raise AdminError(f"--by {by!r}: there is no such user")
        try:
            await store.add_invite(Invite(token_hash(token), by or CLI_MAKER, now, now + ttl, admin), now=now)
        except AccountLimit as exc:
            raise AdminError(str(exc)) from None
    finally:
        await store.close()
    base = settings.public_url or f"{'https' if settings.tls else 'http'}://localhost:{settings.port}"
    until = datetime.datetime.fromtimestamp(now + ttl, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{base}/#invite={token}")
    print(f"(one-time{', makes an administrator' if admin else ''}; valid until {until})", file=sys.stderr)
    return 0
