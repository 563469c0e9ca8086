"""Offline: a mount keeps working without its server, and nothing is lost or doubled
when the network comes back, however it went away.

Device A of a user is a real ``loft mount`` that reaches the server only through a
``FaultProxy`` (``tests/faultproxy.py``): A is logged in with the proxy's URL, so
cutting or stalling the proxy takes A's network away while A runs, and the cut can
land anywhere (at mount time, inside a chunk upload, inside a commit, on the reply of
a commit the server applied). Device B of the same user talks to the server directly,
through its own mount or the ``loft`` command line. What the server recorded is read
from its journal (the changes feed from 0): every operation applied exactly once
shows as exactly one version.

The conflict tests share one scenario (``conflicts``): A and B mounted, A cut, both
change the same files, A restored; then each test checks one kind of conflict in the
converged trees. Where the policy has a choice, the docstring says what Loft does.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import Device, Mount, Server, unmount_strictly
from tests.devices import (
    SYNC,
    api,
    assert_applied_once,
    converge,
    journal,
    login_device,
    mount,
    mount_line,
    remote_bytes,
    remote_names,
    status,
    synced,
    tree,
)
from tests.faultproxy import FaultProxy
from tests.polling import pending, wait_for

T = TypeVar("T")
MiB = 1 << 20

FETCH_TIMEOUT = ("--fetch-timeout", "2")
"""A chunk that cannot be fetched fails in 2 s (the EIO tests wait on it)."""

_names = iter(range(10**9))


# --- helpers -------------------------------------------------------------------------


def versions(records: list[dict[str, Any]], entry_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r["id"] == entry_id]


def entry_id(device: Device, path: str) -> str:
    return str(api(device, lambda c: c.lookup(device.root_ns, path))["entry"]["id"])


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def proxy(mount_server: Server) -> Iterator[FaultProxy]:
    with FaultProxy(mount_server.port) as px:
        yield px


@dataclass
class Setup:
    """Device A (through ``proxy``) and device B (direct) of one user."""

    proxy: FaultProxy
    a: Device
    b: Device
    root: Path
    mounts: list[Mount]

    def mount_a(self, *extra: str) -> Mount:
        self.mounts.append(mount(self.a, self.root / "mnt-A", *FETCH_TIMEOUT, *extra))
        return self.mounts[-1]

    def mount_b(self) -> Mount:
        self.mounts.append(mount(self.b, self.root / "mnt-B", *FETCH_TIMEOUT))
        return self.mounts[-1]


def make_setup(server: Server, proxy: FaultProxy, root: Path) -> Setup:
    user = f"off{os.getpid()}x{next(_names)}"
    server.add_user(user)
    a = login_device(server, proxy.url, user, root / "home-A", "laptop")
    b = login_device(server, server.url, user, root / "home-B", "desk")
    return Setup(proxy, a, b, root, [])


def tear_down(setup: Setup) -> None:
    setup.proxy.restore()  # so that unmounting can push what is left, quickly
    for m in setup.mounts:
        unmount_strictly(m)


@pytest.fixture
def setup(mount_server: Server, proxy: FaultProxy, tmp_path: Path) -> Iterator[Setup]:
    s = make_setup(mount_server, proxy, tmp_path)
    try:
        yield s
    finally:
        tear_down(s)


# --- a mount without its server ------------------------------------------------------


def test_mount_starts_offline_works_locally_and_fails_uncached_reads_with_eio(
    setup: Setup, tmp_path: Path
) -> None:
    remote = os.urandom(2 * MiB)
    (tmp_path / "remote.bin").write_bytes(remote)
    assert setup.b.run("put", str(tmp_path / "remote.bin"), "/remote.bin").returncode == 0
    (tmp_path / "cached.txt").write_bytes(b"read once while online\n")
    assert setup.b.run("put", str(tmp_path / "cached.txt"), "/cached.txt").returncode == 0

    # A first mount while online learns the tree and reads (so caches) one file only.
    a = setup.mount_a()
    wait_for(lambda: sorted(os.listdir(a.path)) == ["cached.txt", "remote.bin"], 10, "tree")
    assert (a.path / "cached.txt").read_bytes() == b"read once while online\n"
    unmount_strictly(a)

    setup.proxy.cut()
    started = time.monotonic()
    a = setup.mount_a()
    assert time.monotonic() - started < 15, "loft mount waited for the server"

    # Every local operation applies at once, without the server.
    (a.path / "docs").mkdir()
    (a.path / "docs" / "draft.txt").write_bytes(b"draft\n")
    os.rename(a.path / "docs" / "draft.txt", a.path / "docs" / "final.txt")
    os.chmod(a.path / "docs" / "final.txt", 0o600)
    (a.path / "scratch.txt").write_bytes(b"gone soon\n")
    os.unlink(a.path / "scratch.txt")
    assert sorted(os.listdir(a.path)) == ["cached.txt", "docs", "remote.bin"]
    assert os.listdir(a.path / "docs") == ["final.txt"]
    assert (a.path / "docs" / "final.txt").read_bytes() == b"draft\n"
    assert stat.S_IMODE(os.stat(a.path / "docs" / "final.txt").st_mode) == 0o600

    text = status(a, lambda t: "offline" in mount_line(t) and pending(t) > 0)
    assert re.search(r"^state: +offline", text, re.M), text

    # Cached content reads; content never fetched is a prompt EIO, cut or stalled.
    assert (a.path / "cached.txt").read_bytes() == b"read once while online\n"
    for fault in (setup.proxy.cut, setup.proxy.stall):
        fault()
        started = time.monotonic()
        with pytest.raises(OSError, match="Input/output error") as failure:
            (a.path / "remote.bin").read_bytes()
        assert failure.value.errno == errno.EIO
        assert time.monotonic() - started < 15, f"EIO took too long under {fault.__name__}"
    with pytest.raises(OSError, match="Input/output error") as failure:
        open(a.path / "remote.bin", "ab").close()  # an append needs the content first
    assert failure.value.errno == errno.EIO
    log = (setup.a.home / "mount.log").read_text()
    assert "cannot fetch chunk" in log
    assert "Traceback" not in log, log  # a clear line, not a crash report

    # Back online: the offline work reaches the server, and the file reads.
    setup.proxy.restore()
    synced(a)
    assert remote_names(setup.b) == ["cached.txt", "docs/", "remote.bin"]
    assert remote_names(setup.b, "/docs") == ["final.txt"]
    assert remote_bytes(setup.b, "/docs/final.txt", tmp_path) == b"draft\n"
    assert setup.b.run("ls", "-l", "/docs").stdout.startswith("-rw-------")
    assert (a.path / "remote.bin").read_bytes() == remote


def test_a_large_file_edited_offline_without_its_content_closes_and_syncs_when_back(
    setup: Setup, tmp_path: Path
) -> None:
    """An edit of a file whose content the device never fetched, made offline: the
    close returns at once (the file is parked; its seal needs the chunks around the
    edit and waits for the server, trying again), and once the server is back the
    edit is sealed and reaches the other device whole."""
    remote = bytearray(os.urandom(8 * MiB))
    (tmp_path / "big.bin").write_bytes(remote)
    assert setup.b.run("put", str(tmp_path / "big.bin"), "/big.bin").returncode == 0
    a = setup.mount_a()
    wait_for(lambda: os.listdir(a.path) == ["big.bin"], 10, "the tree")
    unmount_strictly(a)
    setup.proxy.cut()
    a = setup.mount_a()
    fd = os.open(a.path / "big.bin", os.O_RDWR)
    try:
        assert os.pwrite(fd, b"edited offline", 3 * MiB) == 14
    finally:
        os.close(fd)  # parked: no error although the seal cannot run now
    remote[3 * MiB : 3 * MiB + 14] = b"edited offline"
    assert (a.path / "big.bin").stat().st_size == 8 * MiB
    log = setup.a.home / "mount.log"
    wait_for(lambda: "sealing a parked file failed" in log.read_text(), 30, "a failed seal")
    setup.proxy.restore()
    synced(a)
    assert remote_bytes(setup.b, "/big.bin", tmp_path) == bytes(remote)
    assert "Traceback" not in log.read_text()


def test_a_device_never_synced_mounts_offline_and_merges_when_back(
    setup: Setup, tmp_path: Path
) -> None:
    """A first mount without the server starts empty; what is made there meets the
    server's tree when it returns, a clash of names ending as a conflicted copy."""
    (tmp_path / "server.txt").write_bytes(b"on the server\n")
    assert setup.b.run("put", str(tmp_path / "server.txt"), "/server.txt").returncode == 0
    setup.proxy.cut()
    started = time.monotonic()
    a = setup.mount_a()
    assert time.monotonic() - started < 15, "loft mount waited for the server"
    assert os.listdir(a.path) == []
    (a.path / "offline.txt").write_bytes(b"made offline\n")
    (a.path / "server.txt").write_bytes(b"same name, made offline\n")
    status(a, lambda t: "offline" in mount_line(t) and pending(t) > 0)

    setup.proxy.restore()
    synced(a)

    def merged() -> dict[str, Any] | None:
        files = tree(a.path)
        return files if len(files) == 3 else None

    files = wait_for(merged, SYNC, "the server's tree and A's own on A")
    assert files["server.txt"] == b"on the server\n"
    assert files["offline.txt"] == b"made offline\n"
    (copy,) = copies(files, "server", ".txt")
    assert files[copy] == b"same name, made offline\n"
    assert remote_names(setup.b) == sorted(files)


