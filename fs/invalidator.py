"""The one task that talks to the kernel's caches.

No FUSE handler ever waits on a kernel cache invalidation (the kernel may hold the
very locks the notification waits on, and the whole mount deadlocks): view changes
made for remote reasons are queued here and sent from this task alone.
"""

from __future__ import annotations

import errno
import logging
import os

import pyfuse3
import trio

from cache.store import ROOT_INO, Cache
from fs.inodes import Inodes
from fs.replica import ViewChange

log = logging.getLogger("loft.sync")

QUEUE = 10_000


class Invalidator:
    def __init__(self, cache: Cache, inodes: Inodes) -> None:
        self.cache = cache
        self.inodes = inodes
        self._send, self._recv = trio.open_memory_channel[ViewChange](QUEUE)
        self._warned = False
        self.kernel_ready = trio.Event()
        """Set by the FUSE ``init``: before it, the kernel refuses notifications."""

    def queue(self, changes: list[ViewChange]) -> None:
        for change in changes:
            try:
                self._send.send_nowait(change)
            except trio.WouldBlock:
                if not self._warned:
                    log.warning("kernel invalidation queue full; names may be stale briefly")
                    self._warned = True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.kernel_ready.wait()
        async for change in self._recv:
            for entry in (change.old, change.new):
                if entry is not None:
                    self._entry(entry["parent"], entry["name"])
            if change.content and change.ino is not None and self.inodes.known(change.ino):
                try:
                    await trio.to_thread.run_sync(pyfuse3.invalidate_inode, change.ino)
                except OSError as exc:
                    self._failed(exc)

    def _entry(self, parent: str, name: str) -> None:
        with self.cache.read() as txn:
            ino = self.cache.known_inode(txn, parent)
        if ino is None or not (ino == ROOT_INO or self.inodes.known(ino)):
            return
        try:
            pyfuse3.invalidate_entry_async(ino, os.fsencode(name), ignore_enoent=True)
        except OSError as exc:
            self._failed(exc)

    @staticmethod
    def _failed(exc: OSError) -> None:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            log.warning("kernel cache invalidation failed: %s", exc)
