"""The routes of a namespace's past (``backend.server.history``): the state at a
sequence or instant, every version at a name, the days and instants with commits,
and snapshots. Listed in ``backend.server.app``'s route table.

On a user's root namespace, a question about an entry or folder inside a shared
folder (``past`` by ``entry``, ``place``) is answered from that folder's namespace
(``backend.server.mounts.locate``), its sequences included, so ``dir/.versions/``
works inside shared folders. Whole-tree views of the root (``past`` by path, days,
instants) show a shared folder as its mount, without its content.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from backend import protocol as p
from backend.errors import BadRequest, NotFound
from backend.server import history, mounts
from backend.server.database import Tx
from backend.server.http import (
    Caller,
    authenticated,
    body_map,
    cbor,
    int_param,
    ns_param,
    state_of,
)

log = logging.getLogger("loft.server")


@authenticated
async def past(request: Request, caller: Caller) -> Response:
    ns, q = ns_param(request), request.query_params
    at, when = int_param(request, "at", None), int_param(request, "time", None)
    if (at is None) == (when is None):
        raise BadRequest("give one of 'at' (a sequence) or 'time' (unix seconds)")
    entry_id, name = q.get("entry"), q.get("name")
    if entry_id is not None and not p.is_entry_id(entry_id):
        raise BadRequest("not an entry id")
    path = p.split_path(q.get("path", "/"))
    checked_name = p.validate_name(name) if name is not None else None
    with_children = q.get("children") == "1"

    def work(tx: Tx) -> dict[str, Any]:
        tree = mounts.tree_for(tx, caller.user_id, ns)
        where, local = mounts.locate(tx, tree, entry_id) if entry_id else (ns, None)
        if local == p.ROOT_ID and entry_id != p.ROOT_ID and checked_name is None:
            where, local = ns, entry_id  # the mount itself, as the root's past has it
        seq = history.seq_at(tx, where, when) if when is not None else min(
            at or 0, int(tx.execute("SELECT seq FROM namespaces WHERE id = ?", (where,))[0][0])
        )
        if local is None:
            entry: dict[str, Any] | None = history.path_at(tx, where, path, seq)
        elif checked_name is None:
            entry = history.entry_at(tx, where, local, seq)
        else:
            entry = history.child_at(tx, where, local, checked_name, seq)
        if entry is None:
            raise NotFound("not there at that time")
        children = (history.children_at(tx, where, entry["id"], seq)
                    if with_children and entry["kind"] == "dir" else None)
        return {"seq": seq, "time": history.time_of(tx, where, seq),
                "entry": tree.present(where, entry) or entry,
                "children": None if children is None else tree.present_all(where, children)}

    return cbor(await state_of(request).metadata.past(caller.user_id, ns, work))


@authenticated
async def place(request: Request, caller: Caller) -> Response:
    parent = request.query_params.get("parent", "")
    if not p.is_entry_id(parent):
        raise BadRequest("'parent' must be an entry id")
    ns, store = ns_param(request), state_of(request).metadata
    name = (p.validate_name(request.query_params.get("name"))
            if "name" in request.query_params else None)

    def work(tx: Tx) -> dict[str, Any]:
        tree = mounts.tree_for(tx, caller.user_id, ns)
        where, local = mounts.locate(tx, tree, parent)
        if name is None:
            return {"names": history.names(tx, where, local)}
        return {"versions": tree.present_all(where, history.place(tx, where, local, name))}

    return cbor(await store.past(caller.user_id, ns, work))


@authenticated
async def days(request: Request, caller: Caller) -> Response:
    ns = ns_param(request)
    found = await state_of(request).metadata.past(
        caller.user_id, ns, lambda tx: history.days(tx, ns)
    )
    return cbor({"days": found})


@authenticated
async def instants(request: Request, caller: Caller) -> Response:
    ns = ns_param(request)
    start = int_param(request, "from", 0) or 0
    end = int_param(request, "to", 1 << 62) or 0
    found = await state_of(request).metadata.past(
        caller.user_id, ns, lambda tx: history.instants(tx, ns, start, end)
    )
    return cbor({"instants": found})


@authenticated
async def snapshots(request: Request, caller: Caller) -> Response:
    ns, store = ns_param(request), state_of(request).metadata
    if request.method == "GET":
        found = await store.past(caller.user_id, ns, lambda tx: history.snapshots(tx, ns))
        return cbor({"snapshots": found})
    if request.method == "DELETE":
        name = request.path_params["name"]
        await store.change_snapshots(
            caller.user_id, ns, lambda tx: history.drop_snapshot(tx, ns, name)
        )
        return cbor({})
    body = await body_map(request, limit=64 * 1024)
    name = p.validate_snapshot_name(body.get("name"))
    path = p.split_path(p.field(body, "path", str) if "path" in body else "/")
    made = await store.change_snapshots(
        caller.user_id, ns, lambda tx: history.add_snapshot(tx, ns, name, path, int(time.time()))
    )
    log.info("snapshot %r of ns %d at seq %d (%s)", name, ns, made["seq"], caller.user)
    return cbor({"snapshot": made})
