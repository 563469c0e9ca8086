"""Browsing and restoring the past: ``.versions`` in a mount, ``loft versions``,
``loft restore`` and ``loft snapshot``.

One random history checked instant by instant on a second device; one shared mount
(``story``: a file written three times then deleted, a folder changed) for the
listings, ``loft versions``, the read-only rules and snapshots; a folder of 1,000
files deleted in a mount and restored from a device without one (the only slow test);
``loft restore`` of single files through the command line alone.

Real mounts in their own processes against a real server on loopback. The oracle of
the past is the test's own record: after each change the test waits until the mount
has committed it (``drained``), asks the server for the time of its newest commit,
and keeps a model of the whole tree for that second; ``.versions`` must show exactly
that model, byte for byte, on another device.

Commit times are whole seconds. ``settle`` returns only once the second of the last
commit is over, so that the next change commits in a later second and every recorded
second holds a finished state (never half of the next step).
"""

from __future__ import annotations

import errno
import os
import random
import re
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from backend import protocol as p
from backend.history_client import History
from backend.sizes import human
from tests.conftest import Device, Mount, NewMount, Server, login, unmount_and_check
from tests.devices import (
    api,
    differences,
    drained,
    mount,
    remote_bytes,
    remote_names,
    server_entries,
    server_tree,
    tree,
)
from tests.polling import wait_for

VERSIONS = p.VERSIONS

ARRIVAL = 10.0
"""Seconds a commit made elsewhere (a restore, a snapshot) may take to show in a mount:
its follower, then the 2-second listing cache of ``.versions``."""

STEPS = 25
SEED = 20261202


# --- helpers -------------------------------------------------------------------------


def head_time(device: Device) -> int:
    """The second of the newest commit of the device's workspace (server time)."""
    answer = api(device, lambda c: History(c, device.root_ns).past(at=1 << 62, entry=p.ROOT_ID))
    return int(answer["time"])


def settle(mnt: Mount) -> int:
    """Wait until everything written through ``mnt`` is committed; the second of its
    last commit, returned once that second is over (what comes next commits later)."""
    drained(mnt)
    return past_second(head_time(mnt.device))


def past_second(when: int) -> int:
    """``when``, once that second is over."""
    wait_for(lambda: time.time() >= when + 1, 3, "the next second", interval=0.02)
    return when


def errno_of(call: Callable[[], Any]) -> str:
    """The errno name ``call`` fails with, or ``"no error"``."""
    try:
        call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "no error"


def open_close(path: Path, flags: int) -> None:
    os.close(os.open(path, flags, 0o644))


def one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a command that must fail cleanly (exit 1, no traceback)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("loft: "), result.stderr
    return lines[0]


def revisions(listing: str) -> list[int]:
    """The revisions ``loft versions`` printed, in its order."""
    return [int(m) for m in re.findall(r"rev (\d+)$", listing, re.M)]


def listed(path: Path) -> set[str]:
    return set(os.listdir(path))


# --- 1. time travel equals history ------------------------------------------------------


