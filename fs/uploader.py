"""The uploader: sends the journal's changes to the server, one commit at a time.

It asks the replica for the next batch (``Replica.build_batch``: the reconciler's
operations for the head of the journal, each with the ``base`` the remote tree gives,
or the batch in flight if one is), uploads the chunks the server lacks, and commits.
Then:

- acknowledged: the records wait for the feed to echo the commit (the follower's
  long-poll, which the commit wakes), and the device's view is exactly the server's;
- refused (a permanent error on one operation): nothing of the batch applied; the
  culprit's record counts a try, the device catches up with the feed, and the next
  batch is planned anew on the newer tree (``fs.reconcile``; given up after
  ``MAX_TRIES``), so a refusal is never retried as it was;
- a transient failure (the server away or failing): the same batch is sent again,
  exactly, after a backoff (``backend.retry``); the server applies it once by its
  operation ids.
- over quota (``QuotaExceeded``, on an upload or the commit): nothing was kept; the
  batch stays in the journal and goes again, exactly, every ``QUOTA_RETRY`` seconds
  or at once when a local change wakes the uploader.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import trio

from backend.client import Client
from backend.errors import (
    HashMismatch,
    LoftError,
    MissingChunks,
    QuotaExceeded,
    Unauthorized,
)
from backend.retry import Backoff
from backend.tasks import for_each
from cache.env import Writer
from cache.records import Batch
from cache.store import Cache
from fs.batching import HOLD
from fs.deltas import Delta, bases_held, delta_for, put_chunk
from fs.follower import Follower
from fs.link import Link
from fs.replica import Replica, ViewChange

log = logging.getLogger("loft.sync")

GATHER = 0.02
"""Seconds the first change after a quiet spell waits for the rest of its save (an
editor's write, close, rename) before it is committed."""
SETTLE = 0.1
"""Seconds the changes made during a commit gather before the next one: a program
writing many files commits a few times a second, not once per file."""
BACKLOG = 64
"""Journal records past a commit that make the next one go at once, without ``SETTLE``."""
WORKERS = 6
"""Uploads (a chunk or a pack) in flight at once."""
PACK_BELOW = 512 * 1024
"""Chunks smaller than this go up in packs (``POST /v1/chunks``), not one request each."""
INLINE_BYTES = 64 * 1024
"""A batch naming at most this much content sends it with the commit, whether or not
the server holds it: one request instead of three (``missing``, a pack, the commit)
for a small file's save."""
PACK_BYTES = 4 * 1024 * 1024
PACK_CHUNKS = 256
"""A pack is sent once it holds this many bytes or chunks."""
QUOTA_RETRY = 30.0
"""Seconds between tries of a batch the server refuses for quota (a local change
wakes the uploader sooner)."""


class Uploader:
    def __init__(
        self, cache: Cache, writer: Writer, replica: Replica, client: Client, ns: int,
        link: Link, follower: Follower, sink: Callable[[list[ViewChange]], None],
        writing: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        """``writing``: the entries being written now (``Stager.writing``), whose
        creates wait for their content (``Replica.build_batch``)."""
        self.cache = cache
        self.writer = writer
        self.replica = replica
        self.client = client
        self.ns = ns
        self.link = link
        self.follower = follower
        self.sink = sink
        self.writing = writing
        self._wake = trio.Event()
        self._drained = trio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> None:
        """Return once the journal is empty (the caller sets the deadline)."""
        while True:
            with self.cache.read() as txn:
                if not self.cache.journal.size(txn):
                    return
            self._drained = trio.Event()
            self.wake()
            await self._drained.wait()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = Backoff()
        task_status.started()
        while True:
            writing = self.writing()
            batch, notes = await self.writer.write(
                functools.partial(self.replica.build_batch, writing=writing))
            for note in notes:
                log.warning("conflict: %s: %s (%s)", note["path"], note["detail"], note["kind"])
            if batch is None:
                await self._idle()
                continue
            try:
                await self._push(batch)
                backoff.reset()
                self.link.quota_ok()
            except QuotaExceeded as err:  # kept in the journal until there is room
                self.link.quota_refused(err)
                with trio.move_on_after(QUOTA_RETRY):
                    await self._wake.wait()
                self._wake = trio.Event()
            except Unauthorized as err:
                self.link.down(err)
                log.error("the server refused this device's token: %s", err)
                await trio.sleep(30.0)
            except LoftError as err:  # transient: the same batch goes again
                self.link.down(err)
                await backoff.wait(self._wake)
                self._wake = trio.Event()

    async def _idle(self) -> None:
        """Until a change wakes the uploader, or ``HOLD`` seconds (a create held
        back for a file being written goes once its hold is over)."""
        with self.cache.read() as txn:
            left = self.cache.journal.size(txn)
        if left:
            # Only acknowledged records wait for their echo: the feed brings it. The
            # server may be gone by now: the follower's own loop retries, so this only
            # notes it (the mount must outlive any failure of the network).
            with trio.move_on_after(1.0):
                try:
                    await self.follower.catch_up()
                except LoftError as err:
                    self.link.down(err)
        else:
            self._drained.set()
        with trio.move_on_after(HOLD):
            await self._wake.wait()
        self._wake = trio.Event()
        await trio.sleep(GATHER)

    async def _push(self, batch: Batch) -> None:
        log.debug("pushing %d record(s) as %s", len(batch["covers"]),
                  [op["op"] for op in batch["ops"]])
        sizes = {b[0]: b[1] for op in batch["ops"] for b in op.get("blocks", [])}
        inline = await trio.to_thread.run_sync(self._inline, sizes)
        lost = [] if inline else await self._upload(await self.client.missing(sorted(sizes)),
                                                    sizes)
        try:
            if lost:
                raise LoftError(f"{len(lost)} chunk(s) of this change are gone from the cache")
            answer = await self.client.commit(self.ns, batch["ops"], inline)
        except MissingChunks as err:
            await self._upload(list(err.detail.get("missing", [])), sizes)
            return
        except HashMismatch:
            raise  # the cache's copy of a chunk, not the operation: as an upload's would
        except LoftError as err:
            if not err.permanent and not lost:
                raise
            detail = err.detail if isinstance(err.detail, dict) else {}
            index = int(detail.get("op", 0))
            why = str(err)
            log.info("%s refused (%s); re-planning", batch["ops"][index]["op"], why)
            self.sink(await self.writer.write(
                lambda txn: self.replica.refused(txn, batch, index, why)))
            await self.follower.catch_up()
            return
        self.sink(await self.writer.write(lambda txn: self.replica.acked(txn, batch, answer)))
        self.link.up()
        log.info("committed %d operation(s) as revision %d: %s", len(batch["ops"]), answer["seq"],
                 _summary(batch["ops"]))
        # The echo comes with the follower's long-poll, which the commit wakes at once.
        # What a program did meanwhile gathers for ``SETTLE`` into the next batch; a
        # backlog goes on at once; nothing meanwhile, and the next change goes up as soon
        # as it is made (``GATHER``).
        with self.cache.read() as txn:
            left = self.cache.journal.last(txn) - max((s for s, _ in batch["covers"]), default=0)
        if 0 < left < BACKLOG:
            await trio.sleep(SETTLE)

    def _inline(self, sizes: dict[str, int]) -> list[tuple[str, bytes]]:
        """A small save's content, to go with its commit (no ``missing`` round trip);
        empty if the batch names more than ``INLINE_BYTES`` or a chunk the cache lacks
        (the usual two steps then say which)."""
        if not sizes or sum(sizes.values()) > INLINE_BYTES:
            return []
        chunks = []
        for cid in sizes:
            data = self.cache.chunks.get(cid)
            if data is None:
                return []
            chunks.append((cid, data))
        return chunks

    async def _upload(self, missing: list[str], sizes: dict[str, int]) -> list[str]:
        """Upload these chunks from the cache, small ones in packs; the ids of any the
        cache lacks."""
        lost: list[str] = []
        groups = packs(missing, sizes)
        bases = await bases_held(self.client, self.cache, [g[0] for g in groups if len(g) == 1])

        def read(group: list[str]) -> list[tuple[str, bytes, Delta | None]]:
            found: list[tuple[str, bytes, Delta | None]] = []
            for cid in group:
                data = self.cache.chunks.get(cid)
                if data is None:
                    log.error("chunk %s is gone from the cache before its upload", cid)
                    lost.append(cid)
                else:
                    found.append((cid, data, delta_for(self.cache, bases.get(cid), data)
                                  if len(group) == 1 else None))
            return found

        async def send(group: list[str]) -> None:
            # Copying megabytes out of the cache holds the GIL: not on the event loop;
            # so does making a delta. A chunk alone may go as a delta (``fs.deltas``).
            found = await trio.to_thread.run_sync(read, group)
            if len(found) == 1:
                await put_chunk(self.client, *found[0])
            elif found:
                await self.client.put_chunks([(cid, data) for cid, data, _ in found])

        await for_each(groups, send, WORKERS)
        return lost


def packs(missing: list[str], sizes: dict[str, int]) -> list[list[str]]:
    """The chunks grouped into uploads: a large chunk alone, small ones together."""
    groups: list[list[str]] = []
    pack: list[str] = []
    held = 0
    for cid in missing:
        size = sizes.get(cid, PACK_BELOW)
        if size >= PACK_BELOW:
            groups.append([cid])
            continue
        pack.append(cid)
        held += size
        if held >= PACK_BYTES or len(pack) >= PACK_CHUNKS:
            groups.append(pack)
            pack, held = [], 0
    if pack:
        groups.append(pack)
    return groups


def _summary(ops: list[Any]) -> str:
    """What a batch touched, for the mount's log (the device's own): the first
    operation and its name, and how many more. Escaped by the log's formatter."""
    first = ops[0] if ops else {}
    what = f"{first.get('op')} {first.get('name') or first.get('entry')}"
    return what if len(ops) <= 1 else f"{what} and {len(ops) - 1} more"
