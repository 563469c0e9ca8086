"""Nothing a mount has promised is lost when it, or its server, dies by ``kill -9``.

*The mount crash loop.* A device is mounted (the real ``loft mount``, its own
process) and the test process runs a random workload through it: files written in
several ``write`` calls, some ``fsync``'d on the way, closed; renames of files and
folders, ``mkdir``, ``unlink``, ``rmdir``. A thread kills the mount process with
``SIGKILL`` at a random moment while the workload runs (and while the uploader sends
to the server); the dead FUSE mount is cleaned (``fusermount3 -uz``), the device is
mounted again, and its tree is checked against a model of what was promised. After
the last round, everything must reach the server: a second device sees exactly the
final model.

*The server crash loop.* The same workload, with the server killed at a random moment
and restarted a moment later, and in every other round the mount killed too while the
server is down (so it comes back offline, with a full journal). After the last
restart and once the journal is drained, a second device sees exactly the final model.

*The model* (``Model``) maps each path to the set of states the mount may show for
it (absent, a folder, or one file content), following what the mount promises:

- a file's content is promised when ``close()`` or ``fsync()`` returns (the sealed
  version and its journal record are one LMDB commit, intact after ``kill -9``);
- a create, ``mkdir``, rename, ``unlink`` or ``rmdir`` is promised when the call
  returns (the replica and the journal change in one LMDB commit);
- ``open(O_TRUNC)`` of an existing file may or may not make the empty content a
  version of its own (the kernel may send a truncating ``setattr``), so both stay
  allowed until the close;
- the call cut by the kill may have happened or not: both outcomes are allowed for
  the paths it touches, and nothing else. Unpromised writes may be lost; a file's
  content is never anything but one of the versions the model allows (no half-written
  version).

A path whose state is outside its set is a *loss*; the tests count them, print the
count with the number of rounds run, and assert it is zero. The seed of the random
choices is printed and named in every assertion (``LOFT_CRASH_SEED`` replays it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from backend import protocol as p
from backend.history_client import History
from cache.env import Writer
from cache.store import ROOT_INO, Cache
from fs.history import PastTree
from fs.operations import LoftOperations
from fs.replica import Replica
from fs.staging import Stager
from tests.conftest import PASSWORD, Device, Mount, Server, Stores, unmount_strictly
from tests.devices import alive, detach_killed, kill_9, mount_pid

T = TypeVar("T")

MOUNT_ROUNDS = 20
SERVER_ROUNDS = 8
BUDGET = 75.0
"""Seconds a crash loop may run; it stops early (and says so) on a slow machine."""
HANG = 30.0
"""Seconds a call through the mount may take before the mount counts as hung."""
SYNC = 60.0
"""Seconds the journal may take to drain, and the second device to catch up."""

DIR = "<dir>"
State = bytes | str | None
"""A path's state: a file's content, ``DIR``, or ``None`` (absent)."""
ABSENT: frozenset[State] = frozenset({None})

FILES = [f"f{n}" for n in range(6)]
FOLDERS = [f"d{n}" for n in range(3)]


@pytest.fixture(scope="module")
def crash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of our own: it is killed and restarted, so it is shared with no one."""
    srv = Server(Stores(tmp_path_factory.mktemp("crash-mount") / "data"))
    srv.start()
    yield srv
    srv.stop()


class Crashed(Exception):
    """The mount died under the workload (as the test meant it to)."""


@dataclass
class Machine:
    """A device of the crash user with its mount point; mounted by ``mount()``."""

    device: Device
    path: Path

    def mount(self, *extra: str) -> None:
        verbose = ["--verbose"] if os.environ.get("LOFT_CRASH_VERBOSE") else []
        result = self.device.run(*verbose, "mount", str(self.path), *extra)
        assert result.returncode == 0, result.stderr

    def pid(self) -> int:
        return mount_pid(self.device)

    def cleanup(self) -> None:
        """Unmount (cleanly if the mount lives, lazily if it is dead)."""
        unmount_strictly(Mount(self.device, self.path))


def new_device(server: Server, user: str, name: str, base: Path) -> Machine:
    home = base / f"home-{name}"
    server.login(user, home, name)
    path = base / f"mnt-{name}"
    path.mkdir()
    return Machine(Device(server, user, home), path)


