"""Storage accounting and quotas: how much each user's data holds, against their limit.

A user's *use* is the plain size (bytes before compression) of the distinct chunks
named by the namespaces they own (``ns_chunks`` of ``namespaces.owner``), plus the
chunks they uploaded (``chunk_grants``) that no namespace names yet. A chunk counts
once per user however many files, versions or namespaces name it; the journal names
old versions too, so history counts until retention expires it. Whoever commits to a
shared namespace, its owner pays.

The table ``usage (user_id, bytes)`` keeps each use as a running total, changed in the
same transaction as the rows it counts (``record_chunks``, ``charge_commit``), so that
no commit scans a namespace. A missing row is computed afresh (``USAGE_SQL``) when
next needed, and kept: whatever deletes ``ns_chunks``, ``chunk_grants`` or ``chunks``
rows (retention, gc) calls ``forget`` for the users concerned, in its transaction.
``loft fsck`` checks every kept total against ``USAGE_SQL`` (``check_usage``). On
PostgreSQL (read committed) two transactions that make the same new chunk counted at
the same instant can leave a total off by that chunk, and concurrent uploads of one
user can pass the quota by what they hold: fsck reports the first, ``forget`` mends it.

Enforcement: an upload that would take its uploader over quota, or a commit that would
take the namespace's owner over, raises ``QuotaExceeded`` before anything of it is
kept. A change that adds nothing (a chunk already counted, a rename, a delete) passes
even over quota.
"""

from __future__ import annotations

from collections.abc import Iterable

from backend.errors import NotFound, QuotaExceeded
from backend.server.database import Tx
from backend.sizes import human

USAGE_SQL = """
    SELECT COALESCE(SUM(c.size), 0) FROM chunks c WHERE c.id IN (
        SELECT n.chunk FROM ns_chunks n JOIN namespaces s ON s.id = n.ns WHERE s.owner = ?
        UNION
        SELECT g.chunk FROM chunk_grants g WHERE g.user_id = ?
            AND NOT EXISTS (SELECT 1 FROM ns_chunks r WHERE r.chunk = g.chunk))
"""
"""A user's use (parameters: user id twice), from the rows themselves."""


def computed(tx: Tx, user_id: int) -> int:
    return int(tx.execute(USAGE_SQL, (user_id, user_id))[0][0])


def usage(tx: Tx, user_id: int, keep: bool = True) -> int:
    """The user's use: the running total, or computed (and kept, if ``keep``)."""
    rows = tx.execute("SELECT bytes FROM usage WHERE user_id = ?", (user_id,))
    if rows:
        return int(rows[0][0])
    total = computed(tx, user_id)
    if keep:
        tx.execute(
            "INSERT INTO usage (user_id, bytes) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (user_id, total),
        )
    return total


def limit(tx: Tx, user_id: int) -> int | None:
    """The user's quota in bytes; None for no limit."""
    rows = tx.execute("SELECT bytes FROM quotas WHERE user_id = ?", (user_id,))
    return int(rows[0][0]) if rows else None


def storage(tx: Tx, user_id: int) -> tuple[int, int | None]:
    """``(use, quota)`` for ``GET /v1/whoami``: a read, nothing kept."""
    return usage(tx, user_id, keep=False), limit(tx, user_id)


def set_limit(tx: Tx, name: str, quota: int | None) -> int:
    """Set (None: remove) the quota of the user called ``name``; their use."""
    rows = tx.execute("SELECT id FROM users WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no user {name}")
    user_id = int(rows[0][0])
    tx.execute("DELETE FROM quotas WHERE user_id = ?", (user_id,))
    if quota is not None:
        tx.execute("INSERT INTO quotas (user_id, bytes) VALUES (?, ?)", (user_id, quota))
    return usage(tx, user_id)


def forget(tx: Tx, user_ids: Iterable[int] | None = None) -> None:
    """Drop kept totals (every one if None); each is computed again when next needed."""
    if user_ids is None:
        tx.execute("DELETE FROM usage")
    for user_id in sorted(user_ids or ()):  # in order: see ``record_chunks``
        tx.execute("DELETE FROM usage WHERE user_id = ?", (user_id,))


def check(tx: Tx, user_id: int, needed: int) -> None:
    """Refuse ``needed`` more bytes for the user if that would pass their quota."""
    quota = limit(tx, user_id)
    if needed <= 0 or quota is None:
        return
    used = usage(tx, user_id)
    if used + needed > quota:
        raise QuotaExceeded(
            f"over quota: {human(used + needed)} used of {human(quota)}",
            {"usage": used, "quota": quota, "needed": needed},
        )


