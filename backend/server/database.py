"""The SQL database behind the metadata store: one small interface, two engines.

``SQLiteDatabase`` (``sqlite_db.py``) is the embedded default; ``PostgresDatabase``
(``postgres_db.py``) serves many stateless server nodes. Both run the same SQL,
written with ``?`` placeholders; an engine rewrites what it must.

Durability: a ``transaction()`` block either commits as a whole (SQLite in WAL mode
with ``synchronous=FULL``; PostgreSQL with its default ``fsync``/``synchronous_commit``)
or leaves nothing behind. A crash at any point before the commit returns leaves the
database as it was before the block.

Tables (schema version 1)

    ============ =============================================================
    table        rows
    ============ =============================================================
    meta         key/value: ``schema`` = "1"
    users        id, name (unique), pw_hash (``scrypt$...``), created, root_ns
    tokens       hash (sha256 hex of the bearer token), user_id, device,
                 created, expires (unix seconds); a revoked token's row is deleted
    token_use    hash → ttl (the token's life from each renewal), last_seen (its
                 last renewal, unix seconds): use renews a token at most hourly
                 (``backend.server.accounts``); no row: issued before this table
    namespaces   id, owner, seq (the journal head), created
    members      (ns, user_id) → role: "owner" | "editor" | "viewer"
    entries      the live tree: (ns, id) → parent, name, kind, rev, size,
                 mode, mtime, blocks (CBOR), target; (ns, parent, name) unique;
                 kind "mount": a shared folder in a member's root namespace,
                 ``target`` its namespace number (``backend.server.mounts``)
    versions     the journal: (ns, seq) → one entry state per operation,
                 ``deleted`` = 1 when the entry ends there; never rewritten
    applied_ops  (ns, op_id) → seq and CBOR result, for exactly-once commits
    chunks       id → size, stored (bytes at rest), created
    chunk_grants (user_id, chunk): the user uploaded (proved they hold) it
    ns_chunks    (ns, chunk): a version in ns names the chunk
    snapshots    (ns, name) → seq, root (the entry id it covers), created:
                 named points in time that retention never expires
    horizons     ns → seq: the journal before ``seq`` has been thinned by
                 retention; a changes feed read from an older cursor is
                 incomplete (the device reads the whole tree again)
    quotas       user_id → bytes: the most the user's namespaces may hold
    usage        user_id → bytes: the user's storage use, a running total kept
                 by ``backend.server.quota`` (a missing row is computed again);
                 whatever deletes chunks, grants or ns_chunks calls ``quota.forget``
    links        id (16 hex, shown and revoked by) → hash (sha256 hex of the
                 link's token; the token itself is never kept), ns, entry (the
                 file or folder shared: a rename keeps the link), user_id (who
                 made it), created, expires (unix seconds), pw_hash (``scrypt$``
                 or NULL), uses, last_used: links for people without an
                 account (``backend.server.links``); a revoked link's row goes
    uploads      id → user_id, path, size (declared), received (bytes taken so
                 far), blocks (CBOR ``[[chunk, length], ...]`` cut and stored),
                 tail (the bytes taken but not yet cut), created,
                 expires: the web page's resumable uploads
                 (``backend.server.web.uploads``)
    ============ =============================================================

Tables added after a database was made are created on open (``IF NOT EXISTS``): an
older database gains them without a new schema version.

Indexes on ``versions`` serve the past: ``versions_entry`` an entry's history,
``versions_place`` what was at a name (and the children of a folder) at a sequence,
``versions_time`` the sequence at an instant.
``namespaces_owner`` and ``chunk_grants_chunk`` serve storage accounting;
``entries_id`` finds which of a user's namespaces holds an entry, ``entries_mount``
the shared folders mounted in a root namespace.
``tokens_user`` serves a user's devices and revocation, ``tokens_expires`` the purge
of expired tokens.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from backend.errors import StoreError

T = TypeVar("T")

ATTEMPTS = 5
"""How often ``run`` tries a transaction the engine aborted to break a lock cycle."""

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id {serial}, name TEXT NOT NULL UNIQUE, pw_hash TEXT NOT NULL,
    created BIGINT NOT NULL, root_ns BIGINT);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, user_id BIGINT NOT NULL, device TEXT NOT NULL,
    created BIGINT NOT NULL, expires BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces (
    id {serial}, owner BIGINT NOT NULL, seq BIGINT NOT NULL, created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    ns BIGINT NOT NULL, user_id BIGINT NOT NULL, role TEXT NOT NULL,
    PRIMARY KEY (ns, user_id));
CREATE INDEX IF NOT EXISTS members_user ON members (user_id);
CREATE TABLE IF NOT EXISTS entries (
    ns BIGINT NOT NULL, id TEXT NOT NULL, parent TEXT NOT NULL, name TEXT NOT NULL,
    kind TEXT NOT NULL, rev BIGINT NOT NULL, size BIGINT NOT NULL, mode INTEGER NOT NULL,
    mtime BIGINT NOT NULL, blocks {blob}, target TEXT,
    PRIMARY KEY (ns, id));
CREATE UNIQUE INDEX IF NOT EXISTS entries_name ON entries (ns, parent, name);
CREATE TABLE IF NOT EXISTS versions (
    ns BIGINT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL, parent TEXT NOT NULL,
    name TEXT NOT NULL, kind TEXT NOT NULL, size BIGINT NOT NULL, mode INTEGER NOT NULL,
    mtime BIGINT NOT NULL, blocks {blob}, target TEXT, deleted INTEGER NOT NULL,
    device TEXT NOT NULL, committed BIGINT NOT NULL,
    PRIMARY KEY (ns, seq));
CREATE INDEX IF NOT EXISTS versions_entry ON versions (ns, id, seq);
CREATE INDEX IF NOT EXISTS versions_place ON versions (ns, parent, name, seq);
CREATE INDEX IF NOT EXISTS versions_time ON versions (ns, committed, seq);
CREATE TABLE IF NOT EXISTS applied_ops (
    ns BIGINT NOT NULL, op_id TEXT NOT NULL, seq BIGINT NOT NULL, result {blob} NOT NULL,
    PRIMARY KEY (ns, op_id));
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, size INTEGER NOT NULL, stored BIGINT NOT NULL,
    created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS chunk_grants (
    user_id BIGINT NOT NULL, chunk TEXT NOT NULL, PRIMARY KEY (user_id, chunk));
CREATE TABLE IF NOT EXISTS ns_chunks (
    ns BIGINT NOT NULL, chunk TEXT NOT NULL, PRIMARY KEY (ns, chunk));
CREATE INDEX IF NOT EXISTS ns_chunks_chunk ON ns_chunks (chunk);
CREATE TABLE IF NOT EXISTS snapshots (
    ns BIGINT NOT NULL, name TEXT NOT NULL, seq BIGINT NOT NULL, root TEXT NOT NULL,
    created BIGINT NOT NULL, PRIMARY KEY (ns, name));
CREATE TABLE IF NOT EXISTS horizons (ns BIGINT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS quotas (user_id BIGINT PRIMARY KEY, bytes BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS usage (user_id BIGINT PRIMARY KEY, bytes BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS namespaces_owner ON namespaces (owner);
CREATE INDEX IF NOT EXISTS entries_id ON entries (id);
CREATE INDEX IF NOT EXISTS entries_mount ON entries (ns) WHERE kind = 'mount';
CREATE INDEX IF NOT EXISTS chunk_grants_chunk ON chunk_grants (chunk);
CREATE TABLE IF NOT EXISTS token_use (
    hash TEXT PRIMARY KEY, ttl BIGINT NOT NULL, last_seen BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id, device);
CREATE INDEX IF NOT EXISTS tokens_expires ON tokens (expires);
CREATE TABLE IF NOT EXISTS links (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, ns BIGINT NOT NULL, entry TEXT NOT NULL,
    user_id BIGINT NOT NULL, created BIGINT NOT NULL, expires BIGINT NOT NULL, pw_hash TEXT,
    uses BIGINT NOT NULL, last_used BIGINT);
CREATE INDEX IF NOT EXISTS links_user ON links (user_id);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY, user_id BIGINT NOT NULL, path TEXT NOT NULL, size BIGINT NOT NULL,
    received BIGINT NOT NULL, blocks {blob} NOT NULL, tail {blob} NOT NULL,
    created BIGINT NOT NULL, expires BIGINT NOT NULL);
"""

