"""A minimal in-memory filesystem on pyfuse3 and trio: the ceiling for Python FUSE here.

    python -m tools.bench.memfs MOUNTPOINT

Runs in the foreground until the mount point is unmounted (``fusermount3 -u``) or
the process gets SIGINT/SIGTERM. Files are ``bytearray``s and directories dicts in
one inode table; nothing touches a disk or a network, so whatever a workload costs
here is the cost of the kernel round trips and of pyfuse3 itself. ``tools.bench.mount``
runs the same workloads on it and on a Loft mount.

To keep the comparison fair, it mounts with Loft's options, gives the kernel the same
attribute and entry timeouts and block size, and leaves the kernel's writeback cache
off, as Loft does: the kernel sends both the same requests. It supports what the
benchmark needs (files, directories, ``tar x``, ``ls -lR``, renames of files); no links, no
extended attributes (``ENOSYS``, which the kernel remembers and stops asking).
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pyfuse3
import trio

from fs.core import TIMEOUT

BLOCK = 128 * 1024
"""``st_blksize`` and ``f_bsize``, as Loft reports them."""


@dataclass
class Node:
    """An inode: a file (``data``) or a directory (``children``), with its counters.

    The node is dropped when no name, kernel lookup or open handle refers to it.
    """

    mode: int
    uid: int
    gid: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, int] | None = None
    nlink: int = 1
    lookups: int = 0
    opens: int = 0
    atime_ns: int = field(default_factory=time.time_ns)
    mtime_ns: int = 0
    ctime_ns: int = 0

    def __post_init__(self) -> None:
        self.mtime_ns = self.ctime_ns = self.atime_ns

    def touch(self) -> None:
        self.mtime_ns = self.ctime_ns = time.time_ns()


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class MemFS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self) -> None:
        super().__init__()
        root = Node(stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), children={}, nlink=2)
        self.nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: root}
        self._next_ino = pyfuse3.ROOT_INODE + 1

    # --- helpers ---------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise _fail(errno.ENOENT)
        return node

    def _dir(self, ino: int) -> dict[bytes, int]:
        children = self._node(ino).children
        if children is None:
            raise _fail(errno.ENOTDIR)
        return children

    def attributes(self, ino: int) -> pyfuse3.EntryAttributes:
        node = self._node(ino)
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = node.mode
        attr.st_nlink = node.nlink
        attr.st_uid, attr.st_gid = node.uid, node.gid
        attr.st_size = len(node.data) if node.children is None else 0
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_blksize = BLOCK
        attr.st_atime_ns, attr.st_mtime_ns = node.atime_ns, node.mtime_ns
        attr.st_ctime_ns = node.ctime_ns
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        return attr

    def _add(self, parent_ino: int, name: bytes, node: Node) -> pyfuse3.EntryAttributes:
        children = self._dir(parent_ino)
        if name in children:
            raise _fail(errno.EEXIST)
        ino = self._next_ino
        self._next_ino += 1
        self.nodes[ino] = node
        children[name] = ino
        node.lookups = 1
        self._node(parent_ino).touch()
        return self.attributes(ino)

    def _maybe_drop(self, ino: int) -> None:
        node = self.nodes.get(ino)
        if node is not None and node.nlink == 0 and node.lookups <= 0 and node.opens <= 0:
            del self.nodes[ino]

    def _remove(self, parent_ino: int, name: bytes, want_dir: bool) -> None:
        children = self._dir(parent_ino)
        ino = children.get(name)
        if ino is None:
            raise _fail(errno.ENOENT)
        node = self._node(ino)
        if want_dir and node.children is None:
            raise _fail(errno.ENOTDIR)
        if not want_dir and node.children is not None:
            raise _fail(errno.EISDIR)
        if want_dir and node.children:
            raise _fail(errno.ENOTEMPTY)
        del children[name]
        node.nlink = 0
        self._node(parent_ino).touch()
        self._maybe_drop(ino)

    # --- names and attributes ----------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ino = self._dir(parent_inode).get(name)
        if ino is None:
            raise _fail(errno.ENOENT)
        self._node(ino).lookups += 1
        return self.attributes(ino)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            node = self.nodes.get(ino)
            if node is not None:
                node.lookups -= count
                self._maybe_drop(ino)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(inode)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if fields.update_size:
            if node.children is not None:
                raise _fail(errno.EISDIR)
            size = attr.st_size
            if size < len(node.data):
                del node.data[size:]
            else:
                node.data.extend(bytes(size - len(node.data)))
            node.touch()
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = attr.st_ctime_ns if fields.update_ctime else time.time_ns()
        return self.attributes(inode)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK
        data.f_blocks = data.f_bfree = data.f_bavail = 1 << 30
        data.f_files = data.f_ffree = data.f_favail = 1 << 30
        data.f_namemax = 255
        return data

    # --- directories -------------------------------------------------------------------

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = Node(stat.S_IFDIR | stat.S_IMODE(mode), ctx.uid, ctx.gid, children={}, nlink=2)
        return self._add(parent_inode, name, node)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._dir(inode)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = list(self._dir(fh).items())[start_id:]
        for offset, (name, ino) in enumerate(listing, start=start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self.attributes(ino), offset):
                return
            self.nodes[ino].lookups += 1

    async def releasedir(self, fh: int) -> None:
        pass

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._remove(parent_inode, name, want_dir=False)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._remove(parent_inode, name, want_dir=True)

    async def rename(
        self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes,
        flags: int, ctx: pyfuse3.RequestContext,
    ) -> None:
        """Plain ``rename`` of files (replacing one at the target), as the random
        operations benchmark needs; flags (``RENAME_EXCHANGE``...) are refused."""
        if flags:
            raise _fail(errno.EINVAL)
        source = self._dir(parent_old)
        ino = source.get(name_old)
        if ino is None:
            raise _fail(errno.ENOENT)
        if self._node(ino).children is not None:
            raise _fail(errno.EXDEV)  # folders stay where they are: not needed here
        target = self._dir(parent_new)
        if target.get(name_new) not in (None, ino):
            self._remove(parent_new, name_new, want_dir=False)
        del source[name_old]
        target[name_new] = ino
        self._node(parent_old).touch()
        self._node(parent_new).touch()

    # --- files -------------------------------------------------------------------------

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        attr = self._add(
            parent_inode, name, Node(stat.S_IFREG | stat.S_IMODE(mode), ctx.uid, ctx.gid)
        )
        self.nodes[attr.st_ino].opens += 1
        return pyfuse3.FileInfo(fh=attr.st_ino), attr

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.children is not None:
            raise _fail(errno.EISDIR)
        if flags & os.O_TRUNC:
            node.data.clear()
            node.touch()
        node.opens += 1
        return pyfuse3.FileInfo(fh=inode, keep_cache=flags & os.O_ACCMODE == os.O_RDONLY)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(self.nodes[fh].data[off : off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        node = self.nodes[fh]
        data = node.data
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off : off + len(buf)] = buf
        node.touch()
        return len(buf)

    async def flush(self, fh: int) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass  # memory is as durable as this filesystem gets

    async def release(self, fh: int) -> None:
        node = self.nodes[fh]
        node.opens -= 1
        self._maybe_drop(fh)


async def _serve(mountpoint: str, options: set[str]) -> None:
    """Mount, serve until unmounted or signalled, and leave nothing mounted."""
    # The signal receiver comes first, so that a SIGTERM at any time after the mount
    # unmounts it rather than killing the process and leaving a dead mount behind.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            pyfuse3.init(MemFS(), mountpoint, options)
        except RuntimeError as err:
            raise SystemExit(f"memfs: cannot mount {mountpoint}: {err}") from None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, signals)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            # After a signal this unmounts; after fusermount3 -u nothing is left to undo.
            pyfuse3.close(unmount=True)


async def _stop_on_signal(signals: AsyncIterator[int]) -> None:
    async for _ in signals:
        pyfuse3.terminate()
        return


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m tools.bench.memfs MOUNTPOINT")
    options = set(pyfuse3.default_options)
    options |= {"fsname=memfs", "subtype=memfs", "default_permissions"}
    trio.run(_serve, sys.argv[1], options)


if __name__ == "__main__":
    main()
