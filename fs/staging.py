"""Files being written: staging files, one per entry, and sealing.

A file opened for writing gets a *staging file* (``fs.stagefile``): a small one in
memory, else a file in ``LOFT_HOME/staging`` with no name (``O_TMPFILE``: no
directory entry to make and remove, nothing left by a crash), sparse, of the file's
size, into which nothing is copied. What a program writes lands there (on disk past
1 MiB, so a 1 GiB write keeps the mount's memory bounded); every other byte is still
the one of the version the writer started from (``Staged.base``), as ``fs.overlay``
keeps account. Every handle of that entry, readers included, reads
through the staging file while it exists, with the base's chunks merged in where it
has none (``Stager.read``). A close of a small file (or an ``fsync``) *seals* it at
once; a close of a large one *parks* it (``fs.parking``: durable, sealed in the
background when left alone). A seal cuts the part that changed again into chunks
(FastCDC, ``Recut``),
with the base's bytes merged in where the staging file has none (from the cache,
fetched only then, never copied into it: ``Stager._merged``), new chunks are stored in
the cache as *pending* (kept until uploaded), and its block list becomes a new
version, based on ``Staged.base``: if that changed elsewhere meanwhile, the reconciler
keeps the new content as a conflicted copy.

Each entry has a lock of its own (``Stager.lock``), held while its staging file is made,
truncated or sealed; nothing else waits for it. Filling a gap happens on the event
loop between two awaits, so it never overwrites a write that raced it.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from backend import protocol as p
from backend.chunking import WINDOW, cut, cut_bytes
from backend.private import DIR_MODE
from cache.env import Txn, Writer
from cache.records import Entry
from cache.store import Cache
from fs.content import BlockMap, Fetcher, read_blocks
from fs.overlay import Overlay
from fs.parking import SEALED, Parking, forget_sealed
from fs.recut import Cutter, Recut, Segment
from fs.staged import Staged
from fs.stagefile import Budget, StagingFile

log = logging.getLogger("loft.fs")

SEAL_BATCH = 8 * 1024 * 1024
"""Bytes of new chunks handed to the writer in one transaction while sealing."""
INLINE_SEAL = 1024 * 1024
"""Files up to this size are cut inside the writer job that records their version:
a few milliseconds of the writer's time instead of three trips to other threads."""
NEAR_WINDOW = 2 * 1024 * 1024
"""What a seal reads at a time when the change is small: the cut most
likely falls back in step at the end of the chunk it changed."""
HELD_CHUNKS = 4
"""Base chunks a seal keeps at hand: a window cut again reads its last chunk again."""
FILL_AT_ONCE = 6
"""Base chunks fetched at once to fill a staging file's gaps."""
SMALL_CLOSE = 1024 * 1024
"""A staging file holding at most this much on disk is closed (so freed) in place; a
larger one in a worker thread (freeing its blocks takes milliseconds)."""

NewChunk = tuple[str, bytes, str | None]
"""A chunk a seal made: its id, content, and the base chunk it most likely edits."""


