"""Two stateless server nodes over one PostgreSQL database and one S3 bucket."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from backend import protocol as p
from tests.conftest import Server, Stores, check_server, make_stores


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    base = tmp_path_factory.mktemp("scaleout")
    shared = make_stores("postgres-s3", base / "a" / "data")
    first = Server(shared)
    second = Server(Stores(base / "b" / "data", shared.metadata, shared.blocks))
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()
    check_server(shared)


async def _login(node: Server, user: str) -> tuple[str, int]:
    async with node.client() as client:
        answer = await client.login(user, "correct horse battery", "node-test")
    return answer["token"], answer["root_ns"]


def _mkdir(name: str) -> dict[str, object]:
    return {
        "op": "mkdir",
        "op_id": p.new_id(),
        "entry": p.new_id(),
        "parent": p.ROOT_ID,
        "name": name,
        "mode": 0o755,
        "mtime": time.time_ns(),
    }


async def test_commit_on_one_node_wakes_long_poll_on_the_other(
    nodes: tuple[Server, Server],
) -> None:
    first, second = nodes
    first.add_user("scaleout-a")
    token, ns = await _login(first, "scaleout-a")
    async with first.client(token) as a, second.client(token) as b:
        head = (await b.changes(ns, 0))["head"]
        answer: dict[str, object] = {}

        async def poll() -> None:
            start = time.monotonic()
            answer.update(await b.changes(ns, head, wait=30))
            answer["elapsed"] = time.monotonic() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.5)
            await a.commit(ns, [_mkdir("from-node-a")])
        changes = answer["changes"]
        assert isinstance(changes, list)
        assert [c["name"] for c in changes] == ["from-node-a"]
        assert isinstance(answer["elapsed"], float)
        assert answer["elapsed"] < 15  # woken by the commit, not by the end of the wait


async def test_chunk_uploaded_through_one_node_is_read_through_the_other(
    nodes: tuple[Server, Server], tmp_path: Path
) -> None:
    first, second = nodes
    first.add_user("scaleout-b")
    token, ns = await _login(second, "scaleout-b")
    data = os.urandom(300_000)
    cid = p.chunk_id(data)
    async with first.client(token) as a, second.client(token) as b:
        await a.put_chunk(cid, data)
        assert await b.missing([cid]) == []
        op = {
            "op": "create",
            "op_id": p.new_id(),
            "entry": p.new_id(),
            "parent": p.ROOT_ID,
            "name": "f",
            "kind": "file",
            "size": len(data),
            "blocks": [[cid, len(data)]],
        }
        await b.commit(ns, [op])
        assert await b.get_chunk(cid) == data
        entry = (await a.lookup(ns, "/f"))["entry"]
        assert entry["blocks"] == [[cid, len(data)]]
