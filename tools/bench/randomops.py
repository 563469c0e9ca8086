"""Several processes doing random operations on files of tens of MiB at once: local
disk, the in-memory pyfuse3 filesystem (``tools.bench.memfs``) and a Loft mount, in
the same run.

    python -m tools.bench.randomops [--procs 4] [--ops 500] [--size-mib 24] [--files 3]

Each process owns a folder of FILES files of SIZE MiB of random bytes (made, and in
Loft uploaded, before the clock starts) and does OPS operations chosen from a fixed
seed: ``pwrite`` of 1 to 64 KiB at a random offset (60 %), ``ftruncate`` to between
half and one and a half times the first size (15 %), ``rename`` of one of its files
to a fresh name (15 %), ``close`` and ``open`` again (10 %: in Loft a close makes a
version). The figure is the wall time from starting the processes until the last one
has closed its files: what the programs wait for. In Loft a close of these files parks
them (``fs.parking``: durable at once, sealed into a version in the background), so a
second figure follows: until every change is sealed and uploaded (read from
``status.json``, written once a second).
Everything is unmounted, stopped and removed at the end, on failure too; a failed
step prints one line and exits 1. Needs ``/dev/fuse``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench.edits import cleanup, one_device, write_random
from tools.bench.latency import uploaded_since
from tools.bench.mount import BenchError, memfs_mounted, step, wait_for
from tools.localserver import ROOT

KiB, MiB = 1 << 10, 1 << 20
UPLOAD_TIMEOUT = 900.0


def worker(folder: Path, seed: int, ops: int) -> None:
    """One process's operations on the files of ``folder``."""
    rng = random.Random(seed)
    names = sorted(p.name for p in folder.iterdir())
    first = (folder / names[0]).stat().st_size
    fds = {name: os.open(folder / name, os.O_RDWR) for name in names}
    renamed = 0
    for _ in range(ops):
        name = rng.choice(names)
        fd = fds[name]
        roll = rng.random()
        if roll < 0.60:
            size = os.fstat(fd).st_size
            os.pwrite(fd, rng.randbytes(rng.randint(1, 64 * KiB)), rng.randint(0, size))
        elif roll < 0.75:
            os.ftruncate(fd, rng.randint(first // 2, first * 3 // 2))
        elif roll < 0.90:
            renamed += 1
            new = f"{name.split('~')[0]}~{renamed}"
            os.rename(folder / name, folder / new)
            names[names.index(name)] = new
            fds[new] = fds.pop(name)
        else:
            os.close(fd)
            fds[name] = os.open(folder / name, os.O_RDWR)
    for fd in fds.values():
        os.close(fd)


def prepare(root: Path, procs: int, files: int, size: int) -> list[Path]:
    folders = []
    for proc in range(procs):
        folder = root / f"p{proc}"
        folder.mkdir()
        for index in range(files):
            write_random(folder / f"f{index}", size, seed=proc * 100 + index)
        folders.append(folder)
    return folders


def run(folders: list[Path], ops: int) -> float:
    """Seconds for every worker to finish."""
    start = time.perf_counter()
    workers = [
        subprocess.Popen([sys.executable, "-m", "tools.bench.randomops", "--worker",
                          str(folder), str(seed), str(ops)], cwd=ROOT)
        for seed, folder in enumerate(folders)
    ]
    codes = [w.wait(timeout=3600) for w in workers]
    seconds = time.perf_counter() - start
    if any(codes):
        raise BenchError(f"a worker failed: exit codes {codes}")
    return seconds


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--size-mib", type=int, default=24)
    parser.add_argument("--files", type=int, default=3)
    args = parser.parse_args()
    shape = (args.procs, args.files, args.size_mib * MiB)
    work = Path(tempfile.mkdtemp(prefix="loft-bench-randomops-"))
    seconds: dict[str, float] = {}
    try:
        with step("local disk"):
            (work / "local").mkdir()
            seconds["local"] = run(prepare(work / "local", *shape), args.ops)
            shutil.rmtree(work / "local")
        (work / "mnt-memfs").mkdir()
        with memfs_mounted(work / "mnt-memfs", work / "memfs.log", cleanup) as _, step("memfs"):
            seconds["memfs"] = run(prepare(work / "mnt-memfs", *shape), args.ops)
        with one_device(work) as (_, a):
            with step("loft: the files made and uploaded"):
                folders = prepare(a.mountpoint, *shape)
                closed = time.time_ns()
                wait_for(uploaded_since(a, closed), UPLOAD_TIMEOUT, "the upload")
            with step("loft"):
                started = time.perf_counter()
                seconds["loft"] = run(folders, args.ops)
                closed = time.time_ns()
                wait_for(uploaded_since(a, closed), UPLOAD_TIMEOUT, "the upload")
                uploaded = time.perf_counter() - started
    except BenchError as exc:
        print(f"bench.randomops: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.procs} processes x {args.ops} random operations, {args.files} files of"
          f" {args.size_mib} MiB each")
    for target, value in seconds.items():
        print(f"{target:8} {value:8.2f} s")
    print(f"loft, until sealed and uploaded: {uploaded:.1f} s")
    print(f"loft/memfs {seconds['loft'] / seconds['memfs']:.1f}x,"
          f" loft/local {seconds['loft'] / seconds['local']:.1f}x")


if __name__ == "__main__":
    main()
