"""Uploading a chunk as a delta against the chunk it was cut from, when that pays.

A seal notes, for each new chunk, the chunk of the file's previous version it most
overlaps (its ``base`` in ``cache.chunks``). When the chunk goes up, and the base is
one the server holds (cached here and no longer pending: it went up, or came down;
a pending base is followed back to the one it was cut from, ``BASE_CHAIN`` at most;
and the server says so: one ``missing`` question per upload, ``bases_held``) and the
delta (``backend.delta``) is at most a quarter of the chunk, the delta goes instead
(``PUT /v1/chunks/{id}/delta/{base}``); the server rebuilds the chunk and checks it
against its id. A base the server refuses all the same (gone since: a 404) or a delta
it cannot use sends the chunk whole: a delta only ever saves bytes.
"""

from __future__ import annotations

import logging

import trio

from backend import delta
from backend.client import Client
from backend.errors import BadDelta, HashMismatch, NotFound
from cache.store import Cache

log = logging.getLogger("loft.sync")

BASE_CHAIN = 16
"""Pending bases followed back at most to find one the server holds."""

Delta = tuple[str, bytes]
"""A base chunk id and the delta from it."""


def base_of(cache: Cache, cid: str) -> str | None:
    """The chunk ``cid`` may go up as a delta against: its noted base, or (while that
    is pending) what that one was cut from; None if there is none cached here."""
    with cache.read() as txn:
        meta = cache.chunks.meta(txn, cid)
        base = meta.get("base") if meta is not None else None
        for _ in range(BASE_CHAIN):
            base_meta = cache.chunks.meta(txn, base) if base is not None else None
            if base_meta is None:
                return None
            if not base_meta["pending"]:
                return base
            # Not uploaded (yet, or ever: folded into a later version, as fsync'd
            # appends are): what it was cut from is as good a base.
            base = base_meta.get("base")
    return None


async def bases_held(client: Client, cache: Cache, cids: list[str]) -> dict[str, str]:
    """For the chunks of an upload: the base each may go up as a delta against, among
    those the server holds (one ``missing`` question for them all)."""
    def find() -> dict[str, str]:
        return {cid: base for cid in cids if (base := base_of(cache, cid)) is not None}

    bases = await trio.to_thread.run_sync(find)
    if not bases:
        return {}
    lacking = set(await client.missing(sorted(set(bases.values()))))
    return {cid: base for cid, base in bases.items() if base not in lacking}


def delta_for(cache: Cache, base: str | None, data: bytes) -> Delta | None:
    """The delta to send for ``data`` against chunk ``base``, if one pays; CPU-bound
    (a worker thread)."""
    base_data = cache.chunks.get(base) if base is not None else None
    if base is None or base_data is None:
        return None
    change = delta.encode(base_data, data)
    return (base, change) if delta.worth(change, len(data)) else None


async def put_chunk(client: Client, cid: str, data: bytes, change: Delta | None) -> None:
    """Upload one chunk, as ``change`` if given and the server takes it."""
    if change is not None:
        try:
            await client.put_chunk_delta(cid, *change)
            return
        except (NotFound, BadDelta, HashMismatch) as err:
            log.info("chunk %s: the delta against %s was refused (%s); sending it whole",
                     cid, change[0], err)
    await client.put_chunk(cid, data)
