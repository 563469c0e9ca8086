"""Chunk uploads and downloads on blocking connections (``backend.blocking``), through
the client, against a real server behind the fault-injecting proxy: connections are
kept alive and reused; one the network dropped while it was idle is replaced without
spending a retry; an upload cut off mid-body stores nothing and is a clear error; a
server that stops answering costs the client's timeout per attempt, then a clear
error, and the client works again once the server answers."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator

import pytest
import trio

from backend import protocol as p
from backend.client import Client
from backend.errors import NotFound, ServerUnavailable
from tests.conftest import PASSWORD, Server
from tests.faultproxy import FaultProxy
from tools.localserver import free_port

_names = itertools.count()


@pytest.fixture
async def token(mount_server: Server) -> str:
    user = f"dl{os.getpid()}n{next(_names)}"
    await trio.to_thread.run_sync(mount_server.add_user, user)
    async with mount_server.client() as anonymous:
        return str((await anonymous.login(user, PASSWORD, "dl"))["token"])


@pytest.fixture
async def proxy(mount_server: Server) -> AsyncIterator[FaultProxy]:
    with FaultProxy(mount_server.port) as px:
        yield px


async def stored(client: Client, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    cid = p.chunk_id(data)
    await client.put_chunk(cid, data)
    return cid, data


async def test_downloads_reuse_connections_and_replace_one_dropped_while_idle(
    token: str, proxy: FaultProxy
) -> None:
    # One attempt only: a dropped connection must be replaced, not retried.
    async with Client(proxy.url, token, attempts=1, timeout=10.0) as client:
        accepted = proxy.accepted
        cid, data = await stored(client, 3 * 1024 * 1024)
        for _ in range(3):
            assert await client.get_chunk(cid) == data
        assert proxy.accepted - accepted == 1  # the upload's connection, each time
        proxy.cut()  # every connection closed, the pooled one too
        proxy.restore()
        assert await client.get_chunk(cid) == data
        assert proxy.accepted - accepted == 2
        with pytest.raises(NotFound):
            await client.get_chunk(p.chunk_id(b"never stored"))


async def test_an_upload_cut_off_mid_body_stores_nothing_and_goes_whole_once_restored(
    token: str, proxy: FaultProxy
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    cid = p.chunk_id(data)
    async with Client(proxy.url, token, attempts=1, timeout=10.0) as client:
        await client.whoami()  # the connection made: what follows counts the upload's bytes
        proxy.cut_after(1024 * 1024)
        with pytest.raises(ServerUnavailable, match="cannot reach the server"):
            await client.put_chunk(cid, data)
        proxy.restore()
        assert await client.missing([cid]) == [cid]
        assert await client.put_chunk(cid, data)
        assert await client.missing([cid]) == []
        assert await client.get_chunk(cid) == data


async def test_a_server_that_stops_answering_fails_in_its_timeout_and_comes_back(
    token: str, proxy: FaultProxy
) -> None:
    async with Client(proxy.url, token, attempts=2, backoff=0.05, timeout=1.0) as client:
        cid, data = await stored(client, 256 * 1024)
        proxy.stall()
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match="cannot reach the server"):
            await client.get_chunk(cid)
        assert 2.0 <= time.monotonic() - start < 10.0  # two attempts of one second each
        proxy.restore()
        assert await client.get_chunk(cid) == data


async def test_no_server_at_all_is_a_clear_error(token: str) -> None:
    async with Client(f"http://127.0.0.1:{free_port()}", token, attempts=2, backoff=0.05
                      ) as client:
        with pytest.raises(ServerUnavailable, match=r"cannot reach the server .*refused"):
            await client.get_chunk(p.chunk_id(b"x"))


async def test_a_server_gone_between_connection_and_answer_is_a_clear_error(token: str) -> None:
    with FaultProxy(free_port()) as proxy:  # accepts, then finds nothing behind it
        async with Client(proxy.url, token, attempts=2, backoff=0.05) as client:
            with pytest.raises(ServerUnavailable, match="cannot reach the server"):
                await client.get_chunk(p.chunk_id(b"x"))
