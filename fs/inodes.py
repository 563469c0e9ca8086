"""Inodes the kernel knows: lookup counts, and unlinked entries kept while in use.

An inode lives until the kernel forgets it: ``remember`` counts each lookup reply,
``forget`` takes them back. An entry unlinked while the kernel still knows it or a
handle holds it stays readable as an *orphan* (``st_nlink`` 0) until both let go, as
POSIX asks (editors and pjdfstest check this).
"""

from __future__ import annotations

from cache.records import Entry


class Inodes:
    def __init__(self) -> None:
        self.lookups: dict[int, int] = {}
        self.orphans: dict[int, Entry] = {}

    def remember(self, ino: int) -> None:
        self.lookups[ino] = self.lookups.get(ino, 0) + 1

    def forget(self, ino: int, count: int) -> None:
        left = self.lookups.get(ino, 0) - count
        if left > 0:
            self.lookups[ino] = left
        else:
            self.lookups.pop(ino, None)
            self.orphans.pop(ino, None)

    def known(self, ino: int) -> bool:
        return ino in self.lookups

    def orphan(self, entry: Entry, ino: int, in_use: bool) -> None:
        """Keep an unlinked entry while the kernel or a handle still uses it."""
        if self.lookups.get(ino, 0) > 0 or in_use:
            self.orphans[ino] = entry

    def is_orphan(self, ino: int, entry: Entry) -> bool:
        return self.orphans.get(ino) is entry
