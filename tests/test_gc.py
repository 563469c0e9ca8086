"""Retention and garbage collection: the policy's buckets, thinning that keeps every kept
state exact, the changes feed's reset past the horizon, and gc under load on both
pairs of stores, checked by ``loft fsck``."""

from __future__ import annotations

import calendar
import os
import random
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from backend import protocol as p
from backend.client import Client
from backend.errors import BadRequest, MissingChunks
from backend.server.blocks import BlockStore, open_block_store
from backend.server.database import Tx
from backend.server.gc import Report, collect, in_tx, named_chunks, thin
from backend.server.main import open_database
from backend.server.metadata import MetadataStore
from backend.server.retention import (
    BUCKET_ORIGIN,
    DEFAULT_POLICY,
    JournalRow,
    Policy,
    doomed,
    parse_duration,
    parse_policy,
)
from tests.conftest import PASSWORD, Server, Stores, check_server, loft

DAY, HOUR, WEEK = 86_400, 3_600, 604_800


# --- the policy ------------------------------------------------------------------------


def test_default_policy_parses_to_its_four_windows() -> None:
    assert [(w.age, w.step) for w in parse_policy(DEFAULT_POLICY).windows] == [
        (DAY, None), (7 * DAY, HOUR), (30 * DAY, DAY), (365 * DAY, WEEK)]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "AGE:STEP"),
        ("1d", "AGE:STEP"),
        ("1d:all,", "AGE:STEP"),
        ("1d:sometimes", "step"),
        ("1y:all", "age"),
        ("0d:all", "age"),
        ("1.5h:all", "age"),
        ("7d:1h,1d:all", "must increase"),
        ("1d:all,1d:1h", "must increase"),
    ],
)
def test_a_bad_policy_is_refused_with_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        parse_policy(text)


def test_durations_take_every_unit_and_zero_only_where_allowed() -> None:
    units = ("30s", "15m", "1h", "2d", "1w")
    assert [parse_duration(t, "x") for t in units] == [30, 900, 3600, 2 * DAY, WEEK]
    assert parse_duration("0", "--grace", zero=True) == 0
    for bad in ("0", "-1h", "h", "1.5h", "1 h", "1y"):
        with pytest.raises(BadRequest, match="expected a duration"):
            parse_duration(bad, "--grace")


def test_an_hour_straddling_the_first_window_keeps_its_last_state_on_each_side() -> None:
    policy = parse_policy(DEFAULT_POLICY)
    now = BUCKET_ORIGIN + 1000 * WEEK + HOUR // 2  # one day ago was mid-hour
    instants = [(1, now - DAY - 20), (2, now - DAY - 10), (3, now - DAY), (4, now - DAY + 10)]
    # 1..3 are a day old or more (hourly, one bucket: its last, 3); 4 is younger.
    assert policy.kept(instants, now) == {3, 4}


def test_hours_days_and_weeks_keep_the_last_state_of_each_bucket() -> None:
    policy = parse_policy(DEFAULT_POLICY)
    now = BUCKET_ORIGIN + 1000 * WEEK
    hourly = [(1, now - 2 * DAY - 2 * HOUR), (2, now - 2 * DAY - HOUR - 1),
              (3, now - 2 * DAY - HOUR)]  # 2 ends one hour, 3 starts the next
    daily = [(4, now - 10 * DAY - 1), (5, now - 10 * DAY), (6, now - 10 * DAY + 1)]
    too_old = [(0, now - 365 * DAY)]
    assert policy.kept(too_old + hourly + daily, now) == {2, 3, 4, 6}


def test_weeks_run_monday_to_sunday_utc() -> None:
    policy = parse_policy(DEFAULT_POLICY)
    sunday = calendar.timegm((2024, 1, 7, 23, 59, 59))  # 2024-01-08 is a Monday
    instants = [(1, sunday - 3 * DAY), (2, sunday), (3, sunday + 1), (4, sunday + 2)]
    assert policy.kept(instants, sunday + 100 * DAY) == {2, 4}


def test_a_deletion_goes_with_the_last_kept_state_before_it() -> None:
    rows = [JournalRow("a", 1, False), JournalRow("a", 3, False), JournalRow("a", 5, True),
            JournalRow("b", 2, False), JournalRow("b", 4, True),
            JournalRow("c", 6, False)]
    assert doomed(rows, {2}) == [3]  # a at 1 is what 2 reads, so its end stays
    assert doomed(rows, {3}) == [1]
    assert doomed(rows, {1, 4}) == [2, 4]  # b never seen: its end goes with it
    assert doomed(rows, {5}) == [1, 3, 5, 2, 4]  # at 5 a has ended: nothing of it to keep
    assert doomed(rows, set()) == [1, 3, 5, 2, 4]  # the live entry stays, whatever is kept


