"""What every route of the HTTP API shares: the server's state, the caller, CBOR
answers, the one place failures are answered (``answer_errors``), authentication, and
reading bodies and parameters.

Every failure is answered in ``answer_errors``: a ``LoftError`` becomes its status with
a CBOR ``{error, message, detail}`` body; anything else is logged with its traceback
and answered 500, and the server keeps serving. Before any answer, what the handler
left unread of the request body is read and dropped (``_discard_body``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from backend import protocol as p
from backend.errors import (
    BadRequest,
    LoftError,
    MissingChunks,
    NotFound,
    QuotaExceeded,
    TooLarge,
    Unauthorized,
)
from backend.server.auth import DEFAULT_TOKEN_TTL
from backend.server.blocks import BlockStore
from backend.server.metadata import MetadataStore
from backend.server.notifier import Notifier

log = logging.getLogger("loft.server")


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


def answer_errors(fn: Handler) -> Handler:
    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            response = await fn(request)
        except LoftError as err:
            # A refusal is the client's business, and so is MissingChunks (it uploads
            # them), and QuotaExceeded; anything else is the server failing, worth a
            # line in its log.
            if not err.permanent and not isinstance(err, MissingChunks | QuotaExceeded):
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


def authenticated(fn: Callable[[Request, Caller], Awaitable[Response]]) -> Handler:
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

    return answer_errors(wrapper)


async def body_map(request: Request, limit: int = 64 * 1024 * 1024) -> dict[str, Any]:
    return p.decode_map(await read_body(request, limit))


async def read_body(request: Request, limit: int) -> bytes:
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


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.loft
    return state


def int_param(request: Request, name: str, default: int | None) -> int | None:
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


def ns_param(request: Request) -> int:
    raw = request.path_params["ns"]
    if not raw.isdigit():
        raise NotFound(f"no namespace {raw}")
    return int(raw)


def cid_param(request: Request) -> str:
    cid = request.path_params["cid"]
    if not p.is_chunk_id(cid):
        raise BadRequest("not a chunk id (64 lowercase hex characters)")
    return str(cid)
