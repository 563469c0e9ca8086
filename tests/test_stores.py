"""The store interfaces, each test run over both real implementations.

Block stores: ``DirectoryBlockStore`` in ``tmp_path`` and ``S3BlockStore`` on a fresh
bucket at ``LOFT_TEST_S3``. Metadata stores: ``MetadataStore`` over ``SQLiteDatabase``
in ``tmp_path`` and over ``PostgresDatabase`` on a database made for this module.
"""

from __future__ import annotations

import itertools
import os
import resource
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import psycopg
import pytest
import trio

from backend import protocol as p
from backend.errors import BadRequest, Conflict, Exists, MissingChunks, NotEmpty, StoreError
from backend.server.auth import hash_password, verify_password
from backend.server.blocks import RAW, ZSTD, BlockStore, open_block_store, seal, unseal
from backend.server.dir_blocks import DirectoryBlockStore
from backend.server.metadata import MetadataStore
from backend.server.postgres_db import PostgresDatabase
from backend.server.s3_blocks import S3BlockStore
from backend.server.sqlite_db import SQLiteDatabase
from tests.conftest import free_port, make_stores, require_env

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}-{os.urandom(3).hex()}"


# --- block stores ------------------------------------------------------------------


def s3_admin() -> Any:
    """A plain boto3 client, to look at buckets behind the store's back."""
    return boto3.client(
        "s3",
        endpoint_url=require_env("LOFT_TEST_S3"),
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def drop_bucket(bucket: str) -> None:
    s3 = s3_admin()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)


def bucket_exists(bucket: str) -> bool:
    try:
        s3_admin().head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        return False
    return True


def s3_url(bucket: str) -> str:
    return f"s3://{bucket}?endpoint={require_env('LOFT_TEST_S3')}"


@pytest.fixture(params=["directory", "s3"])
async def blocks(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlockStore]:
    bucket = unique("loft-blocks")
    url = f"file://{tmp_path / 'chunks'}" if request.param == "directory" else s3_url(bucket)
    store = open_block_store(url, tmp_path)
    yield store
    await store.close()
    if request.param == "s3":
        drop_bucket(bucket)


def sealed_chunk(data: bytes) -> tuple[str, bytes]:
    return p.chunk_id(data), seal(data)


async def stored_ids(store: BlockStore) -> list[str]:
    return [cid async for cid in store.ids()]


async def test_put_then_get_returns_the_sealed_bytes(blocks: BlockStore) -> None:
    for data in (os.urandom(100_000), b"compressible " * 10_000):
        cid, sealed = sealed_chunk(data)
        await blocks.put(cid, sealed)
        assert await blocks.get(cid) == sealed
        assert unseal(sealed) == data


async def test_get_of_an_absent_chunk_is_none(blocks: BlockStore) -> None:
    assert await blocks.get(p.chunk_id(b"never stored")) is None


async def test_has_is_true_only_once_put(blocks: BlockStore) -> None:
    cid, sealed = sealed_chunk(os.urandom(1000))
    assert not await blocks.has(cid)
    await blocks.put(cid, sealed)
    assert await blocks.has(cid)


async def test_held_names_exactly_the_stored_ones_of_those_asked(blocks: BlockStore) -> None:
    stored = [sealed_chunk(os.urandom(700)) for _ in range(3)]
    await blocks.put_many(stored[:2])
    await blocks.put(*stored[2])
    absent = [p.chunk_id(os.urandom(300)) for _ in range(2)]
    asked = [absent[0], stored[0][0], stored[2][0], absent[1]]
    assert await blocks.held(asked) == {stored[0][0], stored[2][0]}
    assert await blocks.held(absent) == set()
    assert await blocks.held([]) == set()


async def test_putting_a_chunk_twice_is_harmless(blocks: BlockStore) -> None:
    cid, sealed = sealed_chunk(os.urandom(5000))
    await blocks.put(cid, sealed)
    await blocks.put(cid, sealed)
    assert await blocks.get(cid) == sealed
    assert await stored_ids(blocks) == [cid]


