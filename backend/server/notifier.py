"""Waking long-polls when a namespace advances.

``Notifier`` is the in-process part: a long-poll (a member: checked first) takes the
namespace's event *before* it reads the journal head again, then waits on it, so a
commit landing between the read and the wait still wakes it. ``PostgresListener``
feeds it commits made on other server nodes: it LISTENs on the channel that every
commit ``pg_notify``s inside its transaction, so a node hears of a commit exactly
when it becomes visible.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
import trio

from backend.retry import Backoff
from backend.server.postgres_db import NOTIFY_CHANNEL

log = logging.getLogger("loft.server")


class Notifier:
    """Events only for namespaces someone waits on: ``watch`` makes one, the last
    waiter to leave drops it, so the map holds what long-polls wait on, no more."""

    def __init__(self) -> None:
        self._watches: dict[int, _Watch] = {}

    @contextmanager
    def watch(self, ns: int) -> Iterator[trio.Event]:
        """The event the next advance of ``ns`` sets; take it before reading the head."""
        watch = self._watches.get(ns)
        if watch is None:
            watch = self._watches[ns] = _Watch()
        watch.waiters += 1
        try:
            yield watch.event
        finally:
            watch.waiters -= 1
            if not watch.waiters and self._watches.get(ns) is watch:
                del self._watches[ns]

    def watched(self) -> int:
        """Namespaces with a waiter."""
        return len(self._watches)

    def advanced(self, ns: int) -> None:
        watch = self._watches.pop(ns, None)
        if watch is not None:
            watch.event.set()


@dataclass
class _Watch:
    event: trio.Event = field(default_factory=trio.Event)
    waiters: int = 0


class PostgresListener:
    """Relays ``pg_notify`` from every node into a ``Notifier``; run it in a nursery."""

    def __init__(self, url: str, notifier: Notifier) -> None:
        self.url = url
        self.notifier = notifier

    async def run(self) -> None:
        stop = threading.Event()
        try:
            await trio.to_thread.run_sync(self._listen, stop, abandon_on_cancel=True)
        finally:
            stop.set()

    def _listen(self, stop: threading.Event) -> None:
        backoff = Backoff(initial=0.5)
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    backoff.reset()
                    while not stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            ns, _, _seq = note.payload.partition(":")
                            trio.from_thread.run_sync(self.notifier.advanced, int(ns))
            except (psycopg.Error, OSError) as exc:
                log.warning("change listener lost PostgreSQL (%s); retrying", exc)
                stop.wait(backoff.next())  # a thread: wakes early when the server stops
            except trio.RunFinishedError:
                return
