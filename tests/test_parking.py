"""Closes of large files park them (``fs.parking``), on real mounts.

The close of a file of more than 1 MiB does not seal it: the staging file gets a name
and a park record beside it, and the seal comes once the file is left alone. What the
close returned must survive ``kill -9`` of the mount at once, reach the server after
the next mount seals it, never come back once unlinked, and many closes in a row must
make one version, not one each. The recovery rules themselves (records a seal covered,
half-written ones) are checked on a real LMDB cache and staging directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from cache.records import Entry
from cache.store import Cache
from fs.parking import SEALED, Parking, Record
from fs.staged import Staged
from fs.stagefile import Budget, StagingFile
from tests.conftest import Mount, NewMount
from tests.devices import (
    detach_killed,
    journal,
    kill_9,
    mount,
    mount_pid,
    remote_names,
    synced,
)
from tests.polling import wait_for

KiB, MiB = 1 << 10, 1 << 20
SYNC = 90.0


def content_of(mount: Mount, name: str) -> bytes:
    with open(mount.path / name, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return f.read()


def parked_files(mount: Mount) -> list[str]:
    return sorted(p.name for p in (mount.device.home / "staging").iterdir())


def versions_of(mount: Mount, name: str) -> int:
    """How many versions of ``name`` the server's journal holds."""
    records = journal(mount.device)
    ids = {r["id"] for r in records if r.get("name") == name}
    assert len(ids) == 1, records
    return sum(1 for r in records if r["id"] in ids)


def remount_after_kill_9(m: Mount) -> None:
    kill_9(mount_pid(m.device))
    detach_killed(m.path)
    mount(m.device, m.path)


def test_a_large_file_closed_survives_kill_9_at_once_and_reaches_the_server(
    new_mount: NewMount,
) -> None:
    """A new 6 MiB file and in-place edits of another, each closed and then the mount
    ``kill -9``'d before any seal: mounted again, both are exactly what was closed, on
    this device and on another, with no conflicted copy, and the staging directory is
    empty once they are sealed."""
    a = new_mount()
    edited = bytearray(os.urandom(8 * MiB))
    (a.path / "edited.bin").write_bytes(edited)
    synced(a)
    fresh = os.urandom(6 * MiB)
    (a.path / "fresh.bin").write_bytes(fresh)
    fd = os.open(a.path / "edited.bin", os.O_RDWR)
    for offset, piece in ((7, b"start"), (3 * MiB + 1, b"middle" * 1000), (8 * MiB - 2, b"end!")):
        os.pwrite(fd, piece, offset)
        edited[offset : offset + len(piece)] = piece
    os.ftruncate(fd, 9 * MiB)
    edited.extend(bytes(9 * MiB - len(edited)))
    os.close(fd)
    assert any(n.endswith(".park") for n in parked_files(a)), parked_files(a)
    remount_after_kill_9(a)
    assert content_of(a, "fresh.bin") == fresh
    assert content_of(a, "edited.bin") == bytes(edited)
    synced(a)
    b = new_mount(a.device.user, "B")
    wait_for(lambda: sorted(os.listdir(b.path)) == ["edited.bin", "fresh.bin"], SYNC, "B's tree")
    assert content_of(b, "fresh.bin") == fresh
    assert content_of(b, "edited.bin") == bytes(edited)
    assert sorted(os.listdir(a.path)) == ["edited.bin", "fresh.bin"]  # no conflicted copy
    wait_for(lambda: parked_files(a) == [], 10, "the staging directory emptied")