# --- over a real server: thinning, the feed's reset, gc --------------------------------


@dataclass
class Writer:
    """One device writing files through the API as the uploader does: a commit the
    server answers ``412 missing`` uploads what it names and goes again."""

    client: Client
    ns: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)

    async def commit(self, ops: list[dict[str, Any]], chunks: dict[str, bytes]) -> int:
        missing = await self.client.missing(sorted(chunks))
        while True:
            if missing:
                await self.client.put_chunks([(cid, chunks[cid]) for cid in missing])
            try:
                return int((await self.client.commit(self.ns, ops))["seq"])
            except MissingChunks as err:
                missing = list(err.detail["missing"])

    async def write(self, name: str, pieces: list[bytes]) -> int:
        blocks = [[p.chunk_id(data), len(data)] for data in pieces]
        fields = {"size": sum(len(x) for x in pieces), "blocks": blocks,
                  "mtime": time.time_ns()}
        entry = self.files.get(name)
        if entry is None:
            op = {"op": "create", "entry": p.new_id(), "parent": p.ROOT_ID, "name": name,
                  "kind": "file", "mode": 0o644, **fields}
        else:
            op = {"op": "update", "entry": entry["id"], "base": entry["rev"], **fields}
        op["op_id"] = p.new_id()
        seq = await self.commit([op], {p.chunk_id(d): d for d in pieces})
        self.files[name] = {"id": op["entry"], "rev": seq}
        self.content[name] = b"".join(pieces)
        return seq

    async def plain(self, op: dict[str, Any]) -> int:
        op["op_id"] = p.new_id()
        return await self.commit([op], {})

    async def read(self, entry: dict[str, Any]) -> bytes:
        return b"".join([await self.client.get_chunk(cid) for cid, _ in entry["blocks"]])


async def login(server: Server, user: str, device: str) -> tuple[Client, int]:
    """A client of a new device (the caller closes it: ``async with``) and its root."""
    async with server.client() as client:
        answer = await client.login(user, PASSWORD, device)
    return server.client(answer["token"]), int(answer["root_ns"])


@asynccontextmanager
async def opened(stores: Stores) -> AsyncIterator[tuple[MetadataStore, BlockStore]]:
    """The server's own stores, opened beside it (as ``loft gc`` opens them)."""
    blocks = open_block_store(stores.blocks, stores.data)
    metadata = MetadataStore(open_database(stores.metadata, stores.data))
    try:
        yield metadata, blocks
    finally:
        metadata.close()
        await blocks.close()


async def thin_now(metadata: MetadataStore, ns: int, policy: Policy, now: int) -> int:
    return (await in_tx(metadata, True, lambda tx: thin(tx, ns, policy, now, False)))[0]


