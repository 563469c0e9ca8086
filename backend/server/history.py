"""The past of a namespace, read from its journal (the ``versions`` table).

The state at sequence ``seq`` is, for every entry, its last ``versions`` row at or
before ``seq``, unless that row ends the entry (``deleted``). Every question here is
answered from indexes, never by rebuilding a whole tree:

* an entry at ``seq``: its last row ``<= seq`` (``versions_entry``);
* a folder's children at ``seq``: the entries that ever had a row under the folder
  ``<= seq`` (``versions_place``), each kept if its last row ``<= seq`` is still
  under the folder and alive;
* the sequence at an instant: the last one committed at or before it
  (``versions_time``).

The root has no rows: it is the same at every sequence. Instants are unix seconds
(UTC); commit times within a namespace follow its sequence.
"""

from __future__ import annotations

from typing import Any

from backend import protocol as p
from backend.errors import BadRequest, Exists, NotFound
from backend.server.database import Tx
from backend.server.rows import ENTRY_COLUMNS, VERSION_COLUMNS, entry_from_row

DAY = 86_400
MAX_INSTANTS = 100_000
"""Instants answered in one ``instants`` call (a day has at most 86,400)."""


def seq_at(tx: Tx, ns: int, when: int) -> int:
    """The last sequence committed at or before unix second ``when`` (0: none)."""
    rows = tx.execute(
        "SELECT MAX(seq) FROM versions WHERE ns = ? AND committed <= ?", (ns, when)
    )
    return int(rows[0][0] or 0)


def time_of(tx: Tx, ns: int, seq: int) -> int | None:
    rows = tx.execute(
        "SELECT committed FROM versions WHERE ns = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
        (ns, seq),
    )
    return int(rows[0][0]) if rows else None


def _record(row: Any) -> dict[str, Any]:
    entry = entry_from_row(row)  # ``rev``: the row's seq
    entry.pop("deleted", None)
    return entry


def entry_at(tx: Tx, ns: int, entry_id: str, seq: int) -> dict[str, Any] | None:
    """The entry as it was at ``seq``, or None if it did not exist then."""
    if entry_id == p.ROOT_ID:
        rows = tx.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND id = ?", (ns, p.ROOT_ID)
        )
        return entry_from_row(rows[0]) if rows else None
    rows = tx.execute(
        f"SELECT {VERSION_COLUMNS} FROM versions WHERE ns = ? AND id = ? AND seq <= ?"
        " ORDER BY seq DESC LIMIT 1",
        (ns, entry_id, seq),
    )
    if not rows or rows[0][10]:
        return None
    return _record(rows[0])


def _alive_under(
    tx: Tx, ns: int, ids: list[str], parent: str, seq: int, name: str | None = None
) -> list[dict[str, Any]]:
    out = []
    for entry_id in ids:
        entry = entry_at(tx, ns, entry_id, seq)
        if entry is not None and entry["parent"] == parent and name in (None, entry["name"]):
            out.append(entry)
    return out


def child_at(tx: Tx, ns: int, parent: str, name: str, seq: int) -> dict[str, Any] | None:
    rows = tx.execute(
        "SELECT DISTINCT id FROM versions WHERE ns = ? AND parent = ? AND name = ?"
        " AND seq <= ?",
        (ns, parent, name, seq),
    )
    found = _alive_under(tx, ns, [r[0] for r in rows], parent, seq, name)
    return found[0] if found else None


def children_at(tx: Tx, ns: int, parent: str, seq: int) -> list[dict[str, Any]]:
    rows = tx.execute(
        "SELECT DISTINCT id FROM versions WHERE ns = ? AND parent = ? AND seq <= ?",
        (ns, parent, seq),
    )
    found = _alive_under(tx, ns, [r[0] for r in rows], parent, seq)
    return sorted(found, key=lambda e: e["name"])


def path_at(tx: Tx, ns: int, path: list[str], seq: int) -> dict[str, Any]:
    entry = entry_at(tx, ns, p.ROOT_ID, seq)
    assert entry is not None  # every namespace has its root
    for depth, name in enumerate(path):
        found = child_at(tx, ns, entry["id"], name, seq) if entry["kind"] == "dir" else None
        if found is None:
            raise NotFound(f"{p.join_path(path[: depth + 1])}: not there at that time")
        entry = found
    return entry


