"""Running a mount: the composition root that owns every task of the mount.

``serve_mount`` opens the cache, builds the parts (writer, replica, fetcher, stager,
FUSE operations, invalidator, follower, uploader, pinner), mounts, calls ``ready``
once the kernel has the mount, and serves until the mount is unmounted (``loft
unmount``, ``fusermount3 -u``) or the process gets SIGINT/SIGTERM. Every long-lived
task runs in the one nursery here and reports readiness with ``task_status``. On the
way out, files still open are sealed and the uploader gets a bounded time to push what
the journal holds; whatever is left stays journaled and goes out at the next mount.

``status.json`` in ``LOFT_HOME`` (rewritten each second) tells ``loft status`` how
the mount is doing; like everything in the home it is 0600 (``backend.private``).
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
from backend.errors import LoftError
from backend.history_client import History
from backend.private import write_private
from cache.env import Txn, Writer
from cache.mapped import libc
from cache.store import Cache
from fs.content import Fetcher
from fs.errors import failure
from fs.follower import Follower
from fs.history import PastTree
from fs.invalidator import Invalidator
from fs.link import Link
from fs.operations import LoftOperations
from fs.parking import Parking, forget_sealed
from fs.pinning import Pinner
from fs.replica import Replica, ViewChange
from fs.staging import Stager
from fs.uploader import Uploader

log = logging.getLogger("loft.fs")

FLUSH = 1.0
"""Seconds between group commits to disk (and cache trims) while the mount runs."""
UNMAP = 0.1
"""Seconds between releases of the cache map's pages (``cache.mapped``)."""


ARENAS = 2
"""glibc malloc arenas the mount's threads share."""
READ_AHEAD_KB = 1024
"""The kernel's read-ahead for the mount, where the mount may set it (root): reads
then come to the mount a chunk's mean size (1 MiB) at a time, not 128 KiB, and a
sequential read of cached content takes 40% less of the mount's CPU."""


def _share_arenas() -> None:
    """Let the mount's threads share ``ARENAS`` glibc malloc arenas.

    By default each thread that allocates gets an arena of its own (up to eight per
    core), and an arena keeps what is freed in it: a mount whose worker threads read,
    cut and upload megabyte chunks grew to 451 MiB of RSS writing a 1 GiB file. With
    few arenas, a freed chunk buffer is reused by the next, whichever thread asks.
    (A low mmap threshold would return each buffer to the system instead, at the cost
    of faulting every page in again: warm reads ran at a third of their speed.)
    Elsewhere than glibc this does nothing."""
    m_arena_max = -8
    if not hasattr(libc, "mallopt") or not libc.mallopt(m_arena_max, ARENAS):
        log.debug("mallopt(M_ARENA_MAX) refused")


async def _answering(mountpoint: Path, ready: Callable[[], None]) -> None:
    """Beside the request loop: once the mount answers (a ``stat`` of its root, which
    waits for the kernel's handshake with it), set its read-ahead and call ``ready``."""
    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint)
    except OSError as exc:  # unmounted at once, say: never ready
        log.error("the mount at %s does not answer: %s", mountpoint, exc)
        return
    await _set_read_ahead(st.st_dev)
    log.info("mounted at %s", mountpoint)
    ready()


async def _set_read_ahead(device: int) -> None:
    """Raise the kernel's read-ahead for the mount to ``READ_AHEAD_KB`` where it may
    (``/sys/class/bdi`` is root's); elsewhere the kernel's default stays. Set after
    the handshake, which would set it back."""
    try:
        setting = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}")
        await trio.to_thread.run_sync(
            (setting / "read_ahead_kb").write_text, f"{READ_AHEAD_KB}\n"
        )
    except OSError as exc:
        log.info("read-ahead left at the kernel's default: %s", exc)
    else:
        log.info("read-ahead set to %d KiB", READ_AHEAD_KB)


def _give_back_heap() -> None:
    """Return the free pages of the malloc arenas to the system (``malloc_trim``):
    what the buffers of a large transfer left behind, once a second rather than at
    each free (see ``_share_arenas``)."""
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


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
    ca: str | None = None,
) -> None:
    _share_arenas()
    cache = Cache(home / "cache", cache_bytes)
    try:
        async with Client(server, token, attempts=3, timeout=30.0, ca=ca) as client, \
                trio.open_nursery() as nursery:
            writer = Writer(cache.env)
            await nursery.start(writer.run)
            def where(txn: Txn) -> None:
                # Where and as whom this device mounts: ``loft pin PATH`` resolves local
                # paths with it, and ``loft fsck`` replays the journal as this device.
                cache.env.meta_put(txn, "mountpoint", str(mountpoint))
                cache.env.meta_put(txn, "device", device)

            await writer.write(where)
            link = Link()
            replica = Replica(cache, device)
            if stale := await writer.write(cache.sweep_pending):
                log.info("%d cached chunk(s) no change names any more: evictable", stale)
            fetcher = Fetcher(cache, writer, client, fetch_timeout)
            stager = Stager(home / "staging", cache, writer, fetcher)
            await stager.recover()
            ops: LoftOperations | None = None
            invalidator: Invalidator | None = None

            def sink(changes: list[ViewChange]) -> None:
                if ops is None or invalidator is None:
                    return
                for change in changes:
                    if change.content:
                        ops.content_changed(change.entry_id)
                invalidator.queue(changes)

            follower = Follower(cache, writer, replica, client, ns, link, sink,
                                fetcher.offer)
            uploader = Uploader(cache, writer, replica, client, ns, link, follower, sink,
                                stager.writing)
            past = PastTree(History(client, ns))
            ops = LoftOperations(cache, writer, replica, fetcher, stager, past, uploader.wake,
                                 sink)
            invalidator = Invalidator(cache, ops.inodes)
            ops.on_init = invalidator.kernel_ready.set
            if cache.meta("cursor") is None:
                with trio.move_on_after(fetch_timeout):
                    try:
                        await follower.bootstrap()
                    except LoftError as exc:  # offline at first start: an empty tree
                        log.warning("starting without the server: %s", exc)
            await _serve(nursery, ops, mountpoint, fetcher, invalidator, follower, uploader,
                         cache, writer, link, home, ready, push_timeout)
            nursery.cancel_scope.cancel()
    finally:
        cache.close()
        (home / "status.json").unlink(missing_ok=True)
        log.info("unmounted %s", mountpoint)


