"""Randomized two-device model test: whatever two devices do, online, offline or
killed, they converge on one tree with the server, and no content is ever lost.

Devices A and B of one user are real ``loft mount`` processes, each reaching the
server through its own ``FaultProxy``; device C only reads the server's tree (the
API, with its token). A seeded generator drives rounds of 8-15 operations on a small
set of colliding names (files ``a``, ``b``, ``c`` and folders ``p``, ``q``, at the
top and inside each other): write a whole file with unique content, append,
truncate, rename a file (also over another), rename a folder, delete a file, mkdir,
rmdir, chmod. An operation the mount refuses with an ``OSError`` (a name the other
device moved away, a folder not empty) is skipped. Each round is one of:

=============== =====================================================================
kind            what happens
=============== =====================================================================
``alone``       A works online; B follows (live sync)
``both``        A and B work online at once, their operations interleaved
``offline``     both cut; both work; restored one after the other, in random order
``one_offline`` one cut; both work (one journals, the other commits); restored
=============== =====================================================================

In some rounds one mount is killed (``kill -9``) between two operations and mounted
again (offline if its network is cut). Faults of the server and the network come on
top, drawn from dice of their own (``faults``, seeded from the seed, so that the
operations of a seed found before them stay the same), in rounds where a device works
online:

- *server kill*: ``kill -9`` of the server between two operations; the devices work
  on, journaling their changes, and once the operations are done the server starts
  again on the same stores and port. Its journal must still hold, unchanged, every
  version it showed right before the kill (commits are durable);
- *network fault* on an online device (``NetFault``): ``lost_reply`` (a commit is
  applied and its reply cut: the device retries a commit the server applied),
  ``cut_upload`` (connections cut some bytes into a chunk upload), ``stall`` (nothing
  moves for a few operations), ``flap`` (connections cut for a few operations);
- *lost replay*: a device restored after a cut loses the reply to its first commit.

After each round, once both are synced (online, nothing pending): A's tree == B's
tree == the server's, and no operation shows twice in the server's journal
(``assert_applied_once``: op ids make a retried commit count once). For each device
cut in the round, its tree right before the restore must be exactly its model (a dict
``path -> bytes | "dir"``: the tree at the start of the round, changed by the
device's own successful operations: what it did offline, crash or not), and every
content of that final offline view written in the round must be somewhere in the
converged tree; the same holds for what a device wrote while its server was down and
still shows at the end of the operations. Each device's own state is then checked by
``loft fsck --home``, and the server's stores by ``loft fsck`` after the last seed
(the ``mount_server`` fixture).

Seeds: the default run plays ``FAILED_SEEDS`` (seeds that once failed, kept as
regression cases) and ``DEFAULT_SEEDS``, ``ROUNDS`` rounds each. ``LOFT_MODEL_SEED=N``
replays seed N alone; ``LOFT_MODEL_SEEDS=N`` adds N fresh random seeds (printed, and
named in the test id); ``LOFT_MODEL_ROUNDS=N`` plays N rounds per seed (the first
rounds of a seed are the same whatever N). Each seed ends by printing its figures
(rounds by kind, operations, refused ones, kills of mounts and of the server, faults
that fired). A replay makes the same choices as long as the trees match; online
rounds depend on when each change arrives, so a replay of those may take another
path.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import Device, Mount, Server, unmount_and_check
from tests.devices import (
    assert_applied_once,
    converge,
    detach_killed,
    differences,
    journal,
    kill_9,
    login_device,
    mount,
    mount_pid,
    show,
    status,
    synced,
    tree,
)
from tests.faultproxy import FaultProxy
from tests.polling import pending

FAILED_SEEDS: list[int] = [1663193590, 2901599308, 1657870446, 3358372242, 3245016795]
"""Seeds that found a bug once: played in every run, before the others. The first
three found, with ``LOFT_MODEL_ROUNDS=8``, a view that did not show a remote entry
after a change laid over it was refused (the reconciler now re-reads what its last
replay covered, and what a folder coming back into sight holds); 3358372242 (round 4
of 8) a view that kept hiding two remote entries after the feed echoed the commit
that had hidden them (an echo now re-reads what the records it retires touched).
Later, on a loaded machine, 2901599308 found a mount that ended when the server was
killed while its acknowledged commits waited for their echo. 3245016795 (round 0)
found a chmod and its undo, folded offline into one setattr of the mode the entry had,
stored as a second copy of the version before (the server now makes no version of a
setattr that changes nothing)."""

DEFAULT_SEEDS = [101, 202, 303]
ROUNDS = int(os.environ.get("LOFT_MODEL_ROUNDS") or 4)
KINDS = ["alone", "both", "offline", "one_offline"]
FILES = ["a", "b", "c"]
FOLDERS = ["p", "q"]
MODES = [0o600, 0o640, 0o644, 0o664]
KILL_CHANCE = 0.3
"""The chance that a round kills one mount between two of its operations (and one of
the first four rounds of each seed always does)."""
SERVER_KILL_CHANCE = 0.1
"""The chance that a round with a device online kills the server between two of its
operations."""
NET_FAULTS = ["lost_reply", "cut_upload", "stall", "flap"]
NET_FAULT_CHANCE = 0.2
"""The chance that a round with a device online gives it one of ``NET_FAULTS``. One
such round of the first four of each seed always has one of the two, server kill or
network fault, at even odds."""
LOST_REPLAY_CHANCE = 0.2
"""The chance that a device restored after a cut loses the reply to its replay's
first commit."""
COMMIT = b"/commit HTTP"
"""In a commit's request line only: the request whose reply ``lost_reply`` cuts."""
CHUNKS = b"/v1/chunks"
"""In the request line of every chunk request (which are missing, uploads, fetches)."""

