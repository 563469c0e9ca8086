"""Shared folders between users, through real mounts: both-way sync, roles the mount
and the server enforce, moves, and unsharing while a member has unsynced edits."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend import protocol as p
from backend.errors import Forbidden, NotFound
from tests.conftest import Device, Mount, Server, unmount_and_check
from tests.devices import SYNC, api, converge, drained, login_device, mount, synced
from tests.faultproxy import FaultProxy
from tests.polling import wait_for

_names = iter(range(10**9))


@dataclass
class Pair:
    """Alice (owner) and Bob, one mount each; Bob's goes through ``proxy``."""

    alice: Mount
    bob: Mount
    proxy: FaultProxy

    def share(self, path: str, role: str = "editor") -> None:
        result = self.alice.device.run("share", path, "--with", self.bob.device.user,
                                       "--role", role)
        assert result.returncode == 0, result.stderr

    def share_file(self, folder: str, name: str, text: str, role: str = "editor") -> None:
        """Alice's new ``folder`` holding ``name``, synced, shared with Bob, and the
        file arrived on Bob's side."""
        (self.alice.path / folder).mkdir()
        (self.alice.path / folder / name).write_text(text)
        drained(self.alice)
        self.share(f"/{folder}", role=role)
        wait_for(lambda: (self.bob.path / folder / name).exists(), SYNC,
                 "the share on Bob's side")


@pytest.fixture
def pair(mount_server: Server, tmp_path: Path) -> Iterator[Pair]:
    n = next(_names)
    users = [f"alice{os.getpid()}x{n}", f"bob{os.getpid()}x{n}"]
    for user in users:
        mount_server.add_user(user)
    with FaultProxy(mount_server.port) as proxy:
        alice = login_device(mount_server, mount_server.url, users[0], tmp_path / "ha", "a1")
        bob = login_device(mount_server, proxy.url, users[1], tmp_path / "hb", "b1")
        mounts = [mount(alice, tmp_path / "A"), mount(bob, tmp_path / "B", "--fetch-timeout", "2")]
        try:
            yield Pair(mounts[0], mounts[1], proxy)
        finally:
            proxy.restore()
            unmount_and_check(mounts)


def test_a_shared_folder_syncs_both_ways_and_keeps_its_place(pair: Pair) -> None:
    a, b = pair.alice.path, pair.bob.path
    (a / "proj" / "docs").mkdir(parents=True)
    (a / "proj" / "docs" / "plan.txt").write_text("v1\n")
    drained(pair.alice)
    pair.share("/proj")
    # Bob sees it at the top of his tree, with its content; Alice keeps it where it was.
    wait_for(lambda: (b / "proj" / "docs" / "plan.txt").exists(), SYNC, "the share on Bob's side")
    assert (b / "proj" / "docs" / "plan.txt").read_text() == "v1\n"
    assert (a / "proj" / "docs" / "plan.txt").read_text() == "v1\n"
    (b / "proj" / "from-bob.txt").write_text("hello alice\n")
    (a / "proj" / "docs" / "plan.txt").write_text("v2\n")
    converge(pair.alice, pair.bob)
    assert (a / "proj" / "from-bob.txt").read_text() == "hello alice\n"
    assert (b / "proj" / "docs" / "plan.txt").read_text() == "v2\n"
    # Every version of a file in the shared folder, from before the share too.
    past = b / "proj" / "docs" / ".versions" / "plan.txt"
    wait_for(lambda: len(os.listdir(past)) == 2, SYNC, "both versions under .versions")
    assert sorted((past / v).read_text() for v in os.listdir(past)) == ["v1\n", "v2\n"]
    # Bob moves it within his own tree: only for him.
    (b / "shared").mkdir()
    (b / "proj").rename(b / "shared" / "proj")
    synced(pair.bob)
    assert (a / "proj" / "from-bob.txt").exists()
    (b / "shared" / "proj" / "later.txt").write_text("still shared\n")
    wait_for(lambda: (a / "proj" / "later.txt").exists(), SYNC, "a write after the move")
    # A move across the share's edge is a copy (EXDEV); removing the share is refused.
    with pytest.raises(OSError, match="cross-device") as crossing:
        os.rename(b / "shared" / "proj" / "later.txt", b / "mine.txt")
    assert crossing.value.errno == errno.EXDEV
    shutil.move(b / "shared" / "proj" / "later.txt", b / "mine.txt")
    (b / "shared" / "proj").rename(b / "shared" / "taken")
    with pytest.raises(PermissionError) as removing:
        os.rmdir(b / "shared" / "taken")
    assert removing.value.errno == errno.EPERM
    wait_for(lambda: not (a / "proj" / "later.txt").exists(), SYNC, "the moved-out file")
    synced(pair.bob)
    listing = pair.bob.device.run("shares").stdout
    assert "/shared/taken" in listing, listing
    assert "editor" in listing, listing


