"""The write path against a model, byte for byte, at every close and every fsync.

When a file open for writing is closed or ``fsync``'d, the mount *seals* it
(``fs.staging``): a file up to 1 MiB is cut whole inside one writer job
(``Stager.seal_in``); a larger one is cut again only over what changed since the last
seal (``Staged.changed`` widens a dirty range at each write and truncate; ``Recut``
keeps the chunks before it and, once a new cut point falls on an old one, those
after it; ``Cutter`` streams the cut). A mistake there (a change left out of the
range, an old block kept over new bytes, a tail dropped or doubled, a batch
boundary mishandled) corrupts a version silently: every call still succeeds. Only
the bytes can tell, so these tests compare them with a model (a ``bytearray`` per
file) after each seal, through two views:

- *a fresh read through the mount*: open, drop the kernel's pages of the file
  (``POSIX_FADV_DONTNEED``), read it whole; and ``stat``'s size;
- *the sealed version*: the block list the seal recorded in the device's view (its
  LMDB cache, opened beside the running mount as ``loft pin`` does), each chunk taken
  from the cache and checked against its id. While a writer holds a file open, reads
  through the mount are served from its staging file, not from the version, so at an
  ``fsync`` only this view sees what the seal made.

``test_random_writes_match_the_model_at_every_seal_and_on_a_second_device`` runs a
seeded random sequence on one real mount over four files of 0 bytes to ~24 MiB
(below, across and far above the 1 MiB inline seal and the 16 MiB seal batch):
``pwrite`` inside, across the end and past it (a hole), copies of the file's own
ranges (chunks it already holds), a few bytes or a truncate right at a cut point of
the last version (the edges of ``Recut``), ``ftruncate`` and ``truncate`` shorter and
longer, ``O_APPEND`` writes, ``fsync`` with the file kept open, close and reopen
(sometimes ``O_TRUNC``), a second writer that appends, or empties (``O_TRUNC``) and
refills the file under the workload's open fd, then closes, and a shared ``mmap``
patched and ``msync``'d. After the sequence, once the device has synced, the server
and a second device of the same user hold exactly the model's files (no name more).

``test_kill_9_keeps_exactly_what_the_last_fsync_or_close_promised`` edits one large
file (3 to ~22 MiB) with ``fsync`` and close now and then, kills the mount with ``SIGKILL`` at
random moments between calls (unsynced edits pending or not), mounts again, and
requires exactly the content of the last ``fsync`` or close that returned: an
``fsync`` promises its version survives, and no write after it is sealed before the
next one; a close of this large file parks it (``fs.parking``), and nothing written
or cut after the close may show (the undo log puts the parked bytes back). Then the
server holds the final content.

Each test prints its seed and names it in every assertion; ``LOFT_WRITE_SEED=N``
replays it. Assertions show sizes and SHA-256 digests, the first differing offset,
which earlier state (if any) the bytes match, and the operations that led there.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import mmap
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend import protocol as p
from cache.store import Cache
from fs.staging import INLINE_SEAL
from tests.conftest import Mount, NewMount
from tests.devices import detach_killed, kill_9, mount, mount_pid, server_tree, synced
from tools.pins import device_cache

KiB = 1 << 10
MiB = 1 << 20

STEPS = 1200
"""Random operations in the model test (about a third of them seal a file)."""
KILLS = 8
"""Mount kills in the kill test."""
PARKED_SEAL = 20.0
"""Seconds a large file closed may take to be sealed (it is parked, ``fs.parking``)."""
SYNC = 90.0
"""Seconds for a device to push every version to the server, and for a second device
to show them, on a shared two-core machine."""
LOG_TAIL = 40
"""Operations shown in a failure message."""


@dataclass(frozen=True)
class Shape:
    """A file of the workload: its name, first size, the size it stays at or below,
    its largest single edit, and the size truncates stop at."""

    name: str
    start: int
    top: int
    edit: int
    floor: int = 0


SHAPES = (
    Shape("empty.bin", 0, 256 * KiB, 24 * KiB),
    Shape("small.bin", 700 * KiB, 1536 * KiB, 160 * KiB),  # around the 1 MiB inline seal
    Shape("medium.bin", 5 * MiB, 9 * MiB, 1 * MiB),
    Shape("large.bin", 22 * MiB, 25 * MiB, 3 * MiB),  # past the 16 MiB seal batch
)


def seed() -> int:
    return int(os.environ.get("LOFT_WRITE_SEED") or random.randrange(2**32))


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def first_difference(a: bytes, b: bytes) -> int:
    """The first offset where ``a`` and ``b`` differ (the shorter length if one is a
    prefix of the other)."""
    n = min(len(a), len(b))
    va, vb = memoryview(a), memoryview(b)
    step = 64 * KiB
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        if va[lo:hi] != vb[lo:hi]:
            return next(i for i in range(lo, hi) if va[i] != vb[i])
    return n


def read_fresh(path: Path) -> bytes:
    """The whole file as the mount serves it now, not as the kernel's pages hold it."""
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return f.read()


