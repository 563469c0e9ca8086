"""The one place where our exceptions become an errno for the kernel.

Only ``FUSEError`` may leave a FUSE handler (anything else is a bug that can take the
mount down): every handler is wrapped in ``errors``, which maps our own exception
types (``ContentError``, ``NameTooLong``, ``BadRequest``, ``LoftError``, ``OSError``)
to an errno, looking into exception groups, and logs anything unexpected as EIO.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from backend.errors import BadRequest, LoftError, NameTooLong, first_of
from fs.content import ContentError

log = logging.getLogger("loft.fs")

R = TypeVar("R")
P = ParamSpec("P")


def errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise _errno(fn.__name__, exc) from None

    return wrapper


def _errno(handler: str, exc: Exception) -> pyfuse3.FUSEError:
    fuse = first_of(exc, pyfuse3.FUSEError)
    if fuse is not None:
        return fuse
    content = first_of(exc, ContentError)
    if content is not None:
        return pyfuse3.FUSEError(content.errno)
    if first_of(exc, NameTooLong) is not None:
        return pyfuse3.FUSEError(errno.ENAMETOOLONG)
    if first_of(exc, BadRequest) is not None:
        return pyfuse3.FUSEError(errno.EINVAL)
    if isinstance(exc, LoftError | OSError):
        log.error("%s: %s", handler, exc)
        code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
        return pyfuse3.FUSEError(code)
    log.error("%s failed", handler, exc_info=exc)
    return pyfuse3.FUSEError(errno.EIO)


def failure(exc: BaseException) -> Exception | None:
    """The first of our own errors, or the OS's, in ``exc`` (groups looked into): what
    a background task that retries may expect; None for anything else (a bug)."""
    for kind in (ContentError, LoftError, OSError, BadRequest):
        found = first_of(exc, kind)
        if found is not None:
            return found
    return None


def fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)
