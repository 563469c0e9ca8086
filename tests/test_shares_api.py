"""Shared folders over the HTTP API, on every back end: what each role (owner, editor,
viewer, non-member, removed member) may do on a shared namespace, the refusals of
``/v1/shares``, and the shared folder as a member's root namespace shows and reaches it.
Calls go through ``backend.client.Client`` with the caller's token, straight to the
server; a refusal is asserted by its exact class and that it changed nothing."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio

from backend import cursor
from backend import protocol as p
from backend.client import Client
from backend.errors import BadRequest, CrossShare, Forbidden, LoftError, NotFound, QuotaExceeded
from backend.history_client import History
from backend.server.auth import hash_password
from backend.server.main import open_metadata
from backend.server.metadata import MetadataStore
from tests.conftest import PASSWORD, Server
from tests.test_api import Account, create, delete, mkdir, rename, upload

KIB = 1024
_names = itertools.count()
_hashes: list[str] = []


@dataclass
class Users:
    server: Server
    store: MetadataStore

    async def add(self, limit: int | None = None) -> str:
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


@pytest.fixture(scope="module")
def users(server: Server) -> Iterator[Users]:
    with open_metadata(server.stores.metadata, server.stores.data) as store:
        yield Users(server, store)


@dataclass
class Shared:
    """The owner's ``/proj`` (``f.txt``, ``sub/``) shared as ``ns``; /outer/inner, /note.txt."""

    owner: Account
    ns: int
    folder: str  # the folder's id: the owner's mount
    file: str
    data: bytes


async def shared(users: Users, size: int = 3000, limit: int | None = None) -> Shared:
    """A fresh owner's ``/proj``, shared with a fresh viewer (so the namespace exists)."""
    owner, data = await users.login(limit), os.urandom(size)
    folder, outer = mkdir(p.ROOT_ID, "proj"), mkdir(p.ROOT_ID, "outer")
    async with owner.client() as c:
        f = create(folder["entry"], "f.txt", [await upload(c, data)])
        ops = [folder, mkdir(folder["entry"], "sub"), f, outer, mkdir(outer["entry"], "inner")]
        await c.commit(owner.root_ns, [*ops, create(p.ROOT_ID, "note.txt")])  # before sharing
        ns = (await c.share("/proj", await users.add(), "viewer"))["ns"]
    return Shared(owner, ns, folder["entry"], f["entry"], data)


async def member(users: Users, s: Shared, role: str, *tops: str) -> Account:
    """A fresh user with folders ``tops`` at the top of their tree, then ``role`` in ``s``."""
    account = await users.login()
    async with account.client() as c, s.owner.client() as o:
        if tops:
            await c.commit(account.root_ns, [mkdir(p.ROOT_ID, top) for top in tops])
        assert await o.share("/proj", account.user, role) == {
            "ns": s.ns, "user": account.user, "role": role}
    return account


async def attempt(call: Callable[[], Awaitable[Any]]) -> tuple[type[LoftError] | None, Any]:
    """``(None, answer)``, or ``(the class of the error call() raised, None)``."""
    try:
        return None, await call()
    except LoftError as err:
        return type(err), None


async def outcome(call: Callable[[], Awaitable[Any]]) -> type[LoftError] | None:
    return (await attempt(call))[0]


async def entry(c: Client, root: int, path: str = "/proj") -> dict[str, Any]:
    return dict((await c.lookup(root, path))["entry"])


async def trees(*views: tuple[Client, int]) -> list[Any]:
    """The trees (and heads) of ``(client, namespace)``: what a refusal leaves as it was."""
    return [await c.tree(ns) for c, ns in views]


# --- the authorization matrix ------------------------------------------------------

