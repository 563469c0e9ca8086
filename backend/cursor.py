"""Positions in the changes feed of a user's tree, which spans several namespaces.

A user's tree is their root namespace with the shared folders mounted in it
(``backend.server.mounts``); its feed advances one journal per namespace. A position
is one sequence per namespace, written so that the common case stays what a
single-namespace feed answers:

    ============================ ================================================
    position                     meaning
    ============================ ================================================
    ``12`` (int)                 the root namespace at 12; no shared folder
    ``"12,40:7,41:3"`` (str)     the root at 12, namespace 40 at 7, 41 at 3
    ============================ ================================================

The root is always first and bare, so a device compares positions without knowing
namespace numbers; in ``parts`` it is key ``ROOT`` (0: no namespace has that number).
A commit's answer ``seq`` is a position too: the sequences it wrote.
"""

from __future__ import annotations

ROOT = 0
Position = int | str
MAX_TEXT = 64 * 1024


class BadPosition(ValueError):
    pass


def parts(position: Position) -> dict[int, int]:
    """``{namespace: sequence}`` (the root as ``ROOT``); BadPosition if malformed."""
    if isinstance(position, int) and not isinstance(position, bool):
        if position < 0:
            raise BadPosition("a position may not be negative")
        return {ROOT: position}
    if not isinstance(position, str) or len(position) > MAX_TEXT:
        raise BadPosition("a position is an integer or 'SEQ,NS:SEQ,...'")
    first, *rest = position.split(",")
    out = {ROOT: _number(first)}
    for item in rest:
        ns, sep, seq = item.partition(":")
        if not sep or _number(ns) == ROOT or _number(ns) in out:
            raise BadPosition(f"bad namespace position {item[:40]!r}")
        out[_number(ns)] = _number(seq)
    return out


def text(positions: dict[int, int]) -> Position:
    """The position of ``positions`` (which holds ``ROOT``)."""
    rest = sorted((ns, seq) for ns, seq in positions.items() if ns != ROOT)
    if not rest:
        return positions[ROOT]
    return ",".join([str(positions[ROOT]), *(f"{ns}:{seq}" for ns, seq in rest)])


def reached(cursor: Position, mark: Position) -> bool:
    """Whether a feed read up to ``cursor`` holds what ``mark`` names. A namespace the
    cursor does not follow (a shared folder the user left) holds nothing to wait for."""
    have = parts(cursor)
    return all(have.get(ns, seq) >= seq for ns, seq in parts(mark).items())


def _number(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) < 1 << 63):
        raise BadPosition(f"bad number {raw[:40]!r} in a position")
    return int(raw)
