"""The HTTP API under ``/v1``: CBOR bodies, chunks as raw bodies, bearer tokens.

=========================================== ===========================================
route                                       answer
=========================================== ===========================================
GET  /v1/health                             {ok, version}
POST /v1/login {user, password, device,     {token, user, root_ns, expires}
     [ttl]}
GET  /v1/whoami                             {user, device, root_ns, namespaces}
POST /v1/chunks/missing {ids}               {missing}: ids this user must upload
PUT  /v1/chunks/{id}  (raw body)            {stored}: new to this user; 422 if the body's
                                            hash is not id
POST /v1/chunks {chunks: [[id, content]]}   {stored}: how many were new to this user; a
                                            pack of small chunks, all or nothing (422
                                            {index} if one's content is not its id)
GET  /v1/chunks/{id}                        raw content; 404 unless visible to the user
POST /v1/ns/{ns}/commit {ops}               {seq, head, results}; 409 with the current
                                            entry on a stale base; 412 {missing}
GET  /v1/ns/{ns}/changes?since&wait&limit   {head, cursor, changes}; long-polls ``wait``
GET  /v1/ns/{ns}/tree[?at=SEQ]              {seq, entries}
GET  /v1/ns/{ns}/lookup?path[&children=1]   {entry, children}
GET  /v1/ns/{ns}/entries/{id}/versions      {versions}
=========================================== ===========================================

Every failure is answered in one place, ``_answer_errors``: a ``LoftError`` becomes its
status with a CBOR ``{error, message, detail}`` body; anything else is logged with
its traceback and answered 500, and the server keeps serving. Before any answer, what
the handler left unread of the request body is read and dropped (``_discard_body``).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend import protocol as p
from backend.errors import (
    BadRequest,
    LoftError,
    MissingChunks,
    NotFound,
    StoreError,
    TooLarge,
    Unauthorized,
)
from backend.server.auth import DEFAULT_TOKEN_TTL, new_token, verify_password
from backend.server.blocks import BlockStore, unseal
from backend.server.ingest import store_chunks
from backend.server.metadata import MetadataStore
from backend.server.notifier import Notifier

log = logging.getLogger("loft.server")

VERSION = "0.1.0"


@dataclass
class ServerState:
    metadata: MetadataStore
    blocks: BlockStore
    notifier: Notifier
    max_token_ttl: int = DEFAULT_TOKEN_TTL


@dataclass
class Caller:
    user_id: int
    user: str
    device: str
    root_ns: int


def cbor(value: Any, status: int = 200) -> Response:
    return Response(p.encode(value), status_code=status, media_type=p.CBOR)


Handler = Callable[..., Awaitable[Response]]


def _answer_errors(fn: Handler) -> Handler:
    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            response = await fn(request)
        except LoftError as err:
            # A refusal is the client's business, and so is MissingChunks (it uploads
            # them); anything else is the server failing, worth a line in its log.
            if not err.permanent and not isinstance(err, MissingChunks):
                log.error("%s %s: %s", request.method, request.url.path, err.message)
            response = cbor(err.to_wire(), err.status)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            response = cbor({"error": "internal", "message": "internal server error"}, 500)
        await _discard_body(request)
        return response

    return wrapper


_BODY_DONE = "loft.body_done"
_DISCARD_BYTES = 128 * 1024 * 1024
_DISCARD_SECONDS = 30.0


async def _discard_body(request: Request) -> None:
    """Read and drop what is left of the request body before answering.

    A request refused early (no token, bad chunk id, over the size limit) leaves its
    body unread. Hypercorn (HTTP/1.1) then stops reading the socket once a few body
    messages wait for the app, and queues ``http.disconnect`` behind them when the
    answer is done: the connection deadlocks, and a client still writing its body
    never reads the answer (httpx sends the whole body first). Draining, up to a
    bound, lets the answer through and leaves the connection reusable.
    """
    if request.scope.get(_BODY_DONE):
        return
    drained = 0
    with trio.move_on_after(_DISCARD_SECONDS):
        while drained <= _DISCARD_BYTES:
            message = await request.receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            drained += len(message.get("body", b""))


def _authenticated(fn: Callable[[Request, Caller], Awaitable[Response]]) -> Handler:
    async def wrapper(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token; run `loft login`")
        state: ServerState = request.app.state.loft
        found = await state.metadata.resolve_token(token.strip())
        if found is None:
            raise Unauthorized("token expired or unknown; run `loft login` again")
        return await fn(request, Caller(*found))

    return _answer_errors(wrapper)


async def _body_map(request: Request, limit: int = 64 * 1024 * 1024) -> dict[str, Any]:
    return p.decode_map(await _read_body(request, limit))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge(f"request body over {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise TooLarge(f"request body over {limit} bytes")
        parts.append(piece)
    request.scope[_BODY_DONE] = True
    return b"".join(parts)


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.loft
    return state


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer") from None
    if value < 0:
        raise BadRequest(f"query parameter {name!r} must not be negative")
    if value >= 1 << 63:
        raise BadRequest(f"query parameter {name!r} is out of range")
    return value


def _ns(request: Request) -> int:
    raw = request.path_params["ns"]
    if not raw.isdigit():
        raise NotFound(f"no namespace {raw}")
    return int(raw)


def _cid(request: Request) -> str:
    cid = request.path_params["cid"]
    if not p.is_chunk_id(cid):
        raise BadRequest("not a chunk id (64 lowercase hex characters)")
    return str(cid)


# --- routes ------------------------------------------------------------------------


@_answer_errors
async def health(request: Request) -> Response:
    return cbor({"ok": True, "version": VERSION})


@_answer_errors
async def login(request: Request) -> Response:
    body = await _body_map(request, 64 * 1024)
    user = p.field(body, "user", str)
    password = p.field(body, "password", str)
    device = body.get("device", "device")
    if not isinstance(device, str) or not 0 < len(device) <= 64 or "\0" in device:
        raise BadRequest("device name must be 1-64 characters")
    state = _state(request)
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


@_authenticated
async def whoami(request: Request, caller: Caller) -> Response:
    namespaces = await _state(request).metadata.namespaces(caller.user_id)
    return cbor(
        {
            "user": caller.user,
            "device": caller.device,
            "root_ns": caller.root_ns,
            "namespaces": namespaces,
        }
    )


@_authenticated
async def missing_chunks(request: Request, caller: Caller) -> Response:
    ids = p.chunk_ids(await _body_map(request))
    missing = await _state(request).metadata.missing_chunks(caller.user_id, ids)
    return cbor({"missing": missing})


@_authenticated
async def put_chunk(request: Request, caller: Caller) -> Response:
    cid = _cid(request)
    data = await _read_body(request, p.MAX_CHUNK)
    if not data:
        raise BadRequest("a chunk may not be empty")
    state = _state(request)
    new = await store_chunks(state.blocks, state.metadata, caller.user_id, [(cid, data)])
    return cbor({"stored": bool(new)}, 201 if new else 200)


@_authenticated
async def put_chunks(request: Request, caller: Caller) -> Response:
    pack = p.chunk_pack(await _body_map(request, p.MAX_PACK_BYTES + 64 * 1024))
    state = _state(request)
    new = await store_chunks(state.blocks, state.metadata, caller.user_id, pack)
    return cbor({"stored": new}, 201 if new else 200)


@_authenticated
async def get_chunk(request: Request, caller: Caller) -> Response:
    cid = _cid(request)
    state = _state(request)
    if not await state.metadata.chunk_visible(caller.user_id, cid):
        raise NotFound(f"no chunk {cid}")
    sealed = await state.blocks.get(cid)
    if sealed is None:
        log.error("chunk %s is recorded but missing from the block store", cid)
        raise StoreError(f"chunk {cid} is missing from the block store")
    data = await trio.to_thread.run_sync(unseal, sealed)
    return Response(data, media_type="application/octet-stream")


@_authenticated
async def commit(request: Request, caller: Caller) -> Response:
    ns = _ns(request)
    body = await _body_map(request)
    state = _state(request)
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


@_authenticated
async def changes(request: Request, caller: Caller) -> Response:
    ns = _ns(request)
    since = _int_param(request, "since", 0) or 0
    limit = min(_int_param(request, "limit", 1000) or 1000, 10_000)
    wait = min(float(_int_param(request, "wait", 0) or 0), p.MAX_WAIT_SECONDS)
    state = _state(request)
    advanced = state.notifier.event(ns)
    head, records = await state.metadata.changes(caller.user_id, ns, since, limit)
    if not records and wait > 0:
        with trio.move_on_after(wait):
            await advanced.wait()
        head, records = await state.metadata.changes(caller.user_id, ns, since, limit)
    cursor = records[-1]["rev"] if records else max(since, 0)
    return cbor({"head": head, "cursor": cursor, "changes": records})


@_authenticated
async def tree(request: Request, caller: Caller) -> Response:
    at = _int_param(request, "at", None)
    seq, entries = await _state(request).metadata.tree(caller.user_id, _ns(request), at)
    return cbor({"seq": seq, "entries": entries})


@_authenticated
async def lookup(request: Request, caller: Caller) -> Response:
    path = p.split_path(request.query_params.get("path", "/"))
    with_children = request.query_params.get("children") == "1"
    entry, children = await _state(request).metadata.lookup(
        caller.user_id, _ns(request), path, with_children
    )
    return cbor({"entry": entry, "children": children})


@_authenticated
async def versions(request: Request, caller: Caller) -> Response:
    entry_id = request.path_params["entry"]
    if not p.is_entry_id(entry_id):
        raise BadRequest("not an entry id")
    found = await _state(request).metadata.versions(caller.user_id, _ns(request), entry_id)
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
        ]
    )
    app.state.loft = state
    return app
