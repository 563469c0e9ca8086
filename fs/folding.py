"""Folding a change into an earlier one of the same entry: one version instead of
two, on the same base. The uploader folds within a commit (``batching.merge``); a
change recorded while the entry's own change is still the journal's last record, not
sent yet, folds into that record where it is made (``fold_into_last``): a file
fsync'd in a loop, or written, closed and given its times by ``tar``, keeps one
record, not one per call."""

from __future__ import annotations

from cache.env import Txn
from cache.records import Batch, Entry, WireOp
from cache.store import Cache

FOLD_SCAN = 16
"""Journal records at most for an update to fold into the last one when that frees
chunks: whether another record names them is read from each."""


def foldable(target: WireOp, op: WireOp) -> bool:
    """Whether ``op`` (an update or setattr) can be folded into ``target``, an earlier
    operation on the same entry."""
    return (
        op["op"] in ("update", "setattr")
        and target["op"] in ("create", "mkdir", "update", "setattr")
        and target["entry"] == op["entry"]
        and not (target["op"] == "setattr" and op["op"] == "update")  # no content to carry
    )


def fold(target: WireOp, op: WireOp) -> None:
    for key in ("size", "blocks", "mode", "mtime"):
        if key in op:
            target[key] = op[key]


def fold_into_last(
    cache: Cache, txn: Txn, op: WireOp, snap: Entry | None, sent_upto: int
) -> bool:
    """Fold an update or setattr into the journal's last record if that is a change
    of the same entry, unacknowledged, never refused and not in the commit in flight
    (only a record up to ``sent_upto`` may be: the batch is read only then). An update
    folds only onto the content it was written over (``snap``); the record keeps its
    snapshot, so if that entry changes elsewhere meanwhile, the folded content goes
    up as one conflicted copy. The record moves to the journal's end (a new sequence,
    as a new change would). Chunks only the folded-over version named wait for no
    upload any more; finding whether another record names them reads the journal, so
    with more than ``FOLD_SCAN`` records such an update is not folded."""
    seq = cache.journal.last(txn)
    last = cache.journal.get(txn, seq)
    if last is None or last["acked"] is not None or last["tries"]:
        return False  # a record the server refused (or a rescue) may yet be given up
    if not foldable(last["op"], op):
        return False
    target = last["op"]
    orphans: set[str] = set()
    if op["op"] == "update":
        if snap is None or (target.get("size"), target.get("blocks")) != (
            snap["size"], snap.get("blocks")
        ):
            return False
        orphans = {b[0] for b in target.get("blocks", [])} - {b[0] for b in op["blocks"]}
        if orphans and cache.journal.size(txn) > FOLD_SCAN:
            return False
    if seq <= sent_upto and _in_flight(cache, txn, seq):
        return False
    fold(target, op)
    cache.journal.drop(txn, seq)
    cache.release_unnamed(txn, orphans, skip=cache.journal.append(txn, last))
    return True


def _in_flight(cache: Cache, txn: Txn, seq: int) -> bool:
    inflight: Batch | None = cache.env.meta_get(txn, "inflight")
    return inflight is not None and any(covered == seq for covered, _ in inflight["covers"])
