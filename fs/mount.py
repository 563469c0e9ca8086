"""Running a mount: the FUSE loop and the sync engine side by side, under trio.

``serve_mount`` mounts, calls ``ready`` once the kernel has the mount, and serves
until the mount is unmounted (``loft unmount``, ``fusermount3 -u``) or the process
gets SIGINT/SIGTERM. On the way out it gives the uploader a bounded time to push
what the journal holds; whatever is left stays journaled and goes out at the next
mount.

``status.json`` in ``LOFT_HOME`` (rewritten each second) tells ``loft status`` how
the mount is doing. Pinned content is fetched and kept by ``fs.pinning``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from backend.client import Client
from cache.store import Cache
from fs.content import Fetcher, Staging
from fs.operations import LoftOperations
from fs.pinning import Pinner
from fs.sync import SyncEngine

log = logging.getLogger("loft.fs")


async def serve_mount(
    home: Path,
    mountpoint: Path,
    server: str,
    token: str,
    ns: int,
    device: str,
    cache_bytes: int,
    fetch_timeout: float = 10.0,
    push_timeout: float = 30.0,
    ready: Callable[[], None] = lambda: None,
) -> None:
    cache = Cache(home / "cache", cache_bytes)
    staging = Staging(home / "staging")
    try:
        async with Client(server, token, attempts=3, timeout=30.0) as client:
            fetcher = Fetcher(cache, client, fetch_timeout)
            sync = SyncEngine(cache, client, ns, device)
            ops = LoftOperations(cache, fetcher, staging, sync.wake, sync.unstaged)
            sync.fs = ops
            pinner = Pinner(cache, fetcher)
            # Where this device is mounted, for ``loft pin PATH`` with a local path.
            cache.set_meta("mountpoint", str(mountpoint))
            if cache.meta("cursor") is None:
                with trio.move_on_after(fetch_timeout):
                    try:
                        await sync._bootstrap()
                    except Exception as exc:  # offline at first start: an empty tree
                        log.warning("starting without the server: %s", exc)
            options = set(pyfuse3.default_options)
            options.discard("default_permissions")
            options |= {"fsname=loft", "subtype=loft", "default_permissions"}
            pyfuse3.init(ops, str(mountpoint), options)
            unmounted = False
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(fetcher.run)
                    nursery.start_soon(sync.run)
                    nursery.start_soon(pinner.run)
                    nursery.start_soon(_status_writer, home, sync, cache)
                    nursery.start_soon(_on_signal)
                    log.info("mounted %s at %s", server, mountpoint)
                    ready()
                    await pyfuse3.main()
                    unmounted = True
                    for entry_id, staged in list(ops.staged.items()):
                        if staged.modified:  # still open at unmount: keep what was written
                            await ops._seal(entry_id)
                    with trio.move_on_after(push_timeout):
                        await sync.drain()
                    left = cache.journal_size()
                    if left:
                        log.warning("%d change(s) stay journaled for the next mount", left)
                    nursery.cancel_scope.cancel()
            finally:
                pyfuse3.close(unmount=not unmounted)
                for entry_id in list(ops.staged):
                    ops._drop_staging(entry_id)
    finally:
        cache.close()
        (home / "status.json").unlink(missing_ok=True)
        log.info("unmounted %s", mountpoint)


async def _on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("signal received: unmounting")
            pyfuse3.terminate()
            return


async def _status_writer(home: Path, sync: SyncEngine, cache: Cache) -> None:
    path = home / "status.json"
    while True:
        usage = await trio.to_thread.run_sync(cache.usage)
        status = {
            "pid": os.getpid(),
            "online": sync.online,
            "error": sync.last_error,
            "pending_ops": cache.journal_size(),
            "cursor": cache.meta("cursor", 0),
            **usage,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)
        await trio.sleep(1.0)
