"""Owner-only state on disk: the server's data directory and a device's home.

What Loft keeps holds secrets: chunk files are the users' content, ``metadata.db``
their password hashes, ``device.json`` a bearer token, the device's LMDB cache the
content it read. So every directory Loft creates is 0700 and every file 0600, on
both sides, whatever the umask:

- ``loft serve`` and ``loft mount`` start with the umask 0o077 (``restrict_umask``),
  so whatever they or a library create (LMDB's lock file, SQLite's ``-wal`` and
  ``-shm``) is private too; the stores also ask for these modes explicitly.
- ``private_dir`` refuses, as one ``LocalError`` line, a data directory or home
  that another user owns or may write (group or other write bits): whoever can
  write there can swap the database or ``device.json``. A merely readable one (an
  older Loft, or a directory made by hand) is tightened: 0700, and what is inside
  0700/0600.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backend.errors import LocalError

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077


def restrict_umask() -> None:
    """From here on this process (and its children) create owner-only files."""
    os.umask(UMASK)


def private_dir(path: Path, what: str, walk: bool = True) -> None:
    """Create ``path`` (0700) if missing; refuse it if another user owns it or may
    write it; else make it 0700 and, with ``walk``, all it holds 0700/0600.

    ``walk=False`` (a server's data directory, where millions of chunk files may
    live) walks the tree only when ``path`` itself was not yet 0700, once, and
    otherwise tightens only what is directly inside."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        info = path.stat()
    except OSError as exc:
        raise LocalError(f"cannot create {what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise LocalError(f"{what} {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise LocalError(f"refusing {what} {path}: it belongs to another user (uid"
                         f" {info.st_uid}); use a directory of your own")
    if info.st_mode & 0o022:
        raise LocalError(f"refusing {what} {path}: other users may write to it (mode"
                         f" {stat.S_IMODE(info.st_mode):o}); chmod 700 {path}")
    loose = stat.S_IMODE(info.st_mode) != DIR_MODE
    tighten(path, deep=walk or loose)


def tighten(root: Path, deep: bool = True) -> None:
    """``root`` 0700 and what it holds (with ``deep``, all the tree; else only what
    is directly inside) 0700 if a directory, 0600 if a file. Symbolic links and what
    another user owns are left alone."""
    _chmod(root, DIR_MODE)
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        raise LocalError(f"cannot read {root}: {exc.strerror}") from None
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if deep:
                tighten(Path(entry.path))
            else:
                _chmod(Path(entry.path), DIR_MODE)
        elif entry.is_file(follow_symlinks=False):
            _chmod(Path(entry.path), FILE_MODE)


def private_file(path: Path) -> None:
    """Make an existing file of ours 0600 (one an older Loft left readable)."""
    _chmod(path, FILE_MODE)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating ``path`` 0600; an existing file is made 0600 too."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (a temporary file renamed over it), 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _chmod(path: Path, mode: int) -> None:
    try:
        info = path.stat()
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LocalError(f"cannot make {path} private: {exc.strerror}") from None
