"""Small edits to large files: what they cost in a Loft mount, beside the same edit to a
small file in the same mount, on local disk and on the in-memory pyfuse3 filesystem
(``tools.bench.memfs``), all measured in the same run.

    python -m tools.bench.edits [--size-mib 1024] [--small-kib 1024] [--appends 100]

Device A of a fresh embedded-default server mounts the workspace. A SMALL and a SIZE
file of random bytes are written, closed and uploaded first; then, for each of them,
on local disk, on memfs and in the mount:

* ``append+fsync``: the file opened for appending, then APPENDS times: write 4 KiB and
  ``fsync``; the p50 and the max of one append with its fsync;
* ``overwrite 1 byte``: ``open`` for writing, ``pwrite`` of one byte in the middle,
  ``close``: the seconds until ``close`` returns;

and in the mount only, the bytes A uploaded for the overwrite (chunk content and
deltas sent, from its ``status.json``) and the bytes the server stored for it (the
growth of its chunk directory once A has nothing pending; the content is random, so
chunks are stored as they are). Last, ``insert 1 byte``: a 64 MiB file rewritten whole
with one byte in front (as an editor saves), and the bytes uploaded and stored for it.

Prints each figure for both sizes and the ratio large / small in the mount (the cost
of a small edit should not grow with the file). Everything is unmounted, stopped and
removed at the end, on failure too; a failed step prints one line and exits 1. Needs
``/dev/fuse``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.bench.latency import uploaded_since
from tools.bench.mount import BenchError, Device, memfs_mounted, step, wait_for
from tools.localserver import LocalServer, Stores

KiB, MiB = 1 << 10, 1 << 20
APPEND = 4 * KiB
INSERT_FILE = 64 * MiB
UPLOAD_TIMEOUT = 600.0


@dataclass
class Figures:
    """One target's figures, by file size."""

    append_p50: dict[int, float] = field(default_factory=dict)
    append_max: dict[int, float] = field(default_factory=dict)
    overwrite: dict[int, float] = field(default_factory=dict)
    stored: dict[int, int] = field(default_factory=dict)
    uploaded: dict[int, int] = field(default_factory=dict)


def write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            piece = rng.randbytes(min(left, 8 * MiB))
            f.write(piece)
            left -= len(piece)


def appends(path: Path, count: int) -> list[float]:
    """Seconds of each ``write`` of 4 KiB plus ``fsync``, at the end of the file."""
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        for _ in range(count):
            data = os.urandom(APPEND)
            start = time.perf_counter()
            os.write(fd, data)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return times


def overwrite(path: Path) -> float:
    """Seconds from ``open`` to the return of ``close`` for one byte written mid-file."""
    size = path.stat().st_size
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xa5", size // 2)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def stored_bytes(chunks: Path) -> int:
    return sum(f.stat().st_size for f in chunks.rglob("*") if f.is_file())


def uploaded_bytes(device: Device) -> int:
    """What the mount has uploaded since it started, from a status written from now on."""
    now = time.time_ns()
    wait_for(lambda: device.status(now) is not None, 10, "a fresh status")
    status = device.status(now) or {}
    value = status.get("uploaded_bytes", 0)
    return value if isinstance(value, int) else 0


@contextlib.contextmanager
def measured_upload(device: Device, chunks: Path, figures: Figures, key: int) -> Iterator[None]:
    """Bytes the device uploads and the server stores for what the block does, once
    the device has sent it."""
    before = stored_bytes(chunks)
    sent = uploaded_bytes(device)
    yield
    closed = time.time_ns()
    wait_for(uploaded_since(device, closed), UPLOAD_TIMEOUT, "the upload", every=0.05)
    figures.stored[key] = stored_bytes(chunks) - before
    figures.uploaded[key] = uploaded_bytes(device) - sent


def on_disk(root: Path, sizes: list[int], count: int) -> Figures:
    """A baseline: the same edits to files on local disk, or on memfs."""
    figures = Figures()
    for size in sizes:
        path = root / f"file-{size}"
        write_random(path, size, seed=size)
        times = appends(path, count)
        figures.append_p50[size] = statistics.median(times)
        figures.append_max[size] = max(times)
        figures.overwrite[size] = overwrite(path)
    return figures


@contextlib.contextmanager
def one_device(work: Path) -> Iterator[tuple[LocalServer, Device]]:
    """A fresh embedded-default server under ``work`` with device A of user "bench"
    mounted, for the block; unmounted and stopped after."""
    server = LocalServer(Stores(work / "server" / "data"))
    a = Device("A", work / "home-a", work / "mnt-a")
    try:
        with step("loft: a server and device A"):
            server.start()
            server.add_user("bench")
            server.login("bench", a.home, device="A")
            a.mount()
        yield server, a
    finally:
        a.unmount()
        server.stop()


