"""POSIX behaviour of one Loft mount, one behaviour per test, with its errno.

Every test drives a real ``loft mount`` (its own process) with plain ``os`` calls from
the test process, the way any program would. The tests share one module-scoped
mount, each working in a directory of its own named after the test; only the
remount test starts (and stops) a mount of its own.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import mmap
import os
import platform
import random
import stat
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Device, Mount, NewMount, Server, loft, unmount_and_check

_names = itertools.count()


def _mount(server: Server, base: Path, tag: str) -> Mount:
    """Log a fresh user's device in to ``server`` and mount it under ``base``."""
    user = f"px{os.getpid()}x{tag}{next(_names)}"
    server.add_user(user)
    home = base / f"home-{user}"
    result = loft("login", server.url, "--user", user, "--device", "dev", home=home)
    assert result.returncode == 0, result.stderr
    path = base / f"mnt-{user}"
    path.mkdir()
    device = Device(server, user, home)
    result = device.run("mount", str(path))
    assert result.returncode == 0, result.stderr
    return Mount(device, path)


@pytest.fixture(scope="module")
def shared_mount(mount_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One mount for the whole module (startup costs a second or two per mount);
    unmounted and its device checked after."""
    mount = _mount(mount_server, tmp_path_factory.mktemp("posix"), "shared")
    yield mount
    unmount_and_check([mount])


@pytest.fixture
def here(shared_mount: Mount, request: pytest.FixtureRequest) -> Path:
    """A fresh directory in the shared mount, named for the test."""
    name: str = request.node.name
    path = shared_mount.path / name.replace("[", "_").replace("]", "_")
    path.mkdir()
    return path


def _errno_of(call: Callable[[], Any]) -> int:
    """The errno ``call`` fails with (the callers assert which one)."""
    try:
        call()
    except OSError as exc:
        if exc.errno is None:
            pytest.fail(f"OSError without an errno: {exc!r}")
        return exc.errno
    pytest.fail("no OSError raised")


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _drop_page_cache(fd: int) -> None:
    """Forget the kernel's cached pages of the file, so reads reach the mount."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _read(path: Path) -> bytes:
    """The whole file as the mount serves it (not as the kernel's page cache holds it)."""
    with open(path, "rb") as f:
        _drop_page_cache(f.fileno())
        return f.read()


# --- regular files, directories, symlinks ------------------------------------------


def test_regular_file_is_created_written_and_read_back(here: Path) -> None:
    _write(here / "f", b"hello, loft")
    st = os.lstat(here / "f")
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == len(b"hello, loft")
    assert _read(here / "f") == b"hello, loft"
    assert os.listdir(here) == ["f"]


def test_directories_nest_and_list_their_children(here: Path) -> None:
    os.makedirs(here / "a" / "b" / "c")
    _write(here / "a" / "b" / "x", b"x")
    assert stat.S_ISDIR(os.lstat(here / "a" / "b").st_mode)
    assert sorted(os.listdir(here / "a" / "b")) == ["c", "x"]
    os.rmdir(here / "a" / "b" / "c")
    assert os.listdir(here / "a" / "b") == ["x"]


def test_symlink_reads_back_and_lstat_shows_a_link(here: Path) -> None:
    _write(here / "target", b"through the link")
    os.symlink("target", here / "link")
    assert os.readlink(here / "link") == "target"
    st = os.lstat(here / "link")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("target")
    assert stat.S_ISREG(os.stat(here / "link").st_mode)
    assert _read(here / "link") == b"through the link"


def test_dangling_symlink_lstats_as_a_link_and_stats_as_enoent(here: Path) -> None:
    os.symlink("/nowhere/at/all", here / "dangling")
    assert os.readlink(here / "dangling") == "/nowhere/at/all"
    assert stat.S_ISLNK(os.lstat(here / "dangling").st_mode)
    assert _errno_of(lambda: os.stat(here / "dangling")) == errno.ENOENT
    assert os.listdir(here) == ["dangling"]


def test_readlink_of_a_regular_file_is_einval(here: Path) -> None:
    _write(here / "f", b"")
    assert _errno_of(lambda: os.readlink(here / "f")) == errno.EINVAL


def test_a_large_directory_lists_every_entry_exactly_once(here: Path) -> None:
    names = {f"{i:03d}-" + "x" * 200 for i in range(150)}  # many readdir replies' worth
    for name in names:
        os.close(os.open(here / name, os.O_CREAT | os.O_WRONLY, 0o644))
    listing = os.listdir(here)
    assert len(listing) == len(names)
    assert set(listing) == names
    with os.scandir(here) as entries:
        assert all(entry.is_file(follow_symlinks=False) for entry in entries)


_GETDENTS64 = {"x86_64": 217, "aarch64": 61}


def _getdents(fd: int, size: int = 1024) -> list[str]:
    """One ``getdents64`` call with a small buffer: the next few names of an open dir."""
    number = _GETDENTS64.get(platform.machine())
    if number is None:
        pytest.fail(f"getdents64 number unknown on {platform.machine()}: add it here")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(size)
    got = libc.syscall(number, fd, buf, size)
    if got < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    names, pos = [], 0
    while pos < got:
        reclen = struct.unpack_from("H", buf.raw, pos + 16)[0]
        name = buf.raw[pos + 19 : pos + reclen].split(b"\0", 1)[0].decode()
        if name not in (".", ".."):
            names.append(name)
        pos += reclen
    return names


def test_deleting_entries_while_reading_the_directory_misses_none(here: Path) -> None:
    names = {f"{i:03d}-" + "y" * 40 for i in range(60)}
    for name in names:
        os.close(os.open(here / name, os.O_CREAT | os.O_WRONLY, 0o644))
    seen: list[str] = []
    fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while batch := _getdents(fd):  # as rm -r does: each batch removed once read
            seen += batch
            for name in batch:
                os.unlink(here / name)
    finally:
        os.close(fd)
    assert sorted(seen) == sorted(names)
    assert os.listdir(here) == []


def test_rewinding_a_directory_shows_names_added_since(here: Path) -> None:
    _write(here / "first", b"")
    fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _getdents(fd) == ["first"]
        _write(here / "second", b"")
        os.lseek(fd, 0, os.SEEK_SET)
        assert sorted(_getdents(fd)) == ["first", "second"]
    finally:
        os.close(fd)


# --- create and open flags -----------------------------------------------------------


def test_create_makes_an_empty_file_with_the_mode_asked(here: Path) -> None:
    fd = os.open(here / "new", os.O_CREAT | os.O_WRONLY, 0o640)
    os.close(fd)
    st = os.stat(here / "new")
    assert st.st_size == 0
    assert stat.S_IMODE(st.st_mode) == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_open_with_o_trunc_empties_the_file(here: Path) -> None:
    _write(here / "f", b"old content that is long")
    fd = os.open(here / "f", os.O_WRONLY | os.O_TRUNC)
    assert os.fstat(fd).st_size == 0
    os.write(fd, b"new")
    os.close(fd)
    assert os.stat(here / "f").st_size == 3
    assert _read(here / "f") == b"new"


def test_o_append_writes_at_the_end_even_with_two_fds(here: Path) -> None:
    _write(here / "log", b"start\n")
    one = os.open(here / "log", os.O_WRONLY | os.O_APPEND)
    two = os.open(here / "log", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(one, b"one\n")
        os.write(two, b"two\n")
        os.write(one, b"three\n")
    finally:
        os.close(one)
        os.close(two)
    assert _read(here / "log") == b"start\none\ntwo\nthree\n"


def test_o_excl_on_an_existing_name_is_eexist(here: Path) -> None:
    _write(here / "f", b"keep")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    assert _errno_of(lambda: os.open(here / "f", flags)) == errno.EEXIST
    assert _read(here / "f") == b"keep"


def test_open_of_a_directory_for_writing_is_eisdir(here: Path) -> None:
    os.mkdir(here / "d")
    assert _errno_of(lambda: os.open(here / "d", os.O_WRONLY)) == errno.EISDIR


# --- read and write ------------------------------------------------------------------


def test_write_at_an_offset_inside_the_file_overwrites_in_place(here: Path) -> None:
    _write(here / "f", b"abcdefghij")
    fd = os.open(here / "f", os.O_RDWR)
    try:
        assert os.pwrite(fd, b"XYZ", 4) == 3
        assert os.pread(fd, 100, 0) == b"abcdXYZhij"
    finally:
        os.close(fd)
    assert _read(here / "f") == b"abcdXYZhij"


def test_write_beyond_eof_leaves_a_gap_of_zeros(here: Path) -> None:
    _write(here / "f", b"head")
    fd = os.open(here / "f", os.O_RDWR)
    try:
        os.pwrite(fd, b"tail", 1_000_000)
        assert os.fstat(fd).st_size == 1_000_004
        assert os.pread(fd, 8, 999_998) == b"\0\0tail"
    finally:
        os.close(fd)
    assert os.stat(here / "f").st_size == 1_000_004
    content = _read(here / "f")
    assert content == b"head" + bytes(1_000_000 - 4) + b"tail"


def test_read_at_or_past_eof_returns_nothing(here: Path) -> None:
    _write(here / "f", b"0123456789")
    fd = os.open(here / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 5, 8) == b"89"
        assert os.pread(fd, 5, 10) == b""
        assert os.pread(fd, 5, 1 << 20) == b""
    finally:
        os.close(fd)


def test_reads_at_any_offset_of_a_multi_chunk_file_match_what_was_written(
    here: Path,
) -> None:
    rng = random.Random(7)
    data = rng.randbytes(6 << 20)  # several content-defined chunks
    _write(here / "f", data)
    fd = os.open(here / "f", os.O_RDONLY)
    try:
        _drop_page_cache(fd)
        for _ in range(60):
            offset = rng.randrange(0, len(data) + 10)
            size = rng.choice([1, 100, 4096, 300_000, 2 << 20])
            assert os.pread(fd, size, offset) == data[offset : offset + size]
    finally:
        os.close(fd)


# --- truncate ------------------------------------------------------------------------


def test_truncate_shrinks_and_grows_by_path(here: Path) -> None:
    _write(here / "f", b"0123456789")
    os.truncate(here / "f", 4)
    assert os.stat(here / "f").st_size == 4
    assert _read(here / "f") == b"0123"
    os.truncate(here / "f", 8)
    assert os.stat(here / "f").st_size == 8
    assert _read(here / "f") == b"0123\0\0\0\0"


def test_ftruncate_shrinks_and_grows_through_an_open_fd(here: Path) -> None:
    _write(here / "f", b"0123456789")
    fd = os.open(here / "f", os.O_RDWR)
    try:
        os.ftruncate(fd, 3)
        assert os.fstat(fd).st_size == 3
        assert os.pread(fd, 100, 0) == b"012"
        os.ftruncate(fd, 6)
        assert os.fstat(fd).st_size == 6
        assert os.pread(fd, 100, 0) == b"012\0\0\0"
    finally:
        os.close(fd)
    assert os.stat(here / "f").st_size == 6
    assert _read(here / "f") == b"012\0\0\0"


def test_truncate_of_a_directory_is_eisdir(here: Path) -> None:
    os.mkdir(here / "d")
    assert _errno_of(lambda: os.truncate(here / "d", 0)) == errno.EISDIR


# --- rename --------------------------------------------------------------------------


def test_rename_over_an_existing_file_replaces_it(here: Path) -> None:
    _write(here / "a", b"from a")
    _write(here / "b", b"from b")
    os.rename(here / "a", here / "b")
    assert os.listdir(here) == ["b"]
    assert _read(here / "b") == b"from a"


def test_rename_over_an_open_file_leaves_its_fd_on_the_old_content(here: Path) -> None:
    _write(here / "old", b"old content")
    _write(here / "new", b"new content")
    fd = os.open(here / "old", os.O_RDONLY)
    try:
        os.rename(here / "new", here / "old")
        assert os.pread(fd, 100, 0) == b"old content"
    finally:
        os.close(fd)
    assert _read(here / "old") == b"new content"
    assert os.listdir(here) == ["old"]


def test_rename_across_directories_moves_the_file(here: Path) -> None:
    os.mkdir(here / "src")
    os.mkdir(here / "dst")
    _write(here / "src" / "f", b"moved")
    os.rename(here / "src" / "f", here / "dst" / "g")
    assert os.listdir(here / "src") == []
    assert os.listdir(here / "dst") == ["g"]
    assert _read(here / "dst" / "g") == b"moved"


def test_rename_of_a_directory_over_an_empty_directory_replaces_it(here: Path) -> None:
    os.mkdir(here / "a")
    _write(here / "a" / "inside", b"kept")
    os.mkdir(here / "b")
    os.rename(here / "a", here / "b")
    assert os.listdir(here) == ["b"]
    assert _read(here / "b" / "inside") == b"kept"


def test_rename_of_a_directory_over_a_non_empty_directory_is_enotempty(here: Path) -> None:
    os.mkdir(here / "a")
    os.mkdir(here / "b")
    _write(here / "b" / "occupant", b"")
    assert _errno_of(lambda: os.rename(here / "a", here / "b")) == errno.ENOTEMPTY
    assert sorted(os.listdir(here)) == ["a", "b"]


def test_rename_of_a_file_over_a_directory_is_eisdir(here: Path) -> None:
    _write(here / "f", b"")
    os.mkdir(here / "d")
    assert _errno_of(lambda: os.rename(here / "f", here / "d")) == errno.EISDIR


def test_rename_of_a_directory_over_a_file_is_enotdir(here: Path) -> None:
    os.mkdir(here / "d")
    _write(here / "f", b"")
    assert _errno_of(lambda: os.rename(here / "d", here / "f")) == errno.ENOTDIR


def _renameat2(old: Path, new: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    result = libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def test_rename_noreplace_over_an_existing_name_is_eexist(here: Path) -> None:
    _write(here / "a", b"a")
    _write(here / "b", b"b")
    code = _errno_of(lambda: _renameat2(here / "a", here / "b", RENAME_NOREPLACE))
    assert code == errno.EEXIST
    assert _read(here / "a") == b"a"
    assert _read(here / "b") == b"b"


def test_rename_noreplace_to_a_free_name_renames(here: Path) -> None:
    _write(here / "a", b"a")
    _renameat2(here / "a", here / "c", RENAME_NOREPLACE)
    assert os.listdir(here) == ["c"]


def test_rename_exchange_is_refused_with_einval(here: Path) -> None:
    _write(here / "a", b"a")
    _write(here / "b", b"b")
    code = _errno_of(lambda: _renameat2(here / "a", here / "b", RENAME_EXCHANGE))
    assert code == errno.EINVAL
    assert _read(here / "a") == b"a"
    assert _read(here / "b") == b"b"


def test_rename_of_a_directory_into_its_own_subdirectory_is_einval(here: Path) -> None:
    os.makedirs(here / "a" / "sub")
    code = _errno_of(lambda: os.rename(here / "a", here / "a" / "sub" / "a"))
    assert code == errno.EINVAL
    assert os.listdir(here / "a") == ["sub"]


# --- unlink and rmdir ----------------------------------------------------------------


def test_unlinked_open_file_stays_readable_and_writable_until_close(here: Path) -> None:
    _write(here / "f", b"before")
    fd = os.open(here / "f", os.O_RDWR)
    try:
        os.unlink(here / "f")
        assert os.listdir(here) == []
        assert not os.path.exists(here / "f")
        assert os.pread(fd, 100, 0) == b"before"
        os.pwrite(fd, b" and after", 6)
        assert os.pread(fd, 100, 0) == b"before and after"
        assert os.fstat(fd).st_size == len(b"before and after")
    finally:
        os.close(fd)
    assert os.listdir(here) == []
    assert _errno_of(lambda: os.stat(here / "f")) == errno.ENOENT


def test_unlinked_file_open_read_only_stays_readable(here: Path) -> None:
    _write(here / "f", b"committed content")
    fd = os.open(here / "f", os.O_RDONLY)
    try:
        os.unlink(here / "f")
        assert os.listdir(here) == []
        assert os.pread(fd, 100, 0) == b"committed content"
    finally:
        os.close(fd)


def test_unlinked_open_file_has_no_links_and_takes_fchmod(here: Path) -> None:
    _write(here / "f", b"x")
    fd = os.open(here / "f", os.O_RDWR)
    try:
        assert os.fstat(fd).st_nlink == 1
        os.unlink(here / "f")
        assert os.fstat(fd).st_nlink == 0
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)


def test_a_new_file_may_take_the_name_of_an_unlinked_open_one(here: Path) -> None:
    _write(here / "f", b"first")
    fd = os.open(here / "f", os.O_RDWR)
    try:
        os.unlink(here / "f")
        _write(here / "f", b"second")
        os.pwrite(fd, b"FIRST", 0)
        assert os.pread(fd, 100, 0) == b"FIRST"
    finally:
        os.close(fd)
    assert _read(here / "f") == b"second"
    assert os.listdir(here) == ["f"]


def test_rmdir_of_a_non_empty_directory_is_enotempty(here: Path) -> None:
    os.mkdir(here / "d")
    _write(here / "d" / "f", b"")
    assert _errno_of(lambda: os.rmdir(here / "d")) == errno.ENOTEMPTY
    assert os.listdir(here / "d") == ["f"]


def test_rmdir_of_a_file_is_enotdir(here: Path) -> None:
    _write(here / "f", b"")
    assert _errno_of(lambda: os.rmdir(here / "f")) == errno.ENOTDIR


def test_unlink_of_a_directory_is_eisdir(here: Path) -> None:
    os.mkdir(here / "d")
    assert _errno_of(lambda: os.unlink(here / "d")) == errno.EISDIR
    assert os.path.isdir(here / "d")


# --- attributes ----------------------------------------------------------------------


def test_chmod_shows_in_stat(here: Path) -> None:
    _write(here / "f", b"")
    os.chmod(here / "f", 0o751)
    assert stat.S_IMODE(os.stat(here / "f").st_mode) == 0o751
    os.mkdir(here / "d")
    os.chmod(here / "d", 0o700)
    assert stat.S_IMODE(os.stat(here / "d").st_mode) == 0o700


def test_chmod_of_a_file_open_for_writing_survives_its_close(here: Path) -> None:
    fd = os.open(here / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"data")
        os.fchmod(fd, 0o600)
        os.write(fd, b" more")
    finally:
        os.close(fd)
    st = os.stat(here / "f")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == len(b"data more")


def test_utime_with_nanoseconds_reads_back_exactly(here: Path) -> None:
    _write(here / "f", b"x")
    mtime = 1_234_567_890_123_456_789
    os.utime(here / "f", ns=(mtime, mtime))
    assert os.stat(here / "f").st_mtime_ns == mtime
    os.mkdir(here / "d")
    os.utime(here / "d", ns=(mtime + 1, mtime + 1))
    assert os.stat(here / "d").st_mtime_ns == mtime + 1


def test_writing_a_file_advances_its_mtime(here: Path) -> None:
    _write(here / "f", b"x")
    os.utime(here / "f", ns=(10**18, 10**18))
    before = time.time_ns()
    with open(here / "f", "ab") as f:
        f.write(b"y")
    assert os.stat(here / "f").st_mtime_ns >= before - 10**9  # now, not the time set


def test_utime_set_on_an_open_file_survives_its_close(here: Path) -> None:
    fd = os.open(here / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"data")
        os.utime(fd, ns=(10**18, 10**18))
    finally:
        os.close(fd)
    assert os.stat(here / "f").st_mtime_ns == 10**18


def test_statvfs_works_and_names_may_be_255_bytes(shared_mount: Mount) -> None:
    st = os.statvfs(shared_mount.path)
    assert st.f_namemax == 255
    assert st.f_bsize > 0
    assert st.f_blocks > 0


def test_fsync_and_fdatasync_return_on_a_written_file_and_a_directory(here: Path) -> None:
    fd = os.open(here / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
        os.fdatasync(fd)
        assert os.stat(here / "f").st_size == len(b"durable")
    finally:
        os.close(fd)
    dfd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def test_a_file_sealed_at_each_fsync_keeps_every_byte_at_close(here: Path) -> None:
    """Each ``fsync`` makes a version of all that is written so far: past the inline
    seal (1 MiB) and over several seal steps (16 MiB), however often it is sealed."""
    pieces = [random.randbytes(n) for n in (3 << 20, 18 << 20, 100)]
    fd = os.open(here / "sealed", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for piece in pieces:
            os.write(fd, piece)
            os.fsync(fd)
    finally:
        os.close(fd)
    assert (here / "sealed").read_bytes() == b"".join(pieces)


# --- locks ---------------------------------------------------------------------------


def test_flock_exclusive_blocks_a_second_fd_with_ewouldblock(here: Path) -> None:
    _write(here / "f", b"")
    with open(here / "f", "rb") as one, open(here / "f", "rb") as two:
        fcntl.flock(one, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError) as info:
            fcntl.flock(two, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert info.value.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        fcntl.flock(one, fcntl.LOCK_UN)
        fcntl.flock(two, fcntl.LOCK_EX | fcntl.LOCK_NB)


_TRY_LOCK = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "r+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        except OSError as err:
            print(err.errno)
        else:
            print(0)
    """
)


def _lock_from_another_process(path: Path) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(result.stdout)


def test_fcntl_posix_lock_excludes_another_process_until_released(here: Path) -> None:
    _write(here / "f", b"0123456789")
    with open(here / "f", "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)
        assert _lock_from_another_process(here / "f") in (errno.EAGAIN, errno.EACCES)
        fcntl.lockf(f, fcntl.LOCK_UN, 10, 0)
        assert _lock_from_another_process(here / "f") == 0


# --- mmap ----------------------------------------------------------------------------


def test_mmap_reads_the_file_content(here: Path) -> None:
    data = bytes(range(256)) * 64
    _write(here / "f", data)
    with open(here / "f", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[:] == data
        assert m[1000:1010] == data[1000:1010]


def test_mmap_shared_write_is_seen_after_msync_and_close(here: Path) -> None:
    _write(here / "f", b"a" * 8192)
    with open(here / "f", "r+b") as f:
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED)
        m[100:105] = b"MMAP!"
        m[8000:8003] = b"end"
        m.flush()
        m.close()
    expected = bytearray(b"a" * 8192)
    expected[100:105] = b"MMAP!"
    expected[8000:8003] = b"end"
    assert _read(here / "f") == bytes(expected)


def test_mmap_shared_write_outlives_the_close_of_its_fd(here: Path) -> None:
    _write(here / "f", b"a" * 8192)
    fd = os.open(here / "f", os.O_RDWR)
    m = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED)
    os.close(fd)
    m[10:14] = b"late"
    m.flush()
    m.close()
    assert _read(here / "f") == b"a" * 10 + b"late" + b"a" * (8192 - 14)


def test_mmap_shared_write_into_a_file_grown_by_ftruncate(here: Path) -> None:
    fd = os.open(here / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, 3 * mmap.PAGESIZE)
        with mmap.mmap(fd, 0, flags=mmap.MAP_SHARED) as m:
            m[mmap.PAGESIZE : mmap.PAGESIZE + 4] = b"page"
            m.flush()
    finally:
        os.close(fd)
    expected = bytes(mmap.PAGESIZE) + b"page" + bytes(2 * mmap.PAGESIZE - 4)
    assert os.stat(here / "f").st_size == 3 * mmap.PAGESIZE
    assert _read(here / "f") == expected


# --- refusals ------------------------------------------------------------------------


def test_hard_link_is_eperm(here: Path) -> None:
    _write(here / "f", b"")
    assert _errno_of(lambda: os.link(here / "f", here / "g")) == errno.EPERM
    assert os.listdir(here) == ["f"]


def test_a_name_of_256_bytes_is_enametoolong(here: Path) -> None:
    long = "n" * 256
    flags = os.O_CREAT | os.O_WRONLY
    assert _errno_of(lambda: os.open(here / long, flags, 0o644)) == errno.ENAMETOOLONG
    assert _errno_of(lambda: os.mkdir(here / long)) == errno.ENAMETOOLONG
    assert _errno_of(lambda: os.stat(here / long)) == errno.ENAMETOOLONG
    _write(here / "f", b"")
    assert _errno_of(lambda: os.rename(here / "f", here / long)) == errno.ENAMETOOLONG
    assert os.listdir(here) == ["f"]


def test_a_name_of_255_bytes_is_accepted(here: Path) -> None:
    name = "é" * 127 + "n"  # 255 bytes of UTF-8
    assert len(name.encode()) == 255
    _write(here / name, b"ok")
    assert os.listdir(here) == [name]
    assert _read(here / name) == b"ok"


def test_missing_names_are_enoent(here: Path) -> None:
    missing = here / "missing"
    assert _errno_of(lambda: os.stat(missing)) == errno.ENOENT
    assert _errno_of(lambda: os.lstat(missing)) == errno.ENOENT
    assert _errno_of(lambda: os.open(missing, os.O_RDONLY)) == errno.ENOENT
    assert _errno_of(lambda: os.unlink(missing)) == errno.ENOENT
    assert _errno_of(lambda: os.rmdir(missing)) == errno.ENOENT
    assert _errno_of(lambda: os.readlink(missing)) == errno.ENOENT
    assert _errno_of(lambda: os.rename(missing, here / "other")) == errno.ENOENT
    assert _errno_of(lambda: os.listdir(missing)) == errno.ENOENT
    assert _errno_of(lambda: os.stat(missing / "below")) == errno.ENOENT


def test_mkdir_over_an_existing_name_is_eexist(here: Path) -> None:
    os.mkdir(here / "d")
    _write(here / "f", b"")
    assert _errno_of(lambda: os.mkdir(here / "d")) == errno.EEXIST
    assert _errno_of(lambda: os.mkdir(here / "f")) == errno.EEXIST


def test_symlink_over_an_existing_name_is_eexist(here: Path) -> None:
    _write(here / "f", b"")
    assert _errno_of(lambda: os.symlink("anywhere", here / "f")) == errno.EEXIST


# --- consistency ---------------------------------------------------------------------


def test_after_close_stat_and_a_fresh_open_see_the_new_content(here: Path) -> None:
    _write(here / "f", b"version one")
    reader = os.open(here / "f", os.O_RDONLY)
    try:
        assert os.read(reader, 100) == b"version one"
        _write(here / "f", b"version two, longer")
        assert os.stat(here / "f").st_size == len(b"version two, longer")
        assert _read(here / "f") == b"version two, longer"
    finally:
        os.close(reader)


def _random_ops(fd: int, model: bytearray, rng: random.Random, steps: int) -> None:
    """Random writes (some past EOF), reads checked against ``model``, and truncates."""
    for step in range(steps):
        choice = rng.random()
        if choice < 0.65:
            offset = rng.randrange(0, len(model) + 5000)
            data = rng.randbytes(rng.randrange(1, 3000))
            assert os.pwrite(fd, data, offset) == len(data)
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset : offset + len(data)] = data
        elif choice < 0.95:
            if rng.random() < 0.2:
                _drop_page_cache(fd)
            offset = rng.randrange(0, len(model) + 100)
            size = rng.randrange(1, 5000)
            got = os.pread(fd, size, offset)
            assert got == bytes(model[offset : offset + size]), f"read at step {step}"
        else:
            size = rng.randrange(max(0, len(model) - 4000), len(model) + 1000)
            os.ftruncate(fd, size)
            if size < len(model):
                del model[size:]
            else:
                model.extend(bytes(size - len(model)))
        if step % 100 == 99:  # a version is committed mid-way; the fd stays usable
            os.fsync(fd)
    assert os.fstat(fd).st_size == len(model)


def test_an_open_reader_sees_writes_made_through_another_fd(here: Path) -> None:
    _write(here / "f", b"version one")
    reader = os.open(here / "f", os.O_RDONLY)
    try:
        assert os.pread(reader, 100, 0) == b"version one"
        writer = os.open(here / "f", os.O_WRONLY)
        try:
            os.pwrite(writer, b"VERSION", 0)
            assert os.pread(reader, 100, 0) == b"VERSION one"
        finally:
            os.close(writer)
        _drop_page_cache(reader)
        assert os.pread(reader, 100, 0) == b"VERSION one"
    finally:
        os.close(reader)


def test_many_small_writes_at_random_offsets_match_a_model(here: Path) -> None:
    rng = random.Random(20240607)
    model = bytearray()
    fd = os.open(here / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        _random_ops(fd, model, rng, 400)
    finally:
        os.close(fd)
    assert os.stat(here / "f").st_size == len(model)
    assert _read(here / "f") == bytes(model)


def test_random_writes_into_a_committed_multi_chunk_file_match_a_model(here: Path) -> None:
    rng = random.Random(99)
    model = bytearray(rng.randbytes(3 << 20))
    _write(here / "f", bytes(model))
    fd = os.open(here / "f", os.O_RDWR)
    try:
        _random_ops(fd, model, rng, 300)
    finally:
        os.close(fd)
    assert os.stat(here / "f").st_size == len(model)
    assert _read(here / "f") == bytes(model)


# --- remount -------------------------------------------------------------------------


def test_remount_of_the_same_device_shows_the_same_tree_and_content(
    new_mount: NewMount,
) -> None:
    mount = new_mount()
    root = mount.path
    os.makedirs(root / "docs" / "deep")
    _write(root / "docs" / "a.txt", b"alpha")
    _write(root / "docs" / "deep" / "b.bin", bytes(range(256)) * 1000)
    os.symlink("docs/a.txt", root / "link")
    os.chmod(root / "docs" / "a.txt", 0o600)
    os.utime(root / "docs" / "a.txt", ns=(10**18, 10**18))

    def snapshot() -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                st = os.lstat(path)
                rel = str(path.relative_to(root))
                if stat.S_ISLNK(st.st_mode):
                    tree[rel] = ("link", os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    tree[rel] = ("dir", stat.S_IMODE(st.st_mode))
                else:
                    tree[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, _read(path))
        return tree

    before = snapshot()
    assert len(before) == 5
    result = mount.unmount()
    assert result.returncode == 0, result.stderr
    assert not os.path.ismount(root)
    assert os.listdir(root) == []
    result = mount.device.run("mount", str(root))
    assert result.returncode == 0, result.stderr
    assert snapshot() == before


def test_the_mount_reads_ahead_a_chunk_at_a_time_where_it_may(new_mount: NewMount) -> None:
    """As root the mount raises the kernel's read-ahead for itself to 1 MiB (reads come
    a chunk's mean size at a time); elsewhere the kernel's default stays."""
    mount = new_mount()
    st = os.stat(mount.path)
    setting = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
    assert setting.read_text().strip() == ("1024" if os.geteuid() == 0 else "128")
    data = random.Random(7).randbytes(9 * 1024 * 1024 + 5)
    _write(mount.path / "big", data)
    with open(mount.path / "big", "rb", buffering=0) as f:
        pieces = []
        while piece := f.read(3 * 1024 * 1024):
            pieces.append(piece)
    assert b"".join(pieces) == data
