"""Conflicts in a mount keep every byte: the later writer's version becomes a copy."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.devices import login_device
from tests.polling import wait_for


def test_edit_against_a_stale_version_becomes_a_conflicted_copy(new_mount, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mount = new_mount(name="laptop")
    server = mount.device.server
    other = login_device(server, server.url, mount.device.user, tmp_path / "other-home", "desk")

    notes = mount.path / "notes.txt"
    notes.write_text("first\n")
    wait_for(lambda: other.run("ls", "/").stdout.split() == ["notes.txt"])

    # The laptop holds the file open for writing; what it wrote so far is a version
    # (fsync), then the desk replaces that version, then the laptop writes more: the
    # laptop's next version is based on one that is no longer current.
    fd = os.open(notes, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"laptop ")
        os.fsync(fd)  # a version now, and uploaded before the desk's edit
        wait_for(lambda: "pending: 0 change(s)" in mount.status())
        theirs = tmp_path / "theirs.txt"
        theirs.write_text("desk edit\n")
        put = other.run("put", str(theirs), "/notes.txt")
        assert put.returncode == 0, put.stderr
        os.write(fd, b"edit\n")
    finally:
        os.close(fd)

    def both_kept() -> bool:
        names = sorted(os.listdir(mount.path))
        return len(names) == 2 and notes.read_text() == "desk edit\n"

    wait_for(both_kept)
    copy = next(n for n in os.listdir(mount.path) if n != "notes.txt")
    assert copy.startswith("notes (conflicted copy from laptop ")
    assert copy.endswith(").txt")
    assert (mount.path / copy).read_text() == "laptop edit\n"
    # The laptop's ``loft status`` names the conflict it settled, from its own record.
    assert re.search(rf"^conflict: .* /{re.escape(copy)}|^conflict: .*{re.escape(copy)}",
                     mount.status(), re.M), mount.status()
    wait_for(lambda: copy in other.run("ls", "/").stdout)
    fetched = tmp_path / "fetched.txt"
    assert other.run("get", f"/{copy}", str(fetched)).returncode == 0
    assert fetched.read_text() == "laptop edit\n"
