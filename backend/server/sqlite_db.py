"""The embedded metadata database: one SQLite file in the server's data directory.

WAL mode with ``synchronous=FULL``: a transaction is durable once ``COMMIT``
returns (the WAL is fsync'd), and a crash before that leaves no trace of it.
Write transactions begin ``IMMEDIATE`` on the one writer connection, so commits are
serialized and a compare-and-swap read inside one cannot go stale before it writes.
Read-only transactions run on a connection per worker thread and, thanks to WAL,
never wait for a writer (a token check does not queue behind a commit's fsync). Other processes
(``loft user add`` while the server runs) wait on the lock up to ``busy_timeout``.

The file holds password hashes: it is created 0600 before SQLite opens it, and SQLite
gives its ``-wal`` and ``-shm`` files the database file's mode (older ones are made
0600 here).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend.errors import StoreError
from backend.private import DIR_MODE, open_private, private_file
from backend.server.database import Row, create_schema


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def lock_namespace(self, ns: int) -> int | None:
        # BEGIN IMMEDIATE already holds the database's write lock.
        rows = self.execute("SELECT seq FROM namespaces WHERE id = ?", (ns,))
        return int(rows[0][0]) if rows else None

    def notify(self, ns: int, seq: int) -> None:
        """One process serves a SQLite store; the in-process notifier suffices."""


class SQLiteDatabase:
    max_threads = 1
    max_readers = 8
    integrity_errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:{path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            os.close(open_private(path, os.O_RDWR))
            for suffix in ("-wal", "-shm"):
                private_file(path.with_name(path.name + suffix))
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open metadata database {path}: {exc}") from None
        self._path = path
        self._lock = threading.Lock()
        self._readers: queue.LifoQueue[sqlite3.Connection | None] = queue.LifoQueue()
        for _ in range(self.max_readers):
            self._readers.put(None)  # opened on first use
        create_schema(self, serial="INTEGER PRIMARY KEY", blob="BLOB")

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[_SQLiteTx]:
        if not write:
            conn = self._readers.get()
            try:
                if conn is None:
                    conn = sqlite3.connect(
                        self._path, isolation_level=None, check_same_thread=False, timeout=30.0
                    )
                conn.execute("BEGIN")
                try:
                    yield _SQLiteTx(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"metadata database failed: {exc}") from None
            finally:
                self._readers.put(conn)
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"metadata database unavailable: {exc}") from None
            try:
                yield _SQLiteTx(self._conn)
            except sqlite3.IntegrityError:
                self._conn.execute("ROLLBACK")
                raise
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"metadata database failed: {exc}") from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"metadata commit failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        while not self._readers.empty():
            conn = self._readers.get_nowait()
            if conn is not None:
                conn.close()
