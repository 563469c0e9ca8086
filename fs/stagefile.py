"""The bytes of one file being written: in memory while small, else on local disk.

A staging file (``fs.staging``) starts in memory (a ``bytearray``) when it is at most
``IN_MEMORY`` bytes and the mount's ``Budget`` has room: a small new
file (the thousands of a ``tar x`` or a ``git checkout``) is written, cut and freed
without a file of its own: no inode made, filled and freed on disk. It moves to a
file on disk (``unnamed_file``) once a write or a truncate takes it past
``IN_MEMORY``, or when a caller needs a descriptor (``fileno``, for a seal that cuts
in a worker thread); it never moves back. A file that finds the budget spent starts
on disk.

Nothing here is durable by itself: a staging file holds what was written since the
last seal, and only a close makes a promise of it: a small file's close seals it (the
sealed version in LMDB is what survives a crash), a large one's *parks* it
(``fs.parking``: the file gets a name, ``link``, beside a record of what it holds; a
mount that starts finds it again, ``adopt``). The methods
mirror ``os.pread``/``os.pwrite``/``os.ftruncate``: a read past the end is short, a
write past the end leaves zeros between, as a sparse file reads.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from cache.mapped import libc

IN_MEMORY = 1024 * 1024
"""A staging file up to this size may be held in memory."""
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
"""``linkat(2)`` arguments (``<fcntl.h>``)."""
BUDGET = 64 * 1024 * 1024
"""Bytes of all the mount's staging files held in memory at once, at most."""


class Budget:
    """How many bytes the staging files of one mount may hold in memory: ``limit`` in
    all, ``per_file`` each (taken whole while a file is in memory)."""

    def __init__(self, limit: int = BUDGET, per_file: int = IN_MEMORY) -> None:
        self.limit = limit
        self.per_file = per_file
        self.used = 0

    def take(self) -> bool:
        """A file's share, if there is room for it."""
        if self.used + self.per_file > self.limit:
            return False
        self.used += self.per_file
        return True

    def give(self) -> None:
        self.used -= self.per_file


class StagingFile:
    """A file's bytes while it is written (see the module's docstring)."""

    def __init__(self, root: Path, budget: Budget, size: int) -> None:
        self.root = root
        self.budget = budget
        self.fd: int | None = None
        self._data: bytearray | None = None
        if size <= budget.per_file and budget.take():
            self._data = bytearray(size)
        else:
            self.fd = unnamed_file(root)
            try:
                os.ftruncate(self.fd, size)
            except BaseException:
                self.close()
                raise

    @classmethod
    def adopt(cls, root: Path, budget: Budget, fd: int) -> StagingFile:
        """A staging file of the bytes of ``fd`` (a parked file an earlier mount left)."""
        file = cls.__new__(cls)
        file.root, file.budget, file.fd, file._data = root, budget, fd, None
        return file

    def link(self, path: Path) -> bool:
        """Give the bytes (moved to disk first) the name ``path``; False where that
        cannot be done (a file system without ``O_TMPFILE``, no ``/proc``)."""
        fd = self.fileno()
        # linkat(2) following the /proc link (os.link calls link(2), which links the
        # symlink itself and fails): allowed for an O_TMPFILE file made without
        # O_EXCL, unprivileged; a file made and unlinked has no inode to name (ENOENT).
        source = f"/proc/self/fd/{fd}".encode()
        if libc.linkat(AT_FDCWD, source, AT_FDCWD, os.fsencode(path), AT_SYMLINK_FOLLOW) == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP):
            return False
        raise OSError(code, f"naming a staging file {path}: {os.strerror(code)}")

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def size(self) -> int:
        if self._data is not None:
            return len(self._data)
        return os.fstat(self._open()).st_size

    def disk_bytes(self) -> int:
        """Bytes it takes on disk (what closing it frees)."""
        return 0 if self.fd is None else os.fstat(self.fd).st_blocks * 512

    def pread(self, size: int, offset: int) -> bytes:
        if self._data is not None:
            return bytes(self._data[offset : offset + size])
        return os.pread(self._open(), size, offset)

    def pwrite(self, data: bytes | memoryview, offset: int) -> int:
        if not len(data):
            return 0  # as pwrite(2): nothing written extends nothing
        if self._data is not None and offset + len(data) > self.budget.per_file:
            self._spill()
        if self._data is None:
            return os.pwrite(self._open(), data, offset)
        if offset > len(self._data):
            self._data.extend(bytes(offset - len(self._data)))
        self._data[offset : offset + len(data)] = data
        return len(data)

    def truncate(self, size: int) -> None:
        if self._data is not None and size > self.budget.per_file:
            self._spill()
        if self._data is None:
            os.ftruncate(self._open(), size)
        elif size < len(self._data):
            del self._data[size:]
        else:
            self._data.extend(bytes(size - len(self._data)))

    def fileno(self) -> int:
        """A descriptor of the bytes (moving them to disk if they were in memory)."""
        if self._data is not None:
            self._spill()
        return self._open()

    def close(self) -> None:
        if self._data is not None:
            self._data = None
            self.budget.give()
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def _spill(self) -> None:
        """Move the bytes held in memory to a file on disk."""
        assert self._data is not None
        fd = unnamed_file(self.root)
        try:
            os.pwrite(fd, self._data, 0)
            os.ftruncate(fd, len(self._data))  # a tail of zeros the write left out
        except BaseException:
            os.close(fd)
            raise
        self.fd, self._data = fd, None
        self.budget.give()

    def _open(self) -> int:
        if self.fd is None:
            raise OSError(errno.EBADF, "staging file closed")
        return self.fd


def unnamed_file(root: Path) -> int:
    """A new empty file on ``root``'s file system, open for reading and writing, with
    no name: ``O_TMPFILE`` (0.1 ms here, where making and removing a name took 1 ms),
    or on a file system without it a name removed at once."""
    try:
        return os.open(root, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    path = root / f".new-{os.urandom(8).hex()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(path)
    return fd
