"""The pages of the web page: a folder, a file's versions, shared with me.

=================================== ===============================================
route                               page
=================================== ===============================================
GET /                               303 to ``/files/``
GET /files/{path}                   the folder: breadcrumbs, entries with sizes and
                                    times, upload, new folder, per-entry actions
GET /versions/{path}                every version of the file at ``path``, newest
                                    first, each with download and restore
GET /shared                         the folders shared with the user, with roles,
                                    each where it shows in the user's tree
=================================== ===============================================

Every page shows the user's storage use against their quota
(``backend.server.quota``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backend.server import links, quota, shares
from backend.server.database import Tx
from backend.server.files import Node
from backend.server.http import state_of
from backend.server.web.paths import files_of, path_param, resolve
from backend.server.web.render import href, page, plain
from backend.server.web.session import Session, answer_web_errors, signed_in


async def context(request: Request, session: Session, **more: Any) -> dict[str, Any]:
    """What every signed-in page shows: the user, their use and quota."""
    user_id = session.caller.user_id
    usage, limit = await state_of(request).metadata.storage(
        lambda tx: quota.storage(tx, user_id))
    notice = request.query_params.get("done", "")[:200]
    return {"user": session.caller.user, "usage": usage, "quota": limit,
            "notice": notice, **more}


@answer_web_errors
async def home(request: Request) -> Response:
    return RedirectResponse("/files/", 303)


@signed_in
async def browse(request: Request, session: Session) -> Response:
    parts = path_param(request)
    node = await resolve(request, session.caller, parts)
    if not node.is_dir:
        return RedirectResponse("/content" + href(parts), 303)
    children = await files_of(request).children(node)
    rows = [_row(child) for child in children]
    members = await _members(request, session, node)
    ctx = await context(request, session, parts=parts, path=plain(parts), children=rows,
                        writable=node.writable, members=members,
                        shareable=bool(parts) and node.writable and not node.past)
    return page(request, "browse.html", ctx, csrf=session.csrf)


async def _members(request: Request, session: Session, node: Node) -> dict[str, str]:
    """Who the shared folder ``node`` is shared with (name → role), else nothing."""
    if node.outer is None:
        return {}
    found = await state_of(request).metadata.sharing(
        lambda tx: shares.listing(tx, session.caller.user_id), write=False)
    for share in found:
        if share["ns"] == node.ns:
            return {k: v for k, v in share["members"].items() if v != "owner"}
    return {}


def _row(node: Node) -> dict[str, Any]:
    entry = node.entry
    return {"name": node.name, "kind": "mount" if node.outer else entry["kind"],
            "size": node.size, "mtime": entry["mtime"]}


@signed_in
async def versions(request: Request, session: Session) -> Response:
    parts = path_param(request)
    node = await resolve(request, session.caller, parts)
    found = await state_of(request).metadata.versions(
        session.caller.user_id, node.ns, node.entry["id"])
    rows = [{**v, "seq": v["rev"], "current": v["rev"] == node.rev} for v in found]
    ctx = await context(request, session, parts=parts, versions=rows[::-1],
                        writable=node.writable)
    return page(request, "versions.html", ctx, csrf=session.csrf)


@signed_in
async def shared(request: Request, session: Session) -> Response:
    caller, metadata = session.caller, state_of(request).metadata
    namespaces = [n for n in await metadata.namespaces(caller.user_id)
                  if n["ns"] != caller.root_ns]

    def where(tx: Tx) -> dict[int, list[str] | None]:
        """Where each shared folder shows in the user's tree (its ``mount`` entry)."""
        found: dict[int, list[str] | None] = {}
        for n in namespaces:
            rows = tx.execute("SELECT id FROM entries WHERE ns = ? AND kind = 'mount'"
                              " AND target = ?", (caller.root_ns, str(n["ns"])))
            found[n["ns"]] = links.entry_path(tx, caller.root_ns, rows[0][0]) if rows else None
        return found

    paths = await metadata.past(caller.user_id, caller.root_ns, where)
    rows = [{"ns": n["ns"], "role": n["role"], "path": paths[n["ns"]]} for n in namespaces]
    ctx = await context(request, session, shared=rows)
    return page(request, "shared.html", ctx, csrf=session.csrf)
