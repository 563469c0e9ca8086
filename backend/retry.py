"""The one retry policy: exponential backoff with jitter.

Every loop in Loft that tries again after a transient failure (``err.permanent`` is
False: the server is away, a store is down) waits with a ``Backoff``, never with a
fixed sleep, so that many devices losing the same server do not come back in step,
and a device does not hammer a server that is struggling.

The n-th delay (from 0) is ``min(initial * factor**n, maximum)``, then jittered:

- ``"half"`` (the default): uniform in ±50% of it, so retries stay near the
  schedule but spread out;
- ``"full"``: uniform between 0 and it (the AWS "full jitter"), for loops where
  spreading out many clients matters more than the schedule.

A jittered delay is never over ``maximum``. ``reset()`` after a success starts the
schedule over.
"""

from __future__ import annotations

import random
from typing import Literal

import trio

INITIAL = 0.2
"""Seconds before the first retry (before jitter)."""
FACTOR = 2.0
"""Each delay is this many times the one before (before jitter)."""
MAXIMUM = 10.0
"""No delay is longer than this many seconds."""

Jitter = Literal["half", "full"]


class Backoff:
    """The delays of one retry loop; not shared between loops.

    ``rng`` (a seeded ``random.Random``) makes the delays reproducible in tests.
    """

    def __init__(
        self,
        initial: float = INITIAL,
        factor: float = FACTOR,
        maximum: float = MAXIMUM,
        jitter: Jitter = "half",
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or factor < 1 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._base = initial

    @property
    def base(self) -> float:
        """The un-jittered delay ``next()`` starts from."""
        return self._base

    def next(self) -> float:
        """The next delay in seconds; advances the schedule."""
        base = self._base
        self._base = min(base * self.factor, self.maximum)
        if self.jitter == "full":
            delay = self._rng.uniform(0.0, base)
        else:
            delay = base * self._rng.uniform(0.5, 1.5)
        return min(delay, self.maximum)

    def reset(self) -> None:
        """Start over from ``initial``: call it after a success."""
        self._base = self.initial

    async def wait(self, wake: trio.Event | None = None) -> None:
        """Sleep the next delay, or less if ``wake`` is set meanwhile (or already).

        Waking early still advances the schedule: only ``reset()`` starts it over.
        """
        delay = self.next()
        if wake is None:
            await trio.sleep(delay)
            return
        with trio.move_on_after(delay):
            await wake.wait()
