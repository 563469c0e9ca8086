"""The read-only ``.versions`` views of ``backend.server.files``, as a mount shows them
(``fs/history.py``), answered in one read transaction from ``backend.server.history``:

============================================ =======================================
path                                         lists / is
============================================ =======================================
``/.versions/``                              ``latest``, every snapshot, one folder
                                             per day with commits (``2026-12-02``)
``/.versions/<day>/``                        that day's instants (``...T073000Z``)
``/.versions/<instant|latest|snapshot>/...`` the whole tree then (any instant works
                                             by name: the last commit at or before)
``dir/.versions/``                           every name ever in ``dir``
``dir/.versions/<name>/``                    every version of what was ever ``name``
                                             there: ``<instant>@<device>`` (``-2``..
                                             for more in one second); an instant
                                             names the version current then
============================================ =======================================

Every node here is read-only (``Node.past``); a version may be copied out of it.
"""

from __future__ import annotations

import time
from typing import Any

from backend import protocol as p
from backend.server import history
from backend.server.database import Tx
from backend.server.files_tree import Node, View

DAY = 86_400


def _listing(base: Node, view: View, label: str, mtime_ns: int | None = None) -> Node:
    entry = {"id": "", "parent": "", "name": label, "kind": "dir", "rev": 0, "size": 0,
             "mode": 0o755, "mtime": time.time_ns() if mtime_ns is None else mtime_ns}
    return Node(base.ns, entry, base.role, base.user_id, view=view)


def _past(base: Node, seq: int, entry: dict[str, Any], label: str | None = None) -> Node:
    shown = {**entry, "name": label if label is not None else entry["name"]}
    shown.pop("deleted", None)
    return Node(base.ns, shown, base.role, base.user_id, seq=seq)


def versions_of(folder: Node) -> Node:
    """``.versions`` of the live folder ``folder``."""
    if folder.entry["id"] == p.ROOT_ID:
        return _listing(folder, View("top"), p.VERSIONS)
    return _listing(folder, View("names", folder=folder.entry["id"]), p.VERSIONS)


def _head(tx: Tx, ns: int) -> int:
    return int(tx.execute("SELECT seq FROM namespaces WHERE id = ?", (ns,))[0][0])


def _at(tx: Tx, base: Node, seq: int, label: str) -> Node:
    root = history.entry_at(tx, base.ns, p.ROOT_ID, seq)
    assert root is not None  # every namespace has its root
    return _past(base, seq, root, label)


def _top(tx: Tx, base: Node) -> list[Node]:
    found = [_at(tx, base, _head(tx, base.ns), p.LATEST)]
    for snap in history.snapshots(tx, base.ns):
        root = history.entry_at(tx, base.ns, snap["root"], snap["seq"])
        if root is not None:
            found.append(_past(base, snap["seq"], root, snap["name"]))
    found += [_listing(base, View("day", day=d), p.format_day(d),
                       min(d + DAY - 1, int(time.time())) * 10**9)
              for d in history.days(tx, base.ns)]
    return found


def _versions(tx: Tx, base: Node, view: View) -> list[tuple[dict[str, Any], Node | None]]:
    """Every version at the place, with its node (None where the entry was deleted)."""
    out: list[tuple[dict[str, Any], Node | None]] = []
    seen: dict[str, int] = {}
    for version in history.place(tx, base.ns, view.folder, view.name):
        if version["deleted"]:
            out.append((version, None))
            continue
        device = version["device"].replace("/", "_").replace("\0", "_") or "unknown"
        label = f"{p.format_instant(version['committed'])}@{device}"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}-{seen[label]}"
        entry = {**version, "rev": version["seq"]}
        out.append((version, _past(base, version["seq"], entry, label)))
    return out


def past_children(tx: Tx, node: Node) -> list[Node]:
    view = node.view
    if view is None:
        assert node.seq is not None
        return [_past(node, node.seq, c)
                for c in history.children_at(tx, node.ns, node.entry["id"], node.seq)]
    if view.kind == "top":
        return _top(tx, node)
    if view.kind == "day":
        return [_at(tx, node, seq, p.format_instant(t))
                for t, seq in history.instants(tx, node.ns, view.day, view.day + DAY)]
    if view.kind == "names":
        return [_listing(node, View("place", folder=view.folder, name=n), n)
                for n in history.names(tx, node.ns, view.folder)]
    return [v for _, v in _versions(tx, node, view) if v is not None]


def past_child(tx: Tx, node: Node, name: str) -> Node | None:
    """``name`` in the past folder or listing ``node``; None if there is none."""
    view = node.view
    when = p.parse_instant(name)
    if view is None:
        assert node.seq is not None
        found = history.child_at(tx, node.ns, node.entry["id"], name, node.seq)
        return None if found is None else _past(node, node.seq, found)
    if view.kind == "top":
        known = next((c for c in _top(tx, node) if c.entry["name"] == name), None)
        if known is not None:
            return known
        if when is not None and p.is_day(name):
            return _listing(node, View("day", day=when - DAY + 1), name)
        if when is not None:
            return _at(tx, node, history.seq_at(tx, node.ns, when), name)
        if name in history.names(tx, node.ns, p.ROOT_ID):
            return _listing(node, View("place", folder=p.ROOT_ID, name=name), name)
        return None
    if view.kind == "day":
        if when is None or p.is_day(name) or not view.day <= when < view.day + DAY:
            return None
        return _at(tx, node, history.seq_at(tx, node.ns, when), name)
    if view.kind == "names":
        if name not in history.names(tx, node.ns, view.folder):
            return None
        return _listing(node, View("place", folder=view.folder, name=name), name)
    versions = _versions(tx, node, view)
    if when is not None:
        current = [v for record, v in versions if record["committed"] <= when]
        return current[-1] if current else None
    return next((v for _, v in versions if v is not None and v.entry["name"] == name), None)
