"""The read-only ``.versions`` folders of a mount: every past state, by path.

``.versions`` is in every folder, reachable by name and left out of listings (so
``find``, ``rsync``, ``du`` and indexers never crawl history):

* ``/.versions/`` lists ``latest``, every named snapshot, and one folder per day with
  commits (``2026-12-02``), which lists that day's instants (``2026-12-02T073000Z``,
  UTC, one per second with a commit). Any instant works by name, listed or not:
  ``/.versions/2026-12-01T180000Z/docs/plan.txt`` is the file as it was then (the last
  commit at or before it). A snapshot shows the folder it was taken of. Days keep the
  top listing short with years of history; an instant is one lookup away.
* ``dir/.versions/`` lists every name ever in ``dir`` (deleted ones too), and
  ``dir/.versions/<name>/`` every version of what was ever called ``name`` there,
  files and folders, each named by its commit time and the device that made it
  (``2026-12-02T073000Z@laptop``; ``-2``, ``-3`` … after the device for more in the
  same second), with its size and mtime as they were. An instant works there too:
  ``plan.txt/2026-12-01T180000Z`` is the version that was current then. At the top,
  the names of instants, days, snapshots and ``latest`` come first: the versions of a
  top-level entry so named are listed by ``loft versions``. (No xattrs: a mount that
  answers them is asked for ``security.capability`` before every write.)

Everything here is read-only (``EROFS``). The past is immutable, so what the server
says of a past sequence is kept (``TREE_CACHE`` listings); listings that grow (the
days, the versions of a name) are read again after ``FRESH`` seconds, and the last
answer serves while the server is unreachable. Content is read like any file's:
chunk by chunk through the cache, which is what makes a cached version read offline.

Nodes get inode numbers from ``BASE`` up, never stored; the kernel's ``forget``
drops them.
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pyfuse3

from backend import protocol as p
from backend.errors import LoftError, NotFound
from backend.history_client import History
from fs.errors import fail

log = logging.getLogger("loft.fs")

BASE = 1 << 62
"""The first inode number of a ``.versions`` node (the view's inodes stay far below)."""
FRESH = 2.0
"""Seconds a growing listing (days, instants, versions of a name) is reused."""
TREE_CACHE = 4096
"""Listings kept, of past folders (immutable: until pushed out) and of growing ones."""
PAST_TIMEOUT = 60.0
"""Seconds the kernel may cache names and attributes of a past entry."""
LIST_TIMEOUT = 1.0
DAY = 86_400
_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
ROOT = {"id": p.ROOT_ID, "parent": "", "name": "", "kind": "dir", "mode": 0o755, "size": 0,
        "mtime": 0}
"""The root as every instant shows it (it has no history of its own)."""


@dataclass
class Node:
    """One name under ``.versions``: ``kind`` is ``top`` (``/.versions``), ``names``
    (``dir/.versions``), ``day``, ``place`` (``dir/.versions/<name>``) or ``past`` (an
    entry as it was at ``seq``)."""

    key: tuple[Any, ...]
    kind: str
    """``top``, ``names``, ``day``, ``place``, ``past``, or ``gone`` (where a name's
    entry was deleted: never shown, it ends the version before it)"""
    entry: dict[str, Any]
    seq: int = 0
    folder: str = ""
    name: str = ""
    day: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    lookups: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind != "past" or self.entry["kind"] == "dir"


Listing = list[tuple[str, Node]]


def _device(name: str) -> str:
    return name.replace("/", "_").replace("\0", "_") or "unknown"


class PastTree:
    """The ``.versions`` nodes of one mount and the server questions behind them."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.nodes: dict[int, Node] = {}
        self.inos: dict[tuple[Any, ...], int] = {}
        self._next = BASE
        self._trees: OrderedDict[tuple[int, str], Listing] = OrderedDict()
        self._fresh: OrderedDict[tuple[Any, ...], tuple[float, Listing]] = OrderedDict()

    def owns(self, ino: int) -> bool:
        return ino >= BASE

    def node(self, ino: int) -> Node:
        found = self.nodes.get(ino)
        if found is None:
            raise fail(errno.ENOENT)
        return found

    def ino(self, node: Node) -> int:
        """The inode of ``node`` (the one already known for its key, if any)."""
        known = self.inos.get(node.key)
        if known is not None:
            return known
        ino, self._next = self._next, self._next + 1
        self.inos[node.key], self.nodes[ino] = ino, node
        return ino

    def remember(self, ino: int) -> None:
        self.nodes[ino].lookups += 1

    def forget(self, ino: int, count: int) -> None:
        node = self.nodes.get(ino)
        if node is None:
            return
        node.lookups -= count
        if node.lookups <= 0:
            del self.nodes[ino]
            self.inos.pop(node.key, None)

    # --- the nodes ---------------------------------------------------------------

    @staticmethod
    def _folder(key: tuple[Any, ...], kind: str, mtime: int | None = None, **fields: Any) -> Node:
        """A listing of the past; ``mtime`` in ns, by default now. Mode 755: a
        change is refused by the mount (``EROFS``), not by the kernel's permission
        check (``EACCES``)."""
        entry = {"id": "", "kind": "dir", "mode": 0o755, "size": 0,
                 "mtime": time.time_ns() if mtime is None else mtime}
        return Node(key, kind, entry, **fields)

    def versions_of(self, folder: str) -> Node:
        """``.versions`` of the live folder ``folder``."""
        if folder == p.ROOT_ID:
            return self._folder(("top",), "top")
        return self._folder(("names", folder), "names", folder=folder)

    @staticmethod
    def _past(seq: int, entry: dict[str, Any], meta: dict[str, Any] | None = None) -> Node:
        """``entry`` as it was at ``seq``; ``meta``: the version's device and time."""
        meta = meta or {}
        return Node(("past", seq, entry["id"], tuple(sorted(meta.items()))), "past", entry,
                    seq=seq, meta=meta)

    def _day(self, day: int) -> Node:
        end = min(day + DAY - 1, int(time.time()))
        return self._folder(("day", day), "day", end * 10**9, day=day)

    def _place(self, folder: str, name: str) -> Node:
        return self._folder(("place", folder, name), "place", folder=folder, name=name)

    # --- questions to the server ---------------------------------------------------

    async def _ask(self, key: tuple[Any, ...], fetch: Any) -> Listing:
        """A growing listing: the last answer if younger than ``FRESH`` seconds, or
        if the server cannot be reached now."""
        cached = self._fresh.get(key)
        if cached is not None and time.monotonic() - cached[0] < FRESH:
            return cached[1]
        try:
            listing: Listing = await fetch()
        except NotFound:
            raise
        except LoftError as err:
            if cached is None:
                raise
            log.warning("history: %s; showing what the server said last", err)
            return cached[1]
        self._fresh[key] = (time.monotonic(), listing)
        self._fresh.move_to_end(key)
        if len(self._fresh) > TREE_CACHE:
            self._fresh.popitem(last=False)
        return listing

    async def _tree(self, node: Node) -> Listing:
        key = (node.seq, node.entry["id"])
        found = self._trees.get(key)
        if found is not None:
            self._trees.move_to_end(key)
            return found
        answer = await self.history.past(at=node.seq, entry=node.entry["id"], children=True)
        listing = [(c["name"], self._past(node.seq, c)) for c in answer["children"] or []]
        self._trees[key] = listing
        if len(self._trees) > TREE_CACHE:
            self._trees.popitem(last=False)
        return listing

    async def _at(self, when: int | None, seq: int | None = None) -> Node:
        """The whole tree at an instant (or sequence)."""
        answer = await self.history.past(time=when, at=seq, entry=p.ROOT_ID)
        return self._past(int(answer["seq"]), answer["entry"])

    async def _top(self) -> Listing:
        async def fetch() -> Listing:
            listing: Listing = [(p.LATEST, await self._at(None, 1 << 62))]
            for snap in await self.history.snapshots():
                answer = await self.history.past(at=snap["seq"], entry=snap["root"])
                listing.append((snap["name"], self._past(snap["seq"], answer["entry"])))
            listing += [(p.format_day(d), self._day(d)) for d in await self.history.days()]
            return listing

        return await self._ask(("top",), fetch)

    async def _instants(self, node: Node) -> Listing:
        async def fetch() -> Listing:
            found = await self.history.instants(node.day, node.day + DAY)
            return [(p.format_instant(t), self._past(seq, {**ROOT, "mtime": t * 10**9}))
                    for t, seq in found]

        return await self._ask(node.key, fetch)

    async def _names(self, node: Node) -> Listing:
        async def fetch() -> Listing:
            return [(name, self._place(node.folder, name))
                    for name in await self.history.names(node.folder)]

        return await self._ask(node.key, fetch)

    async def _versions(self, node: Node) -> Listing:
        """Every version, deleted ones as ``(time, None)`` markers at their place."""

        async def fetch() -> Listing:
            listing: Listing = []
            seen: dict[str, int] = {}
            for version in await self.history.place(node.folder, node.name):
                meta = {"device": version.pop("device"), "committed": version.pop("committed"),
                        "seq": version.pop("seq")}
                version["rev"] = meta["seq"]
                past = self._past(meta["seq"], version, meta)
                if version.pop("deleted", False):
                    past.kind = "gone"
                    listing.append((p.format_instant(meta["committed"]), past))
                    continue
                name = f"{p.format_instant(meta['committed'])}@{_device(meta['device'])}"
                seen[name] = seen.get(name, 0) + 1
                if seen[name] > 1:
                    name = f"{name}-{seen[name]}"
                listing.append((name, past))
            return listing

        return await self._ask(node.key, fetch)

    async def _version_at(self, node: Node, when: int) -> Node:
        """The version of ``node``'s name that was current at ``when``."""
        current: Node | None = None
        for _, version in await self._versions(node):
            if version.meta["committed"] > when:
                break
            current = version
        if current is None or current.kind == "gone":
            raise NotFound(node.name)
        return current

    async def listing(self, node: Node) -> Listing:
        if not node.is_dir:
            raise fail(errno.ENOTDIR)
        if node.kind == "past":
            return await self._tree(node)
        if node.kind == "top":
            return await self._top()
        if node.kind == "day":
            return await self._instants(node)
        if node.kind == "names":
            return await self._names(node)
        return [(n, v) for n, v in await self._versions(node) if v.kind != "gone"]

    async def child(self, node: Node, name: str) -> Node:
        """``name`` in the folder ``node``, or ENOENT."""
        try:
            if node.kind == "top":
                return await self._top_child(name)
            if node.kind == "day":
                when = p.parse_instant(name)
                if when is not None and not p.is_day(name) and node.day <= when < node.day + DAY:
                    return await self._at(when)
            elif node.kind == "past" and node.entry["kind"] == "dir":
                answer = await self.history.past(at=node.seq, entry=node.entry["id"], name=name)
                return self._past(node.seq, answer["entry"])
            elif node.kind == "place" and (when := p.parse_instant(name)) is not None:
                return await self._version_at(node, when)
            for known, child in await self.listing(node):
                if known == name:
                    return child
        except NotFound:
            pass
        raise fail(errno.ENOENT)

    async def _top_child(self, name: str) -> Node:
        for known, child in await self._top():
            if known == name:
                return child
        when = p.parse_instant(name)
        if when is not None and p.is_day(name):
            return self._day(when - DAY + 1)
        if when is not None:
            return await self._at(when)
        if name in await self.history.names(p.ROOT_ID):
            return self._place(p.ROOT_ID, name)
        raise NotFound(name)


def attributes(node: Node, ino: int, uid: int, gid: int) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    entry = node.entry
    attr.st_ino = ino
    attr.st_mode = _KIND_BITS[entry["kind"]] | entry["mode"]
    attr.st_nlink = 2 if node.is_dir else 1
    attr.st_size = entry["size"]
    attr.st_blocks = (entry["size"] + 511) // 512
    attr.st_blksize = 128 * 1024
    attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = entry["mtime"]
    attr.st_uid, attr.st_gid = uid, gid
    timeout = PAST_TIMEOUT if node.kind == "past" else LIST_TIMEOUT
    attr.entry_timeout = attr.attr_timeout = timeout
    return attr

