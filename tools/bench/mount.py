"""File work through a Loft mount, beside a local directory and an in-memory FUSE mount.

    python -m tools.bench.mount [--size-mib 1024] [--files 5000] [--latency-samples 50]

One run measures the same workloads on three targets: a directory on local disk, a
``tools.bench.memfs`` mount (the most Python FUSE does on this machine) and device A
of a fresh embedded-default server, with device B of the same user mounted beside it:

* sequential write of SIZE MiB in 1 MiB ``write``s, then ``fsync`` and ``close``; for
  Loft also until A's journal is empty (``status.json`` pending_ops; the file is
  rewritten each second, so that figure is up to a second late) and until B sees the
  file at its full size;
* sequential read of it, after dropping the kernel's page cache; for Loft from A's
  chunk cache ("warm") and from B, which fetches every chunk from the server ("cold");
* ``tar x`` of a FILES-file tree (200 B to 4 KiB each, in 50 directories), for Loft
  also until uploaded; then ``ls -lR`` of it after dropping the kernel's caches;
* A→B latency of a small new file: from ``open`` on A until B reads its content
  (polled every 5 ms). Loft only: local disk and memfs have no second device;
* the baseline of the transfers: ``tools.bench.rawhttp``'s PUT and GET of SIZE MiB
  (the same HTTP stack, nothing stored), beside A's upload and B's cold read.

Every read is checked against what was written, and the tree must reach B whole.
Prints seconds per workload and target, the ratios of Loft's time to the baselines'
(higher is slower), and the CPU time each process spent on each workload. Everything
is unmounted, stopped and removed at the end, on failure too; a failed step prints
one line and the benchmark exits 1. Needs root (``/proc/sys/vm/drop_caches``) and
``/dev/fuse``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tools.bench.rawhttp
from tools.localserver import ROOT, LocalServer, Stores, loft

MiB = 1 << 20
POLL = 0.005
"""Seconds between looks at device B in the latency test."""
SYNC_TIMEOUT = 300.0
"""Seconds a small change may take to reach B before the benchmark gives up."""
TARGETS = ("local", "memfs", "loft")


class BenchError(Exception):
    """A step failed: the message is the one line the benchmark prints."""


def note(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Announce a step; any failure inside it becomes a one-line ``BenchError``."""
    note(what)
    try:
        yield
    except BenchError:
        raise
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        detail = f": {lines[-1]}" if lines else ""
        raise BenchError(f"{what}: {type(exc).__name__}{detail}") from exc


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = POLL) -> float:
    """``time.perf_counter()`` at the first look where ``check()`` holds."""
    deadline = time.perf_counter() + timeout
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def timed_run(argv: list[str], timeout: float = 1800) -> float:
    """Wall seconds of a command, its output discarded."""
    start = time.perf_counter()
    result = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        raise BenchError(f"{' '.join(argv)}: exit {result.returncode}: {lines[-1]}")
    return elapsed


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, from ``/proc/self/mounts``.

    Unlike ``os.path.ismount``, this also sees a FUSE mount whose process has died.
    """
    prefix = str(root).rstrip("/")
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def is_mounted(path: Path) -> bool:
    return str(path) in mounts_under(path)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a live process (NaN once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> dict[str, float]:
    """CPU seconds since boot, all cores: busy (user, nice, system, irq, softirq) and
    stolen by the hypervisor, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return {"busy": busy / tick, "steal": fields[7] / tick}


def own_cpu() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextlib.contextmanager
def machine_share(into: dict[str, float], unwaited: Callable[[], float]) -> Iterator[None]:
    """The machine's CPU use during the block, in cores: all of it (``busy``), this
    benchmark's (itself, the children it waited for, plus ``unwaited()``: the CPU
    seconds of processes it started but does not wait for, read at the end), the
    rest (``others``: other programs, and kernel threads such as writeback) and what
    the hypervisor stole."""
    wall, busy, own = time.monotonic(), machine_cpu(), own_cpu()
    yield
    elapsed = time.monotonic() - wall
    used = {k: v - busy[k] for k, v in machine_cpu().items()}
    mine = own_cpu() - own + unwaited()
    into["seconds"] = round(elapsed, 1)
    into["busy_cores"] = round(used["busy"] / elapsed, 2)
    into["bench_cores"] = round(mine / elapsed, 2)
    into["others_cores"] = round(max(0.0, used["busy"] - mine) / elapsed, 2)
    into["steal_cores"] = round(used["steal"] / elapsed, 2)


