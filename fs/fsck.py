"""The device check with the reconciler: ``cache.fsck``'s checks, and that the view is
exactly the journal replayed over the remote tree (what the mount shows is what the
uploader will make of the server's state)."""

from __future__ import annotations

from pathlib import Path

from backend import protocol as p
from cache.fsck import check_cache
from cache.store import Cache
from fs.replica import Replica


def check_replay(cache: Cache) -> list[str]:
    problems: list[str] = []
    with cache.read() as txn:
        device = str(cache.env.meta_get(txn, "device", "device"))
        tree, _, _ = Replica(cache, device).replay(txn)
        ids = {entry["id"] for entry in cache.view.all(txn)} | set(tree.changed)
        ids |= {entry["id"] for entry in cache.remote.all(txn)}  # one the view fails to show
        for entry_id in sorted(ids - {p.ROOT_ID}):
            shown = cache.view.get(txn, entry_id)
            planned = tree.get(entry_id)
            if planned is not None and planned["parent"] != p.ROOT_ID and not tree.is_folder(
                planned["parent"]
            ):
                planned = None
            strip = [None if e is None else {k: v for k, v in e.items() if k != "rev"}
                     for e in (shown, planned)]
            if strip[0] != strip[1]:
                name = (shown or planned or {"name": entry_id})["name"]
                problems.append(f"view: {entry_id} ({name!r}) differs from the journal"
                                " replayed over the remote tree")
    return problems


def check(cache: Cache) -> list[str]:
    return check_cache(cache) + check_replay(cache)


def check_device(home: Path) -> list[str]:
    """Every problem in the device state under ``home``; empty when clean."""
    if not (home / "cache" / "data.mdb").exists():
        return []
    cache = Cache(home / "cache")
    try:
        return check(cache)
    finally:
        cache.close()
