"""What every route of the HTTP API shares: the server's state, the caller, CBOR
answers, the one place failures are answered (``answer_errors``), authentication, and
reading bodies and parameters.

Every failure is answered in ``answer_errors``: a ``LoftError`` becomes its status with
a CBOR ``{error, message, detail}`` body; a client gone mid-request is one quiet log
line; anything else is logged with its traceback and answered 500, and the server
keeps serving. An answer sent before the body was read closes the connection, and a
body has a deadline (``backend.server.limits``, around the whole app).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from backend import protocol as p
from backend.errors import (
    BadRequest,
    LoftError,
    MissingChunks,
    NotFound,
    QuotaExceeded,
    TooLarge,
    TooManyAttempts,
    TooSlow,
    Unauthorized,
)
from backend.server.auth import DEFAULT_TOKEN_TTL
from backend.server.blocks import BlockStore
from backend.server.metadata import MetadataStore
from backend.server.notifier import Notifier
from backend.server.throttle import Logins

log = logging.getLogger("loft.server")


@dataclass
class ServerState:
    metadata: MetadataStore
    blocks: BlockStore
    notifier: Notifier
    max_token_ttl: int = DEFAULT_TOKEN_TTL
    logins: Logins = field(default_factory=Logins)


@dataclass
class Caller:
    user_id: int
    user: str
    device: str
    root_ns: int


def cbor(value: Any, status: int = 200) -> Response:
    return Response(p.encode(value), status_code=status, media_type=p.CBOR)


async def cbor_off_loop(value: Any) -> Response:
    """``cbor(value)``, encoded in a worker thread: for answers that may be large."""
    return Response(await trio.to_thread.run_sync(p.encode, value), media_type=p.CBOR)


Handler = Callable[..., Awaitable[Response]]


def answer_errors(fn: Handler) -> Handler:
    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            response = await fn(request)
        except LoftError as err:
            # A refusal is the client's business, and so is MissingChunks (it uploads
            # them), and QuotaExceeded, and TooManyAttempts (logged where throttled);
            # anything else is the server failing, worth a line in its log.
            if not err.permanent and not isinstance(
                err, MissingChunks | QuotaExceeded | TooManyAttempts | TooSlow
            ):
                log.error("%s %s: %s", request.method, request.url.path, err.message)
            response = cbor(err.to_wire(), err.status)
            if isinstance(err, TooManyAttempts):
                response.headers["Retry-After"] = str(err.retry_after)
        except ClientDisconnect:
            log.info("%s %s: the client went away mid-request", request.method, request.url.path)
            response = Response(status_code=400)  # dropped: nobody reads it
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            response = cbor({"error": "internal", "message": "internal server error"}, 500)
        return response

    return wrapper


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token; run `loft login`")
    return token.strip()


def authenticated(fn: Callable[[Request, Caller], Awaitable[Response]]) -> Handler:
    async def wrapper(request: Request) -> Response:
        token = bearer_token(request)
        state: ServerState = request.app.state.loft
        found = await state.metadata.resolve_token(token)
        if found is None:
            raise Unauthorized("token expired, revoked or unknown; run `loft login` again")
        return await fn(request, Caller(*found))

    return answer_errors(wrapper)


DECODE_INLINE = 64 * 1024
"""Bodies larger than this are decoded in a worker thread, off the event loop."""


async def body_map(request: Request, limit: int = p.MAX_BODY_BYTES) -> dict[str, Any]:
    body = await read_body(request, limit)
    if len(body) <= DECODE_INLINE:
        return p.decode_map(body)
    return await trio.to_thread.run_sync(p.decode_map, body)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and not (
        declared.isascii() and declared.isdigit() and len(declared) <= 20
        and int(declared) <= limit
    ):
        raise TooLarge(f"request body over {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise TooLarge(f"request body over {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` (end exclusive) for one satisfiable range; None: the whole
    file; ``"unsatisfiable"``: 416."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if not first:
            length = int(last)
            return (max(size - length, 0), size) if length > 0 and size > 0 else "unsatisfiable"
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or start >= size or end <= start:
        return "unsatisfiable"
    return start, min(end, size)


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


def page_limit(request: Request) -> int:
    """The ``limit`` of a paged answer: at most ``protocol.MAX_PAGE``, the default."""
    return min(int_param(request, "limit", p.MAX_PAGE) or p.MAX_PAGE, p.MAX_PAGE)


def ns_param(request: Request) -> int:
    raw = request.path_params["ns"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) < 1 << 63):
        raise NotFound(f"no namespace {raw[:40]}")
    return int(raw)


def cid_param(request: Request, name: str = "cid") -> str:
    cid = request.path_params[name]
    if not p.is_chunk_id(cid):
        raise BadRequest("not a chunk id (64 lowercase hex characters)")
    return str(cid)
