"""Owner-only state on disk, and names that cannot forge a log line or drive a terminal.

Everything a server and a mount create is 0700 (directories) or 0600 (files) even
under a umask of 022 (``backend.private``); a data directory or home others may read
is tightened, one others may write is refused. A device name may hold no control
character or bidi override; entry names and user names may, and are shown escaped
(``backend.text.printable``) by ``loft ls`` and ``loft status`` and in every log line.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from backend import protocol as p
from backend.text import printable
from tests.conftest import (
    PASSWORD,
    Device,
    Mount,
    Server,
    Stores,
    check_server,
    free_port,
    loft,
    unmount_and_check,
)
from tests.polling import wait_for

FORGED = "\x1b[31mred\n2026-01-01 00:00:00,000 loft.server INFO forged"
"""A name that colours a terminal red and starts a log line of its own."""
ESCAPED = "\\x1b[31mred\\n2026-01-01 00:00:00,000 loft.server INFO forged"
"""``FORGED`` as ``printable`` shows it."""
USER = f"u{os.getpid()}{FORGED}"
"""The mount's user. User names follow the rules of entry names, and the server logs
the user in every commit line."""


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run what starts here (subprocesses inherit it) under ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def loose(root: Path) -> list[str]:
    """Every directory under ``root`` (itself included) that is not 0700 and every file
    that is not 0600, with its mode."""
    found: list[str] = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        want = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if stat.S_IMODE(info.st_mode) != want:
            found.append(f"{path} {stat.S_IMODE(info.st_mode):o}")
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An embedded-default server started under umask 022; checked (fsck) after."""
    srv = Server(Stores(tmp_path_factory.mktemp("hygiene") / "data"))
    with umask(0o022):
        srv.start()
    yield srv
    srv.stop()
    check_server(srv.stores)


@pytest.fixture(scope="module")
def mount(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """``USER``'s device, logged in and mounted under umask 022; unmounted and
    checked (``loft fsck --home``) after the module."""
    root = tmp_path_factory.mktemp("hygiene-mount")
    server.add_user(USER)
    with umask(0o022):
        device = Device(server, USER, root / "home")
        result = device.run("login", server.url, "--user", USER, "--device", "dev")
        assert result.returncode == 0, result.stderr
        path = root / "mnt"
        path.mkdir()
        result = device.run("mount", str(path))
    assert result.returncode == 0, result.stderr
    yield Mount(device, path)
    unmount_and_check([Mount(device, path)])


@pytest.fixture(scope="module")
def user(server: Server) -> str:
    name = f"u{os.getpid()}names"
    server.add_user(name)
    return name


def test_server_and_mount_create_only_owner_only_files(server: Server, mount: Mount) -> None:
    (mount.path / "modes.bin").write_bytes(os.urandom(300_000))
    data, home = server.stores.data, mount.device.home
    wait_for(lambda: list(data.glob("chunks/??/??/*")), 20, "a chunk file on the server")
    wait_for(lambda: (home / "status.json").exists(), 5, "status.json")
    for made in ("device.json", "mount.log", "mount.pid", "cache/data.mdb", "staging"):
        assert (home / made).exists(), made
    assert (data / "metadata.db-wal").exists()
    assert loose(data) == []
    assert loose(home) == []


def test_a_readable_data_dir_and_home_are_tightened(
    server: Server, user: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "chunks" / "ab").mkdir(parents=True)
    (data / "metadata.db").touch()  # an empty file is an empty SQLite database
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "mount.log").write_text("from an older loft\n")
    for path in (data, data / "chunks", data / "chunks" / "ab", home, home / "cache"):
        path.chmod(0o755)
    for path in (data / "metadata.db", home / "mount.log"):
        path.chmod(0o644)

    other = Server(Stores(data))
    with umask(0o022):
        other.start()
    try:
        assert loose(data) == []
    finally:
        other.stop()
    check_server(other.stores)

    result = loft("login", server.url, "--user", user, "--device", "dev", home=home)
    assert result.returncode == 0, result.stderr
    assert loose(home) == []


def test_a_data_dir_or_home_others_may_write_is_refused(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o770)  # group-writable
    result = loft("serve", "--data", str(data), "--listen", f"127.0.0.1:{free_port()}",
                  timeout=10)
    assert result.returncode == 1
    assert result.stderr.startswith("loft: refusing data directory"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert list(data.iterdir()) == []

    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o703)  # writable by others
    result = loft("login", server.url, "--user", "nobody", "--device", "dev", home=home)
    assert result.returncode == 1
    assert result.stderr.startswith("loft: refusing home"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("name", ["a\nb", "a\x1b[31mb", "txt\u202eexe.doc"])
def test_a_device_name_with_control_characters_is_refused(
    server: Server, user: str, tmp_path: Path, name: str
) -> None:
    for sent in (name, name.replace("\n", "\x85"), name.replace("\u202e", "\u2066")):
        body = {"user": user, "password": PASSWORD, "device": sent}
        answer = httpx.post(f"{server.url}{p.API}/login", content=p.encode(body),
                            headers={"content-type": p.CBOR}, timeout=10)
        assert answer.status_code == 400, sent
        assert p.decode(answer.content)["error"] == "bad_request"

    home = tmp_path / "home"
    result = loft("login", server.url, "--user", user, "--device", name, home=home)
    assert result.returncode == 1
    assert result.stderr.startswith("loft: invalid device name"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "\x1b" not in result.stderr
    assert "\u202e" not in result.stderr
    assert not (home / "device.json").exists()


def test_an_entry_name_with_control_characters_is_shown_escaped(
    server: Server, mount: Mount
) -> None:
    (mount.path / FORGED).write_bytes(b"red\n")
    mount_log = mount.device.home / "mount.log"
    found = wait_for(
        lambda: re.search(rf"as revision (\d+): create {re.escape(ESCAPED)}$",
                          mount_log.read_text(), re.M),
        20, "the commit in the mount's log",
    )
    assert "\x1b" not in mount_log.read_text()

    assert server.log is not None
    server_log = server.log.read_text()
    assert (f" loft.server INFO commit ns={mount.device.root_ns} ops=1 seq={found[1]}"
            f" by u{os.getpid()}{ESCAPED}/dev\n") in server_log
    assert "\x1b" not in server_log

    listing = mount.device.run("ls")
    assert listing.returncode == 0, listing.stderr
    assert ESCAPED in listing.stdout.splitlines()
    assert len(listing.stdout.splitlines()) == len(os.listdir(mount.path))  # none forged
    status = mount.device.run("status")
    assert f"user:    u{os.getpid()}{ESCAPED} (device dev)" in status.stdout.splitlines()
    assert "\x1b" not in listing.stdout + status.stdout


def test_printable_escapes_only_what_could_forge_a_line_or_disguise_a_name() -> None:
    assert printable("résumé 日本.txt \\x41 tab") == "résumé 日本.txt \\x41 tab"
    assert printable("a\tb\rc\nd\x00e\x7ff\x9bg") == "a\\tb\\rc\\nd\\x00e\\x7ff\\x9bg"
    assert printable("\u202aa\u202eb\u2066c\u2069d\u2028e") == (
        "\\u202aa\\u202eb\\u2066c\\u2069d\\u2028e"
    )