async def test_ids_lists_exactly_the_stored_chunks(blocks: BlockStore) -> None:
    assert await stored_ids(blocks) == []
    chunks = [sealed_chunk(os.urandom(200 + n)) for n in range(12)]
    for cid, sealed in chunks:
        await blocks.put(cid, sealed)
    assert sorted(await stored_ids(blocks)) == sorted(cid for cid, _ in chunks)


async def test_a_pack_put_at_once_stores_each_chunk_whole_once(
    blocks: BlockStore, tmp_path: Path
) -> None:
    """``put_many``: every chunk of a pack readable, one already held left alone, no
    temporary file left behind, and a repeat harmless."""
    chunks = [sealed_chunk(os.urandom(100 + n * 997)) for n in range(40)]
    await blocks.put(*chunks[3])
    await blocks.put_many(chunks)
    await blocks.put_many(chunks[:5])
    for cid, sealed in chunks:
        assert await blocks.get(cid) == sealed
    assert sorted(await stored_ids(blocks)) == sorted(cid for cid, _ in chunks)
    assert not await trio.to_thread.run_sync(lambda: list(tmp_path.rglob(".tmp-*")))


async def test_a_reopened_store_still_holds_its_chunks(blocks: BlockStore, tmp_path: Path) -> None:
    cid, sealed = sealed_chunk(os.urandom(3000))
    await blocks.put(cid, sealed)
    again = open_block_store(blocks.url, tmp_path)
    try:
        assert await again.get(cid) == sealed
        assert await stored_ids(again) == [cid]
    finally:
        await again.close()


async def test_s3_store_creates_its_missing_bucket(tmp_path: Path) -> None:
    bucket = unique("loft-new")
    assert not bucket_exists(bucket)
    store = open_block_store(s3_url(bucket), tmp_path)
    try:
        assert bucket_exists(bucket)
        cid, sealed = sealed_chunk(b"first chunk")
        await store.put(cid, sealed)
        assert await store.get(cid) == sealed
    finally:
        await store.close()
        drop_bucket(bucket)


def test_s3_endpoint_that_does_not_answer_is_a_one_line_store_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        S3BlockStore(unique("loft-nowhere"), endpoint, None)
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert message
    assert "\n" not in message
    assert "unreachable" in message


# --- seal / unseal -----------------------------------------------------------------


def test_compressible_data_is_sealed_smaller_and_unsealed_intact() -> None:
    data = b"the same line again and again\n" * 20_000
    sealed = seal(data)
    assert sealed[0] == ZSTD
    assert len(sealed) < len(data) // 10
    assert unseal(sealed) == data


@pytest.mark.parametrize("size", [0, 1, 511, 512, 100_000])
def test_random_data_is_sealed_raw(size: int) -> None:
    data = os.urandom(size)
    sealed = seal(data)
    assert sealed == bytes([RAW]) + data
    assert unseal(sealed) == data


@pytest.mark.parametrize(
    "sealed",
    [
        b"",
        bytes([7]) + b"unknown format",
        bytes([ZSTD]) + b"not a zstd frame at all",
        seal(b"abc" * 10_000)[:-4],
        seal(b"abc" * 10_000)[:12],
    ],
    ids=["empty", "unknown-format", "garbage-frame", "truncated-frame", "header-only"],
)
def test_unseal_of_corrupt_data_is_a_store_error(sealed: bytes) -> None:
    with pytest.raises(StoreError):
        unseal(sealed)


# --- DirectoryBlockStore durability ------------------------------------------------


def stray_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def test_directory_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = DirectoryBlockStore(tmp_path / "chunks")
    for n in range(5):
        cid, sealed = sealed_chunk(os.urandom(1000 + n))
        await store.put(cid, sealed)
    assert list((tmp_path / "chunks").rglob(".tmp-*")) == []
    assert len(stray_files(tmp_path / "chunks")) == 5


