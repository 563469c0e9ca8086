"""A device's own state directory (``--home`` / ``LOFT_HOME``, default ``~/.loft``).

``device.json`` (mode 0600) holds what ``loft login`` learned:

    ========= ===== ==========================================
    key       type  meaning
    ========= ===== ==========================================
    server    str   base URL of the server
    user      str   the account
    device    str   this device's name
    token     str   bearer token (secret)
    root_ns   int   the user's root namespace
    expires   int   token expiry, unix seconds
    ca        str   the CA file to trust for the server (absent: the system's)
    ========= ===== ==========================================

Written to a temporary file, fsync'd and renamed: a crash leaves the old or the new.
The home is owner-only (``backend.private.private_dir``): 0700, its files 0600, and
refused if another user owns it or may write it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from backend import protocol as p
from backend.client import Client
from backend.errors import LocalError
from backend.private import private_dir


@dataclass
class Device:
    server: str
    user: str
    device: str
    token: str
    root_ns: int
    expires: int
    ca: str | None = None
    """The CA file ``loft login --ca`` was given (a server with a private CA)."""

    def client(self, **options: Any) -> Client:
        """A client of this device's server, as this device."""
        return Client(self.server, self.token, ca=self.ca, **options)


def server_url(text: str, insecure_http: bool = False) -> str:
    """The server's base URL from what the user typed. A bare host means ``https://``
    (``http://`` on loopback); plain ``http://`` to anything but loopback is refused
    unless ``insecure_http``: the password and the token would cross the network in
    clear."""
    url = text.strip().rstrip("/")
    if "://" not in url:
        host = urlsplit("//" + url).hostname or ""
        url = ("http://" if p.is_loopback(host) else "https://") + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LocalError(f"{text!r} is not a server URL: use https://HOST[:PORT]")
    if parts.scheme == "http" and not p.is_loopback(parts.hostname) and not insecure_http:
        raise LocalError(
            f"refusing plain http to {parts.hostname}: the password and the device's token"
            " would cross the network in clear; use https:// (or --insecure-http on a"
            " network you trust)"
        )
    return url


def home_dir(explicit: str | None) -> Path:
    value = explicit or os.environ.get("LOFT_HOME") or str(Path.home() / ".loft")
    return Path(value).expanduser().absolute()


def load_device(home: Path) -> Device:
    path = home / "device.json"
    try:
        raw = json.loads(path.read_text())
        return Device(**raw)
    except FileNotFoundError:
        raise LocalError(f"not logged in (no {path}); run `loft login URL --user NAME`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise LocalError(f"{path} is unreadable ({exc}); run `loft login` again") from None


def save_device(home: Path, device: Device) -> None:
    private_dir(home, "home")
    try:
        tmp = home / ".device.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(device), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, home / "device.json")
    except OSError as exc:
        raise LocalError(f"cannot write {home}: {exc.strerror}") from None


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not): is this device's mount up?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