def remount(dev: Machine) -> None:
    """Clean the dead FUSE mount and mount the device again."""
    detach_killed(dev.path)
    dev.mount()


def read_tree(root: Path) -> dict[str, State]:
    """Every path under ``root`` with its state, read through the mount."""
    tree: dict[str, State] = {}
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        for name in dirnames:
            tree[str((Path(dirpath) / name).relative_to(root))] = DIR
        for name in filenames:
            path = Path(dirpath) / name
            tree[str(path.relative_to(root))] = path.read_bytes()
    return tree


def _raise(exc: OSError) -> None:
    raise exc


def show(state: State) -> str:
    if isinstance(state, bytes):
        return f"{len(state)} bytes {state[:12]!r}"
    return "absent" if state is None else "folder"


@dataclass
class Model:
    """Path → the states the mount may show for it (a path not named is absent)."""

    paths: dict[str, frozenset[State]] = field(default_factory=dict)

    def allowed(self, path: str) -> frozenset[State]:
        return self.paths.get(path, ABSENT)

    def set(self, path: str, states: frozenset[State]) -> None:
        if states == ABSENT:
            self.paths.pop(path, None)
        else:
            self.paths[path] = states

    def certain(self, kind: type) -> list[str]:
        """Paths whose one allowed state is of ``kind`` (bytes: files, str: folders)."""
        return sorted(
            path
            for path, states in self.paths.items()
            if len(states) == 1 and isinstance(next(iter(states)), kind)
        )

    def losses(self, tree: dict[str, State]) -> list[str]:
        """Paths of ``tree`` in a state the model does not allow, described."""
        out = []
        for path in sorted(set(self.paths) | set(tree)):
            state, allowed = tree.get(path), self.allowed(path)
            if state not in allowed:
                expected = " or ".join(sorted(show(s) for s in allowed))
                out.append(f"{path}: {show(state)}, expected {expected}")
        return out

    @classmethod
    def of(cls, tree: dict[str, State]) -> Model:
        return cls({path: frozenset({state}) for path, state in tree.items()})


