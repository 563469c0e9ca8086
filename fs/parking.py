"""Files closed but not yet sealed: *parked*, durable without a seal.

Sealing a file (``fs.staging``) cuts what changed into chunks: tens of milliseconds of
CPU for a few bytes changed in tens of MiB, paid again at every close of a program
that opens, writes and closes the same file over and over. So the close of a file of
more than ``staging.INLINE_SEAL`` bytes *parks* it instead: its staging file gets a
name in the staging directory and a *park record* beside it, and its seal comes later,
in the background (``fs.files``), when the file has been left alone ``IDLE`` seconds
and at most ``LATEST`` seconds after the first close no seal covers; one seal covers
every close in between. Small files are still sealed at close (a few hundred µs).

Files in the staging directory:

| name | what |
|---|---|
| ``<token>.data`` | the staging file itself (its ``O_TMPFILE`` inode, linked here) |
| ``<token>.<seq>.park`` | a park record, CBOR (below); the highest ``seq`` is the one |
| ``<token>.<seq>.undo`` | the record's undo log (below) |
| ``*.tmp`` | a record being written (renamed into place when whole) |

A park record (version 1) holds what a seal needs besides the staging file's bytes:

| key | type | meaning |
|---|---|---|
| ``v`` | int | 1 |
| ``entry`` | str | the entry's id |
| ``base`` | map | the version the staging file is based on (an ``Entry``) |
| ``limit``, ``ranges`` | int, list of [lo, hi] | which bytes are its own (``Overlay``) |
| ``dirty`` | list of [lo, hi] or null | what changed since ``base`` (``Recut``) |
| ``size``, ``mtime`` | int, int | the file's size and time when parked |

A parked file stays open to programs: a write or a truncate may change bytes its
record takes from the staging file before the seal comes. Each such byte is first
copied, once, into the record's *undo log* (``preserve``: entries of an offset and a
length, 8 bytes each, big-endian, then the bytes, copied with ``copy_file_range``, no
copy through Python; a hole of the staging file is an entry alone, its length's top
bit set: zeros), and a mount that starts puts them back before it seals, so a crash
finds exactly what the close promised, never a later write.

Durability, the same as a sealed close's: when ``close`` returns, the staging file's
bytes and the record are in the kernel's page cache (they survive ``kill -9`` of the
mount at once), and the mount's once-a-second flush fsyncs the undo logs, then the
staging files and records written since the last one, then LMDB (``sync``): a power
cut loses at most the last second. A mount that starts seals the parked files it
finds (``recover``).

A record is *obsolete* once a seal covers it: the seal's LMDB transaction stores
``sealed:<token>`` = the record's seq (``SEALED``), and the files no longer needed are
unlinked only after the next flush of LMDB (``retire``, then ``unlink``), so a power cut
never finds them gone and the seal lost. A kill between the seal and the unlink leaves
a record at or below the stored seq: ``recover`` removes it.
"""

from __future__ import annotations

import bisect
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from backend import protocol as p
from cache.env import Env, Txn
from cache.records import Entry
from fs.overlay import Overlay
from fs.staged import Staged
from fs.stagefile import Budget, StagingFile
from fs.undolog import UNDO, ZEROS, copy, extents
from fs.undolog import undo as undo_into

log = logging.getLogger("loft.fs")

IDLE = 0.2
"""Seconds a parked file is left alone before it is sealed."""
LATEST = 1.0
"""Seconds after the first close no seal covers, at most, before the seal."""
SEALED = "sealed:"
"""LMDB meta key prefix: ``sealed:<token>`` is the seq of the last record a seal covered."""
VERSION = 1


@dataclass
class Record:
    """What a park record says (see the module's docstring)."""

    entry: str
    token: str
    seq: int
    base: Entry
    limit: int
    ranges: list[tuple[int, int]]
    dirty: list[tuple[int, int]] | None
    size: int
    mtime: int

    def encode(self) -> bytes:
        return p.encode({
            "v": VERSION, "entry": self.entry, "base": dict(self.base), "limit": self.limit,
            "ranges": [list(r) for r in self.ranges],
            "dirty": None if self.dirty is None else [list(r) for r in self.dirty],
            "size": self.size, "mtime": self.mtime,
        })

    @classmethod
    def decode(cls, token: str, seq: int, body: bytes) -> Record:
        raw: dict[str, Any] = p.decode_map(body)
        if raw.get("v") != VERSION:
            raise ValueError(f"park record version {raw.get('v')!r}")
        dirty = raw["dirty"]
        return cls(
            entry=str(raw["entry"]), token=token, seq=seq, base=cast(Entry, dict(raw["base"])),
            limit=int(raw["limit"]), ranges=[(int(a), int(b)) for a, b in raw["ranges"]],
            dirty=None if dirty is None else [(int(a), int(b)) for a, b in dirty],
            size=int(raw["size"]), mtime=int(raw["mtime"]),
        )


