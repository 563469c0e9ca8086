"""What ``loft pin``, ``loft unpin`` and ``loft status`` read and write in a device's cache.

The command line does not ask the mount to pin: it writes the pin into the device's
LMDB environment (``LOFT_HOME/cache``) itself. LMDB is safe across processes (one
writer at a time, readers see each commit whole), so the pin is durable as soon as
the command returns (the commit is fsync'd), it works whether a mount runs or not,
and there is no second channel to keep consistent with the cache; the mount's pinner
(``fs.pinning``) notices the pin within a fraction of a second and fetches the
content. The command then reads the same environment to tell when all of it is on
this device.

A PATH on the command line is a path inside the device's mount point (the one the
last ``loft mount`` recorded), or else a workspace path such as ``/docs/report.pdf``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend import protocol as p
from backend.errors import LocalError
from cache.records import ConflictNote
from cache.store import Cache, PinUsage
from tools.home import alive


@contextlib.contextmanager
def device_cache(home: Path) -> Iterator[Cache]:
    """The device's cache, opened beside a running mount if there is one."""
    if not (home / "cache" / "data.mdb").exists():
        raise LocalError(f"{home} has no cache yet: mount the device once (`loft mount DIR`)")
    cache = Cache(home / "cache")
    try:
        yield cache
    finally:
        cache.close()


def running_mount(home: Path) -> dict[str, Any] | None:
    """The running mount's ``status.json``, or None if no mount of this device runs."""
    try:
        status: dict[str, Any] = json.loads((home / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return status if alive(int(status.get("pid", 0))) else None


def workspace_path(cache: Cache, raw: str) -> str:
    """``raw`` as a workspace path: relative to the mount point if it lies inside it."""
    mountpoint = cache.meta("mountpoint")
    if mountpoint:
        local = os.path.abspath(raw)
        for root in dict.fromkeys([os.path.abspath(mountpoint), os.path.realpath(mountpoint)]):
            relative = os.path.relpath(local, root)
            if relative == ".":
                return "/"
            if not relative.startswith(".."):
                return p.join_path(p.split_path(relative))
    return p.join_path(p.split_path(raw))


def resolve(cache: Cache, raw: str) -> tuple[str, str]:
    """``(workspace path, entry id)`` of ``raw`` in this device's replica of the tree."""
    path = workspace_path(cache, raw)
    with cache.read() as txn:
        entry_id = cache.view.lookup_path(txn, path)
    if entry_id is None:
        raise LocalError(f"{path}: no such file or folder on this device")
    return path, entry_id


def pinned_above(cache: Cache, entry_id: str) -> str | None:
    """The path of the nearest pinned folder holding ``entry_id``, if any."""
    with cache.read() as txn:
        pins = set(cache.pins(txn))
        entry = cache.view.get(txn, entry_id)
        while entry is not None and entry["id"] != p.ROOT_ID:
            parent = entry["parent"]
            if parent in pins:
                return cache.view.path_of(txn, parent)
            entry = cache.view.get(txn, parent)
    return None


def usage(cache: Cache, entry_id: str) -> PinUsage:
    """``files``, ``bytes`` and ``missing`` (bytes not yet cached) of a pin."""
    with cache.read() as txn:
        return cache.pin_usage(txn, entry_id)


def describe(cache: Cache, entry_id: str) -> dict[str, Any] | None:
    """A pin's ``path``, ``kind`` and ``usage``; None if its entry is gone."""
    with cache.read() as txn:
        entry, path = cache.view.get(txn, entry_id), cache.view.path_of(txn, entry_id)
        if entry is None or path is None:
            return None
        return {"path": path, "kind": entry["kind"], **cache.pin_usage(txn, entry_id)}


def report(cache: Cache) -> list[dict[str, Any]]:
    """``describe`` of every pin still in the tree (a deleted one holds nothing)."""
    with cache.read() as txn:
        ids = cache.pins(txn)
    found = [describe(cache, entry_id) for entry_id in ids]
    return sorted((pin for pin in found if pin is not None), key=lambda pin: pin["path"])


def conflicts(cache: Cache, limit: int = 50) -> list[ConflictNote]:
    """The conflicts this device's reconciler settled, newest first (``loft status``):
    read from the record made when each was decided, not guessed from file names."""
    with cache.read() as txn:
        return cache.conflicts(txn, limit)
