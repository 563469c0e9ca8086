"""The account of a sparse staging file (``fs.overlay``) against a byte model.

A staging file holds only what was written (and what a seal filled in from the base);
every other byte is read from the base version. Random writes, truncates, extensions,
fills and seals (``rebased``) run over three byte arrays: the content a program must
read back, the sparse staging file, and the base. After every step, the staging file
with the base merged into ``gaps`` must be exactly the content.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fs.overlay import MAX_RANGES, Overlay

SIZE = 96

Step = tuple[str, int, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(["write", "write", "truncate", "fill", "seal"]),
        st.integers(0, SIZE),
        st.integers(0, SIZE // 3),
    ),
    max_size=40,
)


class Model:
    def __init__(self, base: bytes) -> None:
        self.base = bytearray(base)
        self.content = bytearray(base)
        self.staging = bytearray(len(base))  # sparse: holes read as zeros
        self.overlay = Overlay(len(base))
        self.counter = 0

    def write(self, offset: int, length: int) -> None:
        self.counter = (self.counter + 1) % 250
        data = bytes([self.counter + 1]) * length
        for array in (self.content, self.staging):
            if offset > len(array):
                array.extend(bytes(offset - len(array)))
            array[offset : offset + length] = data
        self.overlay.filled(offset, offset + length)

    def truncate(self, size: int) -> None:
        for array in (self.content, self.staging):
            del array[size:]
            array.extend(bytes(size - len(array)))
        self.overlay.truncated(size)

    def fill(self, lo: int, hi: int) -> None:
        for glo, ghi in self.overlay.gaps(lo, hi):
            self.staging[glo:ghi] = self.base[glo:ghi]
            self.overlay.filled(glo, ghi)

    def seal(self) -> None:
        self.base = bytearray(self.merged())
        self.overlay.rebased(len(self.base))

    def merged(self) -> bytes:
        out = bytearray(self.staging)
        for lo, hi in self.overlay.gaps(0, len(out)):
            assert hi <= len(self.base), f"gap {lo}-{hi} past the base's {len(self.base)} bytes"
            out[lo:hi] = self.base[lo:hi]
        return bytes(out)


@settings(max_examples=400, deadline=None)
@given(base=st.binary(max_size=SIZE), plan=steps)
def test_staging_bytes_with_the_base_in_the_gaps_are_the_content(
    base: bytes, plan: list[Step]
) -> None:
    model = Model(base)
    for index, (kind, a, b) in enumerate(plan):
        if kind == "write":
            model.write(a, b)
        elif kind == "truncate":
            model.truncate(a)
        elif kind == "fill":
            model.fill(a, a + b)
        else:
            model.seal()
        assert model.merged() == bytes(model.content), f"after step {index}: {plan[: index + 1]}"
        ranges = model.overlay.ranges
        assert all(lo < hi for lo, hi in ranges), ranges
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), ranges


@given(plan=steps)
def test_gaps_lie_inside_the_range_asked_and_below_the_limit(plan: list[Step]) -> None:
    model = Model(bytes(SIZE))
    for kind, a, b in plan:
        if kind == "truncate":
            model.truncate(a)
        elif kind == "write":
            model.write(a, b)
        for lo, hi in model.overlay.gaps(a, a + b):
            assert a <= lo < hi <= min(a + b, model.overlay.limit)


def test_a_file_written_everywhere_keeps_one_range() -> None:
    overlay = Overlay(1 << 20)
    for offset in range(0, 1 << 20, 4096):
        overlay.filled(offset, offset + 4096)
    assert overlay.ranges == [(0, 1 << 20)]
    assert overlay.gaps(0, 1 << 20) == []


def test_scattered_writes_report_crowding_past_the_bound() -> None:
    overlay = Overlay(1 << 30)
    for index in range(MAX_RANGES + 1):
        overlay.filled(index * 100, index * 100 + 1)
    assert overlay.crowded
    overlay.filled(0, (MAX_RANGES + 1) * 100)
    assert not overlay.crowded
