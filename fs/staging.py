"""Files being written: staging files on local disk, one per entry, and sealing.

A file opened for writing lives in a *staging file* (``LOFT_HOME/staging/<entry id>``),
never in memory, so a 1 GiB write keeps the mount's memory bounded. Every handle of
that entry, readers included, reads the staging file while it exists. When the last
writer closes (or on ``fsync``), the staging file is *sealed*: cut into chunks
(FastCDC), new chunks stored in the cache as *pending* (kept until uploaded), and its
block list becomes a new version, based on the version the writer started from
(``Staged.base``): if that changed elsewhere meanwhile, the reconciler keeps the new
content as a conflicted copy.

Each entry has a lock of its own (``Stager.lock``), held while its staging file is made
(which may fetch its chunks) or sealed; nothing else waits for it.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from backend import protocol as p
from backend.chunking import cut, cut_bytes
from backend.private import DIR_MODE
from cache.env import Txn, Writer
from cache.records import Entry
from cache.store import Cache
from fs.content import BlockMap, Fetcher

log = logging.getLogger("loft.fs")

SEAL_BATCH = 16 * 1024 * 1024
"""Bytes of new chunks handed to the writer in one transaction while sealing."""
INLINE_SEAL = 1024 * 1024
"""Files up to this size are cut inside the writer job that records their version:
a few milliseconds of the writer's time instead of three trips to other threads."""


@dataclass
class Staged:
    """A file being written: its staging file, who holds it and what it started from.

    ``base`` is the version whose block list describes the staging file outside
    ``dirty``: the byte range written, cut off or added since (None: nothing), which
    is all the next seal cuts again (``Recut``).
    """

    fd: int
    base: Entry
    opens: int = 0
    modified: bool = False
    mtime: int = field(default_factory=time.time_ns)
    dirty: tuple[int, int] | None = None

    def changed(self, lo: int, hi: int) -> None:
        """Bytes ``[lo, hi)`` were written (or the size moved between ``lo`` and ``hi``)."""
        if self.dirty is not None:
            lo, hi = min(lo, self.dirty[0]), max(hi, self.dirty[1])
        self.dirty = (lo, hi)
        self.modified, self.mtime = True, time.time_ns()

    def take(self) -> tuple[int, int] | None:
        """What a seal starting now covers; changes made while it runs count anew."""
        dirty, self.dirty, self.modified = self.dirty, None, False
        return dirty

    def give_back(self, dirty: tuple[int, int] | None) -> None:
        """A seal that failed: what it took is still to be sealed."""
        self.changed(*(dirty or (0, 0)))


class Recut:
    """Which part of a file a seal cuts again, from the block list of the version the
    staging file held before (``old``) and the range changed since (``dirty``).

    FastCDC starts afresh at every cut point, so the chunks before the one holding the
    first changed byte are kept as they are, and cutting resumes at that chunk's start
    (the last chunk ends at the end of the file, not at a cut point, so an append cuts
    it again). Past the last changed byte, once a new cut point falls on an old one,
    the content and so every later cut point is the old one's: those blocks are kept
    too. A 1-byte edit anywhere costs a chunk or two of cutting, and an append the
    last chunk and the new bytes.
    """

    def __init__(self, old: list[list[Any]], dirty: tuple[int, int] | None, size: int) -> None:
        self.old = old
        starts = list(itertools.accumulate((length for _, length in old), initial=0))
        lo, hi = dirty if dirty is not None else (0, max(size, starts[-1]))
        self.first = max(0, min(bisect.bisect_right(starts, lo) - 1, len(old) - 1))
        self.start = starts[self.first] if old else 0
        # An old cut point (not the old end) at or past the change, inside both files.
        self._resync = {
            end: index + 1
            for index, end in enumerate(starts[1:-1])
            if end >= hi and end < size and end > self.start
        }

    def tail(self, end: int) -> int | None:
        """The index of the first old block kept after a new chunk that ends at
        ``end`` (a file offset), or None if cutting goes on."""
        return self._resync.get(end)

    def blocks(self, cut: list[list[Any]], tail: int | None) -> list[list[Any]]:
        kept = self.old[tail:] if tail is not None else []
        return self.old[: self.first] + cut + kept


