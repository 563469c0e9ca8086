"""Content-defined chunking: cutting files into chunks that survive insertions.

FastCDC (2020, normalized chunking level 1) with a minimum of 256 KiB, a target
mean of about 1 MiB and a hard maximum of 4 MiB. Because cut points depend on the
content around them, inserting a byte near the start of a file changes only the
chunk(s) around the insertion; every later chunk keeps its id and is not sent again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


WINDOW = 4 * p.CDC_MAX
"""Bytes read in one ``pread`` by ``cut`` by default."""


Reader = Callable[[int, int], bytes | bytearray]
"""``read(lo, hi)``: bytes ``[lo, hi)`` of what ``cut`` cuts."""


def file_reader(fd: int) -> Reader:
    """Reads of an open file (``pread``: the GIL released while the kernel copies)."""
    return lambda lo, hi: os.pread(fd, hi - lo, lo)


def cut(
    read: Reader, start: int, end: int, window: int = WINDOW
) -> Iterator[tuple[int, memoryview]]:
    """``(offset, data)`` for each chunk of the bytes ``[start, end)`` that ``read``
    gives; ``data`` is valid only until the next one. Cut points depend only on the
    bytes from a chunk's start, so cutting from ``start`` gives the cuts of the whole
    file wherever ``start`` is one. The cutting runs with the GIL released (reads too,
    from a file): a large cut in a worker thread leaves the event loop alone.

    Bytes are read ``window`` at a time. A chunk that ends before the
    end of what was read is final: FastCDC's cut is the first match from the chunk's
    start, whatever follows it. The chunk that reaches the end of a read (unless it is
    the end of the range) is cut again from its start with the next read; a read in
    which no chunk ends doubles the next one. A cut expected to stop soon (a seal of a
    small edit) gives a small window, and reads little more than the chunks it cuts."""
    chunker = _chunker()
    at = start
    grow = window
    while at < end:
        want = min(grow, end - at)
        data = read(at, at + want)
        if len(data) < want:
            raise OSError(f"file shrank below {end} bytes while being cut")
        whole = at + len(data) >= end
        taken = 0
        for chunk in chunker.cut_buf(data):
            if not whole and chunk.offset + chunk.length >= len(data):
                break
            yield at + chunk.offset, chunk.data
            taken = chunk.offset + chunk.length
        at += taken
        grow = window if taken else grow * 2


def cut_bytes(data: bytes) -> list[Piece]:
    return [Piece(c.offset, c.length, p.chunk_id(c.data)) for c in _chunker().cut_buf(data)]


def plan_file(path: str | os.PathLike[str]) -> list[Piece]:
    """Cut and hash a file in one streaming pass, holding at most a few chunks in memory."""
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        return [Piece(offset, len(data), p.chunk_id(data))
                for offset, data in cut(file_reader(fd), 0, os.fstat(fd).st_size)]


class StreamCutter:
    """``cut`` over bytes that arrive in pieces of any size (an HTTP body): the same
    cuts as ``cut`` of the whole content. A chunk is emitted only once ``CDC_MAX`` bytes
    follow its start (or at ``finish``), so it is cut exactly as a cut of the whole
    would cut it. Holds at most ``WINDOW`` bytes plus the last piece fed."""

    def __init__(self) -> None:
        self._chunker = _chunker()
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The chunks ``data`` completes, in order (none until a window is full)."""
        self._buffer += data
        return self._cut(whole=False) if len(self._buffer) >= WINDOW else []

    def finish(self) -> list[bytes]:
        """The remaining chunks: the content has ended."""
        return self._cut(whole=True)

    def _cut(self, whole: bool) -> list[bytes]:
        data = bytes(self._buffer)  # cut_buf keeps a view: the buffer cannot shrink under it
        out: list[bytes] = []
        taken = 0
        for chunk in self._chunker.cut_buf(data):
            if not whole and chunk.offset + p.CDC_MAX > len(data):
                break
            out.append(bytes(chunk.data))
            taken = chunk.offset + chunk.length
        self._buffer = bytearray(data[taken:])
        return out
