"""The one retry policy (``backend.retry.Backoff``), on trio's mock clock: no real
sleeps, and exact times."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from backend import retry
from backend.retry import Backoff


def test_delays_grow_by_the_factor_within_half_jitter_up_to_the_maximum() -> None:
    backoff = Backoff(rng=random.Random(1))
    base = retry.INITIAL
    for _ in range(20):
        delay = backoff.next()
        assert 0.5 * base <= delay <= min(1.5 * base, retry.MAXIMUM)
        base = min(base * retry.FACTOR, retry.MAXIMUM)
    assert backoff.base == retry.MAXIMUM


def test_full_jitter_stays_between_zero_and_the_schedule() -> None:
    backoff = Backoff(initial=1.0, factor=3.0, maximum=20.0, jitter="full", rng=random.Random(2))
    delays = [backoff.next() for _ in range(6)]
    for delay, base in zip(delays, [1.0, 3.0, 9.0, 20.0, 20.0, 20.0], strict=True):
        assert 0.0 <= delay <= base


def test_jitter_spreads_the_delays_of_loops_that_fail_together() -> None:
    loops = [Backoff(rng=random.Random(seed)) for seed in range(10)]
    assert len({loop.next() for loop in loops}) == 10


def test_reset_starts_the_schedule_over() -> None:
    backoff = Backoff(initial=0.5, rng=random.Random(3))
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.base == 0.5
    assert 0.25 <= backoff.next() <= 0.75


@pytest.mark.parametrize(
    ("initial", "factor", "maximum"), [(0.0, 2.0, 1.0), (1.0, 0.5, 2.0), (2.0, 2.0, 1.0)]
)
def test_a_schedule_that_cannot_work_is_refused(
    initial: float, factor: float, maximum: float
) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, factor, maximum)


async def test_wait_sleeps_exactly_the_next_delay(autojump_clock: trio.testing.MockClock) -> None:
    backoff = Backoff(rng=random.Random(4))
    twin = Backoff(rng=random.Random(4))
    for _ in range(8):
        start = trio.current_time()
        await backoff.wait()
        assert trio.current_time() - start == pytest.approx(twin.next())


async def test_wait_returns_when_woken(autojump_clock: trio.testing.MockClock) -> None:
    backoff = Backoff(initial=4.0, rng=random.Random(5))  # a first delay of 2 to 6 s
    wake = trio.Event()

    async def wake_soon() -> None:
        await trio.sleep(1.0)
        wake.set()

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wake_soon)
        await backoff.wait(wake)
    assert trio.current_time() - start == pytest.approx(1.0)
    assert backoff.base == 8.0  # waking early still used up a step of the schedule


async def test_wait_on_a_set_event_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    wake = trio.Event()
    wake.set()
    start = trio.current_time()
    await Backoff(initial=3.0).wait(wake)
    assert trio.current_time() == start


async def test_wait_without_the_event_set_sleeps_the_whole_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(initial=2.0, rng=random.Random(6))
    expected = Backoff(initial=2.0, rng=random.Random(6)).next()
    start = trio.current_time()
    await backoff.wait(trio.Event())
    assert trio.current_time() - start == pytest.approx(expected)