def cleanup(what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:
        print(f"bench.edits: cleanup: {what}: {exc}", file=sys.stderr)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def report(
    local: Figures, memfs: Figures, loft: Figures, sizes: list[int], insert: tuple[float, Figures]
) -> None:
    small, large = sizes
    name = {small: f"{small // KiB} KiB", large: f"{large // MiB} MiB"}
    blank = ""
    print(f"\n{'figure':34} {'file':>9} {'local disk':>12} {'memfs':>12} {'loft':>12}"
          f" {'loft/memfs':>11}")
    rows = [
        ("append 4 KiB + fsync, p50", "append_p50"),
        ("append 4 KiB + fsync, max", "append_max"),
        ("overwrite 1 byte mid-file, close", "overwrite"),
    ]
    for label, attr in rows:
        here, mem, there = (getattr(f, attr) for f in (local, memfs, loft))
        for size in sizes:
            print(f"{label:34} {name[size]:>9} {fmt_ms(here[size]):>12} {fmt_ms(mem[size]):>12}"
                  f" {fmt_ms(there[size]):>12} {there[size] / mem[size]:10.1f}x")
        print(f"{blank:34} {'large/small':>9} {blank:>12} {blank:>12}"
              f" {there[large] / there[small]:11.2f}x")
    for what, values in (("uploaded", loft.uploaded), ("stored", loft.stored)):
        for size in sizes:
            print(f"{'bytes ' + what + ' for the overwrite':34} {name[size]:>9} {blank:>12}"
                  f" {blank:>12} {fmt_bytes(values[size]):>12}")
    seconds, inserted = insert
    print(f"{'insert 1 byte at the start, save':34} {'64 MiB':>9} {blank:>12} {blank:>12}"
          f" {fmt_ms(seconds):>12}")
    for what, values in (("uploaded", inserted.uploaded), ("stored", inserted.stored)):
        print(f"{'bytes ' + what + ' for the insert':34} {'64 MiB':>9} {blank:>12} {blank:>12}"
              f" {fmt_bytes(values[0]):>12}")


def fmt_bytes(count: int) -> str:
    """Bytes as they are read best: a delta of a few dozen bytes shows as such."""
    return f"{count} B" if count < KiB else f"{count / KiB:.1f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="the large file (MiB)")
    parser.add_argument("--small-kib", type=int, default=1024, help="the small file (KiB)")
    parser.add_argument("--appends", type=int, default=100, help="4 KiB appends per file")
    args = parser.parse_args()
    sizes = [args.small_kib * KiB, args.size_mib * MiB]
    work = Path(tempfile.mkdtemp(prefix="loft-bench-edits-"))
    try:
        with step("local disk"):
            (work / "local").mkdir()
            local = on_disk(work / "local", sizes, args.appends)
            shutil.rmtree(work / "local")
        (work / "mnt-memfs").mkdir()
        with memfs_mounted(work / "mnt-memfs", work / "memfs.log", cleanup) as _, \
                step("memfs"):
            memfs = on_disk(work / "mnt-memfs", sizes, args.appends)
        with one_device(work) as (server, a):
            chunks = server.stores.data / "chunks"
            loft = Figures()

            def settled(path: Path) -> None:
                closed = time.time_ns()
                wait_for(uploaded_since(a, closed), UPLOAD_TIMEOUT, f"{path.name} uploaded")

            with step("loft: appends and overwrites"):
                for size in sizes:
                    path = a.mountpoint / f"file-{size}"
                    write_random(path, size, seed=size)
                    settled(path)
                    times = appends(path, args.appends)
                    loft.append_p50[size] = statistics.median(times)
                    loft.append_max[size] = max(times)
                    settled(path)
                    with measured_upload(a, chunks, loft, size):
                        loft.overwrite[size] = overwrite(path)
            with step("loft: a byte inserted at the start of a 64 MiB file"):
                path = a.mountpoint / "insert"
                write_random(path, INSERT_FILE, seed=64)
                settled(path)
                data = path.read_bytes()
                inserted = Figures()
                with measured_upload(a, chunks, inserted, 0):
                    start = time.perf_counter()
                    path.write_bytes(b"!" + data)
                    seconds = time.perf_counter() - start
        report(local, memfs, loft, sizes, (seconds, inserted))
    except BenchError as exc:
        print(f"bench.edits: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
