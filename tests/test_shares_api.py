"""Shared folders over the HTTP API, on every back end: who may do what on a shared
namespace (owner, editor, viewer, non-member, removed member), the refusals of
``/v1/shares``, and how a member's root namespace shows and reaches the shared folder.

Each call goes through ``backend.client.Client`` with the caller's token, straight to
the server; a refusal is asserted by its exact error class, and with the state it must
not have changed (the shared namespace's tree and head, its members, its snapshots,
the caller's root head). Users are added in-process and logged in over ``/v1/login``,
as ``tests/test_api.py`` does.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from backend import cursor
from backend import protocol as p
from backend.client import Client, History
from backend.errors import BadRequest, CrossShare, Forbidden, LoftError, NotFound, QuotaExceeded
from backend.server.auth import hash_password
from backend.server.main import open_metadata
from backend.server.metadata import MetadataStore
from tests.conftest import PASSWORD, Server
from tests.test_api import Account, create, delete, mkdir, rename, upload

KIB = 1024
_names = itertools.count()
_hashes: list[str] = []


@pytest.fixture(scope="module")
def store(server: Server) -> Iterator[MetadataStore]:
    with open_metadata(server.stores.metadata, server.stores.data) as metadata:
        yield metadata


@dataclass
class Users:
    server: Server
    store: MetadataStore

    async def add(self, limit: int | None = None) -> str:
        """A fresh user (quota ``limit``), not logged in."""
        name = f"sh{os.getpid()}n{next(_names)}"
        if not _hashes:
            _hashes.append(await trio.to_thread.run_sync(hash_password, PASSWORD))
        await trio.to_thread.run_sync(self.store.add_user_sync, name, _hashes[0], limit)
        return name

    async def login(self, limit: int | None = None) -> Account:
        user = await self.add(limit)
        async with self.server.client() as anonymous:
            answer = await anonymous.login(user, PASSWORD, "dev")
        return Account(self.server, user, answer["token"], answer["root_ns"], "dev")


@pytest.fixture
def users(server: Server, store: MetadataStore) -> Users:
    return Users(server, store)


@dataclass
class Shared:
    """The owner's ``/proj`` (``f.txt`` and ``sub/``), shared as namespace ``ns``."""

    owner: Account
    ns: int
    folder: str  # the folder's id: the owner's mount
    file: str
    data: bytes


async def shared(users: Users, size: int = 3000, limit: int | None = None) -> Shared:
    """``/proj`` of a fresh owner, shared with a fresh viewer (so the namespace exists)."""
    owner, data = await users.login(limit), os.urandom(size)
    folder = mkdir(p.ROOT_ID, "proj")
    async with owner.client() as c:
        f = create(folder["entry"], "f.txt", [await upload(c, data)])
        await c.commit(owner.root_ns, [folder, mkdir(folder["entry"], "sub"), f])
        ns = (await c.share("/proj", await users.add(), "viewer"))["ns"]
    return Shared(owner, ns, folder["entry"], f["entry"], data)


async def join(s: Shared, member: Account, role: str) -> None:
    async with s.owner.client() as c:
        assert await c.share("/proj", member.user, role) == {
            "ns": s.ns, "user": member.user, "role": role}


async def outcome(call: Awaitable[Any]) -> type[LoftError] | None:
    """The class of the error ``call`` raised; None if it succeeded."""
    try:
        await call
    except LoftError as err:
        return type(err)
    return None


async def head(c: Client, ns: int) -> Any:
    return (await c.changes(ns, 0, limit=1))["head"]


async def mount_of(c: Client, root: int, name: str = "proj") -> dict[str, Any]:
    entry: dict[str, Any] = (await c.lookup(root, f"/{name}"))["entry"]
    return entry


# --- the authorization matrix ------------------------------------------------------

ROLES = ("owner", "editor", "viewer", "non-member", "removed")
OK = None
Route = Callable[[Client, Shared, str], Awaitable[Any]]


async def _chunk(c: Client, s: Shared, _: str) -> None:
    assert await c.get_chunk(p.chunk_id(s.data)) == s.data


async def _tree(c: Client, s: Shared, _: str) -> None:
    assert s.file in {e["id"] for e in (await c.tree(s.ns))["entries"]}


