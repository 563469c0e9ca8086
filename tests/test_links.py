"""Links for people without an account, against a real ``loft serve`` on every back
end: made with ``loft link create``, served without a session (a file with its type,
disposition and ranges; a folder as a listing and a zip), expired and revoked links
refused, password links throttled against guessing, and only its maker's to revoke."""

from __future__ import annotations

import io
import re
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.errors import Forbidden
from backend.server import links
from backend.server.auth import hash_password
from backend.server.metadata import MetadataStore
from backend.server.sqlite_db import SQLiteDatabase
from tests.conftest import Device, NewDevice, Server, loft_env, running_server
from tests.polling import wait_for
from tools.localserver import ROOT, loft_argv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This layer over the embedded default only: both back ends are proven under the
    same routes by test_api and test_stores."""
    yield from running_server(tmp_path_factory, "sqlite-dir", "web")


def link(device: Device, *args: str, password: str | None = None) -> str:
    env_password = {} if password is None else {"LOFT_LINK_PASSWORD": password}
    result = _run(device, "link", "create", *args, extra_env=env_password)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/l/[A-Za-z0-9_-]{22}", url), url
    return url


def _run(device: Device, *args: str, extra_env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(loft_argv(*args), env={**loft_env(device.home), **(extra_env or {})},
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def put(device: Device, tmp: Path, remote: str, data: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data)
    result = device.run("put", str(tmp), remote)
    assert result.returncode == 0, result.stderr


def test_a_file_link_serves_the_file_with_ranges_to_anyone(device: Device, tmp_path: Path
                                                          ) -> None:
    put(device, tmp_path / "r.pdf", "/report.pdf", b"%PDF-1.4 " + bytes(range(256)) * 64)
    url = link(device, "/report.pdf")
    whole = httpx.get(url)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/pdf"
    assert whole.headers["content-disposition"].startswith('inline; filename="report.pdf"')
    assert whole.headers["referrer-policy"] == "no-referrer"
    assert whole.headers["x-robots-tag"].startswith("noindex")
    part = httpx.get(url, headers={"Range": "bytes=9-18"})
    assert part.status_code == 206
    assert part.content == bytes(range(10))
    listed = device.run("link", "list")
    assert "/report.pdf" in listed.stdout
    assert re.search(r"\s2\s+no\s+/report\.pdf", listed.stdout)


def test_a_folder_link_lists_and_zips_and_keeps_working_after_a_rename(
    device: Device, tmp_path: Path,
) -> None:
    assert device.run("mkdir", "-p", "/share/deep").returncode == 0
    put(device, tmp_path / "a", "/share/a.txt", b"alpha")
    put(device, tmp_path / "b", "/share/deep/b.html", b"<script>x</script>")
    url = link(device, "/share", "--expires", "2h")
    assert device.run("mv", "/share", "/renamed").returncode == 0
    page = httpx.get(url)
    assert page.status_code == 200
    assert "a.txt" in page.text
    assert "deep/" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    inner = httpx.get(url + "/deep/b.html")
    assert inner.headers["content-disposition"].startswith("attachment;")
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(url + "?zip=1").content))
    assert sorted(archive.namelist()) == ["a.txt", "deep/", "deep/b.html"]
    assert httpx.get(url + "/%2e%2e/%2e%2e").status_code == 400
    assert httpx.get(url + "/nothing").status_code == 404


def test_an_expired_link_is_refused(device: Device, tmp_path: Path) -> None:
    put(device, tmp_path / "e", "/e.txt", b"soon gone")
    url = link(device, "/e.txt", "--expires", "1s")
    wait_for(lambda: httpx.get(url).status_code == 404, 10, "the link to expire")
    assert "/e.txt" not in device.run("link", "list").stdout


def test_a_revoked_link_stops_at_once_and_only_its_maker_may_revoke_it(
    device: Device, new_device: NewDevice, tmp_path: Path,
) -> None:
    put(device, tmp_path / "x", "/x.txt", b"x")
    url = link(device, "/x.txt")
    stranger = new_device()
    refused = stranger.run("link", "revoke", url)
    assert refused.returncode == 1
    assert "no such link of yours" in refused.stderr
    assert httpx.get(url).status_code == 200
    assert device.run("link", "revoke", url).returncode == 0
    gone = httpx.get(url)
    assert gone.status_code == 404
    assert gone.headers["referrer-policy"] == "no-referrer"
    by_id = link(device, "/x.txt")
    link_id = device.run("link", "list").stdout.split("\n")[1].split()[0]
    assert device.run("link", "revoke", link_id).returncode == 0
    assert httpx.get(by_id).status_code == 404


def test_guessing_a_link_password_is_throttled(device: Device, tmp_path: Path) -> None:
    put(device, tmp_path / "p", "/p.txt", b"private")
    url = link(device, "/p.txt", "--password", password="open sesame")
    asked = httpx.get(url)
    assert asked.status_code == 401
    assert "needs a password" in asked.text
    answers = [httpx.post(url, data={"password": f"guess{i}"}).status_code for i in range(7)]
    assert answers[:5] == [401] * 5
    assert answers[-1] == 429
    barred = httpx.post(url, data={"password": "open sesame"})
    assert barred.status_code == 429
    assert int(barred.headers["retry-after"]) >= 1
    unlocked = wait_for(lambda: _unlock(url), 30, "the throttle to let the right password in")
    assert unlocked.get(url).content == b"private"
    assert httpx.get(url).status_code == 401  # without the cookie: asked again
    unlocked.close()


def _unlock(url: str) -> httpx.Client | None:
    client = httpx.Client()
    answer = client.post(url, data={"password": "open sesame"})
    if answer.status_code == 303:
        return client
    client.close()
    return None


def test_only_a_path_of_ones_own_workspace_can_be_linked(device: Device) -> None:
    refused = device.run("link", "create", "/missing.txt")
    assert refused.returncode == 1
    assert "no such file or folder" in refused.stderr
    whole = device.run("link", "create", "/")
    assert whole.returncode == 1
    assert "whole workspace" in whole.stderr
    assert httpx.get(f"{device.server.url}/l/{'A' * 22}").status_code == 404
    assert httpx.get(f"{device.server.url}/l/short").status_code == 404


def test_only_owners_and_editors_make_links_and_a_demoted_makers_links_stop(
    tmp_path: Path,
) -> None:
    """On the links table itself (roles as the ``members`` table will hold them for
    shared folders): a viewer may not make a link; an editor may, and their link
    stops when they are made a viewer or removed."""
    db = SQLiteDatabase(tmp_path / "metadata.db")
    store = MetadataStore(db)
    owner = store.add_user_sync("owner", hash_password("x"))
    member = store.add_user_sync("member", hash_password("x"))
    with db.transaction() as tx:
        ns = int(tx.execute("SELECT root_ns FROM users WHERE id = ?", (owner,))[0][0])
        tx.execute("INSERT INTO entries (ns, id, parent, name, kind, rev, size, mode, mtime)"
                   " VALUES (?, ?, ?, 'f', 'file', 1, 0, 420, 0)", (ns, "1" * 32, "0" * 32))
        tx.execute("INSERT INTO members (ns, user_id, role) VALUES (?, ?, 'viewer')",
                   (ns, member))
    with pytest.raises(Forbidden), db.transaction() as tx:
        links.create(tx, member, ns, "1" * 32, 60, None, 1000)
    with db.transaction() as tx:
        tx.execute("UPDATE members SET role = 'editor' WHERE ns = ? AND user_id = ?",
                   (ns, member))
        token, _ = links.create(tx, member, ns, "1" * 32, 60, None, 1000)
        found = links.resolve(tx, token, 1001)
        assert found is not None
        assert found.entry == "1" * 32
        tx.execute("UPDATE members SET role = 'viewer' WHERE ns = ? AND user_id = ?",
                   (ns, member))
        assert links.resolve(tx, token, 1001) is None
        owners_token, _ = links.create(tx, owner, ns, "1" * 32, 60, None, 1000)
        assert links.resolve(tx, owners_token, 1059) is not None
        assert links.resolve(tx, owners_token, 1060) is None  # expired
    with db.transaction() as tx:  # and gone
        assert not tx.execute("SELECT 1 FROM links WHERE user_id = ?", (owner,))
    store.close()


def test_a_database_made_before_links_gains_their_tables_on_open(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    db = SQLiteDatabase(path)
    with db.transaction() as tx:  # as a database of the version before links
        tx.execute("DROP TABLE links")
        tx.execute("DROP TABLE uploads")
    db.close()
    again = SQLiteDatabase(path)
    with again.transaction(False) as tx:
        tables = {r[0] for r in tx.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"links", "uploads"} <= tables
        assert tx.execute("SELECT value FROM meta WHERE key = 'schema'") == [("1",)]
    again.close()
