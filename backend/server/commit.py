"""Applying a commit: a batch of operations on one namespace, in one transaction.

``apply_commit`` runs inside a ``Database.transaction()`` that has locked the
namespace. Every operation is checked against the live tree (compare-and-swap on
the entry's ``rev``), then writes the new entry state to ``entries`` and appends it
to ``versions`` under the next journal sequence. If any operation fails, the error
propagates and the transaction rolls back: a commit is wholly present or absent.

A commit holds the namespace's writer (on SQLite, every namespace's), so its work is
bounded: nothing is created or moved below ``protocol.MAX_DEPTH`` folders (a moved
folder's subfolders included), a folder's ancestors are read in one recursive query
(kept within the commit until a folder moves), and the rows a commit walks and writes
are counted against ``MAX_COMMIT_WORK``; beyond it the commit is refused
(``TooLarge``, nothing applied) and is to be split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend import protocol as p
from backend.errors import (
    BadRequest,
    Conflict,
    Exists,
    Forbidden,
    LoftError,
    MissingChunks,
    NotEmpty,
    NotFound,
    TooLarge,
)
from backend.server.commit_context import CommitContext
from backend.server.rows import VISIBLE_CHUNK


def _current(ctx: CommitContext, op: Mapping[str, Any]) -> dict[str, Any]:
    """The entry ``op`` names, if its ``rev`` is still the op's ``base``."""
    entry_id = p.entry_id_field(op, "entry")
    base = p.nonneg_int(op, "base")
    entry = ctx.entry(entry_id)
    if entry is None:
        raise Conflict(f"entry {entry_id} no longer exists", {"current": None})
    if entry["rev"] != base:
        raise Conflict(
            f"{entry['name'] or '/'} changed since revision {base} (now {entry['rev']})",
            {"current": entry},
        )
    return entry


def _directory(ctx: CommitContext, entry_id: str) -> dict[str, Any]:
    parent = ctx.entry(entry_id)
    if parent is None:
        raise NotFound(f"parent directory {entry_id} does not exist")
    if parent["kind"] != "dir":
        raise BadRequest(f"{parent['name']} is not a directory")
    return parent


def _check_free(ctx: CommitContext, parent: str, name: str) -> None:
    taken = ctx.child(parent, name)
    if taken is not None:
        raise Exists(f"{name} already exists", {"current": taken})


def _check_blocks(ctx: CommitContext, op: Mapping[str, Any]) -> tuple[list[list[Any]], int]:
    blocks = p.block_list(op)
    ctx.spend(len(blocks))
    size = p.nonneg_int(op, "size")
    if sum(length for _, length in blocks) != size:
        raise BadRequest("size does not match the sum of the block lengths")
    wanted = sorted({cid for cid, _ in blocks})
    present: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        marks = ",".join("?" * len(batch))
        rows = ctx.tx.execute(
            f"SELECT c.id, c.size FROM chunks c WHERE c.id IN ({marks}) AND {VISIBLE_CHUNK}",
            (*batch, ctx.user_id, ctx.user_id),
        )
        present.update((r[0], int(r[1])) for r in rows)
    missing = [cid for cid in wanted if cid not in present]
    if missing:
        raise MissingChunks(f"{len(missing)} chunk(s) not uploaded", {"missing": missing})
    for cid, length in blocks:
        if present[cid] != length:
            raise BadRequest(f"chunk {cid} is {present[cid]} bytes, not {length}")
    for cid in wanted:
        if ctx.tx.execute(
            "INSERT INTO ns_chunks (ns, chunk) VALUES (?, ?) ON CONFLICT DO NOTHING"
            " RETURNING chunk",
            (ctx.ns, cid),
        ):
            ctx.referenced[cid] = present[cid]
    return [[cid, length] for cid, length in blocks], size


