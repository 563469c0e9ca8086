"""Chunk deltas: a new chunk told as copies of a base chunk's bytes plus literal bytes.

A small edit of a file changes one chunk or two; the server already holds the chunk
the edited one came from (the *base*, from the file's previous version). Instead of
the whole new chunk, the device sends a delta against the base; the server rebuilds
the chunk, checks it against its id and stores it whole (``PUT
/v1/chunks/{id}/delta/{base}``). Pure functions, no I/O: the format is the contract.

How a delta is made (``encode``): the bytes both chunks begin and end with are one
copy each (found by comparing blocks, in C: an edit in place or an insertion costs
microseconds however large the chunk); what lies between is cut into small
content-defined pieces on both sides (FastCDC, ``PIECE_MIN``/``PIECE_AVG``/
``PIECE_MAX``), so an insertion or a deletion shifts no piece boundary beyond the
pieces it touches; every piece of the new chunk's middle found in the base's (by its
BLAKE2b-128 digest, then compared byte for byte) is a copy, every other a literal;
neighbouring copies of neighbouring base bytes merge. Worth sending only when much
smaller than the chunk (``worth``).

Format, version 1 (every integer unsigned, big-endian):

    ====== ======= =================================================================
    bytes  field   meaning
    ====== ======= =================================================================
    2      magic   ``LD``
    1      version 1
    4      size    length of the chunk it rebuilds (1 .. ``MAX_CHUNK``)
    then   ops     until the end, each one of:
    1+4+4  copy    tag 0, base offset, length: ``base[offset : offset + length]``
    1+4+n  literal tag 1, length n, then the n bytes
    ====== ======= =================================================================

Every length is at least 1, a copy lies inside the base, and the ops add up to exactly
``size``; anything else is a ``BadDelta``, raised before any byte is rebuilt past it.
"""

from __future__ import annotations

import hashlib
import struct

from pyfastcdc.cy import FastCDC

from backend import protocol as p
from backend.errors import BadDelta

MAGIC = b"LD"
VERSION = 1
PIECE_MIN = 1024
PIECE_AVG = 4096
PIECE_MAX = 16384
COPY, LITERAL = 0, 1
SAME_BLOCK = 4096
"""Bytes compared at a time in search of the bytes both chunks begin and end with."""
_HEAD = struct.Struct(">2sBI")
_COPY = struct.Struct(">BII")
_LITERAL = struct.Struct(">BI")


def _pieces(data: bytes | memoryview) -> list[tuple[int, int]]:
    chunker = FastCDC(PIECE_AVG, min_size=PIECE_MIN, max_size=PIECE_MAX)
    return [(c.offset, c.length) for c in chunker.cut_buf(data)]


def _digest(view: memoryview) -> bytes:
    return hashlib.blake2b(view, digest_size=16).digest()


def _same_run(a: bytes, b: bytes, skip: int = 0, backwards: bool = False) -> int:
    """How many bytes ``a`` and ``b`` begin (or end) with alike, not counting the first
    ``skip`` of each: small blocks compared whole (a copy and a ``memcmp`` each, with no
    page faulted in), then halved around the first that differs."""
    most = min(len(a), len(b)) - skip

    def alike(lo: int, hi: int) -> bool:
        if backwards:
            return a[len(a) - hi : len(a) - lo] == b[len(b) - hi : len(b) - lo]
        return a[skip + lo : skip + hi] == b[skip + lo : skip + hi]

    at, step = 0, SAME_BLOCK
    while at < most:
        end = min(at + step, most)
        if alike(at, end):
            at = end
            continue
        if end - at == 1:
            break
        step = max(1, (end - at) // 2)
    return at


def encode(base: bytes, target: bytes) -> bytes:
    """A delta that rebuilds ``target`` from ``base``."""
    if not 0 < len(target) <= p.MAX_CHUNK:
        raise ValueError(f"a chunk of {len(target)} bytes")
    view, base_view = memoryview(target), memoryview(base)
    head = _same_run(base, target)
    tail = min(_same_run(base, target, backwards=True), min(len(base), len(target)) - head)
    ops: list[tuple[int, int, int]] = []  # (COPY, base offset, length) or (LITERAL, at, length)

    def add(op: tuple[int, int, int]) -> None:
        if ops and ops[-1][0] == op[0] and ops[-1][1] + ops[-1][2] == op[1]:
            ops[-1] = (op[0], ops[-1][1], ops[-1][2] + op[2])
        else:
            ops.append(op)

    if head:
        add((COPY, 0, head))
    known: dict[bytes, int] = {}
    for offset, length in _pieces(base_view[head : len(base) - tail]):
        at = head + offset
        known.setdefault(_digest(base_view[at : at + length]), at)
    for offset, length in _pieces(view[head : len(target) - tail]):
        at = head + offset
        piece = view[at : at + length]
        found = known.get(_digest(piece))
        if found is not None and base_view[found : found + length] == piece:
            add((COPY, found, length))
        else:
            add((LITERAL, at, length))
    if tail:
        add((COPY, len(base) - tail, tail))
    out = [_HEAD.pack(MAGIC, VERSION, len(target))]
    for kind, at, length in ops:
        if kind == COPY:
            out.append(_COPY.pack(COPY, at, length))
        else:
            out.append(_LITERAL.pack(LITERAL, length))
            out.append(target[at : at + length])
    return b"".join(out)


def worth(delta: bytes, target_size: int) -> bool:
    """Whether sending the delta instead of the chunk pays: a quarter of it or less."""
    return len(delta) * 4 <= target_size


def apply(base: bytes, delta: bytes) -> bytes:
    """The chunk ``delta`` rebuilds from ``base``; ``BadDelta`` if it is malformed."""
    if len(delta) < _HEAD.size:
        raise BadDelta("a delta shorter than its header")
    magic, version, size = _HEAD.unpack_from(delta)
    if magic != MAGIC or version != VERSION:
        raise BadDelta(f"not a version {VERSION} delta")
    if not 0 < size <= p.MAX_CHUNK:
        raise BadDelta(f"a delta for a chunk of {size} bytes")
    out = bytearray()
    at = _HEAD.size
    while at < len(delta):
        tag = delta[at]
        if tag == COPY:
            if at + _COPY.size > len(delta):
                raise BadDelta("a copy cut short")
            _, offset, length = _COPY.unpack_from(delta, at)
            if length == 0 or offset + length > len(base):
                raise BadDelta(f"a copy of {length} bytes at {offset} outside the base")
            piece = base[offset : offset + length]
            at += _COPY.size
        elif tag == LITERAL:
            if at + _LITERAL.size > len(delta):
                raise BadDelta("a literal cut short")
            _, length = _LITERAL.unpack_from(delta, at)
            at += _LITERAL.size
            if length == 0 or at + length > len(delta):
                raise BadDelta(f"a literal of {length} bytes past the delta's end")
            piece = delta[at : at + length]
            at += length
        else:
            raise BadDelta(f"unknown delta op {tag}")
        if len(out) + len(piece) > size:
            raise BadDelta(f"a delta that rebuilds more than its {size} bytes")
        out += piece
    if len(out) != size:
        raise BadDelta(f"a delta that rebuilds {len(out)} bytes, not {size}")
    return bytes(out)
