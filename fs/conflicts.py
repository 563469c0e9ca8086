"""Names and ids the reconciler gives to what it keeps aside.

A conflicted copy is ``name (conflicted copy from DEVICE YYYY-MM-DD HHMMSS).ext``,
stamped with the time of the change that made it (so every replay names it alike);
the entries a rule creates get ids derived from the change's operation id, so the same
replay on any device, at any time, makes the same entry.
"""

from __future__ import annotations

import time

import blake3

from backend import protocol as p


def conflicted_name(name: str, device: str, when: float, number: int = 1) -> str:
    """``name (conflicted copy from DEVICE YYYY-MM-DD HHMMSS).ext``; a second copy of
    the same moment is ``... HHMMSS 2).ext``. Never over 255 bytes: the stem is cut."""
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when))
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f" (conflicted copy from {device} {stamp}{f' {number}' if number > 1 else ''})"
    tail = f"{suffix}.{ext}" if ext else suffix
    room = p.MAX_NAME_BYTES - len(tail.encode())
    while len(stem.encode()) > max(room, 1):
        stem = stem[:-1]
    return stem + tail


def derived_id(op_id: str, tag: str) -> str:
    """The id of an entry a rule creates for a change: the same on every replay."""
    return blake3.blake3(f"{op_id}:{tag}".encode()).hexdigest()[:32]
