"""Which bytes of a staging file are its own, and which are still the base version's.

A file opened for writing gets a *sparse* staging file (``fs.staging``) of its size,
with nothing copied into it: the bytes a program writes land there, and every other
byte is still the one of the version the file was opened on (its *base*, a block
list). ``Overlay`` keeps the account, in memory:

| part | meaning |
|---|---|
| ``ranges`` | sorted, disjoint ``[lo, hi)`` below ``limit`` that the staging |
| | file holds for real: written, or filled from the base (``filled``) |
| ``limit`` | the base shows only below it: a truncate lowers it, so bytes past |
| | a shrink and a later extension read as zeros (the file's holes) |

A byte at ``offset`` comes from the staging file when ``offset >= limit`` or a range
holds it, else from the base at the same offset (a write never shifts bytes, so the
base's offsets stay true). ``gaps(lo, hi)`` are the parts still the base's: a read
merges them in, and so does a seal as it cuts (fetching only the chunks it cuts
again). After a seal the new version is the base of every byte (``rebased``).

Memory: a range per run of written bytes. A program that writes many scattered small
pieces is bounded by ``crowded``: past ``MAX_RANGES`` the writer fills the base
chunks around a new write, so ranges merge at chunk bounds (at most one per chunk).

Nothing here is durable by itself: the close of a large file writes the overlay's
ranges into its park record (``fs.parking``), and a mount that starts rebuilds the
overlay from it.
"""

from __future__ import annotations

import bisect

MAX_RANGES = 4096
"""Ranges an overlay keeps before new writes are widened to whole chunks."""


class Overlay:
    """The staging file's own byte ranges over a base version of ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._los: list[int] = []
        self._his: list[int] = []

    def snapshot(self) -> Overlay:
        """A copy that later writes do not change."""
        copy = Overlay(self.limit)
        copy._los, copy._his = list(self._los), list(self._his)
        return copy

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    @property
    def crowded(self) -> bool:
        return len(self._los) > MAX_RANGES

    def filled(self, lo: int, hi: int) -> None:
        """``[lo, hi)`` of the staging file now holds its true bytes (written, or
        copied from the base)."""
        if hi <= lo or lo >= self.limit:
            return  # at or past the limit the staging file's bytes are true already
        # The ranges that touch or overlap [lo, hi) merge with it.
        first = bisect.bisect_left(self._his, lo)
        last = bisect.bisect_right(self._los, hi)
        if first < last:
            lo = min(lo, self._los[first])
            hi = max(hi, self._his[last - 1])
        self._los[first:last] = [lo]
        self._his[first:last] = [hi]

    def truncated(self, size: int) -> None:
        """The file was cut to (or extended to) ``size`` bytes: the base no longer
        shows at or past the smallest size it had."""
        self.limit = min(self.limit, size)
        self._clip(size)

    def gaps(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` that are still the base's."""
        hi = min(hi, self.limit)
        out: list[tuple[int, int]] = []
        if hi <= lo:
            return out
        index = max(0, bisect.bisect_right(self._los, lo) - 1)
        at = lo
        while at < hi and index < len(self._los):
            rlo, rhi = self._los[index], self._his[index]
            if rlo > at:
                out.append((at, min(rlo, hi)))
            at = max(at, rhi)
            index += 1
        if at < hi:
            out.append((at, hi))
        return out

    def rebased(self, size: int) -> None:
        """A seal made the staging file's content the new base version, of ``size``
        bytes: every byte of it is the base's now, wherever the staging file holds
        it or not (a gap the seal cut again, it cut from the old base's bytes, which
        the new one holds at the same offsets). The bytes from the old limit on stay
        the staging file's own: a write may have landed there while the seal ran,
        and it never made a range."""
        old, self.limit = self.limit, size
        self._clip(size)
        self.filled(old, size)

    def _clip(self, size: int) -> None:
        cut = bisect.bisect_left(self._los, size)
        del self._los[cut:], self._his[cut:]
        if self._his and self._his[-1] > size:
            self._his[-1] = size
