"""Entries as rows: the columns of the live tree (``entries``) and of the journal
(``versions``), the record an entry row makes, and which chunks a user may see."""

from __future__ import annotations

from typing import Any

from backend import protocol as p
from backend.server.database import Row

ENTRY_COLUMNS = "id, parent, name, kind, rev, size, mode, mtime, blocks, target"
VERSION_COLUMNS = "id, parent, name, kind, seq, size, mode, mtime, blocks, target, deleted"

VISIBLE_CHUNK = """
    (EXISTS (SELECT 1 FROM chunk_grants g WHERE g.user_id = ? AND g.chunk = c.id)
     OR EXISTS (SELECT 1 FROM ns_chunks n JOIN members m ON m.ns = n.ns
                WHERE m.user_id = ? AND n.chunk = c.id))
"""
"""A chunk ``c`` is visible to a user who uploaded it or can see a file holding it."""


def entry_from_row(row: Row) -> dict[str, Any]:
    """An entry record (see ``backend.protocol``) from ENTRY_/VERSION_COLUMNS."""
    record: dict[str, Any] = {
        "id": row[0],
        "parent": row[1],
        "name": row[2],
        "kind": row[3],
        "rev": int(row[4]),
        "size": int(row[5]),
        "mode": int(row[6]),
        "mtime": int(row[7]),
    }
    if row[3] == "file":
        record["blocks"] = [list(b) for b in p.decode(bytes(row[8]))] if row[8] else []
    if row[3] in ("symlink", "mount"):
        record["target"] = row[9]
    if len(row) > 10:
        record["deleted"] = bool(row[10])
    return record
