"""Moving whole files between a local disk and the server, chunk by chunk.

Uploads take two passes over the file so that memory stays bounded whatever its
size: the first cuts and hashes it (FastCDC, streaming), the server is asked which
of those chunks it lacks, and the second pass reads only those chunks back, checks
each against its id (a file changed under us is an error, not a corrupt version) and
sends them through a few parallel workers. At most ``workers`` chunks (4 MiB each at
most) are in memory at once. An interrupted upload resumes for free: the chunks that
arrived are no longer missing.

Downloads fetch chunks in parallel, verify each, and write them at their offsets into
a temporary file beside the destination, which is fsync'd and renamed over it only
when complete: a reader never sees a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from backend import protocol as p
from backend.chunking import Piece, plan_file
from backend.client import Client
from backend.errors import LocalError
from backend.tasks import for_each

Progress = Callable[[int], None]
"""Called with a number of bytes just transferred."""


def _no_progress(_: int) -> None:
    pass


def _read_piece(fd: int, piece: Piece) -> bytes:
    data = os.pread(fd, piece.length, piece.offset)
    if len(data) != piece.length or p.chunk_id(data) != piece.id:
        raise LocalError("the file changed while it was being uploaded; try again")
    return data


async def plan(path: Path) -> list[Piece]:
    try:
        return await trio.to_thread.run_sync(plan_file, path)
    except OSError as exc:
        raise LocalError(f"{path}: {exc.strerror}") from None


async def upload_pieces(
    client: Client,
    path: Path,
    pieces: list[Piece],
    progress: Progress = _no_progress,
    workers: int = 6,
    on_total: Callable[[int], None] | None = None,
) -> int:
    """Send the chunks of ``pieces`` the server lacks; the number of bytes sent."""
    unique: dict[str, Piece] = {}
    for piece in pieces:
        unique.setdefault(piece.id, piece)
    missing = await client.missing(list(unique))
    todo = [unique[cid] for cid in missing]
    if on_total is not None:
        on_total(sum(piece.length for piece in todo))
    if not todo:
        return 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise LocalError(f"{path}: {exc.strerror}") from None
    sent = 0

    async def send_one(piece: Piece) -> None:
        nonlocal sent
        data = await trio.to_thread.run_sync(_read_piece, fd, piece)
        await client.put_chunk(piece.id, data)
        sent += piece.length
        progress(piece.length)

    try:
        await for_each(todo, send_one, workers)
    finally:
        os.close(fd)
    return sent


def blocks_of(pieces: list[Piece]) -> list[list[Any]]:
    return [[piece.id, piece.length] for piece in pieces]


async def download(
    client: Client,
    blocks: list[list[Any]],
    dest: Path,
    mode: int = 0o644,
    progress: Progress = _no_progress,
    workers: int = 6,
) -> None:
    """Write the content named by ``blocks`` to ``dest`` atomically."""
    dest = Path(await trio.Path(dest).absolute())
    tmp = dest.with_name(f".{dest.name}.loft-{os.urandom(4).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o777)
    except OSError as exc:
        raise LocalError(f"{dest}: {exc.strerror}") from None
    try:
        size = sum(length for _, length in blocks)
        await trio.to_thread.run_sync(os.ftruncate, fd, size)
        jobs: list[tuple[int, str]] = []
        offset = 0
        for cid, length in blocks:
            jobs.append((offset, cid))
            offset += length

        async def fetch_one(job: tuple[int, str]) -> None:
            data = await client.get_chunk(job[1])
            await trio.to_thread.run_sync(os.pwrite, fd, data, job[0])
            progress(len(data))

        await for_each(jobs, fetch_one, workers)
        await trio.to_thread.run_sync(os.fsync, fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, dest)
    except OSError as exc:
        raise LocalError(f"{dest}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