async def test_directory_put_where_no_directory_can_be_made_is_a_store_error(
    tmp_path: Path,
) -> None:
    # Root ignores permission bits, so make the chunk's directory impossible instead:
    # the store's root is replaced by a regular file.
    root = tmp_path / "chunks"
    store = DirectoryBlockStore(root)
    root.rmdir()
    root.write_bytes(b"not a directory")
    cid, sealed = sealed_chunk(os.urandom(1000))
    with pytest.raises(StoreError):
        await store.put(cid, sealed)
    assert [path.name for path in await trio.Path(tmp_path).rglob("*")] == ["chunks"]
    assert root.read_bytes() == b"not a directory"


async def test_directory_put_failing_mid_write_leaves_no_partial_chunk(tmp_path: Path) -> None:
    # RLIMIT_FSIZE binds root too: the write of the temporary file fails with EFBIG
    # (Python ignores SIGXFSZ) after a part of it reached the disk.
    store = DirectoryBlockStore(tmp_path / "chunks")
    cid, sealed = sealed_chunk(os.urandom(64 * 1024))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(StoreError):
            await store.put(cid, sealed)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert stray_files(tmp_path / "chunks") == []
    assert not await store.has(cid)
    assert await store.get(cid) is None


# --- metadata stores ---------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped at its end."""
    metadata = make_stores("postgres-s3", tmp_path_factory.mktemp("pg")).metadata
    assert metadata is not None
    yield metadata
    with psycopg.connect(require_env("LOFT_TEST_PG"), autocommit=True) as conn:
        name = metadata.rsplit("/", 1)[1]
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        db: SQLiteDatabase | PostgresDatabase = SQLiteDatabase(tmp_path / "metadata.db")
    else:
        db = PostgresDatabase(request.getfixturevalue("postgres_url"))
    metadata = MetadataStore(db)
    yield metadata
    metadata.close()


def new_user(store: MetadataStore, name: str | None = None) -> tuple[int, int]:
    """A fresh user: ``(user_id, root_ns)``."""
    user_id = store.add_user_sync(name or unique("user"), "not-a-real-hash")
    with store.db.transaction() as tx:
        (root_ns,) = tx.execute("SELECT root_ns FROM users WHERE id = ?", (user_id,))[0]
    return user_id, int(root_ns)


def op_mkdir(entry: str, parent: str, name: str) -> dict[str, Any]:
    return {"op": "mkdir", "op_id": p.new_id(), "entry": entry, "parent": parent, "name": name}


def op_create(
    entry: str, parent: str, name: str, blocks: list[list[Any]] | None = None
) -> dict[str, Any]:
    blocks = blocks or []
    return {
        "op": "create",
        "op_id": p.new_id(),
        "kind": "file",
        "entry": entry,
        "parent": parent,
        "name": name,
        "mode": 0o644,
        "mtime": 1_000,
        "size": sum(length for _, length in blocks),
        "blocks": blocks,
    }


def op(kind: str, entry: str, base: int, **fields: Any) -> dict[str, Any]:
    return {"op": kind, "op_id": p.new_id(), "entry": entry, "base": base, **fields}


async def live_tree(store: MetadataStore, user: int, ns: int) -> dict[str, dict[str, Any]]:
    """The live tree by entry id, root left out."""
    _, entries, _ = await store.tree(user, ns, None)
    return {e["id"]: e for e in entries if e["id"] != p.ROOT_ID}


async def uploaded(store: MetadataStore, user: int, data: bytes) -> list[Any]:
    cid = p.chunk_id(data)
    await store.add_chunks(user, [(cid, len(data), len(data) + 1)])
    return [cid, len(data)]


async def test_add_user_creates_an_empty_root_namespace(store: MetadataStore) -> None:
    user, ns = new_user(store)
    assert await store.namespaces(user) == [{"ns": ns, "role": "owner", "head": 0}]
    head, entries, _ = await store.tree(user, ns, None)
    assert head == 0
    assert [(e["id"], e["kind"], e["parent"], e["name"]) for e in entries] == [
        (p.ROOT_ID, "dir", "", "")
    ]


