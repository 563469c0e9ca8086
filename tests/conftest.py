"""Fixtures: real Loft servers on loopback, over every pair of back ends.

The suite needs PostgreSQL and an S3 store. ``tools/dev/test.sh`` (and so ``.ci/run``)
starts both and exports ``LOFT_TEST_PG`` and ``LOFT_TEST_S3``; without them the tests
that need them fail, loudly, rather than skip.

``server`` is a ``loft serve`` subprocess on a free port, once per back end:
``sqlite-dir`` (the embedded default) and ``postgres-s3`` (scale-out), each on a fresh
database and bucket. Tests isolate themselves by creating their own users.

Checkers are the oracle: a server fixture ends with ``loft fsck --data`` of its
stores, and a mount fixture with ``loft unmount`` (a failed unmount fails the test)
and then ``loft fsck --home`` of every device it mounted.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from backend.client import Client
from tools.localserver import (
    PASSWORD,
    ROOT,
    Stores,
    free_port,
    loft,
    loft_env,
)
from tools.localserver import LocalServer as Server

__all__ = ["PASSWORD", "ROOT", "Server", "Stores", "free_port", "loft", "loft_env"]

BACKENDS = ["sqlite-dir", "postgres-s3"]


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with tools/dev/test.sh", pytrace=False)
    return value


def make_stores(kind: str, data: Path) -> Stores:
    if kind == "sqlite-dir":
        return Stores(data)
    tag = f"loft_{os.getpid()}_{time.monotonic_ns() % 10**12}"
    base = require_env("LOFT_TEST_PG")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {tag}".encode())
    metadata = base.rsplit("/", 1)[0] + "/" + tag
    endpoint = require_env("LOFT_TEST_S3")
    return Stores(data, metadata, f"s3://{tag.replace('_', '-')}?endpoint={endpoint}")


_users = iter(range(10**9))


@dataclass
class Device:
    """One device of one user: its own ``LOFT_HOME``, logged in to ``server``."""

    server: Server
    user: str
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return loft(*args, home=self.home)

    @property
    def token(self) -> str:
        return str(json.loads((self.home / "device.json").read_text())["token"])

    @property
    def root_ns(self) -> int:
        return int(json.loads((self.home / "device.json").read_text())["root_ns"])

    def client(self) -> Client:
        return self.server.client(self.token)


def check_server(stores: Stores) -> None:
    """``loft fsck`` of a server's stores (stopped, or at rest); fail unless clean."""
    result = loft("fsck", *stores.args())
    if result.returncode != 0 or not result.stdout.rstrip().endswith(": clean"):
        pytest.fail(
            f"loft fsck --data {stores.data} (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}",
            pytrace=False,
        )


def running_server(
    tmp_path_factory: pytest.TempPathFactory, kind: str, tag: str
) -> Iterator[Server]:
    """A started server on ``kind`` stores for a module fixture; stopped and checked
    (``loft fsck``) after."""
    srv = Server(make_stores(kind, tmp_path_factory.mktemp(f"{tag}-{kind}") / "data"))
    srv.start()
    yield srv
    srv.stop()
    check_server(srv.stores)


def login(server: Server, user: str | None, home_root: Path, name: str) -> Device:
    """A device logged in to ``server``: a fresh user unless one is named."""
    if user is None:
        user = f"u{os.getpid()}x{next(_users)}"
        server.add_user(user)
    home = home_root / f"home-{user}-{name}-{next(_users)}"
    result = loft("login", server.url, "--user", user, "--device", name, home=home)
    assert result.returncode == 0, result.stderr
    return Device(server, user, home)


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from running_server(tmp_path_factory, request.param, "server")


NewDevice = Callable[..., Device]
"""The ``new_device`` fixture: ``new_device(user=None, name="dev") -> Device``."""


@pytest.fixture
def new_device(server: Server, tmp_path: Path) -> NewDevice:
    """``new_device(user=None)``: a fresh device; a fresh user unless one is named."""

    def make(user: str | None = None, name: str = "dev") -> Device:
        return login(server, user, tmp_path, name)

    return make


@pytest.fixture
def device(new_device: NewDevice) -> Device:
    return new_device()


@dataclass
class Mount:
    """A real ``loft mount`` of one device, in its own process, as a user runs it."""

    device: Device
    path: Path

    def status(self) -> str:
        return self.device.run("status").stdout

    def unmount(self) -> subprocess.CompletedProcess[str]:
        return self.device.run("unmount", str(self.path))


def detach(path: Path) -> None:
    """``fusermount3 -uz``: detach a mount point, alive or dead, at once (cleanup only)."""
    subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True, check=False)


def unmount_strictly(mount: Mount) -> str:
    """``loft unmount``; the empty string if it worked, else why not (the mount point
    is detached anyway, so that nothing is left mounted).

    A mount the test unmounted itself, or whose process died (a dead FUSE mount
    reads as no mount: ``ENOTCONN``), is only detached: that is no failed unmount.
    """
    if not os.path.ismount(mount.path):
        detach(mount.path)
        return ""
    result = mount.unmount()
    if result.returncode == 0:
        return ""
    detach(mount.path)
    return f"loft unmount {mount.path} failed: {result.stderr.strip() or result.returncode}"


def check_device(home: Path) -> str:
    """``loft fsck --home``: the empty string if the device's state is clean, else
    what the checker said."""
    result = loft("fsck", "--home", str(home), home=home)
    if result.returncode == 0:
        return ""
    return f"loft fsck --home {home} (exit {result.returncode}):\n{result.stdout}{result.stderr}"


def unmount_and_check(mounts: Iterable[Mount]) -> None:
    """Unmount every mount, then ``loft fsck --home`` every device mounted; fail the
    test if any unmount failed or any device is not clean."""
    mounts = list(mounts)
    failures = [failure for mount in mounts if (failure := unmount_strictly(mount))]
    if not failures:
        homes = dict.fromkeys(mount.device.home for mount in mounts)
        failures = [failure for home in homes if (failure := check_device(home))]
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture(scope="module")
def mount_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded-default server for the mount tests of a module; checked after."""
    srv = Server(Stores(tmp_path_factory.mktemp("mount-server") / "data"))
    srv.start()
    yield srv
    srv.stop()
    check_server(srv.stores)


NewMount = Callable[..., Mount]
"""The ``new_mount`` fixture: ``new_mount(user=None, name="dev", *extra) -> Mount``."""


@pytest.fixture
def new_mount(mount_server: Server, tmp_path: Path) -> Iterator[NewMount]:
    """``new_mount(user=None, name="dev", *extra)``: log a device in and mount it
    (``extra`` goes to ``loft mount``). After the test every mount is unmounted and
    every device checked (``unmount_and_check``): a failure there fails the test."""
    mounts: list[Mount] = []

    def make(user: str | None = None, name: str = "dev", *extra: str) -> Mount:
        device = login(mount_server, user, tmp_path, name)
        path = tmp_path / f"mnt-{device.user}-{name}-{next(_users)}"
        path.mkdir()
        result = device.run("mount", str(path), *extra)
        assert result.returncode == 0, result.stderr
        mounts.append(Mount(device, path))
        return mounts[-1]

    yield make
    unmount_and_check(mounts)
