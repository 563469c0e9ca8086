"""The metadata store: users, devices, namespaces, the tree, its journal and chunks.

One class over either SQL engine (``Database``). Every method runs its transaction
in a worker thread (``trio.to_thread.run_sync``), never on the event loop, and at
most ``Database.max_threads`` of them at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from backend import cursor
from backend import protocol as p
from backend.errors import Exists, Forbidden, QuotaExceeded
from backend.server import accounts, journal, mounts, quota
from backend.server.auth import token_hash
from backend.server.commit import validate_ops
from backend.server.database import Database, Tx, run
from backend.server.rows import VERSION_COLUMNS, VISIBLE_CHUNK, entry_from_row

T = TypeVar("T")

ALL = 1 << 62
"""A ``LIMIT`` of no consequence (SQLite's -1 and PostgreSQL's NULL do not agree)."""


class MetadataStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._writers = trio.CapacityLimiter(db.max_threads)
        self._chunk_lock = trio.Lock()
        self._chunk_queue: list[_ChunkRecord] = []
        self._readers = trio.CapacityLimiter(db.max_readers)

    async def _run(self, fn: Callable[[Tx], T], write: bool = True) -> T:
        limiter = self._writers if write else self._readers
        return await trio.to_thread.run_sync(run, self.db, fn, write, limiter=limiter)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        return await self._run(fn, write=False)

    def close(self) -> None:
        self.db.close()

    # --- users and tokens ------------------------------------------------------------

    def add_user_sync(self, name: str, pw_hash: str, limit: int | None = None) -> int:
        """Create a user with an empty root namespace and the quota ``limit`` (None: no
        limit). Blocking; for the CLI and tests."""
        now = int(time.time())

        def work(tx: Tx) -> int:
            if tx.execute("SELECT 1 FROM users WHERE name = ?", (name,)):
                raise Exists(f"user {name} already exists")
            (user_id,) = tx.execute(
                "INSERT INTO users (name, pw_hash, created) VALUES (?, ?, ?) RETURNING id",
                (name, pw_hash, now),
            )[0]
            (ns,) = tx.execute(
                "INSERT INTO namespaces (owner, seq, created) VALUES (?, 0, ?) RETURNING id",
                (user_id, now),
            )[0]
            tx.execute("UPDATE users SET root_ns = ? WHERE id = ?", (ns, user_id))
            tx.execute(
                "INSERT INTO members (ns, user_id, role) VALUES (?, ?, 'owner')", (ns, user_id)
            )
            tx.execute(
                "INSERT INTO entries (ns, id, parent, name, kind, rev, size, mode, mtime)"
                " VALUES (?, ?, '', '', 'dir', 0, 0, ?, ?)",
                (ns, p.ROOT_ID, 0o755, now * 1_000_000_000),
            )
            quota.set_limit(tx, name, limit)
            return int(user_id)

        try:
            return run(self.db, work)
        except self.db.integrity_errors:
            raise Exists(f"user {name} already exists") from None

    async def user_by_name(self, name: str) -> tuple[int, str, int] | None:
        """``(user_id, pw_hash, root_ns)`` or None."""

        def work(tx: Tx) -> tuple[int, str, int] | None:
            rows = tx.execute("SELECT id, pw_hash, root_ns FROM users WHERE name = ?", (name,))
            return (int(rows[0][0]), rows[0][1], int(rows[0][2])) if rows else None

        return await self._read(work)

    async def add_token(self, token: str, user_id: int, device: str, expires: int) -> None:
        """Issue ``token`` (expired ones are purged); it lives ``expires - now`` seconds
        from each renewal (``backend.server.accounts``)."""
        now = int(time.time())
        hashed = token_hash(token)
        await self._run(lambda tx: accounts.issue(tx, hashed, user_id, device, now, expires))

    async def resolve_token(self, token: str) -> tuple[int, str, str, int] | None:
        """``(user_id, user_name, device, root_ns)`` for a live token, else None. An
        expired token is purged; a live one is renewed if its last renewal is older
        than ``accounts.RENEW_EVERY`` (the only write, at most hourly per token)."""
        now = int(time.time())
        hashed = token_hash(token)
        found = await self._read(lambda tx: accounts.find(tx, hashed))
        if found is None:
            return None
        if found.expires <= now:
            await self._run(lambda tx: accounts.drop(tx, hashed))
            return None
        if now - found.last_seen >= accounts.RENEW_EVERY:
            await self._run(lambda tx: accounts.renew(tx, hashed, found.ttl, now))
        return found.user_id, found.user, found.device, found.root_ns

    async def sharing(self, fn: Callable[[Tx], T], write: bool = True) -> T:
        """A read or change of shared folders (``backend.server.shares``)."""
        return await self._run(fn, write)

    async def account_tx(self, fn: Callable[[Tx], T], write: bool = True) -> T:
        """A read or change of users and tokens (``backend.server.accounts``)."""
        return await self._run(fn, write)

    # --- namespaces ------------------------------------------------------------------

    async def namespaces(self, user_id: int) -> list[dict[str, Any]]:
        rows = await self._read(
            lambda tx: tx.execute(
                "SELECT m.ns, m.role, n.seq FROM members m JOIN namespaces n ON n.id = m.ns"
                " WHERE m.user_id = ? ORDER BY m.ns",
                (user_id,),
            )
        )
        return [{"ns": int(r[0]), "role": r[1], "head": int(r[2])} for r in rows]

    async def head(self, user_id: int, ns: int) -> int:
        def work(tx: Tx) -> int:
            journal.role(tx, user_id, ns)
            return int(tx.execute("SELECT seq FROM namespaces WHERE id = ?", (ns,))[0][0])

        return await self._read(work)

    async def commit(self, user_id: int, device: str, ns: int, ops: object) -> dict[str, Any]:
        """Apply a batch atomically; a batch seen before answers its first results. On
        the user's root namespace the batch may reach into their shared folders
        (``backend.server.mounts``); ``namespaces`` names those it advanced."""
        checked = validate_ops(ops)
        now = int(time.time())

        def work(tx: Tx) -> dict[str, Any]:
            return mounts.commit(tx, mounts.tree_for(tx, user_id, ns), user_id, device,
                                 checked, now)

        return await self._run(work)

    async def changes(
        self, user_id: int, ns: int, since: cursor.Position, limit: int, device: str = ""
    ) -> mounts.Feed:
        """The journal after ``since`` (``backend.cursor``): entry records with
        ``deleted``, or a reset if retention thinned it past ``since``; ``others``
        are the files ``device`` did not write."""
        return await self._read(
            lambda tx: mounts.changes(tx, mounts.tree_for(tx, user_id, ns), since, limit, device)
        )

    async def horizon(self, ns: int) -> int:
        """The sequence before which retention thinned the journal (0: it is whole)."""
        return await self._read(lambda tx: mounts.horizon(tx, ns))

    async def tree(
        self, user_id: int, ns: int, at: cursor.Position | None, after: str = "",
        limit: int = ALL,
    ) -> tuple[cursor.Position, list[dict[str, Any]], str | None]:
        """A page of every live entry, now or as it was at ``at``: ``(position,
        entries, next)`` (``backend.server.mounts.page``)."""
        return await self._read(
            lambda tx: mounts.page(tx, mounts.tree_for(tx, user_id, ns), at, after, limit)
        )

    async def lookup(
        self, user_id: int, ns: int, path: list[str], with_children: bool, after: str = "",
        limit: int = ALL,
    ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """The live entry at ``path`` (and a page of its children, for a directory)."""
        return await self._read(lambda tx: mounts.lookup(
            tx, mounts.tree_for(tx, user_id, ns), path, with_children, after, limit))

    async def versions(
        self, user_id: int, ns: int, entry_id: str, after: int = 0, limit: int = ALL
    ) -> list[dict[str, Any]]:
        """The recorded versions of one entry after sequence ``after``, oldest first,
        at most ``limit``, with their commit times."""

        def work(tx: Tx) -> list[dict[str, Any]]:
            tree = mounts.tree_for(tx, user_id, ns)
            where, local = mounts.locate(tx, tree, entry_id)
            if local != entry_id:  # a mount: its own versions, in the root's journal
                where, local = ns, entry_id
            rows = tx.execute(
                f"SELECT {VERSION_COLUMNS}, device, committed FROM versions"
                " WHERE ns = ? AND id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (where, local, after, limit),
            )
            out = []
            for r in rows:
                record = tree.present(where, entry_from_row(r[:11])) or {}
                record["device"], record["committed"] = r[11], int(r[12])
                out.append(record)
            return out

        return await self._read(work)

    async def past(self, user_id: int, ns: int, fn: Callable[[Tx], T]) -> T:
        """A read of the namespace's past (``backend.server.history``) by a member."""

        def work(tx: Tx) -> T:
            journal.role(tx, user_id, ns)
            return fn(tx)

        return await self._read(work)

    async def change_snapshots(self, user_id: int, ns: int, fn: Callable[[Tx], T]) -> T:
        """A change to the namespace's snapshots, by a member who may write."""

        def work(tx: Tx) -> T:
            if journal.role(tx, user_id, ns) not in journal.WRITE_ROLES:
                raise Forbidden("read-only access to this namespace")
            return fn(tx)

        return await self._run(work)

    # --- chunks ----------------------------------------------------------------------

    async def missing_chunks(self, user_id: int, ids: list[str]) -> list[str]:
        """The ids this user must upload: unknown, or not yet proven theirs to read."""
        unique = sorted(set(ids))

        def work(tx: Tx) -> list[str]:
            present: set[str] = set()
            for start in range(0, len(unique), 500):
                batch = unique[start : start + 500]
                marks = ",".join("?" * len(batch))
                rows = tx.execute(
                    f"SELECT c.id FROM chunks c WHERE c.id IN ({marks}) AND {VISIBLE_CHUNK}",
                    (*batch, user_id, user_id),
                )
                present.update(r[0] for r in rows)
            return [cid for cid in ids if cid not in present]

        return await self._read(work)

    async def storage(self, fn: Callable[[Tx], T]) -> T:
        """A read of storage accounting (``backend.server.quota``)."""
        return await self._read(fn)

    async def chunk_visible(self, user_id: int, cid: str) -> bool:
        rows = await self._read(
            lambda tx: tx.execute(
                f"SELECT 1 FROM chunks c WHERE c.id = ? AND {VISIBLE_CHUNK}",
                (cid, user_id, user_id),
            )
        )
        return bool(rows)

    async def add_chunks(self, user_id: int, chunks: list[tuple[str, int, int]]) -> None:
        """Record chunks the block store now holds durably (``(id, size, size at rest)``,
        0 at rest for one stored before), and grant them to their uploader.

        Group commit: records that arrive while one transaction is committing go
        together in the next one, so parallel uploads share a single fsync instead of
        queueing for one each. Each caller returns only once its own records are durable.
        """
        items = [_ChunkRecord(user_id, cid, size, stored) for cid, size, stored in chunks]
        self._chunk_queue.extend(items)
        async with self._chunk_lock:
            if not all(item.done for item in items):
                batch, self._chunk_queue = self._chunk_queue, []
                now = int(time.time())

                def work(tx: Tx) -> dict[int, QuotaExceeded]:
                    records = [(r.user_id, r.cid, r.size, r.stored) for r in batch]
                    return quota.record_chunks(tx, records, now)

                try:
                    refused = await self._run(work)
                    for record in batch:  # a user over quota: none of theirs recorded
                        record.error = refused.get(record.user_id)
                except BaseException as exc:
                    for record in batch:
                        record.error = exc
                    raise
                finally:
                    for record in batch:
                        record.done = True
        for item in items:
            if item.error is not None:
                raise item.error


@dataclass
class _ChunkRecord:
    user_id: int
    cid: str
    size: int
    stored: int
    done: bool = False
    error: BaseException | None = None