async def _serve(
    nursery: trio.Nursery, ops: LoftOperations, mountpoint: Path, fetcher: Fetcher,
    invalidator: Invalidator, follower: Follower, uploader: Uploader, cache: Cache,
    writer: Writer, link: Link, home: Path, ready: Callable[[], None], push_timeout: float,
) -> None:
    options = set(pyfuse3.default_options)
    options.discard("default_permissions")
    options |= {"fsname=loft", "subtype=loft", "default_permissions"}
    pyfuse3.init(ops, str(mountpoint), options)
    unmounted = False
    try:
        await nursery.start(fetcher.run)
        await nursery.start(invalidator.run)
        await nursery.start(follower.run)
        await nursery.start(uploader.run)
        await nursery.start(Pinner(cache, fetcher).run)
        await nursery.start(ops.seal_parked)
        await nursery.start(_housekeeping, cache, writer, ops.stager.parking)
        await nursery.start(_unmap_cache, cache)
        await nursery.start(_status_writer, home, link, cache, uploader.client, ops.stager)
        nursery.start_soon(_on_signal)
        nursery.start_soon(_answering, mountpoint, ready)
        await pyfuse3.main()
        unmounted = True
        for entry_id, staged in list(ops.stager.staged.items()):
            if staged.modified:  # still open or parked at unmount: keep what was written
                try:
                    await ops.seal(entry_id)
                except Exception as exc:  # if parked, the next mount seals it
                    if (why := failure(exc)) is None:
                        raise
                    log.warning("cannot seal %s at unmount (a closed file stays parked for"
                                " the next mount): %s", entry_id, why)
        if link.online and not link.over_quota:  # else it waits for the next mount
            with trio.move_on_after(push_timeout):
                await uploader.drain()
        with cache.read() as txn:
            left = cache.journal.size(txn)
        if left:
            log.warning("%d change(s) stay journaled for the next mount", left)
    finally:
        pyfuse3.close(unmount=not unmounted)
        ops.stager.drop_all()
        retired = ops.stager.parking.take_retired()
        ops.stager.parking.sync()  # the parked files left for the next mount
        cache.flush()
        ops.stager.parking.unlink(retired)  # their sealed: keys go at the next mount


async def _housekeeping(
    cache: Cache, writer: Writer, parking: Parking,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Once a second: parked files and journaled changes reach the disk for good, then
    what that made unneeded is removed (``fs.parking``); the cache is trimmed (a
    bounded amount per writer job, so no request waits long behind it); the heap's
    free pages are given back."""
    task_status.started()
    while True:
        await trio.sleep(FLUSH)
        retired = parking.take_retired()
        await trio.to_thread.run_sync(parking.sync)
        await trio.to_thread.run_sync(cache.flush)
        if gone := await trio.to_thread.run_sync(parking.unlink, retired):
            await writer.write(lambda txn: forget_sealed(cache.env, txn, gone))
        freed = 1
        while freed:  # a bounded trim per job: requests queued meanwhile go between
            freed = await writer.write(cache.trim, bulk=True)
        await trio.to_thread.run_sync(_give_back_heap)


async def _unmap_cache(
    cache: Cache, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Every ``UNMAP`` seconds, give back the pages of the cache's map that lookups
    and listings touched (``cache.mapped``: 10 µs, and a minor fault for each page
    used again); chunk reads and stores give theirs back as they go."""
    task_status.started()
    while True:
        await trio.sleep(UNMAP)
        cache.env.release_pages()


async def _on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("signal received: unmounting")
            pyfuse3.terminate()
            return


async def _status_writer(
    home: Path, link: Link, cache: Cache, client: Client, stager: Stager,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    path = home / "status.json"
    task_status.started()
    while True:
        usage = await trio.to_thread.run_sync(cache.chunks.usage)

        def counts(txn: Txn) -> tuple[int, object]:
            return cache.journal.size(txn), cache.env.meta_get(txn, "cursor", 0)

        with cache.read() as txn:
            pending, cursor = counts(txn)
        status = {
            "pid": os.getpid(),
            "online": link.online,
            "error": link.last_error,
            "over_quota": link.over_quota,
            "pending_ops": pending,
            "parked": stager.parked(),
            "cursor": cursor,
            "uploaded_bytes": client.uploaded,
            "downloaded_bytes": client.downloaded,
            **usage,
        }
        write_private(path, json.dumps(status))
        await trio.sleep(1.0)
