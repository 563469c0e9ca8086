"""A ``loft serve`` subprocess on loopback, for tests, benchmarks and the quick start.

``LocalServer`` starts the real server as a user would (``python -m tools.cli serve``)
on a free port, waits for ``/v1/health``, and stops it by its pid only: ``stop()``
is a SIGTERM with a grace period, ``kill()`` is ``kill -9``. ``loft()`` runs the real
command line in a subprocess with a chosen ``LOFT_HOME`` and password.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backend.client import Client

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loft_env(home: Path | None = None, password: str = PASSWORD) -> dict[str, str]:
    env = dict(os.environ, LOFT_PASSWORD=password, PYTHONUNBUFFERED="1")
    if home is not None:
        env["LOFT_HOME"] = str(home)
    return env


def loft_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools.cli", *args]


def loft(
    *args: str, home: Path | None = None, password: str = PASSWORD, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real ``loft`` command line; never raises on a non-zero exit."""
    return subprocess.run(
        loft_argv(*args),
        env=loft_env(home, password),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


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


@dataclass
class LocalServer:
    stores: Stores
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    tls: tuple[Path, Path, Path] | None = None
    """``(certificate, key, CA)``: serve https with these PEM files."""
    options: list[str] = field(default_factory=list)
    """More ``loft serve`` options (limits, say)."""

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]

    def start(self, timeout: float = 30.0) -> None:
        self.log = self.stores.data.parent / f"server-{self.port}.log"
        self.stores.data.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                loft_argv("serve", *self.stores.args(), "--listen", f"127.0.0.1:{self.port}",
                          *self._tls_args(), *self.options),
                env=loft_env(),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log.read_text()[-3000:]}")
            try:
                verify = ssl.create_default_context(cafile=self.tls[2]) if self.tls else True
                answer = httpx.get(f"{self.url}/v1/health", timeout=1, verify=verify)
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.kill()
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
        if result.returncode != 0:
            raise RuntimeError(f"loft user add {name}: {result.stderr.strip()}")

    def login(self, user: str, home: Path, device: str = "dev") -> None:
        ca = ["--ca", str(self.tls[2])] if self.tls else []
        result = loft("login", self.url, "--user", user, "--device", device, *ca, home=home)
        if result.returncode != 0:
            raise RuntimeError(f"loft login {user}: {result.stderr.strip()}")

    def client(self, token: str | None = None) -> Client:
        ca = str(self.tls[2]) if self.tls else None
        return Client(self.url, token, attempts=2, backoff=0.05, ca=ca)
