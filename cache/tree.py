"""A tree of entries in LMDB: entries by id and a name index (parent, name) → id.

The device keeps two: the *view* (``entries``/``children``: what the mount shows) and
the *remote* tree (``rentries``/``rchildren``: the server's tree as of the changes
feed's cursor). Invariants, checked by ``cache.fsck``: every entry but the root has
exactly one name key, which points back at it; no two entries share a name; every
parent is a live folder; no entry is its own ancestor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from backend import protocol as p
from cache.env import Env, Txn
from cache.records import Entry


def child_key(parent: str, name: str) -> bytes:
    return parent.encode() + b"/" + name.encode()


def root_entry(mtime: int) -> Entry:
    return Entry(
        id=p.ROOT_ID, parent="", name="", kind="dir", rev=0, size=0, mode=0o755, mtime=mtime
    )


class Tree:
    """Read and write one tree inside the caller's transaction."""

    def __init__(self, env: Env, entries: str, children: str, shares: str | None = None) -> None:
        """``shares``: the ``meta`` key counting this tree's shared folders (entries
        with ``share``), kept by ``put`` and ``drop``; None: not counted."""
        self.env = env
        self.entries = env.db[entries]
        self.names = env.db[children]
        self.shares = shares

    def get(self, txn: Txn, entry_id: str) -> Entry | None:
        if not entry_id:  # the root's parent
            return None
        raw = txn.get(entry_id.encode(), db=self.entries)
        self.env.touched()  # entry ids are random: each record is a page of its own
        return p.decode(bytes(raw)) if raw is not None else None

    def child(self, txn: Txn, parent: str, name: str) -> str | None:
        raw = txn.get(child_key(parent, name), db=self.names)
        return bytes(raw).decode() if raw is not None else None

    def children(self, txn: Txn, parent: str) -> Iterator[tuple[str, str]]:
        """``(name, entry id)`` of every child, in byte order of the names."""
        prefix = parent.encode() + b"/"
        cursor = txn.cursor(db=self.names)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield bytes(key[len(prefix) :]).decode(), bytes(value).decode()

    def has_children(self, txn: Txn, parent: str) -> bool:
        return next(self.children(txn, parent), None) is not None

    def all(self, txn: Txn) -> Iterator[Entry]:
        for _, raw in txn.cursor(db=self.entries):
            yield p.decode(bytes(raw))

    def put(self, txn: Txn, entry: Entry) -> None:
        """Store ``entry``, moving its name key if its parent or name changed. The
        name key of another entry is never removed here: the caller frees a name
        (``drop``, or ``put`` of its holder elsewhere) before reusing it."""
        old = self.get(txn, entry["id"])
        if old is not None and (old["parent"], old["name"]) != (entry["parent"], entry["name"]):
            self._unname(txn, old)
        if self.shares is not None and ("share" in entry) != (old is not None and "share" in old):
            self._shares_moved(txn, 1 if "share" in entry else -1)
        if entry["id"] != p.ROOT_ID:
            txn.put(child_key(entry["parent"], entry["name"]), entry["id"].encode(), db=self.names)
        txn.put(entry["id"].encode(), p.encode(entry), db=self.entries)

    def rewrite(self, txn: Txn, entry: Entry) -> None:
        """Store ``entry``, which keeps its parent, name and share (new content, say):
        unlike ``put``, the old record is not read."""
        txn.put(entry["id"].encode(), p.encode(entry), db=self.entries)

    def drop(self, txn: Txn, entry_id: str) -> Entry | None:
        old = self.get(txn, entry_id)
        if old is None:
            return None
        self._unname(txn, old)
        txn.delete(entry_id.encode(), db=self.entries)
        if self.shares is not None and "share" in old:
            self._shares_moved(txn, -1)
        return old

    def drop_below(self, txn: Txn, folder: str) -> set[str]:
        """Drop everything below ``folder``; the ids dropped."""
        gone: set[str] = set()
        todo = [folder]
        while todo:
            for _, child in list(self.children(txn, todo.pop())):
                self.drop(txn, child)
                gone.add(child)
                todo.append(child)
        return gone

    def shared_folders(self, txn: Txn) -> int:
        """How many entries are shared folders (the count ``shares`` keeps)."""
        assert self.shares is not None
        return int(self.env.meta_get(txn, self.shares, 0))

    def held_shares(self, txn: Txn) -> int:
        """How many entries are shared folders, counted one by one."""
        return sum(1 for entry in self.all(txn) if "share" in entry)

    def count_shares(self, txn: Txn) -> None:
        """Set the count anew (a cache from before the count was kept)."""
        assert self.shares is not None
        self.env.meta_put(txn, self.shares, self.held_shares(txn))

    def _shares_moved(self, txn: Txn, by: int) -> None:
        assert self.shares is not None
        self.env.meta_put(txn, self.shares, self.shared_folders(txn) + by)

    def _unname(self, txn: Txn, entry: Entry) -> None:
        key = child_key(entry["parent"], entry["name"])
        if txn.get(key, db=self.names) == entry["id"].encode():
            txn.delete(key, db=self.names)

    def lookup_path(self, txn: Txn, path: str) -> str | None:
        """The entry id at workspace path ``path`` (``/a/b``)."""
        entry_id: str | None = p.ROOT_ID
        for name in p.split_path(path):
            assert entry_id is not None
            entry_id = self.child(txn, entry_id, name)
            if entry_id is None:
                return None
        return entry_id

    def path_of(self, txn: Txn, entry_id: str) -> str | None:
        """The workspace path of an entry, or None if it is gone (or cut off)."""
        names: list[str] = []
        while entry_id != p.ROOT_ID:
            entry = self.get(txn, entry_id)
            if entry is None or len(names) > 4096:
                return None
            names.append(entry["name"])
            entry_id = entry["parent"]
        return p.join_path(reversed(names))

    def share_of(self, txn: Txn, entry_id: str) -> Entry | None:
        """The shared folder holding ``entry_id`` (itself, if it is one), or None; no
        walk up when the tree counts its shared folders and has none (the usual case)."""
        if self.shares is not None and not self.shared_folders(txn):
            return None
        return self.nearest(txn, entry_id, lambda entry: "share" in entry)

    def nearest(self, txn: Txn, entry_id: str, test: Callable[[Entry], bool]) -> Entry | None:
        """``entry_id``'s entry or its nearest ancestor for which ``test`` holds (each
        read once, walking up)."""
        entry = self.get(txn, entry_id)
        for _ in range(4096):
            if entry is None or test(entry):
                return entry
            if entry["id"] == p.ROOT_ID:
                return None
            entry = self.get(txn, entry["parent"])
        return None

    def ancestors(self, txn: Txn, folder: str) -> list[str]:
        """The ids above ``folder`` (not itself), nearest first, up to the root."""
        out: list[str] = []
        entry = self.get(txn, folder)
        while entry is not None and entry["id"] != p.ROOT_ID and len(out) < 4096:
            out.append(entry["parent"])
            entry = self.get(txn, entry["parent"])
        return out

    def files_under(self, txn: Txn, roots: list[str]) -> Iterator[Entry]:
        """Every file entry among ``roots`` or under the folders among them, once."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            entry_id = stack.pop()
            if entry_id in seen:
                continue
            seen.add(entry_id)
            entry = self.get(txn, entry_id)
            if entry is None:
                continue
            if entry["kind"] == "dir":
                stack.extend(child for _, child in self.children(txn, entry_id))
            elif entry["kind"] == "file":
                yield entry
