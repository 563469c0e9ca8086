"""Latency of FUSE requests while a Loft mount does heavy background work.

    python -m tools.bench.latency [--size 1G] [--cache-size 256M] [--idle 5] [--json FILE]

A prober process stats a small file in a tight loop and times each call, while this
process makes the file system busy. Each call is ``statx(AT_STATX_FORCE_SYNC)``: one
GETATTR request that the file system itself must answer (a plain ``stat()`` is
answered by the kernel's attribute cache, which Loft and memfs keep for 5 s, so
almost none of them would reach the mount; ``--probe stat`` measures that instead).
The samples are cut into phases by time:

* local disk and ``tools.bench.memfs`` (the most Python FUSE does here), the
  baselines: ``idle``; ``write`` of SIZE bytes in 1 MiB ``write``s; its ``close``;
* a Loft mount (device A of a fresh embedded-default server, mounted with
  ``--cache-size CACHE``): ``idle``; ``write`` and ``close`` of a new SIZE file (the
  close parks it, ``fs.parking``; the seal, which cuts it into chunks and stores them
  in the LMDB cache, follows in the background); ``upload``, from the close until
  ``status.json`` shows nothing pending (the seal included); ``evict``, from then
  until the chunk cache is back under CACHE; ``cold read`` of another SIZE file,
  put on the server beforehand by a second device, through the small cache (every
  chunk fetched, cached and soon evicted again).

Prints, per target and phase, the seconds it lasted, the number of samples, p50, p99
and max latency, the samples of 10 ms or more, and p99 over memfs's idle p99 (how
much slower than the best a Python FUSE request does here). ``write+close`` is both
phases together. The cache use the mount reported along the way is printed too.
Every process it starts is stopped by its pid at the end and the work directory is
removed, on failure too; a failed step prints one line and the benchmark exits 1.
Needs ``/dev/fuse``. Runs the code it is started from: ``cd CHECKOUT &&
PYTHONPATH=CHECKOUT python -m tools.bench.latency``; the server, the mount and the
memfs run there too (the report names the directory they ran in).
"""

from __future__ import annotations

import argparse
import array
import bisect
import contextlib
import ctypes
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.mount import (
    BenchError,
    Device,
    cpu_seconds,
    machine_share,
    mounts_under,
    note,
    share_line,
    step,
    stop_memfs,
    wait_for,
)
from tools.localserver import ROOT, LocalServer, Stores, loft

MiB = 1 << 20
AT_FDCWD = -100
AT_STATX_FORCE_SYNC = 0x2000
STATX_BASIC_STATS = 0x7FF
SLOW_NS = 10_000_000
"""A sample this long or longer counts as slow (10 ms)."""
SYNC_TIMEOUT = 300.0
"""Seconds, on top of one per MiB, that uploading or evicting may take."""
PHASES = ("idle", "write", "close", "write+close", "upload", "evict", "cold read")


# --- the prober (a child process) ----------------------------------------------------


def probe_child(path: str, mode: str, interval: float, out: str) -> None:
    """Time ``stat`` of ``path`` until stdin closes; then write the samples to ``out``.

    A sample is two int64: the start (``CLOCK_MONOTONIC`` ns, comparable between
    processes) and the duration in ns, or ``-errno`` when the call failed. Prints
    ``ready`` after the first sample.
    """
    stopped = threading.Event()

    def wait_eof() -> None:
        sys.stdin.buffer.read()
        stopped.set()

    threading.Thread(target=wait_eof, daemon=True).start()
    raw = path.encode()
    if mode == "statx":
        libc = ctypes.CDLL(None, use_errno=True)
        statx = libc.statx
        statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint]
        statx.argtypes += [ctypes.c_void_p]
        buf = ctypes.create_string_buffer(256)

        def once() -> int:
            if statx(AT_FDCWD, raw, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, buf) == 0:
                return 0
            return max(1, ctypes.get_errno())

    else:

        def once() -> int:
            try:
                os.stat(raw)
            except OSError as exc:
                return max(1, exc.errno or 1)
            return 0

    samples = array.array("q")
    clock, append, is_set = time.monotonic_ns, samples.append, stopped.is_set
    first = True
    while not is_set():
        start = clock()
        err = once()
        end = clock()
        append(start)
        append(-err if err else end - start)
        if first:
            print("ready", flush=True)
            first = False
        if interval:
            time.sleep(interval)
    with open(out, "wb") as f:
        samples.tofile(f)