async def test_adding_an_existing_user_name_is_exists(store: MetadataStore) -> None:
    name = unique("twice")
    store.add_user_sync(name, "hash")
    with pytest.raises(Exists):
        store.add_user_sync(name, "other hash")


async def test_a_token_resolves_until_it_expires(store: MetadataStore) -> None:
    name = unique("user")
    user, ns = new_user(store, name)
    now = int(time.time())
    live = "live-" + unique("t")
    expired = "expired-" + unique("t")
    await store.add_token(live, user, "laptop", now + 3600)
    await store.add_token(expired, user, "phone", now - 1)
    assert await store.resolve_token(live) == (user, name, "laptop", ns)
    assert await store.resolve_token(expired) is None
    assert await store.resolve_token("never-issued") is None


async def test_each_operation_applies_under_its_own_seq(store: MetadataStore) -> None:
    user, ns = new_user(store)
    d, f = p.new_id(), p.new_id()
    one = await uploaded(store, user, b"version one")
    two = await uploaded(store, user, b"version two!")
    answer = await store.commit(
        user, "dev", ns, [op_mkdir(d, p.ROOT_ID, "d"), op_create(f, d, "f", [one])]
    )
    assert answer["seq"] == answer["head"] == 2
    assert [r["rev"] for r in answer["results"]] == [1, 2]

    answer = await store.commit(
        user,
        "dev",
        ns,
        [
            op("update", f, 2, size=two[1], mtime=5, blocks=[two]),
            op("setattr", f, 3, mode=0o600),
            op("rename", f, 4, parent=p.ROOT_ID, name="g"),
            op("delete", d, 1),
        ],
    )
    assert [r["rev"] for r in answer["results"]] == [3, 4, 5, 6]
    assert await live_tree(store, user, ns) == {
        f: {
            "id": f,
            "parent": p.ROOT_ID,
            "name": "g",
            "kind": "file",
            "rev": 5,
            "size": two[1],
            "mode": 0o600,
            "mtime": 5,
            "blocks": [two],
        }
    }
    assert await store.head(user, ns) == 6

async def test_a_setattr_that_changes_nothing_makes_no_version(store: MetadataStore) -> None:
    """A chmod and its undo, folded offline into one setattr of the mode the entry has
    already, names the current version instead of repeating it."""
    user, ns = new_user(store)
    f = p.new_id()
    await store.commit(user, "dev", ns, [op_create(f, p.ROOT_ID, "f")])
    before = await live_tree(store, user, ns)
    answer = await store.commit(user, "dev", ns, [op("setattr", f, 1, mode=0o644, mtime=1_000)])
    assert answer["results"] == [{"entry": f, "rev": 1}]
    assert await live_tree(store, user, ns) == before
    assert await store.head(user, ns) == 1
    answer = await store.commit(user, "dev", ns, [op("setattr", f, 1, mode=0o600)])
    assert answer["results"] == [{"entry": f, "rev": 2}]
    assert await store.head(user, ns) == 2



@pytest.mark.parametrize("kind", ["update", "setattr", "rename", "delete"])
async def test_a_stale_base_is_a_conflict_naming_the_current_entry(
    store: MetadataStore, kind: str
) -> None:
    user, ns = new_user(store)
    f = p.new_id()
    await store.commit(user, "dev", ns, [op_create(f, p.ROOT_ID, "f")])
    await store.commit(user, "dev", ns, [op("setattr", f, 1, mode=0o640)])
    before = await live_tree(store, user, ns)
    by_kind: dict[str, dict[str, Any]] = {
        "update": {"size": 0, "mtime": 9, "blocks": []},
        "setattr": {"mode": 0o600},
        "rename": {"parent": p.ROOT_ID, "name": "g"},
        "delete": {},
    }
    fields = by_kind[kind]
    with pytest.raises(Conflict) as caught:
        await store.commit(user, "dev", ns, [op(kind, f, 1, **fields)])
    assert type(caught.value) is Conflict
    assert caught.value.detail["op"] == 0
    assert caught.value.detail["current"] == before[f]
    assert await live_tree(store, user, ns) == before
    assert await store.head(user, ns) == 2


