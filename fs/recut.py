"""Which parts of a file a seal cuts again, and the stream of chunks it cuts.

A file being written (``fs.staging``) is sealed by cutting again only what changed
since its last version (``Recut``), chunk by chunk as ``backend.chunking.cut`` gives
them, until the cut falls back in step with the old cut points (``Cutter``), and
again from the next changed range on (``Segment``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_RANGES = 64
"""Changed ranges kept apart; past that the two closest merge (``add_range``)."""


def add_range(ranges: list[tuple[int, int]], lo: int, hi: int) -> None:
    """Add ``[lo, hi)`` to sorted, disjoint, non-touching ``ranges`` (in place)."""
    first = bisect.bisect_left([end for _, end in ranges], lo)
    last = bisect.bisect_right([start for start, _ in ranges], hi)
    if first < last:
        lo, hi = min(lo, ranges[first][0]), max(hi, ranges[last - 1][1])
    ranges[first:last] = [(lo, hi)]
    if len(ranges) > MAX_RANGES:
        gap = min(range(len(ranges) - 1), key=lambda i: ranges[i + 1][0] - ranges[i][1])
        ranges[gap : gap + 2] = [(ranges[gap][0], ranges[gap + 1][1])]


@dataclass
class Segment:
    """One stretch cut again: from old block ``first`` on, the new ``cut`` blocks,
    then old blocks again from ``tail`` (None: the cut went to the end)."""

    first: int
    cut: list[list[Any]]
    tail: int | None


class Recut:
    """Which parts of a file a seal cuts again, from the block list of the version the
    staging file held before (``old``) and the byte ranges changed since (``dirty``,
    sorted and disjoint; None: all of it).

    FastCDC starts afresh at every cut point, and a cut point depends on the bytes
    before it and on the one byte after it: so the chunks before the one holding the
    byte before the first changed one are kept as they are, and cutting resumes at
    that chunk's start (the last chunk ends at the end of the file, not at a cut
    point, so an append cuts it again). Once a new cut point falls on an old one
    outside every changed range, with every changed range before it behind it, the
    content up to the next changed range, and so every cut point there, is the old
    one's: those blocks are kept, and cutting resumes at the start of the chunk
    holding the byte before the next range. A 1-byte edit anywhere costs a chunk or
    two of cutting, an append the last chunk and the new bytes, and a few scattered
    writes a chunk or two each.
    """

    def __init__(
        self, old: list[list[Any]], dirty: list[tuple[int, int]] | None, size: int
    ) -> None:
        self.old = old
        self.starts = list(itertools.accumulate((length for _, length in old), initial=0))
        self.ranges = dirty or [(0, max(size, self.starts[-1]))]
        self._los = [lo for lo, _ in self.ranges]
        # The old cut points (not the old end) inside both files: the block after each.
        self._points = {end: index + 1 for index, end in enumerate(self.starts[1:-1])
                        if end < size}
        self.first = self.index_of(self.ranges[0][0] - 1)

    def index_of(self, offset: int) -> int:
        """The old block holding ``offset`` (the first one for offsets before it, the
        last one for offsets past its end)."""
        return max(0, min(bisect.bisect_right(self.starts, offset) - 1, len(self.old) - 1))

    def start_of(self, index: int) -> int:
        return self.starts[index] if self.old else 0

    def tail(self, end: int) -> int | None:
        """The index of the first old block kept after a new chunk that ends at
        ``end`` (a file offset), or None if cutting goes on."""
        index = self._points.get(end)
        if index is None:
            return None
        last = bisect.bisect_left(self._los, end) - 1  # the last range starting before
        if last >= 0 and self.ranges[last][1] > end:
            return None  # inside a changed range
        return index

    def resume(self, tail: int) -> int | None:
        """After the cut fell back in step at old block ``tail``: the old block where
        the next changed range begins, or None if none is left."""
        after = bisect.bisect_left(self._los, self.starts[tail])
        if after == len(self._los):
            return None
        return max(tail, self.index_of(self._los[after] - 1))

    def blocks(self, segments: list[Segment]) -> list[list[Any]]:
        """The new block list: old blocks, each segment's cut, and old blocks between."""
        out = self.old[: segments[0].first]
        for segment, following in itertools.zip_longest(segments, segments[1:]):
            out = out + segment.cut
            if segment.tail is not None:
                end = following.first if following is not None else len(self.old)
                out = out + self.old[segment.tail : end]
        return out


class Cutter:
    """The chunks of one segment of a ``Recut``, ``(offset, data)`` as
    ``chunking.cut`` gives them, until the cut falls back on the old cut points
    (``tail``) or the file ends (``done``)."""

    def __init__(self, stream: Iterator[tuple[int, memoryview]], recut: Recut) -> None:
        self.stream = stream
        self.recut = recut
        self.tail: int | None = None
        self.done = False

    def __iter__(self) -> Iterator[tuple[int, memoryview]]:
        if self.done:
            return
        for offset, view in self.stream:
            self.tail = self.recut.tail(offset + len(view))
            if self.tail is not None:
                self.done = True
            yield offset, view
            if self.done:
                return
        self.done = True
