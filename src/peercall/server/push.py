"""The HTTP API of Web Push (`PEERCALL_PUSH=true`; docs/push.md, and docs/protocol.md "Web Push" for the routes).

- `GET /api/push`: whether push is on, and the VAPID public key browsers subscribe with (`applicationServerKey`).
- `POST /api/push/subscriptions`: keep a browser's subscription for the user asking; `DELETE` drops one (or all).
  Who asks is the user of a bearer signaling token (token and accounts mode), or, in accounts mode, of the sign-in
  cookie (with the `X-Peercall-CSRF` header, as every state-changing route of accounts mode).
- `POST /api/push/subscriptions/replace`: the service worker's `pushsubscriptionchange` (the browser replaced its
  subscription). No sign-in (the worker has no token in token mode): the old subscription's `auth` secret, which
  only that browser and this server know, is the authority to replace it, for its user and device only.
- `POST /api/calls/{callId}/decline`: a notification's Decline. No sign-in: the body's `decline` capability (made
  for this call and its callee, short-lived; hub/push.py `VapidKey.decline_token`) is the authority.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..hub.push import PushService, endpoint_allowed, unb64url
from ..hub.router import Hub
from ..protocol.errors import SharedStateUnavailable
from ..protocol.messages import is_valid_id
from ..store.base import PushSubscription
from .jsonapi import NO_STORE, Refusal, error_response, json_object, refused

log = logging.getLogger("peercall.push")

MAX_BODY = 8 * 1024
MAX_ENDPOINT = 2048

Who = Callable[[Request], Awaitable["str | Response"]]
"""Who is asking (a user id), or the error response to send."""


def _device(device: object) -> str:
    if not isinstance(device, str) or not is_valid_id(device):
        raise Refusal(
            400, "bad-device", "'device' names this browser: 1-64 ASCII letters, digits, '_', '-', '.' or '@'"
        )
    return device


def _key(value: object, name: str, length: int) -> str:
    """A base64url key of the browser's PushSubscription of `length` bytes."""
    try:
        if not isinstance(value, str) or len(value) > 200:
            raise ValueError
        raw = unb64url(value)
    except ValueError:
        raise Refusal(400, "bad-subscription", f"'keys.{name}' must be base64url") from None
    if len(raw) != length or (name == "p256dh" and raw[0] != 4):
        raise Refusal(400, "bad-subscription", f"'keys.{name}' is not a Web Push {name} key")
    return value


