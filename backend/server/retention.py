"""Retention: which past states of a namespace are kept, and which journal rows that takes.

A policy is a list of windows by age, each keeping the states of its own span:

    1d:all,7d:1h,30d:1d,365d:1w

reads "every state younger than a day; then, until a week old, the last state of each
hour; until 30 days old, the last of each day; until a year old, the last of each week;
nothing older". Format: comma-separated ``AGE:STEP`` pairs, ``AGE`` strictly
increasing, ``STEP`` either ``all`` or the width of a bucket. Durations are an integer
and a unit: ``s``, ``m``, ``h``, ``d`` (86,400 s) or ``w`` (7 d); ``0`` alone only
where a duration may be zero (a grace period).

Buckets are aligned to Monday 1970-01-05 00:00 UTC, so that hours nest in days and days
in weeks (Monday to Sunday, UTC): the last state of a week is the last of its last day,
and thinning the same journal again, later, keeps what the earlier pass kept.

A *state* is a journal sequence: the tree as it was right after that commit. A state
whose age falls in window *i* (from the previous window's age to this one's) is kept if
the window keeps ``all``, or if it is the last sequence of its bucket among the states
of that window. Named snapshots and the current tree are kept whatever their age.

Thinning (``doomed``) keeps exactly the ``versions`` rows the kept states read: the row
of entry E at ``s1``, followed by E's next row at ``s2`` (or none), is needed if it is
E's last row or some kept ``k`` has ``s1 <= k < s2``; a row that ends E (``deleted``)
only while an earlier row of E stays. The tree at every kept sequence is then the same
as before thinning.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from backend.errors import BadRequest

DEFAULT_POLICY = "1d:all,7d:1h,30d:1d,365d:1w"
"""Every state for a day, hourly for a week, daily for a month, weekly for a year."""

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
BUCKET_ORIGIN = 4 * 86_400
"""1970-01-05 00:00 UTC, a Monday: every bucket starts a whole number of widths after it."""

_DURATION = re.compile(r"(\d{1,9})([smhdw])")


def parse_duration(text: str, what: str, zero: bool = False) -> int:
    """Seconds in ``text`` (``30s``, ``15m``, ``1h``, ``2d``, ``1w``; ``0`` if ``zero``)."""
    value = text.strip()
    if zero and value == "0":
        return 0
    found = _DURATION.fullmatch(value)
    if found is None or int(found[1]) == 0:
        lowest = "0, " if zero else ""
        raise BadRequest(f"{what} {text!r}: expected a duration such as {lowest}30s, 15m, 1h, 2d")
    return int(found[1]) * UNITS[found[2]]


@dataclass(frozen=True)
class Window:
    age: int
    """States younger than this (and at least the previous window's age) are in it."""
    step: int | None
    """The bucket width in seconds; None keeps every state."""


@dataclass(frozen=True)
class Policy:
    text: str
    windows: tuple[Window, ...]

    def window(self, age: int) -> int | None:
        """The index of the window a state of this age falls in; None past the last."""
        for index, window in enumerate(self.windows):
            if age < window.age:
                return index
        return None

    def kept(self, instants: Iterable[tuple[int, int]], now: int) -> set[int]:
        """The kept sequences among ``(seq, committed)`` instants, ``now`` in unix seconds.

        A commit stamped in the future (a clock stepped back) counts as age 0."""
        kept: set[int] = set()
        last: dict[tuple[int, int], int] = {}
        for seq, committed in instants:
            index = self.window(max(now - committed, 0))
            if index is None:
                continue
            step = self.windows[index].step
            if step is None:
                kept.add(seq)
                continue
            bucket = (index, (committed - BUCKET_ORIGIN) // step)
            last[bucket] = max(last.get(bucket, seq), seq)
        return kept | set(last.values())


def parse_policy(text: str) -> Policy:
    """A policy from its string form (see the module's docstring); BadRequest if wrong."""
    what = f"--retention {text!r}"
    windows: list[Window] = []
    for part in text.split(","):
        age_text, colon, step_text = part.strip().partition(":")
        if not colon or not age_text or not step_text:
            raise BadRequest(f"{what}: each window is AGE:STEP, e.g. 7d:1h (got {part.strip()!r})")
        age = parse_duration(age_text, f"{what}: age")
        step = None if step_text.strip() == "all" else parse_duration(step_text, f"{what}: step")
        if windows and age <= windows[-1].age:
            raise BadRequest(f"{what}: window ages must increase ({age_text} follows a longer one)")
        windows.append(Window(age, step))
    return Policy(text, tuple(windows))


class JournalRow(NamedTuple):
    entry: str
    seq: int
    deleted: bool


def doomed(rows: Sequence[JournalRow], kept: Iterable[int]) -> list[int]:
    """The sequences of the rows no kept state needs; ``rows`` ordered by (entry, seq)."""
    marks = sorted(kept)
    out: list[int] = []
    earlier_kept = False
    for index, row in enumerate(rows):
        if index == 0 or rows[index - 1].entry != row.entry:
            earlier_kept = False
        following = rows[index + 1] if index + 1 < len(rows) else None
        if following is None or following.entry != row.entry:
            covers = True  # the entry's last row: it stands for every state after it
        else:
            at = bisect.bisect_left(marks, row.seq)
            covers = at < len(marks) and marks[at] < following.seq
        if covers and (not row.deleted or earlier_kept):
            earlier_kept = True
        else:
            out.append(row.seq)
    return out