class Workload:
    """Random file operations through the mount, keeping ``model`` up to date.

    Every call goes through ``step``: while it runs, both its outcomes are allowed;
    once it returns, only the new one. An ``OSError`` after the mount was killed
    ends the workload (``Crashed``); any other is a failure of the mount.
    """

    def __init__(
        self, root: Path, model: Model, rng: random.Random, killed: threading.Event
    ) -> None:
        self.root = root
        self.model = model
        self.rng = rng
        self.killed = killed
        self.ops = 0
        self.busy: tuple[float, str] | None = None
        """Since when, and in which call, the workload waits on the mount."""
        self.hung = ""
        """Set by the watchdog: the call the mount never answered."""

    def step(self, change: dict[str, frozenset[State]], call: Callable[[], T]) -> T:
        before = {path: self.model.allowed(path) for path in change}
        for path, after in change.items():
            self.model.set(path, before[path] | after)
        self.busy = (time.monotonic(), f"{sorted(change)} op {self.ops}")
        try:
            result = call()
        except OSError as exc:
            if self.hung:
                raise AssertionError(f"the mount hung for {HANG:.0f}s: {self.hung}") from exc
            if self.killed.is_set():
                raise Crashed from exc
            raise AssertionError(f"the live mount failed: {exc!r}") from exc
        finally:
            self.busy = None
        for path, after in change.items():
            self.model.set(path, after)
        return result

    def run(self, count: int | None = None) -> None:
        """Run ``count`` operations, or until the mount is killed."""
        deadline = time.monotonic() + 60
        while count is None or self.ops < count:
            assert time.monotonic() < deadline, "the workload ran on: the mount was never killed"
            self.one()
            self.ops += 1

    def one(self) -> None:
        files, folders = self.model.certain(bytes), self.model.certain(str)
        roll = self.rng.random()
        if roll < 0.45 or not files:
            self.write_session(files, folders)
        elif roll < 0.6:
            self.rename_file(files, folders)
        elif roll < 0.7:
            self.make_folder(folders)
        elif roll < 0.82:
            path = self.rng.choice(files)
            self.step({path: ABSENT}, lambda: os.unlink(self.root / path))
        elif roll < 0.9:
            empty = [d for d in folders if not any(p.startswith(d + "/") for p in self.model.paths)]
            if empty:
                path = self.rng.choice(empty)
                self.step({path: ABSENT}, lambda: os.rmdir(self.root / path))
        else:
            self.rename_folder(folders)

    def free_name(self, folders: list[str], names: list[str]) -> str | None:
        parent = self.rng.choice(["", *folders])
        path = f"{parent}/{self.rng.choice(names)}".lstrip("/")
        return path if path not in self.model.paths else None

    def content(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.15:
            size = self.rng.randrange(256 << 10, 1536 << 10)  # one to a few chunks
        elif roll < 0.25:
            size = 0
        else:
            size = self.rng.randrange(1, 16 << 10)
        return self.rng.randbytes(size)

    def write_session(self, files: list[str], folders: list[str]) -> None:
        """Open (create, truncate or append), write in pieces, maybe fsync, close."""
        if files and self.rng.random() < 0.6:
            path = self.rng.choice(files)
            (old,) = self.model.allowed(path)
            assert isinstance(old, bytes)
            append = self.rng.random() < 0.3
        else:
            found = self.free_name(folders, FILES)
            if found is None:
                return
            path, old, append = found, None, False
        full = self.root / path
        if old is None:
            opened = frozenset({b""})  # the create is journaled at once, empty
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        elif append:
            opened = frozenset({old})
            flags = os.O_WRONLY | os.O_APPEND
        else:
            opened = frozenset({old, b""})
            flags = os.O_WRONLY | os.O_TRUNC
        fd = self.step({path: opened}, lambda: os.open(full, flags, 0o644))
        written = old if append and isinstance(old, bytes) else b""
        try:
            data = self.content()
            pos = 0
            while pos < len(data) or pos == 0:
                piece = data[pos : pos + self.rng.choice([1, 4096, 100_000, 1 << 20])]
                self.step({}, lambda piece=piece: os.write(fd, piece))  # type: ignore[misc]
                written += piece
                pos += max(len(piece), 1)
                if self.rng.random() < 0.2:
                    self.step({path: frozenset({written})}, lambda: os.fsync(fd))
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        self.step({path: frozenset({written})}, lambda: os.close(fd))

    def rename_file(self, files: list[str], folders: list[str]) -> None:
        source = self.rng.choice(files)
        if self.rng.random() < 0.4:
            target: str | None = self.rng.choice(files)  # replaces it
        else:
            target = self.free_name(folders, FILES)
        if target is None or target == source:
            return
        moved = self.model.allowed(source)
        self.step(
            {source: ABSENT, target: moved},
            lambda: os.rename(self.root / source, self.root / target),
        )

    def make_folder(self, folders: list[str]) -> None:
        parents = ["", *(d for d in folders if d.count("/") < 1)]
        path = f"{self.rng.choice(parents)}/{self.rng.choice(FOLDERS)}".lstrip("/")
        if path in self.model.paths:
            return
        self.step({path: frozenset({DIR})}, lambda: os.mkdir(self.root / path))

    def rename_folder(self, folders: list[str]) -> None:
        if not folders:
            return
        source = self.rng.choice(folders)
        target = self.rng.choice(FOLDERS)
        if target in self.model.paths:
            return
        change: dict[str, frozenset[State]] = {}
        for path, states in self.model.paths.items():
            if path == source or path.startswith(source + "/"):
                change[path] = ABSENT
                change[target + path[len(source) :]] = states
        self.step(change, lambda: os.rename(self.root / source, self.root / target))


def pending_ops(dev: Machine, since: float) -> int | None:
    """The mount's journal size (and files parked, to be sealed) from a
    ``status.json`` written after ``since``."""
    path = dev.device.home / "status.json"
    try:
        if path.stat().st_mtime <= since:
            return None
        status = json.loads(path.read_text())
        return int(status["pending_ops"]) + int(status.get("parked", 0))
    except (OSError, ValueError, KeyError):
        return None


def wait_synced(dev: Machine, why: str) -> None:
    since = time.time()
    deadline = time.monotonic() + SYNC
    while pending_ops(dev, since) != 0:
        assert time.monotonic() < deadline, f"the journal did not drain {why}"
        time.sleep(0.1)


def wait_same(dev: Machine, model: Model, why: str) -> None:
    """``dev`` shows exactly the (certain) model, within ``SYNC`` seconds."""
    deadline = time.monotonic() + SYNC
    while True:
        try:
            losses = model.losses(read_tree(dev.path))
        except OSError as exc:  # a name removed while walking: not there yet
            losses = [repr(exc)]
        if not losses:
            return
        assert time.monotonic() < deadline, f"second device differs {why}: {losses[:10]}"
        time.sleep(0.2)


def seed() -> int:
    return int(os.environ.get("LOFT_CRASH_SEED") or random.randrange(2**32))


@dataclass
class Chaos:
    """A thread that kills the server and/or the mount on a schedule, then restarts
    the server; errors in it are re-raised by ``join``."""

    server: Server
    dev: Machine
    killed: threading.Event
    first: float
    kill_server: bool
    kill_mount: bool
    down: float
    error: BaseException | None = None
    dead: threading.Event = field(default_factory=threading.Event)
    """Set once the killed mount process is gone."""

    def start(self) -> threading.Thread:
        pid = self.dev.pid()

        def run() -> None:
            try:
                time.sleep(self.first)
                if self.kill_server:
                    self.server.kill()
                if self.kill_mount:
                    time.sleep(self.down / 3)
                    self.killed.set()
                    kill_9(pid)
                    self.dead.set()
                if self.kill_server:
                    time.sleep(self.down)
                    self.server.start()
            except BaseException as exc:
                self.error = exc

        thread = threading.Thread(target=run, name="chaos", daemon=True)
        thread.start()
        return thread

    def join(self, thread: threading.Thread) -> None:
        thread.join(60)
        assert not thread.is_alive(), "the chaos thread hangs"
        if self.error is not None:
            raise self.error


def watchdog(work: Workload, dev: Machine, done: threading.Event) -> None:
    """Kill a mount that leaves a call unanswered for ``HANG`` seconds, so that the
    test fails at once, naming the call, instead of at pytest's timeout."""
    pid = dev.pid()
    while not done.wait(0.5):
        busy = work.busy
        if busy is not None and time.monotonic() - busy[0] > HANG:
            work.hung = busy[1]
            if alive(pid):
                kill_9(pid)
            return


def crash_round(
    server: Server,
    dev: Machine,
    model: Model,
    rng: random.Random,
    kill_server: bool,
    kill_mount: bool,
) -> tuple[Model, list[str], int]:
    """One round: workload + chaos, then the device's tree against the model.

    Returns the model for the next round (the tree as found), the losses, and the
    number of operations run."""
    killed = threading.Event()
    chaos = Chaos(
        server,
        dev,
        killed,
        first=rng.uniform(0.05, 1.2),
        kill_server=kill_server,
        kill_mount=kill_mount,
        down=rng.uniform(0.2, 1.0),
    )
    work = Workload(dev.path, model, rng, killed)
    thread = chaos.start()
    done = threading.Event()
    dog = threading.Thread(target=watchdog, args=(work, dev, done), name="watchdog", daemon=True)
    dog.start()
    try:
        with contextlib.suppress(Crashed):
            work.run(None if kill_mount else 40)
    finally:
        done.set()
        dog.join()
    if kill_mount:  # at once: with the server killed too, the mount comes back offline
        chaos.dead.wait(30)
        remount(dev)
    chaos.join(thread)
    tree = read_tree(dev.path)
    return Model.of(tree), work.model.losses(tree), work.ops


def run_loop(
    server: Server,
    tmp_path: Path,
    rounds: int,
    kill_server: Callable[[int], bool],
    kill_mount: Callable[[int], bool],
    label: str,
) -> None:
    started = time.monotonic()
    the_seed = seed()
    rng = random.Random(the_seed)
    why = f"(seed {the_seed})"
    user = f"crash{os.getpid()}x{label}"
    server.add_user(user)
    dev = new_device(server, user, "A", tmp_path)
    other: Machine | None = None
    model, losses, done, ops = Model(), 0, 0, 0
    try:
        dev.mount()
        for number in range(rounds):
            if time.monotonic() - started > BUDGET:
                print(f"{label}: stopped after {done} rounds: over the {BUDGET:.0f}s budget")
                break
            model, lost, count = crash_round(
                server, dev, model, rng, kill_server(number), kill_mount(number)
            )
            ops += count
            done += 1
            for line in lost:
                print(f"{label} round {number}: LOSS {line}")
            losses += len(lost)
        if server.proc is None:
            server.start()
        wait_synced(dev, why)
        other = new_device(server, user, "B", tmp_path)
        other.mount()
        wait_same(other, model, why)
    finally:
        dev.cleanup()
        if other is not None:
            other.cleanup()
    files = len(model.certain(bytes))
    print(
        f"{label}: {done} rounds, {ops} operations, {losses} losses,"
        f" {files} files at the end, {time.monotonic() - started:.1f}s {why}"
    )
    assert done >= rounds // 2, f"only {done} rounds ran {why}"
    assert losses == 0, f"{losses} promised change(s) lost {why}"


@pytest.mark.slow
def test_kill_9_of_the_mount_loses_nothing_promised(crash_server: Server, tmp_path: Path) -> None:
    run_loop(
        crash_server,
        tmp_path,
        MOUNT_ROUNDS,
        kill_server=lambda n: False,
        kill_mount=lambda n: True,
        label="mount-kill",
    )


@pytest.mark.slow
def test_kill_9_of_the_server_during_uploads_loses_nothing(
    crash_server: Server, tmp_path: Path
) -> None:
    run_loop(
        crash_server,
        tmp_path,
        SERVER_ROUNDS,
        kill_server=lambda n: True,
        kill_mount=lambda n: n % 2 == 1,
        label="server-kill",
    )


async def test_a_follower_behind_the_uploader_does_not_resurrect_a_deleted_folder(
    crash_server: Server, tmp_path: Path
) -> None:
    """Found by the server crash loop: ``d0`` made, removed and made again, all
    committed before the follower reads the feed (it lags after a server restart).
    The first ``d0``'s creation must not come back from the feed, and the live folder
    must keep its name: the remote tree is only ever the feed's, applied in order, and
    acknowledged changes wait in the journal until the feed has echoed them."""
    crash_server.add_user("lagging")
    async with crash_server.client() as anonymous:
        login = await anonymous.login("lagging", PASSWORD, "dev")
    cache = Cache(tmp_path / "cache")
    writer = Writer(cache.env)
    replica = Replica(cache, "dev")
    try:
        async with crash_server.client(login["token"]) as client:
            await writer.write(lambda txn: replica.bootstrap(txn, [], 0))
            stager = Stager(tmp_path / "staging", cache, writer, None)  # type: ignore[arg-type]
            ops = LoftOperations(
                cache,
                writer,
                replica,
                None,  # type: ignore[arg-type]  # no content is read
                stager,
                PastTree(History(client, login["root_ns"])),
                lambda: None,
                lambda changes: None,
            )
            for change in ("mkdir", "rmdir", "mkdir"):
                if change == "mkdir":
                    await ops.mkdir(ROOT_INO, b"d0", 0o755, None)
                else:
                    await ops.rmdir(ROOT_INO, b"d0", None)
                while True:  # the uploader, ahead
                    batch, _ = await writer.write(replica.build_batch)
                    if batch is None:
                        break
                    answer = await client.commit(login["root_ns"], batch["ops"])
                    await writer.write(functools.partial(replica.acked, batch=batch, answer=answer))
            feed = await client.changes(login["root_ns"], 0)  # the follower, behind
            applied = await writer.write(
                lambda txn: replica.apply_feed(txn, 0, feed["changes"], feed["cursor"])
            )
            assert applied is not None
            with cache.read() as txn:
                live = cache.view.child(txn, p.ROOT_ID, "d0")
                assert live is not None, "the live d0 lost its name"
                assert [name for name, _ in cache.view.children(txn, p.ROOT_ID)] == ["d0"]
                assert cache.journal.size(txn) == 0, "echoed changes stay journaled"
                assert cache.remote.child(txn, p.ROOT_ID, "d0") == live
    finally:
        cache.close()
