"""A user's tree: their root namespace with the shared folders mounted in it.

A shared folder is a namespace of its own (``backend.server.shares``); it appears in
each member's root namespace as an entry of kind ``mount`` whose ``target`` is the
namespace's number in decimal. The routes on a user's *root* namespace (``changes``,
``tree``, ``lookup``, ``commit``) answer for the whole tree, so that a device follows
one feed and sends one kind of commit wherever its files live:

- a mount appears as a folder (kind ``dir``) with two more keys, ``share`` (the
  namespace) and ``role`` (the user's: owner, editor or viewer); the shared
  namespace's root never appears, its top-level entries have the mount's id as their
  parent. Entry ids are 128 random bits, so one id names one entry across every
  namespace a user sees (``ROOT_ID`` aside: here it is always the root namespace's).
- the feed's position is one sequence per namespace (``backend.cursor``): a plain int
  while the user has no shared folder, as a namespace's own feed answers. A shared
  folder new to the position comes whole (its tree at its head); one the user no
  longer sees (unshared, left) leaves the position, and the end of its mount entry
  (in the root's journal) is the device's sign to drop everything below it.
- a commit is split by namespace (the namespace that holds each entry, or the
  parent, for a new one) and each part appended (``journal.append``) in the same
  transaction, in ascending namespace order (the lock order). A move between two
  namespaces is refused (``CrossShare``): devices copy instead; deleting a mount is
  refused (``Forbidden``): one leaves or unshares a shared folder.

Every other route on a namespace, and every route on a shared namespace's own number,
answers for that namespace alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from backend import cursor
from backend import protocol as p
from backend.errors import BadRequest, CrossShare, Forbidden, LoftError, NotFound
from backend.server import journal
from backend.server.database import Tx
from backend.server.rows import ENTRY_COLUMNS, VERSION_COLUMNS, entry_from_row


@dataclass(frozen=True)
class Mount:
    entry: str
    """The mount's id in the root namespace."""
    ns: int
    role: str


@dataclass
class Tree:
    """Where a user's tree lives: the root namespace and the mounts in it."""

    root: int
    mounts: list[Mount]
    by_entry: dict[str, Mount] = field(init=False)
    by_ns: dict[int, Mount] = field(init=False)

    def __post_init__(self) -> None:
        self.by_entry = {m.entry: m for m in self.mounts}
        self.by_ns = {m.ns: m for m in self.mounts}

    def ns_of(self, key: int) -> int:
        """The namespace a position's key names."""
        return self.root if key == cursor.ROOT else key

    def present(self, ns: int, record: dict[str, Any]) -> dict[str, Any] | None:
        """``record`` of namespace ``ns`` as the user's tree shows it (None: not shown)."""
        if ns == self.root:
            if record["kind"] == "mount":
                mount = self.by_entry.get(record["id"])
                record = {k: v for k, v in record.items() if k != "target"}
                record["kind"] = "dir"
                if mount is not None:
                    record["share"], record["role"] = mount.ns, mount.role
            return record
        if record["id"] == p.ROOT_ID:
            return None
        if record["parent"] == p.ROOT_ID:
            record = dict(record, parent=self.by_ns[ns].entry)
        return record

    def present_all(self, ns: int, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in (self.present(ns, rec) for rec in records) if r is not None]


def tree_for(tx: Tx, user_id: int, ns: int) -> Tree:
    """What the routes on ``ns`` answer for: the user's tree if ``ns`` is their root
    namespace, else ``ns`` alone (NotFound unless the user is a member)."""
    journal.role(tx, user_id, ns)
    rows = tx.execute("SELECT root_ns FROM users WHERE id = ?", (user_id,))
    return tree_of(tx, user_id, ns) if rows and int(rows[0][0]) == ns else Tree(ns, [])