def test_offline_changes_replay_in_order_each_exactly_once(setup: Setup, tmp_path: Path) -> None:
    a = setup.mount_a()
    synced(a)
    setup.proxy.cut()

    (a.path / "a.txt").write_bytes(b"version 1\n")
    os.rename(a.path / "a.txt", a.path / "b.txt")
    (a.path / "b.txt").write_bytes(b"version 2, longer\n")
    (a.path / "sub").mkdir()
    os.rename(a.path / "b.txt", a.path / "sub" / "c.txt")
    os.chmod(a.path / "sub" / "c.txt", 0o640)
    (a.path / "tmp.txt").write_bytes(b"short-lived\n")
    os.unlink(a.path / "tmp.txt")
    (a.path / "sub" / "kept.txt").write_bytes(b"kept\n")
    status(a, lambda t: "offline" in mount_line(t) and pending(t) >= 8)

    setup.proxy.restore()
    synced(a)
    assert remote_names(setup.b) == ["sub/"]
    assert remote_names(setup.b, "/sub") == ["c.txt", "kept.txt"]
    assert remote_bytes(setup.b, "/sub/c.txt", tmp_path) == b"version 2, longer\n"
    assert setup.b.run("ls", "-l", "/sub/c.txt").stdout.startswith("-rw-r-----")

    records = journal(setup.b)
    assert_applied_once(records)
    history = versions(records, entry_id(setup.b, "/sub/c.txt"))
    # In the order they were made: the name a.txt, then b.txt, then sub/c.txt.
    names = [r["name"] for r in history]
    assert names[0] == "a.txt", names
    assert names[-1] == "c.txt", names
    assert names == sorted(names, key=["a.txt", "b.txt", "c.txt"].index), names
    assert 3 <= len(history) <= 8, history  # create(+edit), rename, edit, move, chmod
    assert history[-1]["mode"] == 0o640
    assert history[-1]["size"] == 18
    tmp = [r for r in records if r["name"] == "tmp.txt"]
    assert len(tmp) <= 3, tmp
    assert not tmp or tmp[-1]["deleted"], tmp


