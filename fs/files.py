"""The FUSE handlers of file content: open, read, write, close, fsync, truncate.

A file opened for writing gets a staging file (``fs.staging``), made under the entry's
own lock, into which nothing is copied; reads of a file nobody writes fetch only the
chunks they need (``fs.content``). Close-to-open: every open on this device sees what
was closed. The close of a small file seals it into a new version, based on the
version the writer started from, committed to LMDB; the close of a large one parks it
(``fs.parking``), and ``seal_parked`` seals it once it is left alone, one seal for
every close in between. ``close`` returns then: what it returned survives ``kill -9``
of the mount at once, and a power cut after the mount's next flush (once a second,
like a journaling filesystem's commit interval). ``fsync`` seals, and returns once
that is on disk (a group commit shared by the callers that arrive together).
"""

from __future__ import annotations

import errno
import logging
import math
import os
from typing import Any

import pyfuse3
import trio

from backend import protocol as p
from cache.env import Txn
from cache.records import Entry
from fs.content import BlockMap, ReadAhead, read_blocks
from fs.core import Handle, MountCore, new_op
from fs.errors import errors, fail, failure
from fs.parking import LATEST
from fs.replica import ViewChange

log = logging.getLogger("loft.fs")

RESEAL = 5.0
"""Seconds before a parked file whose seal failed is tried again."""


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
        lock); the last one settles it, and drops it unless it is parked."""
        staged = self.stager.staged.get(entry_id)
        if staged is None:
            return
        staged.opens -= 1
        if staged.opens > 0:
            return
        await self._settle(entry_id)
        if not staged.modified and staged.opens == 0:  # (an open may come meanwhile)
            await self.stager.discard(entry_id)

    async def _settle(self, entry_id: str) -> None:
        """What a close promises (the caller holds the entry's lock): what is written
        survives a crash. A small file is sealed now; a large one is parked
        (``fs.parking``) and sealed by ``seal_parked`` when left alone."""
        staged = self.stager.staged.get(entry_id)
        if staged is None or not staged.modified:
            return
        # Parked on the event loop (a few file system calls, ~0.1 ms): no write may
        # land between the record's parts.
        now = trio.current_time()
        if not self.stager.small(staged):
            if self.stager.parking.park(staged, entry_id, now):
                self._parked.set()
                return
            self._once("staging files cannot be named on this file system: closes seal")
        await self._seal(entry_id)

    async def seal(self, entry_id: str) -> None:
        """Make what is written to the entry so far a version (``fsync``, unmount)."""
        async with self.stager.lock(entry_id):
            staged = self.stager.staged.get(entry_id)
            if staged is not None and staged.modified:
                await self._seal(entry_id)

    async def seal_parked(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Seal each parked file when it is due (``Staged.due``), and drop its staging
        file if nobody has it open; a seal that fails (the server unreachable for a
        base chunk the cache lacks) is tried again later: the file stays parked."""
        task_status.started()
        while True:
            dues = [(s.due, i) for i, s in self.stager.staged.items() if s.due is not None]
            now = trio.current_time()
            for due, entry_id in sorted(dues):
                if due <= now:
                    await self._seal_parked(entry_id)
            self._parked = trio.Event()
            nearest = min((s.due for s in self.stager.staged.values() if s.due is not None),
                          default=math.inf)
            with trio.move_on_at(nearest):
                await self._parked.wait()

    async def _seal_parked(self, entry_id: str) -> None:
        async with self.stager.lock(entry_id):
            staged = self.stager.staged.get(entry_id)
            now = trio.current_time()
            if staged is None or staged.due is None or staged.due > now:
                return  # sealed (fsync), dropped (unlinked) or parked again meanwhile
            assert staged.parked_since is not None
            if staged.opens and now < staged.parked_since + LATEST:
                # Open for writing again: more is coming, and its close says when.
                staged.due = staged.parked_since + LATEST
                return
            try:
                if staged.modified:
                    await self._seal(entry_id)
            except Exception as exc:
                if (why := failure(exc)) is None:
                    raise
                log.warning("sealing a parked file failed, trying again in %.0f s: %s",
                            RESEAL, why)
                staged.due = trio.current_time() + RESEAL
                return
            self.stager.parking.sealed(staged)
            if staged.opens == 0:
                await self.stager.discard(entry_id)

    async def _seal(self, entry_id: str) -> None:
        """The staging file's content becomes a new version: chunks, view, journal."""
        staged = self.stager.staged[entry_id]
        base, mtime = staged.base, staged.mtime

        def record(txn: Txn, blocks: list[list[Any]], size: int) -> list[ViewChange] | None:
            op = new_op("update", entry=entry_id, size=size, mtime=mtime, blocks=blocks)
            self.stager.parking.covered(self.cache.env, txn, staged)
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
        self.stager.parking.sealed(staged)
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
        staged = self.stager.staged.get(entry["id"])
        if writable and staged is not None and not flags & (os.O_TRUNC | os.O_APPEND):
            # Written or parked already: one more holder, without waiting for a seal.
            staged.opens += 1
        elif writable:
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
        # Its lock taken before its create is recorded: the file counts as being
        # written (``Stager.writing``) from the start, so its create never goes up
        # empty while the program has yet to write (``fs.batching.held``).
        entry_id = p.new_id()
        async with self.stager.lock(entry_id):
            entry, ino = await self._create_entry(parent_inode, name, "file", mode, entry_id)
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
        self.stager.parking.preserve(staged, off, off + len(buf))
        written = staged.file.pwrite(buf, off)
        staged.wrote(off, off + written)
        if staged.overlay.crowded:  # many scattered writes: whole chunks, fewer ranges
            await self.stager.fill(staged, off, off + written)
        return written

    @errors
    async def flush(self, fh: int) -> None:
        """``close(2)``: the content written so far survives ``kill -9`` of the mount
        at once, and a power cut after the mount's next flush, within a second: a
        small file's becomes a version now, a large one's is parked (``_settle``).
        Every open on this device sees it at once (close-to-open)."""
        handle = self.handles.get(fh)
        if handle is None or not handle.writable:
            return
        staged = self.stager.staged.get(handle.entry_id)
        if staged is not None and staged.modified:
            async with self.stager.lock(handle.entry_id):
                await self._settle(handle.entry_id)

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
            await trio.to_thread.run_sync(self._flush)
            self._sync_done = target

    def _flush(self) -> None:
        """Parked files, then LMDB, on disk (blocking)."""
        self.stager.parking.sync()
        self.cache.flush()

    @errors
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None and handle.writable:
            async with self.stager.lock(handle.entry_id):
                await self._unstage(handle.entry_id)

    @errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        """Returns once the file's content is a version, durable on this device."""
        handle = self.handles.get(fh)
        if handle is not None and handle.writable:
            await self.seal(handle.entry_id)
        await self._durable()
