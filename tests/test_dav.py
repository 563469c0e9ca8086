"""WebDAV under /dav/: Debian's litmus suite, content as the mount cuts it, commits, and
every bad input answered with its exact 4xx, nothing changed."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.chunking import cut_bytes
from backend.errors import Forbidden
from backend.server.dav_auth import BasicAuth
from backend.server.files import Upload
from tests.conftest import PASSWORD, Device, NewDevice, Server, Stores, check_server, loft
from tests.devices import api, journal, remote_bytes, remote_names

MiB = 1024 * 1024


def dav(device: Device, method: str, path: str, secret: str = PASSWORD,
        user: str | None = None, **kw: Any) -> httpx.Response:
    """One WebDAV request as ``device``'s user (with a password or a token)."""
    auth = (user or device.user, secret)
    return httpx.request(method, f"{device.server.url}/dav{path}", auth=auth, timeout=60, **kw)


def entry(device: Device, path: str) -> dict[str, Any]:
    found: dict[str, Any] = api(device, lambda c: c.lookup(device.root_ns, path))["entry"]
    return found


def committed_by(device: Device, path: str) -> str:
    """The device name of the last commit that changed the entry at ``path``."""
    found = entry(device, path)
    versions = api(device, lambda c: c.versions(device.root_ns, found["id"]))
    return str(versions[-1]["device"])