def _add(tx: Tx, user_id: int, delta: int) -> None:
    """Change a kept total (a missing one stays missing: computed when needed)."""
    if delta:
        tx.execute("UPDATE usage SET bytes = bytes + ? WHERE user_id = ?", (delta, user_id))


def _referenced(tx: Tx, cid: str, besides: int = -1) -> bool:
    """Whether a namespace (other than ``besides``) names the chunk."""
    return bool(
        tx.execute("SELECT 1 FROM ns_chunks WHERE chunk = ? AND ns <> ? LIMIT 1", (cid, besides))
    )


def upload_charge(tx: Tx, user_id: int, chunks: dict[str, int]) -> int:
    """What granting these chunks (id → size) would add to the user's use: those
    neither granted to them before nor named by any namespace."""
    charge = 0
    for cid, size in chunks.items():
        granted = tx.execute(
            "SELECT 1 FROM chunk_grants WHERE user_id = ? AND chunk = ?", (user_id, cid)
        )
        if not granted and not _referenced(tx, cid):
            charge += size
    return charge


def record_chunks(
    tx: Tx, records: list[tuple[int, str, int, int]], now: int
) -> dict[int, QuotaExceeded]:
    """Record chunks ``(user, id, size, size at rest)`` and grant them to their
    uploaders, charging each; a user this would take over quota is refused (none of
    their chunks recorded). Those refusals, by user.

    Rows are locked in one order everywhere (totals by user, then chunks by id, then
    grants), the order gc frees in, so that neither waits on the other in a cycle."""
    by_user: dict[int, dict[str, tuple[int, int]]] = {}
    for user_id, cid, size, stored in records:
        by_user.setdefault(user_id, {})[cid] = (size, stored)
    refused: dict[int, QuotaExceeded] = {}
    accepted: dict[str, tuple[int, int]] = {}
    for user_id, chunks in sorted(by_user.items()):
        charge = upload_charge(tx, user_id, {cid: size for cid, (size, _) in chunks.items()})
        try:
            check(tx, user_id, charge)
        except QuotaExceeded as err:
            refused[user_id] = err
            continue
        _add(tx, user_id, charge)
        for cid, sizes in chunks.items():
            accepted.setdefault(cid, sizes)
    for cid, (size, stored) in sorted(accepted.items()):
        tx.execute(
            "INSERT INTO chunks (id, size, stored, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (cid, size, stored, now),
        )
    grants = sorted((u, cid) for u, chunks in by_user.items() if u not in refused for cid in chunks)
    for user_id, cid in grants:
        tx.execute(
            "INSERT INTO chunk_grants (user_id, chunk) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (user_id, cid),
        )
    return refused


def charge_commit(tx: Tx, ns: int, referenced: dict[str, int]) -> None:
    """Account for chunks (id → size) the commit made ``ns`` name for the first time:
    the owner pays for those no other namespace of theirs names, the uploaders stop
    paying for those no namespace named before. Refuses (``QuotaExceeded``) a commit
    that would take the owner over quota; the caller's transaction then rolls back."""
    if not referenced:
        return
    owner = int(tx.execute("SELECT owner FROM namespaces WHERE id = ?", (ns,))[0][0])
    deltas: dict[int, int] = {}
    for cid, size in sorted(referenced.items()):
        if not _referenced(tx, cid, besides=ns):
            for (uploader,) in tx.execute(
                "SELECT user_id FROM chunk_grants WHERE chunk = ?", (cid,)
            ):
                deltas[int(uploader)] = deltas.get(int(uploader), 0) - size
            deltas[owner] = deltas.get(owner, 0) + size
        elif not tx.execute(
            "SELECT 1 FROM ns_chunks n JOIN namespaces s ON s.id = n.ns"
            " WHERE n.chunk = ? AND n.ns <> ? AND s.owner = ? LIMIT 1",
            (cid, ns, owner),
        ):
            deltas[owner] = deltas.get(owner, 0) + size
    if not tx.execute("SELECT 1 FROM usage WHERE user_id = ?", (owner,)):
        # Not kept: computed now it already holds this commit, charged just below.
        before = computed(tx, owner) - deltas.get(owner, 0)
        tx.execute("INSERT INTO usage (user_id, bytes) VALUES (?, ?)", (owner, before))
    check(tx, owner, deltas.get(owner, 0))
    for user_id, delta in sorted(deltas.items()):
        _add(tx, user_id, delta)


def check_usage(tx: Tx) -> list[str]:
    """Every kept total that disagrees with the rows it counts (for ``loft fsck``)."""
    problems = []
    for user_id, kept in tx.execute("SELECT user_id, bytes FROM usage ORDER BY user_id"):
        actual = computed(tx, int(user_id))
        if int(kept) != actual:
            problems.append(f"user {user_id}: storage use kept as {kept} bytes, is {actual}")
    return problems