def test_a_file_fsynced_in_a_loop_offline_waits_as_one_change(
    setup: Setup, tmp_path: Path
) -> None:
    """A log appended to and ``fsync``'d twenty times while offline: the ``fsync``s
    fold into one pending change (``loft status`` says 1 or 2, not 21: the file's
    create may have been sent, and be waiting in flight, before its first write),
    which goes up as one version with every line when the network is back."""
    a = setup.mount_a()
    synced(a)
    setup.proxy.cut()
    lines = [b"line %d\n" % n for n in range(20)]
    with open(a.path / "log.txt", "ab") as log:
        for line in lines:
            log.write(line)
            log.flush()
            os.fsync(log.fileno())
    status(a, lambda t: "offline" in mount_line(t) and 1 <= pending(t) <= 2)

    setup.proxy.restore()
    synced(a)
    assert remote_bytes(setup.b, "/log.txt", tmp_path) == b"".join(lines)
    records = journal(setup.b)
    assert_applied_once(records)
    assert 1 <= len(versions(records, entry_id(setup.b, "/log.txt"))) <= 2


# --- cuts in the middle of a transfer --------------------------------------------------


def test_a_cut_inside_a_chunk_upload_still_delivers_the_file_whole(
    setup: Setup, tmp_path: Path
) -> None:
    a = setup.mount_a()
    b = setup.mount_b()
    synced(a)
    content = os.urandom(32 * MiB)
    setup.proxy.cut_after(3 * MiB, after=b"PUT /v1/chunks/")
    (a.path / "big.bin").write_bytes(content)
    assert setup.proxy.wait_tripped(30), "the upload never started"
    status(a, lambda t: "offline" in mount_line(t) and pending(t) > 0)
    time.sleep(1)  # let the uploader fail and back off while cut

    at_restore = setup.proxy.bytes_up
    setup.proxy.restore()
    synced(a, 120)
    # Resumed: each chunk goes up at most once more (those that arrived whole, never).
    assert setup.proxy.bytes_up - at_restore < len(content) + MiB, setup.proxy.bytes_up
    wait_for(lambda: (b.path / "big.bin").stat().st_size == len(content), SYNC, "big.bin on B")
    assert (b.path / "big.bin").read_bytes() == content
    records = journal(setup.b)
    assert_applied_once(records)
    history = versions(records, entry_id(setup.b, "/big.bin"))
    # The empty file may have gone up alone before its content was sealed.
    assert [r["size"] for r in history if r["size"]] == [len(content)], history


