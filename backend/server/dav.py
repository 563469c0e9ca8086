"""WebDAV (class 1 and 2) under ``/dav/``, on the API's own listener.

WsgiDAV (pinned in ``pyproject.toml``) speaks the protocol; ``dav_provider`` maps it
onto ``backend.server.files``; ``dav_wsgi`` runs it in worker threads beside the
trio loop; ``dav_auth`` decides who is calling before WsgiDAV sees the request.

================================ ======================================================
what                             how
================================ ======================================================
``/dav/``                        the user's own tree; shared folders inside it, with
                                 their roles (a viewer's write: 403)
GET, HEAD                        streamed a chunk at a time; ``Range`` (one range)
PUT                              cut and committed as a mount does; ``If-Match`` on the
                                 ETag (the entry's ``rev``); 507 beyond the quota
MKCOL, DELETE, MOVE, COPY        one commit each (a COPY names the same chunks; a MOVE
                                 into another shared folder is a copy, then a delete)
PROPFIND                         ``Depth: 0`` and ``1``; ``infinity`` (or no Depth) is
                                 refused, 403 ``DAV:propfind-finite-depth``
``.versions`` (any folder)       the past, read-only (``backend.server.files_past``):
                                 a change there is 403; COPY out of it restores
PROPPATCH, dead properties       kept in this server process's memory, by path
LOCK, UNLOCK                     WsgiDAV's lock manager in this process's memory: seen
                                 by every client of this server, gone at its restart,
                                 not shared between nodes behind one database
================================ ======================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

import trio
from wsgidav.error_printer import ErrorPrinter
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from backend.errors import BadRequest, LoftError, TooManyAttempts, Unauthorized
from backend.server.dav_auth import BasicAuth
from backend.server.dav_provider import ACCOUNT, NURSERY, LoftProvider
from backend.server.dav_wsgi import WsgiBridge
from backend.server.files import Files
from backend.server.http import ServerState
from backend.server.limits import Receive, Send

log = logging.getLogger("loft.server")

PREFIX = "/dav"
REALM = "Loft"
BLOCK_SIZE = 1024 * 1024
"""Bytes WsgiDAV reads of a PUT body, and sends of a GET answer, at a time."""

_FINITE_DEPTH = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                 b'<D:error xmlns:D="DAV:"><D:propfind-finite-depth/></D:error>\n')


class FiniteDepth(BaseMiddleware):  # type: ignore[misc]
    """Refuse a PROPFIND of the whole tree (``Depth: infinity``, the default), as
    RFC 4918 9.1 allows: its answer would grow with the tree."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        depth = environ.get("HTTP_DEPTH", "infinity").strip().lower()
        if environ["REQUEST_METHOD"] == "PROPFIND" and depth == "infinity":
            start_response("403 Forbidden", [
                ("Content-Type", "application/xml; charset=utf-8"),
                ("Content-Length", str(len(_FINITE_DEPTH)))])
            return [_FINITE_DEPTH]
        return self.next_app(environ, start_response)


def wsgidav_app(files: Files) -> WsgiDAVApp:
    config = {
        "provider_mapping": {PREFIX: LoftProvider(files)},
        "middleware_stack": [FiniteDepth, ErrorPrinter, RequestResolver],
        "lock_storage": True,
        "property_manager": True,
        "block_size": BLOCK_SIZE,
        "verbose": 1,
        "logging": {"enable": False},
        "suppress_version_info": True,
        "dir_browser": {"enable": False},
        "hotfixes": {"re_encode_path_info": True, "unquote_path_info": False},
    }
    return WsgiDAVApp(config)


class DavApp:
    """The ASGI app served under ``PREFIX``: authenticates, then runs WsgiDAV."""

    def __init__(self, state: ServerState) -> None:
        self.auth = BasicAuth(state)
        self.bridge = WsgiBridge(wsgidav_app(Files(state.metadata, state.blocks,
                                                   state.notifier)))

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            if any(part in (".", "..") for part in scope["path"].split("/")):
                # Refused here: WsgiDAV would answer it with an empty body.
                raise BadRequest("a path may not hold '.' or '..' segments")
            user, account = await self.auth.account(scope)
        except LoftError as err:
            await _refuse(send, err)
            return
        async with trio.open_nursery() as nursery:
            await self.bridge.serve(scope, receive, send, {
                ACCOUNT: account,
                NURSERY: nursery,
                "wsgidav.auth.user_name": user,
                "wsgidav.auth.realm": REALM,
                "wsgidav.auth.roles": [],
            })


async def _refuse(send: Send, err: LoftError) -> None:
    body = (err.message + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]
    if isinstance(err, Unauthorized):
        headers.append((b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()))
    if isinstance(err, TooManyAttempts):
        headers.append((b"retry-after", str(err.retry_after).encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