class Stager:
    """The staging directory and the files being written in it."""

    def __init__(self, root: Path, cache: Cache, writer: Writer, fetcher: Fetcher) -> None:
        self.root = root
        self.cache = cache
        self.writer = writer
        self.fetcher = fetcher
        self.staged: dict[str, Staged] = {}
        self.memory = Budget()
        self._locks: dict[str, tuple[trio.Lock, int]] = {}
        self.parking = Parking(root)
        root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)  # owner-only: content
        os.chmod(root, DIR_MODE)

    async def recover(self) -> int:
        """Take up the files an earlier mount parked and did not seal (before the
        mount serves); they are due at once. How many."""
        await trio.to_thread.run_sync(self.cache.flush)  # see Parking.recover
        with self.cache.read() as txn:
            sealed = self.cache.env.meta_prefixed(txn, SEALED)
        records = await trio.to_thread.run_sync(self.parking.recover, sealed)
        now = trio.current_time()
        for record in records:
            staged = self.parking.restore(record, self.memory)
            staged.parked_since = staged.due = now
            self.staged[record.entry] = staged

        if sealed:  # every record they covered is gone now
            await self.writer.write(lambda txn: forget_sealed(self.cache.env, txn, list(sealed)))
        if records:
            log.info("%d file(s) closed before the last mount stopped: sealing", len(records))
        return len(records)

    def parked(self) -> int:
        """Files closed and parked, their seal still to come."""
        return sum(1 for s in self.staged.values() if s.record is not None)

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

    def writing(self) -> frozenset[str]:
        """Entries whose written content is not yet a version: changed since their
        last seal, or being sealed (or staged) right now."""
        return frozenset(i for i, s in self.staged.items() if s.modified) | set(self._locks)

    def size(self, entry_id: str) -> int | None:
        staged = self.staged.get(entry_id)
        return staged.file.size() if staged is not None else None

    def stage(self, entry: Entry, truncate: bool) -> Staged:
        """The entry's staging file, made if need be: sparse, of the entry's size,
        nothing copied (emptied if truncating); the caller holds the entry's lock."""
        staged = self.staged.get(entry["id"])
        if staged is None:
            file = StagingFile(self.root, self.memory, entry["size"])
            staged = self.staged[entry["id"]] = Staged(file, entry)
        if truncate:
            self.resize(staged, 0)
        staged.opens += 1
        return staged

    def resize(self, staged: Staged, size: int) -> None:
        before = staged.file.size()
        if size < before:
            self.parking.preserve(staged, size, before)
        staged.file.truncate(size)
        staged.resized(before, size)

    async def fill(self, staged: Staged, lo: int, hi: int) -> None:
        """Copy into the staging file the base's bytes of the chunks under ``[lo, hi)``
        that it lacks (fetching only those chunks)."""
        blocks = staged.blocks
        wanted = [index for index in blocks.covering(lo, hi - lo)
                  if staged.overlay.gaps(*_span(blocks, index))]
        if not wanted:
            return
        limit = trio.Semaphore(FILL_AT_ONCE)

        async def one(index: int) -> None:
            async with limit:
                data = await self.fetcher.get(blocks.ids[index])
            if staged.blocks is not blocks or self.staged.get(staged.base["id"]) is not staged:
                return  # sealed or dropped meanwhile: these are no longer its base's bytes
            start = blocks.starts[index]
            # No await from here on: a write cannot land between the gaps and the copy.
            for glo, ghi in staged.overlay.gaps(*_span(blocks, index)):
                staged.file.pwrite(memoryview(data)[glo - start : ghi - start], glo)
                staged.overlay.filled(glo, ghi)

        async with trio.open_nursery() as nursery:
            for index in wanted:
                nursery.start_soon(one, index)

    async def read(self, staged: Staged, offset: int, size: int) -> bytes | None:
        """Bytes of the file being written: the staging file's, and the base's where
        it has none; None if it was sealed and dropped meanwhile (the version has
        them)."""
        while True:
            blocks = staged.blocks
            base: list[tuple[int, bytes]] = []
            for glo, ghi in staged.overlay.gaps(offset, offset + size):
                base.append((glo, await read_blocks(self.fetcher, blocks, glo, ghi - glo)))
            if staged.blocks is blocks:
                break  # else a seal gave it a new base meanwhile: its gaps are others
        if self.staged.get(staged.base["id"]) is not staged:
            return None
        # No await from here on. Gaps only shrink while the base stays: every gap now
        # lies inside one read above.
        data = staged.file.pread(size, offset)
        gaps = staged.overlay.gaps(offset, offset + len(data))
        if not gaps:
            return data
        out = bytearray(data)
        for glo, ghi in gaps:
            at = bisect.bisect_right([start for start, _ in base], glo) - 1
            start, piece = base[at]
            out[glo - offset : ghi - offset] = piece[glo - start : ghi - start]
        return bytes(out)

    def drop(self, entry_id: str, keep_parked: bool = False) -> None:
        staged = self.staged.pop(entry_id, None)
        if staged is not None:
            self.parking.release(staged, keep_parked)
            staged.file.close()

    async def discard(self, entry_id: str) -> None:
        """``drop``, closing a large staging file in a worker thread: freeing its
        blocks takes milliseconds. The entry is forgotten at once, so a new staging
        file of it is a new file."""
        staged = self.staged.pop(entry_id, None)
        if staged is None:
            return
        self.parking.release(staged)
        if staged.file.disk_bytes() <= SMALL_CLOSE:
            staged.file.close()  # memory, or a few blocks to free
        else:
            await trio.to_thread.run_sync(staged.file.close)

    def drop_all(self) -> None:
        """At unmount: parked files the mount could not seal stay for the next one."""
        for entry_id in list(self.staged):
            self.drop(entry_id, keep_parked=True)

    async def seal(
        self, staged: Staged, dirty: list[tuple[int, int]] | None
    ) -> tuple[list[list[Any]], int]:
        """Cut what changed of the staging file into chunks (``Recut``), cache the new
        ones as pending; the block list and size of the version it now holds. Cutting
        the next ``SEAL_BATCH`` bytes (a worker thread) overlaps storing the last ones
        (the writer). Memory: at most three batches, and the last ``HELD_CHUNKS`` base
        chunks."""
        size = staged.file.size()
        staged.file.fileno()  # cut in worker threads: from disk
        recut = Recut(staged.base.get("blocks", []), dirty, size)
        near = all(hi - lo <= p.CDC_MAX for lo, hi in recut.ranges)

        taken = staged.overlay.snapshot()  # before any byte is read: see _merged
        held: dict[str, bytes] = {}

        def read(lo: int, hi: int) -> bytes | bytearray:  # in the cutting thread
            return self._merged(staged, lo, hi, taken, held)

        segments: list[Segment] = []
        send, receive = trio.open_memory_channel[list[NewChunk]](1)

        async def store() -> None:
            async with receive:
                async for new in receive:
                    await self._store(new)

        window = NEAR_WINDOW if near else WINDOW
        first: int | None = recut.first
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store)
            async with send:
                while first is not None:  # a segment per changed stretch
                    start = recut.start_of(first)
                    reader = Cutter(cut(read, start, size, window), recut)
                    segment = Segment(first, [], None)
                    while not reader.done:
                        pieces, new = await trio.to_thread.run_sync(
                            self._cut_some, staged, reader
                        )
                        segment.cut.extend([cid, length] for cid, length in pieces)
                        if new:
                            await send.send(new)
                    segment.tail = reader.tail
                    segments.append(segment)
                    first = recut.resume(reader.tail) if reader.tail is not None else None
        blocks = recut.blocks(segments)
        return blocks, sum(length for _, length in blocks)

    def small(self, staged: Staged) -> bool:
        """Whether the file is small enough to seal inside one writer job."""
        return staged.file.size() <= INLINE_SEAL

    def seal_in(self, txn: Txn, staged: Staged) -> tuple[list[list[Any]], int]:
        """``seal`` of a small file within the caller's write transaction (the
        writer's thread): one hop for the chunks and the version together."""
        data = staged.file.pread(staged.file.size(), 0)
        blocks: list[list[Any]] = []
        for piece in cut_bytes(data):
            content = data[piece.offset : piece.offset + piece.length]
            if self.cache.chunks.meta(txn, piece.id) is None:  # this transaction's view
                base = _replaced(staged.blocks, piece.offset, piece.length)
                self.cache.chunks.put(txn, piece.id, content, pending=True, base=base)
            blocks.append([piece.id, piece.length])
        return blocks, len(data)

    def _merged(
        self, staged: Staged, lo: int, hi: int, taken: Overlay, held: dict[str, bytes],
    ) -> bytes | bytearray:
        """Bytes ``[lo, hi)`` of a file being sealed (in the cutting thread): the
        staging file's, and where it has none (``taken``: its overlay when the seal
        began) the base's, read from the cache (fetched only if missing; ``held`` keeps
        the last few for the seal's next reads); nothing is copied into the staging
        file. The gaps were taken before any read (gaps only shrink while the seal
        holds the entry's lock): a write landing meanwhile in one shows the base's bytes
        there, never a hole, and is cut by the next seal (it is dirty)."""
        if self.staged.get(staged.base["id"]) is not staged:
            raise OSError(errno.ESTALE, "the file was dropped while being sealed")
        holes = taken.gaps(lo, hi)
        if not holes:
            return staged.file.pread(hi - lo, lo)
        blocks = staged.blocks  # the seal holds the entry's lock: its base stays
        parts: list[bytes | memoryview] = []
        at = lo
        for glo, ghi in holes:
            if at < glo:
                parts.append(staged.file.pread(glo - at, at))
            for index in blocks.covering(glo, ghi - glo):
                chunk, start = self._held(held, blocks.ids[index]), blocks.starts[index]
                a, b = max(glo, start), min(ghi, start + len(chunk))
                parts.append(memoryview(chunk)[a - start : b - start])
            at = ghi
        if at < hi:
            parts.append(staged.file.pread(hi - at, at))
        return b"".join(parts)

    def _held(self, held: dict[str, bytes], cid: str) -> bytes:
        """A base chunk for ``_merged``: from ``held``, the cache, or the server."""
        chunk = held.get(cid)
        if chunk is None:
            chunk = self.cache.chunks.get(cid)
            if chunk is None:
                chunk = trio.from_thread.run(self.fetcher.get, cid)
            held[cid] = chunk
            while len(held) > HELD_CHUNKS:
                del held[next(iter(held))]
        return chunk

    def _cut_some(
        self, staged: Staged, reader: Cutter
    ) -> tuple[list[tuple[str, int]], list[NewChunk]]:
        """The next chunks, up to ``SEAL_BATCH`` bytes (in a worker thread): every
        ``(id, length)``, and the content of those the cache lacks. Everything large
        here runs with the GIL released (reading, cutting, hashing) or is a copy: a
        seal leaves FUSE requests on the event loop alone."""
        pieces: list[tuple[str, int]] = []
        new: list[NewChunk] = []
        held = 0
        for offset, view in reader:
            cid = p.chunk_id(view)
            pieces.append((cid, len(view)))
            held += len(view)
            if not self.cache.chunks.has(cid):
                data = bytes(view)
                new.append((cid, data, _replaced(staged.blocks, offset, len(view))))
            if held >= SEAL_BATCH:
                break
        return pieces, new

    async def _store(self, pieces: list[NewChunk]) -> None:
        # A chunk already cached came from the server or went to it: only new content
        # waits for upload. Durable with the version's record (the next flush).
        if not pieces:
            return

        def put(txn: Txn) -> None:
            for cid, data, base in pieces:
                self.cache.chunks.put(txn, cid, data, pending=True, base=base)

        await self.writer.write(put, bulk=True)


def _replaced(blocks: BlockMap, offset: int, length: int) -> str | None:
    """The base's chunk a new chunk at ``[offset, offset+length)`` most overlaps (the
    last one for bytes past its end): what the new one is most likely an edit of."""
    if not blocks.ids:
        return None
    best, most = None, 0
    for index in blocks.covering(min(offset, blocks.size - 1), max(length, 1)):
        lo, hi = _span(blocks, index)
        overlap = min(hi, offset + length) - max(lo, offset)
        if best is None or overlap > most:
            best, most = blocks.ids[index], overlap
    return best


def _span(blocks: BlockMap, index: int) -> tuple[int, int]:
    start = blocks.starts[index]
    end = blocks.starts[index + 1] if index + 1 < len(blocks.starts) else blocks.size
    return start, end
