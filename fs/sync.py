"""The sync engine of a mount: the uploader, the follower and the invalidator.

*Uploader.* Drains the write journal in order. Consecutive records become one
commit: a create followed by updates and attribute changes of the same entry is
sent as one create with the final content; a batch ends at the first record naming
an entry already in it otherwise. Each operation's ``base`` is the server revision
this device last saw of the entry (``srev``). Chunks the server lacks are uploaded
first, from the cache, where they are pinned until then. When the commit is
acknowledged, its journal records are dropped and the entries' revisions recorded,
in one LMDB transaction; a commit repeated after a lost reply is harmless (operation
ids). A refused operation is settled so that no byte is lost: an edit based on a
stale version becomes a conflicted copy beside the current one; a name taken
meanwhile gives the newcomer a conflicted-copy name; a delete of something changed
or filled meanwhile is dropped and the current state restored; a rename or
attribute change is retried on the current revision.

*Follower.* Long-polls the changes feed from the stored cursor and applies each
remote change to the replica, skipping entries with local changes in flight (the
uploader settles those), then queues kernel cache invalidations for them.

*Invalidator.* The only task that talks to the kernel's caches, so that no FUSE
handler ever waits on an invalidation (which can deadlock the mount).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any

import pyfuse3
import trio

from backend import protocol as p
from backend.client import Client
from backend.errors import Conflict, LoftError, MissingChunks, ServerUnavailable, Unauthorized
from cache.store import Cache

log = logging.getLogger("loft.sync")

BATCH = 500
SETTLE = 0.1
"""Seconds the uploader lets a burst of local changes gather before it commits them."""
_BASED = ("update", "setattr", "rename", "delete")


def conflicted_name(name: str, device: str, when: float | None = None) -> str:
    """``name (conflicted copy from DEVICE YYYY-MM-DD HHMMSS).ext``"""
    stamp = time.strftime("%Y-%m-%d %H%M%S", time.localtime(when))
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f" (conflicted copy from {device} {stamp})"
    return f"{stem}{suffix}.{ext}" if ext else f"{stem}{suffix}"


def _touched(op: dict[str, Any]) -> list[str]:
    ids = [op["entry"]]
    if isinstance(op.get("replace"), dict):
        ids.append(op["replace"]["entry"])
    return ids


class SyncEngine:
    def __init__(self, cache: Cache, client: Client, ns: int, device: str) -> None:
        self.cache = cache
        self.client = client
        self.ns = ns
        self.device = device
        self.fs: Any = None  # LoftOperations, set by the mount
        self.online = False
        self.last_error = ""
        self.deferred: dict[str, tuple[dict[str, Any], int]] = {}
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._inval_send, self._inval_recv = trio.open_memory_channel[tuple[Any, ...]](10_000)

    def wake(self) -> None:
        self._wake.set()

    # --- the task set ----------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.uploader)
            nursery.start_soon(self.follower)
            nursery.start_soon(self.invalidator)
            nursery.start_soon(self.flusher)

    async def flusher(self) -> None:
        """Once a second: journaled changes reach the disk for good; the cache is trimmed."""
        while True:
            await trio.sleep(1.0)
            await trio.to_thread.run_sync(self.cache.flush)
            await trio.to_thread.run_sync(self.cache.evict)

    async def drain(self) -> None:
        """Wait until the journal is empty (used at unmount, under a deadline)."""
        while self.cache.journal_size():
            self.wake()
            self._idle = trio.Event()
            with trio.move_on_after(1.0):
                await self._idle.wait()

    # --- uploader --------------------------------------------------------------------

    async def uploader(self) -> None:
        delay = 0.2
        while True:
            records = self.cache.pending(BATCH)
            if not records:
                self._idle.set()
                with trio.move_on_after(5.0):
                    await self._wake.wait()
                self._wake = trio.Event()
                await trio.sleep(SETTLE)
                continue
            try:
                await self._push(records)
                delay = 0.2
                self.online = True
            except ServerUnavailable as err:
                self._offline(err)
                await self._sleep_or_wake(delay)
                delay = min(delay * 2, 10.0)
            except Unauthorized as err:
                self._offline(err)
                log.error("the server refused this device's token: %s", err)
                await self._sleep_or_wake(30.0)
            except LoftError as err:  # the server's own failure (disk full, store down)
                self._offline(err)
                await self._sleep_or_wake(delay)
                delay = min(delay * 2, 30.0)

    def _offline(self, err: LoftError) -> None:
        if self.online or self.last_error != str(err):
            log.warning("server unreachable, working offline: %s", err)
        self.online, self.last_error = False, str(err)

    async def _sleep_or_wake(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._wake.wait()
        self._wake = trio.Event()

    def _batch(
        self, records: list[tuple[int, dict[str, Any]]]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, list[str]]]]:
        ops: list[dict[str, Any]] = []
        covered: list[tuple[int, list[str]]] = []
        index: dict[str, int] = {}
        with self.cache.read() as txn:
            for seq, record in records:
                op = dict(record)
                touched = _touched(op)
                mine = index.get(op["entry"])
                if (
                    mine is not None
                    and ops[mine]["op"] == "create"
                    and op["op"] in ("update", "setattr")
                ):
                    for key in ("size", "mtime", "blocks", "mode"):
                        if key in op:
                            ops[mine][key] = op[key]
                    covered.append((seq, touched))
                    continue
                if any(entry in index for entry in touched):
                    break
                if op["op"] in _BASED:
                    op["base"] = self.cache.srev(txn, op["entry"])
                if isinstance(op.get("replace"), dict):
                    victim = op["replace"]["entry"]
                    op["replace"] = {"entry": victim, "base": self.cache.srev(txn, victim)}
                for entry in touched:
                    index[entry] = len(ops)
                ops.append(op)
                covered.append((seq, touched))
        return ops, covered

    async def _push(self, records: list[tuple[int, dict[str, Any]]]) -> None:
        """Send one batch. A batch, once built, is kept in LMDB (``inflight``) and sent
        again exactly as it was until it is answered, across lost replies and restarts:
        the server applies it once by its operation ids, and nothing appended to the
        journal meanwhile can be merged into an operation the server already applied."""
        inflight = self.cache.meta("inflight")
        if inflight:
            ops = inflight["ops"]
            covered = [(int(seq), list(touched)) for seq, touched in inflight["covered"]]
        else:
            ops, covered = self._batch(records)
            self.cache.set_meta("inflight", {"ops": ops, "covered": covered})
        log.debug("pushing %d record(s) as %s", len(covered), [op["op"] for op in ops])
        chunks = sorted({b[0] for op in ops for b in op.get("blocks", [])})
        await self._upload(chunks)
        try:
            answer = await self.client.commit(self.ns, ops)
        except MissingChunks as err:
            await self._upload(list(err.detail.get("missing", [])), force=True)
            return
        except Conflict as err:
            self.cache.set_meta("inflight", None)  # refused whole: nothing of it applied
            await self._settle_conflict(ops, covered, err)
            return
        except LoftError as err:
            if err.status == 0 or err.status >= 500:
                raise
            self.cache.set_meta("inflight", None)
            await self._settle_refused(ops, covered, err)
            return
        with self.cache.write() as txn:
            self.cache._meta_put(txn, "inflight", None)
            for seq, touched in covered:
                self.cache.settle(txn, seq, touched)
            for op, result in zip(ops, answer["results"], strict=True):
                gone = op["op"] == "delete"
                # A deleted entry keeps its revision as a tombstone (dropped when the
                # follower sees the deletion): a follower behind the uploader must not
                # resurrect it from an older version, whose name may belong to another
                # entry by now (its ``children`` key would be taken, then dropped).
                self.cache.set_srev(txn, op["entry"], result["rev"])
                if isinstance(op.get("replace"), dict):
                    self.cache.set_srev(txn, op["replace"]["entry"], result["rev"])
                entry = self.cache.entry(txn, op["entry"])
                if entry is not None and not gone:
                    entry["rev"] = result["rev"]
                    self.cache.put_entry(txn, entry)
        self.cache.uploaded(chunks)
        log.info("committed %d operation(s) as revision %d", len(ops), answer["seq"])

    async def _upload(self, chunks: list[str], force: bool = False) -> None:
        missing = chunks if force else await self.client.missing(chunks)
        if not missing:
            return

        async def send(cid: str) -> None:
            data = await trio.to_thread.run_sync(self.cache.chunk, cid)
            if data is None:
                log.error("chunk %s is gone from the cache before its upload", cid)
                return
            await self.client.put_chunk(cid, data)

        from backend.transfer import for_each

        await for_each(missing, send, 6)

    # --- settling refused operations -------------------------------------------------

    async def _settle_conflict(
        self, ops: list[dict[str, Any]], covered: list[tuple[int, list[str]]], err: Conflict
    ) -> None:
        detail = err.detail if isinstance(err.detail, dict) else {}
        index = int(detail.get("op", 0))
        op = ops[index]
        current = detail.get("current")
        seqs = [seq for seq, touched in covered if op["entry"] in touched]
        log.info("%s of %s refused (%s); settling", op["op"], op["entry"], err.message)
        with self.cache.write() as txn:
            if err.code == "exists" or (op["op"] == "update" and err.code == "conflict"):
                self._keep_as_copy(txn, op, current, seqs)
            elif (
                op["op"] in ("setattr", "rename")
                and current is not None
                and current["id"] == op["entry"]
            ):
                self.cache.set_srev(txn, op["entry"], current["rev"])  # retried on it
                if op["op"] == "rename" and (current["parent"], current["name"]) != (
                    op["parent"],
                    op["name"],
                ):
                    log.warning(
                        "conflict: renamed to %r elsewhere and to %r here; %r wins (entry %s)",
                        current["name"],
                        op["name"],
                        op["name"],
                        op["entry"],
                    )
            elif op["op"] == "rename" and isinstance(op.get("replace"), dict):
                self.cache.set_srev(txn, op["replace"]["entry"], current["rev"] if current else 0)
            else:
                self._drop_and_restore(txn, op, current, seqs)

    async def _settle_refused(
        self, ops: list[dict[str, Any]], covered: list[tuple[int, list[str]]], err: LoftError
    ) -> None:
        detail = err.detail if isinstance(err.detail, dict) else {}
        op = ops[int(detail.get("op", 0))]
        seqs = [seq for seq, touched in covered if op["entry"] in touched]
        if err.status == 404 and op["op"] in ("create", "mkdir", "rename"):
            with self.cache.write() as txn:
                mine = self.cache.entry(txn, op["entry"])
                if mine is not None and mine["parent"] != p.ROOT_ID:
                    log.warning("%s: its folder is gone elsewhere; kept at the top", mine["name"])
                    self._amend(txn, seqs, mine, parent=p.ROOT_ID)
                    return
        log.error(
            "the server refused %s of %s: %s; the change stays local only",
            op["op"],
            op["entry"],
            err,
        )
        with self.cache.write() as txn:
            for seq in seqs:
                self.cache.settle(txn, seq, [])

    def _keep_as_copy(
        self, txn: Any, op: dict[str, Any], current: dict[str, Any] | None, seqs: list[int]
    ) -> None:
        """Our version of the entry becomes a conflicted copy; the current one keeps the name."""
        mine = self.cache.entry(txn, op["entry"])
        if mine is None:
            for seq in seqs:
                self.cache.settle(txn, seq, [op["entry"]])
            return
        new_name = conflicted_name(mine["name"], self.device)
        if op["op"] in ("create", "mkdir", "rename"):
            # Not on the server under this name yet: the same entry takes the new name,
            # so whatever else the journal holds for it (children, edits) still applies.
            self._amend(txn, seqs, mine, name=new_name)
            if current is not None:
                self.cache.put_entry(txn, {**current})
                self.cache.set_srev(txn, current["id"], current["rev"])
        else:
            copy = {**mine, "id": p.new_id(), "name": new_name, "rev": 0}
            # The copy holds the entry as it is now, so it takes the entry's later
            # records too: sent on the current revision, a second offline edit would
            # overwrite the version that just won the name.
            later = [
                seq
                for seq, record in self.cache.pending(BATCH * 4, txn)
                if seq not in seqs and _touched(record) == [mine["id"]]
            ]
            for seq in [*seqs, *later]:
                self.cache.settle(txn, seq, [mine["id"]])
            if current is not None:
                self.cache.put_entry(txn, {**current})
                self.cache.set_srev(txn, mine["id"], current["rev"])
            else:
                self.cache.drop_entry(txn, mine["id"])
                self.cache.set_srev(txn, mine["id"], None)
            self.cache.put_entry(txn, copy)
            fields = {k: copy[k] for k in ("parent", "name", "mode", "mtime", "kind", "size")}
            fields.update({k: copy[k] for k in ("blocks", "target") if k in copy})
            record = {"op": "create", "op_id": p.new_id(), "entry": copy["id"], **fields}
            self.cache.record(txn, record, copy["id"])
            if self.fs is not None:
                self.fs.content_changed(mine["id"])
        log.warning("conflict: %s kept as %r", mine["name"], new_name)
        self._queue_entry(txn, mine["parent"], mine["name"])
        self._queue_entry(txn, mine["parent"], new_name)

    def _amend(self, txn: Any, seqs: list[int], entry: dict[str, Any], **change: Any) -> None:
        """Change a not-yet-committed entry and every journal record that names it so."""
        old_name = entry["name"]
        entry.update(change)
        self.cache.put_entry(txn, entry)
        for seq, record in self.cache.pending(BATCH * 4, txn):
            if seq in seqs and record["entry"] == entry["id"] and "name" in record:
                record.update(change)
                record["op_id"] = p.new_id()
                self.cache.rewrite(txn, seq, record)
        log.info("%s renamed %r for the server", entry["id"], old_name)

    def _drop_and_restore(
        self, txn: Any, op: dict[str, Any], current: dict[str, Any] | None, seqs: list[int]
    ) -> None:
        for seq in seqs:
            self.cache.settle(txn, seq, [op["entry"]])
        if current is not None:
            self.cache.put_entry(txn, {**current})
            self.cache.set_srev(txn, current["id"], current["rev"])
            self._queue_entry(txn, current["parent"], current["name"])
            log.warning(
                "conflict: %s changed elsewhere; its %s is dropped", current["name"], op["op"]
            )

    # --- follower --------------------------------------------------------------------

    async def follower(self) -> None:
        delay = 0.2
        while True:
            cursor = self.cache.meta("cursor")
            try:
                if cursor is None:  # never bootstrapped (0 is a namespace's empty start)
                    await self._bootstrap()
                    continue
                answer = await self.client.changes(self.ns, int(cursor), wait=25)
                self.online, delay = True, 0.2
            except Unauthorized as err:
                self._offline(err)
                await trio.sleep(30.0)
                continue
            except LoftError as err:  # unreachable, or failing: ask again soon
                self._offline(err)
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if answer["changes"]:
                self.apply(answer["changes"], answer["cursor"])

    async def _bootstrap(self) -> None:
        """A device's first sight of the tree: the whole of it at the head, in one go."""
        answer = await self.client.tree(self.ns)
        entries = [e for e in answer["entries"] if e["id"] != p.ROOT_ID]
        for entry in entries:
            entry["deleted"] = False
        # The cursor is the head the tree was read at, even 0 (an empty namespace):
        # the feed answers changes after it, so a commit at 1 is not skipped.
        self.apply(entries, int(answer["seq"]), bootstrap=True)
        self.online = True

    def apply(self, changes: list[dict[str, Any]], cursor: int, bootstrap: bool = False) -> None:
        """Apply remote changes to the replica and queue the kernel invalidations."""
        staged = self.fs.staged if self.fs is not None else {}
        with self.cache.write() as txn:
            for change in changes:
                entry_id = change["id"]
                if self.cache.is_local(txn, entry_id):
                    continue
                if entry_id in staged:
                    # Being written here: applied when the writer is done, unless its
                    # new version goes up first (the uploader then settles the conflict).
                    self.deferred[entry_id] = (dict(change), cursor)
                    continue
                if not bootstrap and change["rev"] <= self.cache.srev(txn, entry_id):
                    if change.get("deleted") and self.cache.entry(txn, entry_id) is None:
                        self.cache.set_srev(txn, entry_id, None)  # our deletion: no tombstone
                    continue
                old = self.cache.entry(txn, entry_id)
                if change.pop("deleted", False):
                    self.cache.drop_entry(txn, entry_id)
                    self.cache.set_srev(txn, entry_id, None)
                else:
                    self.cache.put_entry(txn, change)
                    self.cache.set_srev(txn, entry_id, change["rev"])
                    self._queue_entry(txn, change["parent"], change["name"])
                if old is not None:
                    self._queue_entry(txn, old["parent"], old["name"])
                    self._inval_send.send_nowait(("inode", self.cache.inode_of(txn, entry_id)))
                    if self.fs is not None:
                        self.fs.content_changed(entry_id)
            self.cache._meta_put(txn, "cursor", cursor)

    def unstaged(self, entry_id: str) -> None:
        """The last writer of an entry is done: apply a remote change held back meanwhile."""
        held = self.deferred.pop(entry_id, None)
        if held is None:
            return
        change, _ = held
        with self.cache.read() as txn:
            if self.cache.is_local(txn, entry_id):
                return  # our version goes up based on an older one: a conflict to settle
            cursor = int(self.cache._meta_get(txn, "cursor", 0))
        self.apply([change], cursor)

    def _queue_entry(self, txn: Any, parent: str, name: str) -> None:
        try:
            self._inval_send.send_nowait(("entry", self.cache.inode_of(txn, parent), name))
        except trio.WouldBlock:
            log.warning("kernel invalidation queue full; the kernel may show stale names briefly")

    # --- invalidator -----------------------------------------------------------------

    async def invalidator(self) -> None:
        async for item in self._inval_recv:
            known = self.fs.lookups if self.fs is not None else {}
            try:
                if item[0] == "entry":
                    if item[1] in known or item[1] == 1:
                        pyfuse3.invalidate_entry_async(
                            item[1], os.fsencode(item[2]), ignore_enoent=True
                        )
                elif item[1] in known:
                    await trio.to_thread.run_sync(pyfuse3.invalidate_inode, item[1])
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    log.warning("kernel cache invalidation failed: %s", exc)
