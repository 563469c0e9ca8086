"""Garbage collection: retention over every namespace, then the chunks nothing keeps.

One pass (``collect``), run by ``loft gc`` and in the background of ``loft serve``:

1. Thin each namespace (``retention``), in a transaction of its own that holds the
   namespace's lock: the ``versions`` rows no kept state needs are deleted,
   ``ns_chunks`` is rebuilt from the rows that remain (and the live entries), and the
   namespace's horizon moves to the newest sequence deleted. All of it commits
   together or not at all.
2. List the block store (each blob's size and age), then the chunk records.
3. Free, a batch at a time, in one transaction per batch that first locks every
   namespace: each record no ``ns_chunks`` row names and older than the grace period
   is deleted with its grants (the ``DELETE`` re-checks both), each blob without a
   record and older than the grace period is claimed by a placeholder record, and
   only then are their blobs deleted, still inside the transaction, which commits
   last.

Why that is safe against uploads and commits running meanwhile:

- A commit in flight holds its namespace's lock: the batch waits for it, and then
  sees the ``ns_chunks`` rows it wrote. A commit that starts later waits for the
  batch, then finds the record gone and is refused ``412 missing``; the client
  uploads the chunk again.
- An upload recording the same chunk meanwhile waits on the record the batch deleted
  or claimed (PostgreSQL's unique check waits for the deleting transaction; SQLite
  has one writer), so it records the chunk only after its blob is gone, and then
  stores the blob again (``ingest.store_chunks`` looks after recording).
- The grace period keeps what an upload has stored and not yet committed: a record
  younger than it (``chunks.created``), a blob younger than it (mtime,
  ``LastModified``).

A crash in step 3 after some blobs are deleted and before the commit leaves their
records, unreferenced and past the grace period: the next pass deletes them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

import trio

from backend import protocol as p
from backend.errors import LoftError
from backend.server import accounts, quota
from backend.server.blocks import BlockStore, Stored
from backend.server.database import Tx, run
from backend.server.metadata import MetadataStore
from backend.server.retention import JournalRow, Policy, doomed
from backend.sizes import human

log = logging.getLogger("loft.server")

DEFAULT_GRACE = 3600
"""Seconds an uploaded chunk may wait for its commit before it counts as garbage."""
DEFAULT_INTERVAL = 3600
"""Seconds between the passes of ``loft serve``."""
BATCH = 200
"""Chunks freed per transaction (commits wait while one runs)."""

T = TypeVar("T")


@dataclass
class Report:
    dry_run: bool
    metadata: str
    blocks: str
    namespaces: int = 0
    """Namespaces thinned."""
    versions: int = 0
    records: int = 0
    """Chunk records (metadata) freed."""
    blobs: int = 0
    """Chunks deleted from the block store, ``orphans`` among them."""
    bytes: int = 0
    orphans: int = 0

    def lines(self) -> list[str]:
        would = "would be " if self.dry_run else ""
        free = "would free" if self.dry_run else "freed"
        return [
            f"retention: {self.versions} version(s) {would}expired"
            f" in {self.namespaces} namespace(s)",
            f"metadata {self.metadata}: {free} {self.records} chunk record(s)",
            f"blocks {self.blocks}: {free} {self.blobs} chunk(s), {human(self.bytes)}"
            f" ({self.orphans} without a record)",
        ]


async def in_tx(metadata: MetadataStore, write: bool, fn: Callable[[Tx], T]) -> T:
    return await trio.to_thread.run_sync(run, metadata.db, fn, write)


def named_chunks(tx: Tx, ns: int, without: Collection[int] = ()) -> set[str]:
    """Every chunk the namespace's versions (but those at ``without``) and entries name."""
    rows = tx.execute("SELECT seq, blocks FROM versions WHERE ns = ? AND kind = 'file'", (ns,))
    blobs = [blob for seq, blob in rows if int(seq) not in without]
    blobs += [r[0] for r in tx.execute(
        "SELECT blocks FROM entries WHERE ns = ? AND kind = 'file'", (ns,))]
    return {cid for blob in blobs if blob for cid, _ in p.decode(bytes(blob))}


