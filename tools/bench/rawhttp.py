"""The baseline for transfer benchmarks: bytes over loopback HTTP and nothing else.

The same HTTP stack as Loft (Hypercorn's trio worker serving; httpx sending, as Loft
uploads; ``backend.blocking``'s connections in worker threads fetching, as Loft
downloads chunks), no chunking, hashing, compression or storage: PUT discards its
body, GET answers bytes from memory. Whatever Loft is slower than this is Loft's own
cost.

    python -m tools.bench.rawhttp PORT

``measure(size)`` starts it, PUTs and GETs ``size`` bytes, and stops it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from backend.blocking import BlockingPool

MiB = 1024 * 1024
_BLOB = bytes(range(256)) * (16 * 1024)  # 4 MiB


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["method"] == "PUT":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = b""
    else:
        size = int(scope["query_string"].decode().partition("=")[2] or 0)
        body = _BLOB[:size]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def raw_http(url: str, size: int, workers: int = 6) -> tuple[float, float]:
    """Seconds to PUT, then GET, ``size`` bytes in 1 MiB requests (Loft's mean chunk
    size) over ``workers`` connections."""
    body = os.urandom(MiB)
    count = size // MiB

    async def run(method: str) -> float:
        jobs = iter(range(count))
        pool = BlockingPool(url, {}, timeout=60, connect=5, context=None, size=workers)
        async with httpx.AsyncClient(timeout=60) as client:

            async def worker() -> None:
                for i in jobs:
                    if method == "PUT":
                        (await client.put(f"{url}/blob/{i}", content=body)).raise_for_status()
                    else:
                        answer = await pool.send("GET", f"/blob/{i}?size={MiB}", {})
                        if answer.status_code != 200 or len(answer.content) != MiB:
                            raise RuntimeError(f"GET: HTTP {answer.status_code}")

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(workers):
                    nursery.start_soon(worker)
            pool.close()
            return time.perf_counter() - start

    return await run("PUT"), await run("GET")


@contextlib.contextmanager
def serving() -> Iterator[str]:
    """This server on a free loopback port, answering, for the block: its URL."""
    from tools.localserver import free_port  # the server side imports no Loft code

    port = free_port()
    raw = subprocess.Popen([sys.executable, "-m", "tools.bench.rawhttp", str(port)],
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        raw.terminate()
        raw.wait()


def measure(size: int) -> tuple[float, float]:
    """The baseline: seconds to PUT and to GET ``size`` bytes, this server started for
    the purpose and stopped after."""
    with serving() as url:
        return trio.run(raw_http, url, size)


def main() -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{int(sys.argv[1])}"]
    config.accesslog = None
    trio.run(serve, app, config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
