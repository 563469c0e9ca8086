"""Sharing a folder: it becomes a namespace of its own, mounted in each member's tree.

``share`` on a folder of the user's own tree, in one transaction:

1. a new namespace whose journal starts at the root namespace's head, owned by the
   user (so quotas count it against them);
2. every entry below the folder moves to it with its id; the folder's children get
   the new namespace's root as their parent; the versions of those entries recorded
   while they were inside the folder are copied along (their history stays
   browsable; the new namespace's horizon marks where its own journal starts), and
   so is which chunks the namespace names; the root's journal ends each moved entry
   with ``deleted`` = 2 (moved out: the feed leaves these out, the entry lives on
   below the mount);
3. the folder itself becomes a mount (kind ``mount``, ``target`` the namespace), a
   new version in the root namespace: the owner's devices see the same folder, now
   with ``share`` and ``role`` (``backend.server.mounts``);
4. the member gets a role and a mount at the top of their tree under the folder's
   name, `` (2)``, `` (3)``... if the name is taken.

``share`` on a mount adds a member or changes a role (by the owner or an editor; the
owner's role never changes; a changed role writes the member's mount again, so their
devices learn it). ``unshare`` removes one member or every one but the owner (owner
or editor); ``leave`` removes oneself (not the owner). A removed member's mount ends
in their root namespace's journal, in the same transaction as their role.

Nested shares are refused: a folder inside a shared folder, or one holding a shared
folder, cannot be shared, and a mount never moves into a shared folder (a move across
namespaces is refused).
"""

from __future__ import annotations

from typing import Any

from backend import protocol as p
from backend.errors import BadRequest, Forbidden, NotFound
from backend.server import journal, quota
from backend.server.database import Tx
from backend.server.mounts import Tree, raw_entry, tree_of, walk
from backend.server.rows import ENTRY_COLUMNS, entry_from_row

ROLES = ("editor", "viewer")

_BELOW = """
    WITH RECURSIVE down(id) AS (
        SELECT id FROM entries WHERE ns = ? AND parent = ?
        UNION ALL
        SELECT e.id FROM entries e JOIN down ON e.parent = down.id WHERE e.ns = ?
    ) SELECT id FROM down
"""


def _user(tx: Tx, name: str) -> tuple[int, int]:
    rows = tx.execute("SELECT id, root_ns FROM users WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no user {name}")
    return int(rows[0][0]), int(rows[0][1])


def _root(tx: Tx, user_id: int) -> int:
    return int(tx.execute("SELECT root_ns FROM users WHERE id = ?", (user_id,))[0][0])


def _entry(tx: Tx, ns: int, entry_id: str) -> dict[str, Any]:
    entry = raw_entry(tx, ns, entry_id)
    assert entry is not None, (ns, entry_id)
    return entry


def _locate(tx: Tx, tree: Tree, path: list[str]) -> tuple[int, dict[str, Any]]:
    """The namespace and raw entry at ``path`` of the user's tree."""
    if not path:
        raise BadRequest("the top of your tree cannot be shared; share a folder in it")
    return walk(tx, tree, path)


def _mount_of(tx: Tx, user_id: int, path: list[str]) -> tuple[Tree, int, dict[str, Any]]:
    """The shared folder at ``path``: ``(tree, its namespace, its mount entry)``."""
    tree = tree_of(tx, user_id, _root(tx, user_id))
    ns, entry = _locate(tx, tree, path)
    if entry["kind"] != "mount" or ns != tree.root:
        raise BadRequest(f"{p.join_path(path)} is not a shared folder")
    return tree, tree.by_entry[entry["id"]].ns, entry


