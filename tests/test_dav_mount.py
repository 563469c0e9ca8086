"""WebDAV with real clients: davfs2 mounting /dav/ and doing ordinary file work, and
changes crossing between WebDAV and a real ``loft mount`` both ways."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, Mount
from tests.devices import remote_bytes, remote_names
from tests.polling import wait_for

DAVFS_CONF = """secrets {secrets}
cache_dir {cache}
delay_upload 0
use_locks 1
ask_auth 0
buf_size 64
"""
"""``buf_size 64``: davfs2 1.6's default buffer makes Linux 6.16 and later refuse its
directory listings (EINVAL)."""


@pytest.fixture
def davfs(new_mount: Any, tmp_path: Path) -> Iterator[tuple[Path, Mount]]:
    """A davfs2 mount of a fresh user's /dav/, beside a ``loft mount`` of the same user
    (which the test uses to check what reached the server)."""
    loft_mount: Mount = new_mount()
    url = f"{loft_mount.device.server.url}/dav/"
    secrets = tmp_path / "secrets"
    secrets.write_text(f'{url} {loft_mount.device.user} "{PASSWORD}"\n')
    secrets.chmod(0o600)
    # mount.davfs runs as the user davfs2, which cannot enter pytest's own tmp folders.
    cache = Path(tempfile.mkdtemp(prefix="loft-davfs-"))
    cache.chmod(0o777)
    conf = tmp_path / "davfs2.conf"
    conf.write_text(DAVFS_CONF.format(secrets=secrets, cache=cache))
    point = tmp_path / "dav"
    point.mkdir()
    result = subprocess.run(["mount.davfs", url, str(point), "-o", f"conf={conf}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    try:
        yield point, loft_mount
    finally:
        done = subprocess.run(["umount", str(point)], capture_output=True, text=True,
                              timeout=120, check=False)
        shutil.rmtree(cache)
        assert done.returncode == 0, done.stderr


def test_davfs2_does_ordinary_file_work(davfs: tuple[Path, Mount], tmp_path: Path) -> None:
    point, loft_mount = davfs
    device = loft_mount.device
    data = os.urandom(5 * 1024 * 1024 + 17)
    (point / "docs").mkdir()
    (point / "docs" / "note.txt").write_text("first draft\n")
    (point / "docs" / "big.bin").write_bytes(data)
    assert (point / "docs" / "big.bin").read_bytes() == data
    (point / "docs" / "note.txt").rename(point / "docs" / "final.txt")
    (point / "scratch.txt").write_text("gone soon")
    (point / "scratch.txt").unlink()
    wait_for(lambda: remote_names(device, "/docs") == ["big.bin", "final.txt"], 30,
             "davfs2's changes on the server")
    assert remote_names(device) == ["docs/"]
    assert remote_bytes(device, "/docs/big.bin", tmp_path) == data
    assert remote_bytes(device, "/docs/final.txt", tmp_path) == b"first draft\n"
    assert wait_for(lambda: (loft_mount.path / "docs" / "big.bin").read_bytes() == data, 30,
                    "the upload on the mounted device")


def test_changes_cross_between_webdav_and_a_mount(new_mount: Any) -> None:
    loft_mount: Mount = new_mount()
    device = loft_mount.device
    url = f"{device.server.url}/dav"
    auth = (device.user, PASSWORD)
    put = httpx.put(f"{url}/from-dav.txt", content=b"via webdav", auth=auth)
    assert put.status_code == 201
    wait_for(lambda: (loft_mount.path / "from-dav.txt").read_bytes() == b"via webdav", 10,
             "a WebDAV upload in the mount")
    (loft_mount.path / "from-mount.txt").write_bytes(b"via the mount")

    def seen() -> bool:
        answer = httpx.get(f"{url}/from-mount.txt", auth=auth)
        return answer.status_code == 200 and answer.content == b"via the mount"

    wait_for(seen, 10, "a mount's file over WebDAV")
    moved = httpx.request("MOVE", f"{url}/from-dav.txt", auth=auth,
                          headers={"Destination": f"{url}/renamed.txt"})
    assert moved.status_code == 201
    wait_for(lambda: sorted(os.listdir(loft_mount.path)) == ["from-mount.txt", "renamed.txt"],
             10, "a WebDAV rename in the mount")