def under(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def random_step(rng: random.Random, root: Path, model: dict[str, Any], fresh: Iterator[str]) -> str:
    """One random change through the mount at ``root``, made to ``model`` too; what it was."""
    files = sorted(k for k, v in model.items() if v != "dir")
    folders = ["", *sorted(k for k, v in model.items() if v == "dir")]
    empty = [d for d in folders[1:] if not any(k.startswith(d + "/") for k in model)]
    kinds = ["write", "write", "mkdir"]
    kinds += ["overwrite", "overwrite", "rename", "delete"] if files else []
    kinds += ["move folder"] if len(folders) > 1 else []
    kinds += ["rmdir"] if empty else []
    kind = rng.choice(kinds)
    if kind in ("write", "overwrite"):
        path = under(rng.choice(folders), next(fresh)) if kind == "write" else rng.choice(files)
        model[path] = rng.randbytes(rng.randint(0, 300))
        (root / path).write_bytes(model[path])
        return f"{kind} {path} ({len(model[path])} bytes)"
    if kind == "mkdir":
        path = under(rng.choice(folders), next(fresh))
        (root / path).mkdir()
        model[path] = "dir"
        return f"mkdir {path}"
    if kind == "delete":
        path = rng.choice(files)
        (root / path).unlink()
        del model[path]
        return f"delete {path}"
    if kind == "rmdir":
        path = rng.choice(empty)
        (root / path).rmdir()
        del model[path]
        return f"rmdir {path}"
    source = rng.choice(files if kind == "rename" else folders[1:])
    into = [d for d in folders if d != source and not d.startswith(source + "/")]
    target = under(rng.choice(into), next(fresh))
    (root / source).rename(root / target)
    for key in [k for k in model if k == source or k.startswith(source + "/")]:
        model[target + key[len(source) :]] = model.pop(key)
    return f"{kind} {source} -> {target}"


def test_every_instant_shows_the_tree_exactly_as_it_was_then(new_mount: NewMount) -> None:
    """A seeded random history on device A; device B's ``/.versions/<instant>`` shows,
    for each recorded second, the tree as it was, byte for byte."""
    a = new_mount(None, "alpha")
    b = new_mount(a.device.user, "beta")
    rng = random.Random(SEED)
    fresh = (f"n{i}" for i in range(10**6))
    model: dict[str, Any] = {}
    history: dict[int, dict[str, Any]] = {}
    steps: list[str] = []
    before = int(time.time()) - 1
    for index in range(STEPS):
        steps.append(random_step(rng, a.path, model, fresh))
        assert tree(a.path) == model, steps
        history[settle(a)] = dict(model)
        if index == STEPS // 2:  # B now holds ``latest`` as it is mid-way
            assert tree(b.path / VERSIONS / p.LATEST) == model
    seconds = sorted(history)
    sample = sorted({seconds[0], seconds[-1], *rng.sample(seconds[1:-1], 6)})
    for when in sample:
        past = tree(b.path / VERSIONS / p.format_instant(when))
        shown = differences({"past": past, "model": history[when]})
        assert past == history[when], (p.format_instant(when), steps, shown)
    assert tree(b.path / VERSIONS / p.format_instant(before)) == {}
    days = {p.format_day(t) for t in seconds}
    assert {p.LATEST, *days} <= listed(b.path / VERSIONS)
    instants = set().union(*(listed(b.path / VERSIONS / day) for day in days))
    assert {p.format_instant(t) for t in seconds} <= instants
    assert all(instant[:10] in days for instant in instants), instants
    # ``latest`` follows the live tree (B looked at it mid-way: no stale view of it).
    live = tree(a.path)
    wait_for(lambda: tree(b.path / VERSIONS / p.LATEST) == live, 5, "latest shows the live tree")


# --- 2, 3, 5. one file's story on a shared mount --------------------------------------


@dataclass
class Story:
    """``docs/plan.txt`` written three times (``written``: commit second, content) and
    then deleted (``deleted``); ``docs/sub`` (holding ``a.txt``) made, then chmod 700
    (``folder``: its two commit seconds); ``docs/keep.txt`` lives on."""

    mount: Mount
    written: list[tuple[int, bytes]]
    deleted: int
    folder: list[int]

    @property
    def docs(self) -> Path:
        return self.mount.path / "docs"


@pytest.fixture(scope="module")
def story(mount_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    base = tmp_path_factory.mktemp("story")
    mnt = mount(login(mount_server, None, base, "laptop"), base / "mnt")
    docs = mnt.path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "keep.txt").write_bytes(b"kept")
    (docs / "sub" / "a.txt").write_bytes(b"in sub")
    folder = [settle(mnt)]
    written = []
    for index, data in enumerate([b"one", b"the second version", b"3" * 1000]):
        (docs / "plan.txt").write_bytes(data)
        if index == 2:
            (docs / "sub").chmod(0o700)
        written.append((settle(mnt), data))
    folder.append(written[-1][0])
    (docs / "plan.txt").unlink()
    yield Story(mnt, written, settle(mnt), folder)
    unmount_and_check([mnt])


def test_a_names_versions_show_each_version_with_its_time_device_size_and_mtime(
    story: Story,
) -> None:
    place = story.docs / VERSIONS / "plan.txt"
    names = sorted(os.listdir(place))
    assert names == [f"{p.format_instant(t)}@laptop" for t, _ in story.written]
    assert [(place / n).read_bytes() for n in names] == [data for _, data in story.written]
    assert [(place / n).stat().st_size for n in names] == [len(d) for _, d in story.written]
    mtimes = [(place / n).stat().st_mtime_ns for n in names]
    assert mtimes == sorted(mtimes)
    assert "plan.txt" in listed(story.docs / VERSIONS)
    assert "plan.txt" not in listed(story.docs)


def test_a_bare_instant_under_a_name_is_the_version_current_then(story: Story) -> None:
    place = story.docs / VERSIONS / "plan.txt"
    (first, one), (_, two), (third, three) = story.written
    assert (place / p.format_instant(first)).read_bytes() == one
    assert (place / p.format_instant(third - 1)).read_bytes() == two
    assert (place / p.format_instant(story.deleted - 1)).read_bytes() == three
    assert not (place / p.format_instant(first - 1)).exists()
    assert not (place / p.format_instant(story.deleted)).exists()


def test_a_folders_versions_are_folders_with_their_content_then(story: Story) -> None:
    place = story.docs / VERSIONS / "sub"
    names = sorted(os.listdir(place))
    assert names == [f"{p.format_instant(t)}@laptop" for t in story.folder]
    assert all(stat.S_ISDIR((place / n).stat().st_mode) for n in names)
    assert [stat.S_IMODE((place / n).stat().st_mode) == 0o700 for n in names] == [False, True]
    assert tree(place / names[-1]) == {"a.txt": b"in sub"}


def test_loft_versions_lists_every_version_newest_first(story: Story) -> None:
    """One line per version: when, the size (or ``deleted``), the device, the revision."""
    result = story.mount.device.run("versions", "/docs/plan.txt")
    assert result.returncode == 0, result.stderr
    whats = [(story.deleted, "deleted")] + [(t, human(len(d))) for t, d in story.written[::-1]]
    expected = [[p.format_instant(t), *what.split(), "laptop", "rev"] for t, what in whats]
    assert [line.split()[:-1] for line in result.stdout.splitlines()] == expected
    revs = revisions(result.stdout)
    assert revs == sorted(set(revs), reverse=True)


def test_loft_versions_of_a_folder_shows_folder_versions(story: Story) -> None:
    result = story.mount.device.run("versions", "/docs/sub")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        [p.format_instant(t), "folder"] for t in reversed(story.folder)
    ]