@dataclass
class Prober:
    """The prober process for one target, and its samples once stopped."""

    target: Path
    out: Path
    mode: str
    interval: float
    proc: subprocess.Popen[bytes] | None = None
    starts: array.array[int] = field(default_factory=lambda: array.array("q"))
    durations: array.array[int] = field(default_factory=lambda: array.array("q"))

    def start(self) -> None:
        argv = [sys.executable, "-m", "tools.bench.latency", "--probe-child", str(self.target)]
        argv += ["--probe-out", str(self.out), "--probe", self.mode]
        argv += ["--interval", str(self.interval)]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise BenchError(f"the prober did not start (exit {self.proc.returncode})")

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError("the prober died")

    def stop(self) -> None:
        """Close its stdin, wait for it to write its samples; by pid if it hangs."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError("the prober did not stop within 120 s") from None
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.returncode != 0:
            raise BenchError(f"the prober exited {proc.returncode}")
        raw = array.array("q")
        with open(self.out, "rb") as f:
            raw.frombytes(f.read())
        self.starts, self.durations = raw[0::2], raw[1::2]
        self.out.unlink()


def child_env() -> dict[str, str]:
    """This process's environment, with ``ROOT`` first on ``PYTHONPATH``."""
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    return dict(os.environ, PYTHONPATH=":".join(dict.fromkeys(paths)))


# --- figures ---------------------------------------------------------------------------


def nearest_rank(ordered: list[int], q: float) -> int:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Phase:
    target: str
    name: str
    start: int
    end: int
    samples: list[int] = field(default_factory=list)
    errors: int = 0

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / 1e9

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.samples)
        out: dict[str, Any] = {
            "target": self.target,
            "phase": self.name,
            "seconds": round(self.seconds, 3),
            "n": len(ordered),
            "errors": self.errors,
        }
        if ordered:
            for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
                out[f"{key}_us"] = nearest_rank(ordered, q) / 1000
            out["max_us"] = ordered[-1] / 1000
            out["mean_us"] = round(sum(ordered) / len(ordered) / 1000, 3)
            out["slow"] = sum(1 for d in ordered if d >= SLOW_NS)
            out["slow_seconds"] = round(sum(d for d in ordered if d >= SLOW_NS) / 1e9, 3)
        return out


def cut(prober: Prober, target: str, bounds: list[tuple[str, int, int]]) -> list[Phase]:
    """The prober's samples by phase: each sample in the phase it started in."""
    phases = []
    for name, start, end in bounds:
        lo = bisect.bisect_left(prober.starts, start)
        hi = bisect.bisect_left(prober.starts, end)
        durations = prober.durations[lo:hi]
        phase = Phase(target, name, start, end, [d for d in durations if d >= 0])
        phase.errors = len(durations) - len(phase.samples)
        phases.append(phase)
    return phases


# --- workloads -------------------------------------------------------------------------


def make_payload(size: int) -> bytearray:
    payload = bytearray(size)
    for offset in range(0, size, 64 * MiB):
        piece = min(64 * MiB, size - offset)
        payload[offset : offset + piece] = os.urandom(piece)
    return payload


def write_then_close(path: Path, payload: bytearray) -> tuple[int, int, int]:
    """Write ``payload`` in 1 MiB ``write``s, then ``close``; monotonic ns at the start,
    before the close and after it."""
    view = memoryview(payload)
    start = time.monotonic_ns()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, len(payload), MiB):
            piece = view[offset : offset + MiB]
            while piece:
                piece = piece[os.write(fd, piece) :]
        written = time.monotonic_ns()
    finally:
        os.close(fd)
    return start, written, time.monotonic_ns()


def read_check(path: Path, payload: bytearray) -> None:
    buf = bytearray(MiB)
    view = memoryview(buf)
    offset = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            if not payload.startswith(view[:n], offset):
                raise BenchError(f"{path}: the bytes read differ from those put near {offset}")
            offset += n
    if offset != len(payload):
        raise BenchError(f"{path}: read {offset} bytes, put {len(payload)}")