class Stager:
    """The staging directory and the files being written in it."""

    def __init__(self, root: Path, cache: Cache, writer: Writer, fetcher: Fetcher) -> None:
        self.root = root
        self.cache = cache
        self.writer = writer
        self.fetcher = fetcher
        self.staged: dict[str, Staged] = {}
        self._locks: dict[str, tuple[trio.Lock, int]] = {}
        root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)  # owner-only: content
        os.chmod(root, DIR_MODE)
        # Left by a mount that died: writes never closed nor fsync'd, so never promised.
        for leftover in root.iterdir():
            leftover.unlink(missing_ok=True)

    @asynccontextmanager
    async def lock(self, entry_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(entry_id, (trio.Lock(), 0))
        self._locks[entry_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[entry_id]
            if users == 1:
                del self._locks[entry_id]
            else:
                self._locks[entry_id] = (lock, users - 1)

    def size(self, entry_id: str) -> int | None:
        staged = self.staged.get(entry_id)
        return os.fstat(staged.fd).st_size if staged is not None else None

    async def stage(self, entry: Entry, truncate: bool) -> Staged:
        """The entry's staging file, made (and filled, unless truncating) if need be;
        the caller holds the entry's lock."""
        staged = self.staged.get(entry["id"])
        if staged is None:
            path = self.root / entry["id"]
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if not truncate and entry["size"]:
                    await self._fill(entry, fd)
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
            staged = self.staged[entry["id"]] = Staged(fd, entry)
            if truncate:
                staged.changed(0, entry["size"])
        elif truncate:
            staged.changed(0, os.fstat(staged.fd).st_size)
            os.ftruncate(staged.fd, 0)
        staged.opens += 1
        return staged

    async def _fill(self, entry: Entry, fd: int) -> None:
        blocks = BlockMap(entry.get("blocks", []))
        limit = trio.Semaphore(6)

        async def one(index: int) -> None:
            try:
                data = await self.fetcher.get(blocks.ids[index])
                await trio.to_thread.run_sync(os.pwrite, fd, data, blocks.starts[index])
            finally:
                limit.release()

        async with trio.open_nursery() as nursery:
            for index in range(len(blocks.ids)):
                await limit.acquire()
                nursery.start_soon(one, index)

    def drop(self, entry_id: str) -> None:
        staged = self.staged.pop(entry_id, None)
        if staged is not None:
            os.close(staged.fd)
        (self.root / entry_id).unlink(missing_ok=True)

    def drop_all(self) -> None:
        for entry_id in list(self.staged):
            self.drop(entry_id)

    async def seal(
        self, staged: Staged, dirty: tuple[int, int] | None
    ) -> tuple[list[list[Any]], int]:
        """Cut what changed of the staging file into chunks (``Recut``), cache the new
        ones as pending; the block list and size of the version it now holds. Cutting
        the next ``SEAL_BATCH`` bytes (a worker thread) overlaps storing the last ones
        (the writer). Memory: at most three batches."""
        size = os.fstat(staged.fd).st_size
        recut = Recut(staged.base.get("blocks", []), dirty, size)
        cut_blocks: list[list[Any]] = []
        send, receive = trio.open_memory_channel[list[tuple[str, bytes]]](1)

        async def store() -> None:
            async with receive:
                async for new in receive:
                    await self._store(new)

        reader = Cutter(cut(staged.fd, recut.start, size), recut)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store)
            async with send:
                while not reader.done:
                    pieces, new = await trio.to_thread.run_sync(
                        self._cut_some, staged.fd, reader
                    )
                    cut_blocks.extend([cid, length] for cid, length in pieces)
                    if new:
                        await send.send(new)
        blocks = recut.blocks(cut_blocks, reader.tail)
        return blocks, sum(length for _, length in blocks)

    def small(self, staged: Staged) -> bool:
        """Whether the file is small enough to seal inside one writer job."""
        return os.fstat(staged.fd).st_size <= INLINE_SEAL

    def seal_in(self, txn: Txn, staged: Staged) -> tuple[list[list[Any]], int]:
        """``seal`` of a small file within the caller's write transaction (the
        writer's thread): one hop for the chunks and the version together."""
        data = os.pread(staged.fd, os.fstat(staged.fd).st_size, 0)
        blocks: list[list[Any]] = []
        for piece in cut_bytes(data):
            content = data[piece.offset : piece.offset + piece.length]
            if self.cache.chunks.meta(txn, piece.id) is None:  # this transaction's view
                self.cache.chunks.put(txn, piece.id, content, pending=True)
            blocks.append([piece.id, piece.length])
        return blocks, len(data)

    def _cut_some(
        self, fd: int, reader: Cutter
    ) -> tuple[list[tuple[str, int]], list[tuple[str, bytes]]]:
        """The next chunks, up to ``SEAL_BATCH`` bytes (in a worker thread): every
        ``(id, length)``, and the content of those the cache lacks. Everything large
        here runs with the GIL released (reading, cutting, hashing; a new chunk's
        content is read again rather than copied): a seal leaves FUSE requests on
        the event loop alone."""
        pieces: list[tuple[str, int]] = []
        new: list[tuple[str, bytes]] = []
        held = 0
        for offset, view in reader:
            cid = p.chunk_id(view)
            pieces.append((cid, len(view)))
            held += len(view)
            if not self.cache.chunks.has(cid):
                new.append((cid, os.pread(fd, len(view), offset)))
            if held >= SEAL_BATCH:
                break
        return pieces, new

    async def _store(self, pieces: list[tuple[str, bytes]]) -> None:
        # A chunk already cached came from the server or went to it: only new content
        # waits for upload. Durable with the version's record (the next flush).
        if not pieces:
            return

        def put(txn: Txn) -> None:
            for cid, data in pieces:
                self.cache.chunks.put(txn, cid, data, pending=True)

        await self.writer.write(put)


class Cutter:
    """The chunks of a ``Recut``, ``(offset, data)`` as ``chunking.cut`` gives them,
    until the cut falls back on the old cut points (``tail``) or the file ends
    (``done``)."""

    def __init__(self, stream: Iterator[tuple[int, memoryview]], recut: Recut) -> None:
        self.stream = stream
        self.recut = recut
        self.at = recut.start
        self.tail: int | None = None
        self.done = False

    def __iter__(self) -> Iterator[tuple[int, memoryview]]:
        if self.done:
            return
        for offset, view in self.stream:
            self.at = offset + len(view)
            self.tail = self.recut.tail(self.at)
            if self.tail is not None:
                self.done = True
            yield offset, view
            if self.done:
                return
        self.done = True
