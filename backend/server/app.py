"""The HTTP API under ``/v1``: CBOR bodies, chunks as raw bodies, bearer tokens.

=========================================== ===========================================
route                                       answer
=========================================== ===========================================
GET  /v1/health                             {ok, version}
POST /v1/login {user, password, device,     {token, user, root_ns, expires}
     [ttl]}
GET  /v1/whoami                             {user, device, root_ns, namespaces, usage,
                                            quota}: bytes; quota null = no limit
POST /v1/chunks/missing {ids}               {missing}: ids this user must upload
PUT  /v1/chunks/{id}  (raw body)            {stored}: new to this user; 422 if the body's
                                            hash is not id; 507 over quota (uploads and
                                            commits alike; nothing kept)
POST /v1/chunks {chunks: [[id, content]]}   {stored}: how many were new to this user; a
                                            pack of small chunks, all or nothing (422
                                            {index} if one's content is not its id)
GET  /v1/chunks/{id}                        raw content; 404 unless visible to the user
POST /v1/ns/{ns}/commit {ops}               {seq, head, results}; 409 with the current
                                            entry on a stale base; 412 {missing}
GET  /v1/ns/{ns}/changes?since&wait&limit   {head, cursor, changes}; long-polls ``wait``;
                                            {head, cursor: since, changes: [], reset:
                                            true} if ``since`` is older than the
                                            journal's horizon (retention thinned it):
                                            read the whole tree again
GET  /v1/ns/{ns}/tree[?at=SEQ]              {seq, entries}
GET  /v1/ns/{ns}/lookup?path[&children=1]   {entry, children}
GET  /v1/ns/{ns}/entries/{id}/versions      {versions}
GET  /v1/ns/{ns}/past?at=SEQ|time=T &       {seq, time, entry, children}: the entry as it
     path=P | entry=ID[&name=N] [&children=1]  was then (by path, id, or name in folder id)
GET  /v1/ns/{ns}/place?parent=ID&name=N     {versions}: of every entry ever at that name
GET  /v1/ns/{ns}/place?parent=ID            {names}: every name ever in that folder
GET  /v1/ns/{ns}/days                       {days}: 00:00 UTC of each day with a commit
GET  /v1/ns/{ns}/instants?from=T&to=T       {instants}: [second, last seq] with commits
GET  /v1/ns/{ns}/snapshots                  {snapshots}
POST /v1/ns/{ns}/snapshots {name, [path]}   {snapshot}: the head, kept whatever retention
DELETE /v1/ns/{ns}/snapshots/{name}         {}
=========================================== ===========================================

Every failure is answered in one place, ``backend.server.http.answer_errors``; the
routes of the past are in ``backend.server.history_api``.
"""

from __future__ import annotations

import logging
import math
import time

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend import protocol as p
from backend.errors import (
    BadRequest,
    NotFound,
    StoreError,
    Unauthorized,
)
from backend.server import history_api, quota
from backend.server.auth import new_token, verify_password
from backend.server.blocks import unseal
from backend.server.http import (
    Caller,
    ServerState,
    answer_errors,
    authenticated,
    body_map,
    cbor,
    cid_param,
    int_param,
    ns_param,
    read_body,
    state_of,
)
from backend.server.ingest import store_chunks

log = logging.getLogger("loft.server")

VERSION = "0.1.0"


# --- routes ------------------------------------------------------------------------


@answer_errors
async def health(request: Request) -> Response:
    return cbor({"ok": True, "version": VERSION})


@answer_errors
async def login(request: Request) -> Response:
    body = await body_map(request, 64 * 1024)
    user = p.field(body, "user", str)
    password = p.field(body, "password", str)
    device = body.get("device", "device")
    if not isinstance(device, str) or not 0 < len(device) <= 64 or "\0" in device:
        raise BadRequest("device name must be 1-64 characters")
    state = state_of(request)
    ttl = min(p.nonneg_int(body, "ttl", state.max_token_ttl), state.max_token_ttl)
    found = await state.metadata.user_by_name(user)
    ok = await trio.to_thread.run_sync(verify_password, password, found[1] if found else None)
    if not found or not ok:
        log.info("login refused for %r", user)
        raise Unauthorized("wrong user name or password")
    token = new_token()
    # Rounded up: the token lives at least ``ttl`` seconds (it is valid while the
    # whole current second is below ``expires``).
    expires = math.ceil(time.time()) + ttl
    await state.metadata.add_token(token, found[0], device, expires)
    log.info("login: %s on device %s", user, device)
    return cbor({"token": token, "user": user, "root_ns": found[2], "expires": expires})


@authenticated
async def whoami(request: Request, caller: Caller) -> Response:
    metadata = state_of(request).metadata
    namespaces = await metadata.namespaces(caller.user_id)
    usage, limit = await metadata.storage(lambda tx: quota.storage(tx, caller.user_id))
    return cbor(
        {
            "user": caller.user,
            "device": caller.device,
            "root_ns": caller.root_ns,
            "namespaces": namespaces,
            "usage": usage,
            "quota": limit,
        }
    )