@pytest.mark.parametrize("path", ["/docs/never.txt", "/nowhere/never.txt"])
def test_loft_versions_of_a_path_that_never_existed_fails_in_one_line(
    story: Story, path: str
) -> None:
    line = one_line_refusal(story.mount.device.run("versions", path))
    assert "never" in line


def test_nothing_under_versions_can_be_changed(story: Story) -> None:
    """Every kind of write under ``/.versions/latest/...`` and ``dir/.versions/<name>/...``
    is EROFS, and the server's tree is untouched."""
    device, live = story.mount.device, story.docs / "keep.txt"
    before = server_tree(device)
    version = sorted(os.listdir(story.docs / VERSIONS / "plan.txt"))[0]
    folder_version = sorted(os.listdir(story.docs / VERSIONS / "sub"))[-1]
    areas = {  # a past folder, a past file in it, a past folder in it
        "latest": (story.mount.path / VERSIONS / p.LATEST / "docs", "keep.txt", "sub"),
        "place": (story.docs / VERSIONS / "plan.txt", version, None),
        "folder version": (story.docs / VERSIONS / "sub" / folder_version, "a.txt", None),
        "names": (story.docs / VERSIONS, "plan.txt", "sub"),
    }
    calls: dict[str, Callable[[], Any]] = {}
    for area, (folder, name, sub) in areas.items():
        file = folder / name
        calls |= {
            f"{area}: create": partial(open_close, folder / "new", os.O_CREAT | os.O_WRONLY),
            f"{area}: mknod": partial(os.mknod, folder / "node", 0o644 | stat.S_IFREG),
            f"{area}: mkdir": partial(os.mkdir, folder / "newdir"),
            f"{area}: symlink": partial(os.symlink, "x", folder / "ln"),
            f"{area}: rename into": partial(os.rename, live, folder / "moved"),
            f"{area}: hard link into": partial(os.link, live, folder / "hl"),
            f"{area}: chmod folder": partial(os.chmod, folder, 0o700),
        }
        if not file.is_dir():
            calls |= {
                f"{area}: open for write": partial(open_close, file, os.O_WRONLY),
                f"{area}: open read-write": partial(open_close, file, os.O_RDWR),
                f"{area}: open to append": partial(open_close, file, os.O_WRONLY | os.O_APPEND),
                f"{area}: open to truncate": partial(open_close, file, os.O_WRONLY | os.O_TRUNC),
                f"{area}: truncate": partial(os.truncate, file, 0),
                f"{area}: unlink": partial(os.unlink, file),
                f"{area}: chmod": partial(os.chmod, file, 0o600),
                f"{area}: utime": partial(os.utime, file, (1, 1)),
                f"{area}: rename out of": partial(os.rename, file, story.docs / "out"),
                f"{area}: rename within": partial(os.rename, file, folder / "renamed"),
                f"{area}: hard link out of": partial(os.link, file, story.docs / "hl"),
            }
        if sub is not None:
            calls[f"{area}: rmdir"] = partial(os.rmdir, folder / sub)
            calls[f"{area}: rename folder out"] = partial(os.rename, folder / sub, story.docs / "d")
    outcomes = {label: errno_of(call) for label, call in calls.items()}
    assert {k: v for k, v in outcomes.items() if v != "EROFS"} == {}
    assert server_tree(device) == before