def thin(tx: Tx, ns: int, policy: Policy, now: int, dry_run: bool) -> tuple[int, set[str]]:
    """Apply retention to one namespace: ``(rows deleted, chunks still named)``."""
    if not dry_run:
        tx.lock_namespace(ns)
    rows = tx.execute(
        "SELECT id, seq, deleted, committed FROM versions WHERE ns = ? ORDER BY id, seq", (ns,)
    )
    kept = policy.kept(((int(r[1]), int(r[3])) for r in rows), now)
    kept.update(int(r[0]) for r in tx.execute("SELECT seq FROM snapshots WHERE ns = ?", (ns,)))
    gone = doomed([JournalRow(r[0], int(r[1]), bool(r[2])) for r in rows], kept)
    if not gone:
        return 0, {r[0] for r in tx.execute("SELECT chunk FROM ns_chunks WHERE ns = ?", (ns,))}
    named = named_chunks(tx, ns, set(gone))
    if dry_run:
        return len(gone), named
    for start in range(0, len(gone), 500):
        batch = gone[start : start + 500]
        marks = ",".join("?" * len(batch))
        tx.execute(f"DELETE FROM versions WHERE ns = ? AND seq IN ({marks})", (ns, *batch))
    recorded = {r[0] for r in tx.execute("SELECT chunk FROM ns_chunks WHERE ns = ?", (ns,))}
    dropped = sorted(recorded - named)
    for cid in dropped:
        tx.execute("DELETE FROM ns_chunks WHERE ns = ? AND chunk = ?", (ns, cid))
    # Storage use changes for the owner, and for whoever holds a grant of a chunk
    # no namespace may name any more.
    owners = tx.execute("SELECT owner FROM namespaces WHERE id = ?", (ns,))
    quota.forget(tx, {int(r[0]) for r in owners} | _grantees(tx, dropped))
    for cid in named - recorded:
        tx.execute("INSERT INTO ns_chunks (ns, chunk) VALUES (?, ?)", (ns, cid))
    before = tx.execute("SELECT seq FROM horizons WHERE ns = ?", (ns,))
    horizon = max([max(gone)] + [int(r[0]) for r in before])
    tx.execute(
        "INSERT INTO horizons (ns, seq) VALUES (?, ?)"
        " ON CONFLICT (ns) DO UPDATE SET seq = excluded.seq",
        (ns, horizon),
    )
    return len(gone), named


def _grantees(tx: Tx, cids: list[str]) -> set[int]:
    users: set[int] = set()
    for start in range(0, len(cids), 500):
        batch = cids[start : start + 500]
        marks = ",".join("?" * len(batch))
        rows = tx.execute(f"SELECT DISTINCT user_id FROM chunk_grants WHERE chunk IN ({marks})",
                          batch)
        users.update(int(r[0]) for r in rows)
    return users


def _lock_all(tx: Tx) -> None:
    """Lock every namespace, in id order, including any created meanwhile."""
    locked: set[int] = set()
    while True:
        ids = [int(r[0]) for r in tx.execute("SELECT id FROM namespaces ORDER BY id")]
        fresh = [ns for ns in ids if ns not in locked]
        if not fresh:
            return
        for ns in fresh:
            tx.lock_namespace(ns)
            locked.add(ns)


