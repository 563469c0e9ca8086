"""Running one async job over many items, a few at a time (uploads, downloads, stores)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from backend.errors import first_of

T = TypeVar("T")


async def for_each(items: list[T], fn: Callable[[T], Awaitable[None]], workers: int) -> None:
    """Run ``fn`` on every item, ``workers`` at a time; the first failure cancels the rest."""
    send, receive = trio.open_memory_channel[T](0)

    async def worker(rx: trio.MemoryReceiveChannel[T]) -> None:
        async with rx:
            async for item in rx:
                await fn(item)

    try:
        async with trio.open_nursery() as nursery:
            async with receive:
                for _ in range(min(workers, len(items)) or 1):
                    nursery.start_soon(worker, receive.clone())
            async with send:
                for item in items:
                    await send.send(item)
    except BaseExceptionGroup as group:
        # trio wraps even one failure in a group, and workers often fail together (the
        # network went away under all of them): callers catch our own errors
        # (``except ServerUnavailable`` in the uploader), so raise the first one.
        first = first_of(group, Exception)
        if first is None:
            raise
        raise first from None
