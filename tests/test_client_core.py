"""The client core without a mount: the writer, the reconciler's rules on a real LMDB
replica, batching, and the device fsck. Fast and deterministic: no server, no FUSE.

Each test builds a device cache in a temp dir, gives it a remote tree through the
same entry point the feed uses (``Replica.bootstrap``/``apply_feed``), makes local
changes the way the FUSE layer does (view + ``Replica.record``), and checks the view,
the batch the uploader would send, and ``fs.fsck``.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from backend import protocol as p
from backend.chunking import cut, cut_bytes, file_reader
from backend.client import Client
from cache.chunks import RELEASE_BYTES
from cache.env import Env, Q, Writer
from cache.records import PENDING, Entry
from cache.store import Cache
from fs.batching import HOLD
from fs.conflicts import conflicted_name
from fs.content import PART_MIN, READ_AHEAD, Fetcher, ReadAhead
from fs.follower import Follower
from fs.fsck import check
from fs.link import Link
from fs.recut import MAX_RANGES, Cutter, Recut, Segment, add_range
from fs.replica import Replica, ViewChange
from fs.stagefile import unnamed_file
from fs.uploader import Uploader

DATA = {n: bytes([n]) * (10 * n) for n in (1, 2, 3)}
B1, B2, B3 = ([[p.chunk_id(DATA[n]), len(DATA[n])]] for n in (1, 2, 3))


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    c = Cache(tmp_path / "home" / "cache")
    yield c
    c.close()


def file(entry_id: str, name: str, blocks: list[list[Any]], rev: int,
         parent: str = p.ROOT_ID) -> Entry:
    size = sum(length for _, length in blocks)
    return Entry(id=entry_id, parent=parent, name=name, kind="file", rev=rev, size=size,
                 mode=0o644, mtime=1, blocks=blocks)


def folder(entry_id: str, name: str, rev: int, parent: str = p.ROOT_ID) -> Entry:
    return Entry(id=entry_id, parent=parent, name=name, kind="dir", rev=rev, size=0,
                 mode=0o755, mtime=1)


def ids(n: int) -> str:
    return f"{n:032x}"


class Device:
    """A replica driven as the mount drives it, with writes done in place."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.replica = Replica(cache, "laptop")

    def start(self, entries: list[Entry], seq: int) -> None:
        with self.cache.env.write() as txn:
            self.cache.env.meta_put(txn, "device", "laptop")
            self.replica.bootstrap(txn, entries, seq)

    def remote(self, changes: list[Entry], cursor: int) -> None:
        with self.cache.env.write() as txn:
            since = self.cache.env.meta_get(txn, "cursor")
            assert self.replica.apply_feed(txn, since, changes, cursor) is not None

    def update(self, entry_id: str, blocks: list[list[Any]]) -> None:
        with self.cache.env.write() as txn:
            base = self.cache.view.get(txn, entry_id)
            assert base is not None
            for cid, _ in blocks:  # written here: pending until uploaded
                data = next(d for d in DATA.values() if p.chunk_id(d) == cid)
                self.cache.chunks.put(txn, cid, data, pending=True)
            op = {"op": "update", "op_id": p.new_id(), "entry": entry_id,
                  "size": sum(n for _, n in blocks), "mtime": 2, "blocks": blocks}
            self.replica.record_update(txn, op, base)

    def create(self, entry_id: str, name: str) -> None:
        """A new empty file, as ``creat(2)`` makes it."""
        with self.cache.env.write() as txn:
            self.cache.view.put(txn, file(entry_id, name, [], PENDING))
            op = {"op": "create", "op_id": p.new_id(), "entry": entry_id, "parent": p.ROOT_ID,
                  "name": name, "kind": "file", "mode": 0o644, "mtime": 1, "size": 0,
                  "blocks": []}
            self.replica.record(txn, op, None, p.ROOT_ID)

    def chmod(self, entry_id: str, mode: int) -> None:
        with self.cache.env.write() as txn:
            entry = self.cache.view.get(txn, entry_id)
            assert entry is not None
            snap = Entry(**entry)
            entry["mode"], entry["rev"] = mode, PENDING
            self.cache.view.put(txn, entry)
            op = {"op": "setattr", "op_id": p.new_id(), "entry": entry_id, "mode": mode}
            self.replica.record(txn, op, snap, entry["parent"])

    def rename(self, entry_id: str, parent: str, name: str) -> None:
        with self.cache.env.write() as txn:
            entry = self.cache.view.get(txn, entry_id)
            assert entry is not None
            snap = Entry(**entry)
            op: dict[str, Any] = {"op": "rename", "op_id": p.new_id(), "entry": entry_id,
                                  "parent": parent, "name": name}
            victim = None
            holder = self.cache.view.child(txn, parent, name)
            if holder is not None:
                victim = self.cache.view.drop(txn, holder)
                op["replace"] = {"entry": holder}
            entry["parent"], entry["name"], entry["rev"] = parent, name, PENDING
            self.cache.view.put(txn, entry)
            self.replica.record(txn, op, snap, parent, victim)

    def names(self, parent: str = p.ROOT_ID) -> dict[str, Any]:
        with self.cache.read() as txn:
            out: dict[str, Any] = {}
            for name, entry_id in self.cache.view.children(txn, parent):
                entry = self.cache.view.get(txn, entry_id)
                assert entry is not None
                out[name] = entry.get("blocks", "dir")
            return out

    def batch(self) -> list[dict[str, Any]]:
        with self.cache.env.write() as txn:
            batch, _ = self.replica.build_batch(txn)
        return batch["ops"] if batch else []


