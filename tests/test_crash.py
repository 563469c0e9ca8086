"""Atomicity and durability of commits under ``kill -9`` of the server.

A client drives a stream of commits, each one batch of three operations: create
``pair-N-a`` and ``pair-N-b`` (the same content, uploaded first) and create or update
``counter`` (its content is ``N``). A concurrent task kills the server at a random
moment, the server is restarted on the same stores, and the stream goes on; three
times. Afterwards every pair must be wholly present or wholly absent, the counter must
name the newest pair present (it changed in the same transaction), every commit the
client saw acknowledged must be there as acknowledged, the journal must run 1..head
without a gap, and ``loft fsck`` must find the stores clean.

The seed of the random timing is in every assertion message, to replay a failure.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from backend import protocol as p
from backend.client import Client
from backend.errors import NotFound, ServerUnavailable
from tests.conftest import BACKENDS, PASSWORD, Server, loft, running_server

ROUNDS = 3
MTIME = 1_700_000_000 * 1_000_000_000


@pytest.fixture(scope="module", params=BACKENDS)
def crash_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of our own: it is killed and restarted, so it is shared with no one."""
    yield from running_server(tmp_path_factory, request.param, "crash")


def pair_content(n: int) -> bytes:
    return f"pair {n}\n".encode() * 40


@dataclass
class Stream:
    """What the client knows: which commits it attempted, and which were acknowledged."""

    ns: int
    attempted: list[int] = field(default_factory=list)
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Commit number → the revisions the server gave ``pair-N-a`` and ``pair-N-b``."""
    counter: tuple[str, int] | None = None
    """The counter's entry id and revision, as last seen."""
    in_flight: trio.Event = field(default_factory=trio.Event)
    """Set while a commit request is in flight; replaced by a fresh one after it."""
    commit_seconds: float = 0.0
    """How long the last acknowledged commit took."""

    def ops(self, n: int) -> list[dict[str, Any]]:
        blocks = [[p.chunk_id(pair_content(n)), len(pair_content(n))]]
        count = str(n).encode()
        ops: list[dict[str, Any]] = [
            {
                "op": "create",
                "op_id": p.new_id(),
                "entry": p.new_id(),
                "parent": p.ROOT_ID,
                "name": f"pair-{n}-{half}",
                "kind": "file",
                "mode": 0o644,
                "mtime": MTIME,
                "size": len(pair_content(n)),
                "blocks": blocks,
            }
            for half in ("a", "b")
        ]
        fields = {"size": len(count), "mtime": MTIME, "blocks": [[p.chunk_id(count), len(count)]]}
        if self.counter is None:
            ops.append(
                {
                    "op": "create",
                    "op_id": p.new_id(),
                    "entry": p.new_id(),
                    "parent": p.ROOT_ID,
                    "name": "counter",
                    "kind": "file",
                    "mode": 0o644,
                    **fields,
                }
            )
        else:
            entry, rev = self.counter
            ops.append({"op": "update", "op_id": p.new_id(), "entry": entry, "base": rev, **fields})
        return ops

    async def resync(self, client: Client) -> None:
        """Learn the counter afresh: the commit in flight at a kill may or may not be in."""
        try:
            found = (await client.lookup(self.ns, "/counter"))["entry"]
        except NotFound:
            self.counter = None
        else:
            self.counter = (found["id"], found["rev"])

    async def run(self, client: Client) -> None:
        """Commit until the server goes away."""
        n = len(self.attempted)
        while True:
            self.attempted.append(n)
            try:
                await client.put_chunk(p.chunk_id(pair_content(n)), pair_content(n))
                await client.put_chunk(p.chunk_id(str(n).encode()), str(n).encode())
                self.in_flight.set()
                started = trio.current_time()
                answer = await client.commit(self.ns, self.ops(n))
            except ServerUnavailable:
                return
            finally:
                if self.in_flight.is_set():
                    self.in_flight = trio.Event()
            self.commit_seconds = trio.current_time() - started
            results = answer["results"]
            self.acked[n] = (results[0]["rev"], results[1]["rev"])
            self.counter = (results[2]["entry"], results[2]["rev"])
            n += 1


async def test_commits_are_whole_and_acknowledged_ones_survive_kill_9(
    crash_server: Server,
) -> None:
    server = crash_server
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    why = f"(seed {seed})"
    await trio.to_thread.run_sync(server.add_user, "crash")
    async with server.client() as anonymous:
        login = await anonymous.login("crash", PASSWORD, "crash-test")
    token = login["token"]
    stream = Stream(login["root_ns"])

    async def kill_after(delay: float) -> None:
        """Kill at a random moment after ``delay`` and two acknowledged commits, while
        a commit is in flight.

        Aiming inside the commit request, at a random point of its usual duration,
        lands the kill before, during or after the server's transaction, so both
        outcomes of an unacknowledged commit (in, or out) occur.
        """
        start = len(stream.acked)
        await trio.sleep(delay)
        for _ in range(1000):  # at most 10 s: a loaded machine commits slower
            if len(stream.acked) >= start + 2:
                break
            await trio.sleep(0.01)
        await stream.in_flight.wait()
        await trio.sleep(rng.uniform(0, 1.5 * stream.commit_seconds))
        await trio.to_thread.run_sync(server.kill)

    for _ in range(ROUNDS):
        if server.proc is None:
            await trio.to_thread.run_sync(server.start)
        async with Client(server.url, token, attempts=1) as client:
            await stream.resync(client)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_after, rng.uniform(0.2, 1.5))
                await stream.run(client)
        assert server.proc is None, f"the stream stopped while the server ran {why}"
    await trio.to_thread.run_sync(server.start)

    async with server.client(token) as client:
        tree = await client.tree(stream.ns)
        head = tree["seq"]
        live = {e["name"]: e for e in tree["entries"]}
        revs: list[int] = []
        while len(revs) < head:
            page = await client.changes(stream.ns, revs[-1] if revs else 0)
            assert page["changes"], f"the journal stops at {len(revs)} of {head} {why}"
            revs.extend(change["rev"] for change in page["changes"])
        counter = live.get("counter")
        count = int(await client.get_chunk(counter["blocks"][0][0])) if counter else None

    assert len(stream.acked) > ROUNDS, f"too few commits to prove anything {why}"
    present = []
    for n in stream.attempted:
        a, b = live.get(f"pair-{n}-a"), live.get(f"pair-{n}-b")
        assert (a is None) == (b is None), f"pair {n} is half committed {why}"
        if a is not None and b is not None:
            present.append(n)
            content = [[p.chunk_id(pair_content(n)), len(pair_content(n))]]
            assert a["blocks"] == b["blocks"] == content, f"pair {n} content {why}"
    for n, (rev_a, rev_b) in stream.acked.items():
        assert n in present, f"acknowledged commit {n} was lost {why}"
        assert (live[f"pair-{n}-a"]["rev"], live[f"pair-{n}-b"]["rev"]) == (rev_a, rev_b), why
    assert count == max(present), f"the counter disagrees with the pairs present {why}"
    assert revs == list(range(1, head + 1)), f"the journal has gaps or repeats {why}"

    result = await trio.to_thread.run_sync(lambda: loft("fsck", *server.stores.args()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith(": clean"), result.stdout
