"""Content-defined chunking: cutting files into chunks that survive insertions.

FastCDC (2020, normalized chunking level 1) with a minimum of 256 KiB, a target
mean of about 1 MiB and a hard maximum of 4 MiB. Because cut points depend on the
content around them, inserting a byte near the start of a file changes only the
chunk(s) around the insertion; every later chunk keeps its id and is not sent again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pyfastcdc.cy import FastCDC

from backend import protocol as p


def _chunker() -> FastCDC:
    """A fresh chunker: one instance must not be shared between threads."""
    return FastCDC(p.CDC_AVG, min_size=p.CDC_MIN, max_size=p.CDC_MAX)


@dataclass(frozen=True)
class Piece:
    """One chunk of a file: where it lies and what it is called."""

    offset: int
    length: int
    id: str


SMALL = 2 * p.CDC_MAX
"""Streams up to this size are cut in memory: the streaming cutter's 8 MiB buffer
would cost more than the data (a few ms per small file)."""


def cut(stream: BinaryIO, size_hint: int | None = None) -> Iterator[tuple[int, memoryview]]:
    """``(offset, data)`` for each chunk; ``data`` is valid only until the next one."""
    if size_hint is not None and size_hint <= SMALL:
        data = stream.read(SMALL + 1)
        if len(data) <= SMALL:
            for chunk in _chunker().cut_buf(data):
                yield chunk.offset, chunk.data
            return
        stream.seek(-len(data), os.SEEK_CUR)
    for chunk in _chunker().cut_stream(stream):
        yield chunk.offset, chunk.data


def cut_bytes(data: bytes) -> list[Piece]:
    return [Piece(c.offset, c.length, p.chunk_id(c.data)) for c in _chunker().cut_buf(data)]


def plan_file(path: str | os.PathLike[str]) -> list[Piece]:
    """Cut and hash a file in one streaming pass, holding at most a few chunks in memory."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        return [Piece(offset, len(data), p.chunk_id(data)) for offset, data in cut(f, size)]
