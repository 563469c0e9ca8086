"""The HTTP API under ``/v1``: CBOR bodies, chunks as raw bodies, bearer tokens.

=========================================== ===========================================
route                                       answer
=========================================== ===========================================
GET  /v1/health                             {ok, version}
POST /v1/login {user, password, device,     {token, user, root_ns, expires}; 401 wrong
     [ttl]}                                 user or password; 429 too_many_attempts with
                                            Retry-After while throttled
POST /v1/logout                             {}: the caller's token is revoked
GET  /v1/devices                            {devices: [{device, created, last_seen,
                                            expires, tokens, current}]}: live tokens
POST /v1/devices/revoke {device}            {revoked}: every token of that device name;
                                            404 if it has none
GET  /v1/whoami                             {user, device, root_ns, namespaces, usage,
                                            quota}: bytes; quota null = no limit
POST /v1/chunks/missing {ids}               {missing}: ids this user must upload
PUT  /v1/chunks/{id}  (raw body)            {stored}: new to this user; 422 if the body's
                                            hash is not id; 507 over quota (uploads and
                                            commits alike; nothing kept)
POST /v1/chunks {chunks: [[id, content]]}   {stored}: how many were new to this user; a
                                            pack of small chunks, all or nothing (422
                                            {index} if one's content is not its id)
PUT  /v1/chunks/{id}/delta/{base}           {stored}: the chunk rebuilt from the delta in
     (raw body: ``backend.delta``)          the body and chunk base; 404 if the user
                                            cannot read base, 400 bad_delta, 422 if the
                                            result is not id (each stores nothing)
GET  /v1/chunks/{id}                        raw content; 404 unless visible to the user;
                                            ``Range: bytes=a-b`` (one range) is 206 with
                                            that part, checked whole by the server first
POST /v1/ns/{ns}/commit {ops, chunks?}      {seq, head, results}; 409 with the current
                                            entry on a stale base; 412 {missing};
                                            ``chunks`` (up to 1 MiB, as in a pack) are
                                            stored first: a small save in one request
GET  /v1/ns/{ns}/changes?since&wait&limit   {head, cursor, changes, chunks?}; long-polls
                                            ``wait``; a page of a few changes brings the
                                            content of the small files other devices
                                            wrote (``chunks``, [[id, content]]);
                                            {head, cursor: since, changes: [], reset:
                                            true} if ``since`` is older than the
                                            journal's horizon (retention thinned it):
                                            read the whole tree again
GET  /v1/ns/{ns}/tree[?at=SEQ][&after=ID]   {seq, entries, next}: by id, at most limit
     [&limit=N]                             (≤ 5,000); next: give it as after (and seq
                                            as at) for the rest; null at the end
GET  /v1/ns/{ns}/lookup?path[&children=1]   {entry, children, next}: children by name,
     [&after=NAME][&limit=N]                at most limit (≤ 5,000); next: after
GET  /v1/ns/{ns}/entries/{id}/versions      {versions, next}: oldest first, at most
     [?after=SEQ][&limit=N]                 limit (≤ 5,000); next: after for the rest
GET  /v1/ns/{ns}/past?at=SEQ|time=T &       {seq, time, entry, children}: the entry as it
     path=P | entry=ID[&name=N] [&children=1]  was then (by path, id, or name in folder id)
GET  /v1/ns/{ns}/place?parent=ID&name=N     {versions}: of every entry ever at that name
GET  /v1/ns/{ns}/place?parent=ID            {names}: every name ever in that folder
GET  /v1/ns/{ns}/days                       {days}: 00:00 UTC of each day with a commit
GET  /v1/ns/{ns}/instants?from=T&to=T       {instants}: [second, last seq] with commits
GET  /v1/ns/{ns}/snapshots                  {snapshots}
POST /v1/ns/{ns}/snapshots {name, [path]}   {snapshot}: the head, kept whatever retention
DELETE /v1/ns/{ns}/snapshots/{name}         {}
POST /v1/links, GET /v1/links,              links: ``backend.server.links_api``
POST /v1/links/revoke
=========================================== ===========================================

The routes on a user's root namespace answer for their whole tree, shared folders
included (``backend.server.mounts``): ``since``, ``cursor``, ``head``, ``at`` and a
commit's ``seq`` are then feed positions (``backend.cursor``), plain integers while
nothing is shared. The routes of sharing are in ``backend.server.shares_api``.

Every failure is answered in one place, ``backend.server.http.answer_errors``; the
routes of the past are in ``backend.server.history_api``, those of accounts (login,
logout, devices) in ``backend.server.accounts_api``. WebDAV is served under ``/dav/``
(``backend.server.dav``, HTTP Basic sign-in).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from backend import cursor
from backend import protocol as p
from backend.errors import (
    BadRequest,
    NotFound,
    StoreError,
)
from backend.server import accounts_api, history_api, links_api, quota, shares_api
from backend.server.blocks import content_of, small_contents
from backend.server.dav import PREFIX as DAV_PREFIX
from backend.server.dav import DavApp
from backend.server.http import (
    Caller,
    ServerState,
    answer_errors,
    authenticated,
    body_map,
    cbor,
    cbor_off_loop,
    cid_param,
    int_param,
    ns_param,
    page_limit,
    parse_range,
    read_body,
    state_of,
)
from backend.server.ingest import store_chunks, store_delta
from backend.server.mounts import Feed
from backend.server.web.routes import routes as web_routes

log = logging.getLogger("loft.server")

VERSION = "0.1.0"


# --- routes ------------------------------------------------------------------------


@answer_errors
async def health(request: Request) -> Response:
    return cbor({"ok": True, "version": VERSION})


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
async def put_chunk_delta(request: Request, caller: Caller) -> Response:
    cid, base = cid_param(request), cid_param(request, "base")
    change = await read_body(request, p.MAX_CHUNK + 64 * 1024)
    state = state_of(request)
    new = await store_delta(state.blocks, state.metadata, caller.user_id, cid, base, change)
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
    data = await content_of(sealed)
    wanted = parse_range(request.headers.get("range"), len(data))
    if wanted is None:  # the whole chunk: the client checks it against its id
        return Response(data, media_type="application/octet-stream")
    if isinstance(wanted, str):  # unsatisfiable
        return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
    # A part cannot be checked by whoever receives it: checked here, whole, first.
    if await trio.to_thread.run_sync(p.chunk_id, data) != cid:
        log.error("chunk %s is corrupt in the block store", cid)
        raise StoreError(f"chunk {cid} is corrupt in the block store")
    start, end = wanted
    return Response(
        data[start:end],
        status_code=206,
        headers={"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"},
        media_type="application/octet-stream",
    )


@authenticated
async def commit(request: Request, caller: Caller) -> Response:
    ns = ns_param(request)
    body = await body_map(request, p.MAX_COMMIT_BYTES)
    state = state_of(request)
    if "chunks" in body:  # a small save's content, stored as a pack would be
        inline = p.chunk_pack(body, p.MAX_INLINE_BYTES)
        await store_chunks(state.blocks, state.metadata, caller.user_id, inline)
    result = await state.metadata.commit(caller.user_id, caller.device, ns, body.get("ops"))
    advanced = result.pop("namespaces")
    if not result.get("replayed"):
        for each in advanced:
            state.notifier.advanced(each)
        log.info(
            "commit ns=%d ops=%d seq=%s by %s/%s",
            ns,
            len(result["results"]),
            result["seq"],
            caller.user,
            caller.device,
        )
    return cbor(result)


def position_param(request: Request, name: str) -> cursor.Position | None:
    """A feed position (``backend.cursor``) from the query; 400 if malformed."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        cursor.parts(raw)
    except cursor.BadPosition as err:
        raise BadRequest(f"query parameter {name!r}: {err}") from None
    return int(raw) if raw.isdigit() else raw


