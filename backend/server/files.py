"""Files by path, for the server's own front ends (WebDAV, the web page): resolve,
list, read, write, mkdir, move, copy, delete, each with the caller's role.

Everything here goes through the same paths as the API: content is cut with
``backend.chunking`` exactly as a mount cuts it, only chunks the user lacks are
stored, through ``backend.server.ingest.store_chunks`` (verified, quota, grants), and
every change is one ``MetadataStore.commit`` (compare-and-swap on the entry's
``rev``: a changed base is refused with ``Conflict``, never overwritten), after which
the changes feed wakes. Nothing here holds a whole file: reads fetch one chunk at a
time, writes hold at most ``chunking.WINDOW`` bytes plus one stored batch.

Interface (all async, on the trio loop; a worker thread calls them through
``trio.from_thread.run``):

=============================================== =====================================
call                                            does
=============================================== =====================================
``Files(metadata, blocks, notifier)``           the service over the server's stores
``split(path)`` → ``list[str]``                  a path's names, validated (400)
``resolve(account, parts)`` → ``Node``          the entry at a path; ``NotFound``
``children(node)`` → ``list[Node]``             a folder's entries, by name
``chunk(cid)`` → bytes                          one chunk's plain content
``stream(node, start, end)``                    async iterator of the bytes [start, end)
``reader(node)`` → ``FileReader``               a seekable file for a worker thread
``write(account, parent, name, source, base)``  a file version from an async byte source
``store(account, pieces)``                      chunks of an upload, only the new ones
``save(account, parent, name, upload, base)``   commit a finished ``Upload``
``mkdir(account, parent, name)``                a folder
``move(account, node, parent, name, replace)``  rename/move (``replace``: the entry there)
``copy(account, node, parent, name, replace)``  a copy sharing the chunks
``delete(account, node)``                       the entry and all below it
=============================================== =====================================

``base``/``replace`` are the ``Node`` the caller saw (its ``rev`` is the base of the
compare-and-swap), None for a new name. Errors are ``backend.errors`` types:
``NotFound``, ``Forbidden`` (a viewer's write), ``Conflict`` (stale base), ``Exists``,
``BadRequest``/``NameTooLong``, ``QuotaExceeded``, ``TooLarge``.

The past: ``.versions`` in any folder reaches the read-only views of
``backend.server.files_past`` (the mount's ``.versions``); their nodes are ``past``,
every change to them is ``Forbidden``, and ``copy`` of a past version brings it back.

Shared folders: an entry of kind ``"mount"`` whose ``target`` is a namespace number is
followed into that namespace's root when the account is a member there; the ``Node``
keeps the mount entry as ``outer`` (renaming or deleting the folder acts on it).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from backend import protocol as p
from backend.chunking import StreamCutter
from backend.errors import BadRequest, Forbidden, NotFound
from backend.server.blocks import BlockStore, unseal
from backend.server.commit_context import CommitContext
from backend.server.database import Tx, run
from backend.server.files_past import past_child, past_children, versions_of
from backend.server.files_tree import (
    Account,
    Node,
    View,
    check_write,
    copy_ops,
    live_child,
    live_children,
    role_in,
)
from backend.server.ingest import store_chunks
from backend.server.metadata import MetadataStore
from backend.server.notifier import Notifier

__all__ = ["STORE_BATCH", "Account", "FileReader", "Files", "Node", "Upload", "View", "split"]

log = logging.getLogger("loft.server")
T = TypeVar("T")

STORE_BATCH = 16 * 1024 * 1024
"""Bytes of chunks stored together (one quota check and one metadata commit)."""


def split(path: str) -> list[str]:
    """The names of a path, each valid (``protocol.validate_name``) or ``.versions``;
    ``..`` or NUL is a ``BadRequest``."""
    if "\0" in path:
        raise BadRequest("invalid path: contains NUL")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BadRequest("a path may not climb with '..'")
    return [part if part == p.VERSIONS else p.validate_name(part) for part in parts]


@dataclass
class Upload:
    """One file's content as it arrives: cut into chunks (``feed`` returns the ones
    complete, ``(id, bytes)``, to ``store``), the block list kept for ``save``."""

    cutter: StreamCutter = field(default_factory=StreamCutter)
    blocks: list[list[Any]] = field(default_factory=list)
    size: int = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[str, bytes]]:
        return self._named(self.cutter.feed(data))

    def finish(self) -> list[tuple[str, bytes]]:
        return self._named(self.cutter.finish())

    def _named(self, chunks: list[bytes]) -> list[tuple[str, bytes]]:
        named = [(p.chunk_id(c), c) for c in chunks]
        for cid, data in named:
            self.blocks.append([cid, len(data)])
            self.size += len(data)
        return named


class Files:
    def __init__(self, metadata: MetadataStore, blocks: BlockStore, notifier: Notifier) -> None:
        self.metadata = metadata
        self.blocks = blocks
        self.notifier = notifier
        self._readers = trio.CapacityLimiter(metadata.db.max_readers)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        return await trio.to_thread.run_sync(run, self.metadata.db, fn, False,
                                             limiter=self._readers)

    # --- reading ---------------------------------------------------------------------

    async def resolve(self, account: Account, parts: list[str]) -> Node:
        """The entry at ``parts`` (validated names) in the account's tree, following
        shared folders; ``NotFound`` if there is none (or it is not the account's)."""
        return await self._read(lambda tx: _walk(tx, account, parts))

    async def children(self, node: Node) -> list[Node]:
        if not node.is_dir:
            raise BadRequest(f"{node.name} is not a folder")

        return await self._read(
            lambda tx: past_children(tx, node) if node.past else live_children(tx, node))

    async def chunk(self, cid: str) -> bytes:
        """A chunk's plain content (the caller has resolved an entry holding it)."""
        sealed = await self.blocks.get(cid)
        if sealed is None:
            log.error("chunk %s is recorded but missing from the block store", cid)
            raise NotFound(f"chunk {cid} is missing from the block store")
        return await trio.to_thread.run_sync(unseal, sealed)

    async def stream(self, node: Node, start: int = 0, end: int | None = None
                     ) -> AsyncIterator[bytes]:
        """The file's bytes ``[start, end)``, one chunk fetched at a time."""
        stop = node.size if end is None else min(end, node.size)
        at = 0
        for cid, length in node.entry.get("blocks", []):
            if at + length > start and at < stop:
                data = await self.chunk(cid)
                yield data[max(start - at, 0): stop - at]
            at += length
            if at >= stop:
                break

    def reader(self, node: Node) -> FileReader:
        """A seekable file over the node's content, for a worker thread of this loop."""
        return FileReader(node.entry.get("blocks", []),
                          lambda cid: trio.from_thread.run(self.chunk, cid))

    # --- writing ---------------------------------------------------------------------

    async def store(self, account: Account, pieces: list[tuple[str, bytes]]) -> None:
        """Store the chunks of an upload the account does not hold yet."""
        if not pieces:
            return
        missing = set(await self.metadata.missing_chunks(account.user_id,
                                                         [c for c, _ in pieces]))
        new = list({c: d for c, d in pieces if c in missing}.items())
        if new:
            await store_chunks(self.blocks, self.metadata, account.user_id, new)

    async def write(self, account: Account, parent: Node, name: str,
                    source: AsyncIterable[bytes], base: Node | None) -> Node:
        """A file named ``name`` in ``parent`` with the bytes of ``source``: a new file
        if ``base`` is None, else a new version of ``base`` (refused if it changed)."""
        check_write(parent)
        upload, batch, held = Upload(), [], 0
        async for data in source:
            batch += await trio.to_thread.run_sync(upload.feed, data)
            held = sum(len(d) for _, d in batch)
            if held >= STORE_BATCH:
                await self.store(account, batch)
                batch = []
        batch += await trio.to_thread.run_sync(upload.finish)
        await self.store(account, batch)
        return await self.save(account, parent, name, upload, base)

    async def save(self, account: Account, parent: Node, name: str, upload: Upload,
                   base: Node | None) -> Node:
        """Commit the content ``upload`` cut (its chunks stored) as a file version."""
        check_write(parent)
        now = time.time_ns()
        if base is None:
            entry_id = p.new_id()
            op = {"op": "create", "entry": entry_id, "parent": parent.entry["id"],
                  "name": p.validate_name(name), "kind": "file", "mode": 0o644}
        else:
            entry_id = base.entry["id"]
            op = {"op": "update", "entry": entry_id, "base": base.rev}
        op.update(size=upload.size, blocks=upload.blocks, mtime=now)
        await self._commit(account, parent.ns, [op])
        return await self._node_by_id(parent, entry_id)

    async def mkdir(self, account: Account, parent: Node, name: str) -> Node:
        check_write(parent)
        entry_id = p.new_id()
        await self._commit(account, parent.ns, [{
            "op": "mkdir", "entry": entry_id, "parent": parent.entry["id"],
            "name": p.validate_name(name), "mode": 0o755, "mtime": time.time_ns()}])
        return await self._node_by_id(parent, entry_id)

    async def delete(self, account: Account, node: Node) -> None:
        target = node.outer or node
        if target.entry["id"] == p.ROOT_ID:
            raise Forbidden("the root of the workspace cannot be deleted")
        check_write(target)
        await self._commit(account, target.ns, [_delete_op(target)])

    async def move(self, account: Account, node: Node, parent: Node, name: str,
                   replace: Node | None) -> None:
        """Move ``node`` to ``name`` in ``parent``, replacing ``replace`` (the entry the
        caller saw there, deleted with all below it) in the same commit. Between two
        namespaces: a copy, then a delete of the source."""
        source = node.outer or node
        if source.entry["id"] == p.ROOT_ID:
            raise Forbidden("the root of the workspace cannot be moved")
        check_write(source)
        check_write(parent)
        if source.ns != parent.ns:
            await self.copy(account, node, parent, name, replace)
            await self.delete(account, node)
            return
        ops = [] if replace is None else [_delete_op(replace.outer or replace)]
        ops.append({"op": "rename", "entry": source.entry["id"], "base": source.rev,
                    "parent": parent.entry["id"], "name": p.validate_name(name)})
        await self._commit(account, parent.ns, ops)

    async def copy(self, account: Account, node: Node, parent: Node, name: str,
                   replace: Node | None) -> None:
        """Copy ``node`` (and all below it) to ``name`` in ``parent``: new entries naming
        the same chunks, nothing stored again; in as few commits as the limits allow."""
        check_write(parent)
        ops = [] if replace is None else [_delete_op(replace.outer or replace)]
        ops += await self._read(lambda tx: copy_ops(tx, node, parent.entry["id"],
                                                     p.validate_name(name)))
        for batch in p.commit_batches(ops):
            await self._commit(account, parent.ns, batch)

    async def _commit(self, account: Account, ns: int, ops: list[dict[str, Any]]) -> None:
        for op in ops:
            op["op_id"] = p.new_id()
        result = await self.metadata.commit(account.user_id, account.device, ns, ops)
        for advanced in result["namespaces"]:
            self.notifier.advanced(advanced)
        log.info("commit ns=%d ops=%d seq=%s by user %d/%s", ns, len(ops), result["seq"],
                 account.user_id, account.device)

    async def _node_by_id(self, parent: Node, entry_id: str) -> Node:
        def work(tx: Tx) -> Node:
            entry = CommitContext(tx, parent.ns, 0, "", 0, 0).entry(entry_id)
            if entry is None:
                raise NotFound("the entry was changed meanwhile")
            return Node(parent.ns, entry, parent.role, parent.user_id)

        return await self._read(work)


class FileReader(io.RawIOBase):
    """A file's content as a seekable, read-only file, for a worker thread: each read
    fetches (``fetch(cid)``) only the chunk under the position, keeping one chunk."""

    def __init__(self, blocks: list[list[Any]], fetch: Callable[[str], bytes]) -> None:
        super().__init__()
        self._blocks = [(str(cid), int(length)) for cid, length in blocks]
        self._starts: list[int] = []
        at = 0
        for _, length in self._blocks:
            self._starts.append(at)
            at += length
        self._size, self._pos, self._fetch = at, 0, fetch
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self._size or not len(view):
            return 0
        index = _block_at(self._starts, self._pos)
        if self._cached is None or self._cached[0] != index:
            self._cached = None  # one chunk held at a time
            self._cached = (index, self._fetch(self._blocks[index][0]))
        data = self._cached[1]
        offset = self._pos - self._starts[index]
        count = min(len(view), len(data) - offset)
        view[:count] = data[offset: offset + count]
        self._pos += count
        return count


def _block_at(starts: list[int], pos: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= pos:
            lo = mid
        else:
            hi = mid - 1
    return lo


# --- in a transaction ------------------------------------------------------------------


def _walk(tx: Tx, account: Account, parts: list[str]) -> Node:
    role = role_in(tx, account.user_id, account.root_ns)
    root = CommitContext(tx, account.root_ns, 0, "", 0, 0).entry(p.ROOT_ID)
    if role is None or root is None:
        raise NotFound("no such workspace")
    node = Node(account.root_ns, root, role, account.user_id)
    for depth, name in enumerate(parts):
        if not node.is_dir:
            raise NotFound(f"{p.join_path(parts[:depth])}: not a folder")
        if node.past:
            found = past_child(tx, node, name)
        elif name == p.VERSIONS:
            found = versions_of(node)
        else:
            found = live_child(tx, node, name)
        if found is None:
            raise NotFound(f"{p.join_path(parts[: depth + 1])}: no such file or folder")
        node = found
    return node


def _delete_op(node: Node) -> dict[str, Any]:
    return {"op": "delete", "entry": node.entry["id"], "base": node.rev, "recursive": True}
