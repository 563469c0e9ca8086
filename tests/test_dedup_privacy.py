"""No user learns whether anyone else stores some content: an upload of bytes another
user already holds does the same work as one of bytes nobody holds (sealed, written,
flushed), while storage stays deduplicated (one blob)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend import protocol as p
from tests.conftest import Server, running_server
from tests.test_api import NewAccount, new_account, user_store

__all__ = ["new_account", "user_store"]  # fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The directory block store, whose blobs show whether they were written again."""
    yield from running_server(tmp_path_factory, "sqlite-dir", "privacy")


def blob(server: Server, cid: str) -> Path:
    return server.stores.data / "chunks" / cid[:2] / cid[2:4] / cid


async def test_an_upload_of_bytes_another_user_holds_is_written_as_if_new(
    server: Server, new_account: NewAccount
) -> None:
    alice, bob = await new_account(), await new_account()
    data = os.urandom(300_000)
    cid = p.chunk_id(data)
    async with alice.client() as a, bob.client() as b:
        assert await a.put_chunk(cid, data)
        first = blob(server, cid).stat()
        assert await b.missing([cid]) == [cid]  # no hint that Alice holds it
        assert await b.put_chunk(cid, data)  # new to Bob, as for any new chunk
        second = blob(server, cid).stat()
        assert second.st_ino != first.st_ino  # written again, not skipped
        # What the uploader holds already is no work at all (and tells nothing).
        assert not await a.put_chunk(cid, data)
        assert blob(server, cid).stat().st_ino == second.st_ino
        assert await a.get_chunk(cid) == data
        assert await b.get_chunk(cid) == data
    blobs = [f for f in (server.stores.data / "chunks").rglob("*") if f.name == cid]
    assert len(blobs) == 1  # stored once
