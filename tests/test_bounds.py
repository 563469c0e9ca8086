"""Bounded work per request, against a real ``loft serve`` (embedded default) on loopback.

Slow and misbehaving clients are raw sockets; the well-behaved side is ``Client`` and
httpx. The slow clients connect from 127.0.0.2 (still loopback, another address) so
that the per-address cap they fill is not the one the health probes count against.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import cbor2
import httpx
import pytest
import trio

from backend import protocol as p
from backend.server.notifier import Notifier
from tests.conftest import PASSWORD, Server, Stores, check_server

PER_ADDRESS = 8
BODY_SECONDS = 2.0


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An embedded-default server with a small per-address cap and body grace."""
    srv = Server(Stores(tmp_path_factory.mktemp("bounds") / "data"), options=[
        "--max-requests-per-address", str(PER_ADDRESS), "--body-timeout", str(BODY_SECONDS)])
    srv.start()
    yield srv
    srv.stop()
    check_server(srv.stores)


@pytest.fixture(scope="module")
def token(bounded: Server) -> tuple[str, int]:
    bounded.add_user("bounds")
    answer = httpx.post(f"{bounded.url}/v1/login", content=cbor2.dumps(
        {"user": "bounds", "password": PASSWORD, "device": "t"}))
    body = cbor2.loads(answer.content)
    return str(body["token"]), int(body["root_ns"])


def _slow(server: Server, head: bytes) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(head)
    return sock


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent until it closed the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while piece := sock.recv(65536):
            got += piece
    except TimeoutError:
        return got + b"<open>"
    except ConnectionResetError:
        pass
    return got


def _health_seconds(server: Server) -> float:
    start = time.monotonic()
    assert httpx.get(f"{server.url}/v1/health", timeout=10).status_code == 200
    return time.monotonic() - start


def _post(server: Server, path: str, body: bytes, token: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1{path}", content=body, timeout=30,
                      headers={"authorization": f"Bearer {token}"})


def test_stalled_bodies_time_out_and_are_capped_per_address(
    bounded: Server, token: tuple[str, int]
) -> None:
    idle = max(_health_seconds(bounded) for _ in range(3))
    head = (f"POST /v1/ns/{token[1]}/commit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer"
            f" {token[0]}\r\nContent-Length: 65000\r\n\r\n").encode()
    held = [_slow(bounded, head + b"\xa1") for _ in range(PER_ADDRESS)]
    time.sleep(0.3)  # let the server take them in
    extra = [_slow(bounded, head) for _ in range(3)]
    try:
        for sock in extra:  # beyond the cap: refused at once, connection closed
            answer = _answer(sock, 5)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"connection: close" in answer.lower()
        busy = max(_health_seconds(bounded) for _ in range(5))
        assert busy < max(1.0, 20 * idle)
        started = time.monotonic()
        for sock in held:  # the body deadline: 408 and closed, not held forever
            answer = _answer(sock, BODY_SECONDS + 65000 / 8192 + 10)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < BODY_SECONDS + 65000 / 8192 + 5
    finally:
        for sock in held + extra:
            sock.close()


def test_early_refusal_answers_at_once_and_closes(bounded: Server) -> None:
    sock = _slow(bounded, b"PUT /v1/chunks/" + b"a" * 64 + b" HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 4000000\r\n\r\n" + b"x" * 100_000)
    try:
        started = time.monotonic()
        answer = _answer(sock, 10)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"connection: close" in answer.lower()
        assert time.monotonic() - started < 3  # DRAIN_SECONDS, not 30 s
    finally:
        sock.close()
    # An ordinary client still reads the refusal while it sends its body.
    refusal = httpx.put(f"{bounded.url}/v1/chunks/{'a' * 64}", content=b"x" * 3_000_000)
    assert refusal.status_code == 401