def tree_at(answer: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    return {e["id"]: (e["parent"], e["name"], e["kind"], e.get("blocks"), e["mode"])
            for e in answer["entries"]}


async def store_bytes(blocks: BlockStore) -> int:
    return sum([chunk.size async for chunk in blocks.stored()])


_names = iter(range(10**9))


def new_user(server: Server) -> str:
    server.add_user(name := f"gc{os.getpid()}x{next(_names)}")
    return name


@dataclass(frozen=True)
class Chosen(Policy):
    """A policy keeping exactly the sequences given (to test thinning on any kept set)."""

    seqs: frozenset[int] = frozenset()

    def kept(self, instants: Iterable[tuple[int, int]], now: int) -> set[int]:
        return set(self.seqs) & {seq for seq, _ in instants}



async def history(w: Writer, rng: random.Random) -> None:
    """A mixed history: files made, edited, renamed, moved, deleted; a folder removed."""
    folder = p.new_id()
    await w.plain({"op": "mkdir", "entry": folder, "parent": p.ROOT_ID, "name": "docs",
                   "mode": 0o755})
    for step in range(24):
        name = f"f{rng.randrange(6)}"
        await w.write(name, [rng.randbytes(rng.randrange(100, 3000))
                             for _ in range(rng.randrange(1, 3))])
        entry = w.files[name]
        if step % 5 == 2:
            seq = await w.plain({"op": "rename", "entry": entry["id"], "base": entry["rev"],
                                 "parent": folder, "name": f"moved{step}"})
            w.files[f"docs/moved{step}"] = {"id": entry["id"], "rev": seq}
            del w.files[name]
        elif step % 7 == 3:
            await w.plain({"op": "delete", "entry": entry["id"], "base": entry["rev"]})
            del w.files[name]
    entry = (await w.client.lookup(w.ns, "/docs"))["entry"]
    assert await w.plain({"op": "delete", "entry": folder, "base": entry["rev"],
                          "recursive": True}) > 30


async def test_thinning_keeps_every_kept_state_exactly(server: Server) -> None:
    """The default policy 40 days on, then a chosen third of the states: the tree at each
    kept sequence, and at a snapshot's, is what it was; fsck is clean."""
    rng = random.Random(7)
    client, ns = await login(server, new_user(server), "thin")
    async with client:
        w = Writer(client, ns)
        await history(w, rng)
        head = int((await client.tree(ns))["seq"])
        before = {k: tree_at(await client.tree(ns, k)) for k in range(1, head + 1)}
        snap = head // 2
        async with opened(server.stores) as (metadata, _):
            await in_tx(metadata, True, lambda tx: tx.execute(
                "INSERT INTO snapshots (ns, name, seq, root, created)"
                " VALUES (?, 'half', ?, ?, 0)", (ns, snap, p.ROOT_ID)))
            third = Chosen("third", (), frozenset(range(1, head, 3)))
            assert await thin_now(metadata, ns, third, int(time.time())) > 0
            for k in sorted(third.seqs | {snap}):
                assert tree_at(await client.tree(ns, k)) == before[k], f"state {k}"
            later = int(time.time()) + 40 * DAY
            assert await thin_now(metadata, ns, parse_policy(DEFAULT_POLICY), later) > 0
            for k in (snap, head):
                assert tree_at(await client.tree(ns, k)) == before[k], f"state {k}"
        for name, data in w.content.items():
            if name in w.files:
                found = (await client.lookup(ns, f"/{name}"))["entry"]
                assert await w.read(found) == data
    result = loft("fsck", *server.stores.args())
    assert result.returncode == 0, result.stdout + result.stderr


async def test_a_cursor_older_than_the_horizon_is_told_to_read_the_tree_again(
    server: Server,
) -> None:
    rng = random.Random(3)
    client, ns = await login(server, new_user(server), "reset")
    async with client:
        w = Writer(client, ns)
        await w.write("kept", [b"first"])
        old_cursor = int((await client.changes(ns, 0))["head"])
        await history(w, rng)
        head = int((await client.tree(ns))["seq"])
        async with opened(server.stores) as (metadata, _):
            await thin_now(metadata, ns, Chosen("none", ()), int(time.time()))
            horizon = await metadata.horizon(ns)
        assert old_cursor < horizon <= head
        answer = await client.changes(ns, old_cursor, wait=5)
        assert answer == {"head": head, "cursor": old_cursor, "changes": [], "reset": True}
        # From the horizon on, the feed is whole again.
        assert not (await client.changes(ns, horizon)).get("reset")
        # What a device does on reset: the whole tree at the head, the same as ever.
        tree = await client.tree(ns)
        assert (tree["seq"], tree_at(tree)) == (head, tree_at(await client.tree(ns, head)))
        entry = (await client.lookup(ns, "/kept"))["entry"]
        assert await w.read(entry) == b"first"


async def test_gc_under_load_frees_what_expired_and_nothing_committed(server: Server) -> None:
    """Two devices commit a stream of files (chunks shared between versions, some
    coming back after they were freed) while gc runs again and again with grace 0:
    every file reads back whole, fsck is clean, and the block store holds exactly the
    chunks of the current files, having shrunk by what gc said it freed."""
    user = new_user(server)
    pool = [random.Random(n).randbytes(2000 + 97 * n) for n in range(40)]
    writers = [Writer(*await login(server, user, name)) for name in ("one", "two")]
    policy = parse_policy("1s:all")
    passes: list[Report] = []

    async def stream(w: Writer, tag: str, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(30):
            pieces = [*rng.sample(pool, 2), rng.randbytes(1500)]
            await w.write(f"{tag}{rng.randrange(5)}", pieces)

    async with opened(server.stores) as (metadata, blocks):
        async with trio.open_nursery() as nursery:

            async def collector() -> None:
                while True:
                    passes.append(await collect(metadata, blocks, policy, grace=0))

            nursery.start_soon(collector)
            async with trio.open_nursery() as writing:
                for n, w in enumerate(writers):
                    writing.start_soon(stream, w, f"w{n}-", n)
            nursery.cancel_scope.cancel()
        before = await store_bytes(blocks)
        last = await collect(metadata, blocks, policy, grace=0, now=int(time.time()) + 10)
        after = await store_bytes(blocks)
    assert len(passes) >= 3
    assert sum(r.versions for r in passes) > 0
    assert sum(r.blobs for r in passes) > 0
    assert after == before - last.bytes
    async with writers[0].client as c0, writers[1].client as c1:
        ns = writers[0].ns
        current = (await c0.tree(ns))["entries"]
        files = {e["name"]: e for e in current if e["kind"] == "file"}
        expected = {**writers[0].content, **writers[1].content}
        assert set(files) == set(expected)
        for name, entry in files.items():
            assert await Writer(c1, ns).read(entry) == expected[name], name
    mine = {cid for e in files.values() for cid, _ in e["blocks"]}
    async with opened(server.stores) as (metadata, blocks):
        stored = {chunk.cid: chunk.size async for chunk in blocks.stored()}

        # Chunks any namespace names (the other tests' too); this one's; its versions.
        everywhere, here, versions = await in_tx(metadata, False, lambda tx: (
            set().union(*(named_chunks(tx, int(r[0]))
                          for r in tx.execute("SELECT id FROM namespaces"))),
            named_chunks(tx, ns),
            int(tx.execute("SELECT COUNT(*) FROM versions WHERE ns = ?", (ns,))[0][0])))
    assert here == mine
    assert versions == len(files)  # all history expired: the current files only
    assert set(stored) == everywhere
    assert after == sum(stored.values())
    check_server(server.stores)


async def test_gc_dry_run_changes_nothing_and_says_what_it_would_free(server: Server) -> None:
    client, ns = await login(server, new_user(server), "dry")
    async with client:
        w = Writer(client, ns)
        for n in range(4):
            await w.write("doc", [bytes([n]) * 5000])
    args = ("gc", *server.stores.args(), "--grace", "0", "--retention", "1s:all")

    async def state() -> list[int]:
        async with opened(server.stores) as (metadata, blocks):
            return [*await in_tx(metadata, False, lambda tx: [
                int(tx.execute(f"SELECT COUNT(*) FROM {t}")[0][0])
                for t in ("versions", "chunks", "ns_chunks")]), await store_bytes(blocks)]

    await trio.sleep(1.1)  # the versions must be older than the policy's one second
    before = await state()
    dry = await trio.to_thread.run_sync(lambda: loft(*args, "--dry-run"))
    assert dry.returncode == 0, dry.stderr
    assert "would free" in dry.stdout
    assert "would be expired" in dry.stdout
    assert await state() == before
    real = await trio.to_thread.run_sync(lambda: loft(*args))
    assert real.returncode == 0, real.stderr
    # The dry run announced exactly what the real pass did.
    assert real.stdout.replace("freed", "would free").replace(
        "version(s) expired", "version(s) would be expired") == dry.stdout
    assert (await state())[3] < before[3]


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("--grace", "soon", "--grace 'soon': expected a duration"),
     ("--grace", "90", "expected a duration"),
     ("--retention", "1d:all,1h:1m", "window ages must increase"),
     ("--retention", "forever", "each window is AGE:STEP")],
)
def test_gc_refuses_a_bad_option_in_one_line(
    tmp_path: Path, option: str, value: str, says: str
) -> None:
    result = loft("gc", "--data", str(tmp_path / "data"), option, value)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr
    assert not (tmp_path / "data").exists()


async def test_a_gc_pass_purges_tokens_that_expired_unseen(server: Server) -> None:
    user = new_user(server)
    client, _ = await login(server, user, "stale")
    async with client:
        await client.whoami()
    mine = "SELECT id FROM users WHERE name = ?"

    def expire(tx: Tx) -> None:
        tx.execute(f"UPDATE tokens SET expires = ? WHERE user_id IN ({mine})",
                   (int(time.time()) - 1, user))

    def live(tx: Tx) -> int:
        return int(tx.execute(f"SELECT COUNT(*) FROM tokens WHERE user_id IN ({mine})",
                              (user,))[0][0])

    async with opened(server.stores) as (metadata, blocks):
        await in_tx(metadata, True, expire)
        assert await in_tx(metadata, False, live) == 1
        await collect(metadata, blocks, parse_policy("1d:all"), grace=0, dry_run=True)
        assert await in_tx(metadata, False, live) == 1  # a dry run changes nothing
        await collect(metadata, blocks, parse_policy("1d:all"), grace=0)
        assert await in_tx(metadata, False, live) == 0