def sealed_version(cache: Cache, name: str) -> tuple[bytes, list[int]]:
    """The content of the version the device's view holds for ``/name``, from its
    block list and cached chunks (each checked against its id), and the block lengths."""
    with cache.read() as txn:
        entry_id = cache.view.lookup_path(txn, f"/{name}")
        entry = cache.view.get(txn, entry_id) if entry_id is not None else None
    assert entry is not None, f"/{name} is not in the device's view"
    pieces: list[bytes] = []
    lengths: list[int] = []
    for cid, length in entry.get("blocks", []):
        data = cache.chunks.get(cid)
        assert data is not None, f"/{name}: chunk {cid} of its version is not cached"
        assert len(data) == length, f"/{name}: chunk {cid} holds {len(data)} bytes, not {length}"
        assert p.chunk_id(data) == cid, f"/{name}: chunk {cid} does not match its id"
        pieces.append(data)
        lengths.append(length)
    content = b"".join(pieces)
    assert entry["size"] == len(content), (
        f"/{name}: the version says {entry['size']} bytes, its blocks hold {len(content)}"
    )
    return content, lengths


def cut_points(cache: Cache, name: str) -> list[int]:
    """Where the blocks of ``/name``'s sealed version end (its size last): the old cut
    points the next seal of a large file starts from and falls back on."""
    with cache.read() as txn:
        entry_id = cache.view.lookup_path(txn, f"/{name}")
        entry = cache.view.get(txn, entry_id) if entry_id is not None else None
    assert entry is not None, f"/{name} is not in the device's view"
    return list(itertools.accumulate(length for _, length in entry.get("blocks", [])))


def resize(model: bytearray, size: int) -> None:
    if size < len(model):
        del model[size:]
    else:
        model.extend(bytes(size - len(model)))


def put(model: bytearray, offset: int, data: bytes) -> None:
    if offset > len(model):
        resize(model, offset)
    model[offset : offset + len(data)] = data


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def write_all(fd: int, data: bytes) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])


@dataclass
class Workfile:
    """One file of the workload, its model, and the fd the workload holds on it."""

    shape: Shape
    path: Path
    model: bytearray
    fd: int | None = None
    append: bool = False
    states: dict[str, str] = field(default_factory=dict)
    """Digest of each content checked so far → when (to name an old state seen again)."""


