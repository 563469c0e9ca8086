"""The undo log of a parked file (``fs.parking``): the bytes its park record takes
from the staging file, copied before a write or a truncate changes them.

Entries, one after another: a head of two unsigned 64-bit big-endian integers (the
offset in the staging file, the length), then that many bytes; a hole of the staging
file (zeros) is a head alone, its length's top bit (``ZEROS``) set. Each byte is
copied once, so the entries never overlap and their order does not matter.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

UNDO = struct.Struct(">QQ")
"""An undo log entry's head: the offset and the length of the bytes that follow."""
ZEROS = 1 << 63
"""Set in an undo entry's length: the bytes were a hole (zeros), none follow."""
ZERO_BLOCK = 1024 * 1024


def copy(source: int, at: int, target: int, to: int, length: int) -> None:
    """``length`` bytes of ``source`` from ``at`` into ``target`` at ``to``, in the
    kernel; zeros for what lies past the end of ``source``."""
    while length:
        done = os.copy_file_range(source, target, length, at, to)
        if done == 0:
            zeros(target, to, length)
            return
        at, to, length = at + done, to + done, length - done


def zeros(fd: int, at: int, length: int) -> None:
    """Write ``length`` zero bytes into ``fd`` at ``at``, ``ZERO_BLOCK`` at a time."""
    for lo in range(at, at + length, ZERO_BLOCK):
        os.pwrite(fd, bytes(min(ZERO_BLOCK, at + length - lo)), lo)


def undo(path: Path, fd: int) -> None:
    """Put the bytes an undo log holds back into the staging file ``fd``; a last
    entry cut short by a kill is left out (the change it preceded never came)."""
    with open(path, "rb") as log:
        size = os.fstat(log.fileno()).st_size
        at = 0
        while at + UNDO.size <= size:
            offset, length = UNDO.unpack(os.pread(log.fileno(), UNDO.size, at))
            if length & ZEROS:
                zeros(fd, offset, length & ~ZEROS)
                at += UNDO.size
                continue
            if at + UNDO.size + length > size:
                break
            copy(log.fileno(), at + UNDO.size, fd, offset, length)
            at += UNDO.size + length


def extents(fd: int, lo: int, hi: int) -> list[tuple[int, int, bool]]:
    """``[lo, hi)`` of ``fd`` as runs of data (True) and holes (False), from
    ``SEEK_DATA``/``SEEK_HOLE``; past the end of the file is a hole."""
    out: list[tuple[int, int, bool]] = []
    at = lo
    while at < hi:
        try:
            data = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:  # ENXIO: no data from here on
            data = hi
        if data > at:
            out.append((at, min(data, hi), False))
            at = min(data, hi)
            continue
        end = min(os.lseek(fd, at, os.SEEK_HOLE), hi)
        out.append((at, end, True))
        at = end
    return out
