"""The LMDB environment of a device, and the one writer of the mount.

Sub-databases (keys and values are bytes; CBOR where a value is a record of
``cache.records``):

    =========== ============================== ========================================
    name        key                            value
    =========== ============================== ========================================
    meta        b"cursor", b"ns", b"next_ino", CBOR int
                b"journal_seq", b"bytes", b"pending_bytes",
                b"conflict_seq", b"view_shares"
                b"inflight"                    CBOR ``Batch`` or null
                b"overlay"                     CBOR list of the entry ids the last
                                               replay laid over the remote tree
                b"mountpoint", b"device"       CBOR str: where and as whom the device
                                               last mounted (``loft pin``, ``fsck``)
                b"sealed:" + token             CBOR int: the last park record of a
                                               staging file a seal covered
                                               (``fs.parking``)
    entries     entry id                       CBOR ``Entry``: the view (what the
                                               mount shows: remote + the journal)
    children    parent id + b"/" + name        entry id, for ``entries``
    rentries    entry id                       CBOR ``Entry``: the server's tree as of
                                               ``cursor`` (only the feed writes it)
    rchildren   parent id + b"/" + name        entry id, for ``rentries``
    inodes      inode, 8 bytes big-endian      entry id
    inode_of    entry id                       inode, 8 bytes big-endian
    chunks      chunk id (ascii)               the chunk's plain content
    chunk_meta  chunk id                       CBOR {size, tick, pending, [base]}
    lru         tick (8 bytes BE) + chunk id   b"" (eviction order, oldest first)
    journal     sequence, 8 bytes big-endian   CBOR ``Record``
    pins        entry id                       CBOR 1: pinned (see ``cache.pins``)
    conflicts   sequence, 8 bytes big-endian   CBOR ``ConflictNote``
    =========== ============================== ========================================

Modes: the directory is 0700 and ``data.mdb`` and ``lock.mdb`` 0600, whatever the
umask (older ones are tightened on open): the cache holds the content the device read.

Durability: the environment is opened without a sync per commit. After ``kill -9``
of the mount every committed transaction is intact (LMDB writes go through the OS
page cache); ``flush()`` (an fsync) makes them survive a power cut too, and is called
on ``fsync``/``close`` and by the mount once a second while anything is unflushed.

The writer: every write transaction of the mount runs through ``Writer``, on one
worker thread at a time, never on the event loop; jobs that arrive together share one
transaction (each in a nested transaction of its own, so one failing job aborts only
itself). A job is a plain function of the transaction: it cannot ``await``, so no
transaction ever spans an ``await``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import lmdb
import trio

from backend import protocol as p
from backend.private import DIR_MODE, tighten
from cache import mapped

T = TypeVar("T")

RELEASE_EVERY = 1024
"""Record reads between releases of the map's pages (``Env.touched``): at most about
64 MiB mapped in passing. Each release costs the pages used again a minor fault: at
256, ``ls -lR`` of 30,000 files took 1.3 s against 0.7 s without, at 1,024 1.0–1.1 s
(with the 100,000-file peaks at 125/138 MiB, against 103/104 at 256)."""

Txn = Any
"""An ``lmdb.Transaction``; its values are bytes or buffers, which typing cannot tell."""

Q = struct.Struct(">Q")
DBS = (
    "meta",
    "entries",
    "children",
    "rentries",
    "rchildren",
    "inodes",
    "inode_of",
    "chunks",
    "chunk_meta",
    "lru",
    "journal",
    "pins",
    "conflicts",
)
LAYOUT = 2
"""Bumped when the meaning of a sub-database changes; an older cache is rebuilt."""


class Env:
    """One LMDB environment and its named sub-databases."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        tighten(path)
        self.path = path
        self.lmdb = lmdb.open(  # files get ``mode`` less the x bits: 0600
            str(path), map_size=1 << 40, max_dbs=len(DBS) + 4, sync=False, metasync=False,
            mode=DIR_MODE,
        )
        self.db = {name: self.lmdb.open_db(name.encode()) for name in DBS}
        self._map: list[tuple[int, int]] | None = None
        self._touched = 0

    def read(self) -> Txn:
        return self.lmdb.begin()

    def write(self) -> Txn:
        """A write transaction on the caller's thread: for tools and start-up only;
        the running mount writes through its ``Writer``."""
        return self.lmdb.begin(write=True)

    def flush(self) -> None:
        """Make every committed transaction durable (fsync). Blocking."""
        self.lmdb.sync(True)

    def release_pages(self) -> None:
        """Unmap the pages of the map this process touched (``cache.mapped``)."""
        if self._map is None:  # LMDB maps the file once, at its full size, when opened
            self._map = mapped.regions(self.path / "data.mdb")
        mapped.release(self._map)

    def touched(self) -> None:
        """Count one record read at a place of its own in the map; every
        ``RELEASE_EVERY`` of them, ``release_pages``. Each such read maps the 64 KiB
        around it (the kernel's fault-around), and one transaction can make a thousand
        (a listing of a folder, a page of the feed): released as they go, not after."""
        self._touched += 1  # from any thread: a count off by one matters not
        if self._touched >= RELEASE_EVERY:
            self._touched = 0
            self.release_pages()

    def close(self) -> None:
        self.lmdb.sync(True)
        self.lmdb.close()

    # --- meta ---------------------------------------------------------------------

    def meta_get(self, txn: Txn, key: str, default: Any = None) -> Any:
        raw = txn.get(key.encode(), db=self.db["meta"])
        return default if raw is None else p.decode(bytes(raw))

    def meta_put(self, txn: Txn, key: str, value: Any) -> None:
        txn.put(key.encode(), p.encode(value), db=self.db["meta"])

    def meta_prefixed(self, txn: Txn, prefix: str) -> dict[str, Any]:
        """Every meta key starting with ``prefix`` (without it), and its value."""
        out: dict[str, Any] = {}
        cursor = txn.cursor(db=self.db["meta"])
        start = prefix.encode()
        if cursor.set_range(start):
            for key, value in cursor:
                if not bytes(key).startswith(start):
                    break
                out[bytes(key)[len(start):].decode()] = p.decode(bytes(value))
        return out

    def meta_delete(self, txn: Txn, key: str) -> None:
        txn.delete(key.encode(), db=self.db["meta"])

    def meta(self, key: str, default: Any = None) -> Any:
        with self.read() as txn:
            return self.meta_get(txn, key, default)

    def count(self, txn: Txn, name: str) -> int:
        return int(txn.stat(self.db[name])["entries"])


