"""Writes whose cost follows the change, on real mounts.

A file opened for writing copies nothing (``fs.staging``, ``fs.overlay``): writes
land in a sparse staging file, reads merge them over the version the file was opened
on, and a seal fetches and cuts again only the chunks around what changed; a changed
chunk goes up as a delta against the one it replaced (``fs.deltas``). These tests edit
files on a device that never held their content, so every chunk it fetches shows in
its cache, and check the bytes on both devices; then several processes write one file
at once, with ``O_APPEND`` and through shared ``mmap``.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import subprocess
import sys
import time

from backend.protocol import ROOT_ID
from tests.conftest import Mount, NewMount
from tests.devices import detach_killed, kill_9, mount, mount_pid, synced
from tests.polling import wait_for
from tools.pins import device_cache

KiB, MiB = 1 << 10, 1 << 20
SYNC = 90.0


def shown(mount: Mount, name: str, content: bytes) -> bool:
    """Whether the mount serves ``name`` with exactly ``content`` now."""
    path = mount.path / name
    if not path.exists() or path.stat().st_size != len(content):
        return False
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return f.read() == content


def cached_chunks(mount: Mount) -> int:
    with device_cache(mount.device.home) as cache:
        return cache.chunks.usage()["chunks"]


def status_figure(mount: Mount, key: str) -> int:
    """A figure of a ``status.json`` written from now on."""
    path = mount.device.home / "status.json"
    since = time.time_ns()
    wait_for(lambda: path.stat().st_mtime_ns > since, 10, "a fresh status.json")
    return int(json.loads(path.read_text())[key])


def uploaded(mount: Mount) -> int:
    """Chunk bytes the mount has sent since it started (deltas at their size)."""
    return status_figure(mount, "uploaded_bytes")


def downloaded(mount: Mount) -> int:
    """Chunk bytes the mount has fetched since it started (parts at their size)."""
    return status_figure(mount, "downloaded_bytes")


def open_files(pid: int) -> list[str]:
    """What the process's file descriptors point at (``/proc/PID/fd``)."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def two_devices(new_mount: NewMount, name: str, content: bytes) -> tuple[Mount, Mount]:
    """Device A writes ``name``; device B, which never read it, shows it."""
    a = new_mount()
    (a.path / name).write_bytes(content)
    synced(a, SYNC)
    b = new_mount(a.device.user, "B")
    wait_for(lambda: (b.path / name).stat().st_size == len(content), SYNC, f"{name} on B")
    return a, b