def test_a_cut_inside_a_commit_request_applies_it_once(setup: Setup, tmp_path: Path) -> None:
    a = setup.mount_a()
    synced(a)
    # "op_id" is a key of the commit's CBOR body only: the cut lands inside the body,
    # so the server sees a request that never completes.
    setup.proxy.cut_after(5, after=b"op_id")
    (a.path / "note.txt").write_bytes(b"cut mid-commit\n")
    assert setup.proxy.wait_tripped(30), "no commit went out"
    time.sleep(1)
    assert remote_names(setup.b) == []

    setup.proxy.restore()
    synced(a)
    assert remote_bytes(setup.b, "/note.txt", tmp_path) == b"cut mid-commit\n"
    records = journal(setup.b)
    assert_applied_once(records)
    history = versions(records, entry_id(setup.b, "/note.txt"))
    assert [r["size"] for r in history if r["size"]] == [15], history


def test_a_commit_whose_reply_is_lost_applies_once_and_later_edits_follow(
    setup: Setup, tmp_path: Path
) -> None:
    a = setup.mount_a()
    synced(a)
    setup.proxy.cut_reply(b"/commit HTTP")
    (a.path / "note.txt").write_bytes(b"first\n")
    assert setup.proxy.wait_tripped(30), "no commit went out"
    # The server applied it; A never heard. A edits the file again meanwhile.
    assert remote_names(setup.b) == ["note.txt"]
    (a.path / "note.txt").write_bytes(b"second, after the lost reply\n")
    status(a, lambda t: "offline" in mount_line(t) and pending(t) > 0)

    setup.proxy.restore()
    synced(a)
    assert remote_bytes(setup.b, "/note.txt", tmp_path) == b"second, after the lost reply\n"
    records = journal(setup.b)
    assert_applied_once(records)
    history = versions(records, entry_id(setup.b, "/note.txt"))
    assert [r["size"] for r in history if r["size"]] == [6, 29], history


# --- catching up -----------------------------------------------------------------------


def test_a_device_back_online_catches_up_with_changes_made_meanwhile(
    setup: Setup, tmp_path: Path
) -> None:
    for name in ("edited.txt", "deleted.txt", "renamed.txt"):
        (tmp_path / name).write_bytes(f"{name} before\n".encode())
        assert setup.b.run("put", str(tmp_path / name), f"/{name}").returncode == 0
    a = setup.mount_a()
    wait_for(lambda: len(os.listdir(a.path)) == 3, 10, "the first tree on A")
    assert (a.path / "edited.txt").read_bytes() == b"edited.txt before\n"
    setup.proxy.cut()

    (tmp_path / "edited.txt").write_bytes(b"edited elsewhere\n")
    (tmp_path / "new.txt").write_bytes(b"new elsewhere\n")
    for args in (
        ("put", str(tmp_path / "edited.txt"), "/edited.txt"),
        ("put", str(tmp_path / "new.txt"), "/new.txt"),
        ("rm", "/deleted.txt"),
        ("mv", "/renamed.txt", "/moved.txt"),
        ("mkdir", "/folder"),
    ):
        result = setup.b.run(*args)
        assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(a.path)) == ["deleted.txt", "edited.txt", "renamed.txt"]

    setup.proxy.restore()
    wait_for(
        lambda: sorted(os.listdir(a.path)) == ["edited.txt", "folder", "moved.txt", "new.txt"],
        SYNC,
        "B's changes on A",
    )
    assert (a.path / "edited.txt").read_bytes() == b"edited elsewhere\n"
    assert (a.path / "new.txt").read_bytes() == b"new elsewhere\n"
    assert (a.path / "moved.txt").read_bytes() == b"renamed.txt before\n"
    assert (a.path / "folder").is_dir()


# --- conflicts -------------------------------------------------------------------------


@dataclass
class Conflicts:
    a: Mount
    b: Mount
    on_a: dict[str, Any]
    on_b: dict[str, Any]
    log: str