class Workload:
    """Random operations on real files of a mount, each applied to the model too; every
    close and fsync checks the file against its model (``check``)."""

    def __init__(self, cache: Cache, rng: random.Random, the_seed: int) -> None:
        self.cache = cache
        self.rng = rng
        self.seed = the_seed
        self.log: list[str] = []
        self.step = 0
        self.checks = 0
        self.checked_bytes = 0
        self.seals: Counter[str] = Counter()
        """Checks by what sealed the file, and of files past the inline seal (1 MiB)."""

    def note(self, f: Workfile, text: str) -> None:
        """Log an operation once applied to the model."""
        self.log.append(f"#{self.step} {f.shape.name}: {text} (now {len(f.model)} bytes)")

    # --- the oracle ------------------------------------------------------------------

    def check(self, f: Workfile, why: str) -> None:
        """The file's size, a fresh read and its sealed version all equal the model."""
        expected = bytes(f.model)
        digest = sha(expected)
        self.checks += 1
        self.checked_bytes += len(expected)
        self.seals[why.split(" ")[0] + (" (large)" if len(expected) > INLINE_SEAL else "")] += 1
        size = os.stat(f.path).st_size
        got = read_fresh(f.path)
        self.compare(f, f"a fresh read after {why}", expected, digest, got, "")
        # A large file's close (or truncate, or a remount's recovery) parks it: its
        # seal follows once it is left alone. An fsync seals at once.
        parked = why != "fsync" and len(expected) > INLINE_SEAL
        deadline = time.monotonic() + (PARKED_SEAL if parked else 0)
        while True:
            try:
                sealed, lengths = sealed_version(self.cache, f.shape.name)
            except AssertionError as exc:
                raise AssertionError(
                    f"seed {self.seed}: after {why}: {exc}\n{self.tail()}"
                ) from None
            if sealed == expected or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        shown = ", ".join(str(n) for n in lengths[:24]) + (" ..." if len(lengths) > 24 else "")
        self.compare(
            f,
            f"the sealed version after {why}",
            expected,
            digest,
            sealed,
            f"\nits blocks ({len(lengths)}): {shown}",
        )
        assert size == len(expected), (
            f"seed {self.seed}: {f.shape.name}: stat says {size} bytes after {why},"
            f" the model {len(expected)}\n{self.tail()}"
        )
        f.states.setdefault(digest, f"#{self.step} ({why})")

    def compare(
        self, f: Workfile, what: str, expected: bytes, digest: str, got: bytes, extra: str
    ) -> None:
        if got == expected:
            return
        got_digest = sha(got)
        earlier = f.states.get(got_digest)
        seen = f"; it equals the content checked at {earlier}" if earlier else ""
        raise AssertionError(
            f"seed {self.seed}: {f.shape.name}: {what} differs from the model:"
            f" expected {len(expected)} bytes sha256 {digest[:16]},"
            f" got {len(got)} bytes sha256 {got_digest[:16]};"
            f" first difference at offset {first_difference(expected, got)}{seen}{extra}\n"
            f"{self.tail()}"
        )

    @staticmethod
    def held(f: Workfile) -> str:
        return " (the workload's fd stays open)" if f.fd is not None else ""

    def tail(self) -> str:
        return "operations (last first):\n  " + "\n  ".join(reversed(self.log[-LOG_TAIL:]))

    # --- opening and closing ---------------------------------------------------------

    def open(self, f: Workfile, truncate: bool = False, append: bool = False) -> None:
        flags = os.O_RDWR | os.O_CREAT
        if truncate:
            flags |= os.O_TRUNC
            resize(f.model, 0)
        if append:
            flags |= os.O_APPEND
        f.fd, f.append = os.open(f.path, flags, 0o644), append
        self.note(f, "open" + (" O_TRUNC" if truncate else "") + (" O_APPEND" if append else ""))

    def close(self, f: Workfile) -> None:
        assert f.fd is not None
        os.close(f.fd)
        f.fd = None
        self.note(f, "close")
        self.check(f, "close")

    def fsync(self, f: Workfile) -> None:
        assert f.fd is not None
        os.fsync(f.fd)
        self.note(f, "fsync")
        self.check(f, "fsync")

    # --- edits -----------------------------------------------------------------------

    def data(self, length: int) -> bytes:
        """Random bytes, or now and then zeros (chunks that repeat within the file)."""
        return bytes(length) if self.rng.random() < 0.1 else self.rng.randbytes(length)

    def write(self, f: Workfile) -> None:
        """One write through the held fd: at the end if it is ``O_APPEND``, else inside,
        across the end, past it (a hole), or a copy of a range of the file itself."""
        assert f.fd is not None
        rng, n, edit = self.rng, len(f.model), f.shape.edit
        length = rng.randint(1, edit)
        if f.append:
            length = min(length, f.shape.top - n)
            if length <= 0:
                return self.ftruncate(f)
            data = self.data(length)
            write_all(f.fd, data)
            f.model.extend(data)
            return self.note(f, f"O_APPEND write {length}")
        kind = rng.choice(["inside", "across", "hole", "copy"] if n else ["across", "hole"])
        source: int | None = None
        if kind == "inside":
            offset = rng.randrange(n)
            length = min(length, n - offset)
        elif kind == "across":
            offset = rng.randint(max(0, n - length + 1), n)
        elif kind == "hole":
            offset = n + rng.randint(1, edit)
        else:
            source = rng.randrange(n)
            length = min(length, n - source)
            offset = rng.randint(0, n)
        length = min(length, f.shape.top - offset)
        if length <= 0:
            return self.ftruncate(f)
        if source is None:
            data = self.data(length)
        else:
            data = bytes(f.model[source : source + length])
            kind = f"copy of {source}"
        pwrite_all(f.fd, data, offset)
        put(f.model, offset, data)
        self.note(f, f"pwrite {kind} at {offset}, {length} bytes")

    def at_a_cut(self, f: Workfile) -> None:
        """A few bytes written, or the file truncated, right at a cut point of its sealed
        version (one byte either side, or on it): the edges of what a seal cuts again."""
        assert f.fd is not None
        points = cut_points(self.cache, f.shape.name)
        if not points or f.append:
            return self.write(f)
        point = self.rng.choice(points) + self.rng.randint(-2, 2)
        if self.rng.random() < 0.2:
            size, before = max(f.shape.floor, min(point, f.shape.top)), len(f.model)
            os.ftruncate(f.fd, size)
            resize(f.model, size)
            return self.note(f, f"ftruncate {before} -> {size} (at a cut)")
        length = self.rng.randint(1, 3)
        offset = point - length if self.rng.random() < 0.5 else point  # ending or starting there
        offset = max(0, min(offset, f.shape.top - length))
        data = self.rng.randbytes(length)
        pwrite_all(f.fd, data, offset)
        put(f.model, offset, data)
        self.note(f, f"pwrite at {offset}, {length} bytes (at a cut)")

    def new_size(self, f: Workfile) -> int:
        """Shorter (mostly by up to an edit, now and then anywhere) or longer."""
        rng, n, floor = self.rng, len(f.model), f.shape.floor
        if n > floor and rng.random() < 0.6:
            if rng.random() < 0.15:
                return rng.randrange(floor, n)
            return max(floor, n - rng.randint(1, f.shape.edit))
        return min(f.shape.top, n + rng.randint(1, 2 * f.shape.edit))

    def ftruncate(self, f: Workfile) -> None:
        assert f.fd is not None
        size, before = self.new_size(f), len(f.model)
        os.ftruncate(f.fd, size)
        resize(f.model, size)
        self.note(f, f"ftruncate {before} -> {size}")

    def truncate(self, f: Workfile) -> None:
        """``truncate(2)`` by path; with no fd held it seals on its own: a check."""
        size, before = self.new_size(f), len(f.model)
        os.truncate(f.path, size)
        resize(f.model, size)
        self.note(f, f"truncate (path) {before} -> {size}")
        if f.fd is None:
            self.check(f, "truncate of the closed file")

    def append_elsewhere(self, f: Workfile) -> None:
        """A second writer appends through ``O_APPEND`` and closes: a seal, a check."""
        length = min(self.rng.randint(1, f.shape.edit), f.shape.top - len(f.model))
        if length <= 0:
            return self.truncate(f)
        data = self.data(length)
        fd = os.open(f.path, os.O_WRONLY | os.O_APPEND)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        f.model.extend(data)
        self.note(f, f"second fd: O_APPEND write {length}, close{self.held(f)}")
        self.check(f, "second-fd close")

    def rewrite_elsewhere(self, f: Workfile) -> None:
        """A second writer opens with ``O_TRUNC`` (while the workload's fd may stay
        open on the file), writes a few pieces, a hole before the first maybe, and
        closes: a seal of a file emptied and refilled under an open handle, a check."""
        resize(f.model, 0)
        pieces: list[str] = []
        fd = os.open(f.path, os.O_WRONLY | os.O_TRUNC)
        try:
            for _ in range(self.rng.randint(1, 3)):
                offset = self.rng.randint(0, min(f.shape.top // 2, len(f.model) + f.shape.edit))
                length = min(self.rng.randint(1, 2 * f.shape.edit), f.shape.top - offset)
                data = self.data(length)
                pwrite_all(fd, data, offset)
                put(f.model, offset, data)
                pieces.append(f"{offset}+{length}")
        finally:
            os.close(fd)
        self.note(f, f"second fd: O_TRUNC, pwrite {', '.join(pieces)}, close{self.held(f)}")
        self.check(f, "second-fd close")

    def mmap_patch(self, f: Workfile) -> None:
        """Patch a shared ``mmap`` of the file (through a second fd), ``msync``, close."""
        n = len(f.model)
        if n == 0:
            return self.append_elsewhere(f)
        fd = os.open(f.path, os.O_RDWR)
        patches: list[str] = []
        try:
            size = os.fstat(fd).st_size  # mapping past the end would be SIGBUS, not a failure
            assert size == n, f"seed {self.seed}: fstat says {size}, the model {n}\n{self.tail()}"
            with mmap.mmap(fd, n, flags=mmap.MAP_SHARED) as m:
                for _ in range(self.rng.randint(1, 3)):
                    offset = self.rng.randrange(n)
                    data = self.data(min(self.rng.randint(1, f.shape.edit), n - offset))
                    m[offset : offset + len(data)] = data
                    f.model[offset : offset + len(data)] = data
                    patches.append(f"{offset}+{len(data)}")
                m.flush()
        finally:
            os.close(fd)
        self.note(f, f"mmap patches {', '.join(patches)}, msync, close{self.held(f)}")
        self.check(f, "msync and close of an mmap")

    # --- the random sequence ---------------------------------------------------------

    def one(self, files: list[Workfile]) -> None:
        """One random operation on one random file."""
        f = self.rng.choice(files)
        ops: list[tuple[Callable[[], None], int]]
        if f.fd is None:
            ops = [
                (lambda: self.open(f, self.rng.random() < 0.15, self.rng.random() < 0.2), 70),
                (lambda: self.truncate(f), 10),
                (lambda: self.append_elsewhere(f), 8),
                (lambda: self.rewrite_elsewhere(f), 4),
                (lambda: self.mmap_patch(f), 8),
            ]
        else:
            ops = [
                (lambda: self.write(f), 40),
                (lambda: self.at_a_cut(f), 10),
                (lambda: self.ftruncate(f), 7),
                (lambda: self.truncate(f), 4),
                (lambda: self.fsync(f), 11),
                (lambda: self.close(f), 9),
                (lambda: self.append_elsewhere(f), 3),
                (lambda: self.rewrite_elsewhere(f), 4),
                (lambda: self.mmap_patch(f), 3),
            ]
        action = self.rng.choices([op for op, _ in ops], [w for _, w in ops])[0]
        action()


def release(files: list[Workfile]) -> None:
    """Close the fds a failed test still holds (its mount may be dead), so that the
    unmount after it is not refused as busy."""
    for f in files:
        if f.fd is not None:
            with contextlib.suppress(OSError):
                os.close(f.fd)
            f.fd = None


def digests_of(root: Path) -> dict[str, str]:
    """Every name in the folder ``root`` with the SHA-256 of its content (or why it
    could not be read): a conflicted copy or a lost file shows as a name too many or
    too few."""
    out: dict[str, str] = {}
    try:
        names = os.listdir(root)
    except OSError as exc:
        return {"": f"unlistable ({exc.strerror})"}
    for name in names:
        try:
            out[name] = sha(read_fresh(root / name))
        except OSError as exc:
            out[name] = f"unreadable ({exc.strerror})"
    return out


def server_digests(m: Mount) -> dict[str, str]:
    """Every path the server holds for the device's user, with the SHA-256 of a
    file's content (a folder or link shown as such)."""
    return {
        name: sha(value) if isinstance(value, bytes) else str(value)
        for name, value in server_tree(m.device).items()
    }


def wait_for_digests(root: Path, expected: dict[str, str], why: str) -> None:
    """Wait until the folder ``root`` holds exactly the expected files; fail after
    ``SYNC`` seconds showing what it holds."""
    deadline = time.monotonic() + SYNC
    while (held := digests_of(root)) != expected:
        assert time.monotonic() < deadline, f"{why}: after {SYNC:.0f}s {held} != {expected}"
        time.sleep(0.2)


def test_random_writes_match_the_model_at_every_seal_and_on_a_second_device(
    new_mount: NewMount,
) -> None:
    started = time.monotonic()
    the_seed = seed()
    print(f"write model seed {the_seed} (LOFT_WRITE_SEED={the_seed} replays it)")
    rng = random.Random(the_seed)
    a = new_mount()
    files = [Workfile(s, a.path / s.name, bytearray()) for s in SHAPES]
    with device_cache(a.device.home) as cache:
        work = Workload(cache, rng, the_seed)
        try:
            for f in files:  # each file starts as a sealed version of its first size
                work.open(f)
                assert f.fd is not None
                data = rng.randbytes(f.shape.start)
                write_all(f.fd, data)
                f.model.extend(data)
                work.note(f, f"write {len(data)}")
                work.close(f)
            while work.step < STEPS:
                work.step += 1
                work.one(files)
            work.step += 1
            for f in files:
                if f.fd is not None:
                    work.close(f)
        finally:
            release(files)
    sequence = time.monotonic() - started
    kinds = {"close", "fsync", "truncate", "second-fd", "msync", "close (large)", "fsync (large)"}
    assert kinds <= set(work.seals), f"seed {the_seed}: only {dict(work.seals)} were checked"
    expected = {f.shape.name: sha(f.model) for f in files}
    sizes = {f.shape.name: len(f.model) for f in files}
    why = f"seed {the_seed}, final sizes {sizes}"

    held = digests_of(a.path)
    assert held == expected, f"{why}: the mount holds {held}, the model {expected}"
    synced(a, SYNC)
    held = server_digests(a)
    assert held == expected, f"{why}: the server holds {held}, the model {expected}"
    b = new_mount(a.device.user, "B")
    wait_for_digests(b.path, expected, f"{why}: the second device")
    print(
        f"seed {the_seed}: {STEPS} operations, {work.checks} checks of"
        f" {work.checked_bytes / MiB:.0f} MiB in {sequence:.1f}s {dict(work.seals)};"
        f" final sizes {sizes};"
        f" the second device equal at {time.monotonic() - started:.1f}s"
    )


def test_kill_9_keeps_exactly_what_the_last_fsync_or_close_promised(new_mount: NewMount) -> None:
    started = time.monotonic()
    the_seed = seed()
    print(f"write model kill seed {the_seed} (LOFT_WRITE_SEED={the_seed} replays it)")
    rng = random.Random(the_seed)
    a = new_mount()
    shape = Shape("big.bin", rng.randint(3 * MiB, 20 * MiB), 22 * MiB, 2 * MiB, 3 * MiB)
    f = Workfile(shape, a.path / shape.name, bytearray())
    with device_cache(a.device.home) as cache:
        work = Workload(cache, rng, the_seed)
        try:
            work.open(f)
            assert f.fd is not None
            data = rng.randbytes(shape.start)
            write_all(f.fd, data)
            f.model.extend(data)
            work.note(f, f"write {len(data)}")
            work.fsync(f)
            promised = bytes(f.model)
            for kill in range(1, KILLS + 1):
                promised = edit_and_promise(work, f, promised)
                if f.fd is not None:  # edits nobody promised (maybe none), then the kill
                    for _ in range(rng.randint(0, 3)):
                        work.step += 1
                        if rng.random() < 0.8:
                            work.write(f)
                        else:
                            work.ftruncate(f)
                work.step += 1
                work.note(f, f"kill -9 of the mount ({kill} of {KILLS})")
                kill_9(mount_pid(a.device))
                release([f])
                detach_killed(a.path)
                mount(a.device, a.path)
                f.model = bytearray(promised)  # exactly what the last fsync or close promised
                work.check(f, f"kill -9 and remount {kill}")
                names = os.listdir(a.path)
                assert names == [shape.name], f"seed {the_seed}: after kill {kill}: {names}"
            work.step += 1
            work.open(f)
            work.write(f)
            work.close(f)
        finally:
            release([f])
    synced(a, SYNC)
    held = server_digests(a)
    assert held == {shape.name: sha(f.model)}, (
        f"seed {the_seed}: the server holds {held}, the model"
        f" {len(f.model)} bytes sha256 {sha(f.model)}\n{work.tail()}"
    )
    print(
        f"seed {the_seed}: {KILLS} kills, {work.checks} checks of"
        f" {work.checked_bytes / MiB:.0f} MiB {dict(work.seals)}, final size {len(f.model)},"
        f" {time.monotonic() - started:.1f}s"
    )


def edit_and_promise(work: Workload, f: Workfile, promised: bytes) -> bytes:
    """A few writes and truncates, with ``fsync`` and close now and then; what the last
    of those that returned promised."""
    rng = work.rng
    for _ in range(rng.randint(4, 12)):
        work.step += 1
        if f.fd is None:
            work.open(f)
            continue
        op = rng.choices(["write", "cut", "ftruncate", "fsync", "close"], [45, 15, 10, 22, 8])[0]
        if op == "write":
            work.write(f)
        elif op == "cut":
            work.at_a_cut(f)
        elif op == "ftruncate":
            work.ftruncate(f)
        else:
            if op == "fsync":
                work.fsync(f)
            else:
                work.close(f)
            promised = bytes(f.model)
    return promised
