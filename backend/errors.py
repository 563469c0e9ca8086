"""Loft's exception hierarchy, shared by the server and the client.

The server turns a ``LoftError`` into an HTTP answer in one place
(``backend.server.app``); the client turns an HTTP failure back into the same class
in one place (``backend.client``). The error body is a CBOR map:

    ========= ===== ================================================
    key       type  meaning
    ========= ===== ================================================
    error     str   the machine-readable ``code`` of the class below
    message   str   one human-readable line
    detail    any   optional: ``current`` entry, ``missing`` ids, ...
    ========= ===== ================================================
"""

from __future__ import annotations

from typing import Any, ClassVar


class LoftError(Exception):
    """Base of every error Loft reports; ``str(err)`` is one line for the user."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class BadRequest(LoftError):
    status, code = 400, "bad_request"


class HashMismatch(LoftError):
    status, code = 422, "hash_mismatch"


class Unauthorized(LoftError):
    status, code = 401, "unauthorized"


class Forbidden(LoftError):
    status, code = 403, "forbidden"


class NotFound(LoftError):
    status, code = 404, "not_found"


class Conflict(LoftError):
    """A compare-and-swap failed; ``detail`` is ``{"op": index, "current": entry|None}``."""

    status, code = 409, "conflict"


class Exists(Conflict):
    """The name is taken; ``detail["current"]`` is the entry holding it."""

    code = "exists"


class NotEmpty(Conflict):
    code = "not_empty"


class MissingChunks(LoftError):
    """A block list names chunks the server lacks; ``detail`` is ``{"missing": [ids]}``."""

    status, code = 412, "missing_chunks"


class TooLarge(LoftError):
    status, code = 413, "too_large"


class StoreError(LoftError):
    """A storage back end failed (disk full, database or object store unreachable)."""

    status, code = 503, "store_unavailable"


class ServerUnavailable(LoftError):
    """Client side: the server could not be reached or kept failing."""

    status, code = 503, "unavailable"


class LocalError(LoftError):
    """Client side: a problem with local files, configuration or arguments."""

    status, code = 0, "local"


_BY_CODE: dict[str, type[LoftError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        HashMismatch,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        Exists,
        NotEmpty,
        MissingChunks,
        TooLarge,
        StoreError,
        ServerUnavailable,
        LocalError,
    )
}


def from_wire(status: int, body: Any) -> LoftError:
    """Rebuild the error a server sent; unknown shapes become a generic ``LoftError``."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        cls = _BY_CODE.get(body["error"], LoftError)
        message = str(body.get("message") or body["error"])
        return cls(message, body.get("detail"))
    return LoftError(f"server answered HTTP {status}")
