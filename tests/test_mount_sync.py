"""Two real mounts of one user: every change on one shows on the other.

Each device is a real ``loft mount`` in its own process (``new_mount`` in conftest),
against a real server on loopback. A change made through one mount must be visible
through the other within a few seconds, although the other mount's kernel has the old
state cached: before each change the other side reads the old state, so the kernel
holds its names, attributes and pages, and only the mount's invalidations can make it
look again. ``ARRIVAL`` is shorter than the kernel's own cache lifetime
(``fs.operations.TIMEOUT``), so a missing invalidation fails the test rather than
being papered over by the cache expiring.

The rest checks what a sync system promises beyond that: big files at a bounded
memory, lazy reads (a new device fetches only what it reads), dedup and
content-defined chunking at the server, ``loft status``, a clean ``loft unmount``,
and the same live sync over the scale-out back ends (PostgreSQL + S3).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fs.core import TIMEOUT as KERNEL_CACHE_SECONDS
from tests.conftest import Device, Mount, Server, Stores, loft, make_stores, unmount_strictly
from tests.devices import (
    PIECE,
    drained,
    hash_file,
    login_device,
    mount,
    mount_line,
    remote_names,
    synced,
    write_random,
)
from tests.polling import fresh_status, pending, wait_for

T = TypeVar("T")

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

ARRIVAL = 4.0
"""Seconds a change may take to show on the other device ("within a few seconds")."""
assert ARRIVAL < KERNEL_CACHE_SECONDS

SYNC = 120.0
"""Seconds a device may take to upload a few hundred MiB on a shared two-core machine."""


# --- helpers -------------------------------------------------------------------------


def arrive(predicate: Callable[[], Any], what: str = "") -> None:
    wait_for(predicate, ARRIVAL, what)


def status_pid(mount: Mount) -> int:
    path = mount.device.home / "status.json"
    return int(wait_for(lambda: json.loads(path.read_text())["pid"], 10, "status.json"))


def cached_chunks(text: str) -> int:
    match = re.search(r"^cache: .* in (\d+) chunk\(s\)", text, re.M)
    assert match, text
    return int(match.group(1))


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a process, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    assert match, text
    return int(match.group(1)) * KiB


def server_chunks(server: Server) -> int:
    """Chunks stored by an embedded-default server (``DATA/chunks/ab/cd/<id>``)."""
    root = server.stores.data / "chunks"
    return sum(1 for path in root.glob("??/??/*") if not path.name.startswith("."))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- every kind of change, both ways -------------------------------------------------


@pytest.fixture(scope="module")
def pair(mount_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Mount]]:
    """Devices A and B of one user, both mounted, shared by the change tests below
    (each works in a folder of its own): two mounts per test would cost more than
    the tests."""
    root = tmp_path_factory.mktemp("pair")
    user = f"pair{os.getpid()}"
    mount_server.add_user(user)
    mounts: list[Mount] = []
    try:
        for name in ("A", "B"):
            device = login_device(mount_server, mount_server.url, user, root / f"home-{name}", name)
            mounts.append(mount(device, root / f"mnt-{name}"))
        yield mounts
    finally:
        for m in mounts:
            unmount_strictly(m)


def settle_file(src: Path, dst: Path, name: str, content: bytes) -> None:
    """``name`` written on ``src`` and read on ``dst``, so ``dst``'s kernel caches it."""
    (src / name).write_bytes(content)
    arrive(lambda: (dst / name).read_bytes() == content, f"{name} on the other side")


def change_create(src: Path, dst: Path) -> None:
    assert not os.path.lexists(dst / "new.txt")
    (src / "new.txt").write_bytes(b"created\n")
    arrive(lambda: (dst / "new.txt").read_bytes() == b"created\n")


def change_edit_replace(src: Path, dst: Path) -> None:
    settle_file(src, dst, "doc.txt", b"first version\n")
    (src / "doc.txt").write_bytes(b"other version\n")  # same size: only the pages differ
    arrive(lambda: (dst / "doc.txt").read_bytes() == b"other version\n")


def change_edit_append(src: Path, dst: Path) -> None:
    settle_file(src, dst, "log.txt", b"line 1\n")
    with open(src / "log.txt", "ab") as f:
        f.write(b"line 2\n")
    arrive(lambda: (dst / "log.txt").read_bytes() == b"line 1\nline 2\n")


