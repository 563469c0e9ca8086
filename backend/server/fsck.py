"""Checking a server's stores for consistency (``loft fsck``).

What it proves, per namespace: the journal is whole after its horizon (sequences
horizon+1..head, no gaps, no duplicates; retention thins what is before), the live
tree agrees with the journal (each entry is its own latest version, not deleted,
under a live directory), and every chunk any version names is
recorded, present in the block store, and hashes to its id; ``ns_chunks`` holds exactly
the chunks the namespace's kept versions and entries name. Each user's kept storage
use agrees with the rows it counts (``backend.server.quota``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from backend import protocol as p
from backend.errors import LoftError
from backend.server import quota
from backend.server.blocks import BlockStore, unseal
from backend.server.database import Tx, run
from backend.server.gc import named_chunks
from backend.server.metadata import MetadataStore


@dataclass
class Report:
    namespaces: int = 0
    versions: int = 0
    entries: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def _check_tree(tx: Tx, report: Report) -> set[str]:
    """Journal and tree checks; returns every chunk id named by any version."""
    heads: dict[int, int] = {r[0]: r[1] for r in tx.execute("SELECT id, seq FROM namespaces")}
    report.namespaces = len(heads)
    horizons = {r[0]: int(r[1]) for r in tx.execute("SELECT ns, seq FROM horizons")}
    stats = {
        r[0]: r[1:]
        for r in tx.execute(
            "SELECT v.ns, COUNT(*), MIN(v.seq), MAX(v.seq) FROM versions v"
            " LEFT JOIN horizons h ON h.ns = v.ns WHERE v.seq > COALESCE(h.seq, 0)"
            " GROUP BY v.ns"
        )
    }
    report.versions = int(tx.execute("SELECT COUNT(*) FROM versions")[0][0])
    for ns, head in heads.items():
        count, low, high = stats.get(ns, (0, None, None))
        horizon = horizons.get(ns, 0)
        whole = int(head) - horizon
        if whole < 0 or int(count) != whole or (
            count and (int(low) != horizon + 1 or int(high) != int(head))
        ):
            report.problems.append(
                f"namespace {ns}: journal after its horizon {horizon} holds {count} records"
                f" ({low}..{high}), head is {head}"
            )
    latest = {
        (r[0], r[1]): (int(r[2]), bool(r[3]))
        for r in tx.execute(
            "SELECT v.ns, v.id, v.seq, v.deleted FROM versions v WHERE v.seq ="
            " (SELECT MAX(w.seq) FROM versions w WHERE w.ns = v.ns AND w.id = v.id)"
        )
    }
    live = tx.execute("SELECT ns, id, parent, kind, rev FROM entries")
    kinds = {(r[0], r[1]): r[3] for r in live}
    report.entries = len(live)
    for ns, entry_id, parent, _kind, rev in live:
        if entry_id == p.ROOT_ID:
            continue
        if latest.get((ns, entry_id)) != (int(rev), False):
            report.problems.append(f"namespace {ns}: entry {entry_id} disagrees with its journal")
        if kinds.get((ns, parent)) != "dir":
            report.problems.append(f"namespace {ns}: entry {entry_id} has no live parent directory")
    for (ns, entry_id), (_seq, deleted) in latest.items():
        if not deleted and (ns, entry_id) not in kinds:
            report.problems.append(f"namespace {ns}: entry {entry_id} missing from the tree")
    named: set[str] = set()
    for ns in heads:
        want = named_chunks(tx, ns)
        named |= want
        have = {r[0] for r in tx.execute("SELECT chunk FROM ns_chunks WHERE ns = ?", (ns,))}
        for cid in sorted(have - want):
            report.problems.append(
                f"namespace {ns}: ns_chunks holds {cid}, which no kept version names"
            )
        for cid in sorted(want - have):
            report.problems.append(f"namespace {ns}: chunk {cid} is named but not in ns_chunks")
    recorded = {r[0] for r in tx.execute("SELECT id FROM chunks")}
    for cid in sorted(named - recorded):
        report.problems.append(f"chunk {cid} is named by a file but not recorded")
    report.problems.extend(quota.check_usage(tx))
    return named


async def check(
    metadata: MetadataStore,
    blocks: BlockStore,
    progress: Callable[[int], None] | None = None,
) -> Report:
    def work(tx: Tx) -> tuple[Report, set[str]]:
        report = Report()  # each attempt afresh
        return report, _check_tree(tx, report)

    report, named = await trio.to_thread.run_sync(run, metadata.db, work)
    for cid in sorted(named):
        report.chunks += 1
        try:
            sealed = await blocks.get(cid)
            if sealed is None:
                report.problems.append(f"chunk {cid} is missing from the block store")
            elif p.chunk_id(await trio.to_thread.run_sync(unseal, sealed)) != cid:
                report.problems.append(f"chunk {cid} does not match its id")
        except LoftError as err:
            report.problems.append(f"chunk {cid}: {err}")
        if progress is not None:
            progress(1)
    return report
