"""Workspace paths as the web page takes them, and the file service it acts through.

A path arrives percent-decoded in the URL (``/files/a%20b/c``) or in a form field
(``/a b/c``). It is checked at this edge: a ``..`` or ``.`` component, a NUL, an empty
or over-long name is refused (400) before anything is looked up, so no path of the
page ever climbs out of the workspace or names something other than what it shows.

Every read and change goes through ``backend.server.files`` (one ``Files`` per app,
made on first use), as the signed-in user's ``Account`` whose commits name the
session's device (``web-XXXXXX``).
"""

from __future__ import annotations

from starlette.requests import Request

from backend import protocol as p
from backend.errors import BadRequest
from backend.server.files import Account, Files, Node
from backend.server.http import Caller, state_of


def parts_of(path: str) -> list[str]:
    """The validated components of a workspace path (``/`` → ``[]``)."""
    if "\0" in path:
        raise BadRequest("invalid path: contains NUL")
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise BadRequest("invalid path: '.' and '..' are not names")
    return [p.validate_name(part) for part in parts]


def path_param(request: Request) -> list[str]:
    return parts_of(str(request.path_params.get("path", "")))


def files_of(request: Request) -> Files:
    """The app's file service (made once, on first use)."""
    files: Files | None = getattr(request.app.state, "web_files", None)
    if files is None:
        state = state_of(request)
        files = request.app.state.web_files = Files(state.metadata, state.blocks,
                                                    state.notifier)
    return files


def account_of(caller: Caller) -> Account:
    return Account(caller.user_id, caller.root_ns, caller.device)


async def resolve(request: Request, caller: Caller, parts: list[str]) -> Node:
    return await files_of(request).resolve(account_of(caller), parts)


def split_parent(parts: list[str]) -> tuple[list[str], str]:
    """``(folder, name)`` of a path that names something in a folder."""
    if not parts:
        raise BadRequest("the workspace root has no name")
    return parts[:-1], parts[-1]
