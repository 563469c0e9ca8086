"""Transactions that meet on PostgreSQL: a deadlock PostgreSQL breaks is run again by
``database.run``, and gc freeing chunks never deadlocks with the uploads recording
them, because both lock rows in one order."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio

from backend import protocol as p
from backend.server import database, gc, quota
from backend.server.database import Tx, run
from backend.server.dir_blocks import DirectoryBlockStore
from backend.server.metadata import MetadataStore
from backend.server.postgres_db import PostgresDatabase
from tests.conftest import make_stores, require_env


@pytest.fixture
def db(tmp_path: Path) -> Iterator[PostgresDatabase]:
    url = make_stores("postgres-s3", tmp_path).metadata
    assert url is not None
    db = PostgresDatabase(url)
    yield db
    db.close()
    with psycopg.connect(require_env("LOFT_TEST_PG"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)".encode())


def test_a_deadlock_postgres_breaks_is_run_again_and_both_transactions_commit_once(
    db: PostgresDatabase,
) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO meta (key, value) VALUES ('a', '0'), ('b', '0')")
    both_hold_one = threading.Barrier(2, timeout=10)
    calls = {"ab": 0, "ba": 0}

    def cross(first: str, second: str) -> None:
        def work(tx: Tx) -> None:
            calls[first + second] += 1
            tx.execute("UPDATE meta SET value = value || ? WHERE key = ?", (first, first))
            if calls[first + second] == 1:  # the first time only: make the cycle
                both_hold_one.wait()
            tx.execute("UPDATE meta SET value = value || ? WHERE key = ?", (first, second))

        run(db, work)

    threads = [threading.Thread(target=cross, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # PostgreSQL aborted one of the two and it ran again. (A retry may meet the other
    # in a deadlock once more, when it takes the first row before the other's waiting
    # update does: then one of them runs a further time.) The values say each
    # transaction's updates were applied exactly once.
    assert max(calls.values()) >= 2, calls
    assert all(1 <= n <= database.ATTEMPTS for n in calls.values()), calls
    with db.transaction(False) as tx:
        rows = tx.execute("SELECT key, value FROM meta WHERE key IN ('a', 'b')")
    values: dict[str, str] = dict(rows)
    assert sorted(values["a"]) == ["0", "a", "b"]
    assert sorted(values["b"]) == ["0", "a", "b"]


def test_an_error_that_is_not_an_abort_is_not_run_again(db: PostgresDatabase) -> None:
    calls = []

    def work(tx: Tx) -> None:
        calls.append(1)
        tx.execute("INSERT INTO meta (key, value) VALUES ('schema', 'again')")

    with pytest.raises(db.integrity_errors):
        run(db, work)
    assert calls == [1]


async def test_gc_freeing_and_uploads_recording_the_same_chunks_never_deadlock(
    db: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round, three users upload chunks new to them (a charge on their kept total)
    while gc frees chunks they uploaded before (dropping those totals) and claims the
    new ones as orphans: the two lock the same totals and chunks. With one attempt
    only, any cycle between them would surface as a ``StoreError``."""
    monkeypatch.setattr(database, "ATTEMPTS", 1)
    metadata = MetadataStore(db)
    blocks = DirectoryBlockStore(tmp_path / "chunks")
    users = [metadata.add_user_sync(f"u{n}", "not-a-real-hash") for n in range(3)]

    def fresh(count: int) -> list[tuple[str, int, int]]:
        return [(p.chunk_id(data), 100, 100) for data in (os.urandom(100) for _ in range(count))]

    freed: list[str] = []

    async def collect(dead: list[str], orphans: list[str]) -> None:
        done, _ = await trio.to_thread.run_sync(
            gc.free_batch, metadata, blocks, dead, orphans, 2**40  # every record old enough
        )
        freed.extend(done)

    for _ in range(15):
        dead = {user: fresh(4) for user in users}
        for user, chunks in dead.items():
            await metadata.add_chunks(user, chunks)
            await trio.to_thread.run_sync(run, db, lambda tx, u=user: quota.usage(tx, u))
        new = fresh(12)
        dead_ids = sorted(cid for chunks in dead.values() for cid, _, _ in chunks)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, dead_ids, sorted(cid for cid, _, _ in new))
            for n, user in enumerate(users):
                # A store per uploader, so that their records are separate transactions.
                other = MetadataStore(db) if n else metadata
                nursery.start_soon(other.add_chunks, user, new[n::3])
    assert len(freed) == 15 * 12
    with db.transaction(False) as tx:
        assert quota.check_usage(tx) == []

