"""Random small reads of a large file on a device that has none of its content.

    python -m tools.bench.randread [--size-mib 256] [--reads 200] [--read-kib 4]

Device A of a fresh embedded-default server writes SIZE MiB of random bytes; device B
of the same user, which never read the file, then reads READS pieces of READ KiB at
random offsets (each far from the last, ``POSIX_FADV_RANDOM``, the kernel's caches
dropped first), one after the other, checking each against what A wrote. Printed: the
time per read (p50, mean) and the bytes B fetched from the server for them (from its
``status.json``, else the growth of its chunk cache), beside the baseline measured in
the same run: READS GETs of READ KiB, one after the other, from ``tools.bench.rawhttp``
(the same HTTP stack, answering from memory). Fetching a whole chunk (~1 MiB) for each
read shows as bytes fetched ≈ READS MiB; a part as ≈ READS x READ KiB.

Everything is unmounted, stopped and removed at the end; a failed step prints one line
and exits 1. Needs root (``/proc/sys/vm/drop_caches``) and ``/dev/fuse``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

import tools.bench.rawhttp
from backend.blocking import BlockingPool
from tools.bench.mount import (
    BenchError,
    Device,
    MiB,
    drop_caches,
    step,
    wait_for,
    wait_synced,
    write_file,
)
from tools.localserver import LocalServer, Stores

KiB = 1 << 10
SYNC_TIMEOUT = 600.0


def status_bytes(device: Device, key: str) -> int | None:
    """A byte figure of the device's ``status.json`` written from now on (None if the
    mount does not report it)."""
    since = time.time_ns()
    wait_for(lambda: device.status(since) is not None, 10, f"a fresh status.json of {device.name}",
             every=0.05)
    value = (device.status() or {}).get(key)
    return None if value is None else int(str(value))


def random_reads(path: Path, content: bytes, offsets: list[int], size: int) -> list[float]:
    """Seconds of each ``pread`` of ``size`` bytes at ``offsets``, each checked."""
    seconds = []
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for at in offsets:
            start = time.perf_counter()
            data = os.pread(fd, size, at)
            seconds.append(time.perf_counter() - start)
            if data != content[at : at + size]:
                raise BenchError(f"the read at {at} differs from what was written")
    finally:
        os.close(fd)
    return seconds


def raw_gets(count: int, size: int) -> list[float]:
    """Seconds of each of ``count`` GETs of ``size`` bytes, one after the other, from
    ``tools.bench.rawhttp`` started for the purpose."""

    async def run(url: str) -> list[float]:
        pool = BlockingPool(url, {}, timeout=60, connect=5, context=None, size=1)
        seconds = []
        try:
            for i in range(count):
                start = time.perf_counter()
                answer = await pool.send("GET", f"/blob/{i}?size={size}", {})
                seconds.append(time.perf_counter() - start)
                if answer.status_code != 200 or len(answer.content) != size:
                    raise BenchError(f"raw GET: HTTP {answer.status_code}")
        finally:
            pool.close()
        return seconds

    with tools.bench.rawhttp.serving() as url:
        return trio.run(run, url)


def spread_offsets(size: int, reads: int, piece: int, seed: int = 7) -> list[int]:
    """``reads`` offsets, each at least 2 MiB from the one before (so that every read is
    a jump, not the next part of a sequential one)."""
    rng, offsets = random.Random(seed), list[int]()
    while len(offsets) < reads:
        at = rng.randrange(2 * MiB, size - piece)
        if not offsets or abs(at - offsets[-1]) >= 2 * MiB:
            offsets.append(at)
    return offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--read-kib", type=int, default=4)
    args = parser.parse_args()
    if args.size_mib < 8 or args.reads < 1 or not 1 <= args.read_kib <= 1024:
        parser.error("--size-mib at least 8, --reads at least 1, --read-kib 1 to 1024")
    size, piece = args.size_mib * MiB, args.read_kib * KiB
    work = Path(tempfile.mkdtemp(prefix="loft-bench-randread-"))
    server = LocalServer(Stores(work / "server" / "data"))
    a = Device("A", work / "home-a", work / "mnt-a")
    b = Device("B", work / "home-b", work / "mnt-b")
    try:
        with step("a server, devices A and B"):
            server.start()
            server.add_user("bench")
            for dev in (a, b):
                server.login("bench", dev.home, device=dev.name)
                dev.mount()
        content = os.urandom(size)
        with step(f"A writes {args.size_mib} MiB; until B sees it"):
            start = time.perf_counter()
            write_file(a.mountpoint / "big.bin", bytearray(content))

            def on_b() -> bool:
                path = b.mountpoint / "big.bin"
                return path.exists() and path.stat().st_size == size

            wait_synced(a, time.time_ns(), on_b, start, SYNC_TIMEOUT)
        offsets = spread_offsets(size, args.reads, piece)
        fetched_before = status_bytes(b, "downloaded_bytes")
        cached_before = status_bytes(b, "bytes") or 0
        drop_caches(work)
        with step(f"B reads {args.reads} x {args.read_kib} KiB at random"):
            loft = random_reads(b.mountpoint / "big.bin", content, offsets, piece)
        fetched_after = status_bytes(b, "downloaded_bytes")
        cached = (status_bytes(b, "bytes") or 0) - cached_before
        with step(f"raw HTTP: {args.reads} GETs of {args.read_kib} KiB"):
            raw = raw_gets(args.reads, piece)
    except BenchError as err:
        print(f"bench.randread: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        for dev in (b, a):
            dev.unmount()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    read_bytes = args.reads * piece
    print(f"{args.reads} random reads of {args.read_kib} KiB of a {args.size_mib} MiB file on a"
          " device without its content")
    print(f"{'':28}{'p50':>10}{'mean':>10}")
    for label, seconds in (("B (Loft)", loft), ("raw HTTP GET (baseline)", raw)):
        print(f"{label:28}{statistics.median(seconds) * 1000:8.2f} ms"
              f"{statistics.fmean(seconds) * 1000:8.2f} ms")
    print(f"Loft / raw, p50: {statistics.median(loft) / statistics.median(raw):.1f}x")
    if fetched_before is not None and fetched_after is not None:
        fetched = fetched_after - fetched_before
        print(f"bytes fetched: {fetched / KiB:.0f} KiB for {read_bytes / KiB:.0f} KiB read"
              f" ({fetched / read_bytes:.1f}x)")
    print(f"chunk cache growth: {cached / KiB:.0f} KiB")


if __name__ == "__main__":
    main()