def _split(tx: Tx, user_id: int, device: str, root: int, folder: dict[str, Any],
           now: int) -> int:
    """Make ``folder`` of ``root`` a namespace of its own; its number."""
    if folder["kind"] != "dir":
        raise BadRequest(f"{folder['name']} is not a folder: only folders are shared")
    below = [r[0] for r in tx.execute(_BELOW, (root, folder["id"], root))]
    marks_of = [below[i : i + 500] for i in range(0, len(below), 500)]
    for part in marks_of:
        marks = ",".join("?" * len(part))
        if tx.execute(f"SELECT 1 FROM entries WHERE ns = ? AND kind = 'mount' AND id IN"
                      f" ({marks}) LIMIT 1", (root, *part)):
            raise BadRequest(f"{folder['name']} holds a shared folder; shares do not nest")
    head = tx.lock_namespace(root)
    assert head is not None
    (ns,) = tx.execute(
        "INSERT INTO namespaces (owner, seq, created) VALUES (?, ?, ?) RETURNING id",
        (user_id, head, now),
    )[0]
    ns = int(ns)
    tx.execute("INSERT INTO members (ns, user_id, role) VALUES (?, ?, 'owner')", (ns, user_id))
    tx.execute(
        "INSERT INTO entries (ns, id, parent, name, kind, rev, size, mode, mtime)"
        " VALUES (?, ?, '', '', 'dir', ?, 0, ?, ?)",
        (ns, p.ROOT_ID, head, folder["mode"], folder["mtime"]),
    )
    inside = {folder["id"], *below}
    chunks: set[str] = set()
    for part in marks_of:
        marks = ",".join("?" * len(part))
        rows = tx.execute(
            "SELECT id, parent, name, kind, seq, size, mode, mtime, blocks, target, deleted,"
            f" device, committed FROM versions WHERE ns = ? AND id IN ({marks})",
            (root, *part),
        )
        for row in rows:
            if row[1] not in inside:
                continue  # a version from before it was moved into the folder
            parent = p.ROOT_ID if row[1] == folder["id"] else row[1]
            tx.execute(
                "INSERT INTO versions (ns, id, parent, name, kind, seq, size, mode, mtime,"
                " blocks, target, deleted, device, committed)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (ns, row[0], parent, *row[2:]),
            )
            if row[8]:
                chunks.update(cid for cid, _ in p.decode(bytes(row[8])))
        tx.execute(f"UPDATE entries SET ns = ? WHERE ns = ? AND id IN ({marks})",
                   (ns, root, *part))
    tx.execute("UPDATE entries SET parent = ? WHERE ns = ? AND parent = ?",
               (p.ROOT_ID, ns, folder["id"]))
    for cid in sorted(chunks):
        tx.execute("INSERT INTO ns_chunks (ns, chunk) VALUES (?, ?) ON CONFLICT DO NOTHING",
                   (ns, cid))
    # The root's journal says the entries left it (``deleted`` = 2: moved to another
    # namespace, an end the feed does not send, since they live on in the mount), and
    # the new namespace's journal is whole only from its start: its horizon.
    seq = head
    for entry_id in below:
        seq += 1
        tx.execute(
            "INSERT INTO versions (ns, id, parent, name, kind, seq, size, mode, mtime, blocks,"
            " target, deleted, device, committed) SELECT ns, id, parent, name, kind, ?, size,"
            " mode, mtime, blocks, target, 2, ?, ? FROM versions WHERE ns = ? AND id = ?"
            " AND seq = (SELECT MAX(seq) FROM versions WHERE ns = ? AND id = ?)",
            (seq, device, now, root, entry_id, root, entry_id),
        )
    journal.advance(tx, root, seq)
    tx.execute("INSERT INTO horizons (ns, seq) VALUES (?, ?)", (ns, head))
    quota.forget(tx, [user_id])
    mount = dict(folder, kind="mount", target=str(ns))
    mount.pop("blocks", None)
    journal.write_entry(tx, root, user_id, device, now, mount)
    return ns


def _free_name(tx: Tx, root: int, name: str) -> str:
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    candidate, n = name, 1
    while tx.execute("SELECT 1 FROM entries WHERE ns = ? AND parent = ? AND name = ?",
                     (root, p.ROOT_ID, candidate)):
        n += 1
        candidate = f"{stem} ({n}){dot}{ext}"
    return candidate


def _member_mount(tx: Tx, root: int, ns: int) -> dict[str, Any] | None:
    rows = tx.execute(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ns = ? AND kind = 'mount' AND target = ?",
        (root, str(ns)),
    )
    return entry_from_row(rows[0]) if rows else None


