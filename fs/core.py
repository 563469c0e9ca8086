"""What every FUSE handler of a mount shares: the parts it drives, the view it reads,
and the helpers that read entries and journal local changes.

Reads (lookup, getattr, readdir) use a read transaction of the view, never waiting for
the writer. A local change is one job for the cache's ``Writer`` (``change``): it
updates the view and appends the change to the journal (``fs.replica``) in one
transaction, then wakes the uploader; nothing waits for the network.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyfuse3
import trio

from backend import protocol as p
from cache.env import Txn, Writer
from cache.records import PENDING, Entry, WireOp
from cache.store import Cache
from fs.content import BlockMap, Fetcher, ReadAhead
from fs.errors import fail
from fs.history import Listing, Node, PastTree
from fs.history import attributes as history_attributes
from fs.inodes import Inodes
from fs.replica import Replica, ViewChange
from fs.staging import Stager

log = logging.getLogger("loft.fs")

TIMEOUT = 5.0
"""Seconds the kernel may cache names and attributes; remote changes invalidate sooner."""

_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
VERSIONS = os.fsencode(p.VERSIONS)
STORED_VERSIONS = os.fsencode(f"{p.VERSIONS} (stored)")
"""The name shown for an entry stored as ``.versions`` (from before the name was
reserved): the real name always means the past."""
R = TypeVar("R")


def new_op(kind: str, /, **fields: Any) -> WireOp:
    return {"op": kind, "op_id": p.new_id(), **fields}


@dataclass
class Handle:
    entry_id: str
    ino: int
    writable: bool
    entry: Entry
    blocks: BlockMap | None = None
    version: int = -1
    ahead: ReadAhead = field(default_factory=ReadAhead)
    past: bool = False
    """A version under ``.versions``: its blocks never change, nothing stages it."""


class MountCore:
    """The state and helpers the handlers (``fs.operations``, ``fs.files``) share."""

    def __init__(
        self,
        cache: Cache,
        writer: Writer,
        replica: Replica,
        fetcher: Fetcher,
        stager: Stager,
        past: PastTree,
        changed: Callable[[], None],
        view_changed: Callable[[list[ViewChange]], None],
    ) -> None:
        super().__init__()
        self.cache = cache
        self.view = cache.view
        self.writer = writer
        self.replica = replica
        self.fetcher = fetcher
        self.stager = stager
        self.past = past
        self.changed = changed
        self.view_changed = view_changed
        self.inodes = Inodes()
        self.uid, self.gid = os.getuid(), os.getgid()
        self.handles: dict[int, Handle] = {}
        self.listings: dict[int, tuple[int, list[tuple[str, str]]]] = {}
        """Open directories: fh -> (inode, the (name, entry id) listing being read)."""
        self.past_listings: dict[int, Listing] = {}
        """Open ``.versions`` directories: fh -> the listing being read."""
        self.versions: dict[str, int] = {}
        self._next_fh = 1
        self._warned: set[str] = set()
        self._sync_lock = trio.Lock()
        self._sync_asked = self._sync_done = 0
        self._parked = trio.Event()
        """Set when a file is parked: ``seal_parked`` looks at the dues again."""
        self.on_init: Callable[[], None] = lambda: None

    def init(self) -> None:
        """The kernel has the mount (FUSE ``INIT`` answered)."""
        self.on_init()

    # --- helpers -------------------------------------------------------------------

    def _entry(self, txn: Txn, ino: int) -> Entry:
        entry_id = self.cache.entry_id(txn, ino)
        entry = self.view.get(txn, entry_id) if entry_id else None
        if entry is None:
            orphan = self.inodes.orphans.get(ino)
            if orphan is None:
                raise fail(errno.ENOENT)
            return orphan
        return entry

    def _dir(self, txn: Txn, ino: int) -> Entry:
        entry = self._entry(txn, ino)
        if entry["kind"] != "dir":
            raise fail(errno.ENOTDIR)
        return entry

    def _child(self, txn: Txn, parent_inode: int, name: bytes) -> Entry:
        """The live entry ``name`` in the directory ``parent_inode``, or ENOENT."""
        parent = self._dir(txn, parent_inode)
        entry_id = self.view.child(txn, parent["id"], os.fsdecode(name))
        if entry_id is None and name == STORED_VERSIONS:
            entry_id = self.view.child(txn, parent["id"], p.VERSIONS)
        entry = self.view.get(txn, entry_id) if entry_id else None
        if entry is None:
            raise fail(errno.ENOENT)
        return entry

    def _shown(self, name: str) -> bytes:
        """The name ``readdir`` shows for a stored ``name``."""
        raw = os.fsencode(name)
        if raw != VERSIONS:
            return raw
        self._once(f"an entry stored as {p.VERSIONS!r} (a name now reserved for past"
                   f" versions) is shown as {os.fsdecode(STORED_VERSIONS)!r}: rename it")
        return STORED_VERSIONS

    def _name(self, raw: bytes) -> str:
        if raw == VERSIONS:
            self._once(f"refused a new entry named {p.VERSIONS!r}: the name shows past versions")
            raise fail(errno.EPERM)
        return p.validate_name(os.fsdecode(raw))

    def _writable(self, *inodes: int) -> None:
        """Nothing under ``.versions`` changes (``EROFS``), nor in a folder shared with
        this user read-only (``EACCES``, at once: never queued to be refused later)."""
        if any(self.past.owns(ino) for ino in inodes):
            raise fail(errno.EROFS)
        with self.cache.read() as txn:
            for ino in inodes:
                entry_id = self.cache.entry_id(txn, ino)
                share = self._share(txn, entry_id) if entry_id else None
                if share is not None and share.get("role") == "viewer":
                    raise fail(errno.EACCES)

    def _share_id(self, txn: Txn, entry_id: str) -> str | None:
        share = self._share(txn, entry_id)
        return None if share is None else share["id"]

    def _share(self, txn: Txn, entry_id: str) -> Entry | None:
        """The shared folder holding ``entry_id`` (itself, if it is one), or None: a
        move between two of them (or a shared folder and the rest) is ``EXDEV``."""
        return self.view.share_of(txn, entry_id)

    # --- ``.versions`` (``fs.history``) --------------------------------------------------

    def _past_attributes(self, node: Node, ino: int) -> pyfuse3.EntryAttributes:
        return history_attributes(node, ino, self.uid, self.gid)

    def _past_entry(self, node: Node) -> pyfuse3.EntryAttributes:
        """A lookup's answer for ``node`` (the kernel now holds a reference)."""
        ino = self.past.ino(node)
        self.past.remember(ino)
        return self._past_attributes(node, ino)

    async def _past_readdir(
        self, fh: int, inode: int, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        if start_id == 0 or fh not in self.past_listings:
            self.past_listings[fh] = await self.past.listing(self.past.node(inode))
        listing = self.past_listings[fh]
        for index in range(start_id, len(listing)):
            name, node = listing[index]
            ino = self.past.ino(node)
            if not pyfuse3.readdir_reply(
                token, os.fsencode(name), self._past_attributes(node, ino), index + 1
            ):
                return
            self.past.remember(ino)

    def attributes(self, entry: Entry, ino: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = _KIND_BITS[entry["kind"]] | entry["mode"]
        attr.st_nlink = 0 if self.inodes.is_orphan(ino, entry) else 1
        size, mtime = entry["size"], entry["mtime"]
        staged = self.stager.staged.get(entry["id"])
        if staged is not None:
            size = staged.file.size()
            if staged.modified:
                mtime = staged.mtime
        attr.st_size = size
        attr.st_blocks = (size + 511) // 512
        attr.st_blksize = 128 * 1024
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        return attr

    def _unsupported(self, what: str) -> None:
        """Say once per mount that a program asked for something Loft does not do."""
        self._once(f"{what}: not supported (refused; said once per mount)")

    def _once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    async def _change(self, job: Callable[[Txn], R]) -> R:
        """Run a local change in the writer (a few records: in place if the writer is
        idle), then wake the uploader."""
        result = await self.writer.write(job, inline=True)
        self.changed()
        return result

    async def _inode(self, entry_id: str) -> int:
        with self.cache.read() as txn:
            known = self.cache.known_inode(txn, entry_id)
        if known is not None:
            return known
        return await self.writer.write(lambda txn: self.cache.inode_of(txn, entry_id))

    def _orphan(self, entry: Entry, ino: int) -> None:
        in_use = any(h.entry_id == entry["id"] for h in self.handles.values())
        self.inodes.orphan(entry, ino, in_use)
        if not in_use:
            self.stager.drop(entry["id"])

    async def _create_entry(
        self, parent_ino: int, raw_name: bytes, kind: str, mode: int,
        entry_id: str | None = None, **extra: Any,
    ) -> tuple[Entry, int]:
        """A new entry in the view and its record in the journal; ``entry_id``: its id,
        when the caller must know it before the record exists."""
        self._writable(parent_ino)
        name = self._name(raw_name)

        def job(txn: Txn) -> tuple[Entry, int]:
            parent = self._dir(txn, parent_ino)
            if self.view.child(txn, parent["id"], name) is not None:
                raise fail(errno.EEXIST)
            entry = Entry(id=entry_id or p.new_id(), parent=parent["id"], name=name, kind=kind,
                          rev=PENDING, size=0, mode=mode & 0o7777, mtime=time.time_ns())
            entry.update(extra)  # type: ignore[typeddict-item]
            fields: dict[str, Any] = {k: entry[k] for k in ("parent", "name", "mode", "mtime")}
            if kind == "file":
                entry["blocks"] = []
                fields.update(kind=kind, size=0, blocks=[])
            elif kind == "symlink":
                fields.update(kind=kind, size=entry["size"], target=entry["target"])
            self.view.put(txn, entry)
            op = new_op("mkdir" if kind == "dir" else "create", entry=entry["id"], **fields)
            self.replica.record(txn, op, None, parent["id"])
            return entry, self.cache.inode_of(txn, entry["id"])

        entry, ino = await self._change(job)
        self.inodes.remember(ino)
        return entry, ino