ROUTES: dict[str, tuple[Route, tuple[type[LoftError] | None, ...]]] = {
    # route: (call, expected for owner, editor, viewer, non-member, removed)
    "GET tree": (_tree, (OK, OK, OK, NotFound, NotFound)),
    "GET changes": (lambda c, s, _: c.changes(s.ns, 0), (OK, OK, OK, NotFound, NotFound)),
    "GET lookup": (lambda c, s, _: c.lookup(s.ns, "/f.txt"), (OK, OK, OK, NotFound, NotFound)),
    "GET versions": (lambda c, s, _: c.versions(s.ns, s.file), (OK, OK, OK, NotFound, NotFound)),
    "GET past": (lambda c, s, _: History(c, s.ns).past(at=10**9, path="/f.txt"),
                 (OK, OK, OK, NotFound, NotFound)),
    "GET place": (lambda c, s, _: History(c, s.ns).place(p.ROOT_ID, "f.txt"),
                  (OK, OK, OK, NotFound, NotFound)),
    "GET snapshots": (lambda c, s, _: History(c, s.ns).snapshots(),
                      (OK, OK, OK, NotFound, NotFound)),
    "POST snapshots": (lambda c, s, t: History(c, s.ns).snapshot(f"snap-{t}"),
                       (OK, OK, Forbidden, NotFound, NotFound)),
    "POST commit": (lambda c, s, t: c.commit(s.ns, [mkdir(p.ROOT_ID, f"dir-{t}")]),
                    (OK, OK, Forbidden, NotFound, NotFound)),
    "GET chunk": (_chunk, (OK, OK, OK, NotFound, NotFound)),
    "POST shares": (lambda c, s, t: c.share("/proj", t, "viewer"),
                    (OK, OK, Forbidden, NotFound, NotFound)),
    "POST shares/remove": (lambda c, s, t: c.unshare("/proj", t),
                           (OK, OK, Forbidden, NotFound, NotFound)),
    "POST shares/leave": (lambda c, s, _: c.leave("/proj"),
                          (Forbidden, OK, OK, NotFound, NotFound)),
}


async def state(s: Shared, caller: Account) -> tuple[Any, ...]:
    """What a refused request must leave as it was."""
    async with s.owner.client() as o, caller.client() as c:
        return (await head(o, s.ns), await o.tree(s.ns), await o.shares(),
                await History(o, s.ns).snapshots(), await head(c, caller.root_ns))


@pytest.mark.parametrize("role", ROLES)
async def test_each_route_on_a_shared_namespace_answers_by_role(users: Users, role: str) -> None:
    s = await shared(users)
    caller = s.owner if role == "owner" else await users.login()
    if role in ("editor", "viewer"):
        await join(s, caller, role)
    elif role == "removed":
        await join(s, caller, "editor")
        async with s.owner.client() as o:
            assert await o.unshare("/proj", caller.user) == {"ns": s.ns, "removed": [caller.user]}
    target = await users.add()  # whom the caller shares with, then removes
    wrong: list[str] = []
    async with caller.client() as c:
        for name, (call, expected) in ROUTES.items():
            before = await state(s, caller)
            got = await outcome(call(c, s, target))
            want = expected[ROLES.index(role)]
            if got is not want:
                wrong.append(f"{role}: {name} answered {got and got.__name__}, not"
                             f" {want and want.__name__}")
            if got is not None:
                assert await state(s, caller) == before, f"{role}: refused {name} changed state"
    assert not wrong, "\n".join(wrong)


async def test_a_removed_member_is_refused_at_once_and_their_feed_drops_the_folder(
    users: Users,
) -> None:
    s, bob = await shared(users), await users.login()
    await join(s, bob, "editor")
    async with bob.client() as b, s.owner.client() as o:
        assert await b.get_chunk(p.chunk_id(s.data)) == s.data
        cursor = (await b.changes(bob.root_ns, 0))["cursor"]
        mount = await mount_of(b, bob.root_ns)
        await o.unshare("/proj", bob.user)
        for call in (b.tree(s.ns), b.changes(s.ns, 0), b.get_chunk(p.chunk_id(s.data)),
                     b.commit(s.ns, [mkdir(p.ROOT_ID, "late")]), b.lookup(bob.root_ns, "/proj"),
                     b.commit(bob.root_ns, [mkdir(mount["id"], "late")])):
            assert await outcome(call) is NotFound
        feed = await b.changes(bob.root_ns, cursor)
        assert [(r["id"], r.get("deleted")) for r in feed["changes"]] == [(mount["id"], True)]
        assert feed["cursor"] == feed["head"]
        assert isinstance(feed["cursor"], int), "no shared folder left: a plain position"
        assert "late" not in {e["name"] for e in (await o.tree(s.ns))["entries"]}


