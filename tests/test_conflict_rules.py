"""The conflict rules, row by row, in both orders, on two real mounts of one user.

Devices A and B are real ``loft mount`` processes, each reaching the server only
through its own ``FaultProxy``; a third device, C, only reads the server (its API,
with C's token). Every row lives in a folder of its own (``rowN/``) of one tree:
the "before" state is made through A and reaches B and the server; both networks
are cut; A and B make their changes (each one journaled offline); then the device
that goes *first* is restored and synced (its changes reach the server first), then
the other. Once both are synced, each test checks one row: A's, B's and the
server's trees of the row are equal, the row is exactly the rule's outcome, and
``loft status`` of both shows nothing pending. The whole sequence runs once per
order (``a_first``, ``b_first``).

The rules the engine implements: content that cannot keep its name becomes a
conflicted copy (``NAME (conflicted copy from DEVICE YYYY-MM-DD HHMMSS[ N]).EXT``);
an entry placed into a folder deleted elsewhere goes to its nearest surviving former
ancestor; a delete of something changed elsewhere (edited, renamed, or a folder that
gained children) is dropped; of two renames or attribute changes the later commit
wins; a move that would make a cycle is dropped.

=== ================== ======================= ======================= =========================
row before             A does                  B does                  outcome
=== ================== ======================= ======================= =========================
1   f=v1               mv f g                  write f=v2              g=v2 only
2   f=v1               chmod 600 f             write f=v2              f=v2, mode 0600
3   f=v1               mv f g                  rm f                    g=v1 only
4   x=x1, y=y1         mv x y                  write y=y2              y=x1, a copy of y (y2)
5   x=x1, y=y1         mv x y                  rm x                    y=x1 only
6   d0/f0, empty d1    rename d0 over d1       write d1/f1             B first: d1 kept; one of
                                                                       the two folders at d1, the
                                                                       other a copy of d1; A first:
                                                                       d1/f0 and f1 in rowN/
7   x=x1, y=y1         mv x y                  mv y z                  y=x1, z=y1
8   d0/f0, d1/f1       mv d1 d0/d1             mv d0 d1/d0             the first's move only
9   h.txt=base, dir d  write d/h.txt=new,      write h.txt=theirs,     B first: h.txt=theirs,
                       write h.txt=mine        rm -r d                 copies of h.txt (mine,
                                                                       new); A first: h.txt=mine,
                                                                       d/h.txt=new, a copy of
                                                                       h.txt (theirs)
10  dirs d1, d2        mkdir d1/d2, rmdir d2   rmdir d1                converged, nothing pending
11  other              create f=mine           create f=theirs, rm f   f=mine
12  f=v1               write f=a               write f=b               the first's at f, the
                                                                       second's as a copy of f
13  f=v1               write f=a               rm f                    B first: a copy of f (a);
                                                                       A first: f=a
14  d/old              rm -r d                 write d/new             B first: d/new only;
                                                                       A first: new in rowN/
15  (nothing)          create f=a              create f=b              the first's at f, the
                                                                       second's as a copy of f
16  dir d, f=v1        mv f d/f                rmdir d                 B first: f in rowN/;
                                                                       A first: d/f
17  f=v1               chmod 600 f             chmod 640 f             the second's mode
=== ================== ======================= ======================= =========================

Rows 1-11 are the cases the sync engine must get right; 12-17 are the written rules.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Device, Mount, Server, unmount_and_check
from tests.devices import (
    converge,
    differences,
    login_device,
    modes,
    mount,
    mount_line,
    server_entries,
    server_tree,
    status,
    synced,
    tree,
)
from tests.faultproxy import FaultProxy
from tests.polling import pending

ORDERS = ["a_first", "b_first"]

COPY = re.compile(
    r"(?P<stem>.+?) \(conflicted copy from [^()/]+ \d{4}-\d\d-\d\d \d{6}(?: \d+)?\)"
    r"(?P<ext>\.[^./]*)?"
)
"""A conflicted copy's name; the device, time and number are not asserted."""


def c(row: int, text: str) -> bytes:
    """The unique content ``text`` of row ``row``, as the steps write it."""
    return f"row{row} {text}\n".encode()


