"""The device's cache: one LMDB environment in ``LOFT_HOME/cache``.

Sub-databases (keys and values are bytes; CBOR where a value is a record)

    =========== ============================== ========================================
    name        key                            value
    =========== ============================== ========================================
    meta        b"cursor", b"ns", b"next_ino", CBOR int
                b"tick", b"journal_seq"
                b"mountpoint"                  CBOR str: where the device was last
                                               mounted (``loft pin`` resolves paths)
    entries     entry id (ascii)               CBOR entry record (``backend.protocol``)
                                               plus ``local``: True while a local change
                                               of it waits in the journal
    children    parent id + b"/" + name        entry id
    inodes      inode, 8 bytes big-endian      entry id
    inode_of    entry id                       inode, 8 bytes big-endian
    chunks      chunk id (ascii)               the chunk's plain content
    chunk_meta  chunk id                       CBOR {size, tick, pending}
    lru         tick (8 bytes BE) + chunk id   b"" (eviction order, oldest first)
    journal     sequence, 8 bytes big-endian   CBOR operation (``backend.protocol``,
                                               without ``base``)
    srev        entry id                       CBOR int: the server's revision of the
                                               entry this device last saw (the ``base``
                                               of its next operation)
    local       entry id                       CBOR int: journal records naming it
    pins        entry id                       CBOR 1: the entry is pinned (a file, or
                                               a folder and all it holds, now or later)
    =========== ============================== ========================================

A local change updates ``entries``/``children`` and appends its operation to
``journal`` in one write transaction, so the replica and the journal never disagree.
The environment is opened without a sync per commit: after ``kill -9`` of the mount
every committed transaction is intact (LMDB writes go through the OS page cache);
``flush()`` makes them survive a power cut too, and is called on ``fsync`` and by
the mount once a second while anything is unflushed.

Chunks marked ``pending`` (written locally, not yet uploaded) are never evicted;
neither are the chunks of the current version of a pinned file (a file named in
``pins``, or any file under a folder named there); others are evicted
least-recently-used first once the cache exceeds its cap. Pinned chunks are worked
out from the tree at eviction time, not marked in ``chunk_meta``: a pin then covers
new versions, files added under a pinned folder and renames with no bookkeeping to
get wrong, and the walk costs only when the cache is over its cap.

The ``pins`` record is written by ``loft pin`` itself, from its own process: LMDB is
safe across processes (one writer at a time, readers see each commit whole), so a pin
is durable as soon as the command returns, whether the mount runs or not; the mount
notices it by polling (``fs.pinning``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb

from backend import protocol as p

ROOT_INO = 1

Txn = Any
"""An ``lmdb.Transaction``; its values are bytes or buffers, which typing cannot tell."""
_Q = struct.Struct(">Q")
_DBS = (
    "meta",
    "entries",
    "children",
    "inodes",
    "inode_of",
    "chunks",
    "chunk_meta",
    "lru",
    "journal",
    "srev",
    "local",
    "pins",
)


def _child_key(parent: str, name: str) -> bytes:
    return parent.encode() + b"/" + name.encode()


class Cache:
    def __init__(self, path: Path, cap_bytes: int = 2 << 30) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(path),
            map_size=1 << 40,
            max_dbs=len(_DBS),
            sync=False,
            metasync=False,
        )
        self.db = {name: self.env.open_db(name.encode()) for name in _DBS}
        self.cap = cap_bytes
        with self.env.begin(write=True) as txn:
            if txn.get(p.ROOT_ID.encode(), db=self.db["inode_of"]) is None:
                self._bind_inode(txn, p.ROOT_ID, ROOT_INO)
                self._meta_put(txn, "next_ino", ROOT_INO + 1)
                root = {
                    "id": p.ROOT_ID,
                    "parent": "",
                    "name": "",
                    "kind": "dir",
                    "rev": 0,
                    "size": 0,
                    "mode": 0o755,
                    "mtime": time.time_ns(),
                }
                self.put_entry(txn, root)

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()

    def flush(self) -> None:
        """Make every transaction committed before the call durable (fsync). Blocking.

        Unconditional: a write transaction may commit from a worker thread while an
        earlier flush runs, and an fsync of a clean file costs next to nothing."""
        self.env.sync(True)

    def write(self) -> Txn:
        return self.env.begin(write=True)

    def read(self) -> Txn:
        return self.env.begin()

    # --- meta --------------------------------------------------------------------

    def _meta_get(self, txn: Txn, key: str, default: Any = None) -> Any:
        raw = txn.get(key.encode(), db=self.db["meta"])
        return default if raw is None else p.decode(raw)

    def _meta_put(self, txn: Txn, key: str, value: Any) -> None:
        txn.put(key.encode(), p.encode(value), db=self.db["meta"])

    def meta(self, key: str, default: Any = None) -> Any:
        with self.read() as txn:
            return self._meta_get(txn, key, default)

    def set_meta(self, key: str, value: Any) -> None:
        with self.write() as txn:
            self._meta_put(txn, key, value)

    # --- entries and inodes ------------------------------------------------------

    def _bind_inode(self, txn: Txn, entry_id: str, ino: int) -> None:
        txn.put(_Q.pack(ino), entry_id.encode(), db=self.db["inodes"])
        txn.put(entry_id.encode(), _Q.pack(ino), db=self.db["inode_of"])

    def inode_of(self, txn: Txn, entry_id: str) -> int:
        """The entry's inode number, allocated on first sight and kept across mounts."""
        raw = txn.get(entry_id.encode(), db=self.db["inode_of"])
        if raw is not None:
            return int(_Q.unpack(raw)[0])
        ino = int(self._meta_get(txn, "next_ino"))
        self._meta_put(txn, "next_ino", ino + 1)
        self._bind_inode(txn, entry_id, ino)
        return ino

    def known_inode(self, txn: Txn, entry_id: str) -> int | None:
        raw = txn.get(entry_id.encode(), db=self.db["inode_of"])
        return int(_Q.unpack(raw)[0]) if raw is not None else None

    def entry_id(self, txn: Txn, ino: int) -> str | None:
        raw = txn.get(_Q.pack(ino), db=self.db["inodes"])
        return raw.decode() if raw is not None else None

    def entry(self, txn: Txn, entry_id: str) -> dict[str, Any] | None:
        raw = txn.get(entry_id.encode(), db=self.db["entries"])
        return p.decode(raw) if raw is not None else None

    def child(self, txn: Txn, parent: str, name: str) -> str | None:
        raw = txn.get(_child_key(parent, name), db=self.db["children"])
        return raw.decode() if raw is not None else None

    def children(self, txn: Txn, parent: str) -> Iterator[tuple[str, str]]:
        """``(name, entry id)`` of every child, in byte order of the names."""
        prefix = parent.encode() + b"/"
        cursor = txn.cursor(db=self.db["children"])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key[len(prefix) :].decode(), value.decode()

    def names_with(self, txn: Txn, fragment: str) -> Iterator[str]:
        """Ids of the entries whose name holds ``fragment`` (a scan of the names)."""
        needle = fragment.encode()
        for key, value in txn.cursor(db=self.db["children"]):
            if needle in key[key.index(b"/") + 1 :]:
                yield value.decode()

    def put_entry(self, txn: Txn, entry: dict[str, Any]) -> None:
        """Store ``entry``, moving its ``children`` key if its parent or name changed."""
        old = self.entry(txn, entry["id"])
        if old is not None and (old["parent"], old["name"]) != (entry["parent"], entry["name"]):
            txn.delete(_child_key(old["parent"], old["name"]), db=self.db["children"])
        if entry["id"] != p.ROOT_ID:
            txn.put(
                _child_key(entry["parent"], entry["name"]),
                entry["id"].encode(),
                db=self.db["children"],
            )
        txn.put(entry["id"].encode(), p.encode(entry), db=self.db["entries"])

    def drop_entry(self, txn: Txn, entry_id: str) -> dict[str, Any] | None:
        old = self.entry(txn, entry_id)
        if old is None:
            return None
        key = _child_key(old["parent"], old["name"])
        if txn.get(key, db=self.db["children"]) == entry_id.encode():
            txn.delete(key, db=self.db["children"])
        txn.delete(entry_id.encode(), db=self.db["entries"])
        return old

    def lookup_path(self, txn: Txn, path: str) -> str | None:
        """The entry id at workspace path ``path`` (``/a/b``) in the replica."""
        entry_id: str | None = p.ROOT_ID
        for name in p.split_path(path):
            assert entry_id is not None
            entry_id = self.child(txn, entry_id, name)
            if entry_id is None:
                return None
        return entry_id

    def path_of(self, txn: Txn, entry_id: str) -> str | None:
        """The workspace path of an entry in the replica, or None if it is gone."""
        names: list[str] = []
        while entry_id != p.ROOT_ID:
            entry = self.entry(txn, entry_id)
            if entry is None or len(names) > 4096:
                return None
            names.append(entry["name"])
            entry_id = entry["parent"]
        return p.join_path(reversed(names))

    # --- pins ------------------------------------------------------------------------

    def pin(self, entry_id: str) -> None:
        with self.write() as txn:
            txn.put(entry_id.encode(), p.encode(1), db=self.db["pins"])

    def unpin(self, entry_id: str) -> bool:
        """Drop a pin; False if the entry was not pinned itself."""
        with self.write() as txn:
            return bool(txn.delete(entry_id.encode(), db=self.db["pins"]))

    def pins(self, txn: Txn) -> list[str]:
        return [key.decode() for key, _ in txn.cursor(db=self.db["pins"])]

    def files_under(self, txn: Txn, roots: list[str]) -> Iterator[dict[str, Any]]:
        """Every file entry among ``roots`` or under the folders among them, once."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            entry_id = stack.pop()
            if entry_id in seen:
                continue
            seen.add(entry_id)
            entry = self.entry(txn, entry_id)
            if entry is None:
                continue
            if entry["kind"] == "dir":
                stack.extend(child for _, child in self.children(txn, entry_id))
            elif entry["kind"] == "file":
                yield entry

    def pinned_chunks(self, txn: Txn) -> set[str]:
        """The chunk ids of the current version of every pinned file."""
        return {
            block[0]
            for entry in self.files_under(txn, self.pins(txn))
            for block in entry.get("blocks", [])
        }

    def missing_pinned(self, limit: int) -> list[str]:
        """Up to ``limit`` chunk ids of pinned files that are not in the cache."""
        out: list[str] = []
        seen: set[str] = set()
        with self.read() as txn:
            for entry in self.files_under(txn, self.pins(txn)):
                for cid, _ in entry.get("blocks", []):
                    if cid in seen:
                        continue
                    seen.add(cid)
                    if txn.get(cid.encode(), db=self.db["chunk_meta"]) is None:
                        out.append(cid)
                        if len(out) >= limit:
                            return out
        return out

    def pin_usage(self, txn: Txn, entry_id: str) -> dict[str, int]:
        """What a pin holds: ``files``, ``bytes`` and ``missing`` (bytes not cached)."""
        files = size = missing = 0
        counted: set[str] = set()
        for entry in self.files_under(txn, [entry_id]):
            files += 1
            size += entry["size"]
            for cid, length in entry.get("blocks", []):
                if cid in counted:
                    continue
                counted.add(cid)
                if txn.get(cid.encode(), db=self.db["chunk_meta"]) is None:
                    missing += length
        return {"files": files, "bytes": size, "missing": missing}

    # --- the write journal ---------------------------------------------------------

    def append(self, txn: Txn, op: dict[str, Any]) -> int:
        seq = int(self._meta_get(txn, "journal_seq", 0)) + 1
        self._meta_put(txn, "journal_seq", seq)
        txn.put(_Q.pack(seq), p.encode(op), db=self.db["journal"])
        return seq

    def record(self, txn: Txn, op: dict[str, Any], *entry_ids: str) -> None:
        """Journal a local operation on ``entry_ids`` (in the caller's transaction)."""
        self.append(txn, op)
        for entry_id in entry_ids:
            self._count(txn, entry_id, +1)

    def _count(self, txn: Txn, entry_id: str, delta: int) -> None:
        key = entry_id.encode()
        count = int(p.decode(txn.get(key, db=self.db["local"]) or p.encode(0))) + delta
        if count > 0:
            txn.put(key, p.encode(count), db=self.db["local"])
        else:
            txn.delete(key, db=self.db["local"])

    def is_local(self, txn: Txn, entry_id: str) -> bool:
        """True while a local change of the entry waits in the journal."""
        return txn.get(entry_id.encode(), db=self.db["local"]) is not None

    def srev(self, txn: Txn, entry_id: str) -> int:
        raw = txn.get(entry_id.encode(), db=self.db["srev"])
        return int(p.decode(raw)) if raw is not None else 0

    def set_srev(self, txn: Txn, entry_id: str, rev: int | None) -> None:
        if rev is None:
            txn.delete(entry_id.encode(), db=self.db["srev"])
        else:
            txn.put(entry_id.encode(), p.encode(rev), db=self.db["srev"])

    def settle(self, txn: Txn, seq: int, entry_ids: list[str]) -> None:
        """A journal record reached the server: drop it and its marks on the entries."""
        self.drop_journal(txn, seq)
        for entry_id in entry_ids:
            self._count(txn, entry_id, -1)

    def rewrite(self, txn: Txn, seq: int, op: dict[str, Any]) -> None:
        """Replace a journal record in place (a refused operation, amended)."""
        txn.put(_Q.pack(seq), p.encode(op), db=self.db["journal"])

    def pending(self, limit: int, txn: Txn | None = None) -> list[tuple[int, dict[str, Any]]]:
        """The oldest ``limit`` journal records, in order."""
        if txn is None:
            with self.read() as own:
                return self.pending(limit, own)
        out: list[tuple[int, dict[str, Any]]] = []
        for key, value in txn.cursor(db=self.db["journal"]):
            out.append((int(_Q.unpack(key)[0]), p.decode(value)))
            if len(out) >= limit:
                break
        return out

    def journal_size(self) -> int:
        with self.read() as txn:
            return int(txn.stat(self.db["journal"])["entries"])

    def drop_journal(self, txn: Txn, seq: int) -> None:
        txn.delete(_Q.pack(seq), db=self.db["journal"])

    # --- chunks ----------------------------------------------------------------------

    def _tick(self, txn: Txn) -> int:
        tick = int(self._meta_get(txn, "tick", 0)) + 1
        self._meta_put(txn, "tick", tick)
        return tick

    def chunk(self, cid: str) -> bytes | None:
        """A cached chunk's content (and a note of its use, for the LRU)."""
        with self.read() as txn:
            data = txn.get(cid.encode(), db=self.db["chunks"])
            if data is None:
                return None
            content = bytes(data)
        self._touch(cid)
        return content

    def _touch(self, cid: str) -> None:
        with self.write() as txn:
            raw = txn.get(cid.encode(), db=self.db["chunk_meta"])
            if raw is None:
                return
            meta = p.decode(raw)
            txn.delete(_Q.pack(meta["tick"]) + cid.encode(), db=self.db["lru"])
            meta["tick"] = self._tick(txn)
            txn.put(_Q.pack(meta["tick"]) + cid.encode(), b"", db=self.db["lru"])
            txn.put(cid.encode(), p.encode(meta), db=self.db["chunk_meta"])

    def has_chunk(self, cid: str) -> bool:
        with self.read() as txn:
            return txn.get(cid.encode(), db=self.db["chunk_meta"]) is not None

    def put_chunk(self, cid: str, data: bytes, pending: bool) -> None:
        """Cache a chunk; ``pending`` chunks wait for upload and are never evicted."""
        with self.write() as txn:
            raw = txn.get(cid.encode(), db=self.db["chunk_meta"])
            if raw is not None:
                meta = p.decode(raw)
                if pending and not meta["pending"]:
                    meta["pending"] = True
                    txn.put(cid.encode(), p.encode(meta), db=self.db["chunk_meta"])
                return
            tick = self._tick(txn)
            txn.put(cid.encode(), data, db=self.db["chunks"])
            txn.put(
                cid.encode(),
                p.encode({"size": len(data), "tick": tick, "pending": pending}),
                db=self.db["chunk_meta"],
            )
            txn.put(_Q.pack(tick) + cid.encode(), b"", db=self.db["lru"])
            self._meta_put(txn, "bytes", int(self._meta_get(txn, "bytes", 0)) + len(data))

    def uploaded(self, cids: list[str]) -> None:
        """These chunks reached the server: they may be evicted from now on."""
        with self.write() as txn:
            for cid in cids:
                raw = txn.get(cid.encode(), db=self.db["chunk_meta"])
                if raw is not None:
                    meta = p.decode(raw)
                    meta["pending"] = False
                    txn.put(cid.encode(), p.encode(meta), db=self.db["chunk_meta"])

    def usage(self) -> dict[str, int]:
        with self.read() as txn:
            total = int(self._meta_get(txn, "bytes", 0))
            pending = 0
            for _, raw in txn.cursor(db=self.db["chunk_meta"]):
                meta = p.decode(raw)
                if meta["pending"]:
                    pending += meta["size"]
            chunks = int(txn.stat(self.db["chunks"])["entries"])
        return {"bytes": total, "pending_bytes": pending, "chunks": chunks, "cap": self.cap}

    def evict(self) -> int:
        """Drop least-recently-used chunks until under the cap, never pending or pinned
        ones; bytes freed."""
        freed = 0
        with self.write() as txn:
            total = int(self._meta_get(txn, "bytes", 0))
            if total <= self.cap:
                return 0
            pinned = self.pinned_chunks(txn)
            cursor = txn.cursor(db=self.db["lru"])
            victims: list[bytes] = []
            for key, _ in cursor:
                if total - freed <= self.cap:
                    break
                cid = key[8:]
                raw = txn.get(cid, db=self.db["chunk_meta"])
                if raw is None:
                    victims.append(key)
                    continue
                meta = p.decode(raw)
                if meta["pending"] or cid.decode() in pinned:
                    continue
                victims.append(key)
                txn.delete(cid, db=self.db["chunks"])
                txn.delete(cid, db=self.db["chunk_meta"])
                freed += meta["size"]
            for key in victims:
                txn.delete(key, db=self.db["lru"])
            self._meta_put(txn, "bytes", total - freed)
        return freed
