"""Devices and mounts in tests: log in, mount, wait for sync, read trees, kill.

One set of helpers for every test that drives real devices (``loft login`` homes) and
real mounts (``loft mount`` subprocesses), so that "synced", "the tree of a mount" or
"the server's tree" mean the same thing in every test file:

- ``login_device`` logs a device in through a URL: the server's own, or a
  ``FaultProxy``'s (``tests/faultproxy.py``) so that its network can be cut.
- ``mount``; unmounting is conftest's (``unmount_strictly``, ``unmount_and_check``).
- ``drained`` (the journal is empty) and ``synced`` (empty and online) wait on a
  fresh ``loft status``; ``converge`` waits until mounts (and the server) agree.
- ``tree`` reads a mount as ``{path: bytes | "dir" | ("link", target)}``;
  ``server_tree`` reads the server in the same shape through the API, with a
  device's token, straight to the server (never through a proxy); ``journal`` reads
  the server's journal, and ``assert_applied_once`` checks that no operation in it
  was applied twice.
- ``kill_9`` / ``detach_killed``: ``kill -9`` of a mount process, and the cleaning of
  its dead mount point before mounting again.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from backend import protocol as p
from backend.client import Client
from tests.conftest import Device, Mount, Server, loft
from tests.polling import fresh_status, pending

SYNC = 30.0
"""Seconds for a device to reach the server after a restore (its retry backoff
grows to 10 s while offline) and push what it holds, on a shared two-core machine."""

PIECE = 16 << 20
"""Bytes read or written at a time by the digest helpers."""

_names = iter(range(10**9))


# --- devices and mounts --------------------------------------------------------------


def login_device(server: Server, url: str, user: str, home: Path, name: str) -> Device:
    """Device ``name`` of ``user`` at ``home``, logged in through ``url`` (the server's
    own or a proxy's); ``Device.client()`` still reaches ``server`` directly."""
    result = loft("login", url, "--user", user, "--device", name, home=home)
    assert result.returncode == 0, result.stderr
    return Device(server, user, home)


def mount(device: Device, path: Path, *extra: str) -> Mount:
    """``loft mount`` of ``device`` at ``path`` (created if missing)."""
    path.mkdir(exist_ok=True)
    result = device.run("mount", str(path), *extra)
    assert result.returncode == 0, result.stderr
    return Mount(device, path)


def detach_killed(path: Path) -> None:
    """Detach the FUSE mount left by a killed mount process (``fusermount3 -uz``), so
    that the device can be mounted again; fail if that fails."""
    result = subprocess.run(
        ["fusermount3", "-uz", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def mount_pid(device: Device) -> int:
    """The pid of the device's running mount process (``LOFT_HOME/mount.pid``)."""
    return int((device.home / "mount.pid").read_text())


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_9(pid: int) -> None:
    """``kill -9`` a mount process and wait until it is gone."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, f"mount process {pid} survived SIGKILL"
        time.sleep(0.01)


# --- sync state ----------------------------------------------------------------------


def status(mount: Mount, ready: Callable[[str], bool], timeout: float = SYNC) -> str:
    """A fresh ``loft status`` of the mount's device once ``ready`` holds for it."""
    return fresh_status(mount, timeout, ready)


def mount_line(text: str) -> str:
    """What ``loft status`` says of the mount: ``running (pid N), online`` or so."""
    match = re.search(r"^mount: +(.*)$", text, re.M)
    assert match, text
    return match.group(1)


def drained(mount: Mount, timeout: float = SYNC) -> str:
    """Wait until the mount's journal is empty: everything written is committed."""
    return status(mount, lambda t: pending(t) == 0, timeout)


def synced(mount: Mount, timeout: float = SYNC) -> str:
    """Wait until the mount is online with an empty journal."""
    return status(mount, lambda t: pending(t) == 0 and mount_line(t).endswith(", online"), timeout)


# --- trees ---------------------------------------------------------------------------


def tree(root: Path) -> dict[str, Any]:
    """Every path under ``root``: a file's bytes, ``"dir"``, or ``("link", target)``."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def modes(root: Path) -> dict[str, int]:
    """The permission bits of every file and folder under ``root`` (links excluded)."""
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return out


def api(device: Device, call: Callable[[Client], Any]) -> Any:
    """One call of the server's API with ``device``'s token, straight to the server."""

    async def run() -> Any:
        async with device.client() as client:
            return await call(client)

    return trio.run(run)


def journal(device: Device) -> list[dict[str, Any]]:
    """The server's journal of the device's root namespace: every version, in order."""
    answer = api(device, lambda c: c.changes(device.root_ns, 0, limit=10_000))
    assert len(answer["changes"]) < 10_000
    records: list[dict[str, Any]] = answer["changes"]
    return records


def assert_applied_once(records: list[dict[str, Any]]) -> None:
    """No operation of the journal shows twice: an operation applied again would leave
    a version identical to the one before it (same name, place, content, times)."""
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_entry.setdefault(record["id"], []).append(record)
    for entry, history in by_entry.items():
        for before, after in itertools.pairwise(history):
            same = {k: v for k, v in before.items() if k != "rev"} == {
                k: v for k, v in after.items() if k != "rev"
            }
            assert not same, f"entry {entry} has the same version twice: {history}"
        assert sum(r.get("deleted", False) for r in history) <= 1, history


def server_entries(device: Device) -> dict[str, dict[str, Any]]:
    """The server's live tree of the device's root namespace: path → entry record."""
    answer = api(device, lambda c: c.tree(device.root_ns))
    by_id = {e["id"]: e for e in answer["entries"]}
    paths: dict[str, str] = {p.ROOT_ID: ""}

    def path_of(entry_id: str) -> str:
        if entry_id not in paths:
            entry = by_id[entry_id]
            parent = path_of(entry["parent"])
            paths[entry_id] = f"{parent}/{entry['name']}" if parent else entry["name"]
        return paths[entry_id]

    return {path_of(e["id"]): e for e in answer["entries"] if e["id"] != p.ROOT_ID}


def server_tree(device: Device) -> dict[str, Any]:
    """The server's live tree in ``tree``'s shape, content fetched with ``device``'s token."""
    entries = server_entries(device)

    async def contents() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with device.client() as client:
            for path, entry in entries.items():
                if entry["kind"] == "dir":
                    out[path] = "dir"
                elif entry["kind"] == "symlink":
                    out[path] = ("link", entry["target"])
                else:
                    pieces = [await client.get_chunk(cid) for cid, _ in entry["blocks"]]
                    out[path] = b"".join(pieces)
        return out

    return trio.run(contents)


def show(value: Any) -> str:
    """A tree's value, short: a file's size and first bytes, ``dir``, or ``absent``."""
    if isinstance(value, bytes):
        return f"{len(value)} bytes {value[:40]!r}" + ("..." if len(value) > 40 else "")
    return "absent" if value is None else str(value)


def differences(trees: dict[str, dict[str, Any]]) -> list[str]:
    """Each path on which the named trees disagree, with what each holds there."""
    paths = sorted(set().union(*trees.values()))
    return [
        f"{path}: " + ", ".join(f"{name} {show(t.get(path))}" for name, t in trees.items())
        for path in paths
        if len({repr(t.get(path)) for t in trees.values()}) > 1
    ]


def converge(*mounts: Mount, server: Device | None = None, timeout: float = SYNC) -> None:
    """Wait until every mount shows the same tree (and ``server``'s token reads the
    same from the server, if given); else fail naming each path where they differ."""
    deadline = time.monotonic() + timeout
    while True:
        trees: dict[str, dict[str, Any]] = {}
        try:
            trees = {m.path.name: tree(m.path) for m in mounts}
            first = next(iter(trees.values()))
            if all(t == first for t in trees.values()):
                if server is None:
                    return
                trees["server"] = server_tree(server)
                if trees["server"] == first:
                    return
        except OSError as exc:
            trees = {"error": {"": repr(exc)}}
        if time.monotonic() > deadline:
            if server is not None and "server" not in trees:
                trees["server"] = server_tree(server)
            shown = "\n".join(differences(trees))
            raise AssertionError(f"the trees differ after {timeout:.0f}s:\n{shown}")
        time.sleep(0.2)


def remote_bytes(device: Device, path: str, tmp: Path) -> bytes:
    """A file's content as ``loft get`` of the device fetches it."""
    local = tmp / f"got-{next(_names)}"
    result = device.run("get", path, str(local))
    assert result.returncode == 0, result.stderr
    return local.read_bytes()


def remote_names(device: Device, path: str = "/") -> list[str]:
    """``loft ls`` of the device, sorted (folders end with ``/``)."""
    result = device.run("ls", path)
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.splitlines())


# --- content -------------------------------------------------------------------------


def write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes, 16 MiB at a time; their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(PIECE, left))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    """The SHA-256 of a file, read 16 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()