def test_versions_is_in_no_listing(story: Story) -> None:
    root = story.mount.path
    assert VERSIONS not in listed(root)
    assert VERSIONS not in listed(story.docs)
    ls = subprocess.run(["ls", "-a", str(root), str(story.docs)], capture_output=True, text=True,
                        check=True)
    assert VERSIONS not in ls.stdout
    find = subprocess.run(["find", str(root)], capture_output=True, text=True, check=True)
    assert VERSIONS not in find.stdout
    walked = [name for _, dirs, files in os.walk(root) for name in dirs + files]
    assert VERSIONS not in walked
    in_docs = [name for _, dirs, files in os.walk(story.docs) for name in dirs + files]
    assert sorted(in_docs) == ["a.txt", "keep.txt", "sub"]


def test_the_name_versions_cannot_be_made_in_the_live_tree(story: Story) -> None:
    device, docs = story.mount.device, story.docs
    before = (remote_names(device, "/"), remote_names(device, "/docs"), server_entries(device))
    attempts = {
        "mkdir": lambda: os.mkdir(docs / VERSIONS),
        "create": lambda: open_close(docs / VERSIONS, os.O_CREAT | os.O_WRONLY),
        "symlink": lambda: os.symlink("x", docs / VERSIONS),
        "rename a file": lambda: os.rename(docs / "keep.txt", docs / VERSIONS),
        "rename a folder": lambda: os.rename(docs / "sub", docs / VERSIONS),
        "rename to the top's": lambda: os.rename(docs / "keep.txt", story.mount.path / VERSIONS),
    }
    outcomes = {label: errno_of(call) for label, call in attempts.items()}
    # EISDIR: the kernel sees the existing ``.versions`` folder where a file would go.
    allowed = {"EPERM", "EEXIST", "EINVAL", "EISDIR"}
    assert {k: v for k, v in outcomes.items() if v not in allowed} == {}
    after = (remote_names(device, "/"), remote_names(device, "/docs"), server_entries(device))
    assert after == before


# --- 4. restore -----------------------------------------------------------------------


