"""Appending to a namespace's journal: one batch of operations, once, in a transaction.

``append`` is the body of every commit, whether a device sent it to the namespace
itself or to its root namespace with shared folders mounted in it
(``backend.server.mounts`` splits such a batch by namespace and appends each part in
the same transaction). It checks the caller's role, locks the namespace (its journal
head), answers a batch seen before with its first results (exactly-once by op id),
applies the operations (``backend.server.commit``), charges the owner's quota and
advances the head, notifying other server nodes inside the transaction.

``write_entry`` records one entry state outside a device's commit (a shared folder's
mount appearing, changing role or going away) under the namespace's next sequence.
"""

from __future__ import annotations

from typing import Any

from backend import protocol as p
from backend.errors import BadRequest, Forbidden, NotFound
from backend.server import quota
from backend.server.commit import apply_commit
from backend.server.commit_context import CommitContext
from backend.server.database import Tx

WRITE_ROLES = ("owner", "editor")


def role(tx: Tx, user_id: int, ns: int) -> str:
    """The user's role in ``ns``; NotFound (the same whether ``ns`` exists or not)."""
    rows = tx.execute("SELECT role FROM members WHERE ns = ? AND user_id = ?", (ns, user_id))
    if not rows:
        raise NotFound(f"no namespace {ns}")
    return str(rows[0][0])


def check_writer(tx: Tx, user_id: int, ns: int) -> None:
    if role(tx, user_id, ns) not in WRITE_ROLES:
        raise Forbidden("this folder is shared with you read-only")


def append(
    tx: Tx, user_id: int, device: str, ns: int, ops: list[dict[str, Any]], now: int
) -> dict[str, Any]:
    """Apply ``ops`` to ``ns`` (all or nothing): ``{seq, head, results[, replayed]}``."""
    check_writer(tx, user_id, ns)
    head = tx.lock_namespace(ns)
    assert head is not None  # a member row implies the namespace
    op_ids = [op["op_id"] for op in ops]
    marks = ",".join("?" * len(op_ids))
    done = tx.execute(
        f"SELECT op_id, seq, result FROM applied_ops WHERE ns = ? AND op_id IN ({marks})",
        (ns, *op_ids),
    )
    if done:
        if len(done) != len(op_ids):
            raise BadRequest("some operation ids of this commit were used before")
        earlier = {r[0]: p.decode(bytes(r[2])) for r in done}
        return {
            "seq": max(int(r[1]) for r in done),
            "head": head,
            "results": [earlier[i] for i in op_ids],
            "replayed": True,
        }
    ctx = CommitContext(tx, ns, user_id, device, now, head)
    results = apply_commit(ctx, ops)
    quota.charge_commit(tx, ns, ctx.referenced)
    for op_id, result in zip(op_ids, results, strict=True):
        tx.execute(
            "INSERT INTO applied_ops (ns, op_id, seq, result) VALUES (?, ?, ?, ?)",
            (ns, op_id, ctx.seq, p.encode(result)),
        )
    advance(tx, ns, ctx.seq)
    return {"seq": ctx.seq, "head": ctx.seq, "results": results}


def advance(tx: Tx, ns: int, seq: int) -> None:
    tx.execute("UPDATE namespaces SET seq = ? WHERE id = ?", (seq, ns))
    tx.notify(ns, seq)


def write_entry(
    tx: Tx, ns: int, user_id: int, device: str, now: int, entry: dict[str, Any],
    deleted: bool = False,
) -> int:
    """Record ``entry`` (or its end) as the next version of ``ns``; the new head."""
    head = tx.lock_namespace(ns)
    assert head is not None
    ctx = CommitContext(tx, ns, user_id, device, now, head)
    seq = ctx.write(entry, deleted)
    advance(tx, ns, seq)
    return seq
