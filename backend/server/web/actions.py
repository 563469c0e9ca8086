"""Changes made from the web page's forms, each one commit through
``backend.server.files`` (so each is refused as the API would refuse it: a viewer's
403, a taken name's 409, a stale base's 409), then a redirect back (303).

=============================== ==================================================
route (form fields)             change
=============================== ==================================================
POST /act/mkdir (path, name)    a folder ``name`` in the folder ``path``
POST /act/move (path, to)       rename or move ``path`` to ``to`` (a name taken:
                                refused, nothing replaced)
POST /act/delete (path)         ``path`` and all below it (kept in its versions)
POST /act/share (path, user,     share the folder ``path`` with ``user`` as ``role``
     role)                      (``backend.server.shares``: again to change a role)
POST /act/unshare (path, user)  stop sharing ``path`` with ``user``
POST /act/restore (path, rev)   the version ``rev`` of the file ``path`` becomes its
                                newest version (so a restore is itself undone by
                                restoring the one before)
=============================== ==================================================

Every form carries the session's CSRF token (``session.form_action``).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backend.errors import BadRequest, Exists, NotFound
from backend.server import shares
from backend.server.files import Upload
from backend.server.http import state_of
from backend.server.shares_api import Change
from backend.server.web.downloads import version_node
from backend.server.web.paths import (
    account_of,
    files_of,
    parts_of,
    resolve,
    split_parent,
)
from backend.server.web.render import href, plain
from backend.server.web.session import Session, form_action

log = logging.getLogger("loft.server")


def folder_url(parts: list[str]) -> str:
    return "/files" + href(parts) + ("/" if parts else "")


def _back(parts: list[str], done: str) -> Response:
    return RedirectResponse(f"{folder_url(parts)}?done={quote(done)}", 303)


async def _sharing(request: Request, change: Change) -> dict[str, object]:
    state = state_of(request)
    answer, advanced = await state.metadata.sharing(change)
    for ns in advanced:
        state.notifier.advanced(ns)
    return answer


@form_action
async def share(request: Request, session: Session, form: dict[str, str]) -> Response:
    parts, user = parts_of(form.get("path", "")), form.get("user", "").strip()
    role, caller, now = form.get("role", "editor"), session.caller, int(time.time())
    await _sharing(request, lambda tx: shares.share(
        tx, caller.user_id, caller.device, parts, user, role, now))
    log.info("share %s with %s as %s by %s (web)", plain(parts), user, role, caller.user)
    return _back(parts, f"Shared with {user} as {role}.")


@form_action
async def unshare(request: Request, session: Session, form: dict[str, str]) -> Response:
    parts, user = parts_of(form.get("path", "")), form.get("user", "").strip()
    caller, now = session.caller, int(time.time())
    await _sharing(request, lambda tx: shares.unshare(
        tx, caller.user_id, caller.device, parts, user, now))
    return _back(parts, f"No longer shared with {user}.")


@form_action
async def mkdir(request: Request, session: Session, form: dict[str, str]) -> Response:
    parts = parts_of(form.get("path", "/"))
    name = form.get("name", "").strip()
    (child,) = parts_of(name) if name and "/" not in name else [None]
    if child is None:
        raise BadRequest("a folder name is one name, without '/'")
    folder = await resolve(request, session.caller, parts)
    await files_of(request).mkdir(account_of(session.caller), folder, child)
    return _back(parts, f"Created folder {child}.")


@form_action
async def move(request: Request, session: Session, form: dict[str, str]) -> Response:
    source = parts_of(form.get("path", ""))
    target = parts_of(form.get("to", ""))
    split_parent(source)
    folder_parts, name = split_parent(target)
    if target == source:
        return _back(source[:-1], "Nothing to move.")
    if target[: len(source)] == source:
        raise BadRequest("cannot move a folder inside itself")
    node = await resolve(request, session.caller, source)
    folder = await resolve(request, session.caller, folder_parts)
    try:
        await resolve(request, session.caller, target)
    except NotFound:
        pass
    else:
        raise Exists(f"{name} already exists there: choose another name")
    await files_of(request).move(account_of(session.caller), node, folder, name, None)
    return _back(folder_parts, f"Moved {source[-1]} to {href(target)}.")


@form_action
async def delete(request: Request, session: Session, form: dict[str, str]) -> Response:
    parts = parts_of(form.get("path", ""))
    split_parent(parts)
    node = await resolve(request, session.caller, parts)
    await files_of(request).delete(account_of(session.caller), node)
    return _back(parts[:-1], f"Deleted {parts[-1]}; its versions are kept.")


@form_action
async def restore(request: Request, session: Session, form: dict[str, str]) -> Response:
    parts = parts_of(form.get("path", ""))
    folder_parts, name = split_parent(parts)
    raw = form.get("rev", "")
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("rev must be a version number")
    node = await resolve(request, session.caller, parts)
    old = await version_node(request, session, node, int(raw))
    if node.entry["kind"] != "file":
        raise BadRequest(f"{name} is not a file")
    folder = await resolve(request, session.caller, folder_parts)
    content = Upload(blocks=[list(b) for b in old.entry["blocks"]], size=old.size)
    await files_of(request).save(account_of(session.caller), folder, name, content, node)
    log.info("web restore of %s rev %s by %s", href(parts), raw, session.caller.user)
    return RedirectResponse(f"/versions{href(parts)}?done={quote('Restored.')}", 303)
