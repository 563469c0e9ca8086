"""The routes of sharing (``backend.server.shares`` does the work).

=========================================== ===========================================
route                                       answer
=========================================== ===========================================
GET  /v1/shares                             {shares: [{path, ns, role, owner,
                                            members: {name: role}}]}: the shared folders
                                            in the caller's tree
POST /v1/shares {path, user, role}          {ns, user, role}: share the folder at
                                            ``path`` (a folder of one's own, or a shared
                                            one, as its owner or an editor); again to
                                            change a role; 400 nested or not a folder,
                                            404 no such user or path
POST /v1/shares/remove {path[, user]}       {ns, removed}: stop sharing with ``user``
                                            (or with everyone but the owner)
POST /v1/shares/leave {path}                {ns}: leave a folder shared with the caller;
                                            403 for its owner
=========================================== ===========================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from backend import protocol as p
from backend.server import shares
from backend.server.database import Tx
from backend.server.http import Caller, authenticated, body_map, cbor, state_of

log = logging.getLogger("loft.server")

Change = Callable[[Tx], tuple[dict[str, Any], list[int]]]


def _path(body: dict[str, Any]) -> list[str]:
    return p.split_path(p.field(body, "path", str))


async def _change(request: Request, caller: Caller, what: str, fn: Change) -> Response:
    state = state_of(request)
    answer, advanced = await state.metadata.sharing(fn)
    for ns in advanced:
        state.notifier.advanced(ns)
    log.info("%s ns=%d by %s/%s: %s", what, answer["ns"], caller.user, caller.device,
             {k: v for k, v in answer.items() if k != "ns"})
    return cbor(answer)


@authenticated
async def listing(request: Request, caller: Caller) -> Response:
    found = await state_of(request).metadata.sharing(
        lambda tx: shares.listing(tx, caller.user_id), write=False
    )
    return cbor({"shares": found})


@authenticated
async def share(request: Request, caller: Caller) -> Response:
    body = await body_map(request)
    path, user = _path(body), p.field(body, "user", str)
    role = body.get("role", "editor")
    now = int(time.time())
    return await _change(request, caller, "share", lambda tx: shares.share(
        tx, caller.user_id, caller.device, path, user, role, now))


@authenticated
async def unshare(request: Request, caller: Caller) -> Response:
    body = await body_map(request)
    path, user = _path(body), body.get("user")
    if user is not None and not isinstance(user, str):
        p.field(body, "user", str)  # the 400 for a mistyped field
    now = int(time.time())
    return await _change(request, caller, "unshare", lambda tx: shares.unshare(
        tx, caller.user_id, caller.device, path, user, now))


@authenticated
async def leave(request: Request, caller: Caller) -> Response:
    path = _path(await body_map(request))
    now = int(time.time())
    return await _change(request, caller, "leave", lambda tx: shares.leave(
        tx, caller.user_id, caller.device, path, now))
