"""Fixtures: real Loft servers on loopback, over every pair of back ends.

The suite needs PostgreSQL and an S3 store. ``tools/dev/test.sh`` (and so ``.ci/run``)
starts both and exports ``LOFT_TEST_PG`` and ``LOFT_TEST_S3``; without them the tests
that need them fail, loudly, rather than skip.

``server`` is a ``loft serve`` subprocess on a free port, once per back end:
``sqlite-dir`` (the embedded default) and ``postgres-s3`` (scale-out), each on a fresh
database and bucket. Tests isolate themselves by creating their own users.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from backend.client import Client

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
BACKENDS = ["sqlite-dir", "postgres-s3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loft_env(home: Path | None = None, password: str = PASSWORD) -> dict[str, str]:
    env = dict(os.environ, LOFT_PASSWORD=password, PYTHONUNBUFFERED="1")
    if home is not None:
        env["LOFT_HOME"] = str(home)
    return env


def loft(
    *args: str, home: Path | None = None, password: str = PASSWORD, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real ``loft`` command line; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        env=loft_env(home, password),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with tools/dev/test.sh", pytrace=False)
    return value


@dataclass
class Stores:
    """Where one server keeps its state: ``--data`` plus optional store URLs."""

    data: Path
    metadata: str | None = None
    blocks: str | None = None

    def args(self) -> list[str]:
        out = ["--data", str(self.data)]
        if self.metadata:
            out += ["--metadata", self.metadata]
        if self.blocks:
            out += ["--blocks", self.blocks]
        return out


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


@dataclass
class Server:
    """A ``loft serve`` subprocess; ``kill()`` is ``kill -9``, ``start()`` brings it back."""

    stores: Stores
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = self.stores.data.parent / f"server-{self.port}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", "serve", *self.stores.args(),
                 "--listen", f"127.0.0.1:{self.port}"],
                env=loft_env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not come up:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """``kill -9``: no chance to flush or clean up."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        result = loft("user", "add", name, *self.stores.args(), password=password)
        assert result.returncode == 0, result.stderr

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token, attempts=2, backoff=0.05)


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
        import json

        return str(json.loads((self.home / "device.json").read_text())["token"])

    @property
    def root_ns(self) -> int:
        import json

        return int(json.loads((self.home / "device.json").read_text())["root_ns"])

    def client(self) -> Client:
        return self.server.client(self.token)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp(f"server-{request.param}") / "data"
    srv = Server(make_stores(request.param, data))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def new_device(server: Server, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``new_device(user=None)``: a fresh device; a fresh user unless one is named."""

    def make(user: str | None = None, name: str = "dev") -> Device:
        if user is None:
            user = f"u{os.getpid()}x{next(_users)}"
            server.add_user(user)
        home = tmp_path / f"home-{user}-{name}-{next(_users)}"
        result = loft("login", server.url, "--user", user, "--device", name, home=home)
        assert result.returncode == 0, result.stderr
        return Device(server, user, home)

    return make


@pytest.fixture
def device(new_device) -> Device:  # type: ignore[no-untyped-def]
    return new_device()  # type: ignore[no-any-return]
