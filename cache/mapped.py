"""Giving back the pages of the cache's memory map that this process has touched.

LMDB reads through a read-only shared map of ``data.mdb``: every page the mount
looks at (a chunk it serves or uploads, the tree a listing walks) stays mapped into
the process and counts in its resident set, although it is the kernel's page cache,
shared and reclaimable. Streaming 1 GiB through the cache would show as 1 GiB
resident. ``release`` unmaps those pages (``madvise(MADV_DONTNEED)``): the data stay
in the page cache, and the next access maps them again with a minor fault, so the
resident set shows the mount's own memory. Safe while other threads read: a shared
file mapping is repopulated from the file, and this map is never written through.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from pathlib import Path

log = logging.getLogger(__name__)

libc = ctypes.CDLL(None, use_errno=True)
"""The C library this process runs on (glibc here: ``madvise``, ``mallopt``,
``malloc_trim``)."""
libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
libc.madvise.restype = ctypes.c_int


def regions(path: Path) -> list[tuple[int, int]]:
    """``(start, length)`` of each mapping of ``path`` in this process."""
    name = str(path.resolve())
    found: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip("\n").endswith(name):
                    start, _, end = line.split(" ", 1)[0].partition("-")
                    found.append((int(start, 16), int(end, 16) - int(start, 16)))
    except OSError as err:  # no /proc: the pages stay mapped, nothing else changes
        log.debug("cannot read /proc/self/maps: %s", err)
    return found


def release(spans: list[tuple[int, int]]) -> None:
    """Unmap the resident pages of these mappings (``regions`` of a file)."""
    for start, length in spans:
        if libc.madvise(start, length, mmap.MADV_DONTNEED) != 0:
            log.debug("madvise at %#x failed: errno %d", start, ctypes.get_errno())
