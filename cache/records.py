"""The typed records the device keeps in LMDB, each CBOR-encoded.

``Entry`` (sub-databases ``entries`` and ``rentries``): one file, folder or symlink.
The same shape as the wire's entry record (``backend.protocol``):

    ====== ========== ===============================================================
    key    type       meaning
    ====== ========== ===============================================================
    id     str        entry id (32 hex)
    parent str        parent entry id ("" for the root)
    name   str        name in the parent
    kind   str        "file", "dir" or "symlink"
    rev    int        the server's revision; ``PENDING`` (-1) in the view while a
                      local change of it has not been acknowledged
    size   int        bytes
    mode   int        permission bits
    mtime  int        nanoseconds since the epoch
    blocks list       files: ``[[chunk id, length], ...]``
    target str        symlinks
    ====== ========== ===============================================================

``Record`` (sub-database ``journal``, keyed by an 8-byte big-endian sequence): one
local change, as the user made it, with what it was based on:

    ====== ============ =============================================================
    key    type         meaning
    ====== ============ =============================================================
    op     map          the intent: a wire operation without ``base`` (``op``,
                        ``op_id``, ``entry`` and the op's fields)
    snap   Entry|null   the entry as the view showed it before the change (for an
                        update: when its writer started); null for creates
    victim Entry|null   rename over a name: the entry it replaced, as it was
    anc    list[str]    ids of the folders above the op's target folder, nearest
                        first (where to go if that folder is deleted elsewhere)
    time   float        unix time of the change (names its conflicted copies)
    tries  int          how often the server refused it after re-planning
    acked  int|str|null the server's position (``backend.cursor``) once the commit
                        holding it was
                        acknowledged; the record is dropped when the changes feed
                        passes it
    effect list         once acked: ``[[wire op, rev], ...]``, exactly what the
                        server applied for it; from then on ``snap`` is null, ``anc``
                        empty and ``op`` keeps no ``blocks`` (the effect carries them)
    ====== ============ =============================================================

``Batch`` (``meta`` key ``inflight``): the commit in flight, kept so that it is sent
again exactly as built until it is answered, across lost replies and restarts:
``ops`` (wire operations with ``base``), ``covers`` (``[[seq, [op index, ...]],
...]``: which operations carry each journal record) and ``aliases`` (``{old id: new
id}``: entries whose local content went to a new entry, e.g. a conflicted copy).

``ConflictNote`` (sub-database ``conflicts``, keyed by time and a counter): what the
reconciler decided when changes met, for ``loft status`` and the log: ``time``,
``path``, ``kind`` (a rule name of ``fs.reconcile``), ``detail``.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from backend.cursor import Position

PENDING = -1
"""The ``rev`` of a view entry whose latest change the server has not acknowledged."""


class Entry(TypedDict):
    id: str
    parent: str
    name: str
    kind: str
    rev: int
    size: int
    mode: int
    mtime: int
    blocks: NotRequired[list[list[Any]]]
    target: NotRequired[str]
    share: NotRequired[int]
    role: NotRequired[str]


WireOp = dict[str, Any]
"""A wire operation (``backend.protocol``): free-form by kind, validated by the server."""


class Record(TypedDict):
    op: WireOp
    snap: Entry | None
    victim: Entry | None
    anc: list[str]
    time: float
    tries: int
    acked: Position | None
    effect: list[list[Any]]


class Batch(TypedDict):
    ops: list[WireOp]
    covers: list[list[Any]]
    aliases: dict[str, str]


class ConflictNote(TypedDict):
    time: float
    path: str
    kind: str
    detail: str


CONTENT_KEYS = ("kind", "size", "blocks", "target")
"""What makes an entry's content: two states with these equal hold the same bytes."""


def same_content(a: Entry | None, b: Entry | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in CONTENT_KEYS)


def new_record(
    op: WireOp,
    snap: Entry | None,
    anc: list[str],
    when: float,
    victim: Entry | None = None,
) -> Record:
    return Record(
        op=op, snap=snap, victim=victim, anc=anc, time=when, tries=0, acked=None, effect=[]
    )


def settled(record: Record, position: Position, effect: list[list[Any]]) -> Record:
    """An acknowledged record as it waits for its echo: from then on only its
    ``effect`` is laid over the tree and only the ids it touches are read, so the
    snapshot and the operation's block list (a large file's, twice over) are left out."""
    op = {k: v for k, v in record["op"].items() if k != "blocks"}
    return Record(op=op, snap=None, victim=record["victim"], anc=[], time=record["time"],
                  tries=record["tries"], acked=position, effect=effect)