def cc(name: str) -> str:
    """The canonical form (see ``shape``) of a conflicted copy of ``name``."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} (conflicted copy)"
    return f"{stem} (conflicted copy).{ext}"


# --- the steps of a row --------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One file operation, run inside a row's folder."""

    what: str
    run: Callable[[Path], None]


def write(name: str, text: str) -> Step:
    def run(row: Path) -> None:
        (row / name).write_bytes(f"{row.name} {text}\n".encode())

    return Step(f"write {name}={text}", run)


def mkdir(name: str) -> Step:
    return Step(f"mkdir {name}", lambda row: (row / name).mkdir())


def move(src: str, dst: str) -> Step:
    return Step(f"mv {src} {dst}", lambda row: os.rename(row / src, row / dst))


def remove(name: str) -> Step:
    return Step(f"rm {name}", lambda row: (row / name).unlink())


def rmdir(name: str) -> Step:
    return Step(f"rmdir {name}", lambda row: (row / name).rmdir())


def rmtree(name: str) -> Step:
    return Step(f"rm -r {name}", lambda row: shutil.rmtree(row / name))


def chmod(name: str, mode: int) -> Step:
    return Step(f"chmod {mode:o} {name}", lambda row: os.chmod(row / name, mode))


@dataclass(frozen=True)
class Row:
    before: list[Step]
    on_a: list[Step]
    on_b: list[Step]


ROWS: dict[int, Row] = {
    1: Row([write("f", "v1")], [move("f", "g")], [write("f", "v2")]),
    2: Row([write("f", "v1")], [chmod("f", 0o600)], [write("f", "v2")]),
    3: Row([write("f", "v1")], [move("f", "g")], [remove("f")]),
    4: Row([write("x", "x1"), write("y", "y1")], [move("x", "y")], [write("y", "y2")]),
    5: Row([write("x", "x1"), write("y", "y1")], [move("x", "y")], [remove("x")]),
    6: Row(
        [mkdir("d0"), write("d0/f0", "f0"), mkdir("d1")], [move("d0", "d1")], [write("d1/f1", "f1")]
    ),
    7: Row([write("x", "x1"), write("y", "y1")], [move("x", "y")], [move("y", "z")]),
    8: Row(
        [mkdir("d0"), write("d0/f0", "f0"), mkdir("d1"), write("d1/f1", "f1")],
        [move("d1", "d0/d1")],
        [move("d0", "d1/d0")],
    ),
    9: Row(
        [write("h.txt", "base"), mkdir("d")],
        [write("d/h.txt", "new"), write("h.txt", "mine")],
        [write("h.txt", "theirs"), rmtree("d")],
    ),
    10: Row([mkdir("d1"), mkdir("d2")], [mkdir("d1/d2"), rmdir("d2")], [rmdir("d1")]),
    11: Row([write("other", "other")], [write("f", "mine")], [write("f", "theirs"), remove("f")]),
    12: Row([write("f", "v1")], [write("f", "a")], [write("f", "b")]),
    13: Row([write("f", "v1")], [write("f", "a")], [remove("f")]),
    14: Row([mkdir("d"), write("d/old", "old")], [rmtree("d")], [write("d/new", "new")]),
    15: Row([], [write("f", "a")], [write("f", "b")]),
    16: Row([mkdir("d"), write("f", "v1")], [move("f", "d/f")], [rmdir("d")]),
    17: Row([write("f", "v1")], [chmod("f", 0o600)], [chmod("f", 0o640)]),
}


def run_steps(steps: list[Step], row: Path, device: str) -> list[str]:
    """Run ``steps`` in order; the first that fails stops them and is returned."""
    for step in steps:
        try:
            step.run(row)
        except OSError as exc:
            return [f"{device}: {step.what} failed: {exc!r}"]
    return []


# --- the outcome -----------------------------------------------------------------------


def row_of(files: dict[str, Any], n: int) -> dict[str, Any]:
    """The part of a tree under ``rowN/``, with paths relative to it."""
    prefix = f"row{n}/"
    return {path[len(prefix) :]: v for path, v in files.items() if path.startswith(prefix)}


def shape(files: dict[str, Any]) -> Counter[tuple[str, Any]]:
    """The tree as a multiset of (path, value), each conflicted copy's name written as
    ``cc(name)``: two copies of one name count twice."""

    def canonical(part: str) -> str:
        match = COPY.fullmatch(part)
        return cc(match["stem"] + (match["ext"] or "")) if match else part

    return Counter(
        ("/".join(canonical(part) for part in path.split("/")), value)
        for path, value in files.items()
    )