def test_client_gone_mid_body_is_one_quiet_line(bounded: Server, token: tuple[str, int]) -> None:
    assert bounded.log is not None
    before = bounded.log.read_text()
    for _ in range(5):
        sock = _slow(bounded, (f"POST /v1/ns/{token[1]}/commit HTTP/1.1\r\nHost: x\r\n"
                               f"Authorization: Bearer {token[0]}\r\nContent-Length: 9000\r\n"
                               "\r\n").encode() + b"\xa1" + b"x" * 100)
        time.sleep(0.1)
        sock.close()
    _health_seconds(bounded)
    time.sleep(0.3)
    added = bounded.log.read_text()[len(before):]
    assert "Traceback" not in added, added
    assert "ERROR" not in added, added
    assert len(added.splitlines()) <= 5


def test_odd_input_is_refused_not_failed(bounded: Server, token: tuple[str, int]) -> None:
    tok, ns = token
    get = httpx.Client(base_url=f"{bounded.url}/v1", headers={"authorization": f"Bearer {tok}"})
    with get:
        assert get.get("/ns/²/tree").status_code == 404
        assert get.get(f"/ns/{1 << 64}/tree").status_code == 404
        assert get.get(f"/ns/{'9' * 5000}/changes").status_code == 404
        assert get.get(f"/ns/{ns}/changes", params={"since": "9" * 5000}).status_code == 400
        huge = 10**5000
        for ops in ([huge], [{"op": huge, "op_id": p.new_id()}],
                    [{"op": "mkdir", "op_id": p.new_id(), "entry": p.new_id(),
                      "parent": p.ROOT_ID, "name": "x", "mode": huge}]):
            answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": ops}), tok)
            assert answer.status_code == 400, answer.content[:200]
    sock = _slow(bounded, f"POST /v1/ns/{ns}/commit HTTP/1.1\r\nHost: x\r\nContent-Length:"
                 f" {'9' * 5000}\r\n\r\n".encode())
    with sock:
        assert _answer(sock, 5).startswith(b"HTTP/1.1 4")


def _mkdir(parent: str, name: str, entry: str) -> dict[str, object]:
    return {"op": "mkdir", "op_id": p.new_id(), "entry": entry, "parent": parent,
            "name": name, "mode": 0o755, "mtime": 0}


def test_depth_is_bounded_and_deep_trees_delete(bounded: Server, token: tuple[str, int]) -> None:
    tok, ns = token
    chain = [p.new_id() for _ in range(p.MAX_DEPTH + 1)]
    parents = [p.ROOT_ID, *chain[:-1]]
    ops = [_mkdir(parent, "d", entry) for parent, entry in zip(parents, chain, strict=True)]
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": ops}), tok)
    assert answer.status_code == 400, answer.content[:300]
    assert b"too deep" in answer.content
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": ops[:-1]}), tok)
    assert answer.status_code == 200, answer.content[:300]
    rev = cbor2.loads(answer.content)["results"][0]["rev"]
    # A rename below the limit is refused; renames at depth stay cheap for others.
    rename = {"op": "rename", "op_id": p.new_id(), "entry": chain[0], "base": rev,
              "parent": chain[-2], "name": "loop"}
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": [rename]}), tok)
    assert answer.status_code == 400
    # A folder whose subfolders would end up below the limit does not move there.
    top, inner = p.new_id(), p.new_id()
    made = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": [
        _mkdir(p.ROOT_ID, "tall", top), _mkdir(top, "inner", inner)]}), tok)
    assert made.status_code == 200, made.content[:300]
    top_rev = cbor2.loads(made.content)["results"][0]["rev"]
    head = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": [_mkdir(
        p.ROOT_ID, "probe", p.new_id())]}), tok)
    for parent, status in ((chain[-4], 400), (chain[-5], 200)):  # chain[-1] was refused
        move = {"op": "rename", "op_id": p.new_id(), "entry": top, "base": top_rev,
                "parent": parent, "name": "tall"}
        answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": [move]}), tok)
        assert answer.status_code == status, answer.content[:300]
    assert cbor2.loads(answer.content)["seq"] == cbor2.loads(head.content)["seq"] + 1
    delete = {"op": "delete", "op_id": p.new_id(), "entry": chain[0], "base": rev,
              "recursive": True}
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": [delete]}), tok)
    assert answer.status_code == 200, answer.content[:300]