async def test_a_non_member_cannot_reach_shared_entries_by_id_through_their_root(
    users: Users,
) -> None:
    s, dave = await shared(users), await users.login()
    cid = p.chunk_id(s.data)
    async with dave.client() as d, s.owner.client() as o:
        before = await head(o, s.ns)
        assert await d.missing([cid]) == [cid]
        assert await outcome(d.get_chunk(cid)) is NotFound
        assert await outcome(d.commit(dave.root_ns, [mkdir(s.folder, "in")])) is NotFound
        with pytest.raises(LoftError) as moved:
            await d.commit(dave.root_ns, [rename(s.file, 1, p.ROOT_ID, "took.txt")])
        assert moved.value.code == "conflict"
        assert moved.value.detail == {"op": 0, "current": None}, "leaks the owner's entry"
        assert await d.shares() == []
        assert await head(o, s.ns) == before


# --- refusals of /v1/shares ----------------------------------------------------------


async def test_nested_shares_are_refused(users: Users) -> None:
    s, bob, carol = await shared(users), await users.login(), await users.add()
    await join(s, bob, "editor")
    outer, inner = mkdir(p.ROOT_ID, "outer"), mkdir(p.ROOT_ID, "box")
    async with s.owner.client() as o, bob.client() as b:
        await o.commit(s.owner.root_ns, [outer, mkdir(outer["entry"], "inner")])
        await o.share("/outer/inner", bob.user, "viewer")
        await b.commit(bob.root_ns, [inner])
        mount = await mount_of(b, bob.root_ns)
        await b.commit(bob.root_ns, [rename(mount["id"], mount["rev"], inner["entry"], "proj")])
        heads = [await head(o, s.owner.root_ns), await head(b, bob.root_ns), await head(o, s.ns)]
        for c, path in ((o, "/proj/sub"), (b, "/box/proj/sub"), (o, "/outer"), (b, "/box")):
            assert await outcome(c.share(path, carol, "editor")) is BadRequest, path
        assert [await head(o, s.owner.root_ns), await head(b, bob.root_ns),
                await head(o, s.ns)] == heads
        assert len(await o.shares()) == 2


async def test_sharing_with_nobody_oneself_or_the_owner_or_of_the_root_or_a_file_is_refused(
    users: Users,
) -> None:
    s, bob = await shared(users), await users.login()
    await join(s, bob, "editor")
    async with s.owner.client() as o, bob.client() as b:
        await o.commit(s.owner.root_ns, [create(p.ROOT_ID, "note.txt")])
        before = (await o.tree(s.owner.root_ns), await o.shares())
        refusals: list[tuple[Awaitable[Any], type[LoftError]]] = [
            (o.share("/proj", f"nobody-{p.new_id()}", "editor"), NotFound),
            (o.share("/proj", s.owner.user, "editor"), BadRequest),
            (o.share("/", bob.user, "editor"), BadRequest),
            (o.share("/note.txt", bob.user, "editor"), BadRequest),
            (o.share("/nothing", bob.user, "editor"), NotFound),
            (o.share("/proj", bob.user, "admin"), BadRequest),
            (b.share("/proj", s.owner.user, "viewer"), BadRequest),
            (b.unshare("/proj", s.owner.user), BadRequest),
            (o.unshare("/note.txt"), BadRequest),
            (o.leave("/proj"), Forbidden),
        ]
        for index, (call, error) in enumerate(refusals):
            assert await outcome(call) is error, index
        assert (await o.tree(s.owner.root_ns), await o.shares()) == before


# --- the shared folder in the member's root namespace --------------------------------