def assert_shape(files: dict[str, Any], *expected: tuple[str, Any]) -> None:
    assert shape(files) == Counter(expected), f"row holds {sorted(files.items())}"


def assert_one_of(files: dict[str, Any], *alternatives: list[tuple[str, Any]]) -> None:
    """The tree has one of the shapes the rules allow where they leave a choice."""
    allowed = [Counter(expected) for expected in alternatives]
    assert shape(files) in allowed, f"row holds {sorted(files.items())}"


def holders(files: dict[str, Any], content: bytes) -> list[str]:
    return sorted(path for path, value in files.items() if value == content)


@dataclass
class Outcome:
    """The converged trees of one order, and what went wrong on the way."""

    order: str
    on_a: dict[str, Any] = field(default_factory=dict)
    on_b: dict[str, Any] = field(default_factory=dict)
    on_server: dict[str, Any] = field(default_factory=dict)
    bits: dict[str, dict[str, int]] = field(default_factory=dict)
    """Permission bits: "A", "B" or "server" → path → mode."""
    errors: dict[int, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Waits that ran out: a device not synced after its restore."""
    statuses: dict[str, str] = field(default_factory=dict)

    @property
    def b_first(self) -> bool:
        return self.order == "b_first"

    def files(self, n: int) -> dict[str, Any]:
        """Row ``n`` as A, B and the server all show it, after checking that its steps
        all ran and that the three agree."""
        assert not self.errors.get(n), self.errors[n]
        a, b, server = (row_of(t, n) for t in (self.on_a, self.on_b, self.on_server))
        assert a == b == server, "\n".join(differences({"A": a, "B": b, "server": server}))
        return a

    def mode(self, n: int, path: str) -> int:
        """The permission bits of ``rowN/path``, the same on A, B and the server."""
        found = {where: modes.get(f"row{n}/{path}") for where, modes in self.bits.items()}
        assert len(set(found.values())) == 1, found
        mode = next(iter(found.values()))
        assert mode is not None, found
        return mode

    def settled(self) -> None:
        """Both devices synced: online, nothing pending."""
        assert not self.problems, "\n".join(self.problems)
        for name, text in self.statuses.items():
            assert pending(text) == 0, f"{name}: {text}"
            assert mount_line(text).endswith(", online"), f"{name}: {text}"


def play(
    order: str, a: Mount, b: Mount, px_a: FaultProxy, px_b: FaultProxy, reader: Device
) -> Outcome:
    """The whole sequence of one order (see the module docstring)."""
    outcome = Outcome(order)
    for n, row in ROWS.items():
        (a.path / f"row{n}").mkdir()
        assert not run_steps(row.before, a.path / f"row{n}", "A before")
    synced(a)
    converge(a, b, server=reader)

    px_a.cut()
    px_b.cut()
    for n, row in ROWS.items():
        errors = run_steps(row.on_a, a.path / f"row{n}", "A")
        errors += run_steps(row.on_b, b.path / f"row{n}", "B")
        if errors:
            outcome.errors[n] = errors

    first, second = [(a, px_a, "A"), (b, px_b, "B")][:: -1 if outcome.b_first else 1]
    for mnt, px, name in (first, second):
        px.restore()
        try:
            synced(mnt)
        except AssertionError as exc:
            outcome.problems.append(f"{name} not synced after its restore: {exc}\n{mnt.status()}")
    with contextlib.suppress(AssertionError):  # a row that differs fails its own test
        converge(a, b, server=reader)

    outcome.on_a, outcome.on_b, outcome.on_server = tree(a.path), tree(b.path), server_tree(reader)
    entries = server_entries(reader)
    outcome.bits = {
        "A": modes(a.path),
        "B": modes(b.path),
        "server": {path: entry["mode"] for path, entry in entries.items()},
    }
    for mnt, name in ((a, "A"), (b, "B")):
        outcome.statuses[name] = status(mnt, lambda t: True)
    return outcome


@pytest.fixture(scope="module", params=ORDERS)
def outcome(
    request: pytest.FixtureRequest,
    mount_server: Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Outcome]:
    order: str = request.param
    root = tmp_path_factory.mktemp(f"rules-{order}")
    user = f"rules{os.getpid()}{order.replace('_', '')}"
    mount_server.add_user(user)
    mounts: list[Mount] = []
    with FaultProxy(mount_server.port) as px_a, FaultProxy(mount_server.port) as px_b:
        a_dev = login_device(mount_server, px_a.url, user, root / "home-A", "A")
        b_dev = login_device(mount_server, px_b.url, user, root / "home-B", "B")
        reader = login_device(mount_server, mount_server.url, user, root / "home-C", "C")
        try:
            mounts.append(mount(a_dev, root / "mnt-A"))
            mounts.append(mount(b_dev, root / "mnt-B"))
            yield play(order, mounts[0], mounts[1], px_a, px_b, reader)
        finally:
            px_a.restore()
            px_b.restore()
            unmount_and_check(mounts)


def test_a_b_and_the_server_hold_the_same_tree(outcome: Outcome) -> None:
    trees = {"A": outcome.on_a, "B": outcome.on_b, "server": outcome.on_server}
    assert outcome.on_a == outcome.on_b == outcome.on_server, "\n".join(differences(trees))
    outcome.settled()


def test_nothing_lands_outside_the_row_folders(outcome: Outcome) -> None:
    """An entry whose folder is deleted elsewhere goes to its nearest surviving
    former ancestor: inside its row's folder, never above it."""
    rows = {f"row{n}" for n in ROWS}
    for files in (outcome.on_a, outcome.on_b, outcome.on_server):
        outside = sorted(path for path in files if path.split("/")[0] not in rows)
        assert not outside, outside
        assert {path.split("/")[0] for path in files} == rows
        assert all(files[row] == "dir" for row in rows)


# --- one test per row --------------------------------------------------------------------


def test_row01_a_rename_keeps_the_edit_made_elsewhere(outcome: Outcome) -> None:
    assert_shape(outcome.files(1), ("g", c(1, "v2")))
    outcome.settled()


def test_row02_a_chmod_and_an_edit_elsewhere_both_hold(outcome: Outcome) -> None:
    assert_shape(outcome.files(2), ("f", c(2, "v2")))
    assert outcome.mode(2, "f") == 0o600
    outcome.settled()


def test_row03_a_delete_of_a_file_renamed_elsewhere_is_dropped(outcome: Outcome) -> None:
    assert_shape(outcome.files(3), ("g", c(3, "v1")))
    outcome.settled()


def test_row04_a_rename_over_a_file_edited_elsewhere_keeps_the_edit_as_a_copy(
    outcome: Outcome,
) -> None:
    assert_shape(outcome.files(4), ("y", c(4, "x1")), (cc("y"), c(4, "y2")))
    outcome.settled()


def test_row05_a_delete_of_a_file_renamed_over_another_is_dropped(outcome: Outcome) -> None:
    assert_shape(outcome.files(5), ("y", c(5, "x1")))
    outcome.settled()


def test_row06_a_folder_renamed_over_an_empty_folder_filled_elsewhere_loses_nothing(
    outcome: Outcome,
) -> None:
    files = outcome.files(6)
    assert len(holders(files, c(6, "f0"))) == 1, sorted(files.items())
    assert len(holders(files, c(6, "f1"))) == 1, sorted(files.items())
    assert "d1" in files, sorted(files.items())
    if outcome.b_first:  # d1 gained f1 first: the replace's delete of d1 is dropped, and
        # of the two folders one keeps the name d1, the other is a conflicted copy of d1
        assert_one_of(
            files,
            [
                ("d1", "dir"),
                ("d1/f1", c(6, "f1")),
                (cc("d1"), "dir"),
                (f"{cc('d1')}/f0", c(6, "f0")),
            ],
            [
                ("d1", "dir"),
                ("d1/f0", c(6, "f0")),
                (cc("d1"), "dir"),
                (f"{cc('d1')}/f1", c(6, "f1")),
            ],
        )
    else:  # d1 replaced first: B's f1 goes to the nearest surviving folder
        assert_shape(files, ("d1", "dir"), ("d1/f0", c(6, "f0")), ("f1", c(6, "f1")))
    outcome.settled()


def test_row07_a_rename_over_a_file_renamed_elsewhere_keeps_both(outcome: Outcome) -> None:
    assert_shape(outcome.files(7), ("y", c(7, "x1")), ("z", c(7, "y1")))
    outcome.settled()


def test_row08_crossed_folder_moves_keep_the_first_and_make_no_cycle(outcome: Outcome) -> None:
    files = outcome.files(8)
    if outcome.b_first:
        expected = [
            ("d1", "dir"),
            ("d1/f1", c(8, "f1")),
            ("d1/d0", "dir"),
            ("d1/d0/f0", c(8, "f0")),
        ]
    else:
        expected = [
            ("d0", "dir"),
            ("d0/f0", c(8, "f0")),
            ("d0/d1", "dir"),
            ("d0/d1/f1", c(8, "f1")),
        ]
    assert_shape(files, *expected)
    outcome.settled()


def test_row09_edits_and_a_folder_delete_keep_every_content(outcome: Outcome) -> None:
    files = outcome.files(9)
    expected: list[tuple[str, Any]]
    if outcome.b_first:  # d is gone: A's d/h.txt lands in row9/, where h.txt is taken
        expected = [
            ("h.txt", c(9, "theirs")),
            (cc("h.txt"), c(9, "mine")),
            (cc("h.txt"), c(9, "new")),
        ]
    else:  # d gained a child first: B's delete of d is dropped
        expected = [
            ("h.txt", c(9, "mine")),
            ("d", "dir"),
            ("d/h.txt", c(9, "new")),
            (cc("h.txt"), c(9, "theirs")),
        ]
    assert_shape(files, *expected)
    outcome.settled()


def test_row10_a_folder_made_in_a_folder_deleted_elsewhere_converges(outcome: Outcome) -> None:
    outcome.files(10)
    outcome.settled()


def test_row11_a_name_created_and_deleted_elsewhere_leaves_the_local_file(
    outcome: Outcome,
) -> None:
    assert_shape(outcome.files(11), ("other", c(11, "other")), ("f", c(11, "mine")))
    outcome.settled()


def test_row12_edit_edit_keeps_the_first_and_the_second_as_a_copy(outcome: Outcome) -> None:
    first, second = ("b", "a") if outcome.b_first else ("a", "b")
    assert_shape(outcome.files(12), ("f", c(12, first)), (cc("f"), c(12, second)))
    outcome.settled()


def test_row13_edit_delete_keeps_the_edit(outcome: Outcome) -> None:
    files = outcome.files(13)
    assert len(holders(files, c(13, "a"))) == 1, sorted(files.items())
    if outcome.b_first:  # f is gone at the server: the edit cannot keep its name
        assert_shape(files, (cc("f"), c(13, "a")))
    else:  # f was edited first: the delete is dropped
        assert_shape(files, ("f", c(13, "a")))
    outcome.settled()


def test_row14_a_folder_delete_and_a_file_added_to_it_elsewhere(outcome: Outcome) -> None:
    if outcome.b_first:  # d gained a child first: the delete of d is dropped, of old holds
        assert_shape(outcome.files(14), ("d", "dir"), ("d/new", c(14, "new")))
    else:  # d is gone first: new goes to the nearest surviving folder
        assert_shape(outcome.files(14), ("new", c(14, "new")))
    outcome.settled()


def test_row15_create_create_keeps_the_first_and_the_second_as_a_copy(outcome: Outcome) -> None:
    first, second = ("b", "a") if outcome.b_first else ("a", "b")
    assert_shape(outcome.files(15), ("f", c(15, first)), (cc("f"), c(15, second)))
    outcome.settled()


def test_row16_a_move_into_a_folder_deleted_elsewhere(outcome: Outcome) -> None:
    if outcome.b_first:  # d is gone first: f lands in the nearest surviving folder
        assert_shape(outcome.files(16), ("f", c(16, "v1")))
    else:  # d gained f first: the delete of d is dropped
        assert_shape(outcome.files(16), ("d", "dir"), ("d/f", c(16, "v1")))
    outcome.settled()


def test_row17_chmod_chmod_the_later_commit_wins(outcome: Outcome) -> None:
    assert_shape(outcome.files(17), ("f", c(17, "v1")))
    assert outcome.mode(17, "f") == (0o600 if outcome.b_first else 0o640)
    outcome.settled()
