"""File content in the mount: lazy chunk reads.

Reads of a file nobody is writing fetch only the chunks that cover the range asked
for: from the LMDB chunk cache, else from the server (each chunk fetched once however
many readers want it, verified against its id). A fetched chunk goes to its reader at
once and into the cache through the writer behind it (up to ``STORE_BEHIND`` bytes
of them at a time; past that, readers wait for their chunk's store). A sequential
reader gets the next chunks fetched ahead of it. Files being written are
``fs.staging``'s.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import trio

from backend import protocol as p
from backend.client import Client
from backend.errors import LoftError
from cache.env import Txn, Writer
from cache.store import Cache

log = logging.getLogger("loft.fs")

READ_AHEAD = 8
"""Chunks fetched ahead of a reader at most: the window doubles while the reader
stays sequential (``ReadAhead``) and closes when it jumps."""
NEAR = 1024 * 1024
"""A read this close to where the last one ended still counts as sequential (the
kernel sends a reader's requests a few at a time, not always in order)."""
HOT_BYTES = 32 * 1024 * 1024
PART_MIN = 256 * 1024
"""A random read of a chunk this large that the device lacks may fetch only the part
it asks for (``Fetcher.wants_part``): a ranged request, not the whole chunk."""
PART_SHARE = 4
"""A chunk's parts fetched for random reads add up to at most 1/PART_SHARE of it: the
read that would pass that fetches the chunk whole and keeps it (rent, then buy: a
reader that keeps coming back to a chunk costs at most 1 + 1/PART_SHARE of it)."""
PARTS_KEPT = 4096
"""Chunks whose parts fetched are counted (the oldest forgotten first)."""
STORE_BEHIND = 64 * 1024 * 1024
"""Bytes of fetched chunks that may wait for their store while readers go on."""


class ContentError(Exception):
    """A chunk could not be had: reported to the program as ``errno``."""

    def __init__(self, message: str, code: int = errno.EIO) -> None:
        super().__init__(message)
        self.errno = code


class Fetcher:
    """Chunks by id: cache first, else the server; one download per chunk at a time."""

    def __init__(self, cache: Cache, writer: Writer, client: Client, timeout: float) -> None:
        self.cache = cache
        self.writer = writer
        self.client = client
        self.timeout = timeout
        self._inflight: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._hot: OrderedDict[str, bytes] = OrderedDict()
        self._hot_bytes = 0
        self._storing: dict[str, tuple[bytes, trio.Event]] = {}
        self._storing_bytes = 0
        self._parts: OrderedDict[str, int] = OrderedDict()
        """Bytes fetched in parts, by chunk (``wants_part``)."""

    def _remember(self, cid: str, data: bytes) -> bytes:
        """Keep the last few chunks in memory: the kernel reads 128 KiB at a time."""
        if cid not in self._hot:
            self._hot[cid] = data
            self._hot_bytes += len(data)
            while self._hot_bytes > HOT_BYTES and len(self._hot) > 1:
                _, old = self._hot.popitem(last=False)
                self._hot_bytes -= len(old)
        else:
            self._hot.move_to_end(cid)
        return data

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the read-ahead tasks; run in the mount's nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def keep(self, cid: str) -> None:
        """Have the chunk in the LMDB cache (for pins): a copy in memory alone does not
        count, as it is gone at the next start."""
        storing = self._storing.get(cid)
        if storing is not None:
            await storing[1].wait()
        if self.cache.chunks.has(cid):
            return
        hot = self._hot.pop(cid, None)
        if hot is not None:
            self._hot_bytes -= len(hot)
            await self._store(cid, hot)
            return
        await self.get(cid)

    def prefetch(self, cids: list[str]) -> None:
        if self._nursery is None:
            return
        for cid in cids:
            if cid not in self._inflight and cid not in self._storing \
                    and not self.cache.chunks.has(cid):
                self._nursery.start_soon(self._prefetch_one, cid)

    async def _prefetch_one(self, cid: str) -> None:
        with contextlib.suppress(ContentError):  # the reader that needs it reports it
            await self.get(cid)

    def cached(self, cid: str) -> bytes | None:
        """The chunk if this device holds it (memory or LMDB), without waiting."""
        hot = self._hot.get(cid)
        if hot is not None:
            return self._remember(cid, hot)
        storing = self._storing.get(cid)
        if storing is not None:
            return self._remember(cid, storing[0])
        data = self.cache.chunks.get(cid)
        return None if data is None else self._remember(cid, data)

    async def get(self, cid: str) -> bytes:
        while True:
            data = self.cached(cid)
            if data is not None:
                return data
            waiting = self._inflight.get(cid)
            if waiting is None:
                break
            await waiting.wait()
        done = self._inflight[cid] = trio.Event()
        try:
            data = await self._download(cid)
            await self._cache(cid, data)
            return self._remember(cid, data)
        finally:
            del self._inflight[cid]
            done.set()

    async def offer(self, chunks: list[tuple[str, bytes]]) -> None:
        """Content that came unasked (with the feed): kept, once checked against its id,
        as if fetched."""
        for cid, data in chunks:
            if cid in self._inflight or self.cached(cid) is not None:
                continue
            if p.chunk_id(data) != cid:  # a feed's few KiB: no thread needed
                log.warning("content offered as chunk %s is not that chunk: dropped", cid)
                continue
            try:
                await self._cache(cid, data)
            except Exception as err:  # a full disk: fetched when a reader needs it
                log.warning("cannot cache chunk %s: %s", cid, err)
                continue
            self._remember(cid, data)

    async def _cache(self, cid: str, data: bytes) -> None:
        """Into LMDB: behind the reader's back while not too much waits so."""
        if self._nursery is None or self._storing_bytes >= STORE_BEHIND:
            await self._store(cid, data)
        else:
            self._storing[cid] = (data, trio.Event())
            self._storing_bytes += len(data)
            self._nursery.start_soon(self._store_behind, cid)

    async def _store_behind(self, cid: str) -> None:
        data, stored = self._storing[cid]
        try:
            await self._store(cid, data)
        except Exception as err:  # a full disk: the chunk is fetched again when needed
            log.warning("cannot cache chunk %s: %s", cid, err)
        finally:
            del self._storing[cid]
            self._storing_bytes -= len(data)
            stored.set()

    async def _store(self, cid: str, data: bytes) -> None:
        def put(txn: Txn) -> None:
            self.cache.chunks.put(txn, cid, data, pending=False)

        await self.writer.write(put)

    def wants_part(self, cid: str, length: int, lo: int, hi: int) -> bool:
        """Whether a random read of ``[lo, hi)`` of a chunk this device lacks should
        fetch only that: the chunk is large, not on its way already, and its parts
        fetched so far, this one with them, stay within 1/PART_SHARE of it; past that
        the reader keeps coming back, and gets the chunk whole, kept in the cache.
        Parts are not cached."""
        if length < PART_MIN or cid in self._inflight or cid in self._storing:
            return False
        fetched = self._parts.pop(cid, 0) + hi - lo
        if fetched * PART_SHARE > length:
            return False
        self._parts[cid] = fetched
        if len(self._parts) > PARTS_KEPT:
            self._parts.popitem(last=False)
        return True

    async def part(self, cid: str, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` of a chunk, from the server (checked there, whole)."""
        return await self._download(cid, (lo, hi))

    async def _download(self, cid: str, part: tuple[int, int] | None = None) -> bytes:
        with trio.move_on_after(self.timeout):
            try:
                if part is not None:
                    return await self.client.get_chunk_part(cid, *part)
                return await self.client.get_chunk(cid)
            except LoftError as err:
                log.error("cannot fetch chunk %s: %s", cid, err)
                raise ContentError(f"chunk {cid}: {err}") from None
        log.error("cannot fetch chunk %s: no answer within %.0fs", cid, self.timeout)
        raise ContentError(f"chunk {cid}: timed out")


class ReadAhead:
    """One open file's read-ahead window, in chunks."""

    def __init__(self) -> None:
        self.window = 0
        self._next = 0
        self._asked = 0

    def step(self, offset: int, size: int) -> int:
        """How many chunks to fetch past this read."""
        if abs(offset - self._next) <= NEAR:
            self.window = min(max(1, self.window * 2), READ_AHEAD)
        else:
            self.window = 0  # a random reader: nothing ahead until it reads on
            self._asked = 0
        self._next = offset + size
        return self.window

    def unasked(self, first: int, count: int) -> range:
        """The chunks of ``[first, first + count)`` not yet asked for by this reader: a
        sequential reader asks for each chunk ahead once, not at every 128 KiB read."""
        start = max(first, self._asked)
        self._asked = max(self._asked, first + count)
        return range(start, first + count)


class BlockMap:
    """Offsets of a block list, for finding the chunks under a byte range."""

    def __init__(self, blocks: list[list[Any]]) -> None:
        self.ids = [b[0] for b in blocks]
        self.starts: list[int] = []
        total = 0
        for _, length in blocks:
            self.starts.append(total)
            total += length
        self.size = total

    def length(self, index: int) -> int:
        end = self.starts[index + 1] if index + 1 < len(self.starts) else self.size
        return end - self.starts[index]

    def covering(self, offset: int, size: int) -> Iterator[int]:
        if offset >= self.size or size <= 0:
            return
        first = bisect.bisect_right(self.starts, offset) - 1
        end = min(offset + size, self.size)
        index = first
        while index < len(self.ids) and self.starts[index] < end:
            yield index
            index += 1


async def read_blocks(
    fetcher: Fetcher, blocks: BlockMap, offset: int, size: int, ahead: ReadAhead | None = None
) -> bytes:
    """The bytes of ``[offset, offset+size)`` of a committed version; chunks past it
    are fetched ahead as ``ahead`` (a reader's window) says, and a random reader's
    small read of a large chunk this device lacks fetches just that part."""
    indices = list(blocks.covering(offset, size))
    if not indices:
        return b""
    end = offset + size
    window = ahead.step(offset, size) if ahead is not None else None
    pieces: dict[int, tuple[bytes, int]] = {}  # index: (bytes, file offset of the first)
    for index in indices:  # the common case: all held here, no tasks to start
        data = fetcher.cached(blocks.ids[index])
        if data is not None:
            pieces[index] = data, blocks.starts[index]

    async def one(index: int) -> None:
        cid, start, length = blocks.ids[index], blocks.starts[index], blocks.length(index)
        lo, hi = max(offset - start, 0), min(end - start, length)
        if window == 0 and fetcher.wants_part(cid, length, lo, hi):
            pieces[index] = await fetcher.part(cid, lo, hi), start + lo
        else:
            pieces[index] = await fetcher.get(cid), start

    if len(pieces) < len(indices):
        async with trio.open_nursery() as nursery:
            for index in indices:
                if index not in pieces:
                    nursery.start_soon(one, index)
    if ahead is not None and window:
        ahead_of = ahead.unasked(indices[-1] + 1, window)
        fetcher.prefetch(blocks.ids[ahead_of.start : ahead_of.stop])
    if len(indices) == 1:
        data, at = pieces[indices[0]]
        return data[offset - at : end - at]
    # A read across chunks: only the parts asked for are copied, not the whole chunks.
    return b"".join(
        memoryview(data)[max(offset - at, 0) : end - at]
        for data, at in (pieces[i] for i in indices)
    )
