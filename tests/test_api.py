"""The ``/v1`` API against a real ``loft serve`` over loopback, on every back end.

Successful calls go through ``backend.client.Client``; refusals are checked with raw
httpx so that the status code on the wire, not just the error class the client
rebuilds, is what the test asserts. Every refusal also asserts that nothing changed:
the namespace's tree and journal head (``tree`` answers both) are as before.
"""

from __future__ import annotations

import itertools
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import cbor2
import httpx
import pytest
import trio

from backend import delta
from backend import protocol as p
from backend.client import Client
from backend.errors import Conflict, LoftError, MissingChunks, NotFound, Unauthorized
from backend.server.auth import hash_password
from backend.server.blocks import open_block_store, seal
from backend.server.main import open_metadata
from backend.server.metadata import MetadataStore
from tests.conftest import PASSWORD, Device, Server

MTIME = 1_700_000_000 * 1_000_000_000

Block = list[Any]  # [chunk_id, length]


# --- accounts ------------------------------------------------------------------------


@dataclass
class Account:
    """A user logged in over the API: what ``Device`` offers, without a CLI home.

    ``loft user add`` plus ``loft login`` as subprocesses cost over a second per test;
    these tests only need a token, so the user is added to the server's own metadata
    store in-process (as ``loft user add`` does) and logged in through ``/v1/login``.
    One test below still goes through the real CLI login (the ``device`` fixture).
    """

    server: Server
    user: str
    token: str
    root_ns: int
    device: str

    def client(self) -> Client:
        return self.server.client(self.token)


NewAccount = Callable[..., Awaitable[Account]]
_names = itertools.count()


@pytest.fixture(scope="module")
def user_store(server: Server) -> Iterator[MetadataStore]:
    with open_metadata(server.stores.metadata, server.stores.data) as store:
        yield store


@pytest.fixture
def new_account(server: Server, user_store: MetadataStore) -> NewAccount:
    """``await new_account(user=None, device="dev")``: a fresh user unless one is named."""

    async def make(user: str | None = None, device: str = "dev") -> Account:
        if user is None:
            user = f"api{os.getpid()}n{next(_names)}"
            pw_hash = await trio.to_thread.run_sync(hash_password, PASSWORD)
            await trio.to_thread.run_sync(user_store.add_user_sync, user, pw_hash)
        async with server.client() as anonymous:
            answer = await anonymous.login(user, PASSWORD, device)
        return Account(server, user, answer["token"], answer["root_ns"], device)

    return make


@pytest.fixture
async def acct(new_account: NewAccount) -> Account:
    return await new_account()


# --- building operations -------------------------------------------------------------


def op(op_kind: str, /, **fields: Any) -> dict[str, Any]:
    return {"op": op_kind, "op_id": p.new_id(), **fields}


def mkdir(parent: str, name: str, entry: str | None = None) -> dict[str, Any]:
    return op("mkdir", entry=entry or p.new_id(), parent=parent, name=name, mode=0o755, mtime=MTIME)


def create(
    parent: str, name: str, blocks: Sequence[Block] = (), entry: str | None = None
) -> dict[str, Any]:
    return op(
        "create",
        entry=entry or p.new_id(),
        parent=parent,
        name=name,
        kind="file",
        mode=0o644,
        mtime=MTIME,
        size=sum(length for _, length in blocks),
        blocks=[list(b) for b in blocks],
    )


def update(entry: str, base: int, blocks: Sequence[Block]) -> dict[str, Any]:
    return op(
        "update",
        entry=entry,
        base=base,
        size=sum(length for _, length in blocks),
        mtime=MTIME + 1,
        blocks=[list(b) for b in blocks],
    )


def rename(
    entry: str, base: int, parent: str, name: str, replace: dict[str, Any] | None = None
) -> dict[str, Any]:
    fields: dict[str, Any] = {"entry": entry, "base": base, "parent": parent, "name": name}
    if replace is not None:
        fields["replace"] = replace
    return op("rename", **fields)


def delete(entry: str, base: int, recursive: bool = False) -> dict[str, Any]:
    return op("delete", entry=entry, base=base, recursive=recursive)


# --- talking to the server -----------------------------------------------------------


async def upload(c: Client, data: bytes) -> Block:
    """Upload one chunk; its block-list item ``[id, length]``."""
    cid = p.chunk_id(data)
    await c.put_chunk(cid, data)
    return [cid, len(data)]


async def apply(c: Client, ns: int, *ops: dict[str, Any]) -> list[int]:
    """Commit ``ops``; the revs they were given."""
    answer = await c.commit(ns, list(ops))
    return [r["rev"] for r in answer["results"]]


async def head(c: Client, ns: int) -> int:
    return int((await c.changes(ns, 0, limit=1))["head"])


async def entry_at(c: Client, ns: int, path: str) -> dict[str, Any]:
    entry: dict[str, Any] = (await c.lookup(ns, path))["entry"]
    return entry


_TLS = ssl.create_default_context()
"""Shared so that each raw request does not build a TLS context (50 ms) it never uses."""


