"""Property tests of the wire protocol: the chunker, the CBOR codec, names, errors.

Large buffers come from a seeded ``random.Random`` (hypothesis draws the seed and
the shape), so a failing example is reproducible and shrinks to a small seed.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backend import errors
from backend import protocol as p
from backend.chunking import WINDOW, Piece, Reader, cut, cut_bytes, file_reader, plan_file
from backend.errors import BadRequest, LoftError

MiB = 1024 * 1024

# --- the chunker -------------------------------------------------------------------


@st.composite
def buffers(draw: st.DrawFn) -> bytes:
    """Up to 12 MiB: random, constant (cut only at the 4 MiB maximum), or a mix."""
    seed = draw(st.integers(0, 2**32))
    size = draw(st.one_of(st.integers(0, 300_000), st.integers(0, 12 * MiB)))
    kind = draw(st.sampled_from(["random", "zeros", "pattern", "mixed"]))
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "zeros":
        return bytes(size)
    if kind == "pattern":
        unit = rng.randbytes(rng.randint(1, 64))
        return (unit * (size // len(unit) + 1))[:size]
    out = bytearray()
    while len(out) < size:
        run = rng.randint(1, 3 * MiB)
        out += rng.randbytes(run) if rng.random() < 0.5 else bytes(run)
    return bytes(out[:size])


chunker_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.data_too_large]
)


@chunker_settings
@given(buffers())
@example(bytes(9 * MiB))  # constant data: every cut is forced at the 4 MiB maximum
def test_pieces_tile_the_input_within_size_bounds_and_name_their_content(data: bytes) -> None:
    pieces = cut_bytes(data)
    assert sum(piece.length for piece in pieces) == len(data)
    offset = 0
    for index, piece in enumerate(pieces):
        assert piece.offset == offset
        assert piece.length <= p.MAX_CHUNK
        if index < len(pieces) - 1:
            assert piece.length >= p.CDC_MIN
        assert piece.length > 0
        assert piece.id == p.chunk_id(data[piece.offset : piece.offset + piece.length])
        offset += piece.length
    assert offset == len(data)


@chunker_settings
@given(buffers())
def test_cutting_is_deterministic(data: bytes) -> None:
    assert cut_bytes(data) == cut_bytes(bytes(data))


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    position=st.integers(0, 200_000),
    inserted=st.binary(min_size=1, max_size=4096),
)
def test_insertion_near_the_start_keeps_every_later_chunk(
    seed: int, position: int, inserted: bytes
) -> None:
    data = random.Random(seed).randbytes(16 * MiB)
    before = cut_bytes(data)
    after = cut_bytes(data[:position] + inserted + data[position:])
    # Once the cut points resynchronise, the rest of the file is the same chunks,
    # shifted by the insertion: only the first one or two chunks are new.
    shift = len(inserted)
    tail = [Piece(x.offset + shift, x.length, x.id) for x in before[2:]]
    assert after[-len(tail) :] == tail
    assert len({x.id for x in after} - {x.id for x in before}) <= 2


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(buffers())
def test_plan_file_equals_cut_bytes_of_the_content(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("plan") / "file.bin"
    path.write_bytes(data)
    assert plan_file(path) == cut_bytes(data)


def told_by(fd: int, into: list[tuple[int, int]]) -> Reader:
    """A reader of ``fd`` that notes each range asked of it."""
    read = file_reader(fd)

    def noted(lo: int, hi: int) -> bytes | bytearray:
        into.append((lo, hi))
        return read(lo, hi)

    return noted


@pytest.mark.parametrize("window", [100 * 1024 + 1, MiB, 2 * MiB + 7, p.CDC_MAX + 1, WINDOW])
def test_a_cut_from_any_chunk_boundary_in_any_window_gives_the_cuts_of_the_whole_file(
    tmp_path: Path, window: int
) -> None:
    """A chunk is taken only if it ends before the end of what was read; the one
    that reaches it is cut again from the next read, and a read in which no chunk
    ends is doubled: so any window gives the cuts of the whole file from any of its
    cut points, and it reads each byte of the range, none past it."""
    rng = random.Random(window)
    part = rng.randbytes(9 * MiB)  # repeated: some chunks recur; zeros: max-size cuts
    data = part + bytes(5 * MiB) + part + rng.randbytes(3 * MiB + 12345)
    assert len(data) > WINDOW + p.CDC_MAX  # at least two of the largest windows
    whole = cut_bytes(data)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    with path.open("rb") as f:
        for first in (0, 1, len(whole) // 2, len(whole) - 1):
            start = whole[first].offset
            told: list[tuple[int, int]] = []
            pieces = cut(told_by(f.fileno(), told), start, len(data), window)
            got = [Piece(offset, len(chunk), p.chunk_id(chunk)) for offset, chunk in pieces]
            assert got == whole[first:]
            assert told[0][0] == start
            assert told[-1][1] == len(data)
            assert all(b <= len(data) for _, b in told)


def test_a_cut_of_a_file_that_shrank_meanwhile_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * MiB)
    with path.open("rb") as f, pytest.raises(OSError, match="shrank"):
        list(cut(file_reader(f.fileno()), 0, 2 * MiB))


# --- the CBOR codec ----------------------------------------------------------------

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
cbor_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.text(max_size=12), inner, max_size=6),
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(cbor_values)
def test_decode_inverts_encode(value: Any) -> None:
    assert p.decode(p.encode(value)) == value


@st.composite
def damaged_encodings(draw: st.DrawFn) -> bytes:
    """A valid encoding, truncated or with some bytes overwritten."""
    body = bytearray(p.encode(draw(cbor_values)))
    if draw(st.booleans()):
        del body[draw(st.integers(0, len(body))) :]
    for _ in range(draw(st.integers(0, 4))):
        if body:
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    return bytes(body)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), damaged_encodings()))
def test_decode_of_garbage_returns_a_value_or_raises_bad_request(body: bytes) -> None:
    with contextlib.suppress(BadRequest):
        p.decode(body)


@settings(max_examples=50, deadline=None)
@given(cbor_values.filter(lambda v: not isinstance(v, dict)))
def test_decode_map_rejects_everything_but_a_map(value: Any) -> None:
    with pytest.raises(BadRequest):
        p.decode_map(p.encode(value))


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.one_of(st.integers(), st.binary()), leaves, min_size=1, max_size=4))
def test_decode_map_rejects_maps_with_non_string_keys(value: dict[Any, Any]) -> None:
    with pytest.raises(BadRequest):
        p.decode_map(p.encode(value))


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(max_size=12), cbor_values, max_size=4))
def test_decode_map_returns_maps_with_string_keys(value: dict[str, Any]) -> None:
    assert p.decode_map(p.encode(value)) == value


# --- names and paths ---------------------------------------------------------------

name_chars = st.characters(exclude_categories=["Cs"], exclude_characters="/\0")
valid_names = st.text(name_chars, min_size=1, max_size=80).filter(
    lambda s: s not in (".", "..", p.VERSIONS) and len(s.encode()) <= p.MAX_NAME_BYTES
)


def utf8_len(name: str) -> int:
    return len(name.encode())


@settings(max_examples=300, deadline=None)
@given(valid_names)
def test_validate_name_accepts_every_valid_name(name: str) -> None:
    assert p.validate_name(name) == name


@settings(max_examples=100, deadline=None)
@given(st.text(name_chars, min_size=1, max_size=300))
def test_validate_name_takes_at_most_255_utf8_bytes(name: str) -> None:
    long = (name * (p.MAX_NAME_BYTES + 1))[: p.MAX_NAME_BYTES + 1]
    while utf8_len(long) > p.MAX_NAME_BYTES + 4:
        long = long[:-1]
    assert utf8_len(long) > p.MAX_NAME_BYTES
    with pytest.raises(errors.NameTooLong):
        p.validate_name(long)
    fits = long
    while utf8_len(fits) > p.MAX_NAME_BYTES:
        fits = fits[:-1]
    if fits not in (".", ".."):
        assert p.validate_name(fits) == fits


invalid_names = st.one_of(
    st.just(""),
    st.just("."),
    st.just(".."),
    st.tuples(valid_names, valid_names, st.sampled_from("/\0")).map(lambda t: t[0] + t[2] + t[1]),
    st.tuples(st.text(name_chars, max_size=10), st.sampled_from("/\0")).map(lambda t: t[0] + t[1]),
    st.tuples(valid_names, st.characters(categories=["Cs"])).map(lambda t: t[0] + t[1]),
    st.integers(),
    st.binary(min_size=1),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(invalid_names)
def test_validate_name_rejects_every_invalid_name(name: object) -> None:
    with pytest.raises(BadRequest) as caught:
        p.validate_name(name)
    assert not isinstance(caught.value, errors.NameTooLong)


path_segments = st.lists(
    st.one_of(st.sampled_from(["", ".", "..", "a", "b", "é"]), valid_names), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(path_segments, st.booleans())
def test_split_path_resolves_dots_and_refuses_to_leave_the_root(
    segments: list[str], absolute: bool
) -> None:
    path = ("/" if absolute else "") + "/".join(segments)
    expected: list[str] = []
    escapes = False
    for segment in segments:
        if segment == "..":
            if not expected:
                escapes = True
                break
            expected.pop()
        elif segment not in ("", "."):
            expected.append(segment)
    if escapes:
        with pytest.raises(BadRequest):
            p.split_path(path)
    else:
        assert p.split_path(path) == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(st.sampled_from("/.a\0é"))))
def test_split_path_yields_only_plain_components(path: str) -> None:
    try:
        parts = p.split_path(path)
    except BadRequest:
        return
    for part in parts:
        assert part not in ("", ".", "..")
        assert "/" not in part
        assert "\0" not in part


@settings(max_examples=300, deadline=None)
@given(st.one_of(path_segments.map("/".join), st.text(st.sampled_from("/.ab"))))
def test_split_of_join_of_split_is_split(path: str) -> None:
    try:
        parts = p.split_path(path)
    except BadRequest:
        return
    assert p.split_path(p.join_path(parts)) == parts


# --- errors ------------------------------------------------------------------------


def all_subclasses(cls: type[LoftError]) -> list[type[LoftError]]:
    out: list[type[LoftError]] = []
    for sub in cls.__subclasses__():
        out += [sub, *all_subclasses(sub)]
    return out


ERROR_CLASSES = all_subclasses(LoftError)


def test_every_error_class_is_found_for_the_round_trip() -> None:
    assert {errors.BadRequest, errors.Exists, errors.StoreError} <= set(ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=10, deadline=None)
@given(message=st.text(min_size=1), detail=st.one_of(st.none(), leaves))
def test_from_wire_rebuilds_the_error_class_and_message(
    cls: type[LoftError], message: str, detail: Any
) -> None:
    sent = cls(message, detail)
    received = errors.from_wire(cls.status, p.decode(p.encode(sent.to_wire())))
    assert type(received) is cls
    assert received.message == message
    assert str(received) == message
    assert received.detail == detail
    assert received.permanent == sent.permanent


PERMANENT = {
    errors.BadRequest: True,
    errors.NameTooLong: True,
    errors.CrossShare: True,
    errors.BadDelta: True,
    errors.HashMismatch: True,
    errors.Unauthorized: True,
    errors.Forbidden: True,
    errors.NotFound: True,
    errors.Conflict: True,
    errors.Exists: True,
    errors.NotEmpty: True,
    errors.TooLarge: True,
    errors.LocalError: True,
    errors.MissingChunks: False,
    errors.QuotaExceeded: False,  # raising the quota makes the same request succeed
    errors.TooManyAttempts: False,  # the same login succeeds after Retry-After
    errors.TooSlow: False,  # a faster try may succeed
    errors.StoreError: False,
    errors.ServerUnavailable: False,
    errors.LoftError: False,
}


def test_every_error_class_says_whether_it_is_permanent() -> None:
    assert set(PERMANENT) == {LoftError, *ERROR_CLASSES}


@pytest.mark.parametrize(
    ("cls", "permanent"), PERMANENT.items(), ids=[c.__name__ for c in PERMANENT]
)
def test_permanent_is_true_exactly_for_refusals(cls: type[LoftError], permanent: bool) -> None:
    assert cls("x").permanent is permanent


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_an_unknown_5xx_answer_is_a_transient_bare_error(status: int) -> None:
    for body in (None, b"<html>", {"error": "internal", "message": "internal server error"}):
        err = errors.from_wire(status, body)
        assert type(err) is LoftError
        assert not err.permanent


@pytest.mark.parametrize("status", [400, 404, 405, 418])
def test_an_unknown_4xx_answer_is_a_permanent_bare_error(status: int) -> None:
    for body in (None, {"error": "no_such_code", "message": "refused"}):
        err = errors.from_wire(status, body)
        assert type(err) is LoftError
        assert err.permanent


def test_name_too_long_crosses_the_wire_as_itself() -> None:
    with pytest.raises(errors.NameTooLong) as caught:
        p.validate_name("x" * (p.MAX_NAME_BYTES + 1))
    sent = caught.value
    received = errors.from_wire(sent.status, p.decode(p.encode(sent.to_wire())))
    assert type(received) is errors.NameTooLong
    assert received.to_wire()["error"] == "name_too_long"


# --- first_of ----------------------------------------------------------------------


def test_first_of_finds_the_exception_itself() -> None:
    err = errors.NotFound("gone")
    assert errors.first_of(err, LoftError) is err
    assert errors.first_of(err, errors.Conflict) is None


def test_first_of_looks_into_nested_groups_in_order() -> None:
    wanted = errors.ServerUnavailable("away")
    later = errors.StoreError("disk")
    group = BaseExceptionGroup(
        "outer",
        [KeyboardInterrupt(), ExceptionGroup("inner", [ValueError("v"), wanted]), later],
    )
    assert errors.first_of(group, LoftError) is wanted
    assert errors.first_of(group, errors.StoreError) is later
    assert errors.first_of(group, OSError) is None


def test_first_of_never_returns_a_group() -> None:
    cancelled_only = BaseExceptionGroup("cancelled", [KeyboardInterrupt()])
    assert errors.first_of(cancelled_only, Exception) is None
    inner = ValueError("v")
    assert errors.first_of(ExceptionGroup("g", [inner]), Exception) is inner
