"""Direct access to the remote workspace without a mount: paths to commits.

Each command resolves paths with the server's lookup and turns the change into one
commit whose operations are conditional on the revisions just read, so a concurrent
change elsewhere makes the command fail cleanly instead of overwriting it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from backend import protocol as p
from backend.chunking import Piece
from backend.client import Client
from backend.errors import BadRequest, Exists, LocalError, NotFound
from backend.transfer import Progress, blocks_of, download, plan, upload_pieces


def _op(op_kind: str, /, **fields: Any) -> dict[str, Any]:
    return {"op": op_kind, "op_id": p.new_id(), **fields}


class RemoteWorkspace:
    def __init__(self, client: Client, ns: int) -> None:
        self.client = client
        self.ns = ns

    async def entry(self, path: str) -> dict[str, Any] | None:
        try:
            answer = await self.client.lookup(self.ns, path)
        except NotFound:
            return None
        entry: dict[str, Any] = answer["entry"]
        return entry

    async def listing(self, path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        answer = await self.client.lookup(self.ns, path, children=True)
        return answer["entry"], answer["children"] or []

    async def _parent_and_name(self, path: str) -> tuple[dict[str, Any], str]:
        parts = p.split_path(path)
        if not parts:
            raise BadRequest("the workspace root cannot be the target")
        parent = await self.entry(p.join_path(parts[:-1]))
        if parent is None or parent["kind"] != "dir":
            raise NotFound(f"{p.join_path(parts[:-1])}: no such directory")
        return parent, parts[-1]

    async def mkdir(self, path: str, parents: bool = False) -> None:
        """Create a directory (and, with ``parents``, its missing ancestors) in one commit."""
        parts = p.split_path(path)
        depth = len(parts)
        existing = await self.entry(p.join_path(parts))
        while existing is None:
            depth -= 1
            existing = await self.entry(p.join_path(parts[:depth]))
        if existing["kind"] != "dir":
            raise Exists(f"{p.join_path(parts[:depth])} exists and is not a directory")
        if depth == len(parts):
            if parents:
                return
            raise Exists(f"{p.join_path(parts)} already exists")
        if depth < len(parts) - 1 and not parents:
            raise NotFound(f"{p.join_path(parts[:-1])}: no such directory")
        ops: list[dict[str, Any]] = []
        parent_id = existing["id"]
        for name in parts[depth:]:
            new = p.new_id()
            ops.append(
                _op(
                    "mkdir",
                    entry=new,
                    parent=parent_id,
                    name=name,
                    mode=0o755,
                    mtime=time.time_ns(),
                )
            )
            parent_id = new
        await self.client.commit(self.ns, ops)

    async def remove(self, path: str, recursive: bool) -> None:
        entry = await self.entry(path)
        if entry is None:
            raise NotFound(f"{path}: no such file or directory")
        if entry["id"] == p.ROOT_ID:
            raise BadRequest("refusing to remove the workspace root")
        await self.client.commit(
            self.ns, [_op("delete", entry=entry["id"], base=entry["rev"], recursive=recursive)]
        )

    async def move(self, src: str, dst: str) -> None:
        entry = await self.entry(src)
        if entry is None:
            raise NotFound(f"{src}: no such file or directory")
        target = await self.entry(dst)
        if target is not None and target["kind"] == "dir" and entry["kind"] != "dir":
            dst = dst.rstrip("/") + "/" + entry["name"]
            target = await self.entry(dst)
        elif dst.endswith("/") and entry["kind"] != "dir":
            # A trailing '/' names a directory; only a directory may take that name
            # (as rename(2) answers ENOTDIR), never a file renamed to "dst".
            raise NotFound(f"{dst}: no such directory")
        parent, name = await self._parent_and_name(dst)
        op = _op("rename", entry=entry["id"], base=entry["rev"], parent=parent["id"], name=name)
        if target is not None and target["id"] != entry["id"]:
            op["replace"] = {"entry": target["id"], "base": target["rev"]}
        await self.client.commit(self.ns, [op])

    async def put(
        self,
        local: Path,
        remote: str,
        progress: Progress,
        on_total: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        if not await trio.Path(local).is_file():
            raise LocalError(f"{local}: no such file")
        target = await self.entry(remote)
        if target is not None and target["kind"] == "dir":
            remote = remote.rstrip("/") + "/" + local.name
            target = await self.entry(remote)
        elif remote.endswith("/"):
            raise NotFound(f"{remote}: no such directory")
        if target is not None and target["kind"] != "file":
            raise Exists(f"{remote} exists and is not a file")
        parent, name = await self._parent_and_name(remote)
        stat = await trio.Path(local).stat()
        pieces: list[Piece] = await plan(local)
        sent = await upload_pieces(self.client, local, pieces, progress, on_total=on_total)
        fields = {
            "size": sum(x.length for x in pieces),
            "mtime": stat.st_mtime_ns,
            "mode": stat.st_mode & 0o7777,
            "blocks": blocks_of(pieces),
        }
        if target is None:
            op = _op(
                "create", entry=p.new_id(), parent=parent["id"], name=name, kind="file", **fields
            )
        else:
            op = _op("update", entry=target["id"], base=target["rev"], **fields)
        result: dict[str, Any] = await self.client.commit(self.ns, [op])
        result["sent"] = sent
        return result

    async def get(self, remote: str, local: Path, progress: Progress) -> dict[str, Any]:
        entry = await self.entry(remote)
        if entry is None:
            raise NotFound(f"{remote}: no such file")
        if entry["kind"] != "file":
            raise BadRequest(f"{remote} is a {entry['kind']}, not a file")
        if await trio.Path(local).is_dir():
            local = local / entry["name"]
        if not await trio.Path(local.parent).is_dir():
            raise LocalError(f"{local.parent}: no such directory")
        await download(self.client, entry["blocks"], local, entry["mode"], progress)
        return entry