def new_token() -> str:
    return secrets.token_hex(8)


class Parking:
    """The staging directory's named files: records written, fsync'd, retired."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._unsynced: set[Path] = set()
        self._retired: list[Path] = []

    def data_path(self, token: str) -> Path:
        return self.root / f"{token}.data"

    def undo_path(self, token: str, seq: int) -> Path:
        return self.root / f"{token}.{seq}.undo"

    def park(self, staged: Staged, entry_id: str, now: float) -> bool:
        """Make what is written to ``staged`` durable without a seal, and say when to
        seal it (``staged.due``); False where the staging file cannot be named (the
        caller seals instead). The caller holds the entry's lock (a seal changes
        what a record says)."""
        if staged.unparked:
            if staged.token is None:
                token = new_token()
                if not staged.file.link(self.data_path(token)):
                    return False
                staged.token = token
            self._drop_undo(staged, retire=True)  # the new record starts afresh
            staged.seq += 1
            own = _changed_own(staged)
            path = self.write(Record(
                entry=entry_id, token=staged.token, seq=staged.seq, base=staged.base,
                limit=own.limit, ranges=own.ranges, dirty=staged.dirty,
                size=staged.file.size(), mtime=staged.mtime,
            ))
            if staged.record is not None:
                self.retire(staged.record)  # the new one says all it did, and more
            staged.record, staged.unparked = path, False
            staged.saved = _base_bytes(own, staged.file.size())
        if staged.parked_since is None:
            staged.parked_since = now
        staged.due = min(staged.parked_since + LATEST, now + IDLE)
        return True

    @staticmethod
    def covered(env: Env, txn: Txn, staged: Staged) -> None:
        """In a seal's transaction: the seal covers the file's park record."""
        if staged.record is not None and staged.token is not None:
            env.meta_put(txn, SEALED + staged.token, staged.seq)

    def sealed(self, staged: Staged) -> None:
        """A seal (with ``covered``) made the parked content a version."""
        self._drop_undo(staged, retire=True)
        if staged.record is not None:
            self.retire(staged.record)
        staged.record = staged.parked_since = staged.due = None
        staged.saved = None

    def preserve(self, staged: Staged, lo: int, hi: int) -> None:
        """Bytes ``[lo, hi)`` of a parked file's staging file are about to change (a
        write, a truncate): copy those its record takes from the staging file, and
        not copied yet, into its undo log first (on the event loop, before the
        change: a kill between the two finds them both as they were)."""
        if staged.saved is None or staged.token is None:
            return
        parts = staged.saved.gaps(lo, hi)
        if not parts:
            return
        path = self.undo_path(staged.token, staged.seq)
        if staged.undo is None:
            staged.undo = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            staged.undo_end = 0
        source = staged.file.fileno()
        for a, b in parts:
            for lo, hi, data in extents(source, a, b):
                if data:
                    os.pwrite(staged.undo, UNDO.pack(lo, hi - lo), staged.undo_end)
                    copy(source, lo, staged.undo, staged.undo_end + UNDO.size, hi - lo)
                    staged.undo_end += UNDO.size + hi - lo
                else:  # a hole (an extension never written): zeros, nothing to copy
                    os.pwrite(staged.undo, UNDO.pack(lo, ZEROS | hi - lo), staged.undo_end)
                    staged.undo_end += UNDO.size
            staged.saved.filled(a, b)
        self._unsynced.add(path)

    def _drop_undo(self, staged: Staged, retire: bool) -> None:
        if staged.undo is not None:
            os.close(staged.undo)
            staged.undo = None
        if retire and staged.token is not None and staged.record is not None:
            self.retire(self.undo_path(staged.token, staged.seq))

    def release(self, staged: Staged, keep_parked: bool = False) -> None:
        """The staging file is closed: its files go, unless ``keep_parked`` and it
        holds parked content no seal has covered (the mount is stopping and could not
        seal it: the next one does)."""
        kept = keep_parked and staged.record is not None and staged.modified
        self._drop_undo(staged, retire=not kept)
        if kept:
            return
        if staged.record is not None:
            self.retire(staged.record)
        if staged.token is not None:
            self.retire(self.data_path(staged.token))

    def restore(self, record: Record, budget: Budget) -> Staged:
        """The ``Staged`` of a parked file an earlier mount left (``recover``)."""
        fd = os.open(self.data_path(record.token), os.O_RDWR)
        file = StagingFile.adopt(self.root, budget, fd)
        undo = self.undo_path(record.token, record.seq)
        if undo.exists():  # what changed since the close goes back as it was
            undo_into(undo, fd)
            os.fsync(fd)
            undo.unlink()
        file.truncate(record.size)  # a kill may have come after an extension
        staged = Staged(file, record.base, modified=True, mtime=record.mtime,
                        dirty=record.dirty)
        staged.overlay = Overlay(record.limit)
        for lo, hi in record.ranges:
            staged.overlay.filled(lo, hi)
        staged.token, staged.seq, staged.unparked = record.token, record.seq, False
        staged.saved = _base_bytes(staged.overlay, record.size)  # written again: undo
        staged.record = self.root / f"{record.token}.{record.seq}.park"
        return staged

    def write(self, record: Record) -> Path:
        """Write ``record`` whole under its own name (a kill mid-write leaves a
        ``.tmp`` that ``recover`` removes); in the page cache when this returns."""
        path = self.root / f"{record.token}.{record.seq}.park"
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, record.encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)
        self._unsynced.add(path)
        self._unsynced.add(self.data_path(record.token))
        return path

    def retire(self, *paths: Path) -> None:
        """These files are no longer needed once LMDB is next flushed."""
        self._retired.extend(paths)

    def take_retired(self) -> list[Path]:
        retired, self._retired = self._retired, []
        return retired

    def sync(self) -> None:
        """Make every record written and every staging file parked since the last call
        durable (blocking: the housekeeping thread, before LMDB's flush)."""
        paths, self._unsynced = self._unsynced, set()
        # Undo logs before the staging files whose old bytes they hold.
        for path in sorted(paths, key=lambda p: p.suffix != ".undo"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # retired and unlinked meanwhile
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        if paths:
            _fsync_dir(self.root)  # the names

    def unlink(self, paths: list[Path]) -> list[str]:
        """Remove retired files (after the flush that made them unneeded), durably; the
        tokens of the staging files removed (their ``sealed:`` keys are unneeded now)."""
        for path in paths:
            path.unlink(missing_ok=True)
        if paths:
            _fsync_dir(self.root)
        return [p.name.removesuffix(".data") for p in paths if p.name.endswith(".data")]

    def recover(self, sealed: dict[str, int]) -> list[Record]:
        """The parked files an earlier mount left, newest record each; everything else
        in the directory (obsolete records, half-written ones, staging files no record
        names) is removed. ``sealed``: token -> seq from the ``sealed:`` keys; LMDB
        must be flushed first (what it says sealed stays sealed)."""
        newest: dict[str, Record] = {}
        for path in sorted(self.root.iterdir()):
            parts = path.name.split(".")
            if len(parts) != 3 or parts[2] != "park" or not parts[1].isdigit():
                continue
            token, seq = parts[0], int(parts[1])
            if seq <= sealed.get(token, 0) or not self.data_path(token).exists():
                continue
            try:
                record = Record.decode(token, seq, path.read_bytes())
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable park record %s: %s", path.name, exc)
                continue
            if token not in newest or newest[token].seq < seq:
                newest[token] = record
        keep = {self.data_path(r.token) for r in newest.values()}
        keep |= {self.root / f"{r.token}.{r.seq}.park" for r in newest.values()}
        keep |= {self.undo_path(r.token, r.seq) for r in newest.values()}
        for path in self.root.iterdir():
            if path not in keep:
                path.unlink(missing_ok=True)
        return list(newest.values())


def forget_sealed(env: Env, txn: Txn, tokens: list[str]) -> None:
    """Drop the ``sealed:`` keys of staging files whose files are gone for good."""
    for token in tokens:
        env.meta_delete(txn, SEALED + token)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _changed_own(staged: Staged) -> Overlay:
    """Which bytes a record takes from the staging file: those it holds that changed
    since the base (``dirty``; every other byte equals the base's, held or not), and
    all from the overlay's limit on."""
    own = Overlay(staged.overlay.limit)
    ranges = staged.overlay.ranges
    for lo, hi in staged.dirty or []:
        at = bisect.bisect_right(ranges, (lo, lo)) - 1
        for rlo, rhi in ranges[max(at, 0):]:
            if rlo >= hi:
                break
            own.filled(max(lo, rlo), min(hi, rhi))
    return own


def _base_bytes(overlay: Overlay, size: int) -> Overlay:
    """What ``preserve`` need not copy of a file just parked: the bytes its record
    takes from the base version (the overlay's gaps), as filled ranges of an
    overlay of ``size`` bytes; the rest is to copy before it changes."""
    saved = Overlay(size)
    for lo, hi in overlay.gaps(0, size):
        saved.filled(lo, hi)
    return saved