def content(found: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, int]]:
    """``server_entries`` as path -> (blocks, size): what a byte-identical copy keeps."""
    return {k: (e.get("blocks"), e["size"]) for k, e in found.items()}


def test_restore_brings_back_a_folder_of_a_thousand_files_deleted_in_a_mount(
    new_mount: NewMount, mount_server: Server, tmp_path: Path
) -> None:
    """``rm -r`` in a mount, then ``loft restore`` from a device without a mount: every
    file comes back byte for byte, and the restore is a newer version of each."""
    mnt = new_mount(None, "laptop")
    remote = login(mount_server, mnt.device.user, tmp_path, "desk")
    rng = random.Random(SEED)
    files = {f"f{i:04d}": rng.randbytes(rng.randint(1, 200)) for i in range(1000)}
    big = mnt.path / "big"
    big.mkdir()
    for name, data in files.items():
        (big / name).write_bytes(data)
    drained(mnt)
    known = server_entries(remote)
    subprocess.run(["rm", "-r", str(big)], check=True)
    drained(mnt)
    assert remote_names(remote) == []

    result = remote.run("restore", "/big")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: sorted(os.listdir(big)) == sorted(files), ARRIVAL, "big/ back in the mount")
    assert tree(big) == files
    assert content(server_entries(remote)) == content(known)
    assert remote_bytes(remote, "/big/f0001", tmp_path) == files["f0001"]
    listing = remote.run("versions", "/big/f0001").stdout
    size = human(len(files["f0001"])).split()[0]
    assert [line.split()[1] for line in listing.splitlines()] == [size, "deleted", size]
    assert revisions(listing)[-1] == known["big/f0001"]["rev"]
    assert revisions(listing) == sorted(revisions(listing), reverse=True)


def test_restore_of_an_older_revision_is_a_new_version_beside_or_over_the_file(
    mount_server: Server, tmp_path: Path
) -> None:
    device = login(mount_server, None, tmp_path, "desk")
    first, second = b"the first words", b"the words after a change"
    before = int(time.time()) - 1
    for data in (first, second):
        (tmp_path / "local").write_bytes(data)
        result = device.run("put", str(tmp_path / "local"), "/plan.txt")
        assert result.returncode == 0, result.stderr
    older = revisions(device.run("versions", "/plan.txt").stdout)[1]

    result = device.run("restore", "/plan.txt", "--rev", str(older), "--to", "/old/plan.txt")
    assert result.returncode == 0, result.stderr
    assert server_tree(device) == {"plan.txt": second, "old": "dir", "old/plan.txt": first}
    result = device.run("restore", "/plan.txt", "--rev", str(older))
    assert result.returncode == 0, result.stderr
    assert server_tree(device) == {"plan.txt": first, "old": "dir", "old/plan.txt": first}
    listing = device.run("versions", "/plan.txt").stdout
    assert len(listing.splitlines()) == 3
    assert revisions(listing)[0] > revisions(listing)[1] > older

    line = one_line_refusal(device.run("restore", "/plan.txt", "--at", p.format_instant(before)))
    assert "did not exist" in line
    line = one_line_refusal(
        device.run("restore", "/plan.txt", "--at", p.format_instant(before), "--rev", str(older))
    )
    assert "not both" in line


def test_a_paths_versions_outlive_its_folder_being_deleted_and_restored(
    mount_server: Server, tmp_path: Path
) -> None:
    """A path names every entry ever at that place: once ``notes`` is deleted and
    restored, ``/notes/plan.txt`` still lists its versions from before."""
    device = login(mount_server, None, tmp_path, "desk")
    words = b"written before the folder went"
    (tmp_path / "plan").write_bytes(words)
    assert device.run("mkdir", "/notes").returncode == 0
    assert device.run("put", str(tmp_path / "plan"), "/notes/plan.txt").returncode == 0
    first = revisions(device.run("versions", "/notes/plan.txt").stdout)
    when = past_second(head_time(device))
    assert device.run("rm", "-r", "/notes").returncode == 0
    result = device.run("restore", "/notes", "--at", p.format_instant(when))
    assert result.returncode == 0, result.stderr
    assert server_tree(device) == {"notes": "dir", "notes/plan.txt": words}
    result = device.run("versions", "/notes/plan.txt")
    assert result.returncode == 0, result.stderr
    assert revisions(result.stdout)[-1:] == first


