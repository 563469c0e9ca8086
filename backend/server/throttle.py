"""Login throttling, and the password derivation's own small thread limiter.

Each account name and each client address has a budget of failed logins (``Budget``):
``free`` failures cost nothing; the failure that spends the last of them, and each
one after, bars the key for a delay that doubles every time (``base``, 2 x ``base``,
... at most ``cap`` seconds). Failures leak away, one per ``forget`` seconds, so a key
left alone gets its budget back. A successful login clears its account (not its
address). A login tried while its account or address is barred is answered 429
``too_many_attempts`` with ``Retry-After``, without deriving anything: it costs no
scrypt and teaches nothing about the password. An unknown account name is throttled
like a real one, so throttling tells nobody who exists.

The state is in the memory of one server process: it starts empty, and several nodes
behind one database each keep their own (a guesser spreading over N nodes gets N
budgets). Addresses are the TCP peer's: behind a reverse proxy every client shares the
proxy's address, which then only the account budget and a larger address budget
protect. At most ``max_keys`` keys are kept; when full, the ones that have leaked to
nothing go first, then the oldest.

scrypt (``backend.server.auth``) needs 16 MiB and tens of milliseconds of one core per
derivation. Derivations run at most ``KDF_THREADS`` at a time, each holding one of
trio's shared worker threads, so a flood of logins never takes the threads, memory or
cores other requests need; at most ``KDF_QUEUE`` more wait for a turn, and any beyond
are answered 429 at once (``Retry-After: 1``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

KDF_THREADS = 2
KDF_QUEUE = 64


@dataclass(frozen=True)
class Budget:
    free: int
    """Failures before the first delay."""
    base: float
    """The first delay, seconds; each further failure doubles it."""
    cap: float
    """The longest delay, seconds."""
    forget: float
    """Seconds for one failure to leak away."""


ACCOUNT = Budget(free=5, base=1.0, cap=900.0, forget=60.0)
ADDRESS = Budget(free=30, base=1.0, cap=900.0, forget=6.0)


@dataclass
class _Record:
    failures: int
    updated: float
    """When ``failures`` last leaked (or was first counted)."""
    barred_until: float = 0.0
    logged: bool = False
    """Whether a refusal of the current bar was logged (one line per bar)."""


class Throttle:
    """Failed attempts per key, under one ``Budget``; ``now`` comes from ``clock``."""

    def __init__(
        self, budget: Budget, clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.budget = budget
        self.clock = clock
        self.max_keys = max_keys
        self._records: dict[str, _Record] = {}

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again; 0 if it may now."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.barred_until - self.clock())

    def first_refusal(self, key: str) -> bool:
        """True once per bar: whether this refusal is the one to log."""
        record = self._records.get(key)
        if record is None or record.logged:
            return False
        record.logged = True
        return True

    def failed(self, key: str) -> float:
        """Count one failure of ``key``; the delay it now has to wait (0: none)."""
        now = self.clock()
        record = self._leaked(key, now)
        record.failures += 1
        over = record.failures - self.budget.free
        if over < 0:
            return 0.0
        delay = min(self.budget.cap, self.budget.base * 2.0 ** min(over, 32))
        record.barred_until, record.logged = now + delay, False
        return delay

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)

    def _leaked(self, key: str, now: float) -> _Record:
        record = self._records.get(key)
        if record is None:
            if len(self._records) >= self.max_keys:
                self._evict(now)
            record = self._records[key] = _Record(0, now)
        leaked = int((now - record.updated) // self.budget.forget)
        if leaked >= record.failures:
            record.failures, record.updated = 0, now
        elif leaked > 0:
            record.failures -= leaked
            record.updated += leaked * self.budget.forget
        return record

    def _evict(self, now: float) -> None:
        def leaked(r: _Record) -> bool:
            return r.barred_until <= now and (now - r.updated) >= r.failures * self.budget.forget

        for key in [k for k, r in self._records.items() if leaked(r)]:
            del self._records[key]
        if len(self._records) >= self.max_keys:
            oldest = sorted(self._records, key=lambda k: self._records[k].updated)
            for key in oldest[: len(oldest) - self.max_keys // 2]:
                del self._records[key]


class Logins:
    """The throttles of one server process and its password derivation limiter."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = Throttle(ACCOUNT, clock)
        self.addresses = Throttle(ADDRESS, clock)
        self.kdf = trio.CapacityLimiter(KDF_THREADS)

    def wait(self, account: str, address: str) -> int:
        """Whole seconds before this login may be tried (0: now)."""
        seconds = max(self.accounts.wait(account), self.addresses.wait(address))
        return math.ceil(seconds) if seconds > 0 else 0

    def first_refusal(self, account: str, address: str) -> bool:
        logged = [t.first_refusal(k) for t, k in
                  ((self.accounts, account), (self.addresses, address)) if t.wait(k) > 0]
        return any(logged)

    def failed(self, account: str, address: str) -> None:
        self.accounts.failed(account)
        self.addresses.failed(address)

    def succeeded(self, account: str) -> None:
        self.accounts.succeeded(account)

    def crowded(self) -> bool:
        """Whether as many derivations already wait as may."""
        return self.kdf.statistics().tasks_waiting >= KDF_QUEUE
