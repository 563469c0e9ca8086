"""The state of one commit while it applies: the namespace's live tree as the
transaction sees it (an entry, a child by name, a folder's children and ancestors),
the writing of each new version, and the budget of rows a commit may walk and write
(``MAX_COMMIT_WORK``; beyond it ``TooLarge``, nothing applied). Read-only callers
(the file API, links) use it for its queries alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend import protocol as p
from backend.errors import BadRequest, TooLarge
from backend.server.database import Tx
from backend.server.rows import ENTRY_COLUMNS, entry_from_row

MAX_COMMIT_WORK = 200_000
"""Rows a commit may walk (ancestors, blocks) and write (entries deleted, created,
changed); one mkdir in a folder at depth 10 costs 12."""

_ANCESTORS = """
    WITH RECURSIVE up(id, parent, depth) AS (
        SELECT id, parent, 0 FROM entries WHERE ns = ? AND id = ?
        UNION ALL SELECT e.id, e.parent, up.depth + 1 FROM entries e JOIN up ON e.id = up.parent
        WHERE e.ns = ? AND up.depth < ?
    ) SELECT id FROM up ORDER BY depth
"""

_BELOW = """
    WITH RECURSIVE down(id, depth) AS (
        SELECT id, 1 FROM entries WHERE ns = ? AND parent = ? AND kind = 'dir'
        UNION ALL SELECT e.id, down.depth + 1 FROM entries e JOIN down ON e.parent = down.id
        WHERE e.ns = ? AND e.kind = 'dir' AND down.depth < ?
    ) SELECT COUNT(*), COALESCE(MAX(depth), 0) FROM down
"""


@dataclass
class CommitContext:
    tx: Tx
    ns: int
    user_id: int
    device: str
    now: int
    seq: int
    referenced: dict[str, int] = field(default_factory=dict)
    """Chunks (id → size) this commit made the namespace name for the first time."""
    work: int = 0
    """Rows walked and written so far, against ``MAX_COMMIT_WORK``."""
    chains: dict[str, list[str]] = field(default_factory=dict)
    """Folder id → its ancestors (itself first), valid until a folder moves."""

    def spend(self, rows: int) -> None:
        self.work += rows
        if self.work > MAX_COMMIT_WORK:
            raise TooLarge(
                f"this commit does too much work (over {MAX_COMMIT_WORK} rows walked or"
                " written); send its operations in smaller commits"
            )

    def ancestors(self, folder: dict[str, Any]) -> list[str]:
        """The id of ``folder`` and of the folders above it up to the root, at most
        ``MAX_DEPTH + 1`` of them: from its parent's if known, else one recursive query."""
        chain = self.chains.get(folder["id"])
        if chain is None:
            above = self.chains.get(folder["parent"])
            if above is not None:
                chain = [folder["id"], *above[: p.MAX_DEPTH]]
            else:
                rows = self.tx.execute(_ANCESTORS, (self.ns, folder["id"], self.ns, p.MAX_DEPTH))
                chain = [r[0] for r in rows]
            self.chains[folder["id"]] = chain
            self.spend(len(chain) if above is None else 1)
        return chain

    def check_depth(self, folder: dict[str, Any], name: str) -> None:
        """Refuse an entry named ``name`` in ``folder`` below ``MAX_DEPTH`` folders."""
        if len(self.ancestors(folder)) > p.MAX_DEPTH:
            raise BadRequest(
                f"{name}: too deep (folders nest at most {p.MAX_DEPTH} levels below the root)"
            )

    def check_height(self, folder: dict[str, Any], depth: int) -> None:
        """Refuse to move ``folder`` below ``depth`` folders if a folder in it would end
        up below ``MAX_DEPTH``; walks its subfolders only, as far as the room left."""
        room = p.MAX_DEPTH - depth - 1
        walked, height = self.tx.execute(_BELOW, (self.ns, folder["id"], self.ns, room + 1))[0]
        self.spend(int(walked))
        if int(height) > room:
            raise BadRequest(f"{folder['name']}: too deep there (at most {p.MAX_DEPTH} levels)")

    def entry(self, entry_id: str) -> dict[str, Any] | None:
        rows = self.tx.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND id = ?", (self.ns, entry_id)
        )
        return entry_from_row(rows[0]) if rows else None

    def child(self, parent: str, name: str) -> dict[str, Any] | None:
        rows = self.tx.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND parent = ? AND name = ?",
            (self.ns, parent, name),
        )
        return entry_from_row(rows[0]) if rows else None

    def children(self, parent: str) -> list[dict[str, Any]]:
        rows = self.tx.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND parent = ? ORDER BY name",
            (self.ns, parent),
        )
        return [entry_from_row(r) for r in rows]

    def write(self, entry: dict[str, Any], deleted: bool = False) -> int:
        """Record ``entry`` as the next version; update or drop the live row."""
        self.spend(1)
        self.seq += 1
        entry["rev"] = self.seq
        blocks = p.encode(entry["blocks"]) if entry["kind"] == "file" else None
        values = (
            entry["id"],
            entry["parent"],
            entry["name"],
            entry["kind"],
            self.seq,
            entry["size"],
            entry["mode"],
            entry["mtime"],
            blocks,
            entry.get("target"),
        )
        self.tx.execute(
            "INSERT INTO versions (ns, id, parent, name, kind, seq, size, mode, mtime, blocks,"
            " target, deleted, device, committed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (self.ns, *values, int(deleted), self.device, self.now),
        )
        self.tx.execute("DELETE FROM entries WHERE ns = ? AND id = ?", (self.ns, entry["id"]))
        if not deleted:
            self.tx.execute(
                "INSERT INTO entries (ns, id, parent, name, kind, rev, size, mode, mtime,"
                " blocks, target) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (self.ns, *values),
            )
        return self.seq