@pytest.fixture(scope="module")
def conflicts(
    mount_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Conflicts]:
    """A and B change the same things while A is cut; then A is restored and both
    devices converge. Each conflict test checks its part of the outcome."""
    root = tmp_path_factory.mktemp("conflicts")
    with FaultProxy(mount_server.port) as px:
        s = make_setup(mount_server, px, root)
        try:
            a, b = s.mount_a(), s.mount_b()
            for name in ("both.txt", "editdel.txt", "deledit.txt", "ren.txt"):
                (b.path / name).write_bytes(f"{name} base\n".encode())
            for folder in ("gone", "emptied"):
                (b.path / folder).mkdir()
                (b.path / folder / "old.txt").write_bytes(b"old\n")
            synced(b)
            wait_for(lambda: tree(a.path) == tree(b.path), SYNC, "the first tree on A")
            px.cut()

            # B, online, commits first.
            (b.path / "both.txt").write_bytes(b"desk's edit\n")
            (b.path / "editdel.txt").unlink()
            (b.path / "deledit.txt").write_bytes(b"desk's edit of deledit\n")
            os.rename(b.path / "ren.txt", b.path / "ren-desk.txt")
            shutil.rmtree(b.path / "gone")
            (b.path / "emptied" / "added.txt").write_bytes(b"added on the desk\n")
            synced(b)

            # A, offline, changes the same things (both.txt twice, as editors save).
            (a.path / "both.txt").write_bytes(b"laptop's first edit\n")
            (a.path / "both.txt").write_bytes(b"laptop's second edit\n")
            (a.path / "editdel.txt").write_bytes(b"laptop's edit of editdel\n")
            (a.path / "deledit.txt").unlink()
            os.rename(a.path / "ren.txt", a.path / "ren-laptop.txt")
            (a.path / "gone" / "new.txt").write_bytes(b"added on the laptop\n")
            shutil.rmtree(a.path / "emptied")
            status(a, lambda t: "offline" in mount_line(t) and pending(t) > 0)

            px.restore()
            synced(a)
            synced(b)
            converge(a, b)
            yield Conflicts(a, b, tree(a.path), tree(b.path), (s.a.home / "mount.log").read_text())
        finally:
            tear_down(s)


def copies(files: dict[str, Any], stem: str, ext: str) -> list[str]:
    pattern = re.compile(
        rf"{re.escape(stem)} \(conflicted copy from laptop \d{{4}}-\d\d-\d\d \d{{6}}\)"
        + re.escape(ext)
    )
    return [name for name in files if pattern.fullmatch(name)]


def test_converged_trees_are_identical_on_both_devices(conflicts: Conflicts) -> None:
    assert conflicts.on_a == conflicts.on_b


def test_edit_edit_keeps_both_versions_one_as_a_conflicted_copy(conflicts: Conflicts) -> None:
    """B committed first and keeps the name; A's last edit becomes the copy."""
    for files in (conflicts.on_a, conflicts.on_b):
        assert files["both.txt"] == b"desk's edit\n"
        (copy,) = copies(files, "both", ".txt")
        assert files[copy] == b"laptop's second edit\n"


def test_edit_delete_keeps_the_edit(conflicts: Conflicts) -> None:
    """Edited on A, deleted on B: A's edit survives as a conflicted copy (the name is
    not reused for it). Deleted on A, edited on B: the delete is dropped and B's
    version stays under its name."""
    for files in (conflicts.on_a, conflicts.on_b):
        assert "editdel.txt" not in files
        (copy,) = copies(files, "editdel", ".txt")
        assert files[copy] == b"laptop's edit of editdel\n"
        assert files["deledit.txt"] == b"desk's edit of deledit\n"


def test_files_added_to_a_folder_deleted_elsewhere_are_kept(conflicts: Conflicts) -> None:
    """A added gone/new.txt while B deleted gone/: the file is kept at the top (its
    folder stays deleted). A deleted emptied/ while B added emptied/added.txt: the
    folder stays with what B added in it (A's delete of old.txt holds)."""
    for files in (conflicts.on_a, conflicts.on_b):
        assert "gone" not in files
        found = [path for path in files if Path(path).name == "new.txt"]
        assert found == ["new.txt"], found
        assert files["new.txt"] == b"added on the laptop\n"
        assert files["emptied"] == "dir"
        assert files["emptied/added.txt"] == b"added on the desk\n"
        assert "emptied/old.txt" not in files


def test_rename_rename_one_name_wins_and_the_log_says_so(conflicts: Conflicts) -> None:
    """Both renamed ren.txt: A's rename came last and wins; the file exists once."""
    for files in (conflicts.on_a, conflicts.on_b):
        holders = [name for name, data in files.items() if data == b"ren.txt base\n"]
        assert holders == ["ren-laptop.txt"], holders
    assert re.search(r"conflict: .*ren-desk\.txt.*ren-laptop\.txt", conflicts.log), conflicts.log[
        -3000:
    ]
