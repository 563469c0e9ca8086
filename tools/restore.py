"""Bringing back the past: ``loft versions`` and ``loft restore`` without a mount.

A path names every entry that was ever at that place, deleted ones too (an entry
keeps its id and history across renames; a name that was deleted and made again
names both). ``versions`` lists them; ``restore`` picks one version and makes the
target equal to it as a *new* version (a commit like any other), so that a restore
is itself undone by restoring the version before it:

* a file: an ``update`` of the file now at the target (or a ``create``);
* a folder: the folder as it was, recursively: what is missing is created, files
  that differ are updated, and what was not there then is deleted (it stays in
  ``.versions``); a deleted folder comes back whole.

The commit is one transaction when it fits (``MAX_OPS_PER_COMMIT`` operations and
``MAX_COMMIT_BLOCKS`` blocks); larger restores commit in order, parents first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend import protocol as p
from backend.client import Client
from backend.errors import BadRequest, NotFound
from backend.history_client import History
from tools.workspace import RemoteWorkspace


def _op(kind: str, /, **fields: Any) -> dict[str, Any]:
    return {"op": kind, "op_id": p.new_id(), **fields}


@dataclass
class Plan:
    ops: list[dict[str, Any]] = field(default_factory=list)
    files: int = 0
    folders: int = 0


class Past:
    """One workspace's history, by path."""

    def __init__(self, client: Client, ns: int) -> None:
        self.client = client
        self.ns = ns
        self.history = History(client, ns)
        self.ws = RemoteWorkspace(client, ns)

    async def versions(self, path: str) -> list[dict[str, Any]]:
        """Every version ever at ``path``, oldest first (``deleted`` rows mark ends):
        through every folder that was ever at each step of the path (a folder deleted
        and restored is two entries, and the path names what both held)."""
        parts = p.split_path(path)
        if not parts:
            raise BadRequest("the workspace root has no versions of its own: name a path in it")
        folders = [p.ROOT_ID]
        for depth, name in enumerate(parts[:-1]):
            found = {v["id"] for parent in folders for v in await self.history.place(parent, name)
                     if v["kind"] == "dir" and not v["deleted"]}
            if not found:
                raise NotFound(f"{p.join_path(parts[: depth + 1])}: never a folder")
            folders = sorted(found)
        versions = [v for parent in folders for v in await self.history.place(parent, parts[-1])]
        if not versions:
            raise NotFound(f"{path}: no versions (never there)")
        return sorted(versions, key=lambda v: v["seq"])

    async def pick(
        self, path: str, at: int | None, rev: int | None
    ) -> tuple[dict[str, Any], int]:
        """The version ``restore`` brings back and the namespace sequence to read a
        folder's content at: revision ``rev``; the one current at instant ``at``; or
        else (for a deleted path) the last one, as it was just before it went."""
        versions = await self.versions(path)
        if rev is not None:
            for version in versions:
                if version["seq"] == rev and not version["deleted"]:
                    return version, rev
            raise NotFound(f"{path} has no revision {rev} (see: loft versions {path})")
        if at is not None:
            current = [v for v in versions if v["committed"] <= at]
            if not current or current[-1]["deleted"]:
                raise NotFound(f"{path} did not exist at {p.format_instant(at)}")
            answer = await self.history.past(time=at, entry=current[-1]["id"])
            return current[-1], int(answer["seq"])
        if not versions[-1]["deleted"]:
            raise BadRequest(
                f"{path} exists: say which version with --at or --rev (see: loft versions {path})"
            )
        last = max(i for i, v in enumerate(versions) if not v["deleted"])
        ended = next(v for v in versions[last:] if v["deleted"])
        return versions[last], int(ended["before"])

    async def _subtree(self, seq: int) -> dict[str, list[dict[str, Any]]]:
        """The children of every folder at ``seq``, by folder id."""
        answer = await self.client.tree(self.ns, at=seq)
        children: dict[str, list[dict[str, Any]]] = {}
        for entry in answer["entries"]:
            if entry["id"] != p.ROOT_ID:
                children.setdefault(entry["parent"], []).append(entry)
        return children

    async def restore(self, version: dict[str, Any], seq: int, target: str) -> Plan:
        """Make ``target`` equal to ``version`` (and, for a folder, what it held at
        ``seq``) in new commits."""
        parts = p.split_path(target)
        if not parts:
            raise BadRequest("restore to a path inside the workspace, not its root")
        folder = p.join_path(parts[:-1])
        if await self.ws.entry(folder) is None:
            await self.ws.mkdir(folder, parents=True)
        parent = await self.ws.entry(folder)
        if parent is None or parent["kind"] != "dir":
            raise BadRequest(f"{folder} is not a folder")
        tree = await self._subtree(seq) if version["kind"] == "dir" else {}
        plan = Plan()
        await self._plan(plan, version, tree, await self.ws.entry(target), parent["id"],
                         parts[-1], target)
        for batch in p.commit_batches(plan.ops):
            await self.client.commit(self.ns, batch)
        return plan

    async def _plan(
        self, plan: Plan, old: dict[str, Any], tree: dict[str, list[dict[str, Any]]],
        now: dict[str, Any] | None, parent: str, name: str, path: str,
    ) -> None:
        if now is not None and now["kind"] != old["kind"]:
            plan.ops.append(_op("delete", entry=now["id"], base=now["rev"], recursive=True))
            now = None
        if now is None:
            self._create(plan, old, tree, parent, name)
            return
        if old["kind"] == "dir":
            plan.folders += 1
            if now["mode"] != old["mode"]:
                plan.ops.append(_op("setattr", entry=now["id"], base=now["rev"],
                                    mode=old["mode"]))
            _, current = await self.ws.listing(path)
            by_name = {c["name"]: c for c in current}
            for child in tree.get(old["id"], []):
                await self._plan(plan, child, tree, by_name.pop(child["name"], None), now["id"],
                                 child["name"], p.join_path([*p.split_path(path), child["name"]]))
            for gone in by_name.values():
                plan.ops.append(_op("delete", entry=gone["id"], base=gone["rev"], recursive=True))
        elif old["kind"] == "file":
            plan.files += 1
            if (now["blocks"], now["mode"]) != (old["blocks"], old["mode"]):
                plan.ops.append(_op("update", entry=now["id"], base=now["rev"],
                                    blocks=old["blocks"], size=old["size"], mode=old["mode"],
                                    mtime=old["mtime"]))
        elif now.get("target") != old.get("target"):
            plan.ops.append(_op("delete", entry=now["id"], base=now["rev"]))
            self._create(plan, old, tree, parent, name)

    def _create(
        self, plan: Plan, old: dict[str, Any], tree: dict[str, list[dict[str, Any]]],
        parent: str, name: str,
    ) -> None:
        new_id = p.new_id()
        fields: dict[str, Any] = {"entry": new_id, "parent": parent, "name": name,
                                  "mode": old["mode"], "mtime": old["mtime"]}
        if old["kind"] == "dir":
            plan.folders += 1
            plan.ops.append(_op("mkdir", **fields))
            for child in tree.get(old["id"], []):
                self._create(plan, child, tree, new_id, child["name"])
        elif old["kind"] == "file":
            plan.files += 1
            plan.ops.append(_op("create", kind="file", blocks=old["blocks"], size=old["size"],
                                **fields))
        else:
            plan.ops.append(_op("create", kind="symlink", target=old["target"], **fields))
