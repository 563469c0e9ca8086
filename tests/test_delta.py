"""Chunk deltas (``backend.delta``): a delta rebuilds exactly its chunk, a small edit
makes a small delta, and no malformed delta rebuilds anything."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import delta
from backend import protocol as p
from backend.errors import BadDelta

KiB = 1024


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "overwrite"]),
        st.floats(0, 1),
        st.binary(min_size=1, max_size=300),
    ),
    max_size=5,
)


def edited(base: bytes, changes: list[tuple[str, float, bytes]]) -> bytes:
    data = bytearray(base)
    for kind, where, piece in changes:
        at = int(where * len(data))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "delete":
            del data[at : at + len(piece)]
        else:
            data[at : at + len(piece)] = piece
    return bytes(data) or b"\0"


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 200 * KiB), seed=st.integers(0, 2**32), changes=edits)
def test_a_delta_rebuilds_exactly_the_edited_chunk(
    size: int, seed: int, changes: list[tuple[str, float, bytes]]
) -> None:
    base = noise(size, seed)
    target = edited(base, changes)
    assert delta.apply(base, delta.encode(base, target)) == target


@settings(max_examples=50, deadline=None)
@given(base=st.binary(max_size=5000), target=st.binary(min_size=1, max_size=5000))
def test_a_delta_between_unrelated_chunks_still_rebuilds(base: bytes, target: bytes) -> None:
    assert delta.apply(base, delta.encode(base, target)) == target


@pytest.mark.parametrize("edit", ["overwrite", "insert", "delete"])
def test_a_one_byte_edit_of_a_megabyte_chunk_is_a_small_delta(edit: str) -> None:
    base = noise(1024 * KiB, 1)
    target = edited(base, [(edit, 0.5, b"!")])
    made = delta.encode(base, target)
    assert len(made) <= 48 * KiB, f"{len(made)} bytes for a 1-byte {edit}"
    assert delta.worth(made, len(target))


def test_a_delta_no_smaller_than_the_chunk_is_not_worth_sending() -> None:
    base, target = noise(256 * KiB, 1), noise(256 * KiB, 2)
    assert not delta.worth(delta.encode(base, target), len(target))


@settings(max_examples=300, deadline=None)
@given(base=st.binary(max_size=2000), junk=st.binary(max_size=200))
def test_any_bytes_are_a_delta_or_bad_delta_never_another_error(base: bytes, junk: bytes) -> None:
    for candidate in (junk, delta.MAGIC + bytes([delta.VERSION]) + junk):
        try:
            out = delta.apply(base, candidate)
        except BadDelta:
            continue
        assert 0 < len(out) <= p.MAX_CHUNK


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 20 * KiB), seed=st.integers(0, 2**32), cut=st.integers(1, 2**16))
def test_a_truncated_delta_is_refused(size: int, seed: int, cut: int) -> None:
    base = noise(size, seed)
    good = delta.encode(base, edited(base, [("overwrite", 0.3, b"xyz")]))
    with pytest.raises(BadDelta):
        delta.apply(base, good[: max(0, len(good) - cut)])


def test_copies_outside_the_base_and_oversized_chunks_are_refused() -> None:
    head = delta.MAGIC + bytes([delta.VERSION])
    with pytest.raises(BadDelta, match="outside the base"):
        delta.apply(b"abc", head + (4).to_bytes(4, "big") + bytes([0]) + (1).to_bytes(4, "big")
                    + (3).to_bytes(4, "big"))
    with pytest.raises(BadDelta, match="bytes"):
        delta.apply(b"", head + (p.MAX_CHUNK + 1).to_bytes(4, "big"))
    with pytest.raises(BadDelta, match="version"):
        delta.apply(b"", b"LD\x02" + (1).to_bytes(4, "big") + b"\x01\x00\x00\x00\x01x")
