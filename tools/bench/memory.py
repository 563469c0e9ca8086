"""The mount's resident memory: writing a large file, and holding many files.

    python -m tools.bench.memory [--size-mib 1024] [--files 100000]

A fresh embedded-default server and one device. The benchmark reports the mount
process's resident set (``VmRSS``) and its peak (``VmHWM``, reset through
``/proc/PID/clear_refs`` before each phase) in MiB:

* idle, just mounted on an empty workspace (the baseline: the interpreter, the
  libraries and the cache's maps before any work);
* writing SIZE MiB in 1 MiB ``write``s, ``fsync``, ``close``, until the journal is
  empty (the file is sealed into the cache and uploaded);
* catching up with FILES files: the mount is stopped, FILES small files in 100
  folders are committed through the API (as other devices would have made them),
  the mount starts again and brings them in (until ``status.json`` shows its
  cursor at the last commit);
* holding them: ``ls -lR`` looks at every file; the peak and the resident set once
  it is done, and 2 s later.

The targets are absolute (200 MiB writing 1 GiB, 150 MiB holding 100,000 files); the
idle figure shows how much of each is the phase's own. Everything started is stopped
and removed at the end; a failed step prints one line and exits 1. Needs ``/dev/fuse``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from backend import protocol as p
from backend.cursor import Position, reached
from tools.bench.edits import one_device
from tools.bench.mount import BenchError, Device, MiB, step, wait_for, write_file
from tools.localserver import LocalServer

FOLDERS = 100
BATCH = 5000
"""Operations per commit while filling the workspace."""
PACK = 1000
"""Chunks per upload while filling it."""


def memory_mib(pid: int) -> dict[str, float]:
    """``VmRSS``, ``VmHWM``, ``RssAnon`` and ``RssFile`` of a live process, in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            found[key] = int(value.split()[0]) / 1024
    return found


def reset_peak(pid: int) -> None:
    """Start ``VmHWM`` again from the current resident set (``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5\n")


async def _fill(server: LocalServer, token: str, ns: int, files: int) -> Position:
    """``files`` small files in ``FOLDERS`` folders, each with content of its own; the
    feed position of the last commit."""
    async with server.client(token) as client:
        folders = [p.new_id() for _ in range(FOLDERS)]
        await client.commit(ns, [
            {"op": "mkdir", "op_id": p.new_id(), "entry": eid, "parent": p.ROOT_ID,
             "name": f"d{i:03}"} for i, eid in enumerate(folders)])
        for start in range(0, files, BATCH):
            ops: list[dict[str, Any]] = []
            chunks: list[tuple[str, bytes]] = []
            for i in range(start, min(files, start + BATCH)):
                data = f"file {i}\n".encode()
                cid = p.chunk_id(data)
                chunks.append((cid, data))
                ops.append({"op": "create", "op_id": p.new_id(), "entry": p.new_id(),
                            "parent": folders[i % FOLDERS], "name": f"f{i:06}.txt",
                            "kind": "file", "blocks": [[cid, len(data)]], "size": len(data)})
            for first in range(0, len(chunks), PACK):
                await client.put_chunks(chunks[first : first + PACK])
            answer = await client.commit(ns, ops)
        head: Position = answer["seq"]
        return head


def listed_files(mountpoint: Path) -> int:
    """``ls -lR`` of the mount; the number of regular files it showed."""
    out = subprocess.run(["ls", "-lR", str(mountpoint)], capture_output=True, text=True,
                         check=False, timeout=1800)
    if out.returncode != 0:
        raise BenchError(f"ls -lR: {out.stderr.strip().splitlines()[-1:]}")
    return sum(1 for line in out.stdout.splitlines() if line.startswith("-"))


def caught_up(device: Device, head: Position) -> bool:
    """Whether the mount's ``status.json`` shows its cursor at ``head`` or past it."""
    cursor = (device.status() or {}).get("cursor")
    return isinstance(cursor, int | str) and reached(cursor, head)


def until_uploaded(device: Device, since_ns: int) -> None:
    wait_for(lambda: device.pending(since_ns) == 0, 1800, "the journal to drain", every=0.05)


def run(work: Path, size_mib: int, files: int) -> list[tuple[str, dict[str, float], float]]:
    rows: list[tuple[str, dict[str, float], float]] = []
    with one_device(work) as (server, device):
        time.sleep(1.0)
        rows.append(("idle, empty workspace", memory_mib(device.pid()), 0.0))
        payload = bytearray(size_mib * MiB)
        for offset in range(0, len(payload), 16 * MiB):
            payload[offset : offset + 16 * MiB] = os.urandom(min(16 * MiB, len(payload) - offset))
        with step(f"writing {size_mib} MiB until uploaded"):
            reset_peak(pid := device.pid())
            start = time.perf_counter()
            since = time.time_ns()
            write_file(device.mountpoint / "big.bin", payload)
            until_uploaded(device, since)
            rows.append((f"writing {size_mib} MiB until uploaded", memory_mib(pid),
                         time.perf_counter() - start))
        del payload
        with step("unmounting"):
            device.unmount()
            shutil.rmtree(device.mountpoint)
        info = json.loads((device.home / "device.json").read_text())
        with step(f"committing {files} files through the API"):
            head = trio.run(_fill, server, info["token"], info["root_ns"], files)
        with step(f"mounting again, catching up with {files} files"):
            device.mount()
            reset_peak(pid := device.pid())
            start = time.perf_counter()
            wait_for(lambda: caught_up(device, head), 1800, "the catch-up", every=0.1)
            rows.append((f"catching up with {files} files", memory_mib(pid),
                         time.perf_counter() - start))
        with step(f"listing {files} files"):
            reset_peak(pid)
            start = time.perf_counter()
            seen = listed_files(device.mountpoint)
            if seen != files + 1:
                raise BenchError(f"ls -lR showed {seen} files, expected {files + 1}")
            rows.append((f"holding {files} files (ls -lR)", memory_mib(pid),
                         time.perf_counter() - start))
            time.sleep(2.0)
            rows.append(("... 2 s after", memory_mib(pid), 0.0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="loft-bench-memory-"))
    try:
        rows = run(work, args.size_mib, args.files)
    except BenchError as err:
        print(f"bench.memory: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("The mount's memory (MiB)")
    print(f"{'phase':<40} {'seconds':>8} {'peak':>6} {'resident':>9} {'anon':>6} {'file':>6}")
    for label, mem, took in rows:
        print(f"{label:<40} {took:>8.1f} {mem['VmHWM']:>6.0f} {mem['VmRSS']:>9.0f}"
              f" {mem['RssAnon']:>6.0f} {mem['RssFile']:>6.0f}")


if __name__ == "__main__":
    main()
