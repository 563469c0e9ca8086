"""Put and get of a large file, beside raw loopback HTTP of the same bytes.

    python -m tools.bench.transfer [--size-mib 1024] [--dir DIR]

Runs, in one go and on this machine: (1) the baseline, ``tools.bench.rawhttp``,
sending and fetching the same number of bytes in 1 MiB requests over 6 connections
(Loft's mean chunk size and parallelism); (2) ``loft put`` of a random file to a
fresh embedded-default server, (3) ``loft put`` of the same content again (dedup:
nothing to send), (4) ``loft get`` of it. Prints MB/s (10^6 bytes per second) and the
ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench.rawhttp import measure
from tools.localserver import ROOT, LocalServer, Stores, loft_argv, loft_env

MiB = 1024 * 1024


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            piece = min(left, 16 * MiB)
            f.write(os.urandom(piece))
            left -= piece


def timed(*args: str, home: Path) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one ``loft`` command."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        loft_argv(*args),
        env=loft_env(home),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        error = proc.stderr.read().decode() if proc.stderr else ""
        sys.exit(f"loft {' '.join(args)} failed: {error.strip()}")
    return elapsed, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", help="work directory (default: a temp dir)")
    args = parser.parse_args()
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        src = work / "payload.bin"
        write_random(src, size)

        raw_put, raw_get = measure(size)

        server = LocalServer(Stores(work / "server"))
        server.start()
        try:
            server.add_user("bench")
            home = work / "home"
            server.login("bench", home)
            put, put_rss = timed("put", str(src), "/payload.bin", home=home)
            again, _ = timed("put", str(src), "/copy.bin", home=home)
            get, get_rss = timed("get", "/payload.bin", str(work / "back.bin"), home=home)
        finally:
            server.stop()
        if subprocess.run(["cmp", "-s", str(src), str(work / "back.bin")]).returncode:
            sys.exit("get returned different bytes")

    def rate(seconds: float) -> float:
        return float(size / seconds / 1e6)

    print(f"transfer of {args.size_mib} MiB over loopback ({os.cpu_count()} cores)")
    print(f"{'case':<34}{'seconds':>9}{'MB/s':>9}{'vs raw':>9}")
    rows = [
        ("raw HTTP PUT (baseline)", raw_put, raw_put),
        ("loft put (new content)", put, raw_put),
        ("loft put (same content again)", again, raw_put),
        ("raw HTTP GET (baseline)", raw_get, raw_get),
        ("loft get", get, raw_get),
    ]
    for name, seconds, base in rows:
        print(f"{name:<34}{seconds:>9.2f}{rate(seconds):>9.0f}{base / seconds:>9.2f}")
    print(f"peak RSS of loft put: {put_rss / MiB:.0f} MiB, of loft get: {get_rss / MiB:.0f} MiB")


if __name__ == "__main__":
    main()
