"""The follower: brings the server's changes into the remote tree, in order.

It long-polls the changes feed from the stored cursor and hands each page to the
replica (``Replica.apply_feed``), which updates the remote tree and rewrites the view
where the change lands (pending local changes are replayed over it, never skipped).
The uploader asks it to ``catch_up`` right after a commit is answered, so that the
device's own commits are echoed at once. Both may read the feed; a page read from a
cursor that moved meanwhile is dropped by the replica.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from backend.client import Client
from backend.cursor import reached
from backend.errors import LoftError
from backend.retry import Backoff
from cache.env import Writer
from cache.store import Cache
from fs.link import Link
from fs.replica import Replica, ViewChange

log = logging.getLogger("loft.sync")

POLL = 25.0
"""Seconds one long-poll of the changes feed may wait for a change."""
PAGE = 1000


class Follower:
    def __init__(
        self, cache: Cache, writer: Writer, replica: Replica, client: Client, ns: int,
        link: Link, sink: Callable[[list[ViewChange]], None],
        offer: Callable[[list[tuple[str, bytes]]], Awaitable[None]],
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.replica = replica
        self.client = client
        self.ns = ns
        self.link = link
        self.sink = sink
        self.offer = offer
        self._lock = trio.Lock()

    async def bootstrap(self) -> None:
        """A device's first sight of the tree: the whole of it at the head, in one go.
        The cursor is the head the tree was read at, even 0 (an empty namespace)."""
        answer = await self.client.tree(self.ns)
        entries, seq = answer["entries"], answer["seq"]
        self.sink(await self.writer.write(lambda txn: self.replica.bootstrap(txn, entries, seq)))
        self.link.up()

    async def pull(self, wait: float) -> bool:
        """Read one page of the feed and apply it; True if the server has more."""
        cursor_now = self.cache.meta("cursor")
        if cursor_now is None:
            await self.bootstrap()
            return False
        since = cursor_now
        answer = await self.client.changes(self.ns, since, wait=wait, limit=PAGE)
        if answer.get("reset"):  # retention thinned the feed past our cursor
            await self.bootstrap()
            return False
        self.link.up()
        if answer.get("chunks"):  # small files' content, sent along (``Fetcher.offer``)
            await self.offer([(str(cid), bytes(data)) for cid, data in answer["chunks"]])
        changes, cursor = answer["changes"], answer["cursor"]
        if changes or cursor != since:
            async with self._lock:
                applied = await self.writer.write(
                    lambda txn: self.replica.apply_feed(txn, since, changes, cursor)
                )
            if applied:
                self.sink(applied)
        return not reached(cursor, answer["head"])

    async def catch_up(self) -> None:
        """Apply everything the server has now (no waiting for more)."""
        while await self.pull(0):
            pass

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = Backoff(maximum=2.0)
        task_status.started()
        while True:
            try:
                await self.pull(POLL)
                backoff.reset()
            except LoftError as err:
                self.link.down(err)
                if err.permanent:
                    log.error("the server refused to list changes: %s", err)
                    await trio.sleep(30.0)
                else:
                    await backoff.wait()