def test_litmus_passes_every_suite(device: Device, tmp_path: Path) -> None:
    result = subprocess.run(  # litmus writes debug.log and child.log where it runs
        ["litmus", "-k", f"{device.server.url}/dav/", device.user, PASSWORD],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    summaries = [line for line in result.stdout.splitlines() if "summary for" in line]
    assert result.returncode == 0, result.stdout[-4000:]
    suites = [s.split("`")[1].split("'")[0] for s in summaries]
    assert suites == ["basic", "copymove", "props", "locks", "http"]
    assert all(" 0 failed" in s for s in summaries), summaries
    assert "FAIL" not in result.stdout, result.stdout
    assert "WARNING" not in result.stdout, result.stdout


def test_a_put_is_cut_as_the_mount_cuts_and_read_back_by_range(device: Device) -> None:
    data = os.urandom(9 * 1024 * 1024 + 123)
    put = dav(device, "PUT", "/big.bin", content=data)
    assert put.status_code == 201
    found = entry(device, "/big.bin")
    assert put.headers["etag"] == f'"{found["rev"]}"'
    assert found["size"] == len(data)
    assert [b[0] for b in found["blocks"]] == [piece.id for piece in cut_bytes(data)]
    assert dav(device, "GET", "/big.bin").content == data
    part = dav(device, "GET", "/big.bin", headers={"Range": "bytes=4194000-4195000"})
    assert part.status_code == 206
    assert part.content == data[4194000:4195001]
    assert remote_bytes(device, "/big.bin", device.home) == data
    assert committed_by(device, "/big.bin") == "webdav"


def test_a_put_on_a_changed_base_is_refused_not_overwritten(device: Device) -> None:
    first = dav(device, "PUT", "/doc.txt", content=b"one")
    second = dav(device, "PUT", "/doc.txt", content=b"two",
                 headers={"If-Match": first.headers["etag"]})
    assert second.status_code == 204
    stale = dav(device, "PUT", "/doc.txt", content=b"three",
                headers={"If-Match": first.headers["etag"]})
    assert stale.status_code == 412
    assert dav(device, "GET", "/doc.txt").content == b"two"
    assert dav(device, "GET", "/doc.txt").headers["etag"] == second.headers["etag"]


def test_mkcol_move_copy_delete_are_commits(device: Device) -> None:
    assert dav(device, "MKCOL", "/a").status_code == 201
    assert dav(device, "PUT", "/a/f.txt", content=b"hello").status_code == 201
    chunks = entry(device, "/a/f.txt")["blocks"]
    dest = {"Destination": f"{device.server.url}/dav/b/"}
    assert dav(device, "MOVE", "/a/", headers=dest).status_code == 201
    copy_to = {"Destination": f"{device.server.url}/dav/c/"}
    assert dav(device, "COPY", "/b/", headers={**copy_to, "Depth": "infinity"}).status_code == 201
    assert entry(device, "/c/f.txt")["blocks"] == chunks  # the same chunks, nothing stored
    assert dav(device, "DELETE", "/b/").status_code == 204
    assert remote_names(device) == ["c/"]
    assert remote_names(device, "/c") == ["f.txt"]
    assert committed_by(device, "/c/f.txt") == "webdav"


def hrefs(answer: httpx.Response) -> list[str]:
    return re.findall(r"<[a-z0-9]+:href>([^<]*)</", answer.text)


def test_versions_are_read_only_views_and_a_copy_brings_one_back(device: Device) -> None:
    assert dav(device, "PUT", "/doc.txt", content=b"one").status_code == 201
    assert dav(device, "PUT", "/doc.txt", content=b"two").status_code == 204
    top = hrefs(dav(device, "PROPFIND", "/.versions/", headers={"Depth": "1"}))
    assert top[:2] == ["/dav/.versions/", "/dav/.versions/latest/"]
    assert all(re.fullmatch(r"/dav/\.versions/\d{4}-\d\d-\d\d/", h) for h in top[2:]), top
    assert dav(device, "GET", "/.versions/latest/doc.txt").content == b"two"
    listed = hrefs(dav(device, "PROPFIND", "/.versions/doc.txt/", headers={"Depth": "1"}))
    first, second = listed[1:]
    assert re.fullmatch(r"/dav/\.versions/doc\.txt/\d{4}-\d\d-\d\dT\d{6}Z%40webdav", first)
    assert httpx.get(device.server.url + first, auth=(device.user, PASSWORD)).content == b"one"
    assert httpx.get(device.server.url + second, auth=(device.user, PASSWORD)).content == b"two"
    before = journal(device)
    past = first.removeprefix("/dav")
    assert dav(device, "PUT", past, content=b"x").status_code == 403
    assert dav(device, "DELETE", past).status_code == 403
    assert journal(device) == before
    copy = dav(device, "COPY", past, headers={"Destination": f"{device.server.url}/dav/back.txt"})
    assert copy.status_code == 201
    assert dav(device, "GET", "/back.txt").content == b"one"


def test_propfind_of_the_whole_tree_is_refused(device: Device) -> None:
    for headers in ({"Depth": "infinity"}, {}):
        answer = dav(device, "PROPFIND", "/", headers=headers)
        assert answer.status_code == 403
        assert b"propfind-finite-depth" in answer.content
    assert dav(device, "PROPFIND", "/", headers={"Depth": "1"}).status_code == 207


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("PROPFIND", "/", b"<propfind xmlns='DAV:'><prop><getetag/>", 400),
    ("PROPPATCH", "/x.txt", b"<?xml version='1.0'?><propertyupdate xmlns='DAV:'>", 400),
    ("PUT", "/%2e%2e/%2e%2e/escape.txt", b"x", 400),
    ("PUT", "/nul%00name.txt", b"x", 400),
    ("PUT", "/" + "n" * 256, b"x", 400),
    ("MKCOL", "/.versions", b"", 405),
    ("PUT", "/.versions/latest/x.txt", b"x", 403),
    ("DELETE", "/.versions/latest/x.txt", b"", 403),
    ("MKCOL", "/x.txt/sub", b"", 409),
])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    device: Device, method: str, path: str, body: bytes, status: int
) -> None:
    assert dav(device, "PUT", "/x.txt", content=b"x").status_code == 201
    before = journal(device)
    headers = {"Depth": "0", "Content-Type": "application/xml"}
    assert dav(device, method, path, content=body, headers=headers).status_code == status
    assert journal(device) == before
    assert dav(device, "PROPFIND", "/", headers={"Depth": "1"}).status_code == 207


def test_an_upload_beyond_quota_is_507_and_keeps_nothing(device: Device) -> None:
    result = loft("user", "quota", device.user, "2M", *device.server.stores.args())
    assert result.returncode == 0, result.stderr
    before = journal(device)
    usage = api(device, lambda c: c.whoami())["usage"]
    answer = dav(device, "PUT", "/huge.bin", content=os.urandom(5 * 1024 * 1024))
    assert answer.status_code == 507
    assert journal(device) == before
    assert api(device, lambda c: c.whoami())["usage"] == usage
    assert dav(device, "GET", "/huge.bin").status_code == 404


