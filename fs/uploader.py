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
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from backend.client import Client
from backend.errors import LoftError, MissingChunks, Unauthorized
from backend.retry import Backoff
from backend.transfer import for_each
from cache.env import Writer
from cache.records import Batch
from cache.store import Cache
from fs.follower import Follower
from fs.link import Link
from fs.replica import Replica, ViewChange

log = logging.getLogger("loft.sync")

SETTLE = 0.1
"""Seconds the uploader lets a burst of local changes gather before it commits them."""
WORKERS = 6
"""Chunks uploaded at once."""


class Uploader:
    def __init__(
        self, cache: Cache, writer: Writer, replica: Replica, client: Client, ns: int,
        link: Link, follower: Follower, sink: Callable[[list[ViewChange]], None],
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.replica = replica
        self.client = client
        self.ns = ns
        self.link = link
        self.follower = follower
        self.sink = sink
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
            batch, notes = await self.writer.write(self.replica.build_batch)
            for note in notes:
                log.warning("conflict: %s: %s (%s)", note["path"], note["detail"], note["kind"])
            if batch is None:
                await self._idle()
                continue
            try:
                await self._push(batch)
                backoff.reset()
            except Unauthorized as err:
                self.link.down(err)
                log.error("the server refused this device's token: %s", err)
                await trio.sleep(30.0)
            except LoftError as err:  # transient: the same batch goes again
                self.link.down(err)
                await backoff.wait(self._wake)
                self._wake = trio.Event()

    async def _idle(self) -> None:
        with self.cache.read() as txn:
            left = self.cache.journal.size(txn)
        if left:
            # Only acknowledged records wait for their echo: the feed brings it.
            with trio.move_on_after(1.0):
                await self.follower.catch_up()
        else:
            self._drained.set()
        with trio.move_on_after(5.0):
            await self._wake.wait()
        self._wake = trio.Event()
        await trio.sleep(SETTLE)

    async def _push(self, batch: Batch) -> None:
        log.debug("pushing %d record(s) as %s", len(batch["covers"]),
                  [op["op"] for op in batch["ops"]])
        chunks = sorted({b[0] for op in batch["ops"] for b in op.get("blocks", [])})
        lost = await self._upload(await self.client.missing(chunks))
        try:
            if lost:
                raise LoftError(f"{len(lost)} chunk(s) of this change are gone from the cache")
            answer = await self.client.commit(self.ns, batch["ops"])
        except MissingChunks as err:
            await self._upload(list(err.detail.get("missing", [])))
            return
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
        log.info("committed %d operation(s) as revision %d", len(batch["ops"]), answer["seq"])
        # The echo comes with the follower's long-poll, which the commit wakes at once.
        # If the batch took the whole journal, what the user does next gathers for a
        # moment into the next batch; a backlog goes on at once.
        with self.cache.read() as txn:
            newest = int(self.cache.env.meta_get(txn, "journal_seq", 0))
        if max(int(seq) for seq, _ in batch["covers"]) >= newest:
            await trio.sleep(SETTLE)

    async def _upload(self, missing: list[str]) -> list[str]:
        """Upload these chunks from the cache; the ids of any the cache lacks."""
        lost: list[str] = []

        async def send(cid: str) -> None:
            data = self.cache.chunks.get(cid)
            if data is None:
                log.error("chunk %s is gone from the cache before its upload", cid)
                lost.append(cid)
                return
            await self.client.put_chunk(cid, data)

        await for_each(missing, send, WORKERS)
        return lost
