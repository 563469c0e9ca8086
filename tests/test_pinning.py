"""``loft pin``: pinned content is on this device, stays current and is never evicted.

Device A writes through the command line (``loft put``, no mount); device B is a real
``loft mount`` and pins. The server is ours (``pin_server``): each test stops it to
prove that B reads pinned content from its own cache. B is then mounted again with
the server still down, so neither the kernel's page cache nor the mount's memory can
be what answers: only the LMDB chunk cache can.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import Device, Mount, Server, Stores, unmount_strictly
from tests.devices import mount
from tests.polling import wait_for

T = TypeVar("T")

MiB = 1 << 20


@pytest.fixture(scope="module")
def pin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of our own: the tests stop it, so it is shared with no one."""
    srv = Server(Stores(tmp_path_factory.mktemp("pin-server") / "data"))
    srv.start()
    yield srv
    srv.stop()


@dataclass
class Pair:
    """Device A (command line only) and device B (mounted) of one fresh user."""

    server: Server
    a: Device
    b: Device
    mnt: Path
    tmp: Path

    def put(self, remote: str, data: bytes) -> None:
        local = self.tmp / "upload"
        local.write_bytes(data)
        result = self.a.run("put", str(local), remote)
        assert result.returncode == 0, result.stderr

    def mkdir(self, remote: str) -> None:
        result = self.a.run("mkdir", "-p", remote)
        assert result.returncode == 0, result.stderr

    def mount(self, *extra: str) -> None:
        mount(self.b, self.mnt, "--fetch-timeout", "2", *extra)

    def unmount(self) -> None:
        result = self.b.run("unmount", str(self.mnt))
        assert result.returncode == 0, result.stderr

    def status(self) -> str:
        return self.b.run("status").stdout

    def mount_status(self) -> dict[str, Any]:
        """``status.json`` as the mount writes it next (at most a second from now)."""
        path = self.b.home / "status.json"
        since = time.time()
        wait_for(lambda: path.stat().st_mtime > since, 5, "a fresh status.json")
        return dict(json.loads(path.read_text()))


@pytest.fixture
def pair(pin_server: Server, tmp_path: Path) -> Iterator[Pair]:
    if pin_server.proc is None:
        pin_server.start()
    user = f"pin{os.getpid()}x{tmp_path.name[-12:].replace('-', '')}"
    user = re.sub(r"[^a-z0-9]", "", user.lower())
    pin_server.add_user(user)
    homes = {}
    for name in ("A", "B"):
        homes[name] = tmp_path / f"home-{name}"
        pin_server.login(user, homes[name], name)
    mnt = tmp_path / "mnt-B"
    mnt.mkdir()
    pair = Pair(
        pin_server,
        Device(pin_server, user, homes["A"]),
        Device(pin_server, user, homes["B"]),
        mnt,
        tmp_path,
    )
    try:
        yield pair
    finally:
        unmount_strictly(Mount(pair.b, mnt))
        if pin_server.proc is None:
            pin_server.start()


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def eio(path: Path) -> bool:
    try:
        read(path)
    except OSError as exc:
        return exc.errno == errno.EIO
    return False


def test_a_pinned_folder_is_readable_offline_and_follows_remote_changes(pair: Pair) -> None:
    files = {
        "/docs/a.bin": os.urandom(3 * MiB // 2),
        "/docs/b.txt": b"notes\n" * 100,
        "/docs/sub/c.bin": os.urandom(600_000),
        "/other.bin": os.urandom(300_000),
        "/notes (conflicted copy from A 2026-01-02 030405).txt": b"theirs\n",
    }
    pair.mkdir("/docs/sub")
    for remote, data in files.items():
        pair.put(remote, data)
    pair.mount()
    mnt = pair.mnt
    wait_for(lambda: (mnt / "docs/sub/c.bin").exists(), 10, "the tree on B")

    result = pair.b.run("pin", str(mnt / "docs"))
    assert result.returncode == 0, result.stderr
    assert "all on this device" in result.stdout, result.stdout
    status = pair.status()
    assert re.search(
        r"^pinned:  /docs \(folder: 3 file\(s\), .*all on this device\)$", status, re.M
    )
    # A file merely named like a conflicted copy is no conflict of this device's:
    # ``loft status`` reports the conflicts its reconciler settled, not file names.
    assert "conflict" not in status, status

    # Kept current: a new version of a pinned file, a new file under the pinned folder.
    files["/docs/a.bin"] = os.urandom(MiB)
    files["/docs/sub/new.bin"] = os.urandom(400_000)
    pair.put("/docs/a.bin", files["/docs/a.bin"])
    pair.put("/docs/sub/new.bin", files["/docs/sub/new.bin"])
    wait_for(
        lambda: (mnt / "docs/a.bin").stat().st_size == MiB and (mnt / "docs/sub/new.bin").exists(),
        10,
        "the changes on B",
    )
    wait_for(
        lambda: re.search(r"/docs \(folder: 4 file\(s\), .*all on this device\)", pair.status()),
        10,
        "the new content fetched",
    )

    pair.server.stop()
    pair.unmount()  # and mount again offline: only the chunk cache can answer now
    pair.mount()
    for remote, data in files.items():
        if remote.startswith("/docs/"):
            assert read(mnt / remote.lstrip("/")) == data, remote
    assert eio(mnt / "other.bin"), "unpinned content never read was readable offline"

    result = pair.b.run("unpin", str(mnt / "docs/sub/c.bin"))
    assert result.returncode == 1
    assert "is not pinned itself: its folder /docs is" in result.stderr
    result = pair.b.run("unpin", "/docs")  # a workspace path works as well
    assert result.returncode == 0, result.stderr
    assert "pinned:" not in pair.status()


def test_cache_pressure_evicts_unpinned_content_and_keeps_pinned(pair: Pair) -> None:
    pinned, early = os.urandom(3 * MiB), os.urandom(4 * MiB)
    pair.put("/pinned.bin", pinned)
    pair.put("/early.bin", early)
    pair.put("/bulk.bin", os.urandom(64 * MiB))
    pair.mount("--cache-size", "8M")
    mnt = pair.mnt
    wait_for(lambda: (mnt / "bulk.bin").exists(), 10, "the tree on B")

    result = pair.b.run("pin", "/pinned.bin")  # a workspace path
    assert result.returncode == 0, result.stderr
    assert "all on this device" in result.stdout, result.stdout
    assert read(mnt / "early.bin") == early
    assert len(read(mnt / "bulk.bin")) == 64 * MiB
    peak = pair.mount_status()
    usage = wait_for(
        lambda: (s := pair.mount_status())["bytes"] <= 8 * MiB and s, 10, "eviction under the cap"
    )
    print(
        f"cache after 68 MiB read through an 8 MiB cap: {usage['bytes']} bytes in"
        f" {usage['chunks']} chunk(s) (seen {peak['bytes']} bytes before eviction)"
    )
    assert usage["chunks"] < 16
    assert re.search(
        r"^pinned:  /pinned\.bin \(file: 3\.0 MiB, all on this device\)$", pair.status(), re.M
    ), pair.status()

    pair.server.stop()
    pair.unmount()  # and mount again offline: only the chunk cache can answer now
    pair.mount("--cache-size", "8M")
    assert read(mnt / "pinned.bin") == pinned
    assert eio(mnt / "early.bin"), "unpinned content read before the pressure was not evicted"
