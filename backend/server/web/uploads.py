"""Resumable uploads of the web page: a file arrives in pieces, is cut into chunks as
they arrive, and is committed once, whole.

=============================================== =====================================
route (JSON)                                    answer
=============================================== =====================================
POST /upload {path, size}                       {id, offset: 0, piece}: a new upload
GET  /upload/{id}                               {id, offset, size}: bytes received
PUT  /upload/{id}?offset=N  (raw body)          {offset}: the piece at ``N`` (at most
                                                ``PIECE`` bytes) taken; 409 {offset}
                                                if ``N`` is not the bytes received
POST /upload/{id}/finish                        {path}: committed as a file version
DELETE /upload/{id}                             {}: abandoned
=============================================== =====================================

State lives in the ``uploads`` table, not in a process: any server node takes the next
piece, and a dropped connection resumes from the offset the server reports. Each
piece goes through ``files.Upload`` (``backend.chunking.StreamCutter``: the cuts of
the whole file, as the mount makes them); complete chunks are stored at once through
``Files.store`` (verified, deduplicated, charged to the quota: an upload beyond quota
is refused at the piece that passes it, 507), and only the bytes not yet cut (``tail``,
under 4 MiB after each full piece) are kept with the block list. A piece is taken by a
conditional ``UPDATE`` on ``received``: two requests with the same offset cannot both
count. ``finish`` cuts the tail, stores it and commits the file in one
``Files.save``: a new file, or a new version of the file already at that path (the old
one stays in its versions). Missing folders on the path are made first (folder uploads).

An upload untouched for ``UPLOAD_TTL`` is dropped at the next upload's start (a user
has at most ``MAX_OPEN`` unfinished); chunks it stored that nothing names are garbage
collection's.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from backend import protocol as p
from backend.errors import BadRequest, Conflict, Exists, NotFound
from backend.server.database import Tx
from backend.server.files import Account, Files, Node, Upload
from backend.server.http import read_body, state_of
from backend.server.web.paths import account_of, files_of, parts_of, split_parent
from backend.server.web.render import plain
from backend.server.web.session import Session, json_ok, signed_in

PIECE = 16 * 1024 * 1024
"""Bytes of one piece (the client's; a full one always lets the cutter cut)."""
UPLOAD_TTL = 24 * 3600
MAX_OPEN = 64
"""Unfinished uploads one user may have at once (each keeps its tail, under 4 MiB)."""


@dataclass
class _Record:
    path: str
    size: int
    received: int
    blocks: list[list[Any]]
    tail: bytes

    def upload(self) -> Upload:
        """The cutter's state as the last piece left it."""
        upload = Upload(blocks=[list(b) for b in self.blocks], size=self.received - len(self.tail))
        cut = upload.feed(self.tail)
        assert not cut, "a tail is under a window: nothing to cut yet"
        return upload


def _load(tx: Tx, upload_id: str, user_id: int) -> _Record:
    rows = tx.execute(
        "SELECT path, size, received, blocks, tail FROM uploads WHERE id = ? AND user_id = ?",
        (upload_id, user_id))
    if not rows:
        raise NotFound("no such upload (finished, abandoned or expired): start again")
    r = rows[0]
    return _Record(str(r[0]), int(r[1]), int(r[2]), p.decode(bytes(r[3])), bytes(r[4]))


async def _json(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await read_body(request, 64 * 1024))
    except ValueError:
        raise BadRequest("expected a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("expected a JSON object")
    return value


def _upload_id(request: Request) -> str:
    value = str(request.path_params["id"])
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise NotFound("no such upload")
    return value


@signed_in
async def start(request: Request, session: Session) -> Response:
    body = await _json(request)
    path = p.field(body, "path", str)
    size = p.nonneg_int(body, "size")
    parts = parts_of(path)
    split_parent(parts)
    upload_id, now, user_id = secrets.token_hex(16), int(time.time()), session.caller.user_id

    def work(tx: Tx) -> None:
        tx.execute("DELETE FROM uploads WHERE expires <= ?", (now,))
        if len(tx.execute("SELECT id FROM uploads WHERE user_id = ? LIMIT ?",
                          (user_id, MAX_OPEN))) >= MAX_OPEN:
            raise BadRequest(f"{MAX_OPEN} uploads are unfinished: finish or abandon some")
        tx.execute(
            "INSERT INTO uploads (id, user_id, path, size, received, blocks, tail, created,"
            " expires) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (upload_id, user_id, plain(parts), size, p.encode([]), b"", now, now + UPLOAD_TTL))

    await state_of(request).metadata.account_tx(work)
    return json_ok({"id": upload_id, "offset": 0, "piece": PIECE}, 201)


@signed_in
async def status(request: Request, session: Session) -> Response:
    upload_id, user_id = _upload_id(request), session.caller.user_id
    record = await state_of(request).metadata.account_tx(
        lambda tx: _load(tx, upload_id, user_id), False)
    return json_ok({"id": upload_id, "offset": record.received, "size": record.size})


@signed_in
async def piece(request: Request, session: Session) -> Response:
    upload_id, user_id = _upload_id(request), session.caller.user_id
    offset = request.query_params.get("offset", "")
    metadata = state_of(request).metadata
    record = await metadata.account_tx(lambda tx: _load(tx, upload_id, user_id), False)
    if not offset.isdigit() or int(offset) != record.received:
        raise Conflict(f"the upload has {record.received} bytes", {"offset": record.received})
    data = await read_body(request, PIECE)
    received = record.received + len(data)
    if received > record.size:
        raise BadRequest(f"more bytes than the {record.size} announced")
    upload = record.upload()
    chunks = await trio.to_thread.run_sync(upload.feed, data)
    await files_of(request).store(account_of(session.caller), chunks)
    kept = received - upload.size
    tail = (record.tail + data)[len(record.tail) + len(data) - kept:] if kept else b""
    now = int(time.time())

    def work(tx: Tx) -> bool:
        # Durable with the transaction: a crash before it leaves the piece untaken
        # (its chunks stored, named by nothing yet), and the client sends it again.
        return bool(tx.execute(
            "UPDATE uploads SET received = ?, blocks = ?, tail = ?, expires = ?"
            " WHERE id = ? AND received = ? RETURNING id",
            (received, p.encode(upload.blocks), tail, now + UPLOAD_TTL, upload_id,
             record.received)))

    if not await metadata.account_tx(work):
        raise Conflict("another request took this piece first", {"offset": None})
    return json_ok({"offset": received})


@signed_in
async def finish(request: Request, session: Session) -> Response:
    upload_id, user_id = _upload_id(request), session.caller.user_id
    metadata, files, account = state_of(request).metadata, files_of(request), account_of(
        session.caller)
    record = await metadata.account_tx(lambda tx: _load(tx, upload_id, user_id), False)
    if record.received != record.size:
        raise Conflict(f"the upload has {record.received} of {record.size} bytes",
                       {"offset": record.received})
    upload = record.upload()
    await files.store(account, await trio.to_thread.run_sync(upload.finish))
    folder_parts, name = split_parent(parts_of(record.path))
    folder = await folders(files, account, folder_parts)
    existing = await _existing(files, account, [*folder_parts, name])
    if existing is not None and existing.entry["kind"] != "file":
        raise Exists(f"{name} exists there and is not a file")
    await files.save(account, folder, name, upload, existing)
    await metadata.account_tx(
        lambda tx: tx.execute("DELETE FROM uploads WHERE id = ?", (upload_id,)))
    return json_ok({"path": record.path})


@signed_in
async def abandon(request: Request, session: Session) -> Response:
    upload_id, user_id = _upload_id(request), session.caller.user_id
    await state_of(request).metadata.account_tx(lambda tx: tx.execute(
        "DELETE FROM uploads WHERE id = ? AND user_id = ?", (upload_id, user_id)))
    return json_ok({})


async def _existing(files: Files, account: Account, parts: list[str]) -> Node | None:
    try:
        return await files.resolve(account, parts)
    except NotFound:
        return None


async def folders(files: Files, account: Account, parts: list[str]) -> Node:
    """The folder at ``parts``, made (with its missing parents) if it is not there."""
    node = await files.resolve(account, [])
    for depth, name in enumerate(parts):
        found = await _existing(files, account, parts[: depth + 1])
        if found is None:
            try:
                found = await files.mkdir(account, node, name)
            except Exists:  # made meanwhile, by another upload of the same folder
                found = await files.resolve(account, parts[: depth + 1])
        if not found.is_dir:
            raise Exists(f"{p.join_path(parts[: depth + 1])} is a file, not a folder")
        node = found
    return node