Row = tuple[Any, ...]


class Aborted(Exception):
    """The engine rolled the transaction back to break a deadlock or a serialization
    conflict with another one; nothing of it was kept, and running it again may pass
    (``run`` does; what it still cannot pass is a ``StoreError``)."""


class Tx(Protocol):
    """One open transaction. Every statement of a block shares it."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement (``?`` placeholders) and return its rows (or [])."""
        ...

    def lock_namespace(self, ns: int) -> int | None:
        """Lock the namespace against concurrent commits; its journal head, or None."""
        ...

    def notify(self, ns: int, seq: int) -> None:
        """Announce, on commit, that ``ns`` advanced to ``seq`` (to other server nodes)."""
        ...


class Database(Protocol):
    """A SQL engine: transactions on a connection of its own, run in a worker thread."""

    url: str
    max_threads: int
    max_readers: int
    integrity_errors: tuple[type[BaseException], ...]

    def transaction(self, write: bool = True) -> AbstractContextManager[Tx]:
        """A transaction; it commits on a clean exit, else rolls back.

        ``write=False`` promises the block only reads, which lets an engine run it
        beside other transactions (SQLite: on a reader connection of its own).
        """
        ...

    def close(self) -> None: ...


def run(db: Database, fn: Callable[[Tx], T], write: bool = True) -> T:
    """``fn`` in a transaction of its own (blocking: call from a worker thread). A
    transaction the engine aborted (``Aborted``) is run again from the start, after a
    short random pause so that the two that met do not meet again at once; the last
    abort is a ``StoreError`` after ``ATTEMPTS``. ``fn`` must keep no state between calls."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with db.transaction(write) as tx:
                return fn(tx)
        except Aborted as exc:
            if attempt == ATTEMPTS:
                raise StoreError(f"{exc} ({ATTEMPTS} times)") from None
            time.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")


def create_schema(db: Database, serial: str, blob: str, lock_sql: str | None = None) -> None:
    """Create the tables if missing and check the schema version.

    ``lock_sql`` runs first in the same transaction, to serialize nodes starting at once.
    """
    with db.transaction() as tx:
        if lock_sql:
            tx.execute(lock_sql)
        for statement in statements(SCHEMA.format(serial=serial, blob=blob)):
            tx.execute(statement)
        rows = tx.execute("SELECT value FROM meta WHERE key = 'schema'")
        if not rows:
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif rows[0][0] != SCHEMA_VERSION:
            raise StoreError(f"database schema {rows[0][0]} is not {SCHEMA_VERSION}")


def statements(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement.strip()