def free_batch(
    metadata: MetadataStore, blocks: BlockStore, dead: list[str], orphans: list[str],
    cutoff: int,
) -> tuple[list[str], list[str]]:
    """One batch (step 3; runs in a worker thread): ``(records freed, orphans freed)``.

    Chunk ids are taken in ascending order, records and orphans together, as uploads
    record them (``quota.record_chunks``), so that the two never wait on each other in
    a cycle; storage totals are dropped, in user order, before any chunk is touched, as
    uploads change them before they record a chunk. A transaction the engine still
    aborts runs again (``database.run``); no block is deleted before its last statement
    that can wait on another transaction.
    """
    orphan = set(orphans)

    def work(tx: Tx) -> tuple[list[str], list[str]]:
        _lock_all(tx)
        quota.forget(tx, _grantees(tx, dead))
        freed: list[str] = []
        claimed: list[str] = []
        for cid in sorted(dead + orphans):
            if cid in orphan:
                if tx.execute(
                    "INSERT INTO chunks (id, size, stored, created) VALUES (?, 0, 0, 0)"
                    " ON CONFLICT DO NOTHING RETURNING id",
                    (cid,),
                ):
                    claimed.append(cid)
            elif tx.execute(
                "DELETE FROM chunks WHERE id = ? AND created <= ?"
                " AND NOT EXISTS (SELECT 1 FROM ns_chunks n WHERE n.chunk = ?) RETURNING id",
                (cid, cutoff, cid),
            ):
                freed.append(cid)
        for cid in freed:
            tx.execute("DELETE FROM chunk_grants WHERE chunk = ?", (cid,))
        for cid in freed + claimed:
            trio.from_thread.run(blocks.delete, cid)
        for cid in claimed:
            tx.execute("DELETE FROM chunks WHERE id = ?", (cid,))
        return freed, claimed

    return run(metadata.db, work)


async def collect(
    metadata: MetadataStore, blocks: BlockStore, policy: Policy, grace: int,
    dry_run: bool = False, now: int | None = None,
) -> Report:
    """One pass; ``now`` is retention's clock (the grace period always reads the real one)."""
    wall = int(time.time())
    report = Report(dry_run, safe_url(metadata.db.url), blocks.url)
    if not dry_run:  # tokens no device presented or renewed in time
        await in_tx(metadata, True, lambda tx: accounts.purge_expired(tx, wall))
    namespaces = await in_tx(
        metadata, False, lambda tx: [int(r[0]) for r in tx.execute("SELECT id FROM namespaces")]
    )
    referenced: set[str] = set()
    for ns in namespaces:
        work = functools.partial(thin, ns=ns, policy=policy, now=wall if now is None else now,
                                 dry_run=dry_run)
        count, named = await in_tx(metadata, not dry_run, work)
        report.versions += count
        report.namespaces += bool(count)
        referenced |= named
    cutoff = wall - grace
    listing: dict[str, Stored] = {chunk.cid: chunk async for chunk in blocks.stored()}
    records = await in_tx(
        metadata, False, lambda tx: {r[0]: int(r[1]) for r in tx.execute(
            "SELECT id, created FROM chunks")}
    )
    dead = sorted(c for c, created in records.items() if created <= cutoff and c not in referenced)
    orphans = sorted(c for c, s in listing.items() if c not in records and s.modified <= cutoff)
    if dry_run:
        _count(report, listing, dead, orphans)
        return report
    for start in range(0, max(len(dead), len(orphans)), BATCH):
        freed, claimed = await trio.to_thread.run_sync(
            free_batch, metadata, blocks, dead[start : start + BATCH],
            orphans[start : start + BATCH], cutoff,
        )
        _count(report, listing, freed, claimed)
    return report


def _count(
    report: Report, listing: dict[str, Stored], freed: list[str], orphans: list[str]
) -> None:
    report.records += len(freed)
    report.orphans += len(orphans)
    for cid in freed + orphans:
        if cid in listing:
            report.blobs += 1
            report.bytes += listing[cid].size


def safe_url(url: str) -> str:
    """A URL without its password, for logs and output."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}@{host}"
    return url


async def every(
    metadata: MetadataStore, blocks: BlockStore, policy: Policy, interval: int, grace: int
) -> None:
    """``loft serve``'s background collection: a pass every ``interval`` seconds, one
    log line each; a failed pass is logged and the next one tries again."""
    while True:
        await trio.sleep(interval)
        started = time.monotonic()
        try:
            report = await collect(metadata, blocks, policy, grace)
        except LoftError as err:
            log.error("gc pass failed: %s", err)
            continue
        log.info(
            "gc pass in %.1fs: %d version(s) expired, %d chunk record(s) and %d chunk(s)"
            " freed (%s, %d without a record)", time.monotonic() - started, report.versions,
            report.records, report.blobs, human(report.bytes), report.orphans,
        )
