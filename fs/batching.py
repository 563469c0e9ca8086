"""How the head of the journal becomes one commit's batch (``Replica.build_batch``):
how much goes in one commit, which changes fold into an earlier operation of the same
batch, and which wait for a file still being written."""

from __future__ import annotations

import time
from typing import Any

from backend import protocol as p
from cache.records import Batch, Record
from fs.folding import fold, foldable
from fs.reconcile import Step

BATCH = 500
"""Journal records per commit at most."""
HOLD = 5.0
"""Seconds a new file's create waits, while a program still writes it, for the
content its close makes a version: one version (the file as written), not an empty
one first. Later records wait behind it (the journal goes up in order)."""


def _blocks(ops: list[dict[str, Any]]) -> int:
    """Blocks the operations name: a commit names ``protocol.MAX_COMMIT_BLOCKS`` at most."""
    return sum(len(op.get("blocks", ())) for op in ops)


def full(batch: Batch, step: Step) -> bool:
    """Whether the batch can take no more records, or not this step's operations."""
    return len(batch["covers"]) >= BATCH or (
        bool(batch["ops"]) and _blocks(batch["ops"]) + _blocks(step.ops) > p.MAX_COMMIT_BLOCKS
    )


def held(step: Step, record: Record, writing: frozenset[str]) -> bool:
    """Whether the step creates a file still being written, recently (``HOLD``)."""
    return time.time() - record["time"] < HOLD and any(
        op["op"] == "create" and op["entry"] in writing for op in step.ops
    )


def merge(batch: Batch, step: Step, created: dict[str, int]) -> bool:
    """Fold a content or attribute change into the batch's last create, mkdir, update
    or setattr of the same entry (the one it was planned on)."""
    if len(step.ops) != 1:
        return False
    op = step.ops[0]
    index = created.get(op["entry"])
    if index is None or not foldable(batch["ops"][index], op):
        return False
    fold(batch["ops"][index], op)
    return True
