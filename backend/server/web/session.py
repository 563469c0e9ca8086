"""Sessions of the web page: cookies backed by device tokens, CSRF, and the headers
every page is sent with.

A session is a device token of its user (``backend.server.accounts``), issued at sign
in under the device name ``web-XXXXXX`` (six random hex digits, shown by ``loft
devices``, revoked by ``loft devices revoke``), and kept in the cookie ``loft_session``:
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends
it), ``Path=/``, and ``Secure`` when the page came over TLS. The server keeps only the
token's hash; expiry, renewal and revocation are the token's.

CSRF: every request that changes something (any method but GET and HEAD) must carry
the session's CSRF token, in the form field ``csrf`` or the header ``X-CSRF-Token``;
the token is ``HMAC-SHA256(session token, "loft-csrf")``, so it is known only to pages
of that session and needs no state. A request whose ``Origin`` header names another
origin is refused too. Sign in, which has no session yet, uses a double-submit pair:
a random ``loft_signin`` cookie (``SameSite=Strict``) and the same value in the form.
A refusal is 403 and changes nothing.

Every answer of the web page carries ``SECURITY_HEADERS``: a Content-Security-Policy
that allows scripts, styles and connections to this origin only (no inline script, no
frames), ``nosniff``, and no framing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from backend.errors import BadRequest, Forbidden, LoftError, TooManyAttempts, Unauthorized
from backend.server.http import Caller, read_body, state_of
from backend.server.web.render import page

log = logging.getLogger("loft.server")

COOKIE = "loft_session"
SIGNIN_COOKIE = "loft_signin"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD")
FORM_LIMIT = 64 * 1024

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
       " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secured(response: Response, headers: dict[str, str] | None = None) -> Response:
    """``response`` with ``SECURITY_HEADERS`` (and ``headers``) set where not already."""
    for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
        if name not in response.headers:
            response.headers[name] = value
    return response


class Session:
    """The signed-in user of a request, and the token behind its cookie."""

    def __init__(self, caller: Caller, token: str) -> None:
        self.caller = caller
        self.token = token
        self.csrf = csrf_token(token)


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"loft-csrf", hashlib.sha256).hexdigest()


def is_tls(request: Request) -> bool:
    return request.url.scheme in ("https", "wss")


def set_cookie(response: Response, request: Request, name: str, value: str,
               max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=is_tls(request))


async def session_of(request: Request) -> Session | None:
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > 128:
        return None
    found = await state_of(request).metadata.resolve_token(token)
    return None if found is None else Session(Caller(*found), token)


async def form_of(request: Request) -> dict[str, str]:
    """A ``application/x-www-form-urlencoded`` body (at most 64 KiB), one value a key."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise BadRequest("expected a form")
    body = await read_body(request, FORM_LIMIT)
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("the form is not UTF-8") from None
    return {key: values[-1] for key, values in fields.items()}


def check_origin(request: Request) -> None:
    """Refuse a change sent from a page of another origin."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise Forbidden("request from another site refused")


def check_csrf(request: Request, expected: str, form: dict[str, str] | None) -> None:
    check_origin(request)
    given = request.headers.get(CSRF_HEADER) or (form or {}).get("csrf", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def wants_html(request: Request) -> bool:
    return request.method in SAFE_METHODS and "json" not in request.headers.get("accept", "")


def error_response(request: Request, err: LoftError) -> Response:
    """A refusal or failure: a page for a browser's navigation, JSON for the script."""
    response: Response
    if wants_html(request) or request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        response = page(request, "error.html", {"message": err.message}, status=err.status)
    else:
        response = JSONResponse({"error": err.code, "message": err.message}, err.status)
    if isinstance(err, TooManyAttempts):
        response.headers["Retry-After"] = str(err.retry_after)
    return secured(response)


Handler = Callable[[Request], Awaitable[Response]]


def answer_web_errors(fn: Handler) -> Handler:
    """The web page's ``answer_errors``: the same statuses (``LoftError.status``),
    answered as a page or as JSON (``error_response``)."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return secured(await fn(request))
        except LoftError as err:
            if not err.permanent and not isinstance(err, TooManyAttempts):
                log.error("%s %s: %s", request.method, request.url.path, err.message)
            return error_response(request, err)
        except ClientDisconnect:
            log.info("%s %s: the client went away mid-request", request.method,
                     request.url.path)
            return Response(status_code=400)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(request, LoftError("internal server error"))

    return wrapper


SessionHandler = Callable[[Request, Session], Awaitable[Response]]
FormHandler = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


def signed_in(fn: SessionHandler) -> Handler:
    """A route for a signed-in user. Without a live session: a page is redirected to
    sign in (and back after), anything else answered 401. A change needs the CSRF
    token in the ``X-CSRF-Token`` header (forms: ``form_action``)."""

    async def wrapper(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            if wants_html(request):
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/signin?next={quote(back, safe='/')}", 303)
            raise Unauthorized("signed out or session expired: sign in again")
        if request.method not in SAFE_METHODS:
            check_csrf(request, session.csrf, None)
        return await fn(request, session)

    return answer_web_errors(wrapper)


def form_action(fn: FormHandler) -> Handler:
    """A form post of a signed-in user: the form's ``csrf`` field is checked before
    anything else happens; no session: 401 (a form post is not redirected)."""

    async def wrapper(request: Request) -> Response:
        session = await session_of(request)
        form = await form_of(request)
        if session is None:
            raise Unauthorized("signed out or session expired: sign in again")
        check_csrf(request, session.csrf, form)
        return await fn(request, session, form)

    return answer_web_errors(wrapper)


def new_signin_nonce() -> str:
    return secrets.token_urlsafe(24)


def web_device_name() -> str:
    return "web-" + secrets.token_hex(3)


def json_ok(value: Any, status: int = 200) -> Response:
    return JSONResponse(value, status)
