"""The chunk cache: chunk contents by id, with a size cap and LRU eviction.

Chunks marked ``pending`` (written locally, not yet uploaded) are never evicted;
a chunk a seal cut from an edit of an older one notes that one as its ``base``: the
chunk it may be uploaded as a delta against (``fs.deltas``);
neither are the chunks of the current version of a pinned file (``cache.pins``);
others are evicted least-recently-used first once the cache exceeds its cap.

Reads never write: a read notes its use in memory (``_used``), and the writer folds
those notes into the ``lru`` order when it next trims (``flush_ticks``), so a cached
read never waits for the writer lock. A use noted in memory and lost in a crash only
makes that chunk look older. Every ``RELEASE_BYTES`` read or stored, the pages of the
map touched meanwhile are given back (``cache.mapped``; storing touches some too): a
stream of chunks through the cache does not pile up in the mount's resident set.

``meta`` keeps the totals ``bytes`` (all cached chunks) and ``pending_bytes`` (those
waiting for an upload), updated with every change, so ``usage()`` reads two numbers
whatever the cache holds.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from backend import protocol as p
from cache.env import Env, Q, Txn

RELEASE_BYTES = 4 << 20
"""Chunk bytes read or stored between two releases of the map's pages."""


class ChunkMeta(TypedDict):
    size: int
    tick: int
    pending: bool
    base: NotRequired[str]
    """The chunk of the file's previous version this one replaced (a delta base)."""


class Usage(TypedDict):
    bytes: int
    pending_bytes: int
    chunks: int
    cap: int


class Chunks:
    def __init__(self, env: Env, cap: int) -> None:
        self.env = env
        self.cap = cap
        self.data = env.db["chunks"]
        self.meta_db = env.db["chunk_meta"]
        self.lru = env.db["lru"]
        self._used: set[str] = set()
        self._moved = 0

    # --- reads (any thread, never write) -----------------------------------------

    def get(self, cid: str) -> bytes | None:
        with self.env.read() as txn:
            data = txn.get(cid.encode(), db=self.data)
            if data is None:
                return None
            content = bytes(data)
        self._used.add(cid)
        self._touched(len(content))
        return content

    def _touched(self, size: int) -> None:
        self._moved += size
        if self._moved >= RELEASE_BYTES:  # a race here only moves a release a little
            self._moved = 0
            self.env.release_pages()

    def has(self, cid: str) -> bool:
        with self.env.read() as txn:
            return txn.get(cid.encode(), db=self.meta_db) is not None

    def pending(self, txn: Txn) -> list[str]:
        """The chunks waiting for an upload."""
        return [bytes(key).decode() for key, raw in txn.cursor(db=self.meta_db)
                if p.decode(bytes(raw))["pending"]]

    def meta(self, txn: Txn, cid: str) -> ChunkMeta | None:
        raw = txn.get(cid.encode(), db=self.meta_db)
        return p.decode(bytes(raw)) if raw is not None else None

    def usage(self) -> Usage:
        with self.env.read() as txn:
            return Usage(
                bytes=int(self.env.meta_get(txn, "bytes", 0)),
                pending_bytes=int(self.env.meta_get(txn, "pending_bytes", 0)),
                chunks=self.env.count(txn, "chunks"),
                cap=self.cap,
            )

    # --- writes (the writer's thread) --------------------------------------------

    def count_pending(self, txn: Txn) -> None:
        """Set ``pending_bytes`` from the chunks themselves (a cache of a version
        without that total)."""
        total = sum(meta["size"] for _, raw in txn.cursor(db=self.meta_db)
                    if (meta := p.decode(bytes(raw)))["pending"])
        self.env.meta_put(txn, "pending_bytes", total)

    def _add_pending(self, txn: Txn, size: int) -> None:
        total = int(self.env.meta_get(txn, "pending_bytes", 0)) + size
        self.env.meta_put(txn, "pending_bytes", total)

    def _tick(self, txn: Txn) -> int:
        tick = int(self.env.meta_get(txn, "tick", 0)) + 1
        self.env.meta_put(txn, "tick", tick)
        return tick

    def put(
        self, txn: Txn, cid: str, data: bytes, pending: bool, base: str | None = None
    ) -> None:
        """Cache a chunk; ``pending`` chunks wait for upload and are never evicted;
        ``base``: the chunk it is an edit of."""
        meta = self.meta(txn, cid)
        if meta is not None:
            if pending and not meta["pending"]:
                meta["pending"] = True
                txn.put(cid.encode(), p.encode(meta), db=self.meta_db)
                self._add_pending(txn, meta["size"])
            return
        tick = self._tick(txn)
        txn.put(cid.encode(), data, db=self.data)
        meta = ChunkMeta(size=len(data), tick=tick, pending=pending)
        if base is not None and base != cid:
            meta["base"] = base
        txn.put(cid.encode(), p.encode(meta), db=self.meta_db)
        txn.put(Q.pack(tick) + cid.encode(), b"", db=self.lru)
        self.env.meta_put(txn, "bytes", int(self.env.meta_get(txn, "bytes", 0)) + len(data))
        if pending:
            self._add_pending(txn, len(data))
        self._touched(len(data))

    def release(self, txn: Txn, cids: list[str]) -> None:
        """These chunks wait for no upload any more (they reached the server, or no
        change left in the journal names them): they may be evicted from now on."""
        for cid in cids:
            meta = self.meta(txn, cid)
            if meta is not None and meta["pending"]:
                meta["pending"] = False
                txn.put(cid.encode(), p.encode(meta), db=self.meta_db)
                self._add_pending(txn, -meta["size"])

    def flush_ticks(self, txn: Txn) -> None:
        """Move the chunks read since the last call to the young end of the LRU."""
        used, self._used = self._used, set()
        for cid in used:
            meta = self.meta(txn, cid)
            if meta is None:
                continue
            txn.delete(Q.pack(meta["tick"]) + cid.encode(), db=self.lru)
            meta["tick"] = self._tick(txn)
            txn.put(Q.pack(meta["tick"]) + cid.encode(), b"", db=self.lru)
            txn.put(cid.encode(), p.encode(meta), db=self.meta_db)

    def evict(self, txn: Txn, pinned: set[str], budget: int = 256) -> int:
        """Drop least-recently-used chunks until under the cap, never pending or pinned
        ones, at most ``budget`` per call (the writer is shared: the caller calls
        again while this returns non-zero); bytes freed."""
        total = int(self.env.meta_get(txn, "bytes", 0))
        if total <= self.cap:
            return 0
        freed = 0
        victims: list[bytes] = []
        for key, _ in txn.cursor(db=self.lru):
            if total - freed <= self.cap or len(victims) >= budget:
                break
            key = bytes(key)
            cid = key[8:]
            meta = self.meta(txn, cid.decode())
            if meta is None:
                victims.append(key)
                continue
            if meta["pending"] or cid.decode() in pinned:
                continue
            victims.append(key)
            txn.delete(cid, db=self.data)
            txn.delete(cid, db=self.meta_db)
            freed += meta["size"]
        for key in victims:
            txn.delete(key, db=self.lru)
        self.env.meta_put(txn, "bytes", total - freed)
        return freed
