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
    ========= ===== ==========================================

Written to a temporary file, fsync'd and renamed: a crash leaves the old or the new.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.errors import LocalError


@dataclass
class Device:
    server: str
    user: str
    device: str
    token: str
    root_ns: int
    expires: int


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
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
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
