"""A file being written: its staging file, what it started from, what changed since.

``Staged`` ties together what ``fs.staging`` keeps for each file open for writing: the
staging file (``fs.stagefile``), the version it is based on, which of its bytes are
its own (``fs.overlay``) and which byte ranges the next seal must cut again
(``fs.recut``), and, once closed, where it is parked (``fs.parking``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cache.records import Entry
from fs.content import BlockMap
from fs.overlay import Overlay
from fs.recut import add_range
from fs.stagefile import StagingFile


@dataclass
class Staged:
    """A file being written: its staging file, who holds it and what it started from.

    ``base`` is the version whose block list describes the staging file outside
    ``dirty``: the byte ranges written, cut off or added since (sorted, disjoint; at
    most ``recut.MAX_RANGES``; None: nothing), which is all the next seal cuts again
    (``Recut``). ``overlay`` says which bytes the
    staging file holds and which are still the base's (``blocks``).
    """

    file: StagingFile
    base: Entry
    opens: int = 0
    modified: bool = False
    mtime: int = field(default_factory=time.time_ns)
    dirty: list[tuple[int, int]] | None = None
    overlay: Overlay = field(init=False)
    blocks: BlockMap = field(init=False)
    token: str | None = None
    """Its name in the staging directory once parked (``fs.parking``)."""
    seq: int = 0
    """The seq of its last park record."""
    record: Path | None = None
    """Its park record no seal has covered yet; None: nothing parked."""
    saved: Overlay | None = None
    """Which of its bytes a change need not copy into the undo log first (the base's,
    and those copied already); None: nothing parked."""
    undo: int | None = None
    """The record's undo log, open once something was copied into it."""
    undo_end: int = 0
    unparked: bool = True
    """Changed since its last park record."""
    parked_since: float | None = None
    """When the first park no seal has covered was made (``trio.current_time``)."""
    due: float | None = None
    """When its parked content is to be sealed."""

    def __post_init__(self) -> None:
        self.overlay = Overlay(self.base["size"])
        self.blocks = BlockMap(self.base.get("blocks", []))

    def wrote(self, lo: int, hi: int) -> None:
        """Bytes ``[lo, hi)`` were written to the staging file."""
        self.overlay.filled(lo, hi)
        self.changed(lo, hi)

    def resized(self, before: int, after: int) -> None:
        """The staging file went from ``before`` to ``after`` bytes."""
        self.overlay.truncated(after)
        self.changed(min(before, after), max(before, after))

    def rebase(self, base: Entry) -> None:
        """A seal made ``base`` (of the staging file's content) the version it is on."""
        self.base = base
        self.blocks = BlockMap(base.get("blocks", []))
        self.overlay.rebased(base["size"])

    def changed(self, lo: int, hi: int) -> None:
        """Bytes ``[lo, hi)`` were written (or the size moved between ``lo`` and ``hi``)."""
        if self.dirty is None:
            self.dirty = []
        add_range(self.dirty, lo, hi)
        self.modified, self.unparked, self.mtime = True, True, time.time_ns()

    def take(self) -> list[tuple[int, int]] | None:
        """What a seal starting now covers; changes made while it runs count anew."""
        dirty, self.dirty, self.modified = self.dirty, None, False
        return dirty

    def give_back(self, dirty: list[tuple[int, int]] | None) -> None:
        """A seal that failed: what it took is still to be sealed."""
        for lo, hi in dirty or [(0, 0)]:
            self.changed(lo, hi)