@authenticated
async def missing_chunks(request: Request, caller: Caller) -> Response:
    ids = p.chunk_ids(await body_map(request))
    missing = await state_of(request).metadata.missing_chunks(caller.user_id, ids)
    return cbor({"missing": missing})


@authenticated
async def put_chunk(request: Request, caller: Caller) -> Response:
    cid = cid_param(request)
    data = await read_body(request, p.MAX_CHUNK)
    if not data:
        raise BadRequest("a chunk may not be empty")
    state = state_of(request)
    new = await store_chunks(state.blocks, state.metadata, caller.user_id, [(cid, data)])
    return cbor({"stored": bool(new)}, 201 if new else 200)


@authenticated
async def put_chunks(request: Request, caller: Caller) -> Response:
    pack = p.chunk_pack(await body_map(request, p.MAX_PACK_BYTES + 64 * 1024))
    state = state_of(request)
    new = await store_chunks(state.blocks, state.metadata, caller.user_id, pack)
    return cbor({"stored": new}, 201 if new else 200)


@authenticated
async def get_chunk(request: Request, caller: Caller) -> Response:
    cid = cid_param(request)
    state = state_of(request)
    if not await state.metadata.chunk_visible(caller.user_id, cid):
        raise NotFound(f"no chunk {cid}")
    sealed = await state.blocks.get(cid)
    if sealed is None:
        log.error("chunk %s is recorded but missing from the block store", cid)
        raise StoreError(f"chunk {cid} is missing from the block store")
    data = await trio.to_thread.run_sync(unseal, sealed)
    return Response(data, media_type="application/octet-stream")


@authenticated
async def commit(request: Request, caller: Caller) -> Response:
    ns = ns_param(request)
    body = await body_map(request)
    state = state_of(request)
    result = await state.metadata.commit(caller.user_id, caller.device, ns, body.get("ops"))
    if not result.get("replayed"):
        state.notifier.advanced(ns)
        log.info(
            "commit ns=%d ops=%d seq=%d by %s/%s",
            ns,
            len(result["results"]),
            result["seq"],
            caller.user,
            caller.device,
        )
    return cbor(result)


@authenticated
async def changes(request: Request, caller: Caller) -> Response:
    ns = ns_param(request)
    since = int_param(request, "since", 0) or 0
    limit = min(int_param(request, "limit", 1000) or 1000, 10_000)
    wait = min(float(int_param(request, "wait", 0) or 0), p.MAX_WAIT_SECONDS)
    state = state_of(request)
    advanced = state.notifier.event(ns)
    head, records = await state.metadata.changes(caller.user_id, ns, since, limit)
    if since < await state.metadata.horizon(ns):  # after the member check in ``changes``
        return cbor({"head": head, "cursor": since, "changes": [], "reset": True})
    if not records and wait > 0:
        with trio.move_on_after(wait):
            await advanced.wait()
        head, records = await state.metadata.changes(caller.user_id, ns, since, limit)
    cursor = records[-1]["rev"] if records else max(since, 0)
    return cbor({"head": head, "cursor": cursor, "changes": records})


@authenticated
async def tree(request: Request, caller: Caller) -> Response:
    at = int_param(request, "at", None)
    seq, entries = await state_of(request).metadata.tree(caller.user_id, ns_param(request), at)
    return cbor({"seq": seq, "entries": entries})


@authenticated
async def lookup(request: Request, caller: Caller) -> Response:
    path = p.split_path(request.query_params.get("path", "/"))
    with_children = request.query_params.get("children") == "1"
    entry, children = await state_of(request).metadata.lookup(
        caller.user_id, ns_param(request), path, with_children
    )
    return cbor({"entry": entry, "children": children})


@authenticated
async def versions(request: Request, caller: Caller) -> Response:
    entry_id = request.path_params["entry"]
    if not p.is_entry_id(entry_id):
        raise BadRequest("not an entry id")
    found = await state_of(request).metadata.versions(caller.user_id, ns_param(request), entry_id)
    return cbor({"versions": found})


def create_app(state: ServerState) -> Starlette:
    v = p.API
    app = Starlette(
        routes=[
            Route(f"{v}/health", health, methods=["GET"]),
            Route(f"{v}/login", login, methods=["POST"]),
            Route(f"{v}/whoami", whoami, methods=["GET"]),
            Route(f"{v}/chunks/missing", missing_chunks, methods=["POST"]),
            Route(f"{v}/chunks", put_chunks, methods=["POST"]),
            Route(f"{v}/chunks/{{cid}}", put_chunk, methods=["PUT"]),
            Route(f"{v}/chunks/{{cid}}", get_chunk, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/commit", commit, methods=["POST"]),
            Route(f"{v}/ns/{{ns}}/changes", changes, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/tree", tree, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/lookup", lookup, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/entries/{{entry}}/versions", versions, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/past", history_api.past, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/place", history_api.place, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/days", history_api.days, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/instants", history_api.instants, methods=["GET"]),
            Route(f"{v}/ns/{{ns}}/snapshots", history_api.snapshots, methods=["GET", "POST"]),
            Route(f"{v}/ns/{{ns}}/snapshots/{{name}}", history_api.snapshots, methods=["DELETE"]),
        ]
    )
    app.state.loft = state
    return app