ROLES = ("owner", "editor", "viewer", "non-member", "removed")
READ = (None, None, None, NotFound, NotFound)  # the expected error, role by role
WRITE = (None, None, Forbidden, NotFound, NotFound)
Route = Callable[[Client, Shared, str], Awaitable[Any]]
Check = Callable[[Any, Shared, str], bool]
ROUTES: dict[str, tuple[Route, Check, tuple[type[LoftError] | None, ...]]] = {
    # the call (with the target user's name), a check of its answer, the expected errors
    "GET tree": (lambda c, s, _: c.tree(s.ns),
                 lambda a, s, _: s.file in {e["id"] for e in a["entries"]}, READ),
    "GET changes": (lambda c, s, _: c.changes(s.ns, 0),  # its journal starts at a horizon
                    lambda a, s, _: a == {**a, "cursor": 0, "changes": [], "reset": True}, READ),
    "GET lookup": (lambda c, s, _: c.lookup(s.ns, "/f.txt"),
                   lambda a, s, _: bool(a["entry"]["id"] == s.file), READ),
    "GET versions": (lambda c, s, _: c.versions(s.ns, s.file),
                     lambda a, s, _: {v["id"] for v in a} == {s.file}, READ),
    "GET past": (lambda c, s, _: History(c, s.ns).past(at=10**9, path="/f.txt"),
                 lambda a, s, _: bool(a["entry"]["id"] == s.file), READ),
    "GET place": (lambda c, s, _: History(c, s.ns).place(p.ROOT_ID, "f.txt"),
                  lambda a, s, _: {v["id"] for v in a} == {s.file}, READ),
    "GET snapshots": (lambda c, s, _: History(c, s.ns).snapshots(),
                      lambda a, s, _: a == [], READ),
    "POST snapshots": (lambda c, s, t: History(c, s.ns).snapshot(f"snap-{t}"),
                       lambda a, s, t: bool(a["name"] == f"snap-{t}"), WRITE),
    "POST commit": (lambda c, s, t: c.commit(s.ns, [mkdir(p.ROOT_ID, f"dir-{t}")]),
                    lambda a, s, _: isinstance(a["seq"], int), WRITE),
    "GET chunk": (lambda c, s, _: c.get_chunk(p.chunk_id(s.data)),
                  lambda a, s, _: bool(a == s.data), READ),
    "POST shares": (lambda c, s, t: c.share("/proj", t, "viewer"),
                    lambda a, s, t: a == {"ns": s.ns, "user": t, "role": "viewer"}, WRITE),
    "POST shares/remove": (lambda c, s, t: c.unshare("/proj", t),
                           lambda a, s, t: a == {"ns": s.ns, "removed": [t]}, WRITE),
    "POST shares/leave": (lambda c, s, _: c.leave("/proj"), lambda a, s, _: a == {"ns": s.ns},
                          (Forbidden, None, None, NotFound, NotFound)),
}


async def state(s: Shared, caller: Account) -> tuple[Any, ...]:
    """What a refused request must leave as it was."""
    async with s.owner.client() as o, caller.client() as c:
        return (await o.tree(s.ns), await o.shares(), await History(o, s.ns).snapshots(),
                (await c.tree(caller.root_ns))["seq"])


@pytest.mark.parametrize("role", ROLES)
async def test_each_route_on_a_shared_namespace_answers_by_role(users: Users, role: str) -> None:
    s = await shared(users)
    if role in ("editor", "viewer", "removed"):
        caller = await member(users, s, "editor" if role == "removed" else role)
    else:
        caller = s.owner if role == "owner" else await users.login()
    if role == "removed":
        async with s.owner.client() as o:
            assert await o.unshare("/proj", caller.user) == {"ns": s.ns, "removed": [caller.user]}
    target = await users.add()  # whom the caller shares with, then removes
    wrong: list[str] = []
    async with caller.client() as c:
        for name, (call, check, expected) in ROUTES.items():
            before = await state(s, caller)
            got, answer = await attempt(partial(call, c, s, target))
            want = expected[ROLES.index(role)]
            if got is not want:
                wrong.append(f"{role}: {name} answered {got and got.__name__}, not"
                             f" {want and want.__name__}")
            elif got is None and not check(answer, s, target):
                wrong.append(f"{role}: {name} answered {answer!r}")
            if got is not None:
                assert await state(s, caller) == before, f"{role}: refused {name} changed state"
    assert not wrong, "\n".join(wrong)


