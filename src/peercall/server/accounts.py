"""The HTTP API of accounts mode (`PEERCALL_AUTH=accounts`): set-up, invites, sign-up, password and passkey
(WebAuthn) sign-in, passkeys and the password of a signed-in user, sign-ins
kept on the server (a cookie), signaling tokens for the WebSocket, sign-out, and administration. docs/protocol.md,
"Accounts", is the reference; docs/security.md says what each rule is against.

Every state-changing route (POST, DELETE) needs the `X-Peercall-CSRF` header (a browser sends a custom header
cross-site only after a CORS preflight, which this server refuses) and, when the request has an `Origin`, the
server's own origin; once signed in, the header's value must be the sign-in's CSRF value.

The cookie is `__Host-peercall-session` with `Secure` when the request came over https (directly, or from a proxy
trusted by `PEERCALL_FORWARDED_ALLOW_IPS`), and `peercall-session` without `Secure` over plain http to a loopback
host (`make run` on localhost). Plain http to any other host is refused (`https-required`): a sign-in there
would travel in clear.

Passkeys: the relying party id is the request's host name (which the host guard, `PEERCALL_ALLOWED_HOSTS`, has
let in) and the expected origin the server's own (`https://host`, or `http://localhost:port` for `make run`). The
challenges wait in this node's memory (auth/accounts.py `Challenges`): in a cluster, a browser's options request
and its answer must reach the same node (sticky sessions), or the answer is refused as an unknown challenge.

Owns the sign-in throttles, the WebAuthn challenges and the refresh of the revoked sign-ins that the token verifier
refuses; the store (store/base.py `Accounts`) owns everything that lasts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import inspect
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import webauthn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from webauthn.helpers import parse_client_data_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ..auth.accounts import (
    Busy,
    Challenges,
    Full,
    Known,
    Passkey,
    Passwords,
    Throttle,
    b64url,
    check_password,
    check_strength,
    new_token,
    token_hash,
    user_handle,
)
from ..auth.tokens import AccountsVerifier
from ..config import Settings
from ..core.social import MAX_NAME
from ..protocol.codes import CloseCode
from ..protocol.messages import is_plain_text, is_valid_id
from ..store.base import (
    MAX_CREDENTIALS_PER_USER,
    PRUNE_BATCH,
    AccountLimit,
    AccountSession,
    ContactLimit,
    Credential,
    Invite,
    SignUp,
    Store,
    User,
)
from .guard import host_name
from .jsonapi import Refusal, json_object, json_response, refused
from .session import address_group

log = logging.getLogger("peercall.accounts")

CSRF_HEADER = "x-peercall-csrf"
SECURE_COOKIE, PLAIN_COOKIE = "__Host-peercall-session", "peercall-session"
MAX_BODY = 16 * 1024
SETUP_TTL = 86400.0  # seconds the first administrator's set-up link is valid (one more at each start meanwhile)
INVITE_TTL, MIN_INVITE_TTL, MAX_INVITE_TTL = 7 * 86400.0, 60.0, 30 * 86400.0
REFRESH = 2.0  # seconds between two reads of the revoked sign-ins: the delay before another node refuses them
PRUNE_EVERY, PRUNE_ROUNDS = 60.0, 10  # seconds between prunes of ended sign-ins and invites; batches of 1,000 each
SIGN_INS, SIGN_IN_REFILL = 10, 6.0  # sign-ins one account makes: 10 at once, then one every 6 s (each a row kept,
# and a password's hash: an account holder signing in again and again from many addresses grew the sign-ins table
# faster than it was pruned and kept the hash queue full; per node)
ACCOUNT_TRIES, ACCOUNT_REFILL = 5, 60.0  # failed sign-ins per account: 5 at once, then one a minute
# (from addresses where it has not signed in lately; and from any one address, wherever it signed in)
ADDRESS_TRIES, ADDRESS_REFILL = 20, 10.0  # failed sign-ins (and bad invites) per address: 20, then one per 10 s
INVITE_TAKEN, INVITE_TAKEN_REFILL = 10, 300.0  # ids an invite's sign-up is told are taken: 10, then one per 5 min
# (an invitee must learn that the id they chose is taken; with no bound, an invite was a list of who has an account)
WRONG = "wrong user id or password"
CREDENTIAL_ID = re.compile(r"[A-Za-z0-9_-]{1,1400}")
"""A passkey's id as a browser sends it: base64url of at most 1,023 bytes (WebAuthn); anything else is no passkey
of ours, and is not looked up."""
PASSKEY_FAILED = "this passkey did not sign you in: it is not one of an account here, or its answer was refused"
RP_NAME = "peercall"
PASSKEY_TIMEOUT_MS = 120_000
MAX_CREDENTIAL_JSON = 8 * 1024  # an attestation without certificates (attestation "none") is well under this


def display_name(value: object) -> str:
    """A display name as given, trimmed: 1 to MAX_NAME characters of text, no control characters (it is shown
    as text wherever a person is shown, never as markup)."""
    if not isinstance(value, str):
        raise Refusal(400, "bad-name", f"'name' is your display name: 1 to {MAX_NAME} characters")
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME or not is_plain_text(name):
        raise Refusal(400, "bad-name", f"a display name is 1 to {MAX_NAME} characters, without control characters")
    return name


def passkey_label(value: object, field: str = "passkeyName") -> str:
    """A name for a passkey as given (`field` of the request), trimmed: 1 to MAX_NAME characters of text, no
    control characters (shown in the user's list of sign-in methods)."""
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= MAX_NAME or not is_plain_text(value):
        raise Refusal(400, "bad-name", f"'{field}' names this passkey: 1 to {MAX_NAME} characters, no control ones")
    return value.strip()


def _unb64(text: str) -> bytes:
    """base64url without padding (WebAuthn's JSON) to bytes; ValueError if it is not."""
    if not isinstance(text, str):
        raise ValueError("not base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _passkey_json(credential: Credential) -> dict[str, Any]:
    try:
        passkey = Passkey.decode(credential.secret)
    except ValueError:
        passkey = Passkey(b"", 0, (), "")
    return {
        "id": credential.key,
        "name": passkey.name,
        "transports": list(passkey.transports),
        "created": credential.created,
        "lastUsed": credential.last_used,
    }


def _address(request: Request) -> str:
    """Whose failures count together: the client's address (IPv6: its /64)."""
    return address_group(request.client.host if request.client else "")


def _busy(busy: Busy) -> Refusal:
    """A password that could not be checked now (auth/accounts.py `Passwords`): its address's own are waiting, or
    too many are."""
    if busy.mine:
        return Refusal(
            429,
            "too-many-attempts",
            "a password from your address is being checked already: try again in 1 s",
            {"retry-after": "1"},
        )
    message = "too many passwords wait to be checked on this server: try again in 1 s"
    return Refusal(503, "overloaded", message, {"retry-after": "1"})


def _pair(account: str, address: str) -> str:
    return f"{account}\n{address}"


@dataclasses.dataclass(slots=True)
class Attempt:
    """The tries an attempt (a password, a passkey, an invite) took from the throttles as it started: kept if
    it fails, given back if it succeeds or is not made (`AccountsApi._attempt`)."""

    address: str
    taken: list[tuple[Throttle, str, float]]


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "admin": user.admin, "disabled": user.disabled, "created": user.created}


class AccountsApi:
    """The routes of accounts mode and what they share: the store, the verifier (its key signs the tokens and its
    `revoked` set is refreshed here), the throttles, and the broker (to close a user's sockets on every node)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        verifier: AccountsVerifier,
        broker: object,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.store, self.verifier, self.broker, self.clock = settings, store, verifier, broker, clock
        self.passwords = Passwords()
        self.by_account = Throttle(ACCOUNT_TRIES, ACCOUNT_REFILL)
        self.by_address = Throttle(ADDRESS_TRIES, ADDRESS_REFILL)
        self.by_pair = Throttle(ACCOUNT_TRIES, ACCOUNT_REFILL, keys=100_000)  # an account from one address
        self.sign_ins = Throttle(SIGN_INS, SIGN_IN_REFILL)  # successful sign-ins per account (never given back)
        self.taken_ids = Throttle(INVITE_TAKEN, INVITE_TAKEN_REFILL)  # sign-ups per invite told "id-taken"
        self.known = Known(settings.accounts_session_ttl * 86400)
        self.challenges = Challenges()
        self.setup_token: str | None = None
        """The set-up link's token made at start while nobody has an account; handed out once (`setup_link`)."""
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the first administrator's set-up link if there is no user yet, and start refreshing the revoked
        sign-ins. A store that cannot be read is logged: accounts then refuse every sign-in until it comes back."""
        try:
            if await self.store.count_users() == 0:
                # Each node (each start) prints a link of its own; the first sign-up with one ends them all.
                token, now = new_token(), self.clock()
                setup = Invite(token_hash(token), "", now, now + SETUP_TTL, admin=True)
                try:
                    await self.store.add_invite(setup, now=now)
                except AccountLimit:  # many starts without a sign-up: start afresh
                    await self.store.drop_invites("")
                    await self.store.add_invite(setup, now=now)
                self.setup_token = token
            await self._refresh()
        except Exception:
            log.exception("could not read the accounts from the store")
        self._task = asyncio.create_task(self._keep_fresh())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def setup_link(self, base: str) -> str | None:
        """The set-up link for the banner, once (then forgotten: only its hash is kept)."""
        token, self.setup_token = self.setup_token, None
        if token is None:
            return None
        return f"{self.settings.public_url or base}/#invite={token}"

    async def _refresh(self) -> None:
        since = self.clock() - self.settings.accounts_token_ttl - 2 * AccountsVerifier.LEEWAY - 2 * REFRESH
        self.verifier.revoked = frozenset(await self.store.revoked_since(since))

    async def _keep_fresh(self) -> None:
        pruned = self.clock()
        while True:
            await asyncio.sleep(REFRESH)
            try:
                await self._refresh()
                if self.clock() - pruned >= PRUNE_EVERY:
                    pruned = self.clock()
                    for _ in range(PRUNE_ROUNDS):  # (one batch at a time: the store is shared meanwhile)
                        if await self.store.prune_accounts(pruned) < PRUNE_BATCH:
                            break
            except Exception:
                log.warning("could not read the revoked sign-ins from the store", exc_info=True)

    def _revoked(self, *session_ids: str) -> None:
        """Refuse these sign-ins' tokens on this node at once (other nodes: at their next refresh)."""
        self.verifier.revoked = self.verifier.revoked | set(session_ids)

    async def _close_sockets(self, user: str, *sign_ins: str) -> None:
        """Close the sockets of `user` on every node, if the broker can (`Broker.close_user`): every one, or (given
        `sign_ins`) those whose latest token came from one of these sign-ins; otherwise their next token renewal
        is refused."""
        close = getattr(self.broker, "close_user", None)
        if close is None:
            log.info("sign-ins of %s revoked; their open sockets end at their next token renewal", user)
            return
        try:
            for sign_in in sign_ins or (None,):
                result = close(user, CloseCode.UNAUTHORIZED, "signed out", sign_in=sign_in)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            log.warning("could not close the sockets of %s", user, exc_info=True)

    async def _introduce(self, maker: str, invitee: str) -> None:
        """The administrator who made an invite and the person who signed up with it become contacts (both ways),
        so that they see each other online and may ring each other under the contacts-only defaults of accounts
        mode; every node shows it to their open pages (`Broker.circles_changed`). The invitee asks and the maker
        accepts: a maker who has MAX_CONTACTS contacts is left with the request (answered like any other), and a
        maker who had blocked that id keeps the block (the request stays hidden). Failures are logged: the account
        is made all the same. An invite of `peercall invite` (made by no user) introduces nobody."""
        try:
            if not is_valid_id(maker) or await self.store.user(maker) is None:
                return
            now = self.clock()
            await self.store.add(invitee, maker, now=now)
            if invitee not in (await self.store.circle(maker, now=now)).blocked:
                await self.store.add(maker, invitee, now=now)
        except ContactLimit as exc:
            log.info("%s signed up with %s's invite; their request waits for %s (%s)", invitee, maker, maker, exc)
        except Exception:
            log.warning(
                "%s signed up with %s's invite, but could not be made their contact", invitee, maker, exc_info=True
            )
            return
        tell = getattr(self.broker, "circles_changed", None)
        if tell is not None:
            tell([maker, invitee])

    # -- request helpers -------------------------------------------------------------------------------------

    def _secure(self, request: Request) -> bool:
        """Whether the cookie is `Secure`: always but over plain http to a loopback host (then not)."""
        if request.url.scheme in ("https", "wss"):
            return True
        host = host_name(request.headers.get("host", ""))
        with contextlib.suppress(ValueError):
            if host == "localhost" or host.endswith(".localhost") or ipaddress.ip_address(host).is_loopback:
                return False
        raise Refusal(
            403,
            "https-required",
            "accounts need https (a sign-in would travel in clear): serve TLS, or put a proxy in front and list it "
            "in PEERCALL_FORWARDED_ALLOW_IPS; plain http works only on localhost",
        )

    def _own_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin.lower() != own.lower():
                raise Refusal(403, "csrf", f"requests from {origin[:100]!r} are refused: this API is same-origin only")
        elif origin == "null":
            raise Refusal(403, "csrf", "requests from an opaque origin are refused")
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise Refusal(403, "csrf", "cross-site requests are refused")

    def _csrf(self, request: Request, session: AccountSession | None) -> None:
        """The CSRF rules of a state-changing request (module docstring)."""
        self._own_origin(request)
        sent = request.headers.get(CSRF_HEADER)
        if not sent:
            raise Refusal(403, "csrf", "send the X-Peercall-CSRF header (its value: 'csrf' from GET /api/session)")
        if session is not None and not hmac.compare_digest(sent.encode(), self.verifier.csrf(session.id).encode()):
            raise Refusal(403, "csrf", "the X-Peercall-CSRF header is not this sign-in's 'csrf' value")

    def _cookie(self, request: Request) -> str | None:
        """The sign-in cookie that fits the request: `__Host-` over https (there an unprefixed one may have been
        planted, by an http page or a sub-domain), the plain one over http to a loopback host, none elsewhere."""
        try:
            secure = self._secure(request)
        except Refusal:
            return None
        return request.cookies.get(SECURE_COOKIE if secure else PLAIN_COOKIE)

    async def _signed_in(self, request: Request) -> tuple[AccountSession, User]:
        cookie = self._cookie(request)
        session = await self.store.session(token_hash(cookie), now=self.clock()) if cookie else None
        user = await self.store.user(session.user) if session is not None else None
        if session is None or user is None or user.disabled:
            raise Refusal(401, "unauthorized", "not signed in (or the sign-in has ended): sign in")
        return session, user

    async def signed_in_user(self, request: Request) -> str | Response:
        """The user of the request's sign-in cookie (with the CSRF rules on a state-changing request), or the error
        response: for the routes of other modules that accounts mode signs in to (server/push.py)."""
        try:
            session, user = await self._signed_in(request)
            if request.method not in ("GET", "HEAD"):
                self._csrf(request, session)
        except Refusal as refusal:
            return refused(refusal)
        return user.id

    async def _admin(self, request: Request) -> tuple[AccountSession, User]:
        session, user = await self._signed_in(request)
        if request.method != "GET":
            self._csrf(request, session)
        if not user.admin:
            raise Refusal(403, "forbidden", "only an administrator may do this")
        return session, user

    def _session_json(self, session: AccountSession, user: User) -> dict[str, Any]:
        return {
            "id": user.id,
            "name": user.name,
            "admin": user.admin,
            "session": session.id,
            "csrf": self.verifier.csrf(session.id),
            "passkeys": True,
        }

    def _sign_ins_left(self, account: str) -> None:
        """Refused (429 `too-many-sign-ins`) while `account` has signed in SIGN_INS times lately: only the right
        password or passkey spends these, so no one else can lock the account out so."""
        wait = self.sign_ins.wait(account, self.clock())
        if wait > 0:
            seconds = str(math.ceil(wait))
            message = f"this account signed in too often lately: try again in {seconds} s"
            raise Refusal(429, "too-many-sign-ins", message, {"retry-after": seconds})

    async def _sign_in(self, request: Request, user: User, status: int = 200) -> Response:
        secure = self._secure(request)
        self._sign_ins_left(user.id)
        secret, now = new_token(), self.clock()
        self.sign_ins.take(user.id, now)
        ttl = self.settings.accounts_session_ttl * 86400
        session = AccountSession(
            id=secrets.token_hex(8),
            user=user.id,
            secret_hash=token_hash(secret),
            created=now,
            last_used=now,
            expires=now + ttl,
            user_agent=request.headers.get("user-agent", "")[:200],
        )
        dropped = await self.store.add_session(session)
        if dropped:
            self._revoked(*dropped)
            await self._close_sockets(user.id, *dropped)
        response = json_response(self._session_json(session, user), status)
        self._set_cookie(response, secret, secure, int(ttl))
        return response

    def _set_cookie(self, response: Response, secret: str, secure: bool, max_age: int) -> None:
        response.set_cookie(
            SECURE_COOKIE if secure else PLAIN_COOKIE,
            secret,
            max_age=max_age,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    def _clear_cookie(self, response: Response) -> None:
        for name, secure in ((SECURE_COOKIE, True), (PLAIN_COOKIE, False)):
            response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")

    def _throttled(self, request: Request) -> str:
        """The address whose failures count; refused while it must wait (nothing is taken: no attempt yet)."""
        address = _address(request)
        self._refuse_for(self.by_address.wait(address, self.clock()))
        return address

    def _attempt(self, request: Request, account: str | None) -> Attempt:
        """Take a try from the buckets an attempt answers to, before anything is checked: attempts that arrive
        together see each other's tries spent, so that no more of them are checked than the throttles allow.
        Refused while one must wait.

        The buckets: the address's; with `account`, the account's from this address; and the account's own,
        unless the account signed in from this address lately. Guessers spending the account's own bucket thus
        do not lock its user out where they signed in before (docs/security.md)."""
        now = self.clock()
        address = _address(request)
        buckets = [(self.by_address, address)]
        if account is not None:
            pair = _pair(account, address)
            buckets.append((self.by_pair, pair))
            if not self.known.has(pair, now):
                buckets.append((self.by_account, account))
        self._refuse_for(max(throttle.wait(key, now) for throttle, key in buckets))
        return Attempt(address, [(throttle, key, throttle.take(key, now)) for throttle, key in buckets])

    def _give_back(self, attempt: Attempt) -> None:
        now = self.clock()
        for throttle, key, taken in attempt.taken:
            throttle.give_back(key, taken, now)

    def _succeeded(self, attempt: Attempt, account: str) -> None:
        """A right password or passkey: its tries come back, the failures of this address for the account are
        forgotten, and the address is known for it (the account's own bucket refills at its pace: a sign-in of
        the user does not give guessers elsewhere a new burst)."""
        self._give_back(attempt)
        pair = _pair(account, attempt.address)
        self.by_pair.forget(pair)
        self.known.add(pair, self.clock())

    @staticmethod
    def _refuse_for(wait: float, what: str = "too many failed sign-ins") -> None:
        if wait > 0:
            seconds = math.ceil(wait)
            raise Refusal(429, "too-many-attempts", f"{what}: try again in {seconds} s", {"retry-after": str(seconds)})

    # -- routes ----------------------------------------------------------------------------------------------

    async def get_session(self, request: Request) -> Response:
        """The sign-in; `"passkeys": true` also in the 401 answer, so that a sign-in page knows it may offer them."""
        try:
            session, user = await self._signed_in(request)
        except Refusal as refusal:
            body = {"error": {"code": refusal.code, "message": refusal.message}, "passkeys": True}
            return JSONResponse(body, status_code=refusal.status, headers={"cache-control": "no-store"})
        return json_response(self._session_json(session, user))

    async def post_session(self, request: Request) -> Response:
        """Password sign-in: `{"id", "password"}`."""
        self._csrf(request, None)
        self._secure(request)
        body = await json_object(request, MAX_BODY)
        account, password = body.get("id"), body.get("password")
        if not isinstance(account, str) or not isinstance(password, str) or len(password) > 1024:
            raise Refusal(400, "bad-request", 'send {"id": "<user id>", "password": "<password>"}')
        account = account[:64]
        self._sign_ins_left(account)  # before its password is hashed
        attempt = self._attempt(request, account)
        try:
            user = await self.store.user(account) if is_valid_id(account) else None
            stored = None
            if user is not None:
                stored = next((c.secret for c in await self.store.credentials(user.id) if c.kind == "password"), None)
            # Also without an account: the same time.
            matches = await self.passwords.verify(stored, password, attempt.address)
        except BaseException:
            self._give_back(attempt)
            raise
        if user is None or not matches:
            raise Refusal(401, "sign-in-failed", WRONG)
        self._succeeded(attempt, account)
        if user.disabled:
            raise Refusal(403, "disabled", "this account is disabled: ask an administrator")
        return await self._sign_in(request, user)

    async def delete_session(self, request: Request) -> Response:
        """Sign out: this sign-in ends (its signaling tokens are refused from now on)."""
        session, _ = await self._signed_in(request)
        self._csrf(request, session)
        await self.store.revoke_session(session.id, now=self.clock())
        self._revoked(session.id)
        await self._close_sockets(session.user, session.id)  # a second tab's, a program's on this sign-in
        response = json_response({"signedOut": 1})
        self._clear_cookie(response)
        return response

    async def post_token(self, request: Request) -> Response:
        """A short-lived signaling token of this sign-in for `/ws` (and the HTTP API's Bearer)."""
        session, user = await self._signed_in(request)
        self._csrf(request, session)
        ttl = self.settings.accounts_token_ttl
        token = self.verifier.mint(user.id, session.id, ttl, now=self.clock(), name=user.name)
        response = json_response({"token": token, "expiresIn": ttl, "id": user.id})
        cookie = self._cookie(request)
        assert cookie is not None
        # The sign-in was used now: its cookie lasts as long as it does again.
        self._set_cookie(response, cookie, self._secure(request), int(session.expires - self.clock()))
        return response

    async def get_sessions(self, request: Request) -> Response:
        current, user = await self._signed_in(request)
        listed = [
            {
                "id": s.id,
                "created": s.created,
                "lastUsed": s.last_used,
                "expires": s.expires,
                "userAgent": s.user_agent,
                "current": s.id == current.id,
            }
            for s in await self.store.sessions(user.id, now=self.clock())
        ]
        return json_response({"sessions": listed})

    async def delete_sessions(self, request: Request) -> Response:
        """Sign out everywhere: every sign-in of this user ends, this one too, and their sockets close."""
        session, user = await self._signed_in(request)
        self._csrf(request, session)
        ended = await self.store.revoke_sessions(user.id, now=self.clock())
        self._revoked(*ended)
        await self._close_sockets(user.id)
        response = json_response({"signedOut": len(ended)})
        self._clear_cookie(response)
        return response

    async def delete_one_session(self, request: Request) -> Response:
        current, user = await self._signed_in(request)
        self._csrf(request, current)
        which = request.path_params["sid"]
        if not await self.store.revoke_session(which, now=self.clock(), user_id=user.id):
            raise Refusal(404, "not-found", f"you have no sign-in {which[:32]!r}")
        self._revoked(which)
        await self._close_sockets(user.id, which)
        response = json_response({"signedOut": 1})
        if which == current.id:
            self._clear_cookie(response)
        return response

    async def post_signup(self, request: Request) -> Response:
        """Sign up from an invite: `{"invite", "id", "name", "password"}`, or `"passkey"` (the attestation of
        `POST /api/signup/passkey/options`'s challenge) instead of `"password"`, with `"passkeyName"` (optional: a
        name for it, as `POST /api/passkeys` takes); signed in at once."""
        self._csrf(request, None)
        self._secure(request)
        body = await json_object(request, MAX_BODY)
        invite, account = body.get("invite"), body.get("id")
        if not isinstance(invite, str) or not invite or len(invite) > 200:
            raise Refusal(400, "bad-request", "'invite' is the token after '#invite=' in the invite link")
        if not isinstance(account, str) or not is_valid_id(account):
            raise Refusal(400, "bad-id", "an id is 1-64 ASCII letters, digits, '_', '-', '.' or '@'")
        if account in self.settings.reserved_ids:
            raise Refusal(409, "id-taken", f"the id {account!r} is taken: choose another")
        name = display_name(body.get("name"))
        if "passkey" in body:
            label = passkey_label(body.get("passkeyName", "Passkey"))
            credential = self._signup_passkey(request, body["passkey"], token_hash(invite), account, name, label)
        else:
            try:
                password = check_password(body.get("password"))
            except ValueError as exc:
                raise Refusal(400, "bad-password", str(exc)) from None
        found = await self._invite(request, invite)
        if "passkey" not in body:  # (judged once the invite is good: its cost is a few ms of anyone's CPU)
            try:
                check_strength(password, [account, name])
            except ValueError as exc:
                raise Refusal(400, "bad-password", str(exc)) from None
        now = self.clock()
        # A try of the invite's, taken before the id is looked up (sign-ups sent together see it spent), and given
        # back unless the id was taken: what it bounds is how many ids one invite learns are someone's.
        key = found.token_hash
        self._refuse_for(self.taken_ids.wait(key, now), "too many of the ids you chose are taken")
        attempt = Attempt(_address(request), [(self.taken_ids, key, self.taken_ids.take(key, now))])
        try:
            if "passkey" not in body:
                hashed = await self.passwords.hash(password, _address(request))
                credential = Credential(account, "password", "", hashed, now)
            done = await self.store.sign_up(key, User(account, name, created=now), credential, now=now)
        except BaseException:
            self._give_back(attempt)
            raise
        if done is SignUp.ID_TAKEN:
            raise Refusal(409, "id-taken", f"the id {account!r} is taken: choose another")
        self._give_back(attempt)
        if done is SignUp.NO_INVITE:
            raise Refusal(404, "no-invite", "this invite link is not valid: it was used, it expired, or it is wrong")
        if found.created_by == "":  # the first administrator is here: no other set-up link may make another
            await self.store.drop_invites("")
        else:
            await self._introduce(found.created_by, account)
        user = await self.store.user(account)
        assert user is not None
        log.info("%s signed up%s", account, " as an administrator" if user.admin else "")
        self.known.add(_pair(account, _address(request)), self.clock())
        return await self._sign_in(request, user, 201)

    async def _invite(self, request: Request, invite: str) -> Invite:
        """The waiting invite of this token; a wrong one counts as a failure of the address."""
        attempt = self._attempt(request, None)
        try:
            found = await self.store.invite(token_hash(invite), now=self.clock())
        except BaseException:
            self._give_back(attempt)
            raise
        if found is None:
            raise Refusal(404, "no-invite", "this invite link is not valid: it was used, it expired, or it is wrong")
        self._give_back(attempt)
        return found

    async def post_invite(self, request: Request) -> Response:
        """An administrator makes an invite: `{"ttl": seconds, "admin": bool}` (both optional)."""
        _, user = await self._admin(request)
        body = await json_object(request, MAX_BODY)
        ttl, admin = body.get("ttl", INVITE_TTL), body.get("admin", False)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not MIN_INVITE_TTL <= ttl <= MAX_INVITE_TTL:
            raise Refusal(400, "bad-ttl", f"'ttl' is {MIN_INVITE_TTL:g} to {MAX_INVITE_TTL:g} seconds")
        if not isinstance(admin, bool):
            raise Refusal(400, "bad-request", "'admin' is true or false")
        token, now = new_token(), self.clock()
        try:
            await self.store.add_invite(Invite(token_hash(token), user.id, now, now + ttl, admin), now=now)
        except AccountLimit as exc:
            raise Refusal(409, "too-many", str(exc)) from None
        base = self.settings.public_url or f"{request.url.scheme}://{request.headers.get('host', 'localhost')}"
        return json_response({"link": f"{base}/#invite={token}", "expires": now + ttl, "admin": admin}, 201)

    async def get_users(self, request: Request) -> Response:
        await self._admin(request)
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 500:
            raise Refusal(400, "bad-limit", "limit must be a whole number from 1 to 500")
        page = await self.store.users(limit=limit + 1, after=request.query_params.get("after"))
        more = len(page) > limit
        page = page[:limit]
        return json_response({"users": [_user_json(u) for u in page], "next": page[-1].id if more else None})

    async def post_user_state(self, request: Request) -> Response:
        """`POST /api/users/{id}/disable` or `/enable`."""
        _, admin = await self._admin(request)
        target, action = request.path_params["user"], request.path_params["action"]
        if action not in ("disable", "enable"):
            raise Refusal(404, "not-found", "POST /api/users/<id>/disable or /enable")
        if target == admin.id and action == "disable":
            raise Refusal(409, "self", "you cannot disable your own account")
        revoked = [s.id for s in await self.store.sessions(target, now=self.clock())]
        if not await self.store.set_disabled(target, action == "disable", now=self.clock()):
            raise Refusal(404, "no-user", f"there is no user {target[:64]!r}")
        if action == "disable":
            self._revoked(*revoked)
            await self._close_sockets(target)
        log.info("%s %sd %s", admin.id, action, target)
        user = await self.store.user(target)
        assert user is not None
        return json_response({"user": _user_json(user)})

    async def delete_user_sessions(self, request: Request) -> Response:
        """An administrator ends every sign-in of a user (who may sign in again)."""
        await self._admin(request)
        target = request.path_params["user"]
        ended = await self.store.revoke_sessions(target, now=self.clock())
        self._revoked(*ended)
        await self._close_sockets(target)
        return json_response({"signedOut": len(ended)})

    # -- password -------------------------------------------------------------------------------------------

    async def _password(self, user_id: str) -> Credential | None:
        return next((c for c in await self.store.credentials(user_id) if c.kind == "password"), None)

    async def get_password(self, request: Request) -> Response:
        """Whether the signed-in user has a password: `{"password": {"created"} or null}`."""
        _, user = await self._signed_in(request)
        stored = await self._password(user.id)
        return json_response({"password": None if stored is None else {"created": stored.created}})

    async def post_password(self, request: Request) -> Response:
        """Add a password (an account that has only passkeys) or change it: `{"password": "<new>", "current":
        "<the password it has>"}` (`current` only when it has one; a wrong one counts as a failed sign-in)."""
        session, user = await self._signed_in(request)
        self._csrf(request, session)
        body = await json_object(request, MAX_BODY)
        try:
            password = check_password(body.get("password"))
            check_strength(password, [user.id, user.name])
        except ValueError as exc:
            raise Refusal(400, "bad-password", str(exc)) from None
        stored = await self._password(user.id)
        if stored is not None:
            current = body.get("current")
            if not isinstance(current, str) or not current:
                raise Refusal(403, "wrong-password", "to change your password, send the one you have as 'current'")
            attempt = self._attempt(request, user.id)
            try:
                right = len(current) <= 1024 and await self.passwords.verify(stored.secret, current, attempt.address)
            except BaseException:
                self._give_back(attempt)
                raise
            if not right:
                raise Refusal(403, "wrong-password", "the current password is wrong")
            self._succeeded(attempt, user.id)
        now = self.clock()
        try:
            await self.store.set_credential(
                Credential(user.id, "password", "", await self.passwords.hash(password, _address(request)), now)
            )
        except AccountLimit as exc:
            raise Refusal(409, "too-many", str(exc)) from None
        log.info("%s %s a password", user.id, "changed" if stored is not None else "added")
        return json_response({"password": {"created": now}}, 200 if stored is not None else 201)

    async def delete_password(self, request: Request) -> Response:
        """Remove the signed-in user's password (they keep signing in with a passkey)."""
        session, user = await self._signed_in(request)
        self._csrf(request, session)
        try:
            deleted = await self.store.delete_credential(user.id, "password", "")
        except AccountLimit:
            raise Refusal(409, "last-method", "this is your only way to sign in: add a passkey first") from None
        if not deleted:
            raise Refusal(404, "not-found", "you have no password")
        log.info("%s removed their password", user.id)
        return json_response({"deleted": 1})

    # -- passkeys --------------------------------------------------------------------------------------------

    def _relying_party(self, request: Request) -> tuple[str, str]:
        """The relying party id (the host name) and the expected origin of this request (module docstring)."""
        secure = self._secure(request)
        # A browser's origin leaves the default port out.
        host = request.headers.get("host", "").lower().removesuffix(":443" if secure else ":80")
        return host_name(host), f"{'https' if secure else 'http'}://{host}"

    def _creation_options(
        self, request: Request, challenge: bytes, user_id: str, name: str, exclude: list[str]
    ) -> Response:
        rp_id, _ = self._relying_party(request)
        options = webauthn.generate_registration_options(
            rp_id=rp_id,
            rp_name=RP_NAME,
            user_name=user_id,
            user_id=user_handle(user_id),
            user_display_name=name,
            challenge=challenge,
            timeout=PASSKEY_TIMEOUT_MS,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=_unb64(key)) for key in exclude],
        )
        return json_response(json.loads(webauthn.options_to_json(options)))

    def _challenge_of(self, credential: object) -> str:
        """The challenge an answer says it answers (from its clientDataJSON; checked again by the verification)."""
        if not isinstance(credential, dict):
            raise Refusal(400, "bad-passkey", "'passkey' is the credential navigator.credentials gave, as JSON")
        if len(json.dumps(credential)) > MAX_CREDENTIAL_JSON:
            raise Refusal(413, "too-large", f"the credential is larger than {MAX_CREDENTIAL_JSON} bytes")
        try:
            data = _unb64(credential["response"]["clientDataJSON"])
            return b64url(parse_client_data_json(data).challenge)
        except (KeyError, TypeError, ValueError, WebAuthnException):
            raise Refusal(400, "bad-passkey", "the credential has no readable clientDataJSON") from None

    def _registration(self, request: Request, credential: object, challenge: bytes) -> tuple[str, Passkey]:
        """The credential id (base64url) and the passkey an attestation makes, verified; a refusal says why not."""
        rp_id, origin = self._relying_party(request)
        try:
            verified = webauthn.verify_registration_response(
                credential=credential,  # type: ignore[arg-type]
                expected_challenge=challenge,
                expected_rp_id=rp_id,
                expected_origin=origin,
            )
        except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
            raise Refusal(400, "bad-passkey", f"the passkey was refused: {str(exc)[:200]}") from None
        transports: list[str] = []
        response = credential.get("response") if isinstance(credential, dict) else None
        if isinstance(response, dict) and isinstance(response.get("transports"), list):
            known = {t.value for t in AuthenticatorTransport}
            transports = [t for t in response["transports"] if t in known][:8]
        key = b64url(verified.credential_id)
        if not 16 <= len(verified.credential_id) <= 1023:  # WebAuthn: at most 1023 bytes; at least 16 random
            raise Refusal(400, "bad-passkey", "the passkey's credential id is not 16 to 1023 bytes")
        return key, Passkey(verified.credential_public_key, verified.sign_count, tuple(transports), "")

    def _signup_passkey(
        self, request: Request, credential: object, invite: str, account: str, name: str, label: str
    ) -> Credential:
        said = self._challenge_of(credential)
        challenge = self.challenges.take(said, "sign-up", self.clock())
        if challenge is None or challenge.bound != (invite, account, name):
            raise Refusal(400, "bad-challenge", "this passkey answers no waiting challenge: ask for new options")
        key, passkey = self._registration(request, credential, _unb64(said))
        return Credential(account, "passkey", key, dataclasses.replace(passkey, name=label).encode(), self.clock())

    async def post_signup_passkey_options(self, request: Request) -> Response:
        """Creation options for a sign-up with a passkey: `{"invite", "id", "name"}` (as `POST /api/signup`)."""
        self._csrf(request, None)
        self._secure(request)
        body = await json_object(request, MAX_BODY)
        invite, account = body.get("invite"), body.get("id")
        if not isinstance(invite, str) or not invite or len(invite) > 200:
            raise Refusal(400, "bad-request", "'invite' is the token after '#invite=' in the invite link")
        if not isinstance(account, str) or not is_valid_id(account):
            raise Refusal(400, "bad-id", "an id is 1-64 ASCII letters, digits, '_', '-', '.' or '@'")
        name = display_name(body.get("name"))
        await self._invite(request, invite)
        address = _address(request)
        if account in self.settings.reserved_ids or await self.store.user(account) is not None:
            raise Refusal(409, "id-taken", f"the id {account!r} is taken: choose another")
        challenge = self.challenges.issue("sign-up", address, self.clock(), (token_hash(invite), account, name))
        return self._creation_options(request, challenge, account, name, [])

    async def post_passkey_options(self, request: Request) -> Response:
        """Creation options for a signed-in user's new passkey."""
        session, user = await self._signed_in(request)
        self._csrf(request, session)
        have = await self.store.credentials(user.id)
        if len(have) >= MAX_CREDENTIALS_PER_USER:
            raise Refusal(409, "too-many", f"you have {MAX_CREDENTIALS_PER_USER} sign-in methods: delete one first")
        challenge = self.challenges.issue("add-passkey", "user:" + user.id, self.clock(), (user.id,))
        exclude = [c.key for c in have if c.kind == "passkey"]
        return self._creation_options(request, challenge, user.id, user.name, exclude)

    async def post_passkey(self, request: Request) -> Response:
        """Keep a new passkey of the signed-in user: `{"passkey": <attestation>, "name": "<a name for it>"}`."""
        session, user = await self._signed_in(request)
        self._csrf(request, session)
        body = await json_object(request, MAX_BODY)
        label = passkey_label(body.get("name", "Passkey"), "name")
        credential = body.get("passkey")
        said = self._challenge_of(credential)
        challenge = self.challenges.take(said, "add-passkey", self.clock())
        if challenge is None or challenge.bound != (user.id,):
            raise Refusal(400, "bad-challenge", "this passkey answers no waiting challenge: ask for new options")
        key, passkey = self._registration(request, credential, _unb64(said))
        stored = Credential(user.id, "passkey", key, dataclasses.replace(passkey, name=label).encode(), self.clock())
        try:
            await self.store.set_credential(stored)
        except AccountLimit as exc:
            raise Refusal(409, "too-many", str(exc)) from None
        except ValueError:
            raise Refusal(409, "passkey-taken", "this passkey is registered already") from None
        log.info("%s added a passkey", user.id)
        return json_response({"passkey": _passkey_json(stored)}, 201)

    async def get_passkeys(self, request: Request) -> Response:
        _, user = await self._signed_in(request)
        listed = [_passkey_json(c) for c in await self.store.credentials(user.id) if c.kind == "passkey"]
        return json_response({"passkeys": listed})

    async def delete_passkey(self, request: Request) -> Response:
        session, user = await self._signed_in(request)
        self._csrf(request, session)
        key = request.path_params["key"]
        try:
            deleted = await self.store.delete_credential(user.id, "passkey", key)
        except AccountLimit:
            raise Refusal(409, "last-method", "this is your only way to sign in: add another first") from None
        if not deleted:
            raise Refusal(404, "not-found", f"you have no passkey {key[:32]!r}")
        log.info("%s deleted a passkey", user.id)
        return json_response({"deleted": 1})

    async def post_session_passkey_options(self, request: Request) -> Response:
        """Request options for a passkey sign-in: no user named (the passkey is discoverable)."""
        self._csrf(request, None)
        rp_id, _ = self._relying_party(request)
        address = self._throttled(request)
        challenge = self.challenges.issue("sign-in", address, self.clock())
        options = webauthn.generate_authentication_options(
            rp_id=rp_id,
            challenge=challenge,
            timeout=PASSKEY_TIMEOUT_MS,
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return json_response(json.loads(webauthn.options_to_json(options)))

    async def post_session_passkey(self, request: Request) -> Response:
        """Passkey sign-in: `{"passkey": <assertion>}`; the answer is that of password sign-in."""
        self._csrf(request, None)
        rp_id, origin = self._relying_party(request)
        body = await json_object(request, MAX_BODY)
        credential = body.get("passkey")
        said = self._challenge_of(credential)
        self._throttled(request)
        assert isinstance(credential, dict)
        key = credential.get("id")
        ours = isinstance(key, str) and CREDENTIAL_ID.fullmatch(key) is not None
        stored = await self.store.credential("passkey", str(key)) if ours else None
        attempt = self._attempt(request, None)  # a passkey's answer is no guess: the account's buckets do not apply
        challenge = self.challenges.take(said, "sign-in", self.clock())
        try:
            if stored is None or challenge is None:
                raise ValueError("unknown passkey or challenge")
            passkey = Passkey.decode(stored.secret)
            handle = credential.get("response", {}).get("userHandle")
            if handle and handle != b64url(user_handle(stored.user)):
                raise ValueError("the user handle is not the passkey's")
            verified = webauthn.verify_authentication_response(
                credential=credential,
                expected_challenge=_unb64(said),
                expected_rp_id=rp_id,
                expected_origin=origin,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=passkey.sign_count,
            )
        except (WebAuthnException, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.info("a passkey sign-in failed: %s", str(exc)[:200])
            raise Refusal(401, "sign-in-failed", PASSKEY_FAILED) from None
        self._succeeded(attempt, stored.user)
        user = await self.store.user(stored.user)
        if user is None:
            raise Refusal(401, "sign-in-failed", PASSKEY_FAILED)
        if user.disabled:
            raise Refusal(403, "disabled", "this account is disabled: ask an administrator")
        used = dataclasses.replace(passkey, sign_count=verified.new_sign_count)
        await self.store.use_credential(dataclasses.replace(stored, secret=used.encode()), now=self.clock())
        return await self._sign_in(request, user)

    def routes(self) -> list[BaseRoute]:
        def wrap(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
            async def endpoint(request: Request) -> Response:
                try:
                    response: Response = await handler(request)
                except Refusal as refusal:
                    return refused(refusal)
                except Busy as busy:
                    return refused(_busy(busy))
                except Full as full:
                    seconds = str(max(1, math.ceil(full.wait)))
                    message = f"too many passkey requests wait on this server: try again in {seconds} s"
                    return refused(Refusal(429, "too-many-challenges", message, {"retry-after": seconds}))
                return response

            return endpoint

        return [
            Route("/api/session", wrap(self.get_session), methods=["GET"]),
            Route("/api/session", wrap(self.post_session), methods=["POST"]),
            Route("/api/session", wrap(self.delete_session), methods=["DELETE"]),
            Route("/api/session/token", wrap(self.post_token), methods=["POST"]),
            Route("/api/sessions", wrap(self.get_sessions), methods=["GET"]),
            Route("/api/sessions", wrap(self.delete_sessions), methods=["DELETE"]),
            Route("/api/sessions/{sid}", wrap(self.delete_one_session), methods=["DELETE"]),
            Route("/api/session/passkey/options", wrap(self.post_session_passkey_options), methods=["POST"]),
            Route("/api/session/passkey", wrap(self.post_session_passkey), methods=["POST"]),
            Route("/api/passkeys/options", wrap(self.post_passkey_options), methods=["POST"]),
            Route("/api/passkeys", wrap(self.post_passkey), methods=["POST"]),
            Route("/api/passkeys", wrap(self.get_passkeys), methods=["GET"]),
            Route("/api/passkeys/{key}", wrap(self.delete_passkey), methods=["DELETE"]),
            Route("/api/password", wrap(self.get_password), methods=["GET"]),
            Route("/api/password", wrap(self.post_password), methods=["POST"]),
            Route("/api/password", wrap(self.delete_password), methods=["DELETE"]),
            Route("/api/signup/passkey/options", wrap(self.post_signup_passkey_options), methods=["POST"]),
            Route("/api/signup", wrap(self.post_signup), methods=["POST"]),
            Route("/api/invites", wrap(self.post_invite), methods=["POST"]),
            Route("/api/users", wrap(self.get_users), methods=["GET"]),
            Route("/api/users/{user}/sessions", wrap(self.delete_user_sessions), methods=["DELETE"]),
            Route("/api/users/{user}/{action}", wrap(self.post_user_state), methods=["POST"]),
        ]