def change_rename(src: Path, dst: Path) -> None:
    settle_file(src, dst, "before.txt", b"renamed\n")
    os.rename(src / "before.txt", src / "after.txt")
    arrive(
        lambda: (
            not os.path.lexists(dst / "before.txt")
            and (dst / "after.txt").read_bytes() == b"renamed\n"
            and os.listdir(dst) == ["after.txt"]
        )
    )


def change_move_across_directories(src: Path, dst: Path) -> None:
    (src / "from").mkdir()
    (src / "to").mkdir()
    settle_file(src / "from", dst / "from", "moved.txt", b"moved\n")
    assert os.listdir(dst / "to") == []
    os.rename(src / "from" / "moved.txt", src / "to" / "moved.txt")
    arrive(
        lambda: (
            os.listdir(dst / "from") == []
            and not os.path.lexists(dst / "from" / "moved.txt")
            and (dst / "to" / "moved.txt").read_bytes() == b"moved\n"
        )
    )


def change_delete(src: Path, dst: Path) -> None:
    settle_file(src, dst, "doomed.txt", b"soon gone\n")
    os.unlink(src / "doomed.txt")
    arrive(lambda: not os.path.lexists(dst / "doomed.txt") and os.listdir(dst) == [])


def change_mkdir(src: Path, dst: Path) -> None:
    assert not os.path.lexists(dst / "made")
    (src / "made").mkdir()
    arrive(lambda: (dst / "made").is_dir() and os.listdir(dst / "made") == [])


def change_rmdir(src: Path, dst: Path) -> None:
    (src / "empty").mkdir()
    arrive(lambda: os.listdir(dst / "empty") == [])
    (src / "empty").rmdir()
    arrive(lambda: not os.path.lexists(dst / "empty") and os.listdir(dst) == [])


def change_chmod(src: Path, dst: Path) -> None:
    settle_file(src, dst, "script.sh", b"#!/bin/sh\necho hi\n")
    os.chmod(src / "script.sh", 0o600)
    arrive(lambda: mode_of(dst / "script.sh") == 0o600)
    os.chmod(src / "script.sh", 0o750)
    arrive(lambda: mode_of(dst / "script.sh") == 0o750)


def change_utime(src: Path, dst: Path) -> None:
    settle_file(src, dst, "dated.txt", b"old news\n")
    when = 1_234_567_890_123_456_789
    assert os.stat(dst / "dated.txt").st_mtime_ns != when
    os.utime(src / "dated.txt", ns=(when, when))
    arrive(lambda: os.stat(dst / "dated.txt").st_mtime_ns == when)


def change_symlink(src: Path, dst: Path) -> None:
    assert not os.path.lexists(dst / "link")
    os.symlink("some/where/else.txt", src / "link")
    arrive(
        lambda: (
            stat.S_ISLNK(os.lstat(dst / "link").st_mode)
            and os.readlink(dst / "link") == "some/where/else.txt"
        )
    )


CHANGES = {
    fn.__name__.removeprefix("change_"): fn
    for fn in (
        change_create,
        change_edit_replace,
        change_edit_append,
        change_rename,
        change_move_across_directories,
        change_delete,
        change_mkdir,
        change_rmdir,
        change_chmod,
        change_utime,
        change_symlink,
    )
}


@pytest.mark.parametrize("direction", ["A-to-B", "B-to-A"])
@pytest.mark.parametrize("kind", list(CHANGES))
def test_change_shows_on_the_other_device_within_seconds(
    pair: list[Mount], kind: str, direction: str
) -> None:
    a, b = pair
    folder = f"{kind}-{direction}"
    (a.path / folder).mkdir()
    arrive(lambda: os.listdir(b.path / folder) == [], f"{folder} on B")
    src, dst = (a.path, b.path) if direction == "A-to-B" else (b.path, a.path)
    CHANGES[kind](src / folder, dst / folder)