T = TypeVar("T")

View = dict[str, bytes | str]
"""A tree as ``tree()`` reads it: path → content, or ``"dir"``."""


def seeds() -> list[int]:
    if replay := os.environ.get("LOFT_MODEL_SEED"):
        return [int(replay)]
    extra = int(os.environ.get("LOFT_MODEL_SEEDS") or 0)
    # One draw for the whole run: pytest-xdist's workers collect alike (they share the
    # run's id), else each would draw its own seeds.
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    draw = random.Random(run) if run else random.SystemRandom()
    fresh = [draw.randrange(2**32) for _ in range(extra)]
    return FAILED_SEEDS + DEFAULT_SEEDS + fresh


# --- operations ----------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One file operation on a device, by paths relative to its mount point."""

    kind: str
    path: str
    target: str = ""
    data: bytes = b""
    size: int = 0
    mode: int = 0

    def __str__(self) -> str:
        extra = {
            "write": f" {len(self.data)} bytes",
            "append": f" {len(self.data)} bytes",
            "truncate": f" to {self.size}",
            "rename": f" -> {self.target}",
            "chmod": f" {self.mode:o}",
        }.get(self.kind, "")
        return f"{self.kind} {self.path}{extra}"

    def run(self, root: Path) -> None:
        path = root / self.path
        if self.kind == "write":
            path.write_bytes(self.data)
        elif self.kind == "append":
            with open(path, "ab") as f:
                f.write(self.data)
        elif self.kind == "truncate":
            os.truncate(path, self.size)
        elif self.kind == "rename":
            os.rename(path, root / self.target)
        elif self.kind == "delete":
            os.unlink(path)
        elif self.kind == "mkdir":
            os.mkdir(path)
        elif self.kind == "rmdir":
            os.rmdir(path)
        elif self.kind == "chmod":
            os.chmod(path, self.mode)
        else:
            raise AssertionError(f"unknown operation {self.kind}")

    def apply(self, view: View) -> None:
        """What the operation did, once it succeeded, to a model of the device's tree."""
        if self.kind == "write":
            view[self.path] = self.data
        elif self.kind == "append":
            view[self.path] = content(view, self.path) + self.data
        elif self.kind == "truncate":
            old = content(view, self.path)
            view[self.path] = old[: self.size] + b"\0" * max(0, self.size - len(old))
        elif self.kind == "rename" and self.target != self.path:
            view.pop(self.target, None)
            inside = [p for p in view if p == self.path or p.startswith(self.path + "/")]
            for old_path in inside:
                view[self.target + old_path[len(self.path) :]] = view.pop(old_path)
        elif self.kind in ("delete", "rmdir"):
            view.pop(self.path, None)
        elif self.kind == "mkdir":
            view[self.path] = "dir"

    def made(self, view: View) -> bytes | None:
        """The content this operation left in the file it wrote, if it wrote one."""
        if self.kind in ("write", "append", "truncate"):
            return content(view, self.path)
        return None