def test_a_one_byte_edit_on_a_device_without_the_content_fetches_and_sends_little(
    new_mount: NewMount,
) -> None:
    model = bytearray(os.urandom(24 * MiB))
    a, b = two_devices(new_mount, "big.bin", bytes(model))
    assert cached_chunks(b) == 0
    sent = uploaded(b)
    flipped = model[12 * MiB] ^ 0xFF  # a changed byte, whatever the noise held there
    fd = os.open(b.path / "big.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, bytes([flipped]), 12 * MiB)
    finally:
        os.close(fd)
    model[12 * MiB] = flipped
    synced(b, SYNC)
    fetched = cached_chunks(b)
    assert 1 <= fetched <= 6, f"{fetched} chunks cached on B for a 1-byte edit of 24 chunks"
    assert uploaded(b) - sent <= 64 * KiB, "the changed chunk did not go up as a delta"
    wait_for(lambda: shown(a, "big.bin", bytes(model)), SYNC, "the edit on A")
    assert shown(b, "big.bin", bytes(model))


def test_a_random_reader_fetches_parts_of_chunks_and_a_chunk_it_keeps_coming_back_to_whole(
    new_mount: NewMount,
) -> None:
    """Small reads far apart on a device without the content ask the server for those
    bytes only (``Range``), not the chunks around them, and keep nothing; once a
    chunk's parts would add up to a quarter of it, the chunk is fetched whole and kept.

    Every read is a jump for the mount: the chunks read are further apart than
    ``fs.content.NEAR``, and the file's pages are dropped before each read, so none is
    answered by the kernel's page cache (two reads of one chunk in a row the mount
    sees would be a sequential reader, rightly given the chunks ahead)."""
    model = os.urandom(34 * MiB)
    _, b = two_devices(new_mount, "big.bin", model)
    with device_cache(b.device.home) as cache, cache.read() as txn:
        entry_id = cache.view.child(txn, ROOT_ID, "big.bin")
        assert entry_id is not None
        blocks = cache.view.get(txn, entry_id)["blocks"]  # type: ignore[index]
    starts = [sum(length for _, length in blocks[:i]) for i in range(len(blocks))]
    chosen: list[int] = []  # chunks starting 3 MiB or more apart, the first past 2 MiB
    for i, at in enumerate(starts):
        if at >= (starts[chosen[-1]] + 3 * MiB if chosen else 2 * MiB):
            chosen.append(i)
    assert len(chosen) >= 8, starts
    order = chosen[:8:2] + chosen[1:8:2]  # each read 6 MiB or more from the one before
    before = downloaded(b)
    fd = os.open(b.path / "big.bin", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)

        def read(at: int, size: int) -> None:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.pread(fd, size, at) == model[at : at + size]

        for i in order:
            read(starts[i] + 4 * KiB, 4 * KiB)
        # Whole chunks would be 2 MiB at least (8 of CDC_MIN) and kept in the cache.
        assert downloaded(b) - before < 1 * MiB
        assert cached_chunks(b) == 0
        # Two chunks read on, 16 KiB at a time, in turns, until each has had more
        # than a quarter of it read.
        first, second = order[0], order[1]
        for step in range(max(blocks[i][1] // (64 * KiB) + 2 for i in (first, second))):
            for i in (first, second):
                within = (step * 16 * KiB) % (blocks[i][1] - 32 * KiB)
                read(starts[i] + 16 * KiB + within, 16 * KiB)
    finally:
        os.close(fd)

    def held() -> list[int]:
        with device_cache(b.device.home) as cache:
            return [i for i, (cid, _) in enumerate(blocks) if cache.chunks.has(cid)]

    # Stored behind the reader: wait for both, then nothing else may be there.
    wait_for(lambda: len(held()) >= 2, 10, "the two chunks in B's cache")
    assert held() == [first, second]
    # A chunk costs its parts up to a quarter of it, then itself; the kernel asks for
    # whole pages around an unaligned read, hence the few KiB more a read.
    whole = blocks[first][1] + blocks[second][1]
    assert downloaded(b) - before <= 1.25 * whole + 256 * KiB


def test_reads_of_a_file_being_written_merge_the_writes_over_its_version(
    new_mount: NewMount,
) -> None:
    """Writes here and there, a truncate and an extension of the open file: every
    read, while it is open and after, is the model, and device A gets it."""
    model = bytearray(os.urandom(9 * MiB + 333))
    a, b = two_devices(new_mount, "doc.bin", bytes(model))
    path = b.path / "doc.bin"
    fd = os.open(path, os.O_RDWR)
    try:
        for offset, piece in ((5, b"head"), (3 * MiB - 2, b"across"), (len(model), b"end")):
            os.pwrite(fd, piece, offset)
            model[offset : offset + len(piece)] = piece
        with open(path, "rb") as other:
            assert other.read() == model, "a read of the open file, on another fd"
        os.ftruncate(fd, 6 * MiB)
        os.ftruncate(fd, 7 * MiB)  # the bytes between come back as zeros
        del model[6 * MiB :]
        model.extend(bytes(MiB))
        os.pwrite(fd, b"late", 6 * MiB + 10)
        model[6 * MiB + 10 : 6 * MiB + 14] = b"late"
        assert os.pread(fd, 8 * MiB, 0) == model, "a read through the writer's own fd"
        os.fsync(fd)
        assert os.pread(fd, 8 * MiB, 0) == model, "a read after fsync"
    finally:
        os.close(fd)
    assert shown(b, "doc.bin", bytes(model))
    wait_for(lambda: shown(a, "doc.bin", bytes(model)), SYNC, "the edits on A")


def test_kill_9_after_an_fsync_of_sparse_edits_keeps_exactly_what_was_fsynced(
    new_mount: NewMount,
) -> None:
    """What ``fsync`` returned is the sealed version, not the staging file: edits of
    a file whose content the device never held, some fsync'd and some not, then
    ``kill -9`` of the mount: mounted again, the file is the fsync'd content, and it
    reaches the other device."""
    model = bytearray(os.urandom(10 * MiB))
    a, b = two_devices(new_mount, "db.bin", bytes(model))
    fd = os.open(b.path / "db.bin", os.O_RDWR)
    try:
        for offset, piece in ((MiB + 7, b"first"), (8 * MiB, b"second"), (10 * MiB, b"+tail")):
            os.pwrite(fd, piece, offset)
            model[offset : offset + len(piece)] = piece
        os.fsync(fd)
        os.pwrite(fd, b"never fsynced", 4 * MiB)  # not promised: lost with the mount
        pid = mount_pid(b.device)
        staging = b.device.home / "staging"
        assert list(staging.iterdir()) == []  # the open file's staging file has no name
        assert any(
            target.startswith(f"{staging}/#") and target.endswith(" (deleted)")
            for target in open_files(pid)
        ), open_files(pid)
        kill_9(pid)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    detach_killed(b.path)
    mount(b.device, b.path)
    assert list(staging.iterdir()) == []  # and none was left behind
    assert shown(b, "db.bin", bytes(model)), "B after kill -9 is not the fsync'd content"
    wait_for(lambda: shown(a, "db.bin", bytes(model)), SYNC, "the fsync'd content on A")


APPENDER = """
import os, sys
path, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
for n in range(count):
    record = f"{who}:{n:05d}:".encode() + bytes([65 + int(who)]) * 50 + b"\\n"
    assert os.write(fd, record) == len(record)
    if n % 50 == 49:
        os.fsync(fd)
os.close(fd)
"""


def test_o_append_writers_in_several_processes_lose_and_tear_no_record(
    new_mount: NewMount,
) -> None:
    head = os.urandom(3 * MiB)
    a, b = two_devices(new_mount, "log.txt", head)
    writers, count = 4, 300
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(b.path / "log.txt"),
                               str(who), str(count)]) for who in range(writers)]
    assert [proc.wait(timeout=300) for proc in procs] == [0] * writers
    content = (b.path / "log.txt").read_bytes()
    assert content[: len(head)] == head, "the appends changed what was there"
    records = content[len(head) :].split(b"\n")
    assert records[-1] == b""
    expected = {f"{who}:{n:05d}:".encode() + bytes([65 + who]) * 50
                for who in range(writers) for n in range(count)}
    assert sorted(records[:-1]) == sorted(expected), "records lost, doubled or torn"
    for who in range(writers):  # each writer's records in its own order
        mine = [r for r in records if r.startswith(f"{who}:".encode())]
        assert mine == sorted(mine)
    wait_for(lambda: shown(a, "log.txt", content), SYNC, "the appended file on A")


