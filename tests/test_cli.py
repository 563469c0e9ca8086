"""The ``loft`` command line end to end: a real server, the real CLI in subprocesses.

Most tests share one logged-in device per back end (``dev``): a user add and a login
cost about a second each, and every test works in a remote directory of its own
(``rdir``), so they do not see each other. Setup that is not under test (creating
that directory, reading the journal head) goes through the API in-process.

A refused command must print exactly one line on stderr, starting ``loft: ``, exit
non-zero, and change nothing: for remote state that means the namespace's journal
head did not move (every change appends to it), for local state that no file
appeared.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.config
import httpx
import pytest
import trio

from backend import protocol as p
from backend.chunking import plan_file
from backend.client import Client
from backend.errors import NotFound
from tests.conftest import (
    PASSWORD,
    ROOT,
    Device,
    Server,
    Stores,
    free_port,
    loft,
    loft_env,
    make_stores,
)
from tools.localserver import loft_argv

T = TypeVar("T")

KiB = 1 << 10
MiB = 1 << 20
PIECE = 16 * MiB
"""Big random files are written (and compared) this much at a time."""

_names = itertools.count()


# --- helpers -----------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must succeed quietly on stderr."""
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a command that must fail cleanly."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("loft: "), result.stderr
    return lines[0]


_UPLOADED = re.compile(r"\((\d+(?:\.\d+)?) (B|KiB|MiB|GiB|TiB) uploaded\)")
_UNITS = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": 1 << 30, "TiB": 1 << 40}
ROUNDING = 0.05 * MiB
"""``loft put`` prints sizes to one decimal: a figure is within this of the truth."""


def uploaded(stdout: str) -> float:
    """The byte count ``loft put`` reports as uploaded (to its printed precision)."""
    found = _UPLOADED.search(stdout)
    assert found is not None, stdout
    return float(found.group(1)) * _UNITS[found.group(2)]


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for start in range(0, size, PIECE):
            f.write(os.urandom(min(PIECE, size - start)))


def digest(path: Path) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            h.update(piece)
    return h.hexdigest()