def test_many_closes_in_a_row_make_one_version_not_one_each(new_mount: NewMount) -> None:
    """Twenty open-write-close rounds on a 4 MiB file, back to back: the device sends
    fewer versions than closes (sealing each close would send twenty), and the last
    one is the content."""
    a = new_mount()
    content = bytearray(os.urandom(4 * MiB))
    (a.path / "log.bin").write_bytes(content)
    synced(a)
    before = versions_of(a, "log.bin")
    for round_ in range(20):
        piece = os.urandom(100)
        fd = os.open(a.path / "log.bin", os.O_RDWR)
        os.pwrite(fd, piece, round_ * 200 * KiB)
        os.close(fd)
        content[round_ * 200 * KiB : round_ * 200 * KiB + 100] = piece
    synced(a)
    made = versions_of(a, "log.bin") - before
    assert 1 <= made < 20, made
    b = new_mount(a.device.user, "B")
    wait_for(lambda: (b.path / "log.bin").exists(), SYNC, "log.bin on B")
    wait_for(lambda: content_of(b, "log.bin") == bytes(content), SYNC, "the last content on B")


def test_a_parked_file_unlinked_before_its_seal_never_comes_back(new_mount: NewMount) -> None:
    """A large file closed (parked) and unlinked at once, then ``kill -9``: mounted
    again, it is gone, on the server too, and its parked files with it."""
    a = new_mount()
    (a.path / "keep.txt").write_bytes(b"kept")
    (a.path / "gone.bin").write_bytes(os.urandom(3 * MiB))
    os.unlink(a.path / "gone.bin")
    remount_after_kill_9(a)
    assert os.listdir(a.path) == ["keep.txt"]
    synced(a)
    assert remote_names(a.device) == ["keep.txt"]
    wait_for(lambda: parked_files(a) == [], 10, "the staging directory emptied")


# --- the recovery rules, on a real cache and staging directory ---------------------


def parked(root: Path, budget: Budget, size: int) -> Staged:
    base = Entry(id="e1", parent="root", name="f", kind="file", rev=1, size=size,
                 mode=0o644, mtime=0, blocks=[])
    staged = Staged(StagingFile(root, budget, size), base)
    staged.file.pwrite(b"x" * 10, 5)
    staged.wrote(5, 15)
    return staged


async def test_recovery_keeps_the_newest_record_and_drops_what_a_seal_covered(
    tmp_path: Path,
) -> None:
    """Two files parked, one of them twice and then sealed (its ``sealed:`` key in
    LMDB, its files not yet unlinked); a half-written record and a staging file no
    record names lie beside them: recovery takes up only the file no seal covered, at
    its newest record, and removes everything else."""
    root = tmp_path / "staging"
    root.mkdir()
    cache = Cache(tmp_path / "cache", 64 * MiB)
    try:
        parking, budget = Parking(root), Budget()
        kept, sealed = parked(root, budget, 2 * MiB), parked(root, budget, 3 * MiB)
        assert parking.park(kept, "kept", 0.0)
        kept.file.pwrite(b"y" * 4, 100)
        kept.wrote(100, 104)
        assert parking.park(kept, "kept", 0.1)
        assert parking.park(sealed, "sealed", 0.0)
        with cache.env.write() as txn:
            Parking.covered(cache.env, txn, sealed)
        (root / "abc.1.park.tmp").write_bytes(b"half")
        (root / "0123456789abcdef.data").write_bytes(b"orphan")
        cache.flush()
        with cache.read() as txn:
            marks = cache.env.meta_prefixed(txn, SEALED)
        assert marks == {sealed.token: 1}
        records = Parking(root).recover(marks)
        assert [(r.entry, r.seq) for r in records] == [("kept", 2)]
        assert records[0].ranges == [(5, 15), (100, 104)]
        assert sorted(p.name for p in root.iterdir()) == [f"{kept.token}.2.park",
                                                          f"{kept.token}.data"]
        again = Parking(root).restore(records[0], Budget())
        assert again.file.pread(10, 100)[:4] == b"yyyy"
        assert again.file.size() == 2 * MiB
        assert again.modified
        assert again.overlay.gaps(0, 200) == [(0, 5), (15, 100), (104, 200)]
        again.file.close()
        for staged in (kept, sealed):
            staged.file.close()
    finally:
        cache.close()


