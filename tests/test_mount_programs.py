"""Ordinary programs at work inside a real mount: tar, git, SQLite, an editor, rsync, cp.

Each runs unmodified against a real ``loft mount`` (``new_mount`` in conftest) and
must get what it gets from a local disk: the tree it wrote reads back byte for byte
(``diff -r``), its own consistency checks pass (``git fsck``, SQLite reopening its
file). Where a second device is cheap, the result is also checked there after sync,
which is what a user of a sync system expects of every one of them.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import NewMount
from tests.devices import journal
from tests.polling import wait_for

SYNC = 120.0
"""Seconds a tree of a few thousand files may take to reach another device."""


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a program; its stdout. A failure shows what it printed."""
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"{argv[0]} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def same_tree(a: Path, b: Path) -> bool:
    """``diff -r`` finds no difference (names, kinds, content, symlink targets)."""
    result = subprocess.run(["diff", "-r", "--no-dereference", a, b], capture_output=True)
    return result.returncode == 0


def make_tree(root: Path, files: int, seed: int) -> Path:
    """A tree of ``files`` small files in nested folders, plus a bigger file and a link."""
    rng = random.Random(seed)
    root.mkdir()
    for i in range(files):
        folder = root / f"d{i % 20:02}" / f"e{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:04}.txt").write_bytes(rng.randbytes(rng.randrange(0, 4096)))
    (root / "big.bin").write_bytes(rng.randbytes(5 << 20))
    (root / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("d00/e0/f0000.txt", root / "link")
    (root / "empty-dir").mkdir()
    return root


def test_tar_extracts_a_2000_file_tree_that_matches_and_reaches_the_other_device(
    new_mount: NewMount, tmp_path: Path
) -> None:
    a = new_mount()
    b = new_mount(user=a.device.user, name="B")
    source = make_tree(tmp_path / "tree", 2000, seed=1)
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname="tree")

    run("tar", "xf", archive, "-C", a.path)
    assert same_tree(source, a.path / "tree")
    wait_for(lambda: same_tree(source, b.path / "tree"), SYNC, "the tree on B")
    # Each file went up with its content: none first as the empty file its create
    # made (tar's later utime may add a version, never another size).
    sizes: dict[str, set[int]] = {}
    for record in journal(a.device):
        if record["kind"] == "file":
            sizes.setdefault(record["id"], set()).add(record["size"])
    assert len(sizes) == 2002, len(sizes)  # and big.bin, run.sh
    assert not {i: s for i, s in sizes.items() if len(s) > 1}


def test_git_init_add_commit_log_status_and_fsck_work(new_mount: NewMount) -> None:
    a = new_mount()
    repo = a.path / "repo"
    repo.mkdir()
    git = ("git", "-c", "user.name=Loft Test", "-c", "user.email=test@loft.invalid")
    run(*git, "init", "-q", "-b", "main", cwd=repo)
    (repo / "src").mkdir()
    for i in range(30):
        (repo / "src" / f"mod{i}.py").write_text(f"VALUE = {i}\n" * (i + 1))
    (repo / "README").write_text("a repository inside a Loft mount\n")
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "README").write_text("changed\n")
    run(*git, "commit", "-q", "-am", "second", cwd=repo)

    assert run(*git, "log", "--format=%s", cwd=repo).split() == ["second", "first"]
    assert run(*git, "status", "--porcelain", cwd=repo) == ""
    run(*git, "fsck", "--full", "--strict", cwd=repo)


def test_sqlite_database_commits_reopens_and_reads_on_the_other_device(
    new_mount: NewMount,
) -> None:
    a = new_mount()
    b = new_mount(user=a.device.user, name="B")
    path = a.path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, payload BLOB)")
    with conn:
        conn.executemany(
            "INSERT INTO items (name, payload) VALUES (?, ?)",
            ((f"item {i}", os.urandom(100)) for i in range(1000)),
        )
    conn.close()

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (1000,)
    conn.close()

    def count_on_b() -> int | None:
        try:
            other = sqlite3.connect(f"file:{b.path / 'app.db'}?mode=ro", uri=True)
            try:
                return int(other.execute("SELECT count(*) FROM items").fetchone()[0])
            finally:
                other.close()
        except sqlite3.DatabaseError:  # not there yet, or an older version
            return None

    assert wait_for(count_on_b, 10, "the database on B") == 1000


def test_editor_style_save_by_rename_leaves_the_content_and_no_temp_file(
    new_mount: NewMount,
) -> None:
    a = new_mount()
    b = new_mount(user=a.device.user, name="B")
    target, temp = a.path / "notes.txt", a.path / ".notes.txt.swp"
    target.write_text("draft 0\n")
    for version in (1, 2):
        content = f"draft {version}\n" * 100
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, content.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, target)
        assert target.read_text() == content
        assert os.listdir(a.path) == ["notes.txt"]

    final = "draft 2\n" * 100
    wait_for(
        lambda: os.listdir(b.path) == ["notes.txt"] and (b.path / "notes.txt").read_text() == final,
        10,
        "the saved file on B",
    )


def test_rsync_a_copies_a_tree_into_the_mount(new_mount: NewMount, tmp_path: Path) -> None:
    a = new_mount()
    source = make_tree(tmp_path / "tree", 200, seed=2)
    run("rsync", "-a", f"{source}/", a.path / "copy")
    assert same_tree(source, a.path / "copy")
    assert os.stat(a.path / "copy" / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(a.path / "copy" / "big.bin").st_mtime == os.stat(source / "big.bin").st_mtime


def test_cp_a_copies_a_tree_into_the_mount(new_mount: NewMount, tmp_path: Path) -> None:
    a = new_mount()
    source = make_tree(tmp_path / "tree", 200, seed=3)
    run("cp", "-a", source, a.path / "copy")
    assert same_tree(source, a.path / "copy")
    assert os.stat(a.path / "copy" / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(a.path / "copy" / "big.bin").st_mtime == os.stat(source / "big.bin").st_mtime
