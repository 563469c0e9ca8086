"""The live tree as ``backend.server.files`` reads it, inside one read transaction: who
acts (``Account``), what a path reaches (``Node``, ``View``), a folder's entries with
shared folders entered, and the operations of a copy (of the live tree or the past)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend import protocol as p
from backend.errors import BadRequest, Forbidden
from backend.server import history
from backend.server.commit_context import CommitContext
from backend.server.database import Tx
from backend.server.journal import WRITE_ROLES
from backend.server.rows import ENTRY_COLUMNS, entry_from_row


@dataclass(frozen=True)
class Account:
    """Who acts: their id, their own tree's namespace, and the device their commits name."""

    user_id: int
    root_ns: int
    device: str = "webdav"


@dataclass(frozen=True)
class View:
    """A listing of the past that is no entry: ``top`` (``/.versions``), ``day``,
    ``names`` (``dir/.versions``) or ``place`` (``dir/.versions/<name>``)."""

    kind: str
    folder: str = ""
    name: str = ""
    day: int = 0


@dataclass(frozen=True)
class Node:
    """An entry as an account reaches it: its namespace, record and the role there."""

    ns: int
    entry: dict[str, Any]
    role: str
    user_id: int
    outer: Node | None = None
    """For a shared folder: the ``mount`` entry that shows it (``entry`` is its root)."""
    seq: int | None = None
    """For the past: the journal sequence ``entry`` is as it was at (read-only)."""
    view: View | None = None
    """For a listing of the past: what it lists (read-only)."""

    @property
    def is_dir(self) -> bool:
        return bool(self.entry["kind"] == "dir")

    @property
    def name(self) -> str:
        return str((self.outer or self).entry["name"])

    @property
    def size(self) -> int:
        return int(self.entry["size"])

    @property
    def rev(self) -> int:
        return int(self.entry["rev"])

    @property
    def past(self) -> bool:
        return self.seq is not None or self.view is not None

    @property
    def writable(self) -> bool:
        return self.role in WRITE_ROLES and not self.past


def check_write(node: Node) -> None:
    if node.past:
        raise Forbidden("past versions are read-only; copy one out to bring it back")
    if not node.writable:
        raise Forbidden("this folder is shared with you read-only")


def role_in(tx: Tx, user_id: int, ns: int) -> str | None:
    rows = tx.execute("SELECT role FROM members WHERE ns = ? AND user_id = ?", (ns, user_id))
    return str(rows[0][0]) if rows else None


def live_child(tx: Tx, folder: Node, name: str) -> Node | None:
    rows = tx.execute(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND parent = ? AND name = ?",
        (folder.ns, folder.entry["id"], name))
    return enter(tx, folder, entry_from_row(rows[0]), rows[0][9]) if rows else None


def live_children(tx: Tx, folder: Node) -> list[Node]:
    """The entries of a live folder, by name (shared folders entered)."""
    rows = tx.execute(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND parent = ? ORDER BY name",
        (folder.ns, folder.entry["id"]))
    found = [enter(tx, folder, entry_from_row(r), r[9]) for r in rows]
    return [n for n in found if n is not None]


def enter(tx: Tx, parent: Node, entry: dict[str, Any], target: Any) -> Node | None:
    """The node for ``entry`` under ``parent``: a shared folder's root for a ``mount``
    entry the account is a member of (None if not)."""
    here = Node(parent.ns, entry, parent.role, parent.user_id)
    if entry["kind"] != "mount":
        return here
    if not (isinstance(target, str) and target.isdigit()):
        return None
    ns = int(target)
    role = role_in(tx, parent.user_id, ns)
    root = CommitContext(tx, ns, 0, "", 0, 0).entry(p.ROOT_ID)
    if role is None or root is None:
        return None
    return Node(ns, {**root, "name": entry["name"]}, role, parent.user_id, outer=here)


def copy_ops(tx: Tx, node: Node, parent_id: str, name: str) -> list[dict[str, Any]]:
    """Operations that create a copy of ``node``'s tree (as it is, or was at its
    ``seq``) under ``parent_id`` as ``name``, each folder before what it holds."""
    whole = node.entry["id"] == p.ROOT_ID and node.seq is None and node.outer is None
    if node.view is not None or whole:
        raise Forbidden("this folder cannot be copied; copy what it holds")
    ctx = CommitContext(tx, node.ns, 0, "", 0, 0)

    def children(entry_id: str) -> list[dict[str, Any]]:
        if node.seq is None:
            return ctx.children(entry_id)
        return history.children_at(tx, node.ns, entry_id, node.seq)

    ops: list[dict[str, Any]] = []
    stack = [(node.entry, parent_id, name)]
    while stack:
        entry, parent, label = stack.pop()
        new = p.new_id()
        op: dict[str, Any] = {"entry": new, "parent": parent, "name": label,
                              "mode": entry["mode"], "mtime": entry["mtime"]}
        if entry["kind"] == "dir":
            ops.append({"op": "mkdir", **op})
            stack += [(c, new, c["name"]) for c in reversed(children(entry["id"]))]
        elif entry["kind"] == "file":
            ops.append({"op": "create", "kind": "file", "size": entry["size"],
                        "blocks": entry["blocks"], **op})
        elif entry["kind"] == "symlink":
            ops.append({"op": "create", "kind": "symlink", "target": entry["target"], **op})
        if len(ops) > p.MAX_OPS_PER_COMMIT * 10:
            raise BadRequest("too much to copy at once; copy its folders one by one")
    return ops
