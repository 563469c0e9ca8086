"""Pinned content: fetched ahead of any read, kept current, never evicted.

A pin names an entry in the cache's ``pins`` sub-database: a file, or a folder and
every file it holds, now or later (see ``cache.store``). ``loft pin`` writes the pin
into the LMDB environment from its own process, so the pin is durable when the
command returns and needs no channel to the mount; the mount's ``Pinner`` polls
for what could need fetching:

- the set of pins (a pin added or dropped),
- the follower's cursor (a remote change applied: a new version of a pinned file, a
  file added under a pinned folder or moved into one),
- the journal's sequence (a local change, such as a move into a pinned folder),

and, whenever one of them moved, fetches the chunks of pinned files that the cache
lacks, a few at a time, through the mount's ``Fetcher`` (``keep``: one download per
chunk however many want it, each verified against its id, stored in LMDB). A scan that could not
fetch everything (the server is away) is retried with a backoff, and every
``RESCAN`` seconds anyway. Eviction leaves the chunks of pinned files alone
(``Cache.evict``), so once fetched they stay until unpinned.
"""

from __future__ import annotations

import logging
import math

import trio

from backend.retry import Backoff
from backend.tasks import for_each
from cache.store import Cache
from fs.content import ContentError, Fetcher

log = logging.getLogger("loft.pin")

POLL = 0.2
"""Seconds between two looks at the pins, the cursor and the journal."""
RESCAN = 30.0
"""Seconds after which pinned content is checked again even if nothing moved."""
WORKERS = 4
"""Chunks fetched at once for pins (readers' own fetches go first, unbounded)."""
SCAN_LIMIT = 512
"""Chunk ids taken per scan, so a huge pin never holds a huge list in memory."""


class Pinner:
    """Fetches and keeps the content of pinned entries; run in the mount's nursery."""

    def __init__(self, cache: Cache, fetcher: Fetcher) -> None:
        self.cache = cache
        self.fetcher = fetcher
        self.failures = 0

    def _state(self) -> tuple[object, ...]:
        with self.cache.read() as txn:
            return (
                tuple(self.cache.pins(txn)),
                self.cache.env.meta_get(txn, "cursor"),
                self.cache.env.meta_get(txn, "journal_seq", 0),
            )

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        seen: tuple[object, ...] | None = None
        checked = -math.inf
        backoff = Backoff(initial=1.0, maximum=RESCAN)
        while True:
            state = self._state()
            if state[0] and (state != seen or trio.current_time() - checked > RESCAN):
                if await self.fetch_missing():
                    seen, checked = state, trio.current_time()
                    backoff.reset()
                else:
                    await backoff.wait()
            # ``loft pin`` writes from its own process: there is no event to wait on.
            await trio.sleep(POLL)

    async def fetch_missing(self) -> bool:
        """Fetch every missing chunk of pinned files; False if some could not be had."""
        self.failures = 0
        before: list[str] = []
        while True:
            missing = await trio.to_thread.run_sync(self.cache.missing_pinned, SCAN_LIMIT)
            if not missing:
                return True
            if missing == before:  # fetched, yet still missing: never spin on it
                log.warning("%d pinned chunk(s) do not stay in the cache", len(missing))
                return False
            await for_each(missing, self._fetch, WORKERS)
            if self.failures:
                log.warning("%d pinned chunk(s) could not be fetched; retrying", self.failures)
                return False
            log.info("fetched %d chunk(s) of pinned files", len(missing))
            before = missing

    async def _fetch(self, cid: str) -> None:
        try:
            await self.fetcher.keep(cid)
        except ContentError:  # logged by the fetcher; the scan is retried
            self.failures += 1