async def test_a_failing_op_rolls_back_its_whole_batch(store: MetadataStore) -> None:
    user, ns = new_user(store)
    taken = p.new_id()
    await store.commit(user, "dev", ns, [op_create(taken, p.ROOT_ID, "taken")])
    before = await live_tree(store, user, ns)
    first = op_mkdir(p.new_id(), p.ROOT_ID, "new-dir")
    with pytest.raises(Exists) as caught:
        await store.commit(user, "dev", ns, [first, op_create(p.new_id(), p.ROOT_ID, "taken")])
    assert caught.value.detail["op"] == 1
    assert await live_tree(store, user, ns) == before
    assert await store.head(user, ns) == 1
    assert (await store.changes(user, ns, 1, 100)).changes == []
    # The first op's id was not spent: it applies on its own now.
    answer = await store.commit(user, "dev", ns, [first])
    assert "replayed" not in answer
    assert answer["seq"] == 2


async def test_deleting_a_non_empty_directory_needs_recursive(store: MetadataStore) -> None:
    user, ns = new_user(store)
    d, f = p.new_id(), p.new_id()
    await store.commit(user, "dev", ns, [op_mkdir(d, p.ROOT_ID, "d"), op_create(f, d, "f")])
    with pytest.raises(NotEmpty):
        await store.commit(user, "dev", ns, [op("delete", d, 1)])
    await store.commit(user, "dev", ns, [op("delete", d, 1, recursive=True)])
    assert await live_tree(store, user, ns) == {}


async def test_a_file_naming_unuploaded_chunks_is_missing_chunks(store: MetadataStore) -> None:
    user, ns = new_user(store)
    have = await uploaded(store, user, b"uploaded")
    lacking = [p.chunk_id(b"never uploaded"), 14]
    with pytest.raises(MissingChunks) as caught:
        await store.commit(
            user, "dev", ns, [op_create(p.new_id(), p.ROOT_ID, "f", [have, lacking])]
        )
    assert caught.value.detail["missing"] == [lacking[0]]
    assert await live_tree(store, user, ns) == {}


async def test_replayed_op_ids_return_the_first_answer_and_apply_nothing(
    store: MetadataStore,
) -> None:
    user, ns = new_user(store)
    batch = [op_mkdir(p.new_id(), p.ROOT_ID, "a"), op_create(p.new_id(), p.ROOT_ID, "b")]
    first = await store.commit(user, "dev", ns, batch)
    after_first = await live_tree(store, user, ns)
    again = await store.commit(user, "other-device", ns, batch)
    assert again["replayed"] is True
    assert again["results"] == first["results"]
    assert again["seq"] == first["seq"]
    assert await live_tree(store, user, ns) == after_first
    assert await store.head(user, ns) == 2


async def test_reusing_some_op_ids_in_a_new_batch_is_bad_request(store: MetadataStore) -> None:
    user, ns = new_user(store)
    used = op_mkdir(p.new_id(), p.ROOT_ID, "a")
    await store.commit(user, "dev", ns, [used])
    with pytest.raises(BadRequest):
        await store.commit(user, "dev", ns, [used, op_mkdir(p.new_id(), p.ROOT_ID, "b")])
    assert await store.head(user, ns) == 1


async def test_concurrent_commits_get_contiguous_increasing_seqs(store: MetadataStore) -> None:
    user, ns = new_user(store)
    seqs: list[int] = []

    async def create(n: int) -> None:
        answer = await store.commit(
            user, f"dev{n}", ns, [op_create(p.new_id(), p.ROOT_ID, f"f{n}")]
        )
        seqs.append(answer["seq"])

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(create, n)
    assert sorted(seqs) == list(range(1, 21))
    feed = await store.changes(user, ns, 0, 1000)
    head, records = feed.head, feed.changes
    assert head == 20
    assert [r["rev"] for r in records] == list(range(1, 21))
    assert sorted(r["name"] for r in records) == sorted(f"f{n}" for n in range(20))