# --- 6. snapshots ---------------------------------------------------------------------


def test_snapshots_show_the_tree_as_it_was_until_deleted(story: Story) -> None:
    """A snapshot of the whole tree, then of a folder; refused names; deletion (the
    top listing is cached for 2 seconds: polled)."""
    mnt = story.mount
    device, papers, top = mnt.device, mnt.path / "papers", mnt.path / VERSIONS
    papers.mkdir()
    (papers / "a.txt").write_bytes(b"first a")
    (papers / "b.txt").write_bytes(b"b")
    (mnt.path / "top.txt").write_bytes(b"top")
    drained(mnt)
    taken = tree(mnt.path)
    result = device.run("snapshot", "create", "before-cleanup")
    assert result.returncode == 0, result.stderr

    (papers / "a.txt").write_bytes(b"second a")
    (papers / "c.txt").write_bytes(b"new c")
    (mnt.path / "top.txt").unlink()
    drained(mnt)
    assert tree(top / "before-cleanup") == taken
    names = [line.split()[0] for line in device.run("snapshot", "list").stdout.splitlines()]
    assert names == ["before-cleanup"]

    result = device.run("snapshot", "create", "papers-snap", "/papers")
    assert result.returncode == 0, result.stderr
    now = tree(papers)
    wait_for(lambda: tree(top / "papers-snap") == now, ARRIVAL, "papers-snap shows papers")
    for name in (p.LATEST, "2026-12-02T073000Z", "before-cleanup"):
        one_line_refusal(device.run("snapshot", "create", name))
    assert {"before-cleanup", "papers-snap"} <= listed(top)

    result = device.run("snapshot", "delete", "papers-snap")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "papers-snap" not in listed(top), ARRIVAL, "papers-snap gone from .versions")
    assert "before-cleanup" in listed(top)
    assert tree(top / "before-cleanup") == taken


def test_an_entry_stored_as_versions_before_the_name_was_reserved_shows_under_another_name(
    mount_server: Server, tmp_path: Path
) -> None:
    """Data from before ``.versions`` was reserved (written into the store, as it
    would have been then): the mount shows the entry as ``.versions (stored)``, its
    real name keeps meaning the past, and renaming it repairs it everywhere."""
    owner = login(mount_server, None, tmp_path, "old")
    ns = owner.root_ns
    entry_id = p.new_id()
    with sqlite3.connect(mount_server.stores.data / "metadata.db") as db:
        seq = db.execute("SELECT seq FROM namespaces WHERE id = ?", (ns,)).fetchone()[0] + 1
        row = (ns, entry_id, p.ROOT_ID, p.VERSIONS, "dir", seq, 0, 0o755, time.time_ns())
        db.execute("INSERT INTO entries (ns, id, parent, name, kind, rev, size, mode, mtime)"
                   " VALUES (?,?,?,?,?,?,?,?,?)", row)
        db.execute("INSERT INTO versions (ns, id, parent, name, kind, seq, size, mode, mtime,"
                   " deleted, device, committed) VALUES (?,?,?,?,?,?,?,?,?,0,'old',?)",
                   (*row, int(time.time())))
        db.execute("UPDATE namespaces SET seq = ? WHERE id = ?", (seq, ns))
    mnt = mount(owner, tmp_path / "mnt")
    try:
        assert os.listdir(mnt.path) == [".versions (stored)"]
        assert (mnt.path / ".versions (stored)").is_dir()
        assert "latest" in os.listdir(mnt.path / VERSIONS)
        (mnt.path / ".versions (stored)").rename(mnt.path / "old-versions")
        drained(mnt)
        assert remote_names(owner) == ["old-versions/"]
        log = (owner.home / "mount.log").read_text()
        assert "shown as '.versions (stored)'" in log
    finally:
        unmount_and_check([mnt])
