"""The web page over HTTP, against a real ``loft serve`` on every back end: sessions
and CSRF, what headers protect the app from the files it serves, bad paths, uploads
(resumable, within quota) and downloads with ranges. Each refused request is checked
to have changed nothing."""

from __future__ import annotations

import io
import itertools
import os
import re
import zipfile
from collections.abc import Iterator

import pytest

from tests.conftest import PASSWORD, Device, Server, loft, running_server
from tests.web_client import WebSession

_names = itertools.count()

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This layer over the embedded default only: both back ends are proven under the
    same routes by test_api and test_stores."""
    yield from running_server(tmp_path_factory, "sqlite-dir", "web")


@pytest.fixture
def new_session(server: Server) -> Iterator[WebSession]:
    """A signed-in session of a fresh user."""
    user = f"w{os.getpid()}n{next(_names)}"
    server.add_user(user)
    session = WebSession(server.url)
    assert session.sign_in(user).status_code == 303
    yield session
    session.close()


def test_pages_need_a_session_and_a_wrong_password_is_refused(server: Server) -> None:
    user = f"w{os.getpid()}n{next(_names)}"
    server.add_user(user)
    web = WebSession(server.url)
    assert web.http.get("/files/docs/").headers["location"] == "/signin?next=/files/docs/"
    refused = web.sign_in(user, "not the password")
    assert refused.status_code == 401
    assert "Wrong user name or password" in refused.text
    assert "loft_session" not in refused.headers.get("set-cookie", "")
    signed = web.sign_in(user)
    assert signed.status_code == 303
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert web.http.get("/files/").status_code == 200
    web.close()


def test_sign_in_is_throttled_like_the_api(server: Server) -> None:
    user = f"w{os.getpid()}n{next(_names)}"
    server.add_user(user)
    web = WebSession(server.url)
    answers = [web.sign_in(user, "wrong").status_code for _ in range(7)]
    assert answers[:5] == [401] * 5
    assert answers[-1] == 429
    barred = web.sign_in(user)  # the right password, while barred: refused unchecked
    assert barred.status_code == 429
    assert int(barred.headers["retry-after"]) >= 1
    web.close()


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(
    new_session: WebSession,
) -> None:
    web = new_session
    assert web.post("/act/mkdir", csrf="", path="/", name="a").status_code == 403
    assert web.post("/act/mkdir", csrf="0" * 64, path="/", name="b").status_code == 403
    forged_origin = web.http.post("/act/mkdir", data={"csrf": web.csrf, "path": "/", "name": "c"},
                                  headers={"Origin": "https://evil.example"})
    assert forged_origin.status_code == 403
    started = web.http.post("/upload", json={"path": "/d.txt", "size": 1})
    assert started.status_code == 403
    listing = web.listing()
    assert all(f"/files/{name}/" not in listing for name in "abc")
    assert "d.txt" not in listing
    assert web.post("/act/mkdir", path="/", name="a").status_code == 303
    assert "/files/a/" in web.listing()


def test_another_users_session_reaches_none_of_my_files(
    server: Server, new_session: WebSession,
) -> None:
    mine = new_session
    assert mine.upload("/secret.txt", b"mine alone").status_code == 200
    other_user = f"w{os.getpid()}n{next(_names)}"
    server.add_user(other_user)
    other = WebSession(server.url)
    other.sign_in(other_user)
    assert other.http.get("/content/secret.txt").status_code == 404
    csrf = mine.csrf
    started = mine.api("POST", "/upload", csrf, json={"path": "/x.bin", "size": 4})
    upload_id = started.json()["id"]
    theirs = other.api("PUT", f"/upload/{upload_id}?offset=0", other.csrf, content=b"evil")
    assert theirs.status_code == 404
    # My CSRF token is no good with their session, nor theirs with mine.
    assert other.post("/act/delete", csrf=csrf, path="/secret.txt").status_code == 403
    assert mine.http.get("/content/secret.txt").content == b"mine alone"
    other.close()


def test_uploaded_html_is_an_attachment_and_pages_carry_a_strict_csp(
    new_session: WebSession,
) -> None:
    web = new_session
    page = web.http.get("/files/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script anywhere
    for name, body in (("evil.html", b"<script>alert(1)</script>"),
                       ("evil.svg", b"<svg onload='alert(1)'/>"),
                       ("notes.txt", b"plain"), ("pic.png", b"\x89PNG")):
        assert web.upload(f"/{name}", body).status_code == 200
    html = web.http.get("/content/evil.html")
    assert html.headers["content-disposition"].startswith("attachment;")
    assert html.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in html.headers["content-security-policy"]
    assert web.http.get("/content/evil.svg").headers["content-disposition"].startswith(
        "attachment;")
    text = web.http.get("/content/notes.txt")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.headers["content-disposition"].startswith("inline;")
    assert web.http.get("/content/pic.png").headers["content-disposition"].startswith("inline;")
    forced = web.http.get("/content/notes.txt?download=1")
    assert forced.headers["content-disposition"].startswith("attachment;")


@pytest.mark.parametrize(
    ("route", "fields"),
    [("/act/mkdir", {"path": "/", "name": ".."}),
     ("/act/mkdir", {"path": "/../..", "name": "x"}),
     ("/act/mkdir", {"path": "/", "name": "nul\0name"}),
     ("/act/mkdir", {"path": "/", "name": "n" * 256}),
     ("/act/move", {"path": "/keep", "to": "/../keep"}),
     ("/act/delete", {"path": "/keep/../.."})],
)
def test_bad_paths_are_refused_400(
    new_session: WebSession, route: str, fields: dict[str, str],
) -> None:
    web = new_session
    assert web.post("/act/mkdir", path="/", name="keep").status_code == 303
    before = web.listing()
    assert web.post(route, **fields).status_code == 400
    assert web.listing() == before
    assert web.http.get("/files/keep/%2e%2e/%2e%2e/").status_code == 400
    assert web.http.get("/content/a%00b").status_code == 400


def test_an_upload_beyond_quota_is_refused_507_and_nothing_is_committed(
    server: Server,
) -> None:
    user = f"w{os.getpid()}n{next(_names)}"
    result = loft("user", "add", user, *server.stores.args(), "--quota", "2M")
    assert result.returncode == 0, result.stderr
    web = WebSession(server.url)
    web.sign_in(user)
    refused = web.upload("/big.bin", os.urandom(6 << 20), piece=1 << 20)
    assert refused.status_code == 507
    assert refused.json()["error"] == "quota_exceeded"
    assert "big.bin" not in web.listing()
    assert web.upload("/small.bin", b"fits").status_code == 200
    web.close()


def test_an_upload_resumes_from_the_offset_the_server_reports(new_session: WebSession) -> None:
    web, csrf = new_session, new_session.csrf
    data = os.urandom(40 << 20)  # three pieces, each cut into chunks as it arrives
    upload_id = web.api("POST", "/upload", csrf, json={"path": "/r/big.bin",
                                                       "size": len(data)}).json()["id"]
    first = web.api("PUT", f"/upload/{upload_id}?offset=0", csrf, content=data[: 16 << 20])
    assert first.json() == {"offset": 16 << 20}
    again = web.api("PUT", f"/upload/{upload_id}?offset=0", csrf, content=data[: 16 << 20])
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    early = web.api("POST", f"/upload/{upload_id}/finish", csrf)
    assert early.status_code == 409
    offset = web.api("GET", f"/upload/{upload_id}", csrf).json()["offset"]
    while offset < len(data):
        offset = web.api("PUT", f"/upload/{upload_id}?offset={offset}", csrf,
                         content=data[offset: offset + (16 << 20)]).json()["offset"]
    assert web.api("POST", f"/upload/{upload_id}/finish", csrf).status_code == 200
    assert web.http.get("/content/r/big.bin").content == data
    # Uploading the same path again makes a new version of the file.
    assert web.upload("/r/big.bin", b"v2").status_code == 200
    assert web.http.get("/content/r/big.bin").content == b"v2"
    assert web.http.get("/versions/r/big.bin").text.count("Download") == 2


def test_downloads_answer_ranges_and_folders_come_as_zips(new_session: WebSession) -> None:
    web = new_session
    data = os.urandom(5 << 20)
    assert web.upload("/z/a.bin", data).status_code == 200
    assert web.upload("/z/sub/b.txt", b"bee").status_code == 200
    part = web.http.get("/content/z/a.bin", headers={"Range": "bytes=4194000-4194999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 4194000-4194999/{len(data)}"
    assert part.content == data[4194000:4195000]
    tail = web.http.get("/content/z/a.bin", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == data[-10:]
    past = web.http.get("/content/z/a.bin", headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(data)}"
    archive = zipfile.ZipFile(io.BytesIO(web.http.get("/zip/z").content))
    assert sorted(archive.namelist()) == ["a.bin", "sub/", "sub/b.txt"]
    assert archive.read("a.bin") == data
    assert archive.read("sub/b.txt") == b"bee"


def test_versions_download_and_restore(new_session: WebSession) -> None:
    web = new_session
    assert web.upload("/v.txt", b"one").status_code == 200
    assert web.upload("/v.txt", b"two").status_code == 200
    page = web.http.get("/versions/v.txt").text
    old = page.split('name="rev" value="')[1].split('"')[0]
    assert web.http.get(f"/content/v.txt?rev={old}").content == b"one"
    assert web.post("/act/restore", path="/v.txt", rev=old).status_code == 303
    assert web.http.get("/content/v.txt").content == b"one"
    assert web.http.get("/versions/v.txt").text.count("Download") == 3


def test_rename_move_and_delete(new_session: WebSession) -> None:
    web = new_session
    assert web.upload("/m/a.txt", b"a").status_code == 200
    assert web.post("/act/mkdir", path="/", name="n").status_code == 303
    assert web.post("/act/move", path="/m/a.txt", to="/n/b.txt").status_code == 303
    assert web.http.get("/content/n/b.txt").content == b"a"
    assert web.http.get("/content/m/a.txt").status_code == 404
    assert web.upload("/m/c.txt", b"c").status_code == 200
    taken = web.post("/act/move", path="/m/c.txt", to="/n/b.txt")
    assert taken.status_code == 409
    assert web.http.get("/content/n/b.txt").content == b"a"
    assert web.post("/act/delete", path="/m").status_code == 303
    assert web.http.get("/files/m/").status_code == 404


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\t/evil.example",
                                    "/\\evil.example"])
def test_sign_in_never_sends_the_browser_to_another_site(server: Server, target: str) -> None:
    user = f"w{os.getpid()}n{next(_names)}"
    server.add_user(user)
    web = WebSession(server.url)
    nonce = web.http.get("/signin").text.split('name="nonce" value="')[1].split('"')[0]
    answer = web.http.post("/signin", data={"nonce": nonce, "user": user,
                                            "password": PASSWORD, "next": target})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/files/"
    web.close()


def test_a_web_session_is_a_device_that_loft_devices_revoke_ends(
    server: Server, device: Device,
) -> None:
    web = WebSession(server.url)
    assert web.sign_in(device.user).status_code == 303
    names = re.findall(r"^(web-[0-9a-f]{6})\s", device.run("devices").stdout, re.M)
    assert len(names) == 1
    assert web.http.get("/files/").status_code == 200
    assert device.run("devices", "revoke", names[0]).returncode == 0
    assert web.http.get("/files/").headers["location"] == "/signin?next=/files/"
    refused = web.http.post("/act/mkdir", data={"csrf": "x", "path": "/", "name": "late"})
    assert refused.status_code == 401
    web.close()


def test_a_folder_is_shared_and_unshared_from_the_page(
    server: Server, new_session: WebSession,
) -> None:
    web = new_session
    friend = f"friend{os.getpid()}x{next(_names)}"
    server.add_user(friend)
    assert web.post("/act/mkdir", path="/", name="team").status_code == 303
    assert web.post("/act/share", csrf="", path="/team", user=friend).status_code == 403
    shared = web.post("/act/share", path="/team", user=friend, role="viewer")
    assert shared.status_code == 303, shared.text
    page = web.listing("/team/")
    assert f"{friend} (viewer)" in page
    theirs = WebSession(server.url)
    try:
        assert theirs.sign_in(friend).status_code == 303
        assert "/files/team/" in theirs.listing()
        refused = theirs.post("/act/mkdir", path="/team", name="x")
        assert refused.status_code == 403, refused.text
        assert web.post("/act/unshare", path="/team", user=friend).status_code == 303
        assert "/files/team/" not in theirs.listing()
    finally:
        theirs.close()
    assert web.post("/act/share", path="/team", user="nobody-here").status_code == 404
