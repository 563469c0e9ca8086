"""Chunks arriving from a client: verified, stored in the block store, then recorded.

One path for a single chunk (``PUT /v1/chunks/{id}``) and for a pack of small ones
(``POST /v1/chunks``): every chunk is checked against its id first (one mismatch:
nothing is stored), those the block store lacks are sealed and stored a few at a
time, and only then does the metadata name them, all in one transaction.
"""

from __future__ import annotations

import trio

from backend import protocol as p
from backend.errors import HashMismatch
from backend.server import quota
from backend.server.blocks import BlockStore, seal
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
    at_rest: dict[str, int] = {}

    async def store(chunk: tuple[str, bytes]) -> None:
        cid, data = chunk
        if not await blocks.has(cid):
            sealed = await trio.to_thread.run_sync(seal, data)
            await blocks.put(cid, sealed)
            at_rest[cid] = len(sealed)

    await for_each(list(dict(chunks).items()), store, STORE_WORKERS)
    # The chunks are durable in the block store before the metadata names them.
    await metadata.add_chunks(
        user_id, [(cid, len(data), at_rest.get(cid, 0)) for cid, data in chunks]
    )
    # Garbage collection may have deleted a blob stored or found above before the record
    # was written (it holds the record until the blob is gone: ``backend.server.gc``).
    # Recorded now, the chunk is safe from it: store again whatever has gone.
    await for_each(list(dict(chunks).items()), store, STORE_WORKERS)
    return len(unseen)