class PushApi:
    """The routes above, for `push` (None: push is off, and they say so)."""

    def __init__(
        self,
        push: PushService | None,
        hub: Hub,
        who: Who,
        *,
        clock: Callable[[], float] = time.time,
        may_log: Callable[[Request], bool] = lambda request: True,
    ) -> None:
        """`may_log`: whether a failure of a request may be logged (the budget of its address)."""
        self.push = push
        self.hub = hub
        self.who = who
        self.clock = clock
        self.may_log = may_log

    def _on(self) -> PushService:
        if self.push is None:
            raise Refusal(404, "push-disabled", "this server does not ring closed apps (PEERCALL_PUSH is off)")
        return self.push

    async def get_push(self, request: Request) -> Response:
        if self.push is None:
            return JSONResponse({"enabled": False, "applicationServerKey": None})
        return JSONResponse({"enabled": True, "applicationServerKey": self.push.key.public_key})

    async def post_subscription(self, request: Request) -> Response:
        push = self._on()
        user = await self.who(request)
        if isinstance(user, Response):
            return user
        body = await json_object(request, MAX_BODY)
        device = _device(body.get("device"))
        endpoint, p256dh, auth = self._subscription(push, body.get("subscription"))
        await push.subscribe(PushSubscription(user, device, endpoint, p256dh, auth, self.clock()))
        log.info("%s: push subscription kept for device %s", user, device)
        return JSONResponse({"user": user, "device": device, "endpoint": endpoint}, status_code=201, headers=NO_STORE)

    async def post_replacement(self, request: Request) -> Response:
        push = self._on()
        body = await json_object(request, MAX_BODY)
        user, device, old = body.get("user"), _device(body.get("device")), body.get("old")
        if not isinstance(user, str) or not is_valid_id(user):
            raise Refusal(400, "bad-request", "'user' is the user the old subscription was kept for")
        if (
            not isinstance(old, dict)
            or not isinstance(old.get("endpoint"), str)
            or not isinstance(old.get("auth"), str)
        ):
            raise Refusal(400, "bad-request", "'old' is the replaced subscription's {endpoint, auth}")
        endpoint, p256dh, auth = self._subscription(push, body.get("subscription"))
        kept = await push.store.push_subscriptions(user)
        if not any(
            s.device == device
            and s.endpoint == old["endpoint"]
            and hmac.compare_digest(s.auth.encode(), old["auth"].encode())
            for s in kept
        ):
            raise Refusal(403, "unknown-subscription", "no such subscription is kept (it was dropped): subscribe again")
        # It replaces the old one (the same user and device: store.base.PushSubscriptions).
        await push.subscribe(PushSubscription(user, device, endpoint, p256dh, auth, self.clock()))
        log.info("%s: push subscription of device %s replaced by the browser", user, device)
        return JSONResponse({"user": user, "device": device, "endpoint": endpoint}, status_code=201, headers=NO_STORE)

    def _subscription(self, push: PushService, subscription: object) -> tuple[str, str, str]:
        """The endpoint and keys of a browser's PushSubscription JSON. Raises Refusal."""
        if not isinstance(subscription, dict) or not isinstance(subscription.get("keys"), dict):
            raise Refusal(400, "bad-subscription", "'subscription' is the browser's PushSubscription (toJSON())")
        endpoint = subscription.get("endpoint")
        if not isinstance(endpoint, str) or len(endpoint) > MAX_ENDPOINT:
            raise Refusal(
                400, "bad-subscription", f"'subscription.endpoint' is a URL of at most {MAX_ENDPOINT} characters"
            )
        if not endpoint_allowed(endpoint, push.services):
            raise Refusal(
                400,
                "push-service-refused",
                "this server sends pushes only to the push services it lists (PEERCALL_PUSH_SERVICES)",
            )
        keys = subscription["keys"]
        return endpoint, _key(keys.get("p256dh"), "p256dh", 65), _key(keys.get("auth"), "auth", 16)

    async def delete_subscription(self, request: Request) -> Response:
        push = self._on()
        user = await self.who(request)
        if isinstance(user, Response):
            return user
        body = await json_object(request, MAX_BODY)
        endpoint, device = body.get("endpoint"), body.get("device")
        if endpoint is not None and not isinstance(endpoint, str):
            raise Refusal(400, "bad-request", "'endpoint' is the subscription's endpoint URL")
        if device is not None and not isinstance(device, str):
            raise Refusal(400, "bad-request", "'device' is the device id the subscription was made with")
        deleted = await push.unsubscribe(user, endpoint=endpoint, device=device)
        return JSONResponse({"deleted": deleted}, headers=NO_STORE)

    async def post_decline(self, request: Request) -> Response:
        push = self._on()
        call_id = request.path_params["call_id"]
        body = await json_object(request, MAX_BODY)
        try:
            callee = push.key.check_decline(body.get("decline"), call_id, self.clock())
        except ValueError as exc:
            raise Refusal(403, "bad-capability", f"cannot decline call {call_id[:64]}: {exc}") from None
        try:
            declined = await self.hub.decline(call_id, callee)
        except SharedStateUnavailable:
            raise Refusal(503, "service-unavailable", "the server cannot reach its shared state; try again") from None
        if not declined:
            raise Refusal(409, "not-ringing", f"call {call_id} is not ringing any more (answered, or over)")
        return Response(status_code=204, headers=NO_STORE)

    def routes(self) -> list[BaseRoute]:
        def wrap(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(request)
                except Refusal as refusal:
                    return refused(refusal)
                except Exception:
                    if self.may_log(request):
                        log.exception("%s %s failed", request.method, request.url.path[:200])
                    return error_response(503, "push-unavailable", "the push subscriptions cannot be reached right now")

            return endpoint

        return [
            Route("/api/push", wrap(self.get_push), methods=["GET"]),
            Route("/api/push/subscriptions", wrap(self.post_subscription), methods=["POST"]),
            Route("/api/push/subscriptions", wrap(self.delete_subscription), methods=["DELETE"]),
            Route("/api/push/subscriptions/replace", wrap(self.post_replacement), methods=["POST"]),
            Route("/api/calls/{call_id}/decline", wrap(self.post_decline), methods=["POST"]),
        ]