def _new_entry_id(ctx: CommitContext, op: Mapping[str, Any]) -> str:
    entry_id = p.entry_id_field(op, "entry")
    used = ctx.tx.execute(
        "SELECT 1 FROM versions WHERE ns = ? AND id = ? LIMIT 1", (ctx.ns, entry_id)
    )
    if used or entry_id == p.ROOT_ID:
        raise BadRequest(f"entry id {entry_id} is already in use")
    return entry_id


def op_create(ctx: CommitContext, op: Mapping[str, Any]) -> dict[str, Any]:
    kind = p.field(op, "kind", str) if op["op"] == "create" else "dir"
    if kind not in ("file", "symlink", "dir"):
        raise BadRequest(f"cannot create an entry of kind {kind!r}")
    entry_id = _new_entry_id(ctx, op)
    folder = _directory(ctx, p.entry_id_field(op, "parent"))
    parent = folder["id"]
    name = p.validate_name(op.get("name"))
    _check_free(ctx, parent, name)
    ctx.check_depth(folder, name)
    entry: dict[str, Any] = {
        "id": entry_id,
        "parent": parent,
        "name": name,
        "kind": kind,
        "size": 0,
        "mode": p.nonneg_int(op, "mode", 0o755 if kind == "dir" else 0o644) & 0o7777,
        "mtime": p.nonneg_int(op, "mtime", ctx.now * 1_000_000_000),
    }
    if kind == "file":
        entry["blocks"], entry["size"] = _check_blocks(ctx, op)
    elif kind == "symlink":
        target = p.field(op, "target", str)
        if not target or "\0" in target or len(target.encode()) > 4096:
            raise BadRequest("a symlink target must be 1-4096 bytes without NUL")
        entry["target"], entry["size"] = target, len(target.encode())
    ctx.write(entry)
    return entry


def op_update(ctx: CommitContext, op: Mapping[str, Any]) -> dict[str, Any]:
    entry = _current(ctx, op)
    if entry["kind"] != "file":
        raise BadRequest(f"{entry['name']} is not a regular file")
    entry["blocks"], entry["size"] = _check_blocks(ctx, op)
    entry["mtime"] = p.nonneg_int(op, "mtime", ctx.now * 1_000_000_000)
    if "mode" in op:
        entry["mode"] = p.nonneg_int(op, "mode") & 0o7777
    ctx.write(entry)
    return entry


def op_setattr(ctx: CommitContext, op: Mapping[str, Any]) -> dict[str, Any]:
    """Change the mode or mtime; one that leaves both as they are (a chmod and its undo,
    folded offline) is no new version: the result names the entry's current one."""
    entry = _current(ctx, op)
    before = (entry["mode"], entry["mtime"])
    if "mode" in op:
        entry["mode"] = p.nonneg_int(op, "mode") & 0o7777
    if "mtime" in op:
        entry["mtime"] = p.nonneg_int(op, "mtime")
    if (entry["mode"], entry["mtime"]) != before:
        ctx.write(entry)
    return entry


def _delete_tree(ctx: CommitContext, entry: dict[str, Any], recursive: bool) -> None:
    """Delete ``entry`` and, if ``recursive``, all below it: each folder's children in
    name order, each before its folder; iterative, whatever the depth."""
    if entry["kind"] == "mount":
        raise Forbidden(f"{entry['name']} is a shared folder: leave it or unshare it first")
    if entry["kind"] != "dir":
        ctx.write(entry, deleted=True)
        return
    children = ctx.children(entry["id"])
    if children and not recursive:
        raise NotEmpty(f"directory {entry['name']} is not empty", {"current": entry})
    stack = [(entry, iter(children))]
    while stack:
        folder, rest = stack[-1]
        child = next(rest, None)
        if child is None:
            stack.pop()
            ctx.write(folder, deleted=True)
        elif child["kind"] == "mount":
            raise Forbidden(f"{folder['name']} holds the shared folder {child['name']}:"
                            " leave it or unshare it first")
        elif child["kind"] == "dir":
            stack.append((child, iter(ctx.children(child["id"]))))
        else:
            ctx.write(child, deleted=True)