def test_a_wrong_password_is_401_and_then_throttled(device: Device) -> None:
    answer = dav(device, "PROPFIND", "/", secret="wrong", headers={"Depth": "0"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith('Basic realm="Loft"')
    statuses = [dav(device, "PROPFIND", "/", secret="wrong", headers={"Depth": "0"})
                for _ in range(6)]
    assert statuses[-1].status_code == 429
    assert int(statuses[-1].headers["retry-after"]) >= 1
    right = dav(device, "PROPFIND", "/", headers={"Depth": "0"})
    assert right.status_code == 429  # barred, whatever the password


def test_a_device_token_works_until_revoked(device: Device) -> None:
    token = device.token
    assert dav(device, "PUT", "/t.txt", secret=token, content=b"t").status_code == 201
    assert committed_by(device, "/t.txt") == "dev"
    assert dav(device, "PUT", "/u.txt", secret=token, user="someone-else",
               content=b"u").status_code == 401
    assert device.run("logout").returncode == 0
    assert dav(device, "GET", "/t.txt", secret=token).status_code == 401


def test_another_users_files_are_out_of_reach(new_device: NewDevice) -> None:
    alice, bob = new_device(), new_device()
    assert dav(alice, "PUT", "/secret.txt", content=b"alice's").status_code == 201
    assert dav(bob, "GET", "/secret.txt").status_code == 404
    assert dav(bob, "PUT", "/secret.txt", secret=alice.token, content=b"x").status_code == 401
    assert dav(alice, "GET", "/secret.txt").content == b"alice's"


async def test_basic_auth_is_refused_over_plain_http_off_loopback() -> None:
    header = b"Basic " + base64.b64encode(b"alice:" + PASSWORD.encode())
    scope = {"type": "http", "scheme": "http", "client": ("192.0.2.7", 5000),
             "headers": [(b"authorization", header)]}
    with pytest.raises(Forbidden):
        await BasicAuth(None).account(scope)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_1gib_put_and_get_stream_with_bounded_server_memory(tmp_path: Path) -> None:
    server = Server(Stores(tmp_path / "data"))
    server.start()
    try:
        server.add_user("big")
        assert server.proc is not None
        sent = hashlib.sha256()

        def body() -> Iterator[bytes]:
            for _ in range(1024):
                data = os.urandom(MiB)
                sent.update(data)
                yield data

        url, auth = f"{server.url}/dav/big.bin", ("big", PASSWORD)
        assert httpx.put(url, content=body(), auth=auth, timeout=300).status_code == 201
        digest = hashlib.sha256()
        with httpx.stream("GET", url, auth=auth, timeout=300) as answer:
            for data in answer.iter_bytes():
                digest.update(data)
        assert digest.hexdigest() == sent.hexdigest()
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        peak_kib = int(next(line for line in status.splitlines()
                            if line.startswith("VmHWM:")).split()[1])
        assert peak_kib < 384 * 1024, f"the server's peak RSS was {peak_kib // 1024} MiB"
    finally:
        server.stop()
    check_server(server.stores)


@functools.cache
def stream() -> tuple[bytes, list[str]]:
    """24 MiB of random bytes (more than one cutting window) and the ids of its chunks
    as a cut of the whole gives them."""
    data = os.urandom(24 * MiB)
    return data, [piece.id for piece in cut_bytes(data)]


@settings(max_examples=6, deadline=None)
@given(sizes=st.lists(st.integers(1, 6 * MiB), min_size=1, max_size=11),
       large=st.integers(MiB, 6 * MiB))
def test_a_body_in_pieces_of_any_size_is_cut_as_the_whole(sizes: list[int], large: int) -> None:
    # Pieces of any size, one large among them each round (else 24 MiB in pieces of
    # a byte is 24 million calls, the test's whole time and nothing more proved).
    sizes = [*sizes, large]
    data, whole = stream()
    upload, at, index = Upload(), 0, 0
    while at < len(data):
        size = sizes[index % len(sizes)]
        upload.feed(data[at: at + size])
        at, index = at + size, index + 1
    upload.finish()
    assert [cid for cid, _ in upload.blocks] == whole
    assert upload.size == len(data)