async def test_a_members_root_shows_the_mount_as_a_dir_with_its_children_below_it(
    users: Users,
) -> None:
    s, bob = await shared(users), await users.login()
    await join(s, bob, "editor")
    async with bob.client() as b, s.owner.client() as o:
        tree, feed = await b.tree(bob.root_ns), await b.changes(bob.root_ns, 0)
        mine = (await o.lookup(s.owner.root_ns, "/proj"))["entry"]
    for seq in (tree["seq"], feed["head"], feed["cursor"]):
        assert isinstance(seq, str), seq
        assert sorted(cursor.parts(seq)) == [cursor.ROOT, s.ns], seq
    for records in (tree["entries"], feed["changes"]):
        [mount] = [r for r in records if r["name"] == "proj"]
        assert (mount["kind"], mount["share"], mount["role"]) == ("dir", s.ns, "editor")
        assert (mount["parent"], mount.get("target")) == (p.ROOT_ID, None)
        below = {r["name"]: r["parent"] for r in records if r["parent"] == mount["id"]}
        assert below == {"f.txt": mount["id"], "sub": mount["id"]}
        assert [r["id"] for r in records].count(p.ROOT_ID) <= 1  # the share's root never shows
    assert (mine["id"], mine["kind"], mine["share"], mine["role"]) == (
        s.folder, "dir", s.ns, "owner")


async def test_a_members_commit_through_their_root_reaches_the_owner(users: Users) -> None:
    s, bob = await shared(users), await users.login()
    await join(s, bob, "editor")
    data = os.urandom(2000)
    async with bob.client() as b, s.owner.client() as o:
        mount = await mount_of(b, bob.root_ns)
        block = await upload(b, data)
        answer = await b.commit(bob.root_ns, [mkdir(mount["id"], "from-bob"),
                                              create(mount["id"], "b.txt", [block])])
        assert isinstance(answer["seq"], str), answer
        assert sorted(cursor.parts(answer["seq"])) == [cursor.ROOT, s.ns], answer
        made = (await o.lookup(s.owner.root_ns, "/proj/b.txt"))["entry"]
        assert made["parent"] == s.folder
        assert (await o.lookup(s.owner.root_ns, "/proj/from-bob"))["entry"]["kind"] == "dir"
        assert await o.get_chunk(block[0]) == data
        assert "from-bob" in {e["name"] for e in (await o.tree(s.ns))["entries"]}


async def test_a_members_top_level_commit_stays_in_their_own_root(users: Users) -> None:
    """The member's root namespace is newer than the share's here: both have an entry
    ``ROOT_ID``, and the top of the member's tree is their own root's."""
    s = await shared(users)
    bob = await users.login()  # created after the shared namespace
    assert bob.root_ns > s.ns
    await join(s, bob, "editor")
    async with bob.client() as b, s.owner.client() as o:
        await b.commit(bob.root_ns, [mkdir(p.ROOT_ID, "top")])
        top = (await b.lookup(bob.root_ns, "/top"))["entry"]
        assert top["parent"] == p.ROOT_ID
        owners = {e["name"] for e in (await o.tree(s.ns))["entries"]}
        assert "top" not in owners, "a member's top-level mkdir landed inside the shared folder"


async def test_a_role_change_reaches_the_members_feed_and_binds_at_once(users: Users) -> None:
    s, bob = await shared(users), await users.login()
    await join(s, bob, "editor")
    async with bob.client() as b, s.owner.client() as o:
        cursor = (await b.changes(bob.root_ns, 0))["cursor"]
        mount = await mount_of(b, bob.root_ns)
        await join(s, bob, "viewer")
        feed = await b.changes(bob.root_ns, cursor)
        assert [(r["id"], r["role"]) for r in feed["changes"]] == [(mount["id"], "viewer")]
        before = await head(o, s.ns)
        assert await outcome(b.commit(bob.root_ns, [mkdir(mount["id"], "no")])) is Forbidden
        assert await head(o, s.ns) == before
        assert [x["role"] for x in await b.shares()] == ["viewer"]


async def test_a_member_gets_a_numbered_name_when_theirs_is_taken(users: Users) -> None:
    s, bob = await shared(users), await users.login()
    async with bob.client() as b:
        await b.commit(bob.root_ns, [mkdir(p.ROOT_ID, "proj")])
        await join(s, bob, "viewer")
        tops = {e["name"]: e.get("share") for e in (await b.tree(bob.root_ns))["entries"]
                if e["parent"] == p.ROOT_ID and e["id"] != p.ROOT_ID}
        assert tops == {"proj": None, "proj (2)": s.ns}
        assert [x["path"] for x in await b.shares()] == ["/proj (2)"]


