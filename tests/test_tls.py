"""TLS: ``loft serve --tls-cert --tls-key``, ``loft login https://… --ca``, and plain
http only to loopback.

A certificate authority and a server certificate for 127.0.0.1 are made on the fly
(``trustme``); the server runs as a user runs it, and every device command, the mount
included, talks to it over https with that CA.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from backend.errors import LocalError
from tests.conftest import Server, Stores, check_device, detach, loft
from tools.home import server_url
from tools.localserver import free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, authority = where / "chain.pem", where / "key.pem", where / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    authority.write_bytes(ca.cert_pem.bytes())
    return chain, key, authority


@pytest.fixture(scope="module")
def tls_server(
    tls_files: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = Server(Stores(tmp_path_factory.mktemp("tls-server") / "data"), tls=tls_files)
    srv.start()
    srv.add_user("alice")
    yield srv
    srv.stop()


def test_a_device_logs_in_over_https_with_its_ca_and_works_there(
    tls_server: Server, tls_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert tls_server.url.startswith("https://")
    tls_server.login("alice", home)
    device = json.loads((home / "device.json").read_text())
    assert device["server"] == tls_server.url
    assert device["ca"] == str(tls_files[2])
    (tmp_path / "hello.txt").write_bytes(b"over tls\n")
    put = loft("put", str(tmp_path / "hello.txt"), "/hello.txt", home=home)
    assert put.returncode == 0, put.stderr
    got = loft("get", "/hello.txt", str(tmp_path / "back.txt"), home=home)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.txt").read_bytes() == b"over tls\n"


def test_a_mount_syncs_over_https(tls_server: Server, tmp_path: Path) -> None:
    home, mnt = tmp_path / "home", tmp_path / "mnt"
    tls_server.login("alice", home, device="tls-mount")
    mnt.mkdir()
    result = loft("mount", str(mnt), home=home)
    assert result.returncode == 0, result.stderr
    try:
        (mnt / "from-mount.txt").write_bytes(b"sealed and sent over tls\n")
        unmounted = loft("unmount", str(mnt), home=home)  # pushes what is pending first
        assert unmounted.returncode == 0, unmounted.stderr
    finally:
        detach(mnt)
    assert check_device(home) == ""
    got = loft("get", "/from-mount.txt", str(tmp_path / "back.txt"), home=home)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.txt").read_bytes() == b"sealed and sent over tls\n"


def test_the_server_offers_http2_and_http1_by_alpn(
    tls_server: Server, tls_files: tuple[Path, Path, Path]
) -> None:
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        context = ssl.create_default_context(cafile=tls_files[2])
        context.set_alpn_protocols(offered)
        with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == chosen


def test_a_login_without_the_ca_is_refused_in_one_line(
    tls_server: Server, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    result = loft("login", tls_server.url, "--user", "alice", home=home)
    assert result.returncode == 1
    assert "certificate" in result.stderr.lower(), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (home / "device.json").exists()


def test_plain_http_to_another_host_is_refused_before_any_connection(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = loft("login", "http://192.0.2.1:8470", "--user", "alice", home=home)
    assert result.returncode == 1
    assert "refusing plain http to 192.0.2.1" in result.stderr, result.stderr
    assert not (home / "device.json").exists()


@pytest.mark.parametrize(
    ("typed", "insecure", "url"),
    [
        ("files.example.org", False, "https://files.example.org"),
        ("files.example.org:8470/", False, "https://files.example.org:8470"),
        ("127.0.0.1:8470", False, "http://127.0.0.1:8470"),
        ("localhost:8470", False, "http://localhost:8470"),
        ("http://[::1]:8470", False, "http://[::1]:8470"),
        ("https://10.0.0.5", False, "https://10.0.0.5"),
        ("http://10.0.0.5:8470", True, "http://10.0.0.5:8470"),
    ],
)
def test_server_urls_mean_https_unless_on_loopback(typed: str, insecure: bool, url: str) -> None:
    assert server_url(typed, insecure) == url


@pytest.mark.parametrize("typed", ["http://10.0.0.5:8470", "http://files.example.org",
                                   "ftp://files.example.org", "https://:8470"])
def test_server_urls_that_would_leak_or_mean_nothing_are_refused(typed: str) -> None:
    with pytest.raises(LocalError):
        server_url(typed)


def test_serve_with_a_bad_certificate_or_half_the_pair_fails_in_one_line(
    tls_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    port = free_port()  # both fail before they listen
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    for tls in (["--tls-cert", str(bad), "--tls-key", str(tls_files[1])],
                ["--tls-cert", str(tls_files[0])]):
        result = loft("serve", "--data", str(data), "--listen", f"127.0.0.1:{port}", *tls,
                      timeout=30)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "tls" in result.stderr.lower(), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