def idle(seconds: float, prober: Prober) -> tuple[int, int]:
    start = time.monotonic_ns()
    time.sleep(seconds)
    prober.check()
    return start, time.monotonic_ns()


# --- the run -----------------------------------------------------------------------------


@dataclass
class Run:
    work: Path
    size: int
    cache_size: int
    idle: float
    probe: str
    interval: float
    payload: bytearray = field(default_factory=bytearray)
    remote: bytearray = field(default_factory=bytearray)
    phases: list[Phase] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    procs: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    unwaited_cpu: float = 0.0
    """CPU seconds of the Loft mount (not a child this process waits for)."""
    cleanup_failed: bool = False

    def cleanup(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            print(f"bench.latency: cleanup: {what}: {exc}", file=sys.stderr)
            self.cleanup_failed = True

    @contextlib.contextmanager
    def prober(self, target: str, path: Path) -> Iterator[Prober]:
        prober = Prober(path, self.work / f"samples-{target}.bin", self.probe, self.interval)
        with step(f"{target}: starting the prober"):
            prober.start()
        try:
            yield prober  # the block stops it, to collect the samples
        finally:
            if prober.proc is not None:  # the block failed
                self.cleanup(f"stop the {target} prober", prober.stop)

    def baseline(self, target: str, root: Path) -> None:
        probe = root / "probe.txt"
        probe.write_bytes(b"a small file, stat in a loop\n")
        with self.prober(target, probe) as prober:
            note(f"{target}: idle, {self.idle:.0f} s")
            t0, t1 = idle(self.idle, prober)
            with step(f"{target}: write and close of {self.size // MiB} MiB"):
                w0, w1, w2 = write_then_close(root / "big.bin", self.payload)
            time.sleep(0.2)
            prober.stop()
        self.phases += cut(
            prober,
            target,
            [("idle", t0, t1), ("write", w0, w1), ("close", w1, w2), ("write+close", w0, w2)],
        )
        (root / "big.bin").unlink()
        probe.unlink()


def bench_local(run: Run) -> None:
    root = run.work / "local"
    root.mkdir()
    run.baseline("local", root)
    shutil.rmtree(root)


def bench_memfs(run: Run) -> None:
    mountpoint = run.work / "mnt-memfs"
    mountpoint.mkdir()
    log = run.work / "memfs.log"
    with contextlib.ExitStack() as stack:
        with step("memfs: mounting"), open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tools.bench.memfs", str(mountpoint)],
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            stack.callback(run.cleanup, "stop memfs", lambda: stop_memfs(proc, mountpoint))
            wait_for(
                lambda: os.path.ismount(mountpoint) or proc.poll() is not None, 30, "memfs mount"
            )
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines() or ["no output"]
                raise BenchError(f"memfs did not mount: {tail[-1]}")
        run.procs["memfs"] = where(proc.pid)
        run.baseline("memfs", mountpoint)


def where(pid: int) -> str:
    """The directory a process runs in, and the ``PYTHONPATH`` it was given."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError as exc:
        return f"pid {pid}: {exc}"
    path = next((e[11:].decode() for e in env if e.startswith(b"PYTHONPATH=")), "")
    return f"pid {pid}, cwd {cwd}, PYTHONPATH={path or '(unset)'}"


class StatusTrace:
    """A thread that records each new ``status.json`` of a mount, with its time."""

    def __init__(self, device: Device, into: list[dict[str, Any]]) -> None:
        self.device, self.into = device, into
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seen = 0
        path = self.device.home / "status.json"
        while not self.stopped.wait(0.2):
            with contextlib.suppress(OSError, ValueError):
                mtime = path.stat().st_mtime_ns
                if mtime != seen:
                    status = json.loads(path.read_text())
                    seen = mtime
                    self.into.append({"t_ns": time.monotonic_ns(), **status})

    def __enter__(self) -> StatusTrace:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)


def status_since(device: Device, since_ns: int, check: Callable[[dict[str, Any]], bool]) -> bool:
    status = device.status(since_ns)
    return status is not None and check(status)


def uploaded_since(device: Device, closed_ns: int) -> Callable[[], bool]:
    """A check: ``status.json`` shows nothing pending (no change to upload, no file
    parked to seal), for the first time since the close.

    The mount computes a status a moment before it writes it: one written just after
    the close may predate it. So the check trusts "nothing pending" only after it has
    seen something pending since the close, or in a status written 2.5 s after it.
    """
    path = device.home / "status.json"
    seen_pending = False

    def check() -> bool:
        nonlocal seen_pending
        try:
            written = path.stat().st_mtime_ns
        except OSError:
            return False
        status = device.status(closed_ns)
        if status is None:
            return False
        if status["pending_ops"] or status["pending_bytes"] or status.get("parked"):
            seen_pending = True
            return False
        return seen_pending or written >= closed_ns + 2_500_000_000

    return check


def last_commit(device: Device, since_wall_ns: int, until_ns: int) -> int | None:
    """Monotonic ns of the last "committed" line in the mount's log between the two
    times (the log's timestamps are local wall time, to the millisecond)."""
    offset = time.time_ns() - time.monotonic_ns()
    found = None
    try:
        lines = (device.home / "mount.log").read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if " INFO committed " not in line:
            continue
        try:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue
        wall = int(stamp.timestamp() * 1e9)
        if since_wall_ns - 1_000_000 <= wall <= until_ns + offset:
            found = wall - offset
    return found


def mount_device(device: Device, cache_size: int) -> None:
    device.mountpoint.mkdir()
    result = loft(
        "mount", str(device.mountpoint), "--cache-size", str(cache_size), home=device.home,
        timeout=120,
    )  # fmt: skip
    if result.returncode != 0:
        raise BenchError(f"loft mount (device {device.name}): {result.stderr.strip()}")


def bench_loft(run: Run) -> None:
    timeout = SYNC_TIMEOUT + run.size / MiB
    with contextlib.ExitStack() as stack:
        server = LocalServer(Stores(run.work / "server" / "data"))
        stack.callback(run.cleanup, "stop the server", server.stop)
        with step("loft: starting a server"):
            server.start()
        assert server.proc is not None
        run.procs["server"] = where(server.proc.pid)
        a = Device("A", run.work / "home-a", run.work / "mnt-a")
        other = run.work / "home-u"
        with step("loft: adding a user, logging in device A and an uploader"):
            server.add_user("bench")
            server.login("bench", a.home, device="A")
            server.login("bench", other, device="U")
        with step(f"loft: putting a {run.size // MiB} MiB file on the server (device U)"):
            local = run.work / "remote.bin"
            local.write_bytes(run.remote)
            result = loft("put", str(local), "/remote.bin", home=other, timeout=timeout)
            if result.returncode != 0:
                raise BenchError(f"loft put: {result.stderr.strip()}")
            local.unlink()
        stack.callback(run.cleanup, "unmount device A", a.unmount)
        with step(f"loft: mounting device A, --cache-size {run.cache_size // MiB}M"):
            mount_device(a, run.cache_size)
        run.procs["loft mount"] = where(a.pid())
        probe = a.mountpoint / "probe.txt"
        with step("loft: creating the small file, waiting until A is idle"):
            probe.write_bytes(b"a small file, stat in a loop\n")
            made = time.time_ns()
            wait_for(
                lambda: status_since(a, made, lambda s: s["online"] and s["pending_ops"] == 0),
                timeout,
                "A online with nothing pending",
                every=0.1,
            )
            if not (a.mountpoint / "remote.bin").exists():
                raise BenchError("remote.bin is not in A's tree")
        with StatusTrace(a, run.trace), run.prober("loft", probe) as prober:
            bounds = loft_phases(run, a, prober, timeout)
            prober.stop()
        run.phases += cut(prober, "loft", bounds)
        mount_cpu = cpu_seconds(a.pid())  # the mount, started during this target
        run.unwaited_cpu = 0.0 if math.isnan(mount_cpu) else mount_cpu
        with step("loft: loft status"):
            result = loft("status", home=a.home, timeout=60)
            line = next((x for x in result.stdout.splitlines() if x.startswith("cache:")), "")
            run.notes.append(f"`loft status` at the end: {line or result.stderr.strip()}")


def loft_phases(run: Run, a: Device, prober: Prober, timeout: float) -> list[tuple[str, int, int]]:
    note(f"loft: idle, {run.idle:.0f} s")
    t0, t1 = idle(run.idle, prober)
    with step(f"loft: write and close of {run.size // MiB} MiB"):
        w0, w1, w2 = write_then_close(a.mountpoint / "big.bin", run.payload)
    closed = time.time_ns()
    with step("loft: waiting until uploaded (status.json: nothing pending)"):
        wait_for(uploaded_since(a, closed), timeout, "upload", every=0.05)
        u1 = time.monotonic_ns()
    with step(f"loft: waiting until the cache is back under {run.cache_size // MiB} MiB"):
        wait_for(
            lambda: status_since(a, closed, lambda s: s["bytes"] <= run.cache_size),
            timeout,
            "eviction",
            every=0.05,
        )
        e1 = time.monotonic_ns()
    # The upload ends with the commit the mount logs; the chunks become evictable then,
    # and the flusher evicts them within a second: status.json is too coarse for that.
    committed = last_commit(a, closed, u1)
    if committed is None:
        run.notes.append("no commit line in A's log: upload/evict split at status.json time")
        committed = u1
    e1 = max(e1, committed)
    prober.check()
    with step(f"loft: cold read of the {run.size // MiB} MiB file put by device U"):
        r0 = time.monotonic_ns()
        read_check(a.mountpoint / "remote.bin", run.remote)
        r1 = time.monotonic_ns()
    time.sleep(0.2)
    prober.check()
    return [
        ("idle", t0, t1),
        ("write", w0, w1),
        ("close", w1, w2),
        ("write+close", w0, w2),
        ("upload", w2, committed),
        ("evict", committed, e1),
        ("cold read", r0, r1),
    ]


# --- the report ----------------------------------------------------------------------------


def duration(us: float | None) -> str:
    if us is None:
        return "—"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1e6:.2f} s"


def cache_notes(run: Run) -> None:
    """Cache bytes as the mount reported them (``status.json``) around the phases."""
    loft = {p.name: p for p in run.phases if p.target == "loft"}
    if not run.trace or "cold read" not in loft:
        return
    close, commit = loft["close"].end, loft["upload"].end
    read = loft["cold read"]

    def mib(s: dict[str, Any] | None) -> str:
        if s is None:
            return "—"
        return f"{s['bytes'] / MiB:.0f} MiB ({s['pending_bytes'] / MiB:.0f} pending)"

    def first(check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((s for s in run.trace if check(s)), None)

    before = [s for s in run.trace if s["t_ns"] <= commit]
    during = [s["bytes"] for s in run.trace if read.start <= s["t_ns"] <= read.end]
    peak = f"up to {max(during) / MiB:.0f} MiB" if during else "no status written"
    run.notes.append(
        f"loft cache (status.json, rewritten each second; cap {run.cache_size // MiB} MiB):"
        f" first after the close {mib(first(lambda s: s['t_ns'] >= close))},"
        f" last before the upload's commit {mib(before[-1] if before else None)},"
        f" first under the cap after it"
        f" {mib(first(lambda s: s['t_ns'] >= commit and s['bytes'] <= run.cache_size))};"
        f" during the cold read {peak}; at the end {mib(run.trace[-1])}"
    )


def report(run: Run, elapsed: float) -> dict[str, Any]:
    rows = [p.figures() for p in run.phases]
    ref = next(
        (r.get("p99_us") for r in rows if r["target"] == "memfs" and r["phase"] == "idle"), None
    )
    for r in rows:
        p99 = r.get("p99_us")
        r["ratio_p99_memfs_idle"] = round(p99 / ref, 2) if p99 and ref else None
    probe = (
        "statx(AT_STATX_FORCE_SYNC): one GETATTR to the file system per call"
        if run.probe == "statx"
        else "plain stat(): mostly answered by the kernel's attribute cache"
    )
    load = os.getloadavg()
    print(
        f"FUSE request latency under background work: {run.size // MiB} MiB file, loft"
        f" --cache-size {run.cache_size // MiB}M; {os.cpu_count()} cores"
    )
    print(f"probe: {probe}, {'tight loop' if not run.interval else f'every {run.interval} s'}")
    print(f"code under test: {ROOT}")
    for name, text in run.procs.items():
        print(f"  {name}: {text}")
    head = (
        f"{'target':<7}{'phase':<13}{'secs':>7}{'n':>9}{'p50':>11}{'p99':>11}{'max':>11}"
        f"{'≥10ms':>7}{'p99/memfs':>11}"
    )
    print(head)
    for r in rows:
        ratio = r["ratio_p99_memfs_idle"]
        print(
            f"{r['target']:<7}{r['phase']:<13}{r['seconds']:>7.2f}{r['n']:>9}"
            f"{duration(r.get('p50_us')):>11}{duration(r.get('p99_us')):>11}"
            f"{duration(r.get('max_us')):>11}{r.get('slow', 0):>7}"
            f"{'—' if ratio is None else f'{ratio:.1f}x':>11}"
        )
    print("p99/memfs: the phase's p99 over memfs's idle p99; ≥10ms: samples of 10 ms or more")
    for target, share in run.cpu.items():
        print(share_line(target, share))
    print("  (the rest: other programs, and kernel threads such as writeback)")
    errors = sum(r["errors"] for r in rows)
    if errors:
        print(f"failed stat calls (left out of the figures): {errors}")
    for text in run.notes:
        print(text)
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f};"
          f" the run took {elapsed:.0f} s")  # fmt: skip
    return {
        "size": run.size,
        "cache_size": run.cache_size,
        "probe": run.probe,
        "interval": run.interval,
        "idle_seconds": run.idle,
        "root": str(ROOT),
        "processes": run.procs,
        "cpu": run.cpu,
        "cores": os.cpu_count(),
        "elapsed_seconds": round(elapsed, 1),
        "phases": rows,
        "notes": run.notes,
        "cache_trace": [
            {k: s.get(k) for k in ("t_ns", "bytes", "pending_bytes", "pending_ops", "chunks")}
            for s in run.trace
        ],
    }