def test_a_new_file_written_a_while_after_its_create_goes_up_once_as_written(
    pair: list[Mount],
) -> None:
    """A program that creates a file and writes it a moment later (a log opened at
    start, a download that waits for its first bytes) makes one version, with the
    content: the create waits for the close, not only for the first write."""
    a, b = pair
    (a.path / "slow").mkdir()
    with open(a.path / "slow" / "log.txt", "wb") as f:
        time.sleep(1.0)  # the uploader wakes 20 ms after a change
        f.write(b"first line\n")
    arrive(lambda: (b.path / "slow" / "log.txt").read_bytes() == b"first line\n", "log on B")
    synced(a)
    result = a.device.run("versions", "/slow/log.txt")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1, result.stdout


# --- big files, laziness, dedup ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_1_gib_file_is_written_at_bounded_memory_and_reads_back_identical_elsewhere(
    new_mount: Any,
) -> None:
    a = new_mount()
    b = new_mount(user=a.device.user, name="B")
    pid = status_pid(a)

    started = time.monotonic()
    written = write_random(a.path / "big.bin", GiB)
    write_seconds = time.monotonic() - started
    peak = vm_hwm(pid)
    drained(a, 900)
    upload_seconds = time.monotonic() - started - write_seconds
    peak_after_upload = vm_hwm(pid)

    wait_for(lambda: (b.path / "big.bin").stat().st_size == GiB, ARRIVAL, "big.bin on B")
    started = time.monotonic()
    read = hash_file(b.path / "big.bin")
    read_seconds = time.monotonic() - started
    print(
        f"\n1 GiB: write+close {write_seconds:.1f}s, then upload {upload_seconds:.1f}s,"
        f" read on B {read_seconds:.1f}s; A's mount VmHWM {peak / MiB:.0f} MiB after the"
        f" write, {peak_after_upload / MiB:.0f} MiB after the upload"
    )
    assert read == written
    assert peak < 400 * MiB, f"the mount's peak RSS was {peak / MiB:.0f} MiB"


