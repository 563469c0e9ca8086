"""File content as HTTP answers: types, ``Content-Disposition``, ranges, folder zips.

Shared by the web page (``/content/...``) and links (``/l/...``). What a browser may
show inline is a short list of types that cannot run script (``INLINE_TYPES``: images
but not SVG, plain text, PDF, audio and video); everything else is sent as an
``attachment`` with its type and ``nosniff``, so an uploaded HTML or SVG file is
downloaded, never rendered in the app's origin. Content answers also carry a CSP of
their own (``default-src 'none'``, ``sandbox`` but for PDF, which Chromium's viewer
will not show in a sandbox).

Ranges (RFC 9110): one ``bytes=`` range is answered 206 with ``Content-Range``; a
range past the end is 416; several ranges get the whole file (200), as allowed.

Memory is bounded whatever the size: a file is read ``PIECE`` bytes at a time in a
worker thread, and a folder's zip is written by ``zipfile`` to a non-seekable sink
(data descriptors, ZIP64) that hands each piece to the event loop through a channel
of one slot, so the zip never runs ahead of the client by more than a piece or two.
"""

from __future__ import annotations

import mimetypes
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Send

from backend.server.http import parse_range

PIECE = 1 << 20
INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
    "text/plain", "application/pdf", "audio/mpeg", "audio/ogg", "audio/wav", "audio/flac",
    "video/mp4", "video/webm", "video/ogg",
})
CONTENT_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'"

class Readable(Protocol):
    """A file open for reading: seekable, blocking (used in worker threads)."""

    def read(self, size: int = -1, /) -> bytes | None: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def close(self) -> None: ...


Opener = Callable[[], Readable]
"""Opens a file for reading (called in a worker thread)."""


def content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    kind = guessed or "application/octet-stream"
    return kind + "; charset=utf-8" if kind == "text/plain" else kind


def disposition(name: str, inline: bool) -> str:
    """RFC 6266: an ASCII ``filename`` fallback and the exact name as ``filename*``."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                       for c in name) or "file"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def shows_inline(kind: str) -> bool:
    return kind.split(";")[0] in INLINE_TYPES


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    etag: str
    mtime_ns: int


def file_response(request: Request, info: FileInfo, opener: Opener,
                  force_download: bool = False, extra: dict[str, str] | None = None) -> Response:
    """The file's content (whole, or the one range asked for), typed and disposed."""
    kind = content_type(info.name)
    inline = shows_inline(kind) and not force_download
    headers = {
        "Content-Disposition": disposition(info.name, inline),
        "Accept-Ranges": "bytes",
        "ETag": info.etag,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_CSP + ("" if kind == "application/pdf" else "; sandbox"),
        "Cache-Control": "private, no-cache",
        **(extra or {}),
    }
    wanted = parse_range(request.headers.get("range"), info.size)
    if request.headers.get("if-range") not in (None, info.etag):
        wanted = None
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{info.size}"
        return Response(status_code=416, headers=headers)
    start, end, status = 0, info.size, 200
    if isinstance(wanted, tuple):
        start, end, status = wanted[0], wanted[1], 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=kind)
    return StreamingResponse(_read(opener, start, end), status, headers, media_type=kind)


async def _read(opener: Opener, start: int, end: int) -> AsyncIterator[bytes]:
    handle = await trio.to_thread.run_sync(opener)
    try:
        await trio.to_thread.run_sync(handle.seek, start)
        at = start
        while at < end:
            data = await trio.to_thread.run_sync(handle.read, min(PIECE, end - at))
            if not data:
                raise OSError(f"file ended at {at} of {end} bytes")
            at += len(data)
            yield data
    finally:
        await trio.to_thread.run_sync(handle.close)


@dataclass(frozen=True)
class ZipItem:
    path: str
    """Inside the zip, ``/``-separated; a folder's ends with ``/``."""
    mtime_ns: int
    opener: Opener | None
    """None for a folder."""


class _Sink:
    """A non-seekable file for ``zipfile``: each write goes to the event loop."""

    def __init__(self, send: trio.MemorySendChannel[bytes]) -> None:
        self._send = send
        self._written = 0

    def write(self, data: bytes) -> int:
        if data:
            trio.from_thread.run(self._send.send, bytes(data))
            self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def _write_zip(items: Iterable[ZipItem], sink: _Sink) -> None:
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for item in items:
            stamp = time.gmtime(max(item.mtime_ns // 1_000_000_000, 315532800))[:6]
            info = zipfile.ZipInfo(item.path, date_time=stamp)
            if item.opener is None:
                info.external_attr = 0o40755 << 16 | 0x10
                archive.writestr(info, b"")
                continue
            info.external_attr = 0o100644 << 16
            source = item.opener()
            try:
                with archive.open(info, "w", force_zip64=True) as target:
                    while data := source.read(PIECE):
                        target.write(data)
            finally:
                source.close()


class ZipResponse(Response):
    """A folder as a zip, streamed as it is written (see the module)."""

    def __init__(self, name: str, items: Callable[[], Iterable[ZipItem]],
                 extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Disposition": disposition(f"{name}.zip", False),
                   "X-Content-Type-Options": "nosniff", **(extra or {})}
        super().__init__(media_type="application/zip", headers=headers)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.items = items

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        pieces, received = trio.open_memory_channel[bytes](1)

        async def produce() -> None:
            async with pieces:
                await trio.to_thread.run_sync(lambda: _write_zip(self.items(), _Sink(pieces)))

        async with trio.open_nursery() as nursery, received:
            nursery.start_soon(produce)
            async for data in received:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