async def test_a_removed_member_is_refused_at_once_and_loses_the_folder(users: Users) -> None:
    s = await shared(users)
    bob, cid = await member(users, s, "editor"), p.chunk_id(s.data)
    async with bob.client() as b, s.owner.client() as o:
        assert await b.get_chunk(cid) == s.data
        position = (await b.changes(bob.root_ns, 0))["cursor"]
        mount = await entry(b, bob.root_ns)
        await o.unshare("/proj", bob.user)
        for index, call in enumerate([
            lambda: b.tree(s.ns), lambda: b.changes(s.ns, 0), lambda: b.get_chunk(cid),
            lambda: b.commit(s.ns, [mkdir(p.ROOT_ID, "x")]), lambda: b.lookup(bob.root_ns, "/proj"),
            lambda: b.commit(bob.root_ns, [mkdir(mount["id"], "late")])]):
            assert await outcome(call) is NotFound, index
        feed = await b.changes(bob.root_ns, position)
        assert [(r["id"], r.get("deleted")) for r in feed["changes"]] == [(mount["id"], True)]
        assert feed["cursor"] == feed["head"]
        assert isinstance(feed["cursor"], int), "no shared folder left: a plain position"
        assert "late" not in {e["name"] for e in (await o.tree(s.ns))["entries"]}


async def test_a_non_member_cannot_reach_shared_entries_by_their_ids(users: Users) -> None:
    s, dave = await shared(users), await users.login()
    cid = p.chunk_id(s.data)
    async with dave.client() as d, s.owner.client() as o:
        before = await trees((o, s.ns))
        assert await d.missing([cid]) == [cid]
        assert await outcome(lambda: d.get_chunk(cid)) is NotFound
        assert await outcome(lambda: d.commit(dave.root_ns, [mkdir(s.folder, "in")])) is NotFound
        with pytest.raises(LoftError) as moved:
            await d.commit(dave.root_ns, [rename(s.file, 1, p.ROOT_ID, "took.txt")])
        assert moved.value.code == "conflict"
        assert moved.value.detail == {"op": 0, "current": None}, "leaks the owner's entry"
        assert await d.shares() == []
        assert await trees((o, s.ns)) == before


# --- refusals of /v1/shares ----------------------------------------------------------


async def test_nested_shares_are_refused(users: Users) -> None:
    s, carol = await shared(users), await users.add()
    bob = await member(users, s, "editor", "box")
    async with s.owner.client() as o, bob.client() as b:
        await o.share("/outer/inner", bob.user, "viewer")
        box, mount = await entry(b, bob.root_ns, "/box"), await entry(b, bob.root_ns)
        await b.commit(bob.root_ns, [rename(mount["id"], mount["rev"], box["id"], "proj")])
        before = await trees((o, s.owner.root_ns), (b, bob.root_ns), (o, s.ns))
        for c, path in ((o, "/proj/sub"), (b, "/box/proj/sub"), (o, "/outer"), (b, "/box")):
            assert await outcome(partial(c.share, path, carol, "editor")) is BadRequest, path
        assert await trees((o, s.owner.root_ns), (b, bob.root_ns), (o, s.ns)) == before
        assert len(await o.shares()) == 2


async def test_sharing_with_nobody_or_oneself_or_of_the_root_or_a_file_fails(users: Users) -> None:
    s = await shared(users)
    bob = await member(users, s, "editor")
    async with s.owner.client() as o, bob.client() as b:
        before = (await o.tree(s.owner.root_ns), await o.shares())
        refusals: list[tuple[Callable[[], Awaitable[Any]], type[LoftError]]] = [
            (lambda: o.share("/proj", f"nobody-{p.new_id()}", "editor"), NotFound),
            (lambda: o.share("/proj", s.owner.user, "editor"), BadRequest),
            (lambda: o.share("/", bob.user, "editor"), BadRequest),
            (lambda: o.share("/note.txt", bob.user, "editor"), BadRequest),
            (lambda: o.share("/nothing", bob.user, "editor"), NotFound),
            (lambda: o.share("/proj", bob.user, "admin"), BadRequest),
            (lambda: b.share("/proj", s.owner.user, "viewer"), BadRequest),
            (lambda: b.unshare("/proj", s.owner.user), BadRequest),
            (lambda: o.unshare("/note.txt"), BadRequest),
            (lambda: o.leave("/proj"), Forbidden),
        ]
        for index, (call, error) in enumerate(refusals):
            assert await outcome(call) is error, index
        assert (await o.tree(s.owner.root_ns), await o.shares()) == before