def content(view: View, path: str) -> bytes:
    """A file's content in the model (empty if the model lost track of it: the
    comparison with the device's tree at the end of the round shows that)."""
    value = view.get(path)
    return value if isinstance(value, bytes) else b""


def listing(root: Path) -> tuple[list[str], list[str]]:
    """The folders (``""`` first, for the top) and the files under ``root``, by path."""
    folders, files = [""], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        folders += sorted(prefix + name for name in dirnames)
        files += sorted(prefix + name for name in filenames)
    return folders, files


def readable(root: Path) -> set[bytes]:
    """The contents of the files under ``root`` that read without the server: what a
    device wrote itself always does; a remote file whose content was not fetched before
    the server died fails with ``EIO`` and is left out."""
    found = set()
    for path in listing(root)[1]:
        try:
            found.add((root / path).read_bytes())
        except OSError:
            continue
    return found


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


class Generator:
    """Random operations on the names a device shows now, with unique contents."""

    def __init__(self, rng: random.Random, seed: int) -> None:
        self.rng = rng
        self.seed = seed
        self.count = 0

    def data(self, side: str) -> bytes:
        self.count += 1
        line = f"seed {self.seed} op {self.count} on {side} {self.rng.randrange(10**9)}\n"
        return line.encode() * self.rng.choice([1, 1, 1, 40, 4000])

    def next(self, root: Path, side: str) -> Op:
        rng = self.rng
        folders, files = listing(root)
        shallow = [f for f in folders if f.count("/") < 1]
        kind = rng.choices(
            ["write", "append", "truncate", "rename", "move_folder", "delete", "mkdir", "rmdir",
             "chmod"],
            weights=[3, 1, 1, 3, 2, 1, 1, 1, 1],
        )[0]  # fmt: skip
        if kind in ("append", "truncate", "rename", "delete", "chmod") and not files:
            kind = "write"
        if kind in ("move_folder", "rmdir") and len(folders) == 1:
            kind = "mkdir"
        if kind == "write":
            return Op("write", join(rng.choice(folders), rng.choice(FILES)), data=self.data(side))
        if kind == "append":
            return Op("append", rng.choice(files), data=self.data(side))
        if kind == "truncate":
            path = rng.choice(files)
            try:
                size = (root / path).stat().st_size
            except OSError:
                size = 0
            return Op("truncate", path, size=rng.randint(0, size))
        if kind == "rename":
            target = join(rng.choice(folders), rng.choice(FILES))
            return Op("rename", rng.choice(files), target=target)
        if kind == "move_folder":
            target = join(rng.choice(shallow), rng.choice(FOLDERS))
            return Op("rename", rng.choice(folders[1:]), target=target)
        if kind == "delete":
            return Op("delete", rng.choice(files))
        if kind == "mkdir":
            return Op("mkdir", join(rng.choice(shallow), rng.choice(FOLDERS)))
        if kind == "rmdir":
            return Op("rmdir", rng.choice(folders[1:]))
        return Op("chmod", rng.choice(files), mode=rng.choice(MODES))


