"""Metadata commits per second, on SQLite and on PostgreSQL, beside bare HTTP round trips.

    python -m tools.bench.commits [--count 400] [--clients 8] [--pg URL]

For each back end, a fresh server: ``count`` single-operation commits (mkdir) from
one client one after another (latency bound), then the same from ``clients``
concurrent clients (throughput). The baseline, measured in the same run against the
same server, is ``GET /v1/health``: an HTTP round trip with no database work.
PostgreSQL runs when ``--pg`` or ``LOFT_TEST_PG`` names a server whose role may
create databases; otherwise that row says so.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import psycopg
import trio

from backend import protocol as p
from backend.client import Client
from tools.localserver import LocalServer, Stores


async def measure(
    server: LocalServer, token: str, ns: int, count: int, clients: int
) -> dict[str, float]:
    async def commits(client: Client, n: int) -> None:
        for _ in range(n):
            op = {
                "op": "mkdir",
                "op_id": p.new_id(),
                "entry": p.new_id(),
                "parent": p.ROOT_ID,
                "name": p.new_id(),
                "mode": 0o755,
                "mtime": 0,
            }
            await client.commit(ns, [op])

    async def health(client: Client, n: int) -> None:
        for _ in range(n):
            await client.health()

    results: dict[str, float] = {}
    for name, fn in (("health", health), ("commit", commits)):
        for width in (1, clients):
            per = count // width
            async with Client(server.url, token) as client:
                start = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(width):
                        nursery.start_soon(fn, client, per)
                results[f"{name}x{width}"] = per * width / (time.perf_counter() - start)
    return results


def run_backend(stores: Stores, count: int, clients: int) -> dict[str, float]:
    server = LocalServer(stores)
    server.start()
    try:
        server.add_user("bench")
        home = stores.data.parent / "home"
        server.login("bench", home)
        device = json.loads((home / "device.json").read_text())
        return trio.run(measure, server, device["token"], device["root_ns"], count, clients)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pg", default=os.environ.get("LOFT_TEST_PG"))
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, float] | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(
            ("sqlite", run_backend(Stores(Path(tmp) / "sqlite" / "data"), args.count, args.clients))
        )
        if args.pg:
            name = f"loft_bench_{os.getpid()}"
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}".encode())
            try:
                url = args.pg.rsplit("/", 1)[0] + "/" + name
                stores = Stores(Path(tmp) / "pg" / "data", metadata=url)
                rows.append(("postgresql", run_backend(stores, args.count, args.clients)))
            finally:
                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
        else:
            rows.append(("postgresql", None))
    c = args.clients
    print(f"operations per second, {args.count} per case ({os.cpu_count()} cores)")
    print(
        f"{'metadata':<12}{'health x1':>11}{'commit x1':>11}"
        f"{f'health x{c}':>11}{f'commit x{c}':>11}"
    )
    for name, r in rows:
        if r is None:
            print(f"{name:<12}  not measured: no --pg URL and no LOFT_TEST_PG")
            continue
        print(
            f"{name:<12}{r['healthx1']:>11.0f}{r['commitx1']:>11.0f}"
            f"{r[f'healthx{c}']:>11.0f}{r[f'commitx{c}']:>11.0f}"
        )


if __name__ == "__main__":
    main()
