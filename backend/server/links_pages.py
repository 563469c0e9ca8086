"""What a link's holder gets: no account, only the URL (``backend.server.links``).

=================================== ===============================================
route                               answer
=================================== ===============================================
GET  /l/{token}                     a file: its content (type, disposition, ranges
                                    as ``backend.server.web.content``); a folder: a
                                    listing page; ``?zip=1``: the folder as a zip
GET  /l/{token}/{path}              the same, for what is inside a linked folder
POST /l/{token} (password)          a password link: the password, checked through
                                    the login throttle; right: a cookie for this
                                    link's pages, then 303 to the link
=================================== ===============================================

An unknown, revoked or expired token is 404, the same for all three. Every answer
carries ``Referrer-Policy: no-referrer`` (the token never leaks to another site
through a ``Referer``) and ``X-Robots-Tag: noindex``; every use is logged
(``link ID used from ADDRESS: what``) and counted.

A password link's cookie holds ``HMAC-SHA256(token, pw_hash)``: only someone who was
told the password gets it, it is bound to that link (``Path=/l/{token}``), and it stops
working when the link goes. Wrong passwords count against the link in the login
throttle (key ``link:ID``) and against the guesser's address; while barred, 429 with
``Retry-After`` and no derivation.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

import trio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backend.errors import NotFound
from backend.server import links
from backend.server.accounts_api import throttled
from backend.server.auth import verify_password
from backend.server.commit_context import CommitContext
from backend.server.database import Tx
from backend.server.files import Node
from backend.server.http import state_of
from backend.server.web.downloads import folder_zip, node_response
from backend.server.web.paths import files_of, path_param
from backend.server.web.render import href, page
from backend.server.web.session import answer_web_errors, form_of, secured

log = logging.getLogger("loft.server")

LINK_HEADERS = {"Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow"}
COOKIE = "loft_link"


def _token(request: Request) -> str:
    token = str(request.path_params["token"])
    if not links.is_token(token):
        raise NotFound("no such link: it may have expired or been revoked")
    return token


def _unlock_value(token: str, pw_hash: str) -> str:
    return hmac.new(token.encode(), pw_hash.encode(), hashlib.sha256).hexdigest()


async def _open(request: Request, token: str) -> tuple[links.Link, Node]:
    """The live link and the node it names; its use counted."""
    now = int(time.time())

    def work(tx: Tx) -> tuple[links.Link, Node] | None:
        link = links.resolve(tx, token, now)
        entry = None if link is None else CommitContext(tx, link.ns, 0, "", 0, 0).entry(
            link.entry)
        if link is None or entry is None:
            return None  # committed: an expired link's row goes
        links.used(tx, link.id, now)
        role = links.role(tx, link.user_id, link.ns) or "viewer"
        return link, Node(link.ns, entry, role, link.user_id)

    found = await state_of(request).metadata.account_tx(work)
    if found is None:
        raise NotFound("no such link: it may have expired, been revoked, or what it shared"
                       " was deleted")
    return found


def _answer(response: Response) -> Response:
    return secured(response, LINK_HEADERS)


def link_route(fn: Callable[[Request], Awaitable[Response]]) -> Callable[
        [Request], Awaitable[Response]]:
    """``answer_web_errors``, and the link headers on every answer, refusals too."""
    answered = answer_web_errors(fn)

    async def wrapper(request: Request) -> Response:
        response = await answered(request)
        response.headers.update(LINK_HEADERS)
        return response

    return wrapper


@link_route
async def show(request: Request) -> Response:
    token = _token(request)
    link, node = await _open(request, token)
    base = f"/l/{token}"
    address = request.client.host if request.client else "unknown"
    if link.pw_hash is not None:
        given = request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(given.encode(), _unlock_value(token, link.pw_hash).encode()):
            log.info("link %s used from %s: password asked", link.id, address)
            return _answer(page(request, "link_password.html", {"base": base, "message": ""},
                                401))
    files, parts = files_of(request), path_param(request)
    for name in parts:
        children = [c for c in await files.children(node) if c.name == name] if node.is_dir \
            else []
        if not children:
            raise NotFound("no such file or folder in this link")
        node = children[0]
    what = href(parts) if parts else "/"
    title = node.name or "Shared folder"
    if node.is_dir and request.query_params.get("zip") == "1":
        log.info("link %s used from %s: zip of %s", link.id, address, what)
        return _answer(folder_zip(files, node, title, LINK_HEADERS))
    if node.is_dir:
        log.info("link %s used from %s: listing of %s", link.id, address, what)
        children = await files.children(node)
        rows = [{"name": c.name, "kind": "dir" if c.is_dir else c.entry["kind"],
                 "size": c.size, "mtime": c.entry["mtime"]} for c in children]
        return _answer(page(request, "link_folder.html", {"title": title, "base": base,
                                                          "parts": parts, "children": rows}))
    log.info("link %s used from %s: %s %s (range %s)", link.id, address, request.method, what,
             request.headers.get("range", "none"))
    return _answer(node_response(request, files, node, False, LINK_HEADERS))


@link_route
async def unlock(request: Request) -> Response:
    token = _token(request)
    form = await form_of(request)
    link, _ = await _open(request, token)
    base = f"/l/{token}"
    if link.pw_hash is None:
        return RedirectResponse(base, 303)
    state = state_of(request)
    key, address = f"link:{link.id}", request.client.host if request.client else "unknown"
    throttled(state, key, address)
    async with state.logins.kdf:
        throttled(state, key, address)
        ok = await trio.to_thread.run_sync(verify_password, form.get("password", ""),
                                           link.pw_hash)
    if not ok:
        state.logins.failed(key, address)
        log.info("link %s used from %s: wrong password", link.id, address)
        return _answer(page(request, "link_password.html",
                            {"base": base, "message": "Wrong password."}, 401))
    state.logins.succeeded(key)
    log.info("link %s used from %s: unlocked", link.id, address)
    response = RedirectResponse(base, 303)
    response.set_cookie(COOKIE, _unlock_value(token, link.pw_hash), path=base, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return _answer(response)
