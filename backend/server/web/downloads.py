"""Downloads of the web page: a file (or one of its versions) and a folder as a zip.

================================ =================================================
route                            answer
================================ =================================================
GET /content/{path}              the file: inline if its type is safe to show,
    [?rev=SEQ] [&download=1]     else (or with ``download``) an attachment; ranges
                                 (``backend.server.web.content``); ``rev``: the
                                 version of that sequence (``/versions``)
GET /zip/{path}                  the folder and all below it, as a streamed zip
================================ =================================================

A folder's zip walks the tree as it streams (depth first, a folder's entries by name),
one folder listing and one chunk held at a time; shared folders inside it are followed
as the user sees them. At most ``MAX_ZIP_ENTRIES`` entries go in one zip.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import trio
from starlette.requests import Request
from starlette.responses import Response

from backend.errors import BadRequest, NotFound, TooLarge
from backend.server.files import Files, Node
from backend.server.http import int_param, state_of
from backend.server.web.content import FileInfo, ZipItem, ZipResponse, file_response
from backend.server.web.paths import files_of, path_param, resolve
from backend.server.web.session import Session, signed_in

MAX_ZIP_ENTRIES = 100_000


def info_of(node: Node) -> FileInfo:
    return FileInfo(node.name, node.size, f'"{node.ns}-{node.entry["id"]}-{node.rev}"',
                    int(node.entry["mtime"]))


def node_response(request: Request, files: Files, node: Node, force_download: bool,
                  extra: dict[str, str] | None = None) -> Response:
    if node.is_dir:
        raise BadRequest(f"{node.name} is a folder: download it as a zip")
    if node.entry["kind"] != "file":
        raise NotFound(f"{node.name} is not a file")
    return file_response(request, info_of(node), lambda: files.reader(node), force_download,
                         extra)


@signed_in
async def content(request: Request, session: Session) -> Response:
    parts = path_param(request)
    node = await resolve(request, session.caller, parts)
    rev = int_param(request, "rev", None)
    if rev is not None and rev != node.rev:
        node = await version_node(request, session, node, rev)
    force = request.query_params.get("download") == "1"
    return node_response(request, files_of(request), node, force)


async def version_node(request: Request, session: Session, node: Node, rev: int) -> Node:
    """The node as it was at sequence ``rev`` (a version listed by ``/versions``)."""
    found = await state_of(request).metadata.versions(
        session.caller.user_id, node.ns, node.entry["id"], rev - 1, 1)
    if not found or found[0]["rev"] != rev or found[0]["deleted"]:
        raise NotFound(f"{node.name} has no version {rev}")
    entry = {k: v for k, v in found[0].items() if k not in ("deleted", "device", "committed")}
    return Node(node.ns, entry, node.role, node.user_id)


def zip_items(files: Files, top: Node) -> Iterator[ZipItem]:
    """Every entry below ``top``, for a worker thread of the app's loop."""
    stack: list[tuple[Node, str]] = [(top, "")]
    count = 0
    while stack:
        folder, prefix = stack.pop()
        children = trio.from_thread.run(files.children, folder)
        for child in reversed(children):
            count += 1
            if count > MAX_ZIP_ENTRIES:
                raise TooLarge(f"more than {MAX_ZIP_ENTRIES} entries: zip a folder below")
            if child.is_dir:
                stack.append((child, f"{prefix}{child.name}/"))
        for child in children:
            path = prefix + child.name
            if child.is_dir:
                yield ZipItem(path + "/", int(child.entry["mtime"]), None)
            elif child.entry["kind"] == "file":
                yield ZipItem(path, int(child.entry["mtime"]), partial(files.reader, child))


def folder_zip(files: Files, node: Node, name: str,
               extra: dict[str, str] | None = None) -> Response:
    if not node.is_dir:
        raise BadRequest(f"{node.name} is not a folder")
    return ZipResponse(name, lambda: zip_items(files, node), extra)


@signed_in
async def zip_folder(request: Request, session: Session) -> Response:
    parts = path_param(request)
    node = await resolve(request, session.caller, parts)
    return folder_zip(files_of(request), node, parts[-1] if parts else "Loft")