async def raw(
    server: Server,
    method: str,
    path: str,
    token: str | None = None,
    *,
    body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    """One request as sent, no retries; ``body`` is CBOR-encoded, ``content`` is not."""
    sent = dict(headers or {})
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    if body is not None:
        content = p.encode(body)
        sent.setdefault("content-type", p.CBOR)
    async with httpx.AsyncClient(base_url=server.url + p.API, timeout=30, verify=_TLS) as http:
        return await http.request(method, path, content=content, headers=sent, params=params)


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert a CBOR error answer with ``status`` and ``code``; its body."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response.headers["content-type"].startswith(p.CBOR)
    body = p.decode(response.content)
    assert isinstance(body, dict), body
    assert body["error"] == code, body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    return body


async def commit_raw(server: Server, dev: Account, ns: int, ops: Any) -> httpx.Response:
    return await raw(server, "POST", f"/ns/{ns}/commit", dev.token, body={"ops": ops})


@asynccontextmanager
async def unchanged(c: Client, ns: int) -> AsyncIterator[None]:
    """Assert that the block changes neither the tree nor the journal head of ``ns``."""
    before = await c.tree(ns)
    yield
    assert await c.tree(ns) == before


# --- health and login ----------------------------------------------------------------


async def test_health_answers_without_a_token(server: Server) -> None:
    response = await raw(server, "GET", "/health")
    assert response.status_code == 200
    assert p.decode(response.content)["ok"] is True


async def test_wrong_password_and_unknown_user_are_refused_alike(acct: Account) -> None:
    server = acct.server
    wrong_password = await raw(
        server, "POST", "/login", body={"user": acct.user, "password": "not it", "device": "x"}
    )
    unknown_user = await raw(
        server, "POST", "/login", body={"user": "nobody-" + p.new_id(), "password": PASSWORD}
    )
    first = refused(wrong_password, 401, "unauthorized")
    second = refused(unknown_user, 401, "unauthorized")
    assert first == second


async def test_cli_login_and_api_login_give_tokens_that_work(device: Device) -> None:
    async with device.client() as c:
        me = await c.whoami()
    assert (me["user"], me["device"], me["root_ns"]) == (device.user, "dev", device.root_ns)
    async with device.server.client() as anonymous:
        answer = await anonymous.login(device.user, PASSWORD, "laptop")
    assert (answer["user"], answer["root_ns"]) == (device.user, device.root_ns)
    async with device.server.client(answer["token"]) as c:
        me = await c.whoami()
    assert (me["user"], me["device"], me["root_ns"]) == (device.user, "laptop", device.root_ns)


async def test_token_with_ttl_expires(acct: Account) -> None:
    async with acct.server.client() as anonymous:
        answer = await anonymous.login(acct.user, PASSWORD, "short", ttl=1)
    token = answer["token"]
    assert (await raw(acct.server, "GET", "/whoami", token)).status_code == 200
    await trio.sleep(2.1)
    refused(await raw(acct.server, "GET", "/whoami", token), 401, "unauthorized")


async def test_forged_tokens_are_refused(acct: Account) -> None:
    real = acct.token
    flipped = real[:-1] + ("A" if real[-1] != "A" else "B")
    for forged in ("loft_" + os.urandom(32).hex(), os.urandom(8).hex(), flipped, real + "x"):
        response = await raw(acct.server, "GET", "/whoami", forged)
        refused(response, 401, "unauthorized")
    assert (await raw(acct.server, "GET", "/whoami", real)).status_code == 200


async def test_every_route_but_health_and_login_demands_a_token(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    data = b"uploaded without a token"
    cid = p.chunk_id(data)
    commit_body = p.encode({"ops": [mkdir(p.ROOT_ID, "sneaky")]})
    routes: list[tuple[str, str, bytes | None]] = [
        ("GET", "/whoami", None),
        ("POST", "/chunks/missing", p.encode({"ids": [cid]})),
        ("PUT", f"/chunks/{cid}", data),
        ("GET", f"/chunks/{cid}", None),
        ("POST", f"/ns/{ns}/commit", commit_body),
        ("GET", f"/ns/{ns}/changes?since=0", None),
        ("GET", f"/ns/{ns}/tree", None),
        ("GET", f"/ns/{ns}/lookup?path=/", None),
        ("GET", f"/ns/{ns}/entries/{p.ROOT_ID}/versions", None),
    ]
    bad_headers: list[dict[str, str]] = [
        {},
        {"authorization": "Bearer"},
        {"authorization": f"Basic {acct.token}"},
        {"authorization": acct.token},
    ]
    async with acct.client() as c, unchanged(c, ns):
        for method, path, content in routes:
            for headers in bad_headers:
                response = await raw(server, method, path, content=content, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                refused(response, 401, "unauthorized")
        assert await c.missing([cid]) == [cid]


# --- malformed requests --------------------------------------------------------------

GARBAGE_BODIES = [
    b"",
    b"\xff\xfe\xfd not cbor",
    b"\xa1\x63ops",  # a map cut off inside its first key
    b"\x9f\x01\x02",  # an indefinite array never closed
    b"\xbf\x63ops\x9f",  # a map and array both unterminated
]

NON_MAP_BODIES = [
    cbor2.dumps([{"op": "mkdir"}]),
    cbor2.dumps("ops"),
    cbor2.dumps(42),
    cbor2.dumps(None),
    cbor2.dumps(b"ops"),
    cbor2.dumps({1: "ops"}),  # a map, but not with string keys
]


async def test_garbage_cbor_bodies_are_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    targets = [("POST", f"/ns/{ns}/commit"), ("POST", "/chunks/missing"), ("POST", "/login")]
    async with acct.client() as c, unchanged(c, ns):
        for body in GARBAGE_BODIES:
            for method, path in targets:
                response = await raw(server, method, path, acct.token, content=body)
                refused(response, 400, "bad_request")


async def test_cbor_bodies_that_are_not_maps_are_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    targets = [("POST", f"/ns/{ns}/commit"), ("POST", "/chunks/missing"), ("POST", "/login")]
    async with acct.client() as c, unchanged(c, ns):
        for body in NON_MAP_BODIES:
            for method, path in targets:
                response = await raw(server, method, path, acct.token, content=body)
                refused(response, 400, "bad_request")


async def test_ops_with_wrong_field_types_are_400_and_nothing_commits(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"some file content")
        [existing] = await apply(c, ns, create(p.ROOT_ID, "existing", [block], entry="e" * 32))
        good_mkdir = mkdir(p.ROOT_ID, "fine")
        bad_batches: list[Any] = [
            "mkdir",
            [],
            [5],
            [None],
            [{**mkdir(p.ROOT_ID, "a"), "op_id": 123}],
            [{**mkdir(p.ROOT_ID, "a"), "op_id": "not an id"}],
            [{**mkdir(p.ROOT_ID, "a"), "entry": "ABC"}],
            [{**mkdir(p.ROOT_ID, "a"), "entry": p.ROOT_ID}],
            [{**mkdir(p.ROOT_ID, "a"), "parent": 5}],
            [{**mkdir(p.ROOT_ID, "a"), "name": 5}],
            [{**mkdir(p.ROOT_ID, "a"), "name": b"a"}],
            [{**mkdir(p.ROOT_ID, "a"), "mode": "755"}],
            [{**mkdir(p.ROOT_ID, "a"), "mode": True}],
            [{**mkdir(p.ROOT_ID, "a"), "mtime": -1}],
            [{**mkdir(p.ROOT_ID, "a"), "mtime": 1.5}],
            [{**mkdir(p.ROOT_ID, "a"), "mtime": 1 << 64}],
            [{**create(p.ROOT_ID, "f", [block]), "blocks": "abc"}],
            [{**create(p.ROOT_ID, "f", [block]), "blocks": [[block[0]]]}],
            [{**create(p.ROOT_ID, "f", [block]), "blocks": [[block[0], "17"]]}],
            [{**create(p.ROOT_ID, "f", [block]), "blocks": [[block[0], 0]], "size": 0}],
            [{**create(p.ROOT_ID, "f", [block]), "blocks": [[block[0].upper(), 17]]}],
            [{**create(p.ROOT_ID, "f", [block]), "size": "17"}],
            [{**create(p.ROOT_ID, "f", [block]), "kind": 5}],
            [{**create(p.ROOT_ID, "f", [block]), "kind": "fifo"}],
            [{**create(p.ROOT_ID, "f", [block]), "entry": "e" * 32}],  # id already used
            [op("create", entry=p.new_id(), parent=p.ROOT_ID, name="l", kind="symlink")],
            [op("create", entry=p.new_id(), parent=p.ROOT_ID, name="l", kind="symlink", target=5)],
            [op("create", entry=p.new_id(), parent=p.ROOT_ID, name="l", kind="symlink", target="")],
            [{**update("e" * 32, existing, [block]), "base": True}],
            [{**update("e" * 32, existing, [block]), "base": -1}],
            [{**update("e" * 32, existing, [block]), "base": str(existing)}],
            [{**update("e" * 32, existing, [block]), "base": None}],
            [{**delete("e" * 32, existing), "recursive": "yes"}],
            [{**rename("e" * 32, existing, p.ROOT_ID, "x"), "parent": None}],
            [good_mkdir, {**mkdir(p.ROOT_ID, "b"), "op_id": good_mkdir["op_id"]}],
        ]
        async with unchanged(c, ns):
            for ops in bad_batches:
                response = await commit_raw(server, acct, ns, ops)
                assert response.status_code == 400, (ops, response.content)
                refused(response, 400, "bad_request")
            for body in ({}, {"ops": None}, {"op": "mkdir"}):
                response = await raw(server, "POST", f"/ns/{ns}/commit", acct.token, body=body)
                refused(response, 400, "bad_request")


async def test_other_requests_with_wrong_field_types_are_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    bad: list[tuple[str, str, Any]] = [
        ("POST", "/login", {"user": 5, "password": PASSWORD}),
        ("POST", "/login", {"user": acct.user}),
        ("POST", "/login", {"user": acct.user, "password": PASSWORD, "device": ""}),
        ("POST", "/login", {"user": acct.user, "password": PASSWORD, "device": 5}),
        ("POST", "/login", {"user": acct.user, "password": PASSWORD, "ttl": -1}),
        ("POST", "/login", {"user": acct.user, "password": PASSWORD, "ttl": "60"}),
        ("POST", "/chunks/missing", {"ids": "abc"}),
        ("POST", "/chunks/missing", {"ids": ["A" * 64]}),
        ("POST", "/chunks/missing", {"ids": [5]}),
        ("POST", "/chunks/missing", {}),
    ]
    for method, path, body in bad:
        response = await raw(server, method, path, acct.token, body=body)
        assert response.status_code == 400, (path, body, response.content)
        refused(response, 400, "bad_request")
    for query in ("since=-1", "since=x", "wait=1.5", "limit=-3"):
        response = await raw(server, "GET", f"/ns/{ns}/changes?{query}", acct.token)
        refused(response, 400, "bad_request")
    for query in ("at=-1", "at=yesterday"):
        response = await raw(server, "GET", f"/ns/{ns}/tree?{query}", acct.token)
        refused(response, 400, "bad_request")
    for path in ("/a/../../b", "/a\0b"):
        response = await raw(server, "GET", f"/ns/{ns}/lookup", acct.token, params={"path": path})
        refused(response, 400, "bad_request")
    response = await raw(server, "GET", f"/ns/{ns}/entries/xyz/versions", acct.token)
    refused(response, 400, "bad_request")


async def test_query_numbers_beyond_64_bits_are_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    huge = str(1 << 64)
    for path in (f"/ns/{ns}/changes?since={huge}", f"/ns/{ns}/tree?at={huge}"):
        refused(await raw(server, "GET", path, acct.token), 400, "bad_request")


async def test_unknown_op_kinds_are_400_and_nothing_commits(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c, unchanged(c, ns):
        for kind in ("chmod", "CREATE", "", None, 7, ["create"], {"op": "create"}):
            ops = [mkdir(p.ROOT_ID, "before"), {**mkdir(p.ROOT_ID, "odd"), "op": kind}]
            response = await commit_raw(server, acct, ns, ops)
            assert response.status_code == 400, (kind, response.content)
            refused(response, 400, "bad_request")
        no_kind = {k: v for k, v in mkdir(p.ROOT_ID, "odd").items() if k != "op"}
        refused(await commit_raw(server, acct, ns, [no_kind]), 400, "bad_request")


async def test_more_ids_or_ops_than_allowed_are_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    ids = [p.chunk_id(i.to_bytes(4, "big")) for i in range(p.MAX_IDS_PER_QUERY + 1)]
    response = await raw(server, "POST", "/chunks/missing", acct.token, body={"ids": ids})
    refused(response, 400, "bad_request")
    response = await raw(server, "POST", "/chunks/missing", acct.token, body={"ids": ids[:-1]})
    assert response.status_code == 200
    assert p.decode(response.content)["missing"] == ids[:-1]
    ops = [mkdir(p.ROOT_ID, f"d{i}") for i in range(p.MAX_OPS_PER_COMMIT + 1)]
    async with acct.client() as c, unchanged(c, ns):
        refused(await commit_raw(server, acct, ns, ops), 400, "bad_request")


# --- chunks --------------------------------------------------------------------------


async def test_chunk_whose_hash_differs_from_its_id_is_422_and_stays_missing(
    acct: Account,
) -> None:
    data = b"the bytes the id was computed from"
    cid = p.chunk_id(data)
    response = await raw(acct.server, "PUT", f"/chunks/{cid}", acct.token, content=b"other")
    refused(response, 422, "hash_mismatch")
    async with acct.client() as c:
        assert await c.missing([cid]) == [cid]
        with pytest.raises(NotFound):
            await c.get_chunk(cid)


async def test_bad_chunk_id_in_url_is_400(acct: Account) -> None:
    data = b"content"
    good = p.chunk_id(data)
    for bad in (good.upper(), good[:-1], good + "0", "z" * 64, "not-an-id"):
        for method, content in (("PUT", data), ("GET", None)):
            response = await raw(acct.server, method, f"/chunks/{bad}", acct.token, content=content)
            assert response.status_code == 400, (method, bad)
            refused(response, 400, "bad_request")


async def test_chunk_over_4_mib_is_413_and_not_stored(acct: Account) -> None:
    data = os.urandom(p.MAX_CHUNK + 1)
    cid = p.chunk_id(data)
    response = await raw(acct.server, "PUT", f"/chunks/{cid}", acct.token, content=data)
    refused(response, 413, "too_large")
    async with acct.client() as c:
        assert await c.missing([cid]) == [cid]


async def test_refusals_before_the_body_is_read_are_answered_promptly(acct: Account) -> None:
    """The server reads and drops a refused body, so the client sees the answer."""
    data = os.urandom(p.MAX_CHUNK)
    cid = p.chunk_id(data)
    too_big = data + b"!"
    auth = {"authorization": f"Bearer {acct.token}"}
    cases: list[tuple[str, str, dict[str, str], bytes, int]] = [
        ("PUT", f"/chunks/{cid}", {}, data, 401),
        ("PUT", f"/chunks/{cid.upper()}", auth, data, 400),
        ("PUT", f"/chunks/{p.chunk_id(too_big)}", auth, too_big, 413),
        ("POST", f"/ns/{acct.root_ns}/commit", {}, too_big, 401),
        ("POST", "/ns/not-a-number/commit", auth, too_big, 404),
    ]
    async with httpx.AsyncClient(
        base_url=acct.server.url + p.API, verify=_TLS, timeout=httpx.Timeout(10.0)
    ) as http:
        for _ in range(3):  # also on a kept-alive connection
            for method, path, headers, body, status in cases:
                response = await http.request(method, path, content=body, headers=headers)
                assert response.status_code == status, (method, path)
    async with acct.client() as c:
        assert await c.missing([cid]) == [cid]


async def test_chunk_of_exactly_4_mib_is_accepted(acct: Account) -> None:
    data = os.urandom(p.MAX_CHUNK)
    async with acct.client() as c:
        [cid, _] = await upload(c, data)
        assert await c.missing([cid]) == []
        assert await c.get_chunk(cid) == data


async def test_empty_chunk_is_400(acct: Account) -> None:
    cid = p.chunk_id(b"")
    response = await raw(acct.server, "PUT", f"/chunks/{cid}", acct.token, content=b"")
    refused(response, 400, "bad_request")


async def test_chunk_upload_is_idempotent(acct: Account) -> None:
    data = os.urandom(100_000)
    cid = p.chunk_id(data)
    first = await raw(acct.server, "PUT", f"/chunks/{cid}", acct.token, content=data)
    second = await raw(acct.server, "PUT", f"/chunks/{cid}", acct.token, content=data)
    assert first.status_code == 201
    assert p.decode(first.content) == {"stored": True}
    assert second.status_code == 200
    assert p.decode(second.content) == {"stored": False}
    async with acct.client() as c:
        assert await c.missing([cid]) == []
        assert await c.get_chunk(cid) == data


async def test_chunk_download_returns_the_exact_bytes(acct: Account) -> None:
    samples = [b"\0" * 300_000, os.urandom(1), os.urandom(777_777), b"compressible " * 20_000]
    async with acct.client() as c:
        for data in samples:
            [cid, _] = await upload(c, data)
            response = await raw(acct.server, "GET", f"/chunks/{cid}", acct.token)
            assert response.status_code == 200
            assert response.content == data


async def test_a_range_of_a_chunk_is_answered_206_with_just_those_bytes(acct: Account) -> None:
    samples = [os.urandom(900_000), b"compressible " * 60_000]
    async with acct.client() as c:
        for data in samples:
            [cid, size] = await upload(c, data)

            async def ranged(spec: str, cid: str = cid) -> httpx.Response:
                return await raw(acct.server, "GET", f"/chunks/{cid}", acct.token,
                                 headers={"range": spec})

            part = await ranged("bytes=1000-4999")
            assert part.status_code == 206
            assert part.content == data[1000:5000]
            assert part.headers["content-range"] == f"bytes 1000-4999/{size}"
            assert (await ranged("bytes=-10")).content == data[-10:]
            assert (await ranged(f"bytes={size - 3}-")).content == data[-3:]
            assert (await ranged(f"bytes=5-{size + 100}")).content == data[5:]
            past = await ranged(f"bytes={size}-")
            assert past.status_code == 416
            assert past.headers["content-range"] == f"bytes */{size}"
            whole = await ranged("bytes=0-1,5-9")  # several ranges: the whole chunk
            assert (whole.status_code, whole.content) == (200, data)
            assert await c.get_chunk_part(cid, 77, 7777) == data[77:7777]


async def test_a_range_of_a_chunk_corrupt_at_rest_is_refused_not_answered(
    acct: Account,
) -> None:
    """A part cannot be checked by the client, so the server checks the whole chunk
    first: bytes at rest that are not the chunk are a 503, never a part of them."""
    data, other = os.urandom(300_000), os.urandom(300_000)
    async with acct.client() as c:
        [cid, _] = await upload(c, data)
    blocks = open_block_store(acct.server.stores.blocks, acct.server.stores.data)
    try:
        await blocks.put(cid, seal(other))
    finally:
        await blocks.close()
    part = await raw(acct.server, "GET", f"/chunks/{cid}", acct.token,
                     headers={"range": "bytes=0-99"})
    assert refused(part, 503, "store_unavailable")["message"] == (
        f"chunk {cid} is corrupt in the block store"
    )


async def test_a_range_of_another_users_chunk_is_404(new_account: NewAccount) -> None:
    alice, bob = await new_account(), await new_account()
    async with alice.client() as a:
        [cid, _] = await upload(a, os.urandom(5000))
    part = await raw(bob.server, "GET", f"/chunks/{cid}", bob.token,
                     headers={"range": "bytes=0-99"})
    assert refused(part, 404, "not_found")["message"] == f"no chunk {cid}"


async def test_a_pack_of_small_chunks_is_stored_whole_and_counts_what_was_new(
    acct: Account,
) -> None:
    known = os.urandom(3000)
    fresh = [os.urandom(n) for n in (1, 4096, 200_000)] + [b"compressible " * 5000]
    async with acct.client() as c:
        await upload(c, known)
        pack = [(p.chunk_id(d), d) for d in [known, *fresh, fresh[0]]]  # a repeat too
        assert await c.put_chunks(pack) == len(fresh)
        assert await c.missing([cid for cid, _ in pack]) == []
        for cid, data in pack:
            assert await c.get_chunk(cid) == data
        assert await c.put_chunks(pack) == 0  # idempotent


async def test_a_pack_with_one_wrong_chunk_stores_nothing(acct: Account) -> None:
    good = [os.urandom(1000) for _ in range(3)]
    pack = [[p.chunk_id(d), d] for d in good]
    pack[1][1] = b"not what the id says"
    response = await raw(acct.server, "POST", "/chunks", acct.token, body={"chunks": pack})
    assert refused(response, 422, "hash_mismatch")["detail"] == {"index": 1}
    async with acct.client() as c:
        ids = [p.chunk_id(d) for d in good]
        assert await c.missing(ids) == ids


async def test_a_commit_carries_a_small_saves_content_in_one_request(acct: Account) -> None:
    data = os.urandom(5000)
    cid = p.chunk_id(data)
    async with acct.client() as c:
        answer = await c.commit(acct.root_ns, [create(p.ROOT_ID, "inline.txt", [[cid, 5000]])],
                                [(cid, data)])
        assert [r["rev"] for r in answer["results"]] == [answer["seq"]]
        assert (await entry_at(c, acct.root_ns, "/inline.txt"))["blocks"] == [[cid, 5000]]
        assert await c.missing([cid]) == []
        assert await c.get_chunk(cid) == data


async def test_a_commit_with_wrong_or_too_much_content_stores_and_changes_nothing(
    acct: Account,
) -> None:
    data = os.urandom(100)
    cid = p.chunk_id(data)
    halves = [os.urandom(p.MAX_INLINE_BYTES // 2 + 1) for _ in range(2)]
    cases: list[tuple[Any, int, str]] = [
        ([[cid, b"not what the id says"]], 422, "hash_mismatch"),
        ([[p.chunk_id(d), d] for d in halves], 400, "bad_request"),
        ("abc", 400, "bad_request"),
        ([], 400, "bad_request"),
    ]
    ops = [create(p.ROOT_ID, "never.txt", [[cid, 100]])]
    async with acct.client() as c, unchanged(c, acct.root_ns):
        for chunks, status, code in cases:
            response = await raw(acct.server, "POST", f"/ns/{acct.root_ns}/commit", acct.token,
                                 body={"ops": ops, "chunks": chunks})
            refused(response, status, code)
        ids = [cid, *(p.chunk_id(d) for d in halves)]
        assert await c.missing(ids) == ids


async def test_a_feed_of_a_few_changes_brings_small_files_other_devices_wrote(
    new_account: NewAccount,
) -> None:
    phone = await new_account()
    laptop = await new_account(phone.user, "laptop")
    small, large = os.urandom(3000), os.urandom(p.FEED_INLINE_BYTES + 1)
    blocks = {name: [p.chunk_id(d), len(d)] for name, d in (("small", small), ("large", large))}
    async with phone.client() as c, laptop.client() as lc:
        start = await head(c, phone.root_ns)
        for data in (small, large):
            await upload(c, data)
        await apply(c, phone.root_ns, *(create(p.ROOT_ID, f"{name}.bin", [block])
                                         for name, block in blocks.items()))
        seen = await lc.changes(laptop.root_ns, start)
        assert seen["chunks"] == [[blocks["small"][0], small]]  # the large one is fetched
        own = await c.changes(phone.root_ns, start)
        assert "chunks" not in own  # the writer holds it already
        many = [create(p.ROOT_ID, f"n{i}", [blocks["small"]])
                for i in range(p.FEED_INLINE_CHANGES)]
        await apply(c, phone.root_ns, *many)
        assert "chunks" not in await lc.changes(laptop.root_ns, start)  # a catch-up: none


async def held(server: Server, cid: str) -> bool:
    """Whether the server's block store holds the chunk, asked of the store itself."""
    blocks = open_block_store(server.stores.blocks, server.stores.data)
    try:
        return await blocks.has(cid)
    finally:
        await blocks.close()


def edited_chunk() -> tuple[bytes, bytes]:
    """A 1 MiB chunk and the same with one byte changed in the middle (flipped: a
    byte set to a constant would be the same one time in 256)."""
    base = os.urandom(1 << 20)
    mid = 1 << 19
    return base, base[:mid] + bytes([base[mid] ^ 0xFF]) + base[mid + 1 :]


async def test_a_chunk_sent_as_a_delta_is_rebuilt_and_stored_whole(acct: Account) -> None:
    base, target = edited_chunk()
    change = delta.encode(base, target)
    assert len(change) < 64 * 1024
    cid = p.chunk_id(target)
    async with acct.client() as c:
        [base_id, _] = await upload(c, base)
        assert await c.put_chunk_delta(cid, base_id, change) is True
        assert await c.missing([cid]) == []
        assert await c.get_chunk(cid) == target
        assert await c.put_chunk_delta(cid, base_id, change) is False  # idempotent


async def test_refused_deltas_are_4xx_and_store_nothing(
    acct: Account, new_account: NewAccount
) -> None:
    """A malformed delta (400), a base the user cannot read (404, as for GET) and a
    result that is not the id (422): each stores nothing."""
    base, target = edited_chunk()
    cid = p.chunk_id(target)
    good = delta.encode(base, target)
    other = await new_account()
    async with acct.client() as c, other.client() as o:
        [base_id, _] = await upload(c, base)
        [foreign, _] = await upload(o, os.urandom(1 << 20))  # another user's chunk
        cases = [
            (base_id, good[:-7], 400, "bad_delta"),
            (base_id, b"LD\x09" + good[3:], 400, "bad_delta"),
            (foreign, good, 404, "not_found"),
            (p.chunk_id(b"never stored"), good, 404, "not_found"),
            (base_id, delta.encode(base, target[:-1] + b"?"), 422, "hash_mismatch"),
        ]
        for against, change, status, code in cases:
            response = await raw(acct.server, "PUT", f"/chunks/{cid}/delta/{against}",
                                 acct.token, content=change)
            refused(response, status, code)
            assert await c.missing([cid]) == [cid], code
            assert not await held(acct.server, cid), code


async def test_malformed_or_oversized_packs_are_400_and_store_nothing(acct: Account) -> None:
    data = os.urandom(100)
    cid = p.chunk_id(data)
    big = [os.urandom(p.MAX_CHUNK) for _ in range(p.MAX_PACK_BYTES // p.MAX_CHUNK + 1)]
    bodies: list[Any] = [
        {},
        {"chunks": []},
        {"chunks": "abc"},
        {"chunks": [[cid]]},
        {"chunks": [[cid, "text, not bytes"]]},
        {"chunks": [[cid.upper(), data]]},
        {"chunks": [[p.chunk_id(b""), b""]]},
        {"chunks": [[cid, data]] * (p.MAX_PACK_CHUNKS + 1)},
        {"chunks": [[p.chunk_id(d), d] for d in big] + [[cid, data]]},
    ]
    for body in bodies:
        response = await raw(acct.server, "POST", "/chunks", acct.token, body=body)
        assert response.status_code in (400, 413), response.status_code
        refused(response, response.status_code, "bad_request" if response.status_code == 400
                else "too_large")
    async with acct.client() as c:
        assert await c.missing([cid]) == [cid]
    response = await raw(acct.server, "POST", "/chunks", None, body={"chunks": [[cid, data]]})
    refused(response, 401, "unauthorized")


async def test_missing_names_only_chunks_not_yet_uploaded(acct: Account) -> None:
    uploaded = [os.urandom(1000) for _ in range(3)]
    absent = [p.chunk_id(os.urandom(1000)) for _ in range(3)]
    async with acct.client() as c:
        ids = [(await upload(c, data))[0] for data in uploaded]
        asked = [absent[0], ids[0], ids[1], absent[1], ids[2], absent[2]]
        assert await c.missing(asked) == absent
        assert await c.missing(ids) == []
        assert await c.missing([]) == []


# --- chunk access control ------------------------------------------------------------


async def test_user_cannot_download_another_users_chunk(new_account: NewAccount) -> None:
    alice, bob = await new_account(), await new_account()
    data = os.urandom(5000)
    async with alice.client() as a:
        [cid, length] = await upload(a, data)
        await apply(a, alice.root_ns, create(p.ROOT_ID, "secret", [[cid, length]]))
    nothing = p.chunk_id(b"nothing")
    response = await raw(bob.server, "GET", f"/chunks/{cid}", bob.token)
    never = await raw(bob.server, "GET", f"/chunks/{nothing}", bob.token)
    # Indistinguishable from a chunk nobody ever uploaded.
    assert refused(response, 404, "not_found")["message"] == f"no chunk {cid}"
    assert refused(never, 404, "not_found")["message"] == f"no chunk {nothing}"
    async with alice.client() as a:
        assert await a.get_chunk(cid) == data


async def test_missing_tells_a_user_another_users_chunk_is_missing(new_account: NewAccount) -> None:
    alice, bob = await new_account(), await new_account()
    async with alice.client() as a, bob.client() as b:
        [cid, length] = await upload(a, os.urandom(5000))
        await apply(a, alice.root_ns, create(p.ROOT_ID, "secret", [[cid, length]]))
        assert await a.missing([cid]) == []
        assert await b.missing([cid]) == [cid]


async def test_commit_naming_another_users_chunk_without_uploading_is_412(
    new_account: NewAccount,
) -> None:
    alice, bob = await new_account(), await new_account()
    async with alice.client() as a, bob.client() as b:
        block = await upload(a, os.urandom(5000))
        await apply(a, alice.root_ns, create(p.ROOT_ID, "secret", [block]))
        async with unchanged(b, bob.root_ns):
            response = await commit_raw(
                bob.server, bob, bob.root_ns, [create(p.ROOT_ID, "stolen", [block])]
            )
            body = refused(response, 412, "missing_chunks")
            assert body["detail"]["missing"] == [block[0]]


async def test_upload_reports_a_chunk_another_user_holds_as_newly_stored(
    new_account: NewAccount,
) -> None:
    """The upload answer must not tell B that someone else already had these bytes."""
    alice, bob = await new_account(), await new_account()
    data = os.urandom(5000)
    cid = p.chunk_id(data)
    async with alice.client() as a:
        await upload(a, data)
    by_bob = await raw(bob.server, "PUT", f"/chunks/{cid}", bob.token, content=data)
    fresh = os.urandom(5000)
    by_bob_fresh = await raw(
        bob.server, "PUT", f"/chunks/{p.chunk_id(fresh)}", bob.token, content=fresh
    )
    assert (by_bob.status_code, p.decode(by_bob.content)) == (201, {"stored": True})
    assert (by_bob_fresh.status_code, p.decode(by_bob_fresh.content)) == (201, {"stored": True})


async def test_user_who_uploads_the_same_bytes_can_commit_and_read_them(
    new_account: NewAccount,
) -> None:
    alice, bob = await new_account(), await new_account()
    data = os.urandom(5000)
    async with alice.client() as a, bob.client() as b:
        block = await upload(a, data)
        await apply(a, alice.root_ns, create(p.ROOT_ID, "mine", [block]))
        assert await upload(b, data) == block
        await apply(b, bob.root_ns, create(p.ROOT_ID, "also mine", [block]))
        assert (await entry_at(b, bob.root_ns, "/also mine"))["blocks"] == [block]
        assert await b.get_chunk(block[0]) == data


# --- namespaces ----------------------------------------------------------------------


async def test_user_cannot_read_or_commit_to_another_users_namespace(
    new_account: NewAccount,
) -> None:
    alice, bob = await new_account(), await new_account()
    ns = alice.root_ns
    async with alice.client() as a, bob.client() as b:
        entry = mkdir(p.ROOT_ID, "private")
        [rev] = await apply(a, ns, entry)
        async with unchanged(a, ns):
            reads = [
                f"/ns/{ns}/tree",
                f"/ns/{ns}/tree?at=1",
                f"/ns/{ns}/changes?since=0",
                f"/ns/{ns}/lookup?path=/private",
                f"/ns/{ns}/entries/{entry['entry']}/versions",
            ]
            for path in reads:
                refused(await raw(bob.server, "GET", path, bob.token), 404, "not_found")
            for ops in ([mkdir(p.ROOT_ID, "intruder")], [delete(entry["entry"], rev)]):
                refused(await commit_raw(bob.server, bob, ns, ops), 404, "not_found")
            with pytest.raises(NotFound):
                await b.tree(ns)


async def test_another_users_namespace_looks_like_one_that_does_not_exist(
    new_account: NewAccount,
) -> None:
    alice, bob = await new_account(), await new_account()
    for ns in (alice.root_ns, 10**9):
        response = await raw(bob.server, "GET", f"/ns/{ns}/tree", bob.token)
        body = refused(response, 404, "not_found")
        assert body["message"] == f"no namespace {ns}"
    refused(await raw(bob.server, "GET", "/ns/abc/tree", bob.token), 404, "not_found")


# --- commit semantics ----------------------------------------------------------------

BAD_NAMES = {
    **dict.fromkeys(["a/b", "/", "a\0b", ".", "..", ""], "bad_request"),
    **dict.fromkeys(["x" * 256, "é" * 128], "name_too_long"),
}
"""Each refused name, with the code of its refusal."""


async def test_invalid_names_are_400_and_nothing_changes(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"data")
        [rev] = await apply(c, ns, create(p.ROOT_ID, "ok", [block], entry="f" * 32))
        async with unchanged(c, ns):
            for name, code in BAD_NAMES.items():
                for ops in (
                    [mkdir(p.ROOT_ID, name)],
                    [create(p.ROOT_ID, name, [block])],
                    [rename("f" * 32, rev, p.ROOT_ID, name)],
                ):
                    response = await commit_raw(server, acct, ns, ops)
                    assert response.status_code == 400, (name, ops[0]["op"])
                    refused(response, 400, code)


async def test_names_of_255_bytes_are_accepted(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        await apply(c, ns, mkdir(p.ROOT_ID, "x" * 255), mkdir(p.ROOT_ID, "é" * 127 + "x"))
        names = {e["name"] for e in (await c.tree(ns))["entries"]}
        assert {"x" * 255, "é" * 127 + "x"} <= names


async def test_create_over_an_existing_name_is_409_exists_with_the_current_entry(
    acct: Account,
) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"first")
        await apply(c, ns, create(p.ROOT_ID, "taken", [block]))
        current = await entry_at(c, ns, "/taken")
        other = await upload(c, b"second")
        async with unchanged(c, ns):
            for ops in ([create(p.ROOT_ID, "taken", [other])], [mkdir(p.ROOT_ID, "taken")]):
                body = refused(await commit_raw(server, acct, ns, ops), 409, "exists")
                assert body["detail"]["current"] == current
                assert body["detail"]["op"] == 0


async def test_update_with_a_stale_base_is_409_with_the_current_entry(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        v1, v2, v3 = [await upload(c, f"version {i}".encode()) for i in (1, 2, 3)]
        fid = p.new_id()
        [base] = await apply(c, ns, create(p.ROOT_ID, "doc", [v1], entry=fid))
        [now] = await apply(c, ns, update(fid, base, [v2]))
        current = await entry_at(c, ns, "/doc")
        assert current["rev"] == now
        async with unchanged(c, ns):
            body = refused(
                await commit_raw(server, acct, ns, [update(fid, base, [v3])]), 409, "conflict"
            )
        assert body["detail"]["current"] == current
        assert body["detail"]["op"] == 0
        assert (await entry_at(c, ns, "/doc"))["blocks"] == [v2]


async def test_operations_on_a_deleted_entry_are_409_with_no_current(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        fid = p.new_id()
        [rev] = await apply(c, ns, mkdir(p.ROOT_ID, "gone", entry=fid))
        await apply(c, ns, delete(fid, rev))
        async with unchanged(c, ns):
            for ops in ([delete(fid, rev + 1)], [rename(fid, rev + 1, p.ROOT_ID, "back")]):
                body = refused(await commit_raw(server, acct, ns, ops), 409, "conflict")
                assert body["detail"]["current"] is None


async def test_a_batch_with_a_failing_op_leaves_nothing_and_names_the_op(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        await apply(c, ns, mkdir(p.ROOT_ID, "taken"))
        ops = [mkdir(p.ROOT_ID, "one"), mkdir(p.ROOT_ID, "taken"), mkdir(p.ROOT_ID, "three")]
        async with unchanged(c, ns):
            body = refused(await commit_raw(server, acct, ns, ops), 409, "exists")
        assert body["detail"]["op"] == 1
        names = {e["name"] for e in (await c.tree(ns))["entries"]}
        assert "one" not in names
        assert "three" not in names
        # Nothing of the failed batch was recorded: its op ids are still free.
        ops[1] = {**ops[1], "name": "two"}
        assert len(await apply(c, ns, *ops)) == 3


async def test_failing_op_index_is_named_for_every_kind_of_failure(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        fid = p.new_id()
        [rev] = await apply(c, ns, mkdir(p.ROOT_ID, "d", entry=fid))
        cases = [
            (400, "bad_request", mkdir(p.ROOT_ID, "a/b")),
            (409, "conflict", delete(fid, rev + 100)),
            (412, "missing_chunks", create(p.ROOT_ID, "f", [[p.chunk_id(b"never"), 5]])),
            (404, "not_found", mkdir(p.new_id(), "orphan")),
        ]
        async with unchanged(c, ns):
            for status, code, failing in cases:
                ops = [mkdir(p.ROOT_ID, "x"), mkdir(p.ROOT_ID, "y"), failing]
                body = refused(await commit_raw(server, acct, ns, ops), status, code)
                assert body["detail"]["op"] == 2, code


async def test_block_list_naming_chunks_never_uploaded_is_412_with_the_missing_ids(
    acct: Account,
) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        have = await upload(c, b"uploaded")
        lost = [[p.chunk_id(os.urandom(64)), 64] for _ in range(3)]
        blocks = [lost[0], have, lost[1], lost[2], lost[0]]
        async with unchanged(c, ns):
            response = await commit_raw(server, acct, ns, [create(p.ROOT_ID, "f", blocks)])
            body = refused(response, 412, "missing_chunks")
        assert sorted(body["detail"]["missing"]) == sorted(str(b[0]) for b in lost)
        with pytest.raises(MissingChunks):
            await c.commit(ns, [create(p.ROOT_ID, "f", blocks)])


async def test_size_not_matching_the_block_lengths_is_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"twelve bytes")
        fid = p.new_id()
        [rev] = await apply(c, ns, create(p.ROOT_ID, "f", [block], entry=fid))
        async with unchanged(c, ns):
            for ops in (
                [{**create(p.ROOT_ID, "g", [block]), "size": 13}],
                [{**create(p.ROOT_ID, "g", [block]), "size": 0}],
                [{**update(fid, rev, [block, block]), "size": 12}],
                [create(p.ROOT_ID, "g", [[block[0], 11]])],  # length is not the chunk's
            ):
                refused(await commit_raw(server, acct, ns, ops), 400, "bad_request")


async def test_rename_into_itself_or_a_descendant_is_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        top, mid, low = p.new_id(), p.new_id(), p.new_id()
        revs = await apply(
            c, ns, mkdir(p.ROOT_ID, "top", top), mkdir(top, "mid", mid), mkdir(mid, "low", low)
        )
        async with unchanged(c, ns):
            for target in (top, mid, low):
                response = await commit_raw(server, acct, ns, [rename(top, revs[0], target, "x")])
                refused(response, 400, "bad_request")
            response = await commit_raw(server, acct, ns, [rename(mid, revs[1], low, "x")])
            refused(response, 400, "bad_request")


async def test_deleting_a_non_empty_directory_needs_recursive(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"inside")
        top, sub, deep, shallow = (p.new_id() for _ in range(4))
        [rev, *_] = await apply(
            c,
            ns,
            mkdir(p.ROOT_ID, "top", top),
            mkdir(top, "sub", sub),
            create(sub, "deep", [block], deep),
            create(top, "shallow", [block], shallow),
            mkdir(p.ROOT_ID, "bystander"),
        )
        async with unchanged(c, ns):
            response = await commit_raw(server, acct, ns, [delete(top, rev)])
            body = refused(response, 409, "not_empty")
        assert body["detail"]["current"]["id"] == top
        before = {e["id"] for e in (await c.tree(ns))["entries"]}
        await apply(c, ns, delete(top, rev, recursive=True))
        after = {e["id"] for e in (await c.tree(ns))["entries"]}
        assert before - after == {top, sub, deep, shallow}
        assert after < before
        with pytest.raises(NotFound):
            await c.lookup(ns, "/top")


async def test_recursive_delete_journals_every_entry_of_the_subtree(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        top, sub, f1, f2 = (p.new_id() for _ in range(4))
        block = await upload(c, b"x")
        [rev, *_] = await apply(
            c,
            ns,
            mkdir(p.ROOT_ID, "top", top),
            mkdir(top, "sub", sub),
            create(sub, "f1", [block], f1),
            create(top, "f2", [block], f2),
        )
        cursor = await head(c, ns)
        await apply(c, ns, delete(top, rev, recursive=True))
        records = (await c.changes(ns, cursor))["changes"]
        assert {r["id"] for r in records} == {top, sub, f1, f2}
        assert all(r["deleted"] for r in records)
        assert {e["id"] for e in (await c.tree(ns))["entries"]} == {p.ROOT_ID}


async def test_rename_over_an_existing_name_needs_replace(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        old, new = await upload(c, b"old content"), await upload(c, b"new content")
        src, dst = p.new_id(), p.new_id()
        src_rev, dst_rev = await apply(
            c, ns, create(p.ROOT_ID, "draft", [new], src), create(p.ROOT_ID, "final", [old], dst)
        )
        target = await entry_at(c, ns, "/final")
        async with unchanged(c, ns):
            plain = rename(src, src_rev, p.ROOT_ID, "final")
            body = refused(await commit_raw(server, acct, ns, [plain]), 409, "exists")
            assert body["detail"]["current"] == target
            stale = rename(src, src_rev, p.ROOT_ID, "final", {"entry": dst, "base": dst_rev - 1})
            body = refused(await commit_raw(server, acct, ns, [stale]), 409, "conflict")
            assert body["detail"]["current"] == target
        replacing = rename(src, src_rev, p.ROOT_ID, "final", {"entry": dst, "base": dst_rev})
        await apply(c, ns, replacing)
        final = await entry_at(c, ns, "/final")
        assert (final["id"], final["blocks"]) == (src, [new])
        with pytest.raises(NotFound):
            await c.lookup(ns, "/draft")
        assert dst not in {e["id"] for e in (await c.tree(ns))["entries"]}


async def test_rename_keeps_the_entry_id_and_content(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"moving")
        fid, dir_id = p.new_id(), p.new_id()
        [rev, _] = await apply(
            c, ns, create(p.ROOT_ID, "a", [block], fid), mkdir(p.ROOT_ID, "dir", dir_id)
        )
        await apply(c, ns, rename(fid, rev, dir_id, "b"))
        moved = await entry_at(c, ns, "/dir/b")
        assert (moved["id"], moved["parent"], moved["blocks"]) == (fid, dir_id, [block])


# --- exactly once --------------------------------------------------------------------


async def test_the_same_commit_sent_twice_applies_once(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"once")
        ops = [mkdir(p.ROOT_ID, "d"), create(p.ROOT_ID, "f", [block])]
        start = await head(c, ns)
        first = await c.commit(ns, ops)
        after_first = await c.tree(ns)
        second = await c.commit(ns, ops)
        assert after_first["seq"] == start + 2
        assert await c.tree(ns) == after_first
        assert "replayed" not in first
        assert second["replayed"] is True
        assert second["results"] == first["results"]
        assert second["seq"] == first["seq"]
        assert len((await c.changes(ns, start))["changes"]) == 2


async def test_a_commit_reusing_only_some_op_ids_is_400(acct: Account) -> None:
    server, ns = acct.server, acct.root_ns
    async with acct.client() as c:
        done = mkdir(p.ROOT_ID, "done")
        await apply(c, ns, done)
        async with unchanged(c, ns):
            response = await commit_raw(server, acct, ns, [done, mkdir(p.ROOT_ID, "fresh")])
            refused(response, 400, "bad_request")


# --- concurrency ---------------------------------------------------------------------


async def _race(
    ns: int, fid: str, base: int, contenders: dict[str, tuple[Client, Block]]
) -> dict[str, Any]:
    """Send one update per contender, all released at the same moment; their outcomes."""
    outcomes: dict[str, Any] = {}
    go = trio.Event()

    async def attempt(who: str) -> None:
        c, block = contenders[who]
        await go.wait()
        try:
            outcomes[who] = await c.commit(ns, [update(fid, base, [block])])
        except LoftError as err:
            outcomes[who] = err

    async with trio.open_nursery() as nursery:
        for who in contenders:
            nursery.start_soon(attempt, who)
        await trio.sleep(0.01)
        go.set()
    return outcomes


async def test_concurrent_updates_from_one_base_have_exactly_one_winner(
    acct: Account, new_account: NewAccount
) -> None:
    other = await new_account(acct.user, "other")
    ns = acct.root_ns
    async with acct.client() as c1, other.client() as c2:
        fid = p.new_id()
        [base] = await apply(c1, ns, create(p.ROOT_ID, "contested", [await upload(c1, b"v0")], fid))
        for round_ in range(10):
            contenders = {
                "one": (c1, await upload(c1, f"round {round_} by one".encode())),
                "two": (c2, await upload(c2, f"round {round_} by two".encode())),
            }
            outcomes = await _race(ns, fid, base, contenders)
            winners = [w for w, o in outcomes.items() if isinstance(o, dict)]
            losers = [w for w, o in outcomes.items() if isinstance(o, LoftError)]
            assert len(winners) == 1, outcomes
            assert len(losers) == 1, outcomes
            won_rev = outcomes[winners[0]]["results"][0]["rev"]
            won_blocks = [contenders[winners[0]][1]]
            err = outcomes[losers[0]]
            assert type(err) is Conflict  # a stale base, not a name taken (Exists)
            assert err.detail["current"]["rev"] == won_rev
            assert err.detail["current"]["blocks"] == won_blocks
            now = await entry_at(c1, ns, "/contested")
            assert (now["rev"], now["blocks"]) == (won_rev, won_blocks)
            assert await head(c1, ns) == won_rev
            base = won_rev


# --- the changes feed ----------------------------------------------------------------


async def test_changes_since_a_cursor_are_exactly_the_later_records_in_order(
    acct: Account,
) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        block = await upload(c, b"journal")
        start = await head(c, ns)
        d, f = p.new_id(), p.new_id()
        r1, r2 = await apply(c, ns, mkdir(p.ROOT_ID, "d", d), create(d, "f", [block], f))
        [r3] = await apply(c, ns, rename(f, r2, p.ROOT_ID, "g"))
        [r4] = await apply(c, ns, delete(d, r1))
        everything = await c.changes(ns, start)
        revs = [r["rev"] for r in everything["changes"]]
        assert revs == [r1, r2, r3, r4]
        assert all(a < b for a, b in itertools.pairwise(revs))
        assert (everything["head"], everything["cursor"]) == (r4, r4)
        assert [(r["id"], r["name"], r["deleted"]) for r in everything["changes"]] == [
            (d, "d", False),
            (f, "f", False),
            (f, "g", False),
            (d, "d", True),
        ]
        later = await c.changes(ns, r2)
        assert later["changes"] == everything["changes"][2:]
        assert (later["head"], later["cursor"]) == (r4, r4)
        nothing = await c.changes(ns, r4)
        assert (nothing["changes"], nothing["cursor"], nothing["head"]) == ([], r4, r4)
        page = await c.changes(ns, start, limit=2)
        assert [r["rev"] for r in page["changes"]] == [r1, r2]
        assert (page["cursor"], page["head"]) == (r2, r4)
        rest = await c.changes(ns, page["cursor"], limit=2)
        assert [r["rev"] for r in rest["changes"]] == [r3, r4]


async def test_long_poll_returns_soon_after_a_commit_with_the_change(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        cursor = await head(c, ns)
        answer: dict[str, Any] = {}

        async def poll() -> None:
            answer["body"] = await c.changes(ns, cursor, wait=30)
            answer["at"] = time.monotonic()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.5)
            assert not answer, "the long-poll answered before anything changed"
            committed = time.monotonic()
            entry = mkdir(p.ROOT_ID, "awaited")
            [rev] = await apply(c, ns, entry)
        # Woken by the commit, not by the end of its 30 s wait (generous: a loaded
        # machine may be slow, but not that slow).
        assert answer["at"] - committed < 15
        assert [(r["id"], r["rev"]) for r in answer["body"]["changes"]] == [(entry["entry"], rev)]
        assert answer["body"]["cursor"] == rev


async def test_long_poll_with_no_change_returns_empty_after_the_wait(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        cursor = await head(c, ns)
        started = time.monotonic()
        answer = await c.changes(ns, cursor, wait=1)
        took = time.monotonic() - started
    assert answer["changes"] == []
    assert (answer["cursor"], answer["head"]) == (cursor, cursor)
    assert took >= 0.9  # it did wait for a change before answering empty


async def test_long_poll_does_not_wake_for_another_namespace(new_account: NewAccount) -> None:
    alice, bob = await new_account(), await new_account()
    async with alice.client() as a, bob.client() as b:
        cursor = await head(a, alice.root_ns)
        started = time.monotonic()
        async with trio.open_nursery() as nursery:

            async def poll() -> None:
                answer = await a.changes(alice.root_ns, cursor, wait=2)
                assert answer["changes"] == []

            nursery.start_soon(poll)
            await trio.sleep(0.3)
            await apply(b, bob.root_ns, mkdir(p.ROOT_ID, "elsewhere"))
        assert time.monotonic() - started >= 1.9


# --- the past ------------------------------------------------------------------------


async def test_tree_at_a_past_seq_shows_the_tree_as_it_was(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        one, two = await upload(c, b"one"), await upload(c, b"two")
        doomed, moved, changed, d = (p.new_id() for _ in range(4))
        await apply(
            c,
            ns,
            mkdir(p.ROOT_ID, "d", d),
            create(d, "doomed", [one], doomed),
            create(p.ROOT_ID, "old name", [one], moved),
            create(p.ROOT_ID, "changed", [one], changed),
        )
        then = await c.tree(ns)
        at = then["seq"]
        revs = {e["id"]: e["rev"] for e in then["entries"]}
        await apply(
            c,
            ns,
            delete(doomed, revs[doomed]),
            rename(moved, revs[moved], d, "new name"),
            update(changed, revs[changed], [two]),
            mkdir(p.ROOT_ID, "later"),
        )
        past = await c.tree(ns, at=at)
        assert past == then
        by_name = {e["name"]: e for e in past["entries"]}
        assert by_name["doomed"]["id"] == doomed
        assert (by_name["old name"]["id"], by_name["old name"]["parent"]) == (moved, p.ROOT_ID)
        assert by_name["changed"]["blocks"] == [one]
        assert "later" not in by_name
        assert "new name" not in by_name
        now = {e["name"]: e for e in (await c.tree(ns))["entries"]}
        assert "doomed" not in now
        assert "old name" not in now
        assert now["new name"]["id"] == moved
        assert now["changed"]["blocks"] == [two]


async def test_tree_at_zero_is_the_empty_root(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        await apply(c, ns, mkdir(p.ROOT_ID, "something"))
        past = await c.tree(ns, at=0)
        assert past["seq"] == 0
        assert [e["id"] for e in past["entries"]] == [p.ROOT_ID]


async def test_versions_lists_every_version_of_an_entry(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        v1, v2 = await upload(c, b"v1"), await upload(c, b"version two")
        fid, d = p.new_id(), p.new_id()
        r_dir, r1 = await apply(c, ns, mkdir(p.ROOT_ID, "d", d), create(p.ROOT_ID, "a", [v1], fid))
        [r2] = await apply(c, ns, update(fid, r1, [v2]))
        [r3] = await apply(c, ns, op("setattr", entry=fid, base=r2, mode=0o600))
        [r4] = await apply(c, ns, rename(fid, r3, d, "b"))
        [r5] = await apply(c, ns, delete(fid, r4))
        await apply(c, ns, mkdir(p.ROOT_ID, "unrelated"))
        versions = await c.versions(ns, fid)
    assert [v["rev"] for v in versions] == [r1, r2, r3, r4, r5]
    assert [v["name"] for v in versions] == ["a", "a", "a", "b", "b"]
    assert [v["parent"] for v in versions] == [p.ROOT_ID] * 3 + [d, d]
    assert [v["blocks"] for v in versions] == [[v1]] + [[v2]] * 4
    assert [v["size"] for v in versions] == [2] + [len(b"version two")] * 4
    assert [v["mode"] for v in versions] == [0o644, 0o644, 0o600, 0o600, 0o600]
    assert [v["deleted"] for v in versions] == [False] * 4 + [True]
    assert all(v["device"] == "dev" and isinstance(v["committed"], int) for v in versions)
    assert r_dir < r1


async def test_versions_of_an_unknown_entry_is_empty(acct: Account) -> None:
    async with acct.client() as c:
        assert await c.versions(acct.root_ns, p.new_id()) == []


async def test_whoami_and_a_fresh_namespace(acct: Account) -> None:
    async with acct.client() as c:
        me = await c.whoami()
        tree = await c.tree(acct.root_ns)
    assert (me["user"], me["root_ns"]) == (acct.user, acct.root_ns)
    assert me["namespaces"] == [{"ns": acct.root_ns, "role": "owner", "head": 0}]
    assert tree["seq"] == 0
    [root] = tree["entries"]
    assert (root["id"], root["kind"], root["parent"], root["name"]) == (p.ROOT_ID, "dir", "", "")


async def test_unauthorized_is_raised_by_the_client_for_a_bad_token(server: Server) -> None:
    async with server.client("loft_" + os.urandom(16).hex()) as c:
        with pytest.raises(Unauthorized):
            await c.whoami()


async def test_lookup_pages_a_large_folder_by_name(acct: Account) -> None:
    ns = acct.root_ns
    async with acct.client() as c:
        names = [f"n{i:02d}" for i in range(7)]
        await c.commit(ns, [mkdir(p.ROOT_ID, name) for name in reversed(names)])
        first = await c.call("GET", f"/ns/{ns}/lookup",
                             params={"path": "/", "children": "1", "limit": 3})
        assert [e["name"] for e in first["children"]] == names[:3]
        assert first["next"] == "n02"
        last = await c.call("GET", f"/ns/{ns}/lookup", params={
            "path": "/", "children": "1", "limit": 3, "after": "n05"})
        assert ([e["name"] for e in last["children"]], last["next"]) == (["n06"], None)
        whole = await c.lookup(ns, "/", children=True)  # the client reads every page
        assert [e["name"] for e in whole["children"]] == names