async def test_deleting_a_mount_through_a_root_commit_is_forbidden(users: Users) -> None:
    s, bob = await shared(users), await users.login()
    await join(s, bob, "editor")
    outer = mkdir(p.ROOT_ID, "outer")
    async with bob.client() as b, s.owner.client() as o:
        await b.commit(bob.root_ns, [outer])
        mount = await mount_of(b, bob.root_ns)
        await b.commit(bob.root_ns, [rename(mount["id"], mount["rev"], outer["entry"], "proj")])
        mine = await mount_of(o, s.owner.root_ns)
        mount = (await b.lookup(bob.root_ns, "/outer/proj"))["entry"]
        holder = (await b.lookup(bob.root_ns, "/outer"))["entry"]
        before = (await b.tree(bob.root_ns), await o.tree(s.owner.root_ns), await head(o, s.ns))
        deletes = [
            (o, s.owner.root_ns, delete(s.folder, mine["rev"], recursive=True)),
            (b, bob.root_ns, delete(mount["id"], mount["rev"], recursive=True)),
            (b, bob.root_ns, delete(holder["id"], holder["rev"], recursive=True)),
        ]
        for index, (c, root, op) in enumerate(deletes):
            assert await outcome(c.commit(root, [op])) is Forbidden, index
        after = (await b.tree(bob.root_ns), await o.tree(s.owner.root_ns), await head(o, s.ns))
        assert after == before


async def test_a_move_across_the_edge_of_a_shared_folder_is_cross_share(users: Users) -> None:
    s, bob = await shared(users), await users.login()
    await join(s, bob, "editor")
    mine = mkdir(p.ROOT_ID, "mine")
    async with bob.client() as b, s.owner.client() as o:
        await b.commit(bob.root_ns, [mine])
        mount = await mount_of(b, bob.root_ns)
        sub = (await b.lookup(bob.root_ns, "/proj/sub"))["entry"]
        f = (await b.lookup(bob.root_ns, "/proj/f.txt"))["entry"]
        before = (await b.tree(bob.root_ns), await o.tree(s.owner.root_ns))
        moves = [
            (b, bob.root_ns, rename(s.file, f["rev"], p.ROOT_ID, "out.txt")),
            (b, bob.root_ns, rename(s.file, f["rev"], mine["entry"], "out.txt")),
            (b, bob.root_ns, rename(mine["entry"], 1, mount["id"], "mine")),
            (b, bob.root_ns, rename(mount["id"], mount["rev"], sub["id"], "loop")),
            (o, s.owner.root_ns, rename(s.file, f["rev"], p.ROOT_ID, "out.txt")),
        ]
        for index, (c, root, op) in enumerate(moves):
            assert await outcome(c.commit(root, [op])) is CrossShare, index
        assert (await b.tree(bob.root_ns), await o.tree(s.owner.root_ns)) == before


# --- quotas ---------------------------------------------------------------------------


async def test_the_shared_folders_content_counts_against_its_owner(users: Users) -> None:
    s, bob = await shared(users, size=60 * KIB, limit=100 * KIB), await users.login()
    await join(s, bob, "editor")
    async with bob.client() as b, s.owner.client() as o:
        assert ((await o.whoami())["usage"], (await b.whoami())["usage"]) == (60 * KIB, 0)
        mount = await mount_of(b, bob.root_ns)
        fits = await upload(b, os.urandom(30 * KIB))
        await b.commit(bob.root_ns, [create(mount["id"], "fits.bin", [fits])])
        assert ((await o.whoami())["usage"], (await b.whoami())["usage"]) == (90 * KIB, 0)
        over = await upload(b, os.urandom(30 * KIB))  # bob has no quota: his upload is his
        assert (await b.whoami())["usage"] == 30 * KIB
        before = await head(o, s.ns)
        with pytest.raises(QuotaExceeded) as refused:
            await b.commit(bob.root_ns, [create(mount["id"], "over.bin", [over])])
        assert refused.value.detail["quota"] == 100 * KIB
        assert await head(o, s.ns) == before
        assert ((await o.whoami())["usage"], (await b.whoami())["usage"]) == (90 * KIB, 30 * KIB)