@pytest.mark.timeout(900)
def test_a_new_device_fetches_only_the_chunks_it_reads(new_mount: Any) -> None:
    a = new_mount()
    size = 256 * MiB
    with open(a.path / "lazy.bin", "wb") as f:
        for _ in range(size // PIECE):
            f.write(os.urandom(PIECE))
    with open(a.path / "lazy.bin", "rb") as f:
        f.seek(size - MiB)
        tail = f.read()
    drained(a, SYNC)

    c = new_mount(user=a.device.user, name="C")
    with open(c.path / "lazy.bin", "rb") as f:
        f.seek(size - MiB)
        assert f.read() == tail
    text = fresh_status(c, 10, lambda text: True)
    print(f"\nC cached {cached_chunks(text)} chunk(s) for a 1 MiB read of a 256 MiB file")
    assert cached_chunks(text) <= 8, text


@pytest.mark.timeout(600)
def test_a_copy_inside_the_mount_stores_no_new_chunk_at_the_server(
    new_mount: Any, mount_server: Server
) -> None:
    a = new_mount()
    write_random(a.path / "original.bin", 32 * MiB)
    drained(a, SYNC)
    before = server_chunks(mount_server)

    subprocess.run(["cp", a.path / "original.bin", a.path / "copy.bin"], check=True)
    drained(a, SYNC)
    listing = a.device.run("ls", "-l", "/").stdout
    assert re.search(rf"^\S+ +{32 * MiB} .* copy\.bin$", listing, re.M), listing
    assert server_chunks(mount_server) == before


@pytest.mark.timeout(600)
def test_a_one_byte_insert_at_the_start_stores_only_a_few_new_chunks(
    new_mount: Any, mount_server: Server
) -> None:
    a = new_mount()
    path = a.path / "shifted.bin"
    write_random(path, 64 * MiB)
    drained(a, SYNC)
    before = server_chunks(mount_server)

    old = path.read_bytes()
    with open(path, "wb") as f:
        f.write(b"x" + old)
    drained(a, SYNC)
    listing = a.device.run("ls", "-l", "/").stdout
    assert re.search(rf"^\S+ +{64 * MiB + 1} .* shifted\.bin$", listing, re.M), listing
    added = server_chunks(mount_server) - before
    assert 1 <= added <= 4


# --- status and unmount ----------------------------------------------------------------


@pytest.mark.timeout(300)
def test_status_shows_online_state_pending_changes_and_cache_use(tmp_path: Path) -> None:
    """A server of its own, so that it can be stopped: only then do changes wait."""
    server = Server(Stores(tmp_path / "data"))
    server.start()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        server.add_user("watcher")
        server.login("watcher", tmp_path / "home", "A")
        mount = Mount(Device(server, "watcher", tmp_path / "home"), mnt)
        assert mount.device.run("mount", str(mnt)).returncode == 0
        (mnt / "kept.bin").write_bytes(os.urandom(3 * MiB))

        text = drained(mount, 30)
        assert mount_line(text).endswith(", online"), text
        assert cached_chunks(text) >= 1, text  # what was written stays cached
        assert re.search(r"^cache: +[\d.]+ MiB of 2\.0 GiB in", text, re.M), text

        server.stop()
        (mnt / "offline.txt").write_bytes(b"written while the server is down\n")  # 33 bytes
        text = fresh_status(mount, 30, lambda t: "offline" in mount_line(t) and pending(t) > 0)
        assert re.search(r"^pending: +\d+ change\(s\) to upload, 33 B of new content$", text, re.M)

        server.start()
        text = fresh_status(mount, 30, lambda t: pending(t) == 0)
        assert mount_line(text).endswith(", online"), text
    finally:
        if os.path.ismount(mnt):
            loft("unmount", str(mnt), home=tmp_path / "home")
        server.stop()


def test_unmount_pushes_everything_written_before_it(
    new_mount: Any, mount_server: Server, tmp_path: Path
) -> None:
    a = new_mount()
    (a.path / "docs").mkdir()
    for i in range(50):
        (a.path / "docs" / f"note-{i:02}.txt").write_text(f"note {i}\n")
    big = os.urandom(5 * MiB)
    (a.path / "docs" / "big.bin").write_bytes(big)

    result = a.unmount()
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(a.path)

    reader = tmp_path / "reader"
    mount_server.login(a.device.user, reader, "reader")
    listing = loft("ls", "/docs", home=reader).stdout.split()
    assert sorted(listing) == sorted(["big.bin", *(f"note-{i:02}.txt" for i in range(50))])
    for name, content in [("note-07.txt", b"note 7\n"), ("big.bin", big)]:
        got = loft("get", f"/docs/{name}", str(tmp_path / name), home=reader)
        assert got.returncode == 0, got.stderr
        assert (tmp_path / name).read_bytes() == content


# --- the scale-out back ends ---------------------------------------------------------


def test_live_sync_between_two_mounts_over_postgres_and_s3(tmp_path: Path) -> None:
    server = Server(make_stores("postgres-s3", tmp_path / "data"))
    server.start()
    mounts: list[Mount] = []
    try:
        server.add_user("scaled")
        for name in ("A", "B"):
            device = login_device(server, server.url, "scaled", tmp_path / f"home-{name}", name)
            mounts.append(mount(device, tmp_path / f"mnt-{name}"))
        a, b = mounts
        settle_file(a.path, b.path, "shared.txt", b"from A\n")
        (b.path / "shared.txt").write_bytes(b"from B\n")
        arrive(lambda: (a.path / "shared.txt").read_bytes() == b"from B\n")
    finally:
        for m in mounts:
            unmount_strictly(m)
        server.stop()


def test_a_revoked_device_stops_syncing_says_why_and_keeps_its_changes(  # type: ignore[no-untyped-def]
    new_mount, tmp_path: Path
) -> None:
    mount = new_mount(name="lost")
    (mount.path / "before.txt").write_text("synced\n")
    synced(mount)
    server = mount.device.server
    admin = login_device(server, server.url, mount.device.user, tmp_path / "admin", "admin")
    result = admin.run("devices", "revoke", "lost")
    assert result.returncode == 0, result.stderr
    (mount.path / "after.txt").write_text("kept here\n")
    # `loft status` checks the token itself too; what counts is the mount's own line,
    # written by the mount process once the server refused it, with the write pending.
    wait_for(
        lambda: re.search(r"^mount: .*offline \(.*revoked", text := mount.status(), re.M)
        and re.search(r"^pending: [1-9]\d* change", text, re.M),
        30, "the mount saying its token was refused, with the new file pending",
    )
    assert sorted(os.listdir(mount.path)) == ["after.txt", "before.txt"]
    assert remote_names(admin) == ["before.txt"]