# --- devices ---------------------------------------------------------------------------


@dataclass
class Side:
    """One mounted device and the network between it and the server."""

    name: str
    device: Device
    proxy: FaultProxy
    mount: Mount
    offline: bool = False
    tracked: bool = False
    """Its operations change ``view`` and add to ``made``: it is cut, or its server down."""
    view: View = field(default_factory=dict)
    """While tracked: the model of what the device shows."""
    made: set[bytes] = field(default_factory=set)
    """While tracked: every content its operations wrote this round."""

    @property
    def path(self) -> Path:
        return self.mount.path

    def cut(self, start: View) -> None:
        self.proxy.cut()
        self.offline = True
        self.track(start)

    def track(self, start: View) -> None:
        self.tracked = True
        self.view, self.made = dict(start), set()

    def restore(self) -> None:
        self.proxy.restore()
        self.offline = False

    def crash(self) -> None:
        """``kill -9`` of the mount process, then the device mounted again."""
        kill_9(mount_pid(self.device))
        detach_killed(self.path)
        self.mount = mount(self.device, self.path)


@dataclass
class NetFault:
    """A fault of an online device's network, from operation ``at`` of a round on.

    ``lost_reply``: its next commit is applied and the reply cut (the device retries a
    commit the server applied: op ids make it count once); ``cut_upload``: every
    connection cut ``budget`` bytes after a chunk request began (mostly inside an
    upload); ``stall``: nothing moves, requests wait; ``flap``: every connection cut,
    new ones refused. It lasts ``hold`` operations (for the first two, once it fired),
    then the network is restored."""

    kind: str
    side: Side
    at: int
    hold: int
    budget: int
    fired_at: int | None = None
    over: bool = False

    def __str__(self) -> str:
        into = f" {self.budget} bytes in" if self.kind == "cut_upload" else ""
        return f"{self.kind}{into} on {self.side.name}"

    @property
    def on_trip(self) -> bool:
        """It fires when the proxy trips, not when it is armed."""
        return self.kind in ("lost_reply", "cut_upload")

    def tick(self, step: int, log: list[str]) -> None:
        """Before operation ``step``: arm the fault, or restore once it lasted."""
        proxy = self.side.proxy
        if step == self.at:
            log.append(f"  {self}")
            if self.kind == "lost_reply":
                proxy.cut_reply(COMMIT)
            elif self.kind == "cut_upload":
                proxy.cut_after(self.budget, after=CHUNKS)
            elif self.kind == "stall":
                proxy.stall()
            else:
                proxy.cut()
            self.fired_at = None if self.on_trip else step
        elif step > self.at and not self.over:
            if self.fired_at is None and proxy.tripped.is_set():
                self.fired_at = step
                log.append(f"  ({self.kind} on {self.side.name} fired)")
            if self.fired_at is not None and step >= self.fired_at + self.hold:
                self.end(log)

    def finish(self, log: list[str]) -> None:
        """After the round's operations: a fault waiting for its trip waits until it
        fires or the device has nothing left to send; then the network is restored."""
        if self.over or self.at < 0:
            return
        if self.on_trip and self.fired_at is None and fired_or_idle(self.side):
            self.fired_at = self.at
            log.append(f"  ({self.kind} on {self.side.name} fired)")
        self.end(log)

    def end(self, log: list[str]) -> None:
        self.side.proxy.restore()
        self.over = True
        log.append(f"  network of {self.side.name} restored")


def lost_replay(side: Side) -> bool:
    """Restore a cut device so that the reply to its first commit is lost (the server
    applied it), then restore it for good; True if a commit went out."""
    side.proxy.cut_reply(COMMIT)
    fired = fired_or_idle(side)
    side.restore()
    return fired


def fired_or_idle(side: Side) -> bool:
    """Wait until the fault armed on the device's proxy fired, or the device has nothing
    left to send (so it never will); True if it fired."""
    status(side.mount, lambda t: side.proxy.tripped.is_set() or pending(t) == 0)
    return side.proxy.tripped.is_set()