def locate(tx: Tx, tree: Tree, entry_id: str) -> tuple[int, str]:
    """Where the past of ``entry_id`` (live or not) lives: ``(namespace, id there)``;
    a mount's id names its namespace's root (a question about what it holds)."""
    mount = tree.by_entry.get(entry_id)
    if mount is not None:
        return mount.ns, p.ROOT_ID
    if not tree.mounts or entry_id == p.ROOT_ID:
        return tree.root, entry_id
    for ns in sorted(tree.by_ns):
        if tx.execute("SELECT 1 FROM versions WHERE ns = ? AND id = ? LIMIT 1", (ns, entry_id)):
            return ns, entry_id
    return tree.root, entry_id


def tree_of(tx: Tx, user_id: int, root: int) -> Tree:
    rows = tx.execute(
        "SELECT id, target FROM entries WHERE ns = ? AND kind = 'mount'", (root,)
    )
    roles = {
        int(ns): str(role)
        for ns, role in tx.execute("SELECT ns, role FROM members WHERE user_id = ?", (user_id,))
    }
    mounts = [Mount(r[0], int(r[1]), roles[int(r[1])]) for r in rows if int(r[1]) in roles]
    return Tree(root, mounts)


def head(tx: Tx, ns: int) -> int:
    return int(tx.execute("SELECT seq FROM namespaces WHERE id = ?", (ns,))[0][0])


def tree_rows(
    tx: Tx, ns: int, at: int | None, after: str, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """Every live entry of ``ns``, now or as it was at sequence ``at``; by id, those
    after ``after``, at most ``limit`` (and the root, after none)."""
    now = head(tx, ns)
    if at is None or at >= now:
        rows = tx.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND id > ? ORDER BY id LIMIT ?",
            (ns, after, limit),
        )
        return now, [entry_from_row(r) for r in rows]
    root = tx.execute(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND id = ?", (ns, p.ROOT_ID)
    )
    rows = tx.execute(
        f"SELECT {VERSION_COLUMNS} FROM versions v WHERE v.ns = ? AND v.seq = ("
        " SELECT MAX(w.seq) FROM versions w WHERE w.ns = v.ns AND w.id = v.id"
        " AND w.seq <= ?) AND v.deleted = 0 AND v.id > ? ORDER BY v.id LIMIT ?",
        (ns, at, max(after, p.ROOT_ID), limit),
    )
    first = [] if after else [entry_from_row(root[0])]
    entries = first + [entry_from_row(r) for r in rows]
    for entry in entries:
        entry.pop("deleted", None)
    return at, entries


# --- reading the user's tree -----------------------------------------------------------


@dataclass
class Feed:
    head: cursor.Position
    cursor: cursor.Position
    changes: list[dict[str, Any]]
    watch: list[int]
    """The namespaces whose advance ends a long-poll on this feed."""
    reset: bool = False
    others: list[dict[str, Any]] = field(default_factory=list)
    """The files of ``changes`` whose new content another device committed."""


def horizon(tx: Tx, ns: int) -> int:
    rows = tx.execute("SELECT seq FROM horizons WHERE ns = ?", (ns,))
    return int(rows[0][0]) if rows else 0


def changes(tx: Tx, tree: Tree, since: cursor.Position, limit: int, device: str = "") -> Feed:
    have = cursor.parts(since)
    follow = [cursor.ROOT, *sorted(tree.by_ns)]
    heads = {key: head(tx, tree.ns_of(key)) for key in follow}
    watch = [tree.ns_of(key) for key in follow]
    if any(key in have and have[key] < horizon(tx, tree.ns_of(key)) for key in follow):
        return Feed(cursor.text(heads), since, [], watch, reset=True)
    records: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    now: dict[int, int] = {}
    for key in follow:
        ns = tree.ns_of(key)
        if key not in have:  # a shared folder new to this device: all of it
            _, entries = tree_rows(tx, ns, None, "", 1 << 62)
            records += tree.present_all(ns, entries)
            now[key] = heads[key]
            continue
        rows = tx.execute(
            f"SELECT {VERSION_COLUMNS}, device FROM versions WHERE ns = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (ns, have[key], limit),
        )
        for r in rows:
            # ``deleted`` = 2: moved into a shared folder (``shares``), alive below it.
            record = tree.present(ns, entry_from_row(r)) if r[10] != 2 else None
            if record is not None:
                records.append(record)
                if record["kind"] == "file" and not r[10] and r[11] != device:
                    others.append(record)
        now[key] = int(rows[-1][4]) if rows else have[key]
    # A namespace in ``have`` the user no longer sees just leaves the position: the end
    # of its mount (in the root's journal) tells the device to drop what was in it.
    return Feed(cursor.text(heads), cursor.text(now), records, watch, others=others)


