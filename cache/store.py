"""The device's cache as one object: ``Cache(path)`` opens ``LOFT_HOME/cache``.

It holds the LMDB environment (``cache.env``: layout and durability), the view and
remote trees (``cache.tree``), the journal (``cache.journal``), the chunk cache
(``cache.chunks``), inode numbers and pins. Pins and inodes are small enough to live
here.

Pins (sub-database ``pins``): an entry id marks a file, or a folder and every file it
holds, now or later, whose content the device keeps. Pinned chunks are worked out
from the view at eviction time, not marked per chunk: a pin then covers new versions,
files added under a pinned folder and renames with no bookkeeping to get wrong.
``loft pin`` writes the record from its own process (LMDB is safe across processes:
one writer at a time, readers see each commit whole), so a pin is durable when the
command returns; the mount notices it by polling (``fs.pinning``).

Inodes (``inodes``/``inode_of``): an entry keeps its inode number across mounts;
numbers are allocated on first sight, in the writer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypedDict

from backend import protocol as p
from cache.chunks import Chunks
from cache.env import LAYOUT, Env, Q, Txn
from cache.journal import Journal
from cache.records import ConflictNote, Record, WireOp, new_record
from cache.tree import Tree, root_entry

ROOT_INO = 1


class PinUsage(TypedDict):
    files: int
    bytes: int
    missing: int


class Cache:
    def __init__(self, path: Path, cap_bytes: int = 2 << 30) -> None:
        self.env = Env(path)
        self.view = Tree(self.env, "entries", "children", shares="view_shares")
        self.remote = Tree(self.env, "rentries", "rchildren")
        self.journal = Journal(self.env)
        self.chunks = Chunks(self.env, cap_bytes)
        with self.env.write() as txn:
            if self.env.meta_get(txn, "layout") != LAYOUT:
                self._reset(txn)
            if self.env.meta_get(txn, "pending_bytes") is None:
                self.chunks.count_pending(txn)
            if self.env.meta_get(txn, "view_shares") is None:
                self.view.count_shares(txn)

    def _reset(self, txn: Txn) -> None:
        """A cache of another layout (or none): start from an empty tree, which the
        first contact with the server fills; cached chunks are kept, and so are the
        local changes an older layout's journal still holds (each a bare operation:
        it becomes a record with nothing to compare against, replayed as it was)."""
        carried = [
            new_record(dict(op), None, [], time.time())
            for _, op in self.journal.records(txn)
            if isinstance(op, dict) and "op" in op and isinstance(op["op"], str)
        ]
        for name in ("entries", "children", "rentries", "rchildren", "journal", "inodes",
                     "inode_of", "conflicts"):
            txn.drop(self.env.db[name], delete=False)
        self.env.meta_put(txn, "journal_seq", 0)
        self.env.meta_put(txn, "view_shares", 0)
        for record in carried:
            self.journal.append(txn, record)
        for key in ("cursor", "inflight", "srev"):
            txn.delete(key.encode(), db=self.env.db["meta"])
        self._bind_inode(txn, p.ROOT_ID, ROOT_INO)
        self.env.meta_put(txn, "next_ino", ROOT_INO + 1)
        root = root_entry(time.time_ns())
        self.view.put(txn, root)
        self.remote.put(txn, root)
        self.env.meta_put(txn, "layout", LAYOUT)

    def close(self) -> None:
        self.env.close()

    def flush(self) -> None:
        self.env.flush()

    def read(self) -> Txn:
        return self.env.read()

    def meta(self, key: str, default: Any = None) -> Any:
        return self.env.meta(key, default)

    # --- inodes ----------------------------------------------------------------------

    def _bind_inode(self, txn: Txn, entry_id: str, ino: int) -> None:
        txn.put(Q.pack(ino), entry_id.encode(), db=self.env.db["inodes"])
        txn.put(entry_id.encode(), Q.pack(ino), db=self.env.db["inode_of"])

    def inode_of(self, txn: Txn, entry_id: str) -> int:
        """The entry's inode number, allocated on first sight (a write)."""
        known = self.known_inode(txn, entry_id)
        if known is not None:
            return known
        ino = int(self.env.meta_get(txn, "next_ino"))
        self.env.meta_put(txn, "next_ino", ino + 1)
        self._bind_inode(txn, entry_id, ino)
        return ino

    def known_inode(self, txn: Txn, entry_id: str) -> int | None:
        raw = txn.get(entry_id.encode(), db=self.env.db["inode_of"])
        self.env.touched()  # keyed by a random entry id, as the tree is
        return int(Q.unpack(bytes(raw))[0]) if raw is not None else None

    def entry_id(self, txn: Txn, ino: int) -> str | None:
        raw = txn.get(Q.pack(ino), db=self.env.db["inodes"])
        return bytes(raw).decode() if raw is not None else None

    # --- pins ------------------------------------------------------------------------

    def pin(self, entry_id: str) -> None:
        with self.env.write() as txn:
            txn.put(entry_id.encode(), p.encode(1), db=self.env.db["pins"])

    def unpin(self, entry_id: str) -> bool:
        """Drop a pin; False if the entry was not pinned itself."""
        with self.env.write() as txn:
            return bool(txn.delete(entry_id.encode(), db=self.env.db["pins"]))

    def pins(self, txn: Txn) -> list[str]:
        return [bytes(key).decode() for key, _ in txn.cursor(db=self.env.db["pins"])]

    def pinned_chunks(self, txn: Txn) -> set[str]:
        """The chunk ids of the current version of every pinned file."""
        return {
            block[0]
            for entry in self.view.files_under(txn, self.pins(txn))
            for block in entry.get("blocks", [])
        }

    def missing_pinned(self, limit: int) -> list[str]:
        """Up to ``limit`` chunk ids of pinned files that are not in the cache."""
        out: list[str] = []
        seen: set[str] = set()
        with self.read() as txn:
            for entry in self.view.files_under(txn, self.pins(txn)):
                for cid, _ in entry.get("blocks", []):
                    if cid in seen:
                        continue
                    seen.add(cid)
                    if self.chunks.meta(txn, cid) is None:
                        out.append(cid)
                        if len(out) >= limit:
                            return out
        return out

    def pin_usage(self, txn: Txn, entry_id: str) -> PinUsage:
        """What a pin holds: ``files``, ``bytes`` and ``missing`` (bytes not cached)."""
        files = size = missing = 0
        counted: set[str] = set()
        for entry in self.view.files_under(txn, [entry_id]):
            files += 1
            size += entry["size"]
            for cid, length in entry.get("blocks", []):
                if cid in counted:
                    continue
                counted.add(cid)
                if self.chunks.meta(txn, cid) is None:
                    missing += length
        return PinUsage(files=files, bytes=size, missing=missing)

    # --- conflicts -------------------------------------------------------------------

    # --- chunks waiting for an upload -------------------------------------------------

    def release_chunks(self, txn: Txn, done: list[Record], sent: list[WireOp]) -> None:
        """Chunks that wait for no upload any more: those ``sent`` (now on the server),
        and those of the records ``done`` with (acknowledged, folded into a later
        version of their file, dropped, given up) that no unacknowledged record names."""
        uploaded = {b[0] for op in sent for b in op.get("blocks", [])}
        self.chunks.release(txn, sorted(uploaded))
        self.release_unnamed(txn, {b[0] for r in done for b in r["op"].get("blocks", [])}
                             - uploaded)

    def release_unnamed(self, txn: Txn, cids: set[str], skip: int | None = None) -> None:
        """Of these chunks, those no unacknowledged record names wait for no upload;
        ``skip``: a record known not to name them."""
        if cids:
            self.chunks.release(txn, sorted(cids - self._named_chunks(txn, skip)))

    def sweep_pending(self, txn: Txn) -> int:
        """At start: release the pending chunks no unacknowledged record names (a seal
        cut short by a crash stored them and never recorded its version); how many."""
        named = self._named_chunks(txn)
        stale = [cid for cid in self.chunks.pending(txn) if cid not in named]
        self.chunks.release(txn, stale)
        return len(stale)

    def _named_chunks(self, txn: Txn, skip: int | None = None) -> set[str]:
        return {b[0] for _, record in self.journal.records(txn, skip=skip)
                if record["acked"] is None for b in record["op"].get("blocks", [])}

    def note_conflict(self, txn: Txn, note: ConflictNote) -> None:
        seq = int(self.env.meta_get(txn, "conflict_seq", 0)) + 1
        self.env.meta_put(txn, "conflict_seq", seq)
        txn.put(Q.pack(seq), p.encode(note), db=self.env.db["conflicts"])

    def conflicts(self, txn: Txn, limit: int = 50) -> list[ConflictNote]:
        """The latest ``limit`` conflict notes, newest first."""
        out: list[ConflictNote] = []
        cursor = txn.cursor(db=self.env.db["conflicts"])
        if cursor.last():
            for _, raw in cursor.iterprev():
                out.append(p.decode(bytes(raw)))
                if len(out) >= limit:
                    break
        return out

    def trim(self, txn: Txn) -> int:
        """The writer's periodic housekeeping: LRU order, then eviction; bytes freed."""
        self.chunks.flush_ticks(txn)
        if int(self.env.meta_get(txn, "bytes", 0)) <= self.chunks.cap:
            return 0
        return self.chunks.evict(txn, self.pinned_chunks(txn))
