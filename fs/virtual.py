"""A tree in memory laid over the remote tree: the reconciler's scratch space.

``Virtual`` answers like the remote tree (``cache.tree.Tree``) with changes laid over
it, and writes nothing; ``apply_op`` lays one wire operation over it the way the
server applies it.
"""

from __future__ import annotations

from backend import protocol as p
from cache.env import Txn
from cache.records import Entry, WireOp
from cache.tree import Tree

MEMO = 1024
"""Entries of the remote tree a ``Virtual`` keeps once read, at most."""


class Virtual:
    """The remote tree with changes laid over it, in memory (nothing is written).

    It lives for one transaction, in which the remote tree does not change under it,
    so an entry read from the remote tree is kept (``MEMO`` of them at most) and
    handed out again, never copied: planning one change reads its entry several
    times, and a large file's block list costs a decode each time. What ``get``
    returns is read-only; a change is laid over with ``put``."""

    def __init__(self, remote: Tree, txn: Txn) -> None:
        self._remote = remote
        self._txn = txn
        self.changed: dict[str, Entry | None] = {}
        self._names: dict[tuple[str, str], str | None] = {}
        self._read: dict[str, Entry | None] = {}

    def get(self, entry_id: str) -> Entry | None:
        if entry_id in self.changed:
            return self.changed[entry_id]
        if entry_id in self._read:
            return self._read[entry_id]
        entry = self._remote.get(self._txn, entry_id)
        if len(self._read) < MEMO:
            self._read[entry_id] = entry
        return entry

    def child(self, parent: str, name: str) -> str | None:
        key = (parent, name)
        if key in self._names:
            return self._names[key]
        holder = self._remote.child(self._txn, parent, name)
        if holder is None:
            return None
        entry = self.get(holder)
        if entry is None or (entry["parent"], entry["name"]) != key:
            return None
        return holder

    def has_children(self, folder: str) -> bool:
        for name, _ in self._remote.children(self._txn, folder):
            if self.child(folder, name) is not None:
                return True
        return any(key[0] == folder and holder for key, holder in self._names.items())

    def is_folder(self, entry_id: str) -> bool:
        entry = self.get(entry_id)
        return entry is not None and entry["kind"] == "dir"

    def inside(self, folder: str, entry_id: str) -> bool:
        """Whether ``entry_id`` is ``folder`` or below it."""
        current: str = entry_id
        for _ in range(4096):
            if current == folder:
                return True
            entry = self.get(current)
            if entry is None or current == p.ROOT_ID:
                return False
            current = entry["parent"]
        return True  # deeper than any real tree: treat as a cycle

    def put(self, entry: Entry) -> None:
        old = self.get(entry["id"])
        if old is not None and self.child(old["parent"], old["name"]) == entry["id"]:
            self._names[(old["parent"], old["name"])] = None
        holder = self.child(entry["parent"], entry["name"])
        if holder is not None and holder != entry["id"]:
            # Only an acknowledged change lands on a taken name: the holder moved away
            # in a commit the feed has not brought yet. It is out of sight until then.
            self.changed[holder] = None
        self._names[(entry["parent"], entry["name"])] = entry["id"]
        self.changed[entry["id"]] = entry

    def drop(self, entry_id: str) -> None:
        old = self.get(entry_id)
        if old is not None and self.child(old["parent"], old["name"]) == entry_id:
            self._names[(old["parent"], old["name"])] = None
        self.changed[entry_id] = None


def apply_op(tree: Virtual, op: WireOp, rev: int) -> None:
    """Lay one wire operation over ``tree`` as the server would apply it."""
    kind = op["op"]
    if kind in ("create", "mkdir"):
        entry = Entry(
            id=op["entry"], parent=op["parent"], name=op["name"],
            kind="dir" if kind == "mkdir" else op["kind"], rev=rev, size=op.get("size", 0),
            mode=op["mode"], mtime=op["mtime"],
        )
        if entry["kind"] == "file":
            entry["blocks"] = op["blocks"]
        elif entry["kind"] == "symlink":
            entry["target"] = op["target"]
        tree.put(entry)
        return
    current = tree.get(op["entry"])
    if current is None:
        return
    entry = Entry(**current)
    entry["rev"] = rev
    if kind == "delete":
        tree.drop(op["entry"])
        return
    if kind == "update":
        entry["size"], entry["blocks"], entry["mtime"] = op["size"], op["blocks"], op["mtime"]
    if kind in ("update", "setattr"):
        for key in ("mode", "mtime"):
            if key in op:
                entry[key] = op[key]
    if kind == "rename":
        if isinstance(op.get("replace"), dict):
            tree.drop(op["replace"]["entry"])
        entry["parent"], entry["name"] = op["parent"], op["name"]
    tree.put(entry)