def page(
    tx: Tx, tree: Tree, at: cursor.Position | None, after: str, limit: int
) -> tuple[cursor.Position, list[dict[str, Any]], str | None]:
    """A page of the whole tree: ``(position, entries, next)``. Pages go namespace by
    namespace (``next`` is ``NS:ID`` past the root's); each namespace is read at its
    sequence in ``at`` (the first page's position) so the pages agree."""
    order = [cursor.ROOT, *sorted(tree.by_ns)]
    marks = cursor.parts(at) if at is not None else {k: head(tx, tree.ns_of(k)) for k in order}
    key, _, after_id = after.rpartition(":") if ":" in after else ("", "", after)
    if key and not (key.isascii() and key.isdigit() and len(key) <= 19):
        raise BadRequest("'after' must be an entry id or NS:ID")
    current = int(key) if key else cursor.ROOT
    if current not in marks:
        raise NotFound("that page of the tree is gone; read it again from the start")
    ns = tree.ns_of(current)
    _, entries = tree_rows(tx, ns, marks[current], after_id, limit)
    shown = tree.present_all(ns, entries)
    if len(entries) >= limit:
        more: str | None = f"{current}:{entries[-1]['id']}" if current else entries[-1]["id"]
    else:
        later = [k for k in order if k > current and k in marks]
        more = f"{later[0]}:" if later else None
    return cursor.text({k: marks[k] for k in order if k in marks}), shown, more


def walk(tx: Tx, tree: Tree, path: list[str]) -> tuple[int, dict[str, Any]]:
    """The namespace and raw entry at ``path`` of the user's tree, crossing mounts
    (the root's own entry for ``[]``)."""
    ns, folder = tree.root, p.ROOT_ID
    entry = raw_entry(tx, ns, p.ROOT_ID)
    for depth, name in enumerate(path):
        if entry is None or entry["kind"] not in ("dir", "mount"):
            raise NotFound(f"{p.join_path(path[:depth])}: not a directory")
        if entry["kind"] == "mount":
            ns, folder = tree.by_entry[entry["id"]].ns, p.ROOT_ID
        else:
            folder = entry["id"]
        rows = tx.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND parent = ? AND name = ?",
            (ns, folder, name),
        )
        if not rows:
            raise NotFound(f"{p.join_path(path[: depth + 1])}: no such file or directory")
        entry = entry_from_row(rows[0])
    assert entry is not None
    return ns, entry