async def test_a_parked_record_is_durable_before_the_one_it_replaces_goes(
    tmp_path: Path,
) -> None:
    """A file parked again retires its older record: that one is removed only by the
    ``unlink`` after a flush, never before the newer one is written and synced."""
    root = tmp_path / "staging"
    root.mkdir()
    parking = Parking(root)
    staged = parked(root, Budget(), 2 * MiB)
    assert parking.park(staged, "e1", 0.0)
    staged.wrote(20, 30)
    assert parking.park(staged, "e1", 0.5)
    assert staged.due == pytest.approx(0.7)  # left alone IDLE seconds after the last close
    names = sorted(p.name for p in root.iterdir())
    assert names == [f"{staged.token}.1.park", f"{staged.token}.2.park", f"{staged.token}.data"]
    retired = parking.take_retired()
    await trio.to_thread.run_sync(parking.sync)
    assert parking.unlink(retired) == []  # a record went, not the staging file
    assert sorted(p.name for p in root.iterdir()) == [f"{staged.token}.2.park",
                                                      f"{staged.token}.data"]
    assert Record.decode(staged.token or "", 2, (root / f"{staged.token}.2.park").read_bytes()
                         ).dirty == [(5, 15), (20, 30)]
    staged.file.close()


def test_changes_after_a_park_are_undone_by_recovery(tmp_path: Path) -> None:
    """Writes over a parked file's own bytes, a truncate below its parked size and an
    extension after it: each copies the bytes the record takes from the staging file
    into the undo log first, once, and recovery puts exactly the parked content back
    (a kill cut the last undo entry short: it is left out, and so was its change)."""
    root = tmp_path / "staging"
    root.mkdir()
    parking = Parking(root)
    staged = parked(root, Budget(), 2 * MiB)  # b"x" * 10 at 5, the rest the base's
    staged.file.truncate(3 * MiB)  # grown past the base: its own bytes (zeros) too
    staged.resized(2 * MiB, 3 * MiB)
    staged.file.pwrite(b"t" * 100, 3 * MiB - 100)
    staged.wrote(3 * MiB - 100, 3 * MiB)
    assert parking.park(staged, "e1", 0.0)
    closed = staged.file.pread(3 * MiB, 0)

    def write(data: bytes, at: int) -> None:
        parking.preserve(staged, at, at + len(data))
        staged.file.pwrite(data, at)
        staged.wrote(at, at + len(data))

    write(b"new!", 8)  # over own bytes: saved
    write(b"base", 1000)  # over the base's: nothing to save
    write(b"again", 8)  # saved already but its last byte: that one alone
    parking.preserve(staged, MiB, 3 * MiB)  # a truncate to 1 MiB
    staged.file.truncate(MiB)
    staged.file.truncate(4 * MiB)
    write(b"late", 3 * MiB - 50)
    undo = root / f"{staged.token}.1.undo"
    # Own bytes only, once each: [8, 12), [12, 13), and [2 MiB, 3 MiB) past the base,
    # a hole (an entry alone) but for the page written at its end (4 KiB copied).
    assert undo.stat().st_size == 4 * 16 + 4 + 1 + 4096
    with open(undo, "ab") as f:
        f.write(bytes(16)[:12])  # a kill in the middle of the next entry's head
    staged.file.close()
    assert staged.undo is not None
    os.close(staged.undo)
    (record,) = Parking(root).recover({})
    again = Parking(root).restore(record, Budget())
    assert again.file.size() == 3 * MiB
    assert again.file.pread(3 * MiB, 0)[:1000] == closed[:1000]
    assert again.file.pread(200, 3 * MiB - 200) == closed[-200:]
    assert not undo.exists()  # put back, made durable, removed
    # Restored and written again before its seal (a program opened it): the write is
    # undone by the next recovery as well.
    restored = Parking(root)
    restored.preserve(again, 8, 12)
    again.file.pwrite(b"more", 8)
    again.wrote(8, 12)
    again.file.close()
    assert again.undo is not None
    os.close(again.undo)
    (record,) = Parking(root).recover({})
    third = Parking(root).restore(record, Budget())
    assert third.file.pread(3 * MiB, 0)[:1000] == closed[:1000]
    third.file.close()
