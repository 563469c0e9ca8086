"""Loft's exception hierarchy, shared by the server and the client.

The server turns a ``LoftError`` into an HTTP answer in one place
(``backend.server.app``); the client turns an HTTP failure back into the same class
in one place (``backend.client``). Callers decide on the class (``except Exists``)
or on ``err.permanent``, never on ``status``, ``code`` or the message text. The error
body is a CBOR map:

    ========= ===== ================================================
    key       type  meaning
    ========= ===== ================================================
    error     str   the machine-readable ``code`` of the class below
    message   str   one human-readable line
    detail    any   optional: ``current`` entry, ``missing`` ids, ...
    ========= ===== ================================================
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

E = TypeVar("E", bound=BaseException)


class LoftError(Exception):
    """Base of every error Loft reports; ``str(err)`` is one line for the user.

    ``permanent`` says whether repeating the same request can ever succeed:

    - True for refusals, the 4xx answers (``BadRequest``, ``Unauthorized``,
      ``Forbidden``, ``NotFound``, ``Conflict``, ``HashMismatch``, ``TooLarge`` and
      their subclasses) and for ``LocalError``: retrying as is gives the same answer,
      so the caller re-plans (a conflicted copy, a new name) or reports it.
    - False for transient failures: ``ServerUnavailable``, ``StoreError`` and a bare
      ``LoftError`` rebuilt from a 5xx answer; the same request may succeed later,
      after a backoff (``backend.retry``).
    - False for ``MissingChunks``: the request succeeds once the chunks it names are
      uploaded; and for ``QuotaExceeded``: it succeeds once the quota is raised or
      expired versions free room; and for ``TooManyAttempts``: a login succeeds once
      its throttling delay has passed.

    A bare ``LoftError`` rebuilt from a 4xx answer this client does not know is
    permanent too.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    _permanent: bool = False

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    @property
    def permanent(self) -> bool:
        """True when repeating the same request cannot succeed (see the class)."""
        return self._permanent

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class BadRequest(LoftError):
    status, code = 400, "bad_request"
    _permanent = True


class NameTooLong(BadRequest):
    """A path component is longer than ``protocol.MAX_NAME_BYTES`` in UTF-8."""

    code = "name_too_long"


class CrossShare(BadRequest):
    """A move between two namespaces (into or out of a shared folder): the mount
    answers ``EXDEV``, so programs copy and delete instead."""

    code = "cross_share"


class BadDelta(BadRequest):
    """A chunk delta that is malformed or reaches outside its base (``backend.delta``)."""

    code = "bad_delta"


class HashMismatch(LoftError):
    status, code = 422, "hash_mismatch"
    _permanent = True


class Unauthorized(LoftError):
    status, code = 401, "unauthorized"
    _permanent = True


class Forbidden(LoftError):
    status, code = 403, "forbidden"
    _permanent = True


class NotFound(LoftError):
    status, code = 404, "not_found"
    _permanent = True


class Conflict(LoftError):
    """A compare-and-swap failed; ``detail`` is ``{"op": index, "current": entry|None}``."""

    status, code = 409, "conflict"
    _permanent = True


class Exists(Conflict):
    """The name is taken; ``detail["current"]`` is the entry holding it."""

    code = "exists"


class NotEmpty(Conflict):
    code = "not_empty"


class MissingChunks(LoftError):
    """A block list names chunks the server lacks; ``detail`` is ``{"missing": [ids]}``."""

    status, code = 412, "missing_chunks"


class QuotaExceeded(LoftError):
    """The upload or commit would take its user over their quota; nothing of it was
    kept. ``detail`` is ``{"usage": bytes, "quota": bytes, "needed": bytes}``."""

    status, code = 507, "quota_exceeded"


class TooLarge(LoftError):
    status, code = 413, "too_large"
    _permanent = True


class TooSlow(LoftError):
    """The request's body did not arrive within its deadline (the server's
    ``backend.server.limits``); not permanent: a faster try may succeed."""

    status, code = 408, "too_slow"


class TooManyAttempts(LoftError):
    """Too many failed logins for this account or from this address: the same request
    may succeed after ``detail["retry_after"]`` seconds (also the ``Retry-After``
    header), so not permanent; the client does not retry it on its own."""

    status, code = 429, "too_many_attempts"

    @property
    def retry_after(self) -> int:
        detail = self.detail if isinstance(self.detail, dict) else {}
        value = detail.get("retry_after")
        return value if isinstance(value, int) and value > 0 else 1


class StoreError(LoftError):
    """A storage back end failed (disk full, database or object store unreachable)."""

    status, code = 503, "store_unavailable"


class ServerUnavailable(LoftError):
    """Client side: the server could not be reached or kept failing."""

    status, code = 503, "unavailable"


class LocalError(LoftError):
    """Client side: a problem with local files, configuration or arguments."""

    status, code = 0, "local"
    _permanent = True


_BY_CODE: dict[str, type[LoftError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        NameTooLong,
        CrossShare,
        BadDelta,
        HashMismatch,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        Exists,
        NotEmpty,
        MissingChunks,
        QuotaExceeded,
        TooLarge,
        TooSlow,
        TooManyAttempts,
        StoreError,
        ServerUnavailable,
        LocalError,
    )
}


def from_wire(status: int, body: Any) -> LoftError:
    """Rebuild the error a server sent; unknown shapes become a generic ``LoftError``."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        cls = _BY_CODE.get(body["error"])
        message = str(body.get("message") or body["error"])
        if cls is not None:
            return cls(message, body.get("detail"))
        err = LoftError(message, body.get("detail"))
    else:
        err = LoftError(f"server answered HTTP {status}")
    err._permanent = 400 <= status < 500  # a refusal this client has no class for
    return err


def first_of(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` in ``exc``, looking into exception groups.

    trio wraps what fails in a nursery in groups, nested as the nurseries were; a
    group itself is looked into, never returned, so ``first_of(group, Exception)`` is
    the first real failure (not a ``Cancelled``). None if there is none.
    """
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_of(inner, kind)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, kind) else None