# --- the shared folder in the member's root namespace --------------------------------


async def test_a_members_root_shows_the_mount_as_a_dir_with_children_below(users: Users) -> None:
    s = await shared(users)
    bob = await member(users, s, "editor")
    async with bob.client() as b, s.owner.client() as o:
        tree, feed = await b.tree(bob.root_ns), await b.changes(bob.root_ns, 0)
        mine = await entry(o, s.owner.root_ns)
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
    s = await shared(users)
    bob, data = await member(users, s, "editor"), os.urandom(2000)
    async with bob.client() as b, s.owner.client() as o:
        mount = await entry(b, bob.root_ns)
        block = await upload(b, data)
        answer = await b.commit(bob.root_ns, [mkdir(mount["id"], "from-bob"),
                                              create(mount["id"], "b.txt", [block])])
        assert isinstance(answer["seq"], str), answer
        assert sorted(cursor.parts(answer["seq"])) == [cursor.ROOT, s.ns], answer
        assert (await entry(o, s.owner.root_ns, "/proj/b.txt"))["parent"] == s.folder
        assert (await entry(o, s.owner.root_ns, "/proj/from-bob"))["kind"] == "dir"
        assert await o.get_chunk(block[0]) == data
        assert "from-bob" in {e["name"] for e in (await o.tree(s.ns))["entries"]}


async def test_a_members_top_level_commit_stays_in_their_own_root(users: Users) -> None:
    """Both namespaces have an entry ``ROOT_ID``; the top of the member's tree is their
    root's, also when their root namespace is newer than the shared one."""
    s = await shared(users)
    bob = await member(users, s, "editor")
    assert bob.root_ns > s.ns
    async with bob.client() as b, s.owner.client() as o:
        await b.commit(bob.root_ns, [mkdir(p.ROOT_ID, "top")])
        in_share = {e["name"] for e in (await o.tree(s.ns))["entries"]}
        assert "top" not in in_share, "a member's mkdir at the top landed in the shared folder"
        assert (await entry(b, bob.root_ns, "/top"))["parent"] == p.ROOT_ID


async def test_a_role_change_reaches_the_members_feed_and_binds_at_once(users: Users) -> None:
    s = await shared(users)
    bob = await member(users, s, "editor")
    async with bob.client() as b, s.owner.client() as o:
        position = (await b.changes(bob.root_ns, 0))["cursor"]
        mount = await entry(b, bob.root_ns)
        await o.share("/proj", bob.user, "viewer")
        feed = await b.changes(bob.root_ns, position)
        assert [(r["id"], r["role"]) for r in feed["changes"]] == [(mount["id"], "viewer")]
        before = await trees((o, s.ns), (b, bob.root_ns))
        refused = await outcome(partial(b.commit, bob.root_ns, [mkdir(mount["id"], "no")]))
        assert refused is Forbidden
        assert await trees((o, s.ns), (b, bob.root_ns)) == before
        assert [x["role"] for x in await b.shares()] == ["viewer"]


async def test_a_member_gets_a_numbered_name_when_theirs_is_taken(users: Users) -> None:
    s = await shared(users)
    bob = await member(users, s, "viewer", "proj")
    async with bob.client() as b:
        tops = {e["name"]: e.get("share") for e in (await b.tree(bob.root_ns))["entries"]
                if e["parent"] == p.ROOT_ID and e["id"] != p.ROOT_ID}
        assert tops == {"proj": None, "proj (2)": s.ns}
        assert [x["path"] for x in await b.shares()] == ["/proj (2)"]