def log_tail(side: Side, lines: int = 25) -> str:
    """The end of the device's mount log, for a failure's message."""
    try:
        text = (side.device.home / "mount.log").read_text(errors="replace")
    except OSError as exc:
        return f"\n{side.name}'s mount.log: {exc.strerror}"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n{side.name}'s mount.log, last {lines} lines:\n{tail}"


def fsck(side: Side) -> None:
    """``loft fsck --home`` of the device must find its own state clean."""
    result = side.device.run("fsck", "--home", str(side.device.home))
    usage = result.returncode == 2 and "usage:" in result.stderr
    if usage and ("--data" in result.stderr or "unrecognized" in result.stderr):
        # ``loft fsck --home DIR`` (the device's own check, in DESIGN.md's command line)
        # is expected; a build that lacks it answers with a usage error: skip only this.
        return
    assert result.returncode == 0, (
        f"loft fsck --home of {side.name}: {result.stdout}{result.stderr}"
    )


# --- rounds ----------------------------------------------------------------------------


@dataclass
class Player:
    seed: int
    rng: random.Random
    a: Side
    b: Side
    reader: Device
    server: Server
    first: list[str]
    """The kinds of the first rounds (every kind once)."""
    log: list[str] = field(default_factory=list)
    figures: Counter[str] = field(default_factory=Counter)
    """What the seed played: rounds by kind, operations, kills, faults that fired."""
    generator: Generator = field(init=False)
    kill_round: int = field(init=False)
    """A round that kills a mount whatever the dice say (others: ``KILL_CHANCE``)."""
    faults: random.Random = field(init=False)
    """The dice of the server kills and network faults, apart from ``rng`` so that a
    seed found before they existed plays the same operations."""
    server_round: int = field(init=False)
    fault_round: int = field(init=False)
    """A round that kills the server, or faults a network, whatever the dice say (one
    of the two is -1)."""
    committed: list[dict[str, object]] = field(default_factory=list)
    """The server's journal read right before it was killed."""

    def __post_init__(self) -> None:
        self.generator = Generator(self.rng, self.seed)
        self.kill_round = self.rng.randrange(len(KINDS))
        self.faults = random.Random(f"faults of seed {self.seed}")
        online = [n for n, kind in enumerate(self.first[:ROUNDS]) if kind != "offline"] or [-1]
        self.server_round = self.fault_round = -1
        if self.faults.random() < 0.5:
            self.server_round = self.faults.choice(online)
        else:
            self.fault_round = self.faults.choice(online)

    def prepare(self) -> None:
        """A first tree to collide on, made by A and synced to B."""
        data = self.generator.data
        for op in (
            Op("mkdir", "p"),
            Op("mkdir", "q"),
            Op("write", "a", data=data("A")),
            Op("write", "b", data=data("A")),
            Op("write", "p/a", data=data("A")),
            Op("write", "q/b", data=data("A")),
        ):
            op.run(self.a.path)
        self.settle(-1)

    def fail(self, what: str) -> str:
        steps = "\n".join(self.log)
        logs = "".join(log_tail(side) for side in (self.a, self.b))
        return f"seed {self.seed}: {what}\nthe round's steps:\n{steps}{logs}"

    def plan_fault(self, number: int, count: int, online: list[Side]) -> NetFault:
        """The round's network fault, if it has one (else one that never arms)."""
        dice = self.faults
        if not online or (number != self.fault_round and dice.random() >= NET_FAULT_CHANCE):
            return NetFault("none", self.a, -1, 0, 0, over=True)
        kind = dice.choice(NET_FAULTS)
        budget = int(10 ** dice.uniform(0, 5))
        return NetFault(
            kind, dice.choice(online), dice.randrange(count), dice.randint(0, 3), budget
        )

    def round(self, number: int, kind: str) -> None:
        rng, a, b = self.rng, self.a, self.b
        start: View = tree(a.path)
        cut: dict[str, list[Side]] = {"alone": [], "both": [], "offline": [a, b]}
        cut["one_offline"] = [rng.choice([a, b])] if kind == "one_offline" else []
        for side in cut[kind]:
            side.cut(start)
        count = rng.randint(8, 15)
        kill = number == self.kill_round or rng.random() < KILL_CHANCE
        kill_at = rng.randrange(count) if kill else -1
        victim = rng.choice([a, b])
        working = [a] if kind == "alone" else [a, b]
        online = [side for side in working if side not in cut[kind]]
        down = bool(online) and (
            number == self.server_round or self.faults.random() < SERVER_KILL_CHANCE
        )
        server_kill_at = self.faults.randrange(count) if down else -1
        fault = self.plan_fault(number, count, online)
        self.log = [f"round {number}: {kind}, cut {[s.name for s in cut[kind]]}"]
        self.figures.update(["rounds", kind])
        for step in range(count):
            if step == kill_at:
                self.log.append(f"  kill -9 of {victim.name}'s mount")
                self.figures["mount kills"] += 1
                victim.crash()
            if step == server_kill_at:
                self.kill_server()
            fault.tick(step, self.log)
            side = a if kind == "alone" else rng.choice([a, b])
            op = self.generator.next(side.path, side.name)
            self.figures["operations"] += 1
            try:
                op.run(side.path)
            except OSError as exc:
                self.log.append(f"  {side.name}: {op}: skipped ({exc.strerror})")
                self.figures["refused"] += 1
                continue
            self.log.append(f"  {side.name}: {op}")
            if side.tracked:
                before = content(side.view, op.path)
                op.apply(side.view)
                # A truncate to the size a file has (or a write of what it holds) writes
                # no new content: another device may replace that file as it was.
                if (made := op.made(side.view)) is not None and made != before:
                    side.made.add(made)

        kept = self.kept(number, cut[kind])
        if self.server.proc is None:
            self.restart_server(number)
        self.wait(number, lambda: fault.finish(self.log))
        if fault.fired_at is not None:
            self.figures[fault.kind] += 1
        offline = list(cut[kind])
        rng.shuffle(offline)
        for position, side in enumerate(offline):
            if self.faults.random() < LOST_REPLAY_CHANCE:
                self.log.append(f"  restore {side.name}, losing the reply to its first commit")
                if self.wait(number, functools.partial(lost_replay, side)):
                    self.log.append(f"  (the reply to {side.name}'s commit was lost)")
                    self.figures["lost_reply"] += 1
            self.log.append(f"  restore {side.name}")
            side.restore()
            if position == 0 and len(offline) > 1 and rng.random() < 0.5:
                synced(side.mount)  # its changes reach the server first

        self.settle(number)
        final = tree(a.path)
        contents = {value for value in final.values() if isinstance(value, bytes)}
        for name, written in kept.items():
            lost = [show(value) for value in sorted(written - contents)]
            assert not lost, self.fail(
                f"round {number}: content written on {name} while it was offline"
                f" or its server down is lost: {lost}"
            )
        for side in (a, b):
            side.tracked = False
            fsck(side)

    def kept(self, number: int, cut: list[Side]) -> dict[str, set[bytes]]:
        """What each tracked device shows, at the end of its operations, of the contents
        it wrote meanwhile: all of it must reach the converged tree. A device cut for
        the whole round must show exactly its model."""
        kept: dict[str, set[bytes]] = {}
        for side in (self.a, self.b):
            if side in cut:
                shown = tree(side.path)
                wrong = differences({"shown": shown, "model": side.view})
                assert not wrong, self.fail(
                    f"round {number}: {side.name}, offline, does not show what its own"
                    " operations made:\n" + "\n".join(wrong)
                )
                kept[side.name] = {v for v in shown.values() if isinstance(v, bytes)} & side.made
            elif side.tracked:
                kept[side.name] = readable(side.path) & side.made
        return kept

    def kill_server(self) -> None:
        """``kill -9`` of the server; from then on each device's operations are tracked
        as if it were cut (what it shows of the server's tree is its start)."""
        starts = {side.name: tree(side.path) for side in (self.a, self.b) if not side.tracked}
        self.committed = journal(self.reader)
        self.server.kill()
        self.log.append("  kill -9 of the server")
        self.figures["server kills"] += 1
        for side in (self.a, self.b):
            if side.name in starts:
                side.track(starts[side.name])

    def restart_server(self, number: int) -> None:
        """The killed server started again on its stores and port: every version it had
        committed before the kill is still in its journal, in the same place."""
        self.server.start()
        self.log.append("  server started again")
        after = journal(self.reader)
        if after[: len(self.committed)] != self.committed:
            lost = [r for r in self.committed if r not in after]
            pytest.fail(
                self.fail(
                    f"round {number}: the restarted server's journal lost or changed"
                    f" {len(lost)} committed version(s): {lost[:5]}"
                ),
                pytrace=False,
            )

    def wait(self, number: int, until: Callable[[], T]) -> T:
        """``until()``, whose waits fail the round with its steps, not a bare assertion."""
        try:
            return until()
        except AssertionError as exc:
            pytest.fail(self.fail(f"round {number}: {exc}"), pytrace=False)

    def settle(self, number: int) -> None:
        """Both synced (online, nothing pending), one tree on A, B and the server, and
        no operation applied twice in the server's journal."""
        try:
            synced(self.a.mount)
            synced(self.b.mount)
            converge(self.a.mount, self.b.mount, server=self.reader)
            assert_applied_once(journal(self.reader))
        except AssertionError as exc:
            states = "".join(
                f"\n{s.name}'s loft status:\n{s.mount.status()}" for s in (self.a, self.b)
            )
            pytest.fail(self.fail(f"round {number} did not settle: {exc}{states}"), pytrace=False)