def test_a_viewer_is_refused_at_once_by_the_mount_and_by_the_server(pair: Pair) -> None:
    a, b = pair.alice.path, pair.bob.path
    pair.share_file("ro", "f.txt", "read me\n", role="viewer")
    assert (b / "ro" / "f.txt").read_text() == "read me\n"
    for attempt in (
        lambda: (b / "ro" / "f.txt").write_text("mine\n"),
        lambda: (b / "ro" / "new.txt").write_text("x"),
        lambda: (b / "ro" / "sub").mkdir(),
        lambda: (b / "ro" / "f.txt").unlink(),
        lambda: (b / "ro" / "f.txt").rename(b / "ro" / "g.txt"),
        lambda: os.chmod(b / "ro" / "f.txt", 0o600),
    ):
        with pytest.raises(PermissionError):
            attempt()
    assert "pending: 0 change(s)" in pair.bob.status()
    # The server refuses the same whatever the client does.
    bob = pair.bob.device
    share = next(s for s in api(bob, lambda c: c.shares()) if s["path"] == "/ro")
    op = {"op": "mkdir", "op_id": p.new_id(), "entry": p.new_id(), "parent": p.ROOT_ID,
          "name": "sneaky", "mode": 0o755, "mtime": 0}
    with pytest.raises(Forbidden):
        api(bob, lambda c: c.commit(share["ns"], [op]))
    # Made an editor, Bob writes.
    pair.share("/ro", role="editor")
    wait_for(lambda: "editor" in bob.run("shares").stdout, SYNC)

    def writes() -> bool:
        try:
            (b / "ro" / "new.txt").write_text("now allowed\n")
        except PermissionError:
            return False
        return True

    wait_for(writes, SYNC, "a write once Bob is an editor")
    wait_for(lambda: (a / "ro" / "new.txt").exists(), SYNC, "Bob's write on Alice's side")


def test_unsharing_keeps_the_members_unsynced_edit_as_their_copy(pair: Pair) -> None:
    a, b = pair.alice.path, pair.bob.path
    pair.share_file("team", "notes.txt", "shared\n")
    pair.proxy.cut()  # Bob offline: his edit stays on his device
    (b / "team" / "notes.txt").write_text("bob's offline edit\n")
    (b / "team" / "new.txt").write_text("bob's new file\n")
    result = pair.alice.device.run("unshare", "/team", "--with", pair.bob.device.user)
    assert result.returncode == 0, result.stderr
    pair.proxy.restore()
    wait_for(lambda: not (b / "team").exists(), SYNC, "the share leaving Bob's tree")

    def kept() -> dict[str, str]:
        return {n: (b / n).read_text() for n in os.listdir(b) if (b / n).is_file()}

    wait_for(lambda: len(kept()) == 2, SYNC, "Bob's edits as his copies")
    copies = kept()
    assert sorted(copies.values()) == ["bob's new file\n", "bob's offline edit\n"], copies
    synced(pair.bob)
    # Alice's folder is untouched, and nothing of Bob's reached it.
    assert (a / "team" / "notes.txt").read_text() == "shared\n"
    assert sorted(os.listdir(a / "team")) == ["notes.txt"]
    with pytest.raises(NotFound):
        api(pair.bob.device, lambda c: c.lookup(pair.bob.device.root_ns, "/team"))


def test_leaving_drops_the_folder_from_every_device_of_the_member(
    pair: Pair, mount_server: Server, tmp_path: Path
) -> None:
    a, b = pair.alice.path, pair.bob.path
    (a / "club").mkdir()
    (a / "club" / "a.txt").write_text("a\n")
    drained(pair.alice)
    pair.share("/club")
    second: Device = login_device(mount_server, mount_server.url, pair.bob.device.user,
                                  tmp_path / "hb2", "b2")
    other = mount(second, tmp_path / "B2")
    try:
        wait_for(lambda: (other.path / "club" / "a.txt").exists(), SYNC, "the share on b2")
        wait_for(lambda: (b / "club" / "a.txt").exists(), SYNC, "the share on b1")
        assert pair.alice.device.run("leave", "/club").returncode != 0  # the owner cannot
        result = pair.bob.device.run("leave", "/club")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: not (other.path / "club").exists(), SYNC, "the folder leaving b2")
        wait_for(lambda: not (b / "club").exists(), SYNC, "the folder leaving b1")
        assert (a / "club" / "a.txt").read_text() == "a\n"
        assert "nothing is shared" in second.run("shares").stdout
    finally:
        unmount_and_check([other])


def test_a_conflict_between_two_users_keeps_both_edits(pair: Pair) -> None:
    a, b = pair.alice.path, pair.bob.path
    pair.share_file("doc", "text.md", "base\n")
    pair.proxy.cut()
    (b / "doc" / "text.md").write_text("bob's edit\n")
    (a / "doc" / "text.md").write_text("alice's edit\n")
    drained(pair.alice)
    pair.proxy.restore()
    converge(pair.alice, pair.bob)
    names = sorted(os.listdir(a / "doc"))
    assert len(names) == 2, names
    copy = next(n for n in names if n != "text.md")
    assert copy.startswith("text (conflicted copy from b1 "), copy
    assert (a / "doc" / "text.md").read_text() == "alice's edit\n"
    assert (a / "doc" / copy).read_text() == "bob's edit\n"