async def test_deleting_a_mount_through_a_root_commit_is_forbidden(users: Users) -> None:
    s = await shared(users)
    bob = await member(users, s, "editor", "outer")
    async with bob.client() as b, s.owner.client() as o:
        outer, mount = await entry(b, bob.root_ns, "/outer"), await entry(b, bob.root_ns)
        await b.commit(bob.root_ns, [rename(mount["id"], mount["rev"], outer["id"], "proj")])
        mine, mount = await entry(o, s.owner.root_ns), await entry(b, bob.root_ns, "/outer/proj")
        outer = await entry(b, bob.root_ns, "/outer")
        before = await trees((b, bob.root_ns), (o, s.owner.root_ns), (o, s.ns))
        deletes = [
            (o, s.owner.root_ns, delete(s.folder, mine["rev"], recursive=True)),
            (b, bob.root_ns, delete(mount["id"], mount["rev"], recursive=True)),
            (b, bob.root_ns, delete(outer["id"], outer["rev"], recursive=True)),
        ]
        for index, (c, root, op) in enumerate(deletes):
            assert await outcome(partial(c.commit, root, [op])) is Forbidden, index
        assert await trees((b, bob.root_ns), (o, s.owner.root_ns), (o, s.ns)) == before


async def test_a_move_across_the_edge_of_a_shared_folder_is_cross_share(users: Users) -> None:
    s = await shared(users)
    bob = await member(users, s, "editor", "mine")
    async with bob.client() as b, s.owner.client() as o:
        mine, mount = await entry(b, bob.root_ns, "/mine"), await entry(b, bob.root_ns)
        sub = await entry(b, bob.root_ns, "/proj/sub")
        rev = (await entry(b, bob.root_ns, "/proj/f.txt"))["rev"]
        before = await trees((b, bob.root_ns), (o, s.owner.root_ns), (o, s.ns))
        moves = {
            "member: file to own folder": (b, bob.root_ns, rename(s.file, rev, mine["id"], "x")),
            "member: own folder into share": (b, bob.root_ns, rename(
                mine["id"], mine["rev"], mount["id"], "mine")),
            "member: mount into itself": (b, bob.root_ns, rename(
                mount["id"], mount["rev"], sub["id"], "loop")),
            "owner: file to top": (o, s.owner.root_ns, rename(s.file, rev, p.ROOT_ID, "x")),
            "member: file to top": (b, bob.root_ns, rename(s.file, rev, p.ROOT_ID, "x")),
        }
        for what, (c, root, op) in moves.items():
            assert await outcome(partial(c.commit, root, [op])) is CrossShare, f"{what}: moved"
        assert await trees((b, bob.root_ns), (o, s.owner.root_ns), (o, s.ns)) == before


# --- quotas ---------------------------------------------------------------------------


async def test_the_shared_folders_content_counts_against_its_owner(users: Users) -> None:
    s = await shared(users, size=60 * KIB, limit=100 * KIB)
    bob = await member(users, s, "editor")
    async with bob.client() as b, s.owner.client() as o:
        assert ((await o.whoami())["usage"], (await b.whoami())["usage"]) == (60 * KIB, 0)
        mount = await entry(b, bob.root_ns)
        fits = await upload(b, os.urandom(30 * KIB))
        await b.commit(bob.root_ns, [create(mount["id"], "fits.bin", [fits])])
        assert ((await o.whoami())["usage"], (await b.whoami())["usage"]) == (90 * KIB, 0)
        over = await upload(b, os.urandom(30 * KIB))  # bob has no quota: his upload is his
        before = await trees((o, s.ns))
        with pytest.raises(QuotaExceeded) as refused:
            await b.commit(bob.root_ns, [create(mount["id"], "over.bin", [over])])
        assert refused.value.detail["quota"] == 100 * KIB
        assert await trees((o, s.ns)) == before
        assert ((await o.whoami())["usage"], (await b.whoami())["usage"]) == (90 * KIB, 30 * KIB)