def lookup(
    tx: Tx, tree: Tree, path: list[str], with_children: bool, after: str = "",
    limit: int = 1 << 62,
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The entry at ``path`` across mounts (and, for a folder, its children by name:
    those after the name ``after``, at most ``limit``)."""
    ns, entry = walk(tx, tree, path)
    children = None
    if with_children and entry["kind"] in ("dir", "mount"):
        inner, parent = (
            (tree.by_entry[entry["id"]].ns, p.ROOT_ID) if entry["kind"] == "mount"
            else (ns, entry["id"])
        )
        rows = tx.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND parent = ? AND name > ?"
            " ORDER BY name LIMIT ?",
            (inner, parent, after, limit),
        )
        children = tree.present_all(inner, (entry_from_row(r) for r in rows))
    shown = tree.present(ns, entry)
    assert shown is not None
    return shown, children


def raw_entry(tx: Tx, ns: int, entry_id: str) -> dict[str, Any] | None:
    """The raw entry ``entry_id`` of namespace ``ns``, if it is there."""
    rows = tx.execute(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND id = ?", (ns, entry_id)
    )
    return entry_from_row(rows[0]) if rows else None


# --- committing to the user's tree -----------------------------------------------------


def commit(
    tx: Tx, tree: Tree, user_id: int, device: str, ops: list[dict[str, Any]], now: int
) -> dict[str, Any]:
    """Apply a batch on the user's tree (all of it, in every namespace, or nothing):
    ``{seq, head, results, namespaces[, replayed]}`` with ``seq`` a position."""
    root = tree.root
    spaces = [root, *tree.by_ns]
    groups: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for index, op in enumerate(ops):
        try:
            ns, local = _route(tx, tree, spaces, op)
        except LoftError as err:
            err.detail = dict(err.detail or {}, op=index)
            raise
        groups.setdefault(ns, []).append((index, local))
    results: list[dict[str, Any]] = [{} for _ in ops]
    marks = {cursor.ROOT: 0}
    replayed = True
    for ns in sorted(groups):
        part = groups[ns]
        try:
            answer = journal.append(tx, user_id, device, ns, [op for _, op in part], now)
        except LoftError as err:
            _translate(tree, ns, err, part)
            raise
        for (index, _), result in zip(part, answer["results"], strict=True):
            results[index] = result
        marks[cursor.ROOT if ns == root else ns] = int(answer["seq"])
        replayed = replayed and bool(answer.get("replayed"))
    position = cursor.text(marks)
    out: dict[str, Any] = {"seq": position, "head": position, "results": results,
                           "namespaces": sorted(groups)}
    if replayed:
        out["replayed"] = True
    return out


def _where(tx: Tx, tree: Tree, spaces: list[int], entry_id: str) -> int:
    """The namespace holding the live entry ``entry_id`` (the root if none does: it
    answers for an entry that is gone)."""
    if entry_id in tree.by_entry or entry_id == p.ROOT_ID or not tree.mounts:
        return tree.root  # every namespace has a ROOT_ID: on this route it is the root's
    marks = ",".join("?" * len(spaces))
    rows = tx.execute(
        f"SELECT ns FROM entries WHERE id = ? AND ns IN ({marks})", (entry_id, *spaces)
    )
    return int(rows[0][0]) if rows else tree.root


def _route(
    tx: Tx, tree: Tree, spaces: list[int], op: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """The namespace ``op`` lands in and the op as that namespace reads it."""
    kind = op["op"]
    entry = p.entry_id_field(op, "entry")
    if kind in ("create", "mkdir"):
        parent = p.entry_id_field(op, "parent")
        mount = tree.by_entry.get(parent)
        if mount is not None:
            return mount.ns, dict(op, parent=p.ROOT_ID)
        return _where(tx, tree, spaces, parent), op
    ns = _where(tx, tree, spaces, entry)
    if kind == "delete" and entry in tree.by_entry:
        raise Forbidden("a shared folder is not deleted: leave it (loft leave) or unshare it")
    if kind != "rename":
        return ns, op
    parent = p.entry_id_field(op, "parent")
    mount = tree.by_entry.get(parent)
    into, local = (mount.ns, p.ROOT_ID) if mount else (_where(tx, tree, spaces, parent), parent)
    if into != ns:
        raise CrossShare("a move into or out of a shared folder is a copy: copy, then delete")
    replace = op.get("replace")
    if isinstance(replace, dict) and replace.get("entry") in tree.by_entry:
        raise Forbidden("a shared folder is not replaced: leave it or unshare it first")
    return ns, dict(op, parent=local)


def _translate(
    tree: Tree, ns: int, err: LoftError, part: list[tuple[int, dict[str, Any]]]
) -> None:
    """An error of one namespace's part as the whole commit reads it."""
    detail = dict(err.detail) if isinstance(err.detail, dict) else {}
    if isinstance(detail.get("op"), int) and detail["op"] < len(part):
        detail["op"] = part[detail["op"]][0]
    if isinstance(detail.get("current"), dict):
        detail["current"] = tree.present(ns, dict(detail["current"]))
    err.detail = detail