@dataclass
class _Job(Generic[T]):
    fn: Callable[[Txn], T]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class Writer:
    """The mount's one LMDB writer: ``await writer.write(fn)`` runs ``fn(txn)`` in a
    write transaction on a worker thread and returns its result (or raises its error).

    Use as ``await nursery.start(writer.run)``; ``write`` before that, or after the
    writer stopped, runs the job on a worker thread alone.

    Two lanes: a *bulk* job (``bulk=True``: megabytes of chunks stored, the cache
    trimmed; tens of milliseconds) commits alone, one at a time, and every other job
    queued meanwhile commits before the next one: a rename waits for one bulk job at
    most, never for a queue of them. Jobs of different lanes are independent (each
    caller awaits its own), so the order between lanes is free.
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self._jobs: list[_Job[Any]] = []
        self._bulk: list[_Job[Any]] = []
        self._wake = trio.Event()
        self._running = False
        self._busy = False
        """A transaction is open in the writer's thread."""
        self._limit = trio.CapacityLimiter(1)

    async def write(
        self, fn: Callable[[Txn], T], *, inline: bool = False, bulk: bool = False
    ) -> T:
        """``inline``: a short job (a file operation's few records) runs at once in the
        caller's thread if the writer is idle (nothing queued, no transaction open):
        the same transaction without the trip to the writer's thread and back, about
        8 µs instead of 300. Otherwise it queues behind the others of its lane, in
        order; ``bulk``: in the bulk lane (see the class)."""
        job: _Job[T] = _Job(fn)
        if inline and self._running and not self._jobs and not self._busy:
            self._commit([job])
        elif not self._running:
            await trio.to_thread.run_sync(self._commit, [job], limiter=self._limit)
            job.done.set()
        else:
            (self._bulk if bulk else self._jobs).append(job)
            self._wake.set()
            await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._jobs and not self._bulk:
                    await self._wake.wait()
                self._wake = trio.Event()
                if self._jobs:
                    jobs, self._jobs = self._jobs, []
                else:
                    jobs = [self._bulk.pop(0)]
                self._busy = True
                try:
                    with trio.CancelScope(shield=True):  # a job taken is a job finished
                        await trio.to_thread.run_sync(self._commit, jobs, limiter=self._limit)
                finally:
                    self._busy = False
                for job in jobs:
                    job.done.set()
        finally:
            self._running = False
            jobs, self._jobs, self._bulk = self._jobs + self._bulk, [], []
            if jobs:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._commit, jobs, limiter=self._limit)
                for job in jobs:
                    job.done.set()

    def _commit(self, jobs: list[_Job[Any]]) -> None:
        if len(jobs) == 1:  # alone: its own transaction, no nesting to pay for
            job = jobs[0]
            try:
                with self.env.write() as txn:
                    job.result = job.fn(txn)
            except BaseException as exc:  # handed to the job's own caller
                job.error = exc
            return
        try:
            with self.env.write() as txn:
                for job in jobs:
                    try:
                        with self.env.lmdb.begin(write=True, parent=txn) as child:
                            job.result = job.fn(child)
                    except BaseException as exc:  # handed to the job's own caller
                        job.error = exc
        except BaseException as exc:  # the commit itself failed (disk full): all fail
            for job in jobs:
                if job.error is None:
                    job.error = exc