def clean(cache: Cache) -> None:
    problems = check(cache)
    assert problems == [], problems


def test_edit_against_an_edit_elsewhere_becomes_a_conflicted_copy(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([file(ids(1), "f.txt", B1, 1)], 1)
    dev.update(ids(1), B2)  # offline
    dev.remote([file(ids(1), "f.txt", B3, 2)], 2)  # elsewhere, first
    names = dev.names()
    assert names["f.txt"] == B3
    (copy,) = [n for n in names if n != "f.txt"]
    assert copy.startswith("f (conflicted copy from laptop ")
    assert names[copy] == B2
    (op,) = dev.batch()
    assert op["op"] == "create"
    assert op["name"] == copy
    assert op["blocks"] == B2
    clean(cache)


def test_rename_and_edit_elsewhere_both_apply(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([file(ids(1), "f", B1, 1)], 1)
    dev.rename(ids(1), p.ROOT_ID, "g")
    dev.remote([file(ids(1), "f", B2, 2)], 2)
    assert dev.names() == {"g": B2}
    (op,) = dev.batch()
    assert (op["op"], op["name"], op["base"]) == ("rename", "g", 2)
    clean(cache)


def test_rename_over_a_name_edited_elsewhere_keeps_both(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([file(ids(1), "x", B1, 1), file(ids(2), "y", B2, 2)], 2)
    dev.rename(ids(1), p.ROOT_ID, "y")
    dev.remote([file(ids(2), "y", B3, 3)], 3)
    names = dev.names()
    assert names["y"] == B1
    assert [b for n, b in names.items() if n != "y"] == [B3]
    ops = dev.batch()
    assert [(o["op"], o["entry"]) for o in ops] == [("rename", ids(2)), ("rename", ids(1))]
    assert "replace" not in ops[1]
    clean(cache)


def test_a_move_that_would_make_a_cycle_is_dropped(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([folder(ids(1), "d0", 1), folder(ids(2), "d1", 2)], 2)
    dev.rename(ids(2), ids(1), "d1")  # d1 into d0, here
    dev.remote([folder(ids(1), "d0", 3, parent=ids(2))], 3)  # d0 into d1, elsewhere
    assert dev.names() == {"d1": "dir"}
    assert dev.names(ids(2)) == {"d0": "dir"}
    assert dev.batch() == []
    with cache.read() as txn:
        assert cache.journal.size(txn) == 0  # nothing left to do: drained
    clean(cache)


def test_a_delete_of_a_file_renamed_elsewhere_is_dropped(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([file(ids(1), "f", B1, 1)], 1)
    with cache.env.write() as txn:
        entry = cache.view.drop(txn, ids(1))
        dev.replica.record(txn, {"op": "delete", "op_id": p.new_id(), "entry": ids(1)},
                           entry, p.ROOT_ID)
    assert dev.names() == {}
    dev.remote([file(ids(1), "g", B1, 2)], 2)
    assert dev.names() == {"g": B1}
    assert dev.batch() == []
    clean(cache)


def test_a_create_and_its_edits_go_up_as_one_create(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([], 0)
    dev.create(ids(5), "new")
    dev.update(ids(5), B1)
    dev.update(ids(5), B2)
    (op,) = dev.batch()
    assert (op["op"], op["blocks"]) == ("create", B2)
    clean(cache)


def test_a_file_still_being_written_goes_up_once_with_its_content(cache: Cache) -> None:
    """Its create waits (while the file is written, for ``HOLD`` at most) and so does
    what comes after it; once sealed, the file goes up as one create with its content."""
    dev = Device(cache)
    dev.start([], 0)
    dev.create(ids(9), "new")
    writing = frozenset({ids(9)})
    with cache.env.write() as txn:
        assert dev.replica.build_batch(txn, writing) == (None, [])
        assert dev.replica.build_batch(txn, frozenset({ids(10)}))[0] is not None
        cache.env.meta_put(txn, "inflight", None)  # that batch was never sent
    dev.update(ids(9), B1)  # the close's seal
    with cache.env.write() as txn:
        batch, _ = dev.replica.build_batch(txn, frozenset())
        assert batch is not None
        assert [(op["op"], op["blocks"]) for op in batch["ops"]] == [("create", B1)]
        cache.env.meta_put(txn, "inflight", None)
        (seq, record), *_ = cache.journal.records(txn)
        record["time"] -= HOLD  # written for longer than that: it goes as it is
        cache.journal.put(txn, seq, record)
        batch, _ = dev.replica.build_batch(txn, writing)
        assert batch is not None
        assert batch["ops"][0]["op"] == "create"
    clean(cache)


def test_chunks_of_a_version_folded_into_a_later_one_wait_for_no_upload(cache: Cache) -> None:
    """Three edits, with another file's rename between them, go up as one version:
    once it is acknowledged, none of the chunks the three wrote stays pending (the
    cache could never evict them)."""
    dev = Device(cache)
    dev.start([file(ids(6), "f", B1, 1), file(ids(8), "g", B1, 1)], 1)
    dev.update(ids(6), B2)
    dev.rename(ids(8), p.ROOT_ID, "h")  # the journal's last record is not f's
    dev.update(ids(6), B3)
    with cache.env.write() as txn:
        assert cache.journal.size(txn) == 3
        assert sorted(cache.chunks.pending(txn)) == sorted(str(b[0]) for b in B2 + B3)
    assert cache.chunks.usage()["pending_bytes"] == len(DATA[2]) + len(DATA[3])
    with cache.env.write() as txn:
        batch, _ = dev.replica.build_batch(txn)
        assert batch is not None
        assert [op.get("blocks") for op in batch["ops"]] == [B3, None]
        dev.replica.acked(txn, batch, {"seq": 2, "results": [{"rev": 2}, {"rev": 2}]})
        assert cache.chunks.pending(txn) == []
        # The record that carries the version waits for its echo, the block list once
        # (in what the server applied); the one folded into it is gone already, and
        # the view shows the version all along.
        (_, carrier), (_, renamed) = cache.journal.records(txn)
        assert carrier["acked"] == renamed["acked"] == 2
        assert carrier["snap"] is None
        assert "blocks" not in carrier["op"]
        assert [op["blocks"] for op, _ in carrier["effect"]] == [B3]
    assert dev.names() == {"f": B3, "h": B1}
    dev.remote([file(ids(6), "f", B3, 2), file(ids(8), "h", B1, 2)], 2)
    with cache.read() as txn:
        assert cache.journal.size(txn) == 0
    assert dev.names() == {"f": B3, "h": B1}
    clean(cache)


def test_edits_of_a_file_not_sent_yet_fold_into_one_record(cache: Cache) -> None:
    """A file fsync'd in a loop, or created, written and given its times (``tar x``),
    keeps one journal record; the chunks of the version folded over wait for no
    upload at once. An edit of a file whose last change is in flight makes a record
    of its own (the commit is sent again as it was built)."""
    dev = Device(cache)
    dev.start([file(ids(6), "f", B1, 1)], 1)
    dev.update(ids(6), B2)
    dev.update(ids(6), B3)
    dev.chmod(ids(6), 0o600)
    with cache.env.write() as txn:
        [(seq, record)] = cache.journal.records(txn)
        assert seq == 3  # at the journal's end, as a new change
        assert (record["op"]["op"], record["op"]["blocks"], record["op"]["mode"]) == (
            "update", B3, 0o600)
        assert record["snap"] is not None
        assert record["snap"]["blocks"] == B1  # the base the first edit was made on
        assert cache.chunks.pending(txn) == [B3[0][0]]
    dev.create(ids(7), "new")
    dev.update(ids(7), B1)
    ops = dev.batch()  # now in flight
    assert [(o["op"], o["blocks"]) for o in ops] == [("update", B3), ("create", B1)]
    assert ops[0]["mode"] == 0o600
    dev.update(ids(7), B2)
    with cache.read() as txn:
        assert cache.journal.size(txn) == 3
    with cache.env.write() as txn:  # refused once: it may yet be given up, alone
        cache.env.meta_put(txn, "inflight", None)
        seq = cache.journal.last(txn)
        refused = cache.journal.get(txn, seq)
        assert refused is not None
        refused["tries"] = 1
        cache.journal.put(txn, seq, refused)
    dev.update(ids(7), B3)
    with cache.read() as txn:
        assert cache.journal.size(txn) == 4
    clean(cache)


def test_folded_edits_against_an_edit_elsewhere_make_one_conflicted_copy(
    cache: Cache,
) -> None:
    dev = Device(cache)
    dev.start([file(ids(1), "f", B1, 1)], 1)
    dev.update(ids(1), B2)  # offline, twice
    dev.update(ids(1), B3)
    dev.remote([file(ids(1), "f", B2, 2)], 2)  # elsewhere: even the same bytes
    names = dev.names()
    assert names.pop("f") == B2
    assert list(names.values()) == [B3]
    (op,) = dev.batch()
    assert (op["op"], op["blocks"]) == ("create", B3)
    clean(cache)


def test_a_commit_echoed_before_its_answer_shows_what_came_after_it(cache: Cache) -> None:
    """The feed brings the device's own commit, then another device's move of the same
    file, while the commit's answer is still awaited (a reply lost, the commit sent
    again): the batch in flight is laid over the move until the answer comes, and then
    the view shows the file where the other device put it."""
    dev = Device(cache)
    dev.start([file(ids(7), "f", B1, 1)], 1)
    dev.rename(ids(7), p.ROOT_ID, "g")
    with cache.env.write() as txn:
        batch, _ = dev.replica.build_batch(txn)
        assert batch is not None
    dev.remote([file(ids(7), "g", B1, 2), file(ids(7), "h", B1, 3)], 3)
    assert dev.names() == {"g": B1}  # as sent: the answer may still refuse it
    with cache.env.write() as txn:
        changes = dev.replica.acked(txn, batch, {"seq": 2, "results": [{"rev": 2}]})
        assert cache.journal.size(txn) == 0
    assert [c.entry_id for c in changes] == [ids(7)]
    assert dev.names() == {"h": B1}
    clean(cache)


def test_pending_chunks_no_change_names_are_released_at_start(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([file(ids(7), "f", B1, 1)], 1)
    dev.update(ids(7), B2)
    with cache.env.write() as txn:  # a seal that a crash cut short before its record
        cache.chunks.put(txn, str(B3[0][0]), DATA[3], pending=True)
        assert cache.sweep_pending(txn) == 1
        assert cache.chunks.pending(txn) == [B2[0][0]]
    assert cache.chunks.usage()["pending_bytes"] == len(DATA[2])
    clean(cache)


def test_a_cache_without_the_pending_total_counts_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    cache = Cache(path)
    with cache.env.write() as txn:
        cache.chunks.put(txn, str(B1[0][0]), DATA[1], pending=True)
        cache.chunks.put(txn, str(B2[0][0]), DATA[2], pending=False)
        txn.delete(b"pending_bytes", db=cache.env.db["meta"])
    cache.close()
    cache = Cache(path)
    assert cache.chunks.usage()["pending_bytes"] == len(DATA[1])
    clean(cache)
    cache.close()


def test_the_view_counts_its_shared_folders_as_they_come_and_go(tmp_path: Path) -> None:
    """The count lets a file operation skip the walk up to the root looking for a
    shared folder; it follows the feed, is rebuilt for a cache without it, and a wrong
    one is an fsck problem."""
    path = tmp_path / "cache"
    cache = Cache(path)
    dev = Device(cache)
    shared = Entry(**folder(ids(1), "team", 1), share=7, role="viewer")
    dev.start([folder(ids(2), "mine", 1)], 1)
    with cache.read() as txn:
        assert cache.view.shared_folders(txn) == 0
        assert cache.view.share_of(txn, ids(2)) is None
    inside = file(ids(3), "a", [], 2)
    inside["parent"] = ids(1)
    dev.remote([shared, inside], 2)
    with cache.read() as txn:
        assert cache.view.shared_folders(txn) == 1
        found = cache.view.share_of(txn, ids(3))
        assert found is not None
        assert found["id"] == ids(1)
    clean(cache)
    with cache.env.write() as txn:
        txn.delete(b"view_shares", db=cache.env.db["meta"])
    cache.close()
    cache = Cache(path)
    with cache.read() as txn:
        assert cache.view.shared_folders(txn) == 1
    with cache.env.write() as txn:
        cache.env.meta_put(txn, "view_shares", 0)
    assert check(cache) == ["view: 0 shared folders counted, 1 are"]
    with cache.env.write() as txn:
        cache.env.meta_put(txn, "view_shares", 1)
    gone: Any = {"id": ids(1), "deleted": True}  # the feed's record of a deletion
    Device(cache).remote([gone], 3)
    with cache.read() as txn:
        assert cache.view.shared_folders(txn) == 0
        assert cache.view.share_of(txn, ids(2)) is None
    clean(cache)
    cache.close()


def resident_file_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("RssFile:", 1)[1].split()[0])


def test_chunks_streamed_through_the_cache_leave_no_pages_resident(cache: Cache) -> None:
    """64 MiB read chunk by chunk from the cache: the pages of the map they came from
    are given back as the reads go (every ``RELEASE_BYTES``), and all at once by
    ``release_pages``; the content reads back the same after."""
    rng = random.Random(5)
    contents = [rng.randbytes(4 << 20) for _ in range(16)]
    with cache.env.write() as txn:
        for data in contents:
            cache.chunks.put(txn, p.chunk_id(data), data, pending=False)
    cache.env.release_pages()
    before = resident_file_kib()
    for data in contents:
        assert cache.chunks.get(p.chunk_id(data)) == data
    assert resident_file_kib() - before < (RELEASE_BYTES >> 10) + 8192
    cache.env.release_pages()
    assert resident_file_kib() - before < 8192
    assert [cache.chunks.get(p.chunk_id(d)) for d in contents] == contents


def test_a_walk_of_many_entries_in_one_transaction_gives_the_pages_back_as_it_goes(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entry ids are random, so a listing reads its records all over the map and each
    read maps the 64 KiB around it: every ``RELEASE_EVERY`` reads the pages go back,
    even inside one transaction. Without that (the control), the walk maps the tree."""
    rng = random.Random(9)
    keys = [rng.randbytes(16).hex() for _ in range(60_000)]
    with cache.env.write() as txn:
        for key in keys:
            record = {"id": key, "name": key, "size": 1, "pad": rng.randbytes(400)}
            txn.put(key.encode(), p.encode(record), db=cache.env.db["entries"])
    rng.shuffle(keys)

    def walk_growth_mib() -> float:
        cache.env.release_pages()
        before = resident_file_kib()
        with cache.read() as txn:
            assert all(cache.view.get(txn, key) is not None for key in keys)
        return (resident_file_kib() - before) / 1024

    monkeypatch.setattr("cache.env.RELEASE_EVERY", 10**9)
    assert walk_growth_mib() > 20  # the tree is ~40 MiB: most of it maps
    monkeypatch.setattr("cache.env.RELEASE_EVERY", 64)  # at most ~4 MiB between releases
    assert walk_growth_mib() < 12


def test_conflicted_names_stay_within_255_bytes() -> None:
    name = conflicted_name("é" * 120 + ".txt", "laptop", 0.0, 3)
    assert len(name.encode()) <= p.MAX_NAME_BYTES
    assert name.endswith(" 3).txt")


def test_fsck_reports_a_corrupt_replica_record(cache: Cache) -> None:
    dev = Device(cache)
    dev.start([folder(ids(1), "d", 1), file(ids(2), "f", B1, 2, parent=ids(1))], 2)
    clean(cache)
    with cache.env.write() as txn:
        entry = cache.view.get(txn, ids(2))
        assert entry is not None
        entry["parent"] = ids(9)  # a folder that does not exist, name key left behind
        txn.put(ids(2).encode(), p.encode(entry), db=cache.env.db["entries"])
    problems = check(cache)
    assert any("no live parent folder" in line for line in problems), problems
    assert any("not indexed under its name" in line for line in problems), problems
    assert any("differs from the journal" in line for line in problems), problems


async def test_one_failing_job_does_not_abort_the_others_in_its_transaction(
    cache: Cache,
) -> None:
    writer = Writer(cache.env)
    results: list[object] = []

    def good(n: int) -> Any:
        return lambda txn: cache.env.meta_put(txn, f"k{n}", n)

    def bad(txn: Any) -> None:
        cache.env.meta_put(txn, "bad", 1)
        raise ValueError("refused")

    async def run(job: Any) -> None:
        try:
            results.append(await writer.write(job))
        except ValueError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as jobs:
            for job in (good(1), bad, good(2)):
                jobs.start_soon(run, job)
        nursery.cancel_scope.cancel()
    assert sum(isinstance(r, ValueError) for r in results) == 1
    assert cache.env.meta("k1") == 1
    assert cache.env.meta("k2") == 2
    assert cache.env.meta("bad") is None


async def test_the_uploader_outlives_a_server_gone_while_a_commit_awaits_its_echo(
    cache: Cache,
) -> None:
    """A commit acknowledged, its echo not read yet, and the server gone: the uploader,
    waiting for the echo, notes the link down and goes on waiting (a mount once ended
    there, with its journal still pending)."""
    dev = Device(cache)
    dev.start([file(ids(8), "f", B1, 1)], 1)
    dev.update(ids(8), B2)
    with cache.env.write() as txn:
        batch, _ = dev.replica.build_batch(txn)
        assert batch is not None
        dev.replica.acked(txn, batch, {"seq": 2, "results": [{"rev": 2}]})
    with socket.socket() as closed:  # a port nothing listens on: connections refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    async def offer(chunks: list[tuple[str, bytes]]) -> None:
        raise AssertionError(f"nothing can be offered by a server that is gone: {chunks}")

    def sink(changes: list[ViewChange]) -> None:
        pass  # no kernel caches to tell

    link = Link()
    writer = Writer(cache.env)
    async with Client(f"http://127.0.0.1:{port}", "token", attempts=1) as client, \
            trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        follower = Follower(cache, writer, dev.replica, client, 1, link, sink, offer)
        uploader = Uploader(cache, writer, dev.replica, client, 1, link, follower, sink)
        await nursery.start(uploader.run)
        await trio.sleep(2.0)  # its wait for the echo tried the feed, and failed
        assert not link.online
        assert "cannot reach the server" in link.last_error, link.last_error
        with cache.read() as txn:
            assert cache.journal.size(txn) == 1  # still waiting for its echo
        nursery.cancel_scope.cancel()


def test_a_cache_of_the_older_layout_keeps_its_pending_changes(tmp_path: Path) -> None:
    """A device upgraded with changes still journaled loses none of them: the older
    journal's bare operations become records, replayed once the tree is fetched."""
    path = tmp_path / "old" / "cache"
    env = Env(path)
    op = {"op": "mkdir", "op_id": p.new_id(), "entry": ids(7), "parent": p.ROOT_ID,
          "name": "kept", "mode": 0o755, "mtime": 1}
    with env.write() as txn:
        txn.put(Q.pack(1), p.encode(op), db=env.db["journal"])
    env.close()
    cache = Cache(path)
    try:
        dev = Device(cache)
        dev.start([], 0)
        assert dev.names() == {"kept": "dir"}
        (sent,) = dev.batch()
        assert (sent["op"], sent["entry"]) == ("mkdir", ids(7))
        clean(cache)
    finally:
        cache.close()


# --- sealing: only what changed is cut again ---------------------------------------------


def _cut_all(data: bytes) -> list[list[Any]]:
    return [[piece.id, piece.length] for piece in cut_bytes(data)]


def _recut(
    old: list[list[Any]], dirty: list[tuple[int, int]], data: bytes
) -> tuple[list[list[Any]], int]:
    """The block list a seal makes of ``data``, and how many bytes it cut again."""
    recut = Recut(old, dirty, len(data))
    segments: list[Segment] = []
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        first: int | None = recut.first
        while first is not None:
            cutter = Cutter(cut(file_reader(f.fileno()), recut.start_of(first), len(data)),
                            recut)
            pieces = [[p.chunk_id(chunk), len(chunk)] for _, chunk in cutter]
            segments.append(Segment(first, pieces, cutter.tail))
            first = recut.resume(cutter.tail) if cutter.tail is not None else None
    cut_again = sum(length for segment in segments for _, length in segment.cut)
    return recut.blocks(segments), cut_again


@pytest.mark.parametrize(
    "edit",
    ["overwrite_middle", "overwrite_start", "append", "truncate", "extend", "rewrite_all",
     "scattered", "scattered_and_append", "scattered_and_truncate"],
)
def test_a_seal_cuts_only_around_the_change_and_makes_the_blocks_a_full_cut_makes(
    edit: str,
) -> None:
    rng = random.Random(edit)
    old_data = rng.randbytes(24 * 1024 * 1024)
    old = _cut_all(old_data)
    data = bytearray(old_data)
    size = len(data)
    dirty: list[tuple[int, int]] = []
    if edit == "overwrite_middle":
        data[size // 2] ^= 0xFF
        add_range(dirty, size // 2, size // 2 + 1)
    elif edit == "overwrite_start":
        data[0:4096] = rng.randbytes(4096)
        add_range(dirty, 0, 4096)
    elif edit == "append":
        data += rng.randbytes(4096)
        add_range(dirty, size, size + 4096)
    elif edit == "truncate":
        del data[size // 3 :]
        add_range(dirty, size // 3, size)
    elif edit == "extend":
        data += bytes(5 * 1024 * 1024)
        add_range(dirty, size, len(data))
    elif edit == "rewrite_all":
        data = bytearray(rng.randbytes(size))
        add_range(dirty, 0, size)
    else:  # writes here and there (some next to each other, some at cut points)
        ends = list(itertools.accumulate(length for _, length in old))
        for offset in [rng.randrange(size) for _ in range(6)] + ends[3:5] + [ends[9] - 1]:
            piece = rng.randbytes(rng.randint(1, 3000))
            data[offset : offset + len(piece)] = piece
            add_range(dirty, offset, offset + len(piece))
        if edit == "scattered_and_append":
            add_range(dirty, len(data), len(data) + 5000)
            data += rng.randbytes(5000)
        elif edit == "scattered_and_truncate":
            add_range(dirty, size // 2, len(data))
            del data[size // 2 :]
    blocks, cut_again = _recut(old, dirty, bytes(data))
    assert blocks == _cut_all(bytes(data))
    if edit in ("overwrite_middle", "overwrite_start", "append"):  # a chunk or two
        assert cut_again <= 2 * p.CDC_MAX, cut_again
    elif edit == "truncate":  # from the chunk holding the new end
        assert cut_again <= p.CDC_MAX
    elif edit == "scattered":  # a chunk or two around each write, not all between
        assert cut_again <= 9 * 2 * p.CDC_MAX, cut_again
        assert cut_again < size // 2, cut_again


def test_changed_ranges_merge_what_touches_and_stay_bounded() -> None:
    ranges: list[tuple[int, int]] = []
    for lo, hi in ((10, 20), (30, 40), (20, 25), (5, 6), (39, 50)):
        add_range(ranges, lo, hi)
    assert ranges == [(5, 6), (10, 25), (30, 50)]
    added = [(1000 + index * (10 + index % 7), 1001 + index * (10 + index % 7))
             for index in range(MAX_RANGES * 2)]
    for lo, hi in added:
        add_range(ranges, lo, hi)
    assert len(ranges) == MAX_RANGES
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), ranges
    for lo, hi in [(5, 6), (10, 25), (30, 50), *added]:  # each still covered
        assert any(start <= lo and hi <= end for start, end in ranges), (lo, hi)


def test_read_ahead_grows_while_a_reader_is_sequential_and_closes_when_it_jumps() -> None:
    ahead, kib = ReadAhead(), 128 * 1024
    windows = [ahead.step(i * kib, kib) for i in range(6)]
    assert windows == [1, 2, 4, READ_AHEAD, READ_AHEAD, READ_AHEAD]
    assert ahead.step(700 * 1024 * 1024, kib) == 0  # a jump: a random reader
    assert ahead.step(700 * 1024 * 1024 + kib, kib) == 1



def test_a_random_reader_gets_parts_of_a_chunk_until_they_add_up_to_a_quarter(
    cache: Cache,
) -> None:
    none: Any = None  # deciding needs neither the writer nor the server
    fetcher = Fetcher(cache, none, none, 1.0)
    big, kib = 4 << 20, 1 << 10
    assert fetcher.wants_part(ids(1), big, 0, 512 * kib)
    assert fetcher.wants_part(ids(1), big, big // 2, big // 2 + 512 * kib)  # 1 MiB in all
    assert not fetcher.wants_part(ids(1), big, 3 << 20, (3 << 20) + 4 * kib)  # then whole
    assert fetcher.wants_part(ids(1), big, 0, 4 * kib)  # the count starts again
    assert not fetcher.wants_part(ids(2), big, 0, big // 4 + 1)  # most of it: whole
    assert not fetcher.wants_part(ids(3), PART_MIN - 1, 0, 4 * kib)  # small: whole
    assert fetcher.wants_part(ids(4), PART_MIN, 0, PART_MIN // 4)


def test_a_sequential_reader_asks_for_each_chunk_ahead_once() -> None:
    ahead = ReadAhead()
    assert list(ahead.unasked(1, 8)) == list(range(1, 9))
    assert list(ahead.unasked(1, 8)) == []  # the next 128 KiB of the same chunk
    assert list(ahead.unasked(2, 8)) == [9]  # the reader moved one chunk on
    ahead.step(10 << 30, 1)  # a jump: a random reader, its window asked anew
    assert list(ahead.unasked(3, 2)) == [3, 4]


def test_a_staging_file_has_no_name_with_or_without_o_tmpfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``O_TMPFILE`` where the file system has it; else a name removed at once."""
    real_open = os.open

    def without_tmpfile(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")
        return real_open(path, flags, mode)

    for patched in (False, True):
        if patched:
            monkeypatch.setattr(os, "open", without_tmpfile)
        fd = unnamed_file(tmp_path)
        try:
            assert os.pwrite(fd, b"staged", 3) == 6
            assert os.pread(fd, 9, 0) == b"\0\0\0staged"
            assert list(tmp_path.iterdir()) == []
        finally:
            os.close(fd)
