"""Waiting for something to become true, with a deadline (never a fixed sleep)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 5.0, what: str = "", interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    An ``OSError`` raised by the predicate counts as "not yet" (a file not there yet,
    a mount still starting); past ``timeout`` seconds the test fails naming ``what``.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except OSError as exc:
            last = exc
        if last and not isinstance(last, OSError):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what or predicate} (last: {last!r})")
        time.sleep(interval)


def fresh_status(mount: Any, timeout: float, ready: Callable[[str], bool]) -> str:
    """A mount's ``loft status``, taken after it rewrote status.json since now, once
    ``ready`` holds for it (the mount rewrites that file each second)."""
    since = time.time()
    path = mount.device.home / "status.json"

    def probe() -> str | None:
        if path.stat().st_mtime <= since:
            return None
        text: str = mount.status()
        return text if ready(text) else None

    return wait_for(probe, timeout, f"status of {mount.path} as expected")


def pending(text: str) -> int:
    """The number of changes waiting for upload, from ``loft status``."""
    match = re.search(r"^pending: +(\d+) change\(s\)", text, re.M)
    assert match, text
    return int(match.group(1))
