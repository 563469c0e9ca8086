"""Signing in and out of the web page.

``POST /signin`` goes through the same throttle as ``POST /v1/login``
(``backend.server.accounts_api``): a barred account or address is answered 429 with
``Retry-After`` before any password is derived, and every wrong password counts. A
right one issues a device token named ``web-XXXXXX`` (``session.web_device_name``) and
sets it as the session cookie; ``POST /signout`` revokes that token and clears it.
"""

from __future__ import annotations

import hmac
import logging
import math
import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backend.errors import Forbidden
from backend.server import accounts
from backend.server.accounts_api import check_password, throttled
from backend.server.auth import new_token, token_hash
from backend.server.http import state_of
from backend.server.web.render import page
from backend.server.web.session import (
    COOKIE,
    SIGNIN_COOKIE,
    Session,
    answer_web_errors,
    check_origin,
    form_action,
    form_of,
    new_signin_nonce,
    session_of,
    set_cookie,
    web_device_name,
)

log = logging.getLogger("loft.server")

WEB_TTL = 14 * 24 * 3600
"""A web session's life from its last use (at most the server's token life)."""


def _next(value: str) -> str:
    """Where to go after signing in: a path of this site, never another site."""
    if (value.startswith("/") and not value.startswith("//") and "\\" not in value
            and value.isprintable()):  # no control chars: a browser reads "/\t/x" as "//x"
        return value
    return "/files/"


def _form(request: Request, message: str = "", name: str = "", status: int = 200,
          next_path: str = "/files/") -> Response:
    nonce = new_signin_nonce()
    response = page(request, "signin.html", {"message": message, "nonce": nonce,
                                             "next": next_path, "name": name}, status)
    set_cookie(response, request, SIGNIN_COOKIE, nonce, 3600)
    return response


@answer_web_errors
async def signin_page(request: Request) -> Response:
    if await session_of(request) is not None:
        return RedirectResponse("/files/", 303)
    return _form(request, next_path=_next(request.query_params.get("next", "")))


@answer_web_errors
async def signin(request: Request) -> Response:
    check_origin(request)
    form = await form_of(request)
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), form.get("nonce", "").encode()):
        raise Forbidden("the sign-in form expired: reload the page and try again")
    user, password = form.get("user", "")[:256], form.get("password", "")
    next_path = _next(form.get("next", ""))
    state = state_of(request)
    address = request.client.host if request.client else "unknown"
    throttled(state, user, address)
    found = await check_password(state, user, password, address)
    if found is None:
        log.info("web sign-in refused for %r from %s", user, address)
        return _form(request, "Wrong user name or password.", user, 401, next_path)
    token, device = new_token(), web_device_name()
    ttl = min(WEB_TTL, state.max_token_ttl)
    await state.metadata.add_token(token, found[0], device, math.ceil(time.time()) + ttl)
    log.info("web sign-in: %s as device %s from %s", user, device, address)
    response = RedirectResponse(next_path, 303)
    set_cookie(response, request, COOKIE, token, ttl)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


@form_action
async def signout(request: Request, session: Session, form: dict[str, str]) -> Response:
    hashed = token_hash(session.token)
    await state_of(request).metadata.account_tx(lambda tx: accounts.drop(tx, hashed))
    log.info("web sign-out: %s (device %s)", session.caller.user, session.caller.device)
    response = RedirectResponse("/signin", 303)
    response.delete_cookie(COOKIE, path="/")
    return response