def share(tx: Tx, user_id: int, device: str, path: list[str], member: str, role: str,
          now: int) -> tuple[dict[str, Any], list[int]]:
    """Share the folder at ``path`` with ``member`` as ``role``: ``(answer, the
    namespaces whose journal advanced)``."""
    if role not in ROLES:
        raise BadRequest(f"a role is one of {', '.join(ROLES)}")
    member_id, member_root = _user(tx, member)
    if member_id == user_id:
        raise BadRequest("a folder is shared with someone else")
    tree = tree_of(tx, user_id, _root(tx, user_id))
    ns_at, entry = _locate(tx, tree, path)
    advanced: list[int] = []
    if entry["kind"] == "mount":
        ns = tree.by_entry[entry["id"]].ns
        journal.check_writer(tx, user_id, ns)
    elif ns_at != tree.root:
        raise BadRequest(f"{p.join_path(path)} is inside a shared folder; shares do not nest")
    else:
        ns = _split(tx, user_id, device, tree.root, entry, now)
        advanced.append(tree.root)
    rows = tx.execute("SELECT role FROM members WHERE ns = ? AND user_id = ?", (ns, member_id))
    if rows and rows[0][0] == "owner":
        raise BadRequest(f"{member} owns this folder")
    if rows:
        tx.execute("UPDATE members SET role = ? WHERE ns = ? AND user_id = ?",
                   (role, ns, member_id))
    else:
        tx.execute("INSERT INTO members (ns, user_id, role) VALUES (?, ?, ?)",
                   (ns, member_id, role))
    mount = _member_mount(tx, member_root, ns)
    if mount is None:
        mount = {"id": p.new_id(), "parent": p.ROOT_ID,
                 "name": _free_name(tx, member_root, entry["name"]), "kind": "mount",
                 "size": 0, "mode": 0o755, "mtime": now * 1_000_000_000, "target": str(ns)}
    if not rows or rows[0][0] != role or mount.get("rev") is None:
        journal.write_entry(tx, member_root, user_id, device, now, mount)
        advanced.append(member_root)
    return {"ns": ns, "user": member, "role": role}, advanced


def _remove(tx: Tx, user_id: int, device: str, ns: int, member_id: int, now: int) -> int:
    tx.execute("DELETE FROM members WHERE ns = ? AND user_id = ?", (ns, member_id))
    root = _root(tx, member_id)
    mount = _member_mount(tx, root, ns)
    if mount is not None:
        journal.write_entry(tx, root, user_id, device, now, mount, deleted=True)
    return root


def unshare(tx: Tx, user_id: int, device: str, path: list[str], member: str | None,
            now: int) -> tuple[dict[str, Any], list[int]]:
    """Stop sharing the folder at ``path`` with ``member`` (None: with everyone)."""
    _, ns, _ = _mount_of(tx, user_id, path)
    journal.check_writer(tx, user_id, ns)
    rows = tx.execute(
        "SELECT m.user_id, u.name, m.role FROM members m JOIN users u ON u.id = m.user_id"
        " WHERE m.ns = ?", (ns,))
    if member is not None:
        rows = [r for r in rows if r[1] == member]
        if not rows:
            raise NotFound(f"this folder is not shared with {member}")
        if rows[0][2] == "owner":
            raise BadRequest(f"{member} owns this folder")
    gone = rows if member is not None else [r for r in rows if r[2] != "owner"]
    advanced = [_remove(tx, user_id, device, ns, int(r[0]), now) for r in gone]
    return {"ns": ns, "removed": sorted(r[1] for r in gone)}, advanced


def leave(tx: Tx, user_id: int, device: str, path: list[str],
          now: int) -> tuple[dict[str, Any], list[int]]:
    _, ns, _ = _mount_of(tx, user_id, path)
    if journal.role(tx, user_id, ns) == "owner":
        raise Forbidden("you own this folder: unshare it instead of leaving it")
    return {"ns": ns}, [_remove(tx, user_id, device, ns, user_id, now)]


def listing(tx: Tx, user_id: int) -> list[dict[str, Any]]:
    """Every shared folder the user sees: its path, namespace, the user's role, owner
    and members (name → role)."""
    root = _root(tx, user_id)
    tree = tree_of(tx, user_id, root)
    out = []
    for mount in tree.mounts:
        names: list[str] = []
        current = _entry(tx, root, mount.entry)
        while current["id"] != p.ROOT_ID and len(names) <= p.MAX_DEPTH:
            names.append(current["name"])
            current = _entry(tx, root, current["parent"])
        rows = tx.execute(
            "SELECT u.name, m.role FROM members m JOIN users u ON u.id = m.user_id"
            " WHERE m.ns = ? ORDER BY u.name", (mount.ns,))
        members = {str(r[0]): str(r[1]) for r in rows}
        owner = next(name for name, role in members.items() if role == "owner")
        out.append({"path": p.join_path(reversed(names)), "ns": mount.ns, "role": mount.role,
                    "owner": owner, "members": members})
    return sorted(out, key=lambda s: s["path"])