def share_line(target: str, c: dict[str, float]) -> str:
    return (
        f"CPU while {target} ran ({c['seconds']:.0f} s): {c['busy_cores']:.2f} cores busy,"
        f" this benchmark {c['bench_cores']:.2f}, the rest {c['others_cores']:.2f},"
        f" stolen {c['steal_cores']:.2f}"
    )


# --- workloads -----------------------------------------------------------------------


def write_file(path: Path, payload: bytearray) -> float:
    """Seconds to write ``payload`` in 1 MiB ``write``s, ``fsync`` and ``close``."""
    view = memoryview(payload)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, len(payload), MiB):
            piece = view[offset : offset + MiB]
            while piece:
                piece = piece[os.write(fd, piece) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def read_file(path: Path, payload: bytearray) -> float:
    """Seconds to read ``path`` in 1 MiB ``read``s, checking it equals ``payload``."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    offset = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            if not payload.startswith(view[:n], offset):
                raise BenchError(f"{path}: the bytes read differ from those written near {offset}")
            offset += n
    elapsed = time.perf_counter() - start
    if offset != len(payload):
        raise BenchError(f"{path}: read {offset} bytes, wrote {len(payload)}")
    return elapsed


def drop_caches(work: Path) -> None:
    """Write back this file system's dirty pages, then empty the kernel's caches."""
    try:
        subprocess.run(["sync", "-f", str(work)], check=True, timeout=600)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"dropping the kernel's caches: {exc}") from exc


def make_tree(root: Path, files: int) -> list[Path]:
    """``files`` files of 200 B to 4 KiB in 50 directories; their paths under ``root``."""
    rng = random.Random(1)
    dirs = [root / f"d{a}" for a in range(10)]
    dirs += [top / f"s{b}" for top in list(dirs) for b in range(4)]
    paths = []
    for i in range(files):
        path = dirs[i % len(dirs)] / f"f{i:05}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(200, 4096)))
        paths.append(path.relative_to(root))
    return paths


def count_files(root: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def same_content(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except FileNotFoundError:
        return False


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- the targets ---------------------------------------------------------------------


@dataclass
class Run:
    """What every target shares, and what the run found."""

    work: Path
    size: int
    files: int
    samples: int
    payload: bytearray = field(default_factory=bytearray)
    tree: Path = Path()
    tree_files: list[Path] = field(default_factory=list)
    tarball: Path = Path()
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    mounts_cpu: float = 0.0
    """CPU seconds of the Loft mounts (not children this process waits for)."""
    raw: tuple[float, float] = (math.nan, math.nan)
    """Seconds of the raw HTTP PUT and GET of ``size`` bytes (``tools.bench.rawhttp``)."""
    notes: list[str] = field(default_factory=list)
    cleanup_failed: bool = False

    def record(self, row: str, target: str, seconds: float) -> None:
        self.seconds.setdefault(row, {})[target] = seconds

    @contextlib.contextmanager
    def meter(self, row: str, procs: dict[str, int]) -> Iterator[None]:
        """CPU seconds each of ``procs`` spends inside the block, as ``cpu[row]``."""
        before = {name: cpu_seconds(pid) for name, pid in procs.items()}
        yield
        for name, pid in procs.items():
            self.cpu.setdefault(row, {})[name] = cpu_seconds(pid) - before[name]

    def cleanup(self, what: str, fn: Callable[[], None]) -> None:
        """Run a clean-up step; a failure is reported and remembered, never raised."""
        try:
            fn()
        except Exception as exc:
            print(f"bench.mount: cleanup: {what}: {exc}", file=sys.stderr)
            self.cleanup_failed = True

    def prepare(self) -> None:
        with step(f"preparing {self.size // MiB} MiB of random bytes and a {self.files}-file tree"):
            self.payload = bytearray(self.size)
            for offset in range(0, self.size, 64 * MiB):
                piece = min(64 * MiB, self.size - offset)
                self.payload[offset : offset + piece] = os.urandom(piece)
            self.tree = self.work / "tree-source"
            self.tree_files = make_tree(self.tree, self.files)
            self.tarball = self.work / "tree.tar"
            timed_run(["tar", "-cf", str(self.tarball), "-C", str(self.tree), "."])

    def check_tree(self, root: Path, where: str, sample: int = 0) -> None:
        found = count_files(root)
        if found != self.files:
            raise BenchError(f"{where}: {found} files in the tree, expected {self.files}")
        for rel in random.Random(2).sample(self.tree_files, min(sample, self.files)):
            if (root / rel).read_bytes() != (self.tree / rel).read_bytes():
                raise BenchError(f"{where}: {rel} differs from the source tree")

    def baseline(self, target: str, root: Path, procs: dict[str, int]) -> None:
        """The workloads on local disk or memfs."""
        big, tree = root / "big.bin", root / "tree"
        with step(f"{target}: sequential write"), self.meter("write", procs):
            self.record("write", target, write_file(big, self.payload))
        drop_caches(self.work)
        with step(f"{target}: sequential read"), self.meter("read", procs):
            self.record("read", target, read_file(big, self.payload))
        with step(f"{target}: tar x"), self.meter("tar", procs):
            tree.mkdir()
            self.record(
                "tar", target, timed_run(["tar", "-xf", str(self.tarball), "-C", str(tree)])
            )
        drop_caches(self.work)
        with step(f"{target}: ls -lR"), self.meter("ls", procs):
            self.record("ls", target, timed_run(["ls", "-lR", str(tree)]))
        with step(f"{target}: checking the tree"):
            self.check_tree(tree, target)


def bench_local(run: Run) -> None:
    root = run.work / "local"
    root.mkdir()
    run.baseline("local", root, {})
    shutil.rmtree(root)


def bench_memfs(run: Run) -> None:
    mountpoint = run.work / "mnt-memfs"
    mountpoint.mkdir()
    with memfs_mounted(mountpoint, run.work / "memfs.log", run.cleanup) as pid:
        run.baseline("memfs", mountpoint, {"memfs": pid})


@contextlib.contextmanager
def memfs_mounted(
    mountpoint: Path, log: Path, cleanup: Callable[[str, Callable[[], None]], None]
) -> Iterator[int]:
    """``tools.bench.memfs`` mounted at ``mountpoint`` (its output in ``log``) for the
    block: its pid. Stopped at the end through ``cleanup(what, fn)``."""
    with contextlib.ExitStack() as stack:
        with step("memfs: mounting"), open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tools.bench.memfs", str(mountpoint)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            stack.callback(cleanup, "stop memfs", lambda: stop_memfs(proc, mountpoint))
            wait_for(
                lambda: os.path.ismount(mountpoint) or proc.poll() is not None, 30, "memfs mount"
            )
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines() or ["no output"]
                raise BenchError(f"memfs did not mount: {tail[-1]}")
        yield proc.pid


def stop_memfs(proc: subprocess.Popen[bytes], mountpoint: Path) -> None:
    if is_mounted(mountpoint):
        force_unmount(mountpoint)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def force_unmount(mountpoint: Path) -> None:
    """``fusermount3 -u``; lazily (``-uz``) if the mount is busy."""
    subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, timeout=60)
    if is_mounted(mountpoint):
        print(f"bench.mount: {mountpoint} busy, unmounting lazily", file=sys.stderr)
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True, timeout=60)
    if is_mounted(mountpoint):
        raise RuntimeError(f"{mountpoint} is still mounted")


# --- Loft ----------------------------------------------------------------------------


@dataclass
class Device:
    """One logged-in device with its mount."""

    name: str
    home: Path
    mountpoint: Path

    def pid(self) -> int:
        try:
            return int((self.home / "mount.pid").read_text())
        except (OSError, ValueError):
            return 0

    def mount(self) -> None:
        self.mountpoint.mkdir()
        result = loft("mount", str(self.mountpoint), home=self.home, timeout=120)
        if result.returncode != 0:
            raise BenchError(f"loft mount (device {self.name}): {result.stderr.strip()}")

    def unmount(self) -> None:
        """``loft unmount``; else ``fusermount3``; then make sure the mount process ended."""
        pid = self.pid()
        if is_mounted(self.mountpoint):
            try:
                result = loft("unmount", str(self.mountpoint), home=self.home, timeout=180)
                failed = result.returncode != 0
            except subprocess.TimeoutExpired:
                failed = True
            if failed:
                print(f"bench.mount: loft unmount {self.mountpoint} failed", file=sys.stderr)
                force_unmount(self.mountpoint)
        if pid and process_alive(pid):
            with contextlib.suppress(BenchError):
                wait_for(lambda: not process_alive(pid), 60, "mount exit", every=0.1)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if pid and process_alive(pid):
                print(
                    f"bench.mount: mount process {pid} still running: {sig.name}", file=sys.stderr
                )
                os.kill(pid, sig)
                with contextlib.suppress(BenchError):
                    wait_for(lambda: not process_alive(pid), 10, "mount exit", every=0.1)

    def status(self, since_ns: int = 0) -> dict[str, object] | None:
        """The mount's ``status.json``, if written at or after ``since_ns``."""
        path = self.home / "status.json"
        try:
            if path.stat().st_mtime_ns < since_ns:
                return None
            status: dict[str, object] = json.loads(path.read_text())
            return status
        except (OSError, ValueError):
            return None

    def pending(self, since_ns: int) -> int | None:
        status = self.status(since_ns)
        if status is None:
            return None
        return int(str(status["pending_ops"])) + int(str(status.get("parked", 0)))

    def log_tail(self) -> str:
        try:
            lines = (self.home / "mount.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no mount log"
        return lines[-1] if lines else "empty mount log"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_synced(
    a: Device, since_ns: int, on_b: Callable[[], bool], start: float, timeout: float
) -> tuple[float, float]:
    """Seconds from ``start`` until A's journal is empty, and until ``on_b()`` holds."""
    uploaded = visible = math.nan
    deadline = time.perf_counter() + timeout
    while math.isnan(uploaded) or math.isnan(visible):
        now = time.perf_counter()
        if math.isnan(uploaded) and a.pending(since_ns) == 0:
            uploaded = now - start
        if math.isnan(visible) and on_b():
            visible = now - start
        if now > deadline:
            status = a.status() or {}
            raise BenchError(
                f"not synced within {timeout:.0f} s: A has {status.get('pending_ops')} op(s)"
                f" pending (error: {status.get('error') or 'none'}), B sees it: "
                f"{not math.isnan(visible)}; A's log: {a.log_tail()}"
            )
        time.sleep(0.01)
    return uploaded, visible


def bench_loft(run: Run) -> None:
    with contextlib.ExitStack() as stack:
        server = LocalServer(Stores(run.work / "server" / "data"))
        stack.callback(run.cleanup, "stop the server", server.stop)
        with step("loft: starting a server"):
            server.start()
        a = Device("A", run.work / "home-a", run.work / "mnt-a")
        b = Device("B", run.work / "home-b", run.work / "mnt-b")
        with step("loft: adding a user, logging in devices A and B"):
            server.add_user("bench")
            for dev in (a, b):
                server.login("bench", dev.home, device=dev.name)
        for dev in (a, b):
            stack.callback(run.cleanup, f"unmount device {dev.name}", dev.unmount)
            with step(f"loft: mounting device {dev.name}"):
                dev.mount()
        assert server.proc is not None
        procs = {"loft A": a.pid(), "loft B": b.pid(), "server": server.proc.pid}
        loft_workloads(run, a, b, procs)
        used = [cpu_seconds(a.pid()), cpu_seconds(b.pid())]
        run.mounts_cpu = sum(x for x in used if not math.isnan(x))


def loft_workloads(run: Run, a: Device, b: Device, procs: dict[str, int]) -> None:
    size, timeout = run.size, SYNC_TIMEOUT + run.size / MiB
    with step("loft: sequential write on A, until uploaded and on B"), run.meter("write", procs):
        start = time.perf_counter()
        run.record("write", "loft", write_file(a.mountpoint / "big.bin", run.payload))
        closed = time.time_ns()

        def on_b() -> bool:
            with contextlib.suppress(FileNotFoundError):
                return (b.mountpoint / "big.bin").stat().st_size == size
            return False

        uploaded, visible = wait_synced(a, closed, on_b, start, timeout)
        run.record("write_uploaded", "loft", uploaded)
        run.record("write_on_b", "loft", visible)
    drop_caches(run.work)
    with step("loft: sequential read on A (warm)"), run.meter("read", procs):
        run.record("read", "loft", read_file(a.mountpoint / "big.bin", run.payload))
    drop_caches(run.work)
    with step("loft: sequential read on B (cold)"), run.meter("read_cold", procs):
        run.record("read_cold", "loft", read_file(b.mountpoint / "big.bin", run.payload))
    read_ns, status = time.time_ns(), {}
    with contextlib.suppress(BenchError):  # the note is only a cross-check
        wait_for(lambda: b.status(read_ns) is not None, 5, "B's status", every=0.05)
        status = b.status() or {}
    run.notes.append(
        f"B's chunk cache after the cold read: {int(str(status.get('bytes', 0))) / MiB:.0f} MiB"
        f" in {status.get('chunks', '?')} chunks (status.json)"
    )
    tree_a, tree_b = a.mountpoint / "tree", b.mountpoint / "tree"
    with step("loft: tar x on A, until uploaded"), run.meter("tar", procs):
        tree_a.mkdir()
        start = time.perf_counter()
        run.record("tar", "loft", timed_run(["tar", "-xf", str(run.tarball), "-C", str(tree_a)]))
        done = time.time_ns()
        uploaded, _ = wait_synced(a, done, lambda: True, start, timeout)
        run.record("tar_uploaded", "loft", uploaded)
    with step("loft: waiting for the whole tree on B"):
        wait_for(lambda: count_files(tree_b) == run.files, timeout, "the tree on B", every=0.5)
        run.check_tree(tree_b, "B", sample=200)
    drop_caches(run.work)
    with step("loft: ls -lR on A"), run.meter("ls", procs):
        run.record("ls", "loft", timed_run(["ls", "-lR", str(tree_a)]))
    with step("loft: checking the tree on A"):
        run.check_tree(tree_a, "A", sample=200)
    with step(f"loft: A→B latency, {run.samples} samples"), run.meter("latency", procs):
        latencies = latency(a, b, run.samples)
        run.record("lat50", "loft", percentile(latencies, 0.50))
        run.record("lat99", "loft", percentile(latencies, 0.99))
    run.notes.append(
        f"A→B latency: min {min(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        f" over {len(latencies)} samples"
    )


def latency(a: Device, b: Device, samples: int) -> list[float]:
    """Seconds from ``open`` of a new small file on A until B reads its content."""
    (a.mountpoint / "latency").mkdir()
    wait_for((b.mountpoint / "latency").is_dir, SYNC_TIMEOUT, "latency/ on B")
    out = []
    for i in range(samples):
        name = f"latency/s{i:04}.txt"
        content = f"sample {i} {os.urandom(16).hex()}\n".encode() * 3
        start = time.perf_counter()
        with open(a.mountpoint / name, "wb") as f:
            f.write(content)
        check = functools.partial(same_content, b.mountpoint / name, content)
        try:
            seen = wait_for(check, SYNC_TIMEOUT, f"{name} on B")
        except BenchError as err:
            raise BenchError(f"{err} (A's log: {a.log_tail()})") from None
        out.append(seen - start)
    return out


# --- the report ----------------------------------------------------------------------


def cell(seconds: float | None, size: int = 0) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    text = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    return f"{text} ({size / seconds / 1e6:.0f} MB/s)" if size else text


def report(run: Run) -> None:
    mib, n = run.size // MiB, run.files
    rows = [
        ("write", f"write {mib} MiB + fsync", run.size, "write"),
        ("write_uploaded", "  … until uploaded (A)", run.size, ""),
        ("write_on_b", "  … until B sees it", run.size, ""),
        ("read", f"read {mib} MiB (loft: A, warm)", run.size, "read"),
        ("read_cold", f"read {mib} MiB (loft: B, cold)", run.size, "read"),
        ("tar", f"tar x {n} files", 0, "tar"),
        ("tar_uploaded", "  … until uploaded (A)", 0, ""),
        ("ls", f"ls -lR {n} files", 0, "ls"),
        ("lat50", "A→B small file, p50", 0, ""),
        ("lat99", "A→B small file, p99", 0, ""),
        ("latency", f"A→B latency, {run.samples} samples", 0, ""),
    ]
    print(
        f"Loft mount vs local disk and memfs: {mib} MiB file, {n}-file tree,"
        f" {run.samples} latency samples; {os.cpu_count()} cores"
    )
    print("kernel caches dropped before each read and ls; ratios: loft's time / baseline's")
    print(
        f"{'workload':<32}{'local':>20}{'memfs':>20}{'loft':>20}{'loft/memfs':>12}{'loft/local':>12}"
    )
    for key, label, size, base in rows[:-1]:
        got = run.seconds.get(key, {})
        line = f"{label:<32}"
        for target in TARGETS:
            line += f"{cell(got.get(target), size):>20}"
        loft_s = got.get("loft", math.nan)
        for target in ("memfs", "local"):
            ref = run.seconds.get(base, {}).get(target, math.nan) if base else math.nan
            ratio = loft_s / ref if ref > 0 else math.nan
            line += f"{'—' if math.isnan(ratio) else f'{ratio:.1f}x':>12}"
        print(line)
    print(f"against raw HTTP on the same stack ({tools.bench.rawhttp.__name__}: 1 MiB"
          " requests over 6 connections, no storage), as a fraction of its rate:")
    for key, label, raw in (("write_uploaded", "PUT; A until uploaded", run.raw[0]),
                            ("read_cold", "GET; B's cold read", run.raw[1])):
        loft_s = run.seconds.get(key, {}).get("loft", math.nan)
        print(f"  raw {label:<24}{cell(raw, run.size):>22}{cell(loft_s, run.size):>22}"
              f"{raw / loft_s:>8.2f}")
    print("A→B latency has no baseline: local disk and memfs have no second device.")
    print("'until uploaded' is read from status.json, rewritten each second: up to 1 s late.")
    for text in run.notes:
        print(text)
    names = ["memfs", "loft A", "loft B", "server"]
    print(f"\nCPU seconds spent in each workload{'':<10}" + "".join(f"{n:>10}" for n in names))
    for key, label, *_ in rows:
        if key in run.cpu:
            used = run.cpu[key]
            line = f"{label:<44}"
            line += "".join(f"{used[n]:>10.1f}" if n in used else f"{'':>10}" for n in names)
            print(line)
    print("  (write, tar: loft columns include the wait until uploaded and on B)")
    for target, share in run.shares.items():
        print(share_line(target, share))


def preflight() -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root, to drop the kernel's caches")
    if not os.path.exists("/dev/fuse"):
        raise BenchError("no /dev/fuse")
    for tool in ("fusermount3", "tar", "ls", "sync"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found")


def remove_work(run: Run) -> None:
    mounted = mounts_under(run.work)
    if mounted:
        raise RuntimeError(f"kept {run.work}: {', '.join(mounted)} still mounted")
    shutil.rmtree(run.work)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--latency-samples", type=int, default=50)
    args = parser.parse_args()
    if args.size_mib < 1 or args.files < 1 or args.latency_samples < 1:
        parser.error("sizes and counts must be positive")
    load = os.getloadavg()
    run = Run(Path("."), args.size_mib * MiB, args.files, args.latency_samples)
    try:
        preflight()
        run.work = Path(tempfile.mkdtemp(prefix="loft-bench-mount-"))
        with contextlib.ExitStack() as stack:
            stack.callback(run.cleanup, "remove the work directory", lambda: remove_work(run))
            run.prepare()
            with step("raw HTTP: PUT and GET of the same size"):
                run.raw = tools.bench.rawhttp.measure(run.size)
            for target, bench in zip(TARGETS, (bench_local, bench_memfs, bench_loft), strict=True):
                with machine_share(run.shares.setdefault(target, {}), lambda: run.mounts_cpu):
                    bench(run)
    except BenchError as err:
        print(f"bench.mount: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench.mount: interrupted", file=sys.stderr)
        sys.exit(130)
    run.notes.append(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    report(run)
    if run.cleanup_failed:
        sys.exit("bench.mount: clean-up failed (see above)")


if __name__ == "__main__":
    main()