def op_delete(ctx: CommitContext, op: Mapping[str, Any]) -> dict[str, Any]:
    entry = _current(ctx, op)
    if entry["id"] == p.ROOT_ID:
        raise BadRequest("the workspace root cannot be deleted")
    recursive = op.get("recursive", False)
    if not isinstance(recursive, bool):
        raise BadRequest("field 'recursive' must be a boolean")
    _delete_tree(ctx, entry, recursive)
    return entry


def op_rename(ctx: CommitContext, op: Mapping[str, Any]) -> dict[str, Any]:
    entry = _current(ctx, op)
    if entry["id"] == p.ROOT_ID:
        raise BadRequest("the workspace root cannot be renamed")
    parent = _directory(ctx, p.entry_id_field(op, "parent"))
    name = p.validate_name(op.get("name"))
    if entry["id"] in ctx.ancestors(parent):
        raise BadRequest(f"cannot move {entry['name']} inside itself")
    ctx.check_depth(parent, name)
    if entry["kind"] == "dir" and parent["id"] != entry["parent"]:
        ctx.check_height(entry, len(ctx.ancestors(parent)))
    taken = ctx.child(parent["id"], name)
    if taken is not None and taken["id"] != entry["id"]:
        replace = op.get("replace")
        if not isinstance(replace, dict) or replace.get("entry") != taken["id"]:
            raise Exists(f"{name} already exists", {"current": taken})
        victim = _current(ctx, {"entry": replace["entry"], "base": replace.get("base")})
        if (victim["kind"] == "dir") != (entry["kind"] == "dir"):
            raise BadRequest(f"cannot replace {victim['kind']} {name} with a {entry['kind']}")
        _delete_tree(ctx, victim, recursive=False)
    entry["parent"], entry["name"] = parent["id"], name
    if entry["kind"] == "dir":
        ctx.chains.clear()  # the folders below it have new ancestors
    ctx.write(entry)
    return entry


OPERATIONS = {
    "create": op_create,
    "mkdir": op_create,
    "update": op_update,
    "setattr": op_setattr,
    "delete": op_delete,
    "rename": op_rename,
}


def validate_ops(ops: object) -> list[dict[str, Any]]:
    """The ``ops`` of a commit request, with their kinds and ids checked."""
    if not isinstance(ops, list) or not ops:
        raise BadRequest("a commit needs a non-empty list of operations")
    if len(ops) > p.MAX_OPS_PER_COMMIT:
        raise BadRequest(f"at most {p.MAX_OPS_PER_COMMIT} operations per commit")
    blocks = sum(len(op["blocks"]) for op in ops
                 if isinstance(op, dict) and isinstance(op.get("blocks"), list))
    if blocks > p.MAX_COMMIT_BLOCKS:
        raise TooLarge(f"at most {p.MAX_COMMIT_BLOCKS} blocks per commit")
    seen: set[str] = set()
    for op in ops:
        kind = op.get("op") if isinstance(op, dict) else op
        if not isinstance(kind, str) or kind not in OPERATIONS:
            shown = repr(kind)[:40] if isinstance(kind, str) else type(kind).__name__
            raise BadRequest(f"unknown operation {shown}")
        op_id = p.entry_id_field(op, "op_id")
        if op_id in seen:
            raise BadRequest(f"operation id {op_id} appears twice")
        seen.add(op_id)
    return ops


def apply_commit(ctx: CommitContext, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply every op or raise; each failure names the index of the op that failed."""
    results: list[dict[str, Any]] = []
    for index, op in enumerate(ops):
        try:
            entry = OPERATIONS[op["op"]](ctx, op)
        except LoftError as err:
            detail = dict(err.detail) if isinstance(err.detail, dict) else {}
            detail["op"] = index
            err.detail = detail
            raise
        results.append({"entry": entry["id"], "rev": entry["rev"]})
    return results
