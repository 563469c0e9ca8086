"""Chunks as files in a local directory: ``ROOT/ab/cd/<id>``.

Durability: a chunk is written to a temporary file in its final directory,
fsync'd, renamed over its name, and the directory fsync'd. After a crash a reader
sees either no chunk or the whole chunk, never a part. A ``.tmp-*`` file left by a
crash mid-write is never read: neither ``get`` nor ``ids`` looks at those names.

Directories are made 0700 and chunk files 0600 (``backend.private``), whatever the
umask: they are the users' content.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from backend import protocol as p
from backend.errors import StoreError
from backend.private import DIR_MODE, FILE_MODE, tighten
from backend.server.blocks import Stored


class DirectoryBlockStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        try:
            root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            tighten(root, deep=False)
        except OSError as exc:
            raise StoreError(f"cannot create chunk directory {root}: {exc.strerror}") from None

    def _path(self, cid: str) -> Path:
        return self.root / cid[:2] / cid[2:4] / cid

    def _put_sync(self, cid: str, sealed: bytes) -> None:
        path = self._path(cid)
        tmp = path.with_name(f".tmp-{cid}-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            if path.exists():
                return
            path.parent.parent.mkdir(exist_ok=True, mode=DIR_MODE)
            path.parent.mkdir(exist_ok=True, mode=DIR_MODE)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(sealed)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # e.g. its directory could not be made
                tmp.unlink(missing_ok=True)
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            raise StoreError(f"cannot store chunk: {reason}") from None

    async def put(self, cid: str, sealed: bytes) -> None:
        await trio.to_thread.run_sync(self._put_sync, cid, sealed)

    def _get_sync(self, cid: str) -> bytes | None:
        try:
            return self._path(cid).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read chunk {cid}: {exc.strerror}") from None

    async def get(self, cid: str) -> bytes | None:
        return await trio.to_thread.run_sync(self._get_sync, cid)

    async def has(self, cid: str) -> bool:
        return await trio.to_thread.run_sync(self._path(cid).exists)

    async def ids(self) -> AsyncIterator[str]:
        async for chunk in self.stored():
            yield chunk.cid

    async def stored(self) -> AsyncIterator[Stored]:
        def scan() -> list[Stored]:
            found: list[Stored] = []
            for path in sorted(self.root.glob("??/??/*")):
                if p.is_chunk_id(path.name):
                    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                        info = path.stat()
                        found.append(Stored(path.name, info.st_size, info.st_mtime))
            return found

        for chunk in await trio.to_thread.run_sync(scan):
            yield chunk

    def _delete_sync(self, cid: str) -> None:
        """Unlink, then fsync the directory: once this returns the chunk stays gone."""
        path = self._path(cid)
        try:
            path.unlink()
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete chunk {cid}: {exc.strerror}") from None

    async def delete(self, cid: str) -> None:
        await trio.to_thread.run_sync(self._delete_sync, cid)

    async def close(self) -> None:
        pass