def place(tx: Tx, ns: int, parent: str, name: str) -> list[dict[str, Any]]:
    """Every version of every entry that was ever ``name`` in ``parent``, oldest
    first, each with ``seq``, ``committed``, ``device`` and ``deleted`` (a deletion
    also with ``before``: the sequence where it was last whole)."""
    ids = [r[0] for r in tx.execute(
        "SELECT DISTINCT id FROM versions WHERE ns = ? AND parent = ? AND name = ?",
        (ns, parent, name),
    )]
    out: list[dict[str, Any]] = []
    for entry_id in ids:
        for row in tx.execute(
            f"SELECT {VERSION_COLUMNS}, device, committed FROM versions"
            " WHERE ns = ? AND id = ? ORDER BY seq",
            (ns, entry_id),
        ):
            record = entry_from_row(row[:11])
            record["seq"] = record.pop("rev")
            record["device"], record["committed"] = row[11], int(row[12])
            if record["deleted"]:
                record["before"] = _before_deletions(tx, ns, record["seq"])
            out.append(record)
    out.sort(key=lambda r: r["seq"])
    return out


def _before_deletions(tx: Tx, ns: int, seq: int) -> int:
    """The sequence just before the run of deletions that ends at ``seq``: a folder's
    content is deleted before the folder (``rm -r``, or a recursive delete), so this
    is where a deleted folder was last whole."""
    rows = tx.execute(
        "SELECT MAX(seq) FROM versions WHERE ns = ? AND seq < ? AND deleted = 0", (ns, seq)
    )
    return int(rows[0][0] or 0)


def names(tx: Tx, ns: int, parent: str) -> list[str]:
    """Every name an entry ever had in ``parent``, deleted ones too."""
    rows = tx.execute(
        "SELECT DISTINCT name FROM versions WHERE ns = ? AND parent = ? ORDER BY name",
        (ns, parent),
    )
    return [r[0] for r in rows]


def days(tx: Tx, ns: int) -> list[int]:
    """The days (unix second of 00:00 UTC) with at least one commit, oldest first."""
    rows = tx.execute(
        f"SELECT DISTINCT committed - (committed % {DAY}) FROM versions WHERE ns = ?"
        " ORDER BY 1",
        (ns,),
    )
    return [int(r[0]) for r in rows]


def instants(tx: Tx, ns: int, start: int, end: int) -> list[list[int]]:
    """``[second, last seq committed in it]`` for each second in ``[start, end)`` with
    a commit, oldest first."""
    rows = tx.execute(
        "SELECT committed, MAX(seq) FROM versions WHERE ns = ? AND committed >= ?"
        " AND committed < ? GROUP BY committed ORDER BY committed LIMIT ?",
        (ns, start, end, MAX_INSTANTS),
    )
    return [[int(r[0]), int(r[1])] for r in rows]


# --- snapshots ------------------------------------------------------------------------


def snapshots(tx: Tx, ns: int) -> list[dict[str, Any]]:
    rows = tx.execute(
        "SELECT s.name, s.seq, s.root, s.created,"
        " (SELECT MAX(v.committed) FROM versions v WHERE v.ns = s.ns AND v.seq <= s.seq)"
        " FROM snapshots s WHERE s.ns = ? ORDER BY s.created, s.name",
        (ns,),
    )
    return [
        {"name": r[0], "seq": int(r[1]), "root": r[2], "created": int(r[3]),
         "time": int(r[4]) if r[4] is not None else None}
        for r in rows
    ]


def add_snapshot(tx: Tx, ns: int, name: str, path: list[str], now: int) -> dict[str, Any]:
    p.validate_snapshot_name(name)
    if tx.execute("SELECT 1 FROM snapshots WHERE ns = ? AND name = ?", (ns, name)):
        raise Exists(f"a snapshot named {name!r} exists")
    head = int(tx.execute("SELECT seq FROM namespaces WHERE id = ?", (ns,))[0][0])
    root = path_at(tx, ns, path, head)
    if root["kind"] != "dir":
        raise BadRequest(f"{p.join_path(path)} is not a folder")
    tx.execute(
        "INSERT INTO snapshots (ns, name, seq, root, created) VALUES (?, ?, ?, ?, ?)",
        (ns, name, head, root["id"], now),
    )
    return {"name": name, "seq": head, "root": root["id"], "created": now,
            "time": time_of(tx, ns, head)}


def drop_snapshot(tx: Tx, ns: int, name: str) -> None:
    if not tx.execute("SELECT 1 FROM snapshots WHERE ns = ? AND name = ?", (ns, name)):
        raise NotFound(f"no snapshot named {name!r}")
    tx.execute("DELETE FROM snapshots WHERE ns = ? AND name = ?", (ns, name))