@pytest.fixture
def sides(mount_server: Server, tmp_path: Path) -> Iterator[tuple[Side, Side, Device]]:
    """A and B mounted, each through its own proxy, and C (the server's reader)."""
    user = f"model{os.getpid()}x{time.monotonic_ns() % 10**9}"
    mount_server.add_user(user)
    with FaultProxy(mount_server.port) as px_a, FaultProxy(mount_server.port) as px_b:
        made: list[Side] = []
        try:
            for name, px in (("A", px_a), ("B", px_b)):
                dev = login_device(mount_server, px.url, user, tmp_path / f"home-{name}", name)
                made.append(Side(name, dev, px, mount(dev, tmp_path / f"mnt-{name}")))
            reader = login_device(mount_server, mount_server.url, user, tmp_path / "home-C", "C")
            yield made[0], made[1], reader
        finally:
            if mount_server.proc is None:  # killed by a round that failed
                mount_server.start()
            px_a.restore()
            px_b.restore()
            unmount_and_check(side.mount for side in made)


@pytest.mark.timeout(120 + 60 * ROUNDS)
@pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
def test_two_devices_converge_and_lose_nothing(
    seed: int, sides: tuple[Side, Side, Device], mount_server: Server
) -> None:
    a, b, reader = sides
    rng = random.Random(seed)
    print(f"model seed {seed} (replay: LOFT_MODEL_SEED={seed}), {ROUNDS} rounds")
    first = rng.sample(KINDS, len(KINDS))  # every kind once, then at random
    player = Player(seed, rng, a, b, reader, mount_server, first)
    player.prepare()
    for number in range(ROUNDS):
        started = time.monotonic()
        player.round(number, first[number] if number < len(first) else rng.choice(KINDS))
        print("\n".join(player.log))
        print(f"  ({time.monotonic() - started:.1f}s)")
    print("figures: " + ", ".join(f"{key} {n}" for key, n in sorted(player.figures.items())))
