"""Browsing long histories in a Loft mount: how long ``ls`` takes under ``.versions``.

    python -m tools.bench.history [--versions 10000] [--commits 100000] [--years 3]

A fresh embedded-default server gets a namespace whose journal holds COMMITS
sequences: VERSIONS versions of one file (``/docs/plan.txt``), the rest spread over
100 other files, committed through the API in batches; then the commit times are
spread evenly over the last YEARS years (one write to the server's SQLite file, as
years of use would have left them). Device A mounts the workspace, and the benchmark
times, cold (first listing) and warm (again at once):

* ``ls -l docs/.versions/plan.txt``: every version of the file;
* ``ls /.versions``: ``latest``, snapshots and the days with commits;
* ``ls -l /.versions/<a day>``: the instants of one day;
* ``ls -l /.versions/<an instant>/docs``: a folder as it was years ago.

Baseline, measured in the same run: ``ls -l`` of a local directory holding as many
files as the file has versions. Everything started is stopped and removed at the end;
a failed step prints one line and exits 1. Needs ``/dev/fuse``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from backend import protocol as p
from tools.bench.mount import BenchError, Device
from tools.localserver import LocalServer, Stores

BATCH = 1000


def _op(kind: str, /, **fields: Any) -> dict[str, Any]:
    return {"op": kind, "op_id": p.new_id(), **fields}


async def _fill(server: LocalServer, token: str, ns: int, versions: int, commits: int) -> None:
    """The history: ``versions`` updates of ``/docs/plan.txt`` and the rest of
    ``commits`` spread over 100 other files, ``BATCH`` operations a commit."""
    async with server.client(token) as client:
        answer = await client.commit(ns, [_op("mkdir", entry=(docs := p.new_id()),
                                              parent=p.ROOT_ID, name="docs")])
        files = [p.new_id() for _ in range(101)]
        answer = await client.commit(ns, [
            _op("create", entry=eid, parent=docs, name="plan.txt" if i == 0 else f"f{i:03}.txt",
                kind="file", blocks=[], size=0) for i, eid in enumerate(files)])
        revs = {r["entry"]: r["rev"] for r in answer["results"]}
        head = max(revs.values())
        todo = [files[0]] * versions + [files[1 + i % 100] for i in range(commits - versions)]
        for start in range(0, len(todo), BATCH):
            ops = []
            for eid in todo[start : start + BATCH]:
                ops.append(_op("setattr", entry=eid, base=revs[eid], mtime=head * 10**9))
                head += 1
                revs[eid] = head
            await client.commit(ns, ops)


def _spread(db: Path, years: float) -> None:
    """Commit times evenly over the last ``years`` years, in sequence order."""
    now = int(time.time())
    with sqlite3.connect(db) as conn:
        top = conn.execute("SELECT MAX(seq) FROM versions").fetchone()[0]
        step = max(1, int(years * 365 * 86_400 / top))
        conn.execute("UPDATE versions SET committed = ? - (? - seq) * ?", (now, top, step))


def _ls(*args: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(["ls", *args], capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"ls {' '.join(args)}: {result.stderr.strip()}")
    return took, len(result.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=100_000)
    parser.add_argument("--years", type=float, default=3.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loft-bench-history-"))
    server = LocalServer(Stores(work / "server" / "data"))
    device = Device("A", work / "home-a", work / "mnt-a")
    try:
        server.start()
        server.add_user("bench")
        server.login("bench", device.home, device="A")
        info = json.loads((device.home / "device.json").read_text())
        start = time.perf_counter()
        trio.run(_fill, server, info["token"], info["root_ns"], args.versions, args.commits)
        print(f"history: {args.commits} sequences committed in"
              f" {time.perf_counter() - start:.1f} s", file=sys.stderr)
        _spread(work / "server" / "data" / "metadata.db", args.years)
        local = work / "local"
        local.mkdir()
        for i in range(args.versions):
            (local / f"v{i:05}").write_bytes(b"")
        device.mount()
        m = device.mountpoint
        days = sorted(os.listdir(m / ".versions"))
        day = days[len(days) // 2]
        instant = sorted(os.listdir(m / ".versions" / day))[0]
        rows: list[tuple[str, list[str]]] = [
            ("ls -l (local, VERSIONS files)", ["-l", str(local)]),
            ("ls -l docs/.versions/plan.txt", ["-l", str(m / "docs/.versions/plan.txt")]),
            ("ls /.versions", [str(m / ".versions")]),
            (f"ls -l /.versions/{day}", ["-l", str(m / ".versions" / day)]),
            (f"ls -l /.versions/{instant}/docs", ["-l", str(m / ".versions" / instant / "docs")]),
        ]
        print(f"Listing history: {args.commits} sequences over {args.years:g} years,"
              f" {args.versions} versions of one file; {os.cpu_count()} cores")
        print(f"{'listing':<48} {'entries':>8} {'cold':>9} {'warm':>9}")
        for label, argv in rows:
            cold, count = _ls(*argv)
            warm, _ = _ls(*argv)
            label = label.replace("VERSIONS", str(args.versions))
            print(f"{label:<48} {count:>8} {cold * 1000:>7.0f}ms {warm * 1000:>7.0f}ms")
    except BenchError as err:
        print(f"bench.history: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        device.unmount()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
