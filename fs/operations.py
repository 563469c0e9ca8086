"""The FUSE operations of a Loft mount (pyfuse3 on trio).

Every metadata question (lookup, getattr, readdir) is answered from the LMDB
replica, without a round trip. Every local change updates the replica and appends
its operation to the write journal in one LMDB transaction, then wakes the uploader
(``fs.sync``); nothing waits for the network. Content is read lazily through
``fs.content``; a file being written lives in a staging file until its last handle
is closed (or ``fsync``'d), when it becomes a new version (close-to-open).

Errors: only ``FUSEError`` leaves a handler. ``_errors`` is the one place where our
own exceptions become an errno (and anything unexpected is logged and becomes EIO).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

from backend import protocol as p
from backend.errors import BadRequest, LoftError
from cache.store import Cache
from fs.content import BlockMap, ContentError, Fetcher, Staging, read_blocks, seal

log = logging.getLogger("loft.fs")

TIMEOUT = 5.0
"""Seconds the kernel may cache names and attributes; remote changes invalidate sooner."""

_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except ContentError as err:
            raise pyfuse3.FUSEError(err.errno) from None
        except BadRequest as err:
            code = errno.ENAMETOOLONG if "too long" in err.message else errno.EINVAL
            raise pyfuse3.FUSEError(code) from None
        except LoftError as err:
            log.error("%s: %s", fn.__name__, err)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as err:
            log.error("%s: %s", fn.__name__, err)
            raise pyfuse3.FUSEError(err.errno or errno.EIO) from None
        except ExceptionGroup as group:  # chunks fetched in a nursery fail as a group
            failed, _ = group.split(ContentError)
            if failed is None:
                log.exception("%s failed", fn.__name__)
                raise pyfuse3.FUSEError(errno.EIO) from None
            first: ContentError | ExceptionGroup[ContentError] = failed
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            raise pyfuse3.FUSEError(first.errno) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def _op(kind: str, /, **fields: Any) -> dict[str, Any]:
    return {"op": kind, "op_id": p.new_id(), **fields}


@dataclass
class Staged:
    """A file being written: its staging file and who holds it open."""

    fd: int
    opens: int = 0
    modified: bool = False
    mtime: int = field(default_factory=time.time_ns)


@dataclass
class Handle:
    entry_id: str
    ino: int
    writable: bool
    entry: dict[str, Any]
    blocks: BlockMap | None = None
    version: int = -1


class LoftOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        cache: Cache,
        fetcher: Fetcher,
        staging: Staging,
        changed: Callable[[], None],
        unstaged: Callable[[str], None] = lambda entry_id: None,
    ) -> None:
        super().__init__()
        self.cache = cache
        self.fetcher = fetcher
        self.staging = staging
        self.changed = changed
        self.unstaged = unstaged
        self.uid, self.gid = os.getuid(), os.getgid()
        self.handles: dict[int, Handle] = {}
        self.listings: dict[int, tuple[int, list[tuple[str, str]]]] = {}
        """Open directories: fh -> (inode, the (name, entry id) listing being read)."""
        self.staged: dict[str, Staged] = {}
        self.lookups: dict[int, int] = {}
        self.orphans: dict[int, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        self._next_fh = 1
        self._warned: set[str] = set()
        self._sync_lock = trio.Lock()
        self._sync_asked = self._sync_done = 0
        self._stage_lock = trio.Lock()

    # --- helpers -------------------------------------------------------------------

    def _entry(self, txn: Any, ino: int) -> dict[str, Any]:
        entry_id = self.cache.entry_id(txn, ino)
        entry = self.cache.entry(txn, entry_id) if entry_id else None
        if entry is None:
            orphan = self.orphans.get(ino)
            if orphan is None:
                raise _fail(errno.ENOENT)
            return orphan
        return entry

    def _dir(self, txn: Any, ino: int) -> dict[str, Any]:
        entry = self._entry(txn, ino)
        if entry["kind"] != "dir":
            raise _fail(errno.ENOTDIR)
        return entry

    def _child(self, txn: Any, parent_inode: int, name: bytes) -> dict[str, Any]:
        """The live entry ``name`` in the directory ``parent_inode``, or ENOENT."""
        parent = self._dir(txn, parent_inode)
        entry_id = self.cache.child(txn, parent["id"], os.fsdecode(name))
        entry = self.cache.entry(txn, entry_id) if entry_id else None
        if entry is None:
            raise _fail(errno.ENOENT)
        return entry

    @staticmethod
    def _name(raw: bytes) -> str:
        name = os.fsdecode(raw)
        p.validate_name(name)
        return name

    def attributes(self, entry: dict[str, Any], ino: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = _KIND_BITS[entry["kind"]] | entry["mode"]
        attr.st_nlink = 0 if self.orphans.get(ino) is entry else 1  # unlinked, still open
        size, mtime = entry["size"], entry["mtime"]
        staged = self.staged.get(entry["id"])
        if staged is not None:
            size = os.fstat(staged.fd).st_size
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
        if what not in self._warned:
            self._warned.add(what)
            log.warning("%s: not supported (refused; said once per mount)", what)

    def _remember(self, ino: int) -> None:
        self.lookups[ino] = self.lookups.get(ino, 0) + 1

    def _orphan(self, entry: dict[str, Any], ino: int) -> None:
        """Keep an unlinked entry readable while the kernel or a handle still uses it."""
        in_use = any(h.entry_id == entry["id"] for h in self.handles.values())
        if self.lookups.get(ino, 0) > 0 or in_use:
            self.orphans[ino] = entry
        if not in_use:
            self._drop_staging(entry["id"])

    def _drop_staging(self, entry_id: str) -> None:
        staged = self.staged.pop(entry_id, None)
        if staged is not None:
            os.close(staged.fd)
        self.staging.remove(entry_id)
        self.unstaged(entry_id)

    def _new_entry(
        self, parent: str, name: str, kind: str, mode: int, **extra: Any
    ) -> dict[str, Any]:
        entry = {
            "id": p.new_id(),
            "parent": parent,
            "name": name,
            "kind": kind,
            "rev": 0,
            "size": 0,
            "mode": mode & 0o7777,
            "mtime": time.time_ns(),
            **extra,
        }
        if kind == "file":
            entry.setdefault("blocks", [])
        return entry

    def _create_entry(
        self, parent_ino: int, raw_name: bytes, entry_args: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        name = self._name(raw_name)
        with self.cache.write() as txn:
            parent = self._dir(txn, parent_ino)
            if self.cache.child(txn, parent["id"], name) is not None:
                raise _fail(errno.EEXIST)
            entry = self._new_entry(parent["id"], name, **entry_args)
            self.cache.put_entry(txn, entry)
            op_kind = "mkdir" if entry["kind"] == "dir" else "create"
            fields = {k: entry[k] for k in ("parent", "name", "mode", "mtime")}
            if op_kind == "create":
                fields.update(kind=entry["kind"], size=entry["size"])
                if entry["kind"] == "file":
                    fields["blocks"] = entry["blocks"]
                else:
                    fields["target"] = entry["target"]
            self.cache.record(txn, _op(op_kind, entry=entry["id"], **fields), entry["id"])
            ino = self.cache.inode_of(txn, entry["id"])
        self._remember(ino)
        self.changed()
        return entry, ino

    # --- lookups and attributes ----------------------------------------------------

    @_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        if len(name) > p.MAX_NAME_BYTES:  # no such name can exist: say why, as ext4 does
            raise _fail(errno.ENAMETOOLONG)
        with self.cache.read() as txn:
            entry = self._child(txn, parent_inode, name)
            known = self.cache.known_inode(txn, entry["id"])
        if known is None:  # first sight of this entry: give it an inode number
            with self.cache.write() as txn:
                known = self.cache.inode_of(txn, entry["id"])
        ino = known
        self._remember(ino)
        return self.attributes(entry, ino)

    @_errors
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            left = self.lookups.get(ino, 0) - count
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                self.orphans.pop(ino, None)

    @_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        return self.attributes(entry, inode)

    @_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: Any,
    ) -> pyfuse3.EntryAttributes:
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        if fields.update_size:
            if entry["kind"] != "file":
                raise _fail(errno.EISDIR if entry["kind"] == "dir" else errno.EINVAL)
            await self._truncate(entry, inode, attr.st_size)
        change: dict[str, Any] = {}
        if fields.update_mode:
            change["mode"] = attr.st_mode & 0o7777
        if fields.update_mtime:
            change["mtime"] = attr.st_mtime_ns
        if change and self.orphans.get(inode) is entry:
            entry.update(change)  # unlinked but still open: nothing left to journal
        elif change:
            with self.cache.write() as txn:
                entry = self._entry(txn, inode)
                entry.update(change)
                self.cache.put_entry(txn, entry)
                self.cache.record(txn, _op("setattr", entry=entry["id"], **change), entry["id"])
                staged = self.staged.get(entry["id"])
                if staged is not None and "mtime" in change:
                    staged.mtime = change["mtime"]
            self.changed()
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        return self.attributes(entry, inode)

    async def _truncate(self, entry: dict[str, Any], ino: int, size: int) -> None:
        staged = await self._stage(entry, truncate=size == 0)
        try:
            os.ftruncate(staged.fd, size)
            staged.modified, staged.mtime = True, time.time_ns()
        finally:
            await self._unstage(entry["id"])

    # --- directories -----------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        with self.cache.read() as txn:
            self._dir(txn, inode)
        fh = self._next_fh
        self._next_fh += 1
        self.listings[fh] = (inode, [])
        return fh

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Serve the handle's listing, read at its start (``opendir``, ``rewinddir``).

        Offsets index that snapshot, so a program that deletes (or adds) names while
        it reads the directory (``rm -r``) still gets every other name exactly once,
        as POSIX asks; a name gone since the snapshot is left out.
        """
        inode, listing = self.listings[fh]
        with self.cache.write() as txn:
            directory = self._dir(txn, inode)
            if start_id == 0:
                listing = list(self.cache.children(txn, directory["id"]))
                self.listings[fh] = (inode, listing)
            for index in range(start_id, len(listing)):
                name, entry_id = listing[index]
                entry = self.cache.entry(txn, entry_id)
                if entry is None or (entry["parent"], entry["name"]) != (directory["id"], name):
                    continue
                ino = self.cache.inode_of(txn, entry_id)
                if not pyfuse3.readdir_reply(
                    token, os.fsencode(name), self.attributes(entry, ino), index + 1
                ):
                    return
                self._remember(ino)

    @_errors
    async def releasedir(self, fh: int) -> None:
        self.listings.pop(fh, None)

    @_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        entry, ino = self._create_entry(parent_inode, name, {"kind": "dir", "mode": mode})
        return self.attributes(entry, ino)

    @_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(target)
        entry, ino = self._create_entry(
            parent_inode,
            name,
            {"kind": "symlink", "mode": 0o777, "target": text, "size": len(target)},
        )
        return self.attributes(entry, ino)

    @_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        if entry["kind"] != "symlink":
            raise _fail(errno.EINVAL)
        return os.fsencode(entry["target"])

    async def _remove(self, parent_inode: int, name: bytes, want_dir: bool) -> None:
        with self.cache.write() as txn:
            entry = self._child(txn, parent_inode, name)
            if want_dir and entry["kind"] != "dir":
                raise _fail(errno.ENOTDIR)
            if not want_dir and entry["kind"] == "dir":
                raise _fail(errno.EISDIR)
            if want_dir and next(self.cache.children(txn, entry["id"]), None) is not None:
                raise _fail(errno.ENOTEMPTY)
            self.cache.drop_entry(txn, entry["id"])
            self.cache.record(txn, _op("delete", entry=entry["id"]), entry["id"])
            ino = self.cache.inode_of(txn, entry["id"])
        self._orphan(entry, ino)
        self.changed()

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._remove(parent_inode, name, want_dir=False)

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._remove(parent_inode, name, want_dir=True)

    @_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            self._unsupported("rename with RENAME_EXCHANGE")
            raise _fail(errno.EINVAL)
        new = self._name(name_new)
        victim: tuple[dict[str, Any], int] | None = None
        with self.cache.write() as txn:
            source = self._child(txn, parent_inode_old, name_old)
            target_parent = self._dir(txn, parent_inode_new)
            ancestor: dict[str, Any] | None = target_parent
            while ancestor is not None and ancestor["id"] != p.ROOT_ID:
                if ancestor["id"] == source["id"]:
                    raise _fail(errno.EINVAL)
                ancestor = self.cache.entry(txn, ancestor["parent"])
            target_id = self.cache.child(txn, target_parent["id"], new)
            if target_id == source["id"]:
                return
            op = _op("rename", entry=source["id"], parent=target_parent["id"], name=new)
            touched = [source["id"]]
            if target_id is not None:
                if flags & pyfuse3.RENAME_NOREPLACE:
                    raise _fail(errno.EEXIST)
                target = self.cache.entry(txn, target_id)
                assert target is not None
                if source["kind"] == "dir" and target["kind"] != "dir":
                    raise _fail(errno.ENOTDIR)
                if source["kind"] != "dir" and target["kind"] == "dir":
                    raise _fail(errno.EISDIR)
                if next(self.cache.children(txn, target_id), None) is not None:
                    raise _fail(errno.ENOTEMPTY)
                self.cache.drop_entry(txn, target_id)
                op["replace"] = {"entry": target_id}
                touched.append(target_id)
                victim = (target, self.cache.inode_of(txn, target_id))
            source["parent"], source["name"] = target_parent["id"], new
            self.cache.put_entry(txn, source)
            self.cache.record(txn, op, *touched)
        if victim is not None:
            self._orphan(*victim)
        self.changed()

    @_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        self._unsupported("hard links")
        raise _fail(errno.EPERM)

    @_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            self._unsupported("device nodes and FIFOs")
            raise _fail(errno.EPERM)
        entry, ino = self._create_entry(parent_inode, name, {"kind": "file", "mode": mode})
        return self.attributes(entry, ino)

    # --- files -----------------------------------------------------------------------

    async def _stage(self, entry: dict[str, Any], truncate: bool) -> Staged:
        """The entry's staging file, made (and filled, unless truncating) if need be."""
        async with self._stage_lock:
            staged = self.staged.get(entry["id"])
            if staged is None:
                fd = self.staging.open(entry["id"], truncate=True)
                staged = Staged(fd)
                try:
                    if not truncate and entry["size"]:
                        await self._materialize(entry, fd)
                except BaseException:
                    os.close(fd)
                    self.staging.remove(entry["id"])
                    raise
                self.staged[entry["id"]] = staged
            elif truncate:
                os.ftruncate(staged.fd, 0)
            if truncate:
                staged.modified, staged.mtime = True, time.time_ns()
            staged.opens += 1
            return staged

    async def _materialize(self, entry: dict[str, Any], fd: int) -> None:
        blocks = BlockMap(entry["blocks"])

        async def one(index: int) -> None:
            data = await self.fetcher.get(blocks.ids[index])
            await trio.to_thread.run_sync(os.pwrite, fd, data, blocks.starts[index])

        async with trio.open_nursery() as nursery:
            limit = trio.Semaphore(6)
            for index in range(len(blocks.ids)):
                await limit.acquire()

                async def run(i: int = index) -> None:
                    try:
                        await one(i)
                    finally:
                        limit.release()

                nursery.start_soon(run)

    async def _unstage(self, entry_id: str) -> None:
        """One holder is done with the staging file; the last one seals and drops it."""
        staged = self.staged.get(entry_id)
        if staged is None:
            return
        staged.opens -= 1
        if staged.opens > 0:
            return
        if staged.modified:
            await self._seal(entry_id)
        self._drop_staging(entry_id)

    async def _seal(self, entry_id: str) -> None:
        """Make the staging file's content a new version: chunks, replica, journal."""
        staged = self.staged[entry_id]
        blocks, size = await trio.to_thread.run_sync(seal, self.cache, staged.fd)
        with self.cache.write() as txn:
            entry = self.cache.entry(txn, entry_id)
            if entry is None:
                return  # unlinked meanwhile: nothing to commit
            entry.update(size=size, blocks=blocks, mtime=staged.mtime)
            self.cache.put_entry(txn, entry)
            self.cache.record(
                txn,
                _op("update", entry=entry_id, size=size, mtime=staged.mtime, blocks=blocks),
                entry_id,
            )
        staged.modified = False
        self.versions[entry_id] = self.versions.get(entry_id, 0) + 1
        log.debug("sealed %s: %d bytes in %d chunk(s)", entry["name"], size, len(blocks))
        self.changed()

    def _handle(self, entry: dict[str, Any], ino: int, writable: bool) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(entry["id"], ino, writable, entry)
        return fh

    @_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        if entry["kind"] == "dir":
            raise _fail(errno.EISDIR)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable or flags & os.O_TRUNC:
            await self._stage(entry, truncate=bool(flags & os.O_TRUNC))
        fh = self._handle(entry, inode, writable or bool(flags & os.O_TRUNC))
        return pyfuse3.FileInfo(fh=fh, keep_cache=entry["id"] not in self.staged)

    @_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        entry, ino = self._create_entry(parent_inode, name, {"kind": "file", "mode": mode})
        await self._stage(entry, truncate=True)
        fh = self._handle(entry, ino, True)
        return pyfuse3.FileInfo(fh=fh), self.attributes(entry, ino)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        staged = self.staged.get(handle.entry_id)
        if staged is not None:
            return os.pread(staged.fd, size, off)
        version = self.versions.get(handle.entry_id, 0)
        if handle.blocks is None or handle.version != version:
            with self.cache.read() as txn:
                entry = self.cache.entry(txn, handle.entry_id) or handle.entry
            handle.blocks, handle.version = BlockMap(entry.get("blocks", [])), version
        return await read_blocks(self.fetcher, handle.blocks, off, size)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        staged = self.staged.get(handle.entry_id)
        if staged is None or not handle.writable:
            raise _fail(errno.EBADF)
        written = os.pwrite(staged.fd, buf, off)
        staged.modified, staged.mtime = True, time.time_ns()
        return written

    @_errors
    async def flush(self, fh: int) -> None:
        """``close(2)``: the content written so far becomes a version (close-to-open)."""
        handle = self.handles.get(fh)
        if handle is None or not handle.writable:
            return
        staged = self.staged.get(handle.entry_id)
        if staged is not None and staged.modified:
            await self._seal(handle.entry_id)
            await self._durable()

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

    @_errors
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None and handle.writable:
            await self._unstage(handle.entry_id)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        """Returns once the file's content and metadata are durable on this device."""
        await self.flush(fh)
        await self._durable()

    @_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self._durable()

    @_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 128 * 1024
        data.f_blocks = data.f_bfree = data.f_bavail = 1 << 30
        data.f_files = data.f_ffree = data.f_favail = 1 << 30
        data.f_namemax = p.MAX_NAME_BYTES
        return data

    # --- extended attributes: not stored ---------------------------------------------
    # ENOSYS tells the kernel once and for all, so ``ls -l`` stops asking per file.

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        raise _fail(errno.ENOSYS)

    @_errors
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        raise _fail(errno.ENOSYS)

    @_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise _fail(errno.ENOSYS)

    @_errors
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise _fail(errno.ENOSYS)

    # --- used by the sync engine ---------------------------------------------------

    def content_changed(self, entry_id: str) -> None:
        """A remote version replaced the entry's content: handles re-read block lists."""
        self.versions[entry_id] = self.versions.get(entry_id, 0) + 1
