"""The scale-out metadata database: PostgreSQL, shared by any number of server nodes.

Commits to one namespace are serialized by ``SELECT ... FOR UPDATE`` on its row,
which is what makes the journal's sequence strictly increasing without gaps and a
compare-and-swap read stay true until the transaction commits. A commit is durable
when PostgreSQL acknowledges ``COMMIT`` (WAL fsync'd, the server's default).
``pg_notify`` inside the transaction is delivered to every node's listener only if
and when the transaction commits.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors

from backend.errors import StoreError
from backend.server.database import Aborted, Row, create_schema

NOTIFY_CHANNEL = "loft_ns"
_PLACEHOLDER = re.compile(r"\?")
_ABORTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
"""What PostgreSQL rolls back to let other transactions on: ``database.run`` retries it."""


class _PostgresTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        # '%' is psycopg's placeholder mark: a literal one (SQL's modulo) is doubled.
        query = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        cur = self._conn.execute(query.encode(), tuple(params))
        return cur.fetchall() if cur.description else []

    def lock_namespace(self, ns: int) -> int | None:
        rows = self.execute("SELECT seq FROM namespaces WHERE id = ? FOR UPDATE", (ns,))
        return int(rows[0][0]) if rows else None

    def notify(self, ns: int, seq: int) -> None:
        self.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, f"{ns}:{seq}"))


class PostgresDatabase:
    """A fixed pool of connections, each used by one worker thread at a time."""

    integrity_errors: tuple[type[BaseException], ...] = (psycopg.errors.IntegrityError,)

    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = url
        self.max_threads = self.max_readers = pool_size
        self._pool: queue.LifoQueue[psycopg.Connection[Any] | None] = queue.LifoQueue()
        for _ in range(pool_size):
            self._pool.put(None)  # connect lazily
        create_schema(
            self,
            serial="BIGSERIAL PRIMARY KEY",
            blob="BYTEA",
            lock_sql="SELECT pg_advisory_xact_lock(7135)",
        )

    def connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}".splitlines()[0]) from None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[_PostgresTx]:
        conn = self._pool.get()
        try:
            if conn is None or conn.closed:
                conn = self.connect()
            try:
                with conn.transaction():
                    yield _PostgresTx(conn)
            except _ABORTS as exc:  # rolled back; the connection is fine
                raise Aborted(f"PostgreSQL rolled back: {exc}".splitlines()[0]) from None
            except psycopg.OperationalError as exc:
                conn.close()
                raise StoreError(f"PostgreSQL failed: {exc}".splitlines()[0]) from None
            except psycopg.errors.IntegrityError:
                raise
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL failed: {exc}".splitlines()[0]) from None
        finally:
            self._pool.put(conn)

    def close(self) -> None:
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            if conn is not None:
                conn.close()