def api(device: Device, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run one API call as ``device`` from a synchronous test."""

    async def run() -> T:
        async with device.client() as client:
            return await fn(client)

    return trio.run(run)


def head(device: Device) -> int:
    """The journal head of the device's root namespace."""

    async def fn(client: Client) -> int:
        who = await client.whoami()
        return next(int(n["head"]) for n in who["namespaces"] if n["ns"] == device.root_ns)

    return api(device, fn)


def entry(device: Device, path: str) -> dict[str, Any] | None:
    async def fn(client: Client) -> dict[str, Any] | None:
        try:
            answer = await client.lookup(device.root_ns, path)
        except NotFound:
            return None
        found: dict[str, Any] = answer["entry"]
        return found

    return api(device, fn)


def names(device: Device, path: str) -> list[str]:
    """``loft ls PATH``, one name per line."""
    return ok(device.run("ls", path)).splitlines()


def mkdir_api(device: Device, path: str) -> None:
    parent = entry(device, path.rsplit("/", 1)[0] or "/")
    assert parent is not None
    op = {
        "op": "mkdir",
        "op_id": p.new_id(),
        "entry": p.new_id(),
        "parent": parent["id"],
        "name": path.rsplit("/", 1)[1],
        "mode": 0o755,
        "mtime": time.time_ns(),
    }
    api(device, lambda client: client.commit(device.root_ns, [op]))


def kind_of(server: Server) -> str:
    return "sqlite-dir" if server.stores.metadata is None else "postgres-s3"


def nothing_listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Device:
    """One logged-in device for the module's tests on one back end."""
    user = f"cli{os.getpid()}"
    server.add_user(user)
    home = tmp_path_factory.mktemp("cli-home")
    server.login(user, home)
    return Device(server, user, home)


@pytest.fixture
def rdir(dev: Device) -> str:
    """A fresh, empty remote directory for one test."""
    path = f"/t{next(_names)}"
    mkdir_api(dev, path)
    return path


@pytest.fixture
def own_server(server: Server, tmp_path: Path) -> Iterator[Server]:
    """A throwaway server on the same kind of back end, free to stop or corrupt."""
    srv = Server(make_stores(kind_of(server), tmp_path / "own" / "data"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def own_device(own_server: Server, tmp_path: Path) -> Device:
    user = f"own{os.getpid()}"
    own_server.add_user(user)
    home = tmp_path / "own-home"
    own_server.login(user, home)
    return Device(own_server, user, home)


# --- put and get -------------------------------------------------------------------


def _content(size: int) -> bytes:
    """Random for small sizes; above 64 KiB a 251-byte random period with no cut point.

    Content-defined chunking finds no cut point in this pattern, so every chunk is cut
    at the 4 MiB maximum: the sizes around 4 MiB land exactly on the chunk boundary.
    The prime period makes any misplaced chunk visible in the bytes.
    """
    if size <= 64 * KiB:
        return os.urandom(size)
    period = random.Random(size).randbytes(251)
    return (period * (size // 251 + 1))[:size]


@pytest.mark.parametrize(
    "size",
    [0, 1000, p.MAX_CHUNK - 1, p.MAX_CHUNK, p.MAX_CHUNK + 1],
    ids=["empty", "small", "4MiB-1", "4MiB", "4MiB+1"],
)
def test_put_then_get_is_byte_identical(dev: Device, rdir: str, tmp_path: Path, size: int) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    src.write_bytes(_content(size))
    lengths = [piece.length for piece in plan_file(src)]
    assert max(lengths, default=0) == min(size, p.MAX_CHUNK)  # the boundary is exercised

    ok(dev.run("put", str(src), f"{rdir}/f"))
    ok(dev.run("get", f"{rdir}/f", str(back)))

    assert back.read_bytes() == src.read_bytes()


@pytest.mark.slow
def test_put_then_get_of_256_mib_is_byte_identical(dev: Device, rdir: str, tmp_path: Path) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    write_random(src, 256 * MiB)

    ok(dev.run("put", str(src), f"{rdir}/big"))
    ok(dev.run("get", f"{rdir}/big", str(back)))

    assert back.stat().st_size == 256 * MiB
    assert digest(back) == digest(src)


def test_second_put_of_same_content_uploads_nothing(dev: Device, rdir: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_random(src, 3 * MiB)
    first = ok(dev.run("put", str(src), f"{rdir}/one"))
    assert uploaded(first) == pytest.approx(3 * MiB, abs=ROUNDING)

    second = ok(dev.run("put", str(src), f"{rdir}/two"))

    assert "(0 B uploaded)" in second
    ok(dev.run("get", f"{rdir}/two", str(tmp_path / "back")))
    assert (tmp_path / "back").read_bytes() == src.read_bytes()


def test_inserting_one_byte_near_the_start_reuploads_only_a_few_chunks(
    dev: Device, rdir: str, tmp_path: Path
) -> None:
    size = 64 * MiB
    src = tmp_path / "src"
    write_random(src, size)
    ok(dev.run("put", str(src), f"{rdir}/f"))
    data = src.read_bytes()
    src.write_bytes(data[:1000] + b"!" + data[1000:])

    out = ok(dev.run("put", str(src), f"{rdir}/f"))

    assert 0 < uploaded(out) < 0.1 * size
    ok(dev.run("get", f"{rdir}/f", str(tmp_path / "back")))
    assert digest(tmp_path / "back") == digest(src)


async def test_interrupted_put_resumes_with_only_the_missing_chunks(
    dev: Device, rdir: str, tmp_path: Path
) -> None:
    size = 64 * MiB
    src = tmp_path / "src"
    write_random(src, size)
    lengths = {piece.id: piece.length for piece in plan_file(src)}
    ids = list(lengths)
    proc = await trio.lowlevel.open_process(
        loft_argv("put", str(src), f"{rdir}/f"),
        env=loft_env(dev.home),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with dev.client() as client:
            with trio.fail_after(60):
                while len(await client.missing(ids)) == len(ids):
                    assert proc.poll() is None, "the put ended before any chunk arrived"
                    await trio.sleep(0.005)
    finally:
        proc.kill()
        await proc.wait()
    assert proc.returncode == -9
    await trio.sleep(0.3)  # let the server finish chunks whose body it had whole
    async with dev.client() as client:
        missing = await client.missing(ids)
        with pytest.raises(NotFound):
            await client.lookup(dev.root_ns, f"{rdir}/f")  # the put did not commit
    assert 0 < len(missing) < len(ids)
    rest = sum(lengths[cid] for cid in missing)

    out = ok(await trio.to_thread.run_sync(dev.run, "put", str(src), f"{rdir}/f"))

    assert uploaded(out) <= rest + ROUNDING
    assert uploaded(out) < size
    back = tmp_path / "back"
    ok(await trio.to_thread.run_sync(dev.run, "get", f"{rdir}/f", str(back)))
    assert digest(back) == digest(src)


# --- mkdir, ls, mv, rm -------------------------------------------------------------


def test_mkdir_parents_creates_every_missing_ancestor(dev: Device, rdir: str) -> None:
    ok(dev.run("mkdir", "-p", f"{rdir}/a/b/c"))

    assert names(dev, rdir) == ["a/"]
    assert names(dev, f"{rdir}/a") == ["b/"]
    assert names(dev, f"{rdir}/a/b") == ["c/"]
    assert names(dev, f"{rdir}/a/b/c") == []


def test_mkdir_parents_of_an_existing_directory_changes_nothing(dev: Device, rdir: str) -> None:
    before = head(dev)

    ok(dev.run("mkdir", "-p", rdir))

    assert head(dev) == before


def test_mkdir_refuses_an_existing_name(dev: Device, rdir: str) -> None:
    before = head(dev)

    line = refused(dev.run("mkdir", rdir))

    assert "exists" in line
    assert head(dev) == before


def test_mkdir_without_parents_refuses_a_missing_parent(dev: Device, rdir: str) -> None:
    before = head(dev)

    line = refused(dev.run("mkdir", f"{rdir}/no/such"))

    assert f"{rdir}/no" in line
    assert head(dev) == before


def test_ls_lists_names_sorted_with_a_slash_after_directories(
    dev: Device, rdir: str, tmp_path: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    ok(dev.run("put", str(src), f"{rdir}/b.txt"))
    ok(dev.run("mkdir", f"{rdir}/c"))
    ok(dev.run("put", str(src), f"{rdir}/a.txt"))

    assert names(dev, rdir) == ["a.txt", "b.txt", "c/"]
    assert names(dev, f"{rdir}/a.txt") == ["a.txt"]


def test_ls_long_shows_mode_size_and_time(dev: Device, rdir: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"y" * 12345)
    src.chmod(0o640)
    os.utime(src, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    ok(dev.run("put", str(src), f"{rdir}/data.bin"))
    ok(dev.run("mkdir", f"{rdir}/sub"))

    lines = ok(dev.run("ls", "-l", rdir)).splitlines()

    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(1_700_000_000))
    assert len(lines) == 2
    assert lines[0].split() == ["-rw-r-----", "12345", *when.split(), "data.bin"]
    mode, size, _day, _time, name = lines[1].split()
    assert (mode, size, name) == ("drwxr-xr-x", "0", "sub/")


def test_mv_renames_a_file_keeping_its_content(dev: Device, rdir: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"renamed content")
    ok(dev.run("put", str(src), f"{rdir}/old"))
    before = entry(dev, f"{rdir}/old")

    ok(dev.run("mv", f"{rdir}/old", f"{rdir}/new"))

    assert names(dev, rdir) == ["new"]
    after = entry(dev, f"{rdir}/new")
    assert after is not None
    assert before is not None
    assert after["id"] == before["id"]  # the same entry, with its history
    ok(dev.run("get", f"{rdir}/new", str(tmp_path / "back")))
    assert (tmp_path / "back").read_bytes() == b"renamed content"


def test_mv_into_an_existing_directory_keeps_the_name(
    dev: Device, rdir: str, tmp_path: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"moving")
    ok(dev.run("put", str(src), f"{rdir}/f.txt"))
    ok(dev.run("mkdir", f"{rdir}/d"))

    ok(dev.run("mv", f"{rdir}/f.txt", f"{rdir}/d"))

    assert names(dev, rdir) == ["d/"]
    assert names(dev, f"{rdir}/d") == ["f.txt"]


def test_mv_over_an_existing_file_replaces_it(dev: Device, rdir: str, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"winner")
    (tmp_path / "b").write_bytes(b"loser")
    ok(dev.run("put", str(tmp_path / "a"), f"{rdir}/a"))
    ok(dev.run("put", str(tmp_path / "b"), f"{rdir}/b"))

    ok(dev.run("mv", f"{rdir}/a", f"{rdir}/b"))

    assert names(dev, rdir) == ["b"]
    ok(dev.run("get", f"{rdir}/b", str(tmp_path / "back")))
    assert (tmp_path / "back").read_bytes() == b"winner"


def test_rm_removes_a_file(dev: Device, rdir: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"gone soon")
    ok(dev.run("put", str(tmp_path / "f"), f"{rdir}/f"))
    ok(dev.run("put", str(tmp_path / "f"), f"{rdir}/keep"))

    ok(dev.run("rm", f"{rdir}/f"))

    assert names(dev, rdir) == ["keep"]


def test_rm_refuses_a_non_empty_directory(dev: Device, rdir: str, tmp_path: Path) -> None:
    ok(dev.run("mkdir", "-p", f"{rdir}/d/inner"))
    before = head(dev)

    line = refused(dev.run("rm", f"{rdir}/d"))

    assert "not empty" in line
    assert head(dev) == before
    assert names(dev, f"{rdir}/d") == ["inner/"]


def test_rm_r_removes_a_directory_and_all_it_holds(dev: Device, rdir: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"deep")
    ok(dev.run("mkdir", "-p", f"{rdir}/d/e"))
    ok(dev.run("put", str(tmp_path / "f"), f"{rdir}/d/e/f"))
    ok(dev.run("mkdir", f"{rdir}/other"))

    ok(dev.run("rm", "-r", f"{rdir}/d"))

    assert names(dev, rdir) == ["other/"]
    assert entry(dev, f"{rdir}/d/e/f") is None


# --- refusals: one line, non-zero, nothing changed ----------------------------------


def test_login_with_a_wrong_password_is_refused(dev: Device, tmp_path: Path) -> None:
    home = tmp_path / "home"

    line = refused(
        loft("login", dev.server.url, "--user", dev.user, home=home, password="not the password")
    )

    assert "password" in line
    assert not (home / "device.json").exists()


def test_login_as_an_unknown_user_is_refused(server: Server, tmp_path: Path) -> None:
    home = tmp_path / "home"

    refused(loft("login", server.url, "--user", "nobody-at-all", home=home))

    assert not (home / "device.json").exists()


def test_login_to_a_server_that_is_down_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"

    line = refused(loft("login", f"http://127.0.0.1:{free_port()}", "--user", "x", home=home))

    assert "cannot reach" in line
    assert not (home / "device.json").exists()


def test_commands_of_a_device_whose_server_stopped_are_refused(
    own_server: Server, own_device: Device, tmp_path: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"never sent")
    own_server.stop()

    for args in (["put", str(src), "/f"], ["mkdir", "/d"]):
        line = refused(own_device.run(*args))
        assert "cannot reach the server" in line, args

    own_server.start()
    assert names(own_device, "/") == []
    assert head(own_device) == 0


def test_put_of_a_missing_local_file_is_refused(dev: Device, rdir: str, tmp_path: Path) -> None:
    before = head(dev)

    line = refused(dev.run("put", str(tmp_path / "absent"), f"{rdir}/f"))

    assert "absent" in line
    assert head(dev) == before


@pytest.mark.parametrize("command", ["get", "ls", "rm", "mv"])
def test_a_missing_remote_path_is_refused(
    dev: Device, rdir: str, tmp_path: Path, command: str
) -> None:
    args = {
        "get": ["get", f"{rdir}/absent", str(tmp_path / "out")],
        "ls": ["ls", f"{rdir}/absent"],
        "rm": ["rm", f"{rdir}/absent"],
        "mv": ["mv", f"{rdir}/absent", f"{rdir}/elsewhere"],
    }[command]
    before = head(dev)

    line = refused(dev.run(*args))

    assert "absent" in line
    assert head(dev) == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["put", "mkdir", "mv", "get"])
def test_a_path_climbing_above_the_root_is_refused(
    dev: Device, rdir: str, tmp_path: Path, command: str
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    if command == "mv":
        ok(dev.run("put", str(src), f"{rdir}/f"))
    args = {
        "put": ["put", str(src), "/../escaped"],
        "mkdir": ["mkdir", "-p", f"{rdir}/../../escaped"],
        "mv": ["mv", f"{rdir}/f", "/../escaped"],
        "get": ["get", f"{rdir}/../../etc/passwd", str(tmp_path / "out")],
    }[command]
    before = head(dev)

    line = refused(dev.run(*args))

    assert "leaves the workspace" in line
    assert head(dev) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["mv", "put"])
def test_a_missing_directory_named_with_a_trailing_slash_is_refused(
    dev: Device, rdir: str, tmp_path: Path, command: str
) -> None:
    """``loft mv /a /b/`` (or ``put``) with no ``/b`` must not make a file named ``b``."""
    (tmp_path / "a").write_bytes(b"stay")
    ok(dev.run("put", str(tmp_path / "a"), f"{rdir}/a"))
    source = f"{rdir}/a" if command == "mv" else str(tmp_path / "a")
    before = head(dev)

    line = refused(dev.run(command, source, f"{rdir}/b/"))

    assert f"{rdir}/b/" in line
    assert head(dev) == before
    assert names(dev, rdir) == ["a"]


def test_commands_without_a_login_are_refused(server: Server, tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()

    for args in (["ls", "/"], ["mkdir", "/d"], ["status"]):
        line = refused(loft(*args, home=home))
        assert "not logged in" in line, args

    assert list(home.iterdir()) == []


def test_user_add_of_an_existing_user_is_refused_and_keeps_the_password(
    dev: Device, tmp_path: Path
) -> None:
    stores = dev.server.stores.args()

    line = refused(loft("user", "add", dev.user, *stores, password="another password"))

    assert "already exists" in line
    login = ["login", dev.server.url, "--user", dev.user]
    home = tmp_path / "home"
    refused(loft(*login, home=home, password="another password"))
    ok(loft(*login, home=home, password=PASSWORD))


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "in-use", "192.0.2.1:8"])
def test_serve_refuses_a_bad_listen_address(server: Server, tmp_path: Path, listen: str) -> None:
    if listen == "in-use":
        listen = f"127.0.0.1:{server.port}"
    data = tmp_path / "data"

    line = refused(loft("serve", "--data", str(data), "--listen", listen, timeout=60))

    assert "--listen" in line
    assert not data.exists()
    assert httpx.get(f"{server.url}/v1/health").status_code == 200


@pytest.mark.parametrize(
    ("option", "url", "reason"),
    [
        pytest.param("--metadata", "mysql://db/loft", "--metadata", id="metadata-scheme"),
        pytest.param(
            "--metadata",
            "postgresql://loft@127.0.0.1:{port}/loft",
            "cannot connect to PostgreSQL",
            id="metadata-unreachable",
        ),
        pytest.param("--blocks", "ftp://host/chunks", "--blocks", id="blocks-scheme"),
        pytest.param("--blocks", "s3://", "no bucket", id="blocks-no-bucket"),
        pytest.param(
            "--blocks",
            "s3://bucket?endpoint=http://127.0.0.1:{port}",
            "object store unreachable",
            id="blocks-unreachable",
        ),
    ],
)
def test_serve_refuses_bad_store_urls(tmp_path: Path, option: str, url: str, reason: str) -> None:
    data = tmp_path / "data"
    port = free_port()
    listen = f"127.0.0.1:{port}"

    line = refused(
        loft("serve", "--data", str(data), option, url.format(port=free_port()), "--listen", listen)
    )

    assert reason in line
    assert not (data / "metadata.db").exists()
    assert nothing_listens(port)


# --- status and fsck ---------------------------------------------------------------


def test_status_shows_connected_then_offline_when_the_server_stops(
    own_server: Server, own_device: Device
) -> None:
    online = ok(own_device.run("status"))
    assert re.search(r"^state:\s+connected \(", online, re.M), online
    assert own_server.url in online

    own_server.stop()
    offline = ok(own_device.run("status"))

    assert re.search(r"^state:\s+offline \(", offline, re.M), offline


def test_fsck_reports_clean_after_a_series_of_operations(
    dev: Device, rdir: str, server: Server, tmp_path: Path
) -> None:
    (tmp_path / "a").write_bytes(os.urandom(2 * MiB))
    (tmp_path / "b").write_bytes(os.urandom(5000))
    ok(dev.run("mkdir", "-p", f"{rdir}/x/y"))
    ok(dev.run("put", str(tmp_path / "a"), f"{rdir}/x/y/a"))
    ok(dev.run("put", str(tmp_path / "b"), f"{rdir}/x/y/a"))
    ok(dev.run("put", str(tmp_path / "a"), f"{rdir}/b"))
    ok(dev.run("mv", f"{rdir}/b", f"{rdir}/x"))
    ok(dev.run("mv", f"{rdir}/x/y/a", f"{rdir}/x/b"))
    ok(dev.run("rm", "-r", f"{rdir}/x/y"))

    result = loft("fsck", *server.stores.args())

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith(": clean"), result.stdout
    assert "problem" not in result.stdout


def _corrupt(stores: Stores, cid: str) -> None:
    """Flip 16 bytes in the middle of the stored chunk, keeping its format byte."""

    def damage(sealed: bytes) -> bytes:
        middle = len(sealed) // 2
        return (
            sealed[:middle]
            + bytes(b ^ 0xFF for b in sealed[middle : middle + 16])
            + sealed[middle + 16 :]
        )

    if stores.blocks is None:
        path = stores.data / "chunks" / cid[:2] / cid[2:4] / cid
        path.write_bytes(damage(path.read_bytes()))
        return
    url = urlsplit(stores.blocks)
    s3 = boto3.client(
        "s3",
        endpoint_url=parse_qs(url.query)["endpoint"][0],
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    key = f"chunks/{cid[:2]}/{cid}"
    sealed = s3.get_object(Bucket=url.netloc, Key=key)["Body"].read()
    s3.put_object(Bucket=url.netloc, Key=key, Body=damage(sealed))


def test_fsck_reports_a_corrupted_chunk(
    own_server: Server, own_device: Device, tmp_path: Path
) -> None:
    src = tmp_path / "f"
    write_random(src, 3 * MiB)
    ok(own_device.run("put", str(src), "/f"))
    victim = plan_file(src)[1].id
    _corrupt(own_server.stores, victim)

    result = loft("fsck", *own_server.stores.args())

    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, result.stdout
    assert victim in problems[0]
    assert result.stdout.rstrip().endswith("1 problem(s)"), result.stdout