@authenticated
async def changes(request: Request, caller: Caller) -> Response:
    ns = ns_param(request)
    since = position_param(request, "since") or 0
    limit = min(int_param(request, "limit", 1000) or 1000, 10_000)
    wait = min(float(int_param(request, "wait", 0) or 0), p.MAX_WAIT_SECONDS)
    state = state_of(request)

    async def read() -> Feed:
        return await state.metadata.changes(caller.user_id, ns, since, limit, caller.device)

    feed = await read()
    if not feed.changes and not feed.reset and wait > 0:
        with ExitStack() as watching:  # a member's wait: it can end
            events = [watching.enter_context(state.notifier.watch(each))
                      for each in feed.watch]
            # Read again once watching: a commit between the two reads still wakes us.
            feed = await read()
            if not feed.changes and not feed.reset:
                with trio.move_on_after(wait):
                    await first_of(events)
                feed = await read()
    answer: dict[str, Any] = {"head": feed.head, "cursor": feed.cursor, "changes": feed.changes}
    if feed.reset:
        answer["reset"] = True
    if feed.others and len(feed.changes) <= p.FEED_INLINE_CHANGES:
        # A few changes, live: the small files' content comes along, so the device
        # need not ask for each (one round trip less from a save to another device).
        answer["chunks"] = await small_contents(state.blocks, feed.others, p.FEED_INLINE_BYTES)
    return await cbor_off_loop(answer)


