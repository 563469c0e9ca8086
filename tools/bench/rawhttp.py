"""The baseline for transfer benchmarks: bytes over loopback HTTP and nothing else.

The same HTTP stack as Loft (Hypercorn's trio worker serving, httpx fetching), no
chunking, hashing, compression or storage: PUT discards its body, GET answers bytes
from memory. Whatever Loft is slower than this is Loft's own cost.

    python -m tools.bench.rawhttp PORT
"""

from __future__ import annotations

import sys
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

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


def main() -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{int(sys.argv[1])}"]
    config.accesslog = None
    trio.run(serve, app, config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
