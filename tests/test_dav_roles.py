"""WebDAV in a shared folder: each write checks the role of the namespace it lands in.

The folder is shared here by writing the rows sharing is made of (a namespace, its
members with their roles, and a ``mount`` entry in each member's tree, journaled like
any entry), so that the file service's walk into shared folders and its role checks
are tested through the real server whatever front end shares folders."""

from __future__ import annotations

import time

import httpx

from backend import protocol as p
from backend.server.main import open_metadata
from tests.conftest import PASSWORD, Device, NewDevice


def share(owner: Device, members: list[tuple[Device, str]]) -> None:
    """A new namespace owned by ``owner``, shown as ``/shared`` in the tree of the owner
    and of every member, with the member's role."""
    server = owner.server
    now = int(time.time())
    with (open_metadata(server.stores.metadata, server.stores.data) as metadata,
          metadata.db.transaction() as tx):
        user_ids = {d.user: int(tx.execute("SELECT id FROM users WHERE name = ?",
                                           (d.user,))[0][0])
                    for d in (owner, *(m for m, _ in members))}
        (ns,) = tx.execute("INSERT INTO namespaces (owner, seq, created) VALUES (?, 0, ?)"
                           " RETURNING id", (user_ids[owner.user], now))[0]
        tx.execute("INSERT INTO entries (ns, id, parent, name, kind, rev, size, mode, mtime)"
                   " VALUES (?, ?, '', '', 'dir', 0, 0, ?, ?)", (ns, p.ROOT_ID, 0o755, now))
        for device, role in ((owner, "owner"), *members):
            tx.execute("INSERT INTO members (ns, user_id, role) VALUES (?, ?, ?)",
                       (ns, user_ids[device.user], role))
            home = device.root_ns
            seq = tx.lock_namespace(home)
            assert seq is not None
            values = (home, p.new_id(), p.ROOT_ID, "shared", "mount", seq + 1, 0, 0o755,
                      now * 10**9, None, str(ns))
            tx.execute("INSERT INTO versions (ns, id, parent, name, kind, seq, size, mode,"
                       " mtime, blocks, target, deleted, device, committed) VALUES"
                       " (?,?,?,?,?,?,?,?,?,?,?,0,'test',?)", (*values, now))
            tx.execute("INSERT INTO entries (ns, id, parent, name, kind, rev, size, mode,"
                       " mtime, blocks, target) VALUES (?,?,?,?,?,?,?,?,?,?,?)", values)
            tx.execute("UPDATE namespaces SET seq = ? WHERE id = ?", (seq + 1, home))


def dav(device: Device, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, f"{device.server.url}/dav{path}",
                         auth=(device.user, PASSWORD), timeout=60, **kw)  # type: ignore[arg-type]


def test_writes_in_a_shared_folder_follow_the_members_role(new_device: NewDevice) -> None:
    owner, editor, viewer = new_device(), new_device(), new_device()
    share(owner, [(editor, "editor"), (viewer, "viewer")])
    assert dav(owner, "PUT", "/shared/plan.txt", content=b"owner's").status_code == 201
    assert dav(editor, "PUT", "/shared/notes.txt", content=b"editor's").status_code == 201
    assert dav(viewer, "GET", "/shared/notes.txt").content == b"editor's"
    listing = dav(viewer, "PROPFIND", "/shared/", headers={"Depth": "1"}).text
    assert "/dav/shared/plan.txt" in listing
    assert "/dav/shared/notes.txt" in listing
    assert dav(viewer, "PUT", "/shared/plan.txt", content=b"no").status_code == 403
    assert dav(viewer, "PUT", "/shared/new.txt", content=b"no").status_code == 403
    assert dav(viewer, "DELETE", "/shared/plan.txt").status_code == 403
    assert dav(viewer, "MKCOL", "/shared/sub").status_code == 403
    to_own = {"Destination": f"{viewer.server.url}/dav/mine.txt"}
    assert dav(viewer, "MOVE", "/shared/plan.txt", headers=to_own).status_code == 403
    assert dav(viewer, "COPY", "/shared/plan.txt", headers=to_own).status_code == 201
    assert dav(viewer, "GET", "/mine.txt").content == b"owner's"
    assert dav(owner, "GET", "/shared/plan.txt").content == b"owner's"
    into_shared = {"Destination": f"{editor.server.url}/dav/shared/moved.txt"}
    assert dav(editor, "PUT", "/own.txt", content=b"moved in").status_code == 201
    assert dav(editor, "MOVE", "/own.txt", headers=into_shared).status_code == 201
    assert dav(owner, "GET", "/shared/moved.txt").content == b"moved in"
    assert dav(editor, "GET", "/own.txt").status_code == 404
