"""Storage quotas: uploads and commits refused over quota change nothing, a chunk
already counted is free, ``loft user quota`` and ``loft status`` speak the figures,
and a mount over quota keeps its changes in the journal until there is room.

The API cases run on every back end (``server``); the command line and the mount on
the embedded default (``mount_server``). The servers are checked with ``loft fsck``
after the module, which proves each kept storage total against the rows it counts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from backend import protocol as p
from backend.client import Client
from backend.server import quota
from backend.server.auth import hash_password
from backend.server.main import open_metadata
from backend.server.metadata import MetadataStore
from tests.conftest import PASSWORD, NewMount, Server, free_port, loft, login
from tests.devices import drained, server_tree, status, write_random
from tests.polling import pending
from tests.test_api import (
    Account,
    create,
    held,
    mkdir,
    raw,
    refused,
    unchanged,
    upload,
)

KIB = 1024
_names = itertools.count()


@pytest.fixture(scope="module")
def store(server: Server) -> Iterator[MetadataStore]:
    with open_metadata(server.stores.metadata, server.stores.data) as metadata:
        yield metadata


async def account(server: Server, store: MetadataStore, limit: int | None) -> Account:
    """A fresh user with quota ``limit``, added in-process as ``loft user add`` does."""
    user = f"q{os.getpid()}n{next(_names)}"
    pw_hash = await trio.to_thread.run_sync(hash_password, PASSWORD)
    await trio.to_thread.run_sync(store.add_user_sync, user, pw_hash, limit)
    async with server.client() as anonymous:
        answer = await anonymous.login(user, PASSWORD, "dev")
    return Account(server, user, answer["token"], answer["root_ns"], "dev")


async def storage(c: Client) -> tuple[int, int | None]:
    me = await c.whoami()
    return int(me["usage"]), me["quota"]


async def test_an_upload_over_quota_is_refused_and_nothing_is_stored(
    server: Server, store: MetadataStore
) -> None:
    acct = await account(server, store, 100 * KIB)
    first, second, third = (os.urandom(60 * KIB) for _ in range(3))
    async with acct.client() as c:
        await upload(c, first)
        answer = await raw(
            server, "PUT", f"/chunks/{p.chunk_id(second)}", acct.token, content=second
        )
        body = refused(answer, 507, "quota_exceeded")
        assert body["message"] == "over quota: 120.0 KiB used of 100.0 KiB"
        pack = {"chunks": [[p.chunk_id(d), d] for d in (second, third)]}
        refused(await raw(server, "POST", "/chunks", acct.token, body=pack), 507, "quota_exceeded")
        assert await storage(c) == (60 * KIB, 100 * KIB)
        wanted = [p.chunk_id(d) for d in (second, third)]
        assert await c.missing(wanted) == wanted
        for cid in wanted:
            assert not await held(server, cid)


async def test_a_chunk_already_counted_uploads_free_at_the_limit(
    server: Server, store: MetadataStore
) -> None:
    acct = await account(server, store, 64 * KIB)
    other = await account(server, store, None)
    data, theirs = os.urandom(64 * KIB), os.urandom(32 * KIB)
    async with acct.client() as c, other.client() as o:
        block = await upload(c, data)
        await c.commit(acct.root_ns, [create(p.ROOT_ID, "full.bin", [block])])
        assert await storage(c) == (64 * KIB, 64 * KIB)
        assert not await c.put_chunk(block[0], data)  # dedup: already theirs
        shared = await upload(o, theirs)
        await o.commit(other.root_ns, [create(p.ROOT_ID, "theirs.bin", [shared])])
        assert await c.put_chunk(shared[0], theirs)  # new to them, but another's file holds it
        assert await storage(c) == (64 * KIB, 64 * KIB)


async def test_a_commit_over_quota_is_refused_and_changes_nothing(
    server: Server, store: MetadataStore
) -> None:
    acct = await account(server, store, 100 * KIB)
    other = await account(server, store, None)
    big = os.urandom(150 * KIB)
    async with acct.client() as c, other.client() as o:
        block = await upload(o, big)
        await o.commit(other.root_ns, [create(p.ROOT_ID, "big.bin", [block])])
        await c.put_chunk(block[0], big)  # free: a namespace names it already
        async with unchanged(c, acct.root_ns):
            answer = await raw(
                server, "POST", f"/ns/{acct.root_ns}/commit", acct.token,
                body={"ops": [create(p.ROOT_ID, "big.bin", [block])]},
            )
            body = refused(answer, 507, "quota_exceeded")
            assert body["message"] == "over quota: 150.0 KiB used of 100.0 KiB"
        assert await storage(c) == (0, 100 * KIB)
        await c.commit(acct.root_ns, [mkdir(p.ROOT_ID, "adds-nothing")])
        await trio.to_thread.run_sync(_set_limit, store, acct.user, 200 * KIB)
        await c.commit(acct.root_ns, [create(p.ROOT_ID, "big.bin", [block])])
        assert await storage(c) == (150 * KIB, 200 * KIB)
        assert await storage(o) == (150 * KIB, None)


def _set_limit(store: MetadataStore, user: str, limit: int | None) -> None:
    with store.db.transaction() as tx:
        quota.set_limit(tx, user, limit)


# --- the command line and the mount (embedded default) -------------------------------


def storage_line(text: str) -> str:
    match = re.search(r"^storage: +(.*)$", text, re.M)
    assert match, text
    return match.group(1)


def test_loft_user_quota_changes_and_removes_it(mount_server: Server, tmp_path: Path) -> None:
    name = f"cliq{os.getpid()}n{next(_names)}"
    stores = mount_server.stores.args()
    added = loft("user", "add", name, *stores, "--quota", "1M")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"user {name} added, quota 1.0 MiB"
    device = login(mount_server, name, tmp_path, "dev")
    assert storage_line(device.run("status").stdout) == "0 B of 1.0 MiB"
    changed = loft("user", "quota", name, "10G", *stores)
    assert changed.stdout.strip() == f"user {name}: quota 10.0 GiB (0 B used)", changed.stderr
    assert storage_line(device.run("status").stdout) == "0 B of 10.0 GiB"
    removed = loft("user", "quota", name, "none", *stores)
    assert removed.stdout.strip() == f"user {name}: no quota (0 B used)", removed.stderr
    assert storage_line(device.run("status").stdout) == "0 B, no quota"
    away = json.loads((device.home / "device.json").read_text())
    away["server"] = f"http://127.0.0.1:{free_port()}"
    (device.home / "device.json").write_text(json.dumps(away))
    assert storage_line(device.run("status").stdout) == "unknown (the server is not reachable)"


@pytest.mark.parametrize(
    "argv",
    [
        ("quota", "{name}", "lots"),
        ("add", "{name}x", "--quota=-5M"),
        ("quota", "{name}", "1e999G"),
        ("quota", "nobody-here", "1G"),
        ("add", "{name}x", "--quota", "12Q"),
    ],
)
def test_bad_quota_arguments_give_one_line_and_exit_1(
    mount_server: Server, argv: tuple[str, ...]
) -> None:
    name = f"badq{os.getpid()}n{next(_names)}"
    mount_server.add_user(name)
    args = [a.format(name=name) for a in argv]
    result = loft("user", *args, *mount_server.stores.args())
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("loft: "), result.stderr
    assert loft("user", "add", f"{name}x", *mount_server.stores.args()).returncode == 0


def test_a_mount_over_quota_keeps_its_changes_until_the_quota_is_raised(
    mount_server: Server, new_mount: NewMount, tmp_path: Path
) -> None:
    name = f"mntq{os.getpid()}n{next(_names)}"
    added = loft("user", "add", name, *mount_server.stores.args(), "--quota", "256K")
    assert added.returncode == 0, added.stderr
    mount = new_mount(name)
    digest = write_random(mount.path / "big.bin", 1 << 20)
    text = status(mount, lambda t: "over quota" in t)
    before = pending(text)
    assert re.search(r"^sync: +over quota: .* used of 256\.0 KiB; changes wait in the journal$",
                     text, re.M), text
    (mount.path / "small.txt").write_bytes(b"wakes the uploader: refused again")
    status(mount, lambda t: "over quota" in t and pending(t) > before)
    log = (mount.device.home / "mount.log").read_text()
    assert log.count("changes wait in the journal") == 1, log
    assert "big.bin" not in server_tree(mount.device)
    raised = loft("user", "quota", name, "10M", *mount_server.stores.args())
    assert raised.returncode == 0, raised.stderr
    (mount.path / "wake.txt").write_bytes(b"a new change: try again now")
    text = drained(mount)
    assert "over quota" not in text
    assert storage_line(text).endswith(" of 10.0 MiB")
    assert hashlib.sha256(server_tree(mount.device)["big.bin"]).hexdigest() == digest
