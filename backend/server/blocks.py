"""The block store: where chunk bytes live, behind one small interface.

``DirectoryBlockStore`` (``dir_blocks.py``) keeps them in a local directory, the
embedded default; ``S3BlockStore`` (``s3_blocks.py``) in any S3-compatible object
store. Both hold the same at-rest format, produced and read by ``seal``/``unseal``:

    ======= ============================================================
    bytes   meaning
    ======= ============================================================
    0       format: 0 = raw content follows, 1 = zstd frame follows
    1..     the content, raw or compressed
    ======= ============================================================

Content is compressed only where that saves at least 1/32 of it, so media and
already-compressed files are stored raw and read back without a decompression.
A chunk is stored under its id; storing an id twice is harmless (idempotent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

import trio
import zstandard

from backend.errors import BadRequest, StoreError
from backend.tasks import for_each

RAW, ZSTD = 0, 1
_LEVEL = 3


class BlockStore(Protocol):
    url: str

    async def put(self, cid: str, sealed: bytes) -> None:
        """Store durably: when this returns the chunk survives a crash."""
        ...

    async def put_many(self, chunks: list[tuple[str, bytes]]) -> None:
        """``put`` of many chunks (a pack of small ones): when this returns every one
        survives a crash; a crash before leaves each whole or absent."""
        ...

    async def get(self, cid: str) -> bytes | None:
        """The sealed bytes of a chunk, or None if it is not stored."""
        ...

    async def has(self, cid: str) -> bool: ...

    async def held(self, cids: list[str]) -> set[str]:
        """Which of ``cids`` are stored: one look for many (a pack of small chunks),
        not one thread hop or request each."""
        ...

    def ids(self) -> AsyncIterator[str]:
        """Every stored chunk id (for fsck)."""
        ...

    def stored(self) -> AsyncIterator[Stored]:
        """Every stored chunk with its size at rest and age (for garbage collection)."""
        ...

    async def delete(self, cid: str) -> None:
        """Remove a chunk for good; removing one not stored is harmless."""
        ...

    async def close(self) -> None: ...


class Stored(NamedTuple):
    cid: str
    size: int
    """Bytes at rest."""
    modified: float
    """When it was last written, unix seconds (file mtime; S3 ``LastModified``)."""


def seal(data: bytes) -> bytes:
    """The at-rest form of a chunk's content."""
    if len(data) >= 512:
        packed = zstandard.ZstdCompressor(level=_LEVEL).compress(data)
        if len(packed) <= len(data) - len(data) // 32:
            return bytes([ZSTD]) + packed
    return bytes([RAW]) + data


async def content_of(sealed: bytes) -> bytes | memoryview:
    """``unseal`` for an answer: raw content without a copy or a thread hop (a 1 MiB
    chunk is most of a GET's bytes, and media is stored raw), compressed content
    decompressed in a worker thread."""
    if sealed[:1] == bytes([RAW]):
        return memoryview(sealed)[1:]
    return await trio.to_thread.run_sync(unseal, sealed)


def unseal(sealed: bytes) -> bytes:
    if not sealed:
        raise StoreError("stored chunk is empty")
    if sealed[0] == RAW:
        return sealed[1:]
    if sealed[0] == ZSTD:
        try:
            return zstandard.ZstdDecompressor().decompress(sealed[1:])
        except zstandard.ZstdError as exc:
            raise StoreError(f"stored chunk is corrupt: {exc}") from None
    raise StoreError(f"stored chunk has unknown format {sealed[0]}")


def open_block_store(url: str | None, data_dir: Path) -> BlockStore:
    """``None`` → ``DATA/chunks``; ``file:///path``; ``s3://BUCKET?endpoint=URL``."""
    if url is None:
        from backend.server.dir_blocks import DirectoryBlockStore

        return DirectoryBlockStore(data_dir / "chunks")
    parts = urlsplit(url)
    if parts.scheme == "file":
        from backend.server.dir_blocks import DirectoryBlockStore

        return DirectoryBlockStore(Path(parts.path))
    if parts.scheme == "s3":
        from backend.server.s3_blocks import S3BlockStore

        query = parse_qs(parts.query)
        endpoint = query.get("endpoint", [None])[0]
        region = query.get("region", [None])[0]
        if not parts.netloc:
            raise BadRequest(f"--blocks {url}: no bucket named")
        return S3BlockStore(parts.netloc, endpoint, region)
    raise BadRequest(f"--blocks {url}: use file:///DIR or s3://BUCKET?endpoint=URL")


async def small_contents(
    blocks: BlockStore, files: list[dict[str, Any]], budget: int
) -> list[list[Any]]:
    """``[[chunk_id, content], ...]`` of the smallest of ``files`` (entry records), whole
    files only, up to ``budget`` bytes: what a device following a live feed would
    fetch next, sent with it. A chunk the store lacks is left out (fetched as usual)."""
    wanted: dict[str, None] = {}
    room = budget
    for record in sorted(files, key=lambda r: int(r["size"])):
        if not 0 < int(record["size"]) <= room:
            continue
        room -= int(record["size"])
        wanted.update((str(cid), None) for cid, _ in record["blocks"])
    found: list[list[Any]] = []

    async def read(cid: str) -> None:
        try:
            sealed = await blocks.get(cid)
        except StoreError:
            return  # the device asks for it, and hears of the trouble then
        if sealed is not None:
            found.append([cid, unseal(sealed)])  # small: not worth a thread

    await for_each(list(wanted), read, 8)
    return found