async def first_of(events: list[trio.Event]) -> None:
    """Return once any of ``events`` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:
            async def wait(event: trio.Event = event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


@authenticated
async def tree(request: Request, caller: Caller) -> Response:
    at = position_param(request, "at")
    after, limit = request.query_params.get("after", ""), page_limit(request)
    if after and not p.is_entry_id(after.rpartition(":")[2] or p.ROOT_ID):
        raise BadRequest("'after' must be an entry id")
    seq, entries, more = await state_of(request).metadata.tree(
        caller.user_id, ns_param(request), at, after, limit
    )
    return await cbor_off_loop({"seq": seq, "entries": entries, "next": more})


@authenticated
async def lookup(request: Request, caller: Caller) -> Response:
    path = p.split_path(request.query_params.get("path", "/"))
    with_children = request.query_params.get("children") == "1"
    after, limit = request.query_params.get("after", ""), page_limit(request)
    entry, children = await state_of(request).metadata.lookup(
        caller.user_id, ns_param(request), path, with_children, after, limit
    )
    more = children[-1]["name"] if children and len(children) >= limit else None
    return await cbor_off_loop({"entry": entry, "children": children, "next": more})


@authenticated
async def versions(request: Request, caller: Caller) -> Response:
    entry_id = request.path_params["entry"]
    if not p.is_entry_id(entry_id):
        raise BadRequest("not an entry id")
    after, limit = int_param(request, "after", 0) or 0, page_limit(request)
    found = await state_of(request).metadata.versions(
        caller.user_id, ns_param(request), entry_id, after, limit
    )
    more = found[-1]["rev"] if len(found) >= limit else None
    return await cbor_off_loop({"versions": found, "next": more})


def create_app(state: ServerState) -> Starlette:
    v = p.API
    app = Starlette(
        routes=[
            Route(f"{v}/health", health, methods=["GET"]),
            Route(f"{v}/login", accounts_api.login, methods=["POST"]),
            Route(f"{v}/logout", accounts_api.logout, methods=["POST"]),
            Route(f"{v}/devices", accounts_api.devices, methods=["GET"]),
            Route(f"{v}/devices/revoke", accounts_api.revoke, methods=["POST"]),
            Route(f"{v}/whoami", whoami, methods=["GET"]),
            Route(f"{v}/shares", shares_api.listing, methods=["GET"]),
            Route(f"{v}/shares", shares_api.share, methods=["POST"]),
            Route(f"{v}/shares/remove", shares_api.unshare, methods=["POST"]),
            Route(f"{v}/shares/leave", shares_api.leave, methods=["POST"]),
            Route(f"{v}/chunks/missing", missing_chunks, methods=["POST"]),
            Route(f"{v}/chunks", put_chunks, methods=["POST"]),
            Route(f"{v}/chunks/{{cid}}", put_chunk, methods=["PUT"]),
            Route(f"{v}/chunks/{{cid}}/delta/{{base}}", put_chunk_delta, methods=["PUT"]),
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
            Route(f"{v}/links", links_api.create, methods=["POST"]),
            Route(f"{v}/links", links_api.listing, methods=["GET"]),
            Route(f"{v}/links/revoke", links_api.revoke, methods=["POST"]),
            Mount(DAV_PREFIX, app=DavApp(state)),  # WebDAV: backend.server.dav
            *web_routes(),  # the web page and links' pages: backend.server.web.routes
        ]
    )
    app.state.loft = state
    return app