MAPPER = """
import mmap, os, sys
path, who, pages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
with mmap.mmap(fd, size, mmap.MAP_SHARED) as m:
    for page in range(who, pages, 3):
        at = page * mmap.PAGESIZE * 37 % (size - 16)
        m[at : at + 16] = bytes([who + 1]) * 16
    m.flush()
os.close(fd)
"""


def test_mmap_writers_in_several_processes_reach_both_devices(new_mount: NewMount) -> None:
    model = bytearray(os.urandom(6 * MiB))
    a, b = two_devices(new_mount, "mapped.bin", bytes(model))
    pages = 60
    procs = [subprocess.Popen([sys.executable, "-c", MAPPER, str(b.path / "mapped.bin"),
                               str(who), str(pages)]) for who in range(3)]
    assert [proc.wait(timeout=300) for proc in procs] == [0] * 3
    for who in range(3):  # the same places, in the same order of writers per place
        for page in range(who, pages, 3):
            at = page * mmap.PAGESIZE * 37 % (len(model) - 16)
            model[at : at + 16] = bytes([who + 1]) * 16
    wait_for(lambda: shown(b, "mapped.bin", bytes(model)), SYNC, "the mapped writes on B")
    synced(b, SYNC)
    wait_for(lambda: shown(a, "mapped.bin", bytes(model)), SYNC, "the mapped writes on A")