def test_commit_work_is_budgeted(bounded: Server, token: tuple[str, int]) -> None:
    tok, ns = token
    chain = [p.new_id() for _ in range(p.MAX_DEPTH - 2)]
    parents = [p.ROOT_ID, *chain[:-1]]
    ops = [_mkdir(parent, "e", entry) for parent, entry in zip(parents, chain, strict=True)]
    leaf = p.new_id()
    ops.append(_mkdir(chain[-1], "leaf", leaf))
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": ops}), tok)
    assert answer.status_code == 200, answer.content[:300]
    head = cbor2.loads(answer.content)["seq"]
    # Renames of a folder deep down: each walks its ancestors again (a folder moved),
    # until the commit's work budget refuses it; nothing of it applied.
    renames = [{"op": "rename", "op_id": p.new_id(), "entry": leaf, "base": head + i,
                "parent": chain[-1], "name": f"n{i}"} for i in range(p.MAX_OPS_PER_COMMIT)]
    started = time.monotonic()
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": renames}), tok)
    assert answer.status_code == 413, answer.content[:300]
    assert b"smaller commits" in answer.content
    assert time.monotonic() - started < 5
    delete = {"op": "delete", "op_id": p.new_id(), "entry": chain[0], "base": head - len(chain),
              "recursive": True}
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": [delete]}), tok)
    assert answer.status_code == 200, answer.content[:300]


def test_block_lists_and_commit_bodies_are_bounded(
    bounded: Server, token: tuple[str, int]
) -> None:
    tok, ns = token
    cid = "ab" * 32
    op = {"op": "create", "op_id": p.new_id(), "entry": p.new_id(), "parent": p.ROOT_ID,
          "name": "big", "kind": "file", "mode": 0o644, "mtime": 0, "size": 1,
          "blocks": [[cid, 1]] * (p.MAX_BLOCKS + 1)}
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": [op]}), tok)
    assert answer.status_code in (400, 413), answer.content[:300]
    idle = _health_seconds(bounded)
    body = cbor2.dumps({"ops": [{**op, "blocks": [[cid, 1]] * 900_000}]})
    assert len(body) > p.MAX_COMMIT_BYTES
    answer = _post(bounded, f"/ns/{ns}/commit", body, tok)
    assert answer.status_code == 413
    assert _health_seconds(bounded) < max(1.0, 20 * idle)


def test_tree_and_versions_are_paged(bounded: Server, token: tuple[str, int]) -> None:
    tok, ns = token
    made = [_mkdir(p.ROOT_ID, f"p{i}", p.new_id()) for i in range(p.MAX_PAGE + 10)]
    answer = _post(bounded, f"/ns/{ns}/commit", cbor2.dumps({"ops": made}), tok)
    assert answer.status_code == 200, answer.content[:300]
    first = httpx.get(f"{bounded.url}/v1/ns/{ns}/tree", headers={"authorization":
                                                                  f"Bearer {tok}"})
    page = cbor2.loads(first.content)
    assert len(page["entries"]) == p.MAX_PAGE
    assert page["next"]

    async def whole() -> dict[str, object]:
        async with bounded.client(tok) as client:
            return await client.tree(ns)

    tree = trio.run(whole)
    entries = tree["entries"]
    assert isinstance(entries, list)
    names = {e["name"] for e in entries}
    assert {f"p{i}" for i in range(p.MAX_PAGE + 10)} <= names
    assert len(entries) == len({e["id"] for e in entries})
    assert entries[0]["id"] == p.ROOT_ID


def test_notifier_drops_events_nobody_waits_for() -> None:
    notifier = Notifier()
    for ns in range(1000):
        with notifier.watch(ns):
            pass
    assert notifier.watched() == 0
    with notifier.watch(1) as first, notifier.watch(1) as second:
        assert first is second
        notifier.advanced(1)
        assert first.is_set()
    assert notifier.watched() == 0


def test_commit_batches_stay_within_limits() -> None:
    op = {"op": "create", "blocks": [["a" * 64, 1]] * (p.MAX_BLOCKS // 2)}
    batches = p.commit_batches([dict(op) for _ in range(9)])
    assert all(sum(len(o["blocks"]) for o in b) <= p.MAX_COMMIT_BLOCKS for b in batches)
    assert sum(len(b) for b in batches) == 9
