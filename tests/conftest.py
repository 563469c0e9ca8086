"""Fixtures: real Loft servers on loopback, over every pair of back ends.

The suite needs PostgreSQL and an S3 store. ``tools/dev/test.sh`` (and so ``.ci/run``)
starts both and exports ``LOFT_TEST_PG`` and ``LOFT_TEST_S3``; without them the tests
that need them fail, loudly, rather than skip.

``server`` is a ``loft serve`` subprocess on a free port, once per back end:
``sqlite-dir`` (the embedded default) and ``postgres-s3`` (scale-out), each on a fresh
database and bucket. Tests isolate themselves by creating their own users.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def running_server(
    tmp_path_factory: pytest.TempPathFactory, kind: str, tag: str
) -> Iterator[Server]:
    """A started server on ``kind`` stores for a module fixture; stopped after."""
    srv = Server(make_stores(kind, tmp_path_factory.mktemp(f"{tag}-{kind}") / "data"))
    srv.start()
    yield srv
    srv.stop()


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


@pytest.fixture
def new_device(server: Server, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``new_device(user=None)``: a fresh device; a fresh user unless one is named."""

    def make(user: str | None = None, name: str = "dev") -> Device:
        return login(server, user, tmp_path, name)

    return make


@pytest.fixture
def device(new_device) -> Device:  # type: ignore[no-untyped-def]
    return new_device()  # type: ignore[no-any-return]


@dataclass
class Mount:
    """A real ``loft mount`` of one device, in its own process, as a user runs it."""

    device: Device
    path: Path

    def status(self) -> str:
        return self.device.run("status").stdout

    def unmount(self) -> subprocess.CompletedProcess[str]:
        return self.device.run("unmount", str(self.path))


@pytest.fixture(scope="module")
def mount_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded-default server for the mount tests of a module."""
    srv = Server(Stores(tmp_path_factory.mktemp("mount-server") / "data"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def new_mount(mount_server: Server, tmp_path: Path) -> Iterator[Any]:
    """``new_mount(user=None, name="dev")``: log a device in and mount it; unmounted after."""
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
    for mount in mounts:
        if os.path.ismount(mount.path) and mount.unmount().returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(mount.path)], check=False)
