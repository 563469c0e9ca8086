"""The routes that make, list and revoke links (``backend.server.links``), for the
command line (CBOR, bearer token) and the web page (``backend.server.web.linkpages``).

=================================== ===============================================
route                               answer
=================================== ===============================================
POST /v1/links {path, [expires],    {id, url, expires}: a link to the file or folder
     [password]}                    at ``path`` (``expires``: seconds, default 7
                                    days); 403 unless owner or editor there
GET  /v1/links                      {links: [{id, path, created, expires, password,
                                    uses, last_used}]}: the caller's live links
POST /v1/links/revoke {id | token}  {id}: revoked; 404 if not the caller's
=================================== ===============================================

The URL is ``{the server's address as the request named it}/l/{token}``; the token is
in this answer only.
"""

from __future__ import annotations

import logging
import time

import trio
from starlette.requests import Request
from starlette.responses import Response

from backend import protocol as p
from backend.errors import BadRequest
from backend.server import links
from backend.server.auth import hash_password
from backend.server.database import Tx
from backend.server.files import Account
from backend.server.http import Caller, authenticated, body_map, cbor, state_of
from backend.server.web.paths import files_of, parts_of

log = logging.getLogger("loft.server")

MAX_PASSWORD = 1024


def link_url(request: Request, token: str) -> str:
    return f"{request.url.scheme}://{request.url.netloc}/l/{token}"


async def make_link(request: Request, caller: Caller, path: str, ttl: int,
                    password: str | None) -> dict[str, object]:
    """A new link to ``path`` in the caller's tree: ``{id, url, expires, path, file}``."""
    parts = parts_of(path)
    node = await files_of(request).resolve(Account(caller.user_id, caller.root_ns), parts)
    if password is not None and not 0 < len(password) <= MAX_PASSWORD:
        raise BadRequest(f"a link's password has 1 to {MAX_PASSWORD} characters")
    pw_hash = None if password is None else await trio.to_thread.run_sync(
        hash_password, password)
    now = int(time.time())
    token, link = await state_of(request).metadata.account_tx(
        lambda tx: links.create(tx, caller.user_id, node.ns, node.entry["id"], ttl, pw_hash,
                                now))
    log.info("link %s made by %s to %s (ns %d), expires %s", link.id, caller.user,
             p.join_path(parts), node.ns, p.format_instant(link.expires))
    return {"id": link.id, "url": link_url(request, token), "expires": link.expires,
            "path": p.join_path(parts), "file": not node.is_dir}


async def list_links(request: Request, caller: Caller) -> list[dict[str, object]]:
    now = int(time.time())

    def work(tx: Tx) -> list[dict[str, object]]:
        out = []
        for link in links.mine(tx, caller.user_id, now):
            out.append(link.to_wire(_shown_path(tx, caller, link)))
        return out

    found: list[dict[str, object]] = await state_of(request).metadata.account_tx(work)
    return found


def _shown_path(tx: Tx, caller: Caller, link: links.Link) -> str | None:
    """Where the linked entry is now: a path in the caller's tree if it is in their
    root namespace, else its path in the shared folder (after the folder's number)."""
    names = links.entry_path(tx, link.ns, link.entry)
    if names is None:
        return None
    if link.ns == caller.root_ns:
        return p.join_path(names)
    return f"[shared folder {link.ns}]" + p.join_path(names)


async def revoke_link(request: Request, caller: Caller, link_id: str | None,
                      token: str | None) -> str:
    if link_id is not None and not (len(link_id) == 16 and link_id.isalnum()):
        raise BadRequest("a link id is 16 hex characters")
    if token is not None and not links.is_token(token):
        raise BadRequest("not a link token")
    revoked: str = await state_of(request).metadata.account_tx(
        lambda tx: links.revoke(tx, caller.user_id, link_id, token))
    log.info("link %s revoked by %s", revoked, caller.user)
    return revoked


@authenticated
async def create(request: Request, caller: Caller) -> Response:
    body = await body_map(request, 64 * 1024)
    path = p.field(body, "path", str)
    ttl = p.nonneg_int(body, "expires", links.DEFAULT_TTL)
    password = p.field(body, "password", str) if body.get("password") is not None else None
    return cbor(await make_link(request, caller, path, ttl, password), 201)


@authenticated
async def listing(request: Request, caller: Caller) -> Response:
    return cbor({"links": await list_links(request, caller)})


@authenticated
async def revoke(request: Request, caller: Caller) -> Response:
    body = await body_map(request, 64 * 1024)
    link_id = p.field(body, "id", str) if "id" in body else None
    token = p.field(body, "token", str) if "token" in body else None
    if (link_id is None) == (token is None):
        raise BadRequest("give one of 'id' or 'token'")
    return cbor({"id": await revoke_link(request, caller, link_id, token)})