async def test_tree_at_a_seq_shows_the_tree_as_it_was(store: MetadataStore) -> None:
    user, ns = new_user(store)
    d, f = p.new_id(), p.new_id()

    async def names(at: int | None) -> set[tuple[str, str]]:
        _, entries, _ = await store.tree(user, ns, at)
        return {(e["parent"], e["name"]) for e in entries}

    await store.commit(user, "dev", ns, [op_mkdir(d, p.ROOT_ID, "d")])  # 1
    await store.commit(user, "dev", ns, [op_create(f, d, "f")])  # 2
    await store.commit(user, "dev", ns, [op("rename", f, 2, parent=p.ROOT_ID, name="g")])  # 3
    await store.commit(user, "dev", ns, [op("delete", d, 1)])  # 4
    await store.commit(user, "dev", ns, [op("delete", f, 3)])  # 5
    root = ("", "")
    assert await names(0) == {root}
    assert await names(1) == {root, (p.ROOT_ID, "d")}
    assert await names(2) == {root, (p.ROOT_ID, "d"), (d, "f")}
    assert await names(3) == {root, (p.ROOT_ID, "d"), (p.ROOT_ID, "g")}
    assert await names(4) == {root, (p.ROOT_ID, "g")}
    assert await names(None) == {root}
    at, entries, _ = await store.tree(user, ns, 2)
    assert at == 2
    assert {e["id"]: e["rev"] for e in entries if e["id"] != p.ROOT_ID} == {d: 1, f: 2}


async def test_a_chunk_is_visible_to_its_uploader_and_to_members_of_a_namespace_using_it(
    store: MetadataStore,
) -> None:
    alice, alice_ns = new_user(store)
    bob, _ = new_user(store)
    data = os.urandom(100)
    cid = p.chunk_id(data)
    assert await store.missing_chunks(alice, [cid]) == [cid]

    await store.add_chunks(alice, [(cid, len(data), len(data) + 1)])
    assert await store.missing_chunks(alice, [cid]) == []
    assert await store.chunk_visible(alice, cid)
    assert await store.missing_chunks(bob, [cid]) == [cid]
    assert not await store.chunk_visible(bob, cid)

    # In a file of a namespace Bob is not a member of: still not his.
    await store.commit(
        alice, "dev", alice_ns, [op_create(p.new_id(), p.ROOT_ID, "f", [[cid, len(data)]])]
    )
    assert await store.missing_chunks(bob, [cid]) == [cid]
    assert not await store.chunk_visible(bob, cid)

    # Sharing has no API yet: make Bob a member directly.
    with store.db.transaction() as tx:
        tx.execute(
            "INSERT INTO members (ns, user_id, role) VALUES (?, ?, 'viewer')", (alice_ns, bob)
        )
    assert await store.missing_chunks(bob, [cid]) == []
    assert await store.chunk_visible(bob, cid)


async def test_membership_alone_does_not_reveal_a_chunk_no_file_uses(
    store: MetadataStore,
) -> None:
    alice, alice_ns = new_user(store)
    bob, _ = new_user(store)
    with store.db.transaction() as tx:
        tx.execute(
            "INSERT INTO members (ns, user_id, role) VALUES (?, ?, 'editor')", (alice_ns, bob)
        )
    cid = p.chunk_id(b"alice only")
    await store.add_chunks(alice, [(cid, 10, 11)])
    assert await store.missing_chunks(bob, [cid]) == [cid]
    assert not await store.chunk_visible(bob, cid)


# --- passwords ---------------------------------------------------------------------


def test_a_password_verifies_against_its_hash() -> None:
    assert verify_password("correct horse", hash_password("correct horse"))


def test_a_wrong_password_does_not_verify() -> None:
    assert not verify_password("wrong horse", hash_password("correct horse"))


def test_no_password_verifies_for_an_unknown_user() -> None:
    assert not verify_password("", None)
    assert not verify_password("anything", None)


def test_password_hashes_are_salted() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