# --- main --------------------------------------------------------------------------------


def size_arg(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, unit = text.strip(), 1
    if number and number[-1].lower() in units:
        number, unit = number[:-1], units[number[-1].lower()]
    try:
        value = int(float(number) * unit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 1G, 256M)") from None
    if value < MiB:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1M")
    return value


def preflight() -> None:
    if not os.path.exists("/dev/fuse"):
        raise BenchError("no /dev/fuse")
    if shutil.which("fusermount3") is None:
        raise BenchError("fusermount3 not found")


def remove_work(work: Path) -> None:
    mounted = mounts_under(work)
    if mounted:
        raise RuntimeError(f"kept {work}: {', '.join(mounted)} still mounted")
    shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=size_arg, default=1 << 30, help="file size (1G)")
    parser.add_argument(
        "--cache-size", type=size_arg, default=256 * MiB, help="the mount's cache cap (256M)"
    )
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle baseline")
    parser.add_argument(
        "--probe",
        choices=("statx", "stat"),
        default="statx",
        help="statx: forced GETATTR (default); stat: plain stat(), kernel-cached",
    )
    parser.add_argument(
        "--interval", type=float, default=0.0, help="seconds between probes (0: tight loop)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--probe-child", help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_child:
        probe_child(args.probe_child, args.probe, args.interval, args.probe_out)
        return
    if args.idle <= 0 or args.interval < 0:
        parser.error("--idle must be positive and --interval not negative")
    started, load = time.perf_counter(), os.getloadavg()
    run = Run(Path("."), args.size, args.cache_size, args.idle, args.probe, args.interval)
    try:
        preflight()
        run.work = Path(tempfile.mkdtemp(prefix="loft-bench-latency-"))
        with contextlib.ExitStack() as stack:
            stack.callback(run.cleanup, "remove the work directory", lambda: remove_work(run.work))
            with step(f"preparing 2 x {args.size // MiB} MiB of random bytes"):
                run.payload = make_payload(args.size)
                run.remote = make_payload(args.size)
            for target, bench in (("local", bench_local), ("memfs", bench_memfs)):
                with machine_share(run.cpu.setdefault(target, {}), lambda: 0.0):
                    bench(run)
            with machine_share(run.cpu.setdefault("loft", {}), lambda: run.unwaited_cpu):
                bench_loft(run)
    except BenchError as err:
        print(f"bench.latency: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench.latency: interrupted", file=sys.stderr)
        sys.exit(130)
    run.notes.append(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    cache_notes(run)
    figures = report(run, time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if run.cleanup_failed:
        sys.exit("bench.latency: clean-up failed (see above)")


if __name__ == "__main__":
    main()
