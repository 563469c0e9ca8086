"""Chunks arriving from a client: verified, stored in the block store, then recorded.

One path for a single chunk (``PUT /v1/chunks/{id}``), for a pack of small ones
(``POST /v1/chunks``) and for a chunk sent as a delta against one the user can read
(``PUT /v1/chunks/{id}/delta/{base}``, rebuilt first: ``store_delta``): every chunk
is checked against its id first (one mismatch: nothing is stored), those the block
store lacks are sealed and stored a few at a time, and only then does the metadata
name them, all in one transaction.
"""

from __future__ import annotations

import trio

from backend import delta
from backend import protocol as p
from backend.errors import HashMismatch, NotFound, StoreError
from backend.server import quota
from backend.server.blocks import BlockStore, seal, unseal
from backend.server.database import Tx
from backend.server.metadata import MetadataStore
from backend.tasks import for_each

STORE_WORKERS = 8
"""Chunks of one upload stored in the block store at once."""


async def store_chunks(
    blocks: BlockStore, metadata: MetadataStore, user_id: int, chunks: list[tuple[str, bytes]]
) -> int:
    """Store and grant ``chunks`` to the user; how many were new *to this user*: never
    whether another user already holds the same bytes, the dedup side channel
    ``/chunks/missing`` is careful to close."""

    def verify() -> int | None:
        return next((i for i, (cid, data) in enumerate(chunks) if p.chunk_id(data) != cid), None)

    bad = await trio.to_thread.run_sync(verify)
    if bad is not None:
        raise HashMismatch(
            f"chunk {bad} of the upload does not match its id; nothing stored", {"index": bad}
        )
    unseen = set(await metadata.missing_chunks(user_id, [cid for cid, _ in chunks]))
    sizes = {cid: len(data) for cid, data in chunks}

    def over_quota(tx: Tx) -> None:
        quota.check(tx, user_id, quota.upload_charge(tx, user_id, sizes))

    # Refused before the block store holds any of it; ``add_chunks`` checks again,
    # in the transaction that records them.
    await metadata.storage(over_quota)
    # The same work whether or not another user stores these bytes: every chunk new to
    # this user is sealed and written (over an identical copy, if there is one), so the
    # time an upload takes tells nothing of anyone else's content. Only what the block
    # store held before is recorded as stored before (0 at rest).
    fresh = {cid: data for cid, data in chunks if cid in unseen}
    held = await blocks.held(list(fresh))
    stored = await write_chunks(blocks, fresh)
    at_rest = {cid: size for cid, size in stored.items() if cid not in held}
    # The chunks are durable in the block store before the metadata names them.
    await metadata.add_chunks(
        user_id, [(cid, len(data), at_rest.get(cid, 0)) for cid, data in chunks]
    )

    # Garbage collection may have deleted a blob stored or found above before the record
    # was written (it holds the record until the blob is gone: ``backend.server.gc``).
    # Recorded now, the chunk is safe from it: store again whatever has gone.
    named = dict(chunks)
    gone = set(named) - await blocks.held(list(named))
    if gone:
        await write_chunks(blocks, {cid: named[cid] for cid in gone})
    return len(unseen)


async def write_chunks(blocks: BlockStore, chunks: dict[str, bytes]) -> dict[str, int]:
    """Seal and write ``chunks``; their sizes at rest. Small ones (a pack of small files)
    go as one durable ``put_many`` (one flush, not one per chunk); full-size chunks one
    by one, a few at a time, so a large upload holds a few sealed chunks, not a batch."""
    out: dict[str, int] = {}
    if len(chunks) > 1 and all(len(data) < p.CDC_MIN for data in chunks.values()):

        def seal_all() -> list[tuple[str, bytes]]:
            return [(cid, seal(data)) for cid, data in chunks.items()]

        packed = await trio.to_thread.run_sync(seal_all)
        await blocks.put_many(packed)
        return {cid: len(data) for cid, data in packed}

    async def one(item: tuple[str, bytes]) -> None:
        cid, data = item
        sealed = await trio.to_thread.run_sync(seal, data)
        await blocks.put(cid, sealed)
        out[cid] = len(sealed)

    await for_each(list(chunks.items()), one, STORE_WORKERS)
    return out


async def store_delta(
    blocks: BlockStore, metadata: MetadataStore, user_id: int, cid: str, base: str,
    change: bytes,
) -> int:
    """Rebuild chunk ``cid`` from the stored chunk ``base`` and the delta ``change``,
    then store it as ``store_chunks`` does. A base the user cannot read is a 404 as
    for ``GET`` (whether another user holds it is not told), a malformed delta a 400
    (``BadDelta``), a result that is not ``cid`` a 422: each stores nothing."""
    if not await metadata.chunk_visible(user_id, base):
        raise NotFound(f"no chunk {base}")
    sealed = await blocks.get(base)
    if sealed is None:
        raise StoreError(f"chunk {base} is missing from the block store")

    def rebuild() -> bytes:
        return delta.apply(unseal(sealed), change)

    data = await trio.to_thread.run_sync(rebuild)
    return await store_chunks(blocks, metadata, user_id, [(cid, data)])
