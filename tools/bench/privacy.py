"""Does an upload tell whether someone else stores the same bytes?

    python -m tools.bench.privacy [--rounds 20] [--size-mib 4]

On a fresh embedded-default server, user B uploads chunks of ``--size-mib`` that
nobody holds (the baseline) and chunks that user A uploaded just before (the probe),
alternately, and prints the median time of each. Equal medians: the timing of an
upload says nothing about other users' content.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import trio

from backend import protocol as p
from tools.localserver import LocalServer, Stores


async def measure(server: LocalServer, tokens: dict[str, str], rounds: int,
                  size: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"nobody holds it": [], "another user holds it": []}
    async with server.client(tokens["a"]) as a, server.client(tokens["b"]) as b:
        for _ in range(rounds):
            fresh, known = os.urandom(size), os.urandom(size)
            await a.put_chunk(p.chunk_id(known), known)
            for label, data in (("nobody holds it", fresh), ("another user holds it", known)):
                start = time.perf_counter()
                await b.put_chunk(p.chunk_id(data), data)
                times[label].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalServer(Stores(Path(tmp) / "data"))
        server.start()
        try:
            tokens = {}
            for user in ("a", "b"):
                server.add_user(user)
                home = Path(tmp) / f"home-{user}"
                server.login(user, home)
                tokens[user] = json.loads((home / "device.json").read_text())["token"]
            times = trio.run(measure, server, tokens, args.rounds, args.size_mib << 20)
        finally:
            server.stop()
    base = statistics.median(times["nobody holds it"])
    print(f"PUT of a {args.size_mib} MiB chunk by user B, median of {args.rounds}:")
    for label, found in times.items():
        median = statistics.median(found)
        print(f"  {label:<24} {median * 1000:7.1f} ms   {median / base:4.2f}x the baseline")


if __name__ == "__main__":
    main()
