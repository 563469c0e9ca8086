"""The FUSE operations of a Loft mount (pyfuse3 on trio): thin handlers.

Every metadata question (lookup, getattr, readdir) is answered from the view in LMDB,
without a round trip and without waiting for the writer; every local change is one
writer job that updates the view and journals the change (``fs.core``). File content
is ``fs.files``'s; errors become errnos in ``fs.errors`` alone.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import Any

import pyfuse3

from backend import protocol as p
from cache.env import Txn
from cache.records import PENDING, Entry
from fs.core import VERSIONS, new_op
from fs.errors import errors, fail
from fs.files import FileHandlers


class LoftOperations(FileHandlers, pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    # --- lookups and attributes ----------------------------------------------------

    @errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        if len(name) > p.MAX_NAME_BYTES:  # no such name can exist: say why, as ext4 does
            raise fail(errno.ENAMETOOLONG)
        if self.past.owns(parent_inode):
            node = await self.past.child(self.past.node(parent_inode), os.fsdecode(name))
            return self._past_entry(node)
        if name == VERSIONS:
            with self.cache.read() as txn:
                folder = self._dir(txn, parent_inode)
            return self._past_entry(self.past.versions_of(folder["id"]))
        with self.cache.read() as txn:
            entry = self._child(txn, parent_inode, name)
        ino = await self._inode(entry["id"])
        self.inodes.remember(ino)
        return self.attributes(entry, ino)

    @errors
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            if self.past.owns(ino):
                self.past.forget(ino, count)
            else:
                self.inodes.forget(ino, count)

    @errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if self.past.owns(inode):
            return self._past_attributes(self.past.node(inode), inode)
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        return self.attributes(entry, inode)

    @errors
    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
        fh: int | None, ctx: Any,
    ) -> pyfuse3.EntryAttributes:
        self._writable(inode)
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        if fields.update_size:
            if entry["kind"] != "file":
                raise fail(errno.EISDIR if entry["kind"] == "dir" else errno.EINVAL)
            await self._truncate(entry, attr.st_size)
        change: dict[str, Any] = {}
        if fields.update_mode:
            change["mode"] = attr.st_mode & 0o7777
        if fields.update_mtime:
            change["mtime"] = attr.st_mtime_ns
        staged = self.stager.staged.get(entry["id"])
        if staged is not None and staged.modified and "mtime" in change:
            # Written since its last seal: the seal that makes those bytes a version
            # carries the time (as a write after it would set it); nothing to journal.
            staged.mtime = change.pop("mtime")
        if staged is None:  # what changes nothing makes no version
            change = {k: v for k, v in change.items() if entry.get(k) != v}
        if change and self.inodes.is_orphan(inode, entry):
            entry.update(change)  # type: ignore[typeddict-item]
        elif change:
            def job(txn: Txn) -> None:
                current = self._entry(txn, inode)
                snap = Entry(**current)
                current.update(change)  # type: ignore[typeddict-item]
                current["rev"] = PENDING
                self.view.put(txn, current)
                self.replica.record(txn, new_op("setattr", entry=current["id"], **change), snap,
                                    current["parent"])

            await self._change(job)
            staged = self.stager.staged.get(entry["id"])
            if staged is not None and "mtime" in change:
                staged.mtime = change["mtime"]
        with self.cache.read() as txn:
            entry = self._entry(txn, inode)
        return self.attributes(entry, inode)

    # --- directories -----------------------------------------------------------------

    @errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        if self.past.owns(inode):
            if not self.past.node(inode).is_dir:
                raise fail(errno.ENOTDIR)
        else:
            with self.cache.read() as txn:
                self._dir(txn, inode)
        fh = self._next_fh
        self._next_fh += 1
        self.listings[fh] = (inode, [])
        return fh

    @errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Serve the handle's listing, read at its start (``opendir``, ``rewinddir``).

        Offsets index that snapshot, so a program that deletes (or adds) names while
        it reads the directory (``rm -r``) still gets every other name exactly once,
        as POSIX asks; a name gone since the snapshot is left out.
        """
        inode, listing = self.listings[fh]
        if self.past.owns(inode):
            await self._past_readdir(fh, inode, start_id, token)
            return
        with self.cache.read() as txn:
            directory = self._dir(txn, inode)
            if start_id == 0:
                listing = list(self.view.children(txn, directory["id"]))
                self.listings[fh] = (inode, listing)
            todo = listing[start_id:]
            new = [eid for _, eid in todo if self.cache.known_inode(txn, eid) is None]
        if new:
            await self.writer.write(lambda txn: [self.cache.inode_of(txn, eid) for eid in new])
        with self.cache.read() as txn:
            for index in range(start_id, len(listing)):
                name, entry_id = listing[index]
                entry = self.view.get(txn, entry_id)
                if entry is None or (entry["parent"], entry["name"]) != (directory["id"], name):
                    continue
                ino = self.cache.known_inode(txn, entry_id)
                if ino is None:
                    continue
                if not pyfuse3.readdir_reply(
                    token, self._shown(name), self.attributes(entry, ino), index + 1
                ):
                    return
                self.inodes.remember(ino)

    @errors
    async def releasedir(self, fh: int) -> None:
        self.listings.pop(fh, None)
        self.past_listings.pop(fh, None)

    @errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        entry, ino = await self._create_entry(parent_inode, name, "dir", mode)
        return self.attributes(entry, ino)

    @errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        entry, ino = await self._create_entry(
            parent_inode, name, "symlink", 0o777, target=os.fsdecode(target), size=len(target)
        )
        return self.attributes(entry, ino)

    @errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        if self.past.owns(inode):
            entry: Any = self.past.node(inode).entry
        else:
            with self.cache.read() as txn:
                entry = self._entry(txn, inode)
        if entry["kind"] != "symlink":
            raise fail(errno.EINVAL)
        return os.fsencode(entry["target"])

    async def _remove(self, parent_inode: int, name: bytes, want_dir: bool) -> None:
        self._writable(parent_inode)

        def job(txn: Txn) -> tuple[Entry, int]:
            entry = self._child(txn, parent_inode, name)
            if want_dir and entry["kind"] != "dir":
                raise fail(errno.ENOTDIR)
            if not want_dir and entry["kind"] == "dir":
                raise fail(errno.EISDIR)
            if "share" in entry:  # leaving is ``loft leave``: never a side effect of rm
                raise fail(errno.EPERM)
            if want_dir and self.view.has_children(txn, entry["id"]):
                raise fail(errno.ENOTEMPTY)
            self.view.drop(txn, entry["id"])
            self.replica.record(txn, new_op("delete", entry=entry["id"]), entry, entry["parent"])
            return entry, self.cache.inode_of(txn, entry["id"])

        self._orphan(*await self._change(job))

    @errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._remove(parent_inode, name, want_dir=False)

    @errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self._remove(parent_inode, name, want_dir=True)

    @errors
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
        flags: int, ctx: Any,
    ) -> None:
        self._writable(parent_inode_old, parent_inode_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            self._unsupported("rename with RENAME_EXCHANGE")
            raise fail(errno.EINVAL)
        new = self._name(name_new)

        def job(txn: Txn) -> tuple[Entry, int] | None:
            source = self._child(txn, parent_inode_old, name_old)
            folder = self._dir(txn, parent_inode_new)
            if folder["id"] == source["id"] or source["id"] in self.view.ancestors(
                txn, folder["id"]
            ):
                raise fail(errno.EINVAL)
            if self._share_id(txn, source["parent"]) != self._share_id(txn, folder["id"]):
                raise fail(errno.EXDEV)  # another namespace: programs copy instead
            target_id = self.view.child(txn, folder["id"], new)
            if target_id == source["id"]:
                return None
            op = new_op("rename", entry=source["id"], parent=folder["id"], name=new)
            victim: Entry | None = None
            if target_id is not None:
                if flags & pyfuse3.RENAME_NOREPLACE:
                    raise fail(errno.EEXIST)
                victim = self.view.get(txn, target_id)
                assert victim is not None
                if "share" in victim:
                    raise fail(errno.EPERM)
                if source["kind"] == "dir" and victim["kind"] != "dir":
                    raise fail(errno.ENOTDIR)
                if source["kind"] != "dir" and victim["kind"] == "dir":
                    raise fail(errno.EISDIR)
                if self.view.has_children(txn, target_id):
                    raise fail(errno.ENOTEMPTY)
                self.view.drop(txn, target_id)
                op["replace"] = {"entry": target_id}
            snap = Entry(**source)
            source["parent"], source["name"], source["rev"] = folder["id"], new, PENDING
            self.view.put(txn, source)
            self.replica.record(txn, op, snap, folder["id"], victim)
            return (victim, self.cache.inode_of(txn, victim["id"])) if victim else None

        replaced = await self._change(job)
        if replaced is not None:
            self._orphan(*replaced)

    @errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        self._writable(inode, new_parent_inode)
        self._unsupported("hard links")
        raise fail(errno.EPERM)

    @errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):
            self._unsupported("device nodes and FIFOs")
            raise fail(errno.EPERM)
        entry, ino = await self._create_entry(parent_inode, name, "file", mode)
        return self.attributes(entry, ino)

    @errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self._durable()

    @errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 128 * 1024
        data.f_blocks = data.f_bfree = data.f_bavail = 1 << 30
        data.f_files = data.f_ffree = data.f_favail = 1 << 30
        data.f_namemax = p.MAX_NAME_BYTES
        return data

    # --- extended attributes: not stored ---------------------------------------------
    # ENOSYS tells the kernel once and for all. Any other answer makes it ask for
    # ``security.capability`` before every write (twice the cost of small writes).

    @errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        raise fail(errno.ENOSYS)

    @errors
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        raise fail(errno.ENOSYS)

    @errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise fail(errno.ENOSYS)

    @errors
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise fail(errno.ENOSYS)

    # --- what the sync side tells the FUSE side --------------------------------------

    def content_changed(self, entry_id: str) -> None:
        """The entry's content changed in the view: open handles re-read block lists."""
        self.versions[entry_id] = self.versions.get(entry_id, 0) + 1
