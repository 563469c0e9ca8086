"""The FUSE handlers of file content: open, read, write, close, fsync, truncate.

A file opened for writing gets a staging file (``fs.staging``), made under the entry's
own lock, into which nothing is copied; reads of a file nobody writes fetch only the
chunks they need (``fs.content``). Close-to-open: the last close of a written file (or ``fsync``)
seals it into a new version, based on the version the writer started from, committed
to LMDB. ``close`` returns then (the mount flushes LMDB to disk once a second, like a
journaling filesystem's commit interval); ``fsync`` returns once it is on disk (a
group commit shared by the callers that arrive together).
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import pyfuse3
import trio

from cache.env import Txn
from cache.records import Entry
from fs.content import BlockMap, ReadAhead, read_blocks
from fs.core import Handle, MountCore, new_op
from fs.errors import errors, fail
from fs.replica import ViewChange

log = logging.getLogger("loft.fs")


class FileHandlers(MountCore):
    async def _truncate(self, entry: Entry, size: int) -> None:
        async with self.stager.lock(entry["id"]):
            staged = self.stager.stage(await self._current(entry), truncate=size == 0)
            self.stager.resize(staged, size)
            await self._unstage(entry["id"])

    async def _current(self, entry: Entry) -> Entry:
        with self.cache.read() as txn:
            return self.view.get(txn, entry["id"]) or entry

    async def _unstage(self, entry_id: str) -> None:
        """One holder is done with the staging file (the caller holds the entry's
        lock); the last one seals and drops it."""
        staged = self.stager.staged.get(entry_id)
        if staged is None:
            return
        staged.opens -= 1
        if staged.opens > 0:
            return
        if staged.modified:
            await self._seal(entry_id)
        await self.stager.discard(entry_id)

    async def seal(self, entry_id: str) -> None:
        """Make what is written to the entry so far a version (at unmount too)."""
        async with self.stager.lock(entry_id):
            staged = self.stager.staged.get(entry_id)
            if staged is not None and staged.modified:
                await self._seal(entry_id)

    async def _seal(self, entry_id: str) -> None:
        """The staging file's content becomes a new version: chunks, view, journal."""
        staged = self.stager.staged[entry_id]
        base, mtime = staged.base, staged.mtime

        def record(txn: Txn, blocks: list[list[Any]], size: int) -> list[ViewChange] | None:
            op = new_op("update", entry=entry_id, size=size, mtime=mtime, blocks=blocks)
            return self.replica.record_update(txn, op, base)

        dirty = staged.take()
        try:
            if self.stager.small(staged):
                await self.stager.fill(staged, 0, staged.file.size())

                def job(txn: Txn) -> tuple[list[list[Any]], int, list[ViewChange] | None]:
                    blocks, size = self.stager.seal_in(txn, staged)
                    return blocks, size, record(txn, blocks, size)

                blocks, size, changes = await self._change(job)
            else:
                blocks, size = await self.stager.seal(staged, dirty)
                changes = await self._change(lambda txn: record(txn, blocks, size))
        except BaseException:
            staged.give_back(dirty)
            raise
        staged.rebase(Entry(**{**base, "size": size, "blocks": blocks}))
        self.versions[entry_id] = self.versions.get(entry_id, 0) + 1
        if changes:
            self.view_changed(changes)
        log.debug("sealed %s: %d bytes in %d chunk(s)", entry_id, size, len(blocks))

    def _handle(self, entry: Entry, ino: int, writable: bool) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(entry["id"], ino, writable, entry)
        return fh

    @errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        writable = flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if self.past.owns(inode):
            return self._open_past(inode, writable)
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        if entry["kind"] == "dir":
            raise fail(errno.EISDIR)
        if writable:
            self._writable(inode)
            async with self.stager.lock(entry["id"]):
                current = await self._current(entry)
                if flags & os.O_APPEND and not flags & os.O_TRUNC and current.get("blocks"):
                    # Its first seal cuts the last chunk again: fail now, not at close.
                    await self.fetcher.get(current["blocks"][-1][0])
                self.stager.stage(current, bool(flags & os.O_TRUNC))
        fh = self._handle(entry, inode, writable)
        return pyfuse3.FileInfo(fh=fh, keep_cache=entry["id"] not in self.stager.staged)

    def _open_past(self, inode: int, writable: bool) -> pyfuse3.FileInfo:
        node = self.past.node(inode)
        if writable:
            raise fail(errno.EROFS)
        if node.is_dir:
            raise fail(errno.EISDIR)
        entry: Any = node.entry
        fh = self._handle(entry, inode, False)
        self.handles[fh].past = True
        self.handles[fh].blocks = BlockMap(entry.get("blocks", []))
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        entry, ino = await self._create_entry(parent_inode, name, "file", mode)
        async with self.stager.lock(entry["id"]):
            self.stager.stage(entry, truncate=True)
        fh = self._handle(entry, ino, True)
        return pyfuse3.FileInfo(fh=fh), self.attributes(entry, ino)

    @errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        staged = None if handle.past else self.stager.staged.get(handle.entry_id)
        if staged is not None:
            data = await self.stager.read(staged, off, size)
            if data is not None:
                return data
        version = self.versions.get(handle.entry_id, 0)
        if handle.blocks is None or (handle.version != version and not handle.past):
            with self.cache.read() as txn:
                entry = self.view.get(txn, handle.entry_id) or handle.entry
            handle.blocks, handle.version = BlockMap(entry.get("blocks", [])), version
            handle.ahead = ReadAhead()
        return await read_blocks(self.fetcher, handle.blocks, off, size, handle.ahead)

    @errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        staged = self.stager.staged.get(handle.entry_id)
        if staged is None or not handle.writable:
            raise fail(errno.EBADF)
        written = staged.file.pwrite(buf, off)
        staged.wrote(off, off + written)
        if staged.overlay.crowded:  # many scattered writes: whole chunks, fewer ranges
            await self.stager.fill(staged, off, off + written)
        return written

    @errors
    async def flush(self, fh: int) -> None:
        """``close(2)``: the content written so far becomes a version (close-to-open),
        committed to LMDB (it survives ``kill -9`` of the mount at once, and a power
        cut after the mount's next flush, within a second)."""
        handle = self.handles.get(fh)
        if handle is None or not handle.writable:
            return
        staged = self.stager.staged.get(handle.entry_id)
        if staged is not None and staged.modified:
            await self.seal(handle.entry_id)

    async def _durable(self) -> None:
        """Return once every LMDB commit made so far is on disk (survives a power cut).

        Group commit: callers that arrive while one sync runs share the next one, so
        many files closed at once cost one fsync, not one each.
        """
        self._sync_asked += 1
        ticket = self._sync_asked
        async with self._sync_lock:
            if self._sync_done >= ticket:
                return
            target = self._sync_asked
            await trio.to_thread.run_sync(self.cache.flush)
            self._sync_done = target

    @errors
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None and handle.writable:
            async with self.stager.lock(handle.entry_id):
                await self._unstage(handle.entry_id)

    @errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        """Returns once the file's content and metadata are durable on this device."""
        await self.flush(fh)
        await self._durable()
